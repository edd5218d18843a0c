//! Upcasting: the committed v1 fixture (never regenerated) still loads through the upcasters, on
//! every read path (aggregate loads, stream reads, filtered log reads), and broken upcaster chains
//! are reported at start-up instead of at read time.

#![allow(clippy::panic)] // failing the test with the unexpected outcome is the point

mod common;

use annals::{
    Error, EventStore, ExpectedVersion, LogFilter, MemoryStore, NewEvent, ReadLog, ReadStream, Repository, SledStore,
    StoredShape, StreamId, Upcasters, Upcasting,
};
use common::bank::{Account, AccountEvent};
use futures_util::TryStreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Deserialize)]
struct FixtureEvent {
    stream: String,
    event_type: String,
    schema_version: u32,
    payload: Value,
}

/// Appends the v1 fixture as an old program would have stored it.
async fn store_fixture<S: EventStore>(store: &S) -> TestResult {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/account_v1.json"))?;
    let events: Vec<FixtureEvent> = serde_json::from_str(&text)?;
    for event in events {
        let new = NewEvent::raw(event.event_type, event.payload.to_string()).with_schema_version(event.schema_version);
        store.append(&StreamId::new(event.stream)?, ExpectedVersion::Any, vec![new]).await?;
    }
    Ok(())
}

fn euros_to_cents(payload: Value) -> Result<Value, String> {
    let euros = payload.get("amount").and_then(Value::as_u64).ok_or("no whole amount in euros")?;
    Ok(json!({ "amount_cents": euros * 100 }))
}

fn upcasters() -> Upcasters {
    Upcasters::new().rename("FundsAdded", 1, "Deposited", 1).upgrade("Deposited", 1, euros_to_cents).split(
        "AccountOpenedWithDeposit",
        1,
        [("Opened", 1), ("Deposited", 1)],
        |payload| {
            Ok(vec![
                StoredShape {
                    event_type: "Opened".into(),
                    schema_version: 1,
                    payload: json!({ "owner": payload["owner"] }),
                },
                StoredShape {
                    event_type: "Deposited".into(),
                    schema_version: 1,
                    payload: json!({ "amount": payload["amount"] }),
                },
            ])
        },
    )
}

async fn the_v1_fixture_loads_on_every_read_path<S: EventStore>(store: S) -> TestResult {
    store_fixture(&store).await?;
    let upcasters = upcasters();
    upcasters.check::<AccountEvent>()?;
    let store = Upcasting::new(store, upcasters);

    let repository = Repository::<Account, _>::new(store);
    let ada = repository.load("ada").await?;
    assert_eq!(ada.state.owner.as_deref(), Some("ada"));
    assert_eq!(ada.state.balance_cents, 1200 + 300 - 250);
    assert_eq!(ada.version.get(), 4);
    let bob = repository.load("bob").await?;
    assert_eq!((bob.state.owner.as_deref(), bob.state.balance_cents), (Some("bob"), 500));
    assert_eq!(bob.state.applied, 2, "the split event became two events");

    let store = repository.store();
    let stream = StreamId::new("account-ada")?;
    let read: Vec<_> = store.read_stream(&stream, ReadStream::forward()).try_collect().await?;
    let shapes: Vec<_> = read.iter().map(|e| (e.event_type.as_str(), e.schema_version)).collect();
    assert_eq!(shapes, [("Opened", 1), ("Deposited", 2), ("Deposited", 2), ("Withdrawn", 1)]);
    assert_eq!(read[1].payload, r#"{"amount_cents":1200}"#);

    let filter = LogFilter::all().event_types(["Deposited"]);
    let deposits: Vec<_> = store.read_log(ReadLog::from_start().filter(filter)).try_collect().await?;
    let found: Vec<_> = deposits.iter().map(|e| (e.stream.as_str(), e.payload.as_str())).collect();
    assert_eq!(
        found,
        [
            ("account-ada", r#"{"amount_cents":1200}"#),
            ("account-ada", r#"{"amount_cents":300}"#),
            ("account-bob", r#"{"amount_cents":500}"#),
        ],
        "a filter on the current name finds events stored under older names and shapes"
    );
    let raw: Vec<_> = store.inner().read_log(ReadLog::from_start()).try_collect().await?;
    assert_eq!(raw[1].event_type, "FundsAdded", "the stored data is untouched");
    Ok(())
}

#[tokio::test]
async fn the_v1_fixture_loads_on_every_read_path_in_memory() -> TestResult {
    the_v1_fixture_loads_on_every_read_path(MemoryStore::new()).await
}

#[tokio::test]
async fn the_v1_fixture_loads_on_every_read_path_on_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    the_v1_fixture_loads_on_every_read_path(SledStore::open(dir.path())?).await
}

#[tokio::test]
async fn without_upcasters_old_events_are_typed_errors() -> TestResult {
    let store = MemoryStore::new();
    store_fixture(&store).await?;
    let repository = Repository::<Account, _>::new(store);
    match repository.load("ada").await {
        Err(Error::UnknownEventType { event_type, version, .. }) => {
            assert_eq!((event_type.as_str(), version.get()), ("FundsAdded", 2))
        }
        other => panic!("expected UnknownEventType, got {other:?}"),
    }
    Ok(())
}

#[test]
fn a_missing_step_is_reported_at_start_up() {
    let missing = Upcasters::new().rename("FundsAdded", 1, "Deposited", 1);
    let error = missing.check::<AccountEvent>();
    assert!(
        matches!(&error, Err(Error::UpcasterChain { event_type, schema_version: 1, .. }) if event_type == "Deposited"),
        "{error:?}"
    );
}

#[test]
fn broken_chains_are_reported_at_start_up() {
    let complete = || Upcasters::new().upgrade("Deposited", 1, euros_to_cents);
    assert!(complete().check::<AccountEvent>().is_ok());
    let cases = [
        ("a loop", complete().rename("A", 1, "B", 1).rename("B", 1, "A", 1), "A"),
        ("a rename to an unknown type", complete().rename("Old", 1, "Nope", 1), "Nope"),
        ("a rename to an old version with no next step", complete().rename("Old", 1, "Opened", 3), "Opened"),
        ("a duplicate", complete().upgrade("Deposited", 1, euros_to_cents), "Deposited"),
        ("a split to an undeclared kind", complete().split("Both", 1, [("Gone", 1)], |_| Ok(vec![])), "Gone"),
    ];
    for (what, upcasters, at) in cases {
        let error = upcasters.check::<AccountEvent>();
        assert!(
            matches!(&error, Err(Error::UpcasterChain { event_type, .. }) if event_type == at),
            "{what}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_failing_upcaster_is_a_typed_error_naming_the_event() -> TestResult {
    let store = MemoryStore::new();
    let stream = StreamId::new("account-odd")?;
    let odd = NewEvent::raw("Deposited", r#"{"amount":"twelve"}"#);
    store.append(&stream, ExpectedVersion::NoStream, vec![odd]).await?;
    let store = Upcasting::new(store, upcasters());
    let outcome: Result<Vec<_>, _> = store.read_stream(&stream, ReadStream::forward()).try_collect().await;
    match outcome {
        Err(Error::Upcast { stream, version, event_type, schema_version, reason }) => {
            assert_eq!(
                (stream.as_str(), version.get(), event_type.as_str(), schema_version),
                ("account-odd", 1, "Deposited", 1)
            );
            assert!(reason.contains("euros"), "{reason}");
        }
        other => panic!("expected Upcast, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_split_producing_an_undeclared_shape_is_a_typed_error() -> TestResult {
    let store = MemoryStore::new();
    let stream = StreamId::new("account-z")?;
    store.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::raw("Both", "{}")]).await?;
    let sneaky = Upcasters::new().split("Both", 1, [("Opened", 1)], |_| {
        Ok(vec![StoredShape { event_type: "Closed".into(), schema_version: 1, payload: json!({}) }])
    });
    let store = Upcasting::new(store, sneaky);
    let outcome: Result<Vec<_>, _> = store.read_stream(&stream, ReadStream::forward()).try_collect().await;
    assert!(matches!(&outcome, Err(Error::Upcast { reason, .. }) if reason.contains("Closed")), "{outcome:?}");
    Ok(())
}
