//! [`WorkflowHandle`]: watching a running workflow, reading its instances and deadlines, stopping it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::clock::Clock;
use super::error::WorkflowError;
use super::instances::{Instance, Instances};
use super::runner::Command;
use super::step::{instance_stream, load_saved, Deadline};
use super::Workflow;
use crate::consumer::ProgressWatch;
use crate::position::Position;
use crate::store::EventStore;

/// The task of a running workflow.
pub(super) type Task = JoinHandle<Result<(), WorkflowError>>;

/// A running workflow. Cloning gives another handle; when the last one is dropped, the workflow
/// stops as [`stop`](WorkflowHandle::stop) would.
pub struct WorkflowHandle<W: Workflow> {
    pub(super) name: String,
    pub(super) store: Arc<dyn EventStore>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) instances: Arc<Mutex<Instances<W::State>>>,
    pub(super) watch: ProgressWatch,
    pub(super) timers: watch::Receiver<Option<DateTime<Utc>>>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) task: Arc<Mutex<Option<Task>>>,
}

impl<W: Workflow> Clone for WorkflowHandle<W> {
    fn clone(&self) -> Self {
        WorkflowHandle {
            name: self.name.clone(),
            store: Arc::clone(&self.store),
            clock: Arc::clone(&self.clock),
            instances: Arc::clone(&self.instances),
            watch: self.watch.clone(),
            timers: self.timers.clone(),
            commands: self.commands.clone(),
            task: Arc::clone(&self.task),
        }
    }
}

impl<W: Workflow> std::fmt::Debug for WorkflowHandle<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let progress = self.watch.now();
        f.debug_struct("WorkflowHandle")
            .field("name", &self.name)
            .field("position", &progress.processed)
            .field("checkpoint", &progress.checkpoint)
            .finish_non_exhaustive()
    }
}

impl<W: Workflow> WorkflowHandle<W> {
    /// The workflow's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every event up to this position has been reacted to (or left out by the filter).
    pub fn position(&self) -> Position {
        self.watch.now().processed
    }

    /// The saved checkpoint: a restart reads the log after it.
    pub fn checkpoint(&self) -> Position {
        self.watch.now().checkpoint
    }

    /// How many events the workflow is behind the head.
    pub fn lag(&self) -> u64 {
        self.watch.lag()
    }

    /// Waits until the workflow has caught up with the head once, and returns that head.
    ///
    /// # Errors
    /// [`WorkflowError::Stopped`] when it stopped first.
    pub async fn caught_up(&self) -> Result<Position, WorkflowError> {
        self.watch.caught_up().await.map_err(|error| WorkflowError::from_wait(&self.name, error))
    }

    /// Waits until the workflow has reacted to `position` (pass the position an append returned),
    /// for at most `timeout`.
    ///
    /// # Errors
    /// [`WorkflowError::Timeout`] when it did not get there in time; [`WorkflowError::Stopped`]
    /// when it stopped.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<(), WorkflowError> {
        self.watch.wait_for(position, timeout).await.map_err(|error| WorkflowError::from_wait(&self.name, error))
    }

    /// Waits until the workflow is idle: it has reacted to every event up to the head (its own
    /// steps included) and no pending deadline is due by its clock. After moving a
    /// [`ManualClock`](super::ManualClock), this waits for the deadlines that came due to fire, and
    /// for the events they appended to be seen. Waits at most `timeout`.
    ///
    /// # Errors
    /// [`WorkflowError::Timeout`] when it was not idle in time; [`WorkflowError::Stopped`] when it
    /// stopped.
    pub async fn settle(&self, timeout: Duration) -> Result<(), WorkflowError> {
        let stopped = || WorkflowError::Stopped { workflow: self.name.clone() };
        let (mut progress, mut timers, mut head) =
            (self.watch.progress.clone(), self.timers.clone(), self.watch.head.clone());
        let idle = async {
            loop {
                let now = self.clock.now();
                let reached = *progress.borrow_and_update();
                let due = *timers.borrow_and_update();
                let caught_up = reached.caught_up.is_some() && reached.processed >= head.current();
                if caught_up && due.is_none_or(|at| at > now) {
                    return Ok(());
                }
                tokio::select! {
                    changed = progress.changed() => changed.map_err(|_| stopped())?,
                    changed = timers.changed() => changed.map_err(|_| stopped())?,
                    _ = head.changed() => {}
                    // The clock moves without telling anyone.
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        };
        match tokio::time::timeout(timeout, idle).await {
            Ok(outcome) => outcome,
            Err(_) => Err(WorkflowError::Timeout {
                workflow: self.name.clone(),
                wanted: head.current(),
                reached: self.position(),
                waited: timeout,
            }),
        }
    }

    /// Every pending deadline of the workflow's active instances, by due time.
    pub fn pending_deadlines(&self) -> Vec<Deadline> {
        self.instances.lock().unwrap_or_else(PoisonError::into_inner).pending()
    }

    /// The state of the instance `id`: `None` when it never took a step. A completed instance's
    /// final state is read from its stream.
    ///
    /// # Errors
    /// [`WorkflowError::Undecodable`] when its saved state does not decode; store errors.
    pub async fn instance_state(&self, id: &str) -> Result<Option<W::State>, WorkflowError> {
        let cached = self.instances.lock().unwrap_or_else(PoisonError::into_inner).state(id);
        if cached.is_some() {
            return Ok(cached);
        }
        let stream = instance_stream(&self.name, id)?;
        match load_saved(&*self.store, &self.name, &stream).await? {
            Some(saved) => Ok(Some(Instance::<W::State>::from_saved(saved)?.state)),
            None => Ok(None),
        }
    }

    /// Stops the workflow after the reaction it is on, saves its checkpoint, and returns how it
    /// ended: the error that stopped it earlier, if one did. Only the first call waits; later ones
    /// answer `Ok(())`.
    ///
    /// # Errors
    /// The workflow's error ([`WorkflowError::Handler`] after its retries, store errors);
    /// [`WorkflowError::Panicked`] when a handler panicked.
    pub async fn stop(self) -> Result<(), WorkflowError> {
        let _ = self.commands.send(Command::Stop).await;
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(task) = task else { return Ok(()) };
        match task.await {
            Ok(outcome) => outcome,
            Err(error) if error.is_panic() => {
                let payload = error.into_panic();
                let message = match payload.downcast::<String>() {
                    Ok(message) => Some(*message),
                    Err(payload) => payload.downcast_ref::<&str>().map(|message| (*message).to_owned()),
                };
                Err(WorkflowError::Panicked { workflow: self.name.clone(), message })
            }
            Err(_) => Err(WorkflowError::Store(crate::error::Error::Closed)),
        }
    }
}
