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
    open: bool,
}

impl Account {
    fn handle(&self, _: ()) -> Result<Vec<AccountEvent>, Refused> {
        Ok(vec![AccountEvent::Opened])
    }
}

fn main() {}
