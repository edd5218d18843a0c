//! What projections, subscriptions and workflows share: where they start, when they checkpoint, and
//! how their progress is watched (lag, read-your-writes).

pub(crate) mod follow;
pub(crate) mod projection;
pub(crate) mod subscription;
pub(crate) mod telemetry;
pub(crate) mod workflow;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;

use crate::envelope::RecordedEvent;
use crate::error::{ConsumerProblem, Error, Result};
use crate::position::Position;
use crate::store::{EventStore, HeadWatch};

/// The error a projection or subscription handler returns: any error type, boxed.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Where a consumer without a checkpoint (or a replay) starts reading the log.
///
/// Positions and recorded times grow along the log, so `Position` and `Recorded` start part-way
/// through it. Occurred (business) times need not grow, so `Occurred` reads the whole log and skips
/// the events that occurred before the time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Start {
    /// From the first event of the log.
    #[default]
    Beginning,
    /// From this position (inclusive).
    Position(Position),
    /// From the first event recorded at or after this time.
    Recorded(DateTime<Utc>),
    /// Only events that occurred at or after this time.
    Occurred(DateTime<Utc>),
}

impl Start {
    /// The first position to read, and the occurred time before which events are skipped.
    pub(crate) async fn resolve<S: EventStore + ?Sized>(self, store: &S) -> Result<(Position, Option<DateTime<Utc>>)> {
        Ok(match self {
            Start::Beginning => (Position::FIRST, None),
            Start::Position(position) => (position.max(Position::FIRST), None),
            Start::Recorded(at) => match store.seek_recorded(at).await? {
                Some(position) => (position, None),
                // Everything was recorded before `at`: start after the head.
                None => (Position::new(store.head().await?.get() + 1), None),
            },
            Start::Occurred(at) => (Position::FIRST, Some(at)),
        })
    }
}

/// Whether an event is before an `occurred_from` bound and must be skipped.
pub(crate) fn occurred_before(event: &RecordedEvent, occurred_from: Option<DateTime<Utc>>) -> bool {
    occurred_from.is_some_and(|at| event.occurred_at < at)
}

/// When a consumer commits its checkpoint: after `every` events, or `interval` after the first
/// progress not committed yet, whichever comes first; and always when it catches up and when it stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CheckpointPolicy {
    pub(crate) every: u64,
    pub(crate) interval: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy { every: 1_000, interval: Duration::from_millis(200) }
    }
}

/// Progress not committed yet, and when to commit it.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The committed position.
    pub(crate) committed: Position,
    /// Events handled since the last commit.
    pub(crate) events: u64,
    /// When the first progress since the last commit was made.
    pub(crate) since: Option<Instant>,
}

impl Pending {
    pub(crate) fn new(committed: Position) -> Self {
        Pending { committed, events: 0, since: None }
    }

    /// Notes progress through `through` with `events` handled.
    pub(crate) fn progress(&mut self, through: Position, events: u64) {
        if through > self.committed {
            self.note(events);
        }
    }

    /// Notes progress not committed yet, with `events` handled.
    pub(crate) fn note(&mut self, events: u64) {
        self.events += events;
        self.since.get_or_insert_with(Instant::now);
    }

    /// Forgets the progress noted since the last commit (it was committed).
    pub(crate) fn clear(&mut self) {
        self.events = 0;
        self.since = None;
    }

    /// Whether the count alone calls for a commit now.
    pub(crate) fn full(&self, policy: &CheckpointPolicy) -> bool {
        self.events >= policy.every
    }

    /// When the interval runs out, if there is anything to commit.
    pub(crate) fn deadline(&self, policy: &CheckpointPolicy) -> Option<Instant> {
        self.since.map(|since| since + policy.interval)
    }

    /// Notes a commit through `position`.
    pub(crate) fn committed(&mut self, position: Position) {
        self.committed = position;
        self.clear();
    }
}

/// Sleeps until `deadline`, or forever when there is none: one arm of a consumer's `select!`.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A consumer's progress as its handles see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Every event up to here has been handled (or skipped by the filter).
    pub(crate) processed: Position,
    /// The durable checkpoint.
    pub(crate) checkpoint: Position,
    /// The head the consumer first caught up with, once it has.
    pub(crate) caught_up: Option<Position>,
}

/// The receiving side of a consumer's progress, with the waits built on it.
#[derive(Clone, Debug)]
pub(crate) struct ProgressWatch {
    pub(crate) name: String,
    pub(crate) progress: watch::Receiver<Progress>,
    pub(crate) head: HeadWatch,
}

impl ProgressWatch {
    pub(crate) fn now(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Head minus what was processed.
    pub(crate) fn lag(&self) -> u64 {
        self.head.current().get().saturating_sub(self.now().processed.get())
    }

    /// Waits until the consumer has processed `position`, for at most `timeout`.
    pub(crate) async fn wait_for(&self, position: Position, timeout: Duration) -> Result<()> {
        let mut progress = self.progress.clone();
        let reached =
            tokio::time::timeout(timeout, async { progress.wait_for(|p| p.processed >= position).await.map(|_| ()) })
                .await;
        match reached {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.stopped(ConsumerProblem::StoppedBeforePosition { wanted: position })),
            Err(_) => Err(Error::Timeout {
                consumer: self.name.clone(),
                wanted: position,
                reached: self.now().processed,
                waited: timeout,
            }),
        }
    }

    /// Waits until the consumer has caught up with the head once; returns that head.
    pub(crate) async fn caught_up(&self) -> Result<Position> {
        let mut progress = self.progress.clone();
        let result = progress.wait_for(|p| p.caught_up.is_some()).await.map(|p| p.caught_up);
        match result {
            Ok(Some(position)) => Ok(position),
            _ => Err(self.stopped(ConsumerProblem::StoppedBeforeComplete)),
        }
    }

    fn stopped(&self, problem: ConsumerProblem) -> Error {
        Error::Consumer { consumer: self.name.clone(), problem }
    }
}

/// The task of a running consumer (a projector, or a subscription worker), shared by its handles:
/// the one way to stop one and learn how it ended.
#[derive(Clone, Debug)]
pub(crate) struct Running {
    name: String,
    task: Arc<Mutex<Option<JoinHandle<Result<()>>>>>,
}

impl Running {
    pub(crate) fn new(name: String, task: JoinHandle<Result<()>>) -> Self {
        Running { name, task: Arc::new(Mutex::new(Some(task))) }
    }

    /// Sends `stop` to the task (a task that has ended already ignores it), waits for the task to
    /// end, and returns how it ended: `Ok`, the error that stopped it, or
    /// [`Error::HandlerPanicked`] when a handler panicked. Only the first call waits; later ones
    /// answer `Ok(())`.
    pub(crate) async fn stop<C>(&self, commands: &mpsc::Sender<C>, stop: C) -> Result<()> {
        let _ = commands.send(stop).await;
        let task = self.task.lock().ok().and_then(|mut task| task.take());
        match task {
            Some(task) => ended(&self.name, task.await),
            None => Ok(()),
        }
    }
}

/// How a consumer's task ended, from what joining it gave.
fn ended(name: &str, joined: std::result::Result<Result<()>, JoinError>) -> Result<()> {
    match joined {
        Ok(result) => result,
        Err(error) if error.is_panic() => {
            let payload = error.into_panic();
            let message = match payload.downcast::<String>() {
                Ok(message) => Some(*message),
                Err(payload) => payload.downcast_ref::<&str>().map(|message| (*message).to_owned()),
            };
            Err(Error::HandlerPanicked { consumer: name.to_owned(), message })
        }
        // Cancelled: the runtime shut down under it.
        Err(_) => Err(Error::Closed),
    }
}
