//! `name` on variants, `version` on the enum and on variants, raw identifiers, several attributes.
use annals::Event;

#[derive(Event)]
#[event(version = 2)]
enum AccountEvent {
    Opened,
    #[event(name = "MoneyDeposited", version = 5)]
    Deposited(u64),
    #[event(version = 1u32)]
    #[event(name = "account.closed")]
    Closed,
    r#Match,
}

#[derive(Event)]
enum Unversioned {
    #[event()]
    Plain,
}

fn main() {
    assert_eq!(AccountEvent::event_types(), ["Opened", "MoneyDeposited", "account.closed", "Match"]);
    assert_eq!(AccountEvent::current_version("Opened"), Some(2));
    assert_eq!(AccountEvent::current_version("MoneyDeposited"), Some(5));
    assert_eq!(AccountEvent::current_version("account.closed"), Some(1));
    assert_eq!(AccountEvent::Deposited(1).schema_version(), 5);
    assert_eq!(AccountEvent::r#Match.event_type(), "Match");
    assert_eq!(Unversioned::event_types(), ["Plain"]);
    assert_eq!(Unversioned::Plain.schema_version(), 1);
}
