use annals::{Aggregate, Event};

#[derive(Event)]
enum AccountEvent {
    Opened,
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

#[derive(Aggregate)]
#[aggregate(command = (), event = AccountEvent, error = Refused)]
union Account {
    open: bool,
}

fn main() {}
