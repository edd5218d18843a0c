//! Connectors to the brokers other services already use: the **relay out** (an outbox) publishes the
//! log, or a filtered part of it, to a Kafka or Pulsar topic; the **relay in** consumes a Kafka topic
//! into a store.
//!
//! Both keep their progress where it is safe against crashes:
//!
//! - [`Relay`] reads the log page by page, hands each page to a [`Sink`], and saves its checkpoint
//!   in the store only after the broker acknowledged every record of the page (`acks=all` on
//!   Kafka, a send receipt per message on Pulsar). A relay killed at any point resumes from its
//!   checkpoint: no position is ever skipped, and the only records published twice are those of the
//!   page that was in flight. Consumers deduplicate by the [`EVENT_ID`] header, which turns that into
//!   exactly-once effects (the relay in does it on its own, see below).
//! - [`KafkaInbound`] reads a topic as a member of a consumer group, appends each record into the
//!   store as an event whose id is derived from the record's topic, partition and offset (or, for
//!   records a relay published, kept from the [`EVENT_ID`] header), and commits the group's offsets
//!   only after the append returned, that is after it is as durable as the store makes appends.
//!   Re-consuming after a crash appends nothing twice: the store recognises the ids. A record that
//!   cannot be mapped to an event is parked in the store with the reason, never dropped.
//!
//! Records carry the envelope as headers (see [`headers`](self#headers)), so that Annals → Kafka →
//! Annals keeps event ids, types, schema versions, business times and metadata.
//!
//! # Headers
//!
//! | header | value |
//! |---|---|
//! | `annals-id` | the event id (a UUID) |
//! | `annals-type` | the event type |
//! | `annals-schema-version` | the schema version, in decimal |
//! | `annals-stream` | the stream (also the record key) |
//! | `annals-version` | the event's version in its stream, in decimal |
//! | `annals-position` | the event's position in the source log, in decimal |
//! | `annals-recorded-at` | when the source store recorded it, RFC 3339 with microseconds |
//! | `annals-occurred-at` | its business time, RFC 3339 with microseconds |
//! | `annals-correlation-id`, `annals-causation-id` | present when the metadata has them |
//! | `annals-header-<name>` | each user header of the metadata |
//!
//! The record value is the event's JSON payload as stored, and the record key is the stream id, so
//! every event of one stream goes to one partition and keeps its order there.

mod error;
pub mod headers;
mod inbound;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "kafka")]
mod kafka_in;
mod outbound;
#[cfg(feature = "pulsar")]
mod pulsar;
mod task;

pub use self::error::RelayError;
pub use self::headers::EVENT_ID;
pub use self::inbound::{record_event_id, InboundRecord, Mapped, Mapping, ParkedRecord};
#[cfg(feature = "kafka")]
pub use self::kafka::{KafkaSink, KafkaSinkConfig};
#[cfg(feature = "kafka")]
pub use self::kafka_in::{InboundConfig, InboundHandle, InboundStatus, KafkaInbound};
pub use self::outbound::{OutboundRecord, Relay, RelayConfig, RelayHandle, RelayState, RelayStatus, Sink};
#[cfg(feature = "pulsar")]
pub use self::pulsar::{PulsarSink, PulsarSinkConfig};
