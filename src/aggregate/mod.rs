//! The [`Aggregate`] trait: a consistency boundary that decides on commands and evolves by events.

pub(crate) mod repository;
pub(crate) mod snapshot_policy;
pub(crate) mod time_travel;
pub(crate) mod unit_of_work;

use crate::error::Result;
use crate::event::Event;
use crate::stream_id::StreamId;

/// A domain object that handles commands by emitting events, and whose state is the fold of those
/// events.
///
/// `handle` decides: it looks at the current state and a command and returns the events that
/// happen, or a business error (its own type, kept apart from store faults). `apply` evolves: it
/// changes the state by one event, and is pure, synchronous and infallible, because events are facts
/// that already happened. Information from outside (a price, an exchange rate) is looked up before
/// the command is built and travels inside it, so `handle` stays pure and testable
/// ([`guide::design`](crate::guide::design)).
///
/// Derive the glue with `#[derive(Aggregate)]` and write `handle` and `apply` as inherent methods:
///
/// ```
/// use annals::{Aggregate, Event};
///
/// #[derive(Event, Debug, PartialEq)]
/// enum CounterEvent {
///     Incremented { by: u32 },
/// }
///
/// #[derive(Debug, thiserror::Error)]
/// enum CounterError {
///     #[error("the counter would pass its limit")]
///     Overflow,
/// }
///
/// #[derive(Aggregate, Default)]
/// #[aggregate(command = u32, event = CounterEvent, error = CounterError)]
/// struct Counter {
///     value: u32,
/// }
///
/// impl Counter {
///     fn handle(&self, by: u32) -> Result<Vec<CounterEvent>, CounterError> {
///         self.value.checked_add(by).ok_or(CounterError::Overflow)?;
///         Ok(vec![CounterEvent::Incremented { by }])
///     }
///
///     fn apply(&mut self, event: &CounterEvent) {
///         match event {
///             CounterEvent::Incremented { by } => self.value += by,
///         }
///     }
/// }
///
/// assert_eq!(Counter::TYPE, "counter");
/// let mut counter = Counter::default();
/// for event in Aggregate::handle(&counter, 3)? {
///     Aggregate::apply(&mut counter, &event);
/// }
/// assert_eq!(counter.value, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The aggregate type name: the category of its streams (`account` gives `account-<id>`). It
    /// holds no `-`.
    const TYPE: &'static str;

    /// The schema version of this type's snapshots. Bump it when the state's shape changes: older
    /// snapshots are then ignored and the state is rebuilt from events.
    const SNAPSHOT_VERSION: u32 = 1;

    /// What the aggregate is asked to do.
    type Command: Send + 'static;

    /// What happens to it.
    type Event: Event;

    /// Why it refuses a command (a business rule).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides what happens when `command` meets the current state.
    ///
    /// # Errors
    /// The aggregate's own business error when it refuses the command.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Changes the state by one event. Pure, synchronous and infallible.
    fn apply(&mut self, event: &Self::Event);

    /// The stream of the instance called `id`: `<TYPE>-<id>`.
    ///
    /// # Errors
    /// [`Error::InvalidStreamId`](crate::Error::InvalidStreamId) when the name is not a valid stream
    /// name (empty id, too long, control characters).
    fn stream_id(id: &str) -> Result<StreamId> {
        StreamId::new(format!("{}-{}", Self::TYPE, id))
    }
}
