//! Upcasting a store shared by several event types: the chains of two enums (`BookEvent`,
//! `MemberEvent`) merged into one set check against both at once (`check::<(BookEvent,
//! MemberEvent)>()`) where either enum alone refuses them, and applied by one `Upcasting` store they
//! bring the old events of both up to date on every read path (aggregate loads of both types, a log
//! read filtered by a current name). Clashes between the types are found at start-up: a type name
//! current at two versions, a step registered for both, an old version of either without a step.

#![allow(clippy::panic)] // failing the test with the unexpected outcome is the point

use annals::{
    Aggregate, Error, Event, EventSet, EventStore, ExpectedVersion, LogFilter, MemoryStore, NewEvent, ReadLog,
    Repository, SledStore, StreamId, Upcasters, Upcasting,
};
use futures_util::TryStreamExt;
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Event, Clone, Debug, PartialEq)]
enum BookEvent {
    Added {
        title: String,
    },
    /// v1 stored only the member; v2 knows which copy came back.
    #[event(version = 2)]
    BookReturned {
        copy: u32,
        member: String,
    },
}

#[derive(Event, Clone, Debug, PartialEq)]
enum MemberEvent {
    /// Stored as `MemberRegistered` by an older program.
    MemberJoined { name: String },
    /// v1 and v2 stored the fee in euros, then as a string; v3 in cents.
    #[event(version = 3)]
    FeePaid { cents: u64 },
}

#[derive(Aggregate, Default)]
#[aggregate(command = (), event = BookEvent, error = std::convert::Infallible)]
struct Book {
    title: Option<String>,
    returns: Vec<(u32, String)>,
}

impl Book {
    fn handle(&self, _command: ()) -> Result<Vec<BookEvent>, std::convert::Infallible> {
        Ok(vec![])
    }

    fn apply(&mut self, event: &BookEvent) {
        match event {
            BookEvent::Added { title } => self.title = Some(title.clone()),
            BookEvent::BookReturned { copy, member } => self.returns.push((*copy, member.clone())),
        }
    }
}

#[derive(Aggregate, Default)]
#[aggregate(command = (), event = MemberEvent, error = std::convert::Infallible)]
struct Member {
    name: Option<String>,
    paid_cents: u64,
}

impl Member {
    fn handle(&self, _command: ()) -> Result<Vec<MemberEvent>, std::convert::Infallible> {
        Ok(vec![])
    }

    fn apply(&mut self, event: &MemberEvent) {
        match event {
            MemberEvent::MemberJoined { name } => self.name = Some(name.clone()),
            MemberEvent::FeePaid { cents } => self.paid_cents += cents,
        }
    }
}

/// The book module's steps, checked against `BookEvent` where they are written.
fn book_upcasters() -> Upcasters {
    Upcasters::new().upgrade("BookReturned", 1, |payload| Ok(json!({ "copy": 1, "member": payload["member"] })))
}

/// The member module's steps: a rename and a chain of two upgrades.
fn member_upcasters() -> Upcasters {
    Upcasters::new()
        .rename("MemberRegistered", 1, "MemberJoined", 1)
        .upgrade("FeePaid", 1, |payload| {
            let euros = payload["euros"].as_u64().ok_or("no euros")?;
            Ok(json!({ "amount": euros.to_string() }))
        })
        .upgrade("FeePaid", 2, |payload| {
            let euros: u64 = payload["amount"].as_str().ok_or("no amount")?.parse().map_err(|_| "not a number")?;
            Ok(json!({ "cents": euros * 100 }))
        })
}

fn both() -> Upcasters {
    Upcasters::new().merge(book_upcasters()).merge(member_upcasters())
}

/// Old events of both types, as older programs stored them, in one store.
async fn store_old_events<S: EventStore>(store: &S) -> TestResult {
    let old = [
        ("book-b1", "Added", 1, json!({ "title": "Dune" })),
        ("member-m1", "MemberRegistered", 1, json!({ "name": "ada" })),
        ("book-b1", "BookReturned", 1, json!({ "member": "ada" })),
        ("member-m1", "FeePaid", 1, json!({ "euros": 3 })),
        ("member-m1", "FeePaid", 2, json!({ "amount": "4" })),
        ("book-b1", "BookReturned", 2, json!({ "copy": 2, "member": "bob" })),
        ("member-m1", "FeePaid", 3, json!({ "cents": 50 })),
    ];
    for (stream, event_type, version, payload) in old {
        let event = NewEvent::raw(event_type, payload.to_string()).with_schema_version(version);
        store.append(&StreamId::new(stream)?, ExpectedVersion::Any, vec![event]).await?;
    }
    Ok(())
}

fn chain_error(result: annals::Result<()>) -> (String, u32, &'static str) {
    match result {
        Err(Error::UpcasterChain { event_type, schema_version, problem }) => (event_type, schema_version, problem),
        other => panic!("expected an upcaster chain error, got {other:?}"),
    }
}

#[test]
fn a_merged_set_checks_against_every_type_of_the_store_at_once() -> TestResult {
    book_upcasters().check::<BookEvent>()?;
    member_upcasters().check::<MemberEvent>()?;

    // One enum alone does not know the other's current types: this is the error of issue 14.
    let alone = both().check::<BookEvent>();
    assert_eq!(
        alone.as_ref().map_err(ToString::to_string).err().as_deref(),
        Some("upcaster chain: \"FeePaid\" v3 is produced by an upcaster but is not an event type of the target type"),
        "{alone:?}"
    );
    assert!(matches!(both().check::<MemberEvent>(), Err(Error::UpcasterChain { .. })));

    // Together they check, in either order.
    both().check::<(BookEvent, MemberEvent)>()?;
    both().check::<(MemberEvent, BookEvent)>()?;
    assert_eq!(
        <(BookEvent, MemberEvent)>::current_versions(),
        [("Added", 1), ("BookReturned", 2), ("MemberJoined", 1), ("FeePaid", 3)]
    );
    Ok(())
}

#[test]
fn every_type_of_the_set_needs_its_steps() {
    // The member steps are missing: `FeePaid` v1 and v2 have none, and the set says so.
    let (event_type, version, _) = chain_error(book_upcasters().check::<(BookEvent, MemberEvent)>());
    assert_eq!((event_type.as_str(), version), ("FeePaid", 1));
    // The book step is missing.
    let (event_type, version, _) = chain_error(member_upcasters().check::<(BookEvent, MemberEvent)>());
    assert_eq!((event_type.as_str(), version), ("BookReturned", 1));
}

#[test]
fn a_step_registered_by_two_modules_is_reported() {
    let twice = both().merge(Upcasters::new().rename("MemberRegistered", 1, "Added", 1));
    let (event_type, version, problem) = chain_error(twice.check::<(BookEvent, MemberEvent)>());
    assert_eq!((event_type.as_str(), version, problem), ("MemberRegistered", 1, "has two upcasters"));
}

/// A third enum that also has a `BookReturned`, at v1: a store-wide step for `BookReturned` v1 would
/// upgrade its events too.
#[derive(Event)]
enum ArchiveEvent {
    BookReturned { shelf: String },
}

/// The same name at the same version in two enums is one event type to the upcasters.
#[derive(Event)]
enum LoanEvent {
    #[event(version = 2)]
    BookReturned { copy: u32, member: String },
}

#[test]
fn a_type_name_current_at_two_versions_is_refused() -> TestResult {
    let (event_type, version, problem) = chain_error(both().check::<(BookEvent, MemberEvent, ArchiveEvent)>());
    assert_eq!((event_type.as_str(), version), ("BookReturned", 1));
    assert!(problem.contains("share"), "{problem}");
    both().check::<(BookEvent, MemberEvent, LoanEvent)>()?;
    Ok(())
}

async fn both_types_load_through_one_upcasting_store<S: EventStore>(store: S) -> TestResult {
    store_old_events(&store).await?;
    let upcasters = both();
    upcasters.check::<(BookEvent, MemberEvent)>()?;
    let store = std::sync::Arc::new(Upcasting::new(store, upcasters));

    let books = Repository::<Book, _>::new(store.clone());
    let book = books.load("b1").await?;
    assert_eq!(book.state.title.as_deref(), Some("Dune"));
    assert_eq!(book.state.returns, [(1, "ada".to_owned()), (2, "bob".to_owned())]);
    let members = Repository::<Member, _>::new(store.clone());
    let member = members.load("m1").await?;
    assert_eq!(member.state.name.as_deref(), Some("ada"));
    assert_eq!(member.state.paid_cents, 300 + 400 + 50);

    // A log read filtered by current names finds the older names and shapes of both types.
    let filter = LogFilter::all().event_types(["MemberJoined", "BookReturned"]);
    let found: Vec<_> = store.read_log(ReadLog::from_start().filter(filter)).try_collect().await?;
    let found: Vec<_> = found.iter().map(|e| (e.event_type.as_str(), e.schema_version, e.position.get())).collect();
    assert_eq!(found, [("MemberJoined", 1, 2), ("BookReturned", 2, 3), ("BookReturned", 2, 6)]);

    // Each enum decodes every event of its own streams, whatever their stored shape.
    let everything: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await?;
    for event in &everything {
        let decoded = match event.stream.as_str() {
            s if s.starts_with("book-") => BookEvent::from_recorded(event).map(|_| ()),
            _ => MemberEvent::from_recorded(event).map(|_| ()),
        };
        assert!(decoded.is_ok(), "{event:?}: {decoded:?}");
    }
    let stored: Vec<Value> = {
        let raw: Vec<_> = store.inner().read_log(ReadLog::from_start()).try_collect().await?;
        raw.iter().map(|e| json!([e.event_type, e.schema_version])).collect()
    };
    assert_eq!(stored[1], json!(["MemberRegistered", 1]), "the stored data is untouched");
    Ok(())
}

#[tokio::test]
async fn both_types_load_through_one_upcasting_store_in_memory() -> TestResult {
    both_types_load_through_one_upcasting_store(MemoryStore::new()).await
}

#[tokio::test]
async fn both_types_load_through_one_upcasting_store_on_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    both_types_load_through_one_upcasting_store(SledStore::open(dir.path())?).await
}
