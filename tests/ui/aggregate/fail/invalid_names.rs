use annals::{Aggregate, Event};

#[derive(Event)]
enum AccountEvent {
    Opened,
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

#[derive(Aggregate, Default)]
#[aggregate(command = (), event = AccountEvent, error = Refused, name = "")]
struct Empty;

#[derive(Aggregate, Default)]
#[aggregate(command = (), event = AccountEvent, error = Refused, name = "bank-account")]
struct Dashed;

#[derive(Aggregate, Default)]
#[aggregate(command = (), event = AccountEvent, error = Refused, name = "bank\naccount")]
struct Control;

#[derive(Aggregate, Default)]
#[aggregate(command = (), event = AccountEvent, error = Refused, name = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")]
struct TooLong;

fn main() {
    // The stand-in impl keeps uses of the type from adding errors of their own.
    let _ = <Dashed as Aggregate>::stream_id("7");
}
