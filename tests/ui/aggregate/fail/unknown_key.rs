use annals::{Aggregate, Event};

#[derive(Event)]
enum AccountEvent {
    Opened,
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

#[derive(Aggregate, Default)]
#[aggregate(command = (), event = AccountEvent, error = Refused, events = AccountEvent, snapshot = 2)]
struct Account {
    open: bool,
}

fn main() {}
