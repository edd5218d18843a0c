//! What the subscription tests share: a handler ([`Probe`]) that records every event it handles (and
//! every attempt, and when), can be told to fail on chosen streams ([`Faults`]) and to block on a chosen position
//! ([`Gate`]); appending helpers; and a polling wait for conditions no handle reports.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals::{
    AppendResult, EventStore, ExpectedVersion, Handler, HandlerError, NewEvent, Phase, Position, RecordedEvent,
    RetryPolicy, StreamId,
};
use async_trait::async_trait;
use tokio::sync::watch;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How long a wait may take before the test gives up (never a timing assertion).
pub const WAIT: Duration = Duration::from_secs(10);

/// Appends `count` events of `event_type` to `stream`.
pub async fn append(
    store: &impl EventStore,
    stream: &str,
    event_type: &str,
    count: usize,
) -> Result<AppendResult, Box<dyn std::error::Error>> {
    let events = (0..count).map(|_| NewEvent::raw(event_type, "{}")).collect();
    Ok(store.append(&StreamId::new(stream)?, ExpectedVersion::Any, events).await?)
}

/// Appends one event to each of `streams` in turn, `rounds` times, so that the streams interleave
/// in the log; returns the last position.
pub async fn interleave(
    store: &impl EventStore,
    streams: &[String],
    rounds: usize,
) -> Result<Position, Box<dyn std::error::Error>> {
    let mut last = Position::ZERO;
    for _ in 0..rounds {
        for stream in streams {
            last = append(store, stream, "Moved", 1).await?.last_position;
        }
    }
    Ok(last)
}

/// Retries with a 1 ms backoff, so that failure tests stay fast.
pub fn quick_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::attempts(attempts).backoff(Duration::from_millis(1), Duration::from_millis(1))
}

/// Polls `condition` every few milliseconds until it holds; an error naming `what` after [`WAIT`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) -> TestResult {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out waiting until {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// One event a [`Probe`] handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The label of the probe (the worker) that handled it.
    pub worker: usize,
    pub position: u64,
    pub stream: String,
    pub version: u64,
    pub event_type: String,
    pub phase: Phase,
}

#[derive(Debug, Default)]
struct Records {
    seen: Vec<Seen>,
    attempts: HashMap<u64, u32>,
    /// When each attempt at a position began.
    attempted_at: HashMap<u64, Vec<Instant>>,
}

/// What probes handled, in the order they handled it (across workers too), and how often each
/// position was tried.
#[derive(Clone, Debug, Default)]
pub struct Log(Arc<Mutex<Records>>);

impl Log {
    pub fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().seen.clone()
    }

    pub fn positions(&self) -> Vec<u64> {
        self.0.lock().unwrap().seen.iter().map(|s| s.position).collect()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().seen.len()
    }

    /// How many events the probe labelled `worker` handled.
    pub fn count_by(&self, worker: usize) -> usize {
        self.0.lock().unwrap().seen.iter().filter(|s| s.worker == worker).count()
    }

    /// How many times the handler was called for `position` (successfully or not).
    pub fn attempts(&self, position: u64) -> u32 {
        self.0.lock().unwrap().attempts.get(&position).copied().unwrap_or(0)
    }

    /// When each attempt at `position` began, in order.
    pub fn attempt_times(&self, position: u64) -> Vec<Instant> {
        self.0.lock().unwrap().attempted_at.get(&position).cloned().unwrap_or_default()
    }

    fn attempt(&self, position: u64) {
        let mut records = self.0.lock().unwrap();
        *records.attempts.entry(position).or_default() += 1;
        records.attempted_at.entry(position).or_default().push(Instant::now());
    }

    fn record(&self, seen: Seen) {
        self.0.lock().unwrap().seen.push(seen);
    }
}

/// Streams a probe's handler fails on: a number of times, or until healed.
#[derive(Clone, Debug, Default)]
pub struct Faults(Arc<Mutex<HashMap<String, u32>>>);

impl Faults {
    /// Fail the next `times` events of `stream`.
    pub fn fail(&self, stream: &str, times: u32) {
        self.0.lock().unwrap().insert(stream.to_owned(), times);
    }

    /// Fail every event of `stream` until it is healed.
    pub fn fail_always(&self, stream: &str) {
        self.fail(stream, u32::MAX);
    }

    pub fn heal(&self, stream: &str) {
        self.0.lock().unwrap().remove(stream);
    }

    fn check(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let mut faults = self.0.lock().unwrap();
        match faults.get_mut(event.stream.as_str()) {
            Some(0) | None => Ok(()),
            Some(left) => {
                if *left != u32::MAX {
                    *left -= 1;
                }
                Err(format!("refusing {} at position {}", event.stream, event.position).into())
            }
        }
    }
}

/// Blocks a probe on one position until opened, and tells when a probe got there.
#[derive(Clone, Debug)]
pub struct Gate {
    at: u64,
    reached: Arc<watch::Sender<bool>>,
    open: Arc<watch::Sender<bool>>,
}

impl Gate {
    /// A shut gate on `position`.
    pub fn at(position: u64) -> Self {
        Gate { at: position, reached: Arc::new(watch::channel(false).0), open: Arc::new(watch::channel(false).0) }
    }

    /// Waits until a probe is blocked on the gate.
    pub async fn reached(&self) -> TestResult {
        let mut reached = self.reached.subscribe();
        tokio::time::timeout(WAIT, reached.wait_for(|r| *r)).await??;
        Ok(())
    }

    /// Lets the blocked probe (and any later one) through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    async fn pass(&self, position: u64) {
        if position == self.at {
            self.reached.send_replace(true);
            let mut open = self.open.subscribe();
            let _ = open.wait_for(|o| *o).await;
        }
    }
}

/// A handler that records what it handles in a [`Log`], failing as its [`Faults`] say and blocking
/// at its [`Gate`].
#[derive(Clone, Debug, Default)]
pub struct Probe {
    worker: usize,
    log: Log,
    faults: Faults,
    gate: Option<Gate>,
}

impl Probe {
    pub fn new(log: &Log) -> Self {
        Probe { log: log.clone(), ..Probe::default() }
    }

    /// Labels what this probe handles as handled by `worker`.
    pub fn worker(mut self, worker: usize) -> Self {
        self.worker = worker;
        self
    }

    pub fn faults(mut self, faults: &Faults) -> Self {
        self.faults = faults.clone();
        self
    }

    pub fn gate(mut self, gate: &Gate) -> Self {
        self.gate = Some(gate.clone());
        self
    }
}

#[async_trait]
impl Handler for Probe {
    async fn handle(&mut self, event: &RecordedEvent, phase: Phase) -> Result<(), HandlerError> {
        self.log.attempt(event.position.get());
        if let Some(gate) = &self.gate {
            gate.pass(event.position.get()).await;
        }
        self.faults.check(event)?;
        self.log.record(Seen {
            worker: self.worker,
            position: event.position.get(),
            stream: event.stream.to_string(),
            version: event.version.get(),
            event_type: event.event_type.clone(),
            phase,
        });
        Ok(())
    }
}

/// The versions each stream's events were handled in, in handling order.
pub fn versions_by_stream<'a>(seen: impl IntoIterator<Item = &'a Seen>) -> BTreeMap<String, Vec<u64>> {
    let mut streams: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for s in seen {
        streams.entry(s.stream.clone()).or_default().push(s.version);
    }
    streams
}
