//! Reads: rows of `<schema>.events` back into [`RecordedEvent`]s, checked on the way.

use deadpool_postgres::Client;
use tokio_postgres::Row;
use uuid::Uuid;

use super::fault::{corrupt, count, micros, pg_error};
use crate::envelope::{Metadata, RecordedEvent};
use crate::error::{Error, Result};
use crate::position::{Position, Version};
use crate::store::{Direction, LogChunk, LogFilter, StreamView};
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

/// Up to `max` events of `stream` from version `from`, as `view` shows them, checked to be the
/// stream's consecutive versions except where a scavenge removed events below the truncation point.
///
/// One statement reads the stream's row and its events, so both come from one snapshot: a truncation
/// and a scavenge committed meanwhile cannot make the read see holes its truncation point does not
/// explain.
pub(crate) async fn stream_chunk(
    client: &Client,
    schema: &str,
    stream: &StreamId,
    from: Version,
    direction: Direction,
    max: usize,
    view: StreamView,
) -> Result<Vec<RecordedEvent>> {
    let from = i64::try_from(from.get().max(1)).unwrap_or(i64::MAX);
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let current = view == StreamView::Current;
    // The view's floor: the truncation point in the current view, the first version in the history.
    let floor = "CASE WHEN $4 THEN COALESCE(s.truncated_before, 1) ELSE 1 END";
    let events = match direction {
        Direction::Forward => format!(
            "SELECT {EVENT_COLUMNS} FROM {schema}.events WHERE stream = $1 AND version >= GREATEST($2, {floor}) \
             ORDER BY version LIMIT $3"
        ),
        Direction::Backward => format!(
            "SELECT {EVENT_COLUMNS} FROM {schema}.events WHERE stream = $1 AND version <= $2 \
             AND version >= {floor} ORDER BY version DESC LIMIT $3"
        ),
    };
    let order = match direction {
        Direction::Forward => "e.version",
        Direction::Backward => "e.version DESC",
    };
    let sql = format!(
        "SELECT e.*, s.truncated_before, s.tombstone FROM (VALUES (1)) AS q(one) \
         LEFT JOIN {schema}.streams s ON s.stream = $1 LEFT JOIN LATERAL ({events}) e ON true ORDER BY {order}"
    );
    let statement = client.prepare_cached(&sql).await.map_err(pg_error)?;
    let rows = client.query(&statement, &[&stream.as_str(), &from, &limit, &current]).await.map_err(pg_error)?;
    let Some(first) = rows.first() else { return Ok(Vec::new()) };
    if first.try_get::<_, Option<bool>>(11).map_err(pg_error)? == Some(true) {
        return Err(Error::StreamDeleted { stream: stream.clone() });
    }
    let truncated_before = count(first.try_get::<_, Option<i64>>(10).map_err(pg_error)?.unwrap_or(1), "stream row", 0)?;
    if first.try_get::<_, Option<i64>>(0).map_err(pg_error)?.is_none() {
        return Ok(Vec::new());
    }
    let events = rows.iter().map(decode).collect::<Result<Vec<_>>>()?;
    let start = match direction {
        Direction::Forward => {
            let floor = if current { truncated_before } else { 1 };
            (from as u64).max(floor)
        }
        Direction::Backward => events.first().map_or(0, |e| e.version.get()),
    };
    check_versions(&events, stream, start, direction, truncated_before)?;
    Ok(events)
}

/// Checks that `events` are `stream`'s versions from `start` on, one after the other the way
/// `direction` goes, except for versions below `truncated_before` (a scavenge may have removed them).
fn check_versions(
    events: &[RecordedEvent],
    stream: &StreamId,
    start: u64,
    direction: Direction,
    truncated_before: u64,
) -> Result<()> {
    let mut expected = start;
    for event in events {
        let version = event.version.get();
        let missing_below_truncation = match direction {
            Direction::Forward => version > expected && version <= truncated_before,
            Direction::Backward => version < expected && expected < truncated_before,
        };
        if event.stream != *stream || (version != expected && !missing_below_truncation) {
            return Err(corrupt("event row", event.position.get() as i64, "a stream's versions are not consecutive"));
        }
        expected = match direction {
            Direction::Forward => version + 1,
            Direction::Backward => version.saturating_sub(1),
        };
    }
    Ok(())
}

/// A page of the log from `from`: unfiltered, the next `max` events, checked to leave out only
/// positions a scavenge removed; filtered, the matching events among the next [`SCAN_BUDGET`]
/// positions.
pub(crate) async fn log_chunk(
    client: &Client,
    schema: &str,
    from: Position,
    max: usize,
    filter: &LogFilter,
) -> Result<LogChunk> {
    if filter.is_all() && max > 0 {
        return log_page(client, schema, from, max).await;
    }
    let head = head(client, schema).await?.get();
    let start = from.get().max(1);
    if start > head || max == 0 {
        return Ok(LogChunk { events: Vec::new(), next: Position::new(start), end: start > head });
    }
    let start_sql = i64::try_from(start).unwrap_or(i64::MAX);
    let head_sql = i64::try_from(head).unwrap_or(i64::MAX);
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
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
/// trip, one snapshot), checked: every position left out up to the last one looked at must be one a
/// scavenge removed.
async fn log_page(client: &Client, schema: &str, from: Position, max: usize) -> Result<LogChunk> {
    let start = from.get().max(1);
    let start_sql = i64::try_from(start).unwrap_or(i64::MAX);
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    // One row even when no event is found, so the head always comes back.
    let sql = format!(
        "SELECT e.*, h.position AS head FROM {schema}.head h LEFT JOIN LATERAL \
         (SELECT {EVENT_COLUMNS} FROM {schema}.events WHERE position >= $1 AND position <= h.position \
         ORDER BY position LIMIT $2) e ON true WHERE h.id = 1 ORDER BY e.position"
    );
    let statement = client.prepare_cached(&sql).await.map_err(pg_error)?;
    let rows = client.query(&statement, &[&start_sql, &limit]).await.map_err(pg_error)?;
    let Some(first) = rows.first() else { return Err(corrupt("head row", 0, "the head row is missing")) };
    let head = count(first.try_get(10).map_err(pg_error)?, "head row", 0)?;
    if start > head {
        return Ok(LogChunk { events: Vec::new(), next: Position::new(start), end: true });
    }
    let events = if first.try_get::<_, Option<i64>>(0).map_err(pg_error)?.is_none() {
        Vec::new()
    } else {
        rows.iter().map(decode).collect::<Result<Vec<_>>>()?
    };
    // The positions left out: between the events, and after the last one up to the head when the
    // page is not full (it looked at everything up to the head).
    let mut holes = Vec::new();
    let mut expected = start;
    for event in &events {
        let position = event.position.get();
        if position > expected {
            holes.push((expected, position - 1));
        }
        expected = position + 1;
    }
    let full = events.len() == max;
    if !full && expected <= head {
        holes.push((expected, head));
    }
    if let Some(position) = first_unexplained(client, schema, &holes).await? {
        let reason = if full || position < expected { "the log has a gap" } else { "the log ends before its head" };
        return Err(corrupt("event row", i64::try_from(position).unwrap_or(i64::MAX), reason));
    }
    let next = if full { expected } else { head + 1 };
    Ok(LogChunk { events, next: Position::new(next), end: next > head })
}

/// The first position of `holes` (ranges of positions, inclusive, in order) that no range of
/// `<schema>.scavenged` covers: a missing event a scavenge did not remove, which is damage. The
/// ranges are disjoint (each removed position is recorded by the one scavenge that removed it), so
/// the ones overlapping the holes are those starting inside them plus the last one starting before.
async fn first_unexplained(client: &Client, schema: &str, holes: &[(u64, u64)]) -> Result<Option<u64>> {
    let (Some(low), Some(high)) = (holes.first().map(|h| h.0), holes.last().map(|h| h.1)) else {
        return Ok(None);
    };
    let sql = format!(
        "(SELECT first_position, last_position FROM {schema}.scavenged WHERE first_position < $1 \
         ORDER BY first_position DESC LIMIT 1) UNION ALL \
         (SELECT first_position, last_position FROM {schema}.scavenged \
         WHERE first_position >= $1 AND first_position <= $2)"
    );
    let statement = client.prepare_cached(&sql).await.map_err(pg_error)?;
    let low_sql = i64::try_from(low).unwrap_or(i64::MAX);
    let high_sql = i64::try_from(high).unwrap_or(i64::MAX);
    let rows = client.query(&statement, &[&low_sql, &high_sql]).await.map_err(pg_error)?;
    let mut ranges = Vec::with_capacity(rows.len());
    for row in &rows {
        let first = count(row.try_get(0).map_err(pg_error)?, "scavenged row", 0)?;
        let last = count(row.try_get(1).map_err(pg_error)?, "scavenged row", 0)?;
        ranges.push((first, last));
    }
    ranges.sort_unstable();
    Ok(first_uncovered(holes, &ranges))
}

/// The first position of `holes` outside every one of `ranges` (both sorted, inclusive, disjoint).
pub(super) fn first_uncovered(holes: &[(u64, u64)], ranges: &[(u64, u64)]) -> Option<u64> {
    let mut ranges = ranges.iter().peekable();
    for &(first, last) in holes {
        let mut at = first;
        while at <= last {
            // Ranges ending before `at` cannot cover anything from here on.
            while ranges.peek().is_some_and(|r| r.1 < at) {
                ranges.next();
            }
            match ranges.peek() {
                Some(&&(from, to)) if from <= at => at = to.saturating_add(1),
                _ => return Some(at),
            }
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::first_uncovered;

    #[test]
    fn holes_covered_by_scavenged_ranges_are_not_damage() {
        assert_eq!(first_uncovered(&[], &[]), None);
        assert_eq!(first_uncovered(&[(3, 3)], &[]), Some(3));
        assert_eq!(first_uncovered(&[(3, 5), (8, 9)], &[(1, 3), (4, 6), (8, 8), (9, 12)]), None);
        assert_eq!(first_uncovered(&[(3, 5), (8, 9)], &[(1, 3), (5, 6), (8, 12)]), Some(4));
        assert_eq!(first_uncovered(&[(3, 5), (8, 10)], &[(2, 6), (9, 10)]), Some(8));
        assert_eq!(first_uncovered(&[(3, 5)], &[(1, 4)]), Some(5));
    }
}
