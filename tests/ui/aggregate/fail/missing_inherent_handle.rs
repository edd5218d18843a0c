use annals::{Aggregate, Event};

#[derive(Event)]
enum AccountEvent {
    Opened,
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

// The trait is in scope, yet the derive does not call `Aggregate::handle` from itself (which would
// recurse forever): a missing inherent `handle` is a compile error.
#[derive(Aggregate, Default)]
#[aggregate(command = (), event = AccountEvent, error = Refused)]
struct Account {
    open: bool,
}

impl Account {
    fn apply(&mut self, _: &AccountEvent) {
        self.open = true;
    }
}

fn main() {}
