//! Benchmarks of the PostgreSQL event store (`PostgresStore`), each measured beside raw PostgreSQL
//! doing the same writes or reads through plain `tokio_postgres` in the same run, on one throwaway
//! cluster (`annals_testkit`, `fsync` and `synchronous_commit` on). Every event carries a 200-byte
//! JSON payload; throughput is in events per second.
//!
//! | group | what |
//! | --- | --- |
//! | `pg_append_64_appenders` | 64 tokio tasks, each appending one event to its own stream per iteration; the baseline is 64 connections, each committing one event per transaction |
//! | `pg_two_processes` | (not criterion) 64 appenders in one process, then two processes of 32 appenders each appending to one schema at once, for 5 s each; combined events/s, then a gap-free check of the log |
//! | `pg_append_batch_100` | one caller appending 100 events at a time to one stream; the baseline commits the same 100 rows in one transaction |
//! | `pg_live_latency` | (not criterion) process A appends one event at a time, process B sees it; time from just before A's append to B holding the decoded event, p50 / p99 / max of 500 events; the baseline is the same writes with a `pg_notify` and a `LISTEN`ing connection in B |
//! | `pg_replay_1m` | `read_log` of a 1,000,000-event log from the start, every `RecordedEvent` decoded; the baseline selects the same rows in pages of 512 and decodes the same columns by hand |
//!
//! The raw baselines write to tables of their own (`raw_*` schemas) with the same columns and indexes
//! as the store's `events` table, plus a one-row `head` table: every transaction locks the head row
//! (`SELECT ... FOR UPDATE`), inserts its rows (one `INSERT ... VALUES` for one event, one `unnest`
//! multi-row insert for more), updates the head and commits, the three last statements pipelined.
//! They do not look up event ids or stream versions, keep no `streams` table and send no
//! notification (except for the latency baseline), which the store does in each group.
//!
//! Criterion cannot report percentiles, and it cannot time two processes, so `pg_two_processes` and
//! `pg_live_latency` are plain measurement programs: they print their figures to stderr, on lines
//! starting with their names. The second process is this bench binary run again with
//! `ANNALS_BENCH_PG_ROLE` set (see `child`); it prints its counts on stdout for the parent. Other
//! diagnostics: `postgres:` (the server's settings), `fixture:` (the 1M-event build), and after each
//! write benchmark its commit group sizes (checking the log is gap-free) and the CPU time per event or
//! append of this process and of the PostgreSQL server processes (from `/proc`). With
//! `ANNALS_BENCH_PG_STATEMENTS=1` the cluster loads `pg_stat_statements` and each group prints its
//! statements by total time (`statements:` lines).
//!
//! A criterion filter selects groups as usual; the two plain programs run when the filter is a
//! substring of their name (`|` separates alternatives). The whole run takes about 2 minutes on 2
//! cores. Figures, and the machine they were measured on, are in `docs/PERFORMANCE.md`.
//!
//! ```text
//! cargo bench --features postgres --bench postgres
//! cargo bench --features postgres --bench postgres -- 'pg_replay|pg_live'   # some groups only
//! # the figures and diagnostics only:
//! cargo bench --features postgres --bench postgres 2>&1 | grep -E '^[a-z_0-9]+/|time:|thrpt:|^[a-z_0-9]+:'
//! ```
#![allow(clippy::print_stderr, missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::cell::{Cell, OnceCell};
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{multi_thread_runtime, payload, RawEvent, PAYLOAD_LEN};

use annals::tokio_postgres::{self, AsyncMessage, Client, NoTls, Row, Statement};
use annals::{EventStore, ExpectedVersion, LogFilter, NewEvent, Position, PostgresConfig, PostgresStore, ReadLog};
use annals::{StreamAppend, StreamId};
use annals_testkit::PgCluster;
use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use tokio::runtime::Runtime;
use uuid::Uuid;

const EVENT_TYPE: &str = "OrderPlaced";
/// Concurrent appenders in the group-commit benchmark.
const APPENDERS: u64 = 64;
/// Events per append in the batched benchmark.
const BATCH: u64 = 100;
/// Events in the replay fixture, and per append while building it.
const REPLAY_EVENTS: u64 = 1_000_000;
const FIXTURE_APPEND: u64 = 1000;
/// Events per page of the raw paged replay: the store's own page size (`read_log`).
const RAW_PAGE: i64 = 512;
/// How long each side of the two-process measurement appends.
const WINDOW: Duration = Duration::from_secs(5);
/// Latency samples kept, after a warm-up of `LATENCY_WARMUP` events, and the pause between appends.
const LATENCY_SAMPLES: usize = 500;
const LATENCY_WARMUP: usize = 20;
const LATENCY_PAUSE: Duration = Duration::from_millis(5);

/// The child role of this binary, and what it is told.
const ROLE_VAR: &str = "ANNALS_BENCH_PG_ROLE";
const URL_VAR: &str = "ANNALS_BENCH_PG_URL";
const SCHEMA_VAR: &str = "ANNALS_BENCH_PG_SCHEMA";
const START_VAR: &str = "ANNALS_BENCH_PG_START_US";

fn main() {
    if let Ok(role) = std::env::var(ROLE_VAR) {
        child(&role);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

// ---------------------------------------------------------------------------------------------------
// The cluster, and small helpers.
// ---------------------------------------------------------------------------------------------------

/// Whether `pg_stat_statements` is loaded (`ANNALS_BENCH_PG_STATEMENTS=1`).
fn statements_on() -> bool {
    std::env::var("ANNALS_BENCH_PG_STATEMENTS").is_ok_and(|v| v == "1")
}

/// The bench's cluster, started on first use (and stopped by its watchdog when the bench exits).
fn cluster() -> &'static PgCluster {
    static READY: OnceLock<&'static PgCluster> = OnceLock::new();
    READY.get_or_init(|| {
        let cluster = annals_testkit::shared().unwrap();
        if statements_on() {
            cluster.psql("postgres", "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'").unwrap();
            cluster.stop().unwrap();
            cluster.restart().unwrap();
            cluster.psql("postgres", "CREATE EXTENSION pg_stat_statements").unwrap();
        }
        let settings = cluster
            .psql(
                "postgres",
                "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name) FROM pg_settings \
                 WHERE name IN ('server_version', 'fsync', 'synchronous_commit', 'wal_sync_method', 'commit_delay', \
                 'shared_buffers', 'max_wal_size', 'full_page_writes', 'wal_level')",
            )
            .unwrap();
        eprintln!("postgres: {settings}");
        cluster
    })
}

/// Prints the statements of the last group by total time, then resets the counts.
fn report_statements(what: &str) {
    if !statements_on() {
        return;
    }
    let top = cluster()
        .psql(
            "postgres",
            "SELECT calls || ' calls, ' || round(total_exec_time::numeric, 1) || ' ms total, ' || \
             round(mean_exec_time::numeric, 3) || ' ms mean, ' || rows || ' rows: ' || \
             left(regexp_replace(query, '\\s+', ' ', 'g'), 90) \
             FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 10",
        )
        .unwrap();
    for line in top.lines() {
        eprintln!("statements: {what}: {line}");
    }
    cluster().psql("postgres", "SELECT pg_stat_statements_reset()").unwrap();
}

/// Whether the plain measurement `name` runs: no filter, or a filter alternative it contains.
fn selected(name: &str) -> bool {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    match args.next() {
        None => true,
        Some(filter) => filter.split('|').any(|part| name.contains(part)),
    }
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// A 200-byte JSON payload carrying the wall-clock time it was made, for the latency measurement.
fn stamped_payload(sent_us: i64) -> String {
    let mut json = format!(r#"{{"sent_us":{sent_us},"note":""#);
    json.extend(std::iter::repeat_n('x', PAYLOAD_LEN - json.len() - 2));
    json.push_str("\"}");
    assert_eq!(json.len(), PAYLOAD_LEN);
    json
}

#[derive(Deserialize)]
struct Stamp {
    sent_us: i64,
}

fn sent_us(payload: &str) -> i64 {
    serde_json::from_str::<Stamp>(payload).unwrap().sent_us
}

async fn open_store(schema: &str) -> PostgresStore {
    PostgresConfig::new(cluster_url()).schema(schema).pool_size(4).open().await.unwrap()
}

/// The cluster's URL: from the environment in a child process.
fn cluster_url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| cluster().url())
}

async fn connect() -> Client {
    let (client, connection) = tokio_postgres::connect(&cluster_url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Prints how many events the log of `schema` holds in how many commit groups (one `recorded_us`
/// per group), after checking it is gap-free and ends at its head.
fn report_log(schema: &str, what: &str) {
    let line = cluster()
        .psql(
            "postgres",
            &format!(
                "SELECT count(*), coalesce(min(position), 0), coalesce(max(position), 0), \
                 (SELECT position FROM {schema}.head), count(DISTINCT recorded_us) FROM {schema}.events"
            ),
        )
        .unwrap();
    let n: Vec<u64> = line.split('|').map(|v| v.parse().unwrap()).collect();
    let (count, min, max, head, groups) = (n[0], n[1], n[2], n[3], n[4]);
    assert!(count == max && head == max && (count == 0 || min == 1), "{schema}: the log has a gap: {line}");
    eprintln!(
        "{what}: {count} events in {groups} commit groups ({:.1} events per group), positions 1..={max} gap-free",
        count as f64 / groups.max(1) as f64
    );
}

/// CPU time used so far (user + system, clock ticks of 10 ms) by this process, and by each of the
/// cluster's server processes: the postmaster's children (every backend, the WAL writer, the
/// checkpointer...), from `/proc`.
struct CpuSnapshot {
    client: u64,
    server: HashMap<u32, u64>,
}

fn cpu_now() -> CpuSnapshot {
    static POSTMASTER: OnceLock<u32> = OnceLock::new();
    // (parent pid, user + system ticks) of a `/proc/<pid>/stat` line.
    fn parse(stat: &str) -> Option<(u32, u64)> {
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some((
            fields.get(1)?.parse().ok()?,
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
        ))
    }
    let read = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| parse(&s));
    let postmaster = *POSTMASTER.get_or_init(|| {
        let checkpointer =
            cluster().psql("postgres", "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'").unwrap();
        read(&checkpointer).unwrap().0
    });
    let mut server = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Ok(pid) = name.to_string_lossy().parse::<u32>() else { continue };
        if let Some((parent, ticks)) = read(&pid.to_string()) {
            if parent == postmaster {
                server.insert(pid, ticks);
            }
        }
    }
    CpuSnapshot { client: read("self").unwrap().1, server }
}

/// CPU time spent inside a benchmark's timed routine (warm-up included), on either side. A server
/// process that ends meanwhile takes its time with it (the connections of a benchmark live as long as
/// it does).
#[derive(Default)]
struct CpuMeter {
    client: Cell<u64>,
    server: Cell<u64>,
    iters: Cell<u64>,
}

impl CpuMeter {
    fn add(&self, started: CpuSnapshot, iters: u64) {
        let now = cpu_now();
        let server: u64 =
            now.server.iter().map(|(pid, ticks)| ticks.saturating_sub(*started.server.get(pid).unwrap_or(&0))).sum();
        self.client.set(self.client.get() + now.client.saturating_sub(started.client));
        self.server.set(self.server.get() + server);
        self.iters.set(self.iters.get() + iters);
    }

    /// Prints the CPU time per `unit`, of which one iteration holds `per_iter`.
    fn report(&self, what: &str, unit: &str, per_iter: u64) {
        let units = (self.iters.get() * per_iter) as u32;
        let tick = Duration::from_millis(10);
        if units > 0 {
            eprintln!(
                "{what}: CPU per {unit} (user + system, /proc, 10 ms ticks over {units} {unit}s): this process {:.1?}, \
                 PostgreSQL server {:.1?}",
                tick * self.client.get() as u32 / units,
                tick * self.server.get() as u32 / units
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Raw PostgreSQL: the same writes through plain tokio_postgres.
// ---------------------------------------------------------------------------------------------------

/// The tables of a raw baseline: the store's `events` columns and indexes, and a head row.
fn create_raw_schema(schema: &str) {
    cluster()
        .psql(
            "postgres",
            &format!(
                "CREATE SCHEMA {schema};
                 CREATE TABLE {schema}.head (id smallint PRIMARY KEY CHECK (id = 1), position bigint NOT NULL,
                     recorded_us bigint NOT NULL);
                 INSERT INTO {schema}.head VALUES (1, 0, 0);
                 CREATE TABLE {schema}.events (
                     position bigint PRIMARY KEY CHECK (position > 0),
                     id uuid NOT NULL UNIQUE,
                     stream text COLLATE \"C\" NOT NULL,
                     version bigint NOT NULL CHECK (version > 0),
                     event_type text COLLATE \"C\" NOT NULL,
                     schema_version integer NOT NULL,
                     recorded_us bigint NOT NULL,
                     occurred_us bigint NOT NULL,
                     metadata text NOT NULL,
                     payload text NOT NULL,
                     UNIQUE (stream, version));
                 CREATE INDEX ON {schema}.events (event_type, position);
                 CREATE INDEX ON {schema}.events (recorded_us, position);"
            ),
        )
        .unwrap();
}

/// One connection writing to a raw schema.
struct RawWriter {
    client: Client,
    lock_head: Statement,
    insert_one: Statement,
    insert_many: Statement,
    update_head: Statement,
    notify: Statement,
}

impl RawWriter {
    async fn connect(schema: &str) -> RawWriter {
        let client = connect().await;
        let columns = "position, id, stream, version, event_type, schema_version, recorded_us, occurred_us, \
                       metadata, payload";
        RawWriter {
            lock_head: client
                .prepare(&format!("SELECT position FROM {schema}.head WHERE id = 1 FOR UPDATE"))
                .await
                .unwrap(),
            insert_one: client
                .prepare(&format!(
                    "INSERT INTO {schema}.events ({columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ))
                .await
                .unwrap(),
            insert_many: client
                .prepare(&format!(
                    "INSERT INTO {schema}.events ({columns}) SELECT * FROM unnest($1::bigint[], $2::uuid[], \
                     $3::text[], $4::bigint[], $5::text[], $6::int4[], $7::bigint[], $8::bigint[], $9::text[], \
                     $10::text[])"
                ))
                .await
                .unwrap(),
            update_head: client
                .prepare(&format!("UPDATE {schema}.head SET position = $1, recorded_us = $2 WHERE id = 1"))
                .await
                .unwrap(),
            notify: client.prepare("SELECT pg_notify($1, $2)").await.unwrap(),
            client,
        }
    }

    /// One transaction: lock the head, insert `payloads` as the events of `stream` from version
    /// `first_version`, move the head (and notify `channel` of it), commit. Returns the new head.
    async fn append(&self, stream: &str, first_version: i64, payloads: &[&str], channel: Option<&str>) -> i64 {
        let c = &self.client;
        let (_, row) =
            futures_util::future::try_join(c.batch_execute("BEGIN"), c.query_one(&self.lock_head, &[])).await.unwrap();
        let head: i64 = row.get(0);
        let now = now_us();
        let n = payloads.len() as i64;
        let new_head = head + n;
        let insert = async {
            if n == 1 {
                let id = Uuid::now_v7();
                c.execute(
                    &self.insert_one,
                    &[&new_head, &id, &stream, &first_version, &EVENT_TYPE, &1i32, &now, &now, &"{}", &payloads[0]],
                )
                .await
            } else {
                let positions: Vec<i64> = (head + 1..=new_head).collect();
                let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
                let streams = vec![stream; payloads.len()];
                let versions: Vec<i64> = (first_version..first_version + n).collect();
                let types = vec![EVENT_TYPE; payloads.len()];
                let schema_versions = vec![1i32; payloads.len()];
                let times = vec![now; payloads.len()];
                let metadata = vec!["{}"; payloads.len()];
                c.execute(
                    &self.insert_many,
                    &[
                        &positions,
                        &ids,
                        &streams,
                        &versions,
                        &types,
                        &schema_versions,
                        &times,
                        &times,
                        &metadata,
                        &payloads,
                    ],
                )
                .await
            }
        };
        let head_text = new_head.to_string();
        let notify = async {
            match channel {
                Some(channel) => c.execute(&self.notify, &[&channel, &head_text]).await,
                None => Ok(0),
            }
        };
        futures_util::future::try_join4(
            insert,
            c.execute(&self.update_head, &[&new_head, &now]),
            notify,
            c.batch_execute("COMMIT"),
        )
        .await
        .unwrap();
        new_head
    }
}

// ---------------------------------------------------------------------------------------------------
// 1. 64 concurrent appenders, one event each.
// ---------------------------------------------------------------------------------------------------

fn concurrent_appends(c: &mut Criterion) {
    let runtime = multi_thread_runtime();
    let payload: &'static str = payload().leak();
    let mut group = c.benchmark_group("pg_append_64_appenders");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(APPENDERS));

    // Each side is set up when its benchmark runs (a criterion filter may skip it).
    let (schema, raw_schema) = ("bench_append64", "raw_append64");
    let mut store = OnceCell::new();
    let streams: Arc<Vec<StreamId>> =
        Arc::new((0..APPENDERS).map(|i| StreamId::new(format!("appender-{i}")).unwrap()).collect());
    // One iteration is one event per appender; `iters` iterations are 64 tasks appending `iters`
    // events each to their own streams, all at once.
    let cpu = CpuMeter::default();
    group.bench_function("annals", |b| {
        let store = store.get_or_init(|| runtime.block_on(open_store(schema)));
        b.to_async(&runtime).iter_custom(|iters| {
            let (store, streams, cpu) = (store.clone(), Arc::clone(&streams), &cpu);
            async move {
                let cpu_start = cpu_now();
                let start = Instant::now();
                let tasks: Vec<_> = (0..APPENDERS as usize)
                    .map(|task| {
                        let (store, streams) = (store.clone(), Arc::clone(&streams));
                        tokio::spawn(async move {
                            for _ in 0..iters {
                                let event = NewEvent::raw(EVENT_TYPE, payload);
                                store.append(&streams[task], ExpectedVersion::Any, vec![event]).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                let elapsed = start.elapsed();
                cpu.add(cpu_start, iters);
                elapsed
            }
        });
    });
    if store.take().is_some() {
        cpu.report("pg_append_64_appenders/annals", "event", APPENDERS);
        report_log(schema, "pg_append_64_appenders/annals");
        report_statements("pg_append_64_appenders/annals");
    }

    let mut writers = OnceCell::new();
    let raw_cpu = CpuMeter::default();
    group.bench_function("raw_txn_per_event_64_conns", |b| {
        let writers: &Vec<Arc<(RawWriter, AtomicI64)>> = writers.get_or_init(|| {
            create_raw_schema(raw_schema);
            runtime.block_on(async {
                let mut writers = Vec::new();
                for _ in 0..APPENDERS {
                    writers.push(Arc::new((RawWriter::connect(raw_schema).await, AtomicI64::new(1))));
                }
                writers
            })
        });
        b.to_async(&runtime).iter_custom(|iters| {
            let (writers, cpu) = (writers.clone(), &raw_cpu);
            async move {
                let cpu_start = cpu_now();
                let start = Instant::now();
                let tasks: Vec<_> = writers
                    .into_iter()
                    .enumerate()
                    .map(|(task, writer)| {
                        tokio::spawn(async move {
                            let stream = format!("appender-{task}");
                            let (writer, version) = &*writer;
                            for _ in 0..iters {
                                let v = version.fetch_add(1, Ordering::Relaxed);
                                writer.append(&stream, v, &[payload], None).await;
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                let elapsed = start.elapsed();
                cpu.add(cpu_start, iters);
                elapsed
            }
        });
    });
    if writers.take().is_some() {
        raw_cpu.report("pg_append_64_appenders/raw_txn_per_event_64_conns", "event", APPENDERS);
        report_log(raw_schema, "pg_append_64_appenders/raw_txn_per_event_64_conns");
        report_statements("pg_append_64_appenders/raw_txn_per_event_64_conns");
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------------
// Two writer processes of 32 appenders each (and one of 64, measured the same way).
// ---------------------------------------------------------------------------------------------------

/// `tasks` appenders of `store`, each appending one event at a time to its own stream
/// `<prefix>-<task>` from the wall-clock time `start_us` for `WINDOW`. Returns the appends
/// acknowledged within the window, and all of them (an append in flight at the end still counts in
/// the log).
async fn append_for_window(store: &PostgresStore, prefix: &str, tasks: u64, start_us: i64) -> (u64, u64) {
    let payload: &'static str = payload().leak();
    let start = Instant::now() + Duration::from_micros((start_us - now_us()).max(0) as u64);
    let end = start + WINDOW;
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let store = store.clone();
            let stream = StreamId::new(format!("{prefix}-{task}")).unwrap();
            tokio::spawn(async move {
                tokio::time::sleep_until(start.into()).await;
                let (mut within, mut all) = (0, 0);
                while Instant::now() < end {
                    let event = NewEvent::raw(EVENT_TYPE, payload);
                    store.append(&stream, ExpectedVersion::Any, vec![event]).await.unwrap();
                    all += 1;
                    within += u64::from(Instant::now() <= end);
                }
                (within, all)
            })
        })
        .collect();
    let mut counts = (0, 0);
    for handle in handles {
        let (within, all) = handle.await.unwrap();
        counts.0 += within;
        counts.1 += all;
    }
    counts
}

/// Runs this bench binary again as a child process in `role`, with `vars`; its stdout is piped.
fn spawn_child(role: &str, schema: &str, vars: &[(&str, String)]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env(ROLE_VAR, role)
        .env(URL_VAR, cluster().url())
        .env(SCHEMA_VAR, schema)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The child's stdout, once it has exited successfully.
fn child_output(child: Child) -> String {
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the child process failed: {:?}", output.status);
    String::from_utf8(output.stdout).unwrap()
}

fn two_processes(_: &mut Criterion) {
    if !selected("pg_two_processes") {
        return;
    }
    let runtime = multi_thread_runtime();
    let per_s = |events: u64| events as f64 / WINDOW.as_secs_f64();

    let schema = "bench_one_process";
    let (within, all) = runtime.block_on(async {
        let store = open_store(schema).await;
        append_for_window(&store, "p0", APPENDERS, now_us() + 200_000).await
    });
    eprintln!(
        "pg_two_processes: one process of 64 appenders: {within} events acknowledged in {WINDOW:?}: {:.0} events/s",
        per_s(within)
    );
    report_log(schema, "pg_two_processes/one_process");
    assert_eq!(cluster().psql("postgres", &format!("SELECT count(*) FROM {schema}.events")).unwrap(), all.to_string());

    let schema = "bench_two_processes";
    let (parent, child) = runtime.block_on(async {
        let store = open_store(schema).await;
        let start_us = now_us() + 1_500_000;
        let child = spawn_child("appenders", schema, &[(START_VAR, start_us.to_string())]);
        let parent = append_for_window(&store, "p0", APPENDERS / 2, start_us).await;
        (parent, child)
    });
    let child = child_output(child);
    let counts: Vec<u64> = child.split_whitespace().map(|v| v.parse().unwrap()).collect();
    let (within, all) = (parent.0 + counts[0], parent.1 + counts[1]);
    eprintln!(
        "pg_two_processes: two processes of 32 appenders: {within} events acknowledged in {WINDOW:?} \
         ({} + {}): {:.0} events/s combined",
        parent.0,
        counts[0],
        per_s(within)
    );
    report_log(schema, "pg_two_processes/two_processes");
    assert_eq!(cluster().psql("postgres", &format!("SELECT count(*) FROM {schema}.events")).unwrap(), all.to_string());
    for prefix in ["p0", "p1"] {
        let groups = cluster()
            .psql(
                "postgres",
                &format!(
                    "SELECT count(*) || ' events in ' || count(DISTINCT recorded_us) || ' groups' \
                     FROM {schema}.events WHERE stream LIKE '{prefix}-%'"
                ),
            )
            .unwrap();
        eprintln!("pg_two_processes: process {prefix}: {groups}");
    }
    report_statements("pg_two_processes");
}

// ---------------------------------------------------------------------------------------------------
// 2. 100-event batches to one stream.
// ---------------------------------------------------------------------------------------------------

fn batched_appends(c: &mut Criterion) {
    let runtime = multi_thread_runtime();
    let payload = payload();
    let mut group = c.benchmark_group("pg_append_batch_100");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(BATCH));

    let (schema, raw_schema) = ("bench_batch100", "raw_batch100");
    let mut store = OnceCell::new();
    let stream = StreamId::new("order-1").unwrap();
    let mut expected = ExpectedVersion::NoStream;
    let cpu = CpuMeter::default();
    group.bench_function("annals", |b| {
        let store = store.get_or_init(|| runtime.block_on(open_store(schema)));
        b.iter_custom(|iters| {
            let cpu_start = cpu_now();
            let start = Instant::now();
            for _ in 0..iters {
                let events = (0..BATCH).map(|_| NewEvent::raw(EVENT_TYPE, payload.as_str())).collect();
                let result = runtime.block_on(store.append(&stream, expected, events)).unwrap();
                expected = ExpectedVersion::Exact(result.version);
            }
            let elapsed = start.elapsed();
            cpu.add(cpu_start, iters);
            elapsed
        });
    });
    if store.take().is_some() {
        cpu.report("pg_append_batch_100/annals", "append", 1);
        report_log(schema, "pg_append_batch_100/annals");
        report_statements("pg_append_batch_100/annals");
    }

    let mut writer = OnceCell::new();
    let payloads = vec![payload.as_str(); BATCH as usize];
    let mut version = 1;
    let raw_cpu = CpuMeter::default();
    group.bench_function("raw_txn_100_rows", |b| {
        let writer = writer.get_or_init(|| {
            create_raw_schema(raw_schema);
            runtime.block_on(RawWriter::connect(raw_schema))
        });
        b.iter_custom(|iters| {
            let cpu_start = cpu_now();
            let start = Instant::now();
            for _ in 0..iters {
                runtime.block_on(writer.append("order-1", version, &payloads, None));
                version += BATCH as i64;
            }
            let elapsed = start.elapsed();
            raw_cpu.add(cpu_start, iters);
            elapsed
        });
    });
    if writer.take().is_some() {
        raw_cpu.report("pg_append_batch_100/raw_txn_100_rows", "append", 1);
        report_log(raw_schema, "pg_append_batch_100/raw_txn_100_rows");
        report_statements("pg_append_batch_100/raw_txn_100_rows");
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------------
// 4. Cross-process live latency.
// ---------------------------------------------------------------------------------------------------

/// p50 / p99 / max of `samples` (microseconds), as a line.
fn distribution(samples: &mut [i64]) -> String {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let ms = |us: i64| format!("{:.2} ms", us as f64 / 1000.0);
    format!("p50 {}, p99 {}, max {} over {} events", ms(at(0.5)), ms(at(0.99)), ms(at(1.0)), samples.len())
}

fn live_latency(_: &mut Criterion) {
    if !selected("pg_live_latency") {
        return;
    }
    let runtime = multi_thread_runtime();
    let total = LATENCY_WARMUP + LATENCY_SAMPLES;

    // Annals: this process watches the head and reads what the child appends.
    let schema = "bench_latency";
    let (mut samples, child) = runtime.block_on(async {
        let store = open_store(schema).await;
        let mut head = store.watch_head();
        let child = spawn_child("latency_annals", schema, &[]);
        let (mut seen, mut next, mut samples) = (Position::ZERO, Position::FIRST, Vec::with_capacity(total));
        while samples.len() < total {
            seen = tokio::time::timeout(Duration::from_secs(30), head.wait_past(seen)).await.unwrap().unwrap();
            loop {
                let chunk = store.read_log_chunk(next, 512, &LogFilter::all()).await.unwrap();
                for event in &chunk.events {
                    samples.push(now_us() - sent_us(&event.payload));
                }
                next = chunk.next;
                if chunk.end {
                    break;
                }
            }
        }
        (samples, child)
    });
    let acks = child_output(child);
    eprintln!(
        "pg_live_latency/annals: append start (process A) -> event read in process B: {}",
        distribution(&mut samples[LATENCY_WARMUP..])
    );
    eprintln!("pg_live_latency/annals: append start -> durable ack in A: {}", acks.trim());
    report_statements("pg_live_latency/annals");

    // Raw: the child commits the same writes with a pg_notify; this process LISTENs and reads the rows.
    let schema = "raw_latency";
    create_raw_schema(schema);
    let (mut samples, child) = runtime.block_on(async {
        let (client, mut connection) = tokio_postgres::connect(&cluster_url(), NoTls).await.unwrap();
        let (hints, mut hinted) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                if let AsyncMessage::Notification(n) = message.unwrap() {
                    let _ = hints.send(n.payload().parse::<i64>().unwrap());
                }
            }
        });
        let read = client
            .prepare(&format!("SELECT position, payload FROM {schema}.events WHERE position > $1 ORDER BY position"))
            .await
            .unwrap();
        client.batch_execute("LISTEN raw_latency_head").await.unwrap();
        let child = spawn_child("latency_raw", schema, &[]);
        let (mut seen, mut samples) = (0i64, Vec::with_capacity(total));
        while samples.len() < total {
            let head = tokio::time::timeout(Duration::from_secs(30), hinted.recv()).await.unwrap().unwrap();
            if head <= seen {
                continue;
            }
            for row in client.query(&read, &[&seen]).await.unwrap() {
                samples.push(now_us() - sent_us(row.get(1)));
                seen = row.get(0);
            }
        }
        driver.abort();
        (samples, child)
    });
    let acks = child_output(child);
    eprintln!(
        "pg_live_latency/raw_listen_notify: transaction start (process A) -> row read in process B: {}",
        distribution(&mut samples[LATENCY_WARMUP..])
    );
    eprintln!("pg_live_latency/raw_listen_notify: transaction start -> commit acknowledged in A: {}", acks.trim());
}

// ---------------------------------------------------------------------------------------------------
// 3. Full replay of 1,000,000 events.
// ---------------------------------------------------------------------------------------------------

/// Metadata as the raw reader decodes them: the same fields as the store's `Metadata`.
#[derive(Deserialize)]
struct RawMetadata {
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    causation_id: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// One row of the events table decoded by hand into owned values, with the checks the store makes
/// (positive position and version, a stream name without control characters, metadata as JSON).
fn decode_row(row: &Row) -> RawEvent {
    let position: i64 = row.get(0);
    let stream: &str = row.get(2);
    assert!(!stream.is_empty() && stream.len() <= 256 && !stream.bytes().any(|b| b < 0x20 || b == 0x7f));
    let version: i64 = row.get(3);
    assert!(position > 0 && version > 0);
    let micros = |us: i64| chrono::DateTime::from_timestamp_micros(us).unwrap();
    let metadata: RawMetadata = serde_json::from_str(row.get(8)).unwrap();
    RawEvent {
        id: row.get(1),
        stream: stream.to_owned(),
        version: version as u64,
        position: position as u64,
        event_type: row.get(4),
        schema_version: row.get::<_, i32>(5) as u32,
        recorded_at: micros(row.get(6)),
        occurred_at: micros(row.get(7)),
        correlation_id: metadata.correlation_id,
        causation_id: metadata.causation_id,
        headers: metadata.headers,
        payload: row.get(9),
    }
}

/// The 1M-event store, built with 1000-event appends, and a raw connection to read its table.
fn build_fixture(runtime: &Runtime, schema: &str) -> PostgresStore {
    let store = runtime.block_on(open_store(schema));
    let payload: &'static str = payload().leak();
    let started = Instant::now();
    // 4 callers, each appending 10 streams of 100 events at a time.
    let appends = Arc::new(AtomicU64::new(0));
    runtime.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (store, appends) = (store.clone(), Arc::clone(&appends));
                tokio::spawn(async move {
                    loop {
                        let n = appends.fetch_add(1, Ordering::Relaxed);
                        if n >= REPLAY_EVENTS / FIXTURE_APPEND {
                            break;
                        }
                        let parts = (0..10)
                            .map(|i| {
                                let stream = StreamId::new(format!("order-{}", (n * 10 + i) % 10_000)).unwrap();
                                let events = (0..FIXTURE_APPEND / 10).map(|_| NewEvent::raw(EVENT_TYPE, payload));
                                StreamAppend::new(stream, ExpectedVersion::Any, events.collect())
                            })
                            .collect();
                        store.append_multi(parts).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    let built = started.elapsed();
    eprintln!(
        "fixture: {REPLAY_EVENTS} events in {} appends of {FIXTURE_APPEND} (4 callers) in {built:.1?}: {:.0} events/s",
        REPLAY_EVENTS / FIXTURE_APPEND,
        REPLAY_EVENTS as f64 / built.as_secs_f64()
    );
    report_log(schema, "fixture");
    let started = Instant::now();
    cluster().psql("postgres", &format!("VACUUM (ANALYZE) {schema}.events; CHECKPOINT")).unwrap();
    let size = cluster()
        .psql("postgres", &format!("SELECT pg_size_pretty(pg_total_relation_size('{schema}.events'))"))
        .unwrap();
    eprintln!("fixture: VACUUM (ANALYZE) + CHECKPOINT in {:.1?}; events table with indexes: {size}", started.elapsed());
    report_statements("fixture");
    store
}

fn replay(c: &mut Criterion) {
    let runtime = multi_thread_runtime();
    let schema = "bench_replay";
    let fixture = OnceCell::new();
    let store = || fixture.get_or_init(|| build_fixture(&runtime, schema));
    let connection = OnceCell::new();
    let client = || connection.get_or_init(|| runtime.block_on(connect()));

    let mut group = c.benchmark_group("pg_replay_1m");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15))
        .throughput(Throughput::Elements(REPLAY_EVENTS));
    group.bench_function("annals_read_log", |b| {
        let store = store();
        b.iter(|| {
            let count = runtime.block_on(async {
                let log = store.read_log(ReadLog::from_start());
                log.try_fold(0, |n, event| async move { Ok(n + u64::from(!black_box(event).payload.is_empty())) })
                    .await
                    .unwrap()
            });
            assert_eq!(count, REPLAY_EVENTS);
        });
    });
    // The baseline: keyset pages of 512, as the store reads, every column decoded by hand.
    group.bench_function(BenchmarkId::new("raw_pages_decode", RAW_PAGE), |b| {
        store();
        let client = client();
        let page = runtime
            .block_on(client.prepare(&format!(
                "SELECT position, id, stream, version, event_type, schema_version, recorded_us, occurred_us, \
                 metadata, payload FROM {schema}.events WHERE position >= $1 ORDER BY position LIMIT $2"
            )))
            .unwrap();
        b.iter(|| {
            let count = runtime.block_on(async {
                let (mut from, mut count) = (1i64, 0u64);
                loop {
                    let rows = client.query(&page, &[&from, &RAW_PAGE]).await.unwrap();
                    for row in &rows {
                        let event = decode_row(row);
                        assert_eq!(event.position, from as u64);
                        from += 1;
                        count += u64::from(!black_box(event).payload.is_empty());
                    }
                    if (rows.len() as i64) < RAW_PAGE {
                        break count;
                    }
                }
            });
            assert_eq!(count, REPLAY_EVENTS);
        });
    });
    // A cheaper reader, not the ratio's baseline: one query streaming every row, decoded the same way.
    group.bench_function("raw_one_query_decode", |b| {
        store();
        let client = client();
        let all = runtime
            .block_on(client.prepare(&format!(
                "SELECT position, id, stream, version, event_type, schema_version, recorded_us, occurred_us, \
                 metadata, payload FROM {schema}.events ORDER BY position"
            )))
            .unwrap();
        b.iter(|| {
            let count = runtime.block_on(async {
                let rows = client.query_raw(&all, std::iter::empty::<i64>()).await.unwrap();
                rows.try_fold(0u64, |n, row| async move {
                    Ok(n + u64::from(!black_box(decode_row(&row)).payload.is_empty()))
                })
                .await
                .unwrap()
            });
            assert_eq!(count, REPLAY_EVENTS);
        });
    });
    group.finish();
    if fixture.get().is_some() {
        report_statements("pg_replay_1m");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = concurrent_appends, two_processes, batched_appends, live_latency, replay
}

// ---------------------------------------------------------------------------------------------------
// The child process of the two-process measurements.
// ---------------------------------------------------------------------------------------------------

/// Runs `role` and prints its result on stdout: `appenders` (32 appenders for `WINDOW`),
/// `latency_annals` and `latency_raw` (one append at a time with a pause; prints the ack latency).
fn child(role: &str) {
    let runtime = multi_thread_runtime();
    let schema = std::env::var(SCHEMA_VAR).unwrap();
    let line = runtime.block_on(async {
        match role {
            "appenders" => {
                let start_us: i64 = std::env::var(START_VAR).unwrap().parse().unwrap();
                let store = open_store(&schema).await;
                let (within, all) = append_for_window(&store, "p1", APPENDERS / 2, start_us).await;
                format!("{within} {all}")
            }
            "latency_annals" => {
                let store = open_store(&schema).await;
                let stream = StreamId::new("latency").unwrap();
                let mut acks = Vec::new();
                for _ in 0..LATENCY_WARMUP + LATENCY_SAMPLES {
                    let sent = now_us();
                    let event = NewEvent::raw(EVENT_TYPE, stamped_payload(sent));
                    store.append(&stream, ExpectedVersion::Any, vec![event]).await.unwrap();
                    acks.push(now_us() - sent);
                    tokio::time::sleep(LATENCY_PAUSE).await;
                }
                distribution(&mut acks[LATENCY_WARMUP..])
            }
            "latency_raw" => {
                let writer = RawWriter::connect(&schema).await;
                let mut acks = Vec::new();
                for version in 1..=(LATENCY_WARMUP + LATENCY_SAMPLES) as i64 {
                    let sent = now_us();
                    let payload = stamped_payload(sent);
                    writer.append("latency", version, &[payload.as_str()], Some("raw_latency_head")).await;
                    acks.push(now_us() - sent);
                    tokio::time::sleep(LATENCY_PAUSE).await;
                }
                distribution(&mut acks[LATENCY_WARMUP..])
            }
            other => panic!("unknown {ROLE_VAR}: {other}"),
        }
    });
    writeln!(std::io::stdout().lock(), "{line}").unwrap();
}
