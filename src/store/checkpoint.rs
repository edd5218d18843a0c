//! [`Checkpoint`]: a named consumer's durable progress, kept by the store beside its events.

use chrono::{DateTime, SubsecRound, Utc};

use crate::error::{Error, Result};
use crate::name::check_name;
use crate::position::Position;

/// The longest checkpoint name, in bytes.
pub const MAX_CHECKPOINT_NAME_LEN: usize = 512;

/// How far a named consumer (a projection, a subscription, one partition of a subscription group)
/// has got, and optionally its saved state.
///
/// The store keeps checkpoints in its own database. [`EventStore::save_checkpoints`] writes several at
/// once, atomically and durably: a projection that keeps its state in `state` and its progress in
/// `position` can never be seen with one and not the other, which is what makes local read models
/// exactly-once.
///
/// A checkpoint's name follows the same rule as stream names and event types, described at
/// [`InvalidName`](crate::InvalidName): non-empty, at most [`MAX_CHECKPOINT_NAME_LEN`] bytes, no
/// control character and no bidirectional control. The store checks it on every save, delete and
/// load, and refuses a bad one with [`Error::InvalidCheckpointName`].
///
/// [`EventStore::save_checkpoints`]: crate::EventStore::save_checkpoints
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Checkpoint {
    /// The consumer's name.
    pub name: String,
    /// Every event at or before this position has been handled (`Position::ZERO`: none yet).
    pub position: Position,
    /// The consumer's saved state, as JSON text, if it keeps one.
    pub state: Option<String>,
    /// When the checkpoint was written (microsecond precision).
    pub updated_at: DateTime<Utc>,
}

impl Checkpoint {
    /// A checkpoint at `position`, without state, written now.
    pub fn new(name: impl Into<String>, position: Position) -> Self {
        Checkpoint { name: name.into(), position, state: None, updated_at: Utc::now().trunc_subsecs(6) }
    }

    /// The same checkpoint, carrying `state` (JSON text).
    pub fn with_state(mut self, state: impl Into<String>) -> Self {
        self.state = Some(state.into());
        self
    }
}

/// One change of [`EventStore::save_checkpoints`](crate::EventStore::save_checkpoints).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointWrite {
    /// Store the checkpoint, replacing the one of the same name.
    Save(Checkpoint),
    /// Remove the checkpoint of this name, if there is one.
    Delete(String),
}

impl CheckpointWrite {
    /// The name of the checkpoint this write changes.
    pub fn name(&self) -> &str {
        match self {
            CheckpointWrite::Save(checkpoint) => &checkpoint.name,
            CheckpointWrite::Delete(name) => name,
        }
    }
}

/// Checks every name of a batch of checkpoint writes, before anything is written.
pub(crate) fn validate_checkpoint_writes(writes: &[CheckpointWrite]) -> Result<()> {
    writes.iter().try_for_each(|write| validate_checkpoint_name(write.name()))
}

/// Checks a checkpoint name against the rule of every name (see [`check_name`]), with
/// [`MAX_CHECKPOINT_NAME_LEN`] as its maximum.
pub(crate) fn validate_checkpoint_name(name: &str) -> Result<()> {
    check_name(name, MAX_CHECKPOINT_NAME_LEN)
        .map_err(|reason| Error::InvalidCheckpointName { name: name.to_owned(), reason })
}
