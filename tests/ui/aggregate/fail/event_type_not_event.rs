use annals::{Aggregate, Event};

#[derive(Event)]
enum AccountEvent {
    Opened,
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

#[derive(Aggregate, Default)]
#[aggregate(command = (), event = String, error = Refused)]
struct Account {
    open: bool,
}

impl Account {
    fn handle(&self, _: ()) -> Result<Vec<String>, Refused> {
        Ok(vec![])
    }

    fn apply(&mut self, _: &String) {
        self.open = true;
    }
}

fn main() {}
