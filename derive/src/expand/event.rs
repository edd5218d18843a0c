//! Code generation for `#[derive(Event)]`.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::{DeriveInput, Ident, LitStr};

use crate::expand::local;
use crate::model::{EventField, EventKind, EventModel, EventVariant, Personal, Shape};

/// The output of `#[derive(Event)]` for `input`: the impl, or the errors (with a stand-in impl,
/// so that the errors are not buried under "`Event` is not implemented" at every use).
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    match EventModel::build(input) {
        Ok(model) => expand(&model),
        Err(error) => {
            let mut out = error.to_compile_error();
            if input.generics.params.is_empty() {
                out.extend(stand_in(&input.ident));
            }
            out
        }
    }
}

fn expand(model: &EventModel) -> TokenStream {
    let ident = &model.ident;
    let event_type = local("event_type");
    let (helpers, mut methods) = match &model.kind {
        EventKind::Struct { name, version, .. } => (TokenStream::new(), struct_methods(ident, name, *version)),
        EventKind::Enum(variants) => enum_parts(variants),
    };
    methods.extend(personal_data(&model.kind));
    let names: Vec<_> = names(model);
    let versions: Vec<_> = versions(model);
    quote! {
        const _: () = {
            #helpers

            #[automatically_derived]
            impl ::annals::__private::Event for #ident {
                fn event_types() -> &'static [&'static ::core::primitive::str] {
                    &[#(#names),*]
                }

                fn current_version(
                    #event_type: &::core::primitive::str,
                ) -> ::core::option::Option<::core::primitive::u32> {
                    match #event_type {
                        #(#names => ::core::option::Option::Some(#versions),)*
                        _ => ::core::option::Option::None,
                    }
                }

                #methods
            }
        };
    }
}

fn names(model: &EventModel) -> Vec<LitStr> {
    match &model.kind {
        EventKind::Struct { name, .. } => vec![name_lit(name)],
        EventKind::Enum(variants) => variants.iter().map(|v| name_lit(&v.name)).collect(),
    }
}

fn versions(model: &EventModel) -> Vec<Literal> {
    match &model.kind {
        EventKind::Struct { version, .. } => vec![Literal::u32_suffixed(*version)],
        EventKind::Enum(variants) => variants.iter().map(|v| Literal::u32_suffixed(v.version)).collect(),
    }
}

fn name_lit(name: &str) -> LitStr {
    LitStr::new(name, Span::call_site())
}

fn unknown_type(event_type: &Ident) -> TokenStream {
    quote! {
        ::core::result::Result::Err(::annals::__private::DecodeError::UnknownType(
            ::std::borrow::ToOwned::to_owned(#event_type),
        ))
    }
}

/// The methods of a struct event: its payload is the struct, through its own serde impls.
fn struct_methods(ident: &Ident, name: &str, version: u32) -> TokenStream {
    let name = name_lit(name);
    let version = Literal::u32_suffixed(version);
    let event_type = local("event_type");
    let payload = local("payload");
    let unknown = unknown_type(&event_type);
    // Spanned at the struct's name, where a missing `Serialize` or `Deserialize` is reported.
    let to_string = quote_spanned!(ident.span()=> ::annals::__private::serde_json::to_string(self));
    let from_str = quote_spanned!(ident.span()=>
        ::annals::__private::serde_json::from_str::<Self>(#payload)
    );
    quote! {
        fn event_type(&self) -> &'static ::core::primitive::str {
            #name
        }

        fn schema_version(&self) -> ::core::primitive::u32 {
            #version
        }

        fn to_payload(
            &self,
        ) -> ::core::result::Result<::std::string::String, ::annals::__private::serde_json::Error> {
            #to_string
        }

        fn from_payload(
            #event_type: &::core::primitive::str,
            #payload: &::core::primitive::str,
        ) -> ::core::result::Result<Self, ::annals::__private::DecodeError> {
            match #event_type {
                #name => #from_str.map_err(::annals::__private::DecodeError::Json),
                _ => #unknown,
            }
        }
    }
}

/// The helper items and methods of an enum event.
fn enum_parts(variants: &[EventVariant]) -> (TokenStream, TokenStream) {
    let mut helpers = TokenStream::new();
    let mut type_arms = Vec::new();
    let mut version_arms = Vec::new();
    let mut to_arms = Vec::new();
    let mut from_arms = Vec::new();
    let payload = local("payload");
    let event_type = local("event_type");
    for (index, variant) in variants.iter().enumerate() {
        let ser = format_ident!("__AnnalsSer{}", index);
        let de = format_ident!("__AnnalsDe{}", index);
        let pattern = any_pattern(variant);
        let name = name_lit(&variant.name);
        let version = Literal::u32_suffixed(variant.version);
        type_arms.push(quote!(#pattern => #name,));
        version_arms.push(quote!(#pattern => #version,));
        helpers.extend(crate::expand::payload::ser_helper(variant, index, &ser));
        helpers.extend(crate::expand::payload::de_helper(variant, &de));
        to_arms.push(to_payload_arm(variant, &ser));
        from_arms.push(from_payload_arm(variant, &de, &name));
    }
    let unknown = unknown_type(&event_type);
    let methods = quote! {
        fn event_type(&self) -> &'static ::core::primitive::str {
            match self {
                #(#type_arms)*
            }
        }

        fn schema_version(&self) -> ::core::primitive::u32 {
            match self {
                #(#version_arms)*
            }
        }

        fn to_payload(
            &self,
        ) -> ::core::result::Result<::std::string::String, ::annals::__private::serde_json::Error> {
            match self {
                #(#to_arms)*
            }
        }

        fn from_payload(
            #event_type: &::core::primitive::str,
            #payload: &::core::primitive::str,
        ) -> ::core::result::Result<Self, ::annals::__private::DecodeError> {
            match #event_type {
                #(#from_arms)*
                _ => #unknown,
            }
        }
    };
    (helpers, methods)
}

/// `Self::V`, `Self::V(..)` or `Self::V { .. }`.
fn any_pattern(variant: &EventVariant) -> TokenStream {
    let ident = &variant.ident;
    match variant.shape {
        Shape::Unit => quote!(Self::#ident),
        Shape::Tuple => quote!(Self::#ident(..)),
        Shape::Named => quote!(Self::#ident { .. }),
    }
}

/// The local each field is bound to.
fn bindings(fields: &[EventField]) -> Vec<Ident> {
    (0..fields.len()).map(|i| local(&format!("field{i}"))).collect()
}

fn to_payload_arm(variant: &EventVariant, ser: &Ident) -> TokenStream {
    let ident = &variant.ident;
    let bound = bindings(&variant.fields);
    let members: Vec<_> = variant.fields.iter().map(|field| &field.ident).collect();
    let to_string = quote!(::annals::__private::serde_json::to_string);
    match variant.shape {
        Shape::Unit => quote! {
            Self::#ident => ::core::result::Result::Ok(::std::string::String::from("{}")),
        },
        Shape::Tuple => quote! {
            Self::#ident(#(#bound),*) => #to_string(&#ser(#(#bound),*)),
        },
        Shape::Named => quote! {
            Self::#ident { #(#members: #bound),* } => #to_string(&#ser { #(#members: #bound),* }),
        },
    }
}

fn from_payload_arm(variant: &EventVariant, de: &Ident, name: &LitStr) -> TokenStream {
    let ident = &variant.ident;
    let payload = local("payload");
    let value = local("value");
    let decode = |ty: TokenStream| {
        quote! {
            ::annals::__private::serde_json::from_str::<#ty>(#payload)
                .map_err(::annals::__private::DecodeError::Json)?
        }
    };
    match variant.shape {
        Shape::Unit => {
            let decode = decode(quote!(::core::option::Option<#de>));
            quote! {
                #name => {
                    let _ = #decode;
                    ::core::result::Result::Ok(Self::#ident)
                }
            }
        }
        Shape::Tuple => {
            let decode = decode(quote!(#de));
            let indexes = (0..variant.fields.len()).map(syn::Index::from);
            quote! {
                #name => {
                    let #value = #decode;
                    ::core::result::Result::Ok(Self::#ident(#(#value.#indexes),*))
                }
            }
        }
        Shape::Named => {
            let decode = decode(quote!(#de));
            let members: Vec<_> = variant.fields.iter().map(|field| &field.ident).collect();
            quote! {
                #name => {
                    let #value = #decode;
                    ::core::result::Result::Ok(Self::#ident { #(#members: #value.#members),* })
                }
            }
        }
    }
}

/// `Event::personal_data`, when the struct or a variant declares personal fields (the trait's
/// default, `None`, otherwise).
fn personal_data(kind: &EventKind) -> TokenStream {
    let subject = local("subject");
    let body = match kind {
        EventKind::Struct { personal: Some(personal), .. } => {
            let field = &personal.subject;
            let value = personal_value(personal, &quote!(&self.#field));
            quote!(::core::option::Option::Some(#value))
        }
        EventKind::Enum(variants) if variants.iter().any(|v| v.personal.is_some()) => {
            let arms = variants.iter().map(|variant| match &variant.personal {
                Some(personal) => {
                    let (ident, field) = (&variant.ident, &personal.subject);
                    let value = personal_value(personal, &quote!(#subject));
                    quote!(Self::#ident { #field: #subject, .. } => ::core::option::Option::Some(#value),)
                }
                None => {
                    let pattern = any_pattern(variant);
                    quote!(#pattern => ::core::option::Option::None,)
                }
            });
            quote!(match self { #(#arms)* })
        }
        _ => return TokenStream::new(),
    };
    quote! {
        fn personal_data(&self) -> ::core::option::Option<::annals::__private::PersonalData> {
            #body
        }
    }
}

/// The `PersonalData` of `personal`, its subject read from `subject` (a reference to the field).
fn personal_value(personal: &Personal, subject: &TokenStream) -> TokenStream {
    let fields = personal.fields.iter().map(|field| name_lit(field));
    // Spanned at the subject's type, where a type without `Display` is reported.
    let ty = &personal.subject_ty;
    let to_string = quote_spanned!(syn::spanned::Spanned::span(ty)=> ::std::string::ToString::to_string(#subject));
    quote! {
        ::annals::__private::PersonalData::new(#to_string, [#(#fields),*])
    }
}

/// An impl whose methods are never run: the crate does not compile, because of the errors
/// reported next to it.
fn stand_in(ident: &Ident) -> TokenStream {
    quote! {
        const _: () = {
            #[automatically_derived]
            impl ::annals::__private::Event for #ident {
                fn event_types() -> &'static [&'static ::core::primitive::str] {
                    ::core::unimplemented!()
                }
                fn current_version(_: &::core::primitive::str) -> ::core::option::Option<::core::primitive::u32> {
                    ::core::unimplemented!()
                }
                fn event_type(&self) -> &'static ::core::primitive::str {
                    ::core::unimplemented!()
                }
                fn schema_version(&self) -> ::core::primitive::u32 {
                    ::core::unimplemented!()
                }
                fn to_payload(
                    &self,
                ) -> ::core::result::Result<::std::string::String, ::annals::__private::serde_json::Error> {
                    ::core::unimplemented!()
                }
                fn from_payload(
                    _: &::core::primitive::str,
                    _: &::core::primitive::str,
                ) -> ::core::result::Result<Self, ::annals::__private::DecodeError> {
                    ::core::unimplemented!()
                }
            }
        };
    }
}
