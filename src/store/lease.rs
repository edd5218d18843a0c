//! [`PartitionLeases`]: how competing consumers in several processes share the partitions of one
//! subscription, through the store they read.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::store::CheckpointWrite;

/// Membership and partition ownership of consumer groups, kept in the store so that workers in
/// different processes (and machines) can share one subscription. A store that several processes
/// open at once offers it ([`EventStore::partition_leases`](crate::EventStore::partition_leases));
/// the embedded stores, open in one process at a time, coordinate their workers in memory instead.
///
/// Every lease expires unless renewed: a worker that dies without leaving (killed, partitioned
/// away) loses its membership and its partitions `ttl` after its last renewal, on the store's clock.
/// Checkpoints of leased partitions are saved fenced: only while the saver still holds them, so a
/// worker that lost a partition cannot move its checkpoint behind the new holder's back.
#[async_trait]
pub trait PartitionLeases: Send + Sync {
    /// Registers `member` in `group`, or renews it, until `ttl` from now. Returns the live members
    /// in the order they joined (ties by name), `member` included.
    async fn heartbeat(&self, group: &str, member: &str, ttl: Duration) -> Result<Vec<String>>;

    /// Takes or renews, until `ttl` from now, each of `partitions` that is free, expired or already
    /// held by `member`. Returns those `member` holds now, ascending.
    async fn claim(&self, group: &str, member: &str, partitions: &[u32], ttl: Duration) -> Result<Vec<u32>>;

    /// Frees those of `partitions` that `member` holds.
    async fn release(&self, group: &str, member: &str, partitions: &[u32]) -> Result<()>;

    /// Removes `member` from `group` and frees every partition it holds.
    async fn leave(&self, group: &str, member: &str) -> Result<()>;

    /// Applies checkpoint `writes` in one atomic write if `member` still holds every one of
    /// `partitions`; otherwise writes nothing. Returns the partitions it no longer holds (empty when
    /// the writes were applied).
    async fn save_checkpoints_held(
        &self,
        group: &str,
        member: &str,
        partitions: &[u32],
        writes: Vec<CheckpointWrite>,
    ) -> Result<Vec<u32>>;
}
