//! Scavenging on PostgreSQL: deleting the rows of `<schema>.events` that reads no longer show, and
//! recording the positions removed in `<schema>.scavenged`, in one transaction per step.
//!
//! A scavenge never touches the head row and never blocks appends: positions come from the head, so
//! they are never reused, and what a scavenge may remove only grows (a truncation point only moves
//! forward, a tombstone is forever), so a step that runs beside a deletion removes a part of what is
//! removable whichever commits first. Two scavenges of the same positions do not remove an event
//! twice: the second one's `DELETE` waits for the first and skips the rows it removed.
//!
//! PostgreSQL frees the space of deleted rows for new rows of the same table once a `VACUUM` has run
//! (autovacuum does, by default after a fifth of a table's rows changed); it returns space to the
//! operating system only with `VACUUM FULL`. A scavenge leaves both to the database administrator.

use tokio_postgres::Row;

use super::fault::pg_error;
use super::PostgresStore;
use crate::envelope::Metadata;
use crate::error::Result;
use crate::position::Position;
use crate::store::ScavengeChunk;
use crate::stream_id::StreamId;

/// Which rows a scavenge removes, for a `DELETE FROM {s}.events e USING {s}.streams s`: those of a
/// hard-deleted stream or below its truncation point. It returns each removed row's position and size
/// (payload and type in bytes, and its metadata when it has any).
const REMOVABLE: &str = "s.stream = e.stream AND (s.tombstone OR e.version < s.truncated_before) \
     RETURNING e.position, octet_length(e.payload) + octet_length(e.event_type), NULLIF(e.metadata, '{}')";

/// The positions and bytes one step removed.
#[derive(Default)]
struct Removed {
    positions: Vec<i64>,
    bytes: u64,
}

impl Removed {
    /// Reads the rows `REMOVABLE` returns. The size counts the metadata as the envelope does (its
    /// strings), the same figure every store reports.
    fn from_rows(rows: &[Row]) -> Result<Removed> {
        let mut removed = Removed::default();
        for row in rows {
            removed.positions.push(row.try_get(0).map_err(pg_error)?);
            let size: i32 = row.try_get(1).map_err(pg_error)?;
            removed.bytes += u64::try_from(size).unwrap_or(0);
            if let Some(metadata) = row.try_get::<_, Option<&str>>(2).map_err(pg_error)? {
                // Metadata that does not decode still goes: it is counted by its stored length.
                removed.bytes += match serde_json::from_str::<Metadata>(metadata) {
                    Ok(metadata) => metadata.byte_len() as u64,
                    Err(_) => metadata.len() as u64,
                };
            }
        }
        removed.positions.sort_unstable();
        Ok(removed)
    }

    /// The removed positions as ranges of consecutive positions (inclusive).
    fn ranges(&self) -> (Vec<i64>, Vec<i64>) {
        let (mut firsts, mut lasts): (Vec<i64>, Vec<i64>) = (Vec::new(), Vec::new());
        for &position in &self.positions {
            match lasts.last_mut() {
                Some(last) if *last + 1 == position => *last = position,
                _ => {
                    firsts.push(position);
                    lasts.push(position);
                }
            }
        }
        (firsts, lasts)
    }
}

impl PostgresStore {
    /// Deletes the rows `filter` (a condition on `e`, with `params`) selects among the removable
    /// ones and records their positions, in `tx`.
    async fn remove(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        filter: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Removed> {
        let sql = self.sql(&format!("DELETE FROM {{s}}.events e USING {{s}}.streams s WHERE {filter} AND {REMOVABLE}"));
        let statement = tx.prepare_cached(&sql).await.map_err(pg_error)?;
        let rows = tx.query(&statement, params).await.map_err(pg_error)?;
        let removed = Removed::from_rows(&rows)?;
        if !removed.positions.is_empty() {
            let (firsts, lasts) = removed.ranges();
            let record = tx
                .prepare_cached(&self.sql(
                    "INSERT INTO {s}.scavenged (first_position, last_position) \
                     SELECT * FROM unnest($1::bigint[], $2::bigint[])",
                ))
                .await
                .map_err(pg_error)?;
            tx.execute(&record, &[&firsts, &lasts]).await.map_err(pg_error)?;
        }
        Ok(removed)
    }

    /// [`EventStore::scavenge_chunk`](crate::EventStore::scavenge_chunk): positions `from` to
    /// `from + max - 1` (no further than the head), in one transaction.
    pub(super) async fn scavenge_positions(&self, from: Position, max: usize) -> Result<ScavengeChunk> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let head_row = tx.query_one(&self.sql("SELECT position FROM {s}.head WHERE id = 1"), &[]).await;
        let head = super::fault::count(head_row.map_err(pg_error)?.try_get(0).map_err(pg_error)?, "head row", 0)?;
        let start = from.get().max(1);
        let end = start.saturating_add(max.max(1) as u64).min(head + 1).max(start);
        let (start_sql, end_sql) = (super::sql_i64(start), super::sql_i64(end));
        let removed = self.remove(&tx, "e.position >= $1 AND e.position < $2", &[&start_sql, &end_sql]).await?;
        let kept = tx
            .query_one(
                &self.sql("SELECT count(*) FROM {s}.events WHERE position >= $1 AND position < $2"),
                &[&start_sql, &end_sql],
            )
            .await
            .map_err(pg_error)?;
        let kept: i64 = kept.try_get(0).map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        let removed_count = removed.positions.len() as u64;
        Ok(ScavengeChunk {
            next: Position::new(end),
            examined: u64::try_from(kept).unwrap_or(0) + removed_count,
            removed: removed_count,
            bytes_removed: removed.bytes,
            end: end > head,
        })
    }

    /// [`EventStore::scavenge_stream`](crate::EventStore::scavenge_stream): through the stream's
    /// `(stream, version)` index, in one transaction.
    pub(super) async fn scavenge_one_stream(&self, stream: &StreamId) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let removed = self.remove(&tx, "e.stream = $1 AND s.stream = $1", &[&stream.as_str()]).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(removed.positions.len() as u64)
    }
}
