use annals::Event;

#[derive(Event, serde::Serialize, serde::Deserialize)]
struct Joined {
    #[event(subject)]
    member_id: String,
    email: Option<String>,
}

fn main() {}
