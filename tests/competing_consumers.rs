//! Competing consumers: the workers of one subscription group share its partitions, each partition
//! held by exactly one worker; every event is handled exactly once overall and each stream's events
//! in version order, even with workers running concurrently; a worker that leaves (stopped, or its
//! handles dropped) hands its partitions to the others from its committed checkpoint, repeating
//! nothing; a group configured with another partition count than the saved one is refused. Each
//! property runs on both stores.

#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "postgres")]
#[path = "common/postgres.rs"]
mod postgres_support;
#[path = "common/subscriptions.rs"]
mod subscriptions;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use annals::{
    Error, EventStore, MemoryStore, Position, SledStore, Subscription, SubscriptionConfig, SubscriptionGroup,
    SubscriptionHandle,
};
use subscriptions::{append, eventually, interleave, versions_by_stream, Log, Probe, Seen, TestResult, WAIT};

const PARTITIONS: u32 = 8;

fn streams(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// `config` with [`PARTITIONS`], committing live progress only when a partition is handed over (or
/// after 1,000 events): what a worker handled live is uncommitted until it leaves. On PostgreSQL,
/// whose workers share partitions through leases, a short lease makes handovers quick.
fn live_only(config: SubscriptionConfig) -> SubscriptionConfig {
    config
        .partitions(PARTITIONS)
        .checkpoint_every(1_000)
        .checkpoint_interval(Duration::from_secs(3600))
        .lease_ttl(Duration::from_millis(600))
}

/// A PostgreSQL store in a fresh schema of the test binary's throwaway cluster.
#[cfg(feature = "postgres")]
async fn postgres() -> Result<annals::PostgresStore, annals::Error> {
    postgres_support::fresh_config()?.open().await
}

/// Whether every partition is held by exactly one of `workers` (by id), and each of them holds some.
fn settled(assignment: &[(u64, Vec<u32>)], workers: &[u64]) -> bool {
    let members: Vec<u64> = assignment.iter().map(|(w, _)| *w).collect();
    let mut held: Vec<u32> = assignment.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    held.sort_unstable();
    members == workers
        && held == (0..PARTITIONS).collect::<Vec<_>>()
        && assignment.iter().all(|(_, partitions)| !partitions.is_empty())
}

/// Checks that `seen` has each position in 1..=`last` exactly once.
fn exactly_once(seen: &[Seen], last: Position) {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for s in seen {
        *counts.entry(s.position).or_default() += 1;
    }
    let missing: Vec<u64> = (1..=last.get()).filter(|p| !counts.contains_key(p)).collect();
    let twice: Vec<u64> = counts.iter().filter(|(_, &n)| n > 1).map(|(&p, _)| p).collect();
    assert!(missing.is_empty(), "never handled: {missing:?}");
    assert!(twice.is_empty(), "handled more than once: {twice:?}");
    assert_eq!(counts.len() as u64, last.get(), "nothing past the head");
}

/// Checks that, in handling order, each stream's versions go 1, 2, 3, ... up to its last.
fn streams_in_version_order(seen: &[Seen]) {
    for (stream, versions) in versions_by_stream(seen) {
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, expected, "stream {stream}: versions in handling order");
    }
}

// 11. Every partition to exactly one worker; every event once; streams in order.

async fn workers_share_the_partitions_and_handle_every_event_once_in_stream_order<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    let names = streams("parcel", 24);
    interleave(&store, &names, 3).await?;
    // Only catching up and handing partitions over commit while the test runs, so that a handover
    // that lost progress would show as repeats.
    let group = SubscriptionGroup::new(store.clone(), live_only(SubscriptionConfig::new("shipping"))).await?;
    let log = Log::default();
    let mut workers: Vec<SubscriptionHandle> = Vec::new();
    // Each worker joins while a writer appends (and the workers already in handle live events).
    for label in 0..3 {
        let writer = {
            let store = store.clone();
            let names = names.clone();
            tokio::spawn(async move { interleave(&store, &names, 2).await.map_err(|e| e.to_string()) })
        };
        workers.push(group.join(Probe::new(&log).worker(label)).await?);
        writer.await??;
        let head = store.head().await?;
        workers[0].wait_for(head, WAIT).await?;
    }
    let ids: Vec<u64> = workers.iter().map(SubscriptionHandle::worker_id).collect();
    eventually("every partition is held by exactly one of the three workers", || settled(&group.assignment(), &ids))
        .await?;
    // And all three at work at once.
    let (first, second) = names.split_at(names.len() / 2);
    let writers = [first.to_vec(), second.to_vec()].map(|names| {
        let store = store.clone();
        tokio::spawn(async move { interleave(&store, &names, 3).await.map_err(|e| e.to_string()) })
    });
    for writer in writers {
        writer.await??;
    }
    let last = store.head().await?;
    for worker in &workers {
        worker.wait_for(last, WAIT).await?;
    }

    let assignment = group.assignment();
    let mut sizes: Vec<usize> = assignment.iter().map(|(_, p)| p.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![2, 3, 3], "eight partitions spread evenly over three workers: {assignment:?}");
    let seen = log.seen();
    exactly_once(&seen, last);
    streams_in_version_order(&seen);
    let busy: BTreeSet<usize> = seen.iter().map(|s| s.worker).collect();
    assert_eq!(busy.len(), 3, "every worker took part: {busy:?}");
    assert_eq!(group.lag(), 0);
    for worker in workers {
        worker.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_the_partitions_and_handle_every_event_once_in_stream_order_memory() -> TestResult {
    workers_share_the_partitions_and_handle_every_event_once_in_stream_order(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_the_partitions_and_handle_every_event_once_in_stream_order_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    workers_share_the_partitions_and_handle_every_event_once_in_stream_order(SledStore::open(dir.path())?).await
}

// 12. Rebalancing when a worker leaves.

/// How a worker leaves the group.
#[derive(Clone, Copy, Debug)]
enum Leave {
    Stop,
    DropHandles,
}

async fn a_leaving_worker_hands_its_partitions_over_without_repeats<S>(store: S, leave: Leave) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    let names = streams("cargo", 30);
    let group = SubscriptionGroup::new(store.clone(), live_only(SubscriptionConfig::new("loading"))).await?;
    let log = Log::default();
    let mut workers: Vec<SubscriptionHandle> = Vec::new();
    for label in 0..3 {
        workers.push(group.join(Probe::new(&log).worker(label)).await?);
    }
    let ids: Vec<u64> = workers.iter().map(SubscriptionHandle::worker_id).collect();
    eventually("the three workers share the partitions", || settled(&group.assignment(), &ids)).await?;

    // The writer writes half its rounds, waits for the leaver to be gone, then writes the rest: the
    // leaver leaves mid-stream however slowly the workers run (on a busy machine the writer once
    // finished before the leaver left, and the survivors had nothing of its streams left to handle).
    let (gone, leaver_gone) = tokio::sync::oneshot::channel::<()>();
    let writer = {
        let store = store.clone();
        let names = names.clone();
        tokio::spawn(async move {
            let mut leaver_gone = Some(leaver_gone);
            for round in 0..12 {
                if round == 6 {
                    if let Some(gone) = leaver_gone.take() {
                        gone.await.map_err(|e| e.to_string())?;
                    }
                }
                interleave(&store, &names, 1).await.map_err(|e| e.to_string())?;
                tokio::time::sleep(Duration::from_millis(2 * (round % 3))).await;
            }
            Ok::<_, String>(())
        })
    };
    // Mid-stream: the leaving worker has handled some events, and more are coming.
    eventually("the second worker handled some events", || log.count_by(1) >= 20).await?;
    let leaving = workers.remove(1);
    let left_id = leaving.worker_id();
    match leave {
        Leave::Stop => leaving.stop().await?,
        Leave::DropHandles => drop(leaving),
    }
    let survivors = [ids[0], ids[2]];
    eventually("the survivors hold every partition", || settled(&group.assignment(), &survivors)).await?;
    let handled_by_leaver = log.count_by(1);
    gone.send(()).map_err(|()| "the writer stopped early")?;
    writer.await??;
    let last = store.head().await?;
    for worker in &workers {
        worker.wait_for(last, WAIT).await?;
    }

    assert!(group.assignment().iter().all(|(w, _)| *w != left_id), "the worker left the group");
    assert_eq!(log.count_by(1), handled_by_leaver, "a worker that left handles nothing more");
    let seen = log.seen();
    for worker in 0..3 {
        let own: Vec<Seen> = seen.iter().filter(|s| s.worker == worker).cloned().collect();
        for (stream, versions) in versions_by_stream(&own) {
            assert!(versions.windows(2).all(|w| w[0] < w[1]), "worker {worker}, stream {stream}: {versions:?}");
        }
    }
    // Each partition was committed on leaving: the survivors start after what the leaver handled.
    let by_leaver: BTreeSet<u64> = seen.iter().filter(|s| s.worker == 1).map(|s| s.position).collect();
    let repeated: Vec<u64> =
        seen.iter().filter(|s| s.worker != 1 && by_leaver.contains(&s.position)).map(|s| s.position).collect();
    assert!(repeated.is_empty(), "handled again after the handover: {repeated:?}");
    exactly_once(&seen, last);
    streams_in_version_order(&seen);
    let moved: BTreeSet<&str> = seen.iter().filter(|s| s.worker == 1).map(|s| s.stream.as_str()).collect();
    let taken_over = seen.iter().any(|s| s.worker != 1 && moved.contains(s.stream.as_str()));
    assert!(taken_over, "the leaver's streams went on with the survivors");
    for worker in workers {
        worker.stop().await?;
    }
    Ok(())
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_worker_hands_its_partitions_over_without_repeats_postgres() -> TestResult {
    a_leaving_worker_hands_its_partitions_over_without_repeats(postgres().await?, Leave::Stop).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_share_the_partitions_and_handle_every_event_once_in_stream_order_postgres() -> TestResult {
    workers_share_the_partitions_and_handle_every_event_once_in_stream_order(postgres().await?).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_partition_count_than_the_saved_one_is_refused_postgres() -> TestResult {
    another_partition_count_than_the_saved_one_is_refused(postgres().await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_worker_hands_its_partitions_over_without_repeats_memory() -> TestResult {
    a_leaving_worker_hands_its_partitions_over_without_repeats(MemoryStore::new(), Leave::Stop).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_hands_its_partitions_over_without_repeats_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    a_leaving_worker_hands_its_partitions_over_without_repeats(SledStore::open(dir.path())?, Leave::Stop).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_worker_hands_its_partitions_over_without_repeats() -> TestResult {
    a_leaving_worker_hands_its_partitions_over_without_repeats(MemoryStore::new(), Leave::DropHandles).await
}

// 13. The partition count is fixed for the life of a subscription.

async fn another_partition_count_than_the_saved_one_is_refused<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    const NAME: &str = "fixed";
    append(&store, "order-1", "OrderPlaced", 3).await?;
    append(&store, "order-2", "OrderPlaced", 3).await?;
    let config = |partitions| SubscriptionConfig::new(NAME).partitions(partitions);
    let log = Log::default();
    let subscription = Subscription::start(store.clone(), config(4), Probe::new(&log)).await?;
    subscription.wait_for(Position::new(6), WAIT).await?;
    subscription.stop().await?;
    assert_eq!(store.list_checkpoints(&format!("subscription/{NAME}/")).await?.len(), 4, "one per partition");

    for partitions in [1, 3, 8] {
        let group = SubscriptionGroup::new(store.clone(), config(partitions)).await;
        assert!(
            matches!(&group, Err(Error::Consumer { consumer, .. }) if consumer == NAME),
            "{partitions} partitions: {:?}",
            group.err()
        );
        let started = Subscription::start(store.clone(), config(partitions), Probe::new(&log)).await;
        assert!(matches!(started, Err(Error::Consumer { .. })), "{partitions} partitions: {:?}", started.err());
    }
    // The saved count still works, and goes on where it was.
    let again = Log::default();
    let subscription = Subscription::start(store.clone(), config(4), Probe::new(&again)).await?;
    let last = append(&store, "order-3", "OrderPlaced", 1).await?.last_position;
    subscription.wait_for(last, WAIT).await?;
    subscription.stop().await?;
    assert_eq!(again.positions(), vec![last.get()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_partition_count_than_the_saved_one_is_refused_memory() -> TestResult {
    another_partition_count_than_the_saved_one_is_refused(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_partition_count_than_the_saved_one_is_refused_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    another_partition_count_than_the_saved_one_is_refused(SledStore::open(dir.path())?).await
}
