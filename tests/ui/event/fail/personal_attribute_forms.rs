use annals::Event;

#[derive(Event)]
#[event(subject)]
enum MemberEvent {
    #[event(personal)]
    Joined {
        #[event(subject = "member")]
        member_id: String,
        #[event(personal, secret)]
        email: Option<String>,
    },
}

fn main() {}
