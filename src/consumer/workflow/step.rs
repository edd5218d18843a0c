//! What a workflow writes: one `$WorkflowStepped` event per reaction in the instance's stream, the
//! deterministic ids of everything a reaction appends, and reading instances back.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::WorkflowError;
use crate::envelope::RecordedEvent;
use crate::error::Result;
use crate::position::{Position, Version};
use crate::store::{EventStore, ReadStream};
use crate::stream_id::StreamId;

/// The event type of a workflow's steps.
pub const WORKFLOW_STEP_EVENT_TYPE: &str = "$WorkflowStepped";

/// The schema version of [`WORKFLOW_STEP_EVENT_TYPE`] payloads.
pub(crate) const STEP_SCHEMA_VERSION: u32 = 1;

/// The namespace of every id a workflow derives (UUID v5).
const IDS: Uuid = Uuid::from_u128(0x6a1d_5c3e_8f0b_4c2a_9e57_3b1f_d0c4_a718);

/// What a step reacted to: an event of the log, or a deadline that came due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Trigger {
    /// An event the workflow's filter admits, routed to the instance.
    Event {
        /// The event's id.
        id: Uuid,
        /// Its position in the log.
        position: Position,
        /// Its stream.
        stream: StreamId,
        /// Its type.
        event_type: String,
    },
    /// A deadline of the instance that came due.
    Deadline {
        /// The deadline's id.
        id: Uuid,
        /// Its name.
        name: String,
        /// When it was due (business time).
        due: DateTime<Utc>,
    },
}

impl Trigger {
    /// The trigger of a recorded event.
    pub(crate) fn of_event(event: &RecordedEvent) -> Self {
        Trigger::Event {
            id: event.id,
            position: event.position,
            stream: event.stream.clone(),
            event_type: event.event_type.clone(),
        }
    }

    /// The trigger of a deadline.
    pub(crate) fn of_deadline(deadline: &Deadline) -> Self {
        Trigger::Deadline { id: deadline.id, name: deadline.name.clone(), due: deadline.due }
    }

    /// The id of the event or deadline: what the ids of the step derive from.
    pub fn id(&self) -> Uuid {
        match self {
            Trigger::Event { id, .. } | Trigger::Deadline { id, .. } => *id,
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Event { position, event_type, stream, .. } => {
                write!(f, "event {event_type:?} of {stream:?} at position {position}")
            }
            Trigger::Deadline { name, due, .. } => write!(f, "deadline {name:?} due at {due}"),
        }
    }
}

/// A durable timer of a workflow instance: it fires once, when the workflow's [`Clock`](super::Clock)
/// reaches `due`, unless a later step cancels it first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Deadline {
    /// Its id, derived from the step that scheduled it: unique, and the same if that step is
    /// decided again.
    pub id: Uuid,
    /// The workflow.
    pub workflow: String,
    /// The instance.
    pub instance: String,
    /// Its name within the instance (scheduling a name again replaces the pending one).
    pub name: String,
    /// When it comes due, in business time (to the microsecond).
    pub due: DateTime<Utc>,
    /// What the workflow gave it when scheduling it.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// The workflow clock's time when it was scheduled.
    pub scheduled_at: DateTime<Utc>,
    /// The correlation id of what scheduled it, given to the events its firing appends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl Deadline {
    /// A deadline to store: due and scheduling times to the microsecond, as the store keeps times.
    pub(crate) fn new(
        id: Uuid,
        (workflow, instance): (&str, &str),
        name: String,
        due: DateTime<Utc>,
        payload: serde_json::Value,
        (scheduled_at, correlation_id): (DateTime<Utc>, Option<String>),
    ) -> Self {
        Deadline {
            id,
            workflow: workflow.to_owned(),
            instance: instance.to_owned(),
            name,
            due: due.trunc_subsecs(6),
            payload,
            scheduled_at: scheduled_at.trunc_subsecs(6),
            correlation_id,
        }
    }
}

/// Events a step appended to one stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Issued {
    pub(crate) stream: StreamId,
    pub(crate) events: usize,
}

/// A command a step issued that its aggregate refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rejected {
    pub(crate) stream: StreamId,
    pub(crate) error: String,
}

/// The payload of a `$WorkflowStepped` event: the whole instance after the step (so the last step
/// alone is the instance), and what the step did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Step {
    pub(crate) workflow: String,
    pub(crate) instance: String,
    pub(crate) trigger: Trigger,
    /// The last log position the instance reacted to, this step's event included.
    pub(crate) reacted_through: Position,
    pub(crate) state: serde_json::Value,
    /// The deadlines pending after the step.
    pub(crate) pending: Vec<Deadline>,
    #[serde(default)]
    pub(crate) completed: bool,
    /// Ids of the deadlines this step scheduled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) scheduled: Vec<Uuid>,
    /// Ids of the deadlines this step cancelled (replaced, cancelled, or ended by `complete`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) cancelled: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) issued: Vec<Issued>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) rejected: Vec<Rejected>,
}

/// A workflow instance as its stream saves it: what tools show.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SavedInstance {
    /// The workflow.
    pub workflow: String,
    /// The instance's id.
    pub instance: String,
    /// Its stream, `workflow-<workflow>-<instance>`.
    pub stream: StreamId,
    /// The stream's version: how many steps the instance took.
    pub version: Version,
    /// Its state after the last step, as JSON.
    pub state: serde_json::Value,
    /// Its pending deadlines, by due time.
    pub pending: Vec<Deadline>,
    /// Whether it completed (it reacts to nothing any more).
    pub completed: bool,
    /// The last log position it reacted to.
    pub reacted_through: Position,
    /// When its last step was recorded.
    pub updated_at: DateTime<Utc>,
}

/// The stream of an instance.
pub(crate) fn instance_stream(workflow: &str, instance: &str) -> Result<StreamId> {
    StreamId::new(format!("{}{instance}", instance_prefix(workflow)))
}

/// The prefix of every instance stream of a workflow.
pub(crate) fn instance_prefix(workflow: &str) -> String {
    format!("workflow-{workflow}-")
}

/// The id of the step reacting to `trigger` (an event's or a deadline's id).
pub(crate) fn step_id(workflow: &str, instance: &str, trigger: Uuid) -> Uuid {
    Uuid::new_v5(&IDS, format!("step\n{workflow}\n{instance}\n{trigger}").as_bytes())
}

/// The id of the `index`-th event (from 0, over every stream) a step appends besides itself.
pub(crate) fn issued_id(step: Uuid, index: usize) -> Uuid {
    Uuid::new_v5(&IDS, format!("issued\n{step}\n{index}").as_bytes())
}

/// The id of the `index`-th deadline a step schedules.
pub(crate) fn deadline_id(step: Uuid, index: usize) -> Uuid {
    Uuid::new_v5(&IDS, format!("deadline\n{step}\n{index}").as_bytes())
}

/// Reads a step event back, checking it is one of `workflow`'s.
pub(crate) fn decode_step(workflow: &str, event: &RecordedEvent) -> Result<Step, WorkflowError> {
    let undecodable =
        |source| WorkflowError::Undecodable { stream: event.stream.clone(), version: event.version, source };
    if event.event_type != WORKFLOW_STEP_EVENT_TYPE {
        let problem = format!("event type {:?} is not {WORKFLOW_STEP_EVENT_TYPE:?}", event.event_type);
        return Err(undecodable(serde::de::Error::custom(problem)));
    }
    let step: Step = serde_json::from_str(&event.payload).map_err(undecodable)?;
    if step.workflow != workflow {
        let problem = format!("a step of workflow {:?}, not {workflow:?}", step.workflow);
        return Err(undecodable(serde::de::Error::custom(problem)));
    }
    Ok(step)
}

/// The instance saved in `stream` (its last step), or `None` when the stream has no events.
pub(crate) async fn load_saved<S: EventStore + ?Sized>(
    store: &S,
    workflow: &str,
    stream: &StreamId,
) -> Result<Option<SavedInstance>, WorkflowError> {
    let mut last = store.read_stream(stream, ReadStream::backward().limit(1));
    let Some(event) = last.try_next().await? else { return Ok(None) };
    let mut step = decode_step(workflow, &event)?;
    step.pending.sort_by_key(|d| (d.due, d.id));
    Ok(Some(SavedInstance {
        workflow: step.workflow,
        instance: step.instance,
        stream: event.stream,
        version: event.version,
        state: step.state,
        pending: step.pending,
        completed: step.completed,
        reacted_through: step.reacted_through,
        updated_at: event.recorded_at,
    }))
}

/// Every saved instance of `workflow`, by stream name.
pub(crate) async fn load_all<S: EventStore + ?Sized>(
    store: &S,
    workflow: &str,
) -> Result<Vec<SavedInstance>, WorkflowError> {
    let mut saved = Vec::new();
    for (stream, _) in store.list_streams(&instance_prefix(workflow)).await? {
        if let Some(instance) = load_saved(store, workflow, &stream).await? {
            saved.push(instance);
        }
    }
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let trigger = Uuid::from_u128(7);
        let step = step_id("reminders", "loan-1", trigger);
        assert_eq!(step, step_id("reminders", "loan-1", trigger), "the same reaction gets the same id");
        assert_ne!(step, step_id("reminders", "loan-2", trigger));
        assert_ne!(step, step_id("mailer", "loan-1", trigger));
        assert_ne!(issued_id(step, 0), issued_id(step, 1));
        assert_ne!(issued_id(step, 0), deadline_id(step, 0));
        assert_eq!(deadline_id(step, 3), deadline_id(step, 3));
    }

    #[test]
    fn a_step_reads_back_as_written() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let deadline = Deadline::new(
            Uuid::from_u128(1),
            ("reminders", "7"),
            "reminder".into(),
            at,
            serde_json::json!({ "n": 1 }),
            (at, Some("desk".into())),
        );
        let step = Step {
            workflow: "reminders".into(),
            instance: "7".into(),
            trigger: Trigger::of_deadline(&deadline),
            reacted_through: Position::new(4),
            state: serde_json::json!({ "sent": 1 }),
            pending: vec![deadline],
            completed: false,
            scheduled: vec![Uuid::from_u128(1)],
            cancelled: Vec::new(),
            issued: vec![Issued { stream: StreamId::new("loan-7")?, events: 1 }],
            rejected: Vec::new(),
        };
        let json = serde_json::to_string(&step)?;
        assert_eq!(serde_json::from_str::<Step>(&json)?, step);
        Ok(())
    }
}
