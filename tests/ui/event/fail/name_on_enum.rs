use annals::Event;

#[derive(Event)]
#[event(name = "AccountEvent")]
enum AccountEvent {
    Opened,
}

fn main() {}
