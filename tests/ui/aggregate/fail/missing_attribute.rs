use annals::{Aggregate, Event};

#[derive(Event)]
enum AccountEvent {
    Opened,
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

#[derive(Aggregate, Default)]
struct Account {
    open: bool,
}

fn main() {}
