//! [`KafkaInbound`]: the relay in. Consumes Kafka topics as a member of a consumer group and
//! appends each record into a store, committing offsets only after the append returned.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use futures_util::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::Instrument;

use super::error::RelayError;
use super::inbound::{ingest, load_parked, save_parked, InboundRecord, Mapping, ParkedRecord};
use crate::error::Error;
use crate::store::EventStore;

/// The settings of a [`KafkaInbound`].
#[derive(Clone, Debug)]
pub struct InboundConfig {
    name: String,
    brokers: String,
    group: String,
    topics: Vec<String>,
    mapping: Mapping,
    batch_size: usize,
    options: Vec<(String, String)>,
    first_backoff: Duration,
    max_backoff: Duration,
}

impl InboundConfig {
    /// A relay in named `name` (the name its parked records are kept under), reading `topics`
    /// through the bootstrap servers `brokers` as a member of the consumer group `group`.
    ///
    /// Defaults: the [envelope mapping](Mapping::envelope), up to 1,000 records per append,
    /// a group without committed offsets starts at the earliest offset, and librdkafka's own
    /// defaults otherwise (set `max.poll.interval.ms` and `session.timeout.ms` with
    /// [`option`](Self::option) to tune how fast a dead member's partitions move, and
    /// `fetch.wait.max.ms` for latency: some brokers, tansu among them, hold a fetch for up to
    /// that long, 500 ms by default, when no record is waiting).
    pub fn new<I, T>(name: impl Into<String>, brokers: impl Into<String>, group: impl Into<String>, topics: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        InboundConfig {
            name: name.into(),
            brokers: brokers.into(),
            group: group.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            mapping: Mapping::envelope(),
            batch_size: 1000,
            options: Vec::new(),
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }

    /// How records become events.
    pub fn mapping(mut self, mapping: Mapping) -> Self {
        self.mapping = mapping;
        self
    }

    /// At most this many records per append and offset commit. At least 1.
    pub fn batch_size(mut self, records: usize) -> Self {
        self.batch_size = records.max(1);
        self
    }

    /// Sets a librdkafka consumer property. `enable.auto.commit` and `enable.auto.offset.store`
    /// cannot be turned on: offsets are committed by the relay, after the append.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// The wait after a failed append (the store unavailable), doubled up to `max`.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first_backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// The relay's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn consumer(&self) -> Result<StreamConsumer, RelayError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .set("auto.offset.reset", "earliest");
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config.set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
        config
            .create()
            .map_err(|e| RelayError::Config { setting: "Kafka consumer properties".into(), problem: e.to_string() })
    }
}

/// A relay in's progress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboundStatus {
    /// Records received since it started.
    pub consumed: u64,
    /// Records stored as events since it started (those already stored before a crash included).
    pub stored: u64,
    /// Records parked since it started.
    pub parked: u64,
    /// The next offset to read of each partition it committed, by topic and partition.
    pub committed: BTreeMap<(String, i32), i64>,
    /// Failed appends or commits since it started.
    pub failures: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Set when it has stopped; the error it stopped on, if any, inside.
    pub stopped: Option<Option<String>>,
}

/// The relay in: consumes Kafka topics into a store.
///
/// Each page of records is mapped ([`Mapping`]), appended in one append (one part per stream), and
/// only then are the group's offsets committed. Every event's id is the record's deterministic id
/// ([`record_event_id`](super::record_event_id)), or the id the record carries (the envelope
/// mapping), so a page consumed again after a crash between the append and the commit is
/// recognised by the store and appends nothing. Records the mapping refuses, and records the store
/// refuses as bad input, are parked in the store ([`KafkaInbound::parked`]) before the offsets
/// move past them.
///
/// ```no_run
/// use annals::relay::{InboundConfig, KafkaInbound};
/// use annals::SledStore;
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = SledStore::open("stock.db")?;
/// let config = InboundConfig::new("orders-in", "127.0.0.1:9092", "stock-service", ["shop.orders"]);
/// let inbound = KafkaInbound::start(store, config).await?;
/// println!("{:?}", inbound.status());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct KafkaInbound;

impl KafkaInbound {
    /// Joins the group and starts consuming in the background.
    ///
    /// # Errors
    /// [`RelayError::Config`] when librdkafka refuses a property or the topic list is empty.
    pub async fn start<S: EventStore + 'static>(store: S, config: InboundConfig) -> Result<InboundHandle, RelayError> {
        if config.topics.is_empty() || config.topics.iter().any(String::is_empty) {
            return Err(RelayError::Config { setting: "topics".into(), problem: "no topic, or an empty one".into() });
        }
        let consumer = config.consumer()?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| RelayError::Config { setting: "topics".into(), problem: e.to_string() })?;
        let (status_tx, status) = watch::channel(InboundStatus::default());
        let (stop_tx, stop) = watch::channel(false);
        let span = tracing::info_span!("annals.relay_in", annals.consumer = %config.name, annals.group = %config.group);
        let name = config.name.clone();
        let task =
            InboundTask { store: Arc::new(store), consumer: Arc::new(consumer), config, status: status_tx, stop };
        let join = tokio::spawn(task.run().instrument(span));
        Ok(InboundHandle { name, status, stop: stop_tx, join })
    }

    /// The records parked by the relay in `name`, oldest first.
    ///
    /// # Errors
    /// Store errors.
    pub async fn parked<S: EventStore + ?Sized>(store: &S, name: &str) -> Result<Vec<ParkedRecord>, Error> {
        load_parked(store, name).await
    }

    /// Removes one parked record (after it was dealt with by hand). Returns whether it was parked.
    ///
    /// # Errors
    /// Store errors.
    pub async fn remove_parked<S: EventStore + ?Sized>(
        store: &S,
        name: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<bool, Error> {
        let mut parked = load_parked(store, name).await?;
        let before = parked.len();
        parked.retain(|p| !(p.topic == topic && p.partition == partition && p.offset == offset));
        if parked.len() == before {
            return Ok(false);
        }
        save_parked(store, name, &parked).await?;
        Ok(true)
    }
}

/// A running relay in.
#[derive(Debug)]
pub struct InboundHandle {
    name: String,
    status: watch::Receiver<InboundStatus>,
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<Result<(), RelayError>>,
}

impl InboundHandle {
    /// Its progress now.
    pub fn status(&self) -> InboundStatus {
        self.status.borrow().clone()
    }

    /// Waits until `done` holds for the status, and returns that status.
    ///
    /// # Errors
    /// [`RelayError::Stopped`] when it stops first, [`RelayError::TimedOut`] when `timeout` passes.
    pub async fn wait_until<F>(&self, done: F, timeout: Duration) -> Result<InboundStatus, RelayError>
    where
        F: Fn(&InboundStatus) -> bool,
    {
        let mut status = self.status.clone();
        let reached = tokio::time::timeout(timeout, async {
            status.wait_for(|s| done(s) || s.stopped.is_some()).await.map(|s| s.clone())
        })
        .await;
        match reached {
            Ok(Ok(s)) if done(&s) => Ok(s),
            Ok(_) => Err(RelayError::Stopped { name: self.name.clone() }),
            Err(_) => Err(RelayError::TimedOut { name: self.name.clone(), waited: timeout }),
        }
    }

    /// Stops consuming, leaves the group and waits for the task. Records received but not yet
    /// committed are consumed again by whoever reads the partition next, and stored once.
    ///
    /// # Errors
    /// The error it stopped on by itself, if it did.
    pub async fn stop(self) -> Result<(), RelayError> {
        super::task::stop_and_join(&self.name, &self.stop, self.join).await
    }
}

struct InboundTask<S: ?Sized> {
    store: Arc<S>,
    consumer: Arc<StreamConsumer>,
    config: InboundConfig,
    status: watch::Sender<InboundStatus>,
    stop: watch::Receiver<bool>,
}

fn record_of(message: &rdkafka::message::BorrowedMessage<'_>) -> InboundRecord {
    let mut record = InboundRecord::new(message.topic(), message.partition(), message.offset());
    record.key = message.key().map(<[u8]>::to_vec);
    record.value = message.payload().map(<[u8]>::to_vec);
    if let Some(headers) = message.headers() {
        record.headers = headers.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect();
    }
    record.timestamp = message.timestamp().to_millis().and_then(|ms| Utc.timestamp_millis_opt(ms).single());
    record
}

impl<S: EventStore + ?Sized + 'static> InboundTask<S> {
    async fn run(self) -> Result<(), RelayError> {
        let result = self.consume().await;
        let error = result.as_ref().err().map(ToString::to_string);
        if let Some(error) = &error {
            tracing::error!(error = %error, "relay in stopped on an error");
        }
        self.status.send_modify(|s| s.stopped = Some(error));
        result
    }

    async fn consume(&self) -> Result<(), RelayError> {
        let consumer = Arc::clone(&self.consumer);
        let mut pages = consumer.stream().ready_chunks(self.config.batch_size);
        let mut stop = self.stop.clone();
        loop {
            let page = tokio::select! {
                page = pages.next() => page,
                _ = stop.wait_for(|s| *s) => return Ok(()),
            };
            let Some(page) = page else { return Ok(()) };
            let mut records = Vec::with_capacity(page.len());
            for message in page {
                match message {
                    Ok(message) => records.push(record_of(&message)),
                    Err(error) => self.failed(&RelayError::Unreachable {
                        broker: self.config.brokers.clone(),
                        detail: error.to_string(),
                    }),
                }
            }
            if records.is_empty() {
                continue;
            }
            self.status.send_modify(|s| s.consumed += records.len() as u64);
            if !self.store_page(&records).await? {
                return Ok(());
            }
            self.commit(&records).await;
        }
    }

    /// Stores a page, retrying transient store errors. Returns false when asked to stop meanwhile.
    async fn store_page(&self, records: &[InboundRecord]) -> Result<bool, RelayError> {
        let mut failures = 0u32;
        loop {
            match ingest(self.store.as_ref(), &self.config.name, &self.config.mapping, records).await {
                Ok(done) => {
                    metrics::counter!("annals.relay_in.stored", "consumer" => self.config.name.clone())
                        .increment(done.stored);
                    if done.parked > 0 {
                        tracing::warn!(records = done.parked, "records parked: they cannot be stored as events");
                        metrics::counter!("annals.relay_in.parked", "consumer" => self.config.name.clone())
                            .increment(done.parked);
                    }
                    self.status.send_modify(|s| {
                        s.stored += done.stored;
                        s.parked += done.parked;
                    });
                    return Ok(true);
                }
                Err(error) if error.is_retryable() => {
                    failures += 1;
                    self.failed(&RelayError::Store(error));
                    let wait = super::task::backoff(self.config.first_backoff, self.config.max_backoff, failures);
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.wait_for(|s| *s) => return Ok(false),
                    }
                }
                Err(error) => return Err(RelayError::Store(error)),
            }
        }
    }

    /// Commits, for each partition of the page, the offset after its last record. A failed commit
    /// (the partition moved to another member meanwhile) only means the records are read again,
    /// and stored once.
    async fn commit(&self, records: &[InboundRecord]) {
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for record in records {
            let entry = next.entry((record.topic.clone(), record.partition)).or_insert(0);
            *entry = (*entry).max(record.offset + 1);
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            if let Err(error) = list.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                self.failed(&RelayError::Config { setting: "offset".into(), problem: error.to_string() });
                return;
            }
        }
        let consumer = Arc::clone(&self.consumer);
        let committed = tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync)).await;
        match committed {
            Ok(Ok(())) => self.status.send_modify(|s| s.committed.extend(next)),
            Ok(Err(error)) => self.failed(&RelayError::Unreachable {
                broker: self.config.brokers.clone(),
                detail: format!("offset commit failed: {error}"),
            }),
            Err(error) => self.failed(&RelayError::Unreachable {
                broker: self.config.brokers.clone(),
                detail: format!("offset commit failed: {error}"),
            }),
        }
    }

    fn failed(&self, error: &RelayError) {
        tracing::warn!(error = %error, "relay in attempt failed");
        metrics::counter!("annals.relay_in.failures", "consumer" => self.config.name.clone(), "error.type" => error.kind())
            .increment(1);
        self.status.send_modify(|s| {
            s.failures += 1;
            s.last_error = Some(error.to_string());
        });
    }
}
