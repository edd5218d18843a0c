use annals::{Aggregate, Event};

#[derive(Event)]
enum AccountEvent {
    Opened,
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

#[derive(Aggregate, Default)]
#[aggregate(command = (), name = "account")]
struct Account {
    open: bool,
}

#[derive(Aggregate, Default)]
#[aggregate(command = (), event = AccountEvent)]
struct Ledger {
    open: bool,
}

fn main() {}
