//! [`PulsarSink`]: publishes a relay's pages to a Pulsar topic, each message's send receipt checked.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use pulsar::producer::{Message, SendFuture};
use pulsar::{Producer, Pulsar, TokioExecutor};
use tokio::sync::Mutex;

use super::error::RelayError;
use super::outbound::{OutboundRecord, Sink};

/// The settings of a [`PulsarSink`].
#[derive(Clone, Debug)]
pub struct PulsarSinkConfig {
    url: String,
    topic: String,
    in_flight: usize,
    connect_timeout: Duration,
}

impl PulsarSinkConfig {
    /// Publishes to `topic` (e.g. `persistent://public/default/orders`) of the broker at `url`
    /// (`pulsar://host:6650`), with at most 500 messages awaiting their receipt at once and a
    /// 10 s connection timeout.
    pub fn new(url: impl Into<String>, topic: impl Into<String>) -> Self {
        PulsarSinkConfig {
            url: url.into(),
            topic: topic.into(),
            in_flight: 500,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// At most this many messages are sent before their receipts are awaited (at least 1; 1 is a
    /// fully synchronous send). Brokers bound pending publishes per connection (1,000 by default).
    pub fn in_flight(mut self, messages: usize) -> Self {
        self.in_flight = messages.max(1);
        self
    }

    /// How long connecting to the broker may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

/// A [`Sink`] that publishes to a Pulsar topic: partition key = stream id, payload = JSON payload,
/// properties = the envelope headers, event time = the recording time.
///
/// Every send's receipt is awaited before the page counts as published. It connects on the first
/// page and again after a failure, so a broker that is down only delays the relay.
pub struct PulsarSink {
    config: PulsarSinkConfig,
    producer: Mutex<Option<Producer<TokioExecutor>>>,
}

impl std::fmt::Debug for PulsarSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PulsarSink").field("config", &self.config).finish_non_exhaustive()
    }
}

impl PulsarSink {
    /// A sink with this configuration; it connects when it first publishes.
    ///
    /// # Errors
    /// [`RelayError::Config`] when the topic is empty or the URL is not a `pulsar://` URL.
    pub fn new(config: PulsarSinkConfig) -> Result<Self, RelayError> {
        if config.topic.is_empty() {
            return Err(RelayError::Config { setting: "topic".into(), problem: "it is empty".into() });
        }
        if !(config.url.starts_with("pulsar://") || config.url.starts_with("pulsar+ssl://")) {
            return Err(RelayError::Config {
                setting: "url".into(),
                problem: format!("{:?} is not a pulsar:// or pulsar+ssl:// URL", config.url),
            });
        }
        Ok(PulsarSink { config, producer: Mutex::new(None) })
    }

    fn unreachable(&self, detail: impl std::fmt::Display) -> RelayError {
        RelayError::Unreachable { broker: self.config.url.clone(), detail: detail.to_string() }
    }

    async fn connect(&self) -> Result<Producer<TokioExecutor>, RelayError> {
        let connect = async {
            let client = Pulsar::builder(self.config.url.clone(), TokioExecutor)
                .build()
                .await
                .map_err(|e| self.unreachable(e))?;
            client.producer().with_topic(self.config.topic.clone()).build().await.map_err(|e| RelayError::Rejected {
                broker: self.config.url.clone(),
                what: format!("a producer for topic {:?}", self.config.topic),
                detail: e.to_string(),
            })
        };
        tokio::time::timeout(self.config.connect_timeout, connect)
            .await
            .map_err(|_| self.unreachable(format!("no connection within {:?}", self.config.connect_timeout)))?
    }

    fn message(record: &OutboundRecord) -> Message {
        let properties: HashMap<String, String> = record.headers.iter().cloned().collect();
        Message {
            payload: record.value.clone().into_bytes(),
            properties,
            partition_key: Some(record.key.clone()),
            event_time: u64::try_from(record.recorded_at.timestamp_millis()).ok(),
            ..Default::default()
        }
    }
}

#[async_trait]
impl Sink for PulsarSink {
    fn describe(&self) -> String {
        format!("pulsar {} topic {:?}", self.config.url, self.config.topic)
    }

    async fn publish(&self, records: &[OutboundRecord]) -> Result<(), RelayError> {
        let mut guard = self.producer.lock().await;
        if guard.is_none() {
            *guard = Some(self.connect().await?);
        }
        let Some(producer) = guard.as_mut() else {
            return Err(self.unreachable("no producer"));
        };
        let mut result = Ok(());
        'pages: for window in records.chunks(self.config.in_flight) {
            let mut receipts: Vec<SendFuture> = Vec::with_capacity(window.len());
            for record in window {
                match producer.send_non_blocking(Self::message(record)).await {
                    Ok(receipt) => receipts.push(receipt),
                    Err(error) => {
                        result = Err(self.unreachable(error));
                        break;
                    }
                }
            }
            for receipt in receipts {
                if let Err(error) = receipt.await {
                    if result.is_ok() {
                        result = Err(self.unreachable(error));
                    }
                }
            }
            if result.is_err() {
                break 'pages;
            }
        }
        if result.is_err() {
            // Start from a fresh connection next time.
            *guard = None;
        }
        result
    }
}
