//! Benchmarks of the log's consumers on the sled store: replaying a 1M-event log into a projection, a
//! replay whose filter admits 1 % of the events, and the live latency from a durable append to a
//! subscription's handler.
//!
//! | group | what |
//! | --- | --- |
//! | `replay_1m` | `replay` of 1,000,000 events into a count-per-type projection; the same through a running `Projector::in_memory` until it has caught up; beside them the baselines: `read_log` alone, raw sled reading the same directory's log records and checking and decoding them by hand into the same count per type (the ratio's baseline), and raw sled iterating those records with no check and no decoding (sled alone) |
//! | `filter_1pct_1m` | the same replay with a filter that admits one event type, exactly 1 % of the log (throughput in matching events); and a filter that admits nothing (throughput in events looked at) |
//! | `live_latency` | one event appended at a time (`Fsync`); the time from the start of the append to the handler of 1 subscription, and of the last of 10; beside it, the append's own latency (start → `append` returned) in the same rounds |
//!
//! The 1M-event fixture is 10,000 streams of 100 events (~200-byte JSON payloads), appended 10 streams
//! per `append_multi`, `Durability::Buffered`, then reopened with `Fsync`. Its mix has 10 event types:
//! each stream's 51st event is an `OrderRefunded` (10,000 events, exactly 1 %), the other 99 cycle
//! through 9 types (110,000 events each). It is built fresh in every run (5 to 10 s), not cached
//! between runs, so that no figure comes from a store an older build wrote.
//!
//! Criterion cannot compute percentiles of a quantity it does not time itself, so `live_latency`
//! reports criterion's mean (through `iter_custom`) and prints p50 / p99 / max of 2,000 separate
//! samples to stderr, on lines starting `live_latency/`. Every latency starts at the start of the
//! append, so it cannot go negative. (It is not measured from the acknowledgment: the store moves its
//! head, which wakes the subscriptions, just before it answers the append, so a handler often runs
//! before the appending task has resumed, and "ack → handler" comes out negative; the printed lines
//! say in how many samples that happened.) What delivery adds is the handler's latency minus the
//! append's, both from the same rounds.
//!
//! `filter_1pct_1m` prints the filtered/full time ratio, from alternating runs, on a line starting
//! `filter_1pct_1m:`. Other diagnostics (fixture build and reopen times) start with `fixture:`.
//!
//! The whole run takes about 3 minutes on 2 cores. Figures, and the machine they were measured on, go
//! to `docs/PERFORMANCE.md`.
//!
//! ```text
//! cargo bench --bench consumers
//! cargo bench --bench consumers -- live_latency   # one group only (a criterion filter)
//! ANNALS_BENCH_CACHE_MB=1024 cargo bench --bench consumers -- replay_1m   # with a 1 GiB sled cache
//! # the figures and diagnostics only:
//! cargo bench --bench consumers 2>&1 | grep -E '^[a-z_0-9]+/|time:|thrpt:|^fixture|^filter_1pct|^live_latency'
//! ```
#![allow(clippy::print_stderr, missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{cache, decode_record, multi_thread_runtime, payload, scratch_dir, PAYLOAD_LEN};

use annals::{
    replay, Durability, EventStore, ExpectedVersion, Handler, HandlerError, LogFilter, NewEvent, Phase, Position,
    Projection, Projector, ReadLog, RecordedEvent, SledConfig, SledStore, Start, StreamAppend, StreamId, Subscription,
    SubscriptionConfig, SubscriptionHandle, Until,
};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput};
use futures_util::TryStreamExt;
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

/// Streams of the 1M-event fixture.
const STREAMS: u64 = 10_000;
const EVENTS_PER_STREAM: u64 = 100;
/// Events in the 1M-event fixture.
const EVENTS: u64 = STREAMS * EVENTS_PER_STREAM;
/// Streams per `append_multi` while building the fixture (1000 events per append).
const STREAMS_PER_APPEND: u64 = 10;
/// The nine common event types: 11 % of the log each.
const COMMON: [&str; 9] = [
    "OrderPlaced",
    "ItemAdded",
    "ItemRemoved",
    "PriceChanged",
    "AddressChanged",
    "PaymentAuthorized",
    "PaymentCaptured",
    "OrderShipped",
    "OrderDelivered",
];
/// The rare event type: one per stream, exactly 1 % of the log.
const RARE: &str = "OrderRefunded";
const RARE_EVENTS: u64 = STREAMS;
/// The index in its stream (from 0) of every stream's rare event.
const RARE_AT: u64 = 50;
/// Latency samples behind each printed percentile line.
const LATENCY_SAMPLES: usize = 2_000;
/// Round trips before the latency samples, not counted.
const LATENCY_WARM_UP: usize = 200;

/// The type of the event at `index` (from 0) in its stream: the rare type at `RARE_AT`, the common
/// types in turn elsewhere (99 events, 11 of each).
fn event_type(index: u64) -> &'static str {
    if index == RARE_AT {
        return RARE;
    }
    let common = index - u64::from(index > RARE_AT);
    COMMON[(common % COMMON.len() as u64) as usize]
}

fn open_store(path: &Path, durability: Durability) -> SledStore {
    SledConfig::new(path).durability(durability).cache_capacity(cache()).open().unwrap()
}

// ---------------------------------------------------------------------------------------------------
// The projection.
// ---------------------------------------------------------------------------------------------------

/// Counts the events of each type; with `only`, asks for that type alone through its filter.
#[derive(Default)]
struct CountPerType {
    counts: HashMap<String, u64>,
    only: Option<&'static str>,
}

impl CountPerType {
    fn only(event_type: &'static str) -> Self {
        CountPerType { counts: HashMap::new(), only: Some(event_type) }
    }

    fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

#[async_trait::async_trait]
impl Projection for CountPerType {
    fn name(&self) -> &str {
        "count-per-type"
    }

    fn filter(&self) -> LogFilter {
        match self.only {
            Some(event_type) => LogFilter::all().event_types([event_type]),
            None => LogFilter::all(),
        }
    }

    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        match self.counts.get_mut(event.event_type.as_str()) {
            Some(count) => *count += 1,
            None => {
                self.counts.insert(event.event_type.clone(), 1);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------
// The 1M-event fixture.
// ---------------------------------------------------------------------------------------------------

/// What has the fixture's directory open: the store, raw sled (for the floor), or nothing.
enum Opened {
    Closed,
    Store(SledStore),
    Raw(sled::Db),
}

/// The 1M-event store, built on first use, shared by the replay benchmarks. The directory is opened
/// either as the store or as a raw sled database, never both (sled locks it).
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
                                .map(|i| NewEvent::raw(event_type(i), payload.as_str()))
                                .collect();
                            StreamAppend::new(stream, ExpectedVersion::NoStream, events)
                        })
                        .collect();
                    store.append_multi(appends).await.unwrap();
                }
            });
        }
        eprintln!(
            "fixture: {EVENTS} events in {} appends of {} (Buffered) in {:.1?}",
            STREAMS / STREAMS_PER_APPEND,
            STREAMS_PER_APPEND * EVENTS_PER_STREAM,
            started.elapsed()
        );
        let fixture = Fixture { opened: RefCell::new(Opened::Closed), runtime, path, _dir: dir };
        let store = fixture.store();
        assert_eq!(fixture.runtime.block_on(store.head()).unwrap(), Position::new(EVENTS));
        eprintln!("fixture: disk use {} MiB", store.size_on_disk().unwrap() >> 20);
        fixture
    }

    /// The store (`Fsync`), opened if the directory is closed or open as raw sled.
    fn store(&self) -> SledStore {
        let mut opened = self.opened.borrow_mut();
        if let Opened::Store(store) = &*opened {
            return store.clone();
        }
        *opened = Opened::Closed;
        let started = Instant::now();
        let store = open_store(&self.path, Durability::Fsync);
        eprintln!("fixture: opening the {EVENTS}-event store took {:.1?}", started.elapsed());
        *opened = Opened::Store(store.clone());
        store
    }

    /// The store's log records, through raw sled (the store is closed first).
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

    fn replay(&self, store: &SledStore, projection: CountPerType) -> CountPerType {
        self.runtime.block_on(replay(store, projection, Start::Beginning, Until::default())).unwrap()
    }

    /// Replays the whole log; checks every count.
    fn replay_all(&self, store: &SledStore) {
        let counts = self.replay(store, CountPerType::default()).counts;
        assert_eq!(counts.len(), COMMON.len() + 1);
        assert_eq!(counts[RARE], RARE_EVENTS);
        for event_type in COMMON {
            assert_eq!(counts[event_type], (EVENTS - RARE_EVENTS) / COMMON.len() as u64);
        }
    }

    /// Replays the rare type only.
    fn replay_rare(&self, store: &SledStore) {
        let counts = self.replay(store, CountPerType::only(RARE));
        assert_eq!((counts.counts.len(), counts.total()), (1, RARE_EVENTS));
    }
}

fn replay_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    group
}

// ---------------------------------------------------------------------------------------------------
// 1. Replay of 1M events, with the read floors beside it.
// ---------------------------------------------------------------------------------------------------

fn replays(c: &mut Criterion) {
    // Built on first use, so that a filter that skips these benchmarks skips the build.
    let cell = OnceCell::new();
    let fixture = || cell.get_or_init(Fixture::build);

    let mut group = replay_group(c, "replay_1m");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("annals_replay", |b| {
        let f = fixture();
        let store = f.store();
        b.iter(|| f.replay_all(&store));
    });
    group.bench_function("annals_projector_in_memory", |b| {
        let f = fixture();
        let store = f.store();
        b.iter(|| {
            f.runtime.block_on(async {
                let projector = Projector::in_memory(store.clone(), CountPerType::default).run().await.unwrap();
                assert_eq!(projector.caught_up().await.unwrap(), Position::new(EVENTS));
                assert_eq!(projector.read().await.unwrap().total(), EVENTS);
                projector.stop().await.unwrap();
            });
        });
    });
    // The floor under a replay: the same events read and decoded, with nothing handling them.
    group.bench_function("annals_read_log", |b| {
        let f = fixture();
        let store = f.store();
        b.iter(|| {
            let count = f.runtime.block_on(async {
                let log = store.read_log(ReadLog::from_start());
                log.try_fold(0, |n, event| async move { Ok(n + u64::from(!black_box(event).payload.is_empty())) })
                    .await
                    .unwrap()
            });
            assert_eq!(count, EVENTS);
        });
    });
    // The baseline: raw sled reading the same directory's log records (about 14 events each),
    // checking their CRCs and decoding every envelope field into owned values by hand, then counting
    // per type as the projection does. The ratio of `annals_replay` to this is the figure to follow.
    group.bench_function("raw_sled_check_decode_count", |b| {
        let f = fixture();
        let log = f.raw_log();
        b.iter(|| {
            let mut counts: HashMap<String, u64> = HashMap::new();
            for entry in log.scan_prefix([b'L']) {
                let (key, value) = entry.unwrap();
                decode_record(&key, &value, |event| {
                    let event = black_box(event);
                    match counts.get_mut(event.event_type.as_str()) {
                        Some(count) => *count += 1,
                        None => {
                            counts.insert(event.event_type, 1);
                        }
                    }
                });
            }
            assert_eq!(counts.len(), COMMON.len() + 1);
            assert_eq!(counts.values().sum::<u64>(), EVENTS);
        });
    });
    // Sled alone: the same records handed over with no check and no decoding.
    group.bench_function("raw_sled_scan_records", |b| {
        let f = fixture();
        let log = f.raw_log();
        b.iter(|| {
            let mut bytes = 0;
            for entry in log.scan_prefix([b'L']) {
                let (_, value) = entry.unwrap();
                bytes += black_box(value).len() as u64;
            }
            assert!(bytes > EVENTS * PAYLOAD_LEN as u64);
        });
    });
    group.finish();

    // -----------------------------------------------------------------------------------------------
    // 2. A filter that admits 1 % of the log.
    // -----------------------------------------------------------------------------------------------

    let mut group = replay_group(c, "filter_1pct_1m");
    let ratio_printed = Cell::new(false);
    group.throughput(Throughput::Elements(RARE_EVENTS));
    group.bench_function("annals_replay_filtered", |b| {
        let f = fixture();
        let store = f.store();
        if !ratio_printed.replace(true) {
            print_filter_ratio(f, &store);
        }
        b.iter(|| f.replay_rare(&store));
    });
    // What every filtered replay pays whatever it matches: each record fetched and checksummed, each
    // event's entry checksummed and its stream and type peeked.
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("annals_replay_filter_admits_none", |b| {
        let f = fixture();
        let store = f.store();
        b.iter(|| {
            let counts = f.replay(&store, CountPerType::only("NoSuchType"));
            assert_eq!(counts.total(), 0);
        });
    });
    group.finish();
}

/// Times full and 1 %-filtered replays alternately (three of each) and prints the medians and their
/// ratio: the comparison the group is for, measured side by side.
fn print_filter_ratio(f: &Fixture, store: &SledStore) {
    let (mut full, mut filtered) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let started = Instant::now();
        f.replay_all(store);
        full.push(started.elapsed());
        let started = Instant::now();
        f.replay_rare(store);
        filtered.push(started.elapsed());
    }
    full.sort();
    filtered.sort();
    let (full, filtered) = (full[1], filtered[1]);
    eprintln!(
        "filter_1pct_1m: median of 3 alternating runs: full replay {full:.1?}, 1 % filtered {filtered:.1?} \
         (ratio {:.3}); {:.2} µs per matching event, {:.0} ns per event of the log",
        filtered.as_secs_f64() / full.as_secs_f64(),
        filtered.as_secs_f64() * 1e6 / RARE_EVENTS as f64,
        filtered.as_secs_f64() * 1e9 / EVENTS as f64,
    );
}

// ---------------------------------------------------------------------------------------------------
// 3. Live latency: append start → handler, beside append start → durable acknowledgment.
// ---------------------------------------------------------------------------------------------------

/// A handler that notes when it saw each event: (subscription, position, instant).
struct Stamp {
    subscription: usize,
    seen: mpsc::UnboundedSender<(usize, Position, Instant)>,
}

#[async_trait::async_trait]
impl Handler for Stamp {
    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        let now = Instant::now();
        let _ = self.seen.send((self.subscription, event.position, now));
        Ok(())
    }
}

/// One append's timeline.
struct Sample {
    started: Instant,
    acked: Instant,
    /// When each subscription's handler saw the event.
    seen: Vec<Instant>,
}

/// Microseconds from the start of the append to `to`. Every instant of a sample comes after the
/// append started (a handler sees the event only once it is appended), so this never goes negative;
/// it fails loudly if that ever stops being so.
fn since_start(sample: &Sample, to: Instant) -> f64 {
    to.checked_duration_since(sample.started).expect("an instant of a sample precedes its append").as_secs_f64() * 1e6
}

/// A store with `subscriptions` live subscriptions whose handlers stamp what they see.
struct Probe {
    store: SledStore,
    stream: StreamId,
    payload: String,
    seen: mpsc::UnboundedReceiver<(usize, Position, Instant)>,
    handles: Vec<SubscriptionHandle>,
    _dir: TempDir,
}

impl Probe {
    async fn start(subscriptions: usize) -> Self {
        let dir = scratch_dir();
        let store = open_store(&dir.path().join("annals"), Durability::Fsync);
        let (sender, seen) = mpsc::unbounded_channel();
        let mut handles = Vec::new();
        for subscription in 0..subscriptions {
            let config = SubscriptionConfig::new(format!("latency-{subscription}"));
            let handler = Stamp { subscription, seen: sender.clone() };
            handles.push(Subscription::start(store.clone(), config, handler).await.unwrap());
        }
        for handle in &handles {
            handle.caught_up().await.unwrap();
        }
        let stream = StreamId::new("latency-1").unwrap();
        Probe { store, stream, payload: payload(), seen, handles, _dir: dir }
    }

    /// Appends one event and waits until every subscription's handler has seen it.
    async fn round(&mut self) -> Sample {
        let subscriptions = self.handles.len();
        let event = NewEvent::raw(COMMON[0], self.payload.as_str());
        let started = Instant::now();
        let appended = self.store.append(&self.stream, ExpectedVersion::Any, vec![event]).await.unwrap();
        let acked = Instant::now();
        let mut seen = vec![None; subscriptions];
        let mut missing = subscriptions;
        while missing > 0 {
            let (subscription, position, at) = self.seen.recv().await.unwrap();
            if position == appended.last_position && seen[subscription].replace(at).is_none() {
                missing -= 1;
            }
        }
        Sample { started, acked, seen: seen.into_iter().map(Option::unwrap).collect() }
    }

    async fn samples(&mut self, count: usize) -> Vec<Sample> {
        for _ in 0..LATENCY_WARM_UP {
            self.round().await;
        }
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count {
            samples.push(self.round().await);
        }
        samples
    }

    /// `iters` rounds; the sum of `latency` over them.
    async fn total(&mut self, iters: u64, latency: fn(&Sample) -> f64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let sample = self.round().await;
            total += Duration::from_secs_f64(latency(&sample) / 1e6);
        }
        total
    }

    async fn stop(self) {
        for handle in self.handles {
            handle.stop().await.unwrap();
        }
    }
}

/// From the start of the append to the last handler that saw the event.
fn append_to_last(sample: &Sample) -> f64 {
    sample.seen.iter().map(|at| since_start(sample, *at)).fold(0.0, f64::max)
}

/// From the start of the append to its durable acknowledgment (`append` returned): the append's own
/// latency, measured on the same clock in the same rounds.
fn append_to_ack(sample: &Sample) -> f64 {
    since_start(sample, sample.acked)
}

/// p50 / p99 / max of `values` (nearest rank), in microseconds.
fn percentiles(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    let rank = |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    format!("p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs", rank(0.50), rank(0.99), rank(1.0))
}

fn print_latencies(name: &str, samples: &[Sample]) {
    let subscriptions = samples[0].seen.len();
    let of = |f: fn(&Sample) -> f64| percentiles(samples.iter().map(f).collect());
    let early = samples.iter().filter(|s| s.seen.iter().any(|at| *at < s.acked)).count();
    let handlers = if subscriptions == 1 { "handler".to_owned() } else { format!("last of {subscriptions} handlers") };
    eprintln!("{name}: {} samples; append start → {handlers}: {}", samples.len(), of(append_to_last));
    eprintln!("{name}: append start → durable ack: {}", of(append_to_ack));
    eprintln!("{name}: a handler ran before the appending task saw its ack in {early} samples");
    if subscriptions > 1 {
        for subscription in 0..subscriptions {
            let each = samples.iter().map(|s| since_start(s, s.seen[subscription])).collect();
            eprintln!("{name}: append start → handler of subscription {subscription}: {}", percentiles(each));
        }
    }
}

fn live_latency(c: &mut Criterion) {
    let runtime = multi_thread_runtime();
    let mut group = c.benchmark_group("live_latency");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    for subscriptions in [1, 10] {
        let name = if subscriptions == 1 { "1_sub".to_owned() } else { format!("{subscriptions}_subs") };
        // Built only when one of the two benchmarks runs; percentiles printed once, before criterion.
        let probe: RefCell<Option<Probe>> = RefCell::new(None);
        let with_probe = |work: &mut dyn FnMut(&mut Probe)| {
            let mut probe = probe.borrow_mut();
            let probe = probe.get_or_insert_with(|| {
                let mut probe = runtime.block_on(Probe::start(subscriptions));
                let samples = runtime.block_on(probe.samples(LATENCY_SAMPLES));
                print_latencies(&format!("live_latency/{name}"), &samples);
                probe
            });
            work(probe);
        };
        group.bench_function(format!("{name}_append_to_handler"), |b| {
            with_probe(&mut |probe| b.iter_custom(|iters| runtime.block_on(probe.total(iters, append_to_last))));
        });
        group.bench_function(format!("{name}_append_to_ack"), |b| {
            with_probe(&mut |probe| b.iter_custom(|iters| runtime.block_on(probe.total(iters, append_to_ack))));
        });
        if let Some(probe) = probe.take() {
            runtime.block_on(probe.stop());
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = replays, live_latency
}
criterion_main!(benches);
