//! Following the log: catch-up, then one `CaughtUp` marker, then live, with no gap and no duplicate
//! at the switch while other tasks keep appending; filters and starting positions are honoured; a
//! caught-up follower waits on the head watch without reading the log until an append.
//! Each property runs on both stores.

#![allow(clippy::panic)] // failing the test with the unexpected delivery is the point

mod common;

use std::time::Duration;

use annals::{
    follow, Delivery, EventStore, ExpectedVersion, LogFilter, NewEvent, Phase, Position, StreamAppend, StreamId,
};
use common::counting::Counting;
use futures_util::StreamExt;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TIMEOUT: Duration = Duration::from_secs(20);

async fn append(store: &impl EventStore, stream: &str, event_type: &str, count: usize) -> TestResult {
    let events = (0..count).map(|_| NewEvent::raw(event_type, "{}")).collect();
    store.append(&StreamId::new(stream)?, ExpectedVersion::Any, events).await?;
    Ok(())
}

/// Reads deliveries until `events` events have arrived; returns them with the caught-up marker(s).
async fn collect(
    deliveries: &mut annals::DeliveryStream<'_>,
    events: usize,
) -> Result<(Vec<(u64, Phase, String)>, Vec<u64>), Box<dyn std::error::Error>> {
    let mut seen = Vec::new();
    let mut caught_up = Vec::new();
    while seen.len() < events {
        match tokio::time::timeout(TIMEOUT, deliveries.next()).await? {
            Some(Ok(Delivery::Event { event, phase })) => seen.push((event.position.get(), phase, event.event_type)),
            Some(Ok(Delivery::CaughtUp { position })) => caught_up.push(position.get()),
            Some(Err(error)) => return Err(error.into()),
            None => panic!("a follower never ends by itself"),
        }
    }
    Ok((seen, caught_up))
}

/// Once the writers are done, a follower that has not caught up yet must do so next, with nothing
/// else before the marker (every event was already delivered).
async fn until_caught_up(deliveries: &mut annals::DeliveryStream<'_>, caught_up: &mut Vec<u64>) -> TestResult {
    if caught_up.is_empty() {
        match tokio::time::timeout(TIMEOUT, deliveries.next()).await? {
            Some(Ok(Delivery::CaughtUp { position })) => caught_up.push(position.get()),
            other => panic!("expected the caught-up marker after the last event, got {other:?}"),
        }
    }
    Ok(())
}

async fn the_switch_to_live_has_no_gap_and_no_duplicate_under_concurrent_appends<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    append(&store, "warm-1", "Before", 100).await?;
    let writer = store.clone();
    let appending = tokio::spawn(async move {
        for round in 0..100 {
            // Single and multi-stream appends of a few events, with pauses so the follower
            // alternates between reading and waiting.
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
    let mut deliveries = follow(&store, Position::FIRST, LogFilter::all());
    let (seen, mut caught_up) = collect(&mut deliveries, 400).await?;
    appending.await??;
    until_caught_up(&mut deliveries, &mut caught_up).await?;

    let positions: Vec<u64> = seen.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(positions, (1..=400).collect::<Vec<_>>(), "every position exactly once, in order");
    assert_eq!(caught_up.len(), 1, "one caught-up marker: {caught_up:?}");
    let switch = caught_up[0];
    assert!((100..=400).contains(&switch), "catch-up covers at least what was stored before following: {switch}");
    for (position, phase, _) in &seen {
        let expected = if *position <= switch { Phase::CatchUp } else { Phase::Live };
        assert_eq!(*phase, expected, "position {position} around the switch at {switch}");
    }
    Ok(())
}

async fn a_filtered_follower_sees_exactly_the_matching_events<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    for i in 0..30 {
        append(&store, &format!("order-{i}"), "OrderPlaced", 1).await?;
        append(&store, &format!("stock-{i}"), "StockReserved", 2).await?;
    }
    let filter = LogFilter::all().stream_prefix("order-");
    let mut deliveries = follow(&store, Position::FIRST, filter);
    let writer = store.clone();
    let appending = tokio::spawn(async move {
        for i in 30..60 {
            append(&writer, &format!("stock-{i}"), "StockReserved", 3).await.map_err(|e| e.to_string())?;
            append(&writer, &format!("order-{i}"), "OrderPlaced", 1).await.map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(())
    });
    let (seen, mut caught_up) = collect(&mut deliveries, 60).await?;
    appending.await??;
    until_caught_up(&mut deliveries, &mut caught_up).await?;
    assert_eq!(caught_up.len(), 1);
    assert!(seen.iter().all(|(_, _, t)| t == "OrderPlaced"), "only the filtered category");
    // The matching positions, computed from the log itself.
    let expected: Vec<u64> = (0..30).map(|i| 1 + 3 * i).chain((30..60).map(|i| 90 + 4 * (i - 30) + 4)).collect();
    let positions: Vec<u64> = seen.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(positions, expected);
    Ok(())
}

async fn a_follower_starts_at_its_position_and_an_empty_log_is_caught_up_at_once<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    let mut empty = follow(&store, Position::ZERO, LogFilter::all());
    match tokio::time::timeout(TIMEOUT, empty.next()).await? {
        Some(Ok(Delivery::CaughtUp { position })) => assert_eq!(position, Position::ZERO),
        other => panic!("an empty log is caught up at once, got {other:?}"),
    }
    drop(empty);
    append(&store, "s-1", "E", 10).await?;
    // Counts the follower's log reads, to see that it waits on the head watch rather than polling.
    let counted = Counting::new(store.clone());
    let mut from_middle = follow(&counted, Position::new(7), LogFilter::all());
    let (seen, caught_up) = collect(&mut from_middle, 4).await?;
    assert_eq!(seen.iter().map(|(p, _, _)| *p).collect::<Vec<_>>(), [7, 8, 9, 10]);
    assert!(seen.iter().all(|(_, phase, _)| *phase == Phase::CatchUp));
    assert!(caught_up.is_empty(), "the marker comes after the last catch-up event");
    match tokio::time::timeout(TIMEOUT, from_middle.next()).await? {
        Some(Ok(Delivery::CaughtUp { position })) => assert_eq!(position, Position::new(10)),
        other => panic!("expected the caught-up marker, got {other:?}"),
    }
    // Nothing new: the follower waits on the head watch, without reading, instead of delivering.
    counted.take_log_reads();
    let waiting = tokio::time::timeout(Duration::from_millis(200), from_middle.next()).await;
    assert!(waiting.is_err(), "a caught-up follower waits for new events: {waiting:?}");
    assert_eq!(counted.take_log_reads(), 0, "a caught-up follower read the log with nothing appended");
    // An append wakes it: the new event comes live.
    append(&store, "s-2", "E", 1).await?;
    match tokio::time::timeout(TIMEOUT, from_middle.next()).await? {
        Some(Ok(Delivery::Event { event, phase: Phase::Live })) => assert_eq!(event.position, Position::new(11)),
        other => panic!("expected position 11 live, got {other:?}"),
    }
    Ok(())
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> super::TestResult {
                    super::$name(annals::MemoryStore::new()).await
                }
            )*
        }
        mod sled_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> super::TestResult {
                    let dir = tempfile::tempdir()?;
                    super::$name(annals::SledStore::open(dir.path())?).await
                }
            )*
        }
    };
}

on_both_stores!(
    the_switch_to_live_has_no_gap_and_no_duplicate_under_concurrent_appends,
    a_filtered_follower_sees_exactly_the_matching_events,
    a_follower_starts_at_its_position_and_an_empty_log_is_caught_up_at_once,
);
