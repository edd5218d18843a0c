//! `annals stats`: counts of events, streams and event types, times and size on disk (for a
//! PostgreSQL store, the size of its schema's tables).

use std::collections::{BTreeMap, HashSet};

use annals::{EventStore, Position, ReadLog};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde_json::json;

use crate::cli::{Axis, StatsArgs};
use crate::failure::Failure;
use crate::output::{self, table, Output};
use crate::store::OpenStore;

/// What one pass over the log counted.
#[derive(Default)]
struct Counts {
    events: u64,
    streams: HashSet<String>,
    types: BTreeMap<String, u64>,
    first_recorded: Option<DateTime<Utc>>,
    last_recorded: Option<DateTime<Utc>>,
    last_position: Position,
}

pub(super) async fn run(open: &OpenStore, args: StatsArgs, out: &mut Output) -> Result<(), Failure> {
    let store = open.events();
    let bound = args.as_of.bound();
    let head = store.head().await?;
    let counts = count(store, bound, head).await?;
    let (size, where_) = match open {
        OpenStore::Sled(store) => (store.size_on_disk()?, String::new()),
        OpenStore::Postgres { database, .. } => {
            (database.size().await?, format!(", the tables of schema {}", database.schema()))
        }
    };
    if out.json() {
        let as_of = bound.map(|(at, axis)| json!({ "time": output::time(at), "axis": axis.name() }));
        out.json_line(&json!({
            "head": head.get(),
            "events": counts.events,
            "streams": counts.streams.len(),
            "event_types": counts.types,
            "first_recorded": counts.first_recorded.map(output::time),
            "last_recorded": counts.last_recorded.map(output::time),
            "last_position": counts.last_position.get(),
            "size_on_disk": size,
            "as_of": as_of,
        }))?;
        return Ok(());
    }
    if let Some((at, axis)) = bound {
        out.line(format!("as of {} ({} time)", output::time(at), axis.name()))?;
    }
    let never = || "-".to_owned();
    let mut rows = vec![
        vec!["events:".to_owned(), counts.events.to_string()],
        vec!["streams:".to_owned(), counts.streams.len().to_string()],
        vec!["head position:".to_owned(), head.to_string()],
        vec!["first recorded:".to_owned(), counts.first_recorded.map_or_else(never, output::time)],
        vec!["last recorded:".to_owned(), counts.last_recorded.map_or_else(never, output::time)],
        vec!["size on disk:".to_owned(), format!("{}{where_}", output::bytes(size))],
    ];
    if bound.is_some() {
        rows.insert(3, vec!["last position:".to_owned(), counts.last_position.to_string()]);
    }
    for line in table(&rows) {
        out.line(line)?;
    }
    if !counts.types.is_empty() {
        out.line("event types:")?;
        let rows: Vec<Vec<String>> =
            counts.types.iter().map(|(name, n)| vec![format!("  {name}"), n.to_string()]).collect();
        for line in table(&rows) {
            out.line(line)?;
        }
    }
    Ok(())
}

/// Reads the log up to `head` (and the bound, if any) and counts: a store in use (PostgreSQL) may
/// have grown since the head was read.
async fn count(
    store: &dyn EventStore,
    bound: Option<(DateTime<Utc>, Axis)>,
    head: Position,
) -> Result<Counts, Failure> {
    let read = ReadLog::from_start().until_position(head);
    let read = match bound {
        None => read,
        Some((at, Axis::Recorded)) => read.until_recorded(at),
        Some((at, Axis::Occurred)) => read.until_occurred(at),
    };
    let mut counts = Counts::default();
    let mut events = store.read_log(read);
    while let Some(event) = events.try_next().await? {
        counts.events += 1;
        if !counts.streams.contains(event.stream.as_str()) {
            counts.streams.insert(event.stream.to_string());
        }
        *counts.types.entry(event.event_type).or_insert(0) += 1;
        counts.first_recorded.get_or_insert(event.recorded_at);
        counts.last_recorded = Some(event.recorded_at);
        counts.last_position = event.position;
    }
    Ok(counts)
}
