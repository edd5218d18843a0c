//! Scavenging a sled store survives `kill -9` anywhere, and a finished step survives a power cut.
//!
//! The store holds 22,000 events of 200 streams, appended round by round (one event per stream per
//! round, all in one `append_multi`), so every log record mixes events that stay with events that go.
//! Of the streams, a fifth is hard-deleted, a fifth soft-deleted, a fifth truncated (each at its own
//! version), a fifth is under a retention rule keeping its newest [`KEEP`] events, and a fifth is left
//! alone. A child process (this test binary re-run with `ANNALS_SCAVENGE_DIR` set, see
//! [`scavenge_child`]) runs `annals::scavenge` over it in steps of [`STEP`] events and prints a line
//! per step; the parent kills it with SIGKILL right after the k-th line of its run (for several k,
//! one run after the other on the same store, each resuming the last), so the kill lands while the
//! next step is planning, writing or syncing. After each kill the parent reopens the store and checks:
//!
//! - `verify()` finds nothing wrong;
//! - every event still in the log is exactly the event that was at that position before the scavenge
//!   (positions never change), every event that must stay is there, and no event removed at an
//!   earlier check is back;
//! - every stream reads in `StreamView::Current` exactly as the model says (a scavenge changes no
//!   current read), and in `StreamView::History` as a run of the model's history containing the
//!   current view;
//! - the progress checkpoint is at or after the position of the last step the child reported.
//!
//! Then a last scavenge in-process finishes, reports that it resumed, and leaves exactly the model's
//! kept events; a removed event's id is forgotten (appending it again makes a new event).
//!
//! The power-loss case runs on the FUSE filesystem of `tests/power_loss.rs`
//! (`tests/common/volatile_fs.rs`): one `scavenge_chunk` returns, the power is cut without closing the
//! store, and the removal is still there after the cut; with `skip_fdatasync_for_tests(true)` the same
//! cut brings the removed events back, which shows the check can fail. It needs `/dev/fuse`, and root
//! or `fusermount3`.
//!
//! The crash test takes about 10 s in a debug build; `-- --nocapture` shows every round.
// The helpers below check and fail like the tests they serve.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

#[allow(dead_code, unreachable_pub)]
#[path = "common/child.rs"]
mod child;
#[path = "common/volatile_fs.rs"]
mod volatile_fs;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use annals::{
    scavenge, DeleteMode, Direction, EventStore, ExpectedVersion, NewEvent, Position, ReadLog, RecordedEvent,
    RetentionPolicy, RetentionRule, RetentionScope, ScavengeOptions, ScavengePhase, SledConfig, SledStore,
    StreamAppend, StreamId, StreamView, Version, SCAVENGE_CHECKPOINT,
};
use child::{read_lines, read_stderr, say};
use futures_util::TryStreamExt;
use volatile_fs::Disk;

const DIR_VAR: &str = "ANNALS_SCAVENGE_DIR";
/// Set for the power-loss child: `sync`, or `skip` for `skip_fdatasync_for_tests(true)`.
const POWER_VAR: &str = "ANNALS_SCAVENGE_POWER";
/// Streams, and rounds of one event per stream.
const STREAMS: u64 = 200;
const ROUNDS: u64 = 110;
/// Events one scavenge step looks at.
const STEP: usize = 400;
/// The newest events the retention rule keeps of each `count-` stream.
const KEEP: u64 = 20;
/// After how many steps of its run each child is killed, and how long after it reported that step
/// (a step takes a few milliseconds: planning, the batch, the `fdatasync`, the checkpoint).
const KILLS: [(u64, u64); 7] = [(1, 0), (3, 2), (8, 5), (2, 1), (5, 9), (4, 3), (6, 14)];

/// The name of stream `i`: its kind says what happens to it.
fn stream(i: u64) -> StreamId {
    let kind = ["hard", "soft", "cut", "count", "kept"][(i % 5) as usize];
    StreamId::new(format!("{kind}-{i}")).unwrap()
}

/// Where the truncated stream `i` is truncated.
fn cut_at(i: u64) -> u64 {
    2 + (i * 7) % (ROUNDS - 1)
}

/// What the model says about an event: whether reads in `StreamView::Current` show it.
fn current(event: &RecordedEvent) -> bool {
    let name = event.stream.as_str();
    let i: u64 = name.rsplit('-').next().unwrap().parse().unwrap();
    let version = event.version.get();
    match i % 5 {
        0 | 1 => false,
        2 => version >= cut_at(i),
        3 => version > ROUNDS - KEEP,
        _ => true,
    }
}

/// Writes the store and changes the streams' lives; returns the log as it was before any scavenge.
async fn build(dir: &Path) -> Vec<RecordedEvent> {
    let store = SledStore::open(dir).unwrap();
    for round in 0..ROUNDS {
        let appends = (0..STREAMS)
            .map(|i| {
                let pad = "p".repeat(((round * 31 + i * 17) % 90) as usize);
                let event = NewEvent::raw("Reading", format!(r#"{{"round":{round},"pad":"{pad}"}}"#))
                    .with_header("stream", i.to_string());
                StreamAppend::new(stream(i), ExpectedVersion::Any, vec![event])
            })
            .collect();
        store.append_multi(appends).await.unwrap();
    }
    for i in 0..STREAMS {
        match i % 5 {
            0 => store.delete_stream(&stream(i), ExpectedVersion::Any, DeleteMode::Hard).await.unwrap(),
            1 => store.delete_stream(&stream(i), ExpectedVersion::Any, DeleteMode::Soft).await.unwrap(),
            2 => store.truncate_stream(&stream(i), Version::new(cut_at(i))).await.unwrap(),
            _ => {}
        }
    }
    let rule = RetentionRule::new(RetentionScope::Prefix("count-".into()), RetentionPolicy::max_count(KEEP));
    store.set_retention(rule).await.unwrap();
    store.read_log(ReadLog::from_start()).try_collect().await.unwrap()
}

#[test]
fn a_scavenge_killed_anywhere_resumes_and_loses_nothing_it_must_keep() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let before = runtime.block_on(build(dir.path()));
    assert_eq!(before.len() as u64, STREAMS * ROUNDS);
    let kept: Vec<RecordedEvent> = before.iter().filter(|e| current(e)).cloned().collect();
    assert!(kept.len() * 2 < before.len(), "at least half of the events must go");
    let mut removed_seen = BTreeSet::new();
    let mut steps_seen = 0;
    for (round, &(kill_after, delay_ms)) in KILLS.iter().enumerate() {
        let (steps, last_position) = run_child(dir.path(), kill_after, Duration::from_millis(delay_ms));
        steps_seen += steps;
        let context = format!("round {round} (killed {delay_ms} ms after step {kill_after} of its run)");
        let removed = runtime.block_on(check(dir.path(), &before, &removed_seen, last_position, &context));
        eprintln!(
            "{context}: {} of {} events removed so far, the child reported up to position {last_position}",
            removed.len(),
            before.len() - kept.len()
        );
        removed_seen = removed;
    }
    assert!(steps_seen >= KILLS.iter().map(|k| k.0).sum::<u64>(), "the children made fewer steps than planned");
    assert!(!removed_seen.is_empty(), "the killed runs removed nothing: the test proved little");

    runtime.block_on(async {
        let store = SledStore::open(dir.path()).unwrap();
        let saved = store.load_checkpoint(SCAVENGE_CHECKPOINT).await.unwrap().expect("progress was saved");
        let report = scavenge(&store, ScavengeOptions::new().chunk_size(STEP), |_| {}).await.unwrap();
        assert_eq!(report.resumed_from, Some(saved.position), "{report:?}");
        assert!(report.finished, "{report:?}");
        let log: Vec<RecordedEvent> = store.read_log(ReadLog::from_start()).try_collect().await.unwrap();
        assert!(log == kept, "after the last run, the log is exactly the kept events");
        let verified = store.verify().unwrap();
        assert!(verified.is_ok(), "{:?}", verified.problems);
        assert_eq!(verified.scavenged as usize, before.len() - kept.len());
        assert_eq!(store.head().await.unwrap(), Position::new(STREAMS * ROUNDS));
        // A removed event's id is forgotten: appending it again stores a new event after the head.
        let gone = before.iter().find(|e| !current(e)).unwrap();
        let again = NewEvent::raw("Reading", "{}").with_id(gone.id);
        let appended = store.append(&stream(4), ExpectedVersion::Any, vec![again]).await.unwrap();
        assert!(!appended.already_appended && appended.first_position.get() == STREAMS * ROUNDS + 1);
    });
}

/// Checks the store after a kill (see the module's list); returns the positions removed so far.
async fn check(
    dir: &Path,
    before: &[RecordedEvent],
    removed_before: &BTreeSet<u64>,
    reported: u64,
    context: &str,
) -> BTreeSet<u64> {
    let store = SledStore::open(dir).unwrap_or_else(|e| panic!("{context}: the store does not reopen: {e}"));
    let verified = store.verify().unwrap();
    let first = &verified.problems[..verified.problems.len().min(5)];
    assert!(verified.is_ok(), "{context}: {} problems, the first: {first:?}", verified.problems.len());
    let log: Vec<RecordedEvent> = store.read_log(ReadLog::from_start()).try_collect().await.unwrap();
    let mut present = BTreeSet::new();
    for event in &log {
        let position = event.position.get();
        assert!(before[position as usize - 1] == *event, "{context}: the event at {position} changed");
        assert!(!removed_before.contains(&position), "{context}: the event at {position} came back");
        present.insert(position);
    }
    let removed: BTreeSet<u64> = (1..=before.len() as u64).filter(|p| !present.contains(p)).collect();
    for position in &removed {
        assert!(!current(&before[*position as usize - 1]), "{context}: a kept event at {position} is gone");
    }
    assert_eq!(verified.scavenged as usize, removed.len(), "{context}");
    // Stream reads: the current view never changes, the history view is between it and the model's.
    let mut history: BTreeMap<&str, Vec<&RecordedEvent>> = BTreeMap::new();
    for event in before {
        history.entry(event.stream.as_str()).or_default().push(event);
    }
    for (name, all) in &history {
        let id = StreamId::new(*name).unwrap();
        if name.starts_with("hard-") {
            let read =
                store.read_stream_chunk(&id, Version::FIRST, Direction::Forward, 1000, StreamView::Current).await;
            assert!(matches!(read, Err(annals::Error::StreamDeleted { .. })), "{context}: {name}");
            continue;
        }
        let wanted: Vec<&RecordedEvent> = all.iter().copied().filter(|e| current(e)).collect();
        let read = store.read_stream_chunk(&id, Version::FIRST, Direction::Forward, 1000, StreamView::Current).await;
        assert!(read.unwrap().iter().eq(wanted.iter().copied()), "{context}: the current view of {name}");
        let back = store.read_stream_chunk(&id, Version::MAX, Direction::Backward, 1000, StreamView::Current).await;
        assert!(back.unwrap().iter().eq(wanted.iter().rev().copied()), "{context}: {name} backward");
        let old = store.read_stream_chunk(&id, Version::FIRST, Direction::Forward, 1000, StreamView::History).await;
        let old = old.unwrap_or_else(|e| panic!("{context}: the history of {name}: {e}"));
        let expected: Vec<&RecordedEvent> =
            all.iter().copied().filter(|e| !removed.contains(&e.position.get())).collect();
        assert!(old.iter().eq(expected.iter().copied()), "{context}: the history view of {name}");
    }
    let saved = store.load_checkpoint(SCAVENGE_CHECKPOINT).await.unwrap();
    let saved = saved.map_or(0, |c| c.position.get());
    assert!(saved >= reported, "{context}: the checkpoint is at {saved}, the child reported {reported}");
    removed
}

/// Runs a child scavenge and kills it right after the `kill_after`-th step it reports; returns the
/// steps it reported and the position of the last.
fn run_child(dir: &Path, kill_after: u64, delay: Duration) -> (u64, u64) {
    run_child_with(dir, kill_after, delay, None)
}

fn run_child_with(dir: &Path, kill_after: u64, delay: Duration, power: Option<&str>) -> (u64, u64) {
    let mut command = child::child_command("scavenge_child");
    command.env(DIR_VAR, dir);
    if let Some(power) = power {
        command.env(POWER_VAR, power);
    }
    let mut child = command.spawn().unwrap();
    let stderr = read_stderr(&mut child);
    let (lines, reader) = read_lines(&mut child);
    let (mut steps, mut position) = (0, 0);
    loop {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(120)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child stopped reporting:\n{}", stderr.join().unwrap_or_default());
        };
        if let Some(step) = line.strip_prefix("STEP ") {
            steps += 1;
            position = step.parse().unwrap();
            if steps == kill_after {
                std::thread::sleep(delay);
                break;
            }
        } else if line == "DONE" {
            break;
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "a killed child cannot succeed");
    reader.join().unwrap();
    (steps, position)
}

/// The child: scavenges the store, one line per step, until it is killed. Runs only when the parent
/// sets `ANNALS_SCAVENGE_DIR`.
#[test]
#[ignore = "the child process of the scavenge crash test; fails unless ANNALS_SCAVENGE_DIR is set"]
fn scavenge_child() {
    let dir = child::child_dir(DIR_VAR);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        say("\nSTART\n");
        if let Ok(power) = std::env::var(POWER_VAR) {
            // One step, then wait for the kill and the power cut.
            let store = SledConfig::new(&dir).skip_fdatasync_for_tests(power == "skip").open().unwrap();
            let step = store.scavenge_chunk(Position::FIRST, 1000).await.unwrap();
            say(&format!("STEP {}\n", step.removed));
            std::thread::sleep(Duration::from_secs(600));
        }
        let store = SledStore::open(&dir).unwrap();
        scavenge(&store, ScavengeOptions::new().chunk_size(STEP), |progress| {
            if progress.phase == ScavengePhase::Log {
                say(&format!("STEP {}\n", progress.position.get()));
            }
        })
        .await
        .unwrap();
        say("DONE\n");
        // Wait for the kill: the parent checks every run the same way.
        std::thread::sleep(Duration::from_secs(600));
    });
}

/// One `scavenge_chunk` is durable when it returns: a power cut right after it (the child that ran it
/// killed, so nothing is closed or written after), keeps the removal. With `skip_fdatasync`, the cut
/// must bring removed events back.
#[test]
fn a_finished_scavenge_step_survives_a_power_cut() {
    assert_eq!(power_cut_after_a_step(false), 0, "a durable step lost removals");
    assert!(power_cut_after_a_step(true) > 0, "without fdatasync the cut lost nothing: the check cannot fail");
}

/// Builds a small store on a volatile disk and closes it cleanly; a child reopens it (with `skip` as
/// the test-only switch) and scavenges once; the parent kills it and cuts the power. Returns how many
/// removed events came back.
fn power_cut_after_a_step(skip: bool) -> usize {
    let root = tempfile::Builder::new().prefix("annals-power-").tempdir().unwrap();
    let mountpoint = root.path().join("disk");
    std::fs::create_dir(&mountpoint).unwrap();
    let store_dir = mountpoint.join("store");
    let disk = Disk::new();
    let mount = disk.mount(&mountpoint);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (gone, kept) = (StreamId::new("gone-1").unwrap(), StreamId::new("kept-1").unwrap());
    runtime.block_on(async {
        let store = SledStore::open(&store_dir).unwrap();
        for n in 0..50 {
            for s in [&gone, &kept] {
                store
                    .append(s, ExpectedVersion::Any, vec![NewEvent::raw("E", format!("{{\"n\":{n}}}"))])
                    .await
                    .unwrap();
            }
        }
        store.delete_stream(&gone, ExpectedVersion::Any, DeleteMode::Hard).await.unwrap();
    });
    let (_, removed) = run_child_with(&store_dir, 1, Duration::ZERO, Some(if skip { "skip" } else { "sync" }));
    assert_eq!(removed, 50, "the step removed the hard-deleted stream's events");
    let lost = disk.power_cut();
    eprintln!("skip_fdatasync {skip}: the cut dropped {lost}");
    mount.unmount();
    let mount = disk.mount(&mountpoint);
    let back = runtime.block_on(async {
        let store = SledStore::open(&store_dir).expect("the store reopens after the cut");
        let log: Vec<RecordedEvent> = store.read_log(ReadLog::from_start()).try_collect().await.unwrap();
        assert_eq!(log.iter().filter(|e| e.stream == kept).count(), 50, "kept events were lost");
        let verified = store.verify().unwrap();
        assert!(verified.is_ok(), "{:?}", verified.problems);
        log.iter().filter(|e| e.stream == gone).count()
    });
    mount.unmount();
    assert!(back as u64 <= removed);
    back
}
