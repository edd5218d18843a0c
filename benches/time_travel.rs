//! Benchmarks of time travel on the sled store.
//!
//! | group | what |
//! | --- | --- |
//! | `aggregate_as_of_100k` | an aggregate with a 100,000-event history and a snapshot every 100 events, loaded as of recorded times in the middle of its history that fall 10, 50 and 90 events after a snapshot, and at a version 37 events after one; beside them, the same load from the first event (no snapshots) |
//! | `projection_as_of_1m` | a count-per-type projection as of a recorded time in the middle of a 1,000,000-event log, between two saved states: from the nearest state a persisted projector saved (`keep_history_every(10_000)`), and by a replay from the start |
//!
//! The fixtures are built fresh in each run with `Durability::Buffered` (commands of 10 events for
//! the aggregate, appends of 1,000 for the log, each append its own `recorded_at`), then reopened
//! with `Fsync`. A bound on recorded time resolves to the end of an append, so the aggregate's
//! commands are smaller than its snapshot interval: otherwise every such bound would land on a
//! snapshot and the load would replay nothing. Each load counts the events it replays after its
//! snapshot or saved state (a field the state does not save), and each group prints those counts and
//! its speed-up ratio to stderr on lines starting with its name.
//!
//! ```text
//! cargo bench --bench time_travel
//! cargo bench --bench time_travel 2>&1 | grep -E '^[a-z_0-9]+/|time:|thrpt:|^aggregate_as_of|^projection_as_of'
//! ```
#![allow(clippy::print_stderr, missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};
use support::{multi_thread_runtime as runtime, scratch_dir};

use annals::{
    replay, Aggregate, AsOf, CommandContext, Durability, Event, EventStore, ExpectedVersion, HandlerError, NewEvent,
    Phase, Position, Projection, Projector, RecordedEvent, Repository, SledConfig, SledStore, SnapshotPolicy, Start,
    StreamAppend, StreamId, Until, Version,
};
use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;
use tokio::runtime::Runtime;

const HISTORY: u64 = 100_000;
const LOG: u64 = 1_000_000;

fn open(dir: &TempDir, durability: Durability) -> SledStore {
    SledConfig::new(dir.path()).durability(durability).open().unwrap()
}

// ---------------------------------------------------------------------------------------------------
// An account with a long history.

#[derive(Event, Clone, Debug, PartialEq)]
enum AccountEvent {
    Deposited { cents: u64 },
}

#[derive(Aggregate, Clone, Debug, Default, Serialize, Deserialize)]
#[aggregate(command = u32, event = AccountEvent, error = std::convert::Infallible)]
struct Account {
    balance: u64,
    deposits: u64,
    /// Events applied since the state was created or read from a snapshot: what a load replayed.
    #[serde(skip)]
    replayed: u64,
}

impl Account {
    /// A command deposits `n` times (one event each), so the history builds in few appends.
    fn handle(&self, n: u32) -> Result<Vec<AccountEvent>, std::convert::Infallible> {
        Ok((0..n).map(|i| AccountEvent::Deposited { cents: u64::from(i) + 1 }).collect())
    }

    fn apply(&mut self, event: &AccountEvent) {
        let AccountEvent::Deposited { cents } = event;
        self.balance += cents;
        self.deposits += 1;
        self.replayed += 1;
    }
}

/// Events per command while building the history: a divisor of the snapshot interval smaller than it,
/// so that snapshots land on multiples of 100 and appends end between them.
const COMMAND: u32 = 10;
/// Where the recorded-time bounds fall: this many events after the snapshot at `HISTORY / 2`.
const AFTER_SNAPSHOT: [u64; 3] = [10, 50, 90];

/// Builds the history; returns, for each of `AFTER_SNAPSHOT`, the recorded time of the append that
/// ended that many events after the snapshot at version `HISTORY / 2`.
fn build_account(rt: &Runtime, dir: &TempDir) -> Vec<DateTime<Utc>> {
    rt.block_on(async {
        let store = open(dir, Durability::Buffered);
        let accounts =
            Repository::<Account, _>::new(store.clone()).with_snapshots(SnapshotPolicy::every(100)).with_cache(1);
        let stream = Account::stream_id("a").unwrap();
        let mut bounds = Vec::new();
        for _ in 0..HISTORY / u64::from(COMMAND) {
            let committed = accounts.execute("a", COMMAND, &CommandContext::new()).await.unwrap();
            let version = committed.version.get();
            if AFTER_SNAPSHOT.iter().any(|after| version == HISTORY / 2 + after) {
                let event = store
                    .read_stream_chunk(
                        &stream,
                        committed.version,
                        annals::Direction::Forward,
                        1,
                        annals::StreamView::Current,
                    )
                    .await;
                bounds.push(event.unwrap()[0].recorded_at);
            }
        }
        assert_eq!(bounds.len(), AFTER_SNAPSHOT.len());
        bounds
    })
}

fn aggregate_as_of(c: &mut Criterion) {
    let rt = runtime();
    let dir = scratch_dir();
    let started = Instant::now();
    let bounds = build_account(&rt, &dir);
    eprintln!("aggregate_as_of_100k: built {HISTORY} events in commands of {COMMAND} in {:.1?}", started.elapsed());
    let store = open(&dir, Durability::Fsync);
    let with_snapshots = Repository::<Account, _>::new(store.clone()).with_snapshots(SnapshotPolicy::every(100));
    let without = Repository::<Account, _>::new(store.clone());

    // Each bound resolves to the version it was taken at, and the load replays the events after the
    // snapshot at `HISTORY / 2`, the same answer as a load from the first event.
    for (after, bound) in AFTER_SNAPSHOT.iter().zip(&bounds) {
        let check = rt.block_on(with_snapshots.load_as_of("a", AsOf::Recorded(*bound))).unwrap();
        assert_eq!((check.version.get(), check.state.replayed), (HISTORY / 2 + after, *after));
        let full = rt.block_on(without.load_as_of("a", AsOf::Recorded(*bound))).unwrap();
        assert_eq!((full.version, full.state.balance), (check.version, check.state.balance));
        assert_eq!(full.state.replayed, check.version.get());
    }
    let at_version = Version::new(HISTORY / 2 + 37);
    let check = rt.block_on(with_snapshots.load_as_of("a", AsOf::Version(at_version))).unwrap();
    assert_eq!(check.state.replayed, 37);
    eprintln!(
        "aggregate_as_of_100k: the loads replay {AFTER_SNAPSHOT:?} events (recorded-time bounds) and 37 \
         (version bound) after the snapshot at version {}; from the first event, {} to {}",
        HISTORY / 2,
        HISTORY / 2 + AFTER_SNAPSHOT[0],
        HISTORY / 2 + AFTER_SNAPSHOT[2]
    );

    let mut group = c.benchmark_group("aggregate_as_of_100k");
    group.sample_size(50).measurement_time(Duration::from_secs(3));
    for (after, bound) in AFTER_SNAPSHOT.iter().zip(&bounds) {
        group.bench_function(format!("recorded_time_with_snapshots_{after}_after"), |b| {
            b.iter(|| rt.block_on(with_snapshots.load_as_of("a", AsOf::Recorded(black_box(*bound)))).unwrap())
        });
    }
    group.bench_function("version_with_snapshots_37_after", |b| {
        b.iter(|| rt.block_on(with_snapshots.load_as_of("a", AsOf::Version(black_box(at_version)))).unwrap())
    });
    let middle = bounds[1];
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.bench_function("recorded_time_from_the_first_event_50_after", |b| {
        b.iter(|| rt.block_on(without.load_as_of("a", AsOf::Recorded(black_box(middle)))).unwrap())
    });
    group.finish();

    let time = |repository: &Repository<Account, SledStore>| {
        let started = Instant::now();
        for _ in 0..5 {
            rt.block_on(repository.load_as_of("a", AsOf::Recorded(middle))).unwrap();
        }
        started.elapsed() / 5
    };
    let (fast, slow) = (time(&with_snapshots), time(&without));
    eprintln!(
        "aggregate_as_of_100k: as of the bound 50 events after a snapshot, {fast:.1?} from snapshots vs {slow:.1?} from the first event ({:.0}x)",
        slow.as_secs_f64() / fast.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------------
// A projection over a 1M-event log.

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct CountPerType {
    counts: HashMap<String, u64>,
    /// Events handled since the state was created or read from a saved copy: what a replay replayed.
    #[serde(skip)]
    replayed: u64,
}

#[async_trait::async_trait]
impl Projection for CountPerType {
    fn name(&self) -> &str {
        "count-per-type"
    }

    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        *self.counts.entry(event.event_type.clone()).or_default() += 1;
        self.replayed += 1;
        Ok(())
    }
}

/// Builds the log (1,000 appends of 1,000 events over 10 types) and runs the persisted projector over
/// it once, keeping its state every 10,000 positions; returns a recorded time in the middle.
fn build_log(rt: &Runtime, dir: &TempDir) -> DateTime<Utc> {
    rt.block_on(async {
        let store = open(dir, Durability::Buffered);
        let payload = format!(r#"{{"note":"{}"}}"#, "x".repeat(180));
        for append in 0..LOG / 1_000 {
            let appends = (0..10)
                .map(|s| {
                    let stream = StreamId::new(format!("order-{}", append * 10 + s)).unwrap();
                    let events = (0..100).map(|i| NewEvent::raw(format!("Type{}", i % 10), payload.clone())).collect();
                    StreamAppend::new(stream, ExpectedVersion::NoStream, events)
                })
                .collect();
            store.append_multi(appends).await.unwrap();
        }
        let projector = Projector::persisted(store.clone(), CountPerType::default).keep_history_every(10_000);
        let running = projector.run().await.unwrap();
        running.wait_for(Position::new(LOG), Duration::from_secs(120)).await.unwrap();
        running.stop().await.unwrap();
        let middle = Position::new(LOG / 2 + 4_321);
        let event = store.read_log_chunk(middle, 1, &annals::LogFilter::all()).await.unwrap();
        event.events[0].recorded_at
    })
}

fn projection_as_of(c: &mut Criterion) {
    let rt = runtime();
    let dir = scratch_dir();
    let started = Instant::now();
    let middle = build_log(&rt, &dir);
    eprintln!("projection_as_of_1m: built {LOG} events and the projector's history in {:.1?}", started.elapsed());
    let store = open(&dir, Durability::Fsync);
    let projector = Projector::persisted(store.clone(), CountPerType::default).keep_history_every(10_000);
    let until = Until { recorded: Some(middle), ..Until::default() };

    let fast = rt.block_on(projector.as_of(until)).unwrap();
    let full = rt.block_on(replay(&store, CountPerType::default(), Start::Beginning, until)).unwrap();
    assert_eq!(fast.counts, full.counts, "the same answer both ways");
    let through = full.counts.values().sum::<u64>();
    assert!(through > LOG / 2 && full.replayed == through);
    assert!(fast.replayed > 0 && fast.replayed < 10_000, "the bound falls between two saved states");
    eprintln!(
        "projection_as_of_1m: the bound resolves to position {through}; from the nearest saved state the \
         replay handles {} events (saved at position {}), from the start {through}",
        fast.replayed,
        through - fast.replayed
    );

    let mut group = c.benchmark_group("projection_as_of_1m");
    group.sample_size(20).measurement_time(Duration::from_secs(5));
    group.bench_function("from_the_nearest_saved_state", |b| {
        b.iter(|| rt.block_on(projector.as_of(black_box(until))).unwrap())
    });
    group.sample_size(10).measurement_time(Duration::from_secs(15));
    group.bench_function("replay_from_the_start", |b| {
        b.iter(|| rt.block_on(replay(&store, CountPerType::default(), Start::Beginning, black_box(until))).unwrap())
    });
    group.finish();

    let time = |from_history: bool| {
        let started = Instant::now();
        for _ in 0..3 {
            if from_history {
                rt.block_on(projector.as_of(until)).unwrap();
            } else {
                rt.block_on(replay(&store, CountPerType::default(), Start::Beginning, until)).unwrap();
            }
        }
        started.elapsed() / 3
    };
    let (fast, slow) = (time(true), time(false));
    eprintln!(
        "projection_as_of_1m: as of the middle, {fast:.1?} from the nearest saved state vs {slow:.1?} from the start ({:.0}x)",
        slow.as_secs_f64() / fast.as_secs_f64()
    );
}

criterion_group!(benches, aggregate_as_of, projection_as_of);
criterion_main!(benches);
