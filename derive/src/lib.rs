//! Derive macros for [`annals`](https://docs.rs/annals).
//!
//! Do not depend on this crate directly: `annals` re-exports every macro under the name of the trait it
//! implements, behind its default `derive` feature.
//!
//! The crate is organised by phase: `attr` and `serde_attr` read the attributes, `model` builds
//! the model of the input (running the checks of `validate`, collecting every error), and
//! `expand` generates the code. This file only declares the macros.

mod attr;
mod errors;
mod expand;
mod model;
mod serde_attr;
mod validate;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Implements `annals::Event` for an enum (one event type per variant) or a struct (one event type).
///
/// # Names and versions
///
/// - Each variant's event type name is the variant's name; `#[event(name = "...")]` on the variant
///   renames it. A struct's is the struct's name, or `#[event(name = "...")]` on the struct. Names
///   are stored with every event, so renaming one later needs an upcaster. They must be unique,
///   non-empty, at most 256 bytes and free of control characters.
/// - The schema version is `#[event(version = N)]` on the variant, else on the enum or struct,
///   else 1.
///
/// # Payloads
///
/// A variant's payload is its data as JSON: a struct variant gives an object of its fields, a
/// tuple variant with one field gives that field's JSON, a tuple variant with several fields gives
/// an array, and a unit variant gives `{}` (decoded from `{}` or `null`). The enum needs no serde
/// impl, but its fields' types need `Serialize` and `Deserialize`.
///
/// The fields' `#[serde(...)]` attributes apply to the payload: `rename`, `alias`, `default`,
/// `skip`, `skip_serializing`, `skip_deserializing`, `skip_serializing_if`, `serialize_with`,
/// `deserialize_with`, `with`, `flatten` and `bound`, which is how a payload keeps decoding after
/// its shape changes (`#[serde(default)]` on a new field). A variant takes `#[serde(rename_all =
/// "...")]` and `#[serde(deny_unknown_fields)]`, the enum `#[serde(rename_all_fields = "...")]` and
/// `#[serde(deny_unknown_fields)]` for all its variants.
///
/// A struct's payload is the struct itself, so it must implement `Serialize` and `Deserialize`
/// (derive them; their serde attributes apply as usual).
///
/// ```ignore
/// use annals::Event;
///
/// #[derive(Event)]
/// #[event(version = 2)]
/// enum AccountEvent {
///     Opened { owner: String, #[serde(default)] currency: String },
///     #[event(name = "MoneyDeposited", version = 3)]
///     Deposited(u64),
///     Closed,
/// }
/// ```
///
/// # Personal data
///
/// `#[event(personal)]` on a named field of a struct or struct variant marks it personal data, and
/// `#[event(subject)]` on one field of the same struct or variant names whose (its `Display`
/// output): the derive writes `Event::personal_data`, listing the personal fields by their names in
/// the payload. A personal field must be an `Option<_>` (an erased field reads back as `null`) and
/// be serialized as a field of its own; a struct or variant with personal fields has exactly one
/// subject, which is not itself personal, and a subject needs at least one personal field.
///
/// Generic types are not supported.
#[proc_macro_derive(Event, attributes(event, serde))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::event::derive(&input).into()
}

/// Implements `annals::Aggregate` for a struct or enum (the aggregate's state) by calling its
/// inherent `handle` and `apply` methods.
///
/// ```ignore
/// use annals::Aggregate;
///
/// #[derive(Aggregate, Default)]
/// #[aggregate(command = AccountCommand, event = AccountEvent, error = AccountError)]
/// struct Account {
///     balance: u64,
/// }
///
/// impl Account {
///     fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
///         // ...
///     }
///
///     fn apply(&mut self, event: &AccountEvent) {
///         // ...
///     }
/// }
/// ```
///
/// # Keys
///
/// - `command = Type`, `event = Type`, `error = Type` (required): `Aggregate::Command`, `Event` and
///   `Error`.
/// - `name = "..."`: `Aggregate::TYPE`, the category of the aggregate's streams (`account` gives
///   `account-<id>`). By default, the type's name in snake case (`BankAccount` gives
///   `bank_account`). It must be non-empty, without `-` and without control characters.
/// - `snapshot_version = N`: `Aggregate::SNAPSHOT_VERSION`, 1 by default; bump it when the state's
///   shape changes.
///
/// # The inherent methods
///
/// The type must have the inherent methods
/// `fn handle(&self, command: Command) -> Result<Vec<Event>, Error>` and
/// `fn apply(&mut self, event: &Event)`, visible where the type is declared (private methods in an
/// `impl` block of the same module are fine). The generated code only ever calls those, even with
/// `annals::Aggregate` in scope: when one is missing, compilation fails with a message saying what
/// to write, instead of the trait's method calling itself forever.
///
/// The type may be declared at module level or inside a function body. Generic types are not
/// supported.
#[proc_macro_derive(Aggregate, attributes(aggregate))]
pub fn derive_aggregate(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::aggregate::derive(&input).into()
}
