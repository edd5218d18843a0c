//! A workflow after `kill -9`, at every write: each reminder is sent exactly once per deadline that
//! came due, none for loans returned before their reminder was due, no deadline is lost, and no
//! step is ever taken twice for one trigger.
//!
//! The story runs in stages, on a [`SledStore`] and (feature `postgres`) on PostgreSQL. Before each
//! stage the parent appends loans opened and returned, and moves the business clock: a file the
//! child's [`Clock`] reads, ten days further each stage, so that reminders (14 and 28 days after a
//! loan) come due across stages. Then it runs the workflow in child processes (this test binary
//! re-run with `ANNALS_WORKFLOW_CRASH_ROLE` set, see [`workflow_crash_child`]) until one settles
//! (caught up, nothing due). Each child halts just before or just after its first write (an
//! `append_multi` or a `save_checkpoints`, through a store wrapper) and says so on stdout; the
//! parent then kills it with SIGKILL and starts the next. So the children walk the stage's writes
//! one by one: a kill follows every step append (of an event's reaction and of a deadline's
//! firing) and every checkpoint, and about one write in three is also preceded by one (the
//! reaction decided, not written). After each stage the parent checks the store against a model
//! of the story: which reminders were sent (with the business time they fired at), which deadlines
//! are pending, and that no trigger has two steps. About 140 children per store, 4 to 8 s in a
//! debug build.
//!
//! The seed is printed; `ANNALS_WORKFLOW_CRASH_SEED=<seed>` replays the story (the kills follow
//! the writes, not the timing). `-- --nocapture` shows every stage.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

#[allow(dead_code, unreachable_pub)]
#[path = "common/child.rs"]
mod child;
#[cfg(feature = "postgres")]
#[path = "common/postgres.rs"]
mod postgres_support;
mod workflows;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration as Wait, Instant};

use annals::{Clock, EventStore, SledStore, WorkflowConfig, Workflows};
use async_trait::async_trait;
use child::{env_number, read_lines, read_stderr, say, seed_from, Rng};
use chrono::{DateTime, Duration, Utc};
use workflows::meddler::{Halt, Meddler};
use workflows::{
    march_first, open_loan, reminders_sent, return_loan, steps, Reminders, MAX_REMINDERS, NAME, REMINDER_AFTER,
};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const ROLE_VAR: &str = "ANNALS_WORKFLOW_CRASH_ROLE";
const DIR_VAR: &str = "ANNALS_WORKFLOW_CRASH_DIR";
const CLOCK_VAR: &str = "ANNALS_WORKFLOW_CRASH_CLOCK";
#[cfg(feature = "postgres")]
const URL_VAR: &str = "ANNALS_WORKFLOW_CRASH_URL";
#[cfg(feature = "postgres")]
const SCHEMA_VAR: &str = "ANNALS_WORKFLOW_CRASH_SCHEMA";
const HALT_AFTER_VAR: &str = "ANNALS_WORKFLOW_CRASH_HALT_AFTER";
const SEED_VAR: &str = "ANNALS_WORKFLOW_CRASH_SEED";

/// Stages of the story, ten days apart, and loans opened in each.
const STAGES: i64 = 8;
const STAGE_DAYS: i64 = 10;
const LOANS_PER_STAGE: u64 = 3;
/// Children one stage may take before the test gives up (each makes progress unless told to halt
/// before its first write).
const MAX_RUNS_PER_STAGE: usize = 200;
/// How long a child may take to halt or settle before the test gives up (never a timing assertion).
const CHILD_TIMEOUT: Wait = Wait::from_secs(60);

// ---------------------------------------------------------------------------------------------------
// The child's side.

/// A business clock read from a file the parent writes (RFC 3339); it does not move while a child
/// runs.
struct FileClock {
    path: PathBuf,
}

#[async_trait]
impl Clock for FileClock {
    fn now(&self) -> DateTime<Utc> {
        let text = std::fs::read_to_string(&self.path).expect("the clock file reads");
        DateTime::parse_from_rfc3339(text.trim()).expect("the clock file holds a time").with_timezone(&Utc)
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        while self.now() < at {
            tokio::time::sleep(Wait::from_millis(20)).await;
        }
    }
}

/// The child: runs the workflow until it settles, or halts at the write it is told and waits to be
/// killed. Runs only when the parent sets `ANNALS_WORKFLOW_CRASH_ROLE`.
#[test]
#[ignore = "the child process of the workflow crash tests; fails unless ANNALS_WORKFLOW_CRASH_ROLE is set"]
fn workflow_crash_child() -> TestResult {
    let role = std::env::var(ROLE_VAR)
        .map_err(|_| format!("{ROLE_VAR} is not set: this child test is run by its parent test"))?;
    // A leading newline: libtest may have printed "test workflow_crash_child ... " without one.
    say("\nSTART\n");
    let clock = FileClock { path: PathBuf::from(std::env::var_os(CLOCK_VAR).ok_or("no clock file")?) };
    let halt = Halt {
        at: 1,
        after: env_number::<u8>(HALT_AFTER_VAR).ok_or("no halt side")? == 1,
        then: Arc::new(|number, what, after| {
            say(&format!("HALT {number} {what} {}\n", if after { "after" } else { "before" }))
        }),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        match role.as_str() {
            "sled" => {
                let dir = PathBuf::from(std::env::var_os(DIR_VAR).ok_or("no store directory")?);
                run_until_settled(Meddler::new(SledStore::open(dir)?), clock, halt).await
            }
            #[cfg(feature = "postgres")]
            "postgres" => {
                let url = std::env::var(URL_VAR)?;
                let store =
                    annals::PostgresConfig::new(url).schema(std::env::var(SCHEMA_VAR)?).pool_size(2).open().await?;
                run_until_settled(Meddler::new(store), clock, halt).await
            }
            other => Err(format!("unknown role {other}").into()),
        }
    })
}

async fn run_until_settled<S: EventStore + Clone + 'static>(
    store: Meddler<S>,
    clock: FileClock,
    halt: Halt,
) -> TestResult {
    store.halt(halt);
    let config = WorkflowConfig::new().checkpoint_every(1);
    let workflow = Workflows::start(store, Reminders::new(), clock, config).await?;
    workflow.settle(CHILD_TIMEOUT).await?;
    workflow.stop().await?;
    say("SETTLED\n");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// The story and its model.

/// A loan of the story: when it was opened, and in which stage it was returned.
#[derive(Clone, Debug)]
struct StoryLoan {
    opened: DateTime<Utc>,
    returned_in: Option<i64>,
}

/// The business time of stage `stage`.
fn stage_time(stage: i64) -> DateTime<Utc> {
    march_first() + Duration::days(STAGE_DAYS * stage)
}

impl StoryLoan {
    /// When reminder `n` is due.
    fn due(&self, n: u32) -> DateTime<Utc> {
        self.opened + REMINDER_AFTER * n as i32
    }

    /// The stage in which reminder `n` fires by the end of stage `through`, if it does: the first
    /// stage whose clock reached its due time, unless the loan was returned by then (the return is
    /// appended before the stage runs, and events come before deadlines).
    fn fires_in(&self, n: u32, through: i64) -> Option<i64> {
        let last = self.returned_in.map_or(through, |returned| through.min(returned - 1));
        (0..=last).find(|stage| stage_time(*stage) >= self.due(n))
    }
}

/// The reminders sent by the end of stage `through` (loan, n, business time), and the deadlines
/// pending then (loan, due).
type Expected = (BTreeSet<(String, u32, DateTime<Utc>)>, BTreeSet<(String, DateTime<Utc>)>);

fn expected(loans: &BTreeMap<String, StoryLoan>, through: i64) -> Expected {
    let (mut sent, mut pending) = (BTreeSet::new(), BTreeSet::new());
    for (id, loan) in loans {
        let mut fired = 0;
        for n in 1..=MAX_REMINDERS {
            match loan.fires_in(n, through) {
                Some(stage) => {
                    sent.insert((id.clone(), n, stage_time(stage)));
                    fired = n;
                }
                None => break,
            }
        }
        let returned = loan.returned_in.is_some_and(|stage| stage <= through);
        if !returned && fired < MAX_REMINDERS {
            pending.insert((id.clone(), loan.due(fired + 1)));
        }
    }
    (sent, pending)
}

/// What the store holds: the reminders sent, the deadlines pending, and the triggers with two steps.
async fn observed<S: EventStore + ?Sized>(
    store: &S,
    loans: &BTreeMap<String, StoryLoan>,
) -> TestResult<(Expected, Vec<String>)> {
    let mut sent = BTreeSet::new();
    for (loan, events) in reminders_sent(store).await? {
        for event in events {
            let n = event.payload_as::<serde_json::Value>()?["n"].as_u64().ok_or("no n")? as u32;
            assert!(
                sent.insert((loan.clone(), n, event.occurred_at)),
                "loan {loan} got reminder {n} twice at {}",
                event.occurred_at
            );
        }
    }
    let pending = Workflows::deadlines(store, NAME).await?.into_iter().map(|d| (d.instance, d.due)).collect();
    let mut triggers: BTreeMap<String, usize> = BTreeMap::new();
    for loan in loans.keys() {
        for step in steps(store, loan).await? {
            *triggers.entry(format!("{loan}: {}", step["trigger"])).or_default() += 1;
        }
    }
    let twice = triggers.into_iter().filter(|(_, n)| *n > 1).map(|(t, _)| t).collect();
    Ok(((sent, pending), twice))
}

// ---------------------------------------------------------------------------------------------------
// The parent's side.

/// Where the story's store is, and how a child opens it.
enum Target {
    Sled(PathBuf),
    #[cfg(feature = "postgres")]
    Postgres {
        url: String,
        schema: String,
    },
}

impl Target {
    async fn open(&self) -> TestResult<Box<dyn EventStore>> {
        match self {
            Target::Sled(dir) => Ok(Box::new(SledStore::open(dir)?)),
            #[cfg(feature = "postgres")]
            Target::Postgres { url, schema } => {
                Ok(Box::new(annals::PostgresConfig::new(url.clone()).schema(schema.clone()).pool_size(2).open().await?))
            }
        }
    }

    fn child_env(&self) -> Vec<(&'static str, String)> {
        match self {
            Target::Sled(dir) => vec![(ROLE_VAR, "sled".into()), (DIR_VAR, dir.display().to_string())],
            #[cfg(feature = "postgres")]
            Target::Postgres { url, schema } => {
                vec![(ROLE_VAR, "postgres".into()), (URL_VAR, url.clone()), (SCHEMA_VAR, schema.clone())]
            }
        }
    }
}

#[test]
fn a_killed_workflow_sends_every_reminder_once_and_loses_no_deadline_on_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    story(&Target::Sled(dir.path().join("store")), dir.path())
}

#[cfg(feature = "postgres")]
#[test]
fn a_killed_workflow_sends_every_reminder_once_and_loses_no_deadline_on_postgres() -> TestResult {
    let dir = tempfile::tempdir()?;
    let target = Target::Postgres { url: postgres_support::url()?, schema: postgres_support::fresh_schema() };
    story(&target, dir.path())
}

/// Runs the story's stages on `target`, killing children at writes, and checks the store after each.
fn story(target: &Target, scratch: &Path) -> TestResult {
    let seed = seed_from(SEED_VAR);
    eprintln!("workflow crash story, seed {seed} ({SEED_VAR}={seed} replays it)");
    let mut rng = Rng::new(seed);
    let clock_file = scratch.join("clock");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut loans: BTreeMap<String, StoryLoan> = BTreeMap::new();
    let mut kills: BTreeMap<String, usize> = BTreeMap::new();
    for stage in 0..STAGES {
        let now = stage_time(stage);
        runtime.block_on(append_stage(target, &mut loans, &mut rng, stage))?;
        std::fs::write(&clock_file, now.to_rfc3339())?;
        let context = format!("stage {stage}, seed {seed}");
        let runs = run_stage(target, &clock_file, &mut rng, &mut kills, &context);
        let store = runtime.block_on(target.open())?;
        let (found, twice) = runtime.block_on(observed(&*store, &loans))?;
        drop(store);
        let (sent, pending) = expected(&loans, stage);
        eprintln!("{context}: {runs} children, {} reminders sent, {} deadlines pending", sent.len(), pending.len());
        assert!(twice.is_empty(), "{context}: triggers with two steps: {twice:?}");
        assert_eq!(found.0, sent, "{context}: the reminders sent (loan, n, business time) are not the model's");
        assert_eq!(found.1, pending, "{context}: the pending deadlines (loan, due) are not the model's");
    }
    eprintln!("kills: {kills:?}");
    for kind in
        ["after event-step", "after deadline-step", "after checkpoint", "before event-step", "before deadline-step"]
    {
        assert!(kills.get(kind).copied().unwrap_or(0) > 0, "no kill {kind}: the test proved little ({kills:?})");
    }
    Ok(())
}

/// Appends the stage's loans and returns (business time: the stage's time).
async fn append_stage(
    target: &Target,
    loans: &mut BTreeMap<String, StoryLoan>,
    rng: &mut Rng,
    stage: i64,
) -> TestResult {
    let store = target.open().await?;
    let now = stage_time(stage);
    let open: Vec<String> = loans.iter().filter(|(_, l)| l.returned_in.is_none()).map(|(id, _)| id.clone()).collect();
    if !open.is_empty() {
        let id = &open[rng.below(open.len() as u64) as usize];
        return_loan(&*store, id, now).await?;
        if let Some(loan) = loans.get_mut(id) {
            loan.returned_in = Some(stage);
        }
    }
    for i in 0..LOANS_PER_STAGE {
        let id = format!("{stage}x{i}");
        let opened = now - Duration::hours(rng.below(48) as i64);
        open_loan(&*store, &id, opened).await?;
        loans.insert(id, StoryLoan { opened, returned_in: None });
    }
    Ok(())
}

/// Runs children until one settles, each halting (and killed) just before or just after its first
/// write. Returns how many children ran.
fn run_stage(
    target: &Target,
    clock: &Path,
    rng: &mut Rng,
    kills: &mut BTreeMap<String, usize>,
    context: &str,
) -> usize {
    for run in 1..=MAX_RUNS_PER_STAGE {
        // Right after its first write, or just before it: no write is skipped, so the children
        // walk the stage's writes one by one, and a kill follows every write.
        let after = rng.below(100) < 65;
        let mut envs = target.child_env();
        envs.push((CLOCK_VAR, clock.display().to_string()));
        envs.push((HALT_AFTER_VAR, u8::from(after).to_string()));
        match run_child(&envs, &format!("{context}, run {run}")) {
            Ending::Settled => return run,
            Ending::Killed(kind) => *kills.entry(kind).or_default() += 1,
        }
    }
    panic!("{context}: no child settled in {MAX_RUNS_PER_STAGE} runs");
}

enum Ending {
    Settled,
    /// Killed where it halted: `after checkpoint`, `before event-step`, ...
    Killed(String),
}

/// Runs one child until it halts (then kills it with SIGKILL) or settles (then waits for it).
fn run_child(envs: &[(&str, String)], context: &str) -> Ending {
    let mut child = child::child_command("workflow_crash_child")
        .envs(envs.iter().map(|(name, value)| (*name, value.as_str())))
        .spawn()
        .unwrap();
    let (lines, stdout) = read_lines(&mut child);
    let stderr = read_stderr(&mut child);
    let started = Instant::now();
    let ending = loop {
        match lines.recv_timeout(Wait::from_millis(100)) {
            Ok(line) if line == "SETTLED" => break None,
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("HALT ") {
                    let mut words = rest.split(' ').skip(1);
                    let (what, side) = (words.next().unwrap_or("?"), words.next().unwrap_or("?"));
                    break Some(format!("{side} {what}"));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if started.elapsed() < CHILD_TIMEOUT => {}
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "{context}: the child neither halted nor settled ({status:?}):\n{}",
                    stderr.join().unwrap_or_default()
                );
            }
        }
    };
    match ending {
        Some(kind) => {
            child.kill().unwrap();
            let status = child.wait().unwrap();
            assert!(!status.success(), "{context}: a killed child cannot succeed");
            stdout.join().unwrap();
            Ending::Killed(kind)
        }
        None => {
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "{context}: the child failed after settling:\n{}",
                stderr.join().unwrap_or_default()
            );
            stdout.join().unwrap();
            Ending::Settled
        }
    }
}
