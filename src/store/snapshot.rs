//! [`Snapshot`]: an aggregate's state at a version, kept by the store beside its events; and
//! [`SnapshotRetention`]: how many of them a store keeps per stream.

use std::num::NonZeroUsize;

use chrono::{DateTime, SubsecRound, Utc};

use crate::position::Version;
use crate::stream_id::StreamId;

/// An aggregate's state as of a version of its stream, so that a load can replay only the events
/// after it.
///
/// Snapshots are a cache: a store may lose the newest ones in a crash (they are not synced with
/// appends), which makes the next load longer, never wrong. A store keeps as many per stream as its
/// [`SnapshotRetention`] says.
///
/// [`guide::storage_format`](crate::guide::storage_format) says how each field is stored, and how
/// to write one by hand: `state` is the aggregate serialized with `serde_json`, exactly what
/// `Repository::with_snapshots` writes, and `schema_version` is the aggregate's
/// [`SNAPSHOT_VERSION`](crate::Aggregate::SNAPSHOT_VERSION).
///
/// ```
/// use annals::{EventStore, MemoryStore, Snapshot, StreamId, Version};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = MemoryStore::new();
/// let stream = StreamId::new("account-42")?;
/// // The state after the stream's first 100 events, for an aggregate at snapshot version 1.
/// let state = serde_json::json!({ "open": true, "balance_cents": 12_500 }).to_string();
/// store.save_snapshot(Snapshot::new(stream.clone(), Version::new(100), 1, state)).await?;
///
/// let newest = store.load_snapshot(&stream, Version::MAX).await?.ok_or("no snapshot")?;
/// assert_eq!((newest.version.get(), newest.schema_version), (100, 1));
/// assert!(store.load_snapshot(&stream, Version::new(99)).await?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The aggregate's stream.
    pub stream: StreamId,
    /// The version of the last event folded into `state`.
    pub version: Version,
    /// The schema version of `state`; a loader ignores snapshots of another version.
    pub schema_version: u32,
    /// The state, as JSON text.
    pub state: String,
    /// When the snapshot was taken (microsecond precision).
    pub taken_at: DateTime<Utc>,
}

impl Snapshot {
    /// A snapshot taken now.
    pub fn new(stream: StreamId, version: Version, schema_version: u32, state: String) -> Self {
        Snapshot { stream, version, schema_version, state, taken_at: Utc::now().trunc_subsecs(6) }
    }
}

/// How many snapshots a store keeps per stream: every one ([`All`](SnapshotRetention::All), the
/// default), or the newest `n` by version ([`Last`](SnapshotRetention::Last)).
///
/// A store applies it when it saves a snapshot: the save and the deletion of that stream's
/// snapshots beyond the newest `n` are one atomic write, so a crash leaves either the snapshots of
/// before the save or those of after it, and a save never deletes the stream's newest snapshot. A
/// snapshot older than the `n` kept is not stored at all. Streams that get no new snapshot keep
/// what they have.
///
/// **Why the default keeps every snapshot.** Loads of the current state need only the newest
/// snapshot (and fall back to older ones only when the newest does not decode). Time travel needs
/// the old ones: [`Repository::load_as_of`](crate::Repository::load_as_of) at a version or a
/// recorded time starts from the newest snapshot at or before its point, so with every snapshot
/// kept a look at any point of the past reads at most one snapshot interval of events
/// ([`guide::time_travel`](crate::guide::time_travel)). With `Last(n)`, a look at a point before
/// the oldest kept snapshot gives the same answer but folds the stream from its first event. Choose
/// `Last(n)` when snapshots take more room than that is worth: `Last(3)` keeps the newest and two
/// to fall back on.
///
/// ```
/// use annals::{EventStore, MemoryStore, Snapshot, SnapshotRetention, StreamId, Version};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = MemoryStore::new().with_snapshot_retention(SnapshotRetention::last(2));
/// let stream = StreamId::new("account-42")?;
/// for version in [100, 200, 300] {
///     let state = format!(r#"{{"balance_cents":{version}}}"#);
///     store.save_snapshot(Snapshot::new(stream.clone(), Version::new(version), 1, state)).await?;
/// }
/// // 300 and 200 are kept; 100 was deleted by the save of 300.
/// assert_eq!(store.load_snapshot(&stream, Version::new(250)).await?.map(|s| s.version.get()), Some(200));
/// assert!(store.load_snapshot(&stream, Version::new(199)).await?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SnapshotRetention {
    /// Every snapshot saved, one per version the snapshot policy chose: what time travel needs to
    /// start near any point of the past. The default.
    #[default]
    All,
    /// The newest `n` snapshots of each stream, by version.
    Last(NonZeroUsize),
}

impl SnapshotRetention {
    /// Keep the newest `n` snapshots of each stream. `0` counts as `1`: a store never deletes the
    /// newest snapshot of a stream.
    pub fn last(n: usize) -> Self {
        SnapshotRetention::Last(NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN))
    }

    /// How many snapshots per stream are kept, `None` for all.
    pub fn kept(self) -> Option<usize> {
        match self {
            SnapshotRetention::All => None,
            SnapshotRetention::Last(n) => Some(n.get()),
        }
    }
}
