//! [`scavenge`]: applies retention rules, then removes for good what reads no longer show, step by
//! step, resumable after a crash or a stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::lifecycle::RetentionScope;
use super::{Checkpoint, CheckpointWrite, Direction, EventStore, RetentionRule, StreamView};
use crate::error::Result;
use crate::position::{Position, Version};
use crate::stream_id::StreamId;

/// The checkpoint a running scavenge saves its progress under; a later run resumes from it, and a
/// finished run deletes it.
pub const SCAVENGE_CHECKPOINT: &str = "scavenge/progress";

/// How many events one step looks at by default.
const DEFAULT_CHUNK: usize = 10_000;

/// Options of a [`scavenge`].
#[derive(Clone, Debug)]
pub struct ScavengeOptions {
    pub(crate) chunk: usize,
    pub(crate) now: Option<DateTime<Utc>>,
    pub(crate) retention: bool,
    pub(crate) stop: Option<Arc<AtomicBool>>,
}

impl ScavengeOptions {
    /// Apply retention rules, then walk the log in steps of 10,000 events.
    pub fn new() -> Self {
        ScavengeOptions { chunk: DEFAULT_CHUNK, now: None, retention: true, stop: None }
    }

    /// How many events one step looks at (at least 1). Each step is one atomic, durable write and one
    /// saved checkpoint.
    pub fn chunk_size(mut self, events: usize) -> Self {
        self.chunk = events.max(1);
        self
    }

    /// The time retention rules measure ages against (default: when the scavenge starts).
    pub fn now(mut self, now: DateTime<Utc>) -> Self {
        self.now = Some(now);
        self
    }

    /// Skip the retention rules: only remove what deletes and truncations already hid.
    pub fn without_retention(mut self) -> Self {
        self.retention = false;
        self
    }

    /// Stop cleanly before the next step once `flag` is set (from a signal handler, another task,
    /// the progress callback): the run returns with [`ScavengeReport::finished`] false and its
    /// checkpoint saved, and the next run resumes there.
    pub fn stop_when(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }
}

impl Default for ScavengeOptions {
    fn default() -> Self {
        ScavengeOptions::new()
    }
}

/// What a scavenge is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScavengePhase {
    /// Truncating the streams retention rules cover.
    Retention,
    /// Walking the log and removing what reads no longer show.
    Log,
}

/// Where a running [`scavenge`] is, given to its progress callback after every step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScavengeProgress {
    /// The phase.
    pub phase: ScavengePhase,
    /// The first position not looked at yet (`Position::ZERO` during [`ScavengePhase::Retention`]).
    pub position: Position,
    /// The head of the log when the scavenge started: it ends there.
    pub head: Position,
    /// Streams truncated by retention rules so far.
    pub streams_truncated: u64,
    /// Events looked at so far (counted from the first run, when this one resumed).
    pub examined: u64,
    /// Events removed so far.
    pub removed: u64,
    /// Bytes of event data removed so far.
    pub bytes_removed: u64,
}

/// What a finished [`scavenge`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScavengeReport {
    /// The position an interrupted earlier run had reached, when this one resumed from it.
    pub resumed_from: Option<Position>,
    /// The head of the log when the scavenge started.
    pub head: Position,
    /// Streams truncated by retention rules.
    pub streams_truncated: u64,
    /// Events looked at.
    pub examined: u64,
    /// Events removed.
    pub removed: u64,
    /// Bytes of event data removed, before the storage engine's own overhead.
    pub bytes_removed: u64,
    /// Whether the run reached the end of the log; `false` when it was stopped
    /// ([`ScavengeOptions::stop_when`]) and a later run will resume it.
    pub finished: bool,
}

/// The progress a scavenge saves with its checkpoint.
#[derive(Default, Serialize, Deserialize)]
struct Saved {
    examined: u64,
    removed: u64,
    bytes_removed: u64,
    streams_truncated: u64,
}

/// Reclaims the space of what reads no longer show: applies every [retention rule](RetentionRule)
/// (truncating each covered stream before the first event it keeps), then walks the log with
/// [`EventStore::scavenge_chunk`] and removes hard-deleted events and those below their stream's
/// truncation point.
///
/// Positions never change and are never reused; every log read skips removed events. Each step is
/// atomic and durable, and the position reached is saved as the checkpoint [`SCAVENGE_CHECKPOINT`]
/// after each, so a scavenge stopped anywhere (a crash, a kill, dropping the future) resumes there
/// at the next call. Readers, writers and consumers keep working while it runs. Run one scavenge at
/// a time.
///
/// `progress` is called after each step.
///
/// ```
/// use annals::{scavenge, DeleteMode, EventStore, ExpectedVersion, MemoryStore, NewEvent, ReadLog, ScavengeOptions, StreamId};
/// use futures_util::TryStreamExt;
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = MemoryStore::new();
/// let cart = StreamId::new("cart-1")?;
/// let order = StreamId::new("order-1")?;
/// store.append(&cart, ExpectedVersion::NoStream, vec![NewEvent::raw("ItemAdded", "{}")]).await?;
/// store.append(&order, ExpectedVersion::NoStream, vec![NewEvent::raw("OrderPlaced", "{}")]).await?;
/// store.delete_stream(&cart, ExpectedVersion::Any, DeleteMode::Hard).await?;
///
/// let report = scavenge(&store, ScavengeOptions::new(), |_| {}).await?;
/// assert_eq!(report.removed, 1);
/// // The order keeps its position: 2. Position 1 is a gap that reads skip.
/// let log: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await?;
/// assert_eq!(log.iter().map(|e| e.position.get()).collect::<Vec<_>>(), [2]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// What the store's methods return; the checkpoint keeps the progress made before the error.
pub async fn scavenge<S, F>(store: &S, options: ScavengeOptions, mut progress: F) -> Result<ScavengeReport>
where
    S: EventStore + ?Sized,
    F: FnMut(&ScavengeProgress) + Send,
{
    let span = tracing::info_span!("annals.scavenge", removed = tracing::field::Empty);
    let report = async {
        let head = store.head().await?;
        let saved = store.load_checkpoint(SCAVENGE_CHECKPOINT).await?;
        let resumed_from = saved.as_ref().map(|c| c.position);
        let mut totals: Saved =
            saved.and_then(|c| c.state).and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
        let mut at = resumed_from.unwrap_or(Position::FIRST).max(Position::FIRST);
        let report = |totals: &Saved, phase, position| ScavengeProgress {
            phase,
            position,
            head,
            streams_truncated: totals.streams_truncated,
            examined: totals.examined,
            removed: totals.removed,
            bytes_removed: totals.bytes_removed,
        };
        if options.retention {
            let now = options.now.unwrap_or_else(Utc::now);
            for rule in store.retention_rules().await? {
                totals.streams_truncated += apply_rule(store, &rule, now).await?;
                progress(&report(&totals, ScavengePhase::Retention, Position::ZERO));
            }
        }
        let stopped = || options.stop.as_ref().is_some_and(|flag| flag.load(Ordering::SeqCst));
        let mut finished = true;
        loop {
            if stopped() {
                finished = false;
                break;
            }
            let chunk = store.scavenge_chunk(at, options.chunk).await?;
            totals.examined += chunk.examined;
            totals.removed += chunk.removed;
            totals.bytes_removed += chunk.bytes_removed;
            at = chunk.next.max(at);
            if chunk.end || at > head {
                break;
            }
            let state = serde_json::to_string(&totals).map_err(|e| crate::Error::Storage(Box::new(e)))?;
            let checkpoint = Checkpoint::new(SCAVENGE_CHECKPOINT, at).with_state(state);
            store.save_checkpoints(vec![CheckpointWrite::Save(checkpoint)]).await?;
            progress(&report(&totals, ScavengePhase::Log, at));
        }
        if finished {
            store.save_checkpoints(vec![CheckpointWrite::Delete(SCAVENGE_CHECKPOINT.to_owned())]).await?;
            progress(&report(&totals, ScavengePhase::Log, at));
        }
        Ok::<_, crate::Error>(ScavengeReport {
            resumed_from,
            head,
            streams_truncated: totals.streams_truncated,
            examined: totals.examined,
            removed: totals.removed,
            bytes_removed: totals.bytes_removed,
            finished,
        })
    }
    .instrument(span.clone())
    .await?;
    span.record("removed", report.removed);
    Ok(report)
}

/// Truncates every stream `rule` covers before the first event it keeps; returns how many it
/// truncated.
async fn apply_rule<S: EventStore + ?Sized>(store: &S, rule: &RetentionRule, now: DateTime<Utc>) -> Result<u64> {
    let streams = match &rule.scope {
        RetentionScope::Stream(stream) => {
            store.list_streams(stream.as_str()).await?.into_iter().filter(|(s, _)| s == stream).collect()
        }
        RetentionScope::Prefix(prefix) => store.list_streams(prefix).await?,
    };
    let cutoff = rule
        .policy
        .max_age
        .and_then(|age| chrono::Duration::from_std(age).ok())
        .and_then(|age| now.checked_sub_signed(age));
    let mut truncated = 0;
    for (stream, last) in streams {
        let info = store.stream_info(&stream).await?;
        let first_young = match cutoff {
            Some(cutoff) => first_recorded_at_or_after(store, &stream, info.truncated_before, last, cutoff).await?,
            None => Some(info.truncated_before),
        };
        let keep_from = rule.keep_from(last, first_young);
        if keep_from > info.truncated_before {
            store.truncate_stream(&stream, keep_from).await?;
            truncated += 1;
        }
    }
    Ok(truncated)
}

/// The first version in `from ..= last` recorded at or after `cutoff`, or `None`: a binary search,
/// since `recorded_at` never decreases along a stream.
async fn first_recorded_at_or_after<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    from: Version,
    last: Version,
    cutoff: DateTime<Utc>,
) -> Result<Option<Version>> {
    // Invariant: versions below `low` were recorded before `cutoff`; versions at or above `high` not.
    let (mut low, mut high) = (from.get(), last.get() + 1);
    while low < high {
        let middle = low + (high - low) / 2;
        let probe =
            store.read_stream_chunk(stream, Version::new(middle), Direction::Forward, 1, StreamView::Current).await?;
        match probe.first() {
            Some(event) if event.recorded_at < cutoff => low = event.version.get().max(middle) + 1,
            _ => high = middle,
        }
    }
    Ok((low <= last.get()).then(|| Version::new(low)))
}
