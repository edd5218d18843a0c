//! Consumers keep working across scavenged ranges: a subscription that was down while a scavenge
//! removed events catches up from its checkpoint over the gaps and goes live; a projector that runs
//! through a scavenge (with appends going on) keeps going; a rebuild from the start, or from a
//! position inside a removed range, sees exactly the events still stored; and a log whose newest
//! events were removed leaves no consumer waiting for positions that will never come back. Each
//! property runs on the memory, the sled and (feature `postgres`) the PostgreSQL store.

#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "postgres")]
#[path = "common/postgres.rs"]
mod postgres;
#[path = "common/projections.rs"]
mod projections;
#[path = "common/subscriptions.rs"]
mod subscriptions;

use annals::{
    replay, scavenge, DeleteMode, EventStore, ExpectedVersion, MemoryStore, NewEvent, Position, Projector, ReadLog,
    ScavengeOptions, SledStore, Start, StreamId, Subscription, SubscriptionConfig, Until, Version,
};
use futures_util::TryStreamExt;
use projections::Recorder;
use subscriptions::{Log, Probe, TestResult, WAIT};

/// Appends `rounds` rounds of one event to each of `keep-<r % 4>` and `drop-<r % 3>`, so that kept
/// and removed events alternate through the log.
async fn interleaved<S: EventStore>(store: &S, rounds: usize) -> Result<Position, annals::Error> {
    let mut last = Position::ZERO;
    for round in 0..rounds {
        for stream in [format!("keep-{}", round % 4), format!("drop-{}", round % 3)] {
            let event = NewEvent::raw("Ticked", format!("{{\"round\":{round}}}"));
            last = store.append(&StreamId::new(stream)?, ExpectedVersion::Any, vec![event]).await?.last_position;
        }
    }
    Ok(last)
}

async fn stored_positions<S: EventStore>(store: &S, from: Position) -> Result<Vec<u64>, annals::Error> {
    let events: Vec<_> = store.read_log(ReadLog::from(from)).try_collect().await?;
    Ok(events.iter().map(|e| e.position.get()).collect())
}

async fn consumers_cross_scavenged_ranges<S: EventStore + Clone + 'static>(store: S) -> TestResult {
    // The subscription sees the first 600 events, then goes down.
    let before = interleaved(&store, 300).await?;
    let first = Log::default();
    let subscription = Subscription::start(store.clone(), SubscriptionConfig::new("stock"), Probe::new(&first)).await?;
    subscription.wait_for(before, WAIT).await?;
    subscription.stop().await?;
    assert_eq!(Subscription::checkpoint(&store, "stock").await?, Some(before));

    // A projector runs through everything that follows.
    let projector = Projector::in_memory(store.clone(), || Recorder::new("live")).run().await?;
    interleaved(&store, 300).await?;
    for n in 0..3 {
        store.delete_stream(&StreamId::new(format!("drop-{n}"))?, ExpectedVersion::Any, DeleteMode::Hard).await?;
    }
    store.truncate_stream(&StreamId::new("keep-0")?, Version::new(100)).await?;

    // Scavenge while another task appends.
    let writer = store.clone();
    let appending = tokio::spawn(async move {
        for round in 0..100 {
            let event = NewEvent::raw("During", format!("{{\"round\":{round}}}"));
            writer.append(&StreamId::new(format!("keep-{}", round % 4))?, ExpectedVersion::Any, vec![event]).await?;
        }
        Ok::<_, annals::Error>(())
    });
    let report = scavenge(&store, ScavengeOptions::new().chunk_size(64), |_| {}).await?;
    appending.await??;
    assert_eq!(report.removed, 600 + 99, "every drop-* event and keep-0 versions 1..=99: {report:?}");

    // Newest events removed: the log ends with a gap.
    let tail =
        store.append(&StreamId::new("tail-1")?, ExpectedVersion::NoStream, vec![NewEvent::raw("T", "{}")]).await?;
    store.delete_stream(&StreamId::new("tail-1")?, ExpectedVersion::Any, DeleteMode::Hard).await?;
    assert_eq!(store.scavenge_stream(&StreamId::new("tail-1")?).await?, 1);
    let head = store.head().await?;
    assert_eq!(head, tail.last_position, "the head stays where it was");

    let stored = stored_positions(&store, Position::FIRST).await?;
    assert_eq!(stored.len(), 1200 + 100 - 600 - 99);
    assert!(stored.last().copied() < Some(head.get()), "the newest position was removed");

    // The projector that ran through the scavenge got every event appended, once, in order, and
    // reaches the head although its last position is gone.
    projector.wait_for(head, WAIT).await?;
    {
        let state = projector.read().await?;
        let seen = state.positions();
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, once");
        let last_appended = stored.last().copied().unwrap_or(0);
        assert!(seen.contains(&last_appended), "saw the last event appended during the scavenge");
    }
    assert_eq!(projector.lag(), 0, "no lag left for positions that will never come back");
    projector.stop().await?;

    // The subscription comes back, catches up over the gaps from its checkpoint, then goes live.
    let second = Log::default();
    let subscription =
        Subscription::start(store.clone(), SubscriptionConfig::new("stock"), Probe::new(&second)).await?;
    tokio::time::timeout(WAIT, subscription.caught_up()).await??;
    let live =
        store.append(&StreamId::new("keep-9")?, ExpectedVersion::Any, vec![NewEvent::raw("After", "{}")]).await?;
    subscription.wait_for(live.last_position, WAIT).await?;
    let mut expected: Vec<u64> = stored.iter().copied().filter(|p| *p > before.get()).collect();
    expected.push(live.last_position.get());
    assert_eq!(second.positions(), expected, "exactly the stored events after the checkpoint, once, in order");
    assert_eq!(subscription.lag(), 0);
    subscription.stop().await?;

    // A rebuild from the start, and from a position inside a removed range, see what is stored.
    let mut all = stored.clone();
    all.push(live.last_position.get());
    let rebuilt = replay(&store, Recorder::new("rebuild"), Start::Beginning, Until::default()).await?;
    assert_eq!(rebuilt.positions(), all);
    let removed_position = (1..head.get()).find(|p| !all.contains(p)).ok_or("no gap")?;
    let from_gap =
        replay(&store, Recorder::new("gap"), Start::Position(Position::new(removed_position)), Until::default())
            .await?;
    assert_eq!(from_gap.positions(), all.iter().copied().filter(|p| *p > removed_position).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_cross_scavenged_ranges_memory() -> TestResult {
    consumers_cross_scavenged_ranges(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_cross_scavenged_ranges_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    consumers_cross_scavenged_ranges(SledStore::open(dir.path())?).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_cross_scavenged_ranges_postgres() -> TestResult {
    consumers_cross_scavenged_ranges(postgres::fresh_config()?.open().await?).await
}
