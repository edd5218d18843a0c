//! Power loss: what an acknowledged append survives when the machine stops, not just the process.
//!
//! `kill -9` leaves the kernel's page cache alone, so `tests/crash_recovery.rs` cannot tell an
//! `fdatasync` from none at all. Here the store lives on a FUSE filesystem of the test's own
//! ([`volatile_fs`]) that keeps what was synced apart from what was only written, and forgets the
//! latter when the test cuts its power.
//!
//! Each round, a child process (this test binary re-run with `ANNALS_POWER_DIR` set, see
//! [`power_child`]) opens the store on the mount and appends from several concurrent tasks, single
//! appends and small batches (some over two streams), printing one `ACK` line per acknowledged append
//! as soon as `append` returns. At a random moment the parent kills it with SIGKILL, cuts the power
//! (every write, truncation, create, rename and unlink not synced is dropped), mounts what was durable
//! afresh, reopens the store in-process and checks:
//!
//! - positions run from 1 to the head without a gap, every stream's versions from 1 without a gap, and
//!   every append is whole (each event carries its append's id and size) or absent;
//! - what an earlier round's check saw is still there, in the same place;
//! - every acknowledged append is there with its positions, versions and ids, or, where the mode allows
//!   a loss, gone together with everything after it: what survives is a prefix of the log;
//! - the store takes a new append right after the head.
//!
//! With [`Durability::Fsync`], nothing acknowledged may be lost. With [`Durability::Buffered`]
//! (`flush_every_ms` = [`BUFFERED_FLUSH_MS`]), only appends acknowledged within [`BUFFERED_LOSS_BOUND`]
//! of the cut. With `skip_fdatasync_for_tests(true)` the same check must find lost acknowledged
//! appends, which shows that it can fail.
//!
//! The filesystem follows the POSIX rule: a new name is durable only once its directory is synced.
//! The store syncs its directory and the parents of the directories it created when it opens; before
//! the first round the test only creates the store ([`create_store`]), so the first cut also checks
//! that the store's files are still found after a power cut.
//!
//! A fifth test closes a `Buffered` store cleanly, in-process, and then cuts the power: nothing is
//! lost. A fourth test has its child save two checkpoints in one `save_checkpoints` call, over and over:
//! after each cut, both must be at the last save the child was answered (or later), and equal.
//!
//! `ANNALS_POWER_ROUNDS` sets the rounds per test (default [`DEFAULT_ROUNDS`]), `ANNALS_POWER_SEED` the
//! seed of the cut moments and event shapes (fixed by default; printed). The four tests take about
//! 13 s together in a debug build on 2 cores; `cargo test --test power_loss -- --nocapture` shows every
//! round and what each cut dropped. They need `/dev/fuse`, and root or `fusermount3` (Debian package
//! `fuse3`); without them they fail and say what is missing.
// The helpers below check and fail like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)] // rounds are reported on stderr

mod common;
#[path = "common/volatile_fs.rs"]
mod volatile_fs;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use annals::{
    Checkpoint, CheckpointWrite, Durability, EventStore, ExpectedVersion, NewEvent, Position, ReadLog, RecordedEvent,
    SledConfig, SledStore, StreamAppend, StreamId,
};
use common::child::{child_command, env_number, read_stderr, read_timed_lines, say, Rng};
use common::log_checks::{
    ack_line, check_acks, check_batches, check_streams, new_event, parse_ack, pick_expected, Ack,
};
use futures_util::TryStreamExt;
use uuid::Uuid;
use volatile_fs::Disk;

const DIR_VAR: &str = "ANNALS_POWER_DIR";
const ROUND_VAR: &str = "ANNALS_POWER_ROUND";
const MODE_VAR: &str = "ANNALS_POWER_MODE";
const SEED_VAR: &str = "ANNALS_POWER_SEED";
const ROUNDS_VAR: &str = "ANNALS_POWER_ROUNDS";

/// Rounds per test unless `ANNALS_POWER_ROUNDS` says otherwise.
const DEFAULT_ROUNDS: usize = 5;
const DEFAULT_SEED: u64 = 0x90e4_10c5;
/// Concurrent appending tasks in the child; each owns two streams.
const TASKS: usize = 4;
/// How long each task waits between its appends.
const APPEND_PAUSE: Duration = Duration::from_millis(2);
/// sled's flush interval in the buffered test: short, so that rounds outlast the loss window.
const BUFFERED_FLUSH_MS: u64 = 100;
/// How long before the cut a buffered append lost to it may have been acknowledged. sled's flush
/// thread writes its buffer out every `flush_every_ms` without waiting for the write, then syncs:
/// an append is on disk at most about two intervals after it was acknowledged. The rest is slack for
/// a loaded machine.
const BUFFERED_LOSS_BOUND: Duration = Duration::from_millis(2 * BUFFERED_FLUSH_MS + 500);

/// The payloads' padding: below this many bytes.
const PAD_MAX: u64 = 1000;
const EVENT_TYPE: &str = "PowerTested";
/// How long a child may take to open the store before the test gives up on it.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn fsync_acknowledged_appends_survive_power_loss() {
    let rounds = power_rounds(Mode::Fsync);
    let lost: usize = rounds.iter().map(|r| r.lost_events).sum();
    assert_eq!(lost, 0, "checked in every round");
    let acked: usize = rounds.iter().map(|r| r.acked_events).sum();
    assert!(
        acked >= 50 * rounds.len(),
        "only {acked} events acknowledged in {} rounds: the test proved little",
        rounds.len()
    );
}

#[test]
fn buffered_power_loss_loses_only_the_last_appends() {
    let rounds = power_rounds(Mode::Buffered);
    let acked: usize = rounds.iter().map(|r| r.acked_events).sum();
    assert!(
        acked >= 50 * rounds.len(),
        "only {acked} events acknowledged in {} rounds: the test proved little",
        rounds.len()
    );
}

/// The Fsync check is not vacuous: without the store's `fdatasync`, the same rounds lose acknowledged
/// appends (sled's own `sync_file_range` makes nothing durable; only its flush thread's periodic
/// `fsync` does).
#[test]
fn without_fdatasync_power_loss_loses_acknowledged_appends() {
    let rounds = power_rounds(Mode::SkipFdatasync);
    let losing = rounds.iter().filter(|r| r.lost_events > 0).count();
    let lost: usize = rounds.iter().map(|r| r.lost_events).sum();
    eprintln!("without fdatasync: {losing} of {} rounds lost {lost} acknowledged events", rounds.len());
    assert!(
        losing * 2 > rounds.len(),
        "without fdatasync, only {losing} of {} rounds lost acknowledged appends: the check would miss a missing sync",
        rounds.len()
    );
}

/// `save_checkpoints` returns, under `Fsync`, once its writes are on disk: every save the child was
/// answered survives the cut, both checkpoints of one call together.
#[test]
fn fsync_saved_checkpoints_survive_power_loss() {
    let seed = env_number(SEED_VAR).unwrap_or(DEFAULT_SEED);
    let rounds = env_number(ROUNDS_VAR).unwrap_or(DEFAULT_ROUNDS);
    let root = tempfile::Builder::new().prefix("annals-power-").tempdir().unwrap();
    let mountpoint = root.path().join("disk");
    std::fs::create_dir(&mountpoint).unwrap();
    let store_dir = mountpoint.join("store");
    let disk = Disk::new();
    let mut mount = disk.mount(&mountpoint);
    let mode = Mode::Checkpoints;
    create_store(&store_dir, mode);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut rng = Rng::new(seed ^ mode.name().len() as u64);
    let mut saves = 0;
    for round in 0..rounds {
        let delay = mode.pick_delay(&mut rng);
        let (lines, _) = run_child(&store_dir, mode, round as u64, seed, delay);
        let lost_at_cut = disk.power_cut();
        mount.unmount();
        mount = disk.mount(&mountpoint);
        let acked: Vec<u64> = lines.iter().filter_map(|(_, line)| line.strip_prefix("CKPT ")?.parse().ok()).collect();
        saves += acked.len();
        let context = format!("checkpoints round {round} (cut {delay:?} after READY), seed {seed}");
        let store = SledConfig::new(&store_dir).open().expect("the store reopens after a power cut");
        let saved: Vec<Option<u64>> = runtime.block_on(async {
            let mut saved = Vec::new();
            for name in CHECKPOINTS {
                saved.push(store.load_checkpoint(name).await.unwrap().map(|c| c.position.get()));
            }
            saved
        });
        drop(store);
        assert_eq!(saved[0], saved[1], "{context}: the two checkpoints of one save differ");
        if let Some(last) = acked.last() {
            assert!(
                saved[0] >= Some(*last),
                "{context}: the last save answered was at {last}, the store has {:?}",
                saved[0]
            );
        }
        eprintln!(
            "checkpoints round {round}: cut {delay:?} after READY, {} saves answered, the last at {:?}, saved {:?}; \
             the cut dropped {lost_at_cut}",
            acked.len(),
            acked.last(),
            saved[0]
        );
    }
    mount.unmount();
    assert!(saves >= 20 * rounds, "only {saves} saves were answered in {rounds} rounds: the test proved little");
}

/// Closing the store (dropping its last handle) writes everything out and syncs it, under
/// `Buffered` too: a power cut right after a clean close loses nothing, though sled's own flush
/// thread (set to an hour here) never synced. Some events are large enough for sled to keep them in
/// blob files of their own, which sled never syncs (it syncs its data file when it closes).
#[test]
fn a_clean_close_makes_buffered_appends_durable() {
    let root = tempfile::Builder::new().prefix("annals-power-").tempdir().unwrap();
    let mountpoint = root.path().join("disk");
    std::fs::create_dir(&mountpoint).unwrap();
    let store_dir = mountpoint.join("store");
    let disk = Disk::new();
    let mount = disk.mount(&mountpoint);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let config = || {
        SledConfig::new(&store_dir)
            .durability(Durability::Buffered)
            .flush_every_ms(3_600_000)
            .max_event_size(512 * 1024)
    };
    let stream = StreamId::new("closed-1").unwrap();
    let big = |n: u64| NewEvent::raw("Big", format!(r#"{{"n":{n},"pad":"{}"}}"#, "b".repeat(300 * 1024)));
    let acked = runtime.block_on(async {
        let store = config().open().unwrap();
        let mut last = 0;
        for n in 0..200 {
            let event = if n % 50 == 0 {
                big(n)
            } else {
                new_event(EVENT_TYPE, PAD_MAX, &format!("closed-b{n}"), 1, 0, stream.as_str())
            };
            last = store.append(&stream, ExpectedVersion::Any, vec![event]).await.unwrap().last_position.get();
        }
        last
    });
    let lost = disk.power_cut();
    eprintln!("after a clean close, the cut dropped {lost}");
    mount.unmount();
    let mount = disk.mount(&mountpoint);
    let log: Vec<RecordedEvent> = runtime.block_on(async {
        let store = config().open().expect("the store reopens after the cut");
        store.read_log(ReadLog::from_start()).try_collect().await.expect("the whole log reads back")
    });
    assert_eq!(log.len() as u64, acked, "a power cut after a clean close lost appends");
    assert_eq!(log.iter().filter(|e| e.event_type == "Big").count(), 4, "the large events are back");
    mount.unmount();
}

/// Under `Buffered`, events large enough for sled to write its pages to blob files (here events of
/// 20 KiB) must be durable before the data file that points at them: the store's flush thread syncs
/// the blob files, then the data file, and sled's own flush thread (which synced only the data file)
/// is off. With sled's flush thread back on, a power cut leaves a store that does not open
/// (`Error::Corrupt`, sled panicking on a missing blob) instead of a prefix of its log.
#[test]
fn buffered_power_loss_with_blob_files_keeps_a_prefix_of_the_log() {
    let root = tempfile::Builder::new().prefix("annals-power-").tempdir().unwrap();
    let mountpoint = root.path().join("disk");
    std::fs::create_dir(&mountpoint).unwrap();
    let store_dir = mountpoint.join("store");
    let disk = Disk::new();
    let mut mount = disk.mount(&mountpoint);
    let mode = Mode::BufferedBlobs;
    create_store(&store_dir, mode);
    // Long enough for several of sled's flushes after the first blobs.
    let (_, _) = run_child(&store_dir, mode, 0, DEFAULT_SEED, BUFFERED_LOSS_BOUND * 2);
    let lost = disk.power_cut();
    eprintln!("the cut dropped {lost}");
    mount.unmount();
    mount = disk.mount(&mountpoint);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let reopened = runtime.block_on(async {
        let store = mode.writer_config(&store_dir).open()?;
        store.read_log(ReadLog::from_start()).try_collect::<Vec<RecordedEvent>>().await
    });
    mount.unmount();
    let log = reopened.expect("the store reopens after a power cut");
    assert!(log.iter().enumerate().all(|(i, e)| e.position.get() == i as u64 + 1), "a prefix of the log");
}

/// The child: appends until it is killed. Runs only when the parent sets `ANNALS_POWER_DIR`.
#[test]
#[ignore = "the child process of the power-loss tests; fails unless ANNALS_POWER_DIR is set (its parent sets it)"]
fn power_child() {
    let dir = common::child::child_dir(DIR_VAR);
    let round: u64 = env_number(ROUND_VAR).unwrap_or(0);
    let seed: u64 = env_number(SEED_VAR).unwrap_or(DEFAULT_SEED);
    let mode = std::env::var(MODE_VAR).ok().and_then(|m| Mode::parse(&m)).expect("a mode");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(append_until_killed(dir, mode, round, seed));
}

/// How the child's store is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Fsync,
    Buffered,
    /// `Durability::Fsync` with the store's own `fdatasync` calls skipped.
    SkipFdatasync,
    /// `Durability::Fsync`; the child saves checkpoints instead of appending.
    Checkpoints,
    /// As `Buffered`, the child appending events of 20 KiB, which sled keeps in blob files.
    BufferedBlobs,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Fsync => "fsync",
            Mode::Buffered => "buffered",
            Mode::SkipFdatasync => "skip-fdatasync",
            Mode::Checkpoints => "checkpoints",
            Mode::BufferedBlobs => "buffered-blobs",
        }
    }

    fn parse(name: &str) -> Option<Mode> {
        [Mode::Fsync, Mode::Buffered, Mode::SkipFdatasync, Mode::Checkpoints, Mode::BufferedBlobs]
            .into_iter()
            .find(|m| m.name() == name)
    }

    fn durability(self) -> Durability {
        match self {
            Mode::Buffered | Mode::BufferedBlobs => Durability::Buffered,
            Mode::Fsync | Mode::SkipFdatasync | Mode::Checkpoints => Durability::Fsync,
        }
    }

    /// The writer's configuration (the parent's checks open the store plainly, in the same durability).
    fn writer_config(self, dir: &Path) -> SledConfig {
        let config = SledConfig::new(dir).durability(self.durability());
        match self {
            Mode::Fsync | Mode::Checkpoints => config,
            Mode::Buffered | Mode::BufferedBlobs => config.flush_every_ms(BUFFERED_FLUSH_MS),
            Mode::SkipFdatasync => config.skip_fdatasync_for_tests(true),
        }
    }

    /// How long after READY the power is cut.
    fn pick_delay(self, rng: &mut Rng) -> Duration {
        match self {
            // Longer than the loss bound, so that a store that never synced would be caught.
            Mode::Buffered | Mode::BufferedBlobs => Duration::from_millis(900 + rng.below(700)),
            // Sometimes less than one of sled's 500 ms flush intervals, sometimes more.
            Mode::Fsync | Mode::SkipFdatasync | Mode::Checkpoints => Duration::from_millis(150 + rng.below(800)),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The child's side.

async fn append_until_killed(dir: PathBuf, mode: Mode, round: u64, seed: u64) {
    // A leading newline: libtest may have printed "test power_child ... " without one.
    say("\nSTART\n");
    let store = mode.writer_config(&dir).open().expect("the child opens the store");
    if mode == Mode::Checkpoints {
        say("READY\n");
        save_checkpoints_until_killed(&store, round).await;
        return;
    }
    if mode == Mode::BufferedBlobs {
        say("READY\n");
        let stream = task_stream(0, 0);
        for n in 0u64.. {
            let event = NewEvent::raw("Big", format!(r#"{{"n":{n},"pad":"{}"}}"#, "b".repeat(20 * 1024)));
            store.append(&stream, ExpectedVersion::Any, vec![event]).await.unwrap();
            tokio::time::sleep(APPEND_PAUSE).await;
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let streams = [task_stream(task, 0), task_stream(task, 1)];
        let mut versions = [0; 2];
        for (version, stream) in versions.iter_mut().zip(&streams) {
            *version = store.stream_version(stream).await.unwrap().map_or(0, |v| v.get());
        }
        let rng = Rng::new(seed ^ (round << 8) ^ task as u64);
        tasks.spawn(append_in_task(store.clone(), format!("r{round}-t{task}"), streams, versions, rng));
    }
    say("READY\n");
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// The two checkpoints the checkpoint child saves together.
const CHECKPOINTS: [&str; 2] = ["power/a", "power/b"];

/// Saves both [`CHECKPOINTS`] in one call, at positions counting up from where the last round left
/// them, and prints `CKPT <position>` once each save returns.
async fn save_checkpoints_until_killed(store: &SledStore, round: u64) {
    let start = store.load_checkpoint(CHECKPOINTS[0]).await.unwrap().map_or(0, |c| c.position.get());
    for position in start + 1.. {
        let state = format!(r#"{{"round":{round}}}"#);
        let writes = CHECKPOINTS
            .iter()
            .map(|name| CheckpointWrite::Save(Checkpoint::new(*name, Position::new(position)).with_state(&state)))
            .collect();
        store.save_checkpoints(writes).await.unwrap();
        say(&format!("CKPT {position}\n"));
        tokio::time::sleep(APPEND_PAUSE).await;
    }
}

fn task_stream(task: usize, index: usize) -> StreamId {
    StreamId::new(format!("power-{task}-{index}")).unwrap()
}

/// Appends one append after another to the task's own two streams, so that it knows their versions.
async fn append_in_task(
    store: SledStore,
    prefix: String,
    streams: [StreamId; 2],
    mut versions: [u64; 2],
    mut rng: Rng,
) {
    for n in 0u64.. {
        let batch = format!("{prefix}-b{n}");
        let parts = pick_parts(&mut rng);
        let size: usize = parts.iter().map(|(_, count)| count).sum();
        let mut appends = Vec::with_capacity(parts.len());
        let mut index = 0;
        for &(s, count) in &parts {
            let events: Vec<NewEvent> = (0..count)
                .map(|_| {
                    index += 1;
                    new_event(EVENT_TYPE, PAD_MAX, &batch, size, index - 1, streams[s].as_str())
                })
                .collect();
            appends.push(StreamAppend::new(streams[s].clone(), pick_expected(&mut rng, versions[s]), events));
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
            assert_eq!(result.version.get(), versions[s] + count as u64, "versions of {} skipped", streams[s]);
            versions[s] = result.version.get();
            text.push_str(&ack_line(&batch, streams[s].as_str(), result, ids));
        }
        // One write per append, so that a kill never splits its lines.
        say(&text);
        // A breath between appends keeps the log, and so each round's check, small.
        tokio::time::sleep(APPEND_PAUSE).await;
    }
}

/// One stream with 1 to 4 events, or (one time in four) both streams with 2 to 5 events in all.
fn pick_parts(rng: &mut Rng) -> Vec<(usize, usize)> {
    let first = rng.below(2) as usize;
    if rng.below(4) == 0 {
        let size = 2 + rng.below(4) as usize;
        let split = 1 + rng.below(size as u64 - 1) as usize;
        vec![(first, split), (1 - first, size - split)]
    } else {
        vec![(first, 1 + rng.below(4) as usize)]
    }
}

// ---------------------------------------------------------------------------------------------------
// The parent's side.

/// What one round did.
#[derive(Debug)]
struct Round {
    acked_events: usize,
    lost_events: usize,
}

/// Runs the rounds of one test on one disk and returns what each did; panics when a check fails.
fn power_rounds(mode: Mode) -> Vec<Round> {
    let seed = env_number(SEED_VAR).unwrap_or(DEFAULT_SEED);
    let rounds = env_number(ROUNDS_VAR).unwrap_or(DEFAULT_ROUNDS);
    eprintln!("{} power-loss test: {SEED_VAR}={seed} {ROUNDS_VAR}={rounds}", mode.name());
    let root = tempfile::Builder::new().prefix("annals-power-").tempdir().unwrap();
    let mountpoint = root.path().join("disk");
    std::fs::create_dir(&mountpoint).unwrap();
    let store_dir = mountpoint.join("store");
    let disk = Disk::new();
    let mut mount = disk.mount(&mountpoint);
    create_store(&store_dir, mode);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut rng = Rng::new(seed ^ mode.name().len() as u64);
    let (mut acks, mut seen) = (Vec::new(), Vec::new());
    let mut report = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let started = Instant::now();
        let delay = mode.pick_delay(&mut rng);
        let (lines, cut_at) = run_child(&store_dir, mode, round as u64, seed, delay);
        let lost_at_cut = disk.power_cut();
        mount.unmount();
        mount = disk.mount(&mountpoint);

        let new: Vec<Ack> = lines.iter().filter_map(|(at, line)| parse_ack(line, *at)).collect();
        let acked_events = new.iter().map(|a| a.ids.len()).sum();
        acks.extend(new);
        let context = format!("{} round {round} (cut {delay:?} after READY), seed {seed}", mode.name());
        if mode == Mode::SkipFdatasync {
            // Without the data's fdatasync, the store itself may find the loss when it reopens: its
            // head file (always synced) names a position the log no longer reaches.
            let reopened = mode.writer_config(&store_dir).open();
            if let Err(annals::Error::LogTruncated { acknowledged, found, .. }) = &reopened {
                eprintln!(
                    "{context}: the store refused to reopen: acknowledged {acknowledged}, the log ends at {found}"
                );
                report.push(Round { acked_events, lost_events: acked_events.max(1) });
                std::fs::remove_dir_all(&store_dir).unwrap();
                create_store(&store_dir, mode);
                (acks, seen) = (Vec::new(), Vec::new());
                continue;
            }
            drop(reopened);
        }
        let checked = runtime.block_on(check_store(&store_dir, mode.durability(), &acks, &seen, round, &context));
        let lost_events = checked.lost.iter().map(|a| a.ids.len()).sum();
        check_losses(mode, &checked.lost, cut_at, &context);
        let lost: HashSet<&str> = checked.lost.iter().map(|a| a.batch.as_str()).collect();
        acks.retain(|a| !lost.contains(a.batch.as_str()));
        acks.push(checked.appended);
        seen = checked.log;
        let oldest_lost = checked.lost.iter().map(|a| cut_at.saturating_duration_since(a.at)).max();
        eprintln!(
            "{} round {round}: cut {delay:?} after READY, {acked_events} events acked, {lost_events} lost \
             (the oldest acknowledged {oldest_lost:?} before the cut), log at {} events, {:?}; the cut dropped {lost_at_cut}",
            mode.name(),
            seen.len(),
            started.elapsed()
        );
        report.push(Round { acked_events, lost_events });
    }
    let stats = disk.stats();
    eprintln!("{} power-loss test: {stats:?}", mode.name());
    mount.unmount();
    report
}

/// Creates the store (the store makes its directory entries durable itself).
fn create_store(dir: &Path, mode: Mode) {
    drop(mode.writer_config(dir).open().expect("the store is created on the mount"));
}

/// Losses the mode allows: none with `Fsync`; with `Buffered`, appends acknowledged shortly before
/// the cut; without `fdatasync`, anything (that is what the test shows).
fn check_losses(mode: Mode, lost: &[Ack], cut_at: Instant, context: &str) {
    match mode {
        Mode::Fsync => {
            if let Some(first) = lost.iter().min_by_key(|a| a.first) {
                let events: usize = lost.iter().map(|a| a.ids.len()).sum();
                panic!(
                    "{context}: {} acknowledged appends ({events} events) were lost to the power cut, the first \
                     at position {} (append {}, acknowledged {:?} before the cut)",
                    lost.len(),
                    first.first,
                    first.batch,
                    cut_at.saturating_duration_since(first.at)
                );
            }
        }
        Mode::Buffered | Mode::BufferedBlobs => {
            for ack in lost {
                let age = cut_at.saturating_duration_since(ack.at);
                assert!(
                    age <= BUFFERED_LOSS_BOUND,
                    "{context}: append {} at position {} was acknowledged {age:?} before the cut and lost; \
                     only the last {BUFFERED_LOSS_BOUND:?} may be",
                    ack.batch,
                    ack.first
                );
            }
        }
        Mode::SkipFdatasync | Mode::Checkpoints => {}
    }
}

/// Starts a child, waits until it appends, lets it run for `delay` and kills it. Returns the complete
/// lines it printed, each with when it was read, and the moment of the kill.
fn run_child(dir: &Path, mode: Mode, round: u64, seed: u64, delay: Duration) -> (Vec<(Instant, String)>, Instant) {
    let mut child = child_command("power_child")
        .env(DIR_VAR, dir)
        .env(ROUND_VAR, round.to_string())
        .env(SEED_VAR, seed.to_string())
        .env(MODE_VAR, mode.name())
        .spawn()
        .unwrap();
    let (lines, stdout) = read_timed_lines(&mut child);
    let stderr = read_stderr(&mut child);
    let mut read = Vec::new();
    let waiting = Instant::now();
    loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok((_, line)) if line == "READY" => break,
            Ok(line) => read.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) if waiting.elapsed() < READY_TIMEOUT => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child of round {round} never became ready:\n{}", stderr.join().unwrap_or_default());
            }
        }
    }
    std::thread::sleep(delay);
    if let Some(status) = child.try_wait().unwrap() {
        panic!("child of round {round} stopped by itself ({status}):\n{}", stderr.join().unwrap_or_default());
    }
    // The power goes with the process: every acknowledgement it got was printed before this moment.
    let cut_at = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();
    stdout.join().unwrap();
    read.extend(lines.try_iter());
    (read, cut_at)
}

/// What a check found.
struct Checked {
    /// The ids of the log, in order.
    log: Vec<Uuid>,
    /// Acknowledged appends that are gone (all from the end of the log, or the check failed).
    lost: Vec<Ack>,
    /// The append the check made after the head.
    appended: Ack,
}

/// Reopens the store after a power cut and checks every property but the mode's loss rule.
async fn check_store(
    dir: &Path,
    durability: Durability,
    acks: &[Ack],
    seen: &[Uuid],
    round: usize,
    context: &str,
) -> Checked {
    let store = SledConfig::new(dir).durability(durability).open().expect("the store reopens after a power cut");
    let head = store.head().await.unwrap().get();
    let log: Vec<RecordedEvent> = store.read_log(ReadLog::from_start()).try_collect().await.unwrap();

    assert_eq!(log.len() as u64, head, "{context}: the log does not reach the head");
    for (index, event) in log.iter().enumerate() {
        assert_eq!(event.position.get(), index as u64 + 1, "{context}: gap in positions");
    }
    assert!(seen.len() <= log.len(), "{context}: the log shrank from {} to {} events", seen.len(), log.len());
    for (event, id) in log.iter().zip(seen) {
        assert_eq!(event.id, *id, "{context}: event at {} changed since the last check", event.position);
    }
    check_streams(&store, &log, context).await;
    check_batches(&log, EVENT_TYPE, PAD_MAX, context);
    let lost = check_acks(&log, acks, true, context);

    let appended = append_after_head(&store, head, round, context).await;
    Checked { log: log.iter().map(|e| e.id).collect(), lost, appended }
}

/// The store takes a new append, right after the head; returns it as an acknowledgement to check later.
async fn append_after_head(store: &SledStore, head: u64, round: usize, context: &str) -> Ack {
    let stream = StreamId::new("power-check").unwrap();
    let version = store.stream_version(&stream).await.unwrap().map_or(0, |v| v.get());
    let expected = if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version.into()) };
    let batch = format!("check-{round}");
    let event = new_event(EVENT_TYPE, PAD_MAX, &batch, 1, 0, stream.as_str());
    let id = event.id();
    let result = store.append(&stream, expected, vec![event]).await.expect("the store takes appends after a power cut");
    assert_eq!(result.first_position.get(), head + 1, "{context}: a new append does not follow the head");
    assert_eq!(result.version.get(), version + 1, "{context}: a new append does not follow its stream");
    let at = Instant::now();
    let (first, last, version) = (result.first_position.get(), result.last_position.get(), result.version.get());
    Ack { batch, stream: stream.as_str().to_owned(), first, last, version, ids: vec![id], at }
}
