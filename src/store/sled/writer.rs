//! The single writer thread of a [`SledStore`](super::SledStore): it drains the queue of appends,
//! checks each against the stream heads, assigns versions and positions, and commits each group with
//! one sled batch and one flush + fsync (group commit).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use super::codec::{stream_key, RecordBuilder};
use super::config::Durability;
use super::files::{sled_error, Files};
use super::ids;
use super::index::{insert_type_entries, IndexEntry};
use super::indexer::{self, Indexer, Slice};
use super::recovery::{guarded, DATA_FILE_DAMAGE, HEAD_EVERY, HEAD_EVERY_GROUPS};
use super::scavenge::{plan_chunk, plan_stream, Removal};
use crate::error::{Error, Result};
use crate::position::{ExpectedVersion, Position, Version};
use crate::store::observe::{self, GroupObserver, StoreKind};
use crate::store::{plan_retry, AppendResult, DeleteMode, ScavengeChunk, StoredId, StreamInfo};
use crate::stream_id::StreamId;

/// The most appends one group takes from the queue.
const MAX_GROUP: usize = 1024;

/// The running writer and syncer threads of a store, owned by the store: appends go in through
/// [`send`](Self::send), the durable head comes out through [`head`](Self::head). Dropping it closes
/// the queue and waits for both threads to finish the groups already queued, so that sled can release
/// its lock, which it does shortly after the last database handle is gone.
#[derive(Debug)]
pub(super) struct WriterHandle {
    queue: Option<mpsc::Sender<Work>>,
    /// The second stage, here for its count of queued requests.
    syncer: Arc<Syncer>,
    thread: Option<JoinHandle<()>>,
    head: watch::Receiver<Position>,
    /// Under `Buffered`: the thread that flushes and syncs every `flush_every_ms`, and its stop.
    flusher: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

/// Starts the writer and syncer threads of the store in `files`, which continue its log.
pub(super) fn spawn(files: Arc<Files>, durability: Durability, flush_every_ms: u64) -> Result<WriterHandle> {
    // What the writer continues is read from sled; a panic there on a damaged file is damage too.
    let last = guarded(DATA_FILE_DAMAGE, || files.last_record())?;
    let tail = guarded(DATA_FILE_DAMAGE, || files.index_tail())?;
    let type_counts = guarded(DATA_FILE_DAMAGE, || files.type_counts())?;
    let next_position = last.as_ref().map_or(1, |r| r.last() + 1);
    let (head_tx, head_rx) = watch::channel(Position::new(next_position - 1));
    let poisoned = Arc::new(AtomicBool::new(false));
    let (synced, applied) = mpsc::channel();
    let syncer = Arc::new(Syncer {
        files: Arc::clone(&files),
        durability,
        head: head_tx,
        poisoned: Arc::clone(&poisoned),
        in_flight: AtomicUsize::new(0),
        in_flight_appends: AtomicUsize::new(0),
        settled: (Mutex::new(()), Condvar::new()),
        queued: AtomicUsize::new(0),
        head_file: Mutex::new(HeadFileClock { groups: 0, written: Instant::now() }),
    });
    let flusher = match durability {
        Durability::Buffered => Some(spawn_flusher(Arc::clone(&files), Arc::clone(&syncer), flush_every_ms)?),
        Durability::Fsync => None,
    };
    let indexer = indexer::spawn(files.tree.clone())?;
    let writer = Writer {
        recent: tail.ids,
        dirty: HashSet::new(),
        handed: None,
        indexer,
        slices: 0,
        type_counts,
        files,
        durability,
        synced,
        syncer: Arc::clone(&syncer),
        next_position,
        last_recorded: last.map_or(DateTime::<Utc>::MIN_UTC, |r| r.recorded_at),
        heads: HashMap::new(),
        lives: HashMap::new(),
        poisoned,
    };
    let (queue, requests) = mpsc::channel();
    let second = Arc::clone(&syncer);
    let syncer_thread = std::thread::Builder::new()
        .name("annals-syncer".into())
        .spawn(move || second.run(applied))
        .map_err(Error::storage)?;
    let thread = std::thread::Builder::new()
        .name("annals-writer".into())
        .spawn(move || {
            writer.run(requests);
            // The writer dropped its end of the syncer's queue: the syncer ends after the last group.
            let _ = syncer_thread.join();
        })
        .map_err(Error::storage)?;
    Ok(WriterHandle { queue: Some(queue), syncer, thread: Some(thread), head: head_rx, flusher })
}

/// Under `Buffered`, sled's flusher is off (see `Files::open`): this thread writes sled's buffers out
/// and syncs the blob files, then the data file, every `flush_every_ms`, until it is told to stop.
fn spawn_flusher(files: Arc<Files>, syncer: Arc<Syncer>, every_ms: u64) -> Result<(mpsc::Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = mpsc::channel::<()>();
    let every = std::time::Duration::from_millis(every_ms.max(1));
    let thread = std::thread::Builder::new()
        .name("annals-flusher".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                if !syncer.poisoned.load(Ordering::Acquire) {
                    // A failure shows at the next flush or at close; nothing waits on this one.
                    let _ = guarded(DATA_FILE_DAMAGE, || files.flush_and_sync());
                }
            }
        })
        .map_err(Error::storage)?;
    Ok((stop, thread))
}

impl WriterHandle {
    /// Queues a request; its answer comes through its reply channel.
    pub(super) fn send(&self, request: Request) -> Result<()> {
        self.queue(Work::Append(request))
    }

    /// Queues a change of a stream's life or a scavenge step; its answer comes through its reply
    /// channel.
    pub(super) fn send_life(&self, request: LifeRequest) -> Result<()> {
        self.queue(Work::Life(request))
    }

    fn queue(&self, work: Work) -> Result<()> {
        let queue = self.queue.as_ref().ok_or(Error::Closed)?;
        self.syncer.queued.fetch_add(1, Ordering::AcqRel);
        if queue.send(work).is_err() {
            self.syncer.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// The durable head: the last acknowledged position.
    pub(super) fn head(&self) -> Position {
        *self.head.borrow()
    }

    /// A receiver of the durable head.
    pub(super) fn watch_head(&self) -> watch::Receiver<Position> {
        self.head.clone()
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.flusher.take() {
            drop(stop);
            let _ = thread.join();
        }
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_ok() {
                self.syncer.close();
            }
        }
    }
}

/// One stream's part of a request, encoded by the caller.
pub(super) struct PreparedAppend {
    pub(super) stream: StreamId,
    pub(super) expected: ExpectedVersion,
    pub(super) ids: Vec<Uuid>,
    pub(super) types: Vec<String>,
    pub(super) bodies: Vec<Vec<u8>>,
}

/// A request in the writer's queue.
pub(super) struct Request {
    pub(super) appends: Vec<PreparedAppend>,
    pub(super) reply: Reply,
    /// For a restored batch: its `recorded_at` and first position. Such a request is committed as a
    /// group of its own.
    pub(super) restore: Option<(DateTime<Utc>, u64)>,
    /// `Some(n)` when the appender found none of the request's ids in the event-id index after `n`
    /// slices had been applied (`Files::unindexed`): unless another slice came since, the writer
    /// only checks the ids it holds.
    pub(super) unindexed: Option<u64>,
}

/// What the writer does next: appends, or a change of a stream's life (taken in queue order, so
/// that it sees every append queued before it and no append races it).
pub(super) enum Work {
    Append(Request),
    Life(LifeRequest),
}

/// A deletion, truncation or scavenge step for the writer, with where its answer goes.
pub(super) struct LifeRequest {
    pub(super) op: LifeOp,
    pub(super) reply: oneshot::Sender<Result<LifeAnswer>>,
}

/// What a [`LifeRequest`] asks.
pub(super) enum LifeOp {
    Delete { stream: StreamId, expected: ExpectedVersion, mode: DeleteMode },
    Truncate { stream: StreamId, before: Version },
    ScavengeChunk { from: Position, max: usize },
    ScavengeStream { stream: StreamId },
}

/// The answer to a [`LifeRequest`].
pub(super) enum LifeAnswer {
    Done,
    Chunk(ScavengeChunk),
    Removed(u64),
}

/// The state only the writer thread touches.
struct Writer {
    files: Arc<Files>,
    durability: Durability,
    /// Where applied groups go to be synced and acknowledged.
    synced: mpsc::Sender<Applied>,
    /// The syncer, shared with its thread: a lone append with nothing in flight is synced and
    /// acknowledged here instead, saving a thread hand-off (the latency of a sequential caller).
    syncer: Arc<Syncer>,
    /// The next position to assign.
    next_position: u64,
    last_recorded: DateTime<Utc>,
    /// Known last versions of streams, from their index (only streams that have entries).
    heads: HashMap<StreamId, u64>,
    /// Known lifecycles of streams, as their lifecycle key holds them (`StreamInfo::new()` for a
    /// stream without one); only the writer writes those keys.
    lives: HashMap<StreamId, StreamInfo>,
    /// The position of every event id stored after the id index's `mark` and not in `handed`: cut
    /// into a slice for the indexer thread once there are [`ids::SLICE`] of them, and at a clean
    /// close. Appends write no id key: sled spends microseconds per key written, and one per event
    /// would halve append throughput (docs/DESIGN.md).
    recent: HashMap<Uuid, u64>,
    /// Streams appended to since the last slice, whose head keys the next slice writes.
    dirty: HashSet<StreamId>,
    /// The slice handed to the indexer thread and not yet written: its ids are looked up here until
    /// it is, and come back to `recent` (its streams to `dirty`) if it fails.
    handed: Option<Handed>,
    /// The thread that writes the slices.
    indexer: Indexer,
    /// Slices applied since open (`Files::slices` publishes it to appenders).
    slices: u64,
    /// Set after a failed commit (by either thread): the outcome on disk is unknown, so no more
    /// appends until reopen.
    poisoned: Arc<AtomicBool>,
    /// Events of each type so far, which the event-type index entries chain.
    type_counts: HashMap<String, u64>,
}

/// A slice in the indexer's hands: its ids (shared with the indexer) and the streams whose heads it
/// writes.
type Handed = (Arc<HashMap<Uuid, u64>>, HashSet<StreamId>);

/// A group that sled has applied and flushed, waiting for `fdatasync` before it is acknowledged.
pub(super) struct Applied {
    head: u64,
    replies: Vec<(Reply, Result<Vec<AppendResult>>)>,
    /// For a group that wrote events: its observer and when its write began, to record once it is
    /// durable.
    committing: Option<(GroupObserver, Instant)>,
}

/// The second stage of the pipeline: `fdatasync` every group applied so far, then acknowledge them and
/// move the head. While it waits on the disk, the writer applies the next group. A group of one append,
/// with no group in flight and no request waiting, is finished by the writer itself (`Syncer::finish`
/// on its thread): there is nothing to overlap, and a thread hand-off less makes a sequential caller
/// ~18 % faster.
struct Syncer {
    files: Arc<Files>,
    durability: Durability,
    head: watch::Sender<Position>,
    poisoned: Arc<AtomicBool>,
    /// Groups handed to the syncer thread and not acknowledged yet.
    in_flight: AtomicUsize,
    /// The append requests of those groups.
    in_flight_appends: AtomicUsize,
    /// Signalled (under its lock) each time the syncer thread has acknowledged the groups it took,
    /// for a writer holding a group back until then.
    settled: (Mutex<()>, Condvar),
    /// Requests sent to the writer and not taken off its queue yet.
    queued: AtomicUsize,
    /// When the head file was last written, and how many groups were synced since.
    head_file: Mutex<HeadFileClock>,
}

/// Groups the syncer thread is done with: taken out of the in-flight counts when dropped (also when
/// unwinding), with a signal to a writer waiting for them.
struct Settle<'a> {
    syncer: &'a Syncer,
    groups: usize,
    appends: usize,
}

impl Settle<'_> {
    fn settle(&mut self) {
        let (lock, signal) = &self.syncer.settled;
        let guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.syncer.in_flight_appends.fetch_sub(std::mem::take(&mut self.appends), Ordering::AcqRel);
        self.syncer.in_flight.fetch_sub(std::mem::take(&mut self.groups), Ordering::AcqRel);
        drop(guard);
        signal.notify_all();
    }
}

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        if self.groups > 0 {
            self.settle();
        }
    }
}

/// When the head file is due: after [`HEAD_EVERY_GROUPS`] synced groups or [`HEAD_EVERY`].
#[derive(Debug)]
struct HeadFileClock {
    groups: u64,
    written: Instant,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("durability", &self.durability)
            .field("in_flight", &self.in_flight)
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

impl Syncer {
    fn run(&self, applied: Receiver<Applied>) {
        while let Ok(first) = applied.recv() {
            let mut groups = vec![first];
            groups.extend(applied.try_iter());
            // Settles the counts even if `finish` panics, so that a held-back writer never waits for
            // groups nobody will acknowledge.
            let mut settle =
                Settle { syncer: self, groups: groups.len(), appends: groups.iter().map(|g| g.replies.len()).sum() };
            let synced = self.finish(groups);
            // A held-back writer goes on before the head file is written.
            settle.settle();
            self.record_head(synced);
        }
    }

    /// Hands an applied group to the syncer thread (counted in flight until it is acknowledged), or
    /// gives it back when the syncer thread is gone.
    fn hand_over(&self, to: &mpsc::Sender<Applied>, applied: Applied) -> Result<(), Applied> {
        let appends = applied.replies.len();
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.in_flight_appends.fetch_add(appends, Ordering::AcqRel);
        to.send(applied).map_err(|mpsc::SendError(applied)| {
            Settle { syncer: self, groups: 1, appends }.settle();
            applied
        })
    }

    /// Blocks until the groups in flight are acknowledged (only the writer, which is waiting here,
    /// adds groups).
    fn wait_settled(&self) {
        let (lock, signal) = &self.settled;
        let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while self.in_flight.load(Ordering::Acquire) > 0 {
            guard = signal.wait(guard).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Makes the groups durable (one `fdatasync` for all), moves the head and answers every append.
    /// Returns how many groups it synced, for [`record_head`](Self::record_head).
    fn finish(&self, groups: Vec<Applied>) -> u64 {
        let count = groups.len() as u64;
        let sync_started = Instant::now();
        let outcome = match self.durability {
            Durability::Fsync if !self.poisoned.load(Ordering::Acquire) => self.files.sync_to_disk(),
            Durability::Fsync => Err(Error::Poisoned),
            Durability::Buffered => Ok(()),
        };
        let sync_took = sync_started.elapsed();
        let failure = outcome.err().map(|error| {
            self.poisoned.store(true, Ordering::Release);
            Arc::new(error)
        });
        let head = groups.iter().map(|g| g.head).max().unwrap_or_default();
        if failure.is_none() {
            let moved = self.head.send_if_modified(|current| {
                let moved = current.get() < head;
                *current = Position::new(head.max(current.get()));
                moved
            });
            if moved {
                observe::head(StoreKind::Sled, head);
            }
        }
        let synced = failure.is_none() && self.durability == Durability::Fsync;
        if synced {
            observe::synced(StoreKind::Sled, sync_took);
        }
        for group in groups {
            if let (Some((observer, write_started)), None) = (&group.committing, &failure) {
                if synced {
                    observer.synced(sync_took);
                }
                observer.committed(write_started.elapsed());
            }
            for (reply, result) in group.replies {
                let _ = reply.send(match &failure {
                    Some(error) => failed(result, error),
                    None => result,
                });
            }
        }
        if synced {
            count
        } else {
            0
        }
    }
}

impl Syncer {
    /// Counts `groups` synced groups and, when the head file is due, records the durable head in it
    /// (after the replies, so no append waits for it). A failure to write it is left for the next
    /// time: the head file may lag the log, never lead it.
    fn record_head(&self, groups: u64) {
        if groups == 0 {
            return;
        }
        let mut clock = self.head_file.lock().unwrap_or_else(PoisonError::into_inner);
        clock.groups += groups;
        if clock.groups < HEAD_EVERY_GROUPS && clock.written.elapsed() < HEAD_EVERY {
            return;
        }
        if self.files.write_head(self.head.borrow().get()).is_ok() {
            *clock = HeadFileClock { groups: 0, written: Instant::now() };
        }
    }

    /// At a clean close, after the last group: makes everything durable (under `Buffered` too) and
    /// records the head in the head file.
    fn close(&self) {
        if self.poisoned.load(Ordering::Acquire) {
            return;
        }
        let durable = match self.durability {
            Durability::Fsync => Ok(()),
            Durability::Buffered => self.files.flush_and_sync(),
        };
        if durable.is_ok() {
            let _ = self.files.write_head(self.head.borrow().get());
        }
    }
}

/// Where the answer to one request goes.
type Reply = oneshot::Sender<Result<Vec<AppendResult>>>;

/// What one group is about to write.
struct Group {
    records: RecordBuilder,
    batch: sled::Batch,
    next_position: u64,
    /// Stream versions after this group, for streams it touches.
    heads: HashMap<StreamId, u64>,
    /// Ids this group stores.
    ids: HashMap<Uuid, StoredId>,
    /// The positions of each event type in this group, for the event-type index.
    types: BTreeMap<String, Vec<u64>>,
    replies: Vec<(Reply, Result<Vec<AppendResult>>)>,
}

impl Writer {
    /// Runs until every sender is gone, then flushes once more.
    ///
    /// Work is taken in queue order. Consecutive ordinary appends form one group (at most
    /// [`MAX_GROUP`]); a restored batch carries its own time, so it is a group of its own; a change of
    /// a stream's life comes after the appends queued before it.
    fn run(mut self, queue: Receiver<Work>) {
        let mut pending = VecDeque::new();
        loop {
            if pending.is_empty() {
                match queue.recv() {
                    Ok(work) => pending.push_back(work),
                    Err(_) => break,
                }
                self.syncer.queued.fetch_sub(1, Ordering::AcqRel);
            }
            self.take(&queue, &mut pending);
            let Some(work) = pending.pop_front() else { continue };
            match work {
                Work::Life(request) => self.life(request),
                Work::Append(request) if request.restore.is_some() => {
                    let recorded_at = request.restore.map(|(at, _)| at);
                    self.commit(vec![request], recorded_at);
                }
                Work::Append(request) => {
                    let mut group = vec![request];
                    take_ordinary(&mut pending, &mut group);
                    if pending.is_empty() && self.hold_back(group.len()) {
                        self.syncer.wait_settled();
                        self.take(&queue, &mut pending);
                        take_ordinary(&mut pending, &mut group);
                    }
                    self.commit(group, None);
                }
            }
        }
        // Nothing to report to anyone any more; a failure here is seen at the next open (which reads
        // the ids this slice would have indexed from the log).
        self.settle_slice(true);
        if !self.poisoned.load(Ordering::Acquire) && !self.recent.is_empty() {
            self.hand_slice();
            self.settle_slice(true);
        }
        let _ = self.files.db.flush();
        drop(self.synced);
    }

    /// Moves what is queued into `pending`, up to [`MAX_GROUP`] items.
    fn take(&self, queue: &Receiver<Work>, pending: &mut VecDeque<Work>) {
        let before = pending.len();
        while pending.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(work) => pending.push_back(work),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        self.syncer.queued.fetch_sub(pending.len() - before, Ordering::AcqRel);
    }

    /// Whether a group of `appends` requests, with nothing else queued, should wait for the groups
    /// being synced before it is written: the group policy.
    ///
    /// The writer applies and flushes a group while the syncer thread syncs the one before, so the
    /// callers split between the group in flight and the next one. Every group costs about the same
    /// whatever its size (a sled batch writes two IO buffers at the flush, then an `fdatasync`), so
    /// small groups cost the most per event. A group smaller than the one being synced is therefore
    /// held back until that one is acknowledged: its callers come back meanwhile, and the group takes
    /// everyone waiting by then. A group at least as large goes at once, so the flush of a large group
    /// still overlaps the `fdatasync` of the one before. A lone append with nothing in flight never
    /// waits.
    fn hold_back(&self, appends: usize) -> bool {
        self.durability == Durability::Fsync
            && holds_back(appends, self.syncer.in_flight_appends.load(Ordering::Acquire))
    }

    fn commit(&mut self, requests: Vec<Request>, restored_at: Option<DateTime<Utc>>) {
        if self.poisoned.load(Ordering::Acquire) {
            for request in requests {
                let _ = request.reply.send(Err(Error::Poisoned));
            }
            return;
        }
        let recorded_at = restored_at.unwrap_or_else(|| self.last_recorded.max(Utc::now().trunc_subsecs(6)));
        let mut group = Group {
            records: RecordBuilder::new(self.next_position, recorded_at),
            batch: sled::Batch::default(),
            next_position: self.next_position,
            heads: HashMap::new(),
            ids: HashMap::new(),
            types: BTreeMap::new(),
            replies: Vec::with_capacity(requests.len()),
        };
        let observer = GroupObserver::start(StoreKind::Sled, requests.len());
        let span = observer.span().clone();
        let entered = span.enter();
        for request in requests {
            // A panic inside sled (damaged pages read back) answers the request as damage.
            let outcome = guarded(DATA_FILE_DAMAGE, || self.plan(&request, &mut group));
            group.replies.push((request.reply, outcome));
        }
        let wrote = group.next_position != self.next_position;
        let write_started = Instant::now();
        let outcome = if wrote { guarded(DATA_FILE_DAMAGE, || self.write(&mut group)) } else { Ok(()) };
        let replies = std::mem::take(&mut group.replies);
        let mut committing = None;
        let replies = match outcome {
            Ok(()) => {
                if wrote {
                    observer.wrote(group.next_position - self.next_position);
                    committing = Some((observer, write_started));
                }
                self.next_position = group.next_position;
                if wrote {
                    self.last_recorded = self.last_recorded.max(recorded_at);
                }
                self.dirty.extend(group.heads.keys().cloned());
                self.heads.extend(group.heads);
                self.recent.extend(group.ids.into_iter().map(|(id, stored)| (id, stored.position.get())));
                if self.recent.len() >= ids::SLICE {
                    self.cut_slice();
                }
                replies
            }
            Err(error) => {
                self.poisoned.store(true, Ordering::Release);
                let shared = Arc::new(error);
                replies.into_iter().map(|(reply, result)| (reply, failed(result, &shared))).collect()
            }
        };
        // Answers wait for the sync even when nothing was written, so that a retry answered
        // "already appended" is never acknowledged before the original append is durable.
        let applied = Applied { head: self.next_position - 1, replies, committing };
        let lone = applied.replies.len() == 1;
        let idle =
            self.syncer.in_flight.load(Ordering::Acquire) == 0 && self.syncer.queued.load(Ordering::Acquire) == 0;
        if lone && idle {
            // Nothing to overlap with (no group being synced, no request waiting): sync here rather
            // than wake the syncer thread. With a request waiting, the pipeline is faster.
            let synced = self.syncer.finish(vec![applied]);
            self.syncer.record_head(synced);
            return;
        }
        drop(entered);
        if let Err(applied) = self.syncer.hand_over(&self.synced, applied) {
            for (reply, _) in applied.replies {
                let _ = reply.send(Err(Error::Closed));
            }
        }
    }

    /// Applies the batch and has sled write it out (the syncer makes it durable).
    fn write(&mut self, group: &mut Group) -> Result<()> {
        let records = std::mem::replace(&mut group.records, RecordBuilder::new(0, self.last_recorded)).finish();
        let mut batch = std::mem::take(&mut group.batch);
        for (first, record) in records {
            batch.insert(&super::codec::log_key(first), record);
        }
        insert_type_entries(&mut batch, std::mem::take(&mut group.types), &mut self.type_counts);
        self.files.applying(group.next_position - 1);
        self.files.tree.apply_batch(batch).map_err(sled_error)?;
        if self.durability == Durability::Fsync {
            self.files.db.flush().map_err(sled_error)?;
        }
        Ok(())
    }

    /// Checks one request against the state so far and, if it passes, adds it to the group.
    fn plan(&mut self, request: &Request, group: &mut Group) -> Result<Vec<AppendResult>> {
        let keys: Vec<_> = request.appends.iter().map(|a| (&a.stream, a.ids.as_slice())).collect();
        let looked_up = request.unindexed == Some(self.slices);
        let retry = plan_retry(&keys, |id| match group.ids.get(&id) {
            Some(stored) => Ok(Some(stored.clone())),
            None => match self.recent.get(&id).or_else(|| self.handed.as_ref()?.0.get(&id)) {
                Some(position) => self.files.stored_at(*position, id),
                None if looked_up => Ok(None),
                None => match ids::lookup(&self.files.tree, &id)? {
                    Some(position) => self.files.stored_at(position, id),
                    None => Ok(None),
                },
            },
        })?;
        if let Some(results) = retry {
            return Ok(results);
        }
        if let Some((recorded_at, first_position)) = request.restore {
            let position = Position::new(first_position);
            if first_position != group.next_position {
                return Err(Error::Restore { position, problem: "it is not the next position" });
            }
            if recorded_at < self.last_recorded {
                return Err(Error::Restore { position, problem: "recorded before the last event" });
            }
        }
        let mut currents = Vec::with_capacity(request.appends.len());
        for append in &request.appends {
            let info = self.state(&append.stream, &group.heads)?;
            if info.tombstone {
                return Err(Error::StreamDeleted { stream: append.stream.clone() });
            }
            let actual = info.current_version();
            if !append.expected.accepts(actual) {
                return Err(Error::WrongExpectedVersion {
                    stream: append.stream.clone(),
                    expected: append.expected,
                    actual,
                });
            }
            // Versions continue after the last one ever written, deleted or not.
            currents.push(info.last_version.map_or(0, Version::get));
        }
        let mut results = Vec::with_capacity(request.appends.len());
        for (append, current) in request.appends.iter().zip(currents) {
            let first_position = group.next_position;
            let count = append.ids.len() as u64;
            for (((offset, id), body), event_type) in (0..).zip(&append.ids).zip(&append.bodies).zip(&append.types) {
                let version = current + 1 + offset;
                let position = group.next_position;
                // Looked up by reference: the type is cloned once per group, not per event.
                if let Some(positions) = group.types.get_mut(event_type) {
                    positions.push(position);
                } else {
                    group.types.insert(event_type.clone(), vec![position]);
                }
                group.records.push(version, body);
                let stored = StoredId {
                    position: Position::new(position),
                    stream: append.stream.clone(),
                    version: Version::new(version),
                };
                group.ids.insert(*id, stored);
                group.next_position += 1;
            }
            let entry = IndexEntry {
                first_version: current + 1,
                first_position,
                count: u32::try_from(count).map_err(|_| Error::Config {
                    setting: "events in one append",
                    expected: "at most 4,294,967,295",
                })?,
            };
            let key = stream_key(append.stream.as_str(), current + 1);
            let value = entry.encode(&key);
            group.batch.insert(key, value);
            group.heads.insert(append.stream.clone(), current + count);
            results.push(AppendResult {
                version: Version::new(current + count),
                first_position: Position::new(first_position),
                last_position: Position::new(group.next_position - 1),
                already_appended: false,
            });
        }
        Ok(results)
    }

    /// The last version of a stream in its index, as a group whose streams are at `group` sees it.
    fn indexed(&mut self, stream: &StreamId, group: &HashMap<StreamId, u64>) -> Result<Option<u64>> {
        if let Some(version) = group.get(stream) {
            return Ok(Some(*version));
        }
        if let Some(version) = self.heads.get(stream) {
            return Ok(Some(*version));
        }
        let version = self.files.stream_version(stream.as_str(), u64::MAX)?;
        if let Some(version) = version {
            self.heads.insert(stream.clone(), version);
        }
        Ok(version)
    }

    /// What the writer knows of the life of `stream`, its last version included (the lifecycle
    /// key's or the index's, whichever is greater: scavenging may have removed the index entries).
    fn state(&mut self, stream: &StreamId, group: &HashMap<StreamId, u64>) -> Result<StreamInfo> {
        let indexed = self.indexed(stream, group)?;
        let mut info = match self.lives.get(stream) {
            Some(info) => info.clone(),
            None => {
                let info = self.files.lifecycle(stream.as_str())?;
                self.lives.insert(stream.clone(), info.clone());
                info
            }
        };
        info.last_version = info.last_version.max(indexed.map(Version::new));
        Ok(info)
    }

    /// Answers a change of a stream's life or a scavenge step.
    fn life(&mut self, request: LifeRequest) {
        let outcome = if self.poisoned.load(Ordering::Acquire) {
            Err(Error::Poisoned)
        } else {
            guarded(DATA_FILE_DAMAGE, || self.change(&request.op))
        };
        let _ = request.reply.send(outcome);
    }

    fn change(&mut self, op: &LifeOp) -> Result<LifeAnswer> {
        let none = HashMap::new();
        match op {
            LifeOp::Delete { stream, expected, mode } => {
                let info = self.state(stream, &none)?;
                if info.tombstone {
                    return Err(Error::StreamDeleted { stream: stream.clone() });
                }
                let actual = info.current_version();
                if !expected.accepts(actual) {
                    return Err(Error::WrongExpectedVersion { stream: stream.clone(), expected: *expected, actual });
                }
                // Never before the last event recorded, so that time travel orders them.
                let at = self.last_recorded.max(Utc::now().trunc_subsecs(6));
                let mut next = info;
                if next.delete(stream, *mode, at)? {
                    self.write_life(stream, next, true)?;
                }
                Ok(LifeAnswer::Done)
            }
            LifeOp::Truncate { stream, before } => {
                let mut next = self.state(stream, &none)?;
                if next.truncate(stream, *before)? {
                    self.write_life(stream, next, false)?;
                }
                Ok(LifeAnswer::Done)
            }
            LifeOp::ScavengeChunk { from, max } => {
                let head = self.syncer.head.borrow().get();
                let (chunk, removal) = plan_chunk(&self.files, head, *from, *max)?;
                self.remove(removal)?;
                Ok(LifeAnswer::Chunk(chunk))
            }
            LifeOp::ScavengeStream { stream } => {
                let head = self.syncer.head.borrow().get();
                let removal = plan_stream(&self.files, head, stream.as_str())?;
                let removed = removal.removed;
                self.remove(removal)?;
                Ok(LifeAnswer::Removed(removed))
            }
        }
    }

    /// Writes a stream's new lifecycle durably (dropping its snapshots first when `drop_snapshots`).
    /// A failure leaves the disk unknown: no more writes until reopen.
    fn write_life(&mut self, stream: &StreamId, info: StreamInfo, drop_snapshots: bool) -> Result<()> {
        let written = self.files.write_life(stream.as_str(), &info, drop_snapshots, self.durability);
        if written.is_err() {
            self.poisoned.store(true, Ordering::Release);
        }
        written?;
        self.lives.insert(stream.clone(), info);
        Ok(())
    }

    /// Hands the ids gathered since the last slice to the indexer thread, unless it is still writing
    /// the previous slice; waits for that one only when twice a slice's worth of ids is in memory.
    fn cut_slice(&mut self) {
        self.settle_slice(false);
        if self.handed.is_some() {
            if self.recent.len() < 2 * ids::SLICE {
                return;
            }
            self.settle_slice(true);
        }
        self.hand_slice();
    }

    /// Hands the ids gathered since the last slice, the heads of the streams appended to since and
    /// the new mark to the indexer thread (none may be in its hands). The slice is not flushed on its
    /// own: the next group's flush carries it (sled recovers batches in order, so a slice never
    /// survives a crash without the groups it indexes). Until the indexer answers, lookups find the
    /// ids in `handed`; a failure brings them back, to go into the next slice, and the next open reads
    /// them from the log in the meantime.
    fn hand_slice(&mut self) {
        let mark = self.next_position - 1;
        let heads = self
            .dirty
            .iter()
            .filter_map(|stream| Some((stream.as_str().to_owned(), *self.heads.get(stream)?)))
            .collect();
        let ids = Arc::new(std::mem::take(&mut self.recent));
        let dirty = std::mem::take(&mut self.dirty);
        let slice = Slice { ids: Arc::clone(&ids), heads, mark };
        self.handed = Some((ids, dirty));
        if let Err(slice) = self.indexer.hand(slice) {
            // The indexer thread is gone: the writer writes the slice itself.
            let written = guarded(DATA_FILE_DAMAGE, || indexer::write(&self.files.tree, &slice)).is_ok();
            drop(slice);
            self.answered(written);
        }
    }

    /// Takes the indexer's answer for the slice in its hands, if there is one (waiting for it if
    /// `wait`): a written slice is counted and forgotten, a failed one comes back to memory.
    fn settle_slice(&mut self, wait: bool) {
        if self.handed.is_none() {
            return;
        }
        if let Some(written) = self.indexer.answer(wait) {
            self.answered(written);
        }
    }

    /// Ends the handed slice: written, it is counted (appenders see the count) and its ids are
    /// forgotten; failed, its ids and streams come back into `recent` and `dirty`.
    fn answered(&mut self, written: bool) {
        let Some((ids, dirty)) = self.handed.take() else { return };
        if written {
            self.slices += 1;
            self.files.slices.store(self.slices, Ordering::Release);
        } else {
            let ids = Arc::try_unwrap(ids).unwrap_or_else(|shared| (*shared).clone());
            self.recent.extend(ids);
            self.dirty.extend(dirty);
        }
    }

    /// Applies a scavenge step's batch, durably, and forgets the removed ids (their id keys go in the
    /// same batch).
    fn remove(&mut self, removal: Removal) -> Result<()> {
        if removal.removed == 0 {
            return Ok(());
        }
        // A slice written after this step would index the ids it removes.
        self.settle_slice(true);
        let mut batch = removal.batch;
        for id in &removal.ids {
            // The key too when the id is in memory: a slice cut short by a crash may have written it.
            self.recent.remove(id);
            batch.remove(&ids::id_key(id));
        }
        let written = self
            .files
            .tree
            .apply_batch(batch)
            .map_err(sled_error)
            .and_then(|()| self.files.make_durable(self.durability));
        if written.is_err() {
            self.poisoned.store(true, Ordering::Release);
        }
        written?;
        Ok(())
    }
}

/// Moves the ordinary appends at the front of `pending` into `group`, up to [`MAX_GROUP`] of them.
fn take_ordinary(pending: &mut VecDeque<Work>, group: &mut Vec<Request>) {
    while group.len() < MAX_GROUP {
        match pending.front() {
            Some(Work::Append(request)) if request.restore.is_none() => {}
            _ => return,
        }
        if let Some(Work::Append(request)) = pending.pop_front() {
            group.push(request);
        }
    }
}

/// The group policy of [`Writer::hold_back`]: hold a group of `appends` requests back while fewer of
/// them wait than the `in_flight` requests being synced.
fn holds_back(appends: usize, in_flight: usize) -> bool {
    appends < in_flight
}

/// What an append of a group whose write failed is answered: the storage error, unless it wrote
/// nothing (a retry answered "already appended", or its own rejection).
fn failed(result: Result<Vec<AppendResult>>, error: &Arc<Error>) -> Result<Vec<AppendResult>> {
    match result {
        Ok(results) if !results.iter().all(|r| r.already_appended) => {
            Err(Error::storage(SharedError(Arc::clone(error))))
        }
        other => other,
    }
}

/// One storage error reported to every append of a failed group.
#[derive(Debug)]
struct SharedError(Arc<Error>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    use futures_util::TryStreamExt;

    use super::*;
    use crate::envelope::NewEvent;
    use crate::store::{EventStore, ReadLog};
    use crate::SledStore;

    type Append = Pin<Box<dyn Future<Output = Result<AppendResult>> + Send>>;

    /// Polls `append` once: far enough to have handed its request to the writer.
    async fn hand_over(append: &mut Append) {
        std::future::poll_fn(|cx| {
            let _ = append.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
    }

    fn append(store: &SledStore, i: u32) -> Result<Append> {
        let (store, stream) = (store.clone(), StreamId::new(format!("s-{i}"))?);
        Ok(Box::pin(
            async move { store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("Tick", "{}")]).await },
        ))
    }

    #[test]
    fn a_group_smaller_than_the_one_being_synced_waits_for_it() {
        assert!(holds_back(3, 64));
        assert!(holds_back(63, 64));
        assert!(!holds_back(64, 64), "as large as the group in flight: it goes at once");
        assert!(!holds_back(1, 0), "nothing in flight: nothing to wait for");
    }

    /// While a group is being synced, appends that arrive one by one are held back and committed
    /// together as the next group, not each on its own.
    #[tokio::test]
    async fn appends_arriving_during_a_sync_form_one_group() -> Result<()> {
        let dir = tempfile::tempdir().map_err(Error::storage)?;
        let store = SledStore::open(dir.path())?;
        let syncer = Arc::clone(&store.inner.writer.syncer);
        // A group of 64 appends is being synced, as far as the writer can tell.
        syncer.in_flight.fetch_add(1, Ordering::AcqRel);
        syncer.in_flight_appends.fetch_add(64, Ordering::AcqRel);
        let mut appends = (0..10).map(|i| append(&store, i)).collect::<Result<Vec<_>>>()?;
        hand_over(&mut appends[0]).await;
        // The writer takes the first append off the queue before the others arrive.
        while syncer.queued.load(Ordering::Acquire) > 0 {
            tokio::task::yield_now().await;
        }
        for append in &mut appends[1..] {
            hand_over(append).await;
        }
        // The group in flight is acknowledged.
        Settle { syncer: &syncer, groups: 1, appends: 64 }.settle();
        for append in appends {
            append.await?;
        }
        let log: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await?;
        assert_eq!(log.len(), 10);
        assert!(log.iter().all(|e| e.recorded_at == log[0].recorded_at), "one commit group");
        Ok(())
    }
}
