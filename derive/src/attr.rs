//! Parsing of the `#[event(...)]` and `#[aggregate(...)]` attributes.
//!
//! Each key's value is checked for its form (a string, an integer, a type) here; what the values
//! mean together is checked when the model is built. Errors are collected, not returned, so that
//! one run reports every mistake.

use proc_macro2::TokenTree;
use syn::meta::ParseNestedMeta;
use syn::parse::ParseStream;
use syn::{Attribute, Expr, ExprLit, Ident, Lit, LitStr, Meta, Token, Type};

use crate::errors::Errors;

/// The keys of `#[event(...)]`, on an enum, a variant or a struct.
#[derive(Default)]
pub(crate) struct EventAttr {
    /// `name = "..."`: the event type name.
    pub(crate) name: Option<LitStr>,
    /// `version = N`: the schema version.
    pub(crate) version: Option<u32>,
}

const EVENT_USAGE: &str = "#[event(name = \"...\", version = N)]";

/// Reads every `#[event(...)]` in `attrs` (several are merged; a key may appear once).
pub(crate) fn event_attr(attrs: &[Attribute], errors: &mut Errors) -> EventAttr {
    let mut out = EventAttr::default();
    let mut given = Vec::new();
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("event")) {
        parse_keys(attr, EVENT_USAGE, errors, |key, meta, errors| {
            if !first_time(&mut given, key, errors) {
                return skip_value(meta.input);
            }
            match key.to_string().as_str() {
                "name" => out.name = lit_str(meta, key, "name = \"...\"", errors)?,
                "version" => out.version = positive_u32(meta, key, "version = N", errors)?,
                "personal" | "subject" => {
                    let message = format!(
                        "#[event({key})] goes on a field of a struct or of a struct variant, not on {EVENT_ATTR_PLACES}"
                    );
                    errors.spanned(key, message);
                    skip_value(meta.input)?;
                }
                _ => {
                    let message = format!(
                        "unknown key `{key}` in #[event(...)]: the keys are `name = \"...\"` and `version = N`"
                    );
                    errors.spanned(key, message);
                    skip_value(meta.input)?;
                }
            }
            Ok(())
        });
    }
    out
}

/// Where `#[event(name = "...", version = N)]` goes.
const EVENT_ATTR_PLACES: &str = "the enum, a variant or the struct";

/// The keys of `#[event(...)]` on a field: flags, each kept as the key, to point at.
#[derive(Default)]
pub(crate) struct FieldAttr {
    /// `personal`: the field holds personal data of the subject.
    pub(crate) personal: Option<Ident>,
    /// `subject`: the field identifies whose personal data the other fields are.
    pub(crate) subject: Option<Ident>,
}

const FIELD_USAGE: &str = "#[event(personal)] or #[event(subject)]";

/// Reads every `#[event(...)]` on a field (several are merged; a key may appear once).
pub(crate) fn field_attr(attrs: &[Attribute], errors: &mut Errors) -> FieldAttr {
    let mut out = FieldAttr::default();
    let mut given = Vec::new();
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("event")) {
        parse_keys(attr, FIELD_USAGE, errors, |key, meta, errors| {
            if !first_time(&mut given, key, errors) {
                return skip_value(meta.input);
            }
            let slot = match key.to_string().as_str() {
                "personal" => &mut out.personal,
                "subject" => &mut out.subject,
                "name" | "version" => {
                    let message = format!(
                        "#[event({key} = ...)] goes on {EVENT_ATTR_PLACES}, not on a field: a field takes \
                         {FIELD_USAGE}"
                    );
                    errors.spanned(key, message);
                    return skip_value(meta.input);
                }
                _ => {
                    let message = format!(
                        "unknown key `{key}` in #[event(...)] on a field: the keys are `personal` and `subject`"
                    );
                    errors.spanned(key, message);
                    return skip_value(meta.input);
                }
            };
            if !meta.input.is_empty() && !meta.input.peek(Token![,]) {
                errors.spanned(key, format!("`{key}` takes no value: write #[event({key})]"));
                return skip_value(meta.input);
            }
            *slot = Some(key.clone());
            Ok(())
        });
    }
    out
}

/// The keys of `#[aggregate(...)]`.
#[derive(Default)]
pub(crate) struct AggregateAttr {
    /// `command = Type`.
    pub(crate) command: Option<Type>,
    /// `event = Type`.
    pub(crate) event: Option<Type>,
    /// `error = Type`.
    pub(crate) error: Option<Type>,
    /// `name = "..."`: the aggregate type name, the category of its streams.
    pub(crate) name: Option<LitStr>,
    /// `snapshot_version = N`.
    pub(crate) snapshot_version: Option<u32>,
    /// The first `#[aggregate(...)]` attribute, to point at when a key is missing.
    pub(crate) first: Option<Attribute>,
    /// The keys given, with a valid value or not.
    pub(crate) given: Vec<String>,
}

const AGGREGATE_USAGE: &str = "#[aggregate(command = Type, event = Type, error = Type)]";

/// Reads every `#[aggregate(...)]` in `attrs` (several are merged; a key may appear once).
pub(crate) fn aggregate_attr(attrs: &[Attribute], errors: &mut Errors) -> AggregateAttr {
    let mut out = AggregateAttr::default();
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("aggregate")) {
        if out.first.is_none() {
            out.first = Some(attr.clone());
        }
        parse_keys(attr, AGGREGATE_USAGE, errors, |key, meta, errors| {
            if !first_time(&mut out.given, key, errors) {
                return skip_value(meta.input);
            }
            let slot = match key.to_string().as_str() {
                "command" => &mut out.command,
                "event" => &mut out.event,
                "error" => &mut out.error,
                "name" => {
                    out.name = lit_str(meta, key, "name = \"...\"", errors)?;
                    return Ok(());
                }
                "snapshot_version" => {
                    out.snapshot_version = positive_u32(meta, key, "snapshot_version = N", errors)?;
                    return Ok(());
                }
                _ => {
                    let message = format!(
                        "unknown key `{key}` in #[aggregate(...)]: the keys are `command = Type`, \
                         `event = Type`, `error = Type`, `name = \"...\"` and `snapshot_version = N`"
                    );
                    errors.spanned(key, message);
                    return skip_value(meta.input);
                }
            };
            *slot = type_value(meta, key, errors)?;
            Ok(())
        });
    }
    out
}

/// Calls `on_key` for each `key ...` of `attr`'s comma-separated arguments. `on_key` must consume
/// the key's value. Syntax errors end the attribute; everything else is collected.
pub(crate) fn parse_keys(
    attr: &Attribute,
    usage: &str,
    errors: &mut Errors,
    mut on_key: impl FnMut(&Ident, &ParseNestedMeta<'_>, &mut Errors) -> syn::Result<()>,
) {
    if !matches!(attr.meta, Meta::List(_)) {
        errors.spanned(attr, format!("expected arguments in parentheses: {usage}"));
        return;
    }
    let result = attr.parse_nested_meta(|meta| match meta.path.get_ident() {
        Some(key) => on_key(key, &meta, errors),
        None => {
            errors.spanned(&meta.path, format!("expected a key such as {usage}"));
            skip_value(meta.input)
        }
    });
    errors.ok(result);
}

/// Skips the tokens up to the next `,` at this level.
pub(crate) fn skip_value(input: ParseStream<'_>) -> syn::Result<()> {
    while !input.is_empty() && !input.peek(Token![,]) {
        let _: TokenTree = input.parse()?;
    }
    Ok(())
}

/// Records `key` as given; `false` (error recorded) when it already was.
fn first_time(given: &mut Vec<String>, key: &Ident, errors: &mut Errors) -> bool {
    let name = key.to_string();
    if given.contains(&name) {
        errors.spanned(key, format!("duplicate key `{key}`: give it once"));
        return false;
    }
    given.push(name);
    true
}

/// Reads `= <expr>`; `None` (error recorded) when there is no `=`.
fn expr_value(meta: &ParseNestedMeta<'_>, key: &Ident, usage: &str, errors: &mut Errors) -> syn::Result<Option<Expr>> {
    if !meta.input.peek(Token![=]) {
        errors.spanned(key, format!("`{key}` needs a value: `{usage}`"));
        skip_value(meta.input)?;
        return Ok(None);
    }
    Ok(Some(meta.value()?.parse()?))
}

/// Reads `= "..."`.
pub(crate) fn lit_str(
    meta: &ParseNestedMeta<'_>,
    key: &Ident,
    usage: &str,
    errors: &mut Errors,
) -> syn::Result<Option<LitStr>> {
    match expr_value(meta, key, usage, errors)? {
        Some(Expr::Lit(ExprLit { lit: Lit::Str(lit), .. })) => Ok(Some(lit)),
        Some(other) => {
            errors.spanned(other, format!("expected a string literal: `{usage}`"));
            Ok(None)
        }
        None => Ok(None),
    }
}

/// Reads `= N` with `N` a `u32` of at least 1.
fn positive_u32(meta: &ParseNestedMeta<'_>, key: &Ident, usage: &str, errors: &mut Errors) -> syn::Result<Option<u32>> {
    let lit = match expr_value(meta, key, usage, errors)? {
        Some(Expr::Lit(ExprLit { lit: Lit::Int(lit), .. })) => lit,
        Some(other) => {
            errors.spanned(other, format!("expected an integer of at least 1: `{usage}`"));
            return Ok(None);
        }
        None => return Ok(None),
    };
    let span = lit.span();
    if !matches!(lit.suffix(), "" | "u32") {
        errors.at(span, format!("expected a `u32`, found a `{}` literal: `{usage}`", lit.suffix()));
        return Ok(None);
    }
    match lit.base10_parse::<u32>() {
        Ok(0) => {
            errors.at(span, format!("`{key}` starts at 1: `{key} = 0` is not a version"));
            Ok(None)
        }
        Ok(value) => Ok(Some(value)),
        Err(_) => {
            errors.at(span, format!("`{key}` must fit in a `u32` (at most {})", u32::MAX));
            Ok(None)
        }
    }
}

/// Reads `= Type`.
fn type_value(meta: &ParseNestedMeta<'_>, key: &Ident, errors: &mut Errors) -> syn::Result<Option<Type>> {
    let usage = format!("{key} = Type");
    if !meta.input.peek(Token![=]) {
        errors.spanned(key, format!("`{key}` needs a type: `{usage}`"));
        skip_value(meta.input)?;
        return Ok(None);
    }
    let input = meta.value()?;
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        errors.spanned(&lit, format!("expected a type, not a string: `{usage}`"));
        return Ok(None);
    }
    Ok(Some(input.parse()?))
}
