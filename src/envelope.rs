//! The event envelope: [`NewEvent`] (what a caller appends) and [`RecordedEvent`] (what the store gives
//! back, with its stream, version, position and timestamps).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::de::{DeserializeOwned, MapAccess, SeqAccess, Visitor};
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
    /// Fields of the payload that are personal data, still in plain text: a store refuses the event
    /// until [`PersonalStore`](crate::personal::PersonalStore) has encrypted them (and cleared this).
    pub(crate) personal: Option<PersonalData>,
}

/// Which fields of an event's payload are personal data, and whose: set by `#[event(personal)]` and
/// `#[event(subject)]` in the derive, or by [`NewEvent::with_personal_data`].
///
/// [`PersonalStore`](crate::personal::PersonalStore) encrypts these fields with a key of their
/// subject before the event is stored, and [`forget`](crate::personal::PersonalStore::forget)
/// destroys that key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonalData {
    /// Whose data it is: a member id, a customer number. Stored in clear, as a header, so choose an
    /// identifier that is not itself personal data (not an e-mail address).
    pub subject: String,
    /// The top-level fields of the JSON payload that hold personal data.
    pub fields: Vec<String>,
}

impl PersonalData {
    /// The fields `fields` of `subject`.
    pub fn new<I, S>(subject: impl Into<String>, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        PersonalData { subject: subject.into(), fields: fields.into_iter().map(Into::into).collect() }
    }
}

impl NewEvent {
    /// An event whose payload is `payload` serialized to JSON, with a fresh time-ordered id (UUIDv7)
    /// and schema version 1.
    ///
    /// The JSON is checked too when the event is appended, as far as serialized JSON can fail to read
    /// back (a value nested deeper than 127, or a `RawValue` inside it that does not read back):
    /// the append fails with [`Error::InvalidPayload`].
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
    /// version 1. The text is checked when the event is appended: invalid JSON, or JSON that
    /// `serde_json` does not read back (a lone surrogate escape such as `"\ud800"`, nesting deeper
    /// than 127, a number out of range), fails the append with [`Error::InvalidPayload`].
    pub fn raw(event_type: impl Into<String>, json: impl Into<String>) -> Self {
        NewEvent {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            occurred_at: None,
            metadata: Metadata::default(),
            payload: json.into(),
            payload_is_json: false,
            personal: None,
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

    /// Declares fields of the payload personal data of `personal.subject`: the event must then be
    /// appended through a [`PersonalStore`](crate::personal::PersonalStore), which encrypts them
    /// (any other store refuses it with [`Error::PersonalDataNotProtected`]).
    pub fn with_personal_data(mut self, personal: PersonalData) -> Self {
        self.personal = Some(personal);
        self
    }

    /// The personal fields still to be encrypted, if any.
    pub fn personal_data(&self) -> Option<&PersonalData> {
        self.personal.as_ref()
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
        if let Some(personal) = &self.personal {
            return Err(Error::PersonalDataNotProtected {
                event_type: self.event_type.clone(),
                subject: personal.subject.clone(),
            });
        }
        check_name(&self.event_type, MAX_EVENT_TYPE_LEN)
            .map_err(|reason: InvalidName| Error::InvalidEventType { event_type: self.event_type.clone(), reason })?;
        let size = self.size();
        if size > max_size {
            return Err(Error::EventTooLarge { stream: stream.clone(), index, size, max: max_size });
        }
        // A payload that came out of `serde_json` is valid JSON, but a `RawValue` inside it is copied
        // as it was, and nothing bounds its nesting: the scan finds what to check in full.
        let check = !self.payload_is_json || needs_reading_back(&self.payload);
        if check {
            if let Err(source) = check_reads_back(&self.payload) {
                return Err(Error::InvalidPayload { stream: stream.clone(), index, source });
            }
        }
        Ok(())
    }
}

/// The deepest nesting of arrays and objects that `serde_json` reads back: its recursion limit, 128,
/// counts the outermost level too, so `[[...]]` 127 deep reads and 128 deep does not.
pub(crate) const MAX_JSON_DEPTH: usize = 127;

/// Checks that `json` reads back the way a reader of it (`serde_json::Value`, or any type through
/// `serde_json`) reads it: valid JSON, every string decodes (no lone surrogate escape such as
/// `"\ud800"`), every number is in range, at most [`MAX_JSON_DEPTH`] levels of nesting. Keeps
/// nothing; only `IgnoredAny`, which skips strings and nesting unchecked, would accept more.
pub(crate) fn check_reads_back(json: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<ReadsBack>(json).map(|_| ())
}

/// Whether JSON text that `serde_json` wrote may still not read back: nested more than
/// [`MAX_JSON_DEPTH`] deep, holding a surrogate escape (`\uD800` to `\uDFFF`, which `serde_json`
/// never writes itself but a `RawValue` may carry), or a number that may be out of range (one with
/// an exponent, or of more digits than any `f64` has). A byte scan, much cheaper than parsing.
fn needs_reading_back(json: &str) -> bool {
    /// Fewer digits than the largest finite `f64` (about 1.8e308, 309 digits) has: always in range.
    const MAX_DIGITS: usize = 308;
    let bytes = json.as_bytes();
    let (mut depth, mut in_string, mut digits) = (0usize, false, 0usize);
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        at += 1;
        if in_string {
            match byte {
                b'"' => in_string = false,
                b'\\' => {
                    let escape = bytes.get(at..at + 3);
                    if matches!(escape, Some([b'u', b'd' | b'D', b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'])) {
                        return true;
                    }
                    at += 1;
                }
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            // Outside strings, an `e` after a digit is an exponent (`true` and `false` have none).
            b'e' | b'E' if digits > 0 => return true,
            _ => {}
        }
        digits = if byte.is_ascii_digit() { digits + 1 } else { 0 };
        if digits > MAX_DIGITS {
            return true;
        }
    }
    false
}

/// JSON read the way `serde_json::Value` reads it, keeping nothing.
struct ReadsBack;

impl<'de> Deserialize<'de> for ReadsBack {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ReadsBack)
    }
}

impl<'de> Visitor<'de> for ReadsBack {
    type Value = ReadsBack;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(ReadsBack)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(ReadsBack)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(ReadsBack)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(ReadsBack)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(ReadsBack)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(ReadsBack)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<ReadsBack>()?.is_some() {}
        Ok(ReadsBack)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<ReadsBack, ReadsBack>()?.is_some() {}
        Ok(ReadsBack)
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

    /// `depth` arrays, one inside the other.
    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    /// What a reader of the payload makes of it.
    fn reads_as_value(json: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(json).is_ok()
    }

    #[test]
    fn raw_payloads_must_read_back_with_the_readers_limits() -> Result<(), Box<dyn std::error::Error>> {
        let stream = StreamId::new("s")?;
        let deepest = nested(MAX_JSON_DEPTH);
        let too_deep = nested(MAX_JSON_DEPTH + 1);
        let in_object = format!("{{\"a\":{deepest}}}");
        let accepted = [
            r#""\ud83d\ude00""#,
            r#"{"a":"\uD83D\uDE00","b":"\u00e9"}"#,
            r#"{"k\"[":"[[{"}"#,
            "1e308",
            deepest.as_str(),
        ];
        for json in accepted {
            assert!(reads_as_value(json), "{json}");
            let result = NewEvent::raw("T", json).validate(&stream, 0, 1_000);
            assert!(result.is_ok(), "{json}: {result:?}");
        }
        let refused = [
            r#""\ud800""#,
            r#"{"a":"x\uDC00"}"#,
            r#"["\ud83d\u0041"]"#,
            r#"{"\udfff":1}"#,
            "1e400",
            "-1e400",
            too_deep.as_str(),
            in_object.as_str(),
        ];
        for json in refused {
            assert!(!reads_as_value(json), "{json}");
            let result = NewEvent::raw("T", json).validate(&stream, 4, 1_000);
            assert!(matches!(result, Err(Error::InvalidPayload { index: 4, .. })), "{json}: {result:?}");
        }
        let message = NewEvent::raw("T", r#""\ud800""#).validate(&stream, 4, 1_000).err().map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some(r#"event 4 of the append to "s" has a payload that does not read back as JSON"#)
        );
        Ok(())
    }

    #[test]
    fn serialized_payloads_are_checked_when_they_nest_too_deep_or_carry_what_does_not_read_back(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let stream = StreamId::new("s")?;
        let deep = |depth: usize| (0..depth).fold(serde_json::Value::Null, |inner, _| serde_json::json!([inner]));
        let fits = NewEvent::json("T", &deep(MAX_JSON_DEPTH))?;
        assert!(fits.validate(&stream, 0, 1_000).is_ok());
        let too_deep = NewEvent::json("T", &deep(MAX_JSON_DEPTH + 1))?;
        assert!(!reads_as_value(too_deep.payload()));
        let result = too_deep.validate(&stream, 1, 1_000);
        assert!(matches!(result, Err(Error::InvalidPayload { index: 1, .. })), "{result:?}");

        // A `RawValue` is written as it was read, lone surrogate and all.
        #[derive(Serialize)]
        struct Carrier {
            raw: Box<RawValue>,
        }
        let raw = RawValue::from_string(r#"{"a":"\ud800"}"#.to_owned())?;
        let lone = NewEvent::json("T", &Carrier { raw })?;
        assert!(lone.payload().contains(r#""\ud800""#), "{}", lone.payload());
        let result = lone.validate(&stream, 2, 1_000);
        assert!(matches!(result, Err(Error::InvalidPayload { index: 2, .. })), "{result:?}");
        let pair = RawValue::from_string(r#""\ud83d\ude00""#.to_owned())?;
        assert!(NewEvent::json("T", &pair)?.validate(&stream, 0, 1_000).is_ok());
        // And so is a number out of range.
        for number in ["1e400", &"9".repeat(309)] {
            let raw = RawValue::from_string(format!("[{number}]"))?;
            let out_of_range = NewEvent::json("T", &Carrier { raw })?;
            assert!(!reads_as_value(out_of_range.payload()));
            let result = out_of_range.validate(&stream, 3, 1_000);
            assert!(matches!(result, Err(Error::InvalidPayload { index: 3, .. })), "{number}: {result:?}");
        }
        assert!(NewEvent::json("T", &[1e300, f64::MAX])?.validate(&stream, 0, 1_000).is_ok());
        Ok(())
    }

    #[test]
    fn the_scan_of_serialized_payloads_reads_strings_and_escapes() {
        assert!(!needs_reading_back(r#"{"a":"[[[[\"\\","b":[1,{"c":"\u00e9"}]}"#));
        assert!(needs_reading_back(r#"["\\",  "\uDA00"]"#));
        assert!(!needs_reading_back(r#"["\\uDA00"]"#), "an escaped backslash, then text");
        assert!(!needs_reading_back(&nested(MAX_JSON_DEPTH)));
        assert!(needs_reading_back(&nested(MAX_JSON_DEPTH + 1)));
        let strings = format!("[{}]", vec![r#""[{""#; 200].join(","));
        assert!(!needs_reading_back(&strings), "brackets in strings do not nest");
        assert!(!needs_reading_back(r#"{"e":true,"f":false,"n":-12.5,"s":"1e400"}"#));
        assert!(needs_reading_back("[1,2e5]") && needs_reading_back("-1.5E-3"));
        assert!(!needs_reading_back(&"9".repeat(308)) && needs_reading_back(&"9".repeat(309)));
    }
}
