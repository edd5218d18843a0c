//! Every supported serde attribute: on fields, on a variant and on the enum.
use std::collections::BTreeMap;

use annals::Event;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

fn one() -> u8 {
    1
}

fn shout<S: Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&text.to_uppercase())
}

fn quiet<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(String::deserialize(deserializer)?.to_lowercase())
}

mod as_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(number: &u32, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(number)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
struct Extra {
    note: String,
}

#[derive(Event, Debug, PartialEq)]
#[serde(rename_all_fields = "camelCase")]
enum Changed {
    Everything {
        #[serde(rename = "id")]
        identifier: u8,
        #[serde(rename(serialize = "out", deserialize = "in"))]
        both_ways: u8,
        #[serde(alias = "old_name")]
        new_name: u8,
        #[serde(default)]
        added: u8,
        #[serde(default = "one")]
        added_with_one: u8,
        #[serde(skip)]
        skipped: u8,
        #[serde(skip_serializing)]
        read_only: u8,
        #[serde(skip_deserializing)]
        write_only: u8,
        #[serde(skip_serializing_if = "Vec::is_empty", default)]
        tags: Vec<String>,
        #[serde(serialize_with = "shout", deserialize_with = "quiet")]
        word: String,
        #[serde(with = "as_string")]
        count: u32,
        #[serde(flatten)]
        extra: Extra,
        #[serde(bound = "")]
        plain: BTreeMap<String, u8>,
    },
    #[serde(rename_all = "UPPERCASE", deny_unknown_fields)]
    Upper {
        some_field: u8,
    },
    Tuple(#[serde(with = "as_string")] u32, #[serde(serialize_with = "shout")] String),
}

fn main() {
    let everything = Changed::Everything {
        identifier: 1,
        both_ways: 2,
        new_name: 3,
        added: 4,
        added_with_one: 5,
        skipped: 6,
        read_only: 7,
        write_only: 8,
        tags: vec![],
        word: "Hi".into(),
        count: 9,
        extra: Extra { note: "n".into() },
        plain: BTreeMap::new(),
    };
    assert_eq!(
        everything.to_payload().unwrap(),
        r#"{"id":1,"out":2,"newName":3,"added":4,"addedWithOne":5,"writeOnly":8,"word":"HI","count":"9","note":"n","plain":{}}"#
    );
    let decoded = Changed::from_payload(
        "Everything",
        r#"{"id":1,"in":2,"old_name":3,"readOnly":7,"word":"HI","count":"9","note":"n","plain":{}}"#,
    )
    .unwrap();
    let expected = Changed::Everything {
        identifier: 1,
        both_ways: 2,
        new_name: 3,
        added: 0,
        added_with_one: 1,
        skipped: 0,
        read_only: 7,
        write_only: 0,
        tags: vec![],
        word: "hi".into(),
        count: 9,
        extra: Extra { note: "n".into() },
        plain: BTreeMap::new(),
    };
    assert_eq!(decoded, expected);

    assert_eq!(Changed::Upper { some_field: 1 }.to_payload().unwrap(), r#"{"SOME_FIELD":1}"#);
    assert!(Changed::from_payload("Upper", r#"{"SOME_FIELD":1,"other":2}"#).is_err());
    assert_eq!(Changed::Tuple(3, "a".into()).to_payload().unwrap(), r#"["3","A"]"#);
}
