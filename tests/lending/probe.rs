//! A store wrapper that counts what the repositories do (events read, appends, conflicts) and can
//! play a concurrent writer: an event appended to a stream just before the next append.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use annals::{
    AppendResult, Checkpoint, CheckpointWrite, Direction, Error, EventStore, ExpectedVersion, HeadWatch, LogChunk,
    LogFilter, NewEvent, Position, RecordedEvent, Result, Snapshot, StreamAppend, StreamId, Version,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[derive(Clone)]
pub struct Probe<S> {
    pub inner: S,
    events_read: Arc<AtomicUsize>,
    appends: Arc<AtomicUsize>,
    conflicts: Arc<AtomicUsize>,
    snapshots_saved: Arc<Mutex<Vec<(StreamId, Version)>>>,
    meddle: Arc<Mutex<Vec<(StreamId, NewEvent)>>>,
    yield_before_append: Arc<AtomicBool>,
    fail_snapshot_saves: Arc<AtomicBool>,
}

impl<S> Probe<S> {
    pub fn new(inner: S) -> Self {
        Probe {
            inner,
            events_read: Arc::default(),
            appends: Arc::default(),
            conflicts: Arc::default(),
            snapshots_saved: Arc::default(),
            meddle: Arc::default(),
            yield_before_append: Arc::default(),
            fail_snapshot_saves: Arc::default(),
        }
    }

    /// Makes every snapshot save fail with a storage error (as a full disk would), or not.
    pub fn fail_snapshot_saves(&self, fail: bool) {
        self.fail_snapshot_saves.store(fail, Ordering::SeqCst);
    }

    /// The events read from streams since the last call.
    pub fn take_read(&self) -> usize {
        self.events_read.swap(0, Ordering::SeqCst)
    }

    /// The `append_multi` calls since the last call.
    pub fn take_appends(&self) -> usize {
        self.appends.swap(0, Ordering::SeqCst)
    }

    /// The appends refused with `WrongExpectedVersion` since the last call.
    pub fn take_conflicts(&self) -> usize {
        self.conflicts.swap(0, Ordering::SeqCst)
    }

    /// The snapshots saved since the last call, in order.
    pub fn take_snapshots(&self) -> Vec<(StreamId, Version)> {
        std::mem::take(&mut *self.snapshots_saved.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Appends `event` to `stream` (at any version) just before the next append, as a concurrent
    /// writer would.
    pub fn meddle_once(&self, stream: StreamId, event: NewEvent) {
        self.meddle.lock().unwrap_or_else(|e| e.into_inner()).push((stream, event));
    }

    /// Yields to the scheduler before every append, so that concurrent commands interleave between
    /// their load and their append.
    pub fn yield_before_appends(&self) {
        self.yield_before_append.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl<S: EventStore> EventStore for Probe<S> {
    async fn append_multi(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        let meddling = std::mem::take(&mut *self.meddle.lock().unwrap_or_else(|e| e.into_inner()));
        for (stream, event) in meddling {
            self.inner.append(&stream, ExpectedVersion::Any, vec![event]).await?;
        }
        if self.yield_before_append.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        self.appends.fetch_add(1, Ordering::SeqCst);
        let result = self.inner.append_multi(appends).await;
        if let Err(Error::WrongExpectedVersion { .. }) = &result {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        result
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
        self.inner.read_log_chunk(from, max, filter).await
    }

    async fn head(&self) -> Result<Position> {
        self.inner.head().await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<Version>> {
        self.inner.stream_version(stream).await
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<(StreamId, Version)>> {
        self.inner.list_streams(prefix).await
    }

    async fn seek_recorded(&self, at: DateTime<Utc>) -> Result<Option<Position>> {
        self.inner.seek_recorded(at).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        if self.fail_snapshot_saves.load(Ordering::SeqCst) {
            return Err(Error::Storage(Box::new(std::io::Error::other("no space left on device (simulated)"))));
        }
        let saved = (snapshot.stream.clone(), snapshot.version);
        self.inner.save_snapshot(snapshot).await?;
        self.snapshots_saved.lock().unwrap_or_else(|e| e.into_inner()).push(saved);
        Ok(())
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
