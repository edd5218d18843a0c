//! Time travel across a stream's lives: an aggregate whose stream was soft-deleted and started again
//! is read, at a point in the past, from the life it was in then (by version and by recorded time),
//! with its snapshots of the new life; a truncated stream still travels back until a scavenge; a
//! hard-deleted one answers `StreamDeleted`. On the memory, sled and (feature `postgres`)
//! PostgreSQL stores.

#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use annals::{
    scavenge, AsOf, CommandContext, DeleteMode, Error, EventStore, ExpectedVersion, MemoryStore, Repository,
    ScavengeOptions, SledStore, SnapshotPolicy, StreamId, Version,
};
use chrono::{DateTime, Utc};
use common::bank::{Account, AccountCommand};

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn deposit<S: EventStore>(accounts: &Repository<Account, S>, id: &str, cents: u64) -> TestResult {
    accounts.execute(id, AccountCommand::Deposit { amount_cents: cents }, &CommandContext::new()).await?;
    Ok(())
}

/// A moment strictly between what was recorded before and what is recorded after.
async fn moment() -> DateTime<Utc> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let now = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    now
}

async fn time_travel_across_lives<S: EventStore + Clone>(store: S) -> TestResult {
    let accounts = Repository::<Account, _>::new(store.clone()).with_snapshots(SnapshotPolicy::every(2));
    let ctx = CommandContext::new();
    let stream = StreamId::new("account-ada")?;

    // First life: opened, 10 + 20 (versions 1 to 3).
    accounts.execute("ada", AccountCommand::Open { owner: "Ada".into() }, &ctx).await?;
    deposit(&accounts, "ada", 10).await?;
    deposit(&accounts, "ada", 20).await?;
    let in_first_life = moment().await;
    store.delete_stream(&stream, ExpectedVersion::Exact(Version::new(3)), DeleteMode::Soft).await?;
    let while_deleted = moment().await;
    // Second life: opened again, 5 (versions 4 and 5); snapshots are taken of the new life only.
    assert_eq!(accounts.load("ada").await?.state, Account::default(), "a soft-deleted aggregate is new");
    accounts.execute("ada", AccountCommand::Open { owner: "Ada Lovelace".into() }, &ctx).await?;
    deposit(&accounts, "ada", 5).await?;
    let now = accounts.load("ada").await?;
    assert_eq!((now.state.owner.as_deref(), now.state.balance_cents, now.version.get()), (Some("Ada Lovelace"), 5, 5));

    let at = |as_of| accounts.load_as_of("ada", as_of);
    let v2 = at(AsOf::Version(Version::new(2))).await?;
    assert_eq!((v2.state.owner.as_deref(), v2.state.balance_cents, v2.version.get()), (Some("Ada"), 10, 2));
    let v3 = at(AsOf::Version(Version::new(3))).await?;
    assert_eq!((v3.state.balance_cents, v3.version.get()), (30, 3));
    let v4 = at(AsOf::Version(Version::new(4))).await?;
    assert_eq!((v4.state.owner.as_deref(), v4.state.balance_cents), (Some("Ada Lovelace"), 0), "the new life only");
    // The same without snapshots: the events of the new life alone.
    let plain = Repository::<Account, _>::new(store.clone());
    let v5 = plain.load_as_of("ada", AsOf::Version(Version::new(5))).await?;
    assert_eq!((v5.state.owner.as_deref(), v5.state.balance_cents), (Some("Ada Lovelace"), 5), "the new life only");
    let first = at(AsOf::Recorded(in_first_life)).await?;
    assert_eq!((first.state.balance_cents, first.version.get()), (30, 3));
    let deleted = at(AsOf::Recorded(while_deleted)).await?;
    assert_eq!(deleted.state, Account::default(), "between the delete and the new life: nothing");
    let latest = at(AsOf::Recorded(Utc::now())).await?;
    assert_eq!((latest.state.balance_cents, latest.version.get()), (5, 5));

    // Truncation: time travel reads below it until a scavenge removes the events.
    let bob = StreamId::new("account-bob")?;
    accounts.execute("bob", AccountCommand::Open { owner: "Bob".into() }, &ctx).await?;
    for cents in [1, 2, 3, 4] {
        deposit(&accounts, "bob", cents).await?;
    }
    store.truncate_stream(&bob, Version::new(4)).await?;
    assert_eq!(accounts.load_as_of("bob", AsOf::Version(Version::new(3))).await?.state.balance_cents, 3);
    assert_eq!(accounts.load("bob").await?.state.balance_cents, 10, "from the snapshot at version 4");

    // A hard-deleted stream is gone for time travel too, and a scavenge removes the first life.
    store.delete_stream(&bob, ExpectedVersion::Any, DeleteMode::Hard).await?;
    let error = accounts.load_as_of("bob", AsOf::Version(Version::new(2))).await.err().ok_or("bob loaded")?;
    assert!(matches!(&error, Error::StreamDeleted { stream } if *stream == bob), "{error:?}");
    scavenge(&store, ScavengeOptions::new(), |_| {}).await?;
    let gone = at(AsOf::Version(Version::new(3))).await?;
    assert_eq!(gone.state, Account::default(), "the first life was scavenged");
    assert_eq!(at(AsOf::Version(Version::new(5))).await?.state.balance_cents, 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_across_lives_memory() -> TestResult {
    time_travel_across_lives(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_across_lives_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    time_travel_across_lives(std::sync::Arc::new(SledStore::open(dir.path())?)).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_across_lives_postgres() -> TestResult {
    time_travel_across_lives(common::postgres::fresh_config()?.open().await?).await
}
