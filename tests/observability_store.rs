//! The store layer reports its appends, commit groups and reads (docs/observability.md), in every
//! backend: after appends of known sizes, `annals.events.appended` counts their events,
//! `annals.appends` counts each by outcome (`ok`, `retry`, `conflict`, `invalid`), every stored
//! event is in a recorded `annals.commit_group.size`, `annals.head` is the head, the units are
//! described, and the `annals.append` span of each append was entered with its stream and positions
//! (or its `error.type`). A restore counts as appends, and every read page has its trace span.
//!
//! How it captures across threads: the sled writer and syncer are threads of their own and the
//! PostgreSQL writer is a tokio task, so a thread-local recorder or subscriber would miss what they
//! report. This binary installs a global recorder and a global subscriber of its own, once, and runs
//! its tests one at a time (a mutex), each on a fresh store: counters and histograms are compared as
//! deltas from the test's start, spans are cleared at its start. Nothing a test checks is reported
//! after its append returns (the writers record before they answer), so waiting is never needed.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "postgres")]
#[path = "common/postgres.rs"]
mod postgres_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Once};

use annals::{
    EventStore, ExpectedVersion, MemoryStore, NewEvent, Position, ReadLog, ReadStream, SledStore, StreamAppend,
    StreamId,
};
use futures_util::TryStreamExt;
use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};

// ---- the capturing recorder -------------------------------------------------------------------

/// Every metric reported in this process, by key.
#[derive(Default)]
struct Metrics {
    counters: Mutex<HashMap<Key, Arc<AtomicU64>>>,
    /// `f64` bits, as `metrics` stores a gauge in an `AtomicU64`.
    gauges: Mutex<HashMap<Key, Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<Key, Arc<Samples>>>,
    units: Mutex<HashMap<String, Unit>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        lock(&self.0).push(value);
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// The global recorder: it writes into [`METRICS`].
struct Capture;

impl Recorder for Capture {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        describe(key, unit);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        describe(key, unit);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        describe(key, unit);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::clone(lock(&METRICS.counters).entry(key.clone()).or_default()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::clone(lock(&METRICS.gauges).entry(key.clone()).or_default()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::clone(lock(&METRICS.histograms).entry(key.clone()).or_default()))
    }
}

fn describe(key: KeyName, unit: Option<Unit>) {
    if let Some(unit) = unit {
        lock(&METRICS.units).insert(key.as_str().to_owned(), unit);
    }
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    Key::from_parts(name, labels.iter().map(|(k, v)| Label::new(*k, *v)).collect::<Vec<_>>())
}

fn counter(name: &'static str, labels: &[(&'static str, &'static str)]) -> u64 {
    lock(&METRICS.counters).get(&key(name, labels)).map_or(0, |c| c.load(Ordering::SeqCst))
}

fn gauge(name: &'static str, labels: &[(&'static str, &'static str)]) -> Option<f64> {
    lock(&METRICS.gauges).get(&key(name, labels)).map(|g| f64::from_bits(g.load(Ordering::SeqCst)))
}

fn samples(name: &'static str, labels: &[(&'static str, &'static str)]) -> Vec<f64> {
    lock(&METRICS.histograms).get(&key(name, labels)).map_or_else(Vec::new, |h| lock(&h.0).clone())
}

// ---- the capturing subscriber -----------------------------------------------------------------

/// A span as it was created and recorded: its name, fields (as text) and whether it was entered.
#[derive(Clone, Debug, Default)]
struct SpanData {
    name: &'static str,
    fields: HashMap<&'static str, String>,
    entered: bool,
}

static SPANS: LazyLock<Mutex<HashMap<u64, SpanData>>> = LazyLock::new(Default::default);

/// The global subscriber: it keeps every span in [`SPANS`].
struct Collect {
    next: AtomicU64,
}

struct Fields<'a>(&'a mut HashMap<&'static str, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
}

impl Subscriber for Collect {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let mut data = SpanData { name: span.metadata().name(), ..SpanData::default() };
        span.record(&mut Fields(&mut data.fields));
        lock(&SPANS).insert(id, data);
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(data) = lock(&SPANS).get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut data.fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &Event<'_>) {}

    fn enter(&self, span: &Id) {
        if let Some(data) = lock(&SPANS).get_mut(&span.into_u64()) {
            data.entered = true;
        }
    }

    fn exit(&self, _: &Id) {}
}

/// The spans named `name` recorded since the test began.
fn spans(name: &str) -> Vec<SpanData> {
    lock(&SPANS).values().filter(|s| s.name == name).cloned().collect()
}

// ---- one test at a time -----------------------------------------------------------------------

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Installs the recorder and subscriber (once) and holds the binary's lock for one test, whose
/// spans start empty.
fn serial() -> MutexGuard<'static, ()> {
    static INSTALL: Once = Once::new();
    static SERIAL: Mutex<()> = Mutex::new(());
    INSTALL.call_once(|| {
        metrics::set_global_recorder(Capture).expect("no other recorder in this binary");
        tracing::subscriber::set_global_default(Collect { next: AtomicU64::new(1) })
            .expect("no other subscriber in this binary");
    });
    let guard = lock(&SERIAL);
    lock(&SPANS).clear();
    guard
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

// ---- the checks, the same for every store -----------------------------------------------------

fn events(n: usize) -> Vec<NewEvent> {
    (0..n).map(|i| NewEvent::raw("Ticked", format!("{{\"i\":{i}}}"))).collect()
}

/// The counters and histogram sample counts of a `store`, to compare before and after.
#[derive(Debug, PartialEq)]
struct Counts {
    ok: u64,
    retry: u64,
    conflict: u64,
    invalid: u64,
    error: u64,
    events: u64,
    durations: usize,
    group_sizes: Vec<f64>,
    commits: usize,
}

fn counts(store: &'static str) -> Counts {
    let by = |outcome| counter("annals.appends", &[("store", store), ("outcome", outcome)]);
    Counts {
        ok: by("ok"),
        retry: by("retry"),
        conflict: by("conflict"),
        invalid: by("invalid"),
        error: by("error"),
        events: counter("annals.events.appended", &[("store", store)]),
        durations: samples("annals.append.duration", &[("store", store)]).len(),
        group_sizes: samples("annals.commit_group.size", &[("store", store)]),
        commits: samples("annals.commit.duration", &[("store", store)]).len(),
    }
}

/// Appends 1, 3 and 5 events to three new streams, retries the second append, appends to the first
/// stream expecting no stream (a conflict) and sends an empty append (invalid input), then checks
/// every metric and span of the `store` label `name`.
async fn appends_are_reported(store: &dyn EventStore, name: &'static str) {
    let before = counts(name);
    let streams: Vec<StreamId> = ["obs-a", "obs-b", "obs-c"].iter().map(|s| StreamId::new(*s).unwrap()).collect();
    let sizes = [1, 3, 5];
    let mut sent = Vec::new();
    for (stream, size) in streams.iter().zip(sizes) {
        let batch = events(size);
        let result = store.append(stream, ExpectedVersion::NoStream, batch.clone()).await.unwrap();
        assert!(!result.already_appended);
        sent.push(batch);
    }
    let retried = store.append(&streams[1], ExpectedVersion::NoStream, sent[1].clone()).await.unwrap();
    assert!(retried.already_appended);
    let conflict = store.append(&streams[0], ExpectedVersion::NoStream, events(1)).await;
    assert!(matches!(&conflict, Err(e) if e.is_conflict()), "{conflict:?}");
    let empty = store.append_multi(vec![StreamAppend::new(streams[2].clone(), ExpectedVersion::Any, vec![])]).await;
    assert!(matches!(&empty, Err(e) if e.is_invalid_input()), "{empty:?}");

    let after = counts(name);
    assert_eq!(after.ok - before.ok, 3, "appends ok");
    assert_eq!(after.retry - before.retry, 1, "appends retried");
    assert_eq!(after.conflict - before.conflict, 1, "appends in conflict");
    assert_eq!(after.invalid - before.invalid, 1, "invalid appends");
    assert_eq!(after.error - before.error, 0, "failed appends");
    assert_eq!(after.events - before.events, 9, "events appended");
    assert_eq!(after.durations - before.durations, 6, "one duration per append, whatever its outcome");
    let new_groups = &after.group_sizes[before.group_sizes.len()..];
    assert_eq!(new_groups.iter().sum::<f64>(), 9.0, "every stored event is in a commit group: {new_groups:?}");
    assert!(new_groups.iter().all(|size| *size > 0.0), "{new_groups:?}");
    assert_eq!(after.commits - before.commits, new_groups.len(), "one commit duration per group");
    let head = store.head().await.unwrap();
    assert_eq!(head, Position::new(9));
    assert_eq!(gauge("annals.head", &[("store", name)]), Some(9.0), "annals.head is the head");
    assert!(matches!(lock(&METRICS.units).get("annals.append.duration"), Some(Unit::Seconds)));
    assert!(matches!(lock(&METRICS.units).get("annals.commit_group.size"), Some(Unit::Count)));

    let appends = spans("annals.append");
    assert_eq!(appends.len(), 6, "one annals.append span per append: {appends:#?}");
    assert!(appends.iter().all(|s| s.entered && s.fields.get("db.system.name").map(String::as_str) == Some(name)));
    let second = |s: &&SpanData| s.fields.get("annals.stream").map(String::as_str) == Some("obs-b");
    let b: Vec<_> = appends.iter().filter(second).collect();
    assert_eq!(b.len(), 2, "the append to obs-b and its retry: {b:#?}");
    for span in b {
        assert_eq!(span.fields.get("annals.events").map(String::as_str), Some("3"));
        assert_eq!(span.fields.get("annals.streams").map(String::as_str), Some("1"));
        assert_eq!(span.fields.get("annals.expected_version").map(String::as_str), Some("NoStream"));
        assert_eq!(span.fields.get("annals.position.first").map(String::as_str), Some("2"), "{span:?}");
        assert_eq!(span.fields.get("annals.position.last").map(String::as_str), Some("4"), "{span:?}");
    }
    let errors: Vec<_> = appends.iter().filter_map(|s| s.fields.get("error.type").map(String::as_str)).collect();
    assert!(errors.contains(&"WrongExpectedVersion") && errors.contains(&"EmptyAppend"), "{errors:?}");
    let groups = spans("annals.commit_group");
    let grouped: u64 = groups.iter().filter_map(|s| s.fields.get("annals.events")?.parse::<u64>().ok()).sum();
    assert_eq!(grouped, 9, "the annals.commit_group spans hold every event: {groups:#?}");
    assert!(groups.iter().all(|s| s.fields.get("db.system.name").map(String::as_str) == Some(name)));
    assert!(groups.iter().any(|s| s.fields.contains_key("annals.commit.duration_ms")), "{groups:#?}");
}

/// Reads the log and the stream `obs-c` (5 events) back, and checks their trace spans.
async fn reads_are_traced(store: &dyn EventStore) {
    let log: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await.unwrap();
    assert_eq!(log.len(), 9);
    let pages = spans("annals.read_log");
    assert!(
        pages.iter().any(|s| s.fields.get("annals.position.from").map(String::as_str) == Some("1")
            && s.fields.get("annals.events").map(String::as_str) == Some("9")),
        "{pages:#?}"
    );
    let stream = StreamId::new("obs-c").unwrap();
    let read: Vec<_> = store.read_stream(&stream, ReadStream::forward()).try_collect().await.unwrap();
    assert_eq!(read.len(), 5);
    let pages = spans("annals.read_stream");
    assert!(
        pages.iter().any(|s| s.fields.get("annals.stream").map(String::as_str) == Some("obs-c")
            && s.fields.get("annals.events").map(String::as_str) == Some("5")),
        "{pages:#?}"
    );
}

#[test]
fn memory_store_reports_appends_by_outcome_groups_head_and_reads() {
    let _serial = serial();
    runtime().block_on(async {
        let store = MemoryStore::new();
        appends_are_reported(&store, "memory").await;
        reads_are_traced(&store).await;
    });
}

#[test]
fn sled_store_reports_appends_by_outcome_groups_syncs_head_and_reads() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).unwrap();
        let syncs = samples("annals.sync.duration", &[("store", "sled")]).len();
        appends_are_reported(&store, "sled").await;
        let synced = samples("annals.sync.duration", &[("store", "sled")]).len() - syncs;
        assert!(synced >= 1, "an Fsync store records its fsyncs");
        let groups = spans("annals.commit_group");
        assert!(groups.iter().any(|s| s.fields.contains_key("annals.sync.duration_ms")), "{groups:#?}");
        reads_are_traced(&store).await;
    });
}

#[test]
fn a_restore_counts_as_appends_of_its_events() {
    let _serial = serial();
    runtime().block_on(async {
        let source = MemoryStore::new();
        let stream = StreamId::new("r-a").unwrap();
        source.append(&stream, ExpectedVersion::NoStream, events(6)).await.unwrap();
        let log: Vec<_> = source.read_log(ReadLog::from_start()).try_collect().await.unwrap();
        let target = MemoryStore::new();
        let before = counts("memory");
        target.restore(log).await.unwrap();
        let after = counts("memory");
        assert_eq!(after.events - before.events, 6, "restored events are appended events");
        assert_eq!(after.ok - before.ok, 1, "a restored batch of one stream is one append");
        assert_eq!(gauge("annals.head", &[("store", "memory")]), Some(6.0));
    });
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_store_reports_appends_by_outcome_groups_head_and_reads() {
    let _serial = serial();
    runtime().block_on(async {
        let store = postgres_support::fresh_config().unwrap().open().await.unwrap();
        appends_are_reported(&store, "postgresql").await;
        reads_are_traced(&store).await;
    });
}
