//! Unit, newtype, multi-field tuple, struct and empty variants, and `Self` in a field type.
use std::marker::PhantomData;

use annals::Event;

#[derive(Event, Debug, PartialEq)]
enum Shapes {
    Unit,
    Newtype(String),
    Pair(u8, String),
    Named { a: u8, b: Option<String> },
    EmptyTuple(),
    EmptyNamed {},
    Marked { of: PhantomData<Self> },
    Raw { r#type: u8 },
}

fn round_trip(event: Shapes, json: &str) {
    let payload = event.to_payload().unwrap();
    assert_eq!(payload, json);
    assert_eq!(Shapes::from_payload(event.event_type(), &payload).unwrap(), event);
}

fn main() {
    round_trip(Shapes::Unit, "{}");
    round_trip(Shapes::Newtype("x".into()), r#""x""#);
    round_trip(Shapes::Pair(1, "x".into()), r#"[1,"x"]"#);
    round_trip(Shapes::Named { a: 1, b: None }, r#"{"a":1,"b":null}"#);
    round_trip(Shapes::EmptyTuple(), "[]");
    round_trip(Shapes::EmptyNamed {}, "{}");
    round_trip(Shapes::Marked { of: PhantomData }, r#"{"of":null}"#);
    round_trip(Shapes::Raw { r#type: 1 }, r#"{"type":1}"#);
    assert_eq!(Shapes::from_payload("Unit", "null").unwrap(), Shapes::Unit);
    assert_eq!(Shapes::from_payload("Unit", r#"{"dropped":1}"#).unwrap(), Shapes::Unit);

    // An event type declared in a function body works too.
    #[derive(Event, Debug, PartialEq)]
    enum Local {
        Happened,
    }
    assert_eq!(Local::event_types(), ["Happened"]);
}
