//! Read options, and the lazy paging of reads over a store's chunk primitives.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use chrono::{DateTime, Utc};
use futures_core::Stream;
use tokio::sync::{oneshot, watch};
use tracing::Instrument;

use super::{EventStore, StreamView};
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::position::{Position, Version};
use crate::stream_id::StreamId;

/// A lazily read sequence of events. Errors end it.
pub type EventStream<'a> = Pin<Box<dyn Stream<Item = Result<RecordedEvent>> + Send + 'a>>;

/// How many events one page of a read fetches.
const PAGE: usize = 512;

/// Which way a stream is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From older to newer events.
    Forward,
    /// From newer to older events.
    Backward,
}

/// Upper bounds on a read: only events at or before every bound that is set are returned.
///
/// Position and `recorded_at` grow along the log, so a forward read stops at the first event past
/// them. `occurred_at` (business time) need not grow, so it filters: events that occurred after the
/// bound are skipped and the read goes on. Setting `recorded` and `occurred` together asks the
/// bitemporal question "what was true at business time V, as recorded by time K".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Until {
    /// Only events at or before this position.
    pub position: Option<Position>,
    /// Only events recorded at or before this time.
    pub recorded: Option<DateTime<Utc>>,
    /// Only events that occurred at or before this time.
    pub occurred: Option<DateTime<Utc>>,
}

impl Until {
    /// Whether the event satisfies every bound.
    pub fn admits(&self, event: &RecordedEvent) -> bool {
        !self.is_past(event) && self.occurred.is_none_or(|t| event.occurred_at <= t)
    }

    /// Whether the event is past a bound that grows along the log, so no later event can satisfy it.
    pub fn is_past(&self, event: &RecordedEvent) -> bool {
        self.position.is_some_and(|p| event.position > p) || self.recorded.is_some_and(|t| event.recorded_at > t)
    }
}

/// Options of a stream read. Start with [`ReadStream::forward`] or [`ReadStream::backward`].
///
/// ```
/// use annals::{ReadStream, Version};
///
/// // Versions 10 to 19, oldest first.
/// let page = ReadStream::forward().from(Version::new(10)).limit(10);
/// // The last event.
/// let last = ReadStream::backward().limit(1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadStream {
    pub(crate) direction: Direction,
    pub(crate) from: Version,
    pub(crate) limit: Option<usize>,
    pub(crate) until_version: Option<Version>,
    pub(crate) until: Until,
    pub(crate) view: StreamView,
}

impl ReadStream {
    /// From the first event onwards.
    pub fn forward() -> Self {
        ReadStream {
            direction: Direction::Forward,
            from: Version::FIRST,
            limit: None,
            until_version: None,
            until: Until::default(),
            view: StreamView::Current,
        }
    }

    /// From the last event backwards.
    pub fn backward() -> Self {
        ReadStream { direction: Direction::Backward, from: Version::MAX, ..ReadStream::forward() }
    }

    /// Start at this version (inclusive).
    pub fn from(mut self, version: Version) -> Self {
        self.from = version;
        self
    }

    /// Return at most `limit` events.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Only events up to this version (the stream as it was at that version).
    pub fn until_version(mut self, version: Version) -> Self {
        self.until_version = Some(version);
        self
    }

    /// Only events at or before this global position.
    pub fn until_position(mut self, position: Position) -> Self {
        self.until.position = Some(position);
        self
    }

    /// Only events recorded at or before `at` (what the system knew then).
    pub fn until_recorded(mut self, at: DateTime<Utc>) -> Self {
        self.until.recorded = Some(at);
        self
    }

    /// Only events that occurred at or before `at` (business time).
    pub fn until_occurred(mut self, at: DateTime<Utc>) -> Self {
        self.until.occurred = Some(at);
        self
    }

    /// Replaces all time and position bounds.
    pub fn until(mut self, until: Until) -> Self {
        self.until = until;
        self
    }

    /// Which events to show: [`StreamView::Current`] (the default) leaves out what was truncated or
    /// soft-deleted; [`StreamView::History`] shows every event still stored, as time travel does.
    pub fn view(mut self, view: StreamView) -> Self {
        self.view = view;
        self
    }
}

impl Default for ReadStream {
    fn default() -> Self {
        ReadStream::forward()
    }
}

/// Which events of the log a read wants: by event type, by stream prefix (category), or both. An empty
/// list means "any".
///
/// ```
/// use annals::LogFilter;
///
/// let filter = LogFilter::all().event_types(["OrderPlaced", "OrderPaid"]).stream_prefix("order-");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub(crate) event_types: Vec<String>,
    pub(crate) stream_prefixes: Vec<String>,
}

impl LogFilter {
    /// Every event.
    pub fn all() -> Self {
        LogFilter::default()
    }

    /// Only events of one of these types (added to any types already named).
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types.extend(types.into_iter().map(Into::into));
        self
    }

    /// Only events of streams whose name starts with one of the prefixes given so far, e.g. `order-`
    /// for the `order` category.
    pub fn stream_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.stream_prefixes.push(prefix.into());
        self
    }

    /// Whether the filter admits everything.
    pub fn is_all(&self) -> bool {
        self.event_types.is_empty() && self.stream_prefixes.is_empty()
    }

    /// Whether an event of `event_type` in `stream` passes.
    pub fn admits(&self, stream: &str, event_type: &str) -> bool {
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
            && (self.stream_prefixes.is_empty() || self.stream_prefixes.iter().any(|p| stream.starts_with(p.as_str())))
    }
}

/// Options of a log read. Start with [`ReadLog::from_start`] or [`ReadLog::from`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadLog {
    pub(crate) from: Position,
    pub(crate) limit: Option<usize>,
    pub(crate) filter: LogFilter,
    pub(crate) until: Until,
}

impl ReadLog {
    /// From the first event.
    pub fn from_start() -> Self {
        ReadLog::from(Position::FIRST)
    }

    /// From this position (inclusive).
    pub fn from(position: Position) -> Self {
        ReadLog { from: position, ..ReadLog::default() }
    }

    /// Return at most `limit` events.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Only events the filter admits.
    pub fn filter(mut self, filter: LogFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Only events at or before this position.
    pub fn until_position(mut self, position: Position) -> Self {
        self.until.position = Some(position);
        self
    }

    /// Only events recorded at or before `at`.
    pub fn until_recorded(mut self, at: DateTime<Utc>) -> Self {
        self.until.recorded = Some(at);
        self
    }

    /// Only events that occurred at or before `at` (business time).
    pub fn until_occurred(mut self, at: DateTime<Utc>) -> Self {
        self.until.occurred = Some(at);
        self
    }

    /// Replaces all time and position bounds.
    pub fn until(mut self, until: Until) -> Self {
        self.until = until;
        self
    }
}

/// One page of a log read: the events found, and where to go on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogChunk {
    /// The events the filter admitted, in log order.
    pub events: Vec<RecordedEvent>,
    /// The first position not looked at yet: where the next page starts.
    pub next: Position,
    /// Whether `next` is past the head, so there is nothing more to read for now.
    pub end: bool,
}

/// A watch on the head position of a store.
///
/// ```
/// use annals::{EventStore, ExpectedVersion, MemoryStore, NewEvent, Position, StreamId};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = MemoryStore::new();
/// let mut head = store.watch_head();
/// let writer = store.clone();
/// tokio::spawn(async move {
///     let stream = StreamId::new("s-1")?;
///     writer.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("Ping", "{}")]).await
/// });
/// assert_eq!(head.wait_past(Position::ZERO).await?, Position::new(1));
/// # Ok::<(), annals::Error>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct HeadWatch(watch::Receiver<Position>);

impl HeadWatch {
    /// Wraps the receiving side of a store's head channel.
    pub fn new(receiver: watch::Receiver<Position>) -> Self {
        HeadWatch(receiver)
    }

    /// The head now.
    pub fn current(&self) -> Position {
        *self.0.borrow()
    }

    /// Waits, without polling, until the head is past `position`, and returns the head then.
    ///
    /// # Errors
    /// [`Error::Closed`] when the store was closed first.
    pub async fn wait_past(&mut self, position: Position) -> Result<Position> {
        match self.0.wait_for(|head| *head > position).await {
            Ok(head) => Ok(*head),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Waits until the head moves, and returns the new head.
    ///
    /// # Errors
    /// [`Error::Closed`] when the store was closed first.
    pub async fn changed(&mut self) -> Result<Position> {
        self.0.changed().await.map_err(|_| Error::Closed)?;
        Ok(*self.0.borrow_and_update())
    }
}

struct StreamPager<'a, S: ?Sized> {
    store: &'a S,
    stream: &'a StreamId,
    options: ReadStream,
    next: Option<Version>,
    buffer: VecDeque<RecordedEvent>,
    remaining: usize,
}

/// The lazy stream behind [`EventStore::read_stream`].
pub(crate) fn stream_pages<'a, S>(store: &'a S, stream: &'a StreamId, options: ReadStream) -> EventStream<'a>
where
    S: EventStore + ?Sized,
{
    let mut from = options.from;
    if options.direction == Direction::Backward {
        if let Some(until) = options.until_version {
            from = from.min(until);
        }
    }
    let remaining = options.limit.unwrap_or(usize::MAX);
    let pager = StreamPager { store, stream, options, next: Some(from), buffer: VecDeque::new(), remaining };
    Box::pin(futures_util::stream::try_unfold(pager, |mut pager| async move {
        loop {
            if pager.remaining == 0 {
                return Ok(None);
            }
            if let Some(event) = pager.buffer.pop_front() {
                let forward = pager.options.direction == Direction::Forward;
                let past_version = pager.options.until_version.is_some_and(|v| event.version > v);
                if forward && (past_version || pager.options.until.is_past(&event)) {
                    return Ok(None);
                }
                if past_version || !pager.options.until.admits(&event) {
                    continue;
                }
                pager.remaining -= 1;
                return Ok(Some((event, pager)));
            }
            let Some(from) = pager.next else { return Ok(None) };
            // Fetch no more than the read can still return: a short bounded read reads only its events.
            let mut max = PAGE.min(pager.remaining);
            if let (Direction::Forward, Some(until)) = (pager.options.direction, pager.options.until_version) {
                let left = until.get().saturating_sub(from.get()).saturating_add(1);
                max = max.min(usize::try_from(left).unwrap_or(usize::MAX));
            }
            if max == 0 {
                return Ok(None);
            }
            // One trace span per page fetched, not per event: cheap when nothing listens. For a
            // stream, `annals.position.from` is the version the page starts at.
            let span = tracing::trace_span!(
                "annals.read_stream",
                annals.stream = pager.stream.as_str(),
                annals.position.from = from.get(),
                annals.events = tracing::field::Empty,
            );
            let page = pager
                .store
                .read_stream_chunk(pager.stream, from, pager.options.direction, max, pager.options.view)
                .instrument(span.clone())
                .await?;
            span.record("annals.events", page.len());
            pager.next = match (page.last(), pager.options.direction) {
                (None, _) => None,
                (Some(last), Direction::Forward) => Some(last.version.next()),
                (Some(last), Direction::Backward) => {
                    last.version.get().checked_sub(1).filter(|v| *v > 0).map(Version::new)
                }
            };
            pager.buffer.extend(page);
        }
    }))
}

/// The log reads of a store that answers them synchronously, on the calling thread (sled): a
/// cursor runs them on a blocking thread, one page ahead of its consumer. Not public API: it may
/// change in any release. A store offers it through [`EventStore::blocking_log_reads`]; a wrapper
/// store that changes what reads return must not pass its inner store's on as they are: it wraps them
/// to return what its own reads return (as [`Upcasting`](crate::Upcasting) does), or offers none.
#[doc(hidden)]
pub trait BlockingLogReads: Send + Sync {
    /// [`EventStore::read_log_chunk`], run on the calling thread. The events are decoded into the
    /// storage of `reuse`'s (events handed back, whose strings are reused) as far as there are some.
    /// Once `stop` is set, the read may end early with any answer: nobody waits for it any more.
    ///
    /// # Errors
    /// As [`EventStore::read_log_chunk`].
    fn read_log_chunk_blocking(
        &self,
        from: Position,
        max: usize,
        filter: &LogFilter,
        reuse: Vec<RecordedEvent>,
        stop: &AtomicBool,
    ) -> Result<LogChunk>;
}

/// The one loop that pages through the log: where the next page starts, and when the log has been
/// read to its head. [`read_log`](EventStore::read_log), the consumers' follower and replays all read
/// the log through it. `D` is how the store is held: `&S` for a borrowed read, `Arc<S>` for a task.
///
/// On a store whose reads block (sled, see [`BlockingLogReads`]), the cursor reads the next page on
/// a blocking thread while its consumer handles the page it was given, so that a replay uses two
/// cores. It reads one page ahead, never more, and only once the consumer has asked for a page that
/// did not reach the head; the pages come in order, and an error is given where the page that met it
/// would have been. Dropping the cursor stops that read and waits until it has let go of the store.
#[derive(Debug)]
pub(crate) struct LogCursor<D> {
    store: D,
    /// The first position not read yet.
    next: Position,
    filter: Arc<LogFilter>,
    /// The page from `next` on, being read ahead.
    ahead: Option<ReadAhead>,
    /// Events the consumer handed back: the next read ahead decodes into their storage.
    spare: Vec<RecordedEvent>,
    /// Where the consumer stops: no page past this position is read ahead.
    last: Option<Position>,
    /// How many more events the consumer takes: a page that holds them is not followed by a read ahead.
    wanted: usize,
}

impl<D, S> LogCursor<D>
where
    D: std::ops::Deref<Target = S>,
    S: EventStore + ?Sized,
{
    /// A cursor at `from` (inclusive; position 0 reads as the first).
    pub(crate) fn new(store: D, from: Position, filter: LogFilter) -> Self {
        LogCursor {
            store,
            next: from.max(Position::FIRST),
            filter: Arc::new(filter),
            ahead: None,
            spare: Vec::new(),
            last: None,
            wanted: usize::MAX,
        }
    }

    /// The first position not read yet.
    pub(crate) fn next(&self) -> Position {
        self.next
    }

    /// Every position before this one has been read.
    pub(crate) fn through(&self) -> Position {
        Position::new(self.next.get() - 1)
    }

    /// Tells the cursor where its consumer stops: after position `last`, or after `events` more
    /// events. No page past that is read ahead (the consumer may still read it).
    pub(crate) fn stops_at(&mut self, last: Option<Position>, events: usize) {
        self.last = last;
        self.wanted = events;
    }

    /// Hands back the events of a page the consumer is done with: the next read ahead decodes into
    /// their storage instead of allocating. At most one page is kept.
    pub(crate) fn recycle(&mut self, mut events: Vec<RecordedEvent>) {
        if self.ahead.is_some() && self.spare.is_empty() {
            events.truncate(PAGE);
            self.spare = events;
        }
    }

    /// Reads the next page of at most `PAGE` events the filter admits and moves past everything it
    /// looked at. The chunk's `end` says whether the read reached the head as it was then; a store
    /// that answers without moving forward is taken as at its end, so a read never spins. Cancel-safe:
    /// nothing changes until the page is in (a page being read ahead stays so).
    pub(crate) async fn read_page(&mut self) -> Result<LogChunk> {
        let from = self.next;
        let read_ahead = match &mut self.ahead {
            Some(ahead) if ahead.from == from => ahead.answer().await,
            _ => None,
        };
        self.ahead = None;
        let mut chunk = match read_ahead {
            Some(chunk) => chunk?,
            // Nothing read ahead, or the read ahead ended without an answer: read here.
            None => {
                let span = read_span(from);
                let chunk = self.store.read_log_chunk(from, PAGE, &self.filter).instrument(span.clone()).await?;
                span.record("annals.events", chunk.events.len());
                chunk
            }
        };
        if chunk.next <= from {
            chunk.end = true;
        }
        self.next = chunk.next.max(from);
        if !chunk.end {
            self.read_ahead(chunk.events.len());
        }
        Ok(chunk)
    }

    /// Starts reading the page from `next` on a blocking thread, if the store's reads block, there is
    /// a tokio runtime to run it, and the consumer will want that page.
    fn read_ahead(&mut self, events_given: usize) {
        if self.last.is_some_and(|last| self.next > last) || self.wanted <= events_given {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let Some(reader) = self.store.blocking_log_reads() else { return };
        let reuse = std::mem::take(&mut self.spare);
        self.ahead = Some(ReadAhead::start(&runtime, reader, self.next, Arc::clone(&self.filter), reuse));
    }
}

/// One trace span per page fetched, not per event: cheap when nothing listens.
fn read_span(from: Position) -> tracing::Span {
    tracing::trace_span!("annals.read_log", annals.position.from = from.get(), annals.events = tracing::field::Empty)
}

/// A page being read on a blocking thread.
#[derive(Debug)]
struct ReadAhead {
    from: Position,
    shared: Arc<Shared>,
    answer: oneshot::Receiver<Result<LogChunk>>,
}

/// What a read ahead shares with the cursor that started it.
struct Shared {
    /// Set when the cursor no longer waits for the answer.
    stop: AtomicBool,
    /// The store's reads, held by the read while it runs; taken by the cursor when it lets the read go,
    /// so that a read that has not begun never begins.
    reads: Mutex<Option<Arc<dyn BlockingLogReads>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("stop", &self.stop).finish_non_exhaustive()
    }
}

impl ReadAhead {
    fn start(
        runtime: &tokio::runtime::Handle,
        reads: Arc<dyn BlockingLogReads>,
        from: Position,
        filter: Arc<LogFilter>,
        reuse: Vec<RecordedEvent>,
    ) -> Self {
        let shared = Arc::new(Shared { stop: AtomicBool::new(false), reads: Mutex::new(Some(reads)) });
        let (send, answer) = oneshot::channel();
        // Created here, so that its parent is the consumer's span.
        let span = read_span(from);
        let task = Arc::clone(&shared);
        // Not joined: the cursor waits for the read through `shared` when it lets it go.
        drop(runtime.spawn_blocking(move || {
            let held = task.reads.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(reads) = held.as_ref() else { return };
            let chunk = span.in_scope(|| reads.read_log_chunk_blocking(from, PAGE, &filter, reuse, &task.stop));
            if let Ok(chunk) = &chunk {
                span.record("annals.events", chunk.events.len());
            }
            drop(span);
            // Done with the store before answering: once the answer is in, the cursor never waits.
            drop(held);
            let _ = send.send(chunk);
        }));
        ReadAhead { from, shared, answer }
    }

    /// The page, once read; `None` when the read ended without one (its thread was shut down).
    /// Cancel-safe: the answer stays until it is taken.
    async fn answer(&mut self) -> Option<Result<LogChunk>> {
        (&mut self.answer).await.ok()
    }
}

impl Drop for ReadAhead {
    /// Stops the read and waits until it has let go of the store's reads: a read under way ends at
    /// its next record, and one not begun yet never begins. Once a cursor is gone, nothing of it
    /// reads the store any more (the store can be closed and opened again at once).
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let reads = self.shared.reads.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(reads);
    }
}

/// The lazy stream behind [`EventStore::read_log`]: it hands out buffered events synchronously and
/// creates a future only to fetch the next page, so replays pay per page, not per event.
struct LogPages<'a, S: ?Sized> {
    /// The cursor while no page is being fetched; `None` once the end (or an error) was reached.
    cursor: Option<LogCursor<&'a S>>,
    until: Until,
    buffer: std::vec::IntoIter<RecordedEvent>,
    remaining: usize,
    /// A page being fetched: the future owns the cursor and gives it back with the page.
    fetching: Option<Pin<Box<dyn Future<Output = PageRead<'a, S>> + Send + 'a>>>,
}

/// A fetched page with the cursor that read it.
type PageRead<'a, S> = (LogCursor<&'a S>, Result<LogChunk>);

/// The lazy stream behind [`EventStore::read_log`].
pub(crate) fn log_pages<S>(store: &S, options: ReadLog) -> EventStream<'_>
where
    S: EventStore + ?Sized,
{
    Box::pin(LogPages {
        cursor: Some(LogCursor::new(store, options.from, options.filter)),
        until: options.until,
        buffer: Vec::new().into_iter(),
        remaining: options.limit.unwrap_or(usize::MAX),
        fetching: None,
    })
}

impl<S: EventStore + ?Sized> Stream for LogPages<'_, S> {
    type Item = Result<RecordedEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.remaining == 0 {
                return Poll::Ready(None);
            }
            if let Some(event) = this.buffer.next() {
                if this.until.is_past(&event) {
                    this.remaining = 0;
                    return Poll::Ready(None);
                }
                if this.until.admits(&event) {
                    this.remaining -= 1;
                    return Poll::Ready(Some(Ok(event)));
                }
                continue;
            }
            let fetching = match &mut this.fetching {
                Some(fetching) => fetching,
                None => {
                    let Some(mut cursor) = this.cursor.take() else { return Poll::Ready(None) };
                    if this.until.position.is_some_and(|p| cursor.next() > p) {
                        return Poll::Ready(None);
                    }
                    cursor.stops_at(this.until.position, this.remaining);
                    this.fetching.insert(Box::pin(async move {
                        let page = cursor.read_page().await;
                        (cursor, page)
                    }))
                }
            };
            let (cursor, chunk) = match fetching.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(read) => read,
            };
            this.fetching = None;
            match chunk {
                Ok(chunk) => {
                    this.cursor = (!chunk.end).then_some(cursor);
                    this.buffer = chunk.events.into_iter();
                }
                Err(error) => {
                    // An error ends the stream, as with any `TryStream` built by `try_unfold`.
                    this.remaining = 0;
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }
}
