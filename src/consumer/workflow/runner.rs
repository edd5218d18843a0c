//! The task of a running workflow: follows the log and fires deadlines, and commits each reaction
//! as one append (the instance's step with everything it decided).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;
use uuid::Uuid;

use super::actions::{Actions, CommandPlan, Op, Planned};
use super::clock::Clock;
use super::config::WorkflowConfig;
use super::error::WorkflowError;
use super::instances::{Instance, Instances};
use super::step::{
    deadline_id, instance_stream, issued_id, load_saved, step_id, Deadline, Issued, Rejected, Step, Trigger,
    STEP_SCHEMA_VERSION, WORKFLOW_STEP_EVENT_TYPE,
};
use super::Workflow;
use crate::consumer::follow::{Batch, Follower};
use crate::consumer::{occurred_before, sleep_until, telemetry, HandlerError, Pending, Progress};
use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::{ConsumerProblem, Error};
use crate::position::{ExpectedVersion, Position, Version};
use crate::store::{Checkpoint, CheckpointWrite, EventStore, HeadWatch, StreamAppend};
use crate::stream_id::StreamId;

/// The `kind` label of a workflow's consumer metrics.
pub(crate) const WORKFLOW: &str = "workflow";

/// Describes the workflow metrics (unit and meaning) to the installed recorder, once per process.
pub(crate) fn describe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let count = metrics::Unit::Count;
        metrics::describe_counter!("annals.workflow.steps", count, "steps a workflow committed, by trigger");
        metrics::describe_counter!("annals.workflow.deadlines.fired", count, "deadlines a workflow fired");
        metrics::describe_gauge!("annals.workflow.deadlines.pending", count, "a running workflow's pending deadlines");
        metrics::describe_counter!(
            "annals.workflow.commands.rejected",
            count,
            "commands a workflow issued that their aggregate refused"
        );
    });
}

/// What a handle asks of the task.
#[derive(Debug)]
pub(crate) enum Command {
    Stop,
}

/// The checkpoint name of the workflow `name`.
pub(crate) fn checkpoint_key(name: &str) -> String {
    format!("workflow/{name}")
}

/// What a reaction reacts to.
#[derive(Clone, Copy)]
enum Input<'a> {
    Event(&'a RecordedEvent),
    Deadline(&'a Deadline),
}

impl Input<'_> {
    fn trigger(&self) -> Trigger {
        match self {
            Input::Event(event) => Trigger::of_event(event),
            Input::Deadline(deadline) => Trigger::of_deadline(deadline),
        }
    }

    /// Whether `instance` already took the step for this input: a later position than the event's
    /// is folded in, or the deadline is no longer pending (it fired, or was cancelled).
    fn handled_by<St>(&self, instance: &Instance<St>) -> bool {
        match self {
            Input::Event(event) => event.position <= instance.reacted_through,
            Input::Deadline(deadline) => !instance.pending.iter().any(|p| p.id == deadline.id),
        }
    }

    fn correlation_id(&self) -> Option<String> {
        match self {
            Input::Event(event) => event.metadata.correlation_id.clone(),
            Input::Deadline(deadline) => deadline.correlation_id.clone(),
        }
    }
}

/// Why one attempt at a reaction failed.
enum Failure {
    /// The handler failed (or asked for something impossible): retried as the policy says.
    Handler(HandlerError),
    /// Another writer moved a stream the reaction expected, or its ids are stored otherwise: the
    /// instance is read again and the reaction decided again.
    Conflict(Error),
    /// A store error: retried as the policy says when it is retryable, else fatal.
    Store(Error),
    /// Stops the workflow at once.
    Fatal(Box<WorkflowError>),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        match error {
            Error::WrongExpectedVersion { .. } | Error::DuplicateEventId { .. } => Failure::Conflict(error),
            other => Failure::Store(other),
        }
    }
}

/// What the handler decided, with the instance after it.
struct Decision<St> {
    state: St,
    state_json: serde_json::Value,
    pending: Vec<Deadline>,
    scheduled: Vec<Uuid>,
    cancelled: Vec<Uuid>,
    completed: bool,
    appends: Vec<(StreamId, Vec<NewEvent>)>,
    commands: Vec<Box<dyn CommandPlan>>,
    /// Whether there is anything to write.
    changed: bool,
}

/// A running workflow's task.
pub(crate) struct Runner<S, W: Workflow> {
    pub(crate) name: String,
    pub(crate) store: Arc<S>,
    pub(crate) workflow: Arc<W>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: WorkflowConfig,
    pub(crate) instances: Arc<Mutex<Instances<W::State>>>,
    pub(crate) follower: Follower<Arc<S>>,
    pub(crate) head: HeadWatch,
    pub(crate) occurred_from: Option<DateTime<Utc>>,
    pub(crate) progress: watch::Sender<Progress>,
    pub(crate) timers: watch::Sender<Option<DateTime<Utc>>>,
    pub(crate) pending: Pending,
    pub(crate) processed: Position,
    pub(crate) caught_up: bool,
}

impl<S: EventStore + 'static, W: Workflow> Runner<S, W> {
    /// Runs until stopped or failed; on a failure, saves how far it got first (best effort).
    pub(crate) async fn run(mut self, inbox: mpsc::Receiver<Command>) -> Result<(), WorkflowError> {
        self.publish_timers();
        let outcome = self.work(inbox).await;
        let committed = self.commit().await;
        if let Err(error) = &outcome {
            tracing::error!(
                annals.workflow = self.name.as_str(),
                annals.position = self.processed.get(),
                "error.message" = %error,
                "workflow stopped on an error"
            );
        }
        outcome.and(committed)
    }

    /// Events first: a deadline fires only when every event acknowledged so far was reacted to.
    async fn work(&mut self, mut inbox: mpsc::Receiver<Command>) -> Result<(), WorkflowError> {
        loop {
            match inbox.try_recv() {
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return Ok(()),
                Err(TryRecvError::Empty) => {}
            }
            if !self.caught_up || self.head.current() > self.follower.through() {
                let batch = self.follower.next_batch().await?;
                self.apply(batch).await?;
                continue;
            }
            if let Some(deadline) = self.due_now() {
                self.fire(&deadline).await?;
                continue;
            }
            let next_due = self.lock().first_due_at();
            let commit_at = self.pending.deadline(&self.config.policy);
            let clock = Arc::clone(&self.clock);
            tokio::select! {
                command = inbox.recv() => match command {
                    Some(Command::Stop) | None => return Ok(()),
                },
                batch = self.follower.next_batch() => self.apply(batch?).await?,
                () = wait_due(&*clock, next_due) => {}
                () = sleep_until(commit_at) => self.commit().await?,
            }
        }
    }

    /// Reacts to a page's events, in log order, then notes the progress.
    async fn apply(&mut self, batch: Batch) -> Result<(), WorkflowError> {
        let span = telemetry::batch_span(&self.name, WORKFLOW, &batch);
        let started = Instant::now();
        async {
            for event in &batch.events {
                if event.event_type != WORKFLOW_STEP_EVENT_TYPE && !occurred_before(event, self.occurred_from) {
                    if let Some(id) = self.workflow.instance(event) {
                        self.react(&id, Input::Event(event)).await?;
                    }
                    self.pending.note(1);
                }
                self.advance(event.position);
            }
            self.advance(batch.through);
            if batch.caught_up {
                self.caught_up = true;
                self.progress.send_modify(|p| p.caught_up = Some(batch.through));
            }
            if batch.caught_up || self.pending.full(&self.config.policy) {
                self.commit().await?;
            }
            Ok::<(), WorkflowError>(())
        }
        .instrument(span)
        .await?;
        telemetry::batch_done(&self.name, WORKFLOW, started);
        let progress = *self.progress.borrow();
        telemetry::progress(&self.name, WORKFLOW, progress.processed, progress.checkpoint, self.head.current());
        Ok(())
    }

    /// Notes that every event up to `through` was reacted to.
    fn advance(&mut self, through: Position) {
        if through > self.processed {
            self.processed = through;
            self.pending.progress(through, 0);
            self.progress.send_modify(|p| p.processed = through);
        }
    }

    /// Saves the checkpoint, if it moved.
    async fn commit(&mut self) -> Result<(), WorkflowError> {
        self.pending.clear();
        let through = self.processed;
        if through <= self.pending.committed {
            return Ok(());
        }
        let started = Instant::now();
        let write = CheckpointWrite::Save(Checkpoint::new(checkpoint_key(&self.name), through));
        self.store.save_checkpoints(vec![write]).instrument(telemetry::checkpoint_span(&self.name, through)).await?;
        telemetry::checkpoint_done(&self.name, WORKFLOW, started);
        self.pending.committed(through);
        self.progress.send_modify(|p| p.checkpoint = through);
        Ok(())
    }

    /// The first pending deadline, if the clock has reached it.
    fn due_now(&self) -> Option<Deadline> {
        let first = self.lock().first_due()?;
        (first.due <= self.clock.now()).then_some(first)
    }

    /// Fires a deadline that came due.
    async fn fire(&mut self, deadline: &Deadline) -> Result<(), WorkflowError> {
        let instance = deadline.instance.clone();
        self.react(&instance, Input::Deadline(deadline)).await?;
        metrics::counter!("annals.workflow.deadlines.fired", "workflow" => self.name.clone()).increment(1);
        Ok(())
    }

    /// Reacts to `input` for the instance `id`: decides and commits a step, unless the instance
    /// took it already. Retries as the policy says; a conflict reads the instance again and
    /// decides again.
    async fn react(&mut self, id: &str, input: Input<'_>) -> Result<(), WorkflowError> {
        let (mut attempt, mut conflicts) = (1, 0);
        loop {
            let Some(instance) = self.instance(id).await? else { return Ok(()) };
            if input.handled_by(&instance) {
                return Ok(());
            }
            let span = tracing::debug_span!(
                "annals.workflow.step",
                annals.workflow = self.name.as_str(),
                annals.instance = id,
                annals.trigger = %input.trigger(),
            );
            let failure = match self.step(id, instance, input).instrument(span).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if matches!(failure, Failure::Conflict(_) | Failure::Store(_)) {
                // The store may hold more than memory (another writer, an append whose answer was
                // lost): the next attempt starts from the instance as the store has it.
                self.reload(id).await;
            }
            let error = match failure {
                Failure::Fatal(error) => return Err(*error),
                Failure::Conflict(error) => {
                    conflicts += 1;
                    if conflicts > self.config.max_conflicts {
                        return Err(WorkflowError::Store(error));
                    }
                    continue;
                }
                Failure::Store(error) if !error.is_retryable() => return Err(WorkflowError::Store(error)),
                Failure::Store(error) => WorkflowError::Store(error),
                Failure::Handler(source) => {
                    telemetry::handler_failed(&self.name, WORKFLOW);
                    let (workflow, instance, trigger) = (self.name.clone(), id.to_owned(), Box::new(input.trigger()));
                    WorkflowError::Handler { workflow, instance, trigger, attempts: attempt, source }
                }
            };
            if attempt >= self.config.retry.max_attempts() {
                return Err(error);
            }
            tracing::warn!(
                annals.workflow = self.name.as_str(),
                annals.instance = id,
                annals.attempt = attempt,
                "error.message" = %error,
                "workflow reaction failed, will retry"
            );
            tokio::time::sleep(self.config.retry.delay(attempt)).await;
            attempt += 1;
        }
    }

    /// The instance `id`: from memory, else from its stream (kept in memory then), else a fresh
    /// one. `None` when it completed.
    async fn instance(&self, id: &str) -> Result<Option<Instance<W::State>>, WorkflowError> {
        let known = self.lock().get(id);
        if let Some(known) = known {
            return Ok(known);
        }
        let Some(instance) = self.read(id).await? else { return Ok(Some(Instance::fresh())) };
        self.lock().put(id, instance.clone());
        self.publish_timers();
        Ok((!instance.completed).then_some(instance))
    }

    /// Reads the instance `id` from the store again, replacing what memory holds. On a failure it
    /// is left out of memory, so that its next use reads it (and meets the failure) again.
    async fn reload(&self, id: &str) {
        match self.read(id).await {
            Ok(Some(instance)) => self.lock().put(id, instance),
            Ok(None) | Err(_) => self.lock().forget(id),
        }
        self.publish_timers();
    }

    /// The instance `id` as its stream saves it, or `None` when it has no stream.
    async fn read(&self, id: &str) -> Result<Option<Instance<W::State>>, WorkflowError> {
        let stream = instance_stream(&self.name, id)?;
        match load_saved(&*self.store, &self.name, &stream).await? {
            Some(saved) => Ok(Some(Instance::from_saved(saved)?)),
            None => Ok(None),
        }
    }

    /// One attempt at a reaction: decide, plan the commands, append everything at once.
    async fn step(&mut self, id: &str, instance: Instance<W::State>, input: Input<'_>) -> Result<(), Failure> {
        let trigger = input.trigger();
        let step = step_id(&self.name, id, trigger.id());
        let now = self.clock.now();
        let decision = self.decide(id, &instance, input, now, step)?;
        if !decision.changed {
            if let Input::Event(event) = input {
                self.lock().reacted(id, event.position);
            }
            return Ok(());
        }
        let stamp = Stamp { step, now, causation: trigger.id().to_string(), correlation: input.correlation_id() };
        let (mut parts, issued, rejected) = self.plan(&stamp, decision.appends, decision.commands).await?;
        let reacted_through = match input {
            Input::Event(event) => event.position,
            Input::Deadline(_) => instance.reacted_through,
        };
        let saved = Step {
            workflow: self.name.clone(),
            instance: id.to_owned(),
            trigger,
            reacted_through,
            state: decision.state_json,
            pending: decision.pending.clone(),
            completed: decision.completed,
            scheduled: decision.scheduled,
            cancelled: decision.cancelled,
            issued,
            rejected,
        };
        parts.insert(0, self.step_part(id, instance.version, &saved, &stamp)?);
        let after = Instance {
            version: instance.version,
            state: decision.state,
            pending: decision.pending,
            completed: decision.completed,
            reacted_through,
        };
        self.commit_step(id, parts, after).await?;
        let kind = if matches!(input, Input::Event(_)) { "event" } else { "deadline" };
        metrics::counter!("annals.workflow.steps", "workflow" => self.name.clone(), "trigger" => kind).increment(1);
        Ok(())
    }

    /// The instance stream's part of a step's append: the step event, expecting the version the
    /// instance was decided at.
    fn step_part(&self, id: &str, version: Version, saved: &Step, stamp: &Stamp) -> Result<StreamAppend, Failure> {
        let fatal = |error: Error| Failure::Fatal(Box::new(error.into()));
        let event =
            NewEvent::json(WORKFLOW_STEP_EVENT_TYPE, saved).map_err(fatal)?.with_schema_version(STEP_SCHEMA_VERSION);
        let stream = instance_stream(&self.name, id).map_err(fatal)?;
        Ok(StreamAppend::new(stream, ExpectedVersion::Exact(version), vec![stamp.apply(event, stamp.step)]))
    }

    /// Appends a step's parts in one write and keeps `after` (at the version the append gave) as the
    /// instance. A retry's answer means the step was stored before: the instance is read again.
    async fn commit_step(
        &self,
        id: &str,
        parts: Vec<StreamAppend>,
        mut after: Instance<W::State>,
    ) -> Result<(), Failure> {
        let results = self.store.append_multi(parts).await?;
        let Some(result) = results.first() else {
            return Err(Failure::Store(Error::EmptyAppend { stream: id.into() }));
        };
        if result.already_appended {
            // Decided before (an append whose answer was lost): the stored step is the truth.
            self.reload(id).await;
        } else {
            after.version = result.version;
            self.lock().put(id, after);
            self.publish_timers();
        }
        Ok(())
    }

    /// Runs the handler on a copy of the instance, and works out the instance after it.
    fn decide(
        &self,
        id: &str,
        instance: &Instance<W::State>,
        input: Input<'_>,
        now: DateTime<Utc>,
        step: Uuid,
    ) -> Result<Decision<W::State>, Failure> {
        let mut before = instance.pending.clone();
        if let Input::Deadline(firing) = input {
            before.retain(|d| d.id != firing.id);
        }
        let mut state = instance.state.clone();
        let mut act = Actions::new(now, before.clone());
        let decided = match input {
            Input::Event(event) => self.workflow.on_event(&mut state, event, &mut act),
            Input::Deadline(deadline) => self.workflow.on_deadline(&mut state, deadline, &mut act),
        };
        decided.map_err(Failure::Handler)?;
        if let Some(problem) = act.problem.take() {
            return Err(Failure::Handler(Box::new(problem)));
        }
        let pending =
            self.deadlines_after(id, &before, std::mem::take(&mut act.ops), act.completed, (now, step, input));
        let scheduled: Vec<Uuid> =
            pending.iter().filter(|d| !before.iter().any(|b| b.id == d.id)).map(|d| d.id).collect();
        let cancelled: Vec<Uuid> =
            before.iter().filter(|b| !pending.iter().any(|d| d.id == b.id)).map(|b| b.id).collect();
        let state_json = self.encode(&state)?;
        let changed = matches!(input, Input::Deadline(_))
            || act.completed
            || !scheduled.is_empty()
            || !cancelled.is_empty()
            || !act.appends.is_empty()
            || !act.commands.is_empty()
            || state_json != self.encode(&instance.state)?;
        Ok(Decision {
            state,
            state_json,
            pending,
            scheduled,
            cancelled,
            completed: act.completed,
            appends: act.appends,
            commands: act.commands,
            changed,
        })
    }

    /// The pending deadlines after applying `ops` (in order) to `before`, by due time.
    fn deadlines_after(
        &self,
        id: &str,
        before: &[Deadline],
        ops: Vec<Op>,
        completed: bool,
        (now, step, input): (DateTime<Utc>, Uuid, Input<'_>),
    ) -> Vec<Deadline> {
        let mut pending = before.to_vec();
        let mut index = 0;
        for op in ops {
            match op {
                Op::Schedule { name, due, payload } => {
                    pending.retain(|d| d.name != name);
                    let deadline_id = deadline_id(step, index);
                    index += 1;
                    let when = (now, input.correlation_id());
                    pending.push(Deadline::new(deadline_id, (&self.name, id), name, due, payload, when));
                }
                Op::Cancel { name } => pending.retain(|d| d.name != name),
            }
        }
        if completed {
            pending.clear();
        }
        pending.sort_by_key(|d| (d.due, d.id));
        pending
    }

    fn encode(&self, state: &W::State) -> Result<serde_json::Value, Failure> {
        serde_json::to_value(state).map_err(|source| {
            let problem = ConsumerProblem::StateDoesNotEncode(source);
            Failure::Fatal(Box::new(WorkflowError::Store(Error::Consumer { consumer: self.name.clone(), problem })))
        })
    }

    /// The other streams' parts of the append: the events appended, then each command's, with ids
    /// numbered in that order. Commands load their aggregates now.
    async fn plan(
        &self,
        stamp: &Stamp,
        appends: Vec<(StreamId, Vec<NewEvent>)>,
        commands: Vec<Box<dyn CommandPlan>>,
    ) -> Result<(Vec<StreamAppend>, Vec<Issued>, Vec<Rejected>), Failure> {
        let (mut parts, mut issued, mut rejected) = (Vec::new(), Vec::new(), Vec::new());
        let mut index = 0;
        let mut parts_for = |stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>, index: &mut usize| {
            let events: Vec<NewEvent> = events
                .into_iter()
                .map(|event| {
                    let id = issued_id(stamp.step, *index);
                    *index += 1;
                    stamp.apply(event, id)
                })
                .collect();
            issued.push(Issued { stream: stream.clone(), events: events.len() });
            parts.push(StreamAppend::new(stream, expected, events));
        };
        for (stream, events) in appends {
            if !events.is_empty() {
                parts_for(stream, ExpectedVersion::Any, events, &mut index);
            }
        }
        for command in commands {
            match command.plan(&*self.store).await? {
                Planned::Events { expected, events } if !events.is_empty() => {
                    parts_for(command.stream().clone(), ExpectedVersion::Exact(expected), events, &mut index);
                }
                Planned::Events { .. } => {}
                Planned::Rejected(error) => {
                    tracing::warn!(
                        annals.workflow = self.name.as_str(),
                        annals.stream = command.stream().as_str(),
                        "error.message" = error.as_str(),
                        "a workflow's command was rejected"
                    );
                    metrics::counter!("annals.workflow.commands.rejected", "workflow" => self.name.clone())
                        .increment(1);
                    rejected.push(Rejected { stream: command.stream().clone(), error });
                }
            }
        }
        Ok((parts, issued, rejected))
    }

    /// Tells the handles when the first pending deadline is due, and sets the gauge.
    fn publish_timers(&self) {
        let (first, count) = {
            let instances = self.lock();
            (instances.first_due_at(), instances.pending_count())
        };
        self.timers.send_if_modified(|due| std::mem::replace(due, first) != first);
        metrics::gauge!("annals.workflow.deadlines.pending", "workflow" => self.name.clone()).set(count as f64);
    }

    fn lock(&self) -> MutexGuard<'_, Instances<W::State>> {
        // Nothing panics while holding it; if something did, the instances are still a cache of
        // the store, which every conflict reloads.
        self.instances.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What every event a reaction appends gets: its id, a business time, and the trigger as cause.
struct Stamp {
    step: Uuid,
    now: DateTime<Utc>,
    causation: String,
    correlation: Option<String>,
}

impl Stamp {
    /// `event` with the id `id`, and the reaction's time and ids where it has none.
    fn apply(&self, event: NewEvent, id: Uuid) -> NewEvent {
        let mut event = event.with_id(id);
        if event.occurred_at().is_none() {
            event = event.with_occurred_at(self.now);
        }
        if event.metadata().causation_id.is_none() {
            event = event.with_causation_id(self.causation.clone());
        }
        if let (None, Some(correlation)) = (&event.metadata().correlation_id, &self.correlation) {
            event = event.with_correlation_id(correlation.clone());
        }
        event
    }
}

/// Waits until the clock may have reached `due`, or forever when nothing is pending.
async fn wait_due(clock: &dyn Clock, due: Option<DateTime<Utc>>) {
    match due {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}
