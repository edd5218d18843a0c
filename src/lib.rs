//! Annals: event sourcing for Rust.
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
