//! Consumers after `kill -9`: what a projection or a subscription saved is consistent with the log,
//! and a restart goes on from it without skipping an event.
//!
//! A child process (this test binary re-run with `ANNALS_CONSUMER_CRASH_ROLE` set, see
//! [`consumer_crash_child`]) runs a consumer on a [`SledStore`] while it appends more events; the
//! parent kills it with SIGKILL at a moment that varies from round to round, reopens the store and
//! checks what was saved, then restarts the consumer itself, lets it reach the head, and checks again.
//!
//! - A persisted projection ([`Projector::persisted`]) is exactly-once: the state saved under
//!   `projection/<name>` is exactly a fresh [`replay`] of the log up to the saved position, and so is
//!   the state of an interrupted shadow rebuild under `projection-rebuild/<name>`. Every round after
//!   the first bumps the projection's version, so the child is killed while it rebuilds in the shadow
//!   (or just after it swapped the rebuild in); the live checkpoint keeps the old version until the
//!   swap, which also drops the shadow's key in the same write. The parent then resumes the rebuild
//!   from the shadow's checkpoint, and the finished projection equals a full replay: no event skipped,
//!   none counted twice.
//! - A subscription is at-least-once: its handler appends each event's position to a file. After the
//!   kill and a restart to the head, every position the filter admits is in the file, nothing else is;
//!   a position is there twice only if it is after the checkpoint saved before the crash; each run
//!   delivers in increasing order with no gap, and first deliveries are in increasing order. The
//!   kills land during catch-up in some rounds and during live delivery in others.
//!
//! Both tests take 7 to 14 s together in a debug build on 2 cores. The seed of the random schedule is
//! printed; `ANNALS_CONSUMER_CRASH_SEED=<seed>` replays it (the moments of the kills still vary with
//! timing). `cargo test --test consumer_crash_recovery -- --nocapture` shows every round.
#![allow(missing_docs)]
// The helpers below check and fail like the tests they serve; the seed and every round are reported
// on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use annals::{
    replay, Checkpoint, EventStore, ExpectedVersion, Handler, HandlerError, LogFilter, NewEvent, OnFailure, Phase,
    Position, Projection, Projector, ReadLog, RecordedEvent, RetryPolicy, SledStore, Start, StreamId, Subscription,
    SubscriptionConfig, Until,
};
use async_trait::async_trait;
use common::child::{child_command, env_number, read_lines, read_stderr, say, seed_from, Rng};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const ROLE_VAR: &str = "ANNALS_CONSUMER_CRASH_ROLE";
const DIR_VAR: &str = "ANNALS_CONSUMER_CRASH_DIR";
const VERSION_VAR: &str = "ANNALS_CONSUMER_CRASH_VERSION";
const FILE_VAR: &str = "ANNALS_CONSUMER_CRASH_FILE";
const SIGNAL_VAR: &str = "ANNALS_CONSUMER_CRASH_SIGNAL_AT";
const SEED_VAR: &str = "ANNALS_CONSUMER_CRASH_SEED";

const PROJECTION_ROLE: &str = "projection";
const SUBSCRIPTION_ROLE: &str = "subscription";

/// The event type the consumers count, and one their filter leaves out.
const COUNTED: &str = "Deposited";
const NOISE: &str = "Noise";
/// How many streams the events go to.
const STREAMS: u64 = 50;

/// The projection under test, and its checkpoint keys.
const PROJECTION: &str = "totals";
const LIVE_KEY: &str = "projection/totals";
const SHADOW_KEY: &str = "projection-rebuild/totals";
/// Events in the store before the first projection round.
const PROJECTION_EVENTS: u64 = 20_000;
const PROJECTION_CHECKPOINT_EVERY: u64 = 500;

/// The subscription under test.
const SUBSCRIPTION: &str = "ledger";
/// Events the parent appends before each subscription round: the child's catch-up.
const SUBSCRIPTION_BACKLOG: u64 = 4_000;
const SUBSCRIPTION_CHECKPOINT_EVERY: u64 = 50;
const SUBSCRIPTION_PARTITIONS: u32 = 3;

/// How long a child may take to reach the moment it is killed at, and a consumer to reach the head,
/// before the test gives up (never a timing assertion).
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------------
// The consumers.

/// How many events this process's consumers handled, and at which count to say so on stdout (`AT n`):
/// the parent kills the child once it reads that line. Zero (the parent's case) never signals.
static HANDLED: AtomicU64 = AtomicU64::new(0);
static SIGNAL_AT: AtomicU64 = AtomicU64::new(0);

fn note_handled() {
    let handled = HANDLED.fetch_add(1, Ordering::SeqCst) + 1;
    if handled == SIGNAL_AT.load(Ordering::SeqCst) {
        say(&format!("AT {handled}\n"));
    }
}

/// A read model kept with its state: counts per stream, the total, the amounts, and positions
/// weighted by the version (so that each version computes something else). It refuses to see a
/// position twice or out of order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Totals<const V: u32> {
    per_stream: BTreeMap<String, u64>,
    total: u64,
    amount: u64,
    weighted_positions: u64,
    last: u64,
}

#[derive(Deserialize)]
struct Amount {
    amount: u64,
}

#[async_trait]
impl<const V: u32> Projection for Totals<V> {
    fn name(&self) -> &str {
        PROJECTION
    }

    fn version(&self) -> u32 {
        V
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all().event_types([COUNTED])
    }

    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        let position = event.position.get();
        if position <= self.last {
            return Err(format!("position {position} handled after position {}", self.last).into());
        }
        if event.event_type != COUNTED {
            return Err(format!("{} at {position} passed the filter", event.event_type).into());
        }
        let Amount { amount } = event.payload_as()?;
        *self.per_stream.entry(event.stream.as_str().to_owned()).or_default() += 1;
        self.total += 1;
        self.amount += amount;
        self.weighted_positions += position * u64::from(V);
        self.last = position;
        note_handled();
        Ok(())
    }
}

/// Calls `function::<V>(args)` for the projection version `version` (1 to 6) and awaits it.
macro_rules! at_version {
    ($version:expr, $function:ident($($arg:expr),*)) => {
        match $version {
            1 => $function::<1>($($arg),*).await,
            2 => $function::<2>($($arg),*).await,
            3 => $function::<3>($($arg),*).await,
            4 => $function::<4>($($arg),*).await,
            5 => $function::<5>($($arg),*).await,
            6 => $function::<6>($($arg),*).await,
            other => Err(format!("no projection of version {other}").into()),
        }
    };
}

/// A subscription handler with an outside effect: one line `<position> <C|L>` per event, appended to
/// a file (written through at once; no fsync, since the process dies, not the machine).
struct FileLog {
    file: File,
}

impl FileLog {
    fn open(path: &Path) -> TestResult<Self> {
        Ok(FileLog { file: OpenOptions::new().create(true).append(true).open(path)? })
    }
}

#[async_trait]
impl Handler for FileLog {
    async fn handle(&mut self, event: &RecordedEvent, phase: Phase) -> Result<(), HandlerError> {
        let phase = match phase {
            Phase::CatchUp => 'C',
            Phase::Live => 'L',
        };
        self.file.write_all(format!("{} {phase}\n", event.position.get()).as_bytes())?;
        self.file.flush()?;
        note_handled();
        Ok(())
    }
}

/// The subscription's settings, the same in the child and the parent. A failing handler stops it,
/// so that a broken file write cannot hide as a parked event.
fn subscription_config() -> SubscriptionConfig {
    SubscriptionConfig::new(SUBSCRIPTION)
        .filter(LogFilter::all().event_types([COUNTED]))
        .checkpoint_every(SUBSCRIPTION_CHECKPOINT_EVERY)
        .partitions(SUBSCRIPTION_PARTITIONS)
        .retry(RetryPolicy::never())
        .on_failure(OnFailure::Stop)
}

/// One event: mostly counted ones, with an amount; one in eight is noise the consumers filter out.
fn new_event(rng: &mut Rng) -> NewEvent {
    let event_type = if rng.below(8) == 0 { NOISE } else { COUNTED };
    NewEvent::raw(event_type, format!(r#"{{"amount":{}}}"#, rng.below(1_000)))
}

/// Appends `count` events in appends of up to 100 to one stream each.
async fn fill(store: &SledStore, count: u64, rng: &mut Rng) -> TestResult {
    let mut left = count;
    while left > 0 {
        let size = left.min(100);
        let stream = StreamId::new(format!("acct-{}", rng.below(STREAMS)))?;
        let events = (0..size).map(|_| new_event(rng)).collect();
        store.append(&stream, ExpectedVersion::Any, events).await?;
        left -= size;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// The child's side.

/// The child: runs a consumer and appends until it is killed. Runs only when the parent sets
/// `ANNALS_CONSUMER_CRASH_ROLE`.
#[test]
#[ignore = "the child process of the consumer crash tests; fails unless ANNALS_CONSUMER_CRASH_ROLE is set"]
fn consumer_crash_child() -> TestResult {
    let role = std::env::var(ROLE_VAR)
        .map_err(|_| format!("{ROLE_VAR} is not set: this child test is run by its parent test"))?;
    let dir = PathBuf::from(std::env::var_os(DIR_VAR).ok_or("no store directory")?);
    SIGNAL_AT.store(env_number(SIGNAL_VAR).unwrap_or(0), Ordering::SeqCst);
    let rng = Rng::new(env_number(SEED_VAR).unwrap_or(1));
    // A leading newline: libtest may have printed "test consumer_crash_child ... " without one.
    say("\nSTART\n");
    let store = SledStore::open(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let consumer = async {
            match role.as_str() {
                PROJECTION_ROLE => {
                    let version = env_number::<u32>(VERSION_VAR).ok_or("no projection version")?;
                    at_version!(version, project(store.clone()))
                }
                SUBSCRIPTION_ROLE => {
                    let file = PathBuf::from(std::env::var_os(FILE_VAR).ok_or("no file for the handler")?);
                    subscribe(store.clone(), &file).await
                }
                other => Err(format!("unknown role {other}").into()),
            }
        };
        // Either ends only with an error: the parent then sees the child stop by itself.
        tokio::select! {
            result = consumer => result,
            result = append_forever(&store, rng) => result,
        }
    })
}

/// Runs the projection at version `V` until the process is killed; says `READY` once it runs and
/// `CAUGHT-UP` once it caught up (after swapping a rebuild in).
async fn project<const V: u32>(store: SledStore) -> TestResult {
    let handle =
        Projector::persisted(store, Totals::<V>::default).checkpoint_every(PROJECTION_CHECKPOINT_EVERY).run().await?;
    say("READY\n");
    handle.caught_up().await?;
    say("CAUGHT-UP\n");
    // Returns only when the projector stopped, with its error.
    handle.wait_for(Position::MAX, Duration::from_secs(3_600)).await?;
    Err("the projector stopped".into())
}

/// Runs the subscription until the process is killed; says `READY` once it runs and `LIVE` once it
/// caught up.
async fn subscribe(store: SledStore, file: &Path) -> TestResult {
    let handle = Subscription::start(store, subscription_config(), FileLog::open(file)?).await?;
    say("READY\n");
    handle.caught_up().await?;
    say("LIVE\n");
    handle.wait_for(Position::MAX, Duration::from_secs(3_600)).await?;
    Err("the subscription stopped".into())
}

/// Appends a few events every few milliseconds, so that consumers also see live events and catch up
/// on a moving head.
async fn append_forever(store: &SledStore, mut rng: Rng) -> TestResult {
    loop {
        let stream = StreamId::new(format!("acct-{}", rng.below(STREAMS)))?;
        let events = (0..1 + rng.below(4)).map(|_| new_event(&mut rng)).collect();
        store.append(&stream, ExpectedVersion::Any, events).await?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------------------------------------------
// A: a persisted projection is exactly-once.

/// When a projection round kills its child.
#[derive(Clone, Copy, Debug)]
enum ProjectionKill {
    /// Soon after the child's projection handled this many events (or, if it never gets that far,
    /// after it caught up).
    AtEvent(u64),
    /// Soon after it caught up (and swapped its rebuild in): while it follows the child's appends.
    AfterCaughtUp,
}

#[test]
fn persisted_projection_state_is_a_replay_up_to_its_checkpoint_after_kill_9() -> TestResult {
    let seed = seed_from(SEED_VAR);
    eprintln!("projection crash test: {SEED_VAR}={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::Builder::new().prefix("annals-projection-crash-").tempdir()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async { fill(&SledStore::open(dir.path())?, PROJECTION_EVENTS, &mut rng).await })?;
    // Round 0 builds version 1 from nothing; each later round bumps the version, so its child starts
    // with a shadow rebuild of a projection saved at the previous version.
    let mut saved: Option<Saved> = None;
    let mut counted = PROJECTION_EVENTS * 7 / 8;
    let mut interrupted_rebuilds = 0;
    for round in 0..5u64 {
        let started = Instant::now();
        let version = round as u32 + 1;
        let kill = match round {
            0 => ProjectionKill::AtEvent(1 + rng.below(counted)),
            // Early in the first shadow rebuild, and killed at once (below): a rebuild of 20,000
            // events takes only tens of milliseconds, so this round makes sure one kill lands in it.
            1 => ProjectionKill::AtEvent(counted / 10 + rng.below(counted / 5)),
            2 => ProjectionKill::AtEvent(counted / 2 + rng.below(counted / 2)),
            3 => ProjectionKill::AfterCaughtUp,
            // Near the end of the rebuild: around its last checkpoints and the swap.
            _ => ProjectionKill::AtEvent(counted - 600 + rng.below(620)),
        };
        let signal = match kill {
            ProjectionKill::AtEvent(n) => n,
            ProjectionKill::AfterCaughtUp => 0,
        };
        let delay = if round == 1 { Duration::ZERO } else { Duration::from_millis(rng.below(20)) };
        let context = format!("projection round {round} (version {version}, {kill:?} + {delay:?}), seed {seed}");
        let envs = [
            (DIR_VAR, dir.path().display().to_string()),
            (VERSION_VAR, version.to_string()),
            (SIGNAL_VAR, signal.to_string()),
            (SEED_VAR, (seed ^ round).to_string()),
        ];
        let trigger = |line: &str| line.starts_with("AT ") || line == "CAUGHT-UP";
        let lines = run_child(PROJECTION_ROLE, &envs, trigger, delay, &context);
        let caught_up = lines.iter().any(|line| line == "CAUGHT-UP");
        let found = runtime.block_on(check_projection(dir.path(), version, saved, caught_up, &context))?;
        interrupted_rebuilds += usize::from(found.shadow.is_some());
        eprintln!(
            "{context}: killed with live {:?}, shadow {:?}; finished at {} ({} counted), {:?}",
            found.live,
            found.shadow,
            found.finished.position,
            found.counted,
            started.elapsed()
        );
        counted = found.counted;
        saved = Some(found.finished);
    }
    assert!(
        interrupted_rebuilds >= 1,
        "no kill interrupted a rebuild after its first checkpoint: the test proved little"
    );
    Ok(())
}

/// A projection's checkpoint as the test reads it: the version and position it was saved at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Saved {
    version: u32,
    position: Position,
}

/// What a projection round found after the kill, and where the parent's run finished.
struct ProjectionRound {
    live: Option<Saved>,
    shadow: Option<Saved>,
    finished: Saved,
    /// Events the finished projection counted.
    counted: u64,
}

/// The JSON a projector keeps in its checkpoints.
#[derive(Deserialize)]
struct SavedProjection {
    version: u32,
    state: Value,
}

/// Checks the projection's checkpoints after a kill against replays of the log, then finishes the
/// projection at `version` (resuming an interrupted rebuild) and checks it against a full replay.
/// `before` is where the parent left it in the last round.
async fn check_projection(
    dir: &Path,
    version: u32,
    before: Option<Saved>,
    caught_up: bool,
    context: &str,
) -> TestResult<ProjectionRound> {
    let store = SledStore::open(dir)?;
    let live = store.load_checkpoint(LIVE_KEY).await?;
    let shadow = store.load_checkpoint(SHADOW_KEY).await?;
    let live = match &live {
        Some(checkpoint) => Some(check_saved(&store, checkpoint, context).await?),
        None => None,
    };
    let shadow = match &shadow {
        Some(checkpoint) => Some(check_saved(&store, checkpoint, context).await?),
        None => None,
    };
    match (before, live) {
        // The first run saves from its first commit on.
        (None, live) => assert!(live.is_none_or(|l| l.version == version), "{context}: live {live:?}"),
        (Some(_), None) => panic!("{context}: the live checkpoint is gone"),
        (Some(before), Some(live)) => {
            assert!(
                live.version == before.version || live.version == version,
                "{context}: live checkpoint at version {}, neither {} nor {version}",
                live.version,
                before.version
            );
            assert!(
                live.position >= before.position,
                "{context}: the live checkpoint went back from {before:?} to {live:?}"
            );
        }
    }
    if let Some(shadow) = shadow {
        assert_eq!(shadow.version, version, "{context}: the shadow holds another version");
        let live_version = live.map(|l| l.version);
        assert!(
            before.is_some() && live_version != Some(version),
            "{context}: a shadow {shadow:?} beside live {live:?}: a swap must drop the shadow in the same write"
        );
    }
    if caught_up {
        // A rebuild reports caught up only after the swap is saved; a first run saved its earlier pages.
        assert_eq!(live.map(|l| l.version), Some(version), "{context}: caught up, but not saved at the new version");
    }

    let state = at_version!(version, finish(&store))?;
    let head = store.head().await?;
    assert_eq!(state, replayed(&store, version, head).await?, "{context}: finished state differs from a full replay");
    let finished = store.load_checkpoint(LIVE_KEY).await?.ok_or("no live checkpoint after a clean stop")?;
    let saved = check_saved(&store, &finished, context).await?;
    assert_eq!(saved, Saved { version, position: head }, "{context}: saved after a clean stop");
    assert!(store.load_checkpoint(SHADOW_KEY).await?.is_none(), "{context}: a finished rebuild left its shadow");
    let counted = state["total"].as_u64().ok_or("the state has no total")?;
    Ok(ProjectionRound { live, shadow, finished: saved, counted })
}

/// Checks that a saved projection's state is exactly a replay, at its version, of the log up to its
/// position.
async fn check_saved(store: &SledStore, checkpoint: &Checkpoint, context: &str) -> TestResult<Saved> {
    let text = checkpoint.state.as_deref().ok_or("a persisted projection's checkpoint has no state")?;
    let saved: SavedProjection = serde_json::from_str(text)?;
    let expected = replayed(store, saved.version, checkpoint.position).await?;
    assert_eq!(
        saved.state, expected,
        "{context}: {} at version {} and position {} is not a replay up to that position",
        checkpoint.name, saved.version, checkpoint.position
    );
    Ok(Saved { version: saved.version, position: checkpoint.position })
}

/// A fresh replay, at `version`, of the log up to `through`, as JSON.
async fn replayed(store: &SledStore, version: u32, through: Position) -> TestResult<Value> {
    at_version!(version, replayed_as(store, through))
}

async fn replayed_as<const V: u32>(store: &SledStore, through: Position) -> TestResult<Value> {
    let until = Until { position: Some(through), ..Until::default() };
    let projection = replay(store, Totals::<V>::default(), Start::Beginning, until).await?;
    Ok(serde_json::to_value(&projection)?)
}

/// Restarts the projection at version `V`, lets it reach the head, stops it cleanly, and returns its
/// state as JSON.
async fn finish<const V: u32>(store: &SledStore) -> TestResult<Value> {
    let handle = Projector::persisted(store.clone(), Totals::<V>::default)
        .checkpoint_every(PROJECTION_CHECKPOINT_EVERY)
        .run()
        .await?;
    handle.caught_up().await?;
    let head = store.head().await?;
    handle.wait_for(head, WAIT).await?;
    assert_eq!(handle.position(), head, "nothing is appended while the parent finishes the projection");
    let state = serde_json::to_value(&*handle.read().await?)?;
    handle.stop().await?;
    Ok(state)
}

// ---------------------------------------------------------------------------------------------------
// B: a subscription is at-least-once.

/// When a subscription round kills its child.
#[derive(Clone, Copy, Debug)]
enum SubscriptionKill {
    /// As soon as the handler handled this many events: during catch-up.
    AtEvent(u64),
    /// This long after the subscription caught up: during live delivery of the child's appends.
    Live(Duration),
}

#[test]
fn subscription_delivers_at_least_once_and_again_only_after_its_checkpoint_after_kill_9() -> TestResult {
    let seed = seed_from(SEED_VAR);
    eprintln!("subscription crash test: {SEED_VAR}={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::Builder::new().prefix("annals-subscription-crash-").tempdir()?;
    let store_dir = dir.path().join("store");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut before: Option<Position> = None;
    let (mut catch_up_kills, mut live_kills) = (0, 0);
    for round in 0..5u64 {
        let started = Instant::now();
        // A backlog for the child to catch up on.
        runtime.block_on(async { fill(&SledStore::open(&store_dir)?, SUBSCRIPTION_BACKLOG, &mut rng).await })?;
        let kill = if round % 2 == 0 {
            SubscriptionKill::AtEvent(1 + rng.below(SUBSCRIPTION_BACKLOG / 2))
        } else {
            SubscriptionKill::Live(Duration::from_millis(5 + rng.below(150)))
        };
        let (signal, delay) = match kill {
            SubscriptionKill::AtEvent(n) => (n, Duration::ZERO),
            SubscriptionKill::Live(delay) => (0, delay),
        };
        let context = format!("subscription round {round} ({kill:?}), seed {seed}");
        let file = dir.path().join(format!("handled-{round}.txt"));
        let envs = [
            (DIR_VAR, store_dir.display().to_string()),
            (FILE_VAR, file.display().to_string()),
            (SIGNAL_VAR, signal.to_string()),
            (SEED_VAR, (seed ^ round).to_string()),
        ];
        let trigger = |line: &str| match kill {
            // If it caught up before it got there, kill it all the same.
            SubscriptionKill::AtEvent(_) => line.starts_with("AT ") || line == "LIVE",
            SubscriptionKill::Live(_) => line == "LIVE",
        };
        let lines = run_child(SUBSCRIPTION_ROLE, &envs, trigger, delay, &context);
        let live = lines.iter().any(|line| line == "LIVE");
        let found = runtime.block_on(check_subscription(&store_dir, &file, before, &context))?;
        if live {
            live_kills += 1;
        } else {
            catch_up_kills += 1;
        }
        eprintln!(
            "{context}: killed {} with checkpoint {:?} after {} deliveries ({} live, {} cut short); restarted \
             from there, {} again; at {} now, {:?}",
            if live { "live" } else { "during catch-up" },
            found.checkpoint,
            found.child,
            found.child_live,
            found.cut_short,
            found.redelivered,
            found.head,
            started.elapsed()
        );
        before = Some(found.head);
    }
    assert!(
        catch_up_kills >= 1 && live_kills >= 1,
        "{catch_up_kills} kills in catch-up, {live_kills} live: the test proved little"
    );
    Ok(())
}

/// What a subscription round found.
struct SubscriptionRound {
    /// The checkpoint saved before the kill.
    checkpoint: Option<Position>,
    /// The head after the parent's run: its checkpoint.
    head: Position,
    /// Deliveries by the child, and how many of them were live.
    child: usize,
    child_live: usize,
    /// Whether the kill cut a line of the file short.
    cut_short: bool,
    /// Events delivered twice.
    redelivered: usize,
}

/// Checks the subscription's checkpoint after a kill, restarts it in this process with the same
/// handler up to the head, and checks the file of deliveries. `before` is the checkpoint the parent
/// left in the last round.
async fn check_subscription(
    dir: &Path,
    file: &Path,
    before: Option<Position>,
    context: &str,
) -> TestResult<SubscriptionRound> {
    let store = SledStore::open(dir)?;
    let head = store.head().await?;
    let checkpoint = Subscription::checkpoint(&store, SUBSCRIPTION).await?;
    assert!(checkpoint >= before, "{context}: the checkpoint went back from {before:?} to {checkpoint:?}");
    assert!(checkpoint.is_none_or(|c| c <= head), "{context}: checkpoint {checkpoint:?} past the head {head}");
    let start = before.unwrap_or(Position::ZERO);
    let crashed_at = checkpoint.unwrap_or(Position::ZERO);
    // Every event the filter admits since the parent's last run: what this round must deliver.
    let admitted: Vec<u64> = store
        .read_log(ReadLog::from(start.next()).filter(LogFilter::all().event_types([COUNTED])))
        .map_ok(|event| event.position.get())
        .try_collect()
        .await?;

    let cut_short = drop_partial_line(file)?;
    let child = read_deliveries(file)?;
    let handle = Subscription::start(store.clone(), subscription_config(), FileLog::open(file)?).await?;
    handle.caught_up().await?;
    handle.wait_for(head, WAIT).await?;
    handle.stop().await?;
    assert_eq!(Subscription::checkpoint(&store, SUBSCRIPTION).await?, Some(head), "{context}: after a clean stop");
    assert!(Subscription::parked(&store, SUBSCRIPTION).await?.is_empty(), "{context}: parked events");
    let all = read_deliveries(file)?;
    let parent = &all[child.len()..];

    // Nothing but what the filter admits since the last run, nothing lost (an acknowledged event is
    // durable, so the handler only sees events that survive the kill).
    let admitted_set: std::collections::HashSet<u64> = admitted.iter().copied().collect();
    for (position, _) in &all {
        assert!(admitted_set.contains(position), "{context}: delivered {position}, not one of this round's events");
    }
    // Every event at least once.
    let mut times: HashMap<u64, usize> = HashMap::new();
    for (position, _) in &all {
        *times.entry(*position).or_default() += 1;
    }
    let missing: Vec<u64> = admitted.iter().copied().filter(|p| !times.contains_key(p)).collect();
    assert!(missing.is_empty(), "{context}: never delivered: {missing:?}");
    // Twice only after the checkpoint saved before the crash.
    let mut twice: Vec<u64> = times.iter().filter(|(_, n)| **n > 1).map(|(p, _)| *p).collect();
    twice.sort_unstable();
    for position in &twice {
        assert!(
            *position > crashed_at.get(),
            "{context}: {position} delivered again though the checkpoint before the crash was {crashed_at}"
        );
    }
    // First deliveries in log order.
    let mut first = Vec::with_capacity(admitted.len());
    let mut seen = std::collections::HashSet::new();
    for (position, _) in &all {
        if seen.insert(*position) {
            first.push(*position);
        }
    }
    assert_eq!(first, admitted, "{context}: first deliveries out of log order");
    // Each run delivers in order without a gap: the child from where the last run stopped, the
    // parent from just after the checkpoint saved before the crash.
    let child_positions: Vec<u64> = child.iter().map(|(p, _)| *p).collect();
    assert_eq!(child_positions, admitted[..child.len()], "{context}: the child's deliveries");
    let resumed: Vec<u64> = admitted.iter().copied().filter(|p| *p > crashed_at.get()).collect();
    let parent_positions: Vec<u64> = parent.iter().map(|(p, _)| *p).collect();
    assert_eq!(parent_positions, resumed, "{context}: the restart's deliveries");
    // The child's catch-up came before its live deliveries.
    let phases: Vec<Phase> = child.iter().map(|(_, phase)| *phase).collect();
    assert!(phases.windows(2).all(|w| !matches!(w, [Phase::Live, Phase::CatchUp])), "{context}: catch-up after live");

    let child_live = phases.iter().filter(|p| matches!(p, Phase::Live)).count();
    Ok(SubscriptionRound { checkpoint, head, child: child.len(), child_live, cut_short, redelivered: twice.len() })
}

/// Cuts a line the kill left half-written off the end of the file; says whether there was one.
fn drop_partial_line(file: &Path) -> TestResult<bool> {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |at| at + 1);
    if complete == bytes.len() {
        return Ok(false);
    }
    OpenOptions::new().write(true).open(file)?.set_len(complete as u64)?;
    Ok(true)
}

/// The deliveries a file records, in order.
fn read_deliveries(file: &Path) -> TestResult<Vec<(u64, Phase)>> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    let mut deliveries = Vec::new();
    for line in text.lines() {
        let (position, phase) = line.split_once(' ').ok_or_else(|| format!("bad line {line:?}"))?;
        let phase = match phase {
            "C" => Phase::CatchUp,
            "L" => Phase::Live,
            other => return Err(format!("bad phase {other:?}").into()),
        };
        deliveries.push((position.parse()?, phase));
    }
    Ok(deliveries)
}

// ---------------------------------------------------------------------------------------------------
// Running a child.

/// Starts a child in `role`, waits for a line of its stdout that `trigger` accepts, waits `delay`,
/// and kills it with SIGKILL; returns every complete line it printed.
fn run_child(
    role: &str,
    envs: &[(&str, String)],
    trigger: impl Fn(&str) -> bool,
    delay: Duration,
    context: &str,
) -> Vec<String> {
    let mut child = child_command("consumer_crash_child")
        .env(ROLE_VAR, role)
        .envs(envs.iter().map(|(name, value)| (*name, value.as_str())))
        .spawn()
        .unwrap();
    let (lines, stdout) = read_lines(&mut child);
    let stderr = read_stderr(&mut child);
    let mut seen = Vec::new();
    let waiting = Instant::now();
    loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let hit = trigger(&line);
                seen.push(line);
                if hit {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if waiting.elapsed() < CHILD_TIMEOUT => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{context}: the child never got to its kill point ({seen:?}):\n{}",
                    stderr.join().unwrap_or_default()
                );
            }
        }
    }
    std::thread::sleep(delay);
    if let Some(status) = child.try_wait().unwrap() {
        panic!("{context}: the child stopped by itself ({status}):\n{}", stderr.join().unwrap_or_default());
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "a killed child cannot succeed");
    stdout.join().unwrap();
    seen.extend(lines.try_iter());
    seen
}
