//! What the PostgreSQL fault and multi-process tests check of a log once the dust settled: it is
//! gap-free, each stream's versions are consecutive, `recorded_at` never goes back, no event id is
//! stored twice, and every acknowledged append is there exactly once, where it was acknowledged.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};

use annals::{AppendResult, EventStore, ReadLog, ReadStream, RecordedEvent, StreamId};
use futures_util::TryStreamExt;
use uuid::Uuid;

/// An append to one stream that the store acknowledged, as the writer saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acked {
    pub stream: String,
    /// The ids sent, in order.
    pub ids: Vec<Uuid>,
    pub first: u64,
    pub last: u64,
    /// The stream's version after the append.
    pub version: u64,
}

impl Acked {
    pub fn new(stream: &StreamId, ids: Vec<Uuid>, result: &AppendResult) -> Self {
        Acked {
            stream: stream.as_str().to_owned(),
            ids,
            first: result.first_position.get(),
            last: result.last_position.get(),
            version: result.version.get(),
        }
    }

    /// The line a child process prints for it: `ACK <stream> <first> <last> <version> <id>...`.
    pub fn line(&self) -> String {
        let ids: Vec<String> = self.ids.iter().map(Uuid::to_string).collect();
        format!("ACK {} {} {} {} {}\n", self.stream, self.first, self.last, self.version, ids.join(" "))
    }

    /// Reads [`line`](Self::line) back.
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.strip_prefix("ACK ")?.split(' ');
        let stream = words.next()?.to_owned();
        let first = words.next()?.parse().ok()?;
        let last = words.next()?.parse().ok()?;
        let version = words.next()?.parse().ok()?;
        let ids = words.map(|w| w.parse().ok()).collect::<Option<Vec<Uuid>>>()?;
        Some(Acked { stream, ids, first, last, version })
    }
}

/// Reads the whole log and checks it (see the module docs); returns it.
pub async fn check_log(store: &impl EventStore, acked: &[Acked], context: &str) -> Vec<RecordedEvent> {
    let head = store.head().await.unwrap().get();
    let log: Vec<RecordedEvent> = store.read_log(ReadLog::from_start()).try_collect().await.unwrap();
    assert_eq!(log.len() as u64, head, "{context}: the log does not reach the head");
    for (index, event) in log.iter().enumerate() {
        assert_eq!(event.position.get(), index as u64 + 1, "{context}: gap in positions");
    }
    assert!(log.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at), "{context}: recorded_at goes back");
    let mut ids = HashSet::new();
    for event in &log {
        assert!(ids.insert(event.id), "{context}: event id {} stored twice", event.id);
    }

    let mut streams: BTreeMap<&StreamId, Vec<&RecordedEvent>> = BTreeMap::new();
    for event in &log {
        streams.entry(&event.stream).or_default().push(event);
    }
    for (stream, events) in &streams {
        for (index, event) in events.iter().enumerate() {
            assert_eq!(event.version.get(), index as u64 + 1, "{context}: gap in the versions of {stream:?}");
        }
        let version = store.stream_version(stream).await.unwrap().map(|v| v.get());
        assert_eq!(version, Some(events.len() as u64), "{context}: version of {stream:?}");
        let read: Vec<RecordedEvent> = store.read_stream(stream, ReadStream::forward()).try_collect().await.unwrap();
        assert!(read.iter().eq(events.iter().copied()), "{context}: reading {stream:?} disagrees with the log");
    }

    let by_id: HashMap<Uuid, &RecordedEvent> = log.iter().map(|e| (e.id, e)).collect();
    for ack in acked {
        assert_eq!(ack.last + 1 - ack.first, ack.ids.len() as u64, "{context}: {ack:?} is inconsistent");
        for (offset, id) in (0..).zip(&ack.ids) {
            let Some(event) = by_id.get(id) else {
                panic!("{context}: acknowledged event {id} of {ack:?} is missing (head {head})")
            };
            assert_eq!(event.position.get(), ack.first + offset, "{context}: acknowledged event {id} moved");
            assert_eq!(event.stream.as_str(), ack.stream, "{context}: acknowledged event {id} changed stream");
            let version = ack.version + 1 + offset - ack.ids.len() as u64;
            assert_eq!(event.version.get(), version, "{context}: acknowledged event {id} changed version");
        }
    }
    log
}

/// Whether the events with `ids` are all in `log` (`Some(true)`), none of them (`Some(false)`), or
/// only some (`None`: an append partly there).
pub fn presence(log: &[RecordedEvent], ids: &[Uuid]) -> Option<bool> {
    let stored: HashSet<Uuid> = log.iter().map(|e| e.id).collect();
    let present = ids.iter().filter(|id| stored.contains(id)).count();
    match present {
        0 => Some(false),
        n if n == ids.len() => Some(true),
        _ => None,
    }
}
