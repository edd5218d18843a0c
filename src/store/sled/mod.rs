//! [`SledStore`]: the embedded, durable event store on sled.
//!
//! One directory on disk, no server. Appends go through one writer thread that commits them in
//! groups (one sled batch, one flush + fsync per group); reads go straight to sled from the caller's
//! thread and see only acknowledged events. A replay, projector or subscription that pages through
//! the log reads its next page on a blocking thread while it handles the current one
//! (`read::LogReads`), so that catching up uses two cores.
//! [`guide::storage_format`](crate::guide::storage_format) describes the bytes on disk and
//! [`guide::guarantees`](crate::guide::guarantees) what survives a crash.

mod codec;
mod compact;
mod config;
mod files;
mod ids;
mod index;
mod indexer;
mod lifecycle;
mod read;
mod recovery;
mod scavenge;
mod upgrade;
mod verify;
mod writer;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tracing::Instrument;

use self::codec::{encode_body, FORMAT_VERSION};
pub use self::compact::CompactReport;
pub use self::config::{Durability, SledConfig, MAX_EVENT_SIZE_LIMIT};
use self::files::Files;
use self::recovery::{guarded, DATA_FILE_DAMAGE};
pub use self::verify::{VerifyProblem, VerifyReport};
use self::writer::{LifeAnswer, LifeOp, LifeRequest, PreparedAppend, Request, WriterHandle};
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::position::{ExpectedVersion, Position, Version};
use crate::store::observe::{AppendObserver, StoreKind};
use crate::store::{
    plan_restore, validate_appends, validate_checkpoint_name, validate_checkpoint_writes, AppendResult,
    BlockingLogReads, Checkpoint, CheckpointWrite, DeleteMode, Direction, EventStore, HeadWatch, LogChunk, LogFilter,
    ScavengeChunk, Snapshot, StreamAppend, StreamInfo, StreamView,
};
use crate::stream_id::StreamId;

impl SledConfig {
    /// Opens (or creates) the store: recovers the last durable state and rebuilds the in-memory id
    /// index from the log. Blocks the calling thread while it does (and for up to 500 ms while a
    /// just-closed store's lock is released).
    ///
    /// # Errors
    /// [`Error::Locked`] when another process has it open, [`Error::AlreadyOpen`] when this process
    /// has (clone that handle instead), [`Error::NotFound`] when it is missing and
    /// may not be created, [`Error::UnsupportedFormat`] when it was written by an incompatible version,
    /// [`Error::Corrupt`] when the header of its last record is damaged (damage inside an event shows
    /// when that event is read, or with [`SledStore::verify`]), [`Error::Config`] for out-of-range settings,
    /// and [`Error::Storage`] for I/O errors.
    pub fn open(self) -> Result<SledStore> {
        SledStore::open_with(self)
    }
}

/// The embedded event store: one directory on disk, crash-safe, with group commit.
///
/// Cloning gives another handle to the same store. Dropping the last handle stops the writer after
/// the appends already queued and closes the database; sled releases its file lock a few
/// milliseconds later, which is why [`SledConfig::open`] waits up to 500 ms for a lock to go before it
/// reports [`Error::Locked`].
///
/// ```
/// use annals::{EventStore, ExpectedVersion, NewEvent, SledStore, StreamId};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let dir = tempfile::tempdir()?;
/// let stream = StreamId::new("order-1")?;
/// {
///     let store = SledStore::open(dir.path())?;
///     let event = NewEvent::json("OrderPlaced", &serde_json::json!({ "total": 1250 }))?;
///     store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
/// }
/// let reopened = SledStore::open(dir.path())?;
/// assert_eq!(reopened.stream_version(&stream).await?.map(|v| v.get()), Some(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct SledStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    files: Arc<Files>,
    /// The writer threads; dropping the handle stops them after the appends already queued.
    writer: WriterHandle,
    max_event_size: usize,
    durability: Durability,
    /// The directory's entry among the stores open in this process; dropped last, once the writer
    /// has stopped.
    _registered: recovery::Registered,
}

impl SledStore {
    /// Opens (or creates) the store in the directory `path` with the default [`SledConfig`].
    ///
    /// # Errors
    /// As [`SledConfig::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        SledConfig::new(path.as_ref()).open()
    }

    fn open_with(config: SledConfig) -> Result<Self> {
        if config.max_event_size == 0 || config.max_event_size > MAX_EVENT_SIZE_LIMIT {
            return Err(Error::Config { setting: "max_event_size", expected: "between 1 byte and 1 MiB" });
        }
        let mut registered = recovery::register(&config.path, files::LOCK_PATIENCE)?;
        compact::settle(&config.path)?;
        let files = Arc::new(Files::open(&config)?);
        registered.created(&config.path);
        crate::store::observe::describe();
        let writer = writer::spawn(Arc::clone(&files), config.durability, config.flush_every_ms)?;
        Ok(SledStore {
            inner: Arc::new(Inner {
                files,
                writer,
                max_event_size: config.max_event_size,
                durability: config.durability,
                _registered: registered,
            }),
        })
    }

    /// Compacts the closed store in the directory `path`: copies every key of its sled database into
    /// a fresh database beside it (`<name>.annals-compact`), with the store's head file, and swaps
    /// the two directories. sled gives back the space of removed events only when a whole segment of
    /// its file is at most half live; after a [scavenge](crate::scavenge) the fresh copy holds only
    /// what is live. Positions, versions, checkpoints, snapshots, lifecycle keys and retention rules
    /// are copied unchanged.
    ///
    /// The store must not be open while it runs, and it blocks the calling thread for about as long
    /// as reading the whole store takes; it needs free space for a second copy of what is live.
    ///
    /// # Crash safety
    /// The copy, made durable file by file, gets a marker file (`annals-compacted`) last; then the
    /// store is renamed to `<name>.annals-old`, the copy to `<name>`, and the old store deleted, with
    /// the parent directory synced after each step. Whenever it stops (a crash, a power cut, an
    /// error), the next open or compaction of `path` finishes the swap if the copy has its marker
    /// and deletes the copy if not: it finds the old store or the new one, complete, with every
    /// event. `docs/storage-format.md` ("Compaction") lists each step and its crash case.
    ///
    /// # Errors
    /// [`Error::AlreadyOpen`] when this process has the store open, [`Error::Locked`] when another
    /// process has (nothing changes in either case), [`Error::NotFound`] when there is no store,
    /// the errors of [`SledConfig::open`] for a store that does not open, and [`Error::Storage`]
    /// for I/O errors (a full disk: the partial copy is deleted, the store is unchanged).
    ///
    /// ```
    /// use annals::{EventStore, ExpectedVersion, NewEvent, SledStore, StreamId};
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("events");
    /// let stream = StreamId::new("order-1")?;
    /// {
    ///     let store = SledStore::open(&path)?;
    ///     let event = NewEvent::json("OrderPlaced", &serde_json::json!({ "total": 1250 }))?;
    ///     store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
    /// }
    /// let report = SledStore::compact(&path)?;
    /// assert!(report.bytes_after > 0);
    /// let reopened = SledStore::open(&path)?;
    /// assert_eq!(reopened.stream_version(&stream).await?.map(|v| v.get()), Some(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compact(path: impl AsRef<Path>) -> Result<CompactReport> {
        Self::compact_stopping_at(path, |_| {})
    }

    /// Test-only: [`SledStore::compact`], calling `at` with the name of each step as it reaches it
    /// (`copying`, `copied`, `marked`, `old-moved`,
    /// `swapped`, `old-deleted`); a crash test kills the process there.
    #[doc(hidden)]
    pub fn compact_stopping_at(path: impl AsRef<Path>, mut at: impl FnMut(&'static str)) -> Result<CompactReport> {
        let path = path.as_ref();
        let _registered = recovery::register(path, files::LOCK_PATIENCE)?;
        compact::settle(path)?;
        compact::run(path, &mut at)
    }

    /// The directory of the store.
    pub fn path(&self) -> &Path {
        &self.inner.files.path
    }

    /// The durability mode the store was opened with.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// The storage format version this build writes and reads.
    pub const FORMAT_VERSION: u32 = FORMAT_VERSION;

    /// The disk space the store uses, in bytes.
    ///
    /// # Errors
    /// [`Error::Storage`] when sled cannot tell.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.inner.files.db.size_on_disk().map_err(Error::storage)
    }

    /// Hands appends to the writer and waits for its answer. `restore` carries the `recorded_at` and
    /// first position of a restored batch.
    ///
    /// Observed as one append (`annals.append` span and metrics), a restored batch too.
    async fn send(
        &self,
        appends: Vec<StreamAppend>,
        restore: Option<(DateTime<Utc>, u64)>,
    ) -> Result<Vec<AppendResult>> {
        let observer = AppendObserver::start(StoreKind::Sled, &appends);
        let result = self.send_unobserved(appends, restore).instrument(observer.span().clone()).await;
        observer.finish(&result);
        result
    }

    async fn send_unobserved(
        &self,
        appends: Vec<StreamAppend>,
        restore: Option<(DateTime<Utc>, u64)>,
    ) -> Result<Vec<AppendResult>> {
        validate_appends(&appends, self.inner.max_event_size)?;
        let appends = appends
            .into_iter()
            .map(|append| PreparedAppend {
                ids: append.events.iter().map(|e| e.id).collect(),
                types: append.events.iter().map(|e| e.event_type().to_owned()).collect(),
                bodies: append.events.iter().map(|e| encode_body(&append.stream, e)).collect(),
                stream: append.stream,
                expected: append.expected,
            })
            .collect::<Vec<PreparedAppend>>();
        // A sled read per id, here on the appender's thread rather than on the writer's.
        let files = &self.inner.files;
        let unindexed = recovery::guarded(recovery::DATA_FILE_DAMAGE, || {
            Ok(files.unindexed(appends.iter().flat_map(|a| a.ids.iter().copied())))
        })
        .unwrap_or(None);
        let (reply, answer) = oneshot::channel();
        self.inner.writer.send(Request { appends, reply, restore, unindexed })?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Hands a change of a stream's life (or a scavenge step) to the writer and waits for its answer.
    async fn change(&self, op: LifeOp) -> Result<LifeAnswer> {
        let (reply, answer) = oneshot::channel();
        self.inner.writer.send_life(LifeRequest { op, reply })?;
        answer.await.map_err(|_| Error::Closed)?
    }

    fn durable_head(&self) -> u64 {
        self.inner.writer.head().get()
    }
}

#[async_trait]
impl EventStore for SledStore {
    async fn append_multi(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.send(appends, None).await
    }

    async fn read_stream_chunk(
        &self,
        stream: &StreamId,
        from: Version,
        direction: Direction,
        max: usize,
        view: StreamView,
    ) -> Result<Vec<RecordedEvent>> {
        let head = self.durable_head();
        guarded(DATA_FILE_DAMAGE, || read::stream_chunk(&self.inner.files, head, stream, from, direction, max, view))
    }

    async fn read_log_chunk(&self, from: Position, max: usize, filter: &LogFilter) -> Result<LogChunk> {
        let head = self.durable_head();
        guarded(DATA_FILE_DAMAGE, || read::log_chunk(&self.inner.files, head, from, max, filter, Vec::new(), None))
    }

    fn blocking_log_reads(&self) -> Option<Arc<dyn BlockingLogReads>> {
        let head = self.inner.writer.watch_head();
        Some(Arc::new(read::LogReads { files: Arc::clone(&self.inner.files), head }))
    }

    async fn head(&self) -> Result<Position> {
        Ok(Position::new(self.durable_head()))
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>> {
        let head = self.durable_head();
        let info = guarded(DATA_FILE_DAMAGE, || self.inner.files.stream_info(stream.as_str(), head))?;
        if info.tombstone {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        Ok(info.current_version())
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<(StreamId, Version)>> {
        let head = self.durable_head();
        guarded(DATA_FILE_DAMAGE, || read::list_streams(&self.inner.files, head, prefix))
    }

    async fn seek_recorded(&self, at: DateTime<Utc>) -> Result<Option<Position>> {
        let head = self.durable_head();
        guarded(DATA_FILE_DAMAGE, || read::seek_recorded(&self.inner.files, head, at))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        guarded(DATA_FILE_DAMAGE, || self.inner.files.save_snapshot(&snapshot))
    }

    async fn load_snapshot(&self, stream: &StreamId, at: Version) -> Result<Option<Snapshot>> {
        guarded(DATA_FILE_DAMAGE, || self.inner.files.load_snapshot(stream, at.get()))
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        validate_checkpoint_name(name)?;
        guarded(DATA_FILE_DAMAGE, || self.inner.files.load_checkpoint(name))
    }

    async fn save_checkpoints(&self, writes: Vec<CheckpointWrite>) -> Result<()> {
        validate_checkpoint_writes(&writes)?;
        let files = Arc::clone(&self.inner.files);
        let sync = self.inner.durability == Durability::Fsync;
        blocking(move || guarded(DATA_FILE_DAMAGE, || files.save_checkpoints(&writes, sync))).await
    }

    async fn list_checkpoints(&self, prefix: &str) -> Result<Vec<Checkpoint>> {
        guarded(DATA_FILE_DAMAGE, || self.inner.files.list_checkpoints(prefix))
    }

    async fn restore(&self, events: Vec<RecordedEvent>) -> Result<()> {
        let plan = plan_restore(events)?;
        for (first_position, appends) in plan.requests {
            self.send(appends, Some((plan.recorded_at, first_position.get()))).await?;
        }
        Ok(())
    }

    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion, mode: DeleteMode) -> Result<()> {
        self.change(LifeOp::Delete { stream: stream.clone(), expected, mode }).await.map(|_| ())
    }

    async fn truncate_stream(&self, stream: &StreamId, before: Version) -> Result<()> {
        self.change(LifeOp::Truncate { stream: stream.clone(), before }).await.map(|_| ())
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo> {
        let head = self.durable_head();
        guarded(DATA_FILE_DAMAGE, || self.inner.files.stream_info(stream.as_str(), head))
    }

    async fn scavenge_chunk(&self, from: Position, max: usize) -> Result<ScavengeChunk> {
        match self.change(LifeOp::ScavengeChunk { from, max }).await? {
            LifeAnswer::Chunk(chunk) => Ok(chunk),
            _ => Err(Error::Closed),
        }
    }

    async fn scavenge_stream(&self, stream: &StreamId) -> Result<u64> {
        match self.change(LifeOp::ScavengeStream { stream: stream.clone() }).await? {
            LifeAnswer::Removed(removed) => Ok(removed),
            _ => Err(Error::Closed),
        }
    }

    fn watch_head(&self) -> HeadWatch {
        HeadWatch::new(self.inner.writer.watch_head())
    }
}

/// Runs blocking work (a flush and `fsync`) off the async reactor when there is a tokio runtime, or
/// in place under another executor.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime.spawn_blocking(work).await.map_err(Error::storage)?,
        Err(_) => work(),
    }
}
