//! Projections shared by the projection tests: one that records every event it sees, and one that
//! tallies positions (serializable, so it can be persisted) and refuses to see a position twice.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use annals::{
    AppendResult, EventStore, ExpectedVersion, HandlerError, LogFilter, NewEvent, Phase, Projection, RecordedEvent,
    StreamId,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How long a wait may take before the test gives up (never a timing assertion).
pub const WAIT: Duration = Duration::from_secs(10);

/// The event type on which [`Recorder`] and [`Tally`] fail when asked to.
pub const POISON: &str = "Poison";

/// Appends `count` events of `event_type` to `stream` in one append.
pub async fn append(
    store: &impl EventStore,
    stream: &str,
    event_type: &str,
    count: usize,
) -> Result<AppendResult, Box<dyn std::error::Error>> {
    let events = (0..count).map(|_| NewEvent::raw(event_type, "{}")).collect();
    Ok(store.append(&StreamId::new(stream)?, ExpectedVersion::Any, events).await?)
}

/// What a projection saw of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub position: u64,
    pub phase: Phase,
    pub stream: String,
    pub event_type: String,
}

/// Records every event it handles, in order; fails on [`POISON`] events when `fail_on_poison`.
#[derive(Clone, Debug)]
pub struct Recorder {
    pub name: String,
    pub filter: LogFilter,
    pub fail_on_poison: bool,
    pub seen: Vec<Seen>,
}

impl Recorder {
    pub fn new(name: &str) -> Self {
        Recorder { name: name.to_owned(), filter: LogFilter::all(), fail_on_poison: false, seen: Vec::new() }
    }

    pub fn filtered(name: &str, filter: LogFilter) -> Self {
        Recorder { filter, ..Recorder::new(name) }
    }

    pub fn failing(name: &str) -> Self {
        Recorder { fail_on_poison: true, ..Recorder::new(name) }
    }

    pub fn positions(&self) -> Vec<u64> {
        self.seen.iter().map(|s| s.position).collect()
    }

    pub fn phases(&self) -> Vec<Phase> {
        self.seen.iter().map(|s| s.phase).collect()
    }
}

#[async_trait]
impl Projection for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> LogFilter {
        self.filter.clone()
    }

    async fn handle(&mut self, event: &RecordedEvent, phase: Phase) -> Result<(), HandlerError> {
        if self.fail_on_poison && event.event_type == POISON {
            return Err(format!("refused the poison at {}", event.position).into());
        }
        self.seen.push(Seen {
            position: event.position.get(),
            phase,
            stream: event.stream.as_str().to_owned(),
            event_type: event.event_type.clone(),
        });
        Ok(())
    }
}

/// Counts the events it handles and sums their positions. Positions must arrive strictly increasing:
/// a duplicate or a step back is a handler error, so exactly-once violations stop the projector.
///
/// The `#[serde(skip)]` fields are not saved: `handled` counts the calls of `handle` on this
/// instance (0 after a restore), `first_handled` is the first position it handled, `generation` tells
/// instances from different factory calls apart.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    pub count: u64,
    pub sum: u64,
    pub last: u64,
    #[serde(skip)]
    pub handled: u64,
    #[serde(skip)]
    pub first_handled: Option<u64>,
    #[serde(skip)]
    pub generation: u64,
}

pub const TALLY: &str = "tally";

impl Tally {
    /// What is saved and compared: count, sum and last position.
    pub fn totals(&self) -> (u64, u64, u64) {
        (self.count, self.sum, self.last)
    }

    /// Whether the state is what handling every position from 1 to `last` gives (when the log has
    /// nothing the tally skips).
    pub fn is_complete_prefix(&self) -> bool {
        self.count == self.last && self.sum == self.last * (self.last + 1) / 2
    }

    fn tally(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let position = event.position.get();
        if event.event_type == POISON {
            return Err(format!("refused the poison at {position}").into());
        }
        if position <= self.last {
            return Err(format!("position {position} after {}: delivered twice or out of order", self.last).into());
        }
        self.count += 1;
        self.sum += position;
        self.last = position;
        self.handled += 1;
        self.first_handled.get_or_insert(position);
        Ok(())
    }
}

#[async_trait]
impl Projection for Tally {
    fn name(&self) -> &str {
        TALLY
    }

    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        self.tally(event)
    }
}

/// The same tally under the same name, at version 2: a saved version 1 must be rebuilt.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TallyV2(pub Tally);

#[async_trait]
impl Projection for TallyV2 {
    fn name(&self) -> &str {
        TALLY
    }

    fn version(&self) -> u32 {
        2
    }

    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        self.0.tally(event)
    }
}
