//! [`Snapshot`]: an aggregate's state at a version, kept by the store beside its events.

use chrono::{DateTime, SubsecRound, Utc};

use crate::position::Version;
use crate::stream_id::StreamId;

/// An aggregate's state as of a version of its stream, so that a load can replay only the events
/// after it.
///
/// Snapshots are a cache: a store may lose the newest ones in a crash (they are not synced with
/// appends), which makes the next load longer, never wrong.
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
