//! A store wrapper that counts the events read and the log reads made, and can fake a concurrent
//! writer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use annals::{
    AppendResult, Checkpoint, CheckpointWrite, Direction, EventStore, ExpectedVersion, HeadWatch, LogChunk, LogFilter,
    NewEvent, Position, RecordedEvent, Result, Snapshot, StreamAppend, StreamId, Version,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[derive(Clone)]
pub struct Counting<S> {
    pub inner: S,
    pub events_read: Arc<AtomicUsize>,
    /// Calls of `read_log_chunk`, whatever they return.
    pub log_reads: Arc<AtomicUsize>,
    /// When set, the next append first appends a `Deposited` event to the same stream, as a
    /// concurrent writer would, so the real append conflicts.
    pub interfere_once: Arc<AtomicBool>,
}

impl<S> Counting<S> {
    pub fn new(inner: S) -> Self {
        Counting { inner, events_read: Arc::default(), log_reads: Arc::default(), interfere_once: Arc::default() }
    }

    pub fn take_read(&self) -> usize {
        self.events_read.swap(0, Ordering::SeqCst)
    }

    /// The log reads made since the last call.
    pub fn take_log_reads(&self) -> usize {
        self.log_reads.swap(0, Ordering::SeqCst)
    }
}

#[async_trait]
impl<S: EventStore> EventStore for Counting<S> {
    async fn append_multi(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        if self.interfere_once.swap(false, Ordering::SeqCst) {
            let stream = appends[0].stream.clone();
            let sneaky = NewEvent::raw("Deposited", r#"{"amount_cents":1}"#).with_schema_version(2);
            self.inner.append(&stream, ExpectedVersion::Any, vec![sneaky]).await?;
        }
        self.inner.append_multi(appends).await
    }

    async fn read_stream_chunk(
        &self,
        stream: &StreamId,
        from: Version,
        direction: Direction,
        max: usize,
        view: annals::StreamView,
    ) -> Result<Vec<RecordedEvent>> {
        let events = self.inner.read_stream_chunk(stream, from, direction, max, view).await?;
        self.events_read.fetch_add(events.len(), Ordering::SeqCst);
        Ok(events)
    }

    async fn read_log_chunk(&self, from: Position, max: usize, filter: &LogFilter) -> Result<LogChunk> {
        self.log_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_log_chunk(from, max, filter).await
    }

    async fn head(&self) -> Result<Position> {
        self.inner.head().await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>> {
        self.inner.stream_version(stream).await
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

    async fn restore(&self, events: Vec<RecordedEvent>) -> Result<()> {
        self.inner.restore(events).await
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<(StreamId, Version)>> {
        self.inner.list_streams(prefix).await
    }

    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: annals::ExpectedVersion,
        mode: annals::DeleteMode,
    ) -> annals::Result<()> {
        self.inner.delete_stream(stream, expected, mode).await
    }

    async fn truncate_stream(&self, stream: &StreamId, before: Version) -> annals::Result<()> {
        self.inner.truncate_stream(stream, before).await
    }

    async fn stream_info(&self, stream: &StreamId) -> annals::Result<annals::StreamInfo> {
        self.inner.stream_info(stream).await
    }

    async fn scavenge_chunk(&self, from: Position, max: usize) -> annals::Result<annals::ScavengeChunk> {
        self.inner.scavenge_chunk(from, max).await
    }

    async fn scavenge_stream(&self, stream: &StreamId) -> annals::Result<u64> {
        self.inner.scavenge_stream(stream).await
    }

    fn watch_head(&self) -> HeadWatch {
        self.inner.watch_head()
    }
}
