//! [`PersonalStore`] as an [`EventStore`]: appends encrypt, reads decrypt, key streams are hidden,
//! everything else is passed on.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::keys::{is_key_stream, KEY_STREAM_PREFIX};
use super::PersonalStore;
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::position::{ExpectedVersion, Position, Version};
use crate::store::{
    AppendResult, Checkpoint, CheckpointWrite, DeleteMode, Direction, EventStore, HeadWatch, LogChunk, LogFilter,
    PartitionLeases, ScavengeChunk, Snapshot, StreamAppend, StreamInfo, StreamView,
};
use crate::stream_id::StreamId;

/// The error for a change made to a key stream other than through [`PersonalStore::forget`].
fn key_stream_refused(stream: &StreamId) -> Error {
    Error::PersonalData {
        event_type: String::new(),
        subject: stream.as_str().trim_start_matches(KEY_STREAM_PREFIX).to_owned(),
        field: Some(stream.to_string()),
        problem: "a key stream is changed only by PersonalStore::forget",
    }
}

#[async_trait]
impl<S: EventStore> EventStore for PersonalStore<S> {
    /// Encrypts the personal fields of every event that declares some (see
    /// [`crate::personal`]), appending a subject's first key in the same atomic append.
    ///
    /// # Errors
    /// Those of the wrapped store, and [`Error::PersonalData`] for a payload that is not an object
    /// or lacks a declared field, an append to a `$personal-` stream, or a reserved header.
    async fn append_multi(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.append_protected(appends).await
    }

    /// Events with their personal fields decrypted, or erased; nothing for a key stream.
    async fn read_stream_chunk(
        &self,
        stream: &StreamId,
        from: Version,
        direction: Direction,
        max: usize,
        view: StreamView,
    ) -> Result<Vec<RecordedEvent>> {
        if is_key_stream(stream.as_str()) {
            return Ok(Vec::new());
        }
        let events = self.inner.read_stream_chunk(stream, from, direction, max, view).await?;
        self.reveal(events).await
    }

    /// Events with their personal fields decrypted, or erased, leaving out the key streams' events.
    async fn read_log_chunk(&self, from: Position, max: usize, filter: &LogFilter) -> Result<LogChunk> {
        let chunk = self.inner.read_log_chunk(from, max, filter).await?;
        let events = chunk.events.into_iter().filter(|event| !is_key_stream(event.stream.as_str())).collect();
        Ok(LogChunk { events: self.reveal(events).await?, ..chunk })
    }

    async fn head(&self) -> Result<Position> {
        self.inner.head().await
    }

    /// `None` for a key stream.
    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>> {
        if is_key_stream(stream.as_str()) {
            return Ok(None);
        }
        self.inner.stream_version(stream).await
    }

    /// The streams, without the key streams.
    async fn list_streams(&self, prefix: &str) -> Result<Vec<(StreamId, Version)>> {
        let mut streams = self.inner.list_streams(prefix).await?;
        streams.retain(|(stream, _)| !is_key_stream(stream.as_str()));
        Ok(streams)
    }

    async fn seek_recorded(&self, at: DateTime<Utc>) -> Result<Option<Position>> {
        self.inner.seek_recorded(at).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &StreamId, at: Version) -> Result<Option<Snapshot>> {
        self.inner.load_snapshot(stream, at).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoints(&self, writes: Vec<CheckpointWrite>) -> Result<()> {
        self.inner.save_checkpoints(writes).await
    }

    async fn list_checkpoints(&self, prefix: &str) -> Result<Vec<Checkpoint>> {
        self.inner.list_checkpoints(prefix).await
    }

    /// Passed on as they are: events exported from a store (not through a `PersonalStore`) keep
    /// their ciphertext, and their keys come with them.
    async fn restore(&self, events: Vec<RecordedEvent>) -> Result<()> {
        self.inner.restore(events).await
    }

    /// Refused for a key stream ([`Error::PersonalData`]): use [`PersonalStore::forget`].
    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion, mode: DeleteMode) -> Result<()> {
        if is_key_stream(stream.as_str()) {
            return Err(key_stream_refused(stream));
        }
        self.inner.delete_stream(stream, expected, mode).await
    }

    /// Refused for a key stream ([`Error::PersonalData`]): use [`PersonalStore::forget`].
    async fn truncate_stream(&self, stream: &StreamId, before: Version) -> Result<()> {
        if is_key_stream(stream.as_str()) {
            return Err(key_stream_refused(stream));
        }
        self.inner.truncate_stream(stream, before).await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo> {
        self.inner.stream_info(stream).await
    }

    async fn scavenge_chunk(&self, from: Position, max: usize) -> Result<ScavengeChunk> {
        self.inner.scavenge_chunk(from, max).await
    }

    async fn scavenge_stream(&self, stream: &StreamId) -> Result<u64> {
        self.inner.scavenge_stream(stream).await
    }

    fn watch_head(&self) -> HeadWatch {
        self.inner.watch_head()
    }

    fn partition_leases(&self) -> Option<&dyn PartitionLeases> {
        self.inner.partition_leases()
    }
}
