//! A subject's first key is created once, even when several writers append its first events at the
//! same moment: each writer finds no key and tries to create one in its append; the store lets one
//! of them through (the key stream's `NoStream` expectation) and the others read that key, encrypt
//! again and retry. Every event decrypts with the one key.
//!
//! The race is forced, not hoped for: a wrapper holds the first [`WRITERS`] looks at the key stream
//! until every writer has looked, so all of them see no key. Runs on the memory store, on sled and on
//! PostgreSQL (feature `postgres`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/members.rs"]
mod members;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use annals::personal::PersonalStore;
use annals::{
    AppendResult, Checkpoint, CheckpointWrite, DeleteMode, Direction, Durability, Event, EventStore, ExpectedVersion,
    HeadWatch, LogChunk, LogFilter, MemoryStore, Position, ReadLog, ReadStream, RecordedEvent, Result, ScavengeChunk,
    SledConfig, Snapshot, StreamAppend, StreamId, StreamInfo, StreamView, Version,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use members::MemberEvent;
use tokio::sync::Barrier;

/// How many writers race.
const WRITERS: usize = 8;

/// A store whose first `WRITERS` calls of `stream_info` on a key stream wait for each other.
struct Gate<S> {
    inner: S,
    looks: AtomicUsize,
    barrier: Barrier,
}

#[async_trait]
impl<S: EventStore> EventStore for Gate<S> {
    async fn append_multi(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.inner.append_multi(appends).await
    }

    async fn read_stream_chunk(
        &self,
        stream: &StreamId,
        from: Version,
        direction: Direction,
        max: usize,
        view: StreamView,
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
        self.inner.save_checkpoints(writes).await
    }

    async fn list_checkpoints(&self, prefix: &str) -> Result<Vec<Checkpoint>> {
        self.inner.list_checkpoints(prefix).await
    }

    async fn restore(&self, events: Vec<RecordedEvent>) -> Result<()> {
        self.inner.restore(events).await
    }

    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion, mode: DeleteMode) -> Result<()> {
        self.inner.delete_stream(stream, expected, mode).await
    }

    async fn truncate_stream(&self, stream: &StreamId, before: Version) -> Result<()> {
        self.inner.truncate_stream(stream, before).await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo> {
        let info = self.inner.stream_info(stream).await?;
        if stream.as_str().starts_with("$personal-") && self.looks.fetch_add(1, Ordering::SeqCst) < WRITERS {
            self.barrier.wait().await;
        }
        Ok(info)
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
}

/// `WRITERS` tasks append the first events of subject `s` at once, each to its own stream; checks
/// that one key was stored and that every event decrypts with it.
async fn race<S: EventStore + 'static>(inner: S) {
    let gate = Gate { inner, looks: AtomicUsize::new(0), barrier: Barrier::new(WRITERS) };
    let store = Arc::new(PersonalStore::new(Arc::new(gate)));
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let event = MemberEvent::joined("s", &format!("writer{writer}@example.org"), "S", "basic");
            let stream = StreamId::new(format!("member-s-{writer}")).unwrap();
            store.append(&stream, ExpectedVersion::NoStream, vec![event.to_new_event().unwrap()]).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let raw = store.inner();
    let key_stream = StreamId::new("$personal-s").unwrap();
    let keys: Vec<RecordedEvent> =
        raw.read_stream(&key_stream, ReadStream::forward().view(StreamView::History)).try_collect().await.unwrap();
    assert_eq!(keys.len(), 1, "exactly one key event: {keys:#?}");
    assert!(raw.stream_info(&key_stream).await.unwrap().last_version == Some(Version::FIRST));
    let log: Vec<RecordedEvent> = raw.read_log(ReadLog::from_start()).try_collect().await.unwrap();
    assert_eq!(log.len(), WRITERS + 1);
    for writer in 0..WRITERS {
        let stream = StreamId::new(format!("member-s-{writer}")).unwrap();
        let events: Vec<RecordedEvent> = store.read_stream(&stream, ReadStream::forward()).try_collect().await.unwrap();
        let email = format!("writer{writer}@example.org");
        assert_eq!(MemberEvent::from_recorded(&events[0]).unwrap(), MemberEvent::joined("s", &email, "S", "basic"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_on_the_memory_store() {
    race(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    race(SledConfig::new(dir.path()).durability(Durability::Fsync).open().unwrap()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_on_postgres() {
    race(common::postgres::fresh_config().unwrap().open().await.unwrap()).await;
}
