//! Benchmarks of the sled event store, each measured beside a raw-sled baseline doing the same work in
//! the same run, so that the ratio means something on a noisy machine. Every event carries a 200-byte
//! JSON payload; throughput is reported in events per second.
//!
//! | group | what |
//! | --- | --- |
//! | `append_fsync_64_appenders` | 64 tokio tasks appending one event each (1000 streams), `Fsync` |
//! | `append_fsync_batch_100` | one caller appending 100 events at a time to one stream, `Fsync` |
//! | `scan_log_1m` | reading (and decoding) the whole 1,001,000-event log; two variants show where the time goes; the baseline is raw sled reading a copy of the same record bytes, checking and decoding them by hand, and `raw_sled_iter` is sled alone (one value per event, nothing checked or decoded) |
//! | `read_stream_1000` | reading a 1000-event stream, written in batches or one event at a time |
//! | `seek_recorded_1m` | finding the first position recorded at or after a time in the middle |
//!
//! The 1M-event fixture is built once (about 30 s) and shared by the read benchmarks. Diagnostics
//! (commit group sizes, where a baseline commit spends its time, fixture build and reopen times) go to
//! stderr. The whole run takes 3 to 5 minutes on 2 cores. Figures, and the machine they were measured
//! on, are in `docs/PERFORMANCE.md`.
//!
//! ```text
//! cargo bench --bench store
//! cargo bench --bench store -- read_stream   # one group only (a criterion filter)
//! ANNALS_BENCH_CACHE_MB=1024 cargo bench --bench store -- scan_log_1m   # with a 1 GiB sled cache
//! ```
#![allow(clippy::print_stderr, missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::cell::OnceCell;
use std::collections::HashMap;
use std::fs::File;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{cache, decode_record, multi_thread_runtime, payload, scratch_dir, PAYLOAD_LEN};

use annals::{
    Durability, EventStore, ExpectedVersion, LogFilter, NewEvent, Position, ReadLog, ReadStream, SledConfig, SledStore,
    StreamId,
};
use chrono::{DateTime, Utc};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput};
use futures_util::TryStreamExt;
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;
use tempfile::TempDir;
use tokio::runtime::Runtime;

const EVENT_TYPE: &str = "OrderPlaced";
/// Concurrent appenders in the group-commit benchmark.
const APPENDERS: u64 = 64;
/// Streams the concurrent appenders spread their events over.
const STREAMS: u64 = 1000;
/// Events per append in the batched benchmark.
const BATCH: u64 = 100;
/// splitmix64: a cheap, deterministic spread of appenders over streams.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn stream_ids(prefix: &str, count: u64) -> Vec<StreamId> {
    (0..count).map(|i| StreamId::new(format!("{prefix}-{i}")).unwrap()).collect()
}

fn current_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn open_store(path: &Path, durability: Durability) -> SledStore {
    SledConfig::new(path).durability(durability).cache_capacity(cache()).open().unwrap()
}

// ---------------------------------------------------------------------------------------------------
// Raw sled: the naive layout the store is compared with.
// ---------------------------------------------------------------------------------------------------

/// `L` + position (u64 big-endian), the key of one event in the naive layout.
fn raw_log_key(position: u64) -> [u8; 9] {
    let mut key = [b'L'; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

/// `S` + stream + `0x00` + version (u64 big-endian), one index key per event in the naive layout.
fn raw_index_key(stream: &str, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 10);
    key.push(b'S');
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn raw_index_prefix(stream: &str) -> Vec<u8> {
    let mut key = raw_index_key(stream, 0);
    key.truncate(key.len() - 8);
    key
}

/// A raw sled database written the naive way: one key per event in the log, one key per event in the
/// stream index, made durable with `flush` + `fdatasync` of `<dir>/db` per commit.
struct RawSled {
    db: sled::Db,
    log: sled::Tree,
    index: sled::Tree,
    data: File,
    next_position: u64,
    versions: HashMap<String, u64>,
    /// Time spent writing (transaction or batch), in `flush` and in `fdatasync`, over `commits`.
    spent: [Duration; 3],
    commits: u32,
}

impl RawSled {
    fn open(path: &Path) -> Self {
        let db = sled::Config::new().path(path).cache_capacity(cache()).open().unwrap();
        let log = db.open_tree("log").unwrap();
        let index = db.open_tree("index").unwrap();
        let data = File::options().read(true).write(true).open(path.join("db")).unwrap();
        RawSled {
            db,
            log,
            index,
            data,
            next_position: 1,
            versions: HashMap::new(),
            spent: [Duration::ZERO; 3],
            commits: 0,
        }
    }

    /// Prints where the time of an average commit went: the cost model behind the figures.
    fn report(&self, what: &str) {
        let n = self.commits;
        if n == 0 {
            return;
        }
        let [write, flush, sync] = self.spent.map(|d| d / n);
        eprintln!("{what}: per commit (avg of {n}): write {write:.1?}, flush {flush:.1?}, fdatasync {sync:.1?}");
    }

    /// Assigns the next position and the stream's next version.
    fn plan(&mut self, stream: &str) -> ([u8; 9], Vec<u8>, [u8; 8]) {
        let position = self.next_position;
        self.next_position += 1;
        let version = self.versions.entry(stream.to_owned()).or_default();
        *version += 1;
        (raw_log_key(position), raw_index_key(stream, *version), position.to_be_bytes())
    }

    /// Flush + fsync, after a write that started at `started`.
    fn sync(&mut self, started: Instant) {
        let written = Instant::now();
        self.db.flush().unwrap();
        let flushed = Instant::now();
        self.data.sync_data().unwrap();
        self.spent[0] += written - started;
        self.spent[1] += flushed - written;
        self.spent[2] += flushed.elapsed();
        self.commits += 1;
    }

    /// One multi-tree transaction holding a log key and an index key per event, then flush + fsync.
    fn commit_transaction(&mut self, streams: &[&str], payload: &[u8]) {
        let writes: Vec<_> = streams.iter().map(|s| self.plan(s)).collect();
        let started = Instant::now();
        (&self.log, &self.index)
            .transaction(|(log, index)| {
                for (log_key, index_key, position) in &writes {
                    log.insert(&log_key[..], payload)?;
                    index.insert(index_key.as_slice(), &position[..])?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .unwrap();
        self.sync(started);
    }

    /// One `apply_batch` holding a log key and an index key per event (both in the log tree, as
    /// prefixes: a batch covers one tree), then flush + fsync.
    fn commit_batch(&mut self, stream: &str, count: u64, payload: &[u8]) {
        let started = Instant::now();
        let mut batch = sled::Batch::default();
        for _ in 0..count {
            let (log_key, index_key, position) = self.plan(stream);
            batch.insert(&log_key[..], payload);
            batch.insert(index_key, &position[..]);
        }
        self.log.apply_batch(batch).unwrap();
        self.sync(started);
    }
}

/// Prints how many events the writer committed per group on average (`recorded_at` is set per group):
/// the group size decides how many flush + fsync rounds an event pays for.
fn report_groups(runtime: &Runtime, store: &SledStore, what: &str) {
    let (events, groups) = runtime.block_on(async {
        let mut log = store.read_log(ReadLog::from_start());
        let (mut events, mut groups, mut last) = (0u64, 0u64, None);
        while let Some(event) = log.try_next().await.unwrap() {
            events += 1;
            if last != Some(event.recorded_at) {
                groups += 1;
                last = Some(event.recorded_at);
            }
        }
        (events, groups)
    });
    eprintln!(
        "{what}: {events} events in {groups} commit groups ({:.1} events per group)",
        events as f64 / groups as f64
    );
}

// ---------------------------------------------------------------------------------------------------
// 1. Durable appends, 64 concurrent appenders, one event each.
// ---------------------------------------------------------------------------------------------------

fn write_group<'a>(c: &'a mut Criterion, name: &str, events_per_iter: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(events_per_iter));
    group
}

fn concurrent_appends(c: &mut Criterion) {
    let runtime = multi_thread_runtime();
    let payload = payload();
    let streams = Arc::new(stream_ids("order", STREAMS));
    let mut group = write_group(c, "append_fsync_64_appenders", APPENDERS);

    let dir = scratch_dir();
    let store = open_store(&dir.path().join("annals"), Durability::Fsync);
    // One iteration is one event per appender; `iters` iterations are 64 tasks appending `iters`
    // events each, all at once, so the writer always has a queue to group.
    group.bench_function("annals", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (store, streams, payload) = (store.clone(), Arc::clone(&streams), payload.clone());
            async move {
                let start = Instant::now();
                let tasks: Vec<_> = (0..APPENDERS)
                    .map(|task| {
                        let (store, streams, payload) = (store.clone(), Arc::clone(&streams), payload.clone());
                        tokio::spawn(async move {
                            for i in 0..iters {
                                let stream = &streams[(mix((task << 40) ^ i) % STREAMS) as usize];
                                let event = NewEvent::raw(EVENT_TYPE, payload.as_str());
                                store.append(stream, ExpectedVersion::Any, vec![event]).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                start.elapsed()
            }
        });
    });
    report_groups(&runtime, &store, "append_fsync_64_appenders/annals");
    drop(store);

    let mut raw = RawSled::open(&dir.path().join("raw"));
    let mut counter = 0u64;
    group.bench_function("raw_sled_txn_per_64", |b| {
        b.iter(|| {
            let names: Vec<&str> = (0..APPENDERS)
                .map(|_| {
                    counter += 1;
                    streams[(mix(counter) % STREAMS) as usize].as_str()
                })
                .collect();
            raw.commit_transaction(&names, payload.as_bytes());
        });
    });
    raw.report("append_fsync_64_appenders/raw_sled_txn_per_64");
    group.finish();
}

// ---------------------------------------------------------------------------------------------------
// 2. Durable batched appends: 100 events per append, one stream, one caller.
// ---------------------------------------------------------------------------------------------------

fn batched_appends(c: &mut Criterion) {
    let runtime = current_thread_runtime();
    let payload = payload();
    let stream = StreamId::new("order-1").unwrap();
    let mut group = write_group(c, "append_fsync_batch_100", BATCH);

    let dir = scratch_dir();
    let store = open_store(&dir.path().join("annals"), Durability::Fsync);
    let mut expected = ExpectedVersion::NoStream;
    group.bench_function("annals", |b| {
        b.iter(|| {
            let events = (0..BATCH).map(|_| NewEvent::raw(EVENT_TYPE, payload.as_str())).collect();
            let result = runtime.block_on(store.append(&stream, expected, events)).unwrap();
            expected = ExpectedVersion::Exact(result.version);
        });
    });
    drop(store);

    let mut raw = RawSled::open(&dir.path().join("raw"));
    group.bench_function("raw_sled_batch", |b| {
        b.iter(|| raw.commit_batch(stream.as_str(), BATCH, payload.as_bytes()));
    });
    raw.report("append_fsync_batch_100/raw_sled_batch");
    group.finish();
}

// ---------------------------------------------------------------------------------------------------
// 3-5. Reads over a 1,001,000-event log.
// ---------------------------------------------------------------------------------------------------

/// Rounds of the fixture: each appends one event to the interleaved stream, then 10 batches of 100.
const ROUNDS: u64 = 1000;
const BATCHES_PER_ROUND: u64 = 10;
/// Streams of the batched appends: each gets 10 batches of 100 events, spread over the log.
const BULK_STREAMS: u64 = 1000;
/// Events in one stream read.
const STREAM_LEN: u64 = 1000;

/// The store and its raw-sled twin, built once for all read benchmarks.
struct Fixture {
    runtime: Runtime,
    store: SledStore,
    /// The naive layout: one key per event (and per-event index keys for the two streams read back).
    raw: sled::Tree,
    /// The store's log records, copied byte for byte (same keys, same values).
    records: sled::Tree,
    _raw_db: sled::Db,
    events: u64,
    /// 1000 events written as 10 appends of 100.
    batched: StreamId,
    /// 1000 events written one per append, between the batches of other streams.
    interleaved: StreamId,
    /// The `recorded_at` of the event in the middle of the log.
    middle: DateTime<Utc>,
    _dir: TempDir,
}

/// Copies the log records (`L` keys of the `annals` tree) of the closed store at `path` into `into`,
/// through raw sled.
fn copy_log_records(path: &Path, into: &sled::Tree) {
    let config = sled::Config::new().path(path).cache_capacity(cache());
    // sled lets go of its lock a little after the last handle is dropped.
    let started = Instant::now();
    let db = loop {
        match config.open() {
            Err(_) if started.elapsed() < Duration::from_secs(2) => std::thread::sleep(Duration::from_millis(10)),
            opened => break opened.unwrap(),
        }
    };
    let mut batch = sled::Batch::default();
    for (n, entry) in db.open_tree("annals").unwrap().scan_prefix([b'L']).enumerate() {
        let (key, value) = entry.unwrap();
        batch.insert(key, value);
        if n % 1000 == 999 {
            into.apply_batch(std::mem::take(&mut batch)).unwrap();
        }
    }
    into.apply_batch(batch).unwrap();
}

impl Fixture {
    fn build() -> Self {
        let dir = scratch_dir();
        let runtime = current_thread_runtime();
        let path = dir.path().join("annals");
        let bulk = stream_ids("order", BULK_STREAMS);
        let interleaved = StreamId::new("interleaved-0").unwrap();
        let payload = payload();
        let event = || NewEvent::raw(EVENT_TYPE, payload.as_str());

        let started = Instant::now();
        {
            let store = open_store(&path, Durability::Buffered);
            runtime.block_on(async {
                for round in 0..ROUNDS {
                    store.append(&interleaved, ExpectedVersion::Any, vec![event()]).await.unwrap();
                    for batch in 0..BATCHES_PER_ROUND {
                        let stream = &bulk[((round * BATCHES_PER_ROUND + batch) % BULK_STREAMS) as usize];
                        let events = (0..BATCH).map(|_| event()).collect();
                        store.append(stream, ExpectedVersion::Any, events).await.unwrap();
                    }
                }
            });
        }
        let events = ROUNDS * (1 + BATCHES_PER_ROUND * BATCH);
        eprintln!("fixture: {events} events in {} appends (Buffered) in {:.1?}", ROUNDS * 11, started.elapsed());

        // The raw twin's copy of the store's log records, byte for byte, for the scan's baseline.
        let raw_db = sled::Config::new().path(dir.path().join("raw")).cache_capacity(cache()).open().unwrap();
        let records = raw_db.open_tree("records").unwrap();
        let started = Instant::now();
        copy_log_records(&path, &records);
        eprintln!("fixture: {} log records copied to the raw twin in {:.1?}", records.len(), started.elapsed());

        let started = Instant::now();
        let store = open_store(&path, Durability::Fsync);
        eprintln!("fixture: reopening the {events}-event store took {:.1?}", started.elapsed());
        assert_eq!(runtime.block_on(store.head()).unwrap(), Position::new(events));

        // The raw twin: the same log, one key per event, each value 200 bytes starting with the event's
        // recorded_at (microseconds, big-endian) so a binary search can seek it; per-event index keys
        // for the two streams that are read back.
        let started = Instant::now();
        let raw = raw_db.open_tree("raw").unwrap();
        let mut middle = None;
        runtime.block_on(async {
            let mut log = store.read_log(ReadLog::from_start());
            let mut batch = sled::Batch::default();
            while let Some(event) = log.try_next().await.unwrap() {
                let position = event.position.get();
                let mut value = event.recorded_at.timestamp_micros().to_be_bytes().to_vec();
                value.extend_from_slice(&event.payload.as_bytes()[..PAYLOAD_LEN - 8]);
                batch.insert(&raw_log_key(position)[..], value);
                if event.stream == interleaved || event.stream == bulk[0] {
                    batch.insert(raw_index_key(event.stream.as_str(), event.version.get()), &position.to_be_bytes());
                }
                if position == events / 2 {
                    middle = Some(event.recorded_at);
                }
                if position % 1000 == 0 {
                    raw.apply_batch(std::mem::take(&mut batch)).unwrap();
                }
            }
            raw.apply_batch(batch).unwrap();
        });
        raw_db.flush().unwrap();
        eprintln!(
            "fixture: raw-sled twin ({events} per-event log keys + {} index keys) in {:.1?}",
            2 * STREAM_LEN,
            started.elapsed()
        );
        eprintln!(
            "fixture: disk use {} MiB (store) / {} MiB (raw sled)",
            store.size_on_disk().unwrap() >> 20,
            raw_db.size_on_disk().unwrap() >> 20
        );

        let batched = bulk[0].clone();
        for stream in [&batched, &interleaved] {
            let version = runtime.block_on(store.stream_version(stream)).unwrap();
            assert_eq!(version.map(|v| v.get()), Some(STREAM_LEN));
        }
        Fixture {
            runtime,
            store,
            raw,
            records,
            _raw_db: raw_db,
            events,
            batched,
            interleaved,
            middle: middle.unwrap(),
            _dir: dir,
        }
    }

    async fn count_stream(&self, stream: &StreamId) -> u64 {
        let events = self.store.read_stream(stream, ReadStream::forward());
        events
            .try_fold(0, |n, event| async move { Ok(n + u64::from(!black_box(event).payload.is_empty())) })
            .await
            .unwrap()
    }

    fn raw_count_stream(&self, stream: &StreamId) -> u64 {
        let mut count = 0;
        for entry in self.raw.scan_prefix(raw_index_prefix(stream.as_str())) {
            let (_, position) = entry.unwrap();
            let value = self.raw.get([&[b'L'][..], &position].concat()).unwrap().unwrap();
            count += u64::from(black_box(value).len() == PAYLOAD_LEN);
        }
        count
    }

    /// The first position whose value starts at or after `at`, by binary search over per-event keys.
    fn raw_seek(&self, at: DateTime<Utc>) -> Option<u64> {
        let at = at.timestamp_micros();
        let (mut low, mut high) = (1, self.events + 1);
        while low < high {
            let middle = low + (high - low) / 2;
            let value = self.raw.get(raw_log_key(middle)).unwrap().unwrap();
            let recorded = i64::from_be_bytes(value[..8].try_into().unwrap());
            if recorded >= at {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        (low <= self.events).then_some(low)
    }
}

fn read_group<'a>(c: &'a mut Criterion, name: &str, events_per_iter: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(events_per_iter));
    group
}

fn reads(c: &mut Criterion) {
    // Built on first use, so that a filter that skips every read benchmark skips the build; dropped
    // (and its directory removed) at the end.
    let cell = OnceCell::new();
    let fixture = || cell.get_or_init(Fixture::build);

    let mut group = read_group(c, "read_stream_1000", STREAM_LEN);
    for (name, batched) in [("batched", true), ("interleaved", false)] {
        group.bench_function(format!("annals_{name}"), |b| {
            let f = fixture();
            let stream = if batched { &f.batched } else { &f.interleaved };
            b.iter(|| assert_eq!(f.runtime.block_on(f.count_stream(stream)), STREAM_LEN));
        });
        group.bench_function(format!("raw_sled_{name}"), |b| {
            let f = fixture();
            let stream = if batched { &f.batched } else { &f.interleaved };
            b.iter(|| assert_eq!(f.raw_count_stream(stream), STREAM_LEN));
        });
    }
    group.finish();

    let mut group = read_group(c, "seek_recorded_1m", 1);
    group.bench_function("annals", |b| {
        let f = fixture();
        let expected = f.runtime.block_on(f.store.seek_recorded(f.middle)).unwrap();
        assert_eq!(expected, f.raw_seek(f.middle).map(Position::new));
        b.iter(|| f.runtime.block_on(f.store.seek_recorded(black_box(f.middle))).unwrap());
    });
    group.bench_function("raw_sled_binary_search", |b| {
        let f = fixture();
        b.iter(|| f.raw_seek(black_box(f.middle)).unwrap());
    });
    group.finish();

    let events = ROUNDS * (1 + BATCHES_PER_ROUND * BATCH);
    let mut group = read_group(c, "scan_log_1m", events);
    group.sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(20));
    group.bench_function("annals_read_log", |b| {
        let f = fixture();
        b.iter(|| {
            let count = f.runtime.block_on(async {
                let log = f.store.read_log(ReadLog::from_start());
                log.try_fold(0, |n, event| async move { Ok(n + u64::from(!black_box(event).payload.is_empty())) })
                    .await
                    .unwrap()
            });
            assert_eq!(count, f.events);
        });
    });
    // Where the time of `annals_read_log` goes: the same pages fetched with `read_log_chunk` directly
    // (no lazy stream on top), and a filtered read that admits nothing (records fetched and
    // checksummed, stream and type peeked, no event decoded).
    group.bench_function("annals_read_log_chunk_loop", |b| {
        let f = fixture();
        b.iter(|| {
            let count = f.runtime.block_on(async {
                let (mut from, mut count) = (Position::FIRST, 0);
                loop {
                    let chunk = f.store.read_log_chunk(from, 512, &LogFilter::all()).await.unwrap();
                    count += chunk.events.iter().filter(|e| !black_box(e).payload.is_empty()).count() as u64;
                    if chunk.end {
                        break count;
                    }
                    from = chunk.next;
                }
            });
            assert_eq!(count, f.events);
        });
    });
    group.bench_function("annals_filter_admits_none", |b| {
        let f = fixture();
        // A stream-prefix filter: it reads and checks every record and decodes nothing (a type filter
        // would go through the event-type index and read nothing at all).
        let filter = LogFilter::all().stream_prefix("no-such-stream-");
        b.iter(|| {
            let count = f.runtime.block_on(async {
                let log = f.store.read_log(ReadLog::from_start().filter(filter.clone()));
                log.try_fold(0u64, |n, _| async move { Ok(n + 1) }).await.unwrap()
            });
            assert_eq!(count, 0);
        });
    });
    // The baseline: raw sled reading the store's own record bytes (a copy in the twin), checking
    // their CRCs and decoding every envelope field into owned values by hand.
    group.bench_function("raw_sled_records_check_decode", |b| {
        let f = fixture();
        b.iter(|| {
            let mut count = 0;
            for entry in f.records.scan_prefix([b'L']) {
                let (key, value) = entry.unwrap();
                decode_record(&key, &value, |event| count += u64::from(!black_box(event).payload.is_empty()));
            }
            assert_eq!(count, f.events);
        });
    });
    // Sled alone: one 200-byte value per event, iterated with no check and no decoding.
    group.bench_function("raw_sled_iter", |b| {
        let f = fixture();
        b.iter(|| {
            let mut count = 0;
            for entry in f.raw.scan_prefix([b'L']) {
                let (_, value) = entry.unwrap();
                count += u64::from(black_box(value).len() == PAYLOAD_LEN);
            }
            assert_eq!(count, f.events);
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = concurrent_appends, batched_appends, reads
}
criterion_main!(benches);
