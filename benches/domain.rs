//! The cost of issue 14's domain tools on the sled store with `Durability::Fsync`, each beside the
//! store doing the same durable writes by hand in the same run.
//!
//! - `unit_of_work`: one sequential caller runs a command over two aggregates of different types
//!   (`UnitOfWork`: load both through their cached repositories, decide, one `append_multi` of two
//!   streams with expected versions), over 100 pairs in turn. Beside it: a single-aggregate command
//!   (`Repository::execute`, one stream), and the floor: `append_multi` of the same two events with
//!   `Exact` versions the caller tracks (no load, no decision).
//! - `workflow_steps`: a workflow reacting to 2,000 events (each reaction one step that schedules a
//!   deadline: one durable append), from `Workflows::start` until it has settled. Beside it: 2,000
//!   durable single-event appends of the same size, one after the other (the floor of one append
//!   per reaction).
//!
//! Run with `cargo bench --bench domain`; figures go to `docs/PERFORMANCE.md`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use annals::{
    Actions, Aggregate, CommandContext, Deadline, Event, EventStore, ExpectedVersion, HandlerError, LogFilter,
    ManualClock, NewEvent, RecordedEvent, Repository, SledStore, StreamAppend, StreamId, UnitOfWork, Version, Workflow,
    WorkflowConfig, Workflows,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, PartialEq)]
enum LeftEvent {
    Moved { n: u64, note: String },
}

#[derive(Event, Clone, Debug, PartialEq)]
enum RightEvent {
    Moved { n: u64, note: String },
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Aggregate, Clone, Debug, Default, Serialize, Deserialize)]
#[aggregate(command = u64, event = LeftEvent, error = Never)]
struct Left {
    count: u64,
}

impl Left {
    fn handle(&self, n: u64) -> Result<Vec<LeftEvent>, Never> {
        Ok(vec![LeftEvent::Moved { n, note: "x".repeat(160) }])
    }

    fn apply(&mut self, _: &LeftEvent) {
        self.count += 1;
    }
}

#[derive(Aggregate, Clone, Debug, Default, Serialize, Deserialize)]
#[aggregate(command = u64, event = RightEvent, error = Never)]
struct Right {
    count: u64,
}

impl Right {
    fn handle(&self, n: u64) -> Result<Vec<RightEvent>, Never> {
        Ok(vec![RightEvent::Moved { n, note: "x".repeat(160) }])
    }

    fn apply(&mut self, _: &RightEvent) {
        self.count += 1;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

const PAIRS: u64 = 100;

fn unit_of_work(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let lefts = Repository::<Left, _>::new(store.clone()).with_cache(1_000);
    let rights = Repository::<Right, _>::new(store.clone()).with_cache(1_000);
    let context = CommandContext::new();
    let mut group = c.benchmark_group("unit_of_work");
    group.throughput(Throughput::Elements(1)).sample_size(20).measurement_time(Duration::from_secs(8));
    let mut n = 0u64;
    group.bench_function("annals_unit_of_work_two_types", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let id = format!("u{}", n % PAIRS);
            let (lefts, rights, context) = (&lefts, &rights, &context);
            async move {
                let unit = UnitOfWork::new((lefts.target(id.as_str()), rights.target(id.as_str())));
                unit.execute(context, |(left, right)| -> Result<(), Never> {
                    left.handle(n)?;
                    right.handle(n)?;
                    Ok(())
                })
                .await
                .unwrap()
            }
        })
    });
    group.bench_function("annals_execute_one_aggregate", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let id = format!("s{}", n % PAIRS);
            let (lefts, context) = (&lefts, &context);
            async move { lefts.execute(&id, n, context).await.unwrap() }
        })
    });
    let mut versions = vec![0u64; PAIRS as usize];
    let payload = serde_json::json!({ "n": 0, "note": "x".repeat(160) }).to_string();
    group.bench_function("raw_append_multi_two_streams", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let slot = (n % PAIRS) as usize;
            let expected = if versions[slot] == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(Version::new(versions[slot]))
            };
            versions[slot] += 1;
            let appends = vec![
                StreamAppend::new(
                    StreamId::new(format!("rawleft-{slot}")).unwrap(),
                    expected,
                    vec![NewEvent::raw("Moved", payload.clone())],
                ),
                StreamAppend::new(
                    StreamId::new(format!("rawright-{slot}")).unwrap(),
                    expected,
                    vec![NewEvent::raw("Moved", payload.clone())],
                ),
            ];
            let store = &store;
            async move { store.append_multi(appends).await.unwrap() }
        })
    });
    group.finish();
}

/// A workflow that schedules a deadline for every event it sees (one step, one append each).
struct Scheduler;

impl Workflow for Scheduler {
    type State = u64;

    fn name(&self) -> &str {
        "scheduler"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all().event_types(["Opened"])
    }

    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        event.stream.as_str().strip_prefix("case-").map(str::to_owned)
    }

    fn on_event(&self, seen: &mut u64, event: &RecordedEvent, act: &mut Actions) -> Result<(), HandlerError> {
        *seen += 1;
        act.schedule("follow-up", event.occurred_at + chrono::TimeDelta::days(14), serde_json::Value::Null);
        Ok(())
    }

    fn on_deadline(&self, _: &mut u64, _: &Deadline, _: &mut Actions) -> Result<(), HandlerError> {
        Ok(())
    }
}

const STEPS: u64 = 2_000;

fn workflow_steps(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("workflow_steps");
    group.throughput(Throughput::Elements(STEPS)).sample_size(10).measurement_time(Duration::from_secs(20));
    let payload = serde_json::json!({ "note": "x".repeat(160) }).to_string();
    group.bench_function("annals_workflow_2000_reactions", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let payload = payload.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let store = SledStore::open(dir.path()).unwrap();
                    let mut appends = Vec::new();
                    for case in 0..STEPS {
                        let stream = StreamId::new(format!("case-{case}")).unwrap();
                        appends.push(StreamAppend::new(
                            stream,
                            ExpectedVersion::NoStream,
                            vec![NewEvent::raw("Opened", payload.clone())],
                        ));
                    }
                    store.append_multi(appends).await.unwrap();
                    let clock = ManualClock::new(chrono::Utc::now());
                    let started = Instant::now();
                    let running =
                        Workflows::start(store.clone(), Scheduler, clock, WorkflowConfig::new()).await.unwrap();
                    running.settle(Duration::from_secs(120)).await.unwrap();
                    total += started.elapsed();
                    assert_eq!(running.pending_deadlines().len() as u64, STEPS);
                    running.stop().await.unwrap();
                }
                total
            }
        })
    });
    group.bench_function("raw_2000_single_appends", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let payload = payload.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let store = SledStore::open(dir.path()).unwrap();
                    let started = Instant::now();
                    for case in 0..STEPS {
                        let stream = StreamId::new(format!("step-{case}")).unwrap();
                        store
                            .append(&stream, ExpectedVersion::NoStream, vec![NewEvent::raw("Stepped", payload.clone())])
                            .await
                            .unwrap();
                    }
                    total += started.elapsed();
                }
                total
            }
        })
    });
    group.finish();
}

criterion_group!(benches, unit_of_work, workflow_steps);
criterion_main!(benches);
