use annals::Event;

#[derive(Event)]
enum MemberEvent {
    Joined {
        #[event(subject, personal)]
        member_id: Option<String>,
        #[event(personal)]
        email: Option<String>,
    },
}

fn main() {}
