//! [`SledStore`]: the embedded, durable event store on sled.
//!
//! One directory on disk, no server. Appends go through one writer thread that commits them in
//! groups (one sled batch, one flush + fsync per group); reads go straight to sled from the caller's
//! thread and see only acknowledged events. `docs/storage-format.md` describes the bytes on disk and
//! `docs/guarantees.md` what survives a crash.

mod codec;
mod files;
mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{oneshot, watch};

use self::codec::{encode_body, FORMAT_VERSION};
use self::files::Files;
pub use self::verify::{VerifyProblem, VerifyReport};
use self::writer::{PreparedAppend, Request, Syncer, Writer};
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::position::{Position, Version};
use crate::store::{
    plan_restore, validate_appends, validate_checkpoint_name, validate_checkpoint_writes, AppendResult, Checkpoint,
    CheckpointWrite, Direction, EventStore, HeadWatch, LogChunk, LogFilter, Snapshot, StreamAppend,
    DEFAULT_MAX_EVENT_SIZE,
};
use crate::stream_id::StreamId;

/// The largest maximum event size a sled store accepts: 1 MiB.
pub const MAX_EVENT_SIZE_LIMIT: usize = 1024 * 1024;

/// How many events a filtered log read looks at before it returns a page.
const SCAN_BUDGET: u64 = 16 * 1024;

/// When an acknowledged append is safe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Durability {
    /// An append is acknowledged only after its group was flushed and `fsync`ed (`fdatasync`): it
    /// survives `kill -9` of the process and the loss of power. The default.
    #[default]
    Fsync,
    /// An append is acknowledged once it is in sled's buffers; sled writes them out every
    /// `flush_every_ms` (500 ms by default) without `fsync`. After `kill -9`, appends acknowledged
    /// in the last half-second or so may be lost (never half of one); after a power loss, more.
    /// Several times faster for small appends.
    Buffered,
}

/// How to open a [`SledStore`].
///
/// ```no_run
/// use annals::{Durability, SledConfig};
///
/// let store = SledConfig::new("data/events")
///     .durability(Durability::Fsync)
///     .cache_capacity(256 * 1024 * 1024)
///     .max_event_size(128 * 1024)
///     .open()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct SledConfig {
    path: PathBuf,
    durability: Durability,
    cache_capacity: u64,
    max_event_size: usize,
    create_if_missing: bool,
    flush_every_ms: u64,
}

impl SledConfig {
    /// The defaults for a store in the directory `path`: `Fsync` durability, a 64 MiB cache, 64 KiB
    /// events at most, and the directory created when missing.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SledConfig {
            path: path.into(),
            durability: Durability::Fsync,
            cache_capacity: 64 * 1024 * 1024,
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
            create_if_missing: true,
            flush_every_ms: 500,
        }
    }

    /// When an acknowledged append is safe (default [`Durability::Fsync`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// sled's page cache size in bytes (default 64 MiB). The process may use several times this.
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = bytes;
        self
    }

    /// The largest event accepted, in bytes of payload, type name and metadata (default 64 KiB, at
    /// most [`MAX_EVENT_SIZE_LIMIT`]).
    pub fn max_event_size(mut self, bytes: usize) -> Self {
        self.max_event_size = bytes;
        self
    }

    /// Whether to create the store when the directory holds none (default `true`). With `false`, a
    /// missing store is [`Error::NotFound`].
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// How often sled writes its buffers out in the background, in milliseconds (default 500). This is
    /// the loss window of [`Durability::Buffered`].
    pub fn flush_every_ms(mut self, ms: u64) -> Self {
        self.flush_every_ms = ms;
        self
    }

    /// Opens (or creates) the store: recovers the last durable state and rebuilds the in-memory id
    /// index from the log. Blocks the calling thread while it does (and for up to 500 ms while a
    /// just-closed store's lock is released).
    ///
    /// # Errors
    /// [`Error::Locked`] when another process (or handle) has it open, [`Error::NotFound`] when it is missing and
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
    queue: Option<mpsc::Sender<Request>>,
    /// The writer's second stage, here for its count of queued requests.
    pipeline: Arc<Syncer>,
    writer: Option<JoinHandle<()>>,
    head: watch::Receiver<Position>,
    max_event_size: usize,
    durability: Durability,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue stops the writer after the groups already queued; joining it makes sure
        // sled can release its lock, which it does shortly after the last database handle is gone.
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
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
            return Err(Error::Config("max_event_size must be between 1 byte and 1 MiB"));
        }
        let files = Arc::new(Files::open(&config)?);
        let last = files.last_record()?;
        let next_position = last.as_ref().map_or(1, |r| r.last() + 1);
        let head_now = Position::new(next_position - 1);
        let (head_tx, head_rx) = watch::channel(head_now);
        let poisoned = Arc::new(AtomicBool::new(false));
        let (synced, applied) = mpsc::channel();
        let syncer = Arc::new(Syncer {
            files: Arc::clone(&files),
            durability: config.durability,
            head: head_tx,
            poisoned: Arc::clone(&poisoned),
            in_flight: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
        });
        let writer = Writer {
            files: Arc::clone(&files),
            durability: config.durability,
            synced,
            syncer: Arc::clone(&syncer),
            next_position,
            last_recorded: last.map_or(DateTime::<Utc>::MIN_UTC, |r| r.recorded_at),
            heads: Default::default(),
            ids: files.event_ids()?,
            poisoned,
        };
        let pipeline = Arc::clone(&syncer);
        let (queue, requests) = mpsc::channel();
        let syncer = std::thread::Builder::new()
            .name("annals-syncer".into())
            .spawn(move || syncer.run(applied))
            .map_err(Error::storage)?;
        let writer = std::thread::Builder::new()
            .name("annals-writer".into())
            .spawn(move || {
                writer.run(requests);
                // The writer dropped its end of the syncer's queue: the syncer ends after the last group.
                let _ = syncer.join();
            })
            .map_err(Error::storage)?;
        Ok(SledStore {
            inner: Arc::new(Inner {
                files,
                queue: Some(queue),
                pipeline,
                writer: Some(writer),
                head: head_rx,
                max_event_size: config.max_event_size,
                durability: config.durability,
            }),
        })
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
    async fn send(
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
            .collect();
        let (reply, answer) = oneshot::channel();
        let queue = self.inner.queue.as_ref().ok_or(Error::Closed)?;
        self.inner.pipeline.queued.fetch_add(1, Ordering::AcqRel);
        if queue.send(Request { appends, reply, restore }).is_err() {
            self.inner.pipeline.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Closed);
        }
        answer.await.map_err(|_| Error::Closed)?
    }

    /// A filtered log read through the event-type index: only the records holding wanted events are
    /// read, so its cost follows the matching events, not the log's length.
    fn read_log_indexed(&self, start: u64, max: usize, filter: &LogFilter, head: u64) -> Result<LogChunk> {
        let files = &self.inner.files;
        let mut positions = Vec::new();
        // One more than a page per type tells whether anything is left after the page.
        for event_type in &filter.event_types {
            positions.extend(files.type_positions(event_type, start, head, max + 1)?);
        }
        positions.sort_unstable();
        positions.dedup();
        let complete = positions.len() <= max;
        positions.truncate(max);
        let mut events = Vec::with_capacity(positions.len());
        let mut cache = None;
        let mut next = start;
        for position in positions {
            match files.event_at(position, &mut cache) {
                Ok(event) => {
                    if filter.admits(event.stream.as_str(), &event.event_type) {
                        events.push(event);
                    }
                }
                Err(error) => return partial(events, next, error),
            }
            next = position + 1;
        }
        if complete {
            // Every wanted event up to the head was found: the read has looked at everything.
            next = next.max(head + 1);
        }
        Ok(LogChunk { events, next: Position::new(next.max(start)), end: complete })
    }

    fn durable_head(&self) -> u64 {
        self.inner.head.borrow().get()
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
    ) -> Result<Vec<RecordedEvent>> {
        let head = self.durable_head();
        let files = &self.inner.files;
        let mut cache = None;
        let mut events = Vec::new();
        let from = from.get().max(1);
        for entry in files.stream_entries(stream.as_str(), from, direction) {
            let entry = entry?;
            if entry.first_position > head {
                // Not acknowledged yet; neither is anything after it.
                if direction == Direction::Forward {
                    break;
                }
                continue;
            }
            let versions: Box<dyn Iterator<Item = u64>> = match direction {
                Direction::Forward => Box::new(from.max(entry.first_version)..=entry.last_version()),
                Direction::Backward => Box::new((entry.first_version..=from.min(entry.last_version())).rev()),
            };
            for version in versions {
                if events.len() >= max {
                    return Ok(events);
                }
                let position = entry.first_position + (version - entry.first_version);
                match files.event_at(position, &mut cache) {
                    Ok(event) => events.push(event),
                    // Give back the events before a damaged one; the next page starts at it and fails.
                    Err(_) if !events.is_empty() => return Ok(events),
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(events)
    }

    async fn read_log_chunk(&self, from: Position, max: usize, filter: &LogFilter) -> Result<LogChunk> {
        let head = self.durable_head();
        let start = from.get().max(1);
        if !filter.event_types.is_empty() {
            return self.read_log_indexed(start, max.max(1), filter, head);
        }
        let mut events = Vec::new();
        let mut next = start;
        for record in self.inner.files.records_from(start) {
            let record = match record {
                Ok(record) => record,
                Err(error) => return partial(events, next, error),
            };
            if record.first > head {
                break;
            }
            for position in next.max(record.first)..=record.last() {
                if events.len() >= max || position - start >= SCAN_BUDGET {
                    return Ok(LogChunk { events, next: Position::new(next), end: next > head });
                }
                let event = if filter.is_all() {
                    record.event(position).map(Some)
                } else {
                    record.event_if(position, |stream, event_type| filter.admits(stream, event_type))
                };
                match event {
                    Ok(Some(event)) => events.push(event),
                    Ok(None) => {}
                    Err(error) => return partial(events, next, error),
                }
                next = position + 1;
            }
        }
        let next = next.max(head + 1).max(start);
        Ok(LogChunk { events, next: Position::new(next), end: true })
    }

    async fn head(&self) -> Result<Position> {
        Ok(Position::new(self.durable_head()))
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>> {
        Ok(self.inner.files.stream_version(stream.as_str(), self.durable_head())?.map(Version::new))
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<(StreamId, Version)>> {
        let head = self.durable_head();
        let mut streams = Vec::new();
        for name in self.inner.files.stream_names(prefix) {
            let name = name?;
            // A stream whose first events are not acknowledged yet does not exist yet.
            if let Some(version) = self.inner.files.stream_version(&name, head)? {
                let stream = StreamId::new(name).map_err(|_| Error::Corrupt {
                    what: "stream index entry",
                    position: Position::ZERO,
                    reason: "its stream name is not valid",
                })?;
                streams.push((stream, Version::new(version)));
            }
        }
        Ok(streams)
    }

    async fn seek_recorded(&self, at: DateTime<Utc>) -> Result<Option<Position>> {
        let head = self.durable_head();
        // Binary search over positions; every probe lands in a record whose events share one time.
        let (mut low, mut high) = (1, head + 1);
        while low < high {
            let middle = low + (high - low) / 2;
            let record = self.inner.files.record_at(middle)?.ok_or(Error::Corrupt {
                what: "log record",
                position: Position::new(middle),
                reason: "missing below the head",
            })?;
            if record.recorded_at >= at {
                high = record.first.min(middle);
            } else {
                low = record.last() + 1;
            }
        }
        Ok((low <= head).then(|| Position::new(low)))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.inner.files.save_snapshot(&snapshot)
    }

    async fn load_snapshot(&self, stream: &StreamId, at: Version) -> Result<Option<Snapshot>> {
        self.inner.files.load_snapshot(stream, at.get())
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        validate_checkpoint_name(name)?;
        self.inner.files.load_checkpoint(name)
    }

    async fn save_checkpoints(&self, writes: Vec<CheckpointWrite>) -> Result<()> {
        validate_checkpoint_writes(&writes)?;
        let files = Arc::clone(&self.inner.files);
        let sync = self.inner.durability == Durability::Fsync;
        blocking(move || files.save_checkpoints(&writes, sync)).await
    }

    async fn list_checkpoints(&self, prefix: &str) -> Result<Vec<Checkpoint>> {
        self.inner.files.list_checkpoints(prefix)
    }

    async fn restore(&self, events: Vec<RecordedEvent>) -> Result<()> {
        let plan = plan_restore(events)?;
        for (first_position, appends) in plan.requests {
            self.send(appends, Some((plan.recorded_at, first_position.get()))).await?;
        }
        Ok(())
    }

    fn watch_head(&self) -> HeadWatch {
        HeadWatch::new(self.inner.head.clone())
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

/// The answer of a log read that met a damaged event at `next`: the events before it, if any (the
/// next page starts at the damaged one and fails), or the error.
fn partial(events: Vec<RecordedEvent>, next: u64, error: Error) -> Result<LogChunk> {
    if events.is_empty() {
        Err(error)
    } else {
        Ok(LogChunk { events, next: Position::new(next), end: false })
    }
}
