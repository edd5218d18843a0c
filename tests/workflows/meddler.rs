//! A store wrapper that numbers the writes (`append_multi` and `save_checkpoints` calls, in one
//! sequence), can lose the acknowledgement of appends that hold a workflow step (the append is
//! stored, the caller gets a storage error), and can halt forever just before or just after a
//! chosen write: the moment a crash test kills the process at. A write is named `event-step` or
//! `deadline-step` (an append holding a workflow step reacting to an event or a deadline),
//! `append` (any other append) or `checkpoint`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use annals::{
    AppendResult, Checkpoint, CheckpointWrite, Direction, Error, EventStore, HeadWatch, LogChunk, LogFilter, Position,
    RecordedEvent, Result, Snapshot, StreamAppend, StreamId, Version, WORKFLOW_STEP_EVENT_TYPE,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// Where to halt: before or after the write numbered `at` (from 1), and what to do first (say so).
#[derive(Clone)]
pub struct Halt {
    pub at: u64,
    pub after: bool,
    pub then: Arc<dyn Fn(u64, &'static str, bool) + Send + Sync>,
}

#[derive(Clone)]
pub struct Meddler<S> {
    pub inner: S,
    writes: Arc<AtomicU64>,
    lose_acks: Arc<AtomicU32>,
    halt: Arc<Mutex<Option<Halt>>>,
}

impl<S> Meddler<S> {
    pub fn new(inner: S) -> Self {
        Meddler { inner, writes: Arc::default(), lose_acks: Arc::default(), halt: Arc::default() }
    }

    /// The next `n` appends holding a workflow step are stored, then answered with a storage error.
    pub fn lose_acks(&self, n: u32) {
        self.lose_acks.store(n, Ordering::SeqCst);
    }

    /// How many acknowledgements are still to be lost.
    pub fn acks_to_lose(&self) -> u32 {
        self.lose_acks.load(Ordering::SeqCst)
    }

    pub fn halt(&self, halt: Halt) {
        *self.halt.lock().unwrap() = Some(halt);
    }

    /// Numbers a write (before it is made).
    fn number(&self) -> u64 {
        self.writes.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Halts forever when the write is the chosen one (`after`: the write was made).
    async fn moment(&self, number: u64, what: &'static str, after: bool) {
        let halt = self.halt.lock().unwrap().clone();
        if let Some(halt) = halt.filter(|h| h.at == number && h.after == after) {
            (halt.then)(number, what, after);
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl<S: EventStore> EventStore for Meddler<S> {
    async fn append_multi(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        let step = appends.iter().flat_map(|a| &a.events).find(|e| e.event_type() == WORKFLOW_STEP_EVENT_TYPE);
        let what = match step {
            Some(step) if step.payload().contains(r#""kind":"deadline""#) => "deadline-step",
            Some(_) => "event-step",
            None => "append",
        };
        let number = self.number();
        let step = step.is_some();
        self.moment(number, what, false).await;
        let result = self.inner.append_multi(appends).await;
        self.moment(number, what, true).await;
        let lose = step
            && result.is_ok()
            && self.lose_acks.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if lose {
            return Err(Error::Storage(Box::new(std::io::Error::other("the acknowledgement was lost"))));
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
        self.inner.read_stream_chunk(stream, from, direction, max, view).await
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
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &StreamId, at: Version) -> Result<Option<Snapshot>> {
        self.inner.load_snapshot(stream, at).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoints(&self, writes: Vec<CheckpointWrite>) -> Result<()> {
        let number = self.number();
        self.moment(number, "checkpoint", false).await;
        self.inner.save_checkpoints(writes).await?;
        self.moment(number, "checkpoint", true).await;
        Ok(())
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

    fn partition_leases(&self) -> Option<&dyn annals::PartitionLeases> {
        self.inner.partition_leases()
    }
}
