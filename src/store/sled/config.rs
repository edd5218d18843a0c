//! How a [`SledStore`](crate::SledStore)(super::SledStore) is opened: its directory, durability and limits.

use std::path::PathBuf;

use crate::store::{SnapshotRetention, DEFAULT_MAX_EVENT_SIZE};

/// The largest maximum event size a sled store accepts: 1 MiB.
pub const MAX_EVENT_SIZE_LIMIT: usize = 1024 * 1024;

/// When an acknowledged append is safe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Durability {
    /// An append is acknowledged only after its group was flushed and `fsync`ed (`fdatasync`): it
    /// survives `kill -9` of the process and the loss of power. The default.
    #[default]
    Fsync,
    /// An append is acknowledged once it is in sled's buffers; the store writes them out and
    /// `fsync`s them every `flush_every_ms` (500 ms by default). After `kill -9`, appends
    /// acknowledged in the last half-second or so may be lost (never half of one); after a power
    /// loss, those of up to about two `flush_every_ms`, always from the end of the log. Several times
    /// faster for small appends.
    Buffered,
}

/// How to open a [`SledStore`](crate::SledStore).
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
    pub(super) path: PathBuf,
    pub(super) durability: Durability,
    pub(super) cache_capacity: u64,
    pub(super) max_event_size: usize,
    pub(super) create_if_missing: bool,
    pub(super) flush_every_ms: u64,
    pub(super) snapshot_retention: SnapshotRetention,
    /// Test-only: skip the store's own `fdatasync` calls (see `skip_fdatasync_for_tests`).
    pub(super) skip_fdatasync: bool,
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
            snapshot_retention: SnapshotRetention::All,
            skip_fdatasync: false,
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
    /// missing store is [`Error::NotFound`](crate::Error::NotFound).
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// How often the store writes sled's buffers out and syncs them under [`Durability::Buffered`], in
    /// milliseconds (default 500): the loss window of that mode. Under `Fsync` every commit group is
    /// written and synced before it is acknowledged, and this setting is not used.
    pub fn flush_every_ms(mut self, ms: u64) -> Self {
        self.flush_every_ms = ms;
        self
    }

    /// How many snapshots per stream the store keeps (default [`SnapshotRetention::All`], what time
    /// travel needs to start near any point of the past). With [`SnapshotRetention::Last`], each
    /// save deletes the stream's older snapshots in the same atomic batch, so a crash never leaves a
    /// stream without its newest snapshot. Snapshots of streams saved before the setting changed
    /// are trimmed at their stream's next save.
    pub fn snapshot_retention(mut self, retention: SnapshotRetention) -> Self {
        self.snapshot_retention = retention;
        self
    }

    /// For the power-loss tests only: the store skips its own `fdatasync` of the data and blob files,
    /// so that a test can show it would then lose acknowledged appends. Never use it otherwise:
    /// `Durability::Fsync` no longer holds.
    #[doc(hidden)]
    pub fn skip_fdatasync_for_tests(mut self, skip: bool) -> Self {
        self.skip_fdatasync = skip;
        self
    }
}
