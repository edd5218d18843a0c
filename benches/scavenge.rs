//! Benchmarks of scavenging on the sled store (issue 15), each beside a raw-sled baseline doing the
//! same removal in the same run. Every event carries a 200-byte JSON payload; throughput is reported
//! in events looked at per second.
//!
//! | group | what |
//! | --- | --- |
//! | `scavenge_1m_half_expired` | `annals::scavenge` to its end on a 1,000,000-event store (1,000 streams `reading-<n>` of 1,000 events) where a retention rule `max_count(500)` on the prefix `reading-` expires the older half of every stream: 500,000 events removed, durably; the baseline is raw sled with the naive layout (one log key and one stream-index key per event) scanning its index to decide what to remove, then removing the same 500,000 events' keys in `sled::Batch`es of 10,000 keys, each followed by `flush` and `fdatasync` of the `db` file |
//! | `scavenge_again_nothing_to_remove` | a second scavenge of an already scavenged store (500,000 events left): the cost of a pass that removes nothing; the baseline is raw sled scanning the whole scavenged naive tree (log and index keys) and deciding that nothing goes |
//!
//! Both fixtures are built once per run (`Durability::Buffered` for the store, appends of 100 events
//! to the streams in turn, so that every stream's older half is the older half of the log), closed,
//! and copied for each measured iteration of the first group; copying is not measured
//! (`iter_custom`) and each copy is deleted after its iteration. Before the groups, one scavenge of
//! each kind runs outside criterion to print where the time goes and the disk use (`du -sb`) before
//! and after it (closed, then reopened and closed again, since sled may give space back lazily); its
//! scavenged copies are the fixtures of the second group. Diagnostics go to stderr on lines starting
//! with `fixture:`, `disk:` and the group's name. The run needs about 3 GB of scratch disk.
//!
//! ```text
//! cargo bench --bench scavenge
//! cargo bench --bench scavenge 2>&1 | grep -E '^[a-z_0-9]+/|time:|thrpt:|^fixture|^disk|^scavenge'
//! ```
#![allow(clippy::print_stderr, missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs::File;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{cache, index_key, payload, scratch_dir, PAYLOAD_LEN};

use annals::{
    scavenge, Durability, EventStore, ExpectedVersion, NewEvent, Position, RetentionPolicy, RetentionRule,
    RetentionScope, ScavengeOptions, ScavengeReport, SledConfig, SledStore, StreamId,
};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use tempfile::TempDir;
use tokio::runtime::Runtime;

const EVENT_TYPE: &str = "ReadingTaken";
/// Streams of the fixture, `reading-0` to `reading-999`.
const STREAMS: u64 = 1_000;
/// Events per stream.
const STREAM_LEN: u64 = 1_000;
/// Events in the fixture.
const EVENTS: u64 = STREAMS * STREAM_LEN;
/// Events per append.
const BATCH: u64 = 100;
/// The retention rule keeps the newest `KEEP` events of each stream.
const KEEP: u64 = 500;
/// Events the scavenge removes.
const EXPIRED: u64 = STREAMS * (STREAM_LEN - KEEP);
/// Keys per `sled::Batch` in the raw removal.
const RAW_BATCH_KEYS: usize = 10_000;

fn current_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn stream_name(n: u64) -> String {
    format!("reading-{n}")
}

fn retention_rule() -> RetentionRule {
    RetentionRule::new(RetentionScope::Prefix("reading-".into()), RetentionPolicy::max_count(KEEP))
}

/// Opens the store at `path` with `Fsync`, waiting for a store just dropped there to let go of its
/// lock (sled releases it a little after the last handle is dropped).
fn open_store(path: &Path, durability: Durability) -> SledStore {
    let started = Instant::now();
    loop {
        match SledConfig::new(path).durability(durability).cache_capacity(cache()).open() {
            Err(_) if started.elapsed() < Duration::from_secs(10) => std::thread::sleep(Duration::from_millis(10)),
            opened => break opened.unwrap(),
        }
    }
}

/// Opens raw sled at `path`, with the same wait for a lock.
fn open_raw(path: &Path) -> sled::Db {
    let config = sled::Config::new().path(path).cache_capacity(cache());
    let started = Instant::now();
    loop {
        match config.open() {
            Err(_) if started.elapsed() < Duration::from_secs(10) => std::thread::sleep(Duration::from_millis(10)),
            opened => break opened.unwrap(),
        }
    }
}

/// `du -sb <path>`: bytes on disk as the filesystem counts them.
fn du(path: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(path).output().unwrap();
    assert!(out.status.success(), "du -sb {}", path.display());
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Copies the directory `from` to `to` (which must not exist), recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Seconds of CPU (user + system) this process has used, from `/proc/self/stat` (100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which ends with the last ')': utime and stime are the 12th and
    // 13th of them.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

// ---------------------------------------------------------------------------------------------------
// Raw sled: the naive layout.
// ---------------------------------------------------------------------------------------------------

/// `L` + position (u64 big-endian): one key per event, the value its 200-byte payload.
fn raw_log_key(position: u64) -> [u8; 9] {
    let mut key = [b'L'; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

/// The naive tree: log and index keys in one tree, so that one `sled::Batch` covers both.
fn raw_tree(db: &sled::Db) -> sled::Tree {
    db.open_tree("naive").unwrap()
}

/// One event the raw baseline removes: its log key's position and its index key.
struct Doomed {
    position: u64,
    index_key: sled::IVec,
}

/// Walks one stream's index entries (in version order) and moves those `max_count(KEEP)` expires into
/// `doomed`; returns how many it moved.
fn decide_stream(entries: &mut Vec<(sled::IVec, u64)>, doomed: &mut Vec<Doomed>) -> u64 {
    let expired = entries.len().saturating_sub(KEEP as usize);
    let moved = entries.drain(..expired).map(|(index_key, position)| Doomed { position, index_key });
    doomed.extend(moved);
    entries.clear();
    expired as u64
}

/// The scan that decides: every index key, grouped by stream (they are sorted by stream, then
/// version), the older ones past the newest `KEEP` of each stream marked for removal. Returns the
/// events to remove (in log order) and the index keys looked at.
fn raw_decide(tree: &sled::Tree) -> (Vec<Doomed>, u64) {
    let mut doomed = Vec::new();
    let mut stream: Vec<u8> = Vec::new();
    let mut entries = Vec::new();
    let mut examined = 0;
    for entry in tree.scan_prefix([b'S']) {
        let (key, value) = entry.unwrap();
        examined += 1;
        let name = &key[1..key.len() - 9];
        if name != stream.as_slice() {
            decide_stream(&mut entries, &mut doomed);
            stream = name.to_vec();
        }
        entries.push((key, u64::from_be_bytes(value.as_ref().try_into().unwrap())));
    }
    decide_stream(&mut entries, &mut doomed);
    doomed.sort_unstable_by_key(|d| d.position);
    (doomed, examined)
}

/// Where the raw removal's time went.
#[derive(Default)]
struct RawSpent {
    scan: Duration,
    apply: Duration,
    flush: Duration,
    sync: Duration,
    batches: u32,
}

/// The raw baseline's scavenge: the deciding scan, then the removal of each doomed event's log and
/// index keys in batches of `RAW_BATCH_KEYS` keys, each made durable (`flush` + `fdatasync` of
/// `<dir>/db`). Returns the events removed.
fn raw_scavenge(db: &sled::Db, data: &File, spent: &mut RawSpent) -> u64 {
    let tree = raw_tree(db);
    let started = Instant::now();
    let (doomed, examined) = raw_decide(&tree);
    assert_eq!(examined, EVENTS);
    spent.scan += started.elapsed();
    let mut batch = sled::Batch::default();
    let mut keys = 0;
    let commit = |batch: sled::Batch, spent: &mut RawSpent| {
        let started = Instant::now();
        tree.apply_batch(batch).unwrap();
        let applied = Instant::now();
        db.flush().unwrap();
        let flushed = Instant::now();
        data.sync_data().unwrap();
        spent.apply += applied - started;
        spent.flush += flushed - applied;
        spent.sync += flushed.elapsed();
        spent.batches += 1;
    };
    for event in &doomed {
        batch.remove(&raw_log_key(event.position)[..]);
        batch.remove(event.index_key.clone());
        keys += 2;
        if keys == RAW_BATCH_KEYS {
            commit(std::mem::take(&mut batch), spent);
            keys = 0;
        }
    }
    if keys > 0 {
        commit(batch, spent);
    }
    doomed.len() as u64
}

/// The raw pass over a scavenged tree: every key read (log values and index entries), the index
/// grouped by stream and decided on as in [`raw_decide`]. Returns the events still stored and the
/// number the pass would remove.
fn raw_scan_all(tree: &sled::Tree) -> (u64, u64) {
    let mut log = 0;
    for entry in tree.scan_prefix([b'L']) {
        let (_, value) = entry.unwrap();
        log += u64::from(black_box(value).len() == PAYLOAD_LEN);
    }
    let (doomed, examined) = raw_decide(tree);
    assert_eq!(examined, log);
    (log, doomed.len() as u64)
}

// ---------------------------------------------------------------------------------------------------
// The fixtures.
// ---------------------------------------------------------------------------------------------------

struct Fixture {
    runtime: Runtime,
    /// The closed 1M-event store.
    annals: PathBuf,
    /// The closed naive raw-sled twin.
    raw: PathBuf,
    /// A copy of `annals` scavenged once (the second group's fixture).
    annals_scavenged: PathBuf,
    /// A copy of `raw` scavenged once.
    raw_scavenged: PathBuf,
    dir: TempDir,
}

impl Fixture {
    fn build() -> Self {
        let dir = scratch_dir();
        let runtime = current_thread_runtime();
        let annals = dir.path().join("annals");
        let raw = dir.path().join("raw");
        let payload = payload();
        let streams: Vec<StreamId> = (0..STREAMS).map(|n| StreamId::new(stream_name(n)).unwrap()).collect();

        // Appends of 100 to the streams in turn: 10 rounds of 1,000 streams.
        let started = Instant::now();
        {
            let store = open_store(&annals, Durability::Buffered);
            runtime.block_on(async {
                for round in 0..STREAM_LEN / BATCH {
                    for stream in &streams {
                        let events = (0..BATCH).map(|_| NewEvent::raw(EVENT_TYPE, payload.as_str())).collect();
                        let expected = if round == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Any };
                        store.append(stream, expected, events).await.unwrap();
                    }
                }
                assert_eq!(store.head().await.unwrap(), Position::new(EVENTS));
            });
        }
        eprintln!(
            "fixture: {EVENTS} events in {} appends of {BATCH} over {STREAMS} streams (Buffered) in {:.1?}",
            EVENTS / BATCH,
            started.elapsed()
        );

        // The naive twin, written in the same order: one batch per append (log and index keys).
        let started = Instant::now();
        {
            let db = open_raw(&raw);
            let tree = raw_tree(&db);
            let mut position = 0;
            for round in 0..STREAM_LEN / BATCH {
                for n in 0..STREAMS {
                    let stream = stream_name(n);
                    let mut batch = sled::Batch::default();
                    for i in 1..=BATCH {
                        position += 1;
                        batch.insert(&raw_log_key(position)[..], payload.as_bytes());
                        batch.insert(index_key(&stream, round * BATCH + i), &position.to_be_bytes());
                    }
                    tree.apply_batch(batch).unwrap();
                }
            }
            db.flush().unwrap();
        }
        eprintln!(
            "fixture: raw-sled twin ({EVENTS} log keys + {EVENTS} index keys, batches of {}) in {:.1?}",
            2 * BATCH,
            started.elapsed()
        );
        let annals_scavenged = dir.path().join("annals-scavenged");
        let raw_scavenged = dir.path().join("raw-scavenged");
        Fixture { runtime, annals, raw, annals_scavenged, raw_scavenged, dir }
    }

    /// A fresh copy of the store with the retention rule set, open with `Fsync`.
    fn annals_copy(&self, to: &Path) -> SledStore {
        copy_dir(&self.annals, to);
        let store = open_store(to, Durability::Fsync);
        self.runtime.block_on(store.set_retention(retention_rule())).unwrap();
        store
    }

    /// The measured work: a scavenge of the store to its end.
    fn annals_scavenge(&self, store: &SledStore) -> (Duration, ScavengeReport) {
        let started = Instant::now();
        let report = self.runtime.block_on(scavenge(store, ScavengeOptions::new(), |_| {})).unwrap();
        (started.elapsed(), report)
    }

    /// One measured iteration of the first group on a fresh copy, deleted afterwards.
    fn annals_iteration(&self) -> Duration {
        let copy = self.dir.path().join("annals-copy");
        let store = self.annals_copy(&copy);
        let (took, report) = self.annals_scavenge(&store);
        check_first(&report);
        drop(store);
        remove_dir(&copy);
        took
    }

    fn raw_iteration(&self) -> Duration {
        let copy = self.dir.path().join("raw-copy");
        copy_dir(&self.raw, &copy);
        let db = open_raw(&copy);
        let data = File::options().read(true).write(true).open(copy.join("db")).unwrap();
        let started = Instant::now();
        let removed = raw_scavenge(&db, &data, &mut RawSpent::default());
        let took = started.elapsed();
        assert_eq!(removed, EXPIRED);
        drop((db, data));
        remove_dir(&copy);
        took
    }

    /// One scavenge of each kind outside criterion: where the time goes, and the disk use before and
    /// after. Leaves the scavenged copies for the second group.
    fn diagnose(&self) {
        let before = du(&self.annals);
        let store = self.annals_copy(&self.annals_scavenged);
        let cpu = cpu_seconds();
        let started = Instant::now();
        let mut retention_done = None;
        let mut steps = 0u32;
        let report = self
            .runtime
            .block_on(scavenge(&store, ScavengeOptions::new(), |progress| {
                if progress.phase == annals::ScavengePhase::Log {
                    steps += 1;
                } else {
                    retention_done = Some(started.elapsed());
                }
            }))
            .unwrap();
        let took = started.elapsed();
        let cpu = cpu_seconds() - cpu;
        check_first(&report);
        let retention = retention_done.unwrap_or_default();
        eprintln!(
            "scavenge_1m_half_expired/annals (diagnostic run): {took:.2?}: retention phase {retention:.2?} \
             ({} streams truncated), log phase {:.2?} in {steps} progress calls; examined {}, removed {}, \
             bytes_removed {}; process CPU {cpu:.2} s ({:.0} % of one core)",
            report.streams_truncated,
            took - retention,
            report.examined,
            report.removed,
            report.bytes_removed,
            100.0 * cpu / took.as_secs_f64()
        );
        drop(store);
        let closed = du(&self.annals_scavenged);
        drop(open_store(&self.annals_scavenged, Durability::Fsync));
        let reopened = du(&self.annals_scavenged);
        eprintln!(
            "disk: annals {} before the scavenge, {} after it (closed), {} after a reopen and close \
             ({before} / {closed} / {reopened} bytes, du -sb)",
            mib(before),
            mib(closed),
            mib(reopened)
        );

        let before = du(&self.raw);
        copy_dir(&self.raw, &self.raw_scavenged);
        let db = open_raw(&self.raw_scavenged);
        let data = File::options().read(true).write(true).open(self.raw_scavenged.join("db")).unwrap();
        let mut spent = RawSpent::default();
        let cpu = cpu_seconds();
        let started = Instant::now();
        let removed = raw_scavenge(&db, &data, &mut spent);
        let took = started.elapsed();
        let cpu = cpu_seconds() - cpu;
        assert_eq!(removed, EXPIRED);
        let n = spent.batches.max(1);
        eprintln!(
            "scavenge_1m_half_expired/raw_sled (diagnostic run): {took:.2?}: deciding scan {:.2?}, then {} \
             batches of {RAW_BATCH_KEYS} keys, per batch: apply {:.1?}, flush {:.1?}, fdatasync {:.1?}; \
             removed {removed}; process CPU {cpu:.2} s ({:.0} % of one core)",
            spent.scan,
            spent.batches,
            spent.apply / n,
            spent.flush / n,
            spent.sync / n,
            100.0 * cpu / took.as_secs_f64()
        );
        drop((db, data));
        let closed = du(&self.raw_scavenged);
        drop(open_raw(&self.raw_scavenged));
        let reopened = du(&self.raw_scavenged);
        eprintln!(
            "disk: raw sled {} before the removal, {} after it (closed), {} after a reopen and close \
             ({before} / {closed} / {reopened} bytes, du -sb)",
            mib(before),
            mib(closed),
            mib(reopened)
        );
    }
}

/// What the first scavenge of a copy must have done.
fn check_first(report: &ScavengeReport) {
    assert!(report.finished, "the scavenge reached the end of the log");
    assert_eq!(report.streams_truncated, STREAMS);
    assert_eq!(report.examined, EVENTS);
    assert_eq!(report.removed, EXPIRED);
}

fn remove_dir(path: &Path) {
    // A dropped store's threads may still hold files for a moment; retry briefly.
    let started = Instant::now();
    while let Err(error) = std::fs::remove_dir_all(path) {
        assert!(started.elapsed() < Duration::from_secs(10), "removing {}: {error}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn scavenging(c: &mut Criterion) {
    let fixture = Fixture::build();
    fixture.diagnose();

    let mut group = c.benchmark_group("scavenge_1m_half_expired");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(EVENTS));
    group.bench_function("annals", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| fixture.annals_iteration()).sum());
    });
    group.bench_function("raw_sled", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| fixture.raw_iteration()).sum());
    });
    group.finish();

    let left = EVENTS - EXPIRED;
    let mut group = c.benchmark_group("scavenge_again_nothing_to_remove");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(left));
    {
        let store = open_store(&fixture.annals_scavenged, Durability::Fsync);
        let mut examined = None;
        group.bench_function("annals", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let (took, report) = fixture.annals_scavenge(&store);
                        assert!(report.finished);
                        assert_eq!(report.removed, 0);
                        examined = Some(report.examined);
                        took
                    })
                    .sum()
            });
        });
        eprintln!("scavenge_again_nothing_to_remove/annals: examined {examined:?} per pass, removed 0");
    }
    {
        let db = open_raw(&fixture.raw_scavenged);
        let tree = raw_tree(&db);
        group.bench_function("raw_sled_full_scan", |b| {
            b.iter(|| assert_eq!(raw_scan_all(&tree), (left, 0)));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = scavenging
}
criterion_main!(benches);
