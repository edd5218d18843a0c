//! The appends of the crash and power-loss tests, and the checks of a log read back after a kill or
//! a power cut: each append's events are tagged with their batch and its size, each acknowledged
//! append is reported as an `ACK` line; appends must be whole, acknowledged ones where they were
//! acknowledged (or lost from the end only), streams gap-free and in agreement with the log.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use annals::{AppendResult, EventStore, ExpectedVersion, NewEvent, ReadStream, RecordedEvent, SledStore, StreamId};
use futures_util::TryStreamExt;
use uuid::Uuid;

use super::child::Rng;

/// The header naming the append an event came in.
pub const BATCH_HEADER: &str = "batch";
/// The header giving the number of events of that append.
pub const SIZE_HEADER: &str = "batch_size";

/// Every stream's versions are gap-free, and the stream reads agree with the log.
pub async fn check_streams(store: &SledStore, log: &[RecordedEvent], context: &str) {
    let mut streams: BTreeMap<&StreamId, Vec<&RecordedEvent>> = BTreeMap::new();
    for event in log {
        streams.entry(&event.stream).or_default().push(event);
    }
    for (stream, events) in streams {
        for (index, event) in events.iter().enumerate() {
            assert_eq!(event.version.get(), index as u64 + 1, "{context}: gap in the versions of {stream:?}");
        }
        let version = store.stream_version(stream).await.unwrap().map(|v| v.get());
        assert_eq!(version, Some(events.len() as u64), "{context}: version of {stream:?}");
        let read: Vec<RecordedEvent> = store.read_stream(stream, ReadStream::forward()).try_collect().await.unwrap();
        assert!(read.iter().eq(events.iter().copied()), "{context}: reading {stream:?} disagrees with the log");
    }
}

/// Every append is whole: as many events as its size header says, in order, of `event_type`, with
/// the payloads [`payload`] gives with `pad_max`.
pub fn check_batches(log: &[RecordedEvent], event_type: &str, pad_max: u64, context: &str) {
    let mut batches: HashMap<&str, Vec<&RecordedEvent>> = HashMap::new();
    for event in log {
        let batch = event.metadata.headers.get(BATCH_HEADER).expect("every event names its append");
        batches.entry(batch.as_str()).or_default().push(event);
    }
    for (batch, events) in batches {
        let size: usize = events[0].metadata.headers[SIZE_HEADER].parse().unwrap();
        let positions: Vec<u64> = events.iter().map(|e| e.position.get()).collect();
        assert_eq!(events.len(), size, "{context}: append {batch} is partly there, at positions {positions:?}");
        for (index, event) in events.iter().enumerate() {
            let found: serde_json::Value = serde_json::from_str(&event.payload).unwrap();
            assert_eq!(found, payload(batch, event.stream.as_str(), index, pad_max), "{context}: payload");
            assert_eq!(event.event_type, event_type);
        }
    }
}

/// The `index`-th event of an append of `size` events, tagged with its batch and size.
pub fn new_event(event_type: &str, pad_max: u64, batch: &str, size: usize, index: usize, stream: &str) -> NewEvent {
    NewEvent::json(event_type, &payload(batch, stream, index, pad_max))
        .unwrap()
        .with_header(BATCH_HEADER, batch)
        .with_header(SIZE_HEADER, size.to_string())
}

/// The payload of the `index`-th event of an append, padded to a length below `pad_max` that only
/// the append and the index decide.
pub fn payload(batch: &str, stream: &str, index: usize, pad_max: u64) -> serde_json::Value {
    let hash = batch
        .bytes()
        .chain([index as u8])
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let pad = "x".repeat((hash % pad_max) as usize);
    serde_json::json!({ "batch": batch, "stream": stream, "index": index, "pad": pad })
}

/// An expected version for an append to a stream now at `current`: any of the four kinds.
pub fn pick_expected(rng: &mut Rng, current: u64) -> ExpectedVersion {
    match (rng.below(4), current) {
        (0, _) => ExpectedVersion::Any,
        (1, 0) => ExpectedVersion::NoStream,
        (1, _) => ExpectedVersion::StreamExists,
        _ => ExpectedVersion::Exact(current.into()),
    }
}

/// The line a child prints for one acknowledged append to one stream.
pub fn ack_line(batch: &str, stream: &str, result: &AppendResult, ids: &[Uuid]) -> String {
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    format!(
        "ACK {batch} {stream} {} {} {} {}\n",
        result.first_position,
        result.last_position,
        result.version,
        ids.join(" ")
    )
}

/// One acknowledged append to one stream, as the child reported it, and when the parent read it.
#[derive(Clone, Debug)]
pub struct Ack {
    pub batch: String,
    pub stream: String,
    pub first: u64,
    pub last: u64,
    pub version: u64,
    pub ids: Vec<Uuid>,
    pub at: Instant,
}

/// Reads an [`ack_line`] back.
pub fn parse_ack(line: &str, at: Instant) -> Option<Ack> {
    let mut words = line.strip_prefix("ACK ")?.split(' ');
    let batch = words.next()?.to_owned();
    let stream = words.next()?.to_owned();
    let first = words.next()?.parse().ok()?;
    let last = words.next()?.parse().ok()?;
    let version = words.next()?.parse().ok()?;
    let ids = words.map(|w| w.parse().expect("an event id")).collect();
    Some(Ack { batch, stream, first, last, version, ids, at })
}

/// Every acknowledged append is where it was acknowledged, or (when `may_lose`) gone together with
/// everything after it. Returns the ones that are gone.
pub fn check_acks(log: &[RecordedEvent], acks: &[Ack], may_lose: bool, context: &str) -> Vec<Ack> {
    let by_id: HashMap<Uuid, &RecordedEvent> = log.iter().map(|e| (e.id, e)).collect();
    let mut lost = Vec::new();
    for ack in acks {
        assert_eq!(ack.last - ack.first + 1, ack.ids.len() as u64, "{context}: ack {ack:?} is inconsistent");
        let present = ack.ids.iter().filter(|id| by_id.contains_key(id)).count();
        if present == 0 {
            assert!(
                may_lose,
                "{context}: acknowledged append {} (positions {} to {}) is lost; head {}",
                ack.batch,
                ack.first,
                ack.last,
                log.len()
            );
            assert!(
                ack.first > log.len() as u64,
                "{context}: acknowledged append {} at position {} is lost but the log goes on to {}: \
                 what survives is not a prefix",
                ack.batch,
                ack.first,
                log.len()
            );
            lost.push(ack.clone());
            continue;
        }
        assert_eq!(present, ack.ids.len(), "{context}: acknowledged append {} is partly there", ack.batch);
        for (offset, id) in (0..).zip(&ack.ids) {
            let event = by_id[id];
            assert_eq!(event.position.get(), ack.first + offset, "{context}: acknowledged event {id} moved");
            assert_eq!(event.stream.as_str(), ack.stream, "{context}: acknowledged event {id} changed stream");
            let version = ack.version + 1 + offset - ack.ids.len() as u64;
            assert_eq!(event.version.get(), version, "{context}: acknowledged event {id} changed version");
            assert_eq!(event.metadata.headers.get(BATCH_HEADER), Some(&ack.batch), "{context}: {id} changed append");
        }
    }
    lost
}
