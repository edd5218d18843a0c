use annals::Event;

#[derive(Event)]
#[event(verison = 2)]
enum AccountEvent {
    #[event(nmae = "Opened", alias = "Started")]
    Opened,
    #[event(annals::name = "x")]
    Closed,
}

fn main() {
    // The stand-in impl keeps uses of the type from adding errors of their own.
    let _ = AccountEvent::event_types();
}
