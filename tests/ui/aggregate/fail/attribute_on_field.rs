use annals::{Aggregate, Event};

#[derive(Event)]
enum AccountEvent {
    Opened,
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

#[derive(Aggregate, Default)]
#[aggregate(command = (), event = AccountEvent, error = Refused)]
struct Account {
    #[aggregate(name = "account")]
    open: bool,
}

#[derive(Aggregate, Default)]
#[aggregate(command = (), event = AccountEvent, error = Refused)]
enum Ledger {
    #[default]
    #[aggregate(snapshot_version = 2)]
    Empty,
}

fn main() {}
