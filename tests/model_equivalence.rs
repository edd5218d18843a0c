//! Model equivalence: over random sequences of appends, retries, reopens and reads, [`SledStore`] and
//! [`MemoryStore`] answer exactly as a few dozen lines of obviously correct model do (a `Vec` of events
//! and a map from stream to version).
//!
//! Operations: single-stream appends (1 to 4 events, every kind of expected version, some of them
//! the stream's current version), two-stream `append_multi`, retries of an earlier request (the same
//! request, the same events sent to other streams, or the same events plus a new one), reopening the
//! store, forward and backward stream reads with a start and a limit, and log reads from a position
//! with an event-type and stream-prefix filter. After every operation the test compares the answer
//! (results, or the error with its data: the actual version of a conflict, the original positions of
//! a retry, where a reused id is stored) and then the whole state: head, every stream's version,
//! every stream read forward and the whole log, event by event (id, stream, version, position, type,
//! schema version, metadata, payload, `occurred_at`, and `recorded_at`, which must never change once
//! seen and never decrease along the log).
//!
//! Durability: each sled case picks [`Durability::Fsync`] or [`Durability::Buffered`] at random.
//! `Fsync` is the default and what users run; `Buffered` is faster and makes `Reopen` prove that a
//! clean drop writes everything out (nothing may be lost there, in either mode). An `Fsync` append
//! costs about 1 ms; with both modes mixed, 64 cases of up to 40 operations take about 5 s in a debug
//! build on 2 cores (`PROPTEST_CASES=1000` runs more). A failing case is shrunk for at most 2 minutes.
//!
//! Every sequence run on sled is run on [`MemoryStore`] too (where `Reopen` does nothing), against a
//! fresh model, and the memory store gets more sequences of its own: both backends behave alike.
//!
//! With the `postgres` feature, `PostgresStore` runs sequences of its own, each in a fresh schema of
//! the test binary's throwaway cluster; there `Reopen` drops the store (its writer, listener and
//! pooled connections) and opens the same schema again, so every later answer comes from the
//! database, not from anything the first handle kept. A PostgreSQL append is a network round trip
//! and a commit, so it runs fewer cases (16 by default; `PROPTEST_CASES` raises every count).
// The helpers below check and fail like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use annals::{
    AppendResult, Durability, Error, EventStore, ExpectedVersion, LogFilter, MemoryStore, Metadata, NewEvent, Position,
    ReadLog, ReadStream, RecordedEvent, SledConfig, SledStore, StreamAppend, StreamId, Version,
};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use tempfile::TempDir;
use uuid::Uuid;

#[cfg(feature = "postgres")]
#[path = "common/postgres.rs"]
mod postgres_support;

/// Two categories, so that the stream-prefix filter of log reads means something.
const STREAMS: [&str; 5] = ["order-0", "order-1", "order-2", "cart-3", "cart-4"];
const PREFIXES: [&str; 2] = ["order-", "cart-"];
const TYPES: [&str; 3] = ["Placed", "Paid", "Shipped"];

proptest! {
    #![proptest_config(ProptestConfig { cases: cases_or(64), max_shrink_time: 120_000, ..ProptestConfig::default() })]

    #[test]
    fn sled_store_behaves_like_the_model(ops in vec(op(), 1..=40), fsync in any::<bool>()) {
        let durability = if fsync { Durability::Fsync } else { Durability::Buffered };
        run(Backend::sled(durability), &ops);
        run(Backend::Memory(MemoryStore::new()), &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases_or(256), ..ProptestConfig::default() })]

    #[test]
    fn memory_store_behaves_like_the_model(ops in vec(op(), 1..=40)) {
        run(Backend::Memory(MemoryStore::new()), &ops);
    }
}

#[cfg(feature = "postgres")]
proptest! {
    #![proptest_config(ProptestConfig { cases: cases_or(16), max_shrink_time: 120_000, ..ProptestConfig::default() })]

    #[test]
    fn postgres_store_behaves_like_the_model(ops in vec(op(), 1..=40)) {
        run(Backend::postgres(), &ops);
    }
}

/// `PROPTEST_CASES` when set (for a deeper run), else `default`.
fn cases_or(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------------
// Operations and their strategies.

#[derive(Clone, Debug)]
enum Op {
    Append { stream: usize, expected: Expect, events: Vec<EventSpec> },
    AppendMulti { first: usize, offset: usize, expected: (Expect, Expect), events: (Vec<EventSpec>, Vec<EventSpec>) },
    Retry { which: Index, kind: RetryKind },
    Reopen,
    ReadStream { stream: usize, backward: bool, from: Option<u64>, limit: Option<usize> },
    ReadLog { from: u64, types: [bool; 3], prefix: Option<usize>, limit: Option<usize> },
}

/// An expected version, before it is resolved against the model.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Any,
    NoStream,
    StreamExists,
    Exact(u64),
    /// `Exact` of the stream's current version: an append that should pass.
    Current,
}

#[derive(Clone, Copy, Debug)]
enum RetryKind {
    /// The earlier request again, unchanged.
    Same,
    /// The same events, each part sent to the next stream.
    OtherStreams,
    /// The same events plus a new one in the first part.
    WithNewEvent,
}

#[derive(Clone, Copy, Debug)]
struct EventSpec {
    event_type: usize,
    occurred: bool,
    metadata: bool,
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        4 => Just(Expect::Current),
        2 => Just(Expect::Any),
        1 => Just(Expect::NoStream),
        1 => Just(Expect::StreamExists),
        2 => (0u64..5).prop_map(Expect::Exact),
    ]
}

fn events() -> impl Strategy<Value = Vec<EventSpec>> {
    let spec = (0..TYPES.len(), any::<bool>(), any::<bool>()).prop_map(|(event_type, occurred, metadata)| EventSpec {
        event_type,
        occurred,
        metadata,
    });
    vec(spec, 1..=4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..STREAMS.len(), expect(), events())
            .prop_map(|(stream, expected, events)| Op::Append { stream, expected, events }),
        3 => (0..STREAMS.len(), 1..STREAMS.len(), (expect(), expect()), (events(), events()))
            .prop_map(|(first, offset, expected, events)| Op::AppendMulti { first, offset, expected, events }),
        2 => (any::<Index>(), prop_oneof![
                2 => Just(RetryKind::Same),
                1 => Just(RetryKind::OtherStreams),
                1 => Just(RetryKind::WithNewEvent),
            ])
            .prop_map(|(which, kind)| Op::Retry { which, kind }),
        1 => Just(Op::Reopen),
        2 => (0..STREAMS.len(), any::<bool>(), proptest::option::of(1u64..8), proptest::option::of(0usize..6))
            .prop_map(|(stream, backward, from, limit)| Op::ReadStream { stream, backward, from, limit }),
        2 => (0u64..60, any::<[bool; 3]>(), proptest::option::of(0..PREFIXES.len()), proptest::option::of(0usize..8))
            .prop_map(|(from, types, prefix, limit)| Op::ReadLog { from, types, prefix, limit }),
    ]
}

// ---------------------------------------------------------------------------------------------------
// The model.

#[derive(Clone, Debug)]
struct ModelEvent {
    id: Uuid,
    stream: StreamId,
    version: u64,
    event_type: String,
    schema_version: u32,
    metadata: Metadata,
    payload: String,
    occurred_at: Option<DateTime<Utc>>,
    /// Set the first time the store shows the event; it must never change afterwards.
    recorded_at: Option<DateTime<Utc>>,
}

/// What the model says an append answers.
#[derive(Debug)]
enum Outcome {
    /// Per stream: version, first position, last position, already appended.
    Appended(Vec<(u64, u64, u64, bool)>),
    Conflict {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: Option<u64>,
    },
    /// Some ids are stored but the request is not a retry; any of these ids (with its position) may be
    /// the one reported.
    Duplicate(HashMap<Uuid, u64>),
}

#[derive(Debug, Default)]
struct Model {
    /// The log: the event at position p is at index p - 1.
    log: Vec<ModelEvent>,
    versions: HashMap<StreamId, u64>,
    /// Where each stored id is, as an index into `log`.
    ids: HashMap<Uuid, usize>,
}

impl Model {
    fn version(&self, stream: &StreamId) -> u64 {
        self.versions.get(stream).copied().unwrap_or(0)
    }

    fn resolve(&self, expect: Expect, stream: &StreamId) -> ExpectedVersion {
        match expect {
            Expect::Any => ExpectedVersion::Any,
            Expect::NoStream => ExpectedVersion::NoStream,
            Expect::StreamExists => ExpectedVersion::StreamExists,
            Expect::Exact(v) => ExpectedVersion::Exact(Version::new(v)),
            Expect::Current => ExpectedVersion::Exact(Version::new(self.version(stream))),
        }
    }

    fn accepts(expected: ExpectedVersion, current: u64) -> bool {
        match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::StreamExists => current > 0,
            ExpectedVersion::Exact(v) => v.get() == current,
        }
    }

    fn append(&mut self, request: &[StreamAppend]) -> Outcome {
        let stored: HashMap<Uuid, usize> = request
            .iter()
            .flat_map(|a| &a.events)
            .filter_map(|e| self.ids.get(&e.id()).map(|at| (e.id(), *at)))
            .collect();
        if !stored.is_empty() {
            return self.retry(request, &stored);
        }
        for append in request {
            let current = self.version(&append.stream);
            if !Self::accepts(append.expected, current) {
                let actual = (current > 0).then_some(current);
                return Outcome::Conflict { stream: append.stream.clone(), expected: append.expected, actual };
            }
        }
        let mut results = Vec::with_capacity(request.len());
        for append in request {
            let first = self.log.len() as u64 + 1;
            for event in &append.events {
                let version = self.versions.entry(append.stream.clone()).or_insert(0);
                *version += 1;
                self.ids.insert(event.id(), self.log.len());
                self.log.push(ModelEvent {
                    id: event.id(),
                    stream: append.stream.clone(),
                    version: *version,
                    event_type: event.event_type().to_owned(),
                    schema_version: event.schema_version(),
                    metadata: event.metadata().clone(),
                    payload: event.payload().to_owned(),
                    occurred_at: event.occurred_at(),
                    recorded_at: None,
                });
            }
            results.push((self.version(&append.stream), first, self.log.len() as u64, false));
        }
        Outcome::Appended(results)
    }

    /// A request some of whose ids are stored: the original answer when every part's events are
    /// stored, in that part's stream, one after the other; otherwise a duplicate id.
    fn retry(&self, request: &[StreamAppend], stored: &HashMap<Uuid, usize>) -> Outcome {
        let duplicate = || Outcome::Duplicate(stored.iter().map(|(id, at)| (*id, *at as u64 + 1)).collect());
        let mut results = Vec::with_capacity(request.len());
        for append in request {
            let mut at = Vec::with_capacity(append.events.len());
            for event in &append.events {
                match stored.get(&event.id()) {
                    Some(index) if self.log[*index].stream == append.stream => at.push(*index),
                    _ => return duplicate(),
                }
            }
            if at.windows(2).any(|w| w[1] != w[0] + 1) {
                return duplicate();
            }
            let (first, last) = (at[0], at[at.len() - 1]);
            results.push((self.log[last].version, first as u64 + 1, last as u64 + 1, true));
        }
        Outcome::Appended(results)
    }
}

// ---------------------------------------------------------------------------------------------------
// The stores under test.

enum Backend {
    Sled {
        dir: TempDir,
        durability: Durability,
        store: Option<SledStore>,
    },
    Memory(MemoryStore),
    /// Opened by [`Backend::open`] inside the run's runtime, which its tasks live on.
    #[cfg(feature = "postgres")]
    Postgres {
        config: annals::PostgresConfig,
        store: Option<annals::PostgresStore>,
    },
}

impl Backend {
    fn sled(durability: Durability) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SledConfig::new(dir.path()).durability(durability).open().unwrap();
        Backend::Sled { dir, durability, store: Some(store) }
    }

    /// A PostgreSQL store in a fresh schema, not yet open.
    #[cfg(feature = "postgres")]
    fn postgres() -> Self {
        let config = postgres_support::fresh_config().expect("the test cluster starts");
        Backend::Postgres { config, store: None }
    }

    /// Opens a store that is not open yet (PostgreSQL's, which needs the runtime).
    async fn open(&mut self) {
        #[cfg(feature = "postgres")]
        if let Backend::Postgres { config, store: store @ None } = self {
            *store = Some(config.clone().open().await.expect("the PostgreSQL store opens"));
        }
    }

    fn store(&self) -> &dyn EventStore {
        match self {
            Backend::Sled { store: Some(store), .. } => store,
            Backend::Sled { store: None, .. } => panic!("the sled store is open between operations"),
            Backend::Memory(store) => store,
            #[cfg(feature = "postgres")]
            Backend::Postgres { store: Some(store), .. } => store,
            #[cfg(feature = "postgres")]
            Backend::Postgres { store: None, .. } => panic!("the PostgreSQL store is open between operations"),
        }
    }

    /// Drops the store and opens it again: sled from disk, PostgreSQL from the same schema (with new
    /// connections); the memory store stays as it is.
    async fn reopen(&mut self) {
        match self {
            Backend::Sled { dir, durability, store } => {
                drop(store.take());
                *store = Some(SledConfig::new(dir.path()).durability(*durability).open().expect("the store reopens"));
            }
            Backend::Memory(_) => {}
            #[cfg(feature = "postgres")]
            Backend::Postgres { store, .. } => {
                drop(store.take());
                self.open().await;
            }
        }
    }
}

/// Builds events with ids, payloads and metadata that differ from each other and from run to run of
/// the same case only by a counter.
#[derive(Default)]
struct Events {
    next: u64,
}

impl Events {
    fn make(&mut self, spec: EventSpec) -> NewEvent {
        self.next += 1;
        let n = self.next;
        let payload = serde_json::json!({ "n": n, "text": format!("event \"{n}\" \u{e9}\\") });
        let mut event = NewEvent::json(TYPES[spec.event_type], &payload)
            .unwrap()
            .with_id(Uuid::from_u128(0x5eed_u128 << 96 | u128::from(n)));
        if spec.occurred {
            let at =
                DateTime::from_timestamp(1_600_000_000 + n as i64, (n as u32).wrapping_mul(7_654_321) % 1_000_000_000);
            event = event.with_occurred_at(at.unwrap());
        }
        if spec.metadata {
            event = event
                .with_correlation_id(format!("corr-{n}"))
                .with_causation_id(format!("cause-{}", n / 2))
                .with_header("tenant", format!("t{}", n % 3))
                .with_schema_version(1 + (n % 3) as u32);
        }
        event
    }

    fn make_all(&mut self, specs: &[EventSpec]) -> Vec<NewEvent> {
        specs.iter().map(|spec| self.make(*spec)).collect()
    }
}

fn stream(index: usize) -> StreamId {
    StreamId::new(STREAMS[index % STREAMS.len()]).unwrap()
}

// ---------------------------------------------------------------------------------------------------
// Running a sequence.

struct Run {
    backend: Backend,
    model: Model,
    events: Events,
    /// Every append request sent so far, for retries.
    history: Vec<Vec<StreamAppend>>,
}

fn run(backend: Backend, ops: &[Op]) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut run = Run { backend, model: Model::default(), events: Events::default(), history: Vec::new() };
    runtime.block_on(async {
        run.backend.open().await;
        for (step, op) in ops.iter().enumerate() {
            let context = format!("step {step} ({op:?})");
            run.apply(op, &context).await;
            run.check_state(&context).await;
        }
    });
}

impl Run {
    async fn apply(&mut self, op: &Op, context: &str) {
        match op {
            Op::Append { stream: s, expected, events } => {
                let stream = stream(*s);
                let expected = self.model.resolve(*expected, &stream);
                let request = vec![StreamAppend::new(stream, expected, self.events.make_all(events))];
                self.send(request, context).await;
            }
            Op::AppendMulti { first, offset, expected, events } => {
                let (a, b) = (stream(*first), stream(first + offset));
                let request = vec![
                    StreamAppend::new(a.clone(), self.model.resolve(expected.0, &a), self.events.make_all(&events.0)),
                    StreamAppend::new(b.clone(), self.model.resolve(expected.1, &b), self.events.make_all(&events.1)),
                ];
                self.send(request, context).await;
            }
            Op::Retry { which, kind } => {
                if self.history.is_empty() {
                    return;
                }
                let mut request = self.history[which.index(self.history.len())].clone();
                match kind {
                    RetryKind::Same => {}
                    RetryKind::OtherStreams => {
                        for append in &mut request {
                            let index = STREAMS.iter().position(|s| *s == append.stream.as_str()).unwrap();
                            append.stream = stream(index + 1);
                        }
                    }
                    RetryKind::WithNewEvent => {
                        let spec = EventSpec { event_type: 0, occurred: false, metadata: false };
                        request[0].events.push(self.events.make(spec));
                    }
                }
                self.send(request, context).await;
            }
            Op::Reopen => self.backend.reopen().await,
            Op::ReadStream { stream: s, backward, from, limit } => {
                self.check_stream_read(&stream(*s), *backward, *from, *limit, context).await;
            }
            Op::ReadLog { from, types, prefix, limit } => {
                self.check_log_read(*from, types, *prefix, *limit, context).await;
            }
        }
    }

    /// Sends an append request to the store and to the model, and compares the answers.
    async fn send(&mut self, request: Vec<StreamAppend>, context: &str) {
        let want = self.model.append(&request);
        let store = self.backend.store();
        let got = match request.as_slice() {
            [single] => store.append(&single.stream, single.expected, single.events.clone()).await.map(|r| vec![r]),
            _ => store.append_multi(request.clone()).await,
        };
        check_answer(got, want, context);
        self.history.push(request);
    }

    async fn check_stream_read(
        &mut self,
        stream: &StreamId,
        backward: bool,
        from: Option<u64>,
        limit: Option<usize>,
        context: &str,
    ) {
        let mut options = if backward { ReadStream::backward() } else { ReadStream::forward() };
        if let Some(from) = from {
            options = options.from(Version::new(from));
        }
        if let Some(limit) = limit {
            options = options.limit(limit);
        }
        let mut want: Vec<&ModelEvent> = self.model.log.iter().filter(|e| e.stream == *stream).collect();
        if backward {
            want.retain(|e| e.version <= from.unwrap_or(u64::MAX));
            want.reverse();
        } else {
            want.retain(|e| e.version >= from.unwrap_or(1));
        }
        want.truncate(limit.unwrap_or(usize::MAX));
        let want: Vec<(u64, ModelEvent)> = want.into_iter().map(|e| (self.position_of(e), e.clone())).collect();
        let got: Vec<RecordedEvent> =
            self.backend.store().read_stream(stream, options).try_collect().await.expect("stream read");
        compare_events(&got, &want, &format!("{context}: stream read"));
    }

    async fn check_log_read(
        &mut self,
        from: u64,
        types: &[bool; 3],
        prefix: Option<usize>,
        limit: Option<usize>,
        context: &str,
    ) {
        let types: Vec<&str> = TYPES.iter().zip(types).filter(|(_, on)| **on).map(|(t, _)| *t).collect();
        let mut filter = LogFilter::all().event_types(types.iter().copied());
        if let Some(prefix) = prefix {
            filter = filter.stream_prefix(PREFIXES[prefix]);
        }
        let mut options = ReadLog::from(Position::new(from)).filter(filter);
        if let Some(limit) = limit {
            options = options.limit(limit);
        }
        let want: Vec<(u64, ModelEvent)> = (1..)
            .zip(&self.model.log)
            .filter(|(position, e)| {
                *position >= from
                    && (types.is_empty() || types.contains(&e.event_type.as_str()))
                    && prefix.is_none_or(|p| e.stream.as_str().starts_with(PREFIXES[p]))
            })
            .take(limit.unwrap_or(usize::MAX))
            .map(|(position, e)| (position, e.clone()))
            .collect();
        let got: Vec<RecordedEvent> = self.backend.store().read_log(options).try_collect().await.expect("log read");
        compare_events(&got, &want, &format!("{context}: log read"));
    }

    fn position_of(&self, event: &ModelEvent) -> u64 {
        self.model.ids[&event.id] as u64 + 1
    }

    /// Compares the whole state of the store with the model, and learns the `recorded_at` of events
    /// seen for the first time.
    async fn check_state(&mut self, context: &str) {
        let store = self.backend.store();
        let head = store.head().await.expect("head");
        assert_eq!(head.get(), self.model.log.len() as u64, "{context}: head");
        for index in 0..STREAMS.len() {
            let stream = stream(index);
            let version = store.stream_version(&stream).await.expect("stream version").map(Version::get);
            let want = Some(self.model.version(&stream)).filter(|v| *v > 0);
            assert_eq!(version, want, "{context}: version of {stream:?}");
            let read: Vec<RecordedEvent> =
                store.read_stream(&stream, ReadStream::forward()).try_collect().await.expect("stream read");
            let want: Vec<(u64, ModelEvent)> = (1..)
                .zip(&self.model.log)
                .filter(|(_, e)| e.stream == stream)
                .map(|(position, e)| (position, e.clone()))
                .collect();
            compare_events(&read, &want, &format!("{context}: reading {stream:?}"));
        }
        let log: Vec<RecordedEvent> = store.read_log(ReadLog::from_start()).try_collect().await.expect("log read");
        let want: Vec<(u64, ModelEvent)> = (1..).zip(self.model.log.iter().cloned()).collect();
        compare_events(&log, &want, &format!("{context}: whole log"));
        assert!(log.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at), "{context}: recorded_at goes back");
        for (event, model) in log.iter().zip(&mut self.model.log) {
            model.recorded_at.get_or_insert(event.recorded_at);
        }
    }
}

/// Compares a store's answer to an append with the model's.
fn check_answer(got: annals::Result<Vec<AppendResult>>, want: Outcome, context: &str) {
    match (got, want) {
        (Ok(results), Outcome::Appended(want)) => {
            let results: Vec<_> = results
                .iter()
                .map(|r| (r.version.get(), r.first_position.get(), r.last_position.get(), r.already_appended))
                .collect();
            assert_eq!(results, want, "{context}: append results (version, first, last, already appended)");
        }
        (
            Err(Error::WrongExpectedVersion { stream, expected, actual }),
            Outcome::Conflict { stream: s, expected: e, actual: a },
        ) => {
            assert_eq!(
                (stream, expected, actual.map(Version::get)),
                (s, e, a),
                "{context}: conflict (stream, expected, actual)"
            );
        }
        (Err(Error::DuplicateEventId { id, position }), Outcome::Duplicate(stored)) => {
            assert_eq!(stored.get(&id), Some(&position.get()), "{context}: reused id {id} reported at {position}");
        }
        (got, want) => panic!("{context}: the store answered {got:?}, the model {want:?}"),
    }
}

/// Compares events read from the store with the model's, field by field.
fn compare_events(got: &[RecordedEvent], want: &[(u64, ModelEvent)], context: &str) {
    let got_ids: Vec<(u64, Uuid)> = got.iter().map(|e| (e.position.get(), e.id)).collect();
    let want_ids: Vec<(u64, Uuid)> = want.iter().map(|(position, e)| (*position, e.id)).collect();
    assert_eq!(got_ids, want_ids, "{context}: (position, id) of the events read");
    for (event, (_, model)) in got.iter().zip(want) {
        let at = format!("{context}: event at {}", event.position);
        assert_eq!(event.stream, model.stream, "{at}: stream");
        assert_eq!(event.version.get(), model.version, "{at}: version");
        assert_eq!(event.event_type, model.event_type, "{at}: event type");
        assert_eq!(event.schema_version, model.schema_version, "{at}: schema version");
        assert_eq!(event.metadata, model.metadata, "{at}: metadata");
        assert_eq!(event.payload, model.payload, "{at}: payload");
        assert_eq!(event.occurred_at, model.occurred_at.unwrap_or(event.recorded_at), "{at}: occurred_at");
        if let Some(recorded_at) = model.recorded_at {
            assert_eq!(event.recorded_at, recorded_at, "{at}: recorded_at changed");
        }
    }
}
