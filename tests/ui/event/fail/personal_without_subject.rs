use annals::Event;

#[derive(Event)]
enum MemberEvent {
    Joined {
        member_id: String,
        #[event(personal)]
        email: Option<String>,
    },
}

fn main() {}
