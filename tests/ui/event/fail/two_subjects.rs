use annals::Event;

#[derive(Event)]
enum MemberEvent {
    Joined {
        #[event(subject)]
        member_id: String,
        #[event(subject)]
        account_id: String,
        #[event(personal)]
        email: Option<String>,
    },
}

fn main() {}
