//! The broker-independent half of the relay in: records, how they map to events, how a batch of
//! them is appended so that consuming it again appends nothing twice, and where records that
//! cannot be mapped are parked.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::headers;
use crate::envelope::NewEvent;
use crate::error::{ConsumerProblem, Error, Result};
use crate::position::ExpectedVersion;
use crate::store::{Checkpoint, CheckpointWrite, EventStore, StreamAppend};
use crate::stream_id::StreamId;

/// Where the relay in keeps parked records: the checkpoint `relay-in/<name>/parked`.
const PARKED_PREFIX: &str = "relay-in/";

/// The namespace of [`record_event_id`]'s name-based UUIDs.
const RECORD_NAMESPACE: Uuid = Uuid::from_u128(0x6d1c_2f0e_6a4b_4c55_9a07_3e1f_a1b2_c3d4);

/// The event id of the record at `offset` of `partition` of `topic`: a name-based (version 5) UUID,
/// the same every time the record is consumed, so that consuming it again is recognised by the
/// store as a retry and appends nothing.
pub fn record_event_id(topic: &str, partition: i32, offset: i64) -> Uuid {
    Uuid::new_v5(&RECORD_NAMESPACE, format!("{topic}/{partition}/{offset}").as_bytes())
}

/// A record read from a broker, as a [`Mapping`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboundRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset in the partition.
    pub offset: i64,
    /// The key, if the record has one.
    pub key: Option<Vec<u8>>,
    /// The value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// The headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The record's timestamp, if the broker gave one.
    pub timestamp: Option<DateTime<Utc>>,
}

impl InboundRecord {
    /// A record, for a [`Mapping`] under test or a source other than Kafka.
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        InboundRecord {
            topic: topic.into(),
            partition,
            offset,
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// The same record with this key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The same record with this value.
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// The same record with one more header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), Some(value.into())));
        self
    }

    /// This record's deterministic event id, [`record_event_id`].
    pub fn event_id(&self) -> Uuid {
        record_event_id(&self.topic, self.partition, self.offset)
    }

    /// The key as UTF-8 text, if it is.
    pub fn key_str(&self) -> Option<&str> {
        self.key.as_deref().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value as UTF-8 text, if it is.
    pub fn value_str(&self) -> Option<&str> {
        self.value.as_deref().and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The last header of this name, if there is one with a value.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().rev().find(|(n, _)| n == name).and_then(|(_, v)| v.as_deref())
    }
}

/// What a [`Mapping`] made of a record: the event and the stream to append it to.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Mapped {
    /// The stream.
    pub stream: StreamId,
    /// The event.
    pub event: NewEvent,
    /// Whether the event keeps the id the mapping gave it; otherwise the relay replaces it with the
    /// record's deterministic id.
    pub keep_id: bool,
}

impl Mapped {
    /// `event` for `stream`, with the record's deterministic id ([`record_event_id`]) in place of
    /// whatever id `event` has: what a mapping of records from outside Annals wants.
    pub fn new(stream: StreamId, event: NewEvent) -> Self {
        Mapped { stream, event, keep_id: false }
    }

    /// `event` for `stream`, keeping `event`'s own id. Use it only for ids that are as stable as
    /// the record (an id carried by the record itself), or re-consuming would append twice.
    pub fn keeping_id(stream: StreamId, event: NewEvent) -> Self {
        Mapped { stream, event, keep_id: true }
    }
}

/// How records become events: a function of the record that answers the event, or why the record
/// cannot be one (the record is then parked with that reason).
///
/// [`Mapping::envelope`] (the default) reads the headers a [`Relay`](super::Relay) writes;
/// [`Mapping::new`] takes any function.
#[derive(Clone)]
pub struct Mapping(Arc<MapFn>);

/// The function inside a [`Mapping`].
type MapFn = dyn Fn(&InboundRecord) -> Result<Mapped, String> + Send + Sync;

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mapping")
    }
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping::envelope()
    }
}

impl Mapping {
    /// A mapping by a function.
    ///
    /// ```
    /// use annals::relay::{InboundRecord, Mapped, Mapping};
    /// use annals::{NewEvent, StreamId};
    ///
    /// // Records keyed by customer id whose value is the payload of a `CustomerChanged` event.
    /// let mapping = Mapping::new(|record: &InboundRecord| {
    ///     let key = record.key_str().ok_or("the record has no UTF-8 key")?;
    ///     let stream = StreamId::new(format!("customer-{key}")).map_err(|e| e.to_string())?;
    ///     let value = record.value_str().ok_or("the value is not UTF-8")?;
    ///     Ok(Mapped::new(stream, NewEvent::raw("CustomerChanged", value)))
    /// });
    /// let record = InboundRecord::new("customers", 0, 7).with_key("c-1").with_value(r#"{"name":"Ada"}"#);
    /// let mapped = mapping.map(&record)?;
    /// assert_eq!(mapped.stream.as_str(), "customer-c-1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new<F>(map: F) -> Self
    where
        F: Fn(&InboundRecord) -> Result<Mapped, String> + Send + Sync + 'static,
    {
        Mapping(Arc::new(map))
    }

    /// The mapping of records a relay out published: the stream, type, id, schema version,
    /// business time and metadata come from the `annals-*` headers and the payload from the value.
    /// The event keeps its original id, so a record the relay published twice is stored once.
    pub fn envelope() -> Self {
        Mapping::new(|record| {
            let headers = record.headers.iter().map(|(n, v)| (n.as_str(), v.as_deref()));
            let (stream, event) = headers::decode(headers, record.value.as_deref())?;
            Ok(Mapped::keeping_id(stream, event))
        })
    }

    /// Maps one record, giving it the record's deterministic id unless the mapping keeps its own.
    ///
    /// # Errors
    /// The mapping's reason when the record cannot be an event.
    pub fn map(&self, record: &InboundRecord) -> Result<Mapped, String> {
        let mut mapped = (self.0)(record)?;
        if !mapped.keep_id {
            mapped.event = mapped.event.with_id(record.event_id());
        }
        Ok(mapped)
    }
}

/// A record the relay in could not store, set aside with the reason so that the relay could go on.
/// Kept in the store (the checkpoint `relay-in/<name>/parked`), listed by
/// [`KafkaInbound::parked`](super::KafkaInbound::parked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ParkedRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The key, as text when it is UTF-8, else in hexadecimal prefixed with `hex:`.
    pub key: Option<String>,
    /// The value, as text when it is UTF-8, else in hexadecimal prefixed with `hex:`.
    pub value: Option<String>,
    /// The headers, each value as text or `hex:`.
    pub headers: Vec<(String, Option<String>)>,
    /// Why it could not be stored.
    pub reason: String,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
}

fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.starts_with("hex:") => text.to_owned(),
        _ => {
            let mut out = String::with_capacity(4 + bytes.len() * 2);
            out.push_str("hex:");
            for byte in bytes {
                out.push_str(&format!("{byte:02x}"));
            }
            out
        }
    }
}

impl ParkedRecord {
    fn new(record: &InboundRecord, reason: String) -> Self {
        ParkedRecord {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            key: record.key.as_deref().map(printable),
            value: record.value.as_deref().map(printable),
            headers: record.headers.iter().map(|(n, v)| (n.clone(), v.as_deref().map(printable))).collect(),
            reason,
            parked_at: Utc::now().trunc_subsecs(6),
        }
    }
}

fn parked_checkpoint(name: &str) -> String {
    format!("{PARKED_PREFIX}{name}/parked")
}

/// The records parked by the relay in `name`, oldest first.
pub(crate) async fn load_parked<S: EventStore + ?Sized>(store: &S, name: &str) -> Result<Vec<ParkedRecord>> {
    let Some(checkpoint) = store.load_checkpoint(&parked_checkpoint(name)).await? else {
        return Ok(Vec::new());
    };
    let Some(state) = checkpoint.state else { return Ok(Vec::new()) };
    serde_json::from_str(&state).map_err(|source| Error::Consumer {
        consumer: name.to_owned(),
        problem: ConsumerProblem::ForeignCheckpoint { kind: "relay", source },
    })
}

/// Replaces the parked records of the relay in `name`.
pub(crate) async fn save_parked<S: EventStore + ?Sized>(store: &S, name: &str, parked: &[ParkedRecord]) -> Result<()> {
    let checkpoint_name = parked_checkpoint(name);
    let write = if parked.is_empty() {
        CheckpointWrite::Delete(checkpoint_name)
    } else {
        let state = serde_json::to_string(parked).map_err(|source| Error::Consumer {
            consumer: name.to_owned(),
            problem: ConsumerProblem::StateDoesNotEncode(source),
        })?;
        CheckpointWrite::Save(Checkpoint::new(checkpoint_name, crate::position::Position::ZERO).with_state(state))
    };
    store.save_checkpoints(vec![write]).await
}

/// What storing one batch of records did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ingested {
    /// Records appended as events (or recognised as already stored).
    pub(crate) stored: u64,
    /// Records parked.
    pub(crate) parked: u64,
}

/// Maps `records` and appends them, in order, so that storing the same records again (after a
/// crash before their offsets were committed) appends nothing: each event's id is the record's (or
/// the one it carries), and the store answers a repeated append with what it stored the first time.
/// Records that cannot be mapped, or that the store refuses as bad input
/// ([`Error::is_invalid_input`]), are parked durably before this returns. Store faults are returned:
/// nothing may be committed then (the relay retries the retryable ones and stops on the others).
pub(crate) async fn ingest<S: EventStore + ?Sized>(
    store: &S,
    name: &str,
    mapping: &Mapping,
    records: &[InboundRecord],
) -> Result<Ingested> {
    let mut parked: Vec<ParkedRecord> = Vec::new();
    let mut mapped: Vec<(usize, Mapped)> = Vec::with_capacity(records.len());
    let mut seen: HashMap<Uuid, ()> = HashMap::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        match mapping.map(record) {
            // The same id twice in one batch (a relay's duplicate): the first one is the event.
            Ok(m) if seen.insert(m.event.id(), ()).is_some() => {}
            Ok(m) => mapped.push((index, m)),
            Err(reason) => parked.push(ParkedRecord::new(record, reason)),
        }
    }
    let mut stored = 0u64;
    if !mapped.is_empty() {
        match store.append_multi(group_by_stream(&mapped)).await {
            Ok(_) => stored = mapped.len() as u64,
            // Part of the batch was stored by an earlier attempt in other groupings, or one record
            // is bad input: store them one by one, each either new, a retry, or parked.
            Err(error) if error.is_invalid_input() => {
                for (index, m) in &mapped {
                    let append = StreamAppend::new(m.stream.clone(), ExpectedVersion::Any, vec![m.event.clone()]);
                    match store.append_multi(vec![append]).await {
                        Ok(_) => stored += 1,
                        Err(error) if error.is_invalid_input() => {
                            parked.push(ParkedRecord::new(&records[*index], error.to_string()));
                        }
                        Err(error) => return Err(error),
                    }
                }
            }
            // A store fault (retryable or not) is the store's, not the record's: nothing is parked
            // and nothing committed.
            Err(error) => return Err(error),
        }
    }
    let count = parked.len() as u64;
    if !parked.is_empty() {
        let mut all = load_parked(store, name).await?;
        for record in parked {
            // Parked again after a crash before the commit: keep the first.
            let known = all
                .iter()
                .any(|p| p.topic == record.topic && p.partition == record.partition && p.offset == record.offset);
            if !known {
                all.push(record);
            }
        }
        save_parked(store, name, &all).await?;
    }
    Ok(Ingested { stored, parked: count })
}

/// One append per stream, in the order the streams first appear, each stream's events in order.
fn group_by_stream(mapped: &[(usize, Mapped)]) -> Vec<StreamAppend> {
    let mut index: HashMap<&StreamId, usize> = HashMap::new();
    let mut appends: Vec<StreamAppend> = Vec::new();
    for (_, m) in mapped {
        match index.get(&m.stream) {
            Some(i) => appends[*i].events.push(m.event.clone()),
            None => {
                index.insert(&m.stream, appends.len());
                appends.push(StreamAppend::new(m.stream.clone(), ExpectedVersion::Any, vec![m.event.clone()]));
            }
        }
    }
    appends
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::ReadLog;
    use futures_util::TryStreamExt;

    fn record(offset: i64, order: u32) -> InboundRecord {
        InboundRecord::new("orders", 0, offset)
            .with_key(format!("o-{order}"))
            .with_value(format!(r#"{{"n":{offset}}}"#))
    }

    fn by_key() -> Mapping {
        Mapping::new(|r| {
            let key = r.key_str().ok_or("no key")?;
            let stream = StreamId::new(format!("order-{key}")).map_err(|e| e.to_string())?;
            Ok(Mapped::new(stream, NewEvent::raw("Placed", r.value_str().ok_or("not UTF-8")?)))
        })
    }

    async fn log(store: &MemoryStore) -> Vec<(String, String)> {
        let events: Vec<_> = store.read_log(ReadLog::default()).try_collect().await.unwrap_or_default();
        events.into_iter().map(|e| (e.stream.to_string(), e.payload)).collect()
    }

    #[tokio::test]
    async fn records_consumed_again_in_other_pages_are_stored_once() {
        let store = MemoryStore::new();
        let records: Vec<_> = (0..10).map(|o| record(o, (o % 3) as u32)).collect();
        let mapping = by_key();
        // First pass: pages of 4; the records after offset 6 were never received.
        for page in records[..7].chunks(4) {
            ingest(&store, "in", &mapping, page).await.unwrap();
        }
        // After a crash, everything from offset 2 is read again, in pages of 3: the page [5, 6, 7]
        // holds two stored records and a new one.
        for page in records[2..].chunks(3) {
            ingest(&store, "in", &mapping, page).await.unwrap();
        }
        let stored = log(&store).await;
        assert_eq!(stored.len(), 10, "{stored:?}");
        // Each stream keeps the partition's order (streams are grouped within a page).
        for key in 0..3 {
            let stream = format!("order-o-{key}");
            let payloads: Vec<_> = stored.iter().filter(|(s, _)| *s == stream).map(|(_, p)| p.clone()).collect();
            let expected: Vec<_> = (0..10).filter(|o| o % 3 == key).map(|o| format!(r#"{{"n":{o}}}"#)).collect();
            assert_eq!(payloads, expected);
        }
    }

    #[tokio::test]
    async fn an_unmappable_record_is_parked_once_and_the_rest_is_stored() {
        let store = MemoryStore::new();
        let mut bad = InboundRecord::new("orders", 1, 5).with_value(vec![0xff, 0x00]);
        bad.key = None;
        let page = vec![record(4, 1), bad.clone(), record(6, 1)];
        let done = ingest(&store, "in", &by_key(), &page).await.unwrap();
        assert_eq!(done, Ingested { stored: 2, parked: 1 });
        ingest(&store, "in", &by_key(), &page).await.unwrap();
        let parked = load_parked(&store, "in").await.unwrap();
        assert_eq!(parked.len(), 1);
        assert_eq!((parked[0].partition, parked[0].offset), (1, 5));
        assert_eq!(parked[0].reason, "no key");
        assert_eq!(parked[0].value.as_deref(), Some("hex:ff00"));
        assert_eq!(log(&store).await.len(), 2);
    }

    #[tokio::test]
    async fn a_payload_the_store_refuses_is_parked_not_dropped() {
        let store = MemoryStore::new();
        let page = vec![record(0, 1), InboundRecord::new("orders", 0, 1).with_key("o-1").with_value("not json")];
        let done = ingest(&store, "in", &by_key(), &page).await.unwrap();
        assert_eq!(done, Ingested { stored: 1, parked: 1 });
        let parked = load_parked(&store, "in").await.unwrap();
        assert_eq!(parked[0].offset, 1);
        assert!(!parked[0].reason.is_empty());
    }

    #[tokio::test]
    async fn the_envelope_mapping_stores_a_relay_duplicate_once() {
        let source = MemoryStore::new();
        let stream = StreamId::new("order-9").unwrap();
        source.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::raw("Placed", "{}")]).await.unwrap();
        let events: Vec<_> = source.read_log(ReadLog::default()).try_collect().await.unwrap();
        let as_record = |offset| {
            let mut r = InboundRecord::new("orders", 0, offset).with_key("order-9").with_value("{}");
            for (name, value) in headers::encode(&events[0]) {
                r = r.with_header(name, value);
            }
            r
        };
        let target = MemoryStore::new();
        // The relay published the event twice (a retried page): once in one page, once in the next.
        ingest(&target, "in", &Mapping::envelope(), &[as_record(0), as_record(1)]).await.unwrap();
        ingest(&target, "in", &Mapping::envelope(), &[as_record(2)]).await.unwrap();
        let stored: Vec<_> = target.read_log(ReadLog::default()).try_collect().await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].id, events[0].id);
    }
}
