//! [`KafkaSink`]: publishes a relay's pages to a Kafka topic with `acks=all` and the idempotent
//! producer, through librdkafka (the `rdkafka` crate).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::error::RelayError;
use super::outbound::{OutboundRecord, Sink};

/// The settings of a [`KafkaSink`].
#[derive(Clone, Debug)]
pub struct KafkaSinkConfig {
    brokers: String,
    topic: String,
    options: Vec<(String, String)>,
}

impl KafkaSinkConfig {
    /// Publishes to `topic` through the bootstrap servers `brokers` (`host:port[,host:port…]`).
    ///
    /// The producer is idempotent with `acks=all` (a record is acknowledged once every in-sync
    /// replica has it, and the producer's own retries neither duplicate nor reorder it), sends at
    /// once (`linger.ms=0`: the relay hands over a whole page and then waits for it, so lingering
    /// would only delay the page; librdkafka still batches what queues up meanwhile), and gives up
    /// on a record after 10 s (`message.timeout.ms`), after which the relay retries the page with
    /// backoff.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaSinkConfig { brokers: brokers.into(), topic: topic.into(), options: Vec::new() }
    }

    /// Sets a librdkafka producer property (`linger.ms`, `compression.type`, `security.protocol`,
    /// …), overriding the defaults above.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "10000");
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config
    }
}

/// A [`Sink`] that publishes to a Kafka topic: key = stream id, value = JSON payload, headers = the
/// envelope, timestamp = the recording time.
///
/// ```no_run
/// use annals::relay::{KafkaSink, KafkaSinkConfig, Relay, RelayConfig};
/// use annals::{LogFilter, SledStore};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = SledStore::open("orders.db")?;
/// let sink = KafkaSink::new(KafkaSinkConfig::new("127.0.0.1:9092", "shop.orders"))?;
/// let config = RelayConfig::new("orders-to-kafka").filter(LogFilter::all().stream_prefix("order-"));
/// let relay = Relay::start(store, config, sink).await?;
/// println!("{:?}", relay.status());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KafkaSink {
    config: KafkaSinkConfig,
    /// Replaced after a fatal error of the idempotent producer (which then refuses every send).
    producer: Mutex<Arc<FutureProducer>>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").field("config", &self.config).finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// A sink with this configuration. It does not connect yet: a broker that is down now only
    /// delays the relay, which retries.
    ///
    /// # Errors
    /// [`RelayError::Config`] when the topic is empty or librdkafka refuses a property.
    pub fn new(config: KafkaSinkConfig) -> Result<Self, RelayError> {
        if config.topic.is_empty() {
            return Err(RelayError::Config { setting: "topic".into(), problem: "it is empty".into() });
        }
        let producer = create(&config)?;
        Ok(KafkaSink { config, producer: Mutex::new(Arc::new(producer)) })
    }

    /// Asks the broker for the topic's metadata, to report an unreachable broker or a missing
    /// topic up front (a relay would retry instead).
    ///
    /// # Errors
    /// [`RelayError::Unreachable`] or [`RelayError::Rejected`] (the topic does not exist).
    pub async fn check(&self, timeout: Duration) -> Result<(), RelayError> {
        let producer = self.producer();
        let topic = self.config.topic.clone();
        let brokers = self.config.brokers.clone();
        let metadata = tokio::task::spawn_blocking(move || producer.client().fetch_metadata(Some(&topic), timeout))
            .await
            .map_err(|e| RelayError::Unreachable { broker: brokers.clone(), detail: e.to_string() })?
            .map_err(|e| RelayError::Unreachable { broker: brokers.clone(), detail: e.to_string() })?;
        let known = metadata
            .topics()
            .iter()
            .any(|t| t.name() == self.config.topic && t.error().is_none() && !t.partitions().is_empty());
        if known {
            Ok(())
        } else {
            Err(RelayError::Rejected {
                broker: brokers,
                what: format!("topic {:?}", self.config.topic),
                detail: "it does not exist".into(),
            })
        }
    }

    fn producer(&self) -> Arc<FutureProducer> {
        let guard = self.producer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&guard)
    }

    /// Replaces the producer if it hit a fatal error, so that the next attempt can succeed.
    fn renew_if_fatal(&self) {
        let mut guard = self.producer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((code, reason)) = guard.client().fatal_error() {
            tracing::warn!(?code, reason = %reason, "the Kafka producer hit a fatal error; creating a new one");
            if let Ok(producer) = create(&self.config) {
                *guard = Arc::new(producer);
            }
        }
    }

    fn error(&self, error: &KafkaError) -> RelayError {
        let broker = self.config.brokers.clone();
        let detail = error.to_string();
        match error.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::OperationTimedOut,
            ) => RelayError::Unreachable { broker, detail },
            _ => RelayError::Rejected { broker, what: format!("records for topic {:?}", self.config.topic), detail },
        }
    }
}

fn create(config: &KafkaSinkConfig) -> Result<FutureProducer, RelayError> {
    config
        .client_config()
        .create()
        .map_err(|e| RelayError::Config { setting: "Kafka producer properties".into(), problem: e.to_string() })
}

#[async_trait]
impl Sink for KafkaSink {
    fn describe(&self) -> String {
        format!("kafka {} topic {:?}", self.config.brokers, self.config.topic)
    }

    async fn publish(&self, records: &[OutboundRecord]) -> Result<(), RelayError> {
        let producer = self.producer();
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(records.len());
        let mut first_error: Option<RelayError> = None;
        for record in records {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                headers = headers.insert(Header { key, value: Some(value.as_bytes()) });
            }
            let mut message = FutureRecord::to(&self.config.topic)
                .key(&record.key)
                .payload(&record.value)
                .headers(headers)
                .timestamp(record.recorded_at.timestamp_millis());
            loop {
                match producer.send_result(message) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    // The local queue is full: let librdkafka drain it, then enqueue again.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        message = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((error, _)) => {
                        first_error = Some(self.error(&error));
                        break;
                    }
                }
            }
            if first_error.is_some() {
                break;
            }
        }
        // Wait for every enqueued record, even after an error, so that none is still in flight
        // when the page is sent again.
        for delivery in pending {
            let outcome = match delivery.await {
                Ok(Ok(_)) => None,
                Ok(Err((error, _))) => Some(self.error(&error)),
                Err(_) => Some(RelayError::Unreachable {
                    broker: self.config.brokers.clone(),
                    detail: "the producer was closed before the broker answered".into(),
                }),
            };
            if first_error.is_none() {
                first_error = outcome;
            }
        }
        match first_error {
            None => Ok(()),
            Some(error) => {
                self.renew_if_fatal();
                Err(error)
            }
        }
    }
}
