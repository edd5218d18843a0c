//! Replaying and following a projection: `replay` honours every start (beginning, position, recorded
//! time, occurred time) and every upper bound; a projection's filter decides exactly which events its
//! handler sees; a running projector reads only complete states, catches up then goes live with the
//! right phases, answers read-your-writes waits (and times out on positions never reached); a handler
//! error stops it on the failing event with its checkpoint before that event. Each property runs on
//! both stores.

#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/projections.rs"]
mod projections;

use std::time::Duration;

use annals::{
    replay, Error, EventStore, ExpectedVersion, LogFilter, MemoryStore, NewEvent, Phase, Position, Projector, ReadLog,
    SledStore, Start, StreamId, Until,
};
use chrono::{DateTime, TimeZone, Utc};
use futures_util::TryStreamExt;
use projections::{append, Recorder, Tally, TestResult, POISON, TALLY, WAIT};

fn positions(range: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    range.collect()
}

fn at_position(position: u64) -> Until {
    Until { position: Some(Position::new(position)), ..Until::default() }
}

async fn replayed(store: &impl EventStore, start: Start, until: Until) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    Ok(replay(store, Recorder::new("replay"), start, until).await?.positions())
}

// --- 1. replay: starts and bounds -------------------------------------------------------------

async fn replay_honours_positions<S: EventStore>(store: S) -> TestResult {
    for _ in 0..4 {
        append(&store, "order-1", "Touched", 3).await?;
    }
    assert_eq!(replayed(&store, Start::Beginning, Until::default()).await?, positions(1..=12));
    assert_eq!(replayed(&store, Start::Position(Position::new(5)), Until::default()).await?, positions(5..=12));
    assert_eq!(replayed(&store, Start::Position(Position::new(3)), at_position(7)).await?, positions(3..=7));
    assert_eq!(replayed(&store, Start::Beginning, at_position(4)).await?, positions(1..=4));
    assert_eq!(replayed(&store, Start::Position(Position::new(6)), at_position(6)).await?, [6]);
    // Position zero means "from the first event".
    assert_eq!(replayed(&store, Start::Position(Position::ZERO), at_position(2)).await?, positions(1..=2));
    // A start past the head, or a bound before the start, gives nothing.
    assert_eq!(replayed(&store, Start::Position(Position::new(13)), Until::default()).await?, Vec::<u64>::new());
    assert_eq!(replayed(&store, Start::Position(Position::new(8)), at_position(7)).await?, Vec::<u64>::new());
    // Every event comes as a replay.
    let recorder = replay(&store, Recorder::new("phases"), Start::Beginning, Until::default()).await?;
    assert!(recorder.phases().iter().all(|phase| *phase == Phase::CatchUp), "{:?}", recorder.phases());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_honours_positions_memory() -> TestResult {
    replay_honours_positions(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_honours_positions_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    replay_honours_positions(SledStore::open(dir.path())?).await
}

async fn replay_honours_recorded_times<S: EventStore>(store: S) -> TestResult {
    // Four appends of three events, recorded at least a few milliseconds apart (recorded_at has
    // microsecond precision): positions 1-3, 4-6, 7-9, 10-12.
    for round in 0..4 {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        append(&store, "order-1", "Touched", 3).await?;
    }
    let log: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await?;
    assert_eq!(log.len(), 12);
    let recorded = |position: usize| log[position - 1].recorded_at;
    assert!(recorded(3) < recorded(4) && recorded(6) < recorded(7) && recorded(9) < recorded(10));

    let second_round = Start::Recorded(recorded(4));
    assert_eq!(replayed(&store, second_round, Until::default()).await?, positions(4..=12));
    let until_third_round = Until { recorded: Some(recorded(9)), ..Until::default() };
    assert_eq!(replayed(&store, second_round, until_third_round).await?, positions(4..=9));
    assert_eq!(replayed(&store, Start::Beginning, until_third_round).await?, positions(1..=9));
    // A start between two rounds begins with the next round.
    let between = recorded(6) + (recorded(7) - recorded(6)) / 2;
    assert!(recorded(6) < between && between < recorded(7));
    assert_eq!(replayed(&store, Start::Recorded(between), Until::default()).await?, positions(7..=12));
    let until_between = Until { recorded: Some(between), ..Until::default() };
    assert_eq!(replayed(&store, Start::Beginning, until_between).await?, positions(1..=6));
    // Bounds combine: the tighter one wins.
    let both = Until { recorded: Some(recorded(9)), position: Some(Position::new(5)), ..Until::default() };
    assert_eq!(replayed(&store, second_round, both).await?, positions(4..=5));
    // Everything was recorded before a time after the last event: nothing to replay.
    let after_all = recorded(12) + chrono::Duration::seconds(1);
    assert_eq!(replayed(&store, Start::Recorded(after_all), Until::default()).await?, Vec::<u64>::new());
    // A bound before everything gives nothing either.
    let before_all = recorded(1) - chrono::Duration::seconds(1);
    let until_before = Until { recorded: Some(before_all), ..Until::default() };
    assert_eq!(replayed(&store, Start::Beginning, until_before).await?, Vec::<u64>::new());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_honours_recorded_times_memory() -> TestResult {
    replay_honours_recorded_times(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_honours_recorded_times_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    replay_honours_recorded_times(SledStore::open(dir.path())?).await
}

fn day(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2020, 1, day, 12, 0, 0).single().expect("a valid date")
}

async fn replay_honours_occurred_times<S: EventStore>(store: S) -> TestResult {
    // Business times out of log order: positions 1..=6 occurred on days 5, 1, 4, 2, 6, 3.
    let stream = StreamId::new("import-1")?;
    let events = [5, 1, 4, 2, 6, 3].map(|d| NewEvent::raw("Imported", "{}").with_occurred_at(day(d)));
    store.append(&stream, ExpectedVersion::Any, events[..3].to_vec()).await?;
    store.append(&stream, ExpectedVersion::Any, events[3..].to_vec()).await?;

    let from_day_2 = Start::Occurred(day(2));
    assert_eq!(replayed(&store, from_day_2, Until::default()).await?, [1, 3, 4, 5, 6]);
    let until_day_5 = Until { occurred: Some(day(5)), ..Until::default() };
    assert_eq!(replayed(&store, Start::Beginning, until_day_5).await?, [1, 2, 3, 4, 6]);
    // Days 2 to 5 inclusive, whatever their positions.
    assert_eq!(replayed(&store, from_day_2, until_day_5).await?, [1, 3, 4, 6]);
    // Occurred and position bounds together.
    let until_day_5_position_4 = Until { position: Some(Position::new(4)), ..until_day_5 };
    assert_eq!(replayed(&store, from_day_2, until_day_5_position_4).await?, [1, 3, 4]);
    // A single business day.
    let until_day_4 = Until { occurred: Some(day(4)), ..Until::default() };
    assert_eq!(replayed(&store, Start::Occurred(day(4)), until_day_4).await?, [3]);
    // After every business time: nothing.
    assert_eq!(replayed(&store, Start::Occurred(day(7)), Until::default()).await?, Vec::<u64>::new());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_honours_occurred_times_memory() -> TestResult {
    replay_honours_occurred_times(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_honours_occurred_times_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    replay_honours_occurred_times(SledStore::open(dir.path())?).await
}

// --- 2. filters -------------------------------------------------------------------------------

/// Positions 1..=6: order-1 Placed, customer-1 Registered, order-2 Placed, customer-1 Placed,
/// order-1 Paid, customer-2 Registered.
async fn mixed_log(store: &impl EventStore) -> TestResult {
    for (stream, event_type) in [
        ("order-1", "Placed"),
        ("customer-1", "Registered"),
        ("order-2", "Placed"),
        ("customer-1", "Placed"),
        ("order-1", "Paid"),
        ("customer-2", "Registered"),
    ] {
        append(store, stream, event_type, 1).await?;
    }
    Ok(())
}

fn filters() -> Vec<(LogFilter, Vec<u64>)> {
    vec![
        (LogFilter::all(), positions(1..=6)),
        (LogFilter::all().event_types(["Placed"]), vec![1, 3, 4]),
        (LogFilter::all().stream_prefix("order-"), vec![1, 3, 5]),
        (LogFilter::all().event_types(["Placed"]).stream_prefix("order-"), vec![1, 3]),
        (LogFilter::all().event_types(["Placed", "Registered"]).stream_prefix("customer-"), vec![2, 4, 6]),
        (LogFilter::all().stream_prefix("order-2").stream_prefix("customer-2"), vec![3, 6]),
        (LogFilter::all().event_types(["Shipped"]), vec![]),
    ]
}

async fn handlers_see_only_what_the_filter_admits<S: EventStore + Clone + 'static>(store: S) -> TestResult {
    mixed_log(&store).await?;
    for (filter, expected) in filters() {
        let replayed =
            replay(&store, Recorder::filtered("f", filter.clone()), Start::Beginning, Until::default()).await?;
        assert_eq!(replayed.positions(), expected, "replay with {filter:?}");
        for seen in &replayed.seen {
            assert!(filter.admits(&seen.stream, &seen.event_type), "{seen:?} is not admitted by {filter:?}");
        }

        let make = move || Recorder::filtered("f", filter.clone());
        let handle = Projector::in_memory(store.clone(), make).run().await?;
        assert_eq!(handle.caught_up().await?, Position::new(6));
        // Skipped events count as handled: the projector reaches the head even when its last event
        // is not admitted.
        handle.wait_for(Position::new(6), WAIT).await?;
        assert_eq!(handle.position(), Position::new(6));
        assert_eq!(handle.read().await?.positions(), expected, "projector");
        handle.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_only_what_the_filter_admits_memory() -> TestResult {
    handlers_see_only_what_the_filter_admits(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_only_what_the_filter_admits_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    handlers_see_only_what_the_filter_admits(SledStore::open(dir.path())?).await
}

async fn live_events_pass_the_filter_too<S: EventStore + Clone + 'static>(store: S) -> TestResult {
    mixed_log(&store).await?;
    let filter = LogFilter::all().event_types(["Placed"]).stream_prefix("order-");
    let handle = Projector::in_memory(store.clone(), move || Recorder::filtered("f", filter.clone())).run().await?;
    handle.caught_up().await?;
    mixed_log(&store).await?; // positions 7..=12, the same pattern
    handle.wait_for(Position::new(12), WAIT).await?;
    let state = handle.read().await?;
    assert_eq!(state.positions(), [1, 3, 7, 9]);
    assert_eq!(state.phases(), [Phase::CatchUp, Phase::CatchUp, Phase::Live, Phase::Live]);
    drop(state);
    handle.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_pass_the_filter_too_memory() -> TestResult {
    live_events_pass_the_filter_too(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_pass_the_filter_too_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    live_events_pass_the_filter_too(SledStore::open(dir.path())?).await
}

// --- 3. a running projector -------------------------------------------------------------------

async fn a_projector_catches_up_then_goes_live<S: EventStore + Clone + 'static>(store: S) -> TestResult {
    for _ in 0..5 {
        append(&store, "order-1", "Touched", 2).await?;
    }
    let handle = Projector::in_memory(store.clone(), || Recorder::new("recorder")).run().await?;
    // `read` waits for the first catch-up: the state is complete, never a part of the history.
    {
        let state = handle.read().await?;
        assert_eq!(state.positions(), positions(1..=10));
        assert!(state.phases().iter().all(|phase| *phase == Phase::CatchUp), "{:?}", state.phases());
    }
    assert_eq!(handle.caught_up().await?, Position::new(10));
    assert_eq!(handle.position(), Position::new(10));
    assert_eq!(handle.lag(), 0);

    let appended = append(&store, "order-2", "Touched", 3).await?;
    assert_eq!(appended.last_position, Position::new(13));
    handle.wait_for(appended.last_position, WAIT).await?;
    assert!(handle.position() >= Position::new(13));
    {
        let state = handle.read().await?;
        assert_eq!(state.positions(), positions(1..=13));
        let live: Vec<_> = state.seen[10..].iter().map(|seen| (seen.position, seen.phase)).collect();
        assert_eq!(live, [(11, Phase::Live), (12, Phase::Live), (13, Phase::Live)]);
        assert!(state.seen[10..].iter().all(|seen| seen.stream == "order-2"));
    }
    // The first catch-up's head does not move.
    assert_eq!(handle.caught_up().await?, Position::new(10));
    assert_eq!(handle.lag(), 0, "caught up and idle");

    // A position never reached times out, saying what was wanted and what was reached.
    let short = Duration::from_millis(200);
    let never = handle.wait_for(Position::new(100), short).await;
    assert!(
        matches!(
            &never,
            Err(Error::Timeout { consumer, wanted, reached, waited })
                if consumer == "recorder" && *wanted == Position::new(100)
                    && *reached == Position::new(13) && *waited == short
        ),
        "{never:?}"
    );
    // A wait for a position already handled returns at once, even with no time to wait.
    handle.wait_for(Position::new(5), Duration::ZERO).await?;
    // A clone is another handle on the same projector.
    let clone = handle.clone();
    let appended = append(&store, "order-3", "Touched", 1).await?;
    clone.wait_for(appended.last_position, WAIT).await?;
    assert_eq!(handle.read().await?.positions(), positions(1..=14));
    drop(clone);
    handle.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_catches_up_then_goes_live_memory() -> TestResult {
    a_projector_catches_up_then_goes_live(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_catches_up_then_goes_live_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    a_projector_catches_up_then_goes_live(SledStore::open(dir.path())?).await
}

async fn a_projector_on_an_empty_log_is_caught_up_at_zero<S: EventStore + Clone + 'static>(store: S) -> TestResult {
    let handle = Projector::in_memory(store.clone(), || Recorder::new("recorder")).run().await?;
    assert_eq!(handle.caught_up().await?, Position::ZERO);
    assert!(handle.read().await?.seen.is_empty());
    assert_eq!(handle.lag(), 0);
    let appended = append(&store, "order-1", "Touched", 2).await?;
    handle.wait_for(appended.last_position, WAIT).await?;
    assert_eq!(handle.read().await?.phases(), [Phase::Live, Phase::Live]);
    handle.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_on_an_empty_log_is_caught_up_at_zero_memory() -> TestResult {
    a_projector_on_an_empty_log_is_caught_up_at_zero(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_on_an_empty_log_is_caught_up_at_zero_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    a_projector_on_an_empty_log_is_caught_up_at_zero(SledStore::open(dir.path())?).await
}

async fn a_projector_starts_where_it_is_told<S: EventStore + Clone + 'static>(store: S) -> TestResult {
    for _ in 0..3 {
        append(&store, "order-1", "Touched", 3).await?;
    }
    let handle = Projector::in_memory(store.clone(), || Recorder::new("recorder"))
        .start_from(Start::Position(Position::new(5)))
        .run()
        .await?;
    assert_eq!(handle.caught_up().await?, Position::new(9));
    assert_eq!(handle.read().await?.positions(), positions(5..=9));
    handle.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_starts_where_it_is_told_memory() -> TestResult {
    a_projector_starts_where_it_is_told(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_starts_where_it_is_told_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    a_projector_starts_where_it_is_told(SledStore::open(dir.path())?).await
}

// --- 4. handler errors ------------------------------------------------------------------------

async fn a_handler_error_during_catch_up_stops_the_projector<S: EventStore + Clone + 'static>(store: S) -> TestResult {
    append(&store, "order-1", "Touched", 2).await?;
    append(&store, "order-1", POISON, 1).await?; // position 3
    append(&store, "order-1", "Touched", 2).await?;
    let handle = Projector::in_memory(store.clone(), || Recorder::failing("picky")).run().await?;
    // It never completes a catch-up, so there is no state to read and no head it caught up with.
    let caught_up = handle.caught_up().await;
    assert!(matches!(&caught_up, Err(Error::Consumer { consumer, .. }) if consumer == "picky"), "{caught_up:?}");
    let read = handle.read().await.map(|state| state.positions());
    assert!(matches!(&read, Err(Error::Consumer { consumer, .. }) if consumer == "picky"), "{read:?}");
    let waited = handle.wait_for(Position::new(5), WAIT).await;
    assert!(matches!(&waited, Err(Error::Consumer { consumer, .. }) if consumer == "picky"), "{waited:?}");
    let stopped = handle.stop().await;
    assert!(
        matches!(
            &stopped,
            Err(Error::Handler { consumer, position, source, .. })
                if consumer == "picky" && *position == Position::new(3)
                    && source.to_string() == "refused the poison at 3"
        ),
        "{stopped:?}"
    );
    // `replay` fails on the same event.
    let replayed = replay(&store, Recorder::failing("picky"), Start::Beginning, Until::default()).await;
    let replayed = replayed.map(|recorder| recorder.positions());
    assert!(matches!(&replayed, Err(Error::Handler { position, .. }) if *position == Position::new(3)), "{replayed:?}");
    // Up to the event before, it succeeds.
    let before = replay(&store, Recorder::failing("picky"), Start::Beginning, at_position(2)).await?;
    assert_eq!(before.positions(), [1, 2]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_error_during_catch_up_stops_the_projector_memory() -> TestResult {
    a_handler_error_during_catch_up_stops_the_projector(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_error_during_catch_up_stops_the_projector_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    a_handler_error_during_catch_up_stops_the_projector(SledStore::open(dir.path())?).await
}

async fn a_live_handler_error_leaves_the_checkpoint_before_the_event<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    append(&store, "tally-1", "Touched", 5).await?;
    let handle = Projector::persisted(store.clone(), Tally::default).run().await?;
    assert_eq!(handle.caught_up().await?, Position::new(5));
    // Catching up commits: the checkpoint reaches the head (just after `caught_up` answers).
    tokio::time::timeout(WAIT, async {
        while handle.checkpoint() < Position::new(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;
    let saved = store.load_checkpoint(&format!("projection/{TALLY}")).await?.ok_or("no checkpoint after catch-up")?;
    assert_eq!(saved.position, Position::new(5));

    // Positions 6, 7, then the poison at 8, then 9, in one append.
    let stream = StreamId::new("tally-1")?;
    let events = ["Touched", "Touched", POISON, "Touched"].map(|t| NewEvent::raw(t, "{}")).to_vec();
    store.append(&stream, ExpectedVersion::Any, events).await?;
    // The projector dies on 8: a wait past it learns that it stopped.
    let waited = handle.wait_for(Position::new(9), WAIT).await;
    assert!(matches!(&waited, Err(Error::Consumer { consumer, .. }) if consumer == TALLY), "{waited:?}");
    assert!(handle.position() < Position::new(8), "{:?}", handle.position());
    let stopped = handle.stop().await;
    assert!(
        matches!(
            &stopped,
            Err(Error::Handler { consumer, position, .. }) if consumer == TALLY && *position == Position::new(8)
        ),
        "{stopped:?}"
    );

    // The saved checkpoint is before the failing event, and its state is exactly the events up to it.
    let saved = store.load_checkpoint(&format!("projection/{TALLY}")).await?.ok_or("the checkpoint is gone")?;
    assert!(saved.position >= Position::new(5) && saved.position < Position::new(8), "{saved:?}");
    let json: serde_json::Value = serde_json::from_str(saved.state.as_deref().ok_or("no state")?)?;
    let state: Tally = serde_json::from_value(json["state"].clone())?;
    let expected = replay(&store, Tally::default(), Start::Beginning, at_position(saved.position.get())).await?;
    assert_eq!(state.totals(), expected.totals());

    // A restart fails on the same event again: the poison is never skipped.
    let again = Projector::persisted(store.clone(), Tally::default).run().await?;
    let waited = again.wait_for(Position::new(9), WAIT).await;
    assert!(matches!(&waited, Err(Error::Consumer { .. })), "{waited:?}");
    let stopped = again.stop().await;
    assert!(matches!(&stopped, Err(Error::Handler { position, .. }) if *position == Position::new(8)), "{stopped:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_handler_error_leaves_the_checkpoint_before_the_event_memory() -> TestResult {
    a_live_handler_error_leaves_the_checkpoint_before_the_event(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_handler_error_leaves_the_checkpoint_before_the_event_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    a_live_handler_error_leaves_the_checkpoint_before_the_event(SledStore::open(dir.path())?).await
}
