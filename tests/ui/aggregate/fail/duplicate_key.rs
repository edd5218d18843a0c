use annals::{Aggregate, Event};

#[derive(Event)]
enum AccountEvent {
    Opened,
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

#[derive(Aggregate, Default)]
#[aggregate(command = (), event = AccountEvent, error = Refused, command = u8)]
#[aggregate(name = "account", name = "ledger")]
struct Account {
    open: bool,
}

fn main() {}
