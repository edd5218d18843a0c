//! `annals scavenge`: the library's resumable scavenge, with its progress about once a second, and
//! stopped cleanly between two steps by Ctrl-C or SIGTERM (exit code 130; the next run resumes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals::{
    EventStore, Position, ScavengeOptions, ScavengePhase, ScavengeProgress, ScavengeReport, SCAVENGE_CHECKPOINT,
};
use serde_json::json;

use crate::cli::ScavengeArgs;
use crate::failure::Failure;
use crate::output::{self, Output};
use crate::signals::Interrupts;

/// How often the progress is printed, at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How often the progress is looked at (to print the first as soon as the first step is done).
const POLL: Duration = Duration::from_millis(50);

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

    let latest: Mutex<Option<ScavengeProgress>> = Mutex::new(None);
    let report = match drive(store, &args, &latest, &mut interrupts, out).await? {
        Some(report) if report.finished => return Summary { report, position: None }.print(out),
        Some(report) => report,
        None => {
            // Stopped at once: what the last finished step reported.
            let last = latest.lock().ok().and_then(|latest| latest.clone());
            let total = |count: fn(&ScavengeProgress) -> u64| last.as_ref().map_or(0, count);
            ScavengeReport {
                resumed_from: saved,
                head,
                streams_truncated: total(|p| p.streams_truncated),
                examined: total(|p| p.examined),
                removed: total(|p| p.removed),
                bytes_removed: total(|p| p.bytes_removed),
                finished: false,
            }
        }
    };
    // Stopped: the next run resumes from the checkpoint the last finished step saved.
    let position = store.load_checkpoint(SCAVENGE_CHECKPOINT).await?.map(|c| c.position);
    Summary { report, position }.print(out)?;
    let from = position.map_or_else(|| "the start".to_owned(), |p| format!("position {p}"));
    Err(Failure::Interrupted(format!(
        "the scavenge was interrupted: run `annals scavenge --yes` again to resume from {from}"
    )))
}

/// Runs the scavenge, printing the `latest` progress about once a second, until it ends (its
/// report), or a second Ctrl-C stops it at once (`None`). The first Ctrl-C asks it to stop before
/// its next step, and it ends with a report that is not `finished`.
async fn drive(
    store: &dyn EventStore,
    args: &ScavengeArgs,
    latest: &Mutex<Option<ScavengeProgress>>,
    interrupts: &mut Interrupts,
    out: &mut Output,
) -> Result<Option<ScavengeReport>, Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut options = ScavengeOptions::new()
        .chunk_size(usize::try_from(args.chunk).unwrap_or(usize::MAX))
        .stop_when(Arc::clone(&stop));
    if args.no_retention {
        options = options.without_retention();
    }
    let scavenging = annals::scavenge(store, options, |progress| {
        if let Ok(mut latest) = latest.lock() {
            *latest = Some(progress.clone());
        }
    });
    tokio::pin!(scavenging);
    let mut ticks = tokio::time::interval(POLL);
    // The progress last printed, and when: the first as soon as there is one, then once a second.
    let mut printed: Option<(ScavengeProgress, Instant)> = None;
    loop {
        tokio::select! {
            result = &mut scavenging => return Ok(Some(result?)),
            _ = ticks.tick() => {
                if printed.as_ref().is_some_and(|(_, at)| at.elapsed() < PROGRESS_EVERY) {
                    continue;
                }
                let now = latest.lock().ok().and_then(|latest| latest.clone());
                if let Some(progress) = now.filter(|now| printed.as_ref().is_none_or(|(last, _)| last != now)) {
                    print_progress(&progress, out)?;
                    printed = Some((progress, Instant::now()));
                }
            }
            interrupted = interrupts.next() => {
                interrupted.map_err(|e| Failure::io("cannot listen for Ctrl-C and SIGTERM", e))?;
                if stop.swap(true, Ordering::SeqCst) {
                    // A second one: stop at once, leaving the step in flight (the next run does it again).
                    return Ok(None);
                }
                stopping(out)?;
            }
        }
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
    report: ScavengeReport,
    /// Where an interrupted scavenge resumes (`None`: from the start, or finished).
    position: Option<Position>,
}

impl Summary {
    fn print(&self, out: &mut Output) -> Result<(), Failure> {
        let report = &self.report;
        if out.json() {
            out.json_line(&json!({
                "type": "summary",
                "reason": if report.finished { "finished" } else { "interrupted" },
                "resumed_from": report.resumed_from.map(Position::get),
                "head": report.head.get(),
                "position": self.position.map(Position::get),
                "streams_truncated": report.streams_truncated,
                "examined": report.examined,
                "removed": report.removed,
                "bytes_removed": report.bytes_removed,
            }))?;
            return Ok(out.flush()?);
        }
        let counts = format!(
            "examined {} event(s), removed {}, {} of event data, retention truncated {} stream(s)",
            report.examined,
            report.removed,
            output::bytes(report.bytes_removed),
            report.streams_truncated
        );
        let resumed = report.resumed_from.map_or_else(String::new, |p| format!(" (resumed from position {p})"));
        let line = if report.finished {
            format!("scavenge finished up to position {}{resumed}: {counts}", report.head)
        } else {
            let at = self.position.map_or_else(|| "before the log walk".to_owned(), |p| format!("at position {p}"));
            format!("scavenge interrupted {at} of {}{resumed}: {counts} so far", report.head)
        };
        out.line(line)?;
        Ok(out.flush()?)
    }
}
