//! PostgreSQL faults: each one is a typed error, and nothing is lost.
//!
//! - Opening: an unreachable server (a closed port, or one that accepts connections but never
//!   answers) is [`Error::Unreachable`] within the connect timeout, naming host and port but never
//!   the password; a malformed connection string is [`Error::InvalidConnectionString`]; a bad schema
//!   name is [`Error::Config`], before any connection.
//! - Schema versions: a schema of a newer version is [`Error::UnsupportedSchema`] and is left as it
//!   was; a version 1 schema is migrated forward on open, its data readable; processes opening a
//!   fresh schema at once all succeed (the migration runs under an advisory lock).
//! - The server restarting: appends made meanwhile fail with a retryable [`Error::Storage`] (never
//!   a panic, never a hang), the same store appends again once the server is back, every
//!   acknowledged append is in the log exactly once where it was acknowledged, and an append whose
//!   outcome was unknown is there whole or not at all (its retry says which); another handle's head
//!   watch wakes after the restart; acknowledged appends survive a crash (immediate shutdown and WAL
//!   recovery); a running subscription resumes from its checkpoint and handles every event.
//!
//! The restart tests run a cluster of their own (`annals_testkit::PgCluster`), the others share the
//! test binary's. Every wait is bounded: a hang fails the test.
#![cfg(feature = "postgres")]
#![allow(missing_docs)]
// The helpers below check and fail like the tests they serve; counts are reported on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

#[path = "common/acked.rs"]
mod acked;
#[path = "common/postgres.rs"]
mod postgres_support;
#[path = "common/subscriptions.rs"]
mod subscriptions;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use acked::{check_log, presence, Acked};
use annals::{
    AppendResult, Checkpoint, CheckpointWrite, Error, EventStore, ExpectedVersion, NewEvent, Position, PostgresConfig,
    PostgresStore, ReadLog, RecordedEvent, Snapshot, StreamId, Subscription, SubscriptionConfig, Version,
    POSTGRES_SCHEMA_VERSION,
};
use annals_testkit::PgCluster;
use futures_util::TryStreamExt;
use subscriptions::{Log, Probe};
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The longest any single operation may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(30);
/// How long a wait for a condition may take (never a timing assertion: a generous bound).
const WAIT: Duration = Duration::from_secs(10);
/// A password that must never show in a message.
const SECRET: &str = "pw-S3cret-7f4e";

/// `future`, or a failure naming `what` when it takes longer than `bound`.
async fn bounded<T>(what: &str, bound: Duration, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(bound, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {bound:?}"),
    }
}

/// Polls `condition` until it holds; fails naming `what` after `bound`.
async fn eventually(what: &str, bound: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {bound:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs a blocking cluster operation (crash, stop, restart, psql) from an async test.
fn blocking<T>(operation: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(operation)
}

/// How the restart tests open their store on their own cluster: short timeouts, so that a failure
/// while the server is down comes quickly.
fn own_config(cluster: &PgCluster) -> PostgresConfig {
    PostgresConfig::new(cluster.url())
        .schema("faults")
        .pool_size(4)
        .connect_timeout(Duration::from_secs(2))
        .statement_timeout(Duration::from_secs(10))
}

/// A port nothing listens on (bound a moment ago, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// Checks that `text` does not show the password.
fn assert_hidden(text: &str, what: &str) {
    assert!(!text.contains(SECRET), "{what} shows the password: {text}");
}

/// Checks that neither the error nor any of its causes shows the password, in Display or Debug.
fn assert_error_hides_password(error: &Error) {
    assert_hidden(&error.to_string(), "the error's message");
    assert_hidden(&format!("{error:?}"), "the error's Debug");
    let mut cause = std::error::Error::source(error);
    while let Some(source) = cause {
        assert_hidden(&source.to_string(), "a cause's message");
        assert_hidden(&format!("{source:?}"), "a cause's Debug");
        cause = source.source();
    }
}

/// Opens `config`, which must fail within [`WAIT`]; returns the error.
async fn open_error(config: PostgresConfig) -> Error {
    bounded("opening", WAIT, config.open()).await.expect_err("the store must not open")
}

fn event(n: u64) -> NewEvent {
    NewEvent::json("Tested", &serde_json::json!({ "n": n })).unwrap()
}

fn stream(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

// ---------------------------------------------------------------------------------------------------
// Opening.

#[tokio::test]
async fn an_unreachable_server_is_reported_promptly_by_address_without_the_password() {
    let port = closed_port();
    let urls = [
        format!("postgres://annals:{SECRET}@127.0.0.1:{port}/events"),
        format!("host=127.0.0.1 port={port} user=annals password={SECRET} dbname=events"),
    ];
    for url in urls {
        let config = PostgresConfig::new(url).connect_timeout(Duration::from_millis(500));
        assert_hidden(&format!("{config:?}"), "PostgresConfig's Debug");
        let error = open_error(config).await;
        assert!(
            matches!(&error, Error::Unreachable { server, .. } if *server == format!("127.0.0.1:{port}")),
            "{error:?}"
        );
        assert!(error.to_string().contains(&format!("127.0.0.1:{port}")), "the message names the server: {error}");
        assert!(error.is_retryable());
        assert_error_hides_password(&error);
    }
}

#[tokio::test]
async fn a_missing_database_is_unreachable_without_the_password() -> TestResult {
    let cluster = annals_testkit::shared()?;
    let url = format!("postgres://postgres:{SECRET}@127.0.0.1:{}/no_such_database", cluster.port());
    let error = open_error(PostgresConfig::new(url)).await;
    assert!(
        matches!(&error, Error::Unreachable { server, .. } if *server == format!("127.0.0.1:{}", cluster.port())),
        "{error:?}"
    );
    assert_error_hides_password(&error);
    Ok(())
}

#[tokio::test]
async fn a_server_that_accepts_but_never_answers_is_unreachable_after_the_connect_timeout() {
    // The kernel completes the TCP handshake for a listening socket, but nothing ever answers the
    // startup message: as an overloaded proxy or a wrong service would behave.
    let silent = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = silent.local_addr().unwrap().port();
    let url = format!("postgres://annals:{SECRET}@127.0.0.1:{port}/events");
    let error = open_error(PostgresConfig::new(url).connect_timeout(Duration::from_millis(500))).await;
    assert!(matches!(&error, Error::Unreachable { server, .. } if *server == format!("127.0.0.1:{port}")), "{error:?}");
    assert_error_hides_password(&error);
    drop(silent);
}

#[tokio::test]
async fn a_malformed_connection_string_is_an_invalid_connection_string_error() {
    let port = closed_port();
    let malformed = [
        format!("postgres://annals:{SECRET}@127.0.0.1:not-a-port/events"),
        format!("host=127.0.0.1 port={port} password={SECRET} sslmode=sometimes"),
        format!("host=127.0.0.1 password='{SECRET}"),
        "postgres://annals@127.0.0.1:5432/events?connect_timeout=soon".to_owned(),
        "this is not a connection string".to_owned(),
    ];
    for url in malformed {
        let error = open_error(PostgresConfig::new(url.clone())).await;
        assert!(matches!(error, Error::InvalidConnectionString { .. }), "{url}: {error:?}");
        assert!(error.is_invalid_input() && !error.is_retryable(), "{url}: {error:?}");
        assert_error_hides_password(&error);
    }
}

#[tokio::test]
async fn an_invalid_schema_name_is_a_config_error_before_any_connection() -> TestResult {
    // A closed port: the name is refused before connecting (Unreachable would mean it tried).
    let url = format!("postgres://annals:{SECRET}@127.0.0.1:{}/events", closed_port());
    let too_long = "s".repeat(annals::MAX_SCHEMA_NAME_LEN + 1);
    for schema in ["", "Orders", "order-events", "1orders", "pg_orders", "ordérs", "orders; drop", too_long.as_str()] {
        let error = open_error(PostgresConfig::new(url.clone()).schema(schema)).await;
        assert!(matches!(error, Error::Config { setting: "schema", .. }), "{schema:?}: {error:?}");
        assert_error_hides_password(&error);
    }
    // The longest valid name opens.
    let longest = format!("{}_{}", postgres_support::fresh_schema(), "s".repeat(annals::MAX_SCHEMA_NAME_LEN));
    let longest = &longest[..annals::MAX_SCHEMA_NAME_LEN];
    let store = PostgresConfig::new(postgres_support::url()?).schema(longest).open().await?;
    assert_eq!(store.schema(), longest);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Schema versions.

/// Everything a schema holds, as text: its tables and the rows of each.
fn dump(cluster: &PgCluster, schema: &str) -> String {
    let tables = cluster
        .psql(
            "postgres",
            &format!("SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}' ORDER BY 1"),
        )
        .unwrap();
    let mut text = format!("tables: {tables}\n");
    for table in tables.lines() {
        let rows = cluster.psql("postgres", &format!("SELECT * FROM {schema}.{table} ORDER BY 1, 2")).unwrap();
        text.push_str(&format!("{table}:\n{rows}\n"));
    }
    text
}

#[tokio::test]
async fn a_schema_of_a_newer_version_is_refused_and_left_untouched() -> TestResult {
    let cluster = annals_testkit::shared()?;
    let config = postgres_support::fresh_config()?;
    let schema = config.schema_name().to_owned();
    let store = config.clone().open().await?;
    store.append(&stream("order-1"), ExpectedVersion::NoStream, vec![event(1), event(2)]).await?;
    store.save_checkpoints(vec![CheckpointWrite::Save(Checkpoint::new("reader", Position::new(2)))]).await?;
    drop(store);
    // As a newer release would leave it: a later version, and a table this one does not know.
    cluster.psql(
        "postgres",
        &format!(
            "UPDATE {schema}.meta SET value = '99' WHERE key = 'schema_version';
             CREATE TABLE {schema}.from_the_future (id int PRIMARY KEY, note text);
             INSERT INTO {schema}.from_the_future VALUES (1, 'keep me');"
        ),
    )?;
    let before = dump(cluster, &schema);

    let error = open_error(config).await;
    assert!(
        matches!(&error, Error::UnsupportedSchema { schema: s, found: 99, supported } if *s == schema && *supported == POSTGRES_SCHEMA_VERSION),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(dump(cluster, &schema), before, "opening changed the newer schema");
    Ok(())
}

#[tokio::test]
async fn a_version_1_schema_is_migrated_forward_with_everything_readable() -> TestResult {
    let cluster = annals_testkit::shared()?;
    let config = postgres_support::fresh_config()?;
    let schema = config.schema_name().to_owned();
    let meta = |cluster: &PgCluster| {
        cluster.psql("postgres", &format!("SELECT value FROM {schema}.meta WHERE key = 'schema_version'"))
    };
    let v2_tables = |cluster: &PgCluster| {
        cluster.psql(
            "postgres",
            &format!("SELECT to_regclass('{schema}.leases') IS NOT NULL, to_regclass('{schema}.members') IS NOT NULL"),
        )
    };

    let old = config.clone().stop_at_schema_version_for_tests(1).open().await?;
    assert_eq!(meta(cluster)?, "1");
    assert_eq!(v2_tables(cluster)?, "f|f", "a version 1 schema has no lease tables");
    let (orders, carts) = (stream("order-1"), stream("cart-1"));
    // The events as the version 1 writer wrote them (this code's writer needs the version 3 columns):
    // order-1 versions 1 and 2, then cart-1 version 1 with order-1 version 3 in one append.
    let mut rows = String::new();
    for (position, name, version, recorded) in [
        (1, "order-1", 1, 1_000_000),
        (2, "order-1", 2, 1_000_000),
        (3, "cart-1", 1, 2_000_000),
        (4, "order-1", 3, 2_000_000),
    ] {
        rows.push_str(&format!(
            "INSERT INTO {schema}.events VALUES ({position}, '{}', '{name}', {version}, 'Tested', 1, {recorded}, \
             {recorded}, '{{}}', '{{\"n\":{position}}}');\n",
            uuid::Uuid::new_v4()
        ));
    }
    rows.push_str(&format!(
        "INSERT INTO {schema}.streams VALUES ('order-1', 3), ('cart-1', 1);
         UPDATE {schema}.head SET position = 4, recorded_us = 2000000 WHERE id = 1;"
    ));
    cluster.psql("postgres", &rows)?;
    old.save_checkpoints(vec![
        CheckpointWrite::Save(Checkpoint::new("projection/orders", Position::new(4)).with_state(r#"{"seen":4}"#)),
        CheckpointWrite::Save(Checkpoint::new("subscription/mail", Position::new(2))),
    ])
    .await?;
    let snapshot = Snapshot::new(orders.clone(), Version::new(3), 1, r#"{"total":3}"#.to_owned());
    old.save_snapshot(snapshot.clone()).await?;
    let log: Vec<RecordedEvent> = old.read_log(ReadLog::from_start()).try_collect().await?;
    let checkpoints = old.list_checkpoints("").await?;
    drop(old);

    let store = config.open().await?;
    assert_eq!(meta(cluster)?, POSTGRES_SCHEMA_VERSION.to_string());
    assert_eq!(v2_tables(cluster)?, "t|t", "the migration created the lease tables");
    let again: Vec<RecordedEvent> = store.read_log(ReadLog::from_start()).try_collect().await?;
    assert_eq!(again, log);
    assert_eq!(store.list_checkpoints("").await?, checkpoints);
    assert_eq!(store.load_snapshot(&orders, Version::new(3)).await?, Some(snapshot));
    assert_eq!(store.stream_version(&orders).await?, Some(Version::new(3)));
    let next = store.append(&carts, ExpectedVersion::Exact(Version::new(1)), vec![event(5)]).await?;
    assert_eq!((next.first_position, next.version), (Position::new(5), Version::new(2)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_of_a_fresh_schema_all_succeed() -> TestResult {
    let cluster = annals_testkit::shared()?;
    // Several rounds, each on a fresh schema: a race without the lock would not show every time.
    for round in 0..4 {
        let config = postgres_support::fresh_config()?;
        let opens: Vec<_> = (0..8)
            .map(|_| {
                let config = config.clone();
                tokio::spawn(async move { config.open().await })
            })
            .collect();
        let mut stores = Vec::new();
        for open in opens {
            let opened = bounded("an open", HANG, open).await?;
            stores.push(opened.map_err(|e| format!("round {round}: an open failed: {e:?}"))?);
        }
        for (n, store) in (1..).zip(&stores) {
            store.append(&stream("opened"), ExpectedVersion::Any, vec![event(n)]).await?;
        }
        let head = stores[0].head().await?;
        assert_eq!(head, Position::new(8), "round {round}: one log for all eight handles");
        let schema = config.schema_name();
        let version =
            cluster.psql("postgres", &format!("SELECT value FROM {schema}.meta WHERE key = 'schema_version'"))?;
        assert_eq!(version, POSTGRES_SCHEMA_VERSION.to_string());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// The server restarting.

/// One append a task sent, and what came of it (`Err`: a failure, so the outcome is unknown).
#[derive(Debug)]
struct Sent {
    task: usize,
    stream: StreamId,
    events: Vec<NewEvent>,
    outcome: Result<AppendResult, String>,
    /// The [`Progress::phase`] when it was sent and when it was answered.
    phases: (usize, usize),
}

impl Sent {
    fn ids(&self) -> Vec<Uuid> {
        self.events.iter().map(NewEvent::id).collect()
    }

    fn acked(&self) -> Option<Acked> {
        self.outcome.as_ref().ok().map(|result| Acked::new(&self.stream, self.ids(), result))
    }

    /// Sent and answered while the server was up, with no crash in between: it must have succeeded.
    fn while_up(&self) -> bool {
        self.phases.0 == self.phases.1 && self.phases.0 % 2 == 0
    }
}

/// What the appending tasks report while they run.
struct Progress {
    stop: AtomicBool,
    /// Even while the server is up, odd while it is down: 0 until the first crash, 1 until the
    /// restart after it, 2 until the next crash, ...
    phase: AtomicUsize,
    acks: AtomicUsize,
    errors: AtomicUsize,
    /// Per task: appends sent and acknowledged in the current phase.
    acks_in_phase: Vec<AtomicUsize>,
}

impl Progress {
    fn new(tasks: usize) -> Arc<Self> {
        Arc::new(Progress {
            stop: AtomicBool::new(false),
            phase: AtomicUsize::new(0),
            acks: AtomicUsize::new(0),
            errors: AtomicUsize::new(0),
            acks_in_phase: (0..tasks).map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    /// Moves to the next phase (the server went down, or came back up).
    fn next_phase(&self) {
        for acks in &self.acks_in_phase {
            acks.store(0, Ordering::SeqCst);
        }
        self.phase.fetch_add(1, Ordering::SeqCst);
    }
}

const TASKS: usize = 4;

/// Appends 1 to 3 events at a time, to the task's own stream or one of two shared ones, until told
/// to stop (or, with `stop_on_error`, until an append fails). Every failure must be a retryable
/// [`Error::Storage`]; every append must finish within [`HANG`].
async fn append_until_stopped(
    store: PostgresStore,
    task: usize,
    progress: Arc<Progress>,
    stop_on_error: bool,
) -> Vec<Sent> {
    let mut sent = Vec::new();
    for n in 1u64.. {
        if progress.stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = if n % 3 == 0 { stream(&format!("shared-{}", n % 2)) } else { stream(&format!("own-{task}")) };
        let events: Vec<NewEvent> = (0..1 + n % 3)
            .map(|i| NewEvent::json("Tested", &serde_json::json!({ "task": task, "n": n, "i": i })).unwrap())
            .collect();
        let sent_in = progress.phase.load(Ordering::SeqCst);
        let outcome = bounded("an append", HANG, store.append(&stream, ExpectedVersion::Any, events.clone())).await;
        let answered_in = progress.phase.load(Ordering::SeqCst);
        let failed = match &outcome {
            Ok(_) => {
                progress.acks.fetch_add(1, Ordering::SeqCst);
                if sent_in == answered_in {
                    progress.acks_in_phase[task].fetch_add(1, Ordering::SeqCst);
                }
                false
            }
            Err(error) => {
                assert!(matches!(error, Error::Storage(_)), "task {task}: an append failed with {error:?}");
                assert!(error.is_retryable());
                progress.errors.fetch_add(1, Ordering::SeqCst);
                true
            }
        };
        let outcome = outcome.map_err(|e| format!("{e:?}"));
        sent.push(Sent { task, stream, events, outcome, phases: (sent_in, answered_in) });
        if failed {
            if stop_on_error {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    sent
}

fn spawn_appenders(
    store: &PostgresStore,
    progress: &Arc<Progress>,
    stop_on_error: bool,
) -> Vec<tokio::task::JoinHandle<Vec<Sent>>> {
    (0..TASKS)
        .map(|task| tokio::spawn(append_until_stopped(store.clone(), task, Arc::clone(progress), stop_on_error)))
        .collect()
}

async fn join_appenders(tasks: Vec<tokio::task::JoinHandle<Vec<Sent>>>) -> Vec<Sent> {
    let mut sent = Vec::new();
    for task in tasks {
        sent.extend(bounded("an appending task", HANG * 2, task).await.unwrap());
    }
    sent
}

/// Checks that the appends of one task, acknowledged one after another, have increasing positions.
fn check_task_order(sent: &[Sent]) {
    for task in 0..TASKS {
        let firsts: Vec<u64> =
            sent.iter().filter(|s| s.task == task).filter_map(|s| s.acked()).map(|a| a.first).collect();
        assert!(firsts.windows(2).all(|w| w[0] < w[1]), "task {task}: positions out of order: {firsts:?}");
    }
}

/// Checks that every append whose outcome was unknown is whole or absent, then retries it with the
/// same ids: a stored one is answered `already_appended` with its stored positions, an absent one is
/// appended now. Returns the retries' acknowledgements and how many were already stored.
async fn retry_unknown(store: &PostgresStore, sent: &[Sent], log: &[RecordedEvent]) -> (Vec<Acked>, usize) {
    let mut retried = Vec::new();
    let mut stored = 0;
    for unknown in sent.iter().filter(|s| s.outcome.is_err()) {
        let ids = unknown.ids();
        let Some(present) = presence(log, &ids) else {
            panic!("an append that failed during the restart is partly in the log: {unknown:?}")
        };
        let result =
            bounded("a retry", HANG, store.append(&unknown.stream, ExpectedVersion::Any, unknown.events.clone()))
                .await
                .unwrap();
        assert_eq!(result.already_appended, present, "the retry of {ids:?} (present: {present}) answered {result:?}");
        if present {
            stored += 1;
            let first = log.iter().find(|e| e.id == ids[0]).unwrap().position;
            assert_eq!(result.first_position, first, "the retry answered other positions than the stored ones");
        }
        retried.push(Acked::new(&unknown.stream, ids, &result));
    }
    (retried, stored)
}

/// Makes each append transaction of the `faults` schema spend a few milliseconds inside its insert
/// and inside its commit (before the commit record), so that a crash mostly lands while a
/// transaction is under way rather than between two: an append failed there must not be
/// acknowledged, and must be absent after the restart.
fn widen_the_transaction(cluster: &PgCluster) -> Result<(), annals_testkit::TestkitError> {
    cluster
        .psql(
            "postgres",
            "CREATE FUNCTION faults.linger() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN PERFORM pg_sleep(0.002); RETURN NULL; END $$;
             CREATE TRIGGER linger_in_insert AFTER INSERT ON faults.events
                 FOR EACH STATEMENT EXECUTE FUNCTION faults.linger();
             CREATE CONSTRAINT TRIGGER linger_in_commit AFTER UPDATE ON faults.head
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION faults.linger();",
        )
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_during_a_restart_fail_retryably_and_nothing_is_lost_or_duplicated() -> TestResult {
    let cluster = PgCluster::start()?;
    let store = own_config(&cluster).open().await?;
    widen_the_transaction(&cluster)?;
    let progress = Progress::new(TASKS);
    let tasks = spawn_appenders(&store, &progress, false);

    // Three crashes, each while every task is appending: each lands on a random step of the
    // writer's transaction.
    for _ in 0..3 {
        eventually("every task has 10 appends acknowledged while the server is up", HANG, || {
            progress.acks_in_phase.iter().all(|n| n.load(Ordering::SeqCst) >= 10)
        })
        .await;
        let errors = progress.errors.load(Ordering::SeqCst);
        // Down from the moment the crash begins.
        progress.next_phase();
        blocking(|| cluster.crash())?;
        eventually("appends fail while the server is down", WAIT, || {
            progress.errors.load(Ordering::SeqCst) >= errors + TASKS
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        blocking(|| cluster.restart())?;
        progress.next_phase();
    }
    // The same store, never reopened, appends again.
    eventually("every task has 10 appends acknowledged after the last restart", HANG, || {
        progress.acks_in_phase.iter().all(|n| n.load(Ordering::SeqCst) >= 10)
    })
    .await;
    progress.stop.store(true, Ordering::SeqCst);
    let sent = join_appenders(tasks).await;

    let failed_while_up: Vec<&Sent> = sent.iter().filter(|s| s.while_up() && s.outcome.is_err()).collect();
    assert!(
        failed_while_up.is_empty(),
        "{} appends failed while the server was up, the first in phase {:?} with {:?}",
        failed_while_up.len(),
        failed_while_up[0].phases,
        failed_while_up[0].outcome
    );
    check_task_order(&sent);
    // The same store, never reopened.
    let acked: Vec<Acked> = sent.iter().filter_map(Sent::acked).collect();
    let log = check_log(&store, &acked, "after the restart").await;
    let (retried, stored) = retry_unknown(&store, &sent, &log).await;
    let all: Vec<Acked> = acked.iter().chain(&retried).cloned().collect();
    let log = check_log(&store, &all, "after the retries").await;
    let sent_events: usize = sent.iter().map(|s| s.events.len()).sum();
    assert_eq!(log.len(), sent_events, "the log holds every append sent, once, and nothing else");
    eprintln!(
        "restarts during appends: {} acknowledged, {} failed, of which {stored} had committed; log at {} events",
        acked.len(),
        retried.len(),
        log.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_fail_after_the_connect_timeout_while_the_server_takes_connections_but_never_answers() -> TestResult {
    let cluster = PgCluster::start()?;
    let store = own_config(&cluster).connect_timeout(Duration::from_millis(500)).open().await?;
    let orders = stream("order-1");
    store.append(&orders, ExpectedVersion::Any, vec![event(1)]).await?;
    blocking(|| cluster.crash())?;
    // Something that takes connections on the server's port and never answers.
    let silent = std::net::TcpListener::bind(("127.0.0.1", cluster.port()))?;
    for n in 2..4 {
        let append = store.append(&orders, ExpectedVersion::Any, vec![event(n)]);
        let error = bounded("an append against a silent server", WAIT, append).await.expect_err("nothing answers");
        assert!(matches!(error, Error::Storage(_)), "{error:?}");
    }
    drop(silent);
    blocking(|| cluster.restart())?;
    let next =
        bounded("an append after the restart", HANG, store.append(&orders, ExpectedVersion::Any, vec![event(4)]))
            .await?;
    assert_eq!(next.first_position, Position::new(2), "the failed appends left nothing");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_handles_head_watch_wakes_after_the_server_restarted() -> TestResult {
    let cluster = PgCluster::start()?;
    let a = own_config(&cluster).open().await?;
    // A second handle: its own writer, listener and pool, as another process would have.
    let b = own_config(&cluster).open().await?;
    let mut watch = b.watch_head();
    let orders = stream("order-1");
    let wake = |position: Position| Position::new(position.get() - 1);

    let first = a.append(&orders, ExpectedVersion::Any, vec![event(1)]).await?;
    bounded("B's wake before the restart", WAIT, watch.wait_past(wake(first.last_position))).await?;

    blocking(|| cluster.stop())?;
    blocking(|| cluster.restart())?;
    // The first append through A after the restart: B learns of it from its reconnected listener,
    // by a notification or by the head it reads on reconnecting.
    let second =
        bounded("A's first append after the restart", HANG, a.append(&orders, ExpectedVersion::Any, vec![event(2)]))
            .await?;
    bounded("B's wake after the restart", WAIT, watch.wait_past(wake(second.last_position))).await?;
    // B has listened again since: this one can only come by notification.
    let third = a.append(&orders, ExpectedVersion::Any, vec![event(3)]).await?;
    let seen = bounded("B's next wake", WAIT, watch.wait_past(wake(third.last_position))).await?;
    assert_eq!(seen, third.last_position);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_a_server_crash() -> TestResult {
    let cluster = PgCluster::start()?;
    // `crash()` is an immediate shutdown: PostgreSQL stops without a checkpoint and replays its WAL
    // on restart, as after a power cut; the operating system (and its page cache) survives, so this
    // checks that an append is acknowledged only once its commit is in the WAL. That the WAL reaches
    // the disk before a commit returns, so that a real power cut loses nothing acknowledged either,
    // is PostgreSQL's own guarantee under fsync=on and synchronous_commit=on: the settings in force.
    assert_eq!(cluster.psql("postgres", "SHOW fsync")?, "on");
    assert_eq!(cluster.psql("postgres", "SHOW synchronous_commit")?, "on");
    let mut acked: Vec<Acked> = Vec::new();
    for round in 0..3 {
        let store = own_config(&cluster).open().await?;
        let progress = Progress::new(TASKS);
        let tasks = spawn_appenders(&store, &progress, true);
        eventually("100 appends are acknowledged", HANG, || progress.acks.load(Ordering::SeqCst) >= 100).await;
        // While appends are in flight: the last ones are acknowledged just before the crash.
        blocking(|| cluster.crash())?;
        let sent = join_appenders(tasks).await;
        drop(store);
        blocking(|| cluster.restart())?;
        acked.extend(sent.iter().filter_map(Sent::acked));
        // Fresh handles, as a restarted process would open.
        let store = own_config(&cluster).open().await?;
        let log = check_log(&store, &acked, &format!("round {round}, after the crash")).await;
        for unknown in sent.iter().filter(|s| s.outcome.is_err()) {
            assert!(presence(&log, &unknown.ids()).is_some(), "round {round}: an append is partly there: {unknown:?}");
        }
        eprintln!("crash round {round}: {} appends acknowledged in all, log at {} events", acked.len(), log.len());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_resumes_from_its_checkpoint_after_the_server_restarted() -> TestResult {
    let cluster = PgCluster::start()?;
    let store = own_config(&cluster).open().await?;
    let log = Log::default();
    let config = SubscriptionConfig::new("resumes")
        .checkpoint_every(25)
        .checkpoint_interval(Duration::from_millis(100))
        .lease_ttl(Duration::from_millis(600));
    let subscription = Subscription::start(store.clone(), config, Probe::new(&log)).await?;

    // A writer that retries each append (same ids) until it is acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (store, stop, appended) = (store.clone(), Arc::clone(&stop), Arc::clone(&appended));
        tokio::spawn(async move {
            for n in 0u64.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let (stream, events) = (stream(&format!("account-{}", n % 5)), vec![event(n)]);
                let deadline = Instant::now() + HANG;
                while let Err(error) =
                    bounded("an append", HANG, store.append(&stream, ExpectedVersion::Any, events.clone())).await
                {
                    assert!(matches!(error, Error::Storage(_)), "an append failed with {error:?}");
                    assert!(Instant::now() < deadline, "appends kept failing for {HANG:?}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                appended.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    eventually("the subscription handled 150 events", HANG, || log.len() >= 150).await;
    blocking(|| cluster.crash())?;
    // No commit can succeed from here: every checkpoint committed before the crash is at least this.
    let committed = subscription.checkpoint();
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocking(|| cluster.restart())?;
    let restarted_at = appended.load(Ordering::SeqCst);
    eventually("100 more appends after the restart", HANG, || appended.load(Ordering::SeqCst) >= restarted_at + 100)
        .await;
    stop.store(true, Ordering::SeqCst);
    bounded("the writer", HANG, writer).await?;
    let head = store.head().await?;
    bounded("the subscription catching up", HANG, subscription.wait_for(head, HANG)).await?;

    assert!(committed > Position::ZERO, "nothing was committed before the crash: the test proved little");
    let positions = log.positions();
    let mut counts = vec![0u32; head.get() as usize + 1];
    for &p in &positions {
        counts[p as usize] += 1;
    }
    let skipped: Vec<usize> = (1..counts.len()).filter(|&p| counts[p] == 0).collect();
    assert!(skipped.is_empty(), "never handled: {skipped:?}");
    let repeated: Vec<usize> = (1..counts.len()).filter(|&p| counts[p] > 1).collect();
    let before_checkpoint: Vec<usize> = repeated.iter().copied().filter(|&p| p as u64 <= committed.get()).collect();
    assert!(
        before_checkpoint.is_empty(),
        "handled again although committed (checkpoint {committed} before the crash): {before_checkpoint:?}"
    );
    eprintln!(
        "subscription across a restart: {} events, {} handled twice (after checkpoint {committed})",
        head,
        repeated.len()
    );
    bounded("stopping the subscription", HANG, subscription.stop()).await?;
    Ok(())
}
