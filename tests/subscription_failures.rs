//! What a subscription does when its handler fails: it retries as its policy says, waiting a doubling
//! backoff between attempts; an event that keeps failing is parked (listed with its error, kept
//! across restarts, never redelivered by itself, replayed or skipped on request) while the
//! subscription goes on; or, with `OnFailure::Stop`, the worker stops with `Error::Handler`, its
//! checkpoint before the event, which a restart delivers first.
//! Each property runs on both stores; the sled runs reopen the store across restarts. A handle kept
//! after its worker stopped answers waits with `Error::Consumer`.

#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/subscriptions.rs"]
mod subscriptions;

use std::time::Duration;

use annals::{
    Error, EventStore, MemoryStore, OnFailure, Position, RetryPolicy, SledStore, Subscription, SubscriptionConfig,
    SubscriptionHandle,
};
use subscriptions::{append, eventually, quick_retry, Faults, Log, Probe, TestResult, WAIT};

/// Reopens a store between runs: the same handle for memory, a fresh open of the directory for sled.
type Reopen<S> = Box<dyn FnMut(S) -> Result<S, Box<dyn std::error::Error>>>;

fn memory() -> (MemoryStore, Reopen<MemoryStore>) {
    (MemoryStore::new(), Box::new(Ok))
}

fn sled() -> Result<(SledStore, Reopen<SledStore>, tempfile::TempDir), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_owned();
    let reopen: Reopen<SledStore> = Box::new(move |store| {
        drop(store);
        Ok(SledStore::open(&path)?)
    });
    Ok((SledStore::open(dir.path())?, reopen, dir))
}

// 8. Retries.

async fn a_handler_that_fails_twice_succeeds_on_the_third_attempt<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    append(&store, "steady-1", "Counted", 1).await?;
    let flaky = append(&store, "flaky-1", "Counted", 1).await?.last_position;
    let last = append(&store, "steady-1", "Counted", 1).await?.last_position;
    let faults = Faults::default();
    faults.fail("flaky-1", 2);
    let log = Log::default();
    let config = SubscriptionConfig::new("retrying").retry(quick_retry(3));
    let subscription = Subscription::start(store.clone(), config, Probe::new(&log).faults(&faults)).await?;
    subscription.wait_for(last, WAIT).await?;
    assert_eq!(log.attempts(flaky.get()), 3, "two failures, then the success");
    assert_eq!(log.attempts(1), 1);
    assert_eq!(log.positions(), vec![1, 2, 3], "the event was handled, in its place");
    assert!(subscription.parked().await?.is_empty());
    subscription.stop().await?;
    assert!(Subscription::parked(&store, "retrying").await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_fails_twice_succeeds_on_the_third_attempt_memory() -> TestResult {
    a_handler_that_fails_twice_succeeds_on_the_third_attempt(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_fails_twice_succeeds_on_the_third_attempt_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    a_handler_that_fails_twice_succeeds_on_the_third_attempt(SledStore::open(dir.path())?).await
}

/// The waits between attempts double from the policy's first backoff. Only lower bounds are
/// asserted (40, 80 then 160 ms): a loaded machine may wait longer, never shorter.
async fn retries_wait_a_doubling_backoff<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    const FIRST: Duration = Duration::from_millis(40);
    let flaky = append(&store, "flaky-1", "Counted", 1).await?.last_position;
    let faults = Faults::default();
    faults.fail("flaky-1", 3);
    let log = Log::default();
    let retry = RetryPolicy::attempts(4).backoff(FIRST, Duration::from_secs(5));
    let config = SubscriptionConfig::new("backing-off").retry(retry);
    let subscription = Subscription::start(store.clone(), config, Probe::new(&log).faults(&faults)).await?;
    subscription.wait_for(flaky, WAIT).await?;
    subscription.stop().await?;
    let times = log.attempt_times(flaky.get());
    assert_eq!(times.len(), 4, "three failures, then the success");
    let waits: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (failures, wait) in (1..).zip(&waits) {
        let least = FIRST * 2u32.pow(failures - 1);
        assert!(*wait >= least, "after failure {failures} it waited {wait:?}, less than {least:?}: {waits:?}");
    }
    assert_eq!(log.positions(), vec![flaky.get()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_a_doubling_backoff_memory() -> TestResult {
    retries_wait_a_doubling_backoff(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_a_doubling_backoff_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    retries_wait_a_doubling_backoff(SledStore::open(dir.path())?).await
}

/// `RetryPolicy::never` tries once: a single failure parks the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_one_failure_parks() -> TestResult {
    let store = MemoryStore::new();
    let flaky = append(&store, "flaky-1", "Counted", 1).await?.last_position;
    let last = append(&store, "steady-1", "Counted", 1).await?.last_position;
    let faults = Faults::default();
    faults.fail("flaky-1", 1);
    let log = Log::default();
    let config = SubscriptionConfig::new("once").retry(annals::RetryPolicy::never());
    let subscription = Subscription::start(store.clone(), config, Probe::new(&log).faults(&faults)).await?;
    subscription.wait_for(last, WAIT).await?;
    assert_eq!(log.attempts(flaky.get()), 1);
    let parked = subscription.parked().await?;
    assert_eq!(parked.iter().map(|p| (p.position, p.attempts)).collect::<Vec<_>>(), vec![(flaky, 1)]);
    subscription.stop().await?;
    Ok(())
}

// 9. Parking.

async fn parked_positions(subscription: &SubscriptionHandle) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    Ok(subscription.parked().await?.iter().map(|p| p.position.get()).collect())
}

async fn events_that_keep_failing_are_parked_kept_replayed_and_skipped<S>(store: S, mut reopen: Reopen<S>) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    const NAME: &str = "parking";
    append(&store, "good-1", "Counted", 1).await?; // 1
    let first_bad = append(&store, "bad-1", "Refused", 1).await?.last_position; // 2
    append(&store, "good-1", "Counted", 1).await?; // 3
    let second_bad = append(&store, "bad-2", "Refused", 1).await?.last_position; // 4
    let last = append(&store, "good-2", "Counted", 1).await?.last_position; // 5
    let faults = Faults::default();
    faults.fail_always("bad-1");
    faults.fail_always("bad-2");
    let config = SubscriptionConfig::new(NAME).retry(quick_retry(3)).on_failure(OnFailure::Park);

    // It goes on past the failing events, and lists them.
    let log = Log::default();
    let subscription = Subscription::start(store.clone(), config.clone(), Probe::new(&log).faults(&faults)).await?;
    subscription.wait_for(last, WAIT).await?;
    assert_eq!(log.positions(), vec![1, 3, 5], "the subscription went on past the parked events");
    let parked = subscription.parked().await?;
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert_eq!((parked[0].position, parked[0].stream.as_str()), (first_bad, "bad-1"));
    assert_eq!((parked[1].position, parked[1].stream.as_str()), (second_bad, "bad-2"));
    for p in &parked {
        assert_eq!(p.event_type, "Refused");
        assert_eq!(p.attempts, 3, "parked after every attempt of the policy");
        assert_eq!(p.error, format!("refusing {} at position {}", p.stream, p.position));
        assert_eq!(log.attempts(p.position.get()), 3);
    }
    subscription.stop().await?;
    assert_eq!(Subscription::checkpoint(&store, NAME).await?, Some(last), "parking moves the checkpoint on");

    // Across a restart: still listed, not redelivered.
    let store = reopen(store)?;
    assert_eq!(Subscription::parked(&store, NAME).await?, parked, "saved with the checkpoint");
    let log = Log::default();
    let subscription = Subscription::start(store.clone(), config.clone(), Probe::new(&log).faults(&faults)).await?;
    let last = append(&store, "good-2", "Counted", 1).await?.last_position;
    subscription.wait_for(last, WAIT).await?;
    assert_eq!(log.positions(), vec![last.get()], "parked events are not redelivered by a restart");
    assert_eq!(log.attempts(first_bad.get()) + log.attempts(second_bad.get()), 0);
    assert_eq!(subscription.parked().await?, parked);

    // Replay: the healed one is handled and leaves the list, the other stays with its new error.
    faults.heal("bad-1");
    let replay = subscription.replay_parked().await?;
    assert_eq!(replay.handled, vec![first_bad]);
    assert_eq!(replay.failed, vec![second_bad]);
    assert_eq!(log.positions(), vec![last.get(), first_bad.get()], "the replay handed the event to the handler");
    let still = subscription.parked().await?;
    assert_eq!(still.len(), 1, "{still:?}");
    assert_eq!((still[0].position, still[0].attempts), (second_bad, 4), "one more attempt, counted");
    assert_eq!(Subscription::parked(&store, NAME).await?, still, "the replay is committed");

    // Skip: drops it; unknown positions are answered false.
    assert!(subscription.skip_parked(second_bad).await?);
    assert!(!subscription.skip_parked(second_bad).await?, "already skipped");
    assert!(!subscription.skip_parked(Position::new(999)).await?, "never parked");
    assert!(!subscription.skip_parked(Position::new(1)).await?, "handled, not parked");
    assert_eq!(parked_positions(&subscription).await?, Vec::<u64>::new());
    assert!(Subscription::parked(&store, NAME).await?.is_empty(), "the skip is committed");
    subscription.stop().await?;

    let store = reopen(store)?;
    assert!(Subscription::parked(&store, NAME).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_keep_failing_are_parked_kept_replayed_and_skipped_memory() -> TestResult {
    let (store, reopen) = memory();
    events_that_keep_failing_are_parked_kept_replayed_and_skipped(store, reopen).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_keep_failing_are_parked_kept_replayed_and_skipped_sled() -> TestResult {
    let (store, reopen, _dir) = sled()?;
    events_that_keep_failing_are_parked_kept_replayed_and_skipped(store, reopen).await
}

// 10. OnFailure::Stop.

async fn on_failure_stop_ends_the_worker_before_the_event<S>(store: S, mut reopen: Reopen<S>) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    const NAME: &str = "strict";
    append(&store, "good-1", "Counted", 2).await?; // 1, 2
    let broken = append(&store, "broken-1", "Refused", 1).await?.last_position; // 3
    let last = append(&store, "good-1", "Counted", 2).await?.last_position; // 4, 5
    let faults = Faults::default();
    faults.fail_always("broken-1");
    let config = SubscriptionConfig::new(NAME).retry(quick_retry(2)).on_failure(OnFailure::Stop);

    let log = Log::default();
    let subscription = Subscription::start(store.clone(), config.clone(), Probe::new(&log).faults(&faults)).await?;
    // The last attempt fails; the worker then stops without taking another command.
    eventually("the handler was tried twice on the broken event", || log.attempts(broken.get()) == 2).await?;
    let stopped = subscription.stop().await;
    assert!(
        matches!(&stopped, Err(Error::Handler { consumer, position, attempts: 2, source })
            if consumer == NAME && *position == broken && source.to_string() == "refusing broken-1 at position 3"),
        "{stopped:?}"
    );
    assert_eq!(log.positions(), vec![1, 2], "nothing after the failing event");
    assert_eq!(Subscription::checkpoint(&store, NAME).await?, Some(Position::new(2)), "the checkpoint is before it");
    assert!(Subscription::parked(&store, NAME).await?.is_empty(), "stopping parks nothing");

    // Fixed: a restart delivers the failing event first.
    faults.heal("broken-1");
    let store = reopen(store)?;
    let log = Log::default();
    let subscription = Subscription::start(store.clone(), config, Probe::new(&log).faults(&faults)).await?;
    subscription.wait_for(last, WAIT).await?;
    assert_eq!(log.positions(), vec![3, 4, 5]);
    subscription.stop().await?;
    assert_eq!(Subscription::checkpoint(&store, NAME).await?, Some(last));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_stop_ends_the_worker_before_the_event_memory() -> TestResult {
    let (store, reopen) = memory();
    on_failure_stop_ends_the_worker_before_the_event(store, reopen).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_stop_ends_the_worker_before_the_event_sled() -> TestResult {
    let (store, reopen, _dir) = sled()?;
    on_failure_stop_ends_the_worker_before_the_event(store, reopen).await
}

/// Starts a subscription that stops on its first event; returns a clone of its handle, kept after
/// `stop` returned the handler's error.
async fn a_stopped_subscription(
    name: &str,
) -> Result<(MemoryStore, SubscriptionHandle, Position), Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    let broken = append(&store, "broken-1", "Refused", 1).await?.last_position;
    let faults = Faults::default();
    faults.fail_always("broken-1");
    let config = SubscriptionConfig::new(name).retry(quick_retry(1)).on_failure(OnFailure::Stop);
    let log = Log::default();
    let subscription = Subscription::start(store.clone(), config, Probe::new(&log).faults(&faults)).await?;
    let kept = subscription.clone();
    eventually("the handler failed on the event", || log.attempts(broken.get()) == 1).await?;
    let stopped = subscription.stop().await;
    assert!(matches!(stopped, Err(Error::Handler { .. })), "{stopped:?}");
    let parked = kept.parked().await;
    assert!(matches!(parked, Err(Error::Consumer { .. })), "parked(): {parked:?}");
    Ok((store, kept, broken))
}

/// `wait_for` on a handle whose worker stopped answers `Error::Consumer` (as documented), not a
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_on_a_stopped_worker_answers_consumer() -> TestResult {
    let (_store, kept, broken) = a_stopped_subscription("stopped-wait").await?;
    let waited = kept.wait_for(broken, WAIT).await;
    assert!(matches!(waited, Err(Error::Consumer { .. })), "wait_for(): {waited:?}");
    Ok(())
}

/// `caught_up` on a handle whose worker stopped before catching up answers `Error::Consumer` (as
/// documented) instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caught_up_on_a_stopped_worker_answers_consumer() -> TestResult {
    let (_store, kept, _) = a_stopped_subscription("stopped-catch-up").await?;
    let caught_up = tokio::time::timeout(WAIT, kept.caught_up()).await;
    assert!(matches!(caught_up, Ok(Err(Error::Consumer { .. }))), "caught_up(): {caught_up:?}");
    Ok(())
}
