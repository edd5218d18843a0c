//! Workflows (process managers): react to events, keep state per instance, append to other
//! streams and issue commands to aggregates, and schedule durable deadlines that fire once at a
//! business time.
//!
//! Each reaction, to an event or to a deadline that came due, is committed as one atomic append:
//! a `$WorkflowStepped` event in the instance's stream `workflow-<name>-<instance>` (the instance's
//! new state and pending deadlines, and what the step did), with every event the reaction appends
//! to other streams. The ids of all of them derive from the workflow, the instance and the trigger,
//! so the reaction is idempotent: after a crash, or an append whose answer was lost, the instance
//! stream shows the step was taken and it is not decided again, and an append sent again is
//! answered by the store as a retry. `docs/DESIGN.md` explains the choices, `docs/guarantees.md`
//! lists what is promised and the tests that prove it.

mod actions;
mod clock;
mod config;
mod error;
mod handle;
mod instances;
mod runner;
mod step;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::consumer::follow::Follower;
use crate::consumer::{telemetry, HandlerError, Pending, Progress, ProgressWatch};
use crate::envelope::RecordedEvent;
use crate::position::Position;
use crate::store::{validate_checkpoint_name, EventStore, LogFilter};

pub use self::actions::Actions;
pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::config::WorkflowConfig;
pub use self::error::WorkflowError;
pub use self::handle::WorkflowHandle;
pub use self::step::{Deadline, SavedInstance, Trigger, WORKFLOW_STEP_EVENT_TYPE};

use self::instances::{Instance, Instances};
use self::runner::{checkpoint_key, Runner};
use self::step::{instance_prefix, instance_stream, load_all, load_saved};

/// A process manager: it routes events to instances (a loan, an order), keeps a state per
/// instance, and reacts to events and to deadlines by scheduling and cancelling deadlines,
/// appending events to other streams and issuing commands to aggregates ([`Actions`]).
///
/// `on_event` and `on_deadline` decide; they do not act. They are synchronous and should be
/// deterministic (the same state and trigger give the same decision): a reaction whose append
/// fails is decided again from the same state. Outside information is looked up by whoever
/// appends the event, and outside effects (an e-mail) belong to a subscription to the events the
/// workflow appends (`ReminderSent`), which also makes them visible in the log.
///
/// ```
/// use annals::{Actions, Deadline, EventStore, ExpectedVersion, HandlerError, LogFilter, ManualClock};
/// use annals::{MemoryStore, NewEvent, RecordedEvent, StreamId, Workflow, WorkflowConfig, Workflows};
/// use chrono::{Duration, TimeZone, Utc};
///
/// /// "When a loan is 14 days old and not returned, send a reminder."
/// struct Reminders;
///
/// impl Workflow for Reminders {
///     /// How many reminders the loan got.
///     type State = u32;
///
///     fn name(&self) -> &str {
///         "reminders"
///     }
///
///     fn filter(&self) -> LogFilter {
///         LogFilter::all().event_types(["LoanOpened", "LoanReturned"])
///     }
///
///     fn instance(&self, event: &RecordedEvent) -> Option<String> {
///         event.stream.as_str().strip_prefix("loan-").map(str::to_owned)
///     }
///
///     fn on_event(&self, _: &mut u32, event: &RecordedEvent, act: &mut Actions) -> Result<(), HandlerError> {
///         match event.event_type.as_str() {
///             "LoanOpened" => act.schedule("reminder", event.occurred_at + Duration::days(14), serde_json::Value::Null),
///             _ => act.complete(), // returned: the reminder is cancelled
///         }
///         Ok(())
///     }
///
///     fn on_deadline(&self, sent: &mut u32, deadline: &Deadline, act: &mut Actions) -> Result<(), HandlerError> {
///         *sent += 1;
///         let loan = StreamId::new(format!("loan-{}", deadline.instance))?;
///         act.append(loan, [NewEvent::json("ReminderSent", &serde_json::json!({ "n": *sent }))?]);
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let opened = Utc.with_ymd_and_hms(2024, 3, 1, 9, 0, 0).single().ok_or("no such time")?;
/// let clock = ManualClock::new(opened);
/// let store = MemoryStore::new();
/// let loan = StreamId::new("loan-7")?;
/// let event = NewEvent::raw("LoanOpened", "{}").with_occurred_at(opened);
/// store.append(&loan, ExpectedVersion::NoStream, vec![event]).await?;
///
/// let reminders = Workflows::start(store.clone(), Reminders, clock.clone(), WorkflowConfig::new()).await?;
/// let wait = std::time::Duration::from_secs(5);
/// reminders.settle(wait).await?;
/// assert_eq!(reminders.pending_deadlines()[0].due, opened + Duration::days(14));
///
/// clock.advance(Duration::days(14));
/// reminders.settle(wait).await?; // the reminder fired, and ReminderSent is in the loan's stream
/// assert_eq!(store.stream_version(&loan).await?.map(|v| v.get()), Some(2));
/// assert_eq!(reminders.instance_state("7").await?, Some(1));
/// assert!(Workflows::deadlines(&store, "reminders").await?.is_empty());
/// reminders.stop().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Workflow: Send + Sync + 'static {
    /// The state of one instance. It is saved as JSON in every step, so it must keep reading the
    /// JSON older versions of the program wrote (serde defaults), and stay well under the store's
    /// maximum event size with the pending deadlines.
    type State: Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static;

    /// The workflow's name: its checkpoint is `workflow/<name>`, its instance streams
    /// `workflow-<name>-<instance>`. Non-empty, without `-`.
    fn name(&self) -> &str;

    /// The events the workflow reads (event types, stream categories). Its own steps are never
    /// handed to it.
    fn filter(&self) -> LogFilter;

    /// The instance an event belongs to (a loan's id), or `None` to ignore the event.
    fn instance(&self, event: &RecordedEvent) -> Option<String>;

    /// Reacts to an event of the instance, in log order. A new instance starts from
    /// `State::default()`; a completed one is not called again.
    ///
    /// # Errors
    /// Any error: the reaction is tried again as the [`RetryPolicy`](crate::RetryPolicy) says, then
    /// the workflow stops with [`WorkflowError::Handler`] (nothing is skipped).
    fn on_event(&self, state: &mut Self::State, event: &RecordedEvent, act: &mut Actions) -> Result<(), HandlerError>;

    /// Reacts to a deadline of the instance that came due. It fires once: its step removes it from
    /// the instance's pending deadlines. The default does nothing (the deadline just ends).
    ///
    /// # Errors
    /// As [`on_event`](Self::on_event); the deadline stays pending until a reaction to it succeeds.
    fn on_deadline(&self, state: &mut Self::State, deadline: &Deadline, act: &mut Actions) -> Result<(), HandlerError> {
        let _ = (state, deadline, act);
        Ok(())
    }
}

/// A workflow as saved in a store, from [`Workflows::list`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SavedWorkflow {
    /// Its name.
    pub name: String,
    /// Its saved checkpoint, if it saved one.
    pub checkpoint: Option<Position>,
    /// How many instances it has (with at least one step).
    pub instances: usize,
    /// How many of them completed.
    pub completed: usize,
    /// Its pending deadlines, by due time.
    pub pending: Vec<Deadline>,
}

/// Starting workflows, and reading what they saved (for tools).
#[derive(Debug)]
pub struct Workflows;

impl Workflows {
    /// Starts `workflow` on `store`, with deadlines coming due by `clock` ([`SystemClock`] for the
    /// wall clock). It reads its instances' pending deadlines from their streams, goes on reading
    /// the log from its checkpoint (or `config`'s start), reacting to every event its filter
    /// admits, then follows the log live; a deadline fires once the clock reaches it and every
    /// event acknowledged by then was reacted to. Run one workflow of a name at a time.
    ///
    /// # Errors
    /// [`WorkflowError::InvalidName`] for a bad name; [`WorkflowError::Undecodable`] when a saved
    /// instance does not read back; store errors.
    pub async fn start<S, W, C>(
        store: S,
        workflow: W,
        clock: C,
        config: WorkflowConfig,
    ) -> Result<WorkflowHandle<W>, WorkflowError>
    where
        S: EventStore + 'static,
        W: Workflow,
        C: Clock,
    {
        let name = workflow.name().to_owned();
        check_name(&name)?;
        telemetry::describe();
        runner::describe();
        let store = Arc::new(store);
        let (mut from, occurred_from) = config.start.resolve(&*store).await?;
        if let Some(saved) = store.load_checkpoint(&checkpoint_key(&name)).await? {
            from = Position::new(saved.position.get() + 1);
        }
        let committed = Position::new(from.get() - 1);
        let mut instances = Instances::new();
        for saved in load_all(&*store, &name).await? {
            let id = saved.instance.clone();
            instances.put(&id, Instance::from_saved(saved)?);
        }
        let instances = Arc::new(Mutex::new(instances));
        let clock: Arc<dyn Clock> = Arc::new(clock);
        let (progress, progress_rx) =
            watch::channel(Progress { processed: committed, checkpoint: committed, caught_up: None });
        let (timers, timers_rx) = watch::channel(None);
        let (commands, inbox) = mpsc::channel(8);
        let runner = Runner {
            name: name.clone(),
            follower: Follower::new(Arc::clone(&store), from, workflow.filter()),
            head: store.watch_head(),
            store: Arc::clone(&store),
            workflow: Arc::new(workflow),
            clock: Arc::clone(&clock),
            config,
            instances: Arc::clone(&instances),
            occurred_from,
            progress,
            timers,
            pending: Pending::new(committed),
            processed: committed,
            caught_up: false,
        };
        let watch = ProgressWatch { name: name.clone(), progress: progress_rx, head: store.watch_head() };
        let task = tokio::spawn(runner.run(inbox));
        Ok(WorkflowHandle {
            name,
            store,
            clock,
            instances,
            watch,
            timers: timers_rx,
            commands,
            task: Arc::new(Mutex::new(Some(task))),
        })
    }

    /// The pending deadlines of the workflow `name` as its instance streams save them, by due
    /// time: what tools show (`annals workflows`). Reads every instance stream of the workflow.
    ///
    /// # Errors
    /// [`WorkflowError::InvalidName`]; [`WorkflowError::Undecodable`] when an instance stream's
    /// last event is not a step of the workflow; store errors.
    pub async fn deadlines<S: EventStore + ?Sized>(store: &S, name: &str) -> Result<Vec<Deadline>, WorkflowError> {
        check_name(name)?;
        let mut pending: Vec<Deadline> = Vec::new();
        for saved in load_all(store, name).await? {
            pending.extend(saved.pending);
        }
        pending.sort_by_key(|d| (d.due, d.id));
        Ok(pending)
    }

    /// Every instance of the workflow `name` as its stream saves it, by stream name.
    ///
    /// # Errors
    /// As [`deadlines`](Self::deadlines).
    pub async fn instances<S: EventStore + ?Sized>(store: &S, name: &str) -> Result<Vec<SavedInstance>, WorkflowError> {
        check_name(name)?;
        load_all(store, name).await
    }

    /// The instance `instance` of the workflow `name`, or `None` when it never took a step.
    ///
    /// # Errors
    /// As [`deadlines`](Self::deadlines); an instance id that makes an invalid stream name is
    /// [`Error::InvalidStreamId`](crate::Error::InvalidStreamId).
    pub async fn instance<S: EventStore + ?Sized>(
        store: &S,
        name: &str,
        instance: &str,
    ) -> Result<Option<SavedInstance>, WorkflowError> {
        check_name(name)?;
        load_saved(store, name, &instance_stream(name, instance)?).await
    }

    /// Every workflow saved in `store` (with a checkpoint or an instance stream), by name, with its
    /// checkpoint, instance counts and pending deadlines.
    ///
    /// # Errors
    /// As [`deadlines`](Self::deadlines).
    pub async fn list<S: EventStore + ?Sized>(store: &S) -> Result<Vec<SavedWorkflow>, WorkflowError> {
        let mut names: BTreeMap<String, Option<Position>> = BTreeMap::new();
        for checkpoint in store.list_checkpoints("workflow/").await? {
            if let Some(name) = checkpoint.name.strip_prefix("workflow/") {
                names.insert(name.to_owned(), Some(checkpoint.position));
            }
        }
        for (stream, _) in store.list_streams("workflow-").await? {
            let name = stream.as_str().strip_prefix("workflow-").and_then(|rest| rest.split_once('-'));
            if let Some((name, _)) = name {
                names.entry(name.to_owned()).or_insert(None);
            }
        }
        let mut saved = Vec::with_capacity(names.len());
        for (name, checkpoint) in names {
            if check_name(&name).is_err() {
                continue;
            }
            let instances = load_all(store, &name).await?;
            let completed = instances.iter().filter(|i| i.completed).count();
            let mut pending: Vec<Deadline> = instances.iter().flat_map(|i| i.pending.iter().cloned()).collect();
            pending.sort_by_key(|d| (d.due, d.id));
            saved.push(SavedWorkflow { name, checkpoint, instances: instances.len(), completed, pending });
        }
        Ok(saved)
    }
}

/// Checks a workflow name: valid as a checkpoint name and a stream name prefix, without `-`.
fn check_name(name: &str) -> Result<(), WorkflowError> {
    let invalid = |problem| WorkflowError::InvalidName { name: name.to_owned(), problem };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.contains('-') {
        return Err(invalid("it holds a '-'"));
    }
    if validate_checkpoint_name(&checkpoint_key(name)).is_err() || instance_prefix(name).len() >= 200 {
        return Err(invalid("it is too long, or holds a control character"));
    }
    Ok(())
}
