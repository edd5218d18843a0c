//! A replay of the whole log with every payload decoded into the user's type, beside the same work
//! done by hand on raw sled on one thread.
//!
//! | group | what |
//! | --- | --- |
//! | `replay_decoded_1m` | `replay` of 1,000,000 events into a projection that decodes each payload (`payload_as`) into a small serde struct: `annals_replay` as it runs; `annals_replay_inline_reads`, the same replay through a wrapper store that hides the sled store's blocking log reads, so every page is read and decoded on the consumer's thread (the paging path before read-ahead); `annals_replay_through_upcasting`, the same replay through an `Upcasting` wrapper whose one upcaster matches none of the events (each is looked up and passes unchanged), which reads ahead through the wrapper; `annals_projector_in_memory` (and `_inline_reads`), the same projection run by a `Projector::in_memory` until it has caught up; `raw_sled_decode_one_thread`, raw sled iterating the same directory's log records, checking and decoding every envelope by hand and decoding every payload into the same struct, on one thread |
//!
//! The fixture is 10,000 streams of 100 events with the 200-byte JSON payload of
//! `support::payload`, appended 10 streams per `append_multi` under `Durability::Buffered`, then
//! reopened with `Fsync` and the default 64 MiB sled cache (`ANNALS_BENCH_CACHE_MB` changes it). It is
//! built fresh in every run. Only ratios of the same run count.
//!
//! ```text
//! cargo bench --bench replay
//! cargo bench --bench replay 2>&1 | grep -E '^[a-z_0-9]+/|time:|thrpt:|^fixture'
//! ```
#![allow(clippy::print_stderr, missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::cell::{OnceCell, RefCell};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use annals::{
    replay, AppendResult, Checkpoint, CheckpointWrite, DeleteMode, Direction, Durability, EventStore, ExpectedVersion,
    HandlerError, HeadWatch, LogChunk, LogFilter, NewEvent, Phase, Position, Projection, Projector, RecordedEvent,
    Result, ScavengeChunk, SledConfig, SledStore, Snapshot, Start, StreamAppend, StreamId, StreamInfo, StreamView,
    Until, Upcasters, Upcasting, Version,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use support::{cache, decode_record, multi_thread_runtime, payload, scratch_dir};
use tempfile::TempDir;
use tokio::runtime::Runtime;

const STREAMS: u64 = 10_000;
const EVENTS_PER_STREAM: u64 = 100;
const EVENTS: u64 = STREAMS * EVENTS_PER_STREAM;
const STREAMS_PER_APPEND: u64 = 10;

/// The user's type: the payload's first four fields (the long `note` is skipped).
#[derive(serde::Deserialize)]
struct Order {
    order: String,
    customer: String,
    total: u64,
    currency: String,
}

/// Decodes every payload into an [`Order`] and sums what it read.
#[derive(Default)]
struct Totals {
    events: u64,
    total: u64,
    bytes: usize,
}

impl Totals {
    fn add(&mut self, order: &Order) {
        self.events += 1;
        self.total += order.total;
        self.bytes += order.order.len() + order.customer.len() + order.currency.len();
    }

    fn check(&self) {
        assert_eq!((self.events, self.total), (EVENTS, EVENTS * 1250));
        assert_eq!(self.bytes as u64, EVENTS * (12 + 11 + 3));
    }
}

#[async_trait]
impl Projection for Totals {
    fn name(&self) -> &str {
        "totals"
    }

    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        let order: Order = event.payload_as()?;
        self.add(black_box(&order));
        Ok(())
    }
}

/// The sled store behind a wrapper that forwards every required method and nothing else: a store
/// that does not offer blocking log reads, so its pages are read on the consumer's thread.
struct Inline(SledStore);

#[async_trait]
impl EventStore for Inline {
    async fn append_multi(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.0.append_multi(appends).await
    }

    async fn read_stream_chunk(
        &self,
        stream: &StreamId,
        from: Version,
        direction: Direction,
        max: usize,
        view: StreamView,
    ) -> Result<Vec<RecordedEvent>> {
        self.0.read_stream_chunk(stream, from, direction, max, view).await
    }

    async fn read_log_chunk(&self, from: Position, max: usize, filter: &LogFilter) -> Result<LogChunk> {
        self.0.read_log_chunk(from, max, filter).await
    }

    async fn head(&self) -> Result<Position> {
        self.0.head().await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>> {
        self.0.stream_version(stream).await
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<(StreamId, Version)>> {
        self.0.list_streams(prefix).await
    }

    async fn seek_recorded(&self, at: DateTime<Utc>) -> Result<Option<Position>> {
        self.0.seek_recorded(at).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.0.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &StreamId, at: Version) -> Result<Option<Snapshot>> {
        self.0.load_snapshot(stream, at).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        self.0.load_checkpoint(name).await
    }

    async fn save_checkpoints(&self, writes: Vec<CheckpointWrite>) -> Result<()> {
        self.0.save_checkpoints(writes).await
    }

    async fn list_checkpoints(&self, prefix: &str) -> Result<Vec<Checkpoint>> {
        self.0.list_checkpoints(prefix).await
    }

    async fn restore(&self, events: Vec<RecordedEvent>) -> Result<()> {
        self.0.restore(events).await
    }

    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion, mode: DeleteMode) -> Result<()> {
        self.0.delete_stream(stream, expected, mode).await
    }

    async fn truncate_stream(&self, stream: &StreamId, before: Version) -> Result<()> {
        self.0.truncate_stream(stream, before).await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo> {
        self.0.stream_info(stream).await
    }

    async fn scavenge_chunk(&self, from: Position, max: usize) -> Result<ScavengeChunk> {
        self.0.scavenge_chunk(from, max).await
    }

    async fn scavenge_stream(&self, stream: &StreamId) -> Result<u64> {
        self.0.scavenge_stream(stream).await
    }

    fn watch_head(&self) -> HeadWatch {
        self.0.watch_head()
    }
}

fn open_store(path: &Path, durability: Durability) -> SledStore {
    SledConfig::new(path).durability(durability).cache_capacity(cache()).open().unwrap()
}

/// What has the fixture's directory open: the store, raw sled, or nothing (sled locks it).
enum Opened {
    Closed,
    Store(SledStore),
    Raw(sled::Db),
}

struct Fixture {
    opened: RefCell<Opened>,
    runtime: Runtime,
    path: PathBuf,
    _dir: TempDir,
}

impl Fixture {
    fn build() -> Self {
        let dir = scratch_dir();
        let path = dir.path().join("annals");
        let runtime = multi_thread_runtime();
        let payload = payload();
        let started = Instant::now();
        {
            let store = open_store(&path, Durability::Buffered);
            runtime.block_on(async {
                for first in (0..STREAMS).step_by(STREAMS_PER_APPEND as usize) {
                    let appends = (first..first + STREAMS_PER_APPEND)
                        .map(|s| {
                            let stream = StreamId::new(format!("order-{s}")).unwrap();
                            let events = (0..EVENTS_PER_STREAM)
                                .map(|_| NewEvent::raw("OrderPlaced", payload.as_str()))
                                .collect();
                            StreamAppend::new(stream, ExpectedVersion::NoStream, events)
                        })
                        .collect();
                    store.append_multi(appends).await.unwrap();
                }
            });
        }
        eprintln!("fixture: {EVENTS} events built in {:.1?}", started.elapsed());
        Fixture { opened: RefCell::new(Opened::Closed), runtime, path, _dir: dir }
    }

    fn store(&self) -> SledStore {
        let mut opened = self.opened.borrow_mut();
        if let Opened::Store(store) = &*opened {
            return store.clone();
        }
        *opened = Opened::Closed;
        let store = open_store(&self.path, Durability::Fsync);
        *opened = Opened::Store(store.clone());
        store
    }

    fn raw_log(&self) -> sled::Tree {
        let mut opened = self.opened.borrow_mut();
        if let Opened::Raw(db) = &*opened {
            return db.open_tree("annals").unwrap();
        }
        *opened = Opened::Closed;
        let config = sled::Config::new().path(&self.path).cache_capacity(cache());
        // sled lets go of its lock a little after the last handle is dropped.
        let started = Instant::now();
        let db = loop {
            match config.open() {
                Err(_) if started.elapsed() < Duration::from_secs(2) => std::thread::sleep(Duration::from_millis(10)),
                opened => break opened.unwrap(),
            }
        };
        let tree = db.open_tree("annals").unwrap();
        *opened = Opened::Raw(db);
        tree
    }

    fn replay<S: EventStore>(&self, store: &S) {
        let totals = self.runtime.block_on(replay(store, Totals::default(), Start::Beginning, Until::default()));
        totals.unwrap().check();
    }

    /// Runs a `Projector::in_memory` of `Totals` until it has caught up, and stops it.
    fn project<S: EventStore + 'static>(&self, store: S) {
        self.runtime.block_on(async {
            let projector = Projector::in_memory(store, Totals::default).run().await.unwrap();
            assert_eq!(projector.caught_up().await.unwrap(), Position::new(EVENTS));
            projector.read().await.unwrap().check();
            projector.stop().await.unwrap();
        });
    }
}

fn replays(c: &mut Criterion) {
    let cell = OnceCell::new();
    let fixture = || cell.get_or_init(Fixture::build);
    let mut group = c.benchmark_group("replay_decoded_1m");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(EVENTS));
    group.bench_function("annals_replay", |b| {
        let f = fixture();
        let store = f.store();
        b.iter(|| f.replay(&store));
    });
    group.bench_function("annals_replay_inline_reads", |b| {
        let f = fixture();
        let store = Inline(f.store());
        b.iter(|| f.replay(&store));
    });
    group.bench_function("annals_replay_through_upcasting", |b| {
        let f = fixture();
        // An upcaster for a type the log does not hold: every event is looked up and passes as it is.
        let store = Upcasting::new(f.store(), Upcasters::new().rename("OrderCancelled", 1, "OrderWithdrawn", 1));
        b.iter(|| f.replay(&store));
    });
    group.bench_function("annals_projector_in_memory", |b| {
        let f = fixture();
        let store = f.store();
        b.iter(|| f.project(store.clone()));
    });
    group.bench_function("annals_projector_in_memory_inline_reads", |b| {
        let f = fixture();
        let store = f.store();
        b.iter(|| f.project(Inline(store.clone())));
    });
    group.bench_function("raw_sled_decode_one_thread", |b| {
        let f = fixture();
        let log = f.raw_log();
        b.iter(|| {
            let mut totals = Totals::default();
            for entry in log.scan_prefix([b'L']) {
                let (key, value) = entry.unwrap();
                decode_record(&key, &value, |event| {
                    let order: Order = serde_json::from_str(&black_box(event).payload).unwrap();
                    totals.add(black_box(&order));
                });
            }
            totals.check();
        });
    });
    group.finish();
}

criterion_group!(benches, replays);
criterion_main!(benches);
