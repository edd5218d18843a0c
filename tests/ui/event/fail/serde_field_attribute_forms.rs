use annals::Event;

#[derive(Event)]
enum AccountEvent {
    Opened {
        #[serde(skip = "yes")]
        a: String,
        #[serde(alias)]
        b: String,
        #[serde(rename = 5)]
        c: String,
        #[serde(skip_serializing_if = "not a path")]
        d: String,
        #[serde(flatten(x))]
        e: String,
    },
}

fn main() {}
