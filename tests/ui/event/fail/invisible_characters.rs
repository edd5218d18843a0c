use annals::Event;

// Names that would read differently from what they are: a C1 control, a right-to-left override.
#[derive(Event)]
enum OrderEvent {
    #[event(name = "next\u{85}line")]
    NextLine,
    #[event(name = "order-\u{202e}7")]
    Reversed,
}

fn main() {}
