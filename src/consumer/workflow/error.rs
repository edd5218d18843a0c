//! [`WorkflowError`]: what stops a workflow, or fails a call on one.

use crate::consumer::HandlerError;
use crate::error::Error;
use crate::position::{Position, Version};
use crate::stream_id::StreamId;

use super::step::Trigger;

/// An error of a workflow: its handler failed for good, its saved steps do not read back, or the
/// store failed.
///
/// The store's [`Error`] is wrapped as [`WorkflowError::Store`]; the variants here are the
/// workflow's own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// The store failed, or refused what the workflow asked of it. See [`Error`] for how to handle
    /// each kind; a running workflow retries the retryable ones ([`Error::is_retryable`]) itself, as
    /// its [`RetryPolicy`](crate::RetryPolicy) says, before it stops with them. Input errors
    /// ([`Error::is_invalid_input`]: an instance id that makes an invalid stream name, a step larger
    /// than the store's maximum event size, one reaction naming a stream twice) are bugs of the
    /// workflow: fix it and restart.
    #[error(transparent)]
    Store(#[from] Error),

    /// The workflow's `on_event` or `on_deadline` failed on `trigger` after every attempt its
    /// [`RetryPolicy`](crate::RetryPolicy) allows. It stopped without a step for the trigger: a
    /// restart reacts to the trigger again (the event is after the checkpoint, the deadline still
    /// pending). Fix the cause and restart; nothing is ever skipped.
    #[error("workflow {workflow:?} failed on {trigger} of instance {instance:?} after {attempts} attempt(s)")]
    Handler {
        /// The workflow.
        workflow: String,
        /// The instance the trigger was for.
        instance: String,
        /// What it was reacting to.
        trigger: Box<Trigger>,
        /// How many times it was tried.
        attempts: u32,
        /// The handler's last error.
        #[source]
        source: HandlerError,
    },

    /// The workflow's `on_event` or `on_deadline` panicked. The workflow stopped at once, without a
    /// step for the trigger, so a restart reacts to it again. A bug in the workflow: fix it, restart.
    #[error("workflow {workflow:?} stopped: its handler panicked{}", match message { Some(m) => format!(" with {m:?}"), None => String::new() })]
    Panicked {
        /// The workflow.
        workflow: String,
        /// The panic's message, when it was a string.
        message: Option<String>,
    },

    /// The last event of an instance stream is not a step of this workflow, or its state does not
    /// deserialize into the workflow's `State`: the state type changed incompatibly, or another
    /// program wrote into the stream. Nothing was changed. Make the new `State` read the old JSON
    /// (serde defaults, aliases), or restore the old type.
    #[error("the step at version {version} of {stream:?} does not read back")]
    Undecodable {
        /// The instance stream.
        stream: StreamId,
        /// The version of its last event.
        version: Version,
        /// What the JSON reader said.
        #[source]
        source: serde_json::Error,
    },

    /// A workflow name is empty, holds a `-` (it names the instance streams
    /// `workflow-<name>-<instance>`, so a `-` would make two workflows share streams) or breaks the
    /// name rule of checkpoints. A caller bug: choose another name.
    #[error("invalid workflow name {name:?}: {problem}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },

    /// A wait on a running workflow ran out of time. Nothing is wrong; wait again, or report it as
    /// lagging.
    #[error("workflow {workflow:?} reached position {reached}, not {wanted}, within {waited:?}")]
    Timeout {
        /// The workflow.
        workflow: String,
        /// The position waited for.
        wanted: Position,
        /// The position it had handled when the time ran out.
        reached: Position,
        /// How long the wait lasted.
        waited: std::time::Duration,
    },

    /// The workflow has stopped (asked to, or on an error its `stop()` returns); the request could
    /// not be served. Restart it if it should be running.
    #[error("workflow {workflow:?} has stopped")]
    Stopped {
        /// The workflow.
        workflow: String,
    },
}

impl WorkflowError {
    /// Whether the same call may succeed if made again later, unchanged: a retryable store error
    /// ([`Error::is_retryable`]) or a wait that ran out of time.
    pub fn is_retryable(&self) -> bool {
        match self {
            WorkflowError::Store(error) => error.is_retryable(),
            WorkflowError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// The core error of a wait on the consumer's progress, in the workflow's terms.
    pub(crate) fn from_wait(workflow: &str, error: Error) -> Self {
        match error {
            Error::Timeout { wanted, reached, waited, .. } => {
                WorkflowError::Timeout { workflow: workflow.to_owned(), wanted, reached, waited }
            }
            Error::Consumer { .. } => WorkflowError::Stopped { workflow: workflow.to_owned() },
            other => WorkflowError::Store(other),
        }
    }
}
