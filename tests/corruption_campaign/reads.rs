//! The child's side: open the damaged copy, read everything, print one line per read; and the
//! fingerprints both processes give events, checkpoints and snapshots.

use std::fmt::Write as _;

use annals::{
    Checkpoint, Error, EventStore, LogFilter, ReadLog, ReadStream, RecordedEvent, SledStore, Snapshot, StreamId,
    Version,
};
use futures_util::TryStreamExt;
use uuid::Uuid;

use crate::common::child::say;
use crate::reference::CHECKPOINTS;
use crate::{MARK, PREFIX_FILTER, SNAPSHOT_STREAM, STREAMS, TYPE_FILTERS};

pub(crate) async fn read_everything(store: &SledStore) {
    let head = store.head().await.map(|head| vec![head.get().to_string()]);
    report_tokens("head", head);
    report_events("log", collect(store.read_log(ReadLog::from_start())).await);
    for types in TYPE_FILTERS {
        let filter = LogFilter::all().event_types(types.iter().copied());
        let read = collect(store.read_log(ReadLog::from_start().filter(filter))).await;
        report_events(&format!("log:types={}", types.join("+")), read);
    }
    let filter = LogFilter::all().stream_prefix(PREFIX_FILTER);
    report_events(
        &format!("log:prefix={PREFIX_FILTER}"),
        collect(store.read_log(ReadLog::from_start().filter(filter))).await,
    );
    for name in STREAMS {
        let stream = StreamId::new(name).unwrap();
        report_events(&format!("stream>{name}"), collect(store.read_stream(&stream, ReadStream::forward())).await);
        report_events(&format!("stream<{name}"), collect(store.read_stream(&stream, ReadStream::backward())).await);
        let version =
            store.stream_version(&stream).await.map(|v| vec![v.map_or("none".into(), |v| v.get().to_string())]);
        report_tokens(&format!("version:{name}"), version);
    }
    let streams = store.list_streams("").await.map(|list| list.iter().map(|(s, v)| format!("{s}|{v}")).collect());
    report_tokens("streams", streams);
    let listed = store.list_checkpoints("").await.map(|list| list.iter().map(checkpoint_token).collect());
    report_tokens("checkpoints", listed);
    for name in CHECKPOINTS {
        let loaded = store.load_checkpoint(name).await.map(|c| c.iter().map(checkpoint_token).collect());
        report_tokens(&format!("checkpoint:{name}"), loaded);
    }
    let stream = StreamId::new(SNAPSHOT_STREAM).unwrap();
    let snapshot = store.load_snapshot(&stream, Version::MAX).await;
    report_tokens("snapshot", snapshot.map(|s| vec![s.as_ref().map_or("none".into(), snapshot_token)]));
}

/// Reads a whole event stream: the events before an error, and how it ended.
pub(crate) async fn collect(mut events: annals::EventStream<'_>) -> (Vec<RecordedEvent>, Result<(), Error>) {
    let mut got = Vec::new();
    loop {
        match events.try_next().await {
            Ok(Some(event)) => got.push(event),
            Ok(None) => return (got, Ok(())),
            Err(error) => return (got, Err(error)),
        }
    }
}

fn report_events(label: &str, (events, end): (Vec<RecordedEvent>, Result<(), Error>)) {
    report(label, &end, events.iter().map(event_token).collect());
}

fn report_tokens(label: &str, read: Result<Vec<String>, Error>) {
    match read {
        Ok(tokens) => report(label, &Ok(()), tokens),
        Err(error) => report(label, &Err(error), Vec::new()),
    }
}

/// One line per read: `@@R <label> <ok|damage|other> <tokens>`, and for an error `@@E <label> <error>`.
pub(crate) fn report(label: &str, end: &Result<(), Error>, tokens: Vec<String>) {
    let status = match end {
        Ok(()) => "ok",
        Err(Error::Corrupt { .. } | Error::LogTruncated { .. }) => "damage",
        Err(_) => "other",
    };
    let mut line = format!("{MARK}R {label} {status}");
    for token in tokens {
        line.push(' ');
        line.push_str(&token);
    }
    line.push('\n');
    if let Err(error) = end {
        let text = format!("{error} ({error:?})").replace(['\n', '\r'], " ");
        let _ = writeln!(line, "{MARK}E {label} {text}");
    }
    say(&line);
}

// ---------------------------------------------------------------------------------------------------
// Fingerprints, the same in both processes.

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for part in parts {
        for &byte in part.iter().chain(&[0xff]) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// `position|stream|version|hash`: what a read gave at one place. The hash covers the id, stream,
/// version, position, type and payload; stream names hold no space or `|` (others would not match).
pub(crate) fn event_token(event: &RecordedEvent) -> String {
    let (position, version) = (event.position.get(), event.version.get());
    token(event.id, event.stream.as_str(), version, position, &event.event_type, &event.payload)
}

pub(crate) fn token(id: Uuid, stream: &str, version: u64, position: u64, event_type: &str, payload: &str) -> String {
    let hash = fnv(&[
        id.as_bytes(),
        stream.as_bytes(),
        &version.to_le_bytes(),
        &position.to_le_bytes(),
        event_type.as_bytes(),
        payload.as_bytes(),
    ]);
    let shown = stream.replace([' ', '|', '\n'], "?");
    format!("{position}|{shown}|{version}|{hash:016x}")
}

pub(crate) fn checkpoint_token(checkpoint: &Checkpoint) -> String {
    let state = checkpoint.state.as_deref().map(str::as_bytes);
    let updated = checkpoint.updated_at.timestamp_micros().to_le_bytes();
    let hash = fnv(&[checkpoint.name.as_bytes(), state.unwrap_or(b"<none>"), &updated]);
    format!("{}|{}|{hash:016x}", checkpoint.name.replace([' ', '|'], "?"), checkpoint.position)
}

pub(crate) fn snapshot_token(snapshot: &Snapshot) -> String {
    let taken = snapshot.taken_at.timestamp_micros().to_le_bytes();
    let hash = fnv(&[snapshot.state.as_bytes(), &snapshot.schema_version.to_le_bytes(), &taken]);
    format!("{}|{}|{hash:016x}", snapshot.stream, snapshot.version)
}
