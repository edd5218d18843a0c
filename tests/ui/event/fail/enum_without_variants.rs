use annals::Event;

#[derive(Event)]
enum Nothing {}

fn main() {}
