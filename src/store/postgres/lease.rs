//! [`PartitionLeases`] on PostgreSQL: `<schema>.members` and `<schema>.leases`, with expiry on the
//! server's clock, so workers of one subscription in several processes share its partitions.

use std::time::Duration;

use async_trait::async_trait;

use super::fault::pg_error;
use super::PostgresStore;
use crate::error::Result;
use crate::store::{validate_checkpoint_writes, CheckpointWrite, PartitionLeases};

/// A lease's length in milliseconds, as SQL wants it.
fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Partition numbers as SQL's `int4`.
fn numbers(partitions: &[u32]) -> Vec<i32> {
    partitions.iter().map(|&p| i32::try_from(p).unwrap_or(i32::MAX)).collect()
}

#[async_trait]
impl PartitionLeases for PostgresStore {
    async fn heartbeat(&self, group: &str, member: &str, ttl: Duration) -> Result<Vec<String>> {
        let client = self.client().await?;
        let renew = client
            .prepare_cached(&self.sql(
                "INSERT INTO {s}.members (subscription, member, expires_at) \
                 VALUES ($1, $2, clock_timestamp() + $3::bigint * interval '1 millisecond') \
                 ON CONFLICT (subscription, member) DO UPDATE SET expires_at = excluded.expires_at",
            ))
            .await
            .map_err(pg_error)?;
        let forget = client
            .prepare_cached(
                &self.sql("DELETE FROM {s}.members WHERE subscription = $1 AND expires_at < clock_timestamp()"),
            )
            .await
            .map_err(pg_error)?;
        let live = client
            .prepare_cached(&self.sql(
                "SELECT member FROM {s}.members WHERE subscription = $1 AND expires_at >= clock_timestamp() \
                 ORDER BY joined_at, member",
            ))
            .await
            .map_err(pg_error)?;
        let (_, _, rows) = futures_util::future::try_join3(
            client.execute(&renew, &[&group, &member, &millis(ttl)]),
            client.execute(&forget, &[&group]),
            client.query(&live, &[&group]),
        )
        .await
        .map_err(pg_error)?;
        rows.iter().map(|row| row.try_get(0).map_err(pg_error)).collect()
    }

    async fn claim(&self, group: &str, member: &str, partitions: &[u32], ttl: Duration) -> Result<Vec<u32>> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let create = client
            .prepare_cached(&self.sql(
                "INSERT INTO {s}.leases (subscription, partition) SELECT $1, unnest($2::int4[]) \
                 ON CONFLICT (subscription, partition) DO NOTHING",
            ))
            .await
            .map_err(pg_error)?;
        let take = client
            .prepare_cached(&self.sql(
                "UPDATE {s}.leases SET owner = $3, expires_at = clock_timestamp() + $4::bigint * interval '1 millisecond' \
                 WHERE subscription = $1 AND partition = ANY($2) \
                 AND (owner IS NULL OR owner = $3 OR expires_at < clock_timestamp()) RETURNING partition",
            ))
            .await
            .map_err(pg_error)?;
        let wanted = numbers(partitions);
        let (_, rows) = futures_util::future::try_join(
            client.execute(&create, &[&group, &wanted]),
            client.query(&take, &[&group, &wanted, &member, &millis(ttl)]),
        )
        .await
        .map_err(pg_error)?;
        let mut held: Vec<u32> = rows
            .iter()
            .map(|row| row.try_get::<_, i32>(0).map(|p| p as u32).map_err(pg_error))
            .collect::<Result<_>>()?;
        held.sort_unstable();
        Ok(held)
    }

    async fn release(&self, group: &str, member: &str, partitions: &[u32]) -> Result<()> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql(
                "UPDATE {s}.leases SET owner = NULL, expires_at = '-infinity' \
                 WHERE subscription = $1 AND owner = $2 AND partition = ANY($3)",
            ))
            .await
            .map_err(pg_error)?;
        client.execute(&statement, &[&group, &member, &numbers(partitions)]).await.map_err(pg_error)?;
        Ok(())
    }

    async fn leave(&self, group: &str, member: &str) -> Result<()> {
        let mut client = self.client().await?;
        let free = client
            .prepare_cached(&self.sql(
                "UPDATE {s}.leases SET owner = NULL, expires_at = '-infinity' WHERE subscription = $1 AND owner = $2",
            ))
            .await
            .map_err(pg_error)?;
        let gone = client
            .prepare_cached(&self.sql("DELETE FROM {s}.members WHERE subscription = $1 AND member = $2"))
            .await
            .map_err(pg_error)?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute(&free, &[&group, &member]).await.map_err(pg_error)?;
        tx.execute(&gone, &[&group, &member]).await.map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn save_checkpoints_held(
        &self,
        group: &str,
        member: &str,
        partitions: &[u32],
        writes: Vec<CheckpointWrite>,
    ) -> Result<Vec<u32>> {
        validate_checkpoint_writes(&writes)?;
        let mut client = self.client().await?;
        let held = client
            .prepare_cached(&self.sql(
                "SELECT partition FROM {s}.leases WHERE subscription = $1 AND owner = $2 AND partition = ANY($3) \
                 FOR UPDATE",
            ))
            .await
            .map_err(pg_error)?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let rows = tx.query(&held, &[&group, &member, &numbers(partitions)]).await.map_err(pg_error)?;
        let held: Vec<u32> = rows
            .iter()
            .map(|row| row.try_get::<_, i32>(0).map(|p| p as u32).map_err(pg_error))
            .collect::<Result<_>>()?;
        let lost: Vec<u32> = partitions.iter().copied().filter(|p| !held.contains(p)).collect();
        if !lost.is_empty() {
            tx.rollback().await.map_err(pg_error)?;
            return Ok(lost);
        }
        self.write_checkpoints(&tx, &writes).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Vec::new())
    }
}
