//! Benchmarks of the sled event store, each measured beside raw-sled baselines doing the same work in
//! the same run, so that the ratio means something on a noisy machine. Every event carries a 200-byte
//! JSON payload; throughput is reported in events per second. Two raw-sled layouts serve as baselines
//! (issue 16): the naive one (one log key and one stream-index key per event) and the packed one
//! (`support/packed.rs`: one log record per commit group, one stream-index key per stream per group,
//! `flush` + `fdatasync` of `<path>/db` per group).
//!
//! | group | functions | what |
//! | --- | --- | --- |
//! | `append_fsync_64_appenders` | `annals`, `raw_sled_txn_per_64` (naive), `raw_sled_packed_group_writer` | 64 tokio tasks appending one event each (1000 streams), `Fsync`; the packed baseline is a writer thread committing whatever is queued as one group |
//! | `append_fsync_batch_100` | `annals`, `raw_sled_batch` (naive), `raw_sled_packed` | one caller appending 100 events at a time to one stream, `Fsync` |
//! | `disk_250k` | `annals`, `raw_sled_naive`, `raw_sled_packed` | disk used by 250,000 events written by 64 appenders (the naive layout: transactions of 64), after a clean close; the figure is the stderr line (with the bytes of keys and values by key kind), the timed part only walks the directory |
//! | `read_stream_1000` | `annals_batched`, `raw_sled_batched`, `annals_interleaved`, `raw_sled_interleaved` | reading a 1000-event stream, written in batches or one event at a time |
//! | `seek_recorded_1m` | `annals`, `raw_sled_binary_search` | finding the first position recorded at or after a time in the middle |
//! | `scan_log_1m` | `annals_read_log`, `annals_read_log_chunk_loop`, `annals_filter_admits_none`, `raw_sled_records_check_decode`, `raw_sled_iter` | reading (and decoding) the whole 1,001,000-event log with the cache of `ANNALS_BENCH_CACHE_MB` (default 64 MiB, the store's default); two variants show where the time goes; the baseline is raw sled reading a copy of the same record bytes, checking and decoding them by hand, and `raw_sled_iter` is sled alone (one value per event, nothing checked or decoded) |
//! | `replay_1m` | `annals_replay_payload_as`, `raw_sled_packed_scan_payload_as`, `raw_sled_records_check_decode_payload_as` | `annals::replay` of the whole log into a projection that decodes every payload into a user type, beside a scan of the packed twin and of a copy of the store's records decoding envelopes and payloads into the same type |
//! | `reopen_1m` | `annals_open_drop`, `raw_sled_packed_open_drop` | opening and dropping the closed 1,001,000-event store, and raw sled opening and dropping the packed twin; first, one open of each in a fresh process (this binary run again) prints its time and the resident memory it added |
//!
//! The 1M-event fixture is built once (about 30 s) and shared by the read benchmarks. Diagnostics
//! (commit group sizes, where a baseline commit spends its time, disk use, fixture build, reopen time
//! and resident memory) go to stderr. The whole run takes 5 to 8 minutes on 2 cores. Figures, and the
//! machine they were measured on, are in `docs/PERFORMANCE.md`.
//!
//! ```text
//! cargo bench --bench store
//! cargo bench --bench store -- read_stream   # one group only (a criterion filter)
//! cargo bench --bench store -- 'append_fsync_64_appenders/raw_sled_packed'   # one function
//! ANNALS_BENCH_CACHE_MB=1024 cargo bench --bench store -- scan_log_1m   # with a 1 GiB sled cache
//! ```
#![allow(clippy::print_stderr, missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::packed::{self, GroupWriter, Packed, PackedEvent};
use support::{
    cache, decode_record, dir_size, index_key, log_key, multi_thread_runtime, payload, rss_bytes, scratch_dir,
    OrderPlaced, PAYLOAD_LEN,
};

use annals::{
    replay, Durability, EventStore, ExpectedVersion, HandlerError, LogFilter, NewEvent, Phase, Position, Projection,
    ReadLog, ReadStream, RecordedEvent, SledConfig, SledStore, Start, StreamId, Until,
};
use chrono::{DateTime, Utc};
use criterion::measurement::WallTime;
use criterion::{criterion_group, BenchmarkGroup, Criterion, SamplingMode, Throughput};
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

fn raw_index_prefix(stream: &str) -> Vec<u8> {
    let mut key = index_key(stream, 0);
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
        (log_key(position), index_key(stream, *version), position.to_be_bytes())
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
    if events == 0 {
        return;
    }
    eprintln!(
        "{what}: {events} events in {groups} commit groups ({:.1} events per group)",
        events as f64 / groups as f64
    );
}

/// Waits until sled has let go of the database at `path` (its lock on `<path>/db`), which it does a
/// little after the last handle is dropped: the database is then closed.
fn wait_closed(path: &Path) {
    use fs2::FileExt;
    let file = File::open(path.join("db")).unwrap();
    let started = Instant::now();
    while file.try_lock_exclusive().is_err() {
        assert!(started.elapsed() < Duration::from_secs(5), "sled still holds {}", path.display());
        std::thread::sleep(Duration::from_millis(1));
    }
    FileExt::unlock(&file).unwrap();
}

/// One of the concurrent appenders' targets: the store, or the packed baseline's group writer.
trait Appender: Clone + Send + Sync + 'static {
    /// Appends one event to `stream` and waits until it is durable.
    fn append_one(&self, stream: &StreamId, payload: &str) -> impl Future<Output = ()> + Send;
}

impl Appender for SledStore {
    async fn append_one(&self, stream: &StreamId, payload: &str) {
        let event = NewEvent::raw(EVENT_TYPE, payload);
        self.append(stream, ExpectedVersion::Any, vec![event]).await.unwrap();
    }
}

impl Appender for GroupWriter {
    async fn append_one(&self, stream: &StreamId, payload: &str) {
        self.append(PackedEvent::new(stream.as_str(), EVENT_TYPE, payload)).await;
    }
}

/// Runs 64 tasks at once, task `t` appending `events(t)` events one at a time over the 1000 streams,
/// so that the writer always has a queue to group; returns the time they took.
async fn run_appenders<A: Appender>(
    appender: &A,
    streams: &Arc<Vec<StreamId>>,
    payload: &str,
    events: impl Fn(u64) -> u64,
) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..APPENDERS)
        .map(|task| {
            let (appender, streams, payload, events) =
                (appender.clone(), Arc::clone(streams), payload.to_owned(), events(task));
            tokio::spawn(async move {
                for i in 0..events {
                    let stream = &streams[(mix((task << 40) ^ i) % STREAMS) as usize];
                    appender.append_one(stream, &payload).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
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
    // events each, all at once.
    group.bench_function("annals", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (store, streams, payload) = (store.clone(), Arc::clone(&streams), payload.clone());
            async move { run_appenders(&store, &streams, &payload, |_| iters).await }
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
    drop(raw);

    // The packed layout behind a group-commit writer: the same 64 tasks, each queueing one event and
    // waiting for its acknowledgement; the writer commits everything queued as one group.
    let (writer, thread) = GroupWriter::spawn(Packed::open(&dir.path().join("packed")));
    group.bench_function("raw_sled_packed_group_writer", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (writer, streams, payload) = (writer.clone(), Arc::clone(&streams), payload.clone());
            async move { run_appenders(&writer, &streams, &payload, |_| iters).await }
        });
    });
    drop(writer);
    thread.close().report("append_fsync_64_appenders/raw_sled_packed_group_writer");
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
    drop(raw);

    // One record of 100 events and one stream-index key per append.
    let mut packed = Packed::open(&dir.path().join("packed"));
    group.bench_function("raw_sled_packed", |b| {
        b.iter(|| {
            let events: Vec<_> = (0..BATCH).map(|_| PackedEvent::new(stream.as_str(), EVENT_TYPE, &payload)).collect();
            packed.commit(&events);
        });
    });
    packed.report("append_fsync_batch_100/raw_sled_packed");
    group.finish();
}

// ---------------------------------------------------------------------------------------------------
// 3. Disk used by 250,000 events.
// ---------------------------------------------------------------------------------------------------

/// Events written for the disk-use figures.
const DISK_EVENTS: u64 = 250_000;

/// How many of the `DISK_EVENTS` appender `task` writes.
fn disk_share(task: u64) -> u64 {
    DISK_EVENTS / APPENDERS + u64::from(task < DISK_EVENTS % APPENDERS)
}

/// Writes `DISK_EVENTS` events with Annals (64 appenders, `Fsync`) and closes the store.
fn fill_annals(runtime: &Runtime, path: &Path, streams: &Arc<Vec<StreamId>>, payload: &str) -> Duration {
    let store = open_store(path, Durability::Fsync);
    let took = runtime.block_on(run_appenders(&store, streams, payload, disk_share));
    report_groups(runtime, &store, "disk_250k/annals");
    drop(store);
    took
}

/// Writes `DISK_EVENTS` events in the naive layout (transactions of 64 events) and closes it.
fn fill_naive(path: &Path, streams: &[StreamId], payload: &str) -> Duration {
    let mut raw = RawSled::open(path);
    let started = Instant::now();
    let mut counter = 0u64;
    let mut left = DISK_EVENTS;
    while left > 0 {
        let names: Vec<&str> = (0..left.min(APPENDERS))
            .map(|_| {
                counter += 1;
                streams[(mix(counter) % STREAMS) as usize].as_str()
            })
            .collect();
        left -= names.len() as u64;
        raw.commit_transaction(&names, payload.as_bytes());
    }
    let took = started.elapsed();
    raw.db.flush().unwrap();
    took
}

/// Writes `DISK_EVENTS` events in the packed layout (64 appenders, a group writer) and closes it.
fn fill_packed(runtime: &Runtime, path: &Path, streams: &Arc<Vec<StreamId>>, payload: &str) -> Duration {
    let (writer, thread) = GroupWriter::spawn(Packed::open(path));
    let took = runtime.block_on(run_appenders(&writer, streams, payload, disk_share));
    drop(writer);
    let packed = thread.close();
    packed.report("disk_250k/raw_sled_packed");
    packed.flush();
    took
}

/// The bytes of keys and values in the closed sled database at `path`, by tree and by the first byte
/// of the key (the key kind of docs/storage-format.md), as `tree: K n keys x MiB, ...`: where the disk
/// goes, before sled's own overhead.
fn bytes_by_kind(path: &Path) -> String {
    let db = open_raw(path);
    let mut parts = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        let mut kinds: std::collections::BTreeMap<u8, (u64, u64)> = std::collections::BTreeMap::new();
        for entry in tree.iter() {
            let (key, value) = entry.unwrap();
            let kind = kinds.entry(key.first().copied().unwrap_or(b'-')).or_default();
            kind.0 += 1;
            kind.1 += (key.len() + value.len()) as u64;
        }
        if kinds.is_empty() {
            continue;
        }
        let kinds: Vec<String> = kinds
            .iter()
            .map(|(kind, (keys, bytes))| {
                let kind = if kind.is_ascii_graphic() { char::from(*kind).to_string() } else { format!("{kind:#04x}") };
                format!("{kind} {keys} keys {:.2} MiB", *bytes as f64 / 1048576.0)
            })
            .collect();
        parts.push(format!("{}: {}", String::from_utf8_lossy(&name), kinds.join(", ")));
    }
    drop(db);
    wait_closed(path);
    parts.join("; ")
}

fn disk_use(c: &mut Criterion) {
    let runtime = multi_thread_runtime();
    let payload = payload();
    let streams = Arc::new(stream_ids("order", STREAMS));
    let dir = scratch_dir();
    let sizes = RefCell::new(Vec::new());
    let mut group = c.benchmark_group("disk_250k");
    group.sample_size(10).warm_up_time(Duration::from_millis(100)).measurement_time(Duration::from_millis(500));
    for name in ["annals", "raw_sled_naive", "raw_sled_packed"] {
        let path = dir.path().join(name);
        let filled = OnceCell::new();
        group.bench_function(name, |b| {
            filled.get_or_init(|| {
                let took = match name {
                    "annals" => fill_annals(&runtime, &path, &streams, &payload),
                    "raw_sled_naive" => fill_naive(&path, &streams, &payload),
                    _ => fill_packed(&runtime, &path, &streams, &payload),
                };
                wait_closed(&path);
                let size = dir_size(&path);
                eprintln!(
                    "disk_250k/{name}: {DISK_EVENTS} events written in {took:.1?} ({:.0} ev/s); {:.1} MiB on disk \
                     after a clean close ({:.0} bytes per event)",
                    DISK_EVENTS as f64 / took.as_secs_f64(),
                    size as f64 / 1048576.0,
                    size as f64 / DISK_EVENTS as f64
                );
                sizes.borrow_mut().push((name, size));
                eprintln!("disk_250k/{name}: bytes of keys and values by tree and key kind: {}", bytes_by_kind(&path));
            });
            // Only the directory walk is timed: the figure is the line above.
            b.iter(|| dir_size(&path));
        });
    }
    group.finish();
    let sizes = sizes.into_inner();
    if let [(_, annals), (_, naive), (_, packed)] = sizes[..] {
        let mib = |bytes: u64| bytes as f64 / 1048576.0;
        eprintln!(
            "disk_250k: annals {:.1} MiB, naive {:.1} MiB, packed {:.1} MiB; annals / packed = {:.2}, annals / naive \
             = {:.2}",
            mib(annals),
            mib(naive),
            mib(packed),
            annals as f64 / packed as f64,
            annals as f64 / naive as f64
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// 4-8. Reads, replay and reopen over a 1,001,000-event log.
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
    /// The packed layout (its own database, `packed/`): one record per commit group of the store,
    /// holding the same events (ids, streams, versions, payloads), and its stream-index keys.
    packed: Packed,
    events: u64,
    /// 1000 events written as 10 appends of 100.
    batched: StreamId,
    /// 1000 events written one per append, between the batches of other streams.
    interleaved: StreamId,
    /// The `recorded_at` of the event in the middle of the log.
    middle: DateTime<Utc>,
    _dir: TempDir,
}

/// The fixture's store and packed twin, closed, for the reopen benchmarks.
struct ClosedFixture {
    store: PathBuf,
    packed: PathBuf,
    _dir: TempDir,
}

/// Copies the log records (`L` keys of the `annals` tree) of the closed store at `path` into `into`,
/// through raw sled.
fn copy_log_records(path: &Path, into: &sled::Tree) {
    let db = open_raw(path);
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

        let rss = rss_bytes();
        let started = Instant::now();
        let store = open_store(&path, Durability::Fsync);
        eprintln!(
            "fixture: reopening the {events}-event store took {:.1?} (RSS {} MiB before, {} MiB after)",
            started.elapsed(),
            rss >> 20,
            rss_bytes() >> 20
        );
        assert_eq!(runtime.block_on(store.head()).unwrap(), Position::new(events));

        // The raw twin: the same log, one key per event, each value 200 bytes starting with the event's
        // recorded_at (microseconds, big-endian) so a binary search can seek it; per-event index keys
        // for the two streams that are read back.
        let started = Instant::now();
        let raw = raw_db.open_tree("raw").unwrap();
        let mut packed = Packed::open(&dir.path().join("packed"));
        let mut middle = None;
        runtime.block_on(async {
            let mut log = store.read_log(ReadLog::from_start());
            let mut batch = sled::Batch::default();
            // The packed twin's group: the store's commit group (the events sharing a `recorded_at`).
            let mut group: Vec<PackedEvent> = Vec::new();
            let mut group_at = None;
            while let Some(event) = log.try_next().await.unwrap() {
                if group_at != Some(event.recorded_at) {
                    if let Some(at) = group_at {
                        packed.apply(&std::mem::take(&mut group), at.timestamp_micros());
                    }
                    group_at = Some(event.recorded_at);
                }
                assert_eq!(event.event_type, EVENT_TYPE);
                group.push(PackedEvent {
                    stream: event.stream.as_str().to_owned(),
                    event_type: EVENT_TYPE,
                    id: event.id,
                    payload: event.payload.clone(),
                });
                let position = event.position.get();
                let mut value = event.recorded_at.timestamp_micros().to_be_bytes().to_vec();
                value.extend_from_slice(&event.payload.as_bytes()[..PAYLOAD_LEN - 8]);
                batch.insert(&log_key(position)[..], value);
                if event.stream == interleaved || event.stream == bulk[0] {
                    batch.insert(index_key(event.stream.as_str(), event.version.get()), &position.to_be_bytes());
                }
                if position == events / 2 {
                    middle = Some(event.recorded_at);
                }
                if position % 1000 == 0 {
                    raw.apply_batch(std::mem::take(&mut batch)).unwrap();
                }
            }
            raw.apply_batch(batch).unwrap();
            if let Some(at) = group_at {
                packed.apply(&group, at.timestamp_micros());
            }
        });
        raw_db.flush().unwrap();
        packed.flush();
        eprintln!(
            "fixture: raw-sled twins ({events} per-event log keys + {} index keys; {} packed records and index \
             keys) in {:.1?}",
            2 * STREAM_LEN,
            packed.tree().len(),
            started.elapsed()
        );
        eprintln!(
            "fixture: disk use {} MiB (store) / {} MiB (raw sled: naive twin and the records' copy) / {} MiB (packed \
             twin)",
            store.size_on_disk().unwrap() >> 20,
            raw_db.size_on_disk().unwrap() >> 20,
            dir_size(&dir.path().join("packed")) >> 20
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
            packed,
            events,
            batched,
            interleaved,
            middle: middle.unwrap(),
            _dir: dir,
        }
    }

    /// Closes the store and the twins; what is left is their directory.
    fn close(self) -> ClosedFixture {
        let Fixture { runtime, store, raw, records, _raw_db: raw_db, packed, _dir: dir, .. } = self;
        drop((store, raw, records, raw_db, packed, runtime));
        let closed = ClosedFixture { store: dir.path().join("annals"), packed: dir.path().join("packed"), _dir: dir };
        wait_closed(&closed.store);
        wait_closed(&closed.packed);
        closed
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
            let value = self.raw.get(log_key(middle)).unwrap().unwrap();
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
    let mut cell = OnceCell::new();
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

    // Replay: the whole log handed to a projection that decodes every payload into the user's type,
    // beside raw scans decoding envelopes and payloads into the same type.
    let mut group = read_group(c, "replay_1m", events);
    group.sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(10));
    group.bench_function("annals_replay_payload_as", |b| {
        let f = fixture();
        b.iter(|| {
            let totals = f.runtime.block_on(replay(&f.store, Totals::default(), Start::Beginning, Until::default()));
            assert_eq!(totals.unwrap().events, f.events);
        });
    });
    // The packed twin: each record decoded (envelope fields into owned values), each payload parsed
    // from the record's bytes.
    group.bench_function("raw_sled_packed_scan_payload_as", |b| {
        let f = fixture();
        b.iter(|| {
            let mut totals = Totals::default();
            for entry in f.packed.tree().scan_prefix([b'L']) {
                let (key, value) = entry.unwrap();
                packed::decode(&key, &value, |event| {
                    totals.count(serde_json::from_str(black_box(event).payload).unwrap())
                });
            }
            assert_eq!(totals.events, f.events);
        });
    });
    // The store's own records, checked and decoded by hand (as `raw_sled_records_check_decode`), and
    // each payload parsed.
    group.bench_function("raw_sled_records_check_decode_payload_as", |b| {
        let f = fixture();
        b.iter(|| {
            let mut totals = Totals::default();
            for entry in f.records.scan_prefix([b'L']) {
                let (key, value) = entry.unwrap();
                decode_record(&key, &value, |event| {
                    totals.count(serde_json::from_str(&black_box(event).payload).unwrap())
                });
            }
            assert_eq!(totals.events, f.events);
        });
    });
    group.finish();

    reopen(c, cell.take());
}

/// A projection that decodes every payload into [`OrderPlaced`] and sums the totals.
#[derive(Default)]
struct Totals {
    events: u64,
    total: u64,
}

impl Totals {
    fn count(&mut self, order: OrderPlaced) {
        self.events += 1;
        self.total += black_box(order).total;
    }
}

#[async_trait::async_trait]
impl Projection for Totals {
    fn name(&self) -> &str {
        "totals"
    }

    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        self.count(event.payload_as()?);
        Ok(())
    }
}

/// Opens the raw sled database at `path`, waiting for sled to let go of a handle just dropped.
fn open_raw(path: &Path) -> sled::Db {
    let config = sled::Config::new().path(path).cache_capacity(cache());
    let started = Instant::now();
    loop {
        match config.open() {
            Err(_) if started.elapsed() < Duration::from_secs(2) => std::thread::sleep(Duration::from_millis(1)),
            opened => break opened.unwrap(),
        }
    }
}

/// The environment variable that makes the bench binary a child measuring one open (`annals:<path>`
/// or `packed:<path>`): a fresh process, so that its resident memory shows what the open costs.
const REOPEN_CHILD: &str = "ANNALS_BENCH_REOPEN_CHILD";

/// Runs this binary again to open the closed store, then the packed twin, each in a fresh process.
fn reopen_diagnostics(closed: &ClosedFixture) {
    for (kind, path) in [("annals", &closed.store), ("packed", &closed.packed)] {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .env(REOPEN_CHILD, format!("{kind}:{}", path.display()))
            .status()
            .unwrap();
        assert!(status.success(), "the reopen child failed: {status}");
        wait_closed(path);
    }
}

/// In the child: opens the store or the packed twin once and prints the time of the open and the
/// process's resident memory before and after it.
fn reopen_child(what: &str) {
    let (kind, path) = what.split_once(':').unwrap();
    let path = Path::new(path);
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    let before = rss_bytes();
    let started = Instant::now();
    let (took, after, head) = if kind == "annals" {
        let store = open_store(path, Durability::Fsync);
        let took = started.elapsed();
        let after = rss_bytes();
        (took, after, current_thread_runtime().block_on(store.head()).unwrap().get())
    } else {
        let db = open_raw(path);
        let took = started.elapsed();
        let after = rss_bytes();
        let tree = db.open_tree("packed").unwrap();
        let (key, value) = tree.scan_prefix([b'L']).next_back().unwrap().unwrap();
        let mut last = 0;
        packed::decode(&key, &value, |event| last = event.position);
        (took, after, last)
    };
    eprintln!(
        "reopen_1m/{kind}: opening the closed {head}-event database in a fresh process took {took:.1?}; RSS {:.1} MiB \
         before the open, {:.1} MiB after (+{:.1} MiB)",
        mib(before),
        mib(after),
        mib(after.saturating_sub(before))
    );
}

/// Reopening the 1M-event store (closed after the read benchmarks, or built here when they were
/// filtered out).
fn reopen(c: &mut Criterion, fixture: Option<Fixture>) {
    let fixture = Cell::new(fixture);
    let closed = OnceCell::new();
    let closed = || {
        closed.get_or_init(|| {
            let closed = fixture.take().unwrap_or_else(Fixture::build).close();
            reopen_diagnostics(&closed);
            closed
        })
    };
    let mut group = c.benchmark_group("reopen_1m");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.bench_function("annals_open_drop", |b| {
        let f = closed();
        b.iter(|| drop(open_store(&f.store, Durability::Fsync)));
    });
    group.bench_function("raw_sled_packed_open_drop", |b| {
        let f = closed();
        b.iter(|| drop(open_raw(&f.packed)));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = concurrent_appends, batched_appends, disk_use, reads
}
// `criterion_main!`, with the reopen child's entry.
fn main() {
    if let Ok(what) = std::env::var(REOPEN_CHILD) {
        reopen_child(&what);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
