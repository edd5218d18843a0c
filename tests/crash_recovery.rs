//! Crash recovery: what an acknowledged append survives when the process is killed with `kill -9`.
//!
//! A child process (this test binary re-run with `ANNALS_CRASH_DIR` set, see [`crash_child`]) appends
//! in a loop to a [`SledStore`] and prints one `ACK` line per acknowledged append. The parent kills it
//! with SIGKILL at random moments, several rounds in a row on the same directory, and after each kill
//! reopens the store and checks:
//!
//! - with [`Durability::Fsync`], every acknowledged event is present with the id, stream, version,
//!   position and payload it was acknowledged with, in this round and every later one;
//! - positions are gap-free from 1 to the head, and every stream's versions from 1 to its version;
//! - no append is partly visible: every event carries its append's id and size in headers, and each
//!   append (1 to 5 events, some over two streams with `append_multi`) is there whole or not at all;
//! - what one reopen showed is still there, in the same place, at every later reopen;
//! - a retry of the last append found in the log, sent by the next child, is answered
//!   `already_appended` with the original positions (ids are recognised after recovery).
//!
//! With [`Durability::Buffered`] (`flush_every_ms` = [`BUFFERED_FLUSH_MS`]) the same checks run,
//! except that recently acknowledged appends may be lost: only appends acknowledged within
//! [`BUFFERED_LOSS_BOUND`] of the kill, whole, and only from the end of the log (an acknowledged
//! event that is present must still be where it was acknowledged). Its rounds run longer than that
//! bound and its child appends every [`BUFFERED_PAUSE`], too slowly to fill one of sled's buffers in a
//! round, so that a store whose buffers were never written out periodically would fail it.
//!
//! Both tests together take about 5 s in a debug build on 2 cores. The seed of the random schedule is
//! printed; `ANNALS_CRASH_SEED=<seed>` replays it (the moments of the kills still vary with timing).
//! `cargo test --test crash_recovery -- --nocapture` shows every round.
// The helpers below check and fail like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)] // the seed and the child's output are reported on stderr

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use annals::{
    Durability, EventStore, ExpectedVersion, NewEvent, Position, ReadLog, RecordedEvent, SledConfig, SledStore,
    StreamAppend, StreamId,
};
use common::child::{child_command, env_number, read_stderr, read_timed_lines, say, seed_from, Rng};
use common::log_checks::{
    ack_line, check_acks, check_batches, check_streams, new_event, parse_ack, pick_expected, Ack, BATCH_HEADER,
};
use futures_util::TryStreamExt;
use uuid::Uuid;

const DIR_VAR: &str = "ANNALS_CRASH_DIR";
const ROUND_VAR: &str = "ANNALS_CRASH_ROUND";
const DURABILITY_VAR: &str = "ANNALS_CRASH_DURABILITY";
const SEED_VAR: &str = "ANNALS_CRASH_SEED";

const STREAMS: [&str; 4] = ["crash-0", "crash-1", "crash-2", "crash-3"];
/// The payloads' padding: below this many bytes.
const PAD_MAX: u64 = 1500;
const EVENT_TYPE: &str = "CrashTested";

/// How long a child may take to open the store before the test gives up on it.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// sled's flush interval in the buffered test.
const BUFFERED_FLUSH_MS: u64 = 100;
/// How long before the kill a buffered append lost to it may have been acknowledged: sled writes its
/// buffers out to the kernel (which a `kill -9` does not touch) every `flush_every_ms`; the rest is
/// slack for a loaded machine.
const BUFFERED_LOSS_BOUND: Duration = Duration::from_millis(BUFFERED_FLUSH_MS + 700);
/// The buffered child's pause between appends: slow enough that a round does not fill one of sled's
/// 512 KiB buffers, which sled writes out when full, so that only its periodic flush writes them.
const BUFFERED_PAUSE: Duration = Duration::from_millis(10);

#[test]
fn fsync_acknowledged_appends_survive_kill_9() {
    // Six kills while appending, and one shortly after start, possibly while sled recovers.
    let kills = [
        Kill::AfterReady,
        Kill::AfterReady,
        Kill::AfterReady,
        Kill::AfterSpawn,
        Kill::AfterReady,
        Kill::AfterReady,
        Kill::AfterReady,
    ];
    let appends = crash_rounds(Durability::Fsync, &kills);
    assert!(appends >= 6, "only {appends} appends were acknowledged: the test proved little");
}

#[test]
fn buffered_store_recovers_consistently_after_kill_9() {
    let kills = [Kill::AfterReady, Kill::AfterReady, Kill::AfterSpawn, Kill::AfterReady];
    let appends = crash_rounds(Durability::Buffered, &kills);
    assert!(appends >= 6, "only {appends} appends were acknowledged: the test proved little");
}

/// The child: appends until it is killed. Runs only when the parent sets `ANNALS_CRASH_DIR`.
#[test]
#[ignore = "the child process of the crash tests; fails unless ANNALS_CRASH_DIR is set (its parent sets it)"]
fn crash_child() {
    let dir = common::child::child_dir(DIR_VAR);
    let round: u64 = env_number(ROUND_VAR).unwrap_or(0);
    let seed: u64 = env_number(SEED_VAR).unwrap_or(1);
    let durability = match std::env::var(DURABILITY_VAR).as_deref() {
        Ok("buffered") => Durability::Buffered,
        _ => Durability::Fsync,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(append_until_killed(dir, round, durability, Rng::new(seed ^ round)));
}

/// How the child and the checks open the store.
fn config(dir: &Path, durability: Durability) -> SledConfig {
    let config = SledConfig::new(dir).durability(durability);
    match durability {
        Durability::Buffered => config.flush_every_ms(BUFFERED_FLUSH_MS),
        _ => config,
    }
}

// ---------------------------------------------------------------------------------------------------
// The child's side.

async fn append_until_killed(dir: PathBuf, round: u64, durability: Durability, mut rng: Rng) {
    // A leading newline: libtest may have printed "test crash_child ... " without one.
    say("\nSTART\n");
    let store = config(&dir, durability).open().expect("the child opens the store");
    retry_last_append(&store).await;
    let streams: Vec<StreamId> = STREAMS.iter().map(|s| StreamId::new(*s).unwrap()).collect();
    let mut versions = Vec::with_capacity(streams.len());
    for stream in &streams {
        versions.push(store.stream_version(stream).await.unwrap().map_or(0, |v| v.get()));
    }
    say("READY\n");
    for n in 0u64.. {
        let batch = format!("r{round}-b{n}");
        let parts = pick_parts(&mut rng);
        let size: usize = parts.iter().map(|(_, count)| count).sum();
        let mut appends = Vec::with_capacity(parts.len());
        let mut index = 0;
        for &(s, count) in &parts {
            let events: Vec<NewEvent> = (0..count)
                .map(|_| {
                    index += 1;
                    new_event(EVENT_TYPE, PAD_MAX, &batch, size, index - 1, STREAMS[s])
                })
                .collect();
            let expected = pick_expected(&mut rng, versions[s]);
            appends.push(StreamAppend::new(streams[s].clone(), expected, events));
        }
        let ids: Vec<Vec<Uuid>> = appends.iter().map(|a| a.events.iter().map(NewEvent::id).collect()).collect();
        let results = if appends.len() == 1 {
            let append = appends.pop().unwrap();
            vec![store.append(&append.stream, append.expected, append.events).await.unwrap()]
        } else {
            store.append_multi(appends).await.unwrap()
        };
        let mut text = String::new();
        for ((&(s, count), ids), result) in parts.iter().zip(&ids).zip(&results) {
            assert!(!result.already_appended, "fresh ids answered as a retry: {result:?}");
            assert_eq!(result.version.get(), versions[s] + count as u64, "versions of {} skipped", STREAMS[s]);
            assert_eq!(result.last_position.get() - result.first_position.get() + 1, count as u64);
            versions[s] = result.version.get();
            text.push_str(&ack_line(&batch, STREAMS[s], result, ids));
        }
        // One write per append, so that a kill never splits its lines.
        say(&text);
        if durability == Durability::Buffered {
            tokio::time::sleep(BUFFERED_PAUSE).await;
        }
    }
}

/// Sends the last append found in the log again, with the same ids; it must be recognised as a retry.
async fn retry_last_append(store: &SledStore) {
    let head = store.head().await.unwrap().get();
    let from = Position::new(head.saturating_sub(12).max(1));
    let tail: Vec<RecordedEvent> = store.read_log(ReadLog::from(from)).try_collect().await.unwrap();
    let Some(batch) = tail.last().and_then(|e| e.metadata.headers.get(BATCH_HEADER)) else { return };
    let events: Vec<&RecordedEvent> =
        tail.iter().filter(|e| e.metadata.headers.get(BATCH_HEADER) == Some(batch)).collect();
    let mut appends: Vec<StreamAppend> = Vec::new();
    for event in &events {
        let again = NewEvent::raw(event.event_type.clone(), event.payload.clone())
            .with_id(event.id)
            .with_metadata(event.metadata.clone());
        match appends.iter_mut().find(|a| a.stream == event.stream) {
            Some(append) => append.events.push(again),
            None => appends.push(StreamAppend::new(event.stream.clone(), ExpectedVersion::Any, vec![again])),
        }
    }
    let results = store.append_multi(appends).await.expect("a retry after recovery is answered");
    assert_eq!(results.len(), events.chunk_by(|a, b| a.stream == b.stream).count());
    for result in &results {
        assert!(result.already_appended, "retry of {batch} after recovery was not recognised: {result:?}");
    }
    let by_stream = results.iter().zip(events.chunk_by(|a, b| a.stream == b.stream));
    for (result, stored) in by_stream {
        let (first, last) = (stored[0], stored[stored.len() - 1]);
        assert_eq!(
            (result.first_position, result.last_position, result.version),
            (first.position, last.position, last.version),
            "retry of {batch} answered with other positions"
        );
    }
    say(&format!("RETRIED {batch}\n"));
}

fn pick_parts(rng: &mut Rng) -> Vec<(usize, usize)> {
    let first = rng.below(STREAMS.len() as u64) as usize;
    if rng.below(4) == 0 {
        let second = (first + 1 + rng.below(STREAMS.len() as u64 - 1) as usize) % STREAMS.len();
        let size = 2 + rng.below(4) as usize;
        let split = 1 + rng.below(size as u64 - 1) as usize;
        vec![(first, split), (second, size - split)]
    } else {
        vec![(first, 1 + rng.below(5) as usize)]
    }
}

// ---------------------------------------------------------------------------------------------------
// The parent's side.

/// When a round kills its child.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// 50 to 400 ms after the child opened the store and started appending (1 to 1.6 s under
    /// `Buffered`, longer than the loss bound).
    AfterReady,
    /// 0 to 60 ms after the child was started: before or while it opens (and recovers) the store.
    AfterSpawn,
}

/// Runs one child per round on one directory, kills it, and checks the store after each kill. Returns
/// how many appends were acknowledged in all rounds.
fn crash_rounds(durability: Durability, kills: &[Kill]) -> usize {
    let seed = seed_from(SEED_VAR);
    eprintln!("{durability:?} crash test: {SEED_VAR}={seed}");
    let dir = tempfile::Builder::new().prefix("annals-crash-").tempdir().unwrap();
    let mut rng = Rng::new(seed);
    let mut acks: Vec<Ack> = Vec::new();
    let (mut retries, mut retries_due) = (0, 0);
    let mut seen: Vec<Uuid> = Vec::new();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for (round, kill) in kills.iter().enumerate() {
        let started = Instant::now();
        let delay = match (kill, durability) {
            (Kill::AfterReady, Durability::Buffered) => Duration::from_millis(1_000 + rng.below(601)),
            (Kill::AfterReady, _) => Duration::from_millis(50 + rng.below(351)),
            (Kill::AfterSpawn, _) => Duration::from_millis(rng.below(61)),
        };
        // A child that gets to READY has retried the last append of a non-empty log.
        retries_due += usize::from(matches!(kill, Kill::AfterReady) && !seen.is_empty());
        let (lines, killed_at) = run_child(dir.path(), durability, round as u64, seed, *kill, delay);
        retries += lines.iter().filter(|(_, line)| line.starts_with("RETRIED ")).count();
        let new: Vec<Ack> = lines.iter().filter_map(|(at, line)| parse_ack(line, *at)).collect();
        let count = new.len();
        acks.extend(new);
        let context = format!("round {round} ({kill:?} + {delay:?}), seed {seed}");
        let lost;
        (seen, lost) = runtime.block_on(check_store(dir.path(), durability, &acks, &seen, &context));
        for ack in &lost {
            let age = killed_at.saturating_duration_since(ack.at);
            assert!(
                age <= BUFFERED_LOSS_BOUND,
                "{context}: append {} at position {} was acknowledged {age:?} before the kill and lost; only \
                 the last {BUFFERED_LOSS_BOUND:?} may be",
                ack.batch,
                ack.first
            );
        }
        // Lost for good: their positions go to later appends.
        let lost_batches: std::collections::HashSet<&str> = lost.iter().map(|a| a.batch.as_str()).collect();
        acks.retain(|a| !lost_batches.contains(a.batch.as_str()));
        eprintln!(
            "{durability:?} round {round}: killed {kill:?} + {delay:?}, {count} acks, {} lost, log at {} events, {:?}",
            lost.len(),
            seen.len(),
            started.elapsed()
        );
    }
    assert!(retries >= retries_due, "{retries} retries after recovery were checked, {retries_due} expected");
    acks.iter().map(|a| a.batch.as_str()).collect::<std::collections::HashSet<_>>().len()
}

/// Starts a child, kills it as `kill` says, and returns the complete lines it printed, each with when
/// it was read, and the moment of the kill.
fn run_child(
    dir: &Path,
    durability: Durability,
    round: u64,
    seed: u64,
    kill: Kill,
    delay: Duration,
) -> (Vec<(Instant, String)>, Instant) {
    let mut child = child_command("crash_child")
        .env(DIR_VAR, dir)
        .env(ROUND_VAR, round.to_string())
        .env(SEED_VAR, seed.to_string())
        .env(DURABILITY_VAR, if durability == Durability::Buffered { "buffered" } else { "fsync" })
        .spawn()
        .unwrap();
    let (lines, stdout) = read_timed_lines(&mut child);
    let stderr = read_stderr(&mut child);
    let mut early = Vec::new();
    if let Kill::AfterReady = kill {
        let waiting = Instant::now();
        loop {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok((_, line)) if line == "READY" => break,
                Ok(line) => early.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) if waiting.elapsed() < READY_TIMEOUT => {}
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("child of round {round} never became ready:\n{}", stderr.join().unwrap_or_default());
                }
            }
        }
    }
    std::thread::sleep(delay);
    if let Some(status) = child.try_wait().unwrap() {
        panic!("child of round {round} stopped by itself ({status}):\n{}", stderr.join().unwrap_or_default());
    }
    // Every acknowledgement the child got was printed before this moment.
    let killed_at = Instant::now();
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "a killed child cannot succeed");
    stdout.join().unwrap();
    early.extend(lines.try_iter());
    (early, killed_at)
}

/// Reopens the store after a kill and checks every property but the age of what was lost; returns the
/// ids of the log, in order, and the acknowledged appends that are gone.
async fn check_store(
    dir: &Path,
    durability: Durability,
    acks: &[Ack],
    seen: &[Uuid],
    context: &str,
) -> (Vec<Uuid>, Vec<Ack>) {
    let store = config(dir, durability).open().expect("the store reopens after kill -9");
    let head = store.head().await.unwrap();
    let log: Vec<RecordedEvent> = store.read_log(ReadLog::from_start()).try_collect().await.unwrap();

    assert_eq!(log.len() as u64, head.get(), "{context}: the log does not reach the head");
    for (index, event) in log.iter().enumerate() {
        assert_eq!(event.position.get(), index as u64 + 1, "{context}: gap in positions");
    }
    assert!(log.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at), "{context}: recorded_at goes back");
    assert!(seen.len() <= log.len(), "{context}: the log shrank from {} to {} events", seen.len(), log.len());
    for (event, id) in log.iter().zip(seen) {
        assert_eq!(event.id, *id, "{context}: event at {} changed since the last reopen", event.position);
    }

    check_streams(&store, &log, context).await;
    check_batches(&log, EVENT_TYPE, PAD_MAX, context);
    let lost = check_acks(&log, acks, durability != Durability::Fsync, context);
    (log.iter().map(|e| e.id).collect(), lost)
}
