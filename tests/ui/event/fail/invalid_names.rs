use annals::Event;

#[derive(Event)]
enum AccountEvent {
    #[event(name = "")]
    Empty,
    #[event(name = "line\nbreak")]
    Control,
    #[event(name = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")]
    TooLong,
}

#[derive(Event, serde::Serialize, serde::Deserialize)]
#[event(name = "tab\tinside")]
struct Tabbed;

fn main() {}
