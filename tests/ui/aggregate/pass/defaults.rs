//! The default name (snake case) and snapshot version; the trait in scope does not hijack the calls.
use annals::{Aggregate, Event};

#[derive(Event, Debug, PartialEq)]
enum CounterEvent {
    Incremented(u32),
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("too much")]
struct TooMuch;

#[derive(Aggregate, Default)]
#[aggregate(command = u32, event = CounterEvent, error = TooMuch)]
struct HTTPRequestCounter {
    value: u32,
}

impl HTTPRequestCounter {
    fn handle(&self, by: u32) -> Result<Vec<CounterEvent>, TooMuch> {
        self.value.checked_add(by).ok_or(TooMuch)?;
        Ok(vec![CounterEvent::Incremented(by)])
    }

    fn apply(&mut self, event: &CounterEvent) {
        let CounterEvent::Incremented(by) = event;
        self.value += by;
    }
}

fn main() {
    assert_eq!(HTTPRequestCounter::TYPE, "http_request_counter");
    assert_eq!(HTTPRequestCounter::SNAPSHOT_VERSION, 1);
    let mut counter = HTTPRequestCounter::default();
    for event in Aggregate::handle(&counter, 2).unwrap() {
        Aggregate::apply(&mut counter, &event);
    }
    assert_eq!(counter.value, 2);
    counter.value = u32::MAX;
    assert_eq!(Aggregate::handle(&counter, 1), Err(TooMuch));
}
