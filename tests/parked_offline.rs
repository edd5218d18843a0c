//! Tools can act on a stopped subscription's parked events: `Subscription::requeue_parked` has the
//! next worker hand them to its handler again before going on, `Subscription::skip_parked` drops them.
#![allow(missing_docs)]

#[path = "common/subscriptions.rs"]
mod subscriptions;

use annals::{OnFailure, Position, SledStore, Subscription, SubscriptionConfig};
use subscriptions::{append, quick_retry, Faults, Log, Probe, TestResult, WAIT};

fn config() -> SubscriptionConfig {
    SubscriptionConfig::new("mailer").retry(quick_retry(2)).on_failure(OnFailure::Park)
}

/// Runs the subscription over a log where stream `bad` fails: its event at position 2 gets parked.
async fn park_one(store: &SledStore, faults: &Faults, log: &Log) -> TestResult {
    append(store, "good", "E", 1).await?;
    append(store, "bad", "E", 1).await?;
    append(store, "good", "E", 1).await?;
    faults.fail_always("bad");
    let running = Subscription::start(store.clone(), config(), Probe::new(log).faults(faults)).await?;
    running.wait_for(Position::new(3), WAIT).await?;
    running.stop().await?;
    let parked = Subscription::parked(store, "mailer").await?;
    assert_eq!(parked.iter().map(|p| (p.position.get(), p.requeued)).collect::<Vec<_>>(), [(2, false)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_parked_event_is_handled_by_the_next_worker_and_leaves_the_list() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path())?;
    let (faults, log) = (Faults::default(), Log::default());
    park_one(&store, &faults, &log).await?;

    assert_eq!(Subscription::requeue_parked(&store, "mailer", Some(Position::new(99))).await?, 0);
    assert_eq!(Subscription::requeue_parked(&store, "mailer", None).await?, 1);
    assert!(Subscription::parked(&store, "mailer").await?[0].requeued);

    faults.heal("bad");
    let before = log.len();
    let running = Subscription::start(store.clone(), config(), Probe::new(&log).faults(&faults)).await?;
    running.caught_up().await?;
    subscriptions::eventually("the parked event is handled", || log.len() > before).await?;
    running.stop().await?;
    assert_eq!(log.positions()[before..], [2]);
    assert!(Subscription::parked(&store, "mailer").await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_event_that_fails_again_stays_parked_and_is_not_retried_forever() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path())?;
    let (faults, log) = (Faults::default(), Log::default());
    park_one(&store, &faults, &log).await?;
    Subscription::requeue_parked(&store, "mailer", Some(Position::new(2))).await?;

    let running = Subscription::start(store.clone(), config(), Probe::new(&log).faults(&faults)).await?;
    running.caught_up().await?;
    running.stop().await?;
    let parked = Subscription::parked(&store, "mailer").await?;
    assert_eq!(parked.iter().map(|p| (p.position.get(), p.requeued)).collect::<Vec<_>>(), [(2, false)]);
    assert_eq!(parked[0].attempts, 3, "two attempts, then one more when requeued");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_parked_event_is_dropped_and_never_handled() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path())?;
    let (faults, log) = (Faults::default(), Log::default());
    park_one(&store, &faults, &log).await?;
    assert_eq!(Subscription::skip_parked(&store, "mailer", Some(Position::new(7))).await?, 0);
    assert_eq!(Subscription::skip_parked(&store, "mailer", Some(Position::new(2))).await?, 1);
    assert!(Subscription::parked(&store, "mailer").await?.is_empty());

    faults.heal("bad");
    let before = log.len();
    let running = Subscription::start(store.clone(), config(), Probe::new(&log).faults(&faults)).await?;
    running.caught_up().await?;
    running.stop().await?;
    assert_eq!(log.len(), before, "nothing comes again");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_every_saved_subscription_and_keeps_a_name_with_a_slash_apart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path())?;
    let (faults, log) = (Faults::default(), Log::default());
    park_one(&store, &faults, &log).await?;
    append(&store, "good", "E", 2).await?;
    // "mailer/0" saves under subscription/mailer/0/0, beside mailer's subscription/mailer/0.
    let other = SubscriptionConfig::new("mailer/0").partitions(2).start(annals::Start::Position(Position::new(4)));
    let running = Subscription::start(store.clone(), other, Probe::new(&Log::default())).await?;
    running.wait_for(Position::new(5), WAIT).await?;
    running.stop().await?;

    let listed = Subscription::list(&store).await?;
    let summary: Vec<_> =
        listed.iter().map(|s| (s.name.as_str(), s.partitions, s.checkpoint.get(), s.parked.len())).collect();
    assert_eq!(summary, [("mailer", 1, 3, 1), ("mailer/0", 2, 5, 0)]);
    assert_eq!(listed[1].checkpoints.len(), 2);
    assert_eq!(Subscription::checkpoint(&store, "mailer").await?, Some(Position::new(3)));
    assert_eq!(Subscription::parked(&store, "mailer/0").await?.len(), 0);
    // And mailer still starts: the other's checkpoints are not taken for a second partition.
    let again = Subscription::start(store.clone(), config(), Probe::new(&log)).await?;
    again.wait_for(Position::new(5), WAIT).await?;
    again.stop().await?;
    Ok(())
}
