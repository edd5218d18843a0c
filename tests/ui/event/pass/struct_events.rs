//! Struct events (named, tuple and unit structs) use their own serde impls for the payload.
use annals::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[event(name = "order.placed", version = 3)]
#[serde(rename_all = "camelCase")]
struct OrderPlaced {
    item_name: String,
    #[serde(default)]
    quantity: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
struct Renamed(String);

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
struct Pinged;

fn main() {
    let placed = OrderPlaced { item_name: "book".into(), quantity: 2 };
    assert_eq!(OrderPlaced::event_types(), ["order.placed"]);
    assert_eq!(placed.schema_version(), 3);
    assert_eq!(placed.to_payload().unwrap(), r#"{"itemName":"book","quantity":2}"#);
    let old = OrderPlaced::from_payload("order.placed", r#"{"itemName":"pen"}"#).unwrap();
    assert_eq!(old, OrderPlaced { item_name: "pen".into(), quantity: 0 });

    assert_eq!(Renamed("x".into()).event_type(), "Renamed");
    assert_eq!(Renamed("x".into()).to_payload().unwrap(), r#""x""#);
    assert_eq!(Pinged.schema_version(), 1);
    assert_eq!(Pinged::from_payload("Pinged", "null").unwrap(), Pinged);
}
