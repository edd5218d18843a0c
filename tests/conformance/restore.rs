//! Restoring recorded events: an export loads back exactly, and events that do not continue the log
//! are refused; a restored batch is one atomic append per run of streams; an import hands `restore`
//! whole original commit groups.

use std::sync::{Arc, Mutex};

use annals::{
    export_jsonl, import_jsonl, AppendResult, Checkpoint, CheckpointWrite, Direction, Error, EventStore,
    ExpectedVersion, HeadWatch, LogChunk, LogFilter, Metadata, NewEvent, Position, RecordedEvent, Snapshot,
    StreamAppend, StreamId,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{TestResult, TestStore};

/// A log with interleaved streams over several appends (so several `recorded_at`), business times
/// and metadata.
async fn fill<S: TestStore>(store: &S) -> TestResult {
    let a = StreamId::new("order-a")?;
    let b = StreamId::new("order-b")?;
    let occurred = chrono::DateTime::from_timestamp_micros(1_500_000_000_000_001).ok_or("time")?;
    let meta =
        Metadata { correlation_id: Some("c-1".into()), causation_id: None, headers: [("k".into(), "v".into())].into() };
    for round in 0..3 {
        let event = |n: u32| {
            NewEvent::raw("Touched", format!(r#"{{"round":{round},"n":{n}}}"#))
                .with_schema_version(2)
                .with_occurred_at(occurred)
                .with_metadata(meta.clone())
        };
        store
            .append_multi(vec![
                annals::StreamAppend::new(a.clone(), ExpectedVersion::Any, vec![event(1), event(2)]),
                annals::StreamAppend::new(b.clone(), ExpectedVersion::Any, vec![event(3)]),
            ])
            .await?;
        store.append(&a, ExpectedVersion::Any, vec![event(4)]).await?;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let saved = Checkpoint::new("projection/x", Position::new(7)).with_state(r#"{"version":1,"state":[1,2]}"#);
    store.save_checkpoints(vec![CheckpointWrite::Save(saved)]).await?;
    Ok(())
}

async fn everything<S: TestStore>(store: &S) -> Result<Vec<RecordedEvent>, Error> {
    Ok(store.read_log_chunk(Position::FIRST, 10_000, &LogFilter::all()).await?.events)
}

pub(crate) async fn an_export_imports_into_an_empty_store_exactly_and_a_second_import_adds_nothing<S: TestStore>(
    store: &S,
) -> TestResult {
    let source = annals::MemoryStore::new();
    fill(&source).await?;
    let mut lines = Vec::new();
    let exported = export_jsonl(&source, &mut lines).await?;
    assert_eq!((exported.events, exported.checkpoints), (12, 1));

    let imported = import_jsonl(store, lines.as_slice()).await?;
    assert_eq!((imported.events, imported.checkpoints), (12, 1));
    assert_eq!(everything(store).await?, everything(&source).await?);
    assert_eq!(store.list_checkpoints("").await?, source.list_checkpoints("").await?);
    assert_eq!(store.stream_version(&StreamId::new("order-a")?).await?.map(|v| v.get()), Some(9));

    let again = import_jsonl(store, lines.as_slice()).await?;
    assert_eq!(again.events, 0);
    assert_eq!(everything(store).await?, everything(&source).await?);

    // And the store goes on normally after a restore.
    let next =
        store.append(&StreamId::new("order-b")?, ExpectedVersion::Any, vec![NewEvent::raw("Next", "{}")]).await?;
    assert_eq!((next.version.get(), next.first_position.get()), (4, 13));
    Ok(())
}

pub(crate) async fn restoring_events_that_do_not_continue_the_log_is_refused_and_writes_nothing<S: TestStore>(
    store: &S,
) -> TestResult {
    let source = annals::MemoryStore::new();
    fill(&source).await?;
    let events = everything(&source).await?;

    // Not starting at the next position.
    let result = store.restore(events[1..3].to_vec()).await;
    assert!(matches!(result, Err(Error::Restore { position, .. }) if position == Position::new(2)), "{result:?}");
    // Mixing recorded times in one batch (events 3 and 4 came from different appends).
    let mut mixed = events[0..3].to_vec();
    mixed.push(events[3].clone());
    mixed[3].recorded_at = mixed[0].recorded_at + chrono::Duration::milliseconds(1);
    let result = store.restore(mixed).await;
    assert!(matches!(result, Err(Error::Restore { .. })), "{result:?}");
    // A version gap within a stream.
    let mut gap = events[0..1].to_vec();
    gap[0].version = annals::Version::new(2);
    let result = store.restore(gap).await;
    assert!(matches!(result, Err(Error::WrongExpectedVersion { .. })), "{result:?}");
    // Version 0 and position 0 do not exist.
    let mut zero = events[0..1].to_vec();
    zero[0].version = annals::Version::ZERO;
    let result = store.restore(zero).await;
    assert!(matches!(result, Err(Error::Restore { .. })), "{result:?}");
    let mut zero = events[0..1].to_vec();
    zero[0].position = Position::ZERO;
    let result = store.restore(zero).await;
    assert!(matches!(result, Err(Error::Restore { .. })), "{result:?}");
    assert_eq!(store.head().await?, Position::ZERO);

    // The right first batch goes in; an older recorded time after it is refused.
    store.restore(events[0..3].to_vec()).await?;
    let mut older = events[3..4].to_vec();
    older[0].recorded_at = events[0].recorded_at - chrono::Duration::seconds(1);
    let result = store.restore(older).await;
    assert!(matches!(result, Err(Error::Restore { .. })), "{result:?}");
    assert_eq!(store.head().await?, Position::new(3));
    Ok(())
}

/// Five events, one a time, to streams `a`, `b`, `a`, `c`, `b` (positions 1 to 5), with one
/// `recorded_at` as a restored batch needs. `restore` writes them as two appends: `[a, b]` from
/// position 1, then `[a, c, b]` from position 3, where `a` comes back.
async fn two_runs() -> Result<Vec<RecordedEvent>, Box<dyn std::error::Error>> {
    let source = annals::MemoryStore::new();
    for name in ["run-a", "run-b", "run-a", "run-c", "run-b"] {
        source.append(&StreamId::new(name)?, ExpectedVersion::Any, vec![NewEvent::raw("Ran", "{}")]).await?;
    }
    let mut events = everything(&source).await?;
    let recorded_at = events[0].recorded_at;
    for event in &mut events {
        event.recorded_at = recorded_at;
    }
    Ok(events)
}

pub(crate) async fn a_restored_batch_is_written_as_one_atomic_append_per_run_of_streams<S: TestStore>(
    store: &S,
) -> TestResult {
    let events = two_runs().await?;
    let (a, b) = (StreamId::new("run-a")?, StreamId::new("run-b")?);
    let wrong_version = |position: usize, version: u64| {
        let mut batch = events.clone();
        batch[position - 1].version = annals::Version::new(version);
        batch
    };
    let refused_at = |result: Result<(), Error>, stream: &StreamId, expected: u64, actual: Option<u64>| {
        assert!(
            matches!(
                &result,
                Err(Error::WrongExpectedVersion { stream: s, expected: ExpectedVersion::Exact(e), actual: v })
                    if s == stream && e.get() == expected && v.map(|v| v.get()) == actual
            ),
            "{result:?}"
        );
    };

    // `b` at position 2 skips a version: the whole first run is refused, `a` at position 1 with it.
    refused_at(store.restore(wrong_version(2, 2)).await, &b, 1, None);
    assert_eq!(store.head().await?, Position::ZERO, "part of a refused run was written");
    assert_eq!(store.stream_version(&a).await?, None);

    // `b` at position 5 skips a version: the second run is refused whole, the first stays written.
    refused_at(store.restore(wrong_version(5, 3)).await, &b, 2, Some(1));
    assert_eq!(store.head().await?, Position::new(2), "the first run stays, nothing of the second");
    assert_eq!(everything(store).await?, events[..2], "the first run, exactly");
    assert_eq!(store.stream_version(&a).await?.map(|v| v.get()), Some(1));

    // The whole batch again: the first run is a retry, the second is written.
    store.restore(events.clone()).await?;
    assert_eq!(everything(store).await?, events);
    assert_eq!(store.stream_version(&b).await?.map(|v| v.get()), Some(2));
    Ok(())
}

/// A store that hands every call to `inner`, noting the batches given to `restore` and refusing the
/// one numbered `fail_at` (from 0) as a crash would stop it.
#[derive(Clone)]
struct Restores<S> {
    inner: S,
    batches: Arc<Mutex<Vec<Vec<RecordedEvent>>>>,
    fail_at: Option<usize>,
}

impl<S> Restores<S> {
    fn new(inner: S, fail_at: Option<usize>) -> Self {
        Restores { inner, batches: Arc::default(), fail_at }
    }

    fn batches(&self) -> Vec<Vec<RecordedEvent>> {
        self.batches.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl<S: EventStore> EventStore for Restores<S> {
    async fn append_multi(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>, Error> {
        self.inner.append_multi(appends).await
    }

    async fn read_stream_chunk(
        &self,
        stream: &StreamId,
        from: annals::Version,
        direction: Direction,
        max: usize,
        view: annals::StreamView,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.inner.read_stream_chunk(stream, from, direction, max, view).await
    }

    async fn read_log_chunk(&self, from: Position, max: usize, filter: &LogFilter) -> Result<LogChunk, Error> {
        self.inner.read_log_chunk(from, max, filter).await
    }

    async fn head(&self) -> Result<Position, Error> {
        self.inner.head().await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<annals::Version>, Error> {
        self.inner.stream_version(stream).await
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<(StreamId, annals::Version)>, Error> {
        self.inner.list_streams(prefix).await
    }

    async fn seek_recorded(&self, at: DateTime<Utc>) -> Result<Option<Position>, Error> {
        self.inner.seek_recorded(at).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), Error> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &StreamId, at: annals::Version) -> Result<Option<Snapshot>, Error> {
        self.inner.load_snapshot(stream, at).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>, Error> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoints(&self, writes: Vec<CheckpointWrite>) -> Result<(), Error> {
        self.inner.save_checkpoints(writes).await
    }

    async fn list_checkpoints(&self, prefix: &str) -> Result<Vec<Checkpoint>, Error> {
        self.inner.list_checkpoints(prefix).await
    }

    async fn restore(&self, events: Vec<RecordedEvent>) -> Result<(), Error> {
        let number = {
            let mut batches = self.batches.lock().map_err(|_| Error::Closed)?;
            batches.push(events.clone());
            batches.len() - 1
        };
        if self.fail_at == Some(number) {
            return Err(Error::Closed);
        }
        self.inner.restore(events).await
    }

    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: annals::ExpectedVersion,
        mode: annals::DeleteMode,
    ) -> annals::Result<()> {
        self.inner.delete_stream(stream, expected, mode).await
    }

    async fn truncate_stream(&self, stream: &StreamId, before: annals::Version) -> annals::Result<()> {
        self.inner.truncate_stream(stream, before).await
    }

    async fn stream_info(&self, stream: &StreamId) -> annals::Result<annals::StreamInfo> {
        self.inner.stream_info(stream).await
    }

    async fn scavenge_chunk(&self, from: Position, max: usize) -> annals::Result<annals::ScavengeChunk> {
        self.inner.scavenge_chunk(from, max).await
    }

    async fn scavenge_stream(&self, stream: &StreamId) -> annals::Result<u64> {
        self.inner.scavenge_stream(stream).await
    }

    fn watch_head(&self) -> HeadWatch {
        self.inner.watch_head()
    }
}

/// The events of `log` cut where `recorded_at` changes: its original commit groups.
fn groups(log: &[RecordedEvent]) -> Vec<Vec<RecordedEvent>> {
    log.chunk_by(|x, y| x.recorded_at == y.recorded_at).map(<[RecordedEvent]>::to_vec).collect()
}

pub(crate) async fn an_import_restores_whole_original_groups_and_stops_only_between_them<S: TestStore>(
    store: &S,
) -> TestResult {
    // A group of 1,500 events (more than any fixed batch would take), and smaller ones around it.
    let source = annals::MemoryStore::new();
    let big = StreamId::new("big-1")?;
    let small = StreamId::new("small-1")?;
    source.append(&small, ExpectedVersion::Any, vec![NewEvent::raw("Small", "{}")]).await?;
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let many = (0..1_500).map(|n| NewEvent::raw("Big", format!(r#"{{"n":{n}}}"#))).collect();
    source.append(&big, ExpectedVersion::Any, many).await?;
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    source.append(&small, ExpectedVersion::Any, vec![NewEvent::raw("Small", "{}")]).await?;
    let log = everything(&source).await?;
    let original = groups(&log);
    assert_eq!(original.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1_500, 1], "precondition: three groups");
    let mut lines = Vec::new();
    export_jsonl(&source, &mut lines).await?;

    // Stopped at its third `restore`: the first two groups are in, whole.
    let stopped = Restores::new(store.clone(), Some(2));
    let result = import_jsonl(&stopped, lines.as_slice()).await;
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
    assert_eq!(store.head().await?, Position::new(1 + 1_500), "the import did not stop between two groups");

    // Run again to the end: one `restore` per original group, each whole.
    let counted = Restores::new(store.clone(), None);
    import_jsonl(&counted, lines.as_slice()).await?;
    let shape = |batches: &[Vec<RecordedEvent>]| -> Vec<(u64, usize)> {
        batches.iter().map(|b| (b.first().map_or(0, |e| e.position.get()), b.len())).collect()
    };
    let batches = counted.batches();
    assert_eq!(shape(&batches), shape(&original), "(first position, events) of each restore");
    assert!(batches == original, "each restore is exactly one original group");
    assert_eq!(everything(store).await?, log);
    Ok(())
}
