use annals::Event;

#[derive(Event)]
enum AccountEvent {
    #[event(name = "Opened", name = "Started")]
    Opened,
    #[event(version = 2)]
    #[event(version = 3)]
    Closed,
}

fn main() {}
