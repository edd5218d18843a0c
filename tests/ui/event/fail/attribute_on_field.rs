use annals::Event;

#[derive(Event)]
enum AccountEvent {
    Opened {
        #[event(version = 2)]
        owner: String,
    },
}

#[derive(Event, serde::Serialize, serde::Deserialize)]
struct Closed(#[event(name = "x")] u8);

fn main() {}
