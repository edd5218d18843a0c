//! Annals is an event-sourcing framework for Rust: an embedded, crash-safe event store on
//! [sled](https://docs.rs/sled), with the same API ready for other backends.
//!
//! # Overview
//!
//! In event sourcing, the state of the system is the sequence of things that happened to it. Annals
//! stores those events in an append-only log organised in *streams* (one stream per aggregate
//! instance, such as `order-42`) and gives them back in order: one stream, the whole log, a filtered
//! part of it, or everything up to a point in time.
//!
//! ```
//! use annals::{EventStore, ExpectedVersion, NewEvent, ReadLog, ReadStream, SledStore, StreamId};
//! use futures_util::TryStreamExt;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct OrderPlaced {
//!     item: String,
//!     quantity: u32,
//! }
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let store = SledStore::open(dir.path())?;
//! let order = StreamId::new("order-42")?;
//!
//! // Append with optimistic concurrency: the stream must not exist yet.
//! let placed = NewEvent::json("OrderPlaced", &OrderPlaced { item: "book".into(), quantity: 2 })?;
//! let result = store.append(&order, ExpectedVersion::NoStream, vec![placed]).await?;
//! assert_eq!(result.version.get(), 1);
//!
//! // The same expectation fails now: someone (we) already created the stream.
//! let again = NewEvent::json("OrderPlaced", &OrderPlaced { item: "pen".into(), quantity: 1 })?;
//! assert!(store.append(&order, ExpectedVersion::NoStream, vec![again]).await.is_err());
//!
//! // Read the stream back and decode the payload.
//! let events: Vec<_> = store.read_stream(&order, ReadStream::forward()).try_collect().await?;
//! let first: OrderPlaced = events[0].payload_as()?;
//! assert_eq!(first, OrderPlaced { item: "book".into(), quantity: 2 });
//!
//! // Or the whole log, from any position.
//! let log: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await?;
//! assert_eq!(log.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Core concepts
//!
//! - **Events.** A [`NewEvent`] is what you append: a type name, a schema version, a JSON payload,
//!   an optional business time (`occurred_at`) and [`Metadata`] (correlation and causation ids,
//!   headers). The store turns it into a [`RecordedEvent`] with its [`StreamId`], [`Version`] in the
//!   stream, global [`Position`] in the log and `recorded_at` time.
//! - **Streams and versions.** Each stream's versions run 1, 2, 3, ... without gaps. An append names
//!   the [`ExpectedVersion`] of its stream; if another writer got there first, the append fails with
//!   [`Error::WrongExpectedVersion`] and writes nothing.
//! - **The log and positions.** Every event also has a position in the whole log: 1, 2, 3, ... in
//!   commit order, without gaps, across all streams. Positions are what projections and subscriptions
//!   checkpoint.
//! - **Two clocks.** `recorded_at` is when the store committed the event and never decreases along
//!   the log, so [`EventStore::seek_recorded`] finds a time in O(log n). `occurred_at` is when it
//!   happened in the business domain, which may be long before (imported history). Reads can stop at
//!   a position, a recorded time or an occurred time ([`Until`]).
//! - **Stores.** [`EventStore`] is the trait; [`SledStore`] is the embedded default (one directory,
//!   no server) and [`MemoryStore`] the in-memory one for tests. Both pass one conformance suite.
//!
//! # Guarantees
//!
//! With the default [`Durability::Fsync`], an append is acknowledged only once it is on disk
//! (`fdatasync`ed): it survives `kill -9` and power loss. An append is atomic, also over several
//! streams ([`EventStore::append_multi`]). A retry of an append whose event ids are stored answers with
//! the original result instead of storing the events twice, also after a restart. Reads and
//! [`HeadWatch`] only ever show acknowledged events. The full list, each backed by a test, is in
//! `docs/guarantees.md` in the repository.
//!
//! # Errors
//!
//! Every fallible operation returns [`Error`]; each variant's documentation says whether to retry,
//! fix the input or treat it as a bug. Library code never panics on input or disk contents, and never
//! prints.
//!
//! # Features
//!
//! - `derive` (default): the derive macros of the `annals-derive` crate.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod envelope;
mod error;
mod position;
mod store;
mod stream_id;

pub use crate::envelope::{Metadata, NewEvent, RecordedEvent, MAX_EVENT_TYPE_LEN};
pub use crate::error::{Error, InvalidName, Result};
pub use crate::position::{ExpectedVersion, Position, Version};
pub use crate::store::memory::MemoryStore;
pub use crate::store::sled::{Durability, SledConfig, SledStore, MAX_EVENT_SIZE_LIMIT};
pub use crate::store::{
    AppendResult, Direction, EventStore, EventStream, HeadWatch, LogChunk, LogFilter, ReadLog, ReadStream,
    StreamAppend, Until, DEFAULT_MAX_EVENT_SIZE,
};
pub use crate::stream_id::StreamId;

/// The README's code, compiled as a doctest so that it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
