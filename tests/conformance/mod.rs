//! The conformance checks every [`EventStore`] must pass, written once, generic over the store, and
//! the helpers they share. `tests/store_conformance.rs` turns each check into one test per backend.
//!
//! A check is an `async fn check<S: TestStore>(store: &S) -> TestResult` that gets a fresh, empty
//! store; the few checks that need a store configured differently take a [`Backend`] instead and open
//! their own. To run the suite against a new store, implement [`Backend`] for it in `backends.rs` and
//! add one line to `tests/store_conformance.rs`.

pub(crate) mod append;
pub(crate) mod backends;
pub(crate) mod bad_input;
pub(crate) mod checkpoints;
pub(crate) mod envelope;
pub(crate) mod head_and_time;
pub(crate) mod idempotency;
pub(crate) mod lifecycle;
pub(crate) mod live;
pub(crate) mod log_reads;
pub(crate) mod multi_stream;
pub(crate) mod optimistic_concurrency;
pub(crate) mod races;
pub(crate) mod restore;
pub(crate) mod snapshots;
pub(crate) mod stream_reads;

use std::fmt::Debug;
use std::future::Future;

use annals::{
    AppendResult, Error, EventStore, ExpectedVersion, NewEvent, Position, ReadLog, ReadStream, RecordedEvent, StreamId,
    Version,
};
use futures_util::TryStreamExt;

/// What every test returns: failures of the store under test surface through `?`.
pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A store the checks can run against: cloneable (tasks get their own handle) and `'static`.
pub(crate) trait TestStore: EventStore + Clone + 'static {}

impl<S: EventStore + Clone + 'static> TestStore for S {}

/// How to open a fresh, empty store of one backend.
pub(crate) trait Backend {
    /// The store type.
    type Store: TestStore;

    /// Opens a new, empty store, with the backend's default maximum event size or with
    /// `max_event_size`.
    fn open(max_event_size: Option<usize>) -> impl Future<Output = Result<Fixture<Self::Store>, Error>>;

    /// Opens a new, empty store that keeps as many snapshots per stream as `retention` says.
    fn open_with_snapshot_retention(
        retention: annals::SnapshotRetention,
    ) -> impl Future<Output = Result<Fixture<Self::Store>, Error>>;
}

/// An open store and whatever must outlive it (a temporary directory, a database schema, ...).
pub(crate) struct Fixture<S> {
    /// The store under test.
    pub(crate) store: S,
    /// Dropped after the store: keeps its files alive while it is open.
    pub(crate) _keep: Option<tempfile::TempDir>,
}

/// A valid stream name (the tests only use valid literals).
pub(crate) fn stream(name: &str) -> Result<StreamId, Error> {
    StreamId::new(name)
}

/// A small event whose payload names `n`.
pub(crate) fn event(n: u64) -> NewEvent {
    NewEvent::raw("Counted", format!("{{\"n\":{n}}}"))
}

/// `count` small events, numbered from `from`.
pub(crate) fn events(from: u64, count: u64) -> Vec<NewEvent> {
    (from..from + count).map(event).collect()
}

/// Every event of a stream read with `options`.
pub(crate) async fn read_stream<S: EventStore>(
    store: &S,
    stream: &StreamId,
    options: ReadStream,
) -> Result<Vec<RecordedEvent>, Error> {
    store.read_stream(stream, options).try_collect().await
}

/// Every event of a log read with `options`.
pub(crate) async fn read_log<S: EventStore>(store: &S, options: ReadLog) -> Result<Vec<RecordedEvent>, Error> {
    store.read_log(options).try_collect().await
}

/// The raw versions of `events`, in order.
pub(crate) fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version.get()).collect()
}

/// The raw positions of `events`, in order.
pub(crate) fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position.get()).collect()
}

/// The raw numbers `from..=to`, as a vector to compare with.
pub(crate) fn span(from: u64, to: u64) -> Vec<u64> {
    (from..=to).collect()
}

/// Everything a reader can see of a store, to prove that a rejected append wrote nothing.
#[derive(Debug, PartialEq)]
pub(crate) struct Snapshot {
    head: Position,
    log: Vec<RecordedEvent>,
}

impl Snapshot {
    pub(crate) async fn take<S: EventStore>(store: &S) -> Result<Self, Error> {
        Ok(Snapshot { head: store.head().await?, log: read_log(store, ReadLog::from_start()).await? })
    }

    /// Fails when the store shows anything else than at the snapshot: head, any event, or the
    /// versions of `streams`.
    pub(crate) async fn assert_unchanged<S: EventStore>(&self, store: &S, streams: &[&StreamId]) -> TestResult {
        let now = Snapshot::take(store).await?;
        assert_eq!(now.head, self.head, "the head moved");
        assert_eq!(now.log, self.log, "the log changed");
        for stream in streams {
            let expected = self.log.iter().filter(|e| e.stream == **stream).map(|e| e.version).max();
            assert_eq!(store.stream_version(stream).await?, expected, "version of {stream}");
        }
        Ok(())
    }
}

/// The error of an operation that had to fail.
pub(crate) fn expect_error<T: Debug>(result: Result<T, Error>) -> Result<Error, Box<dyn std::error::Error>> {
    match result {
        Ok(value) => Err(format!("expected an error, the operation succeeded with {value:?}").into()),
        Err(error) => Ok(error),
    }
}

/// Checks an append's result against the expected version and positions of a fresh append.
pub(crate) fn assert_appended(result: &AppendResult, version: u64, first: u64, last: u64) {
    assert_eq!(
        (result.version, result.first_position, result.last_position, result.already_appended),
        (Version::new(version), Position::new(first), Position::new(last), false),
        "append result {result:?}"
    );
}

/// Appends that must fail with `WrongExpectedVersion { stream, expected, actual }` and write nothing.
pub(crate) async fn assert_conflict<S: EventStore>(
    store: &S,
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: Option<Version>,
) -> TestResult {
    let before = Snapshot::take(store).await?;
    let error = expect_error(store.append(stream, expected, events(900, 2)).await)?;
    assert!(
        matches!(
            &error,
            Error::WrongExpectedVersion { stream: s, expected: e, actual: a }
                if s == stream && *e == expected && *a == actual
        ),
        "appending to {stream} with {expected} (actual {actual:?}) gave {error:?}"
    );
    before.assert_unchanged(store, &[stream]).await
}
