//! A replay of the sled store reads the next page on another thread while the projection handles the
//! current one, and still keeps every promise of a replay: the events come in position order, with
//! the bounds and filters applied and removed events skipped; damage past the first page is reported
//! as `Error::Corrupt` at its position, after exactly the events before it; and a replay dropped
//! midway leaves no read behind, so the store closes and opens again at once.

#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals::{
    replay, scavenge, AppendResult, BlockingLogReads, Checkpoint, CheckpointWrite, DeleteMode, Direction, Error,
    EventStore, ExpectedVersion, HandlerError, HeadWatch, LogChunk, LogFilter, NewEvent, Phase, Position, Projection,
    ReadLog, RecordedEvent, Result, ScavengeChunk, ScavengeOptions, SledStore, Snapshot, Start, StreamAppend, StreamId,
    StreamInfo, StreamView, Until, Upcasters, Upcasting, Version,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::raw_sled::damage;
use futures_util::TryStreamExt;
use tokio::sync::Notify;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Records the position, type and payload of every event it handles, where the test can see them
/// after a failure.
#[derive(Clone, Default)]
struct Positions {
    seen: Arc<Mutex<Vec<(u64, String, String)>>>,
    filter: LogFilter,
}

impl Positions {
    fn seen(&self) -> Vec<u64> {
        self.seen.lock().unwrap().iter().map(|(position, _, _)| *position).collect()
    }
}

#[async_trait]
impl Projection for Positions {
    fn name(&self) -> &str {
        "positions"
    }

    fn filter(&self) -> LogFilter {
        self.filter.clone()
    }

    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        // Every field decoded, whether into new events or into the storage of handed-back ones
        // (the payload as stored, unless upcast).
        if event.event_type == "Numbered" {
            assert_eq!(event.payload, format!("{{\"n\":{}}}", event.position.get()));
        }
        assert_eq!(event.version.get(), version_of(event.position));
        assert_eq!(event.stream.as_str(), stream_of(event.position));
        let seen = (event.position.get(), event.event_type.clone(), event.payload.clone());
        self.seen.lock().unwrap().push(seen);
        Ok(())
    }
}

/// Event `p` (from 1) goes to stream `s-<(p - 1) % 7>`; its payload names its position.
fn stream_of(position: Position) -> String {
    format!("s-{}", (position.get() - 1) % 7)
}

fn version_of(position: Position) -> u64 {
    (position.get() - 1) / 7 + 1
}

/// Appends `events` events, one per append to a stream, batched seven appends (one per stream) at a time.
async fn fill(store: &impl EventStore, events: u64) -> Result<(), Error> {
    for first in (1..=events).step_by(7) {
        let appends = (first..(first + 7).min(events + 1))
            .map(|p| {
                let stream = StreamId::new(stream_of(Position::new(p))).unwrap();
                let event = NewEvent::raw("Numbered", format!("{{\"n\":{p}}}"));
                StreamAppend::new(stream, ExpectedVersion::Any, vec![event])
            })
            .collect();
        store.append_multi(appends).await?;
    }
    Ok(())
}

async fn replayed(store: &impl EventStore, projection: Positions, until: Until) -> Result<Vec<u64>, Error> {
    let seen = projection.clone();
    let result = replay(store, projection, Start::Beginning, until).await;
    result.map(|_| seen.seen())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_over_many_pages_keeps_order_bounds_filters_and_skips_removed_events() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path())?;
    fill(&store, 5_000).await?;
    let all: Vec<u64> = (1..=5_000).collect();
    assert_eq!(replayed(&store, Positions::default(), Until::default()).await?, all);

    let until = Until { position: Some(Position::new(2_345)), ..Until::default() };
    assert_eq!(replayed(&store, Positions::default(), until).await?, all[..2_345]);

    let filter = LogFilter::all().stream_prefix("s-3");
    let only_s3: Vec<u64> = all.iter().copied().filter(|p| (p - 1) % 7 == 3).collect();
    let projection = Positions { filter: filter.clone(), ..Positions::default() };
    assert_eq!(replayed(&store, projection, Until::default()).await?, only_s3);

    let read: Vec<RecordedEvent> = store.read_log(ReadLog::from(Position::new(700)).limit(1_000)).try_collect().await?;
    assert_eq!(read.iter().map(|e| e.position.get()).collect::<Vec<_>>(), all[699..1_699]);

    // Stream s-3 removed by a scavenge: its positions are holes, skipped page after page.
    store.delete_stream(&StreamId::new("s-3")?, ExpectedVersion::Any, DeleteMode::Hard).await?;
    scavenge(&store, ScavengeOptions::new(), |_| {}).await?;
    let kept: Vec<u64> = all.iter().copied().filter(|p| (p - 1) % 7 != 3).collect();
    assert_eq!(replayed(&store, Positions::default(), Until::default()).await?, kept);
    Ok(())
}

/// The first and last positions of the log record that holds `position`, from raw sled.
fn record_holding(dir: &Path, position: u64) -> (Vec<u8>, u64, u64) {
    let db = common::raw_sled::raw_open(dir).unwrap();
    let tree = db.open_tree("annals").unwrap();
    for entry in tree.scan_prefix([b'L']) {
        let (key, value) = entry.unwrap();
        let first = u64::from_be_bytes(key[1..9].try_into().unwrap());
        let count = u64::from(u32::from_le_bytes(value[1..5].try_into().unwrap()));
        if (first..first + count).contains(&position) {
            return (key.to_vec(), first, first + count - 1);
        }
    }
    panic!("no record holds position {position}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_past_the_first_page_is_reported_at_its_position_after_every_event_before_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = SledStore::open(dir.path())?;
        fill(&store, 3_000).await?;
    }
    // The last byte of a record around position 1,700 flipped: its last event's checksum fails.
    let (key, first, damaged) = record_holding(dir.path(), 1_700);
    assert!(first > 1_024, "the damage lies past the first two pages");
    damage(dir.path(), "annals", |tree| {
        let mut value = tree.get(&key)?.unwrap().to_vec();
        *value.last_mut().unwrap() ^= 0x20;
        tree.insert(&key, value).map(|_| ())
    })?;
    let store = SledStore::open(dir.path())?;
    let projection = Positions::default();
    let outcome = replay(&store, projection.clone(), Start::Beginning, Until::default()).await;
    assert!(
        matches!(&outcome, Err(Error::Corrupt { position, .. }) if position.get() == damaged),
        "{:?}",
        outcome.err()
    );
    assert_eq!(projection.seen(), (1..damaged).collect::<Vec<_>>(), "every event before the damage, in order");

    // The same through `read_log`: the events before it, then the error.
    let mut read = Vec::new();
    let mut log = store.read_log(ReadLog::from_start());
    let error = loop {
        match log.try_next().await {
            Ok(Some(event)) => read.push(event.position.get()),
            Ok(None) => panic!("the log ended without reporting the damage at {damaged}"),
            Err(error) => break error,
        }
    };
    assert!(matches!(&error, Error::Corrupt { position, .. } if position.get() == damaged), "{error:?}");
    assert_eq!(read, (1..damaged).collect::<Vec<_>>());
    Ok(())
}

/// The sled store, with its blocking log reads replaced by `reads`.
struct Gated {
    inner: SledStore,
    reads: Arc<GatedReads>,
}

/// The sled store's blocking log reads, counted (`calls`, and `running` while one runs). With `gate`
/// set, a read waits until the cursor that started it stops it (or 10 s pass).
struct GatedReads {
    inner: Arc<dyn BlockingLogReads>,
    gate: bool,
    calls: AtomicUsize,
    running: AtomicUsize,
    started: Notify,
}

impl GatedReads {
    fn of(store: &SledStore, gate: bool) -> Arc<Self> {
        Arc::new(GatedReads {
            inner: store.blocking_log_reads().expect("the sled store's reads block"),
            gate,
            calls: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            started: Notify::new(),
        })
    }
}

impl BlockingLogReads for GatedReads {
    fn read_log_chunk_blocking(
        &self,
        from: Position,
        max: usize,
        filter: &LogFilter,
        reuse: Vec<RecordedEvent>,
        stop: &AtomicBool,
    ) -> Result<LogChunk> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.running.fetch_add(1, Ordering::SeqCst);
        self.started.notify_one();
        if self.gate {
            let since = Instant::now();
            while !stop.load(Ordering::Relaxed) && since.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Still a little work after the stop, as a read that was under way has.
            std::thread::sleep(Duration::from_millis(20));
        }
        let chunk = self.inner.read_log_chunk_blocking(from, max, filter, reuse, stop);
        self.running.fetch_sub(1, Ordering::SeqCst);
        chunk
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_dropped_midway_leaves_no_read_behind_and_the_store_reopens_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let inner = SledStore::open(dir.path())?;
    fill(&inner, 2_000).await?;
    let reads = GatedReads::of(&inner, true);
    let store = Gated { inner, reads: Arc::clone(&reads) };
    let projection = Positions::default();
    tokio::select! {
        outcome = replay(&store, projection.clone(), Start::Beginning, Until::default()) => {
            panic!("the replay ended although its second page is held: {:?}", outcome.err());
        }
        () = reads.started.notified() => {}
    }
    // The replay is dropped: the read ahead of it has ended by now, not later.
    assert_eq!(reads.running.load(Ordering::SeqCst), 0, "a read ahead outlived its replay");
    assert_eq!(projection.seen().len(), 512, "the first page was handled");
    drop(store);
    drop(reads);
    let reopened = SledStore::open(dir.path())?;
    assert_eq!(reopened.head().await?, Position::new(2_000));
    Ok(())
}

/// A replay through `Upcasting` reads ahead on the sled store as a replay of the store itself does,
/// and every page it read ahead is upcast: renamed, its payload upgraded, and a filter on the new
/// name finds the events stored under the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_through_upcasting_reads_ahead_and_upcasts_every_page() -> TestResult {
    let dir = tempfile::tempdir()?;
    let inner = SledStore::open(dir.path())?;
    fill(&inner, 3_000).await?;
    let reads = GatedReads::of(&inner, false);
    let counted = Gated { inner, reads: Arc::clone(&reads) };
    let upcasters = Upcasters::new().upgrade("Numbered", 1, |mut payload| {
        payload["upgraded"] = serde_json::Value::Bool(true);
        Ok(payload)
    });
    let upcasters = upcasters.rename("Numbered", 2, "Counted", 1);
    let store = Upcasting::new(counted, upcasters);
    let expected: Vec<(u64, String, String)> =
        (1..=3_000).map(|p| (p, "Counted".to_owned(), format!("{{\"n\":{p},\"upgraded\":true}}"))).collect();
    for filter in [LogFilter::all(), LogFilter::all().event_types(["Counted"])] {
        let projection = Positions { filter, ..Positions::default() };
        replay(&store, projection.clone(), Start::Beginning, Until::default()).await?;
        let seen = projection.seen.lock().unwrap().clone();
        let first_wrong = seen.iter().zip(&expected).position(|(s, e)| s != e);
        assert_eq!(first_wrong.map(|i| (&seen[i], &expected[i])), None, "the first event not as expected");
        assert_eq!(seen.len(), expected.len(), "events replayed");
    }
    // Pages 2 to 6 of each of the two replays, at least, were read ahead.
    let calls = reads.calls.load(Ordering::SeqCst);
    assert!(calls >= 8, "only {calls} pages were read ahead through Upcasting");
    Ok(())
}

#[async_trait]
impl EventStore for Gated {
    async fn append_multi(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.inner.append_multi(appends).await
    }

    async fn read_stream_chunk(
        &self,
        stream: &StreamId,
        from: Version,
        direction: Direction,
        max: usize,
        view: StreamView,
    ) -> Result<Vec<RecordedEvent>> {
        self.inner.read_stream_chunk(stream, from, direction, max, view).await
    }

    async fn read_log_chunk(&self, from: Position, max: usize, filter: &LogFilter) -> Result<LogChunk> {
        self.inner.read_log_chunk(from, max, filter).await
    }

    async fn head(&self) -> Result<Position> {
        self.inner.head().await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>> {
        self.inner.stream_version(stream).await
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<(StreamId, Version)>> {
        self.inner.list_streams(prefix).await
    }

    async fn seek_recorded(&self, at: DateTime<Utc>) -> Result<Option<Position>> {
        self.inner.seek_recorded(at).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &StreamId, at: Version) -> Result<Option<Snapshot>> {
        self.inner.load_snapshot(stream, at).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoints(&self, writes: Vec<CheckpointWrite>) -> Result<()> {
        self.inner.save_checkpoints(writes).await
    }

    async fn list_checkpoints(&self, prefix: &str) -> Result<Vec<Checkpoint>> {
        self.inner.list_checkpoints(prefix).await
    }

    async fn restore(&self, events: Vec<RecordedEvent>) -> Result<()> {
        self.inner.restore(events).await
    }

    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion, mode: DeleteMode) -> Result<()> {
        self.inner.delete_stream(stream, expected, mode).await
    }

    async fn truncate_stream(&self, stream: &StreamId, before: Version) -> Result<()> {
        self.inner.truncate_stream(stream, before).await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo> {
        self.inner.stream_info(stream).await
    }

    async fn scavenge_chunk(&self, from: Position, max: usize) -> Result<ScavengeChunk> {
        self.inner.scavenge_chunk(from, max).await
    }

    async fn scavenge_stream(&self, stream: &StreamId) -> Result<u64> {
        self.inner.scavenge_stream(stream).await
    }

    fn watch_head(&self) -> HeadWatch {
        self.inner.watch_head()
    }

    fn blocking_log_reads(&self) -> Option<Arc<dyn BlockingLogReads>> {
        Some(Arc::clone(&self.reads) as Arc<dyn BlockingLogReads>)
    }
}
