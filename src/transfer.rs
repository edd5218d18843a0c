//! Export and import of a whole store as JSON lines: every event with its full envelope, then every
//! checkpoint, then (when asked) every snapshot. The round trip is lossless: a store imported from
//! an export reads back exactly the same events (ids, positions, versions, both times, metadata,
//! payloads), checkpoints and snapshots. And a direct copy from one store to another (of any
//! backend), snapshots included.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::envelope::{check_reads_back, RecordedEvent};
use crate::error::{Error, Result};
use crate::position::Position;
use crate::position::Version;
use crate::store::{Checkpoint, CheckpointWrite, EventStore, ReadLog, Snapshot};
use crate::stream_id::StreamId;

/// How many checkpoints one save holds at most.
const CHECKPOINT_BATCH: usize = 1_000;

/// The byte order mark some editors put at the start of a UTF-8 file.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// One line of an export: `{"event": {...}}`, `{"checkpoint": {...}}` or `{"snapshot": {...}}`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Event(RecordedEvent),
    Checkpoint(SavedCheckpoint),
    Snapshot(SavedSnapshot),
}

/// A snapshot as exported: every field of [`Snapshot`], its state JSON text byte for byte.
#[derive(Serialize, Deserialize)]
struct SavedSnapshot {
    stream: StreamId,
    version: Version,
    schema_version: u32,
    state: String,
    taken_at: DateTime<Utc>,
}

impl From<Snapshot> for SavedSnapshot {
    fn from(snapshot: Snapshot) -> Self {
        SavedSnapshot {
            stream: snapshot.stream,
            version: snapshot.version,
            schema_version: snapshot.schema_version,
            state: snapshot.state,
            taken_at: snapshot.taken_at,
        }
    }
}

impl From<SavedSnapshot> for Snapshot {
    fn from(saved: SavedSnapshot) -> Self {
        let mut snapshot = Snapshot::new(saved.stream, saved.version, saved.schema_version, saved.state);
        snapshot.taken_at = saved.taken_at;
        snapshot
    }
}

/// A checkpoint as exported; its state stays JSON text, byte for byte.
#[derive(Serialize, Deserialize)]
struct SavedCheckpoint {
    name: String,
    position: Position,
    state: Option<String>,
    updated_at: DateTime<Utc>,
}

/// What an export or import moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transfer {
    /// Events written (for an import: restored, not counting those already in the store).
    pub events: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Snapshots written (for an import: saved in the store).
    pub snapshots: u64,
    /// For an import: snapshot lines left out because they are past the version their stream has
    /// in the store once the events are restored (a snapshot there would stand for events the
    /// store does not hold).
    pub snapshots_left_out: u64,
}

/// Writes every event of `store` (in log order, with its whole envelope) and then every checkpoint
/// to `out`, one JSON object per line. The checkpoints are those saved when the export starts, so
/// none is past the last event written, even if the store is in use. Snapshots are left out:
/// they are a cache (loads without them replay events, and the repository takes new ones as
/// commands cross its policy), and [`import_jsonl`] of earlier releases refuses snapshot lines; [`export_jsonl_with_snapshots`] writes them too.
///
/// ```
/// use annals::{export_jsonl, import_jsonl, EventStore, ExpectedVersion, MemoryStore, NewEvent, StreamId};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let source = MemoryStore::new();
/// let stream = StreamId::new("order-1")?;
/// source.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("OrderPlaced", r#"{"total":5}"#)]).await?;
///
/// let mut lines = Vec::new();
/// export_jsonl(&source, &mut lines).await?;
/// let copy = MemoryStore::new();
/// import_jsonl(&copy, lines.as_slice()).await?;
/// assert_eq!(copy.read_log_chunk(annals::Position::FIRST, 10, &annals::LogFilter::all()).await?.events,
///            source.read_log_chunk(annals::Position::FIRST, 10, &annals::LogFilter::all()).await?.events);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// Read errors of the store; [`Error::Storage`] when writing to `out` fails.
pub async fn export_jsonl<S, W>(store: &S, out: W) -> Result<Transfer>
where
    S: EventStore + ?Sized,
    W: Write,
{
    export(store, out, false).await
}

/// As [`export_jsonl`], then every snapshot of every exported stream at or before the last version
/// exported, one `{"snapshot": {...}}` line each, by stream name and then version. So an import
/// into an empty store gets back every event, checkpoint and snapshot, and loads and time travel
/// start from the same snapshots as in the source. The format of a snapshot line is in
/// [`guide::storage_format`](crate::guide::storage_format).
///
/// ```
/// use annals::{export_jsonl_with_snapshots, import_jsonl, EventStore, ExpectedVersion, MemoryStore, NewEvent, Snapshot, StreamId, Version};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let source = MemoryStore::new();
/// let stream = StreamId::new("order-1")?;
/// source.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("OrderPlaced", r#"{"total":5}"#)]).await?;
/// source.save_snapshot(Snapshot::new(stream.clone(), Version::new(1), 1, r#"{"total":5}"#.into())).await?;
///
/// let mut lines = Vec::new();
/// let exported = export_jsonl_with_snapshots(&source, &mut lines).await?;
/// assert_eq!((exported.events, exported.snapshots), (1, 1));
/// let copy = MemoryStore::new();
/// let imported = import_jsonl(&copy, lines.as_slice()).await?;
/// assert_eq!(imported.snapshots, 1);
/// assert_eq!(copy.load_snapshot(&stream, Version::MAX).await?, source.load_snapshot(&stream, Version::MAX).await?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// Read errors of the store; [`Error::Storage`] when writing to `out` fails.
pub async fn export_jsonl_with_snapshots<S, W>(store: &S, out: W) -> Result<Transfer>
where
    S: EventStore + ?Sized,
    W: Write,
{
    export(store, out, true).await
}

async fn export<S, W>(store: &S, mut out: W, snapshots: bool) -> Result<Transfer>
where
    S: EventStore + ?Sized,
    W: Write,
{
    let mut transfer = Transfer::default();
    // Listed before the log is read, written after it: the log only grows, so even while consumers
    // go on, no checkpoint is past the last event written (`import_jsonl` refuses one that is).
    let checkpoints = store.list_checkpoints("").await?;
    // The last version written of each stream: no snapshot past it is written.
    let mut exported: HashMap<StreamId, Version> = HashMap::new();
    let mut events = store.read_log(ReadLog::from_start());
    while let Some(event) = events.try_next().await? {
        if snapshots {
            exported.insert(event.stream.clone(), event.version);
        }
        write_line(&mut out, &Line::Event(event))?;
        transfer.events += 1;
    }
    drop(events);
    for checkpoint in checkpoints {
        let saved = SavedCheckpoint {
            name: checkpoint.name,
            position: checkpoint.position,
            state: checkpoint.state,
            updated_at: checkpoint.updated_at,
        };
        write_line(&mut out, &Line::Checkpoint(saved))?;
        transfer.checkpoints += 1;
    }
    let mut streams: Vec<_> = exported.into_iter().collect();
    streams.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    for (stream, version) in streams {
        for snapshot in snapshots_up_to(store, &stream, version).await?.into_iter().rev() {
            write_line(&mut out, &Line::Snapshot(snapshot.into()))?;
            transfer.snapshots += 1;
        }
    }
    out.flush().map_err(Error::storage)?;
    Ok(transfer)
}

fn write_line<W: Write>(out: &mut W, line: &Line) -> Result<()> {
    serde_json::to_writer(&mut *out, line).map_err(Error::storage)?;
    out.write_all(b"\n").map_err(Error::storage)
}

/// Loads an export made by [`export_jsonl`] or [`export_jsonl_with_snapshots`] into `store`, which
/// must be empty or hold a prefix of the same log (an interrupted import can be run again: events
/// already there are recognised by their ids and skipped). Events are restored with
/// [`EventStore::restore`], so positions, versions and both times are kept; checkpoints are saved as
/// they were, once every event is restored, and then snapshots, one by one. A snapshot past the
/// version its stream has once the events are restored is left out (counted in
/// [`Transfer::snapshots_left_out`]); the store's [`SnapshotRetention`](crate::SnapshotRetention)
/// applies to the others as to any save.
///
/// Each call to `restore` takes one original commit group, however large: the events that share a
/// `recorded_at` (consecutive groups that share one go together), so that an import that stops
/// part-way never stops inside a group because of its own batching. How `restore` writes one group
/// is its own rule: one atomic append per run of streams (see [`EventStore::restore`]).
///
/// A UTF-8 byte order mark at the start of the input is skipped; blank lines are too.
///
/// # Errors
/// Naming the line, before any checkpoint or snapshot is saved: [`Error::InvalidExport`] for a line
/// that is not UTF-8 or does not parse, or a snapshot whose state is not JSON (its source is then
/// the [`serde_json::Error`] of the state), [`Error::ExportCheckpointPastHead`] for a checkpoint past the last
/// event of the store and of the lines before it, [`Error::ExportCheckpointState`] for a checkpoint
/// whose state is not JSON. [`Error::Restore`] when the events do not continue the store's log;
/// store errors. Events of the lines before a failure may be restored already: run the import
/// again once the input is fixed.
pub async fn import_jsonl<S, R>(store: &S, mut input: R) -> Result<Transfer>
where
    S: EventStore + ?Sized,
    R: BufRead,
{
    let head_before = store.head().await?;
    let mut head = head_before;
    let mut transfer = Transfer::default();
    let mut groups = GroupRestore::new(store);
    let mut checkpoints = Vec::new();
    let mut snapshots = Vec::new();
    let mut bytes = Vec::new();
    let mut number = 0;
    loop {
        bytes.clear();
        if input.read_until(b'\n', &mut bytes).map_err(Error::storage)? == 0 {
            break;
        }
        number += 1;
        let Some(line) = export_line(&bytes, number)? else { continue };
        match line {
            Line::Event(event) => {
                head = head.max(event.position);
                groups.push(event).await?;
            }
            Line::Checkpoint(saved) => checkpoints.push(CheckpointWrite::Save(checkpoint(saved, number, head)?)),
            Line::Snapshot(saved) => {
                check_reads_back(&saved.state)
                    .map_err(|e| Error::InvalidExport { line: number, source: Box::new(e) })?;
                snapshots.push(Snapshot::from(saved));
            }
        }
    }
    groups.finish().await?;
    transfer.events = store.head().await?.get() - head_before.get();
    transfer.checkpoints = checkpoints.len() as u64;
    for chunk in checkpoints.chunks(CHECKPOINT_BATCH) {
        store.save_checkpoints(chunk.to_vec()).await?;
    }
    let mut versions: HashMap<StreamId, Option<Version>> = HashMap::new();
    for snapshot in snapshots {
        let version = match versions.get(&snapshot.stream) {
            Some(version) => *version,
            None => {
                let version = store.stream_version(&snapshot.stream).await?;
                versions.insert(snapshot.stream.clone(), version);
                version
            }
        };
        if version.is_some_and(|version| snapshot.version <= version) {
            store.save_snapshot(snapshot).await?;
            transfer.snapshots += 1;
        } else {
            transfer.snapshots_left_out += 1;
        }
    }
    Ok(transfer)
}

/// The line numbered `number` (from 1), read with its line ending: `None` when it is blank.
fn export_line(bytes: &[u8], number: u64) -> Result<Option<Line>> {
    let invalid = |source: Box<dyn std::error::Error + Send + Sync>| Error::InvalidExport { line: number, source };
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let bytes = if number == 1 { bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes) } else { bytes };
    let text = std::str::from_utf8(bytes).map_err(|e| invalid(Box::new(e)))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text).map(Some).map_err(|e| invalid(Box::new(e)))
}

/// The checkpoint of the line numbered `number`, checked: at most at `head` (the last position of
/// the store and of the events before it), and with a state that is JSON.
fn checkpoint(saved: SavedCheckpoint, number: u64, head: Position) -> Result<Checkpoint> {
    if saved.position > head {
        return Err(Error::ExportCheckpointPastHead { line: number, name: saved.name, position: saved.position, head });
    }
    if let Some(state) = &saved.state {
        if let Err(source) = check_reads_back(state) {
            return Err(Error::ExportCheckpointState { line: number, name: saved.name, source });
        }
    }
    let mut checkpoint = Checkpoint::new(saved.name, saved.position);
    checkpoint.state = saved.state;
    checkpoint.updated_at = saved.updated_at;
    Ok(checkpoint)
}

/// What [`copy_store`] copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyReport {
    /// Events restored into the target.
    pub events: u64,
    /// Checkpoints saved in the target.
    pub checkpoints: u64,
    /// Snapshots saved in the target.
    pub snapshots: u64,
}

/// Copies the whole store `from` into the empty store `to`, losslessly and whatever their backends
/// (a sled store into PostgreSQL and back, a [`MemoryStore`](crate::MemoryStore) into either): every
/// event with its whole envelope (id, position, version, both times, metadata, payload), every
/// checkpoint and every snapshot.
///
/// The copy is of `from` as it was when the copy started, so `from` may be in use (a PostgreSQL
/// store shared by running applications): its checkpoints are listed first, then its events up to
/// the head it has then are copied, then the snapshots of each copied stream at or before the
/// version copied. Events appended meanwhile are left out, and no checkpoint or snapshot of the
/// target is past its events.
///
/// Events go to [`EventStore::restore`] one original commit group at a time (the events that share
/// a `recorded_at`), as in [`import_jsonl`]; checkpoints are saved once every event is restored,
/// then the snapshots, one by one, through the target's
/// [`SnapshotRetention`](crate::SnapshotRetention) (a target keeping the last `n` keeps the newest
/// `n` of each stream).
///
/// The target must be empty. A store that holds events is refused before anything is written, the
/// target of an earlier copy included: `restore` would pass over events it holds already (same
/// ids), but the checkpoints and snapshots copied again would overwrite what the target's own
/// consumers saved since. A copy that fails part-way (a broken connection) leaves the first events
/// in the target and no checkpoint: empty the target (a new directory, a dropped schema) and copy
/// again.
///
/// ```
/// use annals::{copy_store, Checkpoint, CheckpointWrite, EventStore, ExpectedVersion, MemoryStore, NewEvent, StreamId};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let source = MemoryStore::new();
/// let stream = StreamId::new("order-1")?;
/// source.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::raw("OrderPlaced", r#"{"total":5}"#)]).await?;
/// let checkpoint = Checkpoint::new("projection/totals", annals::Position::new(1));
/// source.save_checkpoints(vec![CheckpointWrite::Save(checkpoint)]).await?;
///
/// let copy = MemoryStore::new();
/// let report = copy_store(&source, &copy).await?;
/// assert_eq!((report.events, report.checkpoints, report.snapshots), (1, 1, 0));
/// assert_eq!(copy.read_log_chunk(annals::Position::FIRST, 10, &annals::LogFilter::all()).await?.events,
///            source.read_log_chunk(annals::Position::FIRST, 10, &annals::LogFilter::all()).await?.events);
/// assert_eq!(copy.list_checkpoints("").await?, source.list_checkpoints("").await?);
///
/// // The target now holds events: a second copy into it is refused.
/// assert!(matches!(copy_store(&source, &copy).await, Err(annals::Error::Restore { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::Restore`] at position 1 when `to` holds events (nothing is written); the errors of
/// [`EventStore::restore`] when an event does not fit the target (its maximum event size may be
/// smaller than the source's); read errors of `from` and write errors of `to`. After an error the
/// target may hold part of the events, and then no checkpoint.
pub async fn copy_store<A, B>(from: &A, to: &B) -> Result<CopyReport>
where
    A: EventStore + ?Sized,
    B: EventStore + ?Sized,
{
    if to.head().await? != Position::ZERO {
        return Err(Error::Restore { position: Position::FIRST, problem: "the target of a copy must be empty" });
    }
    // Listed before the head is read: every checkpoint is at or before the events copied.
    let checkpoints = from.list_checkpoints("").await?;
    let head = from.head().await?;
    let mut report = CopyReport::default();
    if head != Position::ZERO {
        let mut groups = GroupRestore::new(to);
        let mut events = from.read_log(ReadLog::from_start().until_position(head));
        while let Some(event) = events.try_next().await? {
            groups.push(event).await?;
            report.events += 1;
        }
        groups.finish().await?;
    }
    let writes: Vec<CheckpointWrite> = checkpoints.into_iter().map(CheckpointWrite::Save).collect();
    for chunk in writes.chunks(CHECKPOINT_BATCH) {
        to.save_checkpoints(chunk.to_vec()).await?;
    }
    report.checkpoints = writes.len() as u64;
    // The target's streams are the copied ones, at the versions copied.
    for (stream, version) in to.list_streams("").await? {
        for snapshot in snapshots_up_to(from, &stream, version).await? {
            to.save_snapshot(snapshot).await?;
            report.snapshots += 1;
        }
    }
    Ok(report)
}

/// Every snapshot of `stream` at or before version `at`, newest first. There is no listing of
/// snapshots: this walks down from the newest, one load per snapshot.
async fn snapshots_up_to<S: EventStore + ?Sized>(store: &S, stream: &StreamId, at: Version) -> Result<Vec<Snapshot>> {
    let mut found = Vec::new();
    let mut at = Some(at);
    while let Some(version) = at {
        let Some(snapshot) = store.load_snapshot(stream, version).await? else { break };
        at = snapshot.version.get().checked_sub(1).map(Version::new);
        found.push(snapshot);
    }
    Ok(found)
}

/// Hands recorded events to [`EventStore::restore`] one original commit group at a time: the events
/// that share a `recorded_at` (consecutive groups that share one go together). Cut only where the
/// recorded time changes, however large a group: cutting it elsewhere would let a transfer that
/// stops there leave part of it. How `restore` writes one group is its own rule: one atomic append
/// per run of streams.
struct GroupRestore<'a, S: ?Sized> {
    store: &'a S,
    /// The events of the current group.
    group: Vec<RecordedEvent>,
}

impl<'a, S: EventStore + ?Sized> GroupRestore<'a, S> {
    fn new(store: &'a S) -> Self {
        GroupRestore { store, group: Vec::new() }
    }

    /// Adds the next event of the log, restoring the group before it when this one starts a new one.
    async fn push(&mut self, event: RecordedEvent) -> Result<()> {
        if self.group.last().is_some_and(|last| last.recorded_at != event.recorded_at) {
            self.store.restore(std::mem::take(&mut self.group)).await?;
        }
        self.group.push(event);
        Ok(())
    }

    /// Restores the last group.
    async fn finish(self) -> Result<()> {
        if self.group.is_empty() {
            return Ok(());
        }
        self.store.restore(self.group).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::NewEvent;
    use crate::position::ExpectedVersion;
    use crate::MemoryStore;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    /// The export of a store with two events and one checkpoint at position 2, as text.
    async fn export() -> Result<String> {
        let store = MemoryStore::new();
        let stream = StreamId::new("order-1")?;
        let events = vec![NewEvent::raw("Placed", r#"{"n":1}"#), NewEvent::raw("Paid", r#"{"n":2}"#)];
        store.append(&stream, ExpectedVersion::NoStream, events).await?;
        let checkpoint = Checkpoint::new("totals", Position::new(2)).with_state(r#"{"sum":3}"#);
        store.save_checkpoints(vec![CheckpointWrite::Save(checkpoint)]).await?;
        let mut out = Vec::new();
        export_jsonl(&store, &mut out).await?;
        String::from_utf8(out).map_err(Error::storage)
    }

    /// Imports `input` into a fresh store: the result, the store's head and its checkpoints.
    async fn import(input: &[u8]) -> Result<(Result<Transfer>, u64, Vec<Checkpoint>)> {
        let store = MemoryStore::new();
        let result = import_jsonl(&store, input).await;
        Ok((result, store.head().await?.get(), store.list_checkpoints("").await?))
    }

    #[tokio::test]
    async fn a_leading_byte_order_mark_is_skipped() -> TestResult {
        let text = export().await?;
        let with_bom = [UTF8_BOM, text.as_bytes()].concat();
        let (result, head, checkpoints) = import(&with_bom).await?;
        assert_eq!(result?, Transfer { events: 2, checkpoints: 1, ..Transfer::default() });
        assert_eq!((head, checkpoints.len()), (2, 1));
        let crlf = text.replace('\n', "\r\n");
        assert_eq!(
            import(crlf.as_bytes()).await?.0?,
            Transfer { events: 2, checkpoints: 1, ..Transfer::default() },
            "CRLF line ends"
        );

        // Only at the start: elsewhere it is not JSON.
        let (first, rest) = text.split_once('\n').ok_or("two lines")?;
        let inside = [first.as_bytes(), b"\n", UTF8_BOM, rest.as_bytes()].concat();
        let (result, _, checkpoints) = import(&inside).await?;
        let source = match &result {
            Err(Error::InvalidExport { line: 2, source }) => source.downcast_ref::<serde_json::Error>(),
            _ => None,
        };
        assert!(source.is_some(), "{result:?}");
        assert!(checkpoints.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_line_that_is_not_utf8_is_an_invalid_export_line_naming_it() -> TestResult {
        let text = export().await?;
        // A Latin-1 "é" in the second line's event type.
        let bytes = text.replacen("Paid", "Pay\u{1}", 1).into_bytes();
        let bytes: Vec<u8> = bytes.into_iter().map(|b| if b == 1 { 0xe9 } else { b }).collect();
        let (result, _, checkpoints) = import(&bytes).await?;
        let Err(error @ Error::InvalidExport { line: 2, source }) = &result else {
            return Err(format!("expected line 2 to be refused, got {result:?}").into());
        };
        assert!(source.downcast_ref::<std::str::Utf8Error>().is_some(), "{source:?}");
        assert_eq!(error.to_string(), "line 2 of the export is not an export line");
        assert!(checkpoints.is_empty(), "no checkpoint is saved after a bad line");
        Ok(())
    }

    #[tokio::test]
    async fn a_checkpoint_past_the_imported_events_is_refused_naming_its_line() -> TestResult {
        let text = export().await?;
        let (events, checkpoint) = text.trim_end().rsplit_once('\n').ok_or("three lines")?;
        assert!(checkpoint.starts_with(r#"{"checkpoint""#), "{checkpoint}");
        let past = format!("{events}\n{}\n", checkpoint.replace(r#""position":2"#, r#""position":3"#));
        assert_ne!(past, text);
        let (result, _, checkpoints) = import(past.as_bytes()).await?;
        let Err(error) = result else { return Err("a checkpoint at 3 after events up to 2 was taken".into()) };
        assert!(
            matches!(
                &error,
                Error::ExportCheckpointPastHead { line: 3, name, position, head }
                    if name == "totals" && *position == Position::new(3) && *head == Position::new(2)
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "line 3 of the export saves checkpoint \"totals\" at position 3, past the last imported position 2"
        );
        assert!(checkpoints.is_empty());

        // Without the events, in a store that holds them already, it is at the head.
        let checkpoint_only = checkpoint;
        let store = MemoryStore::new();
        import_jsonl(&store, text.as_bytes()).await?;
        let again = import_jsonl(&store, checkpoint_only.as_bytes()).await?;
        assert_eq!(again, Transfer { events: 0, checkpoints: 1, ..Transfer::default() });
        let empty = import(checkpoint_only.as_bytes()).await?.0;
        assert!(matches!(empty, Err(Error::ExportCheckpointPastHead { line: 1, .. })), "{empty:?}");
        Ok(())
    }

    #[tokio::test]
    async fn a_checkpoint_whose_state_is_not_json_is_refused_naming_its_line() -> TestResult {
        let text = export().await?;
        for state in [r#""{\"sum\":""#, r#""[\"\\ud800\"]""#, r#""{} {}""#] {
            let bad = text.replace(r#""{\"sum\":3}""#, state);
            assert_ne!(bad, text);
            let (result, _, checkpoints) = import(bad.as_bytes()).await?;
            let Err(error) = result else { return Err(format!("the state {state} was taken").into()) };
            assert!(
                matches!(&error, Error::ExportCheckpointState { line: 3, name, .. } if name == "totals"),
                "{error:?}"
            );
            assert_eq!(
                error.to_string(),
                "line 3 of the export saves checkpoint \"totals\" with a state that is not JSON"
            );
            assert!(checkpoints.is_empty());
        }
        let no_state = text.replace(r#""{\"sum\":3}""#, "null");
        assert_eq!(import(no_state.as_bytes()).await?.0?.checkpoints, 1, "a checkpoint without state is fine");
        Ok(())
    }
}
