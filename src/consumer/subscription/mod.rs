//! Subscriptions: named, durable consumers of the log, like Kafka consumer groups. Each catches up
//! from its checkpoint, then follows the log live; handler failures are retried, then parked; several
//! workers of one subscription share its partitions.

mod group;
mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::consumer::follow::Phase;
use crate::consumer::{CheckpointPolicy, HandlerError, Start};
use crate::envelope::RecordedEvent;
use crate::error::{ConsumerProblem, Error, Result};
use crate::position::Position;
use crate::store::{EventStore, LogFilter};

pub use self::group::SubscriptionGroup;
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

/// How often a failing event is tried, and how long to wait between tries (doubling each time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    first_backoff: Duration,
    max_backoff: Duration,
}

impl RetryPolicy {
    /// Try each event up to `max_attempts` times (at least once), waiting 100 ms after the first
    /// failure, doubling up to 5 s.
    pub fn attempts(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }

    /// Try each event once.
    pub fn never() -> Self {
        RetryPolicy::attempts(1)
    }

    /// Wait `first` after the first failure, doubling each time up to `max`.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first_backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// How many times an event is tried.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The wait after the `failures`-th failure.
    pub(crate) fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.first_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

impl Default for RetryPolicy {
    /// Three attempts, 100 ms then 200 ms apart.
    fn default() -> Self {
        RetryPolicy::attempts(3)
    }
}

/// What a subscription does with an event its handler still fails on after every retry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnFailure {
    /// Park it (the dead-letter list, saved with the checkpoint) and go on with the next event.
    /// Parked events can be listed, replayed and skipped. The default.
    #[default]
    Park,
    /// Stop the worker with [`Error::Handler`]; its checkpoint stays before the event, which is
    /// handled again when the subscription restarts.
    Stop,
}

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
    /// Set by [`Subscription::requeue_parked`]: the next worker to hold its partition hands it to
    /// the handler again before going on.
    #[serde(default)]
    pub requeued: bool,
}

/// What [`SubscriptionHandle::replay_parked`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedReplay {
    /// The positions handled successfully this time (no longer parked).
    pub handled: Vec<Position>,
    /// The positions that failed again (still parked, with the new error).
    pub failed: Vec<Position>,
}

/// A subscription's settings. Start with [`SubscriptionConfig::new`].
///
/// ```
/// use annals::{LogFilter, OnFailure, RetryPolicy, Start, SubscriptionConfig};
/// use std::time::Duration;
///
/// let config = SubscriptionConfig::new("stock")
///     .filter(LogFilter::all().event_types(["OrderPlaced"]))
///     .start(Start::Beginning)
///     .retry(RetryPolicy::attempts(5).backoff(Duration::from_millis(50), Duration::from_secs(2)))
///     .on_failure(OnFailure::Park)
///     .checkpoint_every(500)
///     .partitions(4);
/// # let _ = config;
/// ```
#[derive(Clone, Debug)]
pub struct SubscriptionConfig {
    pub(crate) name: String,
    pub(crate) filter: LogFilter,
    pub(crate) start: Start,
    pub(crate) retry: RetryPolicy,
    pub(crate) on_failure: OnFailure,
    pub(crate) policy: CheckpointPolicy,
    pub(crate) partitions: u32,
}

impl SubscriptionConfig {
    /// A subscription named `name` (its checkpoints are saved under it) to the whole log, from the
    /// beginning, with [`RetryPolicy::default`], [`OnFailure::Park`], one partition, and checkpoints
    /// every 1,000 events or 200 ms.
    pub fn new(name: impl Into<String>) -> Self {
        SubscriptionConfig {
            name: name.into(),
            filter: LogFilter::all(),
            start: Start::Beginning,
            retry: RetryPolicy::default(),
            on_failure: OnFailure::Park,
            policy: CheckpointPolicy::default(),
            partitions: 1,
        }
    }

    /// Only the events this filter admits (event types, stream categories).
    pub fn filter(mut self, filter: LogFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Where a subscription without a checkpoint starts (default: the beginning of the log).
    pub fn start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// How a failing event is retried.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// What happens to an event that still fails after every retry.
    pub fn on_failure(mut self, on_failure: OnFailure) -> Self {
        self.on_failure = on_failure;
        self
    }

    /// Commit checkpoints after this many events at most (default 1,000).
    pub fn checkpoint_every(mut self, events: u64) -> Self {
        self.policy.every = events.max(1);
        self
    }

    /// Commit progress at most this long after it was made (default 200 ms).
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.policy.interval = interval;
        self
    }

    /// Split the log into this many partitions by stream (default 1), so that several workers can
    /// share it while each stream's events stay in order. Fixed for the life of the subscription.
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// The subscription's name.
    pub fn name(&self) -> &str {
        &self.name
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

/// Drops the parked events at `position` (all of them with `None`) from a list; how many it dropped.
pub(crate) fn drop_parked(parked: &mut Vec<Parked>, position: Option<Position>) -> usize {
    let before = parked.len();
    parked.retain(|p| position.is_some_and(|at| p.position != at));
    before - parked.len()
}

/// Changes the saved parked lists of a subscription with `change` (which says how many entries it
/// touched), and saves the partitions it touched in one write, at their saved positions.
async fn edit_parked<S, F>(store: &S, name: &str, mut change: F) -> Result<usize>
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
