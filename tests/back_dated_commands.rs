//! A back-dated command (`CommandContext::occurred_at`) stamps every event it writes with that
//! business time, while `recorded_at` stays the time of the commit: through `Repository::execute`,
//! `Repository::execute_atomic` and a `UnitOfWork`. Time travel by occurred time (`AsOf::Occurred`,
//! `AsOf::Bitemporal`, `Until::occurred`) then sees the aggregates and read models as the business
//! times say, and time travel by recorded time as the commits say. Each property runs on every store.

#![allow(clippy::panic, clippy::unwrap_used)] // failing the test with the unexpected outcome is the point

#[macro_use]
#[path = "common/on_every_store.rs"]
mod on_every_store;
mod lending;
#[cfg(feature = "postgres")]
#[path = "common/postgres.rs"]
mod postgres_support;

use annals::{
    replay, AsOf, CommandContext, Event, EventStore, HandlerError, Phase, Projection, ReadLog, RecordedEvent,
    Repository, Start, Until,
};
use chrono::{DateTime, TimeZone, Utc};
use futures_util::TryStreamExt;
use lending::{give_back, lend, Book, BookCommand, BookEvent, Member};

type TestResult = Result<(), Box<dyn std::error::Error>>;

on_every_store!(
    every_event_of_a_back_dated_command_carries_its_business_time,
    without_a_business_time_events_occur_when_they_are_recorded,
    time_travel_by_occurred_time_sees_the_business_times,
);

/// A day of January 2024, at noon, with a few microseconds and nanoseconds: the store keeps
/// microseconds.
fn january(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, day, 12, 0, 0).unwrap() + chrono::Duration::nanoseconds(123_456_789)
}

/// `at` as stored: to the microsecond.
fn stored(at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    at.trunc_subsecs(6)
}

async fn log<S: EventStore>(store: &S) -> Result<Vec<RecordedEvent>, annals::Error> {
    store.read_log(ReadLog::from_start()).try_collect().await
}

async fn every_event_of_a_back_dated_command_carries_its_business_time<S: EventStore + Clone>(store: S) -> TestResult {
    let books = Repository::<Book, _>::new(store.clone());
    let members = Repository::<Member, _>::new(store.clone());
    let before = Utc::now();
    let (friday, monday, tuesday) = (january(5), january(8), january(9));

    // A single command.
    let single = CommandContext::new().correlation_id("desk-1").occurred_at(friday);
    books.execute("dune", BookCommand::Lend { member: "ada".into() }, &single).await?;
    // Several aggregates of one type.
    let atomic = CommandContext::new().occurred_at(monday);
    let lend_to_bob = |book: &str| (book.to_owned(), BookCommand::Lend { member: "bob".into() });
    books.execute_atomic(vec![lend_to_bob("emma"), lend_to_bob("walden")], &atomic).await?;
    // A unit of work over two types.
    let unit = CommandContext::new().occurred_at(tuesday);
    lend(&books, &members, "ulysses", "cy", &unit).await?;

    let events = log(&store).await?;
    let occurred: Vec<_> = events.iter().map(|e| (e.stream.as_str(), e.occurred_at)).collect();
    assert_eq!(
        occurred,
        [
            ("book-dune", stored(friday)),
            ("book-emma", stored(monday)),
            ("book-walden", stored(monday)),
            ("book-ulysses", stored(tuesday)),
            ("member-cy", stored(tuesday)),
        ]
    );
    for event in &events {
        assert!(event.recorded_at >= stored(before), "{} is recorded at the commit", event.stream);
    }
    assert_eq!(events[0].metadata.correlation_id.as_deref(), Some("desk-1"), "metadata travels too");
    assert_eq!(single.business_time(), Some(friday));
    Ok(())
}

async fn without_a_business_time_events_occur_when_they_are_recorded<S: EventStore + Clone>(store: S) -> TestResult {
    let books = Repository::<Book, _>::new(store.clone());
    let members = Repository::<Member, _>::new(store.clone());
    lend(&books, &members, "dune", "ada", &CommandContext::new()).await?;
    books.execute("emma", BookCommand::Lend { member: "bob".into() }, &CommandContext::new()).await?;
    let events = log(&store).await?;
    assert_eq!(events.len(), 3);
    for event in events {
        assert_eq!(event.occurred_at, event.recorded_at, "{}", event.stream);
    }
    Ok(())
}

/// Books out on loan, by replaying the log.
#[derive(Default)]
struct OnLoan(i64);

#[async_trait::async_trait]
impl Projection for OnLoan {
    fn name(&self) -> &str {
        "on-loan"
    }

    async fn handle(&mut self, event: &RecordedEvent, _: Phase) -> Result<(), HandlerError> {
        if event.stream.as_str().starts_with("book-") {
            match BookEvent::from_recorded(event)? {
                BookEvent::Lent { .. } => self.0 += 1,
                BookEvent::Returned { .. } => self.0 -= 1,
            }
        }
        Ok(())
    }
}

async fn time_travel_by_occurred_time_sees_the_business_times<S: EventStore + Clone>(store: S) -> TestResult {
    let books = Repository::<Book, _>::new(store.clone());
    let members = Repository::<Member, _>::new(store.clone());
    let on = |day| CommandContext::new().occurred_at(january(day));

    // Entered in this order: Dune lent to Ada on the 2nd, Emma on the 10th, and only then the
    // return of Dune, which really happened on the 4th.
    lend(&books, &members, "dune", "ada", &on(2)).await?;
    lend(&books, &members, "emma", "ada", &on(10)).await?;
    let emma_recorded = log(&store).await?[3].recorded_at;
    give_back(&books, &members, "dune", "ada", &on(4)).await?;

    let ada_on = |day| members.load_as_of("ada", AsOf::Occurred(january(day)));
    assert_eq!(ada_on(1).await?.state.books, Vec::<String>::new());
    assert_eq!(ada_on(3).await?.state.books, ["dune"]);
    assert_eq!(ada_on(4).await?.state.books, Vec::<String>::new(), "the return counts from the 4th");
    assert_eq!(ada_on(9).await?.state.books, Vec::<String>::new());
    assert_eq!(ada_on(10).await?.state.books, ["emma"]);
    let dune_on_3 = books.load_as_of("dune", AsOf::Occurred(january(3))).await?;
    assert_eq!(dune_on_3.state.lent_to.as_deref(), Some("ada"));
    let dune_on_5 = books.load_as_of("dune", AsOf::Occurred(january(5))).await?;
    assert_eq!(dune_on_5.state.lent_to, None);

    // By recorded time, the return is not known before it was entered.
    let believed =
        members.load_as_of("ada", AsOf::Bitemporal { occurred: january(5), recorded: emma_recorded }).await?;
    assert_eq!(believed.state.books, ["dune"], "on the 5th, as known before the return was entered");
    let known = members.load_as_of("ada", AsOf::Recorded(emma_recorded)).await?;
    assert_eq!(known.state.books, ["dune", "emma"]);

    // A read model replayed to an occurred time.
    let out_on = |day| {
        replay(&store, OnLoan::default(), Start::Beginning, Until { occurred: Some(january(day)), ..Until::default() })
    };
    assert_eq!(out_on(1).await?.0, 0);
    assert_eq!(out_on(3).await?.0, 1);
    assert_eq!(out_on(5).await?.0, 0);
    assert_eq!(out_on(10).await?.0, 1);
    Ok(())
}
