//! `#[event(personal)]` and `#[event(subject)]`: on enum variants and structs, with serde renames,
//! a subject of any `Display` type, and variants without personal data beside them.
use annals::{Event, PersonalData};
use serde::{Deserialize, Serialize};

#[derive(Event, Debug, PartialEq)]
#[serde(rename_all_fields = "camelCase")]
enum MemberEvent {
    Joined {
        #[event(subject)]
        member_id: u64,
        #[event(personal)]
        email_address: Option<String>,
        #[event(personal)]
        #[serde(rename = "full-name")]
        name: Option<String>,
        plan: String,
    },
    #[serde(rename_all = "SCREAMING-KEBAB-CASE")]
    Moved {
        #[event(personal)]
        new_address: ::core::option::Option<String>,
        #[event(subject)]
        r#type: Kind,
    },
    Upgraded {
        member_id: u64,
    },
    Left(u64),
    Paused,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    Member,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("member")
    }
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct Registered {
    #[event(subject)]
    customer_id: String,
    #[event(personal)]
    phone_number: Option<String>,
    #[event(personal)]
    #[serde(rename(serialize = "mail", deserialize = "mail"))]
    email: std::option::Option<String>,
}

fn main() {
    let joined = MemberEvent::Joined {
        member_id: 7,
        email_address: Some("ada@example.com".into()),
        name: None,
        plan: "gold".into(),
    };
    assert_eq!(joined.personal_data(), Some(PersonalData::new("7", ["emailAddress", "full-name"])));
    let payload = joined.to_payload().unwrap();
    assert!(payload.contains("\"emailAddress\"") && payload.contains("\"full-name\""), "{payload}");
    assert_eq!(joined.to_new_event().unwrap().personal_data(), joined.personal_data().as_ref());

    let moved = MemberEvent::Moved { new_address: None, r#type: Kind::Member };
    assert_eq!(moved.personal_data(), Some(PersonalData::new("member", ["NEW-ADDRESS"])));
    assert!(moved.to_payload().unwrap().contains("\"NEW-ADDRESS\":null"));
    assert_eq!(MemberEvent::Upgraded { member_id: 7 }.personal_data(), None);
    assert_eq!(MemberEvent::Left(7).personal_data(), None);
    assert_eq!(MemberEvent::Paused.personal_data(), None);

    let registered = Registered { customer_id: "c-1".into(), phone_number: Some("555".into()), email: None };
    assert_eq!(registered.personal_data(), Some(PersonalData::new("c-1", ["PhoneNumber", "mail"])));
    let payload = registered.to_payload().unwrap();
    assert_eq!(payload, r#"{"CustomerId":"c-1","PhoneNumber":"555","mail":null}"#);
}
