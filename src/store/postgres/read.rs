//! Reads: rows of `<schema>.events` back into [`RecordedEvent`]s, checked on the way.

use deadpool_postgres::Client;
use tokio_postgres::Row;
use uuid::Uuid;

use super::fault::{corrupt, count, micros, pg_error};
use crate::envelope::{Metadata, RecordedEvent};
use crate::error::Result;
use crate::position::{Position, Version};
use crate::store::{Direction, LogChunk, LogFilter};
use crate::stream_id::StreamId;

/// The columns every event read selects, in the order [`decode`] takes them.
pub(crate) const EVENT_COLUMNS: &str = "position, id, stream, version, event_type, schema_version, recorded_us, \
     occurred_us, metadata, payload";

/// How many positions a filtered log read looks at before it returns a page.
const SCAN_BUDGET: i64 = 16 * 1024;

/// One row of [`EVENT_COLUMNS`] as an event; a row that breaks the store's rules is
/// [`Error::Corrupt`](crate::Error::Corrupt).
pub(crate) fn decode(row: &Row) -> Result<RecordedEvent> {
    let position: i64 = row.try_get(0).map_err(pg_error)?;
    let id: Uuid = row.try_get(1).map_err(pg_error)?;
    let stream: &str = row.try_get(2).map_err(pg_error)?;
    let stream = StreamId::stored(stream).ok_or_else(|| corrupt("event row", position, "invalid stream name"))?;
    let version = count(row.try_get(3).map_err(pg_error)?, "event row", position)?;
    let event_type: String = row.try_get(4).map_err(pg_error)?;
    // The same 32 bits as the u32 the writer stored.
    let schema_version = row.try_get::<_, i32>(5).map_err(pg_error)? as u32;
    let recorded_at = micros(row.try_get(6).map_err(pg_error)?, "event row", position)?;
    let occurred_at = micros(row.try_get(7).map_err(pg_error)?, "event row", position)?;
    let metadata: &str = row.try_get(8).map_err(pg_error)?;
    let metadata: Metadata =
        serde_json::from_str(metadata).map_err(|_| corrupt("event row", position, "metadata do not decode"))?;
    let payload: String = row.try_get(9).map_err(pg_error)?;
    if position <= 0 || version == 0 {
        return Err(corrupt("event row", position, "position or version below 1"));
    }
    Ok(RecordedEvent {
        id,
        stream,
        version: Version::new(version),
        position: Position::new(count(position, "event row", position)?),
        event_type,
        schema_version,
        recorded_at,
        occurred_at,
        metadata,
        payload,
    })
}

/// The head: the last committed position.
pub(crate) async fn head(client: &Client, schema: &str) -> Result<Position> {
    let statement =
        client.prepare_cached(&format!("SELECT position FROM {schema}.head WHERE id = 1")).await.map_err(pg_error)?;
    let row = client.query_one(&statement, &[]).await.map_err(pg_error)?;
    Ok(Position::new(count(row.try_get(0).map_err(pg_error)?, "head row", 0)?))
}

/// Up to `max` events of `stream` from version `from`, checked to be the stream's consecutive
/// versions.
pub(crate) async fn stream_chunk(
    client: &Client,
    schema: &str,
    stream: &StreamId,
    from: Version,
    direction: Direction,
    max: usize,
) -> Result<Vec<RecordedEvent>> {
    let from = i64::try_from(from.get().max(1)).unwrap_or(i64::MAX);
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let sql = match direction {
        Direction::Forward => format!(
            "SELECT {EVENT_COLUMNS} FROM {schema}.events WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3"
        ),
        Direction::Backward => format!(
            "SELECT {EVENT_COLUMNS} FROM {schema}.events WHERE stream = $1 AND version <= $2 \
             ORDER BY version DESC LIMIT $3"
        ),
    };
    let statement = client.prepare_cached(&sql).await.map_err(pg_error)?;
    let rows = client.query(&statement, &[&stream.as_str(), &from, &limit]).await.map_err(pg_error)?;
    let events = rows.iter().map(decode).collect::<Result<Vec<_>>>()?;
    let mut expected = match (direction, events.first()) {
        (_, None) => return Ok(events),
        (Direction::Forward, Some(_)) => from as u64,
        (Direction::Backward, Some(first)) => first.version.get(),
    };
    for event in &events {
        if event.stream != *stream || event.version.get() != expected {
            return Err(corrupt("event row", event.position.get() as i64, "a stream's versions are not consecutive"));
        }
        expected = match direction {
            Direction::Forward => expected + 1,
            Direction::Backward => expected - 1,
        };
    }
    Ok(events)
}

/// A page of the log from `from`: unfiltered, the next `max` events, checked to be consecutive;
/// filtered, the matching events among the next [`SCAN_BUDGET`] positions.
pub(crate) async fn log_chunk(
    client: &Client,
    schema: &str,
    from: Position,
    max: usize,
    filter: &LogFilter,
) -> Result<LogChunk> {
    if filter.is_all() && max > 0 {
        if let Some(chunk) = log_page(client, schema, from, max).await? {
            return Ok(chunk);
        }
    }
    let head = head(client, schema).await?.get();
    let start = from.get().max(1);
    if start > head || max == 0 {
        return Ok(LogChunk { events: Vec::new(), next: Position::new(start), end: start > head });
    }
    let start_sql = i64::try_from(start).unwrap_or(i64::MAX);
    let head_sql = i64::try_from(head).unwrap_or(i64::MAX);
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    if filter.is_all() {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {schema}.events WHERE position >= $1 AND position <= $2 \
             ORDER BY position LIMIT $3"
        );
        let statement = client.prepare_cached(&sql).await.map_err(pg_error)?;
        let rows = client.query(&statement, &[&start_sql, &head_sql, &limit]).await.map_err(pg_error)?;
        let events = rows.iter().map(decode).collect::<Result<Vec<_>>>()?;
        return checked_page(events, start, head, max);
    }
    let scan_end = head_sql.min(start_sql.saturating_add(SCAN_BUDGET - 1));
    let prefixes: Vec<String> = filter.stream_prefixes.iter().map(|p| like_prefix(p)).collect();
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM {schema}.events WHERE position >= $1 AND position <= $2 \
         AND (cardinality($3::text[]) = 0 OR event_type = ANY($3)) \
         AND (cardinality($4::text[]) = 0 OR stream LIKE ANY($4)) \
         ORDER BY position LIMIT $5"
    );
    let statement = client.prepare_cached(&sql).await.map_err(pg_error)?;
    let rows = client
        .query(&statement, &[&start_sql, &scan_end, &filter.event_types, &prefixes, &limit])
        .await
        .map_err(pg_error)?;
    let events = rows.iter().map(decode).collect::<Result<Vec<_>>>()?;
    let next = match events.last() {
        Some(last) if events.len() == max => last.position.get() + 1,
        _ => scan_end as u64 + 1,
    };
    Ok(LogChunk { events, next: Position::new(next), end: next > head })
}

/// The next `max` events from `from` and the head that bounds them, in one statement (one round
/// trip, one snapshot); `None` when there are none, for [`log_chunk`]'s two-statement path to tell
/// the end of the log from damage.
async fn log_page(client: &Client, schema: &str, from: Position, max: usize) -> Result<Option<LogChunk>> {
    let start = from.get().max(1);
    let start_sql = i64::try_from(start).unwrap_or(i64::MAX);
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let head_sql = format!("(SELECT position FROM {schema}.head WHERE id = 1)");
    let sql = format!(
        "SELECT {EVENT_COLUMNS}, {head_sql} AS head FROM {schema}.events WHERE position >= $1 AND position <= {head_sql} \
         ORDER BY position LIMIT $2"
    );
    let statement = client.prepare_cached(&sql).await.map_err(pg_error)?;
    let rows = client.query(&statement, &[&start_sql, &limit]).await.map_err(pg_error)?;
    let Some(first) = rows.first() else { return Ok(None) };
    let head = count(first.try_get(10).map_err(pg_error)?, "head row", 0)?;
    let events = rows.iter().map(decode).collect::<Result<Vec<_>>>()?;
    checked_page(events, start, head, max).map(Some)
}

/// An unfiltered page from `start` as a chunk, checked to hold the consecutive positions up to
/// `max` or the head.
fn checked_page(events: Vec<RecordedEvent>, start: u64, head: u64, max: usize) -> Result<LogChunk> {
    let start_sql = i64::try_from(start).unwrap_or(i64::MAX);
    let wanted = (head.saturating_sub(start) + 1).min(max as u64);
    for (offset, event) in events.iter().enumerate() {
        if event.position.get() != start + offset as u64 {
            return Err(corrupt("event row", start_sql + offset as i64, "the log has a gap"));
        }
    }
    if events.len() as u64 != wanted {
        return Err(corrupt("event row", start_sql + events.len() as i64, "the log ends before its head"));
    }
    let next = start + events.len() as u64;
    Ok(LogChunk { events, next: Position::new(next), end: next > head })
}

/// A `LIKE` pattern matching names that start with `prefix`.
pub(super) fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}
