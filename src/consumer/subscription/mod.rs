//! Subscriptions: named, durable consumers of the log, like Kafka consumer groups. Each catches up
//! from its checkpoint, then follows the log live; handler failures are retried, then parked; several
//! workers of one subscription share its partitions.

mod config;
mod coordinator;
mod group;
mod parked;
mod worker;

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::consumer::follow::Phase;
use crate::consumer::HandlerError;
use crate::envelope::RecordedEvent;
use crate::error::{ConsumerProblem, Error, Result};
use crate::position::Position;
use crate::store::EventStore;

pub use self::config::{OnFailure, RetryPolicy, SubscriptionConfig};
pub use self::group::SubscriptionGroup;
pub(crate) use self::parked::drop_parked;
use self::parked::edit_parked;
pub use self::parked::{Parked, ParkedReplay};
pub use self::worker::SubscriptionHandle;

/// What a subscription does with each event. Handlers with outside effects should be idempotent:
/// delivery is at-least-once (after a crash, events after the last checkpoint come again).
///
/// Any `FnMut(RecordedEvent, Phase) -> impl Future<Output = Result<(), HandlerError>>` is a handler
/// through [`handler_fn`].
#[async_trait]
pub trait Handler: Send + 'static {
    /// Handles one event. An error is retried as the subscription's [`RetryPolicy`] says, then the
    /// event is parked or the subscription stops ([`OnFailure`]).
    async fn handle(&mut self, event: &RecordedEvent, phase: Phase) -> Result<(), HandlerError>;
}

/// A [`Handler`] made of a closure; see [`handler_fn`].
pub struct FnHandler<F>(F);

impl<F> std::fmt::Debug for FnHandler<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnHandler")
    }
}

/// Makes a [`Handler`] of a closure that takes the event (a clone) and its phase.
///
/// ```
/// use annals::{handler_fn, HandlerError, Phase, RecordedEvent};
///
/// let handler = handler_fn(|event: RecordedEvent, phase: Phase| async move {
///     if phase == Phase::Live {
///         // send the confirmation email for event.stream ...
///     }
///     Ok::<(), HandlerError>(())
/// });
/// # let _ = handler;
/// ```
pub fn handler_fn<F, Fut>(f: F) -> FnHandler<F>
where
    F: FnMut(RecordedEvent, Phase) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    FnHandler(f)
}

#[async_trait]
impl<F, Fut> Handler for FnHandler<F>
where
    F: FnMut(RecordedEvent, Phase) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    async fn handle(&mut self, event: &RecordedEvent, phase: Phase) -> Result<(), HandlerError> {
        (self.0)(event.clone(), phase).await
    }
}

/// Starting a single-worker subscription, and reading what a stopped one saved.
#[derive(Debug)]
pub struct Subscription;

impl Subscription {
    /// Starts a subscription with one worker that holds every partition: it catches up from its
    /// checkpoint (or the configured start), then follows the log live.
    ///
    /// ```
    /// use annals::{handler_fn, EventStore, ExpectedVersion, HandlerError, NewEvent, Phase, RecordedEvent};
    /// use annals::{SledStore, StreamId, Subscription, SubscriptionConfig};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let store = SledStore::open(dir.path())?;
    /// let stream = StreamId::new("order-1")?;
    /// store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("OrderPlaced", "{}")]).await?;
    ///
    /// let seen = Arc::new(AtomicU64::new(0));
    /// let counter = Arc::clone(&seen);
    /// let handler = handler_fn(move |_event: RecordedEvent, _phase: Phase| {
    ///     let counter = Arc::clone(&counter);
    ///     async move {
    ///         counter.fetch_add(1, Ordering::SeqCst);
    ///         Ok::<(), HandlerError>(())
    ///     }
    /// });
    /// let subscription = Subscription::start(store.clone(), SubscriptionConfig::new("emails"), handler).await?;
    /// subscription.caught_up().await?;
    ///
    /// let appended = store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("OrderPaid", "{}")]).await?;
    /// subscription.wait_for(appended.last_position, Duration::from_secs(5)).await?;
    /// assert_eq!(seen.load(Ordering::SeqCst), 2);
    /// assert_eq!(subscription.lag(), 0);
    /// subscription.stop().await?; // commits the checkpoint: a restart goes on after order-1's OrderPaid
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`SubscriptionGroup::new`].
    pub async fn start<S, H>(store: S, config: SubscriptionConfig, handler: H) -> Result<SubscriptionHandle>
    where
        S: EventStore + 'static,
        H: Handler,
    {
        SubscriptionGroup::new(store, config).await?.join(handler).await
    }

    /// The events parked by the subscription `name`, as of its last saved checkpoints, by position.
    ///
    /// # Errors
    /// [`Error::Consumer`] when a saved checkpoint is not a subscription's; store errors.
    pub async fn parked<S: EventStore + ?Sized>(store: &S, name: &str) -> Result<Vec<Parked>> {
        let mut parked = Vec::new();
        for (_, checkpoint) in saved_partitions(store, name).await? {
            parked.extend(SavedPartition::decode(name, checkpoint.state.as_deref())?.parked);
        }
        parked.sort_by_key(|p| p.position);
        Ok(parked)
    }

    /// Marks parked events of the stopped subscription `name` to be handled again: the one at
    /// `position`, or all of them with `None`. The next worker to hold each one's partition hands it
    /// to its handler before going on; it leaves the list if that works, and stays parked otherwise.
    /// Returns how many were marked. For tools working on a stopped subscription (a sled store is
    /// open in one process at a time; a running worker would overwrite the change).
    ///
    /// # Errors
    /// [`Error::Consumer`] when a saved checkpoint is not a subscription's; store errors.
    pub async fn requeue_parked<S: EventStore + ?Sized>(
        store: &S,
        name: &str,
        position: Option<Position>,
    ) -> Result<usize> {
        edit_parked(store, name, |parked| {
            let mut marked = 0;
            for entry in parked.iter_mut().filter(|p| position.is_none_or(|at| p.position == at)) {
                entry.requeued = true;
                marked += 1;
            }
            marked
        })
        .await
    }

    /// Drops parked events of the stopped subscription `name` without handling them: the one at
    /// `position`, or all of them with `None`. Returns how many were dropped. For tools, like
    /// [`requeue_parked`](Self::requeue_parked).
    ///
    /// # Errors
    /// [`Error::Consumer`] when a saved checkpoint is not a subscription's; store errors.
    pub async fn skip_parked<S: EventStore + ?Sized>(
        store: &S,
        name: &str,
        position: Option<Position>,
    ) -> Result<usize> {
        edit_parked(store, name, |parked| drop_parked(parked, position)).await
    }

    /// Every subscription saved in `store`, by name, with its partition checkpoints and parked
    /// events: what tools show. Partitions that never saved a checkpoint are not listed.
    ///
    /// # Errors
    /// [`Error::Consumer`] when a checkpoint under the subscriptions' prefix is not a subscription's;
    /// store errors.
    pub async fn list<S: EventStore + ?Sized>(store: &S) -> Result<Vec<SavedSubscription>> {
        // By name: names may hold '/', so one subscription's partitions need not be adjacent.
        let mut saved: std::collections::BTreeMap<String, SavedSubscription> = std::collections::BTreeMap::new();
        for checkpoint in store.list_checkpoints(SUBSCRIPTIONS).await? {
            let parsed = checkpoint.name.strip_prefix(SUBSCRIPTIONS).and_then(|rest| rest.rsplit_once('/'));
            let Some((name, partition)) = parsed else { continue };
            if partition.parse::<u32>().is_err() {
                continue;
            }
            let state = SavedPartition::decode(name, checkpoint.state.as_deref())?;
            let entry = saved.entry(name.to_owned()).or_insert_with(|| SavedSubscription {
                name: name.to_owned(),
                partitions: state.partitions,
                checkpoint: checkpoint.position,
                checkpoints: Vec::new(),
                parked: Vec::new(),
            });
            entry.checkpoint = entry.checkpoint.min(checkpoint.position);
            entry.parked.extend(state.parked);
            entry.checkpoints.push(checkpoint);
        }
        let mut saved: Vec<SavedSubscription> = saved.into_values().collect();
        for subscription in &mut saved {
            subscription.parked.sort_by_key(|p| p.position);
        }
        Ok(saved)
    }

    /// Sets, for every subscription saved in `store`, the gauges `annals.subscription.checkpoint_lag`
    /// (the head minus its saved checkpoint) and `annals.subscription.parked` (its saved parked
    /// events), and returns the subscriptions with their lag. It reads only what is saved, so it sees
    /// subscriptions that are stopped, or running in other processes: call it periodically from the
    /// process that exports metrics, as a Kafka lag exporter reads committed offsets.
    ///
    /// ```
    /// use annals::{MemoryStore, Subscription};
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let store = MemoryStore::new();
    /// let saved = Subscription::record_saved_metrics(&store).await?;
    /// assert!(saved.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`list`](Self::list); store errors.
    pub async fn record_saved_metrics<S: EventStore + ?Sized>(store: &S) -> Result<Vec<(SavedSubscription, u64)>> {
        crate::consumer::telemetry::describe();
        let head = store.head().await?;
        let saved = Subscription::list(store).await?;
        Ok(saved
            .into_iter()
            .map(|subscription| {
                let lag = head.get().saturating_sub(subscription.checkpoint.get());
                let labels = [("consumer", subscription.name.clone())];
                metrics::gauge!("annals.subscription.checkpoint_lag", &labels).set(lag as f64);
                metrics::gauge!("annals.subscription.parked", &labels).set(subscription.parked.len() as f64);
                (subscription, lag)
            })
            .collect())
    }

    /// The saved checkpoint of the subscription `name`: every event at or before it was handled (the
    /// lowest over its partitions), or `None` when it never saved one.
    ///
    /// # Errors
    /// Store errors.
    pub async fn checkpoint<S: EventStore + ?Sized>(store: &S, name: &str) -> Result<Option<Position>> {
        let saved = saved_partitions(store, name).await?;
        Ok(saved.iter().map(|(_, c)| c.position).min())
    }
}

/// Where subscriptions save their checkpoints.
const SUBSCRIPTIONS: &str = "subscription/";

/// A subscription as saved in a store, from [`Subscription::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SavedSubscription {
    /// Its name.
    pub name: String,
    /// The partition count it was saved with.
    pub partitions: u32,
    /// The lowest saved position over its partitions: every event at or before it was handled.
    pub checkpoint: Position,
    /// The saved checkpoint of each partition, by name (`subscription/<name>/<partition>`).
    pub checkpoints: Vec<crate::store::Checkpoint>,
    /// Its parked events, by position.
    pub parked: Vec<Parked>,
}

/// The prefix of a subscription's partition checkpoints.
fn partition_prefix(name: &str) -> String {
    format!("{SUBSCRIPTIONS}{name}/")
}

/// The saved partition checkpoints of the subscription `name`, with their partition numbers. Only
/// `subscription/<name>/<number>` counts: a subscription named `a/0` saves under `subscription/a/0/…`,
/// which shares the prefix of `a`'s checkpoints.
pub(crate) async fn saved_partitions<S: EventStore + ?Sized>(
    store: &S,
    name: &str,
) -> Result<Vec<(u32, crate::store::Checkpoint)>> {
    let prefix = partition_prefix(name);
    let saved = store.list_checkpoints(&prefix).await?;
    Ok(saved
        .into_iter()
        .filter_map(|c| {
            let partition = c.name.strip_prefix(prefix.as_str()).and_then(|rest| rest.parse::<u32>().ok());
            partition.map(|p| (p, c))
        })
        .collect())
}

/// The checkpoint name of one partition.
pub(crate) fn partition_key(name: &str, partition: u32) -> String {
    format!("{SUBSCRIPTIONS}{name}/{partition}")
}

/// The partition of a stream: stable across runs and machines.
pub(crate) fn partition_of(stream: &str, partitions: u32) -> u32 {
    crc32fast::hash(stream.as_bytes()) % partitions.max(1)
}

/// The JSON a subscription saves in each partition's checkpoint state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct SavedPartition {
    pub(crate) partitions: u32,
    #[serde(default)]
    pub(crate) parked: Vec<Parked>,
}

impl SavedPartition {
    pub(crate) fn decode(name: &str, state: Option<&str>) -> Result<SavedPartition> {
        let state = state.unwrap_or("{}");
        serde_json::from_str(state).map_err(|source| Error::Consumer {
            consumer: name.to_owned(),
            problem: ConsumerProblem::ForeignCheckpoint { kind: "subscription", source },
        })
    }
}

/// Shared by the group and its workers: the config and the store.
pub(crate) struct Setup<S> {
    pub(crate) store: Arc<S>,
    pub(crate) config: SubscriptionConfig,
    /// Where partitions without a checkpoint start.
    pub(crate) from: Position,
    /// Events that occurred before this are skipped (for [`Start::Occurred`]).
    pub(crate) occurred_from: Option<DateTime<Utc>>,
}
