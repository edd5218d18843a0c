use annals::Event;

#[derive(Event)]
#[serde(rename_all = "snake_case", tag = "type")]
enum AccountEvent {
    #[serde(rename = "opened")]
    Opened { owner: String },
    #[serde(rename_all_fields = "camelCase", rename_all = 5)]
    Closed { reason: String },
}

fn main() {}
