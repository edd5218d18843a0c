//! Following the log: catch up from a position, then go live, without a gap or a duplicate at the
//! switch. The building block of subscriptions and projections.

use std::collections::VecDeque;
use std::pin::Pin;

use futures_core::Stream;

use crate::envelope::RecordedEvent;
use crate::error::Result;
use crate::position::Position;
use crate::store::{EventStore, HeadWatch, LogCursor, LogFilter};

/// Whether a delivered event was already in the log when the follower reached it (catch-up, a
/// replay) or arrived while it was waiting at the head (live). Handlers with side effects (emails,
/// payments) can skip catch-up deliveries during a rebuild.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Read while catching up on events that were already stored.
    CatchUp,
    /// Read after the follower had caught up and waited for new events.
    Live,
}

/// One item of a [`follow`] stream.
#[derive(Clone, Debug, PartialEq, Eq)]
// Nearly every delivery is an event: boxing it to shrink the one-off marker would cost an allocation
// per event.
#[allow(clippy::large_enum_variant)]
pub enum Delivery {
    /// An event the filter admits, in log order.
    Event {
        /// The event.
        event: RecordedEvent,
        /// Catch-up or live.
        phase: Phase,
    },
    /// Sent once, when the follower has read everything up to the head and starts waiting: every
    /// event before comes from catch-up, every event after is live.
    CaughtUp {
        /// The head the follower caught up with.
        position: Position,
    },
}

/// A never-ending stream of [`Delivery`]s; it ends only with an error (for example
/// [`Error::Closed`](crate::Error::Closed) when the store closes).
pub type DeliveryStream<'a> = Pin<Box<dyn Stream<Item = Result<Delivery>> + Send + 'a>>;

/// Follows the log from position `from` (inclusive), delivering the events `filter` admits: first
/// those already stored (catch-up), then a [`Delivery::CaughtUp`] marker, then new events as they are
/// acknowledged (live), waiting on the store's [`HeadWatch`] without polling.
///
/// Positions are read in order, page by page, so no event is skipped or delivered twice, also at
/// the switch from catch-up to live and while other tasks append. Catch-up ends when a read reaches
/// the head as it is then; events appended during catch-up are caught up on too.
///
/// ```
/// use annals::{follow, Delivery, EventStore, ExpectedVersion, LogFilter, MemoryStore, NewEvent, Phase, Position, StreamId};
/// use futures_util::StreamExt;
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = MemoryStore::new();
/// let stream = StreamId::new("order-1")?;
/// store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("OrderPlaced", "{}")]).await?;
///
/// let mut deliveries = follow(&store, Position::FIRST, LogFilter::all());
/// assert!(matches!(deliveries.next().await, Some(Ok(Delivery::Event { phase: Phase::CatchUp, .. }))));
/// assert!(matches!(deliveries.next().await, Some(Ok(Delivery::CaughtUp { .. }))));
///
/// store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("OrderPaid", "{}")]).await?;
/// match deliveries.next().await {
///     Some(Ok(Delivery::Event { event, phase })) => {
///         assert_eq!((event.event_type.as_str(), phase), ("OrderPaid", Phase::Live));
///     }
///     other => panic!("expected a live event, got {other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn follow<S>(store: &S, from: Position, filter: LogFilter) -> DeliveryStream<'_>
where
    S: EventStore + ?Sized,
{
    let follower = Follower::new(store, from, filter);
    // The events of the page being delivered, with their phase, then the caught-up marker if that page
    // ended catch-up.
    let state = (follower, VecDeque::new(), None);
    Box::pin(futures_util::stream::try_unfold(state, |(mut follower, mut buffer, mut marker)| async move {
        loop {
            if let Some((event, phase)) = buffer.pop_front() {
                return Ok(Some((Delivery::Event { event, phase }, (follower, buffer, marker))));
            }
            if let Some(position) = marker.take() {
                return Ok(Some((Delivery::CaughtUp { position }, (follower, buffer, marker))));
            }
            let batch = follower.next_batch().await?;
            buffer.extend(batch.events.into_iter().map(|event| (event, batch.phase)));
            marker = batch.caught_up.then_some(batch.through);
        }
    }))
}

/// What one read of a [`Follower`] brought.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The events the filter admits, in log order (possibly none).
    pub(crate) events: Vec<RecordedEvent>,
    /// Every position up to this one has been read: the events above, and the ones the filter left out.
    pub(crate) through: Position,
    /// Whether `events` were already stored when catch-up began or arrived while waiting live.
    pub(crate) phase: Phase,
    /// Set on the one batch that ends catch-up: it reached the head, and later batches are live.
    pub(crate) caught_up: bool,
}

/// Reads the log in order from a position, page by page (through the store's one paging loop,
/// [`LogCursor`]), waiting on the head once it has caught up. `D` is how the store is held: `&S` for a
/// borrowed stream, `Arc<S>` for a task.
pub(crate) struct Follower<D> {
    cursor: LogCursor<D>,
    head: HeadWatch,
    phase: Phase,
}

impl<D, S> Follower<D>
where
    D: std::ops::Deref<Target = S>,
    S: EventStore + ?Sized,
{
    pub(crate) fn new(store: D, from: Position, filter: LogFilter) -> Self {
        let head = store.watch_head();
        Follower { cursor: LogCursor::new(store, from, filter), head, phase: Phase::CatchUp }
    }

    /// Every position before this one has been read.
    pub(crate) fn through(&self) -> Position {
        self.cursor.through()
    }

    /// Hands back the events of a batch the consumer is done with, for the next read ahead to decode
    /// into (see [`LogCursor::recycle`]).
    pub(crate) fn recycle(&mut self, events: Vec<RecordedEvent>) {
        self.cursor.recycle(events);
    }

    /// Reads the next page; once live, first waits until an append is acknowledged past what was read.
    /// Cancel-safe: nothing changes until the page is in.
    pub(crate) async fn next_batch(&mut self) -> Result<Batch> {
        let phase = self.phase;
        if phase == Phase::Live {
            self.head.wait_past(self.through()).await?;
        }
        let chunk = self.cursor.read_page().await?;
        let caught_up = phase == Phase::CatchUp && chunk.end;
        if caught_up {
            self.phase = Phase::Live;
        }
        Ok(Batch { events: chunk.events, through: self.through(), phase, caught_up })
    }
}
