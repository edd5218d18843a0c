//! Checks on the input that do not belong to one attribute: the kind of item, generics, names.
//! Each check records its errors and lets the others run, so that one run reports every mistake.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::{Attribute, Fields, Generics, Ident, Type};

use crate::attr::FieldAttr;
use crate::errors::Errors;
use crate::model::Personal;
use crate::serde_attr::{self, SerdeContainer, SerdeField};

/// The longest event type name, in bytes (`annals::MAX_EVENT_TYPE_LEN`).
const MAX_EVENT_TYPE_LEN: usize = 256;

/// The longest stream name, in bytes (`annals::StreamId::MAX_LEN`).
const MAX_STREAM_LEN: usize = 256;

/// Rejects generic parameters: the generated impls are for one concrete type.
pub(crate) fn no_generics(generics: &Generics, derive: &str, errors: &mut Errors) {
    if !generics.params.is_empty() {
        errors.spanned(
            generics,
            format!(
                "#[derive({derive})] does not support generic types: remove the generic parameters, \
                 or implement `annals::{derive}` by hand"
            ),
        );
    }
}

/// Rejects `#[attr]` on the fields of a struct or variant: it is read on the type and variants.
pub(crate) fn not_on_fields(fields: &Fields, attr: &str, goes_on: &str, errors: &mut Errors) {
    for field in fields {
        not_here(&field.attrs, attr, &format!("#[{attr}(...)] goes on {goes_on}, not on a field"), errors);
    }
}

/// Rejects every `#[attr]` in `attrs` with `message`.
pub(crate) fn not_here(attrs: &[Attribute], attr: &str, message: &str, errors: &mut Errors) {
    for found in attrs.iter().filter(|found| found.path().is_ident(attr)) {
        errors.spanned(found, message);
    }
}

/// A field of a struct or variant, as the personal data checks see it.
pub(crate) struct PersonalCandidate<'a> {
    /// Its name; `None` for a tuple field.
    pub(crate) ident: Option<Ident>,
    pub(crate) ty: Type,
    pub(crate) attr: FieldAttr,
    pub(crate) serde: &'a SerdeField,
}

/// Checks the `#[event(personal)]` and `#[event(subject)]` fields of one struct or variant (`owner`,
/// whose fields serde names under `container`'s `rename_all`) and returns its personal data, if
/// it declares some and every check passes.
pub(crate) fn personal(
    candidates: Vec<PersonalCandidate<'_>>,
    container: &SerdeContainer,
    errors: &mut Errors,
) -> Option<Personal> {
    let mut subject: Option<(Ident, Ident, Type)> = None;
    let mut first_personal: Option<Ident> = None;
    let mut fields = Vec::new();
    let mut failed = false;
    for candidate in candidates {
        let FieldAttr { personal, subject: subject_key } = candidate.attr;
        if personal.is_none() && subject_key.is_none() {
            continue;
        }
        let Some(ident) = candidate.ident else {
            for key in personal.iter().chain(&subject_key) {
                errors.spanned(
                    key,
                    format!(
                        "#[event({key})] goes on a named field: a tuple field has no name in the payload; use a \
                         struct variant or a struct with named fields"
                    ),
                );
            }
            failed = true;
            continue;
        };
        if let (Some(_), Some(key)) = (&personal, &subject_key) {
            errors.spanned(
                key,
                "a field cannot be both the subject and personal data: the subject is stored in clear, to find \
                 its key; keep one of #[event(subject)] and #[event(personal)] on this field",
            );
            failed = true;
            continue;
        }
        if let Some(key) = subject_key {
            match &subject {
                Some((_, first, _)) => {
                    errors.spanned(
                        &key,
                        format!("a second #[event(subject)]: `{first}` already names the subject; keep one"),
                    );
                    failed = true;
                }
                None => subject = Some((key, ident.clone(), candidate.ty.clone())),
            }
        }
        if let Some(key) = personal {
            if !is_option(&candidate.ty) {
                errors.spanned(
                    &candidate.ty,
                    "erased fields read back as null, so a personal field must be an Option: make its type \
                     `Option<...>`",
                );
                failed = true;
            }
            for layout in &candidate.serde.not_top_level {
                errors.spanned(
                    layout,
                    format!(
                        "`{layout}` cannot go on a personal field: its value is encrypted where it stands in the \
                         payload, so it must always be serialized as a field of its own"
                    ),
                );
                failed = true;
            }
            let name = candidate
                .serde
                .rename
                .clone()
                .unwrap_or_else(|| serde_attr::field_name(&ident.unraw().to_string(), container));
            fields.push(name);
            first_personal.get_or_insert(key);
        }
    }
    match (subject, first_personal) {
        (None, Some(key)) => {
            errors.spanned(
                key,
                "#[event(personal)] needs the subject the data belongs to: mark the field that identifies it \
                 (a member id, not an e-mail address) #[event(subject)]",
            );
            None
        }
        (Some((key, _, _)), None) => {
            errors.spanned(
                key,
                "#[event(subject)] without a personal field: mark the fields that hold personal data \
                 #[event(personal)], or remove it",
            );
            None
        }
        (Some((_, subject, subject_ty)), Some(_)) if !failed => Some(Personal { subject, subject_ty, fields }),
        _ => None,
    }
}

/// Whether `ty` is written `Option<T>` (also `std::option::Option<T>`, `core::option::Option<T>`).
fn is_option(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    if path.qself.is_some() {
        return false;
    }
    let Some(last) = path.path.segments.last() else { return false };
    let one_type = matches!(
        &last.arguments,
        syn::PathArguments::AngleBracketed(args)
            if args.args.len() == 1 && matches!(args.args.first(), Some(syn::GenericArgument::Type(_)))
    );
    last.ident == "Option" && one_type
}

/// Checks an event type name: non-empty, at most 256 bytes, no control characters (the rules the
/// store applies when it appends).
pub(crate) fn event_name(name: &str, span: Span, errors: &mut Errors) {
    if name.is_empty() {
        errors.at(span, "an event type name cannot be empty: write a name such as `name = \"Opened\"`");
    } else if name.len() > MAX_EVENT_TYPE_LEN {
        errors.at(
            span,
            format!("the event type name is {} bytes long; at most {MAX_EVENT_TYPE_LEN} are allowed", name.len()),
        );
    }
    control_characters(name, "an event type name", span, errors);
}

/// Checks an aggregate type name, the category of its streams: non-empty, no `-` (it separates the
/// category from the id), no control characters, and room left for an id in a stream name.
pub(crate) fn aggregate_name(name: &str, span: Span, errors: &mut Errors) {
    let max = MAX_STREAM_LEN - 2;
    if name.is_empty() {
        errors.at(span, "an aggregate name cannot be empty: write a name such as `name = \"account\"`");
    } else if name.len() > max {
        errors.at(
            span,
            format!(
                "the aggregate name is {} bytes long; at most {max} are allowed, so that `<name>-<id>` fits \
                 in a stream name of {MAX_STREAM_LEN} bytes",
                name.len()
            ),
        );
    }
    if name.contains('-') {
        errors.at(
            span,
            format!(
                "an aggregate name cannot contain `-`: it separates the name from the id in stream names \
                 (`{name}-42`); use `_` instead, as in \"{}\"",
                name.replace('-', "_")
            ),
        );
    }
    control_characters(name, "an aggregate name", span, errors);
}

/// The name rule of `annals` (its `InvalidName`), checked at compile time: no control character (C0,
/// DEL, C1) and no bidirectional control. The derive crate does not depend on `annals`, so the rule
/// is repeated here: `src/name.rs` of `annals` holds the same rule, so change both together.
fn control_characters(name: &str, what: &str, span: Span, errors: &mut Errors) {
    if let Some(found) = name.chars().find(|c| c.is_control()) {
        errors.at(span, format!("{what} cannot contain control characters, found {found:?}: use printable characters"));
    } else if let Some(found) = name.chars().find(|c| is_bidi_control(*c)) {
        errors.at(
            span,
            format!(
                "{what} cannot contain bidirectional control characters, found {found:?}: use printable characters"
            ),
        );
    }
}

/// U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `BankAccount` -> `bank_account`, `HTTPServer` -> `http_server`.
pub(crate) fn snake_case(ident: &str) -> String {
    let chars: Vec<char> = ident.chars().collect();
    let mut out = String::with_capacity(ident.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let previous = i.checked_sub(1).and_then(|p| chars.get(p)).copied();
            let next = chars.get(i + 1).copied();
            let boundary = match previous {
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_uppercase() => next.is_some_and(char::is_lowercase),
                _ => false,
            };
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn snake_case_splits_words_and_acronyms() {
        assert_eq!(snake_case("Account"), "account");
        assert_eq!(snake_case("BankAccount"), "bank_account");
        assert_eq!(snake_case("HTTPServer"), "http_server");
        assert_eq!(snake_case("Order2Fulfilment"), "order2_fulfilment");
        assert_eq!(snake_case("already_snake"), "already_snake");
    }
}
