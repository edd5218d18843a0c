//! The relay out: publishes the log, page by page, to a [`Sink`], and saves its checkpoint only
//! after the sink acknowledged the page.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tracing::Instrument;

use super::error::RelayError;
use super::headers;
use crate::envelope::RecordedEvent;
use crate::error::Error;
use crate::position::Position;
use crate::store::{Checkpoint, CheckpointWrite, EventStore, LogFilter};

/// Where relays save their checkpoints: `relay/<name>`.
const PREFIX: &str = "relay/";

/// One event as a broker record: key, value and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboundRecord {
    /// The record key: the stream id, so that one stream's events share a partition and keep
    /// their order.
    pub key: String,
    /// The record value: the event's JSON payload, as stored.
    pub value: String,
    /// The envelope, as headers (see [the module docs](super#headers)).
    pub headers: Vec<(String, String)>,
    /// The event's position in the log.
    pub position: Position,
    /// When the event was recorded, for the record's timestamp.
    pub recorded_at: DateTime<Utc>,
}

impl OutboundRecord {
    /// The record of `event`.
    pub fn from_event(event: &RecordedEvent) -> Self {
        OutboundRecord {
            key: event.stream.to_string(),
            value: event.payload.clone(),
            headers: headers::encode(event),
            position: event.position,
            recorded_at: event.recorded_at,
        }
    }
}

/// Where a [`Relay`] publishes: a topic of a broker.
///
/// [`publish`](Sink::publish) returns only when the broker acknowledged every record of the page
/// (for Kafka, with `acks=all`), in order per key. An error means some records may have been
/// published and others not: the relay sends the whole page again, which is why consumers
/// deduplicate by the [`EVENT_ID`](super::EVENT_ID) header.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// The destination, for status and errors: e.g. `kafka 127.0.0.1:9092 topic "orders"`.
    fn describe(&self) -> String;

    /// Publishes `records` and waits for the broker's acknowledgement of each.
    ///
    /// # Errors
    /// [`RelayError::Unreachable`] or [`RelayError::Rejected`] (retried by the relay), or
    /// [`RelayError::Config`] (the relay stops).
    async fn publish(&self, records: &[OutboundRecord]) -> Result<(), RelayError>;
}

/// The settings of a [`Relay`].
#[derive(Clone, Debug)]
pub struct RelayConfig {
    name: String,
    filter: LogFilter,
    batch_size: usize,
    first_backoff: Duration,
    max_backoff: Duration,
    lease_ttl: Duration,
}

impl RelayConfig {
    /// A relay named `name`, publishing every event, in pages of 1,000, retrying a failed page
    /// after 100 ms, doubling up to 10 s. Its checkpoint is `relay/<name>` in the store.
    pub fn new(name: impl Into<String>) -> Self {
        RelayConfig {
            name: name.into(),
            filter: LogFilter::all(),
            batch_size: 1000,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(10),
        }
    }

    /// On a store shared by several processes (PostgreSQL), relays of one name take turns: one
    /// holds the name's lease and publishes, the others stand by ([`RelayState::Standby`]) and take
    /// over from its checkpoint when it stops or its lease runs out, `ttl` after its last renewal
    /// (10 s by default; renewed every page and every `ttl / 3` while caught up). The checkpoint
    /// is saved only while the lease is held. A page that takes longer than `ttl` to publish can let
    /// a second relay publish it too (duplicates, never a gap).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(300));
        self
    }

    /// Publishes only the events the filter admits (by event type, by stream prefix).
    pub fn filter(mut self, filter: LogFilter) -> Self {
        self.filter = filter;
        self
    }

    /// At most this many events per page (one acknowledgement wait and one checkpoint per page).
    /// At least 1.
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events.max(1);
        self
    }

    /// The wait after the first failure of a page, doubled after each further one up to `max`.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first_backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// The relay's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn delay(&self, failures: u32) -> Duration {
        super::task::backoff(self.first_backoff, self.max_backoff, failures)
    }
}

/// What a relay is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayState {
    /// Loading its checkpoint.
    Starting,
    /// Another relay of the same name holds the lease on a shared store; this one takes over when
    /// it stops or its lease expires.
    Standby,
    /// Publishing pages.
    Publishing,
    /// Everything up to the head is published; waiting for new events.
    CaughtUp,
    /// The last attempt failed; it tries again after a backoff.
    Retrying {
        /// How many attempts in a row have failed.
        attempt: u32,
        /// The last error.
        error: String,
        /// The wait before the next attempt.
        next_in: Duration,
    },
    /// It has stopped: asked to, or on an error that is not retryable (then given).
    Stopped {
        /// The error it stopped on, if any.
        error: Option<String>,
    },
}

/// A relay's progress, as [`RelayHandle::status`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStatus {
    /// What it is doing.
    pub state: RelayState,
    /// Every event at or before this position is published and acknowledged (saved in the store).
    pub checkpoint: Position,
    /// The store's head when last seen.
    pub head: Position,
    /// Events published and acknowledged since the relay started.
    pub published: u64,
    /// Failed attempts since the relay started.
    pub failures: u64,
}

impl RelayStatus {
    /// How many positions the relay is behind the head (events a filter skips included).
    pub fn lag(&self) -> u64 {
        self.head.get().saturating_sub(self.checkpoint.get())
    }
}

/// The relay out: publishes the store's log to a [`Sink`], from its checkpoint on, then live.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use annals::relay::{OutboundRecord, Relay, RelayConfig, RelayError, Sink};
/// use annals::{EventStore, ExpectedVersion, MemoryStore, NewEvent, Position, StreamId};
///
/// /// A sink that keeps what it is given (a real one is `KafkaSink` or `PulsarSink`).
/// #[derive(Clone, Default)]
/// struct Collect(Arc<Mutex<Vec<OutboundRecord>>>);
///
/// #[async_trait::async_trait]
/// impl Sink for Collect {
///     fn describe(&self) -> String {
///         "a vector".into()
///     }
///     async fn publish(&self, records: &[OutboundRecord]) -> Result<(), RelayError> {
///         self.0.lock().unwrap().extend_from_slice(records);
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = MemoryStore::new();
/// let order = StreamId::new("order-1")?;
/// store.append(&order, ExpectedVersion::NoStream, vec![NewEvent::raw("OrderPlaced", r#"{"total":12}"#)]).await?;
///
/// let sink = Collect::default();
/// let relay = Relay::start(store.clone(), RelayConfig::new("orders-out"), sink.clone()).await?;
/// relay.wait_for(Position::new(1), std::time::Duration::from_secs(5)).await?;
/// relay.stop().await?;
///
/// let published = sink.0.lock().unwrap().clone();
/// assert_eq!(published[0].key, "order-1");
/// assert_eq!(published[0].value, r#"{"total":12}"#);
/// // Started again, it resumes from its checkpoint: nothing is published twice.
/// assert_eq!(Relay::checkpoint(&store, "orders-out").await?, Some(Position::new(1)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Relay;

impl Relay {
    /// Starts a relay in the background: it loads its checkpoint, publishes everything after it,
    /// then follows the log live. Failed pages are retried with backoff (visible in
    /// [`RelayHandle::status`]); the relay stops only when asked, or on an error that cannot be
    /// retried.
    ///
    /// # Errors
    /// [`RelayError::Config`] when the name is not a valid checkpoint name.
    pub async fn start<S, K>(store: S, config: RelayConfig, sink: K) -> Result<RelayHandle, RelayError>
    where
        S: EventStore + 'static,
        K: Sink,
    {
        let checkpoint = format!("{PREFIX}{}", config.name);
        crate::store::validate_checkpoint_name(&checkpoint)
            .map_err(|e| RelayError::Config { setting: "relay name".into(), problem: e.to_string() })?;
        let initial = RelayStatus {
            state: RelayState::Starting,
            checkpoint: Position::ZERO,
            head: Position::ZERO,
            published: 0,
            failures: 0,
        };
        let (status_tx, status) = watch::channel(initial);
        let (stop_tx, stop) = watch::channel(false);
        let span = tracing::info_span!("annals.relay", annals.consumer = %config.name, annals.sink = %sink.describe());
        let name = config.name.clone();
        let member = uuid::Uuid::new_v4().to_string();
        let task =
            Task { store: Arc::new(store), member, sink: Arc::new(sink), config, checkpoint, status: status_tx, stop };
        let join = tokio::spawn(task.run().instrument(span));
        Ok(RelayHandle { name, status, stop: stop_tx, join })
    }

    /// The saved checkpoint of the relay `name`: every event at or before it was acknowledged by
    /// the broker. `None` when it never saved one.
    ///
    /// # Errors
    /// Store errors.
    pub async fn checkpoint<S: EventStore + ?Sized>(store: &S, name: &str) -> Result<Option<Position>, Error> {
        Ok(store.load_checkpoint(&format!("{PREFIX}{name}")).await?.map(|c| c.position))
    }

    /// Every relay that saved a checkpoint in `store`: its name, checkpoint, and the destination
    /// it last published to.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list<S: EventStore + ?Sized>(store: &S) -> Result<Vec<(String, Position, String)>, Error> {
        let mut relays = Vec::new();
        for checkpoint in store.list_checkpoints(PREFIX).await? {
            let Some(name) = checkpoint.name.strip_prefix(PREFIX) else { continue };
            let sink = checkpoint
                .state
                .as_deref()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .and_then(|v| v.get("sink").and_then(|s| s.as_str()).map(str::to_owned))
                .unwrap_or_default();
            relays.push((name.to_owned(), checkpoint.position, sink));
        }
        Ok(relays)
    }
}

/// A running relay: its status, and how to stop it.
#[derive(Debug)]
pub struct RelayHandle {
    name: String,
    status: watch::Receiver<RelayStatus>,
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<Result<(), RelayError>>,
}

impl RelayHandle {
    /// The relay's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its progress now.
    pub fn status(&self) -> RelayStatus {
        self.status.borrow().clone()
    }

    /// Waits until every event at or before `position` is published and acknowledged.
    ///
    /// # Errors
    /// [`RelayError::Stopped`] when the relay stops first, [`RelayError::TimedOut`] after `timeout`.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<(), RelayError> {
        let mut status = self.status.clone();
        let reached = tokio::time::timeout(timeout, async {
            status
                .wait_for(|s| s.checkpoint >= position || matches!(s.state, RelayState::Stopped { .. }))
                .await
                .map(|s| s.checkpoint)
        })
        .await;
        match reached {
            Ok(Ok(checkpoint)) if checkpoint >= position => Ok(()),
            Ok(_) => Err(RelayError::Stopped { name: self.name.clone() }),
            Err(_) => Err(RelayError::TimedOut { name: self.name.clone(), waited: timeout }),
        }
    }

    /// Stops the relay and waits for it. A page in flight is abandoned before its checkpoint is
    /// saved: a relay started again publishes it again.
    ///
    /// # Errors
    /// The error the relay stopped on by itself, if it did.
    pub async fn stop(self) -> Result<(), RelayError> {
        super::task::stop_and_join(&self.name, &self.stop, self.join).await
    }
}

/// The relay's task.
struct Task<S: ?Sized, K> {
    store: Arc<S>,
    /// This relay's member name for the lease on a shared store.
    member: String,
    sink: Arc<K>,
    config: RelayConfig,
    checkpoint: String,
    status: watch::Sender<RelayStatus>,
    stop: watch::Receiver<bool>,
}

/// What an attempt came to when the relay was asked to stop during it.
enum Outcome<T> {
    Done(T),
    Stopped,
}

impl<S: EventStore + ?Sized + 'static, K: Sink> Task<S, K> {
    async fn run(mut self) -> Result<(), RelayError> {
        let result = self.publish_forever().await;
        let error = result.as_ref().err().map(ToString::to_string);
        if let Some(error) = &error {
            tracing::error!(error = %error, "relay stopped on an error");
        }
        self.status.send_modify(|s| s.state = RelayState::Stopped { error });
        result
    }

    async fn publish_forever(&mut self) -> Result<(), RelayError> {
        let result = self.lead().await;
        if let Some(leases) = self.store.partition_leases() {
            // Hand the lease over at once rather than after it expires (best effort).
            let _ = leases.release(&self.checkpoint, &self.member, &[0]).await;
        }
        result
    }

    /// Publishes while this relay holds its name's lease (always, on a store without leases), and
    /// waits in standby while another relay of the same name does.
    async fn lead(&mut self) -> Result<(), RelayError> {
        loop {
            match self.await_lease().await? {
                Outcome::Done(()) => {}
                Outcome::Stopped => return Ok(()),
            }
            match self.publish_while_held().await? {
                Outcome::Done(()) => {
                    tracing::warn!("the relay lost its lease to another relay of the same name: standing by");
                }
                Outcome::Stopped => return Ok(()),
            }
        }
    }

    /// Whether this relay holds its lease now, renewing it (true on a store without leases).
    async fn holds_lease(&self) -> Result<Outcome<bool>, RelayError> {
        let Some(leases) = self.store.partition_leases() else { return Ok(Outcome::Done(true)) };
        let ttl = self.config.lease_ttl;
        self.retrying(|| leases.claim(&self.checkpoint, &self.member, &[0], ttl)).await.map(|o| match o {
            Outcome::Done(held) => Outcome::Done(held == [0]),
            Outcome::Stopped => Outcome::Stopped,
        })
    }

    async fn await_lease(&self) -> Result<Outcome<()>, RelayError> {
        loop {
            match self.holds_lease().await? {
                Outcome::Done(true) => return Ok(Outcome::Done(())),
                Outcome::Done(false) => {}
                Outcome::Stopped => return Ok(Outcome::Stopped),
            }
            self.status.send_modify(|s| s.state = RelayState::Standby);
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(self.config.lease_ttl / 3) => {}
                _ = stop.wait_for(|s| *s) => return Ok(Outcome::Stopped),
            }
        }
    }

    /// Saves the checkpoint, fenced by the lease on a store with leases. Returns false when the
    /// lease was lost (nothing was saved).
    async fn save(&self, checkpoint: Checkpoint) -> Result<Outcome<bool>, RelayError> {
        let writes = vec![CheckpointWrite::Save(checkpoint)];
        match self.store.partition_leases() {
            None => self.retrying(|| self.store.save_checkpoints(writes.clone())).await.map(|o| match o {
                Outcome::Done(()) => Outcome::Done(true),
                Outcome::Stopped => Outcome::Stopped,
            }),
            Some(leases) => self
                .retrying(|| leases.save_checkpoints_held(&self.checkpoint, &self.member, &[0], writes.clone()))
                .await
                .map(|o| match o {
                    Outcome::Done(lost) => Outcome::Done(lost.is_empty()),
                    Outcome::Stopped => Outcome::Stopped,
                }),
        }
    }

    /// Publishes from the saved checkpoint on, page by page, then live, until the lease is lost
    /// (`Done`) or the relay is stopped.
    async fn publish_while_held(&self) -> Result<Outcome<()>, RelayError> {
        let store = Arc::clone(&self.store);
        let mut checkpoint = match self.retrying(|| store.load_checkpoint(&self.checkpoint)).await? {
            Outcome::Done(saved) => saved.map_or(Position::ZERO, |c| c.position),
            Outcome::Stopped => return Ok(Outcome::Stopped),
        };
        let mut head = store.watch_head();
        self.status.send_modify(|s| {
            s.checkpoint = checkpoint;
            s.head = head.current();
            s.state = RelayState::Publishing;
        });
        let sink_state = serde_json::json!({ "sink": self.sink.describe() }).to_string();
        loop {
            match self.holds_lease().await? {
                Outcome::Done(true) => {}
                Outcome::Done(false) => return Ok(Outcome::Done(())),
                Outcome::Stopped => return Ok(Outcome::Stopped),
            }
            let filter = self.config.filter.clone();
            let size = self.config.batch_size;
            let chunk = match self.retrying(|| store.read_log_chunk(checkpoint.next(), size, &filter)).await? {
                Outcome::Done(chunk) => chunk,
                Outcome::Stopped => return Ok(Outcome::Stopped),
            };
            let scanned = Position::new(chunk.next.get().saturating_sub(1));
            if !chunk.events.is_empty() {
                let records: Vec<OutboundRecord> = chunk.events.iter().map(OutboundRecord::from_event).collect();
                if let Outcome::Stopped = self.publish(&records).await? {
                    return Ok(Outcome::Stopped);
                }
                metrics::counter!("annals.relay.published", "consumer" => self.config.name.clone())
                    .increment(records.len() as u64);
                tracing::debug!(events = records.len(), through = scanned.get(), "page published");
                self.status.send_modify(|s| s.published += records.len() as u64);
            }
            if scanned > checkpoint {
                let save = Checkpoint::new(self.checkpoint.clone(), scanned).with_state(sink_state.clone());
                match self.save(save).await? {
                    Outcome::Done(true) => checkpoint = scanned,
                    Outcome::Done(false) => return Ok(Outcome::Done(())),
                    Outcome::Stopped => return Ok(Outcome::Stopped),
                }
            }
            let now = head.current();
            metrics::gauge!("annals.relay.lag", "consumer" => self.config.name.clone())
                .set(now.get().saturating_sub(checkpoint.get()) as f64);
            let end = chunk.end;
            self.status.send_modify(|s| {
                s.checkpoint = checkpoint;
                s.head = now;
                s.state = if end { RelayState::CaughtUp } else { RelayState::Publishing };
            });
            if end {
                // Wait for the head to move; on a store with leases, wake in time to renew.
                let renew = if store.partition_leases().is_some() { self.config.lease_ttl / 3 } else { Duration::MAX };
                let mut stop = self.stop.clone();
                tokio::select! {
                    moved = tokio::time::timeout(renew, head.wait_past(checkpoint)) => {
                        if let Ok(moved) = moved {
                            moved?;
                        }
                    }
                    _ = stop.wait_for(|s| *s) => return Ok(Outcome::Stopped),
                }
            }
        }
    }

    /// Publishes one page until the sink acknowledges it, retrying retryable errors with backoff.
    async fn publish(&self, records: &[OutboundRecord]) -> Result<Outcome<()>, RelayError> {
        let mut failures = 0u32;
        loop {
            let mut stop = self.stop.clone();
            let result = tokio::select! {
                result = self.sink.publish(records) => result,
                _ = stop.wait_for(|s| *s) => return Ok(Outcome::Stopped),
            };
            match result {
                Ok(()) => return Ok(Outcome::Done(())),
                Err(error) if error.is_retryable() => {
                    failures += 1;
                    if self.back_off(failures, &error).await {
                        return Ok(Outcome::Stopped);
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Runs a store operation until it succeeds, retrying retryable store errors with backoff.
    async fn retrying<T, F, Fut>(&self, mut operation: F) -> Result<Outcome<T>, RelayError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut failures = 0u32;
        loop {
            match operation().await {
                Ok(value) => return Ok(Outcome::Done(value)),
                Err(error) if error.is_retryable() => {
                    failures += 1;
                    if self.back_off(failures, &RelayError::Store(error)).await {
                        return Ok(Outcome::Stopped);
                    }
                }
                Err(error) => return Err(RelayError::Store(error)),
            }
        }
    }

    /// Shows the failure in the status and waits out the backoff. Returns whether the relay was
    /// asked to stop meanwhile.
    async fn back_off(&self, failures: u32, error: &RelayError) -> bool {
        let next_in = self.config.delay(failures);
        tracing::warn!(attempt = failures, error = %error, retry_in_ms = next_in.as_millis() as u64, "relay attempt failed");
        metrics::counter!("annals.relay.failures", "consumer" => self.config.name.clone(), "error.type" => error.kind())
            .increment(1);
        self.status.send_modify(|s| {
            s.failures += 1;
            s.state = RelayState::Retrying { attempt: failures, error: error.to_string(), next_in };
        });
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(next_in) => false,
            _ = stop.wait_for(|s| *s) => true,
        }
    }
}
