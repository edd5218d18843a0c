use annals::Event;

#[derive(Event)]
enum AccountEvent {
    #[event]
    Opened,
    #[event = "Closed"]
    Closed,
    #[event(name)]
    Reopened,
    #[event(version)]
    Deposited,
}

fn main() {}
