//! The envelope of an event as record headers: the names, and the conversions both ways.

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::envelope::{Metadata, NewEvent, RecordedEvent};
use crate::stream_id::StreamId;

/// The event id, a UUID. Consumers deduplicate by it.
pub const EVENT_ID: &str = "annals-id";
/// The event type.
pub const EVENT_TYPE: &str = "annals-type";
/// The schema version, in decimal.
pub const SCHEMA_VERSION: &str = "annals-schema-version";
/// The stream id (also the record key).
pub const STREAM: &str = "annals-stream";
/// The event's version in its stream, in decimal.
pub const VERSION: &str = "annals-version";
/// The event's position in the source log, in decimal.
pub const POSITION: &str = "annals-position";
/// When the source store recorded the event (RFC 3339, microseconds).
pub const RECORDED_AT: &str = "annals-recorded-at";
/// The event's business time (RFC 3339, microseconds).
pub const OCCURRED_AT: &str = "annals-occurred-at";
/// The correlation id, when the metadata has one.
pub const CORRELATION_ID: &str = "annals-correlation-id";
/// The causation id, when the metadata has one.
pub const CAUSATION_ID: &str = "annals-causation-id";
/// The prefix of a user header of the metadata: `annals-header-<name>`.
pub const USER_HEADER_PREFIX: &str = "annals-header-";

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The headers that carry `event`'s envelope, in a fixed order.
pub fn encode(event: &RecordedEvent) -> Vec<(String, String)> {
    let mut headers = Vec::with_capacity(10 + event.metadata.headers.len());
    let mut put = |name: &str, value: String| headers.push((name.to_owned(), value));
    put(EVENT_ID, event.id.to_string());
    put(EVENT_TYPE, event.event_type.clone());
    put(SCHEMA_VERSION, event.schema_version.to_string());
    put(STREAM, event.stream.to_string());
    put(VERSION, event.version.get().to_string());
    put(POSITION, event.position.get().to_string());
    put(RECORDED_AT, time(event.recorded_at));
    put(OCCURRED_AT, time(event.occurred_at));
    if let Some(id) = &event.metadata.correlation_id {
        put(CORRELATION_ID, id.clone());
    }
    if let Some(id) = &event.metadata.causation_id {
        put(CAUSATION_ID, id.clone());
    }
    for (name, value) in &event.metadata.headers {
        put(&format!("{USER_HEADER_PREFIX}{name}"), value.clone());
    }
    headers
}

/// Reads an event back from the headers [`encode`] wrote and the record's value (the payload).
///
/// The event keeps its id, type, schema version, business time and metadata; the stream is
/// returned beside it. The source's version, position and recording time are not part of a
/// [`NewEvent`]: the target store assigns its own.
///
/// # Errors
/// A message naming the missing or malformed header, or the payload's problem.
pub fn decode<'a, I>(headers: I, value: Option<&[u8]>) -> Result<(StreamId, NewEvent), String>
where
    I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
{
    let mut found: Vec<(&str, &str)> = Vec::new();
    for (name, value) in headers {
        let Some(value) = value else { continue };
        let text = std::str::from_utf8(value).map_err(|_| format!("header {name} is not UTF-8"))?;
        found.push((name, text));
    }
    let get = |name: &str| found.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let need = |name: &str| get(name).ok_or_else(|| format!("header {name} is missing"));

    let stream = StreamId::new(need(STREAM)?).map_err(|e| format!("header {STREAM}: {e}"))?;
    let id: Uuid = need(EVENT_ID)?.parse().map_err(|e| format!("header {EVENT_ID} is not a UUID: {e}"))?;
    let schema_version: u32 = match get(SCHEMA_VERSION) {
        Some(v) => v.parse().map_err(|e| format!("header {SCHEMA_VERSION}: {e}"))?,
        None => 1,
    };
    let payload = match value {
        Some(bytes) => std::str::from_utf8(bytes).map_err(|_| "the value is not UTF-8 JSON".to_owned())?,
        None => return Err("the record has no value (a tombstone), no payload to store".to_owned()),
    };
    let mut metadata = Metadata {
        correlation_id: get(CORRELATION_ID).map(str::to_owned),
        causation_id: get(CAUSATION_ID).map(str::to_owned),
        ..Metadata::default()
    };
    for (name, value) in &found {
        if let Some(user) = name.strip_prefix(USER_HEADER_PREFIX) {
            metadata.headers.insert(user.to_owned(), (*value).to_owned());
        }
    }
    let mut event = NewEvent::raw(need(EVENT_TYPE)?, payload)
        .with_id(id)
        .with_schema_version(schema_version)
        .with_metadata(metadata);
    if let Some(at) = get(OCCURRED_AT) {
        let at = DateTime::parse_from_rfc3339(at).map_err(|e| format!("header {OCCURRED_AT}: {e}"))?;
        event = event.with_occurred_at(at.with_timezone(&Utc));
    }
    Ok((stream, event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::{Position, Version};

    fn recorded() -> RecordedEvent {
        let mut metadata = Metadata { correlation_id: Some("c-1".into()), ..Metadata::default() };
        metadata.headers.insert("tenant".into(), "acme".into());
        RecordedEvent {
            id: Uuid::new_v4(),
            stream: StreamId::new("order-7").unwrap_or_else(|_| unreachable!()),
            version: Version::new(3),
            position: Position::new(42),
            event_type: "OrderPlaced".into(),
            schema_version: 2,
            recorded_at: Utc::now(),
            occurred_at: DateTime::parse_from_rfc3339("2026-01-05T10:00:00.123456Z")
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|_| unreachable!()),
            metadata,
            payload: r#"{"total":12}"#.into(),
        }
    }

    #[test]
    fn the_envelope_round_trips_through_headers() {
        let event = recorded();
        let headers = encode(&event);
        let (stream, new) =
            decode(headers.iter().map(|(n, v)| (n.as_str(), Some(v.as_bytes()))), Some(event.payload.as_bytes()))
                .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(stream, event.stream);
        assert_eq!(new.id(), event.id);
        assert_eq!(new.event_type(), "OrderPlaced");
        assert_eq!(new.schema_version(), 2);
        assert_eq!(new.occurred_at(), Some(event.occurred_at));
        assert_eq!(new.metadata(), &event.metadata);
        assert_eq!(new.payload(), event.payload);
    }

    #[test]
    fn a_missing_header_is_named() {
        let event = recorded();
        let headers: Vec<_> = encode(&event).into_iter().filter(|(n, _)| n != EVENT_TYPE).collect();
        let error = decode(headers.iter().map(|(n, v)| (n.as_str(), Some(v.as_bytes()))), Some(b"{}"))
            .err()
            .unwrap_or_default();
        assert_eq!(error, "header annals-type is missing");
    }
}
