//! The helper structs that carry a variant's payload through serde: one of references for
//! serializing (no clone, no serde impl needed on the enum), one owned for deserializing. The
//! fields' `#[serde(...)]` keys are copied onto them.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::{Ident, LitStr};

use crate::expand::local;
use crate::model::{EventField, EventVariant, Shape};
use crate::serde_attr::SerdeContainer;

/// The serializing helper of `variant` (none for a unit variant) and the wrapper functions its
/// fields' serde keys call.
pub(crate) fn ser_helper(variant: &EventVariant, index: usize, ser: &Ident) -> TokenStream {
    if variant.shape == Shape::Unit {
        return TokenStream::new();
    }
    let mut wrappers = TokenStream::new();
    let lifetime = if variant.fields.is_empty() { quote!() } else { quote!(<'__annals>) };
    let fields = variant.fields.iter().enumerate().map(|(position, field)| {
        let mut keys = field.serde.ser.clone();
        if let Some(path) = &field.serde.skip_serializing_if {
            let wrapper = format_ident!("__annals_skip_if_{}_{}", index, position);
            let value = local("value");
            let ty = &field.ty;
            wrappers.extend(quote! {
                #[inline]
                fn #wrapper(#value: &&#ty) -> ::core::primitive::bool {
                    #path(*#value)
                }
            });
            let wrapper = LitStr::new(&wrapper.to_string(), Span::call_site());
            keys.push(quote!(skip_serializing_if = #wrapper));
        }
        if let Some(path) = &field.serde.serialize_with {
            let wrapper = format_ident!("__annals_serialize_with_{}_{}", index, position);
            let (value, serializer) = (local("value"), local("serializer"));
            let ty = &field.ty;
            wrappers.extend(quote! {
                #[inline]
                fn #wrapper<__AnnalsS: ::annals::__private::serde::Serializer>(
                    #value: &&#ty,
                    #serializer: __AnnalsS,
                ) -> ::core::result::Result<
                    <__AnnalsS as ::annals::__private::serde::Serializer>::Ok,
                    <__AnnalsS as ::annals::__private::serde::Serializer>::Error,
                > {
                    #path(*#value, #serializer)
                }
            });
            let wrapper = LitStr::new(&wrapper.to_string(), Span::call_site());
            keys.push(quote!(serialize_with = #wrapper));
        }
        field_tokens(field, &keys, quote!(&'__annals))
    });
    let body = body(variant.shape, fields.collect());
    let container = container_keys(&variant.serde, false);
    quote! {
        #[derive(::annals::__private::serde::Serialize)]
        #[serde(crate = "::annals::__private::serde")]
        #container
        struct #ser #lifetime #body
        #wrappers
    }
}

/// The deserializing helper of `variant`; for a unit variant, an empty struct.
pub(crate) fn de_helper(variant: &EventVariant, de: &Ident) -> TokenStream {
    let fields = variant.fields.iter().map(|field| field_tokens(field, &field.serde.de, quote!()));
    let shape = if variant.shape == Shape::Unit { Shape::Named } else { variant.shape };
    let body = body(shape, fields.collect());
    let container = container_keys(&variant.serde, true);
    quote! {
        #[derive(::annals::__private::serde::Deserialize)]
        #[serde(crate = "::annals::__private::serde")]
        #container
        struct #de #body
    }
}

/// One field of a helper: its serde keys, name (if any) and type behind `prefix`.
fn field_tokens(field: &EventField, keys: &[TokenStream], prefix: TokenStream) -> TokenStream {
    let attr = if keys.is_empty() { quote!() } else { quote!(#[serde(#(#keys),*)]) };
    let ty = &field.ty;
    match &field.ident {
        Some(ident) => quote!(#attr #ident: #prefix #ty),
        None => quote!(#attr #prefix #ty),
    }
}

fn body(shape: Shape, fields: Vec<TokenStream>) -> TokenStream {
    match shape {
        Shape::Tuple => quote!((#(#fields),*);),
        Shape::Named | Shape::Unit => quote!({ #(#fields),* }),
    }
}

fn container_keys(serde: &SerdeContainer, de: bool) -> TokenStream {
    let mut keys = Vec::new();
    if let Some((key, rest)) = &serde.rename_all {
        keys.push(quote!(#key #rest));
    }
    if let (true, Some(key)) = (de, &serde.deny_unknown_fields) {
        keys.push(quote!(#key));
    }
    if keys.is_empty() {
        quote!()
    } else {
        quote!(#[serde(#(#keys),*)])
    }
}
