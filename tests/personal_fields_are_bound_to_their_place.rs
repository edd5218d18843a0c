//! A stored personal field decrypts only where it was written: changed bytes, a ciphertext moved to
//! another field, or copied into another event, read as `Corrupt` (naming the position), never as
//! someone else's data. And what a `PersonalStore` must not accept is refused with a typed error:
//! appends to key streams, the headers it writes itself, payloads whose declared fields it cannot
//! find. A retried append stores nothing twice and no second key.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/members.rs"]
mod members;

use annals::personal::PersonalStore;
use annals::{
    export_jsonl, import_jsonl, Error, Event, EventStore, ExpectedVersion, MemoryStore, NewEvent, PersonalData,
    Position, ReadLog, ReadStream, RecordedEvent, StreamId,
};
use futures_util::TryStreamExt;
use members::MemberEvent;

fn stream(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

/// A store holding two events of subject `ada` (both Joined, in two streams), at positions 2 and 3
/// (the key is at 1).
async fn two_events() -> PersonalStore<MemoryStore> {
    let store = PersonalStore::new(MemoryStore::new());
    let first = MemberEvent::joined("ada", "ada@example.org", "Ada", "basic");
    let second = MemberEvent::joined("ada", "other@example.org", "Other", "basic");
    let events = vec![first.to_new_event().unwrap()];
    store.append(&stream("member-a"), ExpectedVersion::NoStream, events).await.unwrap();
    store.append(&stream("member-b"), ExpectedVersion::NoStream, vec![second.to_new_event().unwrap()]).await.unwrap();
    store
}

/// A copy of `store`'s raw log (keys included) with `change` applied to the stored event at
/// `position`'s payload, wrapped in a `PersonalStore`.
async fn copy_with(
    store: &PersonalStore<MemoryStore>,
    position: u64,
    change: impl Fn(&mut serde_json::Value, &[RecordedEvent]),
) -> PersonalStore<MemoryStore> {
    let raw: Vec<RecordedEvent> = store.inner().read_log(ReadLog::from_start()).try_collect().await.unwrap();
    let mut export = Vec::new();
    export_jsonl(store.inner(), &mut export).await.unwrap();
    let mut lines = Vec::new();
    for line in String::from_utf8(export).unwrap().lines() {
        let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
        if value["event"]["position"] == position {
            change(&mut value["event"]["payload"], &raw);
        }
        lines.push(value.to_string());
    }
    let copy = MemoryStore::new();
    import_jsonl(&copy, lines.join("\n").as_bytes()).await.unwrap();
    PersonalStore::new(copy)
}

async fn read_all(store: &PersonalStore<MemoryStore>) -> Result<Vec<RecordedEvent>, Error> {
    store.read_log(ReadLog::from_start()).try_collect().await
}

fn assert_corrupt_at(result: Result<Vec<RecordedEvent>, Error>, at: u64) {
    match result {
        Err(Error::Corrupt { what: "personal field", position, .. }) => assert_eq!(position, Position::new(at)),
        other => panic!("expected a corrupt personal field at {at}, got {other:?}"),
    }
}

#[tokio::test]
async fn the_copy_reads_as_the_original() {
    let store = two_events().await;
    let copy = copy_with(&store, 2, |_, _| {}).await;
    // The copy's payload at 2 went through `serde_json::Value` (its keys sorted): compare values.
    let decoded = |events: Vec<RecordedEvent>| -> Vec<MemberEvent> {
        events.iter().map(|e| MemberEvent::from_recorded(e).unwrap()).collect()
    };
    assert_eq!(decoded(read_all(&copy).await.unwrap()), decoded(read_all(&store).await.unwrap()));
}

#[tokio::test]
async fn a_changed_byte_is_corrupt() {
    let store = two_events().await;
    let copy = copy_with(&store, 2, |payload, _| {
        let text = payload["email"].as_str().unwrap();
        let flipped = if text.starts_with('A') { "B" } else { "A" };
        payload["email"] = format!("{flipped}{}", &text[1..]).into();
    })
    .await;
    assert_corrupt_at(read_all(&copy).await, 2);
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_field_is_corrupt() {
    let store = two_events().await;
    let copy = copy_with(&store, 2, |payload, _| {
        let email = payload["email"].clone();
        payload["email"] = payload["name"].clone();
        payload["name"] = email;
    })
    .await;
    assert_corrupt_at(read_all(&copy).await, 2);
}

#[tokio::test]
async fn a_ciphertext_copied_into_another_event_of_the_subject_is_corrupt() {
    let store = two_events().await;
    let copy = copy_with(&store, 3, |payload, raw| {
        let source: serde_json::Value = serde_json::from_str(&raw[1].payload).unwrap();
        payload["email"] = source["email"].clone();
    })
    .await;
    assert_corrupt_at(read_all(&copy).await, 3);
}

#[tokio::test]
async fn key_streams_and_reserved_headers_are_refused() {
    let store = PersonalStore::new(MemoryStore::new());
    let key = NewEvent::raw("$PersonalKey", r#"{"algorithm":"ChaCha20-Poly1305","key":"AAAA"}"#);
    let refused = store.append(&stream("$personal-ada"), ExpectedVersion::Any, vec![key]).await;
    assert!(matches!(refused, Err(Error::PersonalData { ref subject, .. }) if subject == "ada"), "{refused:?}");
    assert!(refused.unwrap_err().is_invalid_input());
    let forged = NewEvent::raw("Joined", "{}").with_header("annals-personal-subject", "ada");
    let refused = store.append(&stream("member-a"), ExpectedVersion::Any, vec![forged]).await;
    assert!(matches!(refused, Err(Error::PersonalData { field: Some(ref f), .. }) if f == "annals-personal-subject"));
    let refused = store.delete_stream(&stream("$personal-ada"), ExpectedVersion::Any, annals::DeleteMode::Hard).await;
    assert!(matches!(refused, Err(Error::PersonalData { .. })), "{refused:?}");
    assert_eq!(store.inner().head().await.unwrap(), Position::ZERO, "nothing was written");
}

#[tokio::test]
async fn declared_fields_must_be_found() {
    let store = PersonalStore::new(MemoryStore::new());
    let cases = [
        (NewEvent::raw("Joined", "[1,2]"), "the payload is not a JSON object", None),
        (NewEvent::raw("Joined", r#"{"name":"Ada"}"#), "the payload has no field", Some("email")),
        (NewEvent::raw("Joined", r#"{"email":"a","email":"b"}"#), "the payload has twice the field", Some("email")),
    ];
    for (event, problem, field) in cases {
        let event = event.with_personal_data(PersonalData::new("ada", ["email"]));
        let result = store.append(&stream("member-a"), ExpectedVersion::Any, vec![event]).await;
        match result {
            Err(Error::PersonalData { problem: found, field: found_field, subject, event_type }) => {
                assert_eq!((found, found_field.as_deref()), (problem, field));
                assert_eq!((subject.as_str(), event_type.as_str()), ("ada", "Joined"));
            }
            other => panic!("expected {problem:?}, got {other:?}"),
        }
    }
    let message = Error::PersonalData {
        event_type: "Joined".into(),
        subject: "ada".into(),
        field: Some("email".into()),
        problem: "the payload has no field",
    }
    .to_string();
    assert_eq!(message, r#"personal data of subject "ada" in event "Joined": the payload has no field "email""#);
    // The raw store refuses personal data it would store in clear.
    let event = NewEvent::raw("Joined", r#"{"email":"a"}"#).with_personal_data(PersonalData::new("ada", ["email"]));
    let refused = store.inner().append(&stream("member-a"), ExpectedVersion::Any, vec![event]).await;
    assert!(matches!(refused, Err(Error::PersonalDataNotProtected { .. })), "{refused:?}");
    assert_eq!(store.inner().head().await.unwrap(), Position::ZERO, "nothing was written");
}

#[tokio::test]
async fn a_retried_append_stores_nothing_twice() {
    let store = PersonalStore::new(MemoryStore::new());
    let event = MemberEvent::joined("ada", "ada@example.org", "Ada", "basic").to_new_event().unwrap();
    let first = store.append(&stream("member-a"), ExpectedVersion::NoStream, vec![event.clone()]).await.unwrap();
    let again = store.append(&stream("member-a"), ExpectedVersion::NoStream, vec![event]).await.unwrap();
    assert!(again.already_appended && !first.already_appended);
    assert_eq!((again.first_position, again.version), (first.first_position, first.version));
    assert_eq!(store.inner().head().await.unwrap(), Position::new(2), "one key, one event");
    let events: Vec<RecordedEvent> =
        store.read_stream(&stream("member-a"), ReadStream::forward()).try_collect().await.unwrap();
    assert_eq!(events.len(), 1);
}
