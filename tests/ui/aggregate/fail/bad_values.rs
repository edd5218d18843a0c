use annals::{Aggregate, Event};

#[derive(Event)]
enum AccountEvent {
    Opened,
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

#[derive(Aggregate, Default)]
#[aggregate(command = "AccountCommand", event = AccountEvent, error = Refused, name = account, snapshot_version = 0)]
struct Account {
    open: bool,
}

#[derive(Aggregate, Default)]
#[aggregate(command = (), event = AccountEvent, error, snapshot_version = "2")]
struct Ledger {
    open: bool,
}

fn main() {}
