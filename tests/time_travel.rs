//! Aggregates as they were: at a version, as of a recorded time (ties included: a group's events
//! share one time), as of an occurred time (future-dated and out-of-order business times), and
//! bitemporally; and loads at a version or recorded time start from the nearest snapshot. Each runs
//! on the memory, sled and PostgreSQL stores (the last with the `postgres` feature, in a fresh schema
//! of the test binary's throwaway cluster).
#![allow(missing_docs)]

mod common;

use std::time::Duration;

use annals::{
    Aggregate, AsOf, CommandContext, Event, EventStore, ExpectedVersion, MemoryStore, Repository, SledStore,
    SnapshotPolicy, Version,
};
use chrono::{DateTime, TimeZone, Utc};
use common::counting::Counting;
use serde::{Deserialize, Serialize};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Event, Clone, Debug, PartialEq)]
enum LedgerEvent {
    Booked { amount: i64 },
}

/// Every amount booked, in the order applied.
#[derive(Aggregate, Clone, Debug, Default, Serialize, Deserialize)]
#[aggregate(command = i64, event = LedgerEvent, error = std::convert::Infallible)]
struct Ledger {
    amounts: Vec<i64>,
}

impl Ledger {
    fn handle(&self, amount: i64) -> Result<Vec<LedgerEvent>, std::convert::Infallible> {
        Ok(vec![LedgerEvent::Booked { amount }])
    }

    fn apply(&mut self, event: &LedgerEvent) {
        let LedgerEvent::Booked { amount } = event;
        self.amounts.push(*amount);
    }
}

fn day(d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, d, 12, 0, 0).single().unwrap_or_default()
}

/// Appends one booking per element, each in its own append, with the given business day.
async fn book<S: EventStore>(
    store: &S,
    entries: &[(i64, u32)],
) -> Result<Vec<DateTime<Utc>>, Box<dyn std::error::Error>> {
    let stream = Ledger::stream_id("l")?;
    let mut recorded = Vec::new();
    for &(amount, occurred) in entries {
        let event = LedgerEvent::Booked { amount }.to_new_event()?.with_occurred_at(day(occurred));
        let result = store.append(&stream, ExpectedVersion::Any, vec![event]).await?;
        let read = store
            .read_stream_chunk(&stream, result.version, annals::Direction::Forward, 1, annals::StreamView::Current)
            .await?;
        recorded.push(read.first().ok_or("missing")?.recorded_at);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(recorded)
}

async fn every_axis<S: EventStore + Clone>(store: S) -> TestResult {
    let ledger = Repository::<Ledger, _>::new(store.clone());
    // Business days: 3, 1 (a late entry for an earlier day), 9 (future-dated: occurs after it is
    // recorded... in business terms, later than the others), 2.
    let recorded = book(&store, &[(10, 3), (20, 1), (30, 9), (40, 2)]).await?;
    let at = |as_of| ledger.load_as_of("l", as_of);

    // Versions.
    assert_eq!(at(AsOf::Version(Version::new(2))).await?.state.amounts, [10, 20]);
    assert_eq!(at(AsOf::Version(Version::ZERO)).await?.state.amounts, Vec::<i64>::new());
    assert_eq!(at(AsOf::Version(Version::new(99))).await?.version, Version::new(4));

    // Recorded time: inclusive at the exact time, nothing before the first.
    let second = at(AsOf::Recorded(recorded[1])).await?;
    assert_eq!((second.state.amounts, second.version), (vec![10, 20], Version::new(2)));
    let just_before = recorded[1] - chrono::Duration::microseconds(1);
    assert_eq!(at(AsOf::Recorded(just_before)).await?.state.amounts, [10]);
    assert_eq!(at(AsOf::Recorded(recorded[0] - chrono::Duration::seconds(1))).await?.version, Version::ZERO);

    // Occurred time: the events that occurred by then, applied in stream order (not business order).
    let occurred = at(AsOf::Occurred(day(3))).await?;
    assert_eq!((occurred.state.amounts, occurred.version), (vec![10, 20, 40], Version::new(4)));
    assert_eq!(at(AsOf::Occurred(day(1))).await?.state.amounts, [20]);
    assert_eq!(at(AsOf::Occurred(day(9))).await?.state.amounts, [10, 20, 30, 40]);

    // Bitemporal: true on day 3 according to what was recorded by the second append.
    let known = at(AsOf::Bitemporal { occurred: day(3), recorded: recorded[1] }).await?;
    assert_eq!(known.state.amounts, [10, 20]);
    let later = at(AsOf::Bitemporal { occurred: day(2), recorded: recorded[3] }).await?;
    assert_eq!(later.state.amounts, [20, 40]);
    Ok(())
}

#[tokio::test]
async fn every_axis_on_the_memory_store() -> TestResult {
    every_axis(MemoryStore::new()).await
}

#[tokio::test]
async fn every_axis_on_the_sled_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    every_axis(SledStore::open(dir.path())?).await
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn every_axis_on_the_postgres_store() -> TestResult {
    every_axis(common::postgres::fresh_config()?.open().await?).await
}

async fn as_of_a_version_or_recorded_time_reads_at_most_a_snapshot_interval<S: EventStore + Clone>(
    store: S,
) -> TestResult {
    let counting = Counting::new(store);
    let ledger = Repository::<Ledger, _>::new(counting.clone()).with_snapshots(SnapshotPolicy::every(10));
    let context = CommandContext::new();
    let mut recorded = Vec::new();
    for amount in 1..=95 {
        let committed = ledger.execute("l", amount, &context).await?;
        if amount == 57 {
            let stream = Ledger::stream_id("l")?;
            let read = counting
                .inner
                .read_stream_chunk(
                    &stream,
                    committed.version,
                    annals::Direction::Forward,
                    1,
                    annals::StreamView::Current,
                )
                .await?;
            recorded.push(read.first().ok_or("missing")?.recorded_at);
        }
    }
    counting.take_read();
    let at_57 = ledger.load_as_of("l", AsOf::Version(Version::new(57))).await?;
    assert_eq!(at_57.state.amounts, (1..=57).collect::<Vec<_>>());
    assert!(counting.take_read() <= 10, "from the snapshot at 50");

    let by_time = ledger.load_as_of("l", AsOf::Recorded(recorded[0])).await?;
    assert!(by_time.version >= Version::new(57), "at least up to event 57 (events may share its time)");
    assert_eq!(by_time.state.amounts, (1..=by_time.version.get() as i64).collect::<Vec<_>>());
    // A binary search over 95 versions (about 7 probes of one event) plus the tail after a snapshot.
    assert!(counting.take_read() <= 7 + 10, "bounded by the search and the snapshot interval");
    Ok(())
}

#[tokio::test]
async fn as_of_a_version_or_recorded_time_reads_at_most_a_snapshot_interval_on_the_memory_store() -> TestResult {
    as_of_a_version_or_recorded_time_reads_at_most_a_snapshot_interval(MemoryStore::new()).await
}

#[tokio::test]
async fn as_of_a_version_or_recorded_time_reads_at_most_a_snapshot_interval_on_the_sled_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    as_of_a_version_or_recorded_time_reads_at_most_a_snapshot_interval(SledStore::open(dir.path())?).await
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn as_of_a_version_or_recorded_time_reads_at_most_a_snapshot_interval_on_the_postgres_store() -> TestResult {
    let store = common::postgres::fresh_config()?.open().await?;
    as_of_a_version_or_recorded_time_reads_at_most_a_snapshot_interval(store).await
}
