//! The event envelope: [`NewEvent`] (what a caller appends) and [`RecordedEvent`] (what the store gives
//! back, with its stream, version, position and timestamps).

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::Error;
use crate::name::{check_name, InvalidName};
use crate::position::{Position, Version};
use crate::stream_id::StreamId;

/// The longest event type name, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 256;

/// Context that travels with an event: who asked for it and why.
///
/// Stored unchanged with the event and given back on every read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Ties together every event caused, directly or not, by one original request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the message (command or event) that directly caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// Free-form string headers (user id, tenant, trace context, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl Metadata {
    /// The number of bytes these metadata add to an event's size.
    pub(crate) fn byte_len(&self) -> usize {
        self.correlation_id.as_ref().map_or(0, String::len)
            + self.causation_id.as_ref().map_or(0, String::len)
            + self.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }
}

/// An event to append: type, schema version, payload and metadata. The store adds the rest.
///
/// The event type is a name like a stream's and follows the same rule, described at
/// [`InvalidName`]: non-empty, at most [`MAX_EVENT_TYPE_LEN`] bytes, no control character and no
/// bidirectional control. It is checked when the event is appended: a bad one fails the append with
/// [`Error::InvalidEventType`] and nothing is written.
///
/// ```
/// use annals::NewEvent;
///
/// let event = NewEvent::json("OrderPlaced", &serde_json::json!({ "order": 7, "total": 1250 }))?
///     .with_correlation_id("checkout-19")
///     .with_header("user", "ada");
/// assert_eq!(event.event_type(), "OrderPlaced");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub(crate) id: Uuid,
    pub(crate) event_type: String,
    pub(crate) schema_version: u32,
    pub(crate) occurred_at: Option<DateTime<Utc>>,
    pub(crate) metadata: Metadata,
    pub(crate) payload: String,
    /// Whether `payload` is known to be valid JSON (it came out of `serde_json`).
    pub(crate) payload_is_json: bool,
}

impl NewEvent {
    /// An event whose payload is `payload` serialized to JSON, with a fresh time-ordered id (UUIDv7)
    /// and schema version 1.
    ///
    /// # Errors
    /// [`Error::Serialize`] when `payload` cannot be serialized to JSON.
    pub fn json<T: Serialize + ?Sized>(event_type: impl Into<String>, payload: &T) -> Result<Self, Error> {
        let event_type = event_type.into();
        let payload = serde_json::to_string(payload)
            .map_err(|source| Error::Serialize { event_type: event_type.clone(), source })?;
        Ok(NewEvent { payload_is_json: true, ..NewEvent::raw(event_type, payload) })
    }

    /// An event whose payload is the JSON text `json`, with a fresh time-ordered id (UUIDv7) and schema
    /// version 1. The text is checked when the event is appended: invalid JSON fails the append with
    /// [`Error::InvalidPayload`].
    pub fn raw(event_type: impl Into<String>, json: impl Into<String>) -> Self {
        NewEvent {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            occurred_at: None,
            metadata: Metadata::default(),
            payload: json.into(),
            payload_is_json: false,
        }
    }

    /// An event whose payload came out of `serde_json`, so it needs no check when appended.
    pub(crate) fn trusted_json(event_type: impl Into<String>, json: String) -> Self {
        NewEvent { payload_is_json: true, ..NewEvent::raw(event_type, json) }
    }

    /// Sets the event id. Appending an event whose id is already stored is recognised as a retry
    /// (see [`AppendResult::already_appended`](crate::AppendResult::already_appended)).
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Sets the schema version of the payload (default 1), used by upcasters.
    pub fn with_schema_version(mut self, schema_version: u32) -> Self {
        self.schema_version = schema_version;
        self
    }

    /// Sets when the event happened in the business domain (it may lie in the past, e.g. when history
    /// is imported). Without it, the event's `occurred_at` is its `recorded_at`. Stored with
    /// microsecond precision.
    pub fn with_occurred_at(mut self, occurred_at: DateTime<Utc>) -> Self {
        self.occurred_at = Some(occurred_at.trunc_subsecs(6));
        self
    }

    /// Replaces the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.causation_id = Some(id.into());
        self
    }

    /// Adds (or replaces) a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.headers.insert(key.into(), value.into());
        self
    }

    /// The event id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The event type name.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The schema version.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// The business time, when one was set.
    pub fn occurred_at(&self) -> Option<DateTime<Utc>> {
        self.occurred_at
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The payload as JSON text.
    pub fn payload(&self) -> &str {
        &self.payload
    }

    /// The event's size as counted against a store's maximum event size: payload, type name and
    /// metadata bytes.
    pub fn size(&self) -> usize {
        self.payload.len() + self.event_type.len() + self.metadata.byte_len()
    }

    /// Checks the event on its own (type name, size, JSON payload), as every store does before it
    /// writes anything. `index` is the event's place in its append, for the error.
    pub(crate) fn validate(&self, stream: &StreamId, index: usize, max_size: usize) -> Result<(), Error> {
        check_name(&self.event_type, MAX_EVENT_TYPE_LEN)
            .map_err(|reason: InvalidName| Error::InvalidEventType { event_type: self.event_type.clone(), reason })?;
        let size = self.size();
        if size > max_size {
            return Err(Error::EventTooLarge { stream: stream.clone(), index, size, max: max_size });
        }
        if !self.payload_is_json {
            if let Err(source) = serde_json::from_str::<serde::de::IgnoredAny>(&self.payload) {
                return Err(Error::InvalidPayload { stream: stream.clone(), index, source });
            }
        }
        Ok(())
    }
}

/// An event as stored: the envelope the store assigned and the caller's event.
///
/// Two events are the same event when their ids are equal; `PartialEq` compares every field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecordedEvent {
    /// The unique event id.
    pub id: Uuid,
    /// The stream the event belongs to.
    pub stream: StreamId,
    /// The event's version in its stream (1 for the first event).
    pub version: Version,
    /// The event's global position in the log (1 for the first event).
    pub position: Position,
    /// The event type name.
    pub event_type: String,
    /// The schema version of the payload.
    pub schema_version: u32,
    /// When the store committed the event; never decreases along the log. Microsecond precision.
    pub recorded_at: DateTime<Utc>,
    /// When the event happened in the business domain; `recorded_at` unless the appender said
    /// otherwise. Microsecond precision.
    pub occurred_at: DateTime<Utc>,
    /// Correlation, causation and headers.
    pub metadata: Metadata,
    /// The payload as JSON text (serialized as JSON, not as a string).
    #[serde(serialize_with = "serialize_raw", deserialize_with = "deserialize_raw")]
    pub payload: String,
}

impl RecordedEvent {
    /// Deserializes the payload into `T`.
    ///
    /// # Errors
    /// [`Error::Deserialize`], naming the stream, version and type, when the payload does not fit `T`.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.payload).map_err(|source| Error::Deserialize {
            stream: self.stream.clone(),
            version: self.version,
            event_type: self.event_type.clone(),
            source,
        })
    }
}

fn serialize_raw<S: Serializer>(payload: &str, serializer: S) -> Result<S::Ok, S::Error> {
    let raw: &RawValue = serde_json::from_str(payload).map_err(serde::ser::Error::custom)?;
    raw.serialize(serializer)
}

fn deserialize_raw<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let raw = Box::<RawValue>::deserialize(deserializer)?;
    Ok(String::from(Box::<str>::from(raw)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_events_serialize_their_payload_as_json() -> Result<(), Box<dyn std::error::Error>> {
        let at = DateTime::from_timestamp_micros(1_700_000_000_000_001).ok_or("time")?;
        let event = RecordedEvent {
            id: Uuid::nil(),
            stream: StreamId::new("order-1")?,
            version: Version::FIRST,
            position: Position::new(9),
            event_type: "OrderPlaced".into(),
            schema_version: 2,
            recorded_at: at,
            occurred_at: at,
            metadata: Metadata::default(),
            payload: r#"{"total":12}"#.into(),
        };
        let text = serde_json::to_string(&event)?;
        assert!(text.contains(r#""payload":{"total":12}"#), "{text}");
        let back: RecordedEvent = serde_json::from_str(&text)?;
        assert_eq!(back, event);
        Ok(())
    }

    #[test]
    fn raw_payloads_are_checked() -> Result<(), Box<dyn std::error::Error>> {
        let stream = StreamId::new("s")?;
        assert!(NewEvent::raw("T", "{\"a\":1}").validate(&stream, 0, 100).is_ok());
        let bad = NewEvent::raw("T", "{\"a\":").validate(&stream, 3, 100);
        assert!(matches!(bad, Err(Error::InvalidPayload { index: 3, .. })), "{bad:?}");
        let big = NewEvent::raw("T", "[1,2,3,4,5,6,7,8,9]").validate(&stream, 0, 10);
        assert!(matches!(big, Err(Error::EventTooLarge { size: 20, max: 10, .. })), "{big:?}");
        let unnamed = NewEvent::raw("", "1").validate(&stream, 0, 100);
        assert!(matches!(unnamed, Err(Error::InvalidEventType { reason: InvalidName::Empty, .. })));
        Ok(())
    }
}
