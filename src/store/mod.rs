//! The [`EventStore`] trait every backend implements, with the types of its requests and answers.

mod append;
mod checkpoint;
mod lease;
mod lifecycle;
pub(crate) mod memory;
pub(crate) mod observe;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
mod read;
mod scavenge;
pub(crate) mod sled;
mod snapshot;

pub(crate) use append::{plan_restore, plan_retry, validate_appends, StoredId};
pub use append::{AppendResult, StreamAppend};
pub(crate) use checkpoint::{validate_checkpoint_name, validate_checkpoint_writes};
pub use checkpoint::{Checkpoint, CheckpointWrite, MAX_CHECKPOINT_NAME_LEN};
pub use lease::PartitionLeases;
pub use lifecycle::{
    DeleteMode, RetentionPolicy, RetentionRule, RetentionScope, ScavengeChunk, SoftDeletion, StreamInfo, StreamView,
};
pub use read::BlockingLogReads;
pub(crate) use read::LogCursor;
pub use read::{Direction, EventStream, HeadWatch, LogChunk, LogFilter, ReadLog, ReadStream, Until};
pub use scavenge::{scavenge, ScavengeOptions, ScavengePhase, ScavengeProgress, ScavengeReport, SCAVENGE_CHECKPOINT};
pub use snapshot::{Snapshot, SnapshotRetention};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::Result;
use crate::position::{ExpectedVersion, Position, Version};
use crate::stream_id::StreamId;

/// The default maximum size of one event (payload, type name and metadata): 64 KiB.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 64 * 1024;

/// An append-only log of events, organised in streams.
///
/// Every backend ([`MemoryStore`](crate::MemoryStore), [`SledStore`](crate::SledStore), later
/// PostgreSQL) gives the same guarantees, checked by one conformance suite:
///
/// - an append is atomic: all its events (over one or several streams) are stored, or none;
/// - positions are gap-free from 1, in commit order; versions in a stream are gap-free from 1;
/// - `recorded_at` never decreases along the log;
/// - a retry, an append whose events are all stored already (same ids, same streams, same order,
///   consecutive versions), answers with their stored versions and positions
///   ([`AppendResult::already_appended`]) and stores nothing twice;
/// - reads, [`head`](EventStore::head) and [`HeadWatch`] show only acknowledged events.
///
/// The required methods are the backend's primitives; readers mostly use the provided
/// [`read_stream`](EventStore::read_stream) and [`read_log`](EventStore::read_log), which page through
/// them lazily.
///
/// ```
/// use annals::{EventStore, ExpectedVersion, MemoryStore, NewEvent, ReadStream, StreamId};
/// use futures_util::TryStreamExt;
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = MemoryStore::new();
/// let order = StreamId::new("order-1")?;
/// let placed = NewEvent::json("OrderPlaced", &serde_json::json!({ "total": 1250 }))?;
/// let result = store.append(&order, ExpectedVersion::NoStream, vec![placed]).await?;
/// assert_eq!(result.version.get(), 1);
///
/// let events: Vec<_> = store.read_stream(&order, ReadStream::forward()).try_collect().await?;
/// assert_eq!(events[0].event_type, "OrderPlaced");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends to several streams in one atomic write, each with its own expectation: either every
    /// event is stored, or none. The result has one entry per [`StreamAppend`], in the same order.
    ///
    /// # Errors
    /// [`Error::WrongExpectedVersion`](crate::Error::WrongExpectedVersion) when any expectation fails,
    /// [`Error::DuplicateEventId`](crate::Error::DuplicateEventId) when ids are reused outside a retry,
    /// the validation errors of [`append`](EventStore::append), and storage errors.
    async fn append_multi(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>>;

    /// Reads up to `max` events of `stream`, starting at version `from` (inclusive) and going in
    /// `direction`, showing what `view` says. An empty answer means there is nothing more that way.
    /// The paging primitive behind [`read_stream`](EventStore::read_stream).
    ///
    /// In [`StreamView::Current`] a read starts no lower than the stream's truncation point
    /// ([`StreamInfo::truncated_before`]); in [`StreamView::History`] it shows every event of the
    /// stream still stored (a scavenge removes what is below the truncation point).
    ///
    /// # Errors
    /// [`Error::StreamDeleted`](crate::Error::StreamDeleted) when the stream is hard-deleted,
    /// [`Error::Corrupt`](crate::Error::Corrupt) when stored bytes do not decode, storage errors.
    async fn read_stream_chunk(
        &self,
        stream: &StreamId,
        from: Version,
        direction: Direction,
        max: usize,
        view: StreamView,
    ) -> Result<Vec<RecordedEvent>>;

    /// Reads events of the log from position `from` (inclusive), keeping those `filter` admits, until
    /// it has `max` of them or has looked at as many events as it does in one go. The paging
    /// primitive behind [`read_log`](EventStore::read_log).
    async fn read_log_chunk(&self, from: Position, max: usize, filter: &LogFilter) -> Result<LogChunk>;

    /// The position of the last acknowledged event (`Position::ZERO` when the log is empty).
    async fn head(&self) -> Result<Position>;

    /// The current version of `stream`, or `None` when it has no events (or none a
    /// [`StreamView::Current`] read shows: a soft-deleted stream, or one truncated to its end).
    ///
    /// # Errors
    /// [`Error::StreamDeleted`](crate::Error::StreamDeleted) when the stream is hard-deleted, storage
    /// errors.
    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>>;

    /// Every stream whose name starts with `prefix` (`""`: all), with its current version, ordered by
    /// name, leaving out hard-deleted streams and those a [`StreamView::Current`] read shows nothing
    /// of. Meant for tools and administration: it walks every stream.
    ///
    /// # Errors
    /// [`Error::Corrupt`](crate::Error::Corrupt) when an index entry does not decode, storage errors.
    async fn list_streams(&self, prefix: &str) -> Result<Vec<(StreamId, Version)>>;

    /// The first position whose `recorded_at` is at or after `at`, or `None` when every event was
    /// recorded before `at`. O(log n): the log is ordered by `recorded_at`.
    async fn seek_recorded(&self, at: DateTime<Utc>) -> Result<Option<Position>>;

    /// Stores a snapshot, replacing one of the same stream and version, and deletes that stream's
    /// snapshots beyond the newest the store's [`SnapshotRetention`] keeps, in the same atomic write.
    /// Snapshots live beside the events (a sled tree, a map in memory, a table) and are not synced
    /// with appends.
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()>;

    /// The newest snapshot of `stream` at or before version `at` (`Version::MAX` for the newest).
    async fn load_snapshot(&self, stream: &StreamId, at: Version) -> Result<Option<Snapshot>>;

    /// The checkpoint named `name`, if one is saved.
    ///
    /// # Errors
    /// [`Error::InvalidCheckpointName`](crate::Error::InvalidCheckpointName) for a bad name,
    /// [`Error::Corrupt`](crate::Error::Corrupt) when the saved bytes do not decode, storage errors.
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>>;

    /// Applies `writes` in one atomic write: after a crash, either all of them are visible or none.
    /// Returns once they are durable (for a store that syncs to disk). Checkpoints live beside the
    /// events (a sled tree, a table) but are written independently of appends.
    ///
    /// # Errors
    /// [`Error::InvalidCheckpointName`](crate::Error::InvalidCheckpointName) for a bad name (nothing
    /// is written), storage errors.
    async fn save_checkpoints(&self, writes: Vec<CheckpointWrite>) -> Result<()>;

    /// Every checkpoint whose name starts with `prefix` (`""`: all of them), ordered by name.
    ///
    /// # Errors
    /// [`Error::Corrupt`](crate::Error::Corrupt) when one does not decode, storage errors.
    async fn list_checkpoints(&self, prefix: &str) -> Result<Vec<Checkpoint>>;

    /// Appends events exactly as another store recorded them: same ids, positions, versions,
    /// `recorded_at` and everything else. This is how an export is loaded back
    /// ([`import_jsonl`](crate::import_jsonl)). The events must continue this log: the first at the
    /// position after the head, positions consecutive, each version the next of its stream, and all
    /// with one `recorded_at`, not before the last stored one. A batch whose events are all stored
    /// already (same ids) is a retry and writes nothing. A batch is written as one or more atomic
    /// appends (a stream that comes back after another starts a new one), and each is reported as
    /// an append: its `annals.append` span, `annals.appends` and `annals.events.appended`
    /// (docs/observability.md).
    ///
    /// # Errors
    /// [`Error::Restore`](crate::Error::Restore) when the events do not continue the log, the
    /// validation errors of [`append`](EventStore::append), storage errors.
    async fn restore(&self, events: Vec<RecordedEvent>) -> Result<()>;

    /// Deletes `stream`, if it is at the `expected` version (as appends check it): softly, so that it
    /// can start again, or with a tombstone ([`DeleteMode`] says what each read answers after). The
    /// deletion is durable when this returns (for a store that syncs to disk), and its events stay
    /// in the log until a [`scavenge`](crate::scavenge) removes them. A soft delete of a stream with
    /// nothing to show changes nothing.
    ///
    /// # Errors
    /// [`Error::WrongExpectedVersion`](crate::Error::WrongExpectedVersion) when the expectation fails,
    /// [`Error::StreamDeleted`](crate::Error::StreamDeleted) when the stream is already hard-deleted,
    /// storage errors. In every case nothing was changed.
    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion, mode: DeleteMode) -> Result<()>;

    /// Hides the events of `stream` below version `before` from reads in [`StreamView::Current`], at
    /// once and durably; a scavenge then removes them. The truncation point only moves forward: a
    /// `before` at or below the current one changes nothing. Truncate an aggregate's stream only
    /// below a snapshot, or loads will rebuild it from the first event kept.
    ///
    /// # Errors
    /// [`Error::InvalidTruncation`](crate::Error::InvalidTruncation) when `before` is past the version
    /// after the last one, [`Error::StreamDeleted`](crate::Error::StreamDeleted) for a hard-deleted
    /// stream, storage errors.
    async fn truncate_stream(&self, stream: &StreamId, before: Version) -> Result<()>;

    /// What the store knows of the life of `stream`: its last version ever, truncation point, soft
    /// deletions and tombstone. Answers for hard-deleted streams too (it is how tools see them).
    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo>;

    /// One step of a scavenge: looks at the stored events from position `from` on (about `max` of
    /// them) and removes those that are hard-deleted or below their stream's truncation point, for
    /// good. Positions never change and are never reused: a removed event leaves a gap that every log
    /// read skips. Each step is atomic and durable when it returns, so a scavenge interrupted
    /// anywhere is resumed by running the step again from the last `next` it returned.
    /// [`scavenge`](crate::scavenge) drives it.
    async fn scavenge_chunk(&self, from: Position, max: usize) -> Result<ScavengeChunk>;

    /// Removes now, for good, the stored events of one stream that a scavenge would remove (all of
    /// them for a hard-deleted stream, those below the truncation point otherwise), without walking
    /// the log. Returns how many it removed. Durable when it returns.
    async fn scavenge_stream(&self, stream: &StreamId) -> Result<u64>;

    /// Sets the retention rule of `rule.scope`, replacing the one it had. Rules are kept with the
    /// store's checkpoints (under `retention/...`) and applied by [`scavenge`](crate::scavenge).
    ///
    /// # Errors
    /// [`Error::InvalidCheckpointName`](crate::Error::InvalidCheckpointName) when the scope is too
    /// long to be stored, storage errors.
    async fn set_retention(&self, rule: RetentionRule) -> Result<()> {
        let name = RetentionRule::checkpoint_name(&rule.scope);
        let state = serde_json::to_string(&rule.policy).map_err(|e| crate::Error::Storage(Box::new(e)))?;
        self.save_checkpoints(vec![CheckpointWrite::Save(Checkpoint::new(name, Position::ZERO).with_state(state))])
            .await
    }

    /// Removes the retention rule of `scope`; returns whether there was one.
    async fn remove_retention(&self, scope: &RetentionScope) -> Result<bool> {
        let name = RetentionRule::checkpoint_name(scope);
        if self.load_checkpoint(&name).await?.is_none() {
            return Ok(false);
        }
        self.save_checkpoints(vec![CheckpointWrite::Delete(name)]).await?;
        Ok(true)
    }

    /// Every retention rule: the prefix rules, then the stream rules, each ordered by name.
    ///
    /// # Errors
    /// [`Error::Corrupt`](crate::Error::Corrupt) when a saved rule does not decode, storage errors.
    async fn retention_rules(&self) -> Result<Vec<RetentionRule>> {
        let mut rules = Vec::new();
        for checkpoint in self.list_checkpoints("retention/").await? {
            if let Some(rule) = RetentionRule::from_checkpoint(&checkpoint.name, checkpoint.state.as_deref()) {
                rules.push(rule?);
            }
        }
        Ok(rules)
    }

    /// A watch on the head: it moves only once events are acknowledged (durable, for a store that
    /// syncs to disk), so a waiter can read them at once.
    fn watch_head(&self) -> HeadWatch;

    /// The store's log reads as a handle that runs them on the calling thread, for a store whose
    /// reads block that thread anyway (sled): the paging of replays, projectors and subscriptions
    /// then reads the next page on a blocking thread while the consumer handles the current one.
    /// `None` (the default) for a store whose reads wait without blocking. Not public API: it may
    /// change in any release, and a wrapper store passes it on only when it passes reads on
    /// unchanged, or wraps it so that it returns what the wrapper's own reads return (as
    /// [`Upcasting`](crate::Upcasting) does).
    #[doc(hidden)]
    fn blocking_log_reads(&self) -> Option<std::sync::Arc<dyn BlockingLogReads>> {
        None
    }

    /// The store's [`PartitionLeases`], when several processes can open it at once and share a
    /// subscription's partitions through it; `None` (the default) for a store open in one process,
    /// whose subscription workers coordinate in memory.
    fn partition_leases(&self) -> Option<&dyn PartitionLeases> {
        None
    }

    /// Appends `events` to `stream` atomically, if the stream is at the `expected` version.
    ///
    /// # Errors
    /// [`Error::WrongExpectedVersion`](crate::Error::WrongExpectedVersion) when the stream is not at
    /// `expected`; [`Error::EmptyAppend`](crate::Error::EmptyAppend),
    /// [`Error::EventTooLarge`](crate::Error::EventTooLarge),
    /// [`Error::InvalidPayload`](crate::Error::InvalidPayload),
    /// [`Error::InvalidEventType`](crate::Error::InvalidEventType) and
    /// [`Error::DuplicateEventId`](crate::Error::DuplicateEventId) for bad input; storage errors. In
    /// every case nothing was written.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let mut results = self.append_multi(vec![StreamAppend::new(stream.clone(), expected, events)]).await?;
        results.pop().ok_or(crate::Error::EmptyAppend { stream: stream.to_string() })
    }

    /// The events of `stream`, lazily, as `options` say (direction, start, limit, upper bounds).
    fn read_stream<'a>(&'a self, stream: &'a StreamId, options: ReadStream) -> EventStream<'a> {
        read::stream_pages(self, stream, options)
    }

    /// The events of the whole log, lazily, as `options` say (start, filter, limit, upper bounds). The
    /// stream ends at the head as it is when the end is reached; following live appends is the job of
    /// subscriptions.
    fn read_log(&self, options: ReadLog) -> EventStream<'_> {
        read::log_pages(self, options)
    }
}

/// A shared store is a store: `Arc<SledStore>`, `Arc<dyn EventStore>`.
#[async_trait]
impl<S: EventStore + ?Sized> EventStore for std::sync::Arc<S> {
    async fn append_multi(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        (**self).append_multi(appends).await
    }

    async fn read_stream_chunk(
        &self,
        stream: &StreamId,
        from: Version,
        direction: Direction,
        max: usize,
        view: StreamView,
    ) -> Result<Vec<RecordedEvent>> {
        (**self).read_stream_chunk(stream, from, direction, max, view).await
    }

    async fn read_log_chunk(&self, from: Position, max: usize, filter: &LogFilter) -> Result<LogChunk> {
        (**self).read_log_chunk(from, max, filter).await
    }

    async fn head(&self) -> Result<Position> {
        (**self).head().await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>> {
        (**self).stream_version(stream).await
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<(StreamId, Version)>> {
        (**self).list_streams(prefix).await
    }

    async fn seek_recorded(&self, at: DateTime<Utc>) -> Result<Option<Position>> {
        (**self).seek_recorded(at).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        (**self).save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &StreamId, at: Version) -> Result<Option<Snapshot>> {
        (**self).load_snapshot(stream, at).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        (**self).load_checkpoint(name).await
    }

    async fn save_checkpoints(&self, writes: Vec<CheckpointWrite>) -> Result<()> {
        (**self).save_checkpoints(writes).await
    }

    async fn list_checkpoints(&self, prefix: &str) -> Result<Vec<Checkpoint>> {
        (**self).list_checkpoints(prefix).await
    }

    async fn restore(&self, events: Vec<RecordedEvent>) -> Result<()> {
        (**self).restore(events).await
    }

    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion, mode: DeleteMode) -> Result<()> {
        (**self).delete_stream(stream, expected, mode).await
    }

    async fn truncate_stream(&self, stream: &StreamId, before: Version) -> Result<()> {
        (**self).truncate_stream(stream, before).await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo> {
        (**self).stream_info(stream).await
    }

    async fn scavenge_chunk(&self, from: Position, max: usize) -> Result<ScavengeChunk> {
        (**self).scavenge_chunk(from, max).await
    }

    async fn scavenge_stream(&self, stream: &StreamId) -> Result<u64> {
        (**self).scavenge_stream(stream).await
    }

    fn watch_head(&self) -> HeadWatch {
        (**self).watch_head()
    }

    fn blocking_log_reads(&self) -> Option<std::sync::Arc<dyn BlockingLogReads>> {
        (**self).blocking_log_reads()
    }

    fn partition_leases(&self) -> Option<&dyn PartitionLeases> {
        (**self).partition_leases()
    }
}
