//! The coordinator of a subscription group: who is in the group, which worker holds which
//! partition, and how far the partitions got. The group and its workers share it; neither imports
//! the other.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use crate::consumer::telemetry::{self, SUBSCRIPTION};
use crate::consumer::{Progress, ProgressWatch};
use crate::position::Position;

/// Who is in the group and who holds what.
#[derive(Debug)]
pub(super) struct Membership {
    pub(super) next_id: u64,
    /// Worker ids in joining order.
    pub(super) members: Vec<u64>,
    /// The worker holding each partition, if any.
    pub(super) owners: Vec<Option<u64>>,
}

impl Membership {
    /// The worker that should hold `partition`.
    fn target(&self, partition: usize) -> Option<u64> {
        match self.members.len() {
            0 => None,
            n => self.members.get(partition % n).copied(),
        }
    }
}

/// The state a group's workers share. Its locks are never held across an `.await`.
#[derive(Debug)]
pub(crate) struct Coordinator {
    pub(crate) name: String,
    pub(crate) partitions: u32,
    pub(super) membership: Mutex<Membership>,
    /// Bumped on every change of membership or ownership: workers then rebalance.
    pub(crate) changed: watch::Sender<u64>,
    pub(super) progress: watch::Sender<Progress>,
    pub(super) processed: Mutex<Vec<Position>>,
    pub(super) committed: Mutex<Vec<Position>>,
    pub(super) head: crate::store::HeadWatch,
    /// How many events each worker of this process holds parked: their sum is the `annals.parked` gauge.
    pub(super) parked: Mutex<BTreeMap<u64, usize>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data stays consistent even if a holder panicked: every critical section is a few writes.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Coordinator {
    pub(super) fn join(&self) -> u64 {
        let id = {
            let mut membership = lock(&self.membership);
            let id = membership.next_id;
            membership.next_id += 1;
            membership.members.push(id);
            id
        };
        self.bump();
        id
    }

    /// Removes a worker and frees its partitions.
    pub(crate) fn leave(&self, worker: u64) {
        {
            let mut membership = lock(&self.membership);
            membership.members.retain(|&m| m != worker);
            for owner in &mut membership.owners {
                if *owner == Some(worker) {
                    *owner = None;
                }
            }
        }
        self.set_parked(worker, 0);
        self.bump();
    }

    /// Records that `worker` holds `count` parked events, and sets the subscription's `annals.parked`
    /// gauge to the sum over this process's workers.
    pub(crate) fn set_parked(&self, worker: u64, count: usize) {
        let total: usize = {
            let mut parked = lock(&self.parked);
            if count == 0 {
                parked.remove(&worker);
            } else {
                parked.insert(worker, count);
            }
            parked.values().sum()
        };
        metrics::gauge!("annals.parked", "consumer" => self.name.clone()).set(total as f64);
    }

    fn bump(&self) {
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// The partitions `worker` holds but should hand over.
    pub(crate) fn to_release(&self, worker: u64) -> Vec<u32> {
        let membership = lock(&self.membership);
        (0..membership.owners.len())
            .filter(|&p| membership.owners[p] == Some(worker) && membership.target(p) != Some(worker))
            .map(|p| p as u32)
            .collect()
    }

    /// Frees partitions `worker` handed over (after committing them).
    pub(crate) fn release(&self, worker: u64, partitions: &[u32]) {
        {
            let mut membership = lock(&self.membership);
            for &p in partitions {
                if let Some(owner) = membership.owners.get_mut(p as usize) {
                    if *owner == Some(worker) {
                        *owner = None;
                    }
                }
            }
        }
        self.bump();
    }

    /// Takes the free partitions meant for `worker`.
    pub(crate) fn acquire(&self, worker: u64) -> Vec<u32> {
        let mut membership = lock(&self.membership);
        let mut taken = Vec::new();
        for p in 0..membership.owners.len() {
            if membership.owners[p].is_none() && membership.target(p) == Some(worker) {
                membership.owners[p] = Some(worker);
                taken.push(p as u32);
            }
        }
        taken
    }

    /// Records that `worker` holds exactly `partitions` (on a shared store, where the store decides).
    pub(crate) fn set_held(&self, worker: u64, partitions: &[u32]) {
        let mut membership = lock(&self.membership);
        for (p, owner) in membership.owners.iter_mut().enumerate() {
            if partitions.contains(&(p as u32)) {
                *owner = Some(worker);
            } else if *owner == Some(worker) {
                *owner = None;
            }
        }
    }

    /// Whether a worker of this process holds `partition`.
    pub(crate) fn held_here(&self, partition: u32) -> bool {
        lock(&self.membership).owners.get(partition as usize).is_some_and(Option::is_some)
    }

    pub(super) fn assignment(&self) -> Vec<(u64, Vec<u32>)> {
        let membership = lock(&self.membership);
        let held = |worker: u64| {
            (0..membership.owners.len()).filter(|&p| membership.owners[p] == Some(worker)).map(|p| p as u32).collect()
        };
        membership.members.iter().map(|&worker| (worker, held(worker))).collect()
    }

    /// Records how far partitions got (handled, and committed), and whether a worker caught up with
    /// `caught_up`.
    pub(crate) fn report(
        &self,
        processed: &[(u32, Position)],
        committed: &[(u32, Position)],
        caught_up: Option<Position>,
    ) {
        let lowest = |mutex: &Mutex<Vec<Position>>, updates: &[(u32, Position)]| {
            let mut positions = lock(mutex);
            for &(p, position) in updates {
                if let Some(slot) = positions.get_mut(p as usize) {
                    *slot = position;
                }
            }
            positions.iter().copied().min().unwrap_or(Position::ZERO)
        };
        let processed = lowest(&self.processed, processed);
        let checkpoint = lowest(&self.committed, committed);
        // The gauges first: a handle that sees the progress finds them set.
        telemetry::progress(&self.name, SUBSCRIPTION, processed, checkpoint, self.head.current());
        self.progress.send_modify(|progress| {
            progress.processed = processed;
            progress.checkpoint = checkpoint;
            if let Some(head) = caught_up.filter(|&head| processed >= head) {
                progress.caught_up.get_or_insert(head);
            }
        });
    }

    pub(crate) fn watch(&self) -> ProgressWatch {
        ProgressWatch { name: self.name.clone(), progress: self.progress.subscribe(), head: self.head.clone() }
    }
}
