use annals::Event;

#[derive(Event)]
enum AccountEvent {
    Opened {
        #[serde(defualt)]
        owner: String,
        #[serde(borrow)]
        note: String,
        #[serde(getter = "Self::note")]
        other: String,
        #[serde(with = "a", serialize_with = "b")]
        twice: String,
    },
}

fn main() {}
