//! Export and import of a whole store as JSON lines: every event with its full envelope, then every
//! checkpoint. The round trip is lossless: a store imported from an export reads back exactly the
//! same events (ids, positions, versions, both times, metadata, payloads) and checkpoints.

use std::io::{BufRead, Write};

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::position::Position;
use crate::store::{Checkpoint, CheckpointWrite, EventStore, ReadLog};

/// How many events one restored batch holds at most.
const BATCH: usize = 1_000;

/// One line of an export: `{"event": {...}}` or `{"checkpoint": {...}}`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Event(RecordedEvent),
    Checkpoint(SavedCheckpoint),
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
}

/// Writes every event of `store` (in log order, with its whole envelope) and then every checkpoint
/// to `out`, one JSON object per line.
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
pub async fn export_jsonl<S, W>(store: &S, mut out: W) -> Result<Transfer>
where
    S: EventStore + ?Sized,
    W: Write,
{
    let mut transfer = Transfer::default();
    let mut events = store.read_log(ReadLog::from_start());
    while let Some(event) = events.try_next().await? {
        write_line(&mut out, &Line::Event(event))?;
        transfer.events += 1;
    }
    for checkpoint in store.list_checkpoints("").await? {
        let saved = SavedCheckpoint {
            name: checkpoint.name,
            position: checkpoint.position,
            state: checkpoint.state,
            updated_at: checkpoint.updated_at,
        };
        write_line(&mut out, &Line::Checkpoint(saved))?;
        transfer.checkpoints += 1;
    }
    out.flush().map_err(Error::storage)?;
    Ok(transfer)
}

fn write_line<W: Write>(out: &mut W, line: &Line) -> Result<()> {
    serde_json::to_writer(&mut *out, line).map_err(Error::storage)?;
    out.write_all(b"\n").map_err(Error::storage)
}

/// Loads an export made by [`export_jsonl`] into `store`, which must be empty or hold a prefix of
/// the same log (an interrupted import can be run again: events already there are recognised by
/// their ids and skipped). Events are restored with [`EventStore::restore`], so positions, versions
/// and both times are kept; checkpoints are saved as they were.
///
/// # Errors
/// [`Error::InvalidExport`] naming the line that does not parse; [`Error::Restore`] when the events do not
/// continue the store's log; store errors.
pub async fn import_jsonl<S, R>(store: &S, input: R) -> Result<Transfer>
where
    S: EventStore + ?Sized,
    R: BufRead,
{
    let head_before = store.head().await?;
    let mut transfer = Transfer::default();
    let mut batch: Vec<RecordedEvent> = Vec::with_capacity(BATCH);
    let mut checkpoints = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let line = line.map_err(Error::storage)?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line =
            serde_json::from_str(&line).map_err(|source| Error::InvalidExport { line: index as u64 + 1, source })?;
        match parsed {
            Line::Event(event) => {
                let cut =
                    batch.len() >= BATCH || batch.last().is_some_and(|last| last.recorded_at != event.recorded_at);
                if cut {
                    store.restore(std::mem::take(&mut batch)).await?;
                }
                batch.push(event);
            }
            Line::Checkpoint(saved) => {
                let mut checkpoint = Checkpoint::new(saved.name, saved.position);
                checkpoint.state = saved.state;
                checkpoint.updated_at = saved.updated_at;
                checkpoints.push(CheckpointWrite::Save(checkpoint));
            }
        }
    }
    if !batch.is_empty() {
        store.restore(batch).await?;
    }
    transfer.events = store.head().await?.get() - head_before.get();
    transfer.checkpoints = checkpoints.len() as u64;
    for chunk in checkpoints.chunks(BATCH) {
        store.save_checkpoints(chunk.to_vec()).await?;
    }
    Ok(transfer)
}
