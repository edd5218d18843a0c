//! Parsing of the `#[serde(...)]` attributes that `#[derive(Event)]` copies onto the helper structs
//! it serializes and deserializes the variants' payloads with.
//!
//! The enum itself derives no serde trait, so these attributes are checked here, with errors that
//! say what works: each goes to the helper that uses it, and the keys that name a function are
//! called through a wrapper because the serializing helper holds references (`&T`), so serde would
//! hand the function a `&&T`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{token, Attribute, ExprPath, Ident, LitStr, Token};

use crate::attr::{parse_keys, skip_value};
use crate::errors::Errors;

/// The serde keys of one field.
#[derive(Default)]
pub(crate) struct SerdeField {
    /// Keys copied as they are onto the serializing helper.
    pub(crate) ser: Vec<TokenStream>,
    /// Keys copied as they are onto the deserializing helper.
    pub(crate) de: Vec<TokenStream>,
    /// `skip_serializing_if = "path"`, called through a wrapper.
    pub(crate) skip_serializing_if: Option<ExprPath>,
    /// `serialize_with = "path"`, or `with = "module"` as `module::serialize`, called through a
    /// wrapper.
    pub(crate) serialize_with: Option<ExprPath>,
    /// The name `rename` gives the field in serialized payloads.
    pub(crate) rename: Option<String>,
    /// The keys that take the field out of the payload's top level, or out of the payload
    /// (`skip`, `skip_serializing`, `skip_serializing_if`, `flatten`), as written.
    pub(crate) not_top_level: Vec<Ident>,
}

/// The serde keys of a variant (or, for `rename_all_fields`, of the enum, for all its variants).
#[derive(Default, Clone)]
pub(crate) struct SerdeContainer {
    /// `rename_all ...`: the tokens after the key (`= "camelCase"` or `(serialize = "...")`).
    pub(crate) rename_all: Option<(Ident, TokenStream)>,
    /// `deny_unknown_fields`.
    pub(crate) deny_unknown_fields: Option<Ident>,
}

/// The shape of a key's value.
enum Form {
    /// `key`
    Flag,
    /// `key = "..."`
    Str(LitStr),
    /// `key(...)`
    List(TokenStream),
}

impl Form {
    fn tokens(&self, key: &Ident) -> TokenStream {
        match self {
            Form::Flag => quote!(#key),
            Form::Str(lit) => quote!(#key = #lit),
            Form::List(group) => quote!(#key #group),
        }
    }

    fn rest(&self) -> TokenStream {
        match self {
            Form::Flag => TokenStream::new(),
            Form::Str(lit) => quote!(= #lit),
            Form::List(group) => group.clone(),
        }
    }
}

/// Which forms a key accepts.
#[derive(Clone, Copy)]
enum Accepts {
    Flag,
    Str,
    FlagOrStr,
    StrOrList,
}

impl Accepts {
    fn admits(self, form: &Form) -> bool {
        matches!(
            (self, form),
            (Accepts::Flag, Form::Flag)
                | (Accepts::Str, Form::Str(_))
                | (Accepts::FlagOrStr, Form::Flag | Form::Str(_))
                | (Accepts::StrOrList, Form::Str(_) | Form::List(_))
        )
    }

    fn usage(self, key: &Ident) -> String {
        match self {
            Accepts::Flag => format!("#[serde({key})]"),
            Accepts::Str => format!("#[serde({key} = \"...\")]"),
            Accepts::FlagOrStr => format!("#[serde({key})] or #[serde({key} = \"...\")]"),
            Accepts::StrOrList => format!("#[serde({key} = \"...\")] or #[serde({key}(...))]"),
        }
    }
}

/// Where a field key goes.
#[derive(Clone, Copy)]
enum Target {
    Both,
    Ser,
    De,
    /// Serialize side through a wrapper; `with` also goes to the deserializing helper as it is.
    SkipIfWrapper,
    SerializeWithWrapper,
    With,
}

/// How a field key is written, where it goes, and what it sets (two keys that set the same thing
/// conflict).
fn field_key(key: &str) -> Option<(Accepts, Target, &'static [&'static str])> {
    Some(match key {
        "rename" => (Accepts::StrOrList, Target::Both, &["rename"]),
        "bound" => (Accepts::StrOrList, Target::Both, &["bound"]),
        "skip" => (Accepts::Flag, Target::Both, &["skip"]),
        "flatten" => (Accepts::Flag, Target::Both, &["flatten"]),
        "skip_serializing" => (Accepts::Flag, Target::Ser, &["skip_serializing"]),
        "skip_deserializing" => (Accepts::Flag, Target::De, &["skip_deserializing"]),
        "alias" => (Accepts::Str, Target::De, &[]),
        "deserialize_with" => (Accepts::Str, Target::De, &["deserialize_with"]),
        "default" => (Accepts::FlagOrStr, Target::De, &["default"]),
        "skip_serializing_if" => (Accepts::Str, Target::SkipIfWrapper, &["skip_serializing_if"]),
        "serialize_with" => (Accepts::Str, Target::SerializeWithWrapper, &["serialize_with"]),
        "with" => (Accepts::Str, Target::With, &["serialize_with", "deserialize_with"]),
        _ => return None,
    })
}

const FIELD_KEYS: &str = "rename, alias, default, skip, skip_serializing, skip_deserializing, \
                          skip_serializing_if, serialize_with, deserialize_with, with, flatten, bound";

/// Reads a field's `#[serde(...)]` attributes.
pub(crate) fn field(attrs: &[Attribute], errors: &mut Errors) -> SerdeField {
    let mut out = SerdeField::default();
    // What each key sets, and by which key: `with` sets both `serialize_with` and `deserialize_with`.
    let mut seen: Vec<(&'static str, String)> = Vec::new();
    for attr in serde_attrs(attrs) {
        parse_keys(attr, "#[serde(default)]", errors, |key, meta, errors| {
            let name = key.to_string();
            let Some((accepts, target, claims)) = field_key(&name) else {
                let message = match name.as_str() {
                    "borrow" => "`borrow` is not supported in event payloads: they are decoded into owned \
                                 values; use an owned type such as `String`"
                        .to_owned(),
                    "getter" => "`getter` only applies to serde's remote derives".to_owned(),
                    _ => format!("unknown serde field attribute `{name}`: the supported ones are {FIELD_KEYS}"),
                };
                errors.spanned(key, message);
                return skip_value(meta.input);
            };
            let Some(form) = form(meta.input, key, accepts, errors)? else { return Ok(()) };
            let mut clash = None;
            for &claim in claims {
                if let Some((_, by)) = seen.iter().find(|(taken, _)| *taken == claim) {
                    clash = Some(if *by == name {
                        format!("duplicate serde key `{name}`: give it once")
                    } else {
                        format!("`{name}` and `{by}` both set how this field is serialized or deserialized: keep one")
                    });
                }
            }
            if let Some(message) = clash {
                errors.spanned(key, message);
                return Ok(());
            }
            seen.extend(claims.iter().map(|&claim| (claim, name.clone())));
            match name.as_str() {
                "rename" => out.rename = serialize_name(&form),
                "skip" | "skip_serializing" | "skip_serializing_if" | "flatten" => {
                    out.not_top_level.push(key.clone());
                }
                _ => {}
            }
            place(&mut out, key, &form, target, errors);
            Ok(())
        });
    }
    out
}

/// Puts one checked key where it goes.
fn place(out: &mut SerdeField, key: &Ident, form: &Form, target: Target, errors: &mut Errors) {
    let tokens = form.tokens(key);
    let path = || match form {
        Form::Str(lit) => function_path(lit),
        _ => Err(syn::Error::new(key.span(), "expected a path")),
    };
    match target {
        Target::Both => {
            out.ser.push(tokens.clone());
            out.de.push(tokens);
        }
        Target::Ser => out.ser.push(tokens),
        Target::De => out.de.push(tokens),
        Target::SkipIfWrapper => out.skip_serializing_if = errors.ok(path()),
        Target::SerializeWithWrapper => out.serialize_with = errors.ok(path()),
        Target::With => {
            out.serialize_with = errors.ok(path()).map(|mut module| {
                module.path.segments.push(Ident::new("serialize", key.span()).into());
                module
            });
            out.de.push(tokens);
        }
    }
}

/// The serialize-side name of `key = "name"` or `key(serialize = "name", ...)`.
fn serialize_name(form: &Form) -> Option<String> {
    match form {
        Form::Str(lit) => Some(lit.value()),
        Form::List(group) => {
            let group: proc_macro2::Group = syn::parse2(group.clone()).ok()?;
            let parser = syn::punctuated::Punctuated::<syn::MetaNameValue, Token![,]>::parse_terminated;
            let pairs = syn::parse::Parser::parse2(parser, group.stream()).ok()?;
            pairs.into_iter().find(|pair| pair.path.is_ident("serialize")).and_then(|pair| match pair.value {
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(lit), .. }) => Some(lit.value()),
                _ => None,
            })
        }
        Form::Flag => None,
    }
}

/// The name serde gives a field named `field` (an identifier, unraw) under the `rename_all` of
/// `container`, as serde's `RenameRule::apply_to_field` does.
pub(crate) fn field_name(field: &str, container: &SerdeContainer) -> String {
    let Some((_, rest)) = &container.rename_all else { return field.to_owned() };
    let rule = match syn::parse2::<RenameAllRest>(rest.clone()) {
        Ok(RenameAllRest(Some(rule))) => rule,
        _ => return field.to_owned(),
    };
    let pascal = || {
        let mut out = String::with_capacity(field.len());
        let mut capitalize = true;
        for c in field.chars() {
            if c == '_' {
                capitalize = true;
            } else if capitalize {
                out.push(c.to_ascii_uppercase());
                capitalize = false;
            } else {
                out.push(c);
            }
        }
        out
    };
    match rule.as_str() {
        "UPPERCASE" | "SCREAMING_SNAKE_CASE" => field.to_ascii_uppercase(),
        "PascalCase" => pascal(),
        "camelCase" => {
            let pascal = pascal();
            let mut chars = pascal.chars();
            match chars.next() {
                Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
                None => pascal,
            }
        }
        "kebab-case" => field.replace('_', "-"),
        "SCREAMING-KEBAB-CASE" => field.to_ascii_uppercase().replace('_', "-"),
        _ => field.to_owned(),
    }
}

/// The tokens after `rename_all`: `= "rule"` or `(serialize = "rule", ...)`; the serialize rule.
struct RenameAllRest(Option<String>);

impl syn::parse::Parse for RenameAllRest {
    fn parse(input: syn::parse::ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(Token![=]) {
            let _: Token![=] = input.parse()?;
            let lit: LitStr = input.parse()?;
            return Ok(RenameAllRest(Some(lit.value())));
        }
        let group: proc_macro2::Group = input.parse()?;
        Ok(RenameAllRest(serialize_name(&Form::List(proc_macro2::TokenTree::Group(group).into()))))
    }
}

/// Parses the string of `key = "path"` as a path.
fn function_path(lit: &LitStr) -> syn::Result<ExprPath> {
    lit.parse::<ExprPath>()
        .map_err(|_| syn::Error::new(lit.span(), "expected the path of a function, such as \"Option::is_none\""))
}

/// Reads the value of a key in the form it accepts; `None` (error recorded) otherwise.
fn form(
    input: syn::parse::ParseStream<'_>,
    key: &Ident,
    accepts: Accepts,
    errors: &mut Errors,
) -> syn::Result<Option<Form>> {
    let form = if input.peek(Token![=]) {
        let _: Token![=] = input.parse()?;
        if input.peek(LitStr) {
            Form::Str(input.parse()?)
        } else {
            let span = input.span();
            skip_value(input)?;
            errors.at(span, format!("expected a string literal: {}", accepts.usage(key)));
            return Ok(None);
        }
    } else if input.peek(token::Paren) {
        let group: proc_macro2::TokenTree = input.parse()?;
        Form::List(group.into())
    } else {
        Form::Flag
    };
    if !accepts.admits(&form) {
        errors.spanned(key, format!("wrong form for `{key}`: write {}", accepts.usage(key)));
        return Ok(None);
    }
    Ok(Some(form))
}

/// Reads the `#[serde(...)]` attributes of a variant (`on_enum` false) or of the enum itself.
pub(crate) fn container(attrs: &[Attribute], on_enum: bool, errors: &mut Errors) -> SerdeContainer {
    let mut out = SerdeContainer::default();
    let (rename_key, place) = if on_enum { ("rename_all_fields", "enum") } else { ("rename_all", "variant") };
    for attr in serde_attrs(attrs) {
        parse_keys(attr, "#[serde(rename_all = \"...\")]", errors, |key, meta, errors| {
            let name = key.to_string();
            if name == rename_key {
                if let Some(form) = form(meta.input, key, Accepts::StrOrList, errors)? {
                    if out.rename_all.is_some() {
                        errors.spanned(key, format!("duplicate `{name}`: give it once"));
                    }
                    out.rename_all = Some((Ident::new("rename_all", key.span()), form.rest()));
                }
            } else if name == "deny_unknown_fields" {
                if form(meta.input, key, Accepts::Flag, errors)?.is_some() {
                    if out.deny_unknown_fields.is_some() {
                        errors.spanned(key, format!("duplicate `{name}`: give it once"));
                    }
                    out.deny_unknown_fields = Some(key.clone());
                }
            } else {
                let message = format!(
                    "`#[serde({name})]` is not supported on a #[derive(Event)] {place}: the payload helpers \
                     accept `{rename_key}` and `deny_unknown_fields` here, and serde field attributes on \
                     the fields; for more, make the variant a newtype around a struct that derives serde"
                );
                errors.spanned(key, message);
                skip_value(meta.input)?;
            }
            Ok(())
        });
    }
    out
}

fn serde_attrs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|attr| attr.path().is_ident("serde"))
}

/// A container with the variant's keys, falling back to the enum's.
pub(crate) fn merge(variant: SerdeContainer, enum_level: &SerdeContainer) -> SerdeContainer {
    SerdeContainer {
        rename_all: variant.rename_all.or_else(|| enum_level.rename_all.clone()),
        deny_unknown_fields: variant.deny_unknown_fields.or_else(|| enum_level.deny_unknown_fields.clone()),
    }
}
