//! `annals streams`: every stream with its version, now or as of a time.

use std::collections::BTreeMap;

use annals::{EventStore, LogFilter, ReadLog};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde_json::json;

use crate::cli::{Axis, StreamsArgs};
use crate::failure::Failure;
use crate::output::{table, Output};

pub(super) async fn run(store: &dyn EventStore, args: StreamsArgs, out: &mut Output) -> Result<(), Failure> {
    // (stream, version, events): the event count only for a question about the past, where it can
    // differ from the version (business time need not follow the versions).
    let streams: Vec<(String, Seen)> = match args.as_of.bound() {
        None => store
            .list_streams(&args.prefix)
            .await?
            .into_iter()
            .map(|(s, v)| (s.to_string(), Seen { version: v.get(), events: v.get() }))
            .collect(),
        Some((at, axis)) => versions_as_of(store, &args.prefix, at, axis).await?.into_iter().collect(),
    };
    let as_of = args.as_of.bound().is_some();
    if out.json() {
        for (stream, seen) in &streams {
            let mut line = json!({ "stream": stream, "version": seen.version });
            if as_of {
                line["events"] = json!(seen.events);
            }
            out.json_line(&line)?;
        }
        return Ok(());
    }
    if streams.is_empty() {
        return Ok(out.line("(no streams)")?);
    }
    let mut header = vec!["STREAM".to_owned(), "VERSION".to_owned()];
    if as_of {
        header.push("EVENTS".to_owned());
    }
    let mut rows = vec![header];
    rows.extend(streams.into_iter().map(|(stream, seen)| {
        let mut row = vec![stream, seen.version.to_string()];
        if as_of {
            row.push(seen.events.to_string());
        }
        row
    }));
    for line in table(&rows) {
        out.line(line)?;
    }
    Ok(())
}

/// What a stream had as of a time: the highest version among its events then, and how many.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    version: u64,
    events: u64,
}

/// Each stream's highest version and number of events at or before `at` on `axis`. On the recorded
/// axis they agree (a stream's versions are recorded in order); on the occurred axis they need not:
/// a stream whose only event that occurred by `at` is version 3 is at version 3 with one event. Reads
/// the log up to `at` (recorded), or all of it (occurred: business time need not grow along the log).
async fn versions_as_of(
    store: &dyn EventStore,
    prefix: &str,
    at: DateTime<Utc>,
    axis: Axis,
) -> Result<BTreeMap<String, Seen>, Failure> {
    let mut read = ReadLog::from_start();
    if !prefix.is_empty() {
        read = read.filter(LogFilter::all().stream_prefix(prefix));
    }
    read = match axis {
        Axis::Recorded => read.until_recorded(at),
        Axis::Occurred => read.until_occurred(at),
    };
    let mut versions = BTreeMap::new();
    let mut events = store.read_log(read);
    while let Some(event) = events.try_next().await? {
        let seen: &mut Seen = versions.entry(event.stream.to_string()).or_default();
        seen.version = seen.version.max(event.version.get());
        seen.events += 1;
    }
    Ok(versions)
}
