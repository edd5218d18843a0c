//! Code generation: turns a checked model into the impls.
//!
//! Everything generated is wrapped in `const _: () = { ... };`, names every outside item by an
//! absolute path (`::annals::__private::...`, `::core::...`, `::std::...`), and gives its locals
//! `__annals_` names with mixed-site hygiene, so that no item of the user's (a `Result`, a `serde`
//! module, a constant named like a local, which would turn a binding into a pattern) changes its
//! meaning.

pub(crate) mod aggregate;
pub(crate) mod event;
mod payload;

use proc_macro2::{Ident, Span};

/// A local variable or parameter, invisible to the user's code. Mixed-site hygiene hides it from
/// the user's code, and the prefix keeps the user's constants from capturing it: a binding named
/// like a constant in scope is a constant pattern, whatever the span.
pub(crate) fn local(name: &str) -> Ident {
    Ident::new(&format!("__annals_{name}"), Span::mixed_site())
}
