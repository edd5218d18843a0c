//! What a subscription delivers, and what it saves: every position once and in order, catch-up then
//! live with nothing missed at the switch while others append; a restart resumes after the last event
//! handled (stop commits); checkpoints are batched (by count, by interval, on catching up) and never
//! pass an event not handled yet; filters and start options decide exactly which events come;
//! independent subscriptions read at their own pace without holding back each other or the writers;
//! a read-your-writes wait times out when the handler is stuck. Properties run on both stores where that is cheap, on sled where persistence is
//! the point.

#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "postgres")]
#[path = "common/postgres.rs"]
mod postgres_support;

#[path = "common/subscriptions.rs"]
mod subscriptions;

use std::time::Duration;

use annals::{
    Error, EventStore, ExpectedVersion, LogFilter, MemoryStore, NewEvent, Phase, Position, ReadLog, SledStore, Start,
    StreamAppend, StreamId, Subscription, SubscriptionConfig,
};
use chrono::{SubsecRound, TimeDelta, Utc};
use futures_util::TryStreamExt;
use subscriptions::{append, eventually, Gate, Log, Probe, TestResult, WAIT};

/// A checkpoint policy that never commits by itself while the test looks: only on catching up, on
/// stop, and every `every` events.
fn committing_every(name: &str, every: u64) -> SubscriptionConfig {
    SubscriptionConfig::new(name).checkpoint_every(every).checkpoint_interval(Duration::from_secs(3600))
}

fn range(from: u64, to: u64) -> Vec<u64> {
    (from..=to).collect()
}

// 1. Catch-up then live, under concurrent appends.

async fn every_position_once_in_order_catch_up_then_live<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    // More than one page of catch-up, over several streams.
    for stream in ["warm-1", "warm-2", "warm-3"] {
        append(&store, stream, "Before", 250).await?;
    }
    let writer = store.clone();
    let appending = tokio::spawn(async move {
        for round in 0..150 {
            let events = |n: usize| (0..n).map(|_| NewEvent::raw("During", "{}")).collect::<Vec<_>>();
            let appends = vec![
                StreamAppend::new(StreamId::new(format!("live-{}", round % 7))?, ExpectedVersion::Any, events(2)),
                StreamAppend::new(StreamId::new(format!("other-{}", round % 5))?, ExpectedVersion::Any, events(1)),
            ];
            writer.append_multi(appends).await?;
            if round % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok::<_, annals::Error>(())
    });

    let log = Log::default();
    let subscription = Subscription::start(store.clone(), SubscriptionConfig::new("audit"), Probe::new(&log)).await?;
    let caught_up = tokio::time::timeout(WAIT, subscription.caught_up()).await??;
    appending.await??;
    // Whatever the race, some events arrive after the switch.
    let last = append(&store, "after-1", "After", 3).await?.last_position;
    subscription.wait_for(last, WAIT).await?;

    let seen = log.seen();
    let positions: Vec<u64> = seen.iter().map(|s| s.position).collect();
    assert_eq!(positions, range(1, last.get()), "every position once, in log order");
    assert!(caught_up.get() >= 750, "caught up with {caught_up}, before the events stored at start");
    assert!(caught_up < last, "caught up with {caught_up}, after the events appended after it");
    for s in &seen {
        let expected = if s.position <= caught_up.get() { Phase::CatchUp } else { Phase::Live };
        assert_eq!(s.phase, expected, "phase of position {} (caught up with {caught_up})", s.position);
    }
    let switch = seen.iter().position(|s| s.phase == Phase::Live).unwrap_or(seen.len());
    assert!(seen[switch..].iter().all(|s| s.phase == Phase::Live), "no catch-up delivery after a live one");
    assert_eq!(subscription.lag(), 0);
    subscription.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_position_once_in_order_catch_up_then_live_memory() -> TestResult {
    every_position_once_in_order_catch_up_then_live(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_position_once_in_order_catch_up_then_live_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    every_position_once_in_order_catch_up_then_live(SledStore::open(dir.path())?).await
}

// 2. A restart resumes from the checkpoint.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_after_the_last_event_handled() -> TestResult {
    const NAME: &str = "mailer";
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path())?;
    append(&store, "order-1", "OrderPlaced", 3).await?;
    append(&store, "order-2", "OrderPlaced", 2).await?;

    // First run: catches up on 1..=5, then handles 6..=8 live; only stop commits those.
    let first = Log::default();
    let subscription = Subscription::start(store.clone(), committing_every(NAME, 1_000), Probe::new(&first)).await?;
    let caught_up = subscription.caught_up().await?;
    // Catching up commits, right after `caught_up` answers (neither the count nor the hour-long
    // interval would).
    eventually("catching up commits", || subscription.checkpoint() == caught_up).await?;
    assert_eq!(Subscription::checkpoint(&store, NAME).await?, Some(Position::new(5)));
    let last = append(&store, "order-1", "OrderPaid", 3).await?.last_position;
    subscription.wait_for(last, WAIT).await?;
    let before_stop = Subscription::checkpoint(&store, NAME).await?;
    assert!(before_stop.is_none_or(|c| c < last), "live progress is not committed before stop: {before_stop:?}");
    subscription.stop().await?;
    assert_eq!(first.positions(), range(1, 8));
    assert_eq!(Subscription::checkpoint(&store, NAME).await?, Some(last), "stop commits the last event handled");
    let saved = store.load_checkpoint(&format!("subscription/{NAME}/0")).await?.ok_or("no partition checkpoint")?;
    assert_eq!(saved.position, last);

    // Second run on the same store: only what came after.
    let second = Log::default();
    let subscription = Subscription::start(store.clone(), committing_every(NAME, 1_000), Probe::new(&second)).await?;
    subscription.caught_up().await?;
    let last = append(&store, "order-3", "OrderPlaced", 2).await?.last_position;
    subscription.wait_for(last, WAIT).await?;
    subscription.stop().await?;
    assert_eq!(second.positions(), range(9, 10), "the second run starts after the first run's last event");
    assert_eq!(Subscription::checkpoint(&store, NAME).await?, Some(last));

    // Third run, after the store was closed and opened again: the checkpoint was durable.
    drop(store);
    let store = SledStore::open(dir.path())?;
    let last = append(&store, "order-4", "OrderPlaced", 1).await?.last_position;
    let third = Log::default();
    let subscription = Subscription::start(store.clone(), committing_every(NAME, 1_000), Probe::new(&third)).await?;
    subscription.wait_for(last, WAIT).await?;
    subscription.stop().await?;
    assert_eq!(third.positions(), vec![11], "after reopening, only the event appended meanwhile");
    Ok(())
}

// 3. Checkpoints are batched and never past an event not handled yet.

/// Live events one at a time: the checkpoint follows every tenth event, and is before the event the
/// handler is stuck on.
async fn live_checkpoints_are_batched_and_before_the_stuck_event<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    const NAME: &str = "batched";
    const STUCK: u64 = 25;
    let log = Log::default();
    let gate = Gate::at(STUCK);
    let probe = Probe::new(&log).gate(&gate);
    let subscription = Subscription::start(store.clone(), committing_every(NAME, 10), probe).await?;
    subscription.caught_up().await?;
    for i in 1..STUCK {
        let at = append(&store, &format!("batched-{}", i % 3), "Counted", 1).await?.last_position;
        subscription.wait_for(at, WAIT).await?;
    }
    append(&store, "batched-0", "Counted", 1).await?;
    gate.reached().await?;

    let checkpoint = Subscription::checkpoint(&store, NAME).await?.ok_or("nothing was committed")?.get();
    let saved = store.load_checkpoint(&format!("subscription/{NAME}/0")).await?.ok_or("no partition checkpoint")?;
    assert_eq!(saved.position.get(), checkpoint);
    assert!(checkpoint < STUCK, "checkpoint {checkpoint} passed the event the handler is stuck on");
    assert!(checkpoint < STUCK - 1, "checkpoint {checkpoint}: committed after every event, not in batches");
    assert!(checkpoint >= STUCK - 1 - 10, "checkpoint {checkpoint}: more than 10 handled events uncommitted");

    gate.open();
    subscription.wait_for(Position::new(STUCK), WAIT).await?;
    subscription.stop().await?;
    assert_eq!(Subscription::checkpoint(&store, NAME).await?, Some(Position::new(STUCK)));
    assert_eq!(log.positions(), range(1, STUCK));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_checkpoints_are_batched_and_before_the_stuck_event_memory() -> TestResult {
    live_checkpoints_are_batched_and_before_the_stuck_event(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_checkpoints_are_batched_and_before_the_stuck_event_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    live_checkpoints_are_batched_and_before_the_stuck_event(SledStore::open(dir.path())?).await
}

/// Catching up on a long log (pages of several hundred events) with a handler stuck part-way: the
/// checkpoint is before the stuck event, and at most `checkpoint_every` handled events behind it, also
/// inside a page.
async fn catch_up_checkpoints_are_batched_within_a_page_and_before_the_stuck_event<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    const NAME: &str = "stuck-in-catch-up";
    const STUCK: u64 = 700;
    append(&store, "long-1", "Counted", 500).await?;
    append(&store, "long-2", "Counted", 500).await?;
    let gate = Gate::at(STUCK);
    let log = Log::default();
    let subscription =
        Subscription::start(store.clone(), committing_every(NAME, 10), Probe::new(&log).gate(&gate)).await?;
    gate.reached().await?;
    let checkpoint = Subscription::checkpoint(&store, NAME).await?.unwrap_or(Position::ZERO);
    assert!(checkpoint.get() < STUCK, "checkpoint {checkpoint} passed the event the handler is stuck on");
    let uncommitted = STUCK - 1 - checkpoint.get();
    assert!(uncommitted <= 10, "{uncommitted} handled events uncommitted (checkpoint {checkpoint}), at most 10");
    assert!(subscription.checkpoint().get() < STUCK, "the handle reports checkpoint {}", subscription.checkpoint());
    gate.open();
    subscription.wait_for(Position::new(1_000), WAIT).await?;
    subscription.stop().await?;
    assert_eq!(log.positions(), range(1, 1_000));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_checkpoints_are_batched_within_a_page_and_before_the_stuck_event_memory() -> TestResult {
    catch_up_checkpoints_are_batched_within_a_page_and_before_the_stuck_event(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_checkpoints_are_batched_within_a_page_and_before_the_stuck_event_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    catch_up_checkpoints_are_batched_within_a_page_and_before_the_stuck_event(SledStore::open(dir.path())?).await
}

/// With neither `checkpoint_every` nor catching up nor stop to commit it, progress is committed
/// `checkpoint_interval` after it was first made: not sooner (a lower bound, measured from before the
/// append), and also while events keep coming (the interval runs from the first uncommitted event,
/// not the last).
async fn progress_is_committed_an_interval_after_it_was_made<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    const NAME: &str = "timed";
    const INTERVAL: Duration = Duration::from_millis(300);
    append(&store, "timed-1", "Counted", 3).await?;
    let config = SubscriptionConfig::new(NAME).checkpoint_every(1_000_000).checkpoint_interval(INTERVAL);
    let log = Log::default();
    let subscription = Subscription::start(store.clone(), config, Probe::new(&log)).await?;
    let caught_up = subscription.caught_up().await?;
    eventually("catching up commits", || subscription.checkpoint() == caught_up).await?;

    // One live event: committed an interval after it was handled.
    let before = std::time::Instant::now();
    let one = append(&store, "timed-1", "Counted", 1).await?.last_position;
    subscription.wait_for(one, WAIT).await?;
    eventually("the interval commits the live event", || subscription.checkpoint() == one).await?;
    let took = before.elapsed();
    assert!(took >= INTERVAL, "committed {took:?} after the append, before the {INTERVAL:?} interval");
    assert_eq!(Subscription::checkpoint(&store, NAME).await?, Some(one), "saved, not only reported");

    // Events every 50 ms for at least 2 s: commits come while they do.
    let mut last = one;
    for _ in 0..40 {
        last = append(&store, "timed-1", "Counted", 1).await?.last_position;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = subscription.checkpoint();
    assert!(during > one, "no commit in 2 s of events {INTERVAL:?} apart or less: checkpoint {during}");
    subscription.wait_for(last, WAIT).await?;
    eventually("the last events are committed", || subscription.checkpoint() == last).await?;
    subscription.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_committed_an_interval_after_it_was_made_memory() -> TestResult {
    progress_is_committed_an_interval_after_it_was_made(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_committed_an_interval_after_it_was_made_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    progress_is_committed_an_interval_after_it_was_made(SledStore::open(dir.path())?).await
}

// 4. Filters.

/// Appends a mix of streams and types; returns the positions of every event as (stream, type).
async fn mixed_log(
    store: &impl EventStore,
) -> Result<Vec<(u64, &'static str, &'static str)>, Box<dyn std::error::Error>> {
    let events = [
        ("order-1", "OrderPlaced"),
        ("cart-1", "ItemAdded"),
        ("order-1", "Noise"),
        ("invoice-1", "InvoiceSent"),
        ("order-2", "OrderPlaced"),
        ("cart-1", "OrderPlaced"),
        ("order-2", "OrderPaid"),
        ("invoice-1", "Noise"),
        ("orderly-1", "OrderPaid"),
    ];
    let mut log = Vec::new();
    for (stream, event_type) in events {
        let at = append(store, stream, event_type, 1).await?.last_position;
        log.push((at.get(), stream, event_type));
    }
    Ok(log)
}

/// Which (stream, event type) a filter case should admit.
type Admits = fn(&str, &str) -> bool;

async fn filters_decide_what_comes_and_skipped_positions_are_still_reached<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    let written = mixed_log(&store).await?;
    let cases: Vec<(&str, LogFilter, Admits)> = vec![
        ("types", LogFilter::all().event_types(["OrderPlaced", "OrderPaid"]), |_, t| {
            t == "OrderPlaced" || t == "OrderPaid"
        }),
        ("orders", LogFilter::all().stream_prefix("order-"), |s, _| s.starts_with("order-")),
        ("orders-and-invoices", LogFilter::all().stream_prefix("order-").stream_prefix("invoice-"), |s, _| {
            s.starts_with("order-") || s.starts_with("invoice-")
        }),
        ("placed-orders", LogFilter::all().stream_prefix("order-").event_types(["OrderPlaced"]), |s, t| {
            s.starts_with("order-") && t == "OrderPlaced"
        }),
    ];
    let mut running = Vec::new();
    for (name, filter, admits) in cases {
        let log = Log::default();
        let config = SubscriptionConfig::new(name).filter(filter);
        let subscription = Subscription::start(store.clone(), config, Probe::new(&log)).await?;
        running.push((name, admits, log, subscription));
    }
    // Live: a last event no subscription admits.
    let skipped = append(&store, "noise-1", "Noise", 1).await?.last_position;
    for (name, admits, log, subscription) in running {
        subscription.wait_for(skipped, WAIT).await?;
        assert_eq!(subscription.lag(), 0, "{name}: the skipped head counts as reached");
        assert!(subscription.position() >= skipped, "{name}");
        let expected: Vec<u64> = written.iter().filter(|(_, s, t)| admits(s, t)).map(|(p, _, _)| *p).collect();
        assert!(!expected.is_empty() && expected.len() < written.len(), "{name}: the case filters something");
        assert_eq!(log.positions(), expected, "{name}: exactly the admitted events, in order");
        subscription.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_decide_what_comes_and_skipped_positions_are_still_reached_memory() -> TestResult {
    filters_decide_what_comes_and_skipped_positions_are_still_reached(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_decide_what_comes_and_skipped_positions_are_still_reached_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    filters_decide_what_comes_and_skipped_positions_are_still_reached(SledStore::open(dir.path())?).await
}

/// A long run of filtered-out events at the head (more than a page) is waited past too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_filtered_out_tail_is_reached() -> TestResult {
    let store = MemoryStore::new();
    append(&store, "order-1", "OrderPlaced", 1).await?;
    append(&store, "noise-1", "Noise", 1_500).await?;
    let log = Log::default();
    let config = SubscriptionConfig::new("orders").filter(LogFilter::all().stream_prefix("order-"));
    let subscription = Subscription::start(store.clone(), config, Probe::new(&log)).await?;
    subscription.wait_for(Position::new(1_501), WAIT).await?;
    let live_noise = append(&store, "noise-1", "Noise", 700).await?.last_position;
    subscription.wait_for(live_noise, WAIT).await?;
    assert_eq!(subscription.lag(), 0);
    assert_eq!(log.positions(), vec![1]);
    subscription.stop().await?;
    Ok(())
}

// 5. Where a subscription without a checkpoint starts.

async fn start_options_apply_when_there_is_no_checkpoint<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    append(&store, "early-1", "Early", 5).await?;
    // Recorded times are microseconds: a pause makes the two halves' times differ.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let late = append(&store, "late-1", "Late", 5).await?;
    let stored: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await?;
    let first_late = stored.iter().find(|e| e.position == late.first_position).ok_or("first late event")?;
    let last_early = stored.iter().find(|e| e.position.get() == 5).ok_or("last early event")?;
    assert!(last_early.recorded_at < first_late.recorded_at, "precondition: distinct recorded times");

    let run = |name: &'static str, start: Start| {
        let store = store.clone();
        async move {
            let log = Log::default();
            let config = SubscriptionConfig::new(name).start(start);
            let subscription = Subscription::start(store.clone(), config, Probe::new(&log)).await?;
            subscription.caught_up().await?;
            Ok::<_, Box<dyn std::error::Error>>((log, subscription))
        }
    };
    let from_position = run("from-position", Start::Position(Position::new(4))).await?;
    let from_recorded = run("from-recorded", Start::Recorded(first_late.recorded_at)).await?;
    let after_head = run("from-the-future", Start::Recorded(Utc::now() + TimeDelta::hours(1))).await?;
    let last = append(&store, "live-1", "Live", 2).await?.last_position;

    for (log, subscription) in [&from_position, &from_recorded, &after_head] {
        subscription.wait_for(last, WAIT).await?;
        assert_eq!(subscription.lag(), 0, "{}", subscription.name());
        let _ = log;
    }
    assert_eq!(from_position.0.positions(), range(4, 12), "Start::Position is inclusive");
    assert_eq!(from_recorded.0.positions(), range(6, 12), "Start::Recorded: the first event recorded at or after");
    assert_eq!(after_head.0.positions(), range(11, 12), "Start::Recorded after every event: only new events");
    for (_, subscription) in [from_position, from_recorded, after_head] {
        subscription.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_options_apply_when_there_is_no_checkpoint_memory() -> TestResult {
    start_options_apply_when_there_is_no_checkpoint(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_options_apply_when_there_is_no_checkpoint_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    start_options_apply_when_there_is_no_checkpoint(SledStore::open(dir.path())?).await
}

/// `Start::Occurred` reads the whole log and skips what occurred before the time, wherever it is.
async fn start_occurred_skips_what_occurred_before<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    // Stored times are microseconds: so is the bound, so that an event can occur exactly at it.
    let at = (Utc::now() - TimeDelta::days(1)).trunc_subsecs(6);
    let occurred =
        [TimeDelta::days(-3), TimeDelta::zero(), TimeDelta::days(-2), TimeDelta::days(1), TimeDelta::hours(-1)];
    for (i, offset) in occurred.into_iter().enumerate() {
        let event = NewEvent::raw("Happened", "{}").with_occurred_at(at + offset);
        store.append(&StreamId::new(format!("history-{}", i % 2))?, ExpectedVersion::Any, vec![event]).await?;
    }
    let log = Log::default();
    let config = SubscriptionConfig::new("recent").start(Start::Occurred(at));
    let subscription = Subscription::start(store.clone(), config, Probe::new(&log)).await?;
    subscription.caught_up().await?;
    let live = append(&store, "history-0", "Happened", 1).await?.last_position; // occurs now
    subscription.wait_for(live, WAIT).await?;
    assert_eq!(log.positions(), vec![2, 4, live.get()], "the events that occurred at or after the time");
    assert_eq!(subscription.lag(), 0);
    subscription.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_occurred_skips_what_occurred_before_memory() -> TestResult {
    start_occurred_skips_what_occurred_before(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_occurred_skips_what_occurred_before_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    start_occurred_skips_what_occurred_before(SledStore::open(dir.path())?).await
}

/// Once a subscription has a checkpoint, its start option no longer matters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_wins_over_the_start_option() -> TestResult {
    let store = MemoryStore::new();
    append(&store, "order-1", "OrderPlaced", 6).await?;
    let first = Log::default();
    let config = SubscriptionConfig::new("resumer").start(Start::Position(Position::new(3)));
    let subscription = Subscription::start(store.clone(), config.clone(), Probe::new(&first)).await?;
    subscription.wait_for(Position::new(6), WAIT).await?;
    subscription.stop().await?;
    assert_eq!(first.positions(), range(3, 6));

    let last = append(&store, "order-1", "OrderPaid", 2).await?.last_position;
    let second = Log::default();
    let subscription = Subscription::start(store.clone(), config, Probe::new(&second)).await?;
    subscription.wait_for(last, WAIT).await?;
    subscription.stop().await?;
    assert_eq!(second.positions(), range(7, 8), "resumes after its checkpoint, not at Start::Position");
    Ok(())
}

// 6. Independent subscriptions read at their own pace.

async fn a_stuck_subscription_holds_back_neither_others_nor_writers<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    append(&store, "shared-1", "Counted", 50).await?;
    let gate = Gate::at(1);
    let slow_log = Log::default();
    let slow =
        Subscription::start(store.clone(), SubscriptionConfig::new("slow"), Probe::new(&slow_log).gate(&gate)).await?;
    gate.reached().await?;
    let fast_log = Log::default();
    let fast = Subscription::start(store.clone(), SubscriptionConfig::new("fast"), Probe::new(&fast_log)).await?;

    let mut last = Position::ZERO;
    for i in 0..20 {
        let appended = tokio::time::timeout(WAIT, append(&store, &format!("shared-{}", i % 4), "Counted", 5)).await;
        last = appended.map_err(|_| "an append waited on the stuck subscription")??.last_position;
    }
    fast.wait_for(last, WAIT).await?;
    assert_eq!(fast.lag(), 0);
    assert_eq!(fast_log.positions(), range(1, last.get()));
    assert!(slow_log.positions().is_empty(), "the slow one is still stuck on its first event");
    assert_eq!(slow.position(), Position::ZERO);
    assert_eq!(slow.lag(), last.get());

    gate.open();
    slow.wait_for(last, WAIT).await?;
    assert_eq!(slow_log.positions(), range(1, last.get()));
    slow.stop().await?;
    fast.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscription_holds_back_neither_others_nor_writers_memory() -> TestResult {
    a_stuck_subscription_holds_back_neither_others_nor_writers(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscription_holds_back_neither_others_nor_writers_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    a_stuck_subscription_holds_back_neither_others_nor_writers(SledStore::open(dir.path())?).await
}

// 7. Read-your-writes waits time out when the handler is stuck.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_times_out_while_the_handler_is_stuck() -> TestResult {
    let store = MemoryStore::new();
    let gate = Gate::at(3);
    let log = Log::default();
    let subscription =
        Subscription::start(store.clone(), SubscriptionConfig::new("stuck"), Probe::new(&log).gate(&gate)).await?;
    let last = append(&store, "order-1", "OrderPlaced", 5).await?.last_position;
    gate.reached().await?;

    let waited = Duration::from_millis(100);
    let result = subscription.wait_for(last, waited).await;
    assert!(
        matches!(&result, Err(Error::Timeout { consumer, wanted, reached, waited: w })
            if consumer == "stuck" && *wanted == last && reached.get() < 3 && *w == waited),
        "{result:?}"
    );
    gate.open();
    subscription.wait_for(last, WAIT).await?;
    assert_eq!(log.positions(), range(1, 5));
    subscription.stop().await?;
    Ok(())
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_position_once_in_order_catch_up_then_live_postgres() -> TestResult {
    every_position_once_in_order_catch_up_then_live(postgres_support::fresh_config()?.open().await?).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_checkpoints_are_batched_and_before_the_stuck_event_postgres() -> TestResult {
    live_checkpoints_are_batched_and_before_the_stuck_event(postgres_support::fresh_config()?.open().await?).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_checkpoints_are_batched_within_a_page_and_before_the_stuck_event_postgres() -> TestResult {
    catch_up_checkpoints_are_batched_within_a_page_and_before_the_stuck_event(
        postgres_support::fresh_config()?.open().await?,
    )
    .await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_committed_an_interval_after_it_was_made_postgres() -> TestResult {
    progress_is_committed_an_interval_after_it_was_made(postgres_support::fresh_config()?.open().await?).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_decide_what_comes_and_skipped_positions_are_still_reached_postgres() -> TestResult {
    filters_decide_what_comes_and_skipped_positions_are_still_reached(postgres_support::fresh_config()?.open().await?)
        .await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_options_apply_when_there_is_no_checkpoint_postgres() -> TestResult {
    start_options_apply_when_there_is_no_checkpoint(postgres_support::fresh_config()?.open().await?).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_occurred_skips_what_occurred_before_postgres() -> TestResult {
    start_occurred_skips_what_occurred_before(postgres_support::fresh_config()?.open().await?).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscription_holds_back_neither_others_nor_writers_postgres() -> TestResult {
    a_stuck_subscription_holds_back_neither_others_nor_writers(postgres_support::fresh_config()?.open().await?).await
}
