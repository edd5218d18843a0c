use annals::Event;

#[derive(Event)]
enum MemberEvent {
    Joined {
        #[event(subject)]
        member_id: String,
        #[event(personal)]
        email: String,
        #[event(personal)]
        name: Vec<Option<String>>,
    },
}

fn main() {}
