//! Parked events: what a subscription set aside after its handler kept failing on them, kept in
//! its checkpoints, listed, replayed and skipped on request.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{saved_partitions, SavedPartition};
use crate::error::{Error, Result};
use crate::position::Position;
use crate::store::EventStore;

/// An event the handler kept failing on, set aside so the subscription could go on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Parked {
    /// The event's position in the log.
    pub position: Position,
    /// The event's stream.
    pub stream: String,
    /// The event's type.
    pub event_type: String,
    /// The handler's last error message.
    pub error: String,
    /// How many times it was tried.
    pub attempts: u32,
    /// When it was parked (last tried).
    pub parked_at: DateTime<Utc>,
    /// Set by [`Subscription::requeue_parked`](crate::Subscription::requeue_parked): the next worker to hold its partition hands it to
    /// the handler again before going on.
    #[serde(default)]
    pub requeued: bool,
}

/// What [`SubscriptionHandle::replay_parked`](crate::SubscriptionHandle::replay_parked) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedReplay {
    /// The positions handled successfully this time (no longer parked).
    pub handled: Vec<Position>,
    /// The positions that failed again (still parked, with the new error).
    pub failed: Vec<Position>,
}

/// Drops the parked events at `position` (all of them with `None`) from a list; how many it dropped.
pub(crate) fn drop_parked(parked: &mut Vec<Parked>, position: Option<Position>) -> usize {
    let before = parked.len();
    parked.retain(|p| position.is_some_and(|at| p.position != at));
    before - parked.len()
}

/// Changes the saved parked lists of a subscription with `change` (which says how many entries it
/// touched), and saves the partitions it touched in one write, at their saved positions.
pub(super) async fn edit_parked<S, F>(store: &S, name: &str, mut change: F) -> Result<usize>
where
    S: EventStore + ?Sized,
    F: FnMut(&mut Vec<Parked>) -> usize,
{
    let mut touched = 0;
    let mut writes = Vec::new();
    for (_, saved) in saved_partitions(store, name).await? {
        let mut state = SavedPartition::decode(name, saved.state.as_deref())?;
        let count = change(&mut state.parked);
        if count > 0 {
            touched += count;
            let text = serde_json::to_string(&state).map_err(Error::storage)?;
            let checkpoint = crate::store::Checkpoint::new(saved.name, saved.position).with_state(text);
            writes.push(crate::store::CheckpointWrite::Save(checkpoint));
        }
    }
    if !writes.is_empty() {
        store.save_checkpoints(writes).await?;
    }
    Ok(touched)
}
