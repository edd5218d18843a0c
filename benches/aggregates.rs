//! Aggregate command throughput and load time, on the sled store with `Durability::Fsync`.
//!
//! - `hot_aggregate`: one sequential caller runs load + handle + durable append on one aggregate
//!   that already has 10,000 events, with snapshots every 100; with and without the repository cache.
//!   Beside it, in the same run, "a bare loop of one durable append each" (issue 16), three ways:
//!   `annals_store_append_one` (`SledStore::append` of one event per call, `Fsync`, on the same store,
//!   no aggregate), `raw_sled_packed_record_flush_fsync` (the packed layout of `support/packed.rs`: one
//!   record + one stream-index key, flush, fdatasync per command) and `raw_sled_insert_flush_fsync`
//!   (one key + flush + fdatasync: the floor of a durable write).
//! - `load_time`: loading an aggregate with 1k, 10k and 100k events of history and snapshots every 100:
//!   the time must not grow with the history.
//! - `many_aggregates`: 16 concurrent callers over 10,000 aggregates, durable.
//!
//! Run with `cargo bench --bench aggregates` (one group: `cargo bench --bench aggregates --
//! hot_aggregate`); figures go to `docs/PERFORMANCE.md`.

#![allow(missing_docs, clippy::print_stderr, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::{
    Aggregate, CommandContext, Event, EventStore, ExpectedVersion, Repository, SledConfig, SledStore, Snapshot,
    SnapshotPolicy, Version,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use support::packed::{Packed, PackedEvent};

#[derive(Event, Clone, Debug, PartialEq)]
enum MeterEvent {
    Recorded { reading: u64, note: String },
}

#[derive(Debug, thiserror::Error)]
enum MeterError {
    #[error("the meter cannot show its maximum")]
    Overflow,
}

#[derive(Aggregate, Clone, Debug, Default, Serialize, Deserialize)]
#[aggregate(command = u64, event = MeterEvent, error = MeterError)]
struct Meter {
    last: u64,
    count: u64,
}

impl Meter {
    fn handle(&self, reading: u64) -> Result<Vec<MeterEvent>, MeterError> {
        if reading == u64::MAX {
            return Err(MeterError::Overflow);
        }
        Ok(vec![MeterEvent::Recorded { reading, note: "x".repeat(160) }])
    }

    fn apply(&mut self, event: &MeterEvent) {
        let MeterEvent::Recorded { reading, .. } = event;
        self.last = *reading;
        self.count += 1;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// Writes `events` events (a multiple of 100) to `meter-<id>` in batches of 100, with a snapshot after
/// each batch, then `tail` more events without one (what a load has to replay).
async fn build_history(store: &SledStore, id: &str, events: u64, tail: u64) {
    let stream = Meter::stream_id(id).unwrap();
    let mut state = Meter::default();
    let mut version = 0;
    while version < events {
        let batch: Vec<_> =
            (0..100).map(|i| MeterEvent::Recorded { reading: version + i, note: "x".repeat(160) }).collect();
        let new = batch.iter().map(|e| e.to_new_event().unwrap()).collect();
        store.append(&stream, ExpectedVersion::Exact(Version::new(version)), new).await.unwrap();
        for event in &batch {
            state.apply(event);
        }
        version += 100;
        let snapshot = Snapshot::new(stream.clone(), Version::new(version), 1, serde_json::to_string(&state).unwrap());
        store.save_snapshot(snapshot).await.unwrap();
    }
    let tail: Vec<_> = (0..tail)
        .map(|i| MeterEvent::Recorded { reading: version + i, note: "x".repeat(160) }.to_new_event().unwrap())
        .collect();
    if !tail.is_empty() {
        store.append(&stream, ExpectedVersion::Exact(Version::new(version)), tail).await.unwrap();
    }
}

fn hot_aggregate(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(async {
        let store = SledStore::open(dir.path()).unwrap();
        build_history(&store, "hot", 10_000, 0).await;
        store
    });
    let plain = Repository::<Meter, _>::new(store.clone()).with_snapshots(SnapshotPolicy::every(100));
    let cached = Repository::<Meter, _>::new(store.clone()).with_snapshots(SnapshotPolicy::every(100)).with_cache(16);
    let context = CommandContext::new();
    let mut group = c.benchmark_group("hot_aggregate");
    group.throughput(Throughput::Elements(1)).sample_size(20).measurement_time(Duration::from_secs(8));
    let mut reading = 1_000_000;
    group.bench_function("annals_load_handle_append", |b| {
        b.to_async(&rt).iter(|| {
            reading += 1;
            let plain = &plain;
            let context = &context;
            async move { plain.execute("hot", reading, context).await.unwrap() }
        })
    });
    group.bench_function("annals_cached_handle_append", |b| {
        b.to_async(&rt).iter(|| {
            reading += 1;
            let cached = &cached;
            let context = &context;
            async move { cached.execute("hot", reading, context).await.unwrap() }
        })
    });
    // The bare loops: one durable append per call, no aggregate, first through the store.
    let bare = Meter::stream_id("bare").unwrap();
    group.bench_function("annals_store_append_one", |b| {
        b.to_async(&rt).iter(|| {
            reading += 1;
            let (store, bare) = (&store, &bare);
            let event = MeterEvent::Recorded { reading, note: "x".repeat(160) }.to_new_event().unwrap();
            async move { store.append(bare, ExpectedVersion::Any, vec![event]).await.unwrap() }
        })
    });
    drop((plain, cached, store));
    // The packed layout, one event per group: one record and one stream-index key, flush, fdatasync.
    let packed_dir = tempfile::tempdir().unwrap();
    let mut packed = Packed::open(packed_dir.path());
    let event = MeterEvent::Recorded { reading: 1_000_000, note: "x".repeat(160) };
    let (event_type, payload) = (event.event_type(), event.to_new_event().unwrap().payload().to_owned());
    group.bench_function("raw_sled_packed_record_flush_fsync", |b| {
        b.iter(|| packed.commit(&[PackedEvent::new("meter-bare", event_type, &payload)]))
    });
    packed.report("hot_aggregate/raw_sled_packed_record_flush_fsync");
    drop(packed);
    let raw_dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(raw_dir.path()).open().unwrap();
    let data = std::fs::File::options().read(true).write(true).open(raw_dir.path().join("db")).unwrap();
    let value = vec![b'x'; 200];
    let mut key = 0u64;
    group.bench_function("raw_sled_insert_flush_fsync", |b| {
        b.iter(|| {
            key += 1;
            db.insert(key.to_be_bytes(), value.as_slice()).unwrap();
            db.flush().unwrap();
            data.sync_data().unwrap();
        })
    });
    group.finish();
}

fn load_time(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = SledConfig::new(dir.path()).durability(annals::Durability::Buffered).open().unwrap();
    let sizes = [1_000u64, 10_000, 100_000];
    rt.block_on(async {
        for size in sizes {
            build_history(&store, &format!("m{size}"), size, 50).await;
        }
    });
    let repository = Repository::<Meter, _>::new(store.clone()).with_snapshots(SnapshotPolicy::every(100));
    let mut group = c.benchmark_group("load_time");
    group.sample_size(30);
    for size in sizes {
        let id = format!("m{size}");
        group.bench_with_input(BenchmarkId::from_parameter(size), &id, |b, id| {
            b.to_async(&rt).iter(|| async {
                let loaded = repository.load(id).await.unwrap();
                assert_eq!(loaded.version.get(), size + 50, "snapshot at {size}, 50 events replayed");
                loaded
            })
        });
    }
    group.finish();
}

fn many_aggregates(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let repository = Arc::new(
        Repository::<Meter, _>::new(store.clone()).with_snapshots(SnapshotPolicy::every(100)).with_cache(20_000),
    );
    const CALLERS: u64 = 16;
    const AGGREGATES: u64 = 10_000;
    let mut group = c.benchmark_group("many_aggregates");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(CALLERS * 100));
    let mut round = 0u64;
    group.bench_function("annals_16_callers_10k_aggregates", |b| {
        b.to_async(&rt).iter_custom(|iterations| {
            round += 1;
            let repository = Arc::clone(&repository);
            let this_round = round;
            async move {
                let started = Instant::now();
                for iteration in 0..iterations {
                    let mut tasks = Vec::new();
                    for caller in 0..CALLERS {
                        let repository = Arc::clone(&repository);
                        tasks.push(tokio::spawn(async move {
                            for i in 0..100u64 {
                                let id = (caller * 7919 + i * 131 + iteration * 17 + this_round * 3) % AGGREGATES;
                                let reading = (this_round * 1_000_000 + iteration * 1000 + i) * 100;
                                repository.execute(&id.to_string(), reading, &CommandContext::new()).await.unwrap();
                            }
                        }));
                    }
                    for task in tasks {
                        task.await.unwrap();
                    }
                }
                started.elapsed()
            }
        })
    });
    group.finish();
}

criterion_group!(benches, hot_aggregate, load_time, many_aggregates);
criterion_main!(benches);
