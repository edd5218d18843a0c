//! The instances a running workflow holds in memory, and the index of their pending deadlines by
//! due time. Shared (behind a mutex, never held across an await) by the task and its handles.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::WorkflowError;
use super::step::{Deadline, SavedInstance};
use crate::position::{Position, Version};

/// One instance: the fold of its stream (its last step).
#[derive(Clone, Debug)]
pub(crate) struct Instance<St> {
    /// The version of its stream (`Version::ZERO`: no step yet).
    pub(crate) version: Version,
    pub(crate) state: St,
    /// Its pending deadlines.
    pub(crate) pending: Vec<Deadline>,
    pub(crate) completed: bool,
    /// The last log position it reacted to.
    pub(crate) reacted_through: Position,
}

impl<St: Default> Instance<St> {
    /// An instance that took no step yet.
    pub(crate) fn fresh() -> Self {
        Instance {
            version: Version::ZERO,
            state: St::default(),
            pending: Vec::new(),
            completed: false,
            reacted_through: Position::ZERO,
        }
    }
}

impl<St: serde::de::DeserializeOwned> Instance<St> {
    /// The instance a stream saved, with its state decoded.
    pub(crate) fn from_saved(saved: SavedInstance) -> Result<Self, WorkflowError> {
        let state = serde_json::from_value(saved.state).map_err(|source| WorkflowError::Undecodable {
            stream: saved.stream.clone(),
            version: saved.version,
            source,
        })?;
        Ok(Instance {
            version: saved.version,
            state,
            pending: saved.pending,
            completed: saved.completed,
            reacted_through: saved.reacted_through,
        })
    }
}

/// The active instances, the ids of the completed ones, and every pending deadline by due time.
#[derive(Debug)]
pub(crate) struct Instances<St> {
    active: HashMap<String, Instance<St>>,
    completed: HashSet<String>,
    due: BTreeMap<(DateTime<Utc>, Uuid), String>,
}

impl<St: Clone> Instances<St> {
    pub(crate) fn new() -> Self {
        Instances { active: HashMap::new(), completed: HashSet::new(), due: BTreeMap::new() }
    }

    /// The instance `id` if it is in memory: `Some(None)` when it completed.
    pub(crate) fn get(&self, id: &str) -> Option<Option<Instance<St>>> {
        if self.completed.contains(id) {
            return Some(None);
        }
        self.active.get(id).cloned().map(Some)
    }

    /// Keeps `instance` as `id`'s, with its deadlines in the index (a completed one only as an id).
    pub(crate) fn put(&mut self, id: &str, instance: Instance<St>) {
        self.forget(id);
        if instance.completed {
            self.completed.insert(id.to_owned());
            return;
        }
        for deadline in &instance.pending {
            self.due.insert((deadline.due, deadline.id), id.to_owned());
        }
        self.active.insert(id.to_owned(), instance);
    }

    /// Drops `id` from memory (the next use reads it from the store again).
    pub(crate) fn forget(&mut self, id: &str) {
        if let Some(old) = self.active.remove(id) {
            for deadline in &old.pending {
                self.due.remove(&(deadline.due, deadline.id));
            }
        }
        self.completed.remove(id);
    }

    /// Notes that the active instance `id` reacted to `position` without a step (nothing changed).
    pub(crate) fn reacted(&mut self, id: &str, position: Position) {
        if let Some(instance) = self.active.get_mut(id) {
            instance.reacted_through = instance.reacted_through.max(position);
        }
    }

    /// The pending deadline due first.
    pub(crate) fn first_due(&self) -> Option<Deadline> {
        let (&(_, deadline), id) = self.due.iter().next()?;
        self.active.get(id)?.pending.iter().find(|d| d.id == deadline).cloned()
    }

    /// When the first pending deadline is due.
    pub(crate) fn first_due_at(&self) -> Option<DateTime<Utc>> {
        self.due.keys().next().map(|(at, _)| *at)
    }

    /// Every pending deadline, by due time.
    pub(crate) fn pending(&self) -> Vec<Deadline> {
        self.due
            .iter()
            .filter_map(|((_, deadline), id)| self.active.get(id)?.pending.iter().find(|d| d.id == *deadline).cloned())
            .collect()
    }

    /// How many deadlines are pending.
    pub(crate) fn pending_count(&self) -> usize {
        self.due.len()
    }

    /// The state of the active instance `id`.
    pub(crate) fn state(&self, id: &str) -> Option<St> {
        self.active.get(id).map(|instance| instance.state.clone())
    }
}
