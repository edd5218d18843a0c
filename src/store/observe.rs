//! What the store layer reports through `tracing` and `metrics` (docs/observability.md): the
//! `annals.append` span and the append metrics every backend records the same way, the commit group
//! metrics of the writers, and the descriptions (units) of them all.
//!
//! The hot path stays cheap when no subscriber and no recorder are installed: every metric key is a
//! `static` with `&'static str` labels (no allocation to build it), and span fields are evaluated
//! only when the span is enabled.

use std::sync::Once;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Unit};
use tracing::field::Empty;
use tracing::Span;

use crate::error::Result;
use crate::store::{AppendResult, StreamAppend};

/// Which backend reports: the `store` label and the span field `db.system.name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoreKind {
    /// [`MemoryStore`](crate::MemoryStore).
    Memory,
    /// [`SledStore`](crate::SledStore).
    Sled,
    /// The PostgreSQL store.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Postgres,
}

impl StoreKind {
    /// The label value: `memory`, `sled` or `postgresql`.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Sled => "sled",
            StoreKind::Postgres => "postgresql",
        }
    }

    const fn index(self) -> usize {
        match self {
            StoreKind::Memory => 0,
            StoreKind::Sled => 1,
            StoreKind::Postgres => 2,
        }
    }
}

/// How an append was answered: the `outcome` label of `annals.appends`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Retry,
    Conflict,
    Invalid,
    Error,
}

impl Outcome {
    /// The outcome of an append answered `result`.
    pub(crate) fn of(result: &Result<Vec<AppendResult>>) -> Outcome {
        match result {
            Ok(results) if !results.is_empty() && results.iter().all(|r| r.already_appended) => Outcome::Retry,
            Ok(_) => Outcome::Ok,
            Err(error) if error.is_conflict() => Outcome::Conflict,
            Err(error) if error.is_invalid_input() => Outcome::Invalid,
            Err(_) => Outcome::Error,
        }
    }

    const fn index(self) -> usize {
        match self {
            Outcome::Ok => 0,
            Outcome::Retry => 1,
            Outcome::Conflict => 2,
            Outcome::Invalid => 3,
            Outcome::Error => 4,
        }
    }
}

const APPEND_DURATION: &str = "annals.append.duration";
const APPENDS: &str = "annals.appends";
const EVENTS_APPENDED: &str = "annals.events.appended";
const COMMIT_GROUP_SIZE: &str = "annals.commit_group.size";
const COMMIT_DURATION: &str = "annals.commit.duration";
const SYNC_DURATION: &str = "annals.sync.duration";
const HEAD: &str = "annals.head";

/// The metadata every store metric is registered with.
static METADATA: Metadata<'static> = Metadata::new("annals::store", Level::INFO, Some(module_path!()));

/// `store = <kind>`, by [`StoreKind::index`].
static STORE_LABELS: [[Label; 1]; 3] = [
    [Label::from_static_parts("store", "memory")],
    [Label::from_static_parts("store", "sled")],
    [Label::from_static_parts("store", "postgresql")],
];

/// `store = <kind>, outcome = <outcome>`, by [`StoreKind::index`] then [`Outcome::index`].
macro_rules! outcome_labels {
    ($store:literal) => {
        [
            [Label::from_static_parts("store", $store), Label::from_static_parts("outcome", "ok")],
            [Label::from_static_parts("store", $store), Label::from_static_parts("outcome", "retry")],
            [Label::from_static_parts("store", $store), Label::from_static_parts("outcome", "conflict")],
            [Label::from_static_parts("store", $store), Label::from_static_parts("outcome", "invalid")],
            [Label::from_static_parts("store", $store), Label::from_static_parts("outcome", "error")],
        ]
    };
}
static OUTCOME_LABELS: [[[Label; 2]; 5]; 3] =
    [outcome_labels!("memory"), outcome_labels!("sled"), outcome_labels!("postgresql")];

/// One key per store kind for a metric labelled by `store` alone.
macro_rules! store_keys {
    ($name:expr) => {
        [
            Key::from_static_parts($name, &STORE_LABELS[0]),
            Key::from_static_parts($name, &STORE_LABELS[1]),
            Key::from_static_parts($name, &STORE_LABELS[2]),
        ]
    };
}
static APPEND_DURATION_KEYS: [Key; 3] = store_keys!(APPEND_DURATION);
static EVENTS_APPENDED_KEYS: [Key; 3] = store_keys!(EVENTS_APPENDED);
static COMMIT_GROUP_SIZE_KEYS: [Key; 3] = store_keys!(COMMIT_GROUP_SIZE);
static COMMIT_DURATION_KEYS: [Key; 3] = store_keys!(COMMIT_DURATION);
static SYNC_DURATION_KEYS: [Key; 3] = store_keys!(SYNC_DURATION);
static HEAD_KEYS: [Key; 3] = store_keys!(HEAD);

/// One key per store kind and outcome for `annals.appends`.
macro_rules! outcome_keys {
    ($store:expr) => {
        [
            Key::from_static_parts(APPENDS, &OUTCOME_LABELS[$store][0]),
            Key::from_static_parts(APPENDS, &OUTCOME_LABELS[$store][1]),
            Key::from_static_parts(APPENDS, &OUTCOME_LABELS[$store][2]),
            Key::from_static_parts(APPENDS, &OUTCOME_LABELS[$store][3]),
            Key::from_static_parts(APPENDS, &OUTCOME_LABELS[$store][4]),
        ]
    };
}
static APPENDS_KEYS: [[Key; 5]; 3] = [outcome_keys!(0), outcome_keys!(1), outcome_keys!(2)];

fn counter(key: &'static Key) -> Counter {
    metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA))
}

fn gauge(key: &'static Key) -> Gauge {
    metrics::with_recorder(|recorder| recorder.register_gauge(key, &METADATA))
}

fn histogram(key: &'static Key) -> Histogram {
    metrics::with_recorder(|recorder| recorder.register_histogram(key, &METADATA))
}

/// Describes every store metric (unit and meaning) to the recorder installed now, once per process.
/// Called when a store opens, so that an exporter installed before knows the units.
pub(crate) fn describe() {
    static DESCRIBED: Once = Once::new();
    DESCRIBED.call_once(|| {
        use metrics::{describe_counter, describe_gauge, describe_histogram};
        describe_histogram!(
            APPEND_DURATION,
            Unit::Seconds,
            "one append, from the call to its acknowledgement, successful or not"
        );
        describe_counter!(APPENDS, Unit::Count, "appends answered, by outcome");
        describe_counter!(EVENTS_APPENDED, Unit::Count, "events acknowledged");
        describe_histogram!(COMMIT_GROUP_SIZE, Unit::Count, "events per commit group");
        describe_histogram!(COMMIT_DURATION, Unit::Seconds, "writing one commit group, sync included");
        describe_histogram!(SYNC_DURATION, Unit::Seconds, "the fsync of one commit group");
        describe_gauge!(HEAD, Unit::Count, "the last acknowledged position");
    });
}

/// The events an append answered `results` stored: none for a retry.
pub(crate) fn events_stored(results: &[AppendResult]) -> u64 {
    results.iter().filter(|r| !r.already_appended).map(events_of).sum()
}

fn events_of(result: &AppendResult) -> u64 {
    (result.last_position.get() + 1).saturating_sub(result.first_position.get())
}

/// One append being observed: its `annals.append` span and when it started. Every backend makes one
/// per append (and per restored batch, which is an append too) and [`finish`](Self::finish)es it
/// with the answer.
#[derive(Debug)]
pub(crate) struct AppendObserver {
    kind: StoreKind,
    span: Span,
    started: Instant,
}

impl AppendObserver {
    /// Opens the `annals.append` span of an append of `appends` to a `kind` store.
    pub(crate) fn start(kind: StoreKind, appends: &[StreamAppend]) -> Self {
        let span = tracing::debug_span!(
            "annals.append",
            db.system.name = kind.name(),
            annals.streams = appends.len(),
            annals.stream = appends.first().map(|a| a.stream.as_str()),
            annals.events = appends.iter().map(|a| a.events.len()).sum::<usize>(),
            annals.expected_version = appends.first().map(|a| tracing::field::debug(a.expected)),
            annals.position.first = Empty,
            annals.position.last = Empty,
            error.type = Empty,
        );
        AppendObserver { kind, span, started: Instant::now() }
    }

    /// The span, to instrument the append's future with.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Records the answer: the span's positions or error, `annals.append.duration`, `annals.appends`
    /// by outcome and `annals.events.appended`.
    pub(crate) fn finish(self, result: &Result<Vec<AppendResult>>) {
        let kind = self.kind.index();
        histogram(&APPEND_DURATION_KEYS[kind]).record(self.started.elapsed());
        let outcome = Outcome::of(result);
        counter(&APPENDS_KEYS[kind][outcome.index()]).increment(1);
        match result {
            Ok(results) => {
                let stored = events_stored(results);
                if stored > 0 {
                    counter(&EVENTS_APPENDED_KEYS[kind]).increment(stored);
                }
                if let (Some(first), Some(last)) = (results.first(), results.last()) {
                    self.span.record("annals.position.first", first.first_position.get());
                    self.span.record("annals.position.last", last.last_position.get());
                }
            }
            Err(error) => {
                self.span.record("error.type", error.kind());
            }
        }
    }
}

/// One commit group of a writer being observed: its `annals.commit_group` span, and the group
/// metrics once it is committed.
#[derive(Debug)]
pub(crate) struct GroupObserver {
    kind: StoreKind,
    span: Span,
}

impl GroupObserver {
    /// Opens the `annals.commit_group` span of a group of `appends` requests.
    pub(crate) fn start(kind: StoreKind, appends: usize) -> Self {
        let span = tracing::debug_span!(
            "annals.commit_group",
            db.system.name = kind.name(),
            annals.appends = appends,
            annals.events = Empty,
            annals.commit.duration_ms = Empty,
            annals.sync.duration_ms = Empty,
        );
        GroupObserver { kind, span }
    }

    /// The span, to enter or instrument the group's work with.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Records a group that wrote `events` events: `annals.commit_group.size` and the span's count.
    pub(crate) fn wrote(&self, events: u64) {
        histogram(&COMMIT_GROUP_SIZE_KEYS[self.kind.index()]).record(events as f64);
        self.span.record("annals.events", events);
    }

    /// Records on the span how long the fsync that made the group durable took (the histogram
    /// `annals.sync.duration` is recorded once per fsync, by [`synced`]).
    pub(crate) fn synced(&self, took: Duration) {
        self.span.record("annals.sync.duration_ms", took.as_secs_f64() * 1e3);
    }

    /// Records that the group is committed (durable, for a store that syncs), `took` after its write
    /// began: `annals.commit.duration` and the span's field.
    pub(crate) fn committed(&self, took: Duration) {
        histogram(&COMMIT_DURATION_KEYS[self.kind.index()]).record(took);
        self.span.record("annals.commit.duration_ms", took.as_secs_f64() * 1e3);
    }
}

/// Records one fsync of a `kind` store's writer (which may make several groups durable at once):
/// `annals.sync.duration`.
pub(crate) fn synced(kind: StoreKind, took: Duration) {
    histogram(&SYNC_DURATION_KEYS[kind.index()]).record(took);
}

/// Sets `annals.head` of a `kind` store to the last acknowledged position.
pub(crate) fn head(kind: StoreKind, head: u64) {
    gauge(&HEAD_KEYS[kind.index()]).set(head as f64);
}
