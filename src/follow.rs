//! Following the log: catch up from a position, then go live, without a gap or a duplicate at the
//! switch. The building block of subscriptions and projections.

use std::collections::VecDeque;
use std::pin::Pin;

use futures_core::Stream;

use crate::envelope::RecordedEvent;
use crate::error::Result;
use crate::position::Position;
use crate::store::{EventStore, HeadWatch, LogFilter};

/// How many events one read of a follower fetches.
const PAGE: usize = 512;

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
    let follower = Follower {
        store,
        head: store.watch_head(),
        next: from.max(Position::FIRST),
        filter,
        buffer: VecDeque::new(),
        phase: Phase::CatchUp,
    };
    Box::pin(futures_util::stream::try_unfold(follower, |mut follower| async move {
        let delivery = follower.next_delivery().await?;
        Ok(Some((delivery, follower)))
    }))
}

struct Follower<'a, S: ?Sized> {
    store: &'a S,
    head: HeadWatch,
    /// The first position not read yet.
    next: Position,
    filter: LogFilter,
    buffer: VecDeque<RecordedEvent>,
    phase: Phase,
}

impl<S: EventStore + ?Sized> Follower<'_, S> {
    async fn next_delivery(&mut self) -> Result<Delivery> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Ok(Delivery::Event { event, phase: self.phase });
            }
            if self.phase == Phase::Live {
                // Sleeps until an append is acknowledged past what we have read.
                self.head.wait_past(Position::new(self.next.get() - 1)).await?;
            }
            let chunk = self.store.read_log_chunk(self.next, PAGE, &self.filter).await?;
            self.next = chunk.next.max(self.next);
            self.buffer.extend(chunk.events);
            if self.phase == Phase::CatchUp && chunk.end && self.buffer.is_empty() {
                self.phase = Phase::Live;
                return Ok(Delivery::CaughtUp { position: Position::new(self.next.get() - 1) });
            }
        }
    }
}
