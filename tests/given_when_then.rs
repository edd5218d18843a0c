//! The given / when / then harness: it passes on the right outcome, and on a wrong one it fails
//! with a message that shows the history, the command, what was expected and what happened.

#![allow(clippy::panic)] // failing the test with the unexpected outcome is the point

use std::panic::{catch_unwind, AssertUnwindSafe};

use annals::testing::given;
use annals::{Aggregate, Event};

#[derive(Event, Debug, PartialEq)]
enum DoorEvent {
    Opened,
    Closed,
}

#[derive(Debug, PartialEq)]
enum DoorCommand {
    Open,
    Close,
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum DoorError {
    #[error("the door is already open")]
    AlreadyOpen,
    #[error("the door is already closed")]
    AlreadyClosed,
}

#[derive(Aggregate, Default)]
#[aggregate(command = DoorCommand, event = DoorEvent, error = DoorError)]
struct Door {
    open: bool,
}

impl Door {
    fn handle(&self, command: DoorCommand) -> Result<Vec<DoorEvent>, DoorError> {
        match (command, self.open) {
            (DoorCommand::Open, true) => Err(DoorError::AlreadyOpen),
            (DoorCommand::Open, false) => Ok(vec![DoorEvent::Opened]),
            (DoorCommand::Close, false) => Err(DoorError::AlreadyClosed),
            (DoorCommand::Close, true) => Ok(vec![DoorEvent::Closed]),
        }
    }

    fn apply(&mut self, event: &DoorEvent) {
        self.open = *event == DoorEvent::Opened;
    }
}

fn failure_message(test: impl FnOnce()) -> String {
    match catch_unwind(AssertUnwindSafe(test)) {
        Ok(()) => panic!("the harness should have failed"),
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
    }
}

#[test]
fn the_right_outcome_passes_and_returns_the_new_state() {
    let door = given::<Door>([DoorEvent::Opened, DoorEvent::Closed]).when(DoorCommand::Open).then([DoorEvent::Opened]);
    assert!(door.open);
    given::<Door>([DoorEvent::Opened]).when(DoorCommand::Open).then_error(DoorError::AlreadyOpen);
    let outcome = given::<Door>([]).when(DoorCommand::Close).outcome();
    assert_eq!(outcome, Err(DoorError::AlreadyClosed));
}

#[test]
fn wrong_events_fail_with_history_command_expected_and_actual() {
    let message = failure_message(|| {
        given::<Door>([DoorEvent::Opened]).when(DoorCommand::Close).then([DoorEvent::Opened]);
    });
    assert_eq!(
        message,
        "given:\n    1. Opened\nwhen: Close\nexpected events:\n    1. Opened\nbut got events:\n    1. Closed"
    );
}

#[test]
fn an_unexpected_error_fails_with_the_error() {
    let message = failure_message(|| {
        given::<Door>([]).when(DoorCommand::Close).then([DoorEvent::Closed]);
    });
    assert!(message.ends_with("but got error: the door is already closed"), "{message}");
    assert!(message.starts_with("given: (none)\nwhen: Close\n"), "{message}");
}

#[test]
fn a_missing_error_fails_with_the_events_instead() {
    let message = failure_message(|| {
        given::<Door>([]).when(DoorCommand::Open).then_error(DoorError::AlreadyOpen);
    });
    assert!(message.contains("expected error: the door is already open (AlreadyOpen)"), "{message}");
    assert!(message.ends_with("but got events:\n    1. Opened"), "{message}");
}
