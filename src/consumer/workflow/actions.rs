//! [`Actions`]: what one reaction of a workflow decides, collected while its handler runs and
//! committed afterwards in one append.

use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::TryStreamExt;

use super::step::Deadline;
use crate::aggregate::Aggregate;
use crate::envelope::NewEvent;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::position::Version;
use crate::store::{EventStore, ReadStream};
use crate::stream_id::StreamId;

/// What a workflow's handler decides in one reaction: deadlines to schedule and cancel, events to
/// append to other streams, commands to issue to aggregates, and whether the instance is complete.
///
/// Nothing happens while the handler runs. Afterwards, everything it decided is committed in one
/// atomic append, together with the instance's step (its new state and pending deadlines); every
/// event gets an id derived from the workflow, the instance and the trigger, so deciding the same
/// reaction again (after a crash, or a failed append whose outcome is unknown) stores nothing twice.
///
/// Calls take effect in order: `schedule("reminder", ..)` after `cancel("reminder")` leaves one
/// pending, the other way round none.
pub struct Actions {
    now: DateTime<Utc>,
    pending: Vec<Deadline>,
    pub(crate) ops: Vec<Op>,
    pub(crate) appends: Vec<(StreamId, Vec<NewEvent>)>,
    pub(crate) commands: Vec<Box<dyn CommandPlan>>,
    pub(crate) completed: bool,
    /// The first call that could not be honoured: the reaction fails with it.
    pub(crate) problem: Option<Error>,
}

/// A change to the instance's deadlines, in call order.
#[derive(Debug)]
pub(crate) enum Op {
    Schedule { name: String, due: DateTime<Utc>, payload: serde_json::Value },
    Cancel { name: String },
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Actions")
            .field("now", &self.now)
            .field("ops", &self.ops)
            .field("appends", &self.appends)
            .field("commands", &self.commands.iter().map(|c| c.stream().as_str()).collect::<Vec<_>>())
            .field("completed", &self.completed)
            .finish_non_exhaustive()
    }
}

impl Actions {
    pub(crate) fn new(now: DateTime<Utc>, pending: Vec<Deadline>) -> Self {
        Actions {
            now,
            pending,
            ops: Vec::new(),
            appends: Vec::new(),
            commands: Vec::new(),
            completed: false,
            problem: None,
        }
    }

    /// The workflow clock's time as the reaction runs. For a deadline "14 days after the loan", the
    /// triggering event's `occurred_at` is the better base: it does not change if the reaction runs
    /// late.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// The instance's pending deadlines as the reaction began (without the one firing), by due time.
    pub fn pending(&self) -> &[Deadline] {
        &self.pending
    }

    /// Whether a deadline of this name was pending as the reaction began (the one firing aside).
    pub fn is_pending(&self, name: &str) -> bool {
        self.pending.iter().any(|d| d.name == name)
    }

    /// Schedules the deadline `name` to fire at `due` (business time, by the workflow's
    /// [`Clock`](super::Clock)), with `payload` for `on_deadline`. A pending deadline of the same
    /// name is replaced (cancelled). A due time already past fires as soon as the step is committed
    /// and the workflow has caught up.
    pub fn schedule(&mut self, name: impl Into<String>, due: DateTime<Utc>, payload: serde_json::Value) {
        self.ops.push(Op::Schedule { name: name.into(), due, payload });
    }

    /// Cancels the pending deadline `name`, if there is one: it never fires.
    pub fn cancel(&mut self, name: impl Into<String>) {
        self.ops.push(Op::Cancel { name: name.into() });
    }

    /// Appends `events` to `stream` (any stream but the instance's own), with the step, at whatever
    /// version the stream is then (`ExpectedVersion::Any`). Their ids are replaced by ids derived
    /// from the reaction; an event without a business time gets [`now`](Self::now), and without a
    /// causation or correlation id those of the trigger.
    pub fn append(&mut self, stream: StreamId, events: impl IntoIterator<Item = NewEvent>) {
        let events = events.into_iter();
        match self.appends.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, stream_events)) => stream_events.extend(events),
            None => self.appends.push((stream, events.collect())),
        }
    }

    /// Issues `command` to the aggregate `A` called `id`. After the handler returns, the aggregate
    /// is loaded from its stream, handles the command, and its events are appended with the step,
    /// expecting the version it was loaded at; on a conflict the aggregate is loaded again and
    /// handles the command again. A refusal (the aggregate's business error) appends nothing for it
    /// and is recorded in the step; the rest of the reaction is committed. One command per aggregate
    /// per reaction, and not to a stream [`append`](Self::append) also writes.
    ///
    /// The aggregate is folded from its events (no snapshot, no repository cache).
    pub fn command<A>(&mut self, id: &str, command: A::Command)
    where
        A: Aggregate,
        A::Command: Clone + Sync,
    {
        match A::stream_id(id) {
            Ok(stream) => self.commands.push(Box::new(TypedCommand::<A> { stream, command, _aggregate: PhantomData })),
            Err(error) => {
                self.problem.get_or_insert(error);
            }
        }
    }

    /// Ends the instance: its pending deadlines are cancelled (also those scheduled by this
    /// reaction), and it reacts to nothing any more.
    pub fn complete(&mut self) {
        self.completed = true;
    }
}

/// What a command comes to once its aggregate decided.
#[derive(Debug)]
pub(crate) enum Planned {
    /// Append these events, expecting the stream at this version (none: the aggregate decided
    /// nothing).
    Events { expected: Version, events: Vec<NewEvent> },
    /// The aggregate refused, saying this.
    Rejected(String),
}

/// A command to an aggregate, with its type erased: loads it and lets it decide.
pub(crate) trait CommandPlan: Send + Sync {
    /// The aggregate's stream.
    fn stream(&self) -> &StreamId;

    /// Loads the aggregate from `store` and runs the command.
    fn plan<'a>(&'a self, store: &'a dyn EventStore) -> BoxFuture<'a, Result<Planned>>;
}

struct TypedCommand<A: Aggregate> {
    stream: StreamId,
    command: A::Command,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> CommandPlan for TypedCommand<A>
where
    A: Aggregate,
    A::Command: Clone + Sync,
{
    fn stream(&self) -> &StreamId {
        &self.stream
    }

    fn plan<'a>(&'a self, store: &'a dyn EventStore) -> BoxFuture<'a, Result<Planned>> {
        Box::pin(async move {
            let mut state = A::default();
            let mut version = Version::ZERO;
            let mut events = store.read_stream(&self.stream, ReadStream::forward());
            while let Some(recorded) = events.try_next().await? {
                state.apply(&A::Event::from_recorded(&recorded)?);
                version = recorded.version;
            }
            match state.handle(self.command.clone()) {
                Ok(decided) => {
                    let events = decided.iter().map(Event::to_new_event).collect::<Result<Vec<_>>>()?;
                    Ok(Planned::Events { expected: version, events })
                }
                Err(rejection) => Ok(Planned::Rejected(rejection.to_string())),
            }
        })
    }
}
