//! Checks of a log read back after a crash or a power cut, shared by the crash and power-loss tests:
//! appends tagged with their batch and size headers must be whole, and streams gap-free and in
//! agreement with the log.

use std::collections::{BTreeMap, HashMap};

use annals::{EventStore, ReadStream, RecordedEvent, SledStore, StreamId};
use futures_util::TryStreamExt;

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
/// the payloads `payload(batch, stream, index)` gives.
pub fn check_batches(
    log: &[RecordedEvent],
    event_type: &str,
    payload: impl Fn(&str, &str, usize) -> serde_json::Value,
    context: &str,
) {
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
            assert_eq!(found, payload(batch, event.stream.as_str(), index), "{context}: payload");
            assert_eq!(event.event_type, event_type);
        }
    }
}
