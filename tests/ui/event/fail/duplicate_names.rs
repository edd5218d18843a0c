use annals::Event;

#[derive(Event)]
enum AccountEvent {
    Opened,
    #[event(name = "Opened")]
    Reopened,
    Closed,
    #[event(name = "Closed")]
    ClosedAgain,
}

fn main() {}
