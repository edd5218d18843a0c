//! The [`Event`] trait: how a user's event type maps to stored events.

use crate::envelope::{NewEvent, PersonalData, RecordedEvent};
use crate::error::{Error, Result};

/// A domain event type, usually an enum with one variant per event type.
///
/// Each variant has a stable type name (stored with the event and used to decode it) and a schema
/// version (used by upcasters to bring old payloads up to date). The payload is the variant's data as
/// JSON, without the type name.
///
/// Derive it with `#[derive(Event)]` (default `derive` feature): variant names become type names,
/// `#[event(name = "...")]` renames one, `#[event(version = N)]` sets the schema version of a variant
/// or of the whole type. Structs, and enums with unit, tuple and struct variants, work.
///
/// ```
/// use annals::Event;
///
/// #[derive(Event, Debug, PartialEq)]
/// enum AccountEvent {
///     Opened { owner: String },
///     #[event(name = "MoneyDeposited", version = 2)]
///     Deposited { amount: u64, currency: String },
///     Closed,
/// }
///
/// assert_eq!(AccountEvent::event_types(), ["Opened", "MoneyDeposited", "Closed"]);
/// let event = AccountEvent::Deposited { amount: 5, currency: "EUR".into() };
/// assert_eq!(event.event_type(), "MoneyDeposited");
/// assert_eq!(event.schema_version(), 2);
/// assert_eq!(event.to_payload()?, r#"{"amount":5,"currency":"EUR"}"#);
/// assert_eq!(AccountEvent::from_payload("MoneyDeposited", r#"{"amount":5,"currency":"EUR"}"#)?, event);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Personal data
///
/// `#[event(personal)]` on a named field marks it personal data, and `#[event(subject)]` on one
/// field of the same variant (or struct) says whose: its value, through `Display`
/// (`to_string()`), is the subject, such as a member id. The derive then writes
/// [`personal_data`](Event::personal_data), with the fields' names in the payload (after
/// `#[serde(rename)]` and `rename_all`), and [`to_new_event`](Event::to_new_event) declares them:
/// the event must be appended through a [`PersonalStore`](crate::personal::PersonalStore), which
/// encrypts them with the subject's key, and [`forget`](crate::personal::PersonalStore::forget)
/// erases them. A personal field must be an `Option`: once its subject is forgotten, it reads back
/// as `null`, so `None`. The subject is stored in clear: choose an identifier, not an e-mail
/// address. A variant with personal fields needs exactly one subject, the subject is not itself
/// personal, and personal fields go on named fields, serialized as fields of their own (no
/// `skip`, `skip_serializing_if` or `flatten`): the derive refuses anything else at compile time.
///
/// ```
/// use annals::{Event, PersonalData};
///
/// #[derive(Event, Debug, PartialEq)]
/// enum MemberEvent {
///     Joined {
///         #[event(subject)]
///         member_id: u64,
///         #[event(personal)]
///         email: Option<String>,
///         #[event(personal)]
///         #[serde(rename = "fullName")]
///         name: Option<String>,
///         plan: String,
///     },
///     Upgraded { member_id: u64, plan: String },
/// }
///
/// let joined = MemberEvent::Joined {
///     member_id: 7,
///     email: Some("ada@example.com".into()),
///     name: Some("Ada".into()),
///     plan: "gold".into(),
/// };
/// assert_eq!(joined.personal_data(), Some(PersonalData::new("7", ["email", "fullName"])));
/// assert_eq!(joined.to_new_event()?.personal_data(), joined.personal_data().as_ref());
/// assert_eq!(MemberEvent::Upgraded { member_id: 7, plan: "gold".into() }.personal_data(), None);
/// // What a forgotten subject's event reads back as.
/// let erased = MemberEvent::from_payload("Joined", r#"{"member_id":7,"email":null,"fullName":null,"plan":"gold"}"#)?;
/// assert_eq!(erased, MemberEvent::Joined { member_id: 7, email: None, name: None, plan: "gold".into() });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Event: Sized + Send + Sync + 'static {
    /// Every type name this type can take, in declaration order (for filters and start-up checks).
    fn event_types() -> &'static [&'static str];

    /// The current schema version of the event type `event_type`, or `None` when this type does not
    /// have it.
    fn current_version(event_type: &str) -> Option<u32>;

    /// The type name of this event.
    fn event_type(&self) -> &'static str;

    /// The schema version this event is written with.
    fn schema_version(&self) -> u32;

    /// The payload: this event's data as JSON text, without its type name.
    ///
    /// # Errors
    /// When a field's `Serialize` implementation fails.
    fn to_payload(&self) -> Result<String, serde_json::Error>;

    /// Decodes the payload of an event of type `event_type` (at its current schema version).
    ///
    /// # Errors
    /// [`DecodeError::UnknownType`] when this type has no event type of that name,
    /// [`DecodeError::Json`] when the payload does not fit it.
    fn from_payload(event_type: &str, payload: &str) -> Result<Self, DecodeError>;

    /// The personal data this event holds (fields marked `#[event(personal)]` in the derive, and the
    /// subject they belong to), or `None` (the default) when it holds none.
    fn personal_data(&self) -> Option<PersonalData> {
        None
    }

    /// This event as a [`NewEvent`] ready to append, with a fresh id, and its
    /// [`personal_data`](Event::personal_data) declared.
    ///
    /// # Errors
    /// [`Error::Serialize`] when the payload does not serialize.
    fn to_new_event(&self) -> Result<NewEvent> {
        let payload = self
            .to_payload()
            .map_err(|source| Error::Serialize { event_type: self.event_type().to_owned(), source })?;
        let event = NewEvent::trusted_json(self.event_type(), payload).with_schema_version(self.schema_version());
        Ok(match self.personal_data() {
            Some(personal) => event.with_personal_data(personal),
            None => event,
        })
    }

    /// Decodes a recorded event (already upcast to the current schema).
    ///
    /// # Errors
    /// [`Error::UnknownEventType`] when the type name is not one of this type's,
    /// [`Error::SchemaVersion`] when the stored schema version is not the current one (an upcaster
    /// is missing, or the event was written by a newer program), and [`Error::Deserialize`] when the
    /// payload does not fit; all name the stream, version and type. The stored data is untouched.
    fn from_recorded(event: &RecordedEvent) -> Result<Self> {
        let current = Self::current_version(&event.event_type).ok_or_else(|| Error::UnknownEventType {
            stream: event.stream.clone(),
            version: event.version,
            event_type: event.event_type.clone(),
        })?;
        if event.schema_version != current {
            return Err(Error::SchemaVersion {
                stream: event.stream.clone(),
                version: event.version,
                event_type: event.event_type.clone(),
                found: event.schema_version,
                expected: current,
            });
        }
        Self::from_payload(&event.event_type, &event.payload).map_err(|e| match e {
            DecodeError::UnknownType(_) => Error::UnknownEventType {
                stream: event.stream.clone(),
                version: event.version,
                event_type: event.event_type.clone(),
            },
            DecodeError::Json(source) => Error::Deserialize {
                stream: event.stream.clone(),
                version: event.version,
                event_type: event.event_type.clone(),
                source,
            },
        })
    }
}

/// Why [`Event::from_payload`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The type has no event type of this name.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// The payload does not deserialize into the event type's data.
    #[error("payload does not deserialize")]
    Json(#[source] serde_json::Error),
}
