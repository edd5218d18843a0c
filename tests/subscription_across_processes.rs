//! Competing consumers in several processes on PostgreSQL: two worker processes share one
//! subscription's partitions through the database; one is killed with SIGKILL while events keep
//! coming. The survivor takes its partitions over once their leases expire (a bounded time, set by
//! `lease_ttl`), nothing is skipped, every stream stays in order within each process, and events are
//! handled twice only in the killed worker's partitions, after its last committed checkpoint.
#![cfg(feature = "postgres")]
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

#[allow(dead_code, unreachable_pub)]
#[path = "common/child.rs"]
mod child;
#[path = "common/postgres.rs"]
mod postgres_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::{
    handler_fn, EventStore, ExpectedVersion, HandlerError, NewEvent, Phase, PostgresConfig, RecordedEvent, StreamId,
    SubscriptionConfig, SubscriptionGroup,
};

const URL_VAR: &str = "ANNALS_TEST_GROUP_URL";
const SCHEMA_VAR: &str = "ANNALS_TEST_GROUP_SCHEMA";
const NAME: &str = "audit";
const PARTITIONS: u32 = 8;
const STREAMS: u64 = 24;
const LEASE: Duration = Duration::from_millis(1200);

fn config() -> SubscriptionConfig {
    SubscriptionConfig::new(NAME)
        .partitions(PARTITIONS)
        .lease_ttl(LEASE)
        .checkpoint_every(7)
        .checkpoint_interval(Duration::from_millis(150))
}

/// The partition of a stream, as subscriptions compute it.
fn partition_of(stream: &str) -> u32 {
    crc32fast::hash(stream.as_bytes()) % PARTITIONS
}

/// A worker process: joins the group, prints `H <position> <stream> <version>` for each event, and
/// stops cleanly when its stdin closes.
#[test]
#[ignore = "a child process of the tests below; fails unless its parent sets the server's address"]
fn group_worker_child() {
    let (Ok(url), Ok(schema)) = (std::env::var(URL_VAR), std::env::var(SCHEMA_VAR)) else {
        panic!("{URL_VAR} and {SCHEMA_VAR} are not set: this child test is run by its parent test")
    };
    // libtest has printed "test group_worker_child ... " without a line end: start a fresh line.
    child::say("\n");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = PostgresConfig::new(url).schema(schema).pool_size(3).open().await.unwrap();
        let group = SubscriptionGroup::new(store, config()).await.unwrap();
        let handler = handler_fn(|event: RecordedEvent, _phase: Phase| async move {
            child::say(&format!("H {} {} {}\n", event.position, event.stream, event.version));
            Ok::<(), HandlerError>(())
        });
        let worker = group.join(handler).await.unwrap();
        child::say("READY\n");
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await
        .unwrap();
        worker.stop().await.unwrap();
        child::say("STOPPED\n");
    });
}

/// One handled event, as a worker printed it.
#[derive(Clone, Debug)]
struct Handled {
    at: Instant,
    position: u64,
    stream: String,
    version: u64,
}

struct Worker {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<(Instant, String)>,
    handled: Vec<Handled>,
    ready: bool,
    stopped: bool,
}

impl Worker {
    fn start(url: &str, schema: &str) -> Worker {
        let mut child = child::child_command("group_worker_child")
            .env(URL_VAR, url)
            .env(SCHEMA_VAR, schema)
            .stdin(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (lines, _reader) = child::read_timed_lines(&mut child);
        Worker { child, lines, handled: Vec::new(), ready: false, stopped: false }
    }

    /// Takes in what the worker printed so far.
    fn drain(&mut self) {
        while let Ok((at, line)) = self.lines.try_recv() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["H", position, stream, version] => self.handled.push(Handled {
                    at,
                    position: position.parse().unwrap(),
                    stream: (*stream).to_owned(),
                    version: version.parse().unwrap(),
                }),
                ["READY"] => self.ready = true,
                ["STOPPED"] => self.stopped = true,
                _ => {}
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Polls until `done` holds, draining the workers; fails with `what` after `limit`.
fn wait_until(workers: &mut [&mut Worker], limit: Duration, what: &str, mut done: impl FnMut(&[&mut Worker]) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        for worker in workers.iter_mut() {
            worker.drain();
        }
        if done(workers) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_worker_process_hands_its_partitions_to_the_survivor_without_skips() {
    let url = postgres_support::url().unwrap();
    let schema = postgres_support::fresh_schema();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store = runtime.block_on(PostgresConfig::new(url.clone()).schema(schema.clone()).open()).unwrap();
    let append = |store: annals::PostgresStore, n: u64| async move {
        let stream = StreamId::new(format!("s-{}", n % STREAMS)).unwrap();
        store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("Noted", format!("{{\"n\":{n}}}"))]).await
    };
    runtime.block_on(async {
        for n in 0..200 {
            append(store.clone(), n).await.unwrap();
        }
    });
    // Events keep coming the whole time, one every few milliseconds.
    let appending = Arc::new(AtomicBool::new(true));
    let appender = {
        let (store, appending) = (store.clone(), Arc::clone(&appending));
        runtime.spawn(async move {
            let mut n = 200;
            while appending.load(Ordering::SeqCst) {
                append(store.clone(), n).await.unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        })
    };

    let mut a = Worker::start(&url, &schema);
    wait_until(&mut [&mut a], Duration::from_secs(30), "the first worker handles events", |w| {
        w[0].ready && w[0].handled.len() > 50
    });
    let mut b = Worker::start(&url, &schema);
    // Both hold partitions (the first handed some over to the second, committing them first).
    let owners = |schema: &str| -> BTreeMap<String, Vec<i32>> {
        let listed = annals_testkit::shared()
            .unwrap()
            .psql(
                "postgres",
                &format!("SELECT owner, partition FROM {schema}.leases WHERE owner IS NOT NULL ORDER BY partition"),
            )
            .unwrap();
        let mut owners: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for line in listed.lines() {
            let (owner, partition) = line.split_once('|').unwrap();
            owners.entry(owner.to_owned()).or_default().push(partition.parse().unwrap());
        }
        owners
    };
    wait_until(&mut [&mut a, &mut b], Duration::from_secs(30), "both workers hold partitions and handle events", |w| {
        w[1].handled.len() > 20 && owners(&schema).len() == 2
    });
    std::thread::sleep(Duration::from_millis(300));

    // SIGKILL the first worker. Until its leases expire nobody else may save its partitions'
    // checkpoints, so what they say right after the kill is what it last committed.
    let a_member = format!("pid{}-", a.pid());
    a.child.kill().unwrap();
    let killed_at = Instant::now();
    let held_by_a: BTreeSet<u32> = owners(&schema)
        .into_iter()
        .filter(|(owner, _)| owner.starts_with(&a_member))
        .flat_map(|(_, partitions)| partitions.into_iter().map(|p| p as u32))
        .collect();
    let committed: BTreeMap<u32, u64> = runtime
        .block_on(store.list_checkpoints(&format!("subscription/{NAME}/")))
        .unwrap()
        .into_iter()
        .map(|c| (c.name.rsplit('/').next().unwrap().parse().unwrap(), c.position.get()))
        .collect();
    assert!(!held_by_a.is_empty(), "the killed worker held partitions");
    a.child.wait().unwrap();
    a.drain();

    // The survivor takes them over once the leases expire, and catches up.
    wait_until(&mut [&mut b], Duration::from_secs(30), "the survivor handles the killed worker's streams", |w| {
        w[0].handled.iter().any(|h| h.at > killed_at && held_by_a.contains(&partition_of(&h.stream)))
    });
    let takeover = b
        .handled
        .iter()
        .find(|h| h.at > killed_at && held_by_a.contains(&partition_of(&h.stream)))
        .map(|h| h.at - killed_at)
        .unwrap();
    println!("takeover after the SIGKILL: {takeover:?} (lease {LEASE:?})");
    std::thread::sleep(Duration::from_millis(500));
    appending.store(false, Ordering::SeqCst);
    runtime.block_on(appender).unwrap();
    let head = runtime.block_on(store.head()).unwrap().get();
    let by_a: BTreeSet<u64> = a.handled.iter().map(|h| h.position).collect();
    wait_until(&mut [&mut b], Duration::from_secs(30), "every event up to the head is handled", |w| {
        let by_b: BTreeSet<u64> = w[0].handled.iter().map(|h| h.position).collect();
        (1..=head).all(|p| by_a.contains(&p) || by_b.contains(&p))
    });
    drop(b.child.stdin.take());
    wait_until(&mut [&mut b], Duration::from_secs(30), "the survivor stops", |w| w[0].stopped);
    b.child.wait().unwrap();

    // Nothing skipped.
    let mut times: BTreeMap<u64, u32> = BTreeMap::new();
    for h in a.handled.iter().chain(&b.handled) {
        *times.entry(h.position).or_default() += 1;
    }
    let missing: Vec<u64> = (1..=head).filter(|p| !times.contains_key(p)).collect();
    assert!(missing.is_empty(), "never handled: {missing:?}");
    // Twice only in the killed worker's partitions, after its last committed checkpoint there.
    let stream_of: BTreeMap<u64, &str> =
        a.handled.iter().chain(&b.handled).map(|h| (h.position, h.stream.as_str())).collect();
    for (&position, &n) in &times {
        if n > 1 {
            let partition = partition_of(stream_of[&position]);
            assert!(
                n == 2 && held_by_a.contains(&partition) && position > committed.get(&partition).copied().unwrap_or(0),
                "position {position} (partition {partition}) handled {n} times; the killed worker held {held_by_a:?}, \
                 committed {committed:?}"
            );
        }
    }
    // Each stream in order within each process.
    for worker in [&a, &b] {
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        for h in &worker.handled {
            let previous = last.insert(h.stream.as_str(), h.version);
            assert!(
                previous.is_none_or(|v| v < h.version),
                "{} went from version {previous:?} to {}",
                h.stream,
                h.version
            );
        }
    }
    assert!(takeover < LEASE * 10, "the takeover took {takeover:?} with a {LEASE:?} lease");
}

/// Sends `signal` (`STOP`, `CONT`) to a process.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

#[test]
fn a_paused_worker_that_lost_its_leases_cannot_move_their_checkpoints_back() {
    let url = postgres_support::url().unwrap();
    let schema = postgres_support::fresh_schema();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store = runtime.block_on(PostgresConfig::new(url.clone()).schema(schema.clone()).open()).unwrap();
    let appending = Arc::new(AtomicBool::new(true));
    let appender = {
        let (store, appending) = (store.clone(), Arc::clone(&appending));
        runtime.spawn(async move {
            let mut n = 0u64;
            while appending.load(Ordering::SeqCst) {
                let stream = StreamId::new(format!("s-{}", n % STREAMS)).unwrap();
                let event = NewEvent::raw("Noted", format!("{{\"n\":{n}}}"));
                store.append(&stream, ExpectedVersion::Any, vec![event]).await.unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let mut a = Worker::start(&url, &schema);
    wait_until(&mut [&mut a], Duration::from_secs(30), "the first worker handles events", |w| {
        w[0].ready && w[0].handled.len() > 50
    });
    let mut b = Worker::start(&url, &schema);
    wait_until(&mut [&mut a, &mut b], Duration::from_secs(30), "both workers handle events", |w| {
        w[0].handled.len() > 80 && w[1].handled.len() > 30
    });
    // Checkpoints, watched from here on: none may ever move back.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (store, watching) = (store.clone(), Arc::clone(&watching));
        runtime.spawn(async move {
            let mut highest: BTreeMap<String, u64> = BTreeMap::new();
            let mut moved_back = Vec::new();
            while watching.load(Ordering::SeqCst) {
                for c in store.list_checkpoints(&format!("subscription/{NAME}/")).await.unwrap() {
                    let before = highest.insert(c.name.clone(), c.position.get()).unwrap_or(0);
                    if c.position.get() < before {
                        moved_back.push(format!("{} from {before} to {}", c.name, c.position));
                    }
                    let top = before.max(c.position.get());
                    highest.insert(c.name, top);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            moved_back
        })
    };
    // Pause the first worker past its lease: the second takes its partitions and moves on; then the
    // first wakes up with its old progress and tries to save it.
    signal(a.pid(), "STOP");
    std::thread::sleep(LEASE * 3);
    signal(a.pid(), "CONT");
    std::thread::sleep(LEASE * 2);
    appending.store(false, Ordering::SeqCst);
    runtime.block_on(appender).unwrap();
    std::thread::sleep(LEASE);
    watching.store(false, Ordering::SeqCst);
    let moved_back = runtime.block_on(watcher).unwrap();
    drop(a.child.stdin.take());
    drop(b.child.stdin.take());
    wait_until(&mut [&mut a, &mut b], Duration::from_secs(30), "both workers stop", |w| w[0].stopped && w[1].stopped);
    a.child.wait().unwrap();
    b.child.wait().unwrap();
    assert!(moved_back.is_empty(), "checkpoints moved back: {moved_back:?}");
    let head = runtime.block_on(store.head()).unwrap().get();
    let handled: BTreeSet<u64> = a.handled.iter().chain(&b.handled).map(|h| h.position).collect();
    let missing: Vec<u64> = (1..=head).filter(|p| !handled.contains(p)).collect();
    assert!(missing.is_empty(), "never handled: {missing:?}");
}
