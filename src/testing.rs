//! Given / when / then tests for aggregates, without a store.
//!
//! ```
//! use annals::testing::given;
//! use annals::{Aggregate, Event};
//!
//! #[derive(Event, Debug, PartialEq)]
//! enum LampEvent {
//!     SwitchedOn,
//! }
//!
//! #[derive(Debug, PartialEq, thiserror::Error)]
//! enum LampError {
//!     #[error("the lamp is already on")]
//!     AlreadyOn,
//! }
//!
//! #[derive(Aggregate, Default)]
//! #[aggregate(command = (), event = LampEvent, error = LampError)]
//! struct Lamp {
//!     on: bool,
//! }
//!
//! impl Lamp {
//!     fn handle(&self, _: ()) -> Result<Vec<LampEvent>, LampError> {
//!         if self.on { Err(LampError::AlreadyOn) } else { Ok(vec![LampEvent::SwitchedOn]) }
//!     }
//!     fn apply(&mut self, _: &LampEvent) {
//!         self.on = true;
//!     }
//! }
//!
//! given::<Lamp>([]).when(()).then([LampEvent::SwitchedOn]);
//! given::<Lamp>([LampEvent::SwitchedOn]).when(()).then_error(LampError::AlreadyOn);
//! ```

use std::fmt::{Debug, Write};

use crate::aggregate::Aggregate;

/// Starts a test: the aggregate has seen `events` (applied in order to `A::default()`).
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let mut state = A::default();
    let history: Vec<_> = events.into_iter().collect();
    for event in &history {
        state.apply(event);
    }
    Given { state, history }
}

/// An aggregate with a history, waiting for a command.
#[derive(Debug)]
pub struct Given<A: Aggregate> {
    state: A,
    history: Vec<A::Event>,
}

impl<A: Aggregate> Given<A> {
    /// Runs `command` against the aggregate.
    pub fn when(self, command: A::Command) -> When<A>
    where
        A::Command: Debug,
    {
        let description = format!("{command:?}");
        let outcome = self.state.handle(command);
        When { state: self.state, history: self.history, command: description, outcome }
    }
}

/// The outcome of a command, to be checked.
#[derive(Debug)]
pub struct When<A: Aggregate> {
    state: A,
    history: Vec<A::Event>,
    command: String,
    outcome: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> When<A>
where
    A::Event: Debug + PartialEq,
{
    /// Asserts that the command produced exactly `expected`, in order, and returns the state after
    /// applying them (for further assertions).
    ///
    /// # Panics
    /// When it did not, with the history, the command and both event lists.
    #[allow(clippy::panic)] // a test assertion, like assert_eq!
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<_> = expected.into_iter().collect();
        match self.outcome {
            Ok(ref events) if *events == expected => {
                let mut state = self.state;
                for event in events {
                    state.apply(event);
                }
                state
            }
            Ok(ref events) => {
                let got = format!("events:{}", list(events));
                panic!("{}", report(&self.history, &self.command, "events", &expected, &got))
            }
            Err(ref error) => {
                panic!("{}", report(&self.history, &self.command, "events", &expected, &format!("error: {error}")))
            }
        }
    }

    /// Asserts that the command was refused with `expected`.
    ///
    /// # Panics
    /// When it was not, with the history, the command and what happened instead.
    #[allow(clippy::panic)] // a test assertion, like assert_eq!
    #[track_caller]
    pub fn then_error(self, expected: A::Error)
    where
        A::Error: PartialEq,
    {
        let got = match &self.outcome {
            Err(error) if *error == expected => return,
            Err(error) => format!("error: {error} ({error:?})"),
            Ok(events) => format!("events:{}", list(events)),
        };
        let wanted = format!("error: {expected} ({expected:?})");
        panic!("{}", report::<A::Event>(&self.history, &self.command, &wanted, &[], &got));
    }

    /// The raw outcome, for checks the other methods do not cover.
    pub fn outcome(self) -> Result<Vec<A::Event>, A::Error> {
        self.outcome
    }
}

fn list<E: Debug>(events: &[E]) -> String {
    if events.is_empty() {
        return " (none)".to_owned();
    }
    let mut out = String::new();
    for (i, event) in events.iter().enumerate() {
        let _ = write!(out, "\n    {}. {event:?}", i + 1);
    }
    out
}

fn report<E: Debug>(history: &[E], command: &str, wanted: &str, expected: &[E], got: &str) -> String {
    let expected = if wanted == "events" { format!("events:{}", list(expected)) } else { wanted.to_owned() };
    format!("given:{}\nwhen: {command}\nexpected {expected}\nbut got {got}", list(history))
}
