//! `annals scavenge`: the library's resumable scavenge, with its progress about once a second, and
//! stopped cleanly between two steps by Ctrl-C or SIGTERM (exit code 130; the next run resumes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use annals::{
    AppendResult, Checkpoint, CheckpointWrite, DeleteMode, Direction, EventStore, ExpectedVersion, HeadWatch, LogChunk,
    LogFilter, PartitionLeases, Position, RecordedEvent, RetentionRule, RetentionScope, ScavengeChunk, ScavengeOptions,
    ScavengePhase, ScavengeProgress, Snapshot, StreamAppend, StreamId, StreamInfo, StreamView, Version,
    SCAVENGE_CHECKPOINT,
};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::cli::ScavengeArgs;
use crate::failure::Failure;
use crate::output::{self, Output};
use crate::signals::Interrupts;

/// How often the progress is printed, at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// `scavenge --yes [--chunk N] [--no-retention]`.
pub(super) async fn run(store: &dyn EventStore, args: ScavengeArgs, out: &mut Output) -> Result<(), Failure> {
    let saved = store.load_checkpoint(SCAVENGE_CHECKPOINT).await?.map(|c| c.position);
    let rules = if args.no_retention { 0 } else { store.retention_rules().await?.len() };
    if !args.yes {
        return Err(refuse(saved, rules));
    }
    // Listen before anything starts, so that an early Ctrl-C stops the scavenge cleanly too.
    let mut interrupts = Interrupts::listen()?;
    let head = store.head().await?;
    start(head, saved, rules, out)?;

    let gate = Gate::default();
    let latest: Mutex<Option<ScavengeProgress>> = Mutex::new(None);
    let stoppable = StopBetweenSteps { inner: store, gate: &gate };
    let mut options = ScavengeOptions::new().chunk_size(usize::try_from(args.chunk).unwrap_or(usize::MAX));
    if args.no_retention {
        options = options.without_retention();
    }
    let scavenging = annals::scavenge(&stoppable, options, |progress| {
        if let Ok(mut latest) = latest.lock() {
            *latest = Some(progress.clone());
        }
    });
    tokio::pin!(scavenging);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    let mut printed: Option<ScavengeProgress> = None;
    let outcome = loop {
        tokio::select! {
            result = &mut scavenging => break Some(result),
            _ = ticks.tick() => {
                let now = latest.lock().ok().and_then(|latest| latest.clone());
                if let Some(progress) = now.filter(|now| printed.as_ref() != Some(now)) {
                    print_progress(&progress, out)?;
                    printed = Some(progress);
                }
            }
            interrupted = interrupts.next() => {
                interrupted.map_err(|e| Failure::io("cannot listen for Ctrl-C and SIGTERM", e))?;
                if gate.stop.swap(true, Ordering::SeqCst) {
                    // A second one: stop at once, leaving the step in flight (the next run does it again).
                    break None;
                }
                stopping(out)?;
            }
        }
    };
    let last = latest.lock().ok().and_then(|latest| latest.clone());
    match outcome {
        Some(Ok(report)) => {
            let summary = Summary {
                reason: "finished",
                resumed_from: report.resumed_from,
                head: report.head,
                position: None,
                streams_truncated: report.streams_truncated,
                examined: report.examined,
                removed: report.removed,
                bytes_removed: report.bytes_removed,
            };
            summary.print(out)
        }
        Some(Err(annals::Error::Closed)) | None if gate.stop.load(Ordering::SeqCst) => {
            // Where the next run resumes: the checkpoint the last finished step saved.
            let position = store.load_checkpoint(SCAVENGE_CHECKPOINT).await?.map(|c| c.position);
            let summary = Summary {
                reason: "interrupted",
                resumed_from: saved,
                head,
                position,
                streams_truncated: last.as_ref().map_or(0, |p| p.streams_truncated),
                examined: last.as_ref().map_or(0, |p| p.examined),
                removed: last.as_ref().map_or(0, |p| p.removed),
                bytes_removed: last.as_ref().map_or(0, |p| p.bytes_removed),
            };
            summary.print(out)?;
            let from = position.map_or_else(|| "the start".to_owned(), |p| format!("position {p}"));
            Err(Failure::Interrupted(format!(
                "the scavenge was interrupted: run `annals scavenge --yes` again to resume from {from}"
            )))
        }
        Some(Err(error)) => Err(error.into()),
        None => Err(Failure::Interrupted("the scavenge was interrupted".to_owned())),
    }
}

/// Why `scavenge` without `--yes` does nothing, saying what it would do.
fn refuse(saved: Option<Position>, rules: usize) -> Failure {
    let retention = match rules {
        0 => String::new(),
        n => format!(", after applying {n} retention rule(s)"),
    };
    let resume = saved.map_or_else(String::new, |p| format!(" (resuming from position {p}, where a run stopped)"));
    Failure::Usage(format!(
        "not scavenging without --yes: it would remove for good the events of hard-deleted streams and those below \
         each stream's truncation point (truncated, soft-deleted, expired){retention}{resume}; add --yes to scavenge"
    ))
}

/// The first line: what the scavenge goes through.
fn start(head: Position, saved: Option<Position>, rules: usize, out: &mut Output) -> Result<(), Failure> {
    if out.json() {
        out.json_line(&json!({
            "type": "start",
            "head": head.get(),
            "resumed_from": saved.map(Position::get),
            "retention_rules": rules,
        }))?;
    } else {
        let mut line = format!("scavenging the log up to position {head}");
        if let Some(saved) = saved {
            line.push_str(&format!(", resuming from position {saved}"));
        }
        if rules > 0 {
            line.push_str(&format!(", after applying {rules} retention rule(s)"));
        }
        out.line(line)?;
    }
    Ok(out.flush()?)
}

/// One progress line.
fn print_progress(progress: &ScavengeProgress, out: &mut Output) -> Result<(), Failure> {
    let phase = match progress.phase {
        ScavengePhase::Retention => "retention",
        ScavengePhase::Log => "log",
    };
    if out.json() {
        out.json_line(&json!({
            "type": "progress",
            "phase": phase,
            "position": progress.position.get(),
            "head": progress.head.get(),
            "streams_truncated": progress.streams_truncated,
            "examined": progress.examined,
            "removed": progress.removed,
            "bytes_removed": progress.bytes_removed,
        }))?;
    } else if progress.phase == ScavengePhase::Retention {
        out.line(format!("retention: {} stream(s) truncated", progress.streams_truncated))?;
    } else {
        out.line(format!(
            "{phase}: position {} of {}, examined {}, removed {}, {}",
            progress.position,
            progress.head,
            progress.examined,
            progress.removed,
            output::bytes(progress.bytes_removed)
        ))?;
    }
    Ok(out.flush()?)
}

/// Says that the first Ctrl-C was heard.
fn stopping(out: &mut Output) -> Result<(), Failure> {
    if out.json() {
        out.json_line(&json!({ "type": "stopping" }))?;
    } else {
        out.line("stopping after the current step (Ctrl-C again to stop at once)")?;
    }
    Ok(out.flush()?)
}

/// What the scavenge did, for the last line.
struct Summary {
    /// `finished` or `interrupted`.
    reason: &'static str,
    resumed_from: Option<Position>,
    head: Position,
    /// Where an interrupted scavenge resumes (`None`: from the start).
    position: Option<Position>,
    streams_truncated: u64,
    examined: u64,
    removed: u64,
    bytes_removed: u64,
}

impl Summary {
    fn print(&self, out: &mut Output) -> Result<(), Failure> {
        if out.json() {
            out.json_line(&json!({
                "type": "summary",
                "reason": self.reason,
                "resumed_from": self.resumed_from.map(Position::get),
                "head": self.head.get(),
                "position": self.position.map(Position::get),
                "streams_truncated": self.streams_truncated,
                "examined": self.examined,
                "removed": self.removed,
                "bytes_removed": self.bytes_removed,
            }))?;
            return Ok(out.flush()?);
        }
        let counts = format!(
            "examined {} event(s), removed {}, {} of event data, retention truncated {} stream(s)",
            self.examined,
            self.removed,
            output::bytes(self.bytes_removed),
            self.streams_truncated
        );
        let resumed = self.resumed_from.map_or_else(String::new, |p| format!(" (resumed from position {p})"));
        let line = if self.reason == "finished" {
            format!("scavenge finished up to position {}{resumed}: {counts}", self.head)
        } else {
            let at = self.position.map_or_else(|| "before the log walk".to_owned(), |p| format!("at position {p}"));
            format!("scavenge interrupted {at} of {}{resumed}: {counts} so far", self.head)
        };
        out.line(line)?;
        Ok(out.flush()?)
    }
}

/// Asked to stop: the next step of the scavenge is refused (and was not started).
#[derive(Default)]
struct Gate {
    stop: AtomicBool,
}

impl Gate {
    /// Lets a step start, unless a stop was asked for: then [`annals::Error::Closed`], which ends the
    /// scavenge with its checkpoint at the last finished step.
    async fn step(&self) -> annals::Result<()> {
        // A step that never waits would keep Ctrl-C from being heard until the whole scavenge ends.
        tokio::task::yield_now().await;
        if self.stop.load(Ordering::SeqCst) {
            return Err(annals::Error::Closed);
        }
        Ok(())
    }
}

/// The store as the scavenge sees it: the same store, but for the steps that change it (a chunk of
/// the log walk, a truncation by a retention rule), which wait for the [`Gate`] first.
struct StopBetweenSteps<'a> {
    inner: &'a dyn EventStore,
    gate: &'a Gate,
}

#[async_trait::async_trait]
impl EventStore for StopBetweenSteps<'_> {
    async fn append_multi(&self, appends: Vec<StreamAppend>) -> annals::Result<Vec<AppendResult>> {
        self.inner.append_multi(appends).await
    }

    async fn read_stream_chunk(
        &self,
        stream: &StreamId,
        from: Version,
        direction: Direction,
        max: usize,
        view: StreamView,
    ) -> annals::Result<Vec<RecordedEvent>> {
        self.inner.read_stream_chunk(stream, from, direction, max, view).await
    }

    async fn read_log_chunk(&self, from: Position, max: usize, filter: &LogFilter) -> annals::Result<LogChunk> {
        self.inner.read_log_chunk(from, max, filter).await
    }

    async fn head(&self) -> annals::Result<Position> {
        self.inner.head().await
    }

    async fn stream_version(&self, stream: &StreamId) -> annals::Result<Option<Version>> {
        self.inner.stream_version(stream).await
    }

    async fn list_streams(&self, prefix: &str) -> annals::Result<Vec<(StreamId, Version)>> {
        self.inner.list_streams(prefix).await
    }

    async fn seek_recorded(&self, at: DateTime<Utc>) -> annals::Result<Option<Position>> {
        self.inner.seek_recorded(at).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> annals::Result<()> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &StreamId, at: Version) -> annals::Result<Option<Snapshot>> {
        self.inner.load_snapshot(stream, at).await
    }

    async fn load_checkpoint(&self, name: &str) -> annals::Result<Option<Checkpoint>> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoints(&self, writes: Vec<CheckpointWrite>) -> annals::Result<()> {
        self.inner.save_checkpoints(writes).await
    }

    async fn list_checkpoints(&self, prefix: &str) -> annals::Result<Vec<Checkpoint>> {
        self.inner.list_checkpoints(prefix).await
    }

    async fn restore(&self, events: Vec<RecordedEvent>) -> annals::Result<()> {
        self.inner.restore(events).await
    }

    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> annals::Result<()> {
        self.inner.delete_stream(stream, expected, mode).await
    }

    async fn truncate_stream(&self, stream: &StreamId, before: Version) -> annals::Result<()> {
        self.gate.step().await?;
        self.inner.truncate_stream(stream, before).await
    }

    async fn stream_info(&self, stream: &StreamId) -> annals::Result<StreamInfo> {
        self.inner.stream_info(stream).await
    }

    async fn scavenge_chunk(&self, from: Position, max: usize) -> annals::Result<ScavengeChunk> {
        self.gate.step().await?;
        self.inner.scavenge_chunk(from, max).await
    }

    async fn scavenge_stream(&self, stream: &StreamId) -> annals::Result<u64> {
        self.inner.scavenge_stream(stream).await
    }

    async fn set_retention(&self, rule: RetentionRule) -> annals::Result<()> {
        self.inner.set_retention(rule).await
    }

    async fn remove_retention(&self, scope: &RetentionScope) -> annals::Result<bool> {
        self.inner.remove_retention(scope).await
    }

    async fn retention_rules(&self) -> annals::Result<Vec<RetentionRule>> {
        self.inner.retention_rules().await
    }

    fn watch_head(&self) -> HeadWatch {
        self.inner.watch_head()
    }

    fn partition_leases(&self) -> Option<&dyn PartitionLeases> {
        self.inner.partition_leases()
    }
}
