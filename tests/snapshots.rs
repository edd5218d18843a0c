//! Snapshots: loads start from the newest usable snapshot and replay only the tail; a snapshot with
//! another schema version, or one that does not decode, is ignored and the state is rebuilt from
//! events; the cache skips loads only while the stream has not moved.

#![allow(clippy::panic)] // failing the test with the unexpected outcome is the point

mod common;

use annals::{
    Aggregate, CommandContext, EventStore, MemoryStore, Repository, SledStore, Snapshot, SnapshotPolicy, Version,
};
use common::bank::{Account, AccountCommand};
use common::counting::Counting;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn history<S: EventStore>(repository: &Repository<Account, S>, deposits: u64) -> TestResult {
    let context = CommandContext::new();
    repository.execute("a1", AccountCommand::Open { owner: "ada".into() }, &context).await?;
    for amount_cents in 1..=deposits {
        repository.execute("a1", AccountCommand::Deposit { amount_cents }, &context).await?;
    }
    Ok(())
}

async fn loads_replay_only_the_tail_after_the_newest_snapshot<S: EventStore + Clone>(store: S) -> TestResult {
    let counting = Counting::new(store);
    let repository = Repository::<Account, _>::new(counting.clone()).with_snapshots(SnapshotPolicy::every(10));
    history(&repository, 25).await?;
    let stream = Account::stream_id("a1")?;
    let newest = counting.load_snapshot(&stream, Version::MAX).await?.ok_or("no snapshot")?;
    assert_eq!(newest.version, Version::new(20));
    assert_eq!(counting.load_snapshot(&stream, Version::new(19)).await?.map(|s| s.version), Some(Version::new(10)));
    counting.take_read();
    let loaded = repository.load("a1").await?;
    assert_eq!(counting.take_read(), 6, "versions 21..=26 only");
    assert_eq!(loaded.version, Version::new(26));
    assert_eq!(loaded.state.balance_cents, (1..=25).sum::<u64>());
    // The snapshot's `applied` counter proves the state came from it: 20 applied before it, 6 after.
    assert_eq!(loaded.state.applied, 26);
    Ok(())
}

async fn a_snapshot_of_another_schema_version_is_ignored<S: EventStore + Clone>(store: S) -> TestResult {
    let counting = Counting::new(store);
    let repository = Repository::<Account, _>::new(counting.clone()).with_snapshots(SnapshotPolicy::every(0));
    history(&repository, 9).await?;
    let stream = Account::stream_id("a1")?;
    let wrong = Account { owner: Some("mallory".into()), balance_cents: 999_999, applied: 10 };
    let snapshot =
        Snapshot::new(stream, Version::new(10), Account::SNAPSHOT_VERSION + 1, serde_json::to_string(&wrong)?);
    counting.save_snapshot(snapshot).await?;
    counting.take_read();
    let loaded = repository.load("a1").await?;
    assert_eq!(counting.take_read(), 10, "rebuilt from all events");
    assert_eq!(loaded.state.owner.as_deref(), Some("ada"));
    assert_eq!(loaded.state.balance_cents, (1..=9).sum::<u64>());
    Ok(())
}

async fn an_undecodable_snapshot_is_ignored_for_an_older_usable_one<S: EventStore + Clone>(store: S) -> TestResult {
    let counting = Counting::new(store);
    let repository = Repository::<Account, _>::new(counting.clone()).with_snapshots(SnapshotPolicy::every(5));
    history(&repository, 11).await?;
    let stream = Account::stream_id("a1")?;
    let garbage = Snapshot::new(stream, Version::new(10), Account::SNAPSHOT_VERSION, "{not json".into());
    counting.save_snapshot(garbage).await?;
    counting.take_read();
    let loaded = repository.load("a1").await?;
    assert_eq!(counting.take_read(), 7, "from the usable snapshot at version 5: versions 6..=12");
    assert_eq!((loaded.version.get(), loaded.state.balance_cents), (12, (1..=11).sum::<u64>()));
    Ok(())
}

async fn the_cache_skips_loads_until_the_stream_moves<S: EventStore + Clone>(store: S) -> TestResult {
    let counting = Counting::new(store);
    let repository = Repository::<Account, _>::new(counting.clone()).with_cache(16);
    history(&repository, 3).await?;
    counting.take_read();
    repository.execute("a1", AccountCommand::Deposit { amount_cents: 100 }, &CommandContext::new()).await?;
    assert_eq!(counting.take_read(), 0, "the cached state is current");
    // Someone else appends: the cache is stale and the next command reloads.
    let other = Repository::<Account, _>::new(counting.clone());
    other.execute("a1", AccountCommand::Deposit { amount_cents: 1000 }, &CommandContext::new()).await?;
    counting.take_read();
    let committed =
        repository.execute("a1", AccountCommand::Deposit { amount_cents: 1 }, &CommandContext::new()).await?;
    assert!(counting.take_read() > 0, "a stale cache entry is not used");
    assert_eq!(committed.version, Version::new(7));
    assert_eq!(repository.load("a1").await?.state.balance_cents, 6 + 100 + 1000 + 1);
    Ok(())
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test]
                async fn $name() -> super::TestResult {
                    super::$name(super::MemoryStore::new()).await
                }
            )*
        }
        mod sled_store {
            $(
                #[tokio::test]
                async fn $name() -> super::TestResult {
                    let dir = tempfile::tempdir()?;
                    super::$name(super::SledStore::open(dir.path())?).await
                }
            )*
        }
    };
}

on_both_stores!(
    loads_replay_only_the_tail_after_the_newest_snapshot,
    a_snapshot_of_another_schema_version_is_ignored,
    an_undecodable_snapshot_is_ignored_for_an_older_usable_one,
    the_cache_skips_loads_until_the_stream_moves,
);

/// Bytes damaged on disk in the snapshot tree are skipped like an undecodable snapshot.
#[tokio::test]
async fn a_damaged_snapshot_record_on_disk_is_skipped() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let repository =
            Repository::<Account, _>::new(SledStore::open(dir.path())?).with_snapshots(SnapshotPolicy::every(4));
        history(&repository, 8).await?;
    }
    {
        let db = open_raw(dir.path())?;
        let tree = db.open_tree("annals-snapshots")?;
        let newest = tree.iter().next_back().ok_or("no snapshot on disk")??;
        let mut damaged = newest.1.to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x55;
        tree.insert(newest.0, damaged)?;
        db.flush()?;
    }
    let counting = Counting::new(SledStore::open(dir.path())?);
    let repository = Repository::<Account, _>::new(counting.clone()).with_snapshots(SnapshotPolicy::every(4));
    let loaded = repository.load("a1").await?;
    assert_eq!(counting.take_read(), 5, "from the snapshot at version 4: versions 5..=9");
    assert_eq!(loaded.state.balance_cents, (1..=8).sum::<u64>());
    Ok(())
}

/// sled keeps its lock a few milliseconds after a store is dropped; retry briefly like the store does.
fn open_raw(path: &std::path::Path) -> Result<sled::Db, sled::Error> {
    let started = std::time::Instant::now();
    loop {
        match sled::open(path) {
            Err(sled::Error::Io(_)) if started.elapsed() < std::time::Duration::from_secs(2) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}
