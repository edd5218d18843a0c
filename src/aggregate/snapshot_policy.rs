//! When to take snapshots of aggregate state, and how they are encoded.

use std::fmt;
use std::sync::Arc;

use crate::position::Version;

/// When the repository stores a snapshot of an aggregate after a command.
///
/// Loads start from the newest usable snapshot and replay only the events after it; a snapshot that
/// does not decode, or whose schema version is not the aggregate's
/// [`SNAPSHOT_VERSION`](crate::Aggregate::SNAPSHOT_VERSION), is ignored and the state is rebuilt
/// from events.
///
/// ```
/// use annals::{SnapshotPolicy, Version};
///
/// let every_100 = SnapshotPolicy::every(100);
/// assert!(every_100.should_snapshot(Version::new(99), Version::new(101)));
/// assert!(!every_100.should_snapshot(Version::new(101), Version::new(150)));
///
/// // Or any rule: here, after every command that wrote 10 events or more.
/// let big = SnapshotPolicy::custom(|before, after| after.get() - before.get() >= 10);
/// assert!(big.should_snapshot(Version::new(3), Version::new(13)));
/// ```
#[derive(Clone)]
pub struct SnapshotPolicy(Rule);

#[derive(Clone)]
enum Rule {
    Every(u64),
    Custom(Arc<dyn Fn(Version, Version) -> bool + Send + Sync>),
}

impl SnapshotPolicy {
    /// A snapshot each time the stream's version reaches a multiple of `n` (or passes one in a
    /// command that writes several events). `every(0)` never snapshots.
    pub fn every(n: u64) -> Self {
        SnapshotPolicy(Rule::Every(n))
    }

    /// A snapshot whenever `rule(version_before, version_after)` says so, after a command moved the
    /// stream from `version_before` to `version_after`.
    pub fn custom(rule: impl Fn(Version, Version) -> bool + Send + Sync + 'static) -> Self {
        SnapshotPolicy(Rule::Custom(Arc::new(rule)))
    }

    /// Whether a command that moved a stream from `before` to `after` should store a snapshot.
    pub fn should_snapshot(&self, before: Version, after: Version) -> bool {
        match &self.0 {
            Rule::Every(0) => false,
            Rule::Every(n) => after.get() / n > before.get() / n,
            Rule::Custom(rule) => rule(before, after),
        }
    }
}

impl fmt::Debug for SnapshotPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Rule::Every(n) => write!(f, "SnapshotPolicy::every({n})"),
            Rule::Custom(_) => f.write_str("SnapshotPolicy::custom(..)"),
        }
    }
}
