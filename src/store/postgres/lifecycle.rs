//! The life of a stream on PostgreSQL: deleting, truncating and what the store knows of it, kept in
//! the stream's row of `<schema>.streams`.
//!
//! Every change runs in one transaction that first locks the head row, as the writer's append
//! transactions do: an append and a deletion or truncation of the same stream are therefore ordered,
//! and the later one sees what the earlier one committed (an append after a hard delete answers
//! [`Error::StreamDeleted`], a delete after an append checks the appended version).

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::fault::{corrupt, count, micros, pg_error};
use super::writer::stream_life;
use super::{sql_i64, PostgresStore};
use crate::error::{Error, Result};
use crate::position::{ExpectedVersion, Version};
use crate::store::{DeleteMode, SoftDeletion, StreamInfo};
use crate::stream_id::StreamId;

/// The columns of a stream's row [`decode`] takes, in its order.
const LIFE_COLUMNS: &str = "version, truncated_before, tombstone, deleted_next, deleted_us";

/// A stream's row as what the store knows of its life (`None`: a stream never written nor deleted).
fn decode(row: Option<&Row>) -> Result<StreamInfo> {
    let Some(row) = row else { return Ok(StreamInfo::new()) };
    let mut info = stream_life(row, 0)?;
    let next: Vec<i64> = row.try_get(3).map_err(pg_error)?;
    let at: Vec<i64> = row.try_get(4).map_err(pg_error)?;
    if next.len() != at.len() {
        return Err(corrupt("stream row", 0, "soft deletions do not pair versions with times"));
    }
    for (next, at) in next.into_iter().zip(at) {
        info.soft_deletions.push(SoftDeletion {
            next_version: Version::new(count(next, "stream row", 0)?),
            at: micros(at, "stream row", 0)?,
        });
    }
    Ok(info)
}

impl PostgresStore {
    /// What the store knows of `stream`'s life, read outside any transaction.
    pub(super) async fn life(&self, stream: &StreamId) -> Result<StreamInfo> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql(&format!("SELECT {LIFE_COLUMNS} FROM {{s}}.streams WHERE stream = $1")))
            .await
            .map_err(pg_error)?;
        let row = client.query_opt(&statement, &[&stream.as_str()]).await.map_err(pg_error)?;
        decode(row.as_ref())
    }

    /// Locks the head row as appends do and reads `stream`'s life, inside `tx`. Returns the life and
    /// the `recorded_at` of the last event (`None` for an empty log).
    async fn lock_life(&self, tx: &Transaction<'_>, stream: &StreamId) -> Result<(StreamInfo, Option<DateTime<Utc>>)> {
        let lock = self.sql("SELECT position, recorded_us FROM {s}.head WHERE id = 1 FOR UPDATE");
        let head = tx.query_one(&lock, &[]).await.map_err(pg_error)?;
        let position: i64 = head.try_get(0).map_err(pg_error)?;
        let last_recorded =
            if position > 0 { Some(micros(head.try_get(1).map_err(pg_error)?, "head row", 0)?) } else { None };
        let row = tx
            .query_opt(
                &self.sql(&format!("SELECT {LIFE_COLUMNS} FROM {{s}}.streams WHERE stream = $1")),
                &[&stream.as_str()],
            )
            .await
            .map_err(pg_error)?;
        Ok((decode(row.as_ref())?, last_recorded))
    }

    /// Writes `info` as `stream`'s row (inserted for a stream never written), inside `tx`.
    async fn write_life(&self, tx: &Transaction<'_>, stream: &StreamId, info: &StreamInfo) -> Result<()> {
        let (next, at): (Vec<i64>, Vec<i64>) =
            info.soft_deletions.iter().map(|d| (sql_i64(d.next_version.get()), d.at.timestamp_micros())).unzip();
        let last = info.last_version.map(|v| sql_i64(v.get()));
        let truncated_before = sql_i64(info.truncated_before.get());
        let sql = self.sql(
            "INSERT INTO {s}.streams (stream, version, truncated_before, tombstone, deleted_next, deleted_us) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (stream) DO UPDATE SET \
             truncated_before = excluded.truncated_before, tombstone = excluded.tombstone, \
             deleted_next = excluded.deleted_next, deleted_us = excluded.deleted_us",
        );
        tx.execute(&sql, &[&stream.as_str(), &last, &truncated_before, &info.tombstone, &next, &at])
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// [`EventStore::delete_stream`](crate::EventStore::delete_stream): one transaction under the
    /// head row's lock that checks, marks the row and deletes the stream's snapshots.
    pub(super) async fn delete(&self, stream: &StreamId, expected: ExpectedVersion, mode: DeleteMode) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let (mut info, last_recorded) = self.lock_life(&tx, stream).await?;
        if info.tombstone {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        let actual = info.current_version();
        if !expected.accepts(actual) {
            return Err(Error::WrongExpectedVersion { stream: stream.clone(), expected, actual });
        }
        // Never before the last event recorded: time travel to a moment keeps its events.
        let now = Utc::now().trunc_subsecs(6);
        let at = last_recorded.map_or(now, |last| last.max(now));
        if !info.delete(stream, mode, at)? {
            // Nothing to delete: the transaction ends without a write (dropping it rolls it back).
            return Ok(());
        }
        self.write_life(&tx, stream, &info).await?;
        tx.execute(&self.sql("DELETE FROM {s}.snapshots WHERE stream = $1"), &[&stream.as_str()])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    /// [`EventStore::truncate_stream`](crate::EventStore::truncate_stream): one transaction under the
    /// head row's lock.
    pub(super) async fn truncate(&self, stream: &StreamId, before: Version) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let (mut info, _) = self.lock_life(&tx, stream).await?;
        if !info.truncate(stream, before)? {
            return Ok(());
        }
        self.write_life(&tx, stream, &info).await?;
        tx.commit().await.map_err(pg_error)
    }
}
