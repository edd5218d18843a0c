use annals::Event;

#[derive(Event)]
#[event(version = "2")]
enum AccountEvent {
    #[event(name = Opened)]
    Opened,
    #[event(version = 0)]
    Deposited,
    #[event(version = 2u64)]
    Withdrawn,
    #[event(version = 4294967296)]
    Closed,
    #[event(version = -1)]
    Reopened,
}

fn main() {}
