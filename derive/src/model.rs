//! The model of a derive's input: what the code generators need, read and checked from the syntax
//! tree. Building a model runs every check and reports all errors together.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Fields, Ident, Type};

use crate::attr::{aggregate_attr, event_attr, field_attr, AggregateAttr, EventAttr};
use crate::errors::Errors;
use crate::serde_attr::{self, SerdeContainer, SerdeField};
use crate::validate;

/// A type deriving `Event`.
pub(crate) struct EventModel {
    pub(crate) ident: Ident,
    pub(crate) kind: EventKind,
}

/// The two kinds of event types.
pub(crate) enum EventKind {
    /// A struct: one event type, whose payload is the struct serialized by its own serde impls.
    Struct { name: String, version: u32, personal: Option<Box<Personal>> },
    /// An enum: one event type per variant.
    Enum(Vec<EventVariant>),
}

/// A variant of an event enum.
pub(crate) struct EventVariant {
    pub(crate) ident: Ident,
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) shape: Shape,
    pub(crate) fields: Vec<EventField>,
    pub(crate) serde: SerdeContainer,
    pub(crate) personal: Option<Personal>,
}

/// The personal data of a struct or variant: `#[event(subject)]` and `#[event(personal)]`.
pub(crate) struct Personal {
    /// The subject's field.
    pub(crate) subject: Ident,
    /// Its type, whose `Display` gives the subject.
    pub(crate) subject_ty: Type,
    /// The personal fields' names in the payload, in declaration order.
    pub(crate) fields: Vec<String>,
}

/// The shape of a variant, which decides its payload's JSON shape.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `Closed`: `{}`.
    Unit,
    /// `Renamed(String)`: the field's JSON; `Moved(i32, i32)`: an array.
    Tuple,
    /// `Opened { owner: String }`: an object.
    Named,
}

/// A field of a variant.
pub(crate) struct EventField {
    /// The field's name, `None` in a tuple variant.
    pub(crate) ident: Option<Ident>,
    /// The field's type, with `Self` replaced by the enum's name.
    pub(crate) ty: Type,
    pub(crate) serde: SerdeField,
}

impl EventModel {
    /// Reads and checks the input of `#[derive(Event)]`.
    pub(crate) fn build(input: &DeriveInput) -> syn::Result<EventModel> {
        let mut errors = Errors::default();
        validate::no_generics(&input.generics, "Event", &mut errors);
        let top = event_attr(&input.attrs, &mut errors);
        let kind = match &input.data {
            Data::Struct(data) => {
                // The struct's own serde impls read its serde attributes: they are read here only
                // for the names of personal fields, and their mistakes are left to serde.
                let container = serde_attr::container(&input.attrs, false, &mut Errors::default());
                let fields: Vec<_> = data
                    .fields
                    .iter()
                    .map(|field| (field, serde_attr::field(&field.attrs, &mut Errors::default())))
                    .collect();
                let candidates = fields.iter().map(|(field, serde)| candidate(field, serde, &mut errors)).collect();
                let personal = validate::personal(candidates, &container, &mut errors);
                let (name, span) = name_of(&top, &input.ident);
                validate::event_name(&name, span, &mut errors);
                EventKind::Struct { name, version: top.version.unwrap_or(1), personal: personal.map(Box::new) }
            }
            Data::Enum(data) => {
                if let Some(name) = &top.name {
                    errors.spanned(
                        name,
                        "an enum's event type names come from its variants: put #[event(name = \"...\")] on \
                         a variant",
                    );
                }
                if data.variants.is_empty() {
                    errors.spanned(
                        &input.ident,
                        "an enum without variants has no event types: add a variant for each event",
                    );
                }
                let enum_serde = serde_attr::container(&input.attrs, true, &mut errors);
                let default_version = top.version.unwrap_or(1);
                let variants = data
                    .variants
                    .iter()
                    .map(|variant| build_variant(variant, &input.ident, default_version, &enum_serde, &mut errors))
                    .collect::<Vec<_>>();
                unique_names(&variants, &mut errors);
                EventKind::Enum(variants.into_iter().map(|(variant, _)| variant).collect())
            }
            Data::Union(data) => {
                errors.spanned(data.union_token, "#[derive(Event)] works on enums and structs, not on unions");
                EventKind::Enum(Vec::new())
            }
        };
        errors.finish()?;
        Ok(EventModel { ident: input.ident.clone(), kind })
    }
}

/// The event type name given by `#[event(name)]`, or the ident, and the span to report it at.
fn name_of(attr: &EventAttr, ident: &Ident) -> (String, Span) {
    match &attr.name {
        Some(lit) => (lit.value(), lit.span()),
        None => (ident.unraw().to_string(), ident.span()),
    }
}

/// Reads one variant; also returns the span of its name, for the duplicate check.
fn build_variant(
    variant: &syn::Variant,
    enum_ident: &Ident,
    default_version: u32,
    enum_serde: &SerdeContainer,
    errors: &mut Errors,
) -> (EventVariant, Span) {
    let attr = event_attr(&variant.attrs, errors);
    let (name, name_span) = name_of(&attr, &variant.ident);
    validate::event_name(&name, name_span, errors);
    let serde = serde_attr::merge(serde_attr::container(&variant.attrs, false, errors), enum_serde);
    let shape = match variant.fields {
        Fields::Unit => Shape::Unit,
        Fields::Unnamed(_) => Shape::Tuple,
        Fields::Named(_) => Shape::Named,
    };
    let fields: Vec<EventField> = variant
        .fields
        .iter()
        .map(|field| EventField {
            ident: field.ident.clone(),
            ty: replace_self(&field.ty, enum_ident),
            serde: serde_attr::field(&field.attrs, errors),
        })
        .collect();
    let candidates = variant
        .fields
        .iter()
        .zip(&fields)
        .map(|(field, model)| validate::PersonalCandidate {
            ty: model.ty.clone(),
            ..candidate(field, &model.serde, errors)
        })
        .collect();
    let personal = validate::personal(candidates, &serde, errors);
    let version = attr.version.unwrap_or(default_version);
    (EventVariant { ident: variant.ident.clone(), name, version, shape, fields, serde, personal }, name_span)
}

/// A field as the personal data checks see it.
fn candidate<'a>(field: &syn::Field, serde: &'a SerdeField, errors: &mut Errors) -> validate::PersonalCandidate<'a> {
    validate::PersonalCandidate {
        ident: field.ident.clone(),
        ty: field.ty.clone(),
        attr: field_attr(&field.attrs, errors),
        serde,
    }
}

/// Reports each variant whose name an earlier variant already has.
fn unique_names(variants: &[(EventVariant, Span)], errors: &mut Errors) {
    for (i, (variant, span)) in variants.iter().enumerate() {
        let earlier = variants.iter().take(i).find(|(other, _)| other.name == variant.name);
        if let Some((other, _)) = earlier {
            errors.at(
                *span,
                format!(
                    "duplicate event type name \"{}\": variant `{}` already has it; give each variant its own \
                     #[event(name = \"...\")]",
                    variant.name, other.ident
                ),
            );
        }
    }
}

/// `ty` with every `Self` replaced by `ident`: the field types are copied into helper structs,
/// where `Self` would name the helper.
fn replace_self(ty: &Type, ident: &Ident) -> Type {
    fn walk(tokens: TokenStream, ident: &Ident) -> TokenStream {
        tokens
            .into_iter()
            .map(|tree| match tree {
                TokenTree::Ident(found) if found == "Self" => {
                    let mut replaced = ident.clone();
                    replaced.set_span(found.span());
                    TokenTree::Ident(replaced)
                }
                TokenTree::Group(group) => {
                    let mut replaced = Group::new(group.delimiter(), walk(group.stream(), ident));
                    replaced.set_span(group.span());
                    TokenTree::Group(replaced)
                }
                other => other,
            })
            .collect()
    }
    syn::parse2(walk(ty.to_token_stream(), ident)).unwrap_or_else(|_| ty.clone())
}

/// A type deriving `Aggregate`.
pub(crate) struct AggregateModel {
    pub(crate) ident: Ident,
    /// `Aggregate::TYPE`.
    pub(crate) type_name: String,
    pub(crate) snapshot_version: u32,
    pub(crate) command: Type,
    pub(crate) event: Type,
    pub(crate) error: Type,
}

impl AggregateModel {
    /// Reads and checks the input of `#[derive(Aggregate)]`.
    pub(crate) fn build(input: &DeriveInput) -> syn::Result<AggregateModel> {
        let mut errors = Errors::default();
        validate::no_generics(&input.generics, "Aggregate", &mut errors);
        check_aggregate_shape(input, &mut errors);
        let attr = aggregate_attr(&input.attrs, &mut errors);
        report_missing_types(&attr, input, &mut errors);
        let type_name = match &attr.name {
            Some(lit) => {
                let name = lit.value();
                validate::aggregate_name(&name, lit.span(), &mut errors);
                name
            }
            None => validate::snake_case(&input.ident.unraw().to_string()),
        };
        errors.finish()?;
        match (attr.command, attr.event, attr.error) {
            (Some(command), Some(event), Some(error)) => Ok(AggregateModel {
                ident: input.ident.clone(),
                type_name,
                snapshot_version: attr.snapshot_version.unwrap_or(1),
                command,
                event,
                error,
            }),
            // Reported above, as missing or invalid.
            _ => Err(syn::Error::new_spanned(&input.ident, "#[aggregate(...)] is incomplete")),
        }
    }
}

/// Rejects unions, and `#[aggregate]` anywhere but on the type.
fn check_aggregate_shape(input: &DeriveInput, errors: &mut Errors) {
    const PLACE: &str = "the aggregate type";
    match &input.data {
        Data::Struct(data) => validate::not_on_fields(&data.fields, "aggregate", PLACE, errors),
        Data::Enum(data) => {
            for variant in &data.variants {
                let message = "#[aggregate(...)] goes on the aggregate type, not on a variant";
                validate::not_here(&variant.attrs, "aggregate", message, errors);
                validate::not_on_fields(&variant.fields, "aggregate", PLACE, errors);
            }
        }
        Data::Union(data) => {
            errors.spanned(data.union_token, "#[derive(Aggregate)] works on structs and enums, not on unions");
        }
    }
}

/// Reports, in one error, which of `command`, `event` and `error` were not given.
fn report_missing_types(attr: &AggregateAttr, input: &DeriveInput, errors: &mut Errors) {
    let missing: Vec<&str> =
        [("command", "`command = Type`"), ("event", "`event = Type`"), ("error", "`error = Type`")]
            .into_iter()
            .filter(|(key, _)| !attr.given.iter().any(|given| given == key))
            .map(|(_, usage)| usage)
            .collect();
    if missing.is_empty() {
        return;
    }
    let message = format!(
        "#[derive(Aggregate)] needs {}: add #[aggregate(command = MyCommand, event = MyEvent, error = MyError)] \
         naming the types `handle` takes and returns",
        join_and(&missing)
    );
    match &attr.first {
        Some(first) => errors.spanned(first, message),
        None => errors.spanned(&input.ident, message),
    }
}

/// The command, event and error types of an input whose model has errors, when they are all given:
/// enough for a stand-in impl.
pub(crate) fn aggregate_types(input: &DeriveInput) -> Option<(Type, Type, Type)> {
    if !input.generics.params.is_empty() || matches!(input.data, Data::Union(_)) {
        return None;
    }
    let attr = aggregate_attr(&input.attrs, &mut Errors::default());
    Some((attr.command?, attr.event?, attr.error?))
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
