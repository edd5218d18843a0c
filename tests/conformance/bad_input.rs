//! Bad input is rejected with a typed error before anything is written.

use annals::{
    Checkpoint, CheckpointWrite, Error, EventStore, ExpectedVersion, InvalidName, NewEvent, Position, ReadStream,
    StreamAppend, StreamId, Version, DEFAULT_MAX_EVENT_SIZE, MAX_CHECKPOINT_NAME_LEN, MAX_EVENT_TYPE_LEN,
};
use uuid::Uuid;

use super::{event, events, expect_error, read_stream, stream, Backend, Snapshot, TestResult, TestStore};

/// A store with one event in `seed-1`, so that "nothing written" is checked against a non-empty log.
async fn seeded<S: TestStore>(store: &S) -> Result<(StreamId, Snapshot), Error> {
    let seed = stream("seed-1")?;
    store.append(&seed, ExpectedVersion::NoStream, events(1, 1)).await?;
    Ok((seed, Snapshot::take(store).await?))
}

pub(crate) async fn an_append_without_events_is_rejected<S: TestStore>(store: &S) -> TestResult {
    let (seed, before) = seeded(store).await?;
    for expected in [ExpectedVersion::Any, ExpectedVersion::StreamExists] {
        let error = expect_error(store.append(&seed, expected, Vec::new()).await)?;
        assert!(matches!(&error, Error::EmptyAppend { stream } if stream == "seed-1"), "{error:?}");
    }
    let other = stream("other-1")?;
    let error = expect_error(
        store
            .append_multi(vec![
                StreamAppend::new(other.clone(), ExpectedVersion::Any, events(2, 1)),
                StreamAppend::new(seed.clone(), ExpectedVersion::Any, Vec::new()),
            ])
            .await,
    )?;
    assert!(matches!(&error, Error::EmptyAppend { stream } if stream == "seed-1"), "{error:?}");
    before.assert_unchanged(store, &[&seed, &other]).await
}

pub(crate) async fn a_multi_stream_append_without_streams_is_rejected<S: TestStore>(store: &S) -> TestResult {
    let (seed, before) = seeded(store).await?;
    let error = expect_error(store.append_multi(Vec::new()).await)?;
    assert!(matches!(&error, Error::EmptyAppend { stream } if stream.is_empty()), "{error:?}");
    before.assert_unchanged(store, &[&seed]).await
}

pub(crate) async fn a_stream_named_twice_in_one_multi_stream_append_is_rejected<S: TestStore>(store: &S) -> TestResult {
    let (seed, before) = seeded(store).await?;
    let other = stream("other-1")?;
    let error = expect_error(
        store
            .append_multi(vec![
                StreamAppend::new(seed.clone(), ExpectedVersion::Any, events(2, 1)),
                StreamAppend::new(other.clone(), ExpectedVersion::NoStream, events(3, 1)),
                StreamAppend::new(seed.clone(), ExpectedVersion::Any, events(4, 1)),
            ])
            .await,
    )?;
    assert!(matches!(&error, Error::DuplicateStreamInAppend { stream } if *stream == seed), "{error:?}");
    before.assert_unchanged(store, &[&seed, &other]).await
}

pub(crate) async fn invalid_stream_names_are_rejected_and_the_longest_valid_one_is_stored<S: TestStore>(
    store: &S,
) -> TestResult {
    let cases = [
        (String::new(), InvalidName::Empty),
        (
            "x".repeat(StreamId::MAX_LEN + 1),
            InvalidName::TooLong { len: StreamId::MAX_LEN + 1, max: StreamId::MAX_LEN },
        ),
        ("order\u{7f}".to_owned(), InvalidName::ControlCharacter { at: 5 }),
        ("order-\n1".to_owned(), InvalidName::ControlCharacter { at: 6 }),
        ("\0".to_owned(), InvalidName::ControlCharacter { at: 0 }),
    ];
    for (name, reason) in cases {
        let result = StreamId::new(name.clone());
        assert!(
            matches!(&result, Err(Error::InvalidStreamId { name: n, reason: r }) if *n == name && *r == reason),
            "{name:?} gave {result:?}"
        );
    }
    // The longest valid name, and one with multi-byte characters, work end to end.
    for name in ["y".repeat(StreamId::MAX_LEN), "commande-é-ü-日本".to_owned()] {
        let stream = StreamId::new(name.clone())?;
        store.append(&stream, ExpectedVersion::NoStream, events(1, 2)).await?;
        let read = read_stream(store, &stream, ReadStream::forward()).await?;
        assert_eq!(read.len(), 2, "{name}");
        assert!(read.iter().all(|e| e.stream.as_str() == name), "{name}");
        assert_eq!(store.stream_version(&stream).await?, Some(Version::new(2)), "{name}");
    }
    Ok(())
}

pub(crate) async fn invalid_event_types_are_rejected<S: TestStore>(store: &S) -> TestResult {
    let (seed, before) = seeded(store).await?;
    let cases = [
        (String::new(), InvalidName::Empty),
        (
            "T".repeat(MAX_EVENT_TYPE_LEN + 1),
            InvalidName::TooLong { len: MAX_EVENT_TYPE_LEN + 1, max: MAX_EVENT_TYPE_LEN },
        ),
        ("Order\tPlaced".to_owned(), InvalidName::ControlCharacter { at: 5 }),
    ];
    for (event_type, reason) in cases {
        // The bad event is second: the valid first one must not be written either.
        let append = vec![event(2), NewEvent::raw(event_type.clone(), "{}")];
        let error = expect_error(store.append(&seed, ExpectedVersion::Any, append).await)?;
        assert!(
            matches!(&error, Error::InvalidEventType { event_type: t, reason: r } if *t == event_type && *r == reason),
            "{event_type:?} gave {error:?}"
        );
    }
    before.assert_unchanged(store, &[&seed]).await?;
    let longest = "T".repeat(MAX_EVENT_TYPE_LEN);
    store.append(&seed, ExpectedVersion::Any, vec![NewEvent::raw(longest.clone(), "{}")]).await?;
    let last = read_stream(store, &seed, ReadStream::backward().limit(1)).await?;
    assert_eq!(last.first().map(|e| e.event_type.as_str()), Some(longest.as_str()));
    Ok(())
}

/// Names that break the rule every name follows, for a kind of name whose maximum is `max` bytes,
/// each with the reason it must be refused for.
fn names_breaking_the_rule(max: usize) -> Vec<(String, InvalidName)> {
    vec![
        (String::new(), InvalidName::Empty),
        ("n".repeat(max + 1), InvalidName::TooLong { len: max + 1, max }),
        ("order-\n7".to_owned(), InvalidName::ControlCharacter { at: 6 }),
        ("order-\u{7f}7".to_owned(), InvalidName::ControlCharacter { at: 6 }),
        // U+0085 (NEXT LINE), a C1 control: two bytes in UTF-8.
        ("order-\u{85}7".to_owned(), InvalidName::ControlCharacter { at: 6 }),
        // RIGHT-TO-LEFT OVERRIDE: "order-\u{202e}7gnp.exe" displays as "order-exe.png7".
        ("order-\u{202e}7gnp.exe".to_owned(), InvalidName::BidiControl { at: 6 }),
        // LEFT-TO-RIGHT ISOLATE.
        ("order-\u{2066}7".to_owned(), InvalidName::BidiControl { at: 6 }),
    ]
}

/// Names the rule allows: letters beyond ASCII, spaces, other scripts.
const NAMES_FOLLOWING_THE_RULE: [&str; 3] = ["café-42", "order 7", "注文-1"];

/// What a name error says: the kind of name, the name and the reason (`None` for other results).
fn refusal<T>(result: &Result<T, Error>) -> Option<(&'static str, &str, &InvalidName)> {
    match result {
        Err(Error::InvalidStreamId { name, reason }) => Some(("stream name", name, reason)),
        Err(Error::InvalidEventType { event_type, reason }) => Some(("event type", event_type, reason)),
        Err(Error::InvalidCheckpointName { name, reason }) => Some(("checkpoint name", name, reason)),
        _ => None,
    }
}

pub(crate) async fn stream_names_event_types_and_checkpoint_names_follow_one_rule<S: TestStore>(
    store: &S,
) -> TestResult {
    let (seed, before) = seeded(store).await?;
    for (name, reason) in names_breaking_the_rule(StreamId::MAX_LEN) {
        let result = StreamId::new(name.clone());
        assert_eq!(refusal(&result), Some(("stream name", name.as_str(), &reason)), "{result:?}");
    }
    for (name, reason) in names_breaking_the_rule(MAX_EVENT_TYPE_LEN) {
        let append = vec![event(2), NewEvent::raw(name.clone(), "{}")];
        let result = store.append(&seed, ExpectedVersion::Any, append).await;
        assert_eq!(refusal(&result), Some(("event type", name.as_str(), &reason)), "{result:?}");
    }
    for (name, reason) in names_breaking_the_rule(MAX_CHECKPOINT_NAME_LEN) {
        let expected = Some(("checkpoint name", name.as_str(), &reason));
        let save = vec![
            CheckpointWrite::Save(Checkpoint::new("good", Position::new(1))),
            CheckpointWrite::Save(Checkpoint::new(name.clone(), Position::new(1))),
        ];
        let saved = store.save_checkpoints(save).await;
        assert_eq!(refusal(&saved), expected, "saving: {saved:?}");
        let deleted = store.save_checkpoints(vec![CheckpointWrite::Delete(name.clone())]).await;
        assert_eq!(refusal(&deleted), expected, "deleting: {deleted:?}");
        let loaded = store.load_checkpoint(&name).await;
        assert_eq!(refusal(&loaded), expected, "loading: {loaded:?}");
    }
    before.assert_unchanged(store, &[&seed]).await?;
    assert_eq!(store.list_checkpoints("").await?, Vec::new(), "a refused batch saved a checkpoint");

    for name in NAMES_FOLLOWING_THE_RULE {
        let stream = StreamId::new(name)?;
        store.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::raw(name, "{}")]).await?;
        let read = read_stream(store, &stream, ReadStream::forward()).await?;
        let found: Vec<_> = read.iter().map(|e| (e.stream.as_str(), e.event_type.as_str())).collect();
        assert_eq!(found, [(name, name)]);
        store.save_checkpoints(vec![CheckpointWrite::Save(Checkpoint::new(name, Position::new(7)))]).await?;
        assert_eq!(store.load_checkpoint(name).await?.map(|c| c.position), Some(Position::new(7)), "{name}");
    }
    Ok(())
}

/// An event of exactly `size` bytes as the store counts them (payload, type name, metadata).
fn event_of_size(size: usize) -> NewEvent {
    // Type "Big" (3 bytes), header "k" = "vv" (3 bytes), payload a JSON string: quotes + filler.
    let filler = "x".repeat(size - 3 - 3 - 2);
    NewEvent::raw("Big", format!("\"{filler}\"")).with_header("k", "vv")
}

pub(crate) async fn events_over_the_maximum_size_are_rejected<B: Backend>() -> TestResult {
    for max in [100, DEFAULT_MAX_EVENT_SIZE] {
        let fixture = B::open((max != DEFAULT_MAX_EVENT_SIZE).then_some(max)).await?;
        let store = &fixture.store;
        let (seed, before) = seeded(store).await?;
        let too_big = event_of_size(max + 1);
        assert_eq!(too_big.size(), max + 1);
        let error = expect_error(store.append(&seed, ExpectedVersion::Any, vec![event(2), too_big]).await)?;
        assert!(
            matches!(
                &error,
                Error::EventTooLarge { stream, index: 1, size, max: m }
                    if *stream == seed && *size == max + 1 && *m == max
            ),
            "max {max} gave {error:?}"
        );
        before.assert_unchanged(store, &[&seed]).await?;
        let just_fits = event_of_size(max);
        assert_eq!(just_fits.size(), max);
        let payload = just_fits.payload().to_owned();
        store.append(&seed, ExpectedVersion::Exact(Version::FIRST), vec![just_fits]).await?;
        let read = read_stream(store, &seed, ReadStream::forward()).await?;
        assert_eq!(read.last().map(|e| e.payload.as_str()), Some(payload.as_str()), "max {max}");
    }
    Ok(())
}

pub(crate) async fn payloads_that_are_not_json_are_rejected<S: TestStore>(store: &S) -> TestResult {
    let (seed, before) = seeded(store).await?;
    for text in ["", "{\"a\":", "{} {}", "nul", "{'a':1}", "[1,]"] {
        let append = vec![event(2), event(3), NewEvent::raw("Bad", text)];
        let error = expect_error(store.append(&seed, ExpectedVersion::Any, append).await)?;
        assert!(
            matches!(&error, Error::InvalidPayload { stream, index: 2, .. } if *stream == seed),
            "{text:?} gave {error:?}"
        );
    }
    before.assert_unchanged(store, &[&seed]).await
}

pub(crate) async fn an_event_id_repeated_within_one_append_is_rejected<S: TestStore>(store: &S) -> TestResult {
    let (seed, before) = seeded(store).await?;
    let other = stream("other-1")?;
    let id = Uuid::new_v4();
    let twice = vec![event(2).with_id(id), event(3), event(4).with_id(id)];
    let error = expect_error(store.append(&seed, ExpectedVersion::Any, twice).await)?;
    assert!(
        matches!(
            &error,
            Error::DuplicateEventIdInAppend { id: i, first_stream, first_index: 0, stream, index: 2 }
                if *i == id && *first_stream == seed && *stream == seed
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!("event id {id} repeats inside the append: events 0 and 2 of the append to \"seed-1\"")
    );
    assert!(error.is_invalid_input());
    let across = vec![
        StreamAppend::new(seed.clone(), ExpectedVersion::Any, vec![event(5), event(6).with_id(id)]),
        StreamAppend::new(other.clone(), ExpectedVersion::Any, vec![event(7).with_id(id)]),
    ];
    let error = expect_error(store.append_multi(across).await)?;
    assert!(
        matches!(
            &error,
            Error::DuplicateEventIdInAppend { id: i, first_stream, first_index: 1, stream, index: 0 }
                if *i == id && *first_stream == seed && *stream == other
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "event id {id} repeats inside the append: event 1 of the append to \"seed-1\" and event 0 of the \
             append to \"other-1\""
        )
    );
    before.assert_unchanged(store, &[&seed, &other]).await
}

/// `depth` arrays, one inside the other.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// The deepest nesting `serde_json` reads back (its recursion limit of 128 counts the outermost level).
const DEEPEST: usize = 127;

pub(crate) async fn payloads_that_do_not_read_back_are_rejected<S: TestStore>(store: &S) -> TestResult {
    let (seed, before) = seeded(store).await?;
    let too_deep = nested(DEEPEST + 1);
    for text in [r#""\ud800""#, r#"{"note":"a\uDC00b"}"#, r#"["\ud83d x"]"#, "1e400", too_deep.as_str()] {
        assert!(serde_json::from_str::<serde_json::Value>(text).is_err(), "a reader refuses {text:?}");
        let append = vec![event(2), NewEvent::raw("Bad", text)];
        let error = expect_error(store.append(&seed, ExpectedVersion::Any, append).await)?;
        assert!(
            matches!(&error, Error::InvalidPayload { stream, index: 1, .. } if *stream == seed),
            "{text:?} gave {error:?}"
        );
    }
    // The same through `NewEvent::json`: a value nested too deep, a `RawValue` with a lone surrogate.
    let deep = (0..=DEEPEST).fold(serde_json::Value::Null, |inner, _| serde_json::json!([inner]));
    let raw = serde_json::value::RawValue::from_string(r#""\udbff""#.to_owned())?;
    for serialized in [NewEvent::json("Deep", &deep)?, NewEvent::json("Lone", &raw)?] {
        let error = expect_error(store.append(&seed, ExpectedVersion::Any, vec![serialized]).await)?;
        assert!(matches!(&error, Error::InvalidPayload { index: 0, .. }), "{error:?}");
    }
    before.assert_unchanged(store, &[&seed]).await?;

    // What a reader takes is stored, and reads back.
    let deepest = nested(DEEPEST);
    let fine = [r#""\ud83d\ude00""#, r#"{"a":"\u00e9\"\\"}"#, "1e308", deepest.as_str()];
    store
        .append(&seed, ExpectedVersion::Exact(Version::FIRST), fine.iter().map(|t| NewEvent::raw("Fine", *t)).collect())
        .await?;
    let read = read_stream(store, &seed, ReadStream::forward()).await?;
    assert_eq!(read.len(), 1 + fine.len());
    for event in &read[1..] {
        let value: serde_json::Value = event.payload_as()?;
        assert_eq!(serde_json::from_str::<serde_json::Value>(&event.payload)?, value);
    }
    assert_eq!(read.last().map(|e| e.payload.as_str()), Some(deepest.as_str()));
    Ok(())
}
