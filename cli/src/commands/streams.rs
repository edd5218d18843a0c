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
    let streams: Vec<(String, u64)> = match args.as_of.bound() {
        None => store.list_streams(&args.prefix).await?.into_iter().map(|(s, v)| (s.to_string(), v.get())).collect(),
        Some((at, axis)) => versions_as_of(store, &args.prefix, at, axis).await?.into_iter().collect(),
    };
    if out.json() {
        for (stream, version) in &streams {
            out.json_line(&json!({ "stream": stream, "version": version }))?;
        }
        return Ok(());
    }
    if streams.is_empty() {
        return Ok(out.line("(no streams)")?);
    }
    let mut rows = vec![vec!["STREAM".to_owned(), "VERSION".to_owned()]];
    rows.extend(streams.into_iter().map(|(stream, version)| vec![stream, version.to_string()]));
    for line in table(&rows) {
        out.line(line)?;
    }
    Ok(())
}

/// Each stream's number of events at or before `at` on `axis`: its version then, for the recorded
/// axis (a stream's versions are recorded in order). Reads the log up to `at` (recorded), or all of
/// it (occurred: business time need not grow along the log).
async fn versions_as_of(
    store: &dyn EventStore,
    prefix: &str,
    at: DateTime<Utc>,
    axis: Axis,
) -> Result<BTreeMap<String, u64>, Failure> {
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
        *versions.entry(event.stream.to_string()).or_insert(0) += 1;
    }
    Ok(versions)
}
