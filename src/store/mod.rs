//! The [`EventStore`] trait every backend implements, with the types of its requests and answers.

mod append;
mod checkpoint;
mod lease;
pub(crate) mod memory;
pub(crate) mod observe;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
mod read;
pub(crate) mod sled;
mod snapshot;

pub(crate) use append::{plan_restore, plan_retry, validate_appends, StoredId};
pub use append::{AppendResult, StreamAppend};
pub(crate) use checkpoint::{validate_checkpoint_name, validate_checkpoint_writes};
pub use checkpoint::{Checkpoint, CheckpointWrite, MAX_CHECKPOINT_NAME_LEN};
pub use lease::PartitionLeases;
pub(crate) use read::LogCursor;
pub use read::{Direction, EventStream, HeadWatch, LogChunk, LogFilter, ReadLog, ReadStream, Until};
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
    /// `direction`. An empty answer means there is nothing more that way. The paging primitive
    /// behind [`read_stream`](EventStore::read_stream).
    async fn read_stream_chunk(
        &self,
        stream: &StreamId,
        from: Version,
        direction: Direction,
        max: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// Reads events of the log from position `from` (inclusive), keeping those `filter` admits, until
    /// it has `max` of them or has looked at as many events as it does in one go. The paging
    /// primitive behind [`read_log`](EventStore::read_log).
    async fn read_log_chunk(&self, from: Position, max: usize, filter: &LogFilter) -> Result<LogChunk>;

    /// The position of the last acknowledged event (`Position::ZERO` when the log is empty).
    async fn head(&self) -> Result<Position>;

    /// The current version of `stream`, or `None` when it has no events.
    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>>;

    /// Every stream whose name starts with `prefix` (`""`: all), with its current version, ordered by
    /// name. Meant for tools and administration: it walks every stream.
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

    /// A watch on the head: it moves only once events are acknowledged (durable, for a store that
    /// syncs to disk), so a waiter can read them at once.
    fn watch_head(&self) -> HeadWatch;

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
    ) -> Result<Vec<RecordedEvent>> {
        (**self).read_stream_chunk(stream, from, direction, max).await
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

    fn watch_head(&self) -> HeadWatch {
        (**self).watch_head()
    }

    fn partition_leases(&self) -> Option<&dyn PartitionLeases> {
        (**self).partition_leases()
    }
}
