//! [`MemoryStore`]: the event store in memory, for tests and short-lived programs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::position::{ExpectedVersion, Position, Version};
use crate::store::observe::{self, AppendObserver, GroupObserver, StoreKind};
use crate::store::{
    plan_restore, plan_retry, validate_appends, validate_checkpoint_name, validate_checkpoint_writes, AppendResult,
    Checkpoint, CheckpointWrite, DeleteMode, Direction, EventStore, HeadWatch, LogChunk, LogFilter, ScavengeChunk,
    Snapshot, SnapshotRetention, StoredId, StreamAppend, StreamInfo, StreamView, DEFAULT_MAX_EVENT_SIZE,
};
use crate::stream_id::StreamId;

/// How many events a filtered log read looks at before it returns a page.
const SCAN_BUDGET: usize = 16 * 1024;

/// An event store held in memory, with the same semantics as the durable stores. Cloning gives another
/// handle to the same store. Everything is lost when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    head: watch::Sender<Position>,
    max_event_size: usize,
}

#[derive(Debug, Default)]
struct State {
    /// The log; the event at position p is at index p - 1 (`None` once scavenged).
    log: Vec<Option<RecordedEvent>>,
    /// The positions of each stream's events, by version - 1.
    streams: HashMap<StreamId, Vec<Position>>,
    ids: HashMap<Uuid, Position>,
    snapshots: HashMap<StreamId, BTreeMap<Version, Snapshot>>,
    snapshot_retention: SnapshotRetention,
    checkpoints: BTreeMap<String, Checkpoint>,
    last_recorded: Option<DateTime<Utc>>,
    /// The lifecycle of streams that were truncated or deleted (`last_version` unused here).
    lifecycle: HashMap<StreamId, StreamInfo>,
}

impl MemoryStore {
    /// An empty store with the default maximum event size.
    pub fn new() -> Self {
        MemoryStore::with_max_event_size(DEFAULT_MAX_EVENT_SIZE)
    }

    /// An empty store that rejects events larger than `max_event_size` bytes.
    pub fn with_max_event_size(max_event_size: usize) -> Self {
        observe::describe();
        let (head, _) = watch::channel(Position::ZERO);
        MemoryStore { shared: Arc::new(Shared { state: Mutex::new(State::default()), head, max_event_size }) }
    }

    /// Keeps only as many snapshots per stream as `retention` says, from the next save of each
    /// stream on (default: [`SnapshotRetention::All`]). The setting is the store's: every clone of
    /// this handle shares it.
    ///
    /// ```
    /// use annals::{MemoryStore, SnapshotRetention};
    ///
    /// let store = MemoryStore::new().with_snapshot_retention(SnapshotRetention::last(3));
    /// assert_eq!(store.snapshot_retention(), SnapshotRetention::last(3));
    /// ```
    pub fn with_snapshot_retention(self, retention: SnapshotRetention) -> Self {
        self.state().snapshot_retention = retention;
        self
    }

    /// How many snapshots per stream the store keeps.
    pub fn snapshot_retention(&self) -> SnapshotRetention {
        self.state().snapshot_retention
    }

    /// Validates and appends, as one observed append (a restored batch too: `restore` gives its
    /// `recorded_at` and first position). In memory, every append is a commit group of its own.
    fn append_observed(
        &self,
        appends: Vec<StreamAppend>,
        restore: Option<(DateTime<Utc>, Position)>,
    ) -> Result<Vec<AppendResult>> {
        let observer = AppendObserver::start(StoreKind::Memory, &appends);
        let result = observer.span().in_scope(|| self.append_unobserved(appends, restore));
        observer.finish(&result);
        result
    }

    fn append_unobserved(
        &self,
        appends: Vec<StreamAppend>,
        restore: Option<(DateTime<Utc>, Position)>,
    ) -> Result<Vec<AppendResult>> {
        validate_appends(&appends, self.shared.max_event_size)?;
        let group = GroupObserver::start(StoreKind::Memory, 1);
        let started = Instant::now();
        let (results, head) = {
            let mut state = self.state();
            let results = group.span().in_scope(|| state.append(appends, restore))?;
            (results, state.head())
        };
        let stored = observe::events_stored(&results);
        if stored > 0 {
            group.wrote(stored);
            group.committed(started.elapsed());
        }
        let moved = self.shared.head.send_if_modified(|current| {
            let moved = head > *current;
            *current = (*current).max(head);
            moved
        });
        if moved {
            observe::head(StoreKind::Memory, self.shared.head.borrow().get());
        }
        Ok(results)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held cannot leave the state half-changed: appends change it only
        // after every check passed, with infallible steps. So a poisoned lock is still consistent.
        self.shared.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl State {
    /// The last version ever written to `stream`.
    fn last_version(&self, stream: &StreamId) -> Option<Version> {
        self.streams.get(stream).map(|positions| Version::new(positions.len() as u64))
    }

    /// What the store knows of `stream`'s life.
    fn info(&self, stream: &StreamId) -> StreamInfo {
        let mut info = self.lifecycle.get(stream).cloned().unwrap_or_default();
        info.last_version = self.last_version(stream);
        info
    }

    /// The stream's lifecycle, refusing a hard-deleted one.
    fn live_info(&self, stream: &StreamId) -> Result<StreamInfo> {
        let info = self.info(stream);
        if info.tombstone {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        Ok(info)
    }

    fn event(&self, position: Position) -> Option<&RecordedEvent> {
        let index = usize::try_from(position.get()).ok()?.checked_sub(1)?;
        self.log.get(index)?.as_ref()
    }

    /// Removes the event at `position` if its stream's lifecycle says a scavenge may; returns its
    /// size when it did.
    fn remove_if_removable(&mut self, position: Position) -> Option<u64> {
        let index = usize::try_from(position.get()).ok()?.checked_sub(1)?;
        let event = self.log.get(index)?.as_ref()?;
        let removable = self.lifecycle.get(&event.stream).is_some_and(|info| info.is_removable(event.version));
        if !removable {
            return None;
        }
        let event = self.log.get_mut(index)?.take()?;
        self.ids.remove(&event.id);
        Some((event.payload.len() + event.event_type.len() + event.metadata.byte_len()) as u64)
    }

    /// The time a deletion is recorded at: now, never before the last event.
    fn deletion_time(&self) -> DateTime<Utc> {
        let now = Utc::now().trunc_subsecs(6);
        self.last_recorded.map_or(now, |last| last.max(now))
    }

    fn head(&self) -> Position {
        Position::new(self.log.len() as u64)
    }

    /// Appends; `restore` gives the `recorded_at` and first position of a restored batch instead of
    /// the clock and the head.
    fn append(
        &mut self,
        appends: Vec<StreamAppend>,
        restore: Option<(DateTime<Utc>, Position)>,
    ) -> Result<Vec<AppendResult>> {
        let ids: Vec<Vec<Uuid>> = appends.iter().map(|a| a.events.iter().map(|e| e.id).collect()).collect();
        let keys: Vec<_> = appends.iter().zip(&ids).map(|(a, ids)| (&a.stream, ids.as_slice())).collect();
        let retry = plan_retry(&keys, |id| {
            Ok(self.ids.get(&id).and_then(|p| self.event(*p)).map(|e| StoredId {
                position: e.position,
                stream: e.stream.clone(),
                version: e.version,
            }))
        })?;
        if let Some(results) = retry {
            return Ok(results);
        }
        let recorded_at = match restore {
            Some((recorded_at, first_position)) => {
                let next = Position::new(self.log.len() as u64 + 1);
                if first_position != next {
                    return Err(Error::Restore { position: first_position, problem: "it is not the next position" });
                }
                if self.last_recorded.is_some_and(|last| recorded_at < last) {
                    return Err(Error::Restore { position: first_position, problem: "recorded before the last event" });
                }
                recorded_at
            }
            None => {
                let now = Utc::now().trunc_subsecs(6);
                self.last_recorded.map_or(now, |last| last.max(now))
            }
        };
        for append in &appends {
            let actual = self.live_info(&append.stream)?.current_version();
            if !append.expected.accepts(actual) {
                return Err(Error::WrongExpectedVersion {
                    stream: append.stream.clone(),
                    expected: append.expected,
                    actual,
                });
            }
        }
        self.last_recorded = Some(recorded_at);
        let mut results = Vec::with_capacity(appends.len());
        for append in appends {
            let positions = self.streams.entry(append.stream.clone()).or_default();
            let first_position = Position::new(self.log.len() as u64 + 1);
            for event in append.events {
                let position = Position::new(self.log.len() as u64 + 1);
                positions.push(position);
                self.ids.insert(event.id, position);
                self.log.push(Some(RecordedEvent {
                    id: event.id,
                    stream: append.stream.clone(),
                    version: Version::new(positions.len() as u64),
                    position,
                    event_type: event.event_type,
                    schema_version: event.schema_version,
                    recorded_at,
                    occurred_at: event.occurred_at.unwrap_or(recorded_at),
                    metadata: event.metadata,
                    payload: event.payload,
                }));
            }
            results.push(AppendResult {
                version: Version::new(positions.len() as u64),
                first_position,
                last_position: Position::new(self.log.len() as u64),
                already_appended: false,
            });
        }
        Ok(results)
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append_multi(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.append_observed(appends, None)
    }

    async fn read_stream_chunk(
        &self,
        stream: &StreamId,
        from: Version,
        direction: Direction,
        max: usize,
        view: StreamView,
    ) -> Result<Vec<RecordedEvent>> {
        let state = self.state();
        let info = state.live_info(stream)?;
        let Some(positions) = state.streams.get(stream) else { return Ok(Vec::new()) };
        let floor = match view {
            StreamView::Current => info.truncated_before.get(),
            StreamView::History => 1,
        };
        if direction == Direction::Backward && from.get() < floor {
            return Ok(Vec::new());
        }
        let positions = &positions[(floor - 1).min(positions.len() as u64) as usize..];
        let len = positions.len() as u64;
        let from = from.get().max(floor) - (floor - 1);
        let picked: Box<dyn Iterator<Item = &Position>> = match direction {
            Direction::Forward if from <= len => Box::new(positions[(from - 1) as usize..].iter()),
            Direction::Backward => Box::new(positions[..from.min(len) as usize].iter().rev()),
            Direction::Forward => Box::new(std::iter::empty()),
        };
        Ok(picked.take(max).filter_map(|p| state.event(*p).cloned()).collect())
    }

    async fn read_log_chunk(&self, from: Position, max: usize, filter: &LogFilter) -> Result<LogChunk> {
        let state = self.state();
        let start = from.get().max(1);
        let head = state.head().get();
        let mut events = Vec::new();
        let mut next = start;
        while next <= head && events.len() < max && next - start < SCAN_BUDGET as u64 {
            if let Some(event) = state.event(Position::new(next)) {
                if filter.admits(event.stream.as_str(), &event.event_type) {
                    events.push(event.clone());
                }
            }
            next += 1;
        }
        Ok(LogChunk { events, next: Position::new(next), end: next > head })
    }

    async fn head(&self) -> Result<Position> {
        Ok(self.state().head())
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>> {
        Ok(self.state().live_info(stream)?.current_version())
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<(StreamId, Version)>> {
        let state = self.state();
        let mut streams: Vec<_> = state
            .streams
            .iter()
            .filter(|(stream, _)| stream.as_str().starts_with(prefix))
            .filter_map(|(stream, _)| {
                let info = state.info(stream);
                let version = if info.tombstone { None } else { info.current_version() };
                version.map(|v| (stream.clone(), v))
            })
            .collect();
        streams.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        Ok(streams)
    }

    async fn seek_recorded(&self, at: DateTime<Utc>) -> Result<Option<Position>> {
        let state = self.state();
        // Removed events leave holes: search by position, over the events still stored.
        let (mut low, mut high) = (0, state.log.len());
        while low < high {
            let middle = low + (high - low) / 2;
            match state.log[middle..high].iter().position(Option::is_some).map(|i| middle + i) {
                Some(found) if state.log[found].as_ref().is_some_and(|e| e.recorded_at < at) => low = found + 1,
                _ => high = middle,
            }
        }
        Ok(state.log[low..].iter().flatten().next().map(|e| e.position))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        let mut state = self.state();
        let kept = state.snapshot_retention.kept();
        let snapshots = state.snapshots.entry(snapshot.stream.clone()).or_default();
        snapshots.insert(snapshot.version, snapshot);
        // Under the one lock: readers see the snapshots of before the save or of after it.
        while kept.is_some_and(|kept| snapshots.len() > kept) {
            snapshots.pop_first();
        }
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamId, at: Version) -> Result<Option<Snapshot>> {
        let state = self.state();
        Ok(state.snapshots.get(stream).and_then(|s| s.range(..=at).next_back()).map(|(_, s)| s.clone()))
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        validate_checkpoint_name(name)?;
        Ok(self.state().checkpoints.get(name).cloned())
    }

    async fn save_checkpoints(&self, writes: Vec<CheckpointWrite>) -> Result<()> {
        validate_checkpoint_writes(&writes)?;
        let mut state = self.state();
        for write in writes {
            match write {
                CheckpointWrite::Save(checkpoint) => {
                    state.checkpoints.insert(checkpoint.name.clone(), checkpoint);
                }
                CheckpointWrite::Delete(name) => {
                    state.checkpoints.remove(&name);
                }
            }
        }
        Ok(())
    }

    async fn list_checkpoints(&self, prefix: &str) -> Result<Vec<Checkpoint>> {
        let state = self.state();
        let from = state.checkpoints.range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded));
        Ok(from.take_while(|(name, _)| name.starts_with(prefix)).map(|(_, c)| c.clone()).collect())
    }

    async fn restore(&self, events: Vec<RecordedEvent>) -> Result<()> {
        let plan = plan_restore(events)?;
        for (first_position, appends) in plan.requests {
            self.append_observed(appends, Some((plan.recorded_at, first_position)))?;
        }
        Ok(())
    }

    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion, mode: DeleteMode) -> Result<()> {
        let mut state = self.state();
        let mut info = state.live_info(stream)?;
        let actual = info.current_version();
        if !expected.accepts(actual) {
            return Err(Error::WrongExpectedVersion { stream: stream.clone(), expected, actual });
        }
        let at = state.deletion_time();
        if info.delete(stream, mode, at)? {
            state.snapshots.remove(stream);
            state.lifecycle.insert(stream.clone(), info);
        }
        Ok(())
    }

    async fn truncate_stream(&self, stream: &StreamId, before: Version) -> Result<()> {
        let mut state = self.state();
        let mut info = state.info(stream);
        if info.truncate(stream, before)? {
            state.lifecycle.insert(stream.clone(), info);
        }
        Ok(())
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo> {
        Ok(self.state().info(stream))
    }

    async fn scavenge_chunk(&self, from: Position, max: usize) -> Result<ScavengeChunk> {
        let mut state = self.state();
        let head = state.head().get();
        let start = from.get().max(1);
        let end = start.saturating_add(max.max(1) as u64).min(head + 1).max(start);
        let mut chunk = ScavengeChunk::default();
        for position in start..end {
            if state.event(Position::new(position)).is_none() {
                continue;
            }
            chunk.examined += 1;
            if let Some(bytes) = state.remove_if_removable(Position::new(position)) {
                chunk.removed += 1;
                chunk.bytes_removed += bytes;
            }
        }
        chunk.next = Position::new(end);
        chunk.end = end > head;
        Ok(chunk)
    }

    async fn scavenge_stream(&self, stream: &StreamId) -> Result<u64> {
        let mut state = self.state();
        let positions = state.streams.get(stream).cloned().unwrap_or_default();
        let removed = positions.into_iter().filter_map(|p| state.remove_if_removable(p)).count();
        Ok(removed as u64)
    }

    fn watch_head(&self) -> HeadWatch {
        HeadWatch::new(self.shared.head.subscribe())
    }
}
