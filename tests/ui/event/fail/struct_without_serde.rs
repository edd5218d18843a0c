use annals::Event;

#[derive(Event)]
struct OrderPlaced {
    item: String,
}

fn main() {}
