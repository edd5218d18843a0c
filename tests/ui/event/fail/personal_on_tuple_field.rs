use annals::Event;

#[derive(Event)]
enum MemberEvent {
    Joined(#[event(subject)] String, #[event(personal)] Option<String>),
}

#[derive(Event, serde::Serialize, serde::Deserialize)]
struct Renamed(#[event(personal)] Option<String>);

fn main() {}
