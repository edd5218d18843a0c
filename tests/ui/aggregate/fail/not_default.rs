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
struct Account {
    open: bool,
}

impl Account {
    fn handle(&self, _: ()) -> Result<Vec<AccountEvent>, Refused> {
        Ok(vec![AccountEvent::Opened])
    }

    fn apply(&mut self, _: &AccountEvent) {
        self.open = true;
    }
}

fn main() {}
