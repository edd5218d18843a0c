//! [`SubscriptionGroup`]: the workers of one subscription, and who holds which partition.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use super::coordinator::{Coordinator, Membership};
use super::worker::{SubscriptionHandle, Worker};
use super::{partition_key, saved_partitions, Handler, SavedPartition, Setup, SubscriptionConfig};
use crate::consumer::telemetry::{self, SUBSCRIPTION};
use crate::consumer::Progress;
use crate::error::{ConsumerProblem, Error, Result};
use crate::position::Position;
use crate::store::EventStore;

/// The workers of one named subscription, sharing its partitions (competing consumers).
///
/// Each stream belongs to one partition, and each partition to one worker at a time, so every
/// stream's events are handled in order. Partitions are spread over the workers in the order they
/// joined; when a worker leaves (it is stopped, all its handles are dropped, or its handler makes it
/// stop), the others take its partitions over from their saved checkpoints. A worker that gives up a
/// partition first commits its checkpoint, so the handover repeats nothing; a worker that stopped on
/// an error hands over from its last checkpoint (at-least-once).
///
/// ```
/// use annals::{handler_fn, HandlerError, MemoryStore, Phase, RecordedEvent, SubscriptionConfig, SubscriptionGroup};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = MemoryStore::new();
/// let group = SubscriptionGroup::new(store, SubscriptionConfig::new("shipping").partitions(8)).await?;
/// let handler = || handler_fn(|_event: RecordedEvent, _phase: Phase| async { Ok::<(), HandlerError>(()) });
/// let first = group.join(handler()).await?;
/// let second = group.join(handler()).await?;
/// second.stop().await?; // its partitions go back to `first`
/// # let _ = first;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SubscriptionGroup<S> {
    setup: Arc<Setup<S>>,
    coordinator: Arc<Coordinator>,
}

impl<S> std::fmt::Debug for SubscriptionGroup<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionGroup")
            .field("name", &self.coordinator.name)
            .field("partitions", &self.coordinator.partitions)
            .field("assignment", &self.coordinator.assignment())
            .finish_non_exhaustive()
    }
}

impl<S> Clone for SubscriptionGroup<S> {
    fn clone(&self) -> Self {
        SubscriptionGroup { setup: Arc::clone(&self.setup), coordinator: Arc::clone(&self.coordinator) }
    }
}

impl<S: EventStore + 'static> SubscriptionGroup<S> {
    /// Sets up the subscription described by `config`, checking what was saved under its name.
    ///
    /// # Errors
    /// [`Error::Consumer`] when it was saved with another partition count or its checkpoints are not
    /// a subscription's; [`Error::InvalidCheckpointName`] for a bad name; store errors.
    pub async fn new(store: S, config: SubscriptionConfig) -> Result<Self> {
        telemetry::describe();
        crate::store::validate_checkpoint_name(&partition_key(&config.name, config.partitions))?;
        let (from, occurred_from) = config.start.resolve(&store).await?;
        let mut processed = vec![Position::new(from.get() - 1); config.partitions as usize];
        for (p, saved) in saved_partitions(&store, &config.name).await? {
            let state = SavedPartition::decode(&config.name, saved.state.as_deref())?;
            match p {
                p if state.partitions == config.partitions && p < config.partitions => {
                    processed[p as usize] = saved.position;
                }
                _ => {
                    return Err(Error::Consumer {
                        consumer: config.name.clone(),
                        problem: ConsumerProblem::PartitionCount {
                            saved: state.partitions,
                            configured: config.partitions,
                        },
                    })
                }
            }
        }
        let minimum = processed.iter().copied().min().unwrap_or(Position::ZERO);
        let progress = Progress { processed: minimum, checkpoint: minimum, caught_up: None };
        let coordinator = Arc::new(Coordinator {
            name: config.name.clone(),
            partitions: config.partitions,
            membership: Mutex::new(Membership {
                next_id: 1,
                members: Vec::new(),
                owners: vec![None; config.partitions as usize],
            }),
            changed: watch::channel(0).0,
            progress: watch::channel(progress).0,
            processed: Mutex::new(processed.clone()),
            committed: Mutex::new(processed),
            head: store.watch_head(),
            parked: Mutex::new(std::collections::BTreeMap::new()),
        });
        // Where a restarted subscription stands before its first page: behind by what was appended
        // while it was stopped.
        telemetry::progress(&config.name, SUBSCRIPTION, minimum, minimum, coordinator.head.current());
        let setup = Arc::new(Setup { store: Arc::new(store), config, from, occurred_from });
        Ok(SubscriptionGroup { setup, coordinator })
    }

    /// Adds a worker running `handler`, starts it on a tokio task, and returns its handle. The group
    /// rebalances: the new worker gets its share of the partitions as the others hand them over.
    ///
    /// # Errors
    /// Store errors.
    pub async fn join<H: Handler>(&self, handler: H) -> Result<SubscriptionHandle> {
        let id = self.coordinator.join();
        let (commands, inbox) = mpsc::channel(8);
        // The worker holds the sender: when its task ends, the handles see the channel close.
        let (running, alive) = watch::channel(());
        let worker = Worker::new(id, Arc::clone(&self.setup), Arc::clone(&self.coordinator), handler);
        let task = tokio::spawn(worker.run(inbox, running));
        Ok(SubscriptionHandle::new(id, Arc::clone(&self.coordinator), commands, task, alive))
    }

    /// Which partitions each worker holds right now, by worker id, in joining order.
    pub fn assignment(&self) -> Vec<(u64, Vec<u32>)> {
        self.coordinator.assignment()
    }

    /// How many events the slowest partition is behind the head.
    pub fn lag(&self) -> u64 {
        self.coordinator.watch().lag()
    }

    /// The subscription's name.
    pub fn name(&self) -> &str {
        &self.setup.config.name
    }
}
