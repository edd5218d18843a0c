//! Code generation for `#[derive(Aggregate)]`.
//!
//! The trait's `handle` and `apply` must call the type's inherent methods, and never resolve to the
//! trait's own methods (which would recurse forever when the user forgot to write them). The calls
//! are made from a module nested in the generated `const _` block: a module sees none of the traits
//! its parent imported, so `annals::Aggregate` is not in scope there, and `State::handle` only finds
//! the inherent method. The module names the type through an associated type of a trait it
//! declares, implemented in the `const _` block: that works for a type declared in a function body
//! too, where `super::Type` would not.
//!
//! When an inherent method is missing, the only candidate left is a fallback trait whose method
//! requires a trait that nothing implements, with a `#[diagnostic::on_unimplemented]` message that
//! says what to write.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::{DeriveInput, Ident, LitStr, Type};

use crate::expand::local;
use crate::model::{aggregate_types, AggregateModel};

/// The output of `#[derive(Aggregate)]` for `input`: the impl, or the errors (with a stand-in
/// impl when the types are known, so that the errors are not buried under "`Aggregate` is not
/// implemented" at every use).
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    match AggregateModel::build(input) {
        Ok(model) => expand(&model),
        Err(error) => {
            let mut out = error.to_compile_error();
            if let Some((command, event, error)) = aggregate_types(input) {
                out.extend(stand_in(&input.ident, &command, &event, &error));
            }
            out
        }
    }
}

/// An impl whose methods are never run: the crate does not compile, because of the errors
/// reported next to it.
fn stand_in(ident: &Ident, command: &Type, event: &Type, error: &Type) -> TokenStream {
    quote! {
        const _: () = {
            #[automatically_derived]
            impl ::annals::__private::Aggregate for #ident {
                const TYPE: &'static ::core::primitive::str = "";
                type Command = #command;
                type Event = #event;
                type Error = #error;

                fn handle(
                    &self,
                    _: Self::Command,
                ) -> ::core::result::Result<::std::vec::Vec<Self::Event>, Self::Error> {
                    ::core::unimplemented!()
                }

                fn apply(&mut self, _: &Self::Event) {
                    ::core::unimplemented!()
                }
            }
        };
    }
}

fn expand(model: &AggregateModel) -> TokenStream {
    let AggregateModel { ident, type_name, snapshot_version, command, event, error } = model;
    let type_name = LitStr::new(type_name, Span::call_site());
    let snapshot_version = Literal::u32_suffixed(*snapshot_version);
    let inherent = inherent_module(model);
    let (command_value, event_value) = (local("command"), local("event"));
    quote! {
        const _: () = {
            #[automatically_derived]
            impl __annals_inherent::Target for () {
                type State = #ident;
            }

            #inherent

            #[automatically_derived]
            impl ::annals::__private::Aggregate for #ident {
                const TYPE: &'static ::core::primitive::str = #type_name;
                const SNAPSHOT_VERSION: ::core::primitive::u32 = #snapshot_version;
                type Command = #command;
                type Event = #event;
                type Error = #error;

                #[inline]
                fn handle(
                    &self,
                    #command_value: Self::Command,
                ) -> ::core::result::Result<::std::vec::Vec<Self::Event>, Self::Error> {
                    __annals_inherent::handle(self, #command_value)
                }

                #[inline]
                fn apply(&mut self, #event_value: &Self::Event) {
                    __annals_inherent::apply(self, #event_value)
                }
            }
        };
    }
}

/// The module that calls the inherent methods (see the module docs).
fn inherent_module(model: &AggregateModel) -> TokenStream {
    let ident = &model.ident;
    let (state, command_value, event_value) = (local("state"), local("command"), local("event"));
    // Spanned at the type's name: a missing method, or one with another signature, is reported there.
    let at_ident = |local: &Ident| Ident::new(&local.to_string(), local.span().located_at(ident.span()));
    let (state_arg, command_arg, event_arg) = (at_ident(&state), at_ident(&command_value), at_ident(&event_value));
    let call_handle = quote_spanned!(ident.span()=> State::handle(#state_arg, #command_arg));
    let call_apply = quote_spanned!(ident.span()=> State::apply(#state_arg, #event_arg));
    let (command, event, error) = (type_text(&model.command), type_text(&model.event), type_text(&model.error));
    let handle_note = LitStr::new(
        &format!(
            "write it in an `impl {{Self}}` block: `fn handle(&self, command: {command}) -> Result<Vec<{event}>, \
             {error}>`; #[derive(Aggregate)] implements `Aggregate::handle` by calling it"
        ),
        Span::call_site(),
    );
    let apply_note = LitStr::new(
        &format!(
            "write it in an `impl {{Self}}` block: `fn apply(&mut self, event: &{event})`; #[derive(Aggregate)] \
             implements `Aggregate::apply` by calling it"
        ),
        Span::call_site(),
    );
    quote! {
        #[allow(dead_code)]
        mod __annals_inherent {
            pub(super) trait Target {
                type State;
            }

            type State = <() as Target>::State;
            type Command = <State as ::annals::__private::Aggregate>::Command;
            type Event = <State as ::annals::__private::Aggregate>::Event;
            type Error = <State as ::annals::__private::Aggregate>::Error;

            #[diagnostic::on_unimplemented(
                message = "`{Self}` has no inherent method `handle`",
                label = "#[derive(Aggregate)] needs `{Self}::handle`",
                note = #handle_note
            )]
            pub(super) trait HasInherentHandle {
                fn unreachable<R>() -> R;
            }

            #[diagnostic::on_unimplemented(
                message = "`{Self}` has no inherent method `apply`",
                label = "#[derive(Aggregate)] needs `{Self}::apply`",
                note = #apply_note
            )]
            pub(super) trait HasInherentApply {}

            /// Found only when the inherent method is missing, and then unusable.
            pub(super) trait Fallback {
                fn handle<C, R>(&self, _: C) -> R
                where
                    Self: HasInherentHandle,
                {
                    <Self as HasInherentHandle>::unreachable()
                }

                fn apply<E>(&mut self, _: E)
                where
                    Self: HasInherentApply,
                {
                }
            }

            impl<T> Fallback for T {}

            #[inline]
            pub(super) fn handle(
                #state: &State,
                #command_value: Command,
            ) -> ::core::result::Result<::std::vec::Vec<Event>, Error> {
                #call_handle
            }

            #[inline]
            pub(super) fn apply(#state: &mut State, #event_value: &Event) {
                #call_apply
            }
        }
    }
}

/// A type as the user would write it, for a message (`{` and `}` doubled for the format string of
/// `on_unimplemented`).
fn type_text(ty: &Type) -> String {
    let mut text = ty.to_token_stream().to_string();
    for (from, to) in [
        (" < ", "<"),
        ("< ", "<"),
        (" <", "<"),
        (" >", ">"),
        (" :: ", "::"),
        (":: ", "::"),
        (" ,", ","),
        ("& ", "&"),
        ("( ", "("),
        (" )", ")"),
    ] {
        text = text.replace(from, to);
    }
    text.replace('{', "{{").replace('}', "}}")
}
