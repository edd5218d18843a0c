//! The [`Repository`]: load aggregates from their streams and run commands against them.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::aggregate::snapshot_policy::SnapshotPolicy;
use crate::aggregate::Aggregate;
use crate::envelope::{Metadata, NewEvent};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::position::{ExpectedVersion, Position, Version};
use crate::store::{AppendResult, EventStore, ReadStream, Snapshot, StreamAppend};
use crate::stream_id::StreamId;

/// How many times a command is retried after a concurrency conflict, by default.
pub const DEFAULT_MAX_RETRIES: u32 = 5;

/// Context passed to a command and onto every event it produces: correlation and causation ids and
/// headers (who, which tenant, which trace), and, for history entered late, the business time the
/// events occurred at.
///
/// The same context works for [`Repository::execute`], [`Repository::execute_atomic`] and
/// [`UnitOfWork::execute`](crate::UnitOfWork::execute): every event the command writes, in every
/// stream, gets its metadata and its business time.
///
/// A back-dated command says when its events really happened with
/// [`occurred_at`](CommandContext::occurred_at) ("the book was returned on Monday", entered on
/// Wednesday): every event it writes gets that `occurred_at`, while `recorded_at` stays the time of
/// the commit. Time travel by occurred time ([`AsOf::Occurred`](crate::AsOf::Occurred),
/// [`Until::occurred`](crate::Until)) then sees the events at Monday, and time travel by recorded
/// time at Wednesday ([`guide::time_travel`](crate::guide::time_travel)). The aggregate still decides
/// on its current state: the business time stamps the events, it does not rewind the aggregate.
///
/// ```
/// # use annals::{Aggregate, Event};
/// # #[derive(Event, Clone, Debug, PartialEq)]
/// # enum LoanEvent { Returned }
/// # #[derive(Aggregate, Clone, Debug, Default)]
/// # #[aggregate(command = (), event = LoanEvent, error = std::convert::Infallible)]
/// # struct Loan { returned: bool }
/// # impl Loan {
/// #     fn handle(&self, _: ()) -> Result<Vec<LoanEvent>, std::convert::Infallible> { Ok(vec![LoanEvent::Returned]) }
/// #     fn apply(&mut self, _: &LoanEvent) { self.returned = true; }
/// # }
/// use annals::{AsOf, CommandContext, EventStore, MemoryStore, ReadStream, Repository};
/// use chrono::{TimeZone, Utc};
/// use futures_util::TryStreamExt;
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let loans = Repository::<Loan, _>::new(MemoryStore::new());
/// let monday = Utc.with_ymd_and_hms(2024, 3, 4, 10, 0, 0).single().ok_or("no such time")?;
/// let context = CommandContext::new().correlation_id("desk-3").occurred_at(monday);
/// let committed = loans.execute("7", (), &context).await?;
///
/// let stored: Vec<_> = loans.store().read_stream(&committed.stream, ReadStream::forward()).try_collect().await?;
/// assert_eq!(stored[0].occurred_at, monday);
/// assert!(stored[0].recorded_at > monday, "recorded now, occurred on Monday");
/// let sunday = loans.load_as_of("7", AsOf::Occurred(monday - chrono::Duration::days(1))).await?;
/// assert!(!sunday.state.returned);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandContext {
    metadata: Metadata,
    occurred_at: Option<DateTime<Utc>>,
}

impl CommandContext {
    /// An empty context.
    pub fn new() -> Self {
        CommandContext::default()
    }

    /// Sets the correlation id of the produced events.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id of the produced events (usually the command's id).
    pub fn causation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.causation_id = Some(id.into());
        self
    }

    /// Adds a header to the produced events.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.headers.insert(key.into(), value.into());
        self
    }

    /// Sets the business time of the produced events: every event of the command gets this
    /// `occurred_at` (stored with microsecond precision, like
    /// [`NewEvent::with_occurred_at`](crate::NewEvent::with_occurred_at)); their `recorded_at` is
    /// still the time of the commit. Without it, an event's `occurred_at` is its `recorded_at`. The
    /// time may lie in the past (a back-dated command) or the future.
    pub fn occurred_at(mut self, at: DateTime<Utc>) -> Self {
        self.occurred_at = Some(at);
        self
    }

    /// The metadata every produced event gets.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The business time every produced event gets, if one was set with
    /// [`occurred_at`](CommandContext::occurred_at).
    pub fn business_time(&self) -> Option<DateTime<Utc>> {
        self.occurred_at
    }
}

/// Why a command failed: the aggregate refused it, or the store did.
///
/// Business refusals and store faults are kept apart, so callers can answer "insufficient funds" to
/// the user and alert on a full disk.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E> {
    /// The aggregate refused the command (its business error). Nothing was written.
    #[error("command rejected")]
    Rejected(#[source] E),
    /// The store failed, or the stream kept changing under the command for every retry
    /// ([`Error::WrongExpectedVersion`] after the configured retries). Nothing was written.
    #[error(transparent)]
    Store(#[from] Error),
}

impl<E> CommandError<E> {
    /// The business error, if the aggregate refused the command.
    pub fn rejection(&self) -> Option<&E> {
        match self {
            CommandError::Rejected(e) => Some(e),
            CommandError::Store(_) => None,
        }
    }
}

/// An aggregate loaded from its stream: its state and the version it is at.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The version of the last event applied (`Version::ZERO` for a new aggregate).
    pub version: Version,
}

/// One event a command committed, with where it was stored.
#[derive(Clone, Debug, PartialEq)]
pub struct CommittedEvent<E> {
    /// The event.
    pub event: E,
    /// Its version in the aggregate's stream.
    pub version: Version,
    /// Its position in the log.
    pub position: Position,
}

/// What a command committed.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed<E> {
    /// The aggregate's stream.
    pub stream: StreamId,
    /// The events, in order (empty when the command produced none, and nothing was appended).
    pub events: Vec<CommittedEvent<E>>,
    /// The stream's version after the command.
    pub version: Version,
}

impl<E> Committed<E> {
    /// What an append of `events` to `stream` that answered `result` committed.
    pub(crate) fn from_append(stream: StreamId, events: Vec<E>, result: &AppendResult) -> Self {
        let first_version = (result.version.get() + 1).saturating_sub(events.len() as u64);
        let events = (0..)
            .zip(events)
            .map(|(i, event)| CommittedEvent {
                event,
                version: Version::new(first_version + i),
                position: Position::new(result.first_position.get() + i),
            })
            .collect();
        Committed { stream, events, version: result.version }
    }

    /// The position of the last event written, to wait on for read-your-writes (`None` when the
    /// command wrote nothing).
    pub fn last_position(&self) -> Option<Position> {
        self.events.last().map(|e| e.position)
    }
}

type Encode<A> = fn(&A) -> Result<String, serde_json::Error>;
type Decode<A> = fn(&str) -> Result<A, serde_json::Error>;

/// Loads aggregates of type `A` from a store and runs commands against them.
///
/// A command loads the aggregate (from the newest usable snapshot and the events after it, or from
/// the cache), lets it `handle` the command, and appends the events with
/// `ExpectedVersion::Exact(version)`. If another writer moved the stream meanwhile, it reloads and
/// tries again, up to [`with_max_retries`](Repository::with_max_retries) times.
pub struct Repository<A: Aggregate, S> {
    store: S,
    max_retries: u32,
    snapshots: Option<(SnapshotPolicy, Encode<A>, Decode<A>)>,
    cache: Option<Arc<Mutex<Cache<A>>>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate, S> fmt::Debug for Repository<A, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &A::TYPE)
            .field("max_retries", &self.max_retries)
            .field("snapshots", &self.snapshots.as_ref().map(|s| &s.0))
            .field("cache", &self.cache.is_some())
            .finish()
    }
}

impl<A: Aggregate, S: EventStore> Repository<A, S> {
    /// A repository over `store`, without snapshots or cache, retrying conflicts
    /// [`DEFAULT_MAX_RETRIES`] times.
    pub fn new(store: S) -> Self {
        describe();
        Repository { store, max_retries: DEFAULT_MAX_RETRIES, snapshots: None, cache: None, _aggregate: PhantomData }
    }

    /// How many times a command is retried after a concurrency conflict (0: never).
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Stores snapshots of the state as `policy` says, and starts loads from the newest usable one.
    pub fn with_snapshots(mut self, policy: SnapshotPolicy) -> Self
    where
        A: Serialize + DeserializeOwned,
    {
        self.snapshots = Some((policy, |state| serde_json::to_string(state), |text| serde_json::from_str(text)));
        self
    }

    /// Keeps up to `capacity` loaded aggregates in memory (evicting the oldest), so that a command on
    /// an aggregate whose stream has not moved since skips the load. The cache is checked against
    /// the stream's current version on every use, so it is never stale.
    pub fn with_cache(mut self, capacity: usize) -> Self
    where
        A: Clone,
    {
        self.cache = (capacity > 0).then(|| Arc::new(Mutex::new(Cache::new(capacity, |a: &A| a.clone()))));
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Loads the aggregate `id`: its state and version (a new aggregate is `A::default()` at
    /// `Version::ZERO`).
    ///
    /// # Errors
    /// [`Error::UnknownEventType`], [`Error::SchemaVersion`] or [`Error::Deserialize`] when a stored
    /// event does not decode (naming stream, version and type; the data is untouched), and store
    /// errors.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>> {
        let stream = A::stream_id(id)?;
        self.load_stream(&stream).await
    }

    /// Loads the aggregate of `stream`, from the cache or the newest usable snapshot and the events
    /// after it.
    pub(crate) async fn load_stream(&self, stream: &StreamId) -> Result<Loaded<A>> {
        if let Some(cache) = &self.cache {
            let current = self.store.stream_version(stream).await?.unwrap_or(Version::ZERO);
            let hit = lock(cache).get(stream, current);
            let result = if hit.is_some() { "hit" } else { "miss" };
            metrics::counter!("annals.repository.cache", "aggregate" => A::TYPE, "result" => result).increment(1);
            if let Some(hit) = hit {
                return Ok(hit);
            }
        }
        let (mut state, mut version) = match self.usable_snapshot(stream, Version::MAX).await? {
            Some((state, version)) => (state, version),
            None => (A::default(), Version::ZERO),
        };
        let mut events = self.store.read_stream(stream, ReadStream::forward().from(version.next()));
        while let Some(recorded) = events.try_next().await? {
            state.apply(&A::Event::from_recorded(&recorded)?);
            version = recorded.version;
        }
        Ok(Loaded { state, version })
    }

    /// The newest snapshot at or before `at` that decodes and has the current schema version.
    pub(crate) async fn usable_snapshot(&self, stream: &StreamId, at: Version) -> Result<Option<(A, Version)>> {
        let Some((_, _, decode)) = &self.snapshots else { return Ok(None) };
        let mut bound = at;
        // Older snapshots may still be usable when the newest is not; look at a few.
        for _ in 0..3 {
            let Some(snapshot) = self.store.load_snapshot(stream, bound).await? else { return Ok(None) };
            if snapshot.schema_version == A::SNAPSHOT_VERSION {
                if let Ok(state) = decode(&snapshot.state) {
                    return Ok(Some((state, snapshot.version)));
                }
            }
            match snapshot.version.get().checked_sub(1) {
                Some(previous) if previous > 0 => bound = Version::new(previous),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Runs `command` against the aggregate `id` and appends what it decides, retrying on conflicts.
    /// Every event gets the context's metadata and business time
    /// ([`CommandContext::occurred_at`]). A command that produces no events appends nothing.
    ///
    /// # Errors
    /// [`CommandError::Rejected`] when the aggregate refuses; [`CommandError::Store`] for store
    /// errors, including [`Error::WrongExpectedVersion`] when the stream kept changing through every
    /// retry.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        context: &CommandContext,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>>
    where
        A::Command: Clone,
    {
        let span = command_span::<A>(id);
        let mut retries = 0;
        let result = self.execute_retrying(id, command, context, &mut retries).instrument(span.clone()).await;
        let last = result.as_ref().ok().and_then(Committed::last_position);
        finish(&span, A::TYPE, retries, last, &result);
        result
    }

    async fn execute_retrying(
        &self,
        id: &str,
        command: A::Command,
        context: &CommandContext,
        retries: &mut u32,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>>
    where
        A::Command: Clone,
    {
        let stream = A::stream_id(id)?;
        loop {
            let loaded = self.load_stream(&stream).await?;
            let events = loaded.state.handle(command.clone()).map_err(CommandError::Rejected)?;
            match self.commit(&stream, loaded, events, context).await {
                Err(Error::WrongExpectedVersion { .. }) if *retries < self.max_retries => self.conflict(retries),
                other => return other.map_err(CommandError::Store),
            }
        }
    }

    /// Counts a conflict about to be retried.
    fn conflict(&self, retries: &mut u32) {
        *retries += 1;
        metrics::counter!("annals.repository.conflicts", "aggregate" => A::TYPE).increment(1);
    }

    /// Runs one command against each of several aggregates of this type and appends all their
    /// events in one atomic multi-stream append (e.g. a transfer between two accounts): either every
    /// aggregate's events are stored, or none. Retries on conflicts like
    /// [`execute`](Repository::execute). For aggregates of several types, use a
    /// [`UnitOfWork`](crate::UnitOfWork).
    ///
    /// # Errors
    /// [`CommandError::Rejected`] when any aggregate refuses (nothing is written); store errors.
    /// Naming the same aggregate twice is [`Error::DuplicateStreamInAppend`].
    pub async fn execute_atomic(
        &self,
        commands: Vec<(String, A::Command)>,
        context: &CommandContext,
    ) -> Result<Vec<Committed<A::Event>>, CommandError<A::Error>>
    where
        A::Command: Clone,
    {
        let ids: Vec<&str> = commands.iter().map(|(id, _)| id.as_str()).collect();
        let span = command_span::<A>(&ids.join(","));
        let mut retries = 0;
        let result = self.execute_atomic_retrying(&commands, context, &mut retries).instrument(span.clone()).await;
        let last = result.as_ref().ok().and_then(|all| all.iter().filter_map(Committed::last_position).max());
        finish(&span, A::TYPE, retries, last, &result);
        result
    }

    async fn execute_atomic_retrying(
        &self,
        commands: &[(String, A::Command)],
        context: &CommandContext,
        retries: &mut u32,
    ) -> Result<Vec<Committed<A::Event>>, CommandError<A::Error>>
    where
        A::Command: Clone,
    {
        let streams = commands.iter().map(|(id, _)| A::stream_id(id)).collect::<Result<Vec<_>>>()?;
        loop {
            let mut planned = Vec::with_capacity(commands.len());
            for (stream, (_, command)) in streams.iter().zip(commands) {
                let loaded = self.load_stream(stream).await?;
                let events = loaded.state.handle(command.clone()).map_err(CommandError::Rejected)?;
                planned.push((stream.clone(), loaded, events));
            }
            match self.commit_all(planned, context).await {
                Err(Error::WrongExpectedVersion { .. }) if *retries < self.max_retries => self.conflict(retries),
                other => return other.map_err(CommandError::Store),
            }
        }
    }

    async fn commit(
        &self,
        stream: &StreamId,
        loaded: Loaded<A>,
        events: Vec<A::Event>,
        context: &CommandContext,
    ) -> Result<Committed<A::Event>> {
        let mut all = self.commit_all(vec![(stream.clone(), loaded, events)], context).await?;
        all.pop().ok_or(Error::EmptyAppend { stream: stream.to_string() })
    }

    async fn commit_all(
        &self,
        planned: Vec<(StreamId, Loaded<A>, Vec<A::Event>)>,
        context: &CommandContext,
    ) -> Result<Vec<Committed<A::Event>>> {
        let mut appends = Vec::new();
        for (stream, loaded, events) in &planned {
            if !events.is_empty() {
                let new = events.iter().map(|e| to_new_event(e, context)).collect::<Result<Vec<_>>>()?;
                appends.push(StreamAppend::new(stream.clone(), ExpectedVersion::Exact(loaded.version), new));
            }
        }
        let mut results =
            if appends.is_empty() { Vec::new() } else { self.store.append_multi(appends).await? }.into_iter();
        let mut committed = Vec::with_capacity(planned.len());
        for (stream, mut loaded, events) in planned {
            if events.is_empty() {
                committed.push(Committed { stream, events: Vec::new(), version: loaded.version });
                continue;
            }
            let result = results.next().ok_or(Error::EmptyAppend { stream: stream.to_string() })?;
            let before = loaded.version;
            for event in &events {
                loaded.state.apply(event);
            }
            loaded.version = result.version;
            self.after_commit(&stream, &loaded, before).await?;
            committed.push(Committed::from_append(stream, events, &result));
        }
        Ok(committed)
    }

    /// How many times a command is retried after a conflict.
    pub(crate) fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// Caches the new state and stores a snapshot when the policy says so.
    ///
    /// The command is committed by then: a snapshot that cannot be encoded or saved is only a missed
    /// optimisation (the next load replays from an older snapshot), so it is reported as a warning
    /// and the `annals.repository.snapshot_failures` counter, never as the command's error, which
    /// would make a caller retry a command that already happened.
    pub(crate) async fn after_commit(&self, stream: &StreamId, loaded: &Loaded<A>, before: Version) -> Result<()> {
        if let Some((policy, encode, _)) = &self.snapshots {
            if policy.should_snapshot(before, loaded.version) {
                let saved = match encode(&loaded.state) {
                    Ok(state) => {
                        let snapshot = Snapshot::new(stream.clone(), loaded.version, A::SNAPSHOT_VERSION, state);
                        self.store.save_snapshot(snapshot).await
                    }
                    Err(source) => Err(Error::Serialize { event_type: format!("snapshot of {}", A::TYPE), source }),
                };
                if let Err(error) = saved {
                    tracing::warn!(stream = %stream, version = loaded.version.get(), error = %error, "snapshot not saved; the command stands");
                    metrics::counter!("annals.repository.snapshot_failures", "aggregate" => A::TYPE, "error.type" => error.kind())
                        .increment(1);
                }
            }
        }
        if let Some(cache) = &self.cache {
            lock(cache).put(stream.clone(), loaded);
        }
        Ok(())
    }
}

/// Describes the repository's metrics (unit and meaning) to the installed recorder, once per process.
pub(crate) fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        metrics::describe_counter!(
            "annals.repository.commands",
            metrics::Unit::Count,
            "commands run through a repository, by outcome"
        );
        metrics::describe_counter!(
            "annals.repository.conflicts",
            metrics::Unit::Count,
            "version conflicts the repository retried"
        );
        metrics::describe_counter!(
            "annals.repository.cache",
            metrics::Unit::Count,
            "loads served from the repository's cache (hit), or not (miss)"
        );
    });
}

/// The `annals.command` span of a command on the aggregate(s) `id` of type `A`.
fn command_span<A: Aggregate>(id: &str) -> Span {
    tracing::debug_span!(
        "annals.command",
        annals.aggregate = A::TYPE,
        annals.id = id,
        annals.retries = Empty,
        annals.outcome = Empty,
        annals.position.last = Empty,
    )
}

/// Records how a command ended on its span and in `annals.repository.commands`.
pub(crate) fn finish<T, E>(
    span: &Span,
    aggregate: impl Into<metrics::SharedString>,
    retries: u32,
    last: Option<Position>,
    result: &Result<T, CommandError<E>>,
) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(CommandError::Rejected(_)) => "rejected",
        Err(CommandError::Store(_)) => "error",
    };
    span.record("annals.retries", retries);
    span.record("annals.outcome", outcome);
    if let Some(last) = last {
        span.record("annals.position.last", last.get());
    }
    metrics::counter!("annals.repository.commands", "aggregate" => aggregate.into(), "outcome" => outcome).increment(1);
}

/// `event` as appended by a command run with `context`: its metadata and business time.
pub(crate) fn to_new_event<E: Event>(event: &E, context: &CommandContext) -> Result<NewEvent> {
    let new = event.to_new_event()?.with_metadata(context.metadata.clone());
    Ok(match context.occurred_at {
        Some(at) => new.with_occurred_at(at),
        None => new,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The cache is only a shortcut, and every use checks it against the stream's version, so state
    // left by a panicking holder is harmless.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Loaded aggregates by stream, evicting the oldest insertion when full.
struct Cache<A> {
    capacity: usize,
    entries: HashMap<StreamId, Loaded<A>>,
    order: VecDeque<StreamId>,
    clone: fn(&A) -> A,
}

impl<A> Cache<A> {
    fn new(capacity: usize, clone: fn(&A) -> A) -> Self {
        Cache { capacity, entries: HashMap::new(), order: VecDeque::new(), clone }
    }

    fn get(&self, stream: &StreamId, version: Version) -> Option<Loaded<A>> {
        let hit = self.entries.get(stream).filter(|l| l.version == version)?;
        Some(Loaded { state: (self.clone)(&hit.state), version: hit.version })
    }

    fn put(&mut self, stream: StreamId, loaded: &Loaded<A>) {
        let entry = Loaded { state: (self.clone)(&loaded.state), version: loaded.version };
        if self.entries.insert(stream.clone(), entry).is_none() {
            self.order.push_back(stream);
            while self.entries.len() > self.capacity {
                match self.order.pop_front() {
                    Some(oldest) => self.entries.remove(&oldest),
                    None => break,
                };
            }
        }
    }
}
