//! Projections: read models built by replaying the log, kept up to date live, rebuilt in a shadow copy.

mod handle;
mod projector;
mod saved;
mod task;

use async_trait::async_trait;

pub use self::handle::ProjectionHandle;
pub use self::projector::Projector;
use crate::consumer::follow::Phase;
use crate::consumer::{occurred_before, HandlerError, Start};
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::store::{EventStore, LogCursor, LogFilter, Until};

/// A read model: it handles the events it asks for, in log order, and is rebuilt by replaying them.
///
/// A projection has a [`name`](Projection::name) (the key of its checkpoint) and a
/// [`version`](Projection::version): bump the version when the code changes what it computes, and the
/// next [`Projector::run`] rebuilds it from the start in a shadow copy. Its
/// [`filter`](Projection::filter) lets the runner skip unwanted events without decoding them.
///
/// `handle` is called once per event for a projection kept in the store with its state
/// ([`Projector::persisted`]: exactly-once), and at least once for one with outside effects
/// ([`Projector::checkpointed`]): after a crash, the events after its last checkpoint come again. The
/// [`Phase`] says whether an event is a replay (catch-up) or live, so side effects can be skipped
/// during replays.
///
/// ```
/// use annals::{HandlerError, LogFilter, Phase, Projection, RecordedEvent};
/// use std::collections::BTreeMap;
///
/// /// How many orders each customer placed.
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct OrdersPerCustomer(BTreeMap<String, u64>);
///
/// #[async_trait::async_trait]
/// impl Projection for OrdersPerCustomer {
///     fn name(&self) -> &str {
///         "orders-per-customer"
///     }
///
///     fn filter(&self) -> LogFilter {
///         LogFilter::all().event_types(["OrderPlaced"])
///     }
///
///     async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
///         #[derive(serde::Deserialize)]
///         struct Placed {
///             customer: String,
///         }
///         let placed: Placed = event.payload_as()?;
///         *self.0.entry(placed.customer).or_default() += 1;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The projection's stable, unique name: its checkpoint is saved under it.
    fn name(&self) -> &str;

    /// The version of what it computes (default 1). A saved projection of another version is rebuilt.
    fn version(&self) -> u32 {
        1
    }

    /// The events it wants (default: all). Others are skipped cheaply, without being decoded.
    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }

    /// Handles one event, in log order. An error stops the projector before the event (its checkpoint
    /// stays before it) with [`Error::Handler`].
    async fn handle(&mut self, event: &RecordedEvent, phase: Phase) -> Result<(), HandlerError>;
}

/// Replays the log into `projection` from `start` up to `until` (inclusive bounds; [`Until::default`]
/// for the head as it is now), and returns it. Nothing is saved and no running projector is touched:
/// this answers "what did the read model look like then?" on a fresh instance.
///
/// ```
/// # use annals::{HandlerError, Phase, Projection, RecordedEvent};
/// # #[derive(Default)]
/// # struct Count(u64);
/// # #[async_trait::async_trait]
/// # impl Projection for Count {
/// #     fn name(&self) -> &str { "count" }
/// #     async fn handle(&mut self, _: &RecordedEvent, _: Phase) -> Result<(), HandlerError> { self.0 += 1; Ok(()) }
/// # }
/// use annals::{replay, EventStore, ExpectedVersion, MemoryStore, NewEvent, Position, Start, StreamId, Until};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = MemoryStore::new();
/// let stream = StreamId::new("order-1")?;
/// for _ in 0..5 {
///     store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("Touched", "{}")]).await?;
/// }
/// let until_3 = Until { position: Some(Position::new(3)), ..Until::default() };
/// let count = replay(&store, Count::default(), Start::Position(Position::new(2)), until_3).await?;
/// assert_eq!(count.0, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::Handler`] when the projection fails on an event; read errors.
pub async fn replay<S, P>(store: &S, mut projection: P, start: Start, until: Until) -> Result<P>
where
    S: EventStore + ?Sized,
    P: Projection,
{
    let (from, occurred_from) = start.resolve(store).await?;
    // A cursor driven to its bound: the store's one paging loop, without per-event stream machinery.
    let mut cursor = LogCursor::new(store, from, projection.filter());
    cursor.stops_at(until.position, usize::MAX);
    loop {
        if until.position.is_some_and(|bound| cursor.next() > bound) {
            return Ok(projection);
        }
        let chunk = cursor.read_page().await?;
        for event in &chunk.events {
            if until.is_past(event) {
                return Ok(projection);
            }
            if !until.admits(event) || occurred_before(event, occurred_from) {
                continue;
            }
            if let Err(source) = projection.handle(event, Phase::CatchUp).await {
                return Err(handler_error(&projection, event, source));
            }
        }
        if chunk.end {
            return Ok(projection);
        }
        cursor.recycle(chunk.events);
    }
}

fn handler_error<P: Projection>(projection: &P, event: &RecordedEvent, source: HandlerError) -> Error {
    Error::Handler { consumer: projection.name().to_owned(), position: event.position, attempts: 1, source }
}
