//! Several processes on one PostgreSQL store: writers in different processes share one log that is
//! gap-free and in commit order, and a process's head watch wakes when another process appends.
//!
//! The test binary re-runs itself as the child processes (`std::env::current_exe()`, the role in
//! `ANNALS_PG_CHILD`, the database and schema in `ANNALS_PG_URL` and `ANNALS_PG_SCHEMA`), as
//! `tests/crash_recovery.rs` does.
//!
//! - [`writer_processes_share_one_gap_free_log_in_commit_order`]: three writer processes, each with
//!   eight tasks making 200 appends of 1 to 3 events, to streams of their own (with
//!   `ExpectedVersion::Exact` of the version they know: never a conflict) and to four streams
//!   shared by every process (half of them `Exact` of a version read just before, racing the
//!   others: conflicts expected, nothing written for them). Each child prints a line per
//!   acknowledged append: its task, when it was sent and answered, stream, positions, version, ids.
//!   Meanwhile a reader in the parent polls `read_log` from the last position it saw and must never
//!   see a gap. Then: positions 1 to the head are gap-free, each stream's versions consecutive,
//!   every acknowledged append there exactly once where it was acknowledged (and nothing else),
//!   `recorded_at` never decreasing, and within a process an append acknowledged before another
//!   was sent has the lower positions.
//! - [`another_process_head_watch_wakes_when_this_one_appends`]: a watcher process prints each
//!   head its `watch_head()` wakes with; the parent appends 50 times and waits, at most 10 s each,
//!   for the watcher to report that head. The latency distribution is printed, never asserted.
//!
//! `cargo test --features postgres --test postgres_processes -- --nocapture` shows the counts and
//! the latencies; `ANNALS_PG_PROCESSES_SEED=<seed>` replays the writers' choices.
#![cfg(feature = "postgres")]
#![allow(missing_docs)]
// The helpers below check and fail like the tests they serve; counts and latencies go to stderr.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

#[path = "common/acked.rs"]
mod acked;
#[path = "common/child.rs"]
#[allow(dead_code, unreachable_pub)]
mod child;
#[path = "common/postgres.rs"]
mod postgres_support;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use acked::{check_log, Acked};
use annals::{
    Error, EventStore, ExpectedVersion, NewEvent, Position, PostgresConfig, PostgresStore, ReadLog, StreamId,
};
use child::{env_number, read_lines, read_stderr, say, seed_from, Rng};
use futures_util::TryStreamExt;
use uuid::Uuid;

const ROLE_VAR: &str = "ANNALS_PG_CHILD";
const URL_VAR: &str = "ANNALS_PG_URL";
const SCHEMA_VAR: &str = "ANNALS_PG_SCHEMA";
const PROCESS_VAR: &str = "ANNALS_PG_PROCESS";
const SEED_VAR: &str = "ANNALS_PG_PROCESSES_SEED";

const PROCESSES: usize = 3;
const TASKS: usize = 8;
const APPENDS: usize = 200;
const SHARED_STREAMS: u64 = 4;
/// The longest a child may take to open its store and say it is ready.
const READY: Duration = Duration::from_secs(30);
/// The longest the writer processes may take in all (they take a few seconds).
const WRITERS: Duration = Duration::from_secs(180);
/// The longest the watcher may take to report a head (never a timing assertion: a generous bound).
const WAKE: Duration = Duration::from_secs(10);
const WAKES: usize = 50;

type TestResult = Result<(), Box<dyn std::error::Error>>;

// ---------------------------------------------------------------------------------------------------
// Children.

/// A child process: this test binary running `test`, with `role` and the store's place in its
/// environment, its stdin and stdout piped.
fn spawn_child(test: &str, role: &str, url: &str, schema: &str, process: usize, seed: u64) -> Child {
    child::child_command(test)
        .env(ROLE_VAR, role)
        .env(URL_VAR, url)
        .env(SCHEMA_VAR, schema)
        .env(PROCESS_VAR, process.to_string())
        .env(SEED_VAR, seed.to_string())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The store a child opens, from its environment. Panics when this process is not a child of
/// `role` (run by hand, with `--ignored`), rather than passing without doing anything.
fn child_config(role: &str) -> PostgresConfig {
    let given = std::env::var(ROLE_VAR).unwrap_or_default();
    assert_eq!(given, role, "{ROLE_VAR} is not {role}: this child test is run by its parent test");
    let url = std::env::var(URL_VAR).unwrap();
    PostgresConfig::new(url).schema(std::env::var(SCHEMA_VAR).unwrap()).pool_size(4)
}

/// Blocks until the parent writes a line (`GO`) or closes our stdin.
fn wait_for_parent() {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

/// Waits for the child's `READY` line; fails with its stderr if it does not come.
fn wait_ready(child: &mut Child, lines: &mpsc::Receiver<String>, stderr: &mut Option<std::thread::JoinHandle<String>>) {
    let deadline = Instant::now() + READY;
    loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line == "READY" => return,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = stderr.take().map(|s| s.join().unwrap_or_default()).unwrap_or_default();
                panic!("a child never became ready:\n{stderr}");
            }
        }
    }
}

fn nanos_since(start: Instant) -> u128 {
    start.elapsed().as_nanos()
}

fn wall_nanos() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

// ---------------------------------------------------------------------------------------------------
// Writers.

/// An acknowledged append as a writer child reported it.
#[derive(Debug)]
struct Report {
    process: usize,
    task: usize,
    /// Nanoseconds since the child started: when the append was sent, and answered.
    sent: u128,
    answered: u128,
    acked: Acked,
}

impl Report {
    fn line(process: usize, task: usize, sent: u128, answered: u128, acked: &Acked) -> String {
        format!("T {process} {task} {sent} {answered} {}", acked.line())
    }

    fn parse(line: &str) -> Option<Report> {
        let mut words = line.strip_prefix("T ")?.splitn(5, ' ');
        let process = words.next()?.parse().ok()?;
        let task = words.next()?.parse().ok()?;
        let sent = words.next()?.parse().ok()?;
        let answered = words.next()?.parse().ok()?;
        let acked = Acked::parse(words.next()?)?;
        Some(Report { process, task, sent, answered, acked })
    }
}

/// The writer child: opens the store, says `READY`, waits for `GO`, then runs [`TASKS`] tasks of
/// [`APPENDS`] appends each and says `DONE <conflicts>`.
#[test]
#[ignore = "a child process of the multi-process tests; fails unless ANNALS_PG_CHILD=writer"]
fn writer_child() {
    let config = child_config("writer");
    let process: usize = env_number(PROCESS_VAR).unwrap();
    let seed: u64 = env_number(SEED_VAR).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        // A leading newline: libtest may have printed "test writer_child ... " without one.
        say("\n");
        let store = config.open().await.expect("the writer opens the store");
        say("READY\n");
        // Blocks the runtime's only thread: nothing needs to run meanwhile.
        wait_for_parent();
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let rng = Rng::new(seed ^ (process * TASKS + task) as u64);
                tokio::spawn(write(store.clone(), process, task, rng, start))
            })
            .collect();
        let mut conflicts = 0;
        for task in tasks {
            conflicts += task.await.unwrap();
        }
        say(&format!("DONE {conflicts}\n"));
    });
}

/// One writer task: [`APPENDS`] appends; returns how many were refused as conflicts.
async fn write(store: PostgresStore, process: usize, task: usize, mut rng: Rng, start: Instant) -> usize {
    let own = StreamId::new(format!("p{process}-t{task}")).unwrap();
    let mut own_version = 0;
    let mut conflicts = 0;
    for n in 0..APPENDS {
        let count = 1 + rng.below(3) as usize;
        let events: Vec<NewEvent> = (0..count)
            .map(|i| {
                NewEvent::json("Written", &serde_json::json!({ "p": process, "t": task, "n": n, "i": i })).unwrap()
            })
            .collect();
        let ids: Vec<Uuid> = events.iter().map(NewEvent::id).collect();
        let (stream, expected, racing) = match rng.below(4) {
            0 | 1 => (own.clone(), ExpectedVersion::Exact(own_version.into()), false),
            2 => (shared(&mut rng), ExpectedVersion::Any, false),
            _ => {
                let stream = shared(&mut rng);
                let version = store.stream_version(&stream).await.unwrap();
                let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                (stream, expected, true)
            }
        };
        let sent = nanos_since(start);
        match store.append(&stream, expected, events).await {
            Ok(result) => {
                let answered = nanos_since(start);
                if stream == own {
                    own_version = result.version.get();
                }
                say(&Report::line(process, task, sent, answered, &Acked::new(&stream, ids, &result)));
            }
            Err(Error::WrongExpectedVersion { .. }) if racing => conflicts += 1,
            Err(error) => panic!("process {process}, task {task}: append {n} to {stream:?} failed: {error:?}"),
        }
    }
    conflicts
}

fn shared(rng: &mut Rng) -> StreamId {
    StreamId::new(format!("shared-{}", rng.below(SHARED_STREAMS))).unwrap()
}

/// Polls the log from the last position seen until `done` and the head is reached, checking that
/// every read continues exactly where the last one stopped. Returns how many polls it made.
async fn read_without_gaps(store: PostgresStore, done: Arc<AtomicBool>) -> Result<(u64, usize), String> {
    let mut next = 1;
    let mut polls = 0;
    loop {
        let finished = done.load(Ordering::SeqCst);
        let events: Vec<_> = store
            .read_log(ReadLog::from(Position::new(next)))
            .try_collect()
            .await
            .map_err(|e| format!("a read from {next} failed: {e:?}"))?;
        polls += 1;
        for event in events {
            if event.position.get() != next {
                return Err(format!("the reader expected position {next} and saw {}", event.position));
            }
            next += 1;
        }
        if finished && next > store.head().await.map_err(|e| e.to_string())?.get() {
            return Ok((next - 1, polls));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_processes_share_one_gap_free_log_in_commit_order() -> TestResult {
    let url = postgres_support::url()?;
    let schema = postgres_support::fresh_schema();
    let seed = seed_from(SEED_VAR);
    eprintln!("writer processes: {SEED_VAR}={seed}");
    let mut children: Vec<Child> =
        (0..PROCESSES).map(|p| spawn_child("writer_child", "writer", &url, &schema, p, seed)).collect();
    let mut outputs = Vec::new();
    for child in &mut children {
        let (lines, reader) = read_lines(child);
        let mut stderr = Some(read_stderr(child));
        wait_ready(child, &lines, &mut stderr);
        outputs.push((lines, reader, stderr));
    }
    // Every process opened the schema (at once, racing its creation); the parent reads it too.
    let store = PostgresConfig::new(url.clone()).schema(schema.clone()).pool_size(2).open().await?;
    let done = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_without_gaps(store.clone(), Arc::clone(&done)));
    let started = Instant::now();
    for child in &mut children {
        child.stdin.take().unwrap().write_all(b"GO\n")?;
    }

    let mut reports = Vec::new();
    let mut conflicts = 0usize;
    for (process, (child, (lines, reader, stderr))) in children.iter_mut().zip(outputs).enumerate() {
        let status = tokio::task::block_in_place(|| wait_with_deadline(child, started + WRITERS));
        reader.join().unwrap();
        let stderr = stderr.map(|s| s.join().unwrap_or_default()).unwrap_or_default();
        assert!(status, "writer process {process} failed:\n{stderr}");
        let lines: Vec<String> = lines.try_iter().collect();
        let done_line = lines.iter().find_map(|l| l.strip_prefix("DONE ")).expect("the writer finished");
        conflicts += done_line.parse::<usize>()?;
        reports.extend(lines.iter().filter_map(|l| Report::parse(l)));
    }
    let writing = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let (read_to, polls) = tokio::time::timeout(WRITERS, reader).await???;

    assert_eq!(reports.len() + conflicts, PROCESSES * TASKS * APPENDS, "every append was answered and reported");
    let acked: Vec<Acked> = reports.iter().map(|r| r.acked.clone()).collect();
    let log = check_log(&store, &acked, "after the writer processes").await;
    let acked_events: usize = acked.iter().map(|a| a.ids.len()).sum();
    assert_eq!(log.len(), acked_events, "the log holds the acknowledged appends and nothing else");
    assert_eq!(read_to, log.len() as u64, "the reader read the whole log");
    check_commit_order(&reports);
    eprintln!(
        "writer processes: {} appends acknowledged ({} events), {conflicts} conflicts, in {writing:?}; the reader \
         polled {polls} times without a gap",
        reports.len(),
        log.len()
    );
    Ok(())
}

/// Waits for `child` to exit until `deadline` (then kills it); whether it succeeded.
fn wait_with_deadline(child: &mut Child, deadline: Instant) -> bool {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Within each process, an append acknowledged before another was sent has the lower positions
/// (positions follow commit order); in particular each task's appends have increasing positions.
fn check_commit_order(reports: &[Report]) {
    let mut by_process: BTreeMap<usize, Vec<&Report>> = BTreeMap::new();
    for report in reports {
        by_process.entry(report.process).or_default().push(report);
    }
    for (process, mut reports) in by_process {
        for task in 0..TASKS {
            let firsts: Vec<u64> = reports.iter().filter(|r| r.task == task).map(|r| r.acked.first).collect();
            assert!(firsts.windows(2).all(|w| w[0] < w[1]), "process {process}, task {task}: positions {firsts:?}");
        }
        // By when they were answered; then for each append, every one answered before it was sent.
        reports.sort_by_key(|r| r.answered);
        let mut highest_before = Vec::with_capacity(reports.len());
        let mut highest = 0;
        for report in &reports {
            highest = highest.max(report.acked.last);
            highest_before.push((report.answered, highest));
        }
        for report in &reports {
            let answered_before = highest_before.partition_point(|(answered, _)| *answered < report.sent);
            if answered_before > 0 {
                let (_, highest) = highest_before[answered_before - 1];
                assert!(
                    highest < report.acked.first,
                    "process {process}: an append sent after another was acknowledged at position {highest} got \
                     position {}",
                    report.acked.first
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The live signal across processes.

/// The watcher child: opens the store, says `READY`, then prints `SAW <head> <wall-clock ns>` each
/// time its head watch wakes, until its stdin closes.
#[test]
#[ignore = "a child process of the multi-process tests; fails unless ANNALS_PG_CHILD=watcher"]
fn watcher_child() {
    let config = child_config("watcher");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        say("\n");
        let store = config.open().await.expect("the watcher opens the store");
        let mut watch = store.watch_head();
        let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            wait_for_parent();
            let _ = closed_tx.send(());
        });
        say("READY\n");
        loop {
            tokio::select! {
                head = watch.changed() => say(&format!("SAW {} {}\n", head.unwrap(), wall_nanos())),
                _ = &mut closed => break,
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_head_watch_wakes_when_this_one_appends() -> TestResult {
    let url = postgres_support::url()?;
    let schema = postgres_support::fresh_schema();
    let store = PostgresConfig::new(url.clone()).schema(schema.clone()).pool_size(2).open().await?;
    let mut watcher = spawn_child("watcher_child", "watcher", &url, &schema, 0, 0);
    let (lines, reader) = read_lines(&mut watcher);
    let mut stderr = Some(read_stderr(&mut watcher));
    tokio::task::block_in_place(|| wait_ready(&mut watcher, &lines, &mut stderr));

    let stream = StreamId::new("signal")?;
    let mut rng = Rng::new(seed_from(SEED_VAR));
    // Nanoseconds from the append's start, and from its acknowledgement, to the watcher's wake.
    let (mut from_start, mut from_ack) = (Vec::new(), Vec::new());
    for n in 0..WAKES {
        let start = wall_nanos();
        let result = store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("Signalled", "{}")]).await?;
        let acked = wall_nanos();
        let wanted = result.last_position.get();
        let deadline = Instant::now() + WAKE;
        let saw = tokio::task::block_in_place(|| loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    let mut words = line.strip_prefix("SAW ").unwrap_or_default().split(' ');
                    let head: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                    if head >= wanted {
                        break words.next().and_then(|w| w.parse::<i128>().ok());
                    }
                }
                Err(_) => break None,
            }
        });
        let Some(saw) = saw else {
            let _ = watcher.kill();
            panic!("the watcher process did not wake for append {n} (position {wanted}) within {WAKE:?}");
        };
        from_start.push(saw - start);
        from_ack.push(saw - acked);
        tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
    }
    drop(watcher.stdin.take());
    assert!(tokio::task::block_in_place(|| wait_with_deadline(&mut watcher, Instant::now() + READY)));
    reader.join().unwrap();
    eprintln!("cross-process wake-up, from the append's start: {}", distribution(&mut from_start));
    eprintln!("cross-process wake-up, from its acknowledgement: {}", distribution(&mut from_ack));
    Ok(())
}

/// Min, median, 90th and 99th percentile and max of nanosecond samples, in milliseconds.
fn distribution(samples: &mut [i128]) -> String {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] as f64 / 1e6;
    format!(
        "n={} min {:.2} ms, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        at(0.0),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    )
}
