use annals::Event;

#[derive(Event)]
enum MemberEvent {
    Joined {
        #[event(subject)]
        member_id: String,
        #[event(personal)]
        #[serde(skip_serializing_if = "Option::is_none")]
        email: Option<String>,
        #[event(personal)]
        #[serde(skip)]
        name: Option<String>,
    },
}

fn main() {}
