//! Upcasting: turning events stored in an old shape into the current one, on every read.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::position::{ExpectedVersion, Position, Version};
use crate::store::{
    AppendResult, BlockingLogReads, Checkpoint, CheckpointWrite, DeleteMode, Direction, EventStore, HeadWatch,
    LogChunk, LogFilter, ScavengeChunk, Snapshot, StreamAppend, StreamInfo, StreamView,
};
use crate::stream_id::StreamId;

/// An event's type, schema version and payload, as an upcaster sees and produces it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredShape {
    /// The event type name.
    pub event_type: String,
    /// The schema version of `payload`.
    pub schema_version: u32,
    /// The payload.
    pub payload: Value,
}

type Transform = dyn Fn(Value) -> Result<Value, String> + Send + Sync;
type Splitter = dyn Fn(Value) -> Result<Vec<StoredShape>, String> + Send + Sync;

#[derive(Clone)]
enum Step {
    /// One event in, one event out of type `to.0` at version `to.1`.
    Map { to: (String, u32), transform: Arc<Transform> },
    /// One event in, any number out, each of one of the declared `targets`.
    Split { targets: Vec<(String, u32)>, split: Arc<Splitter> },
}

impl Step {
    fn targets(&self) -> Vec<&(String, u32)> {
        match self {
            Step::Map { to, .. } => vec![to],
            Step::Split { targets, .. } => targets.iter().collect(),
        }
    }
}

/// The upcasters of a store: each takes events of one `(type, schema version)` and turns them into
/// the next shape, until they reach the current one.
///
/// Register every step once, check the chains against your event type at start-up with
/// [`Upcasters::check`], and wrap the store in [`Upcasting`] so that every read (stream, log,
/// aggregate loads, subscriptions) sees current events.
///
/// ```
/// use annals::{Event, Upcasters};
/// use serde_json::json;
///
/// #[derive(Event)]
/// enum AccountEvent {
///     #[event(version = 2)]
///     Deposited { amount_cents: u64 },
/// }
///
/// let upcasters = Upcasters::new()
///     // v1 stored an amount in euros; v2 stores cents.
///     .upgrade("Deposited", 1, |mut payload| {
///         let euros = payload["amount"].as_u64().ok_or("amount is not a number")?;
///         payload = json!({ "amount_cents": euros * 100 });
///         Ok(payload)
///     })
///     // an even older name of the same event
///     .rename("FundsAdded", 1, "Deposited", 1);
/// upcasters.check::<AccountEvent>()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # A store shared by several event types
///
/// One store usually holds the events of several types (`BookEvent` in `book-*` streams,
/// `MemberEvent` in `member-*` streams). A store has one set of upcasters for all of them: a step
/// applies to every stored event of its `(type, schema version)`, whatever the stream. Build each
/// type's steps where that type lives, check them against it, [`merge`](Upcasters::merge) them, and
/// check the whole set against every type at once with a tuple, so that a step of one type that
/// lands on a current type of another is accepted and a clash between them is found:
///
/// ```
/// use annals::{Event, Upcasters};
/// use serde_json::json;
///
/// #[derive(Event)]
/// enum BookEvent {
///     Added { title: String },
///     #[event(version = 2)]
///     BookReturned { copy: u32, member: String },
/// }
///
/// #[derive(Event)]
/// enum MemberEvent {
///     MemberJoined { name: String },
/// }
///
/// fn book_upcasters() -> Upcasters {
///     Upcasters::new().upgrade("BookReturned", 1, |payload| {
///         Ok(json!({ "copy": 1, "member": payload["member"] }))
///     })
/// }
///
/// fn member_upcasters() -> Upcasters {
///     Upcasters::new().rename("MemberRegistered", 1, "MemberJoined", 1)
/// }
///
/// book_upcasters().check::<BookEvent>()?;
/// member_upcasters().check::<MemberEvent>()?;
/// let upcasters = Upcasters::new().merge(book_upcasters()).merge(member_upcasters());
/// // Checked against one type, the other type's chains lead nowhere ...
/// assert!(upcasters.check::<BookEvent>().is_err());
/// // ... checked against both, every chain ends at a current type of one of them.
/// upcasters.check::<(BookEvent, MemberEvent)>()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Since steps are found by type name alone, two types that share a type name must agree on its
/// current schema version: [`check`](Upcasters::check) refuses a name that is current at one version
/// in one type of the tuple and at another in another (give one of them its own name with
/// `#[event(name = "...")]` before its schema changes).
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<(String, u32), Step>,
    /// The type names that have a step at some version: an event of any other type passes as it is,
    /// found without copying its name.
    sources: HashSet<String>,
    duplicates: Vec<(String, u32)>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sources: Vec<_> = self.steps.keys().collect();
        sources.sort();
        f.debug_struct("Upcasters").field("steps", &sources).finish()
    }
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Upcasters::default()
    }

    fn add(mut self, event_type: &str, version: u32, step: Step) -> Self {
        let key = (event_type.to_owned(), version);
        self.sources.insert(event_type.to_owned());
        if self.steps.insert(key.clone(), step).is_some() {
            self.duplicates.push(key);
        }
        self
    }

    /// Turns payloads of `event_type` at schema version `from` into version `from + 1`. The closure
    /// gets the old payload and returns the new one, or a reason why it cannot.
    pub fn upgrade<F>(self, event_type: &str, from: u32, transform: F) -> Self
    where
        F: Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    {
        let step = Step::Map { to: (event_type.to_owned(), from.saturating_add(1)), transform: Arc::new(transform) };
        self.add(event_type, from, step)
    }

    /// Renames the type `old` at schema version `version` to `new` at `new_version`, payload unchanged.
    pub fn rename(self, old: &str, version: u32, new: &str, new_version: u32) -> Self {
        let step = Step::Map { to: (new.to_owned(), new_version), transform: Arc::new(Ok) };
        self.add(old, version, step)
    }

    /// Turns each event of `event_type` at `version` into any number of events, each of one of the
    /// declared `targets` (type, schema version). Split events keep the original's id, stream,
    /// version, position and times.
    pub fn split<F, I, S>(self, event_type: &str, version: u32, targets: I, split: F) -> Self
    where
        F: Fn(Value) -> Result<Vec<StoredShape>, String> + Send + Sync + 'static,
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        let targets = targets.into_iter().map(|(t, v)| (t.into(), v)).collect();
        self.add(event_type, version, Step::Split { targets, split: Arc::new(split) })
    }

    /// Whether no upcaster is registered.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Adds every step of `other` (the steps of another event type of the same store, built where
    /// that type lives). A `(type, schema version)` registered in both counts as registered twice,
    /// which [`check`](Upcasters::check) reports.
    pub fn merge(mut self, other: Upcasters) -> Self {
        self.duplicates.extend(other.duplicates);
        let mut incoming: Vec<_> = other.steps.into_iter().collect();
        incoming.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, step) in incoming {
            self.sources.insert(key.0.clone());
            if self.steps.insert(key.clone(), step).is_some() {
                self.duplicates.push(key);
            }
        }
        self
    }

    /// Checks, at start-up, that every chain ends at a current event type of `E`: one [`Event`]
    /// type, or a tuple of them (`check::<(BookEvent, MemberEvent)>()`) for a store that holds
    /// several (see [`EventSet`]):
    ///
    /// - every version below the current one of each event type of `E` has a step;
    /// - every step's target is either current in `E` or the start of another step;
    /// - no step is registered twice and no chain loops;
    /// - no type name is current at two different versions in the types of `E` (steps are found
    ///   by type name, so they could not serve both).
    ///
    /// # Errors
    /// [`Error::UpcasterChain`] naming the first problem found.
    pub fn check<E: EventSet>(&self) -> Result<()> {
        if let Some((event_type, version)) = self.duplicates.first() {
            return Err(chain_error(event_type, *version, "has two upcasters"));
        }
        let mut current: HashMap<&'static str, u32> = HashMap::new();
        for (event_type, version) in E::current_versions() {
            match current.get(event_type) {
                Some(&other) if other != version => {
                    return Err(chain_error(
                        event_type,
                        other.min(version),
                        "is current in one checked event type and old in another: upcasters find steps \
                         by type name alone, so event types that share a name must share its version",
                    ));
                }
                _ => {
                    current.insert(event_type, version);
                }
            }
        }
        let mut types: Vec<_> = current.iter().map(|(t, v)| (*t, *v)).collect();
        types.sort_unstable();
        for (event_type, current_version) in types {
            for version in 1..current_version {
                if !self.steps.contains_key(&(event_type.to_string(), version)) {
                    return Err(chain_error(event_type, version, "has no upcaster to the next version"));
                }
            }
        }
        let lookup = |event_type: &str| current.get(event_type).copied();
        let mut sources: Vec<_> = self.steps.keys().collect();
        sources.sort();
        for source in sources {
            self.check_chain(source, &mut HashSet::new(), &lookup)?;
        }
        Ok(())
    }

    fn check_chain(
        &self,
        at: &(String, u32),
        seen: &mut HashSet<(String, u32)>,
        current: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<()> {
        if !seen.insert(at.clone()) {
            return Err(chain_error(&at.0, at.1, "is part of an upcaster loop"));
        }
        let Some(step) = self.steps.get(at) else {
            return match current(&at.0) {
                Some(version) if version == at.1 => Ok(()),
                Some(_) => {
                    Err(chain_error(&at.0, at.1, "is produced by an upcaster but is not current and has no next step"))
                }
                None => Err(chain_error(
                    &at.0,
                    at.1,
                    "is produced by an upcaster but is not an event type of the target type",
                )),
            };
        };
        for target in step.targets() {
            self.check_chain(target, &mut seen.clone(), current)?;
        }
        Ok(())
    }

    /// The stored type names that can become `event_type` through the chains (including itself).
    fn sources_of(&self, event_type: &str) -> Vec<String> {
        let mut found = vec![event_type.to_owned()];
        let mut i = 0;
        while let Some(target) = found.get(i).cloned() {
            for ((source, _), step) in &self.steps {
                if step.targets().iter().any(|(t, _)| *t == target) && !found.contains(source) {
                    found.push(source.clone());
                }
            }
            i += 1;
        }
        found
    }

    /// Brings one recorded event to its current shape (several events for a split). Events without
    /// an upcaster come back unchanged.
    ///
    /// # Errors
    /// [`Error::Upcast`] when a step fails on this event's payload, [`Error::UpcasterChain`] when the
    /// chains loop (which [`Upcasters::check`] reports at start-up).
    pub fn upcast(&self, event: RecordedEvent) -> Result<Vec<RecordedEvent>> {
        self.apply(event, self.steps.len() + 1)
    }

    /// Whether `event` has no step: [`upcast`](Upcasters::upcast) would give it back as it is.
    fn passes(&self, event: &RecordedEvent) -> bool {
        !self.sources.contains(event.event_type.as_str())
    }

    fn apply(&self, event: RecordedEvent, depth: usize) -> Result<Vec<RecordedEvent>> {
        if self.passes(&event) {
            return Ok(vec![event]);
        }
        let Some(step) = self.steps.get(&(event.event_type.clone(), event.schema_version)) else {
            return Ok(vec![event]);
        };
        if depth == 0 {
            return Err(chain_error(&event.event_type, event.schema_version, "is part of an upcaster loop"));
        }
        let failed = |reason: String| Error::Upcast {
            stream: event.stream.clone(),
            version: event.version,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            reason,
        };
        let payload: Value = serde_json::from_str(&event.payload).map_err(|e| failed(e.to_string()))?;
        let shapes = match step {
            Step::Map { to, transform } => vec![StoredShape {
                event_type: to.0.clone(),
                schema_version: to.1,
                payload: transform(payload).map_err(failed)?,
            }],
            Step::Split { targets, split } => {
                let shapes = split(payload).map_err(failed)?;
                let declared =
                    |s: &StoredShape| targets.iter().any(|(t, v)| *t == s.event_type && *v == s.schema_version);
                if let Some(bad) = shapes.iter().find(|s| !declared(s)) {
                    return Err(failed(format!(
                        "split produced undeclared {} v{}",
                        bad.event_type, bad.schema_version
                    )));
                }
                shapes
            }
        };
        let mut out = Vec::with_capacity(shapes.len());
        for shape in shapes {
            let mut next = event.clone();
            next.event_type = shape.event_type;
            next.schema_version = shape.schema_version;
            next.payload = shape.payload.to_string();
            out.extend(self.apply(next, depth - 1)?);
        }
        Ok(out)
    }
}

/// An [`EventStore`] whose every read goes through [`Upcasters`]: stream and log reads, and so
/// aggregate loads, projections and subscriptions built on them. Appends pass through unchanged.
///
/// Log reads filtered by event type also find events stored under older names that upcast to the
/// wanted ones.
#[derive(Clone, Debug)]
pub struct Upcasting<S> {
    inner: S,
    upcasters: Arc<Upcasters>,
}

impl<S: EventStore> Upcasting<S> {
    /// Wraps `store` so that its reads are upcast by `upcasters`.
    pub fn new(store: S, upcasters: Upcasters) -> Self {
        Upcasting { inner: store, upcasters: Arc::new(upcasters) }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn upcast_all(&self, events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>> {
        if self.upcasters.is_empty() {
            return Ok(events);
        }
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            out.extend(self.upcasters.upcast(event)?);
        }
        Ok(out)
    }
}

/// How [`Upcasting`] asks its inner store for a page of the log: with `filter` widened to every stored
/// type name that upcasts to a wanted one (`None`: the filter as it is), then brings the page's events
/// to their current shape and drops what the widening let in.
fn widened(upcasters: &Upcasters, filter: &LogFilter) -> Option<LogFilter> {
    if filter.event_types.is_empty() || upcasters.is_empty() {
        return None;
    }
    let mut wide = filter.clone();
    wide.event_types = filter.event_types.iter().flat_map(|t| upcasters.sources_of(t)).collect();
    Some(wide)
}

/// The page `chunk` of the inner store, read with [`widened`]'s filter, upcast and filtered by
/// `filter` again when it was widened.
fn upcast_chunk(upcasters: &Upcasters, chunk: LogChunk, filter: &LogFilter, was_widened: bool) -> Result<LogChunk> {
    if upcasters.is_empty() || chunk.events.iter().all(|event| upcasters.passes(event)) {
        // Nothing to upcast, and nothing the widening let in (it adds only names with a step).
        return Ok(chunk);
    }
    let mut events = Vec::with_capacity(chunk.events.len());
    for event in chunk.events {
        if upcasters.passes(&event) {
            events.push(event);
        } else {
            events.extend(upcasters.upcast(event)?);
        }
    }
    if was_widened {
        events.retain(|e| filter.admits(e.stream.as_str(), &e.event_type));
    }
    Ok(LogChunk { events, ..chunk })
}

/// The inner store's blocking log reads (see [`BlockingLogReads`]), upcast as [`Upcasting`]'s own
/// log reads are: a replay through [`Upcasting`] reads ahead on a store whose reads block.
struct UpcastingLogReads {
    inner: Arc<dyn BlockingLogReads>,
    upcasters: Arc<Upcasters>,
}

impl BlockingLogReads for UpcastingLogReads {
    fn read_log_chunk_blocking(
        &self,
        from: Position,
        max: usize,
        filter: &LogFilter,
        reuse: Vec<RecordedEvent>,
        stop: &AtomicBool,
    ) -> Result<LogChunk> {
        let wide = widened(&self.upcasters, filter);
        let chunk = self.inner.read_log_chunk_blocking(from, max, wide.as_ref().unwrap_or(filter), reuse, stop)?;
        upcast_chunk(&self.upcasters, chunk, filter, wide.is_some())
    }
}

#[async_trait]
impl<S: EventStore> EventStore for Upcasting<S> {
    async fn append_multi(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.inner.append_multi(appends).await
    }

    async fn read_stream_chunk(
        &self,
        stream: &StreamId,
        from: Version,
        direction: Direction,
        max: usize,
        view: StreamView,
    ) -> Result<Vec<RecordedEvent>> {
        let events = self.inner.read_stream_chunk(stream, from, direction, max, view).await?;
        self.upcast_all(events)
    }

    async fn read_log_chunk(&self, from: Position, max: usize, filter: &LogFilter) -> Result<LogChunk> {
        // Ask the store for every stored name that can become a wanted one, then keep what fits.
        let wide = widened(&self.upcasters, filter);
        let chunk = self.inner.read_log_chunk(from, max, wide.as_ref().unwrap_or(filter)).await?;
        upcast_chunk(&self.upcasters, chunk, filter, wide.is_some())
    }

    async fn head(&self) -> Result<Position> {
        self.inner.head().await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>> {
        self.inner.stream_version(stream).await
    }

    async fn seek_recorded(&self, at: DateTime<Utc>) -> Result<Option<Position>> {
        self.inner.seek_recorded(at).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &StreamId, at: Version) -> Result<Option<Snapshot>> {
        self.inner.load_snapshot(stream, at).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoints(&self, writes: Vec<CheckpointWrite>) -> Result<()> {
        self.inner.save_checkpoints(writes).await
    }

    async fn list_checkpoints(&self, prefix: &str) -> Result<Vec<Checkpoint>> {
        self.inner.list_checkpoints(prefix).await
    }

    async fn restore(&self, events: Vec<RecordedEvent>) -> Result<()> {
        self.inner.restore(events).await
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<(StreamId, Version)>> {
        self.inner.list_streams(prefix).await
    }

    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion, mode: DeleteMode) -> Result<()> {
        self.inner.delete_stream(stream, expected, mode).await
    }

    async fn truncate_stream(&self, stream: &StreamId, before: Version) -> Result<()> {
        self.inner.truncate_stream(stream, before).await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo> {
        self.inner.stream_info(stream).await
    }

    async fn scavenge_chunk(&self, from: Position, max: usize) -> Result<ScavengeChunk> {
        self.inner.scavenge_chunk(from, max).await
    }

    async fn scavenge_stream(&self, stream: &StreamId) -> Result<u64> {
        self.inner.scavenge_stream(stream).await
    }

    fn watch_head(&self) -> HeadWatch {
        self.inner.watch_head()
    }

    /// The inner store's, upcast: a replay through `Upcasting` reads ahead where the inner store's
    /// replays do.
    fn blocking_log_reads(&self) -> Option<Arc<dyn BlockingLogReads>> {
        let inner = self.inner.blocking_log_reads()?;
        Some(Arc::new(UpcastingLogReads { inner, upcasters: Arc::clone(&self.upcasters) }))
    }
}

/// The event types [`Upcasters::check`] checks a store's chains against: one [`Event`] type, or a
/// tuple of up to eight of them for a store that holds events of several types.
///
/// ```
/// use annals::{Event, EventSet};
///
/// #[derive(Event)]
/// enum BookEvent {
///     Added { title: String },
///     #[event(version = 2)]
///     BookReturned { copy: u32 },
/// }
///
/// #[derive(Event)]
/// enum MemberEvent {
///     MemberJoined { name: String },
/// }
///
/// assert_eq!(BookEvent::current_versions(), [("Added", 1), ("BookReturned", 2)]);
/// assert_eq!(
///     <(BookEvent, MemberEvent)>::current_versions(),
///     [("Added", 1), ("BookReturned", 2), ("MemberJoined", 1)]
/// );
/// ```
pub trait EventSet {
    /// Every event type name of the set with its current schema version, type after type in order
    /// (a name two types share comes once per type).
    fn current_versions() -> Vec<(&'static str, u32)>;
}

impl<E: Event> EventSet for E {
    fn current_versions() -> Vec<(&'static str, u32)> {
        E::event_types().iter().map(|event_type| (*event_type, E::current_version(event_type).unwrap_or(1))).collect()
    }
}

macro_rules! event_set_tuples {
    ($($name:ident)+) => {
        impl<$($name: Event),+> EventSet for ($($name,)+) {
            fn current_versions() -> Vec<(&'static str, u32)> {
                let mut all = Vec::new();
                $(all.extend(<$name as EventSet>::current_versions());)+
                all
            }
        }
    };
}

event_set_tuples!(A B);
event_set_tuples!(A B C);
event_set_tuples!(A B C D);
event_set_tuples!(A B C D E);
event_set_tuples!(A B C D E F);
event_set_tuples!(A B C D E F G);
event_set_tuples!(A B C D E F G H);

fn chain_error(event_type: &str, version: u32, problem: &'static str) -> Error {
    Error::UpcasterChain { event_type: event_type.to_owned(), schema_version: version, problem }
}
