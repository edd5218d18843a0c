//! Reading the whole log: start position, limit, filters by event type and stream prefix, upper
//! bounds, and paging past read pages and past the events one filtered scan looks at.

use annals::{ExpectedVersion, LogFilter, NewEvent, Position, ReadLog, RecordedEvent, StreamId};
use chrono::{SubsecRound, TimeDelta, Utc};

use super::stream_reads::pause;
use super::{event, events, positions, read_log, span, stream, TestResult, TestStore};

/// Twenty events, one per append, over five streams of three categories and three event types.
async fn varied<S: TestStore>(store: &S) -> Result<Vec<RecordedEvent>, annals::Error> {
    let streams = ["order-1", "order-2", "payment-1", "ordering-1", "order-1"];
    let types = ["Placed", "Paid", "Shipped"];
    for n in 0..20 {
        let stream = StreamId::new(streams[n % streams.len()])?;
        let event = NewEvent::raw(types[n % types.len()], format!("{{\"n\":{n}}}"));
        store.append(&stream, ExpectedVersion::Any, vec![event]).await?;
    }
    read_log(store, ReadLog::from_start()).await
}

pub(crate) async fn log_reads_start_at_a_position_and_stop_at_a_limit_or_position<S: TestStore>(
    store: &S,
) -> TestResult {
    let all = varied(store).await?;
    assert_eq!(positions(&all), span(1, 20));
    let p = Position::new;
    let cases: [(ReadLog, Vec<u64>); 10] = [
        (ReadLog::from(p(5)), span(5, 20)),
        (ReadLog::from(Position::ZERO), span(1, 20)),
        (ReadLog::from(p(20)), vec![20]),
        (ReadLog::from(p(21)), vec![]),
        (ReadLog::from(p(1000)), vec![]),
        (ReadLog::from_start().limit(3), vec![1, 2, 3]),
        (ReadLog::from(p(5)).limit(3), vec![5, 6, 7]),
        (ReadLog::from_start().until_position(p(7)), span(1, 7)),
        (ReadLog::from(p(5)).until_position(p(4)), vec![]),
        (ReadLog::from(p(18)).until_position(p(100)), vec![18, 19, 20]),
    ];
    for (options, expected) in cases {
        let read = read_log(store, options.clone()).await?;
        assert_eq!(positions(&read), expected, "{options:?}");
        let from_all: Vec<_> = all.iter().filter(|e| expected.contains(&e.position.get())).cloned().collect();
        assert_eq!(read, from_all, "{options:?}: events differ from the full read");
    }
    Ok(())
}

pub(crate) async fn log_filters_select_by_event_type_stream_prefix_or_both<S: TestStore>(store: &S) -> TestResult {
    let all = varied(store).await?;
    let filters = [
        LogFilter::all(),
        LogFilter::all().event_types(["Placed"]),
        LogFilter::all().event_types(["Placed", "Paid"]),
        LogFilter::all().stream_prefix("order-"),
        LogFilter::all().stream_prefix("order"),
        LogFilter::all().stream_prefix("order-").stream_prefix("payment-"),
        LogFilter::all().event_types(["Paid"]).stream_prefix("order-"),
        LogFilter::all().event_types(["Shipped", "Placed"]).stream_prefix("payment-").stream_prefix("ordering-"),
        LogFilter::all().event_types(["Refunded"]),
        LogFilter::all().stream_prefix("order-3"),
    ];
    for filter in filters {
        let expected: Vec<_> =
            all.iter().filter(|e| filter.admits(e.stream.as_str(), &e.event_type)).cloned().collect();
        let read = read_log(store, ReadLog::from_start().filter(filter.clone())).await?;
        assert_eq!(read, expected, "{filter:?}");
        // With a start and a limit the filter still applies to exactly the events after the start.
        let tail: Vec<_> = expected.iter().filter(|e| e.position.get() >= 8).take(2).cloned().collect();
        let read = read_log(store, ReadLog::from(Position::new(8)).filter(filter.clone()).limit(2)).await?;
        assert_eq!(read, tail, "{filter:?} from 8, limit 2");
    }
    // The filter is what the events say, not a model of it: spot-check two counts by hand.
    let placed = read_log(store, ReadLog::from_start().filter(LogFilter::all().event_types(["Placed"]))).await?;
    assert_eq!(positions(&placed), [1, 4, 7, 10, 13, 16, 19]);
    let payments = read_log(store, ReadLog::from_start().filter(LogFilter::all().stream_prefix("payment-"))).await?;
    assert_eq!(positions(&payments), [3, 8, 13, 18]);
    Ok(())
}

pub(crate) async fn log_reads_respect_until_recorded_and_until_occurred<S: TestStore>(store: &S) -> TestResult {
    let (a, b) = (stream("a-1")?, stream("b-1")?);
    let now = Utc::now().trunc_subsecs(6);
    let days_ago = |d: i64| now - TimeDelta::days(d);
    store.append(&a, ExpectedVersion::Any, vec![event(1).with_occurred_at(days_ago(5)), event(2)]).await?;
    pause().await;
    store.append(&b, ExpectedVersion::Any, vec![event(3).with_occurred_at(days_ago(1))]).await?;
    pause().await;
    store.append(&a, ExpectedVersion::Any, vec![event(4).with_occurred_at(days_ago(3)), event(5)]).await?;
    let all = read_log(store, ReadLog::from_start()).await?;
    let recorded: Vec<_> = all.iter().map(|e| e.recorded_at).collect();
    let cases: [(ReadLog, Vec<u64>); 6] = [
        (ReadLog::from_start().until_recorded(recorded[0]), vec![1, 2]),
        (ReadLog::from_start().until_recorded(recorded[2]), vec![1, 2, 3]),
        (ReadLog::from_start().until_recorded(recorded[0] - TimeDelta::microseconds(1)), vec![]),
        (ReadLog::from_start().until_occurred(days_ago(2)), vec![1, 4]),
        (ReadLog::from(Position::new(2)).until_occurred(days_ago(2)), vec![4]),
        (ReadLog::from_start().until_occurred(days_ago(2)).until_recorded(recorded[2]), vec![1]),
    ];
    for (options, expected) in cases {
        assert_eq!(positions(&read_log(store, options.clone()).await?), expected, "{options:?}");
    }
    Ok(())
}

pub(crate) async fn log_reads_page_past_512_events<S: TestStore>(store: &S) -> TestResult {
    let (a, b) = (stream("a-1")?, stream("b-1")?);
    for round in 0..13 {
        store.append(&a, ExpectedVersion::Any, events(round * 100, 100)).await?;
        store.append(&b, ExpectedVersion::Any, events(round * 100, 7)).await?;
    }
    let total = 13 * 107;
    let all = read_log(store, ReadLog::from_start()).await?;
    assert_eq!(positions(&all), span(1, total));
    let middle = read_log(store, ReadLog::from(Position::new(300)).limit(1000)).await?;
    assert_eq!(positions(&middle), span(300, 1299));
    let only_a = read_log(store, ReadLog::from_start().filter(LogFilter::all().stream_prefix("a-"))).await?;
    assert_eq!(only_a.len(), 1300);
    assert!(only_a.iter().zip(1..).all(|(e, v)| e.stream == a && e.version.get() == v), "a-1 out of order");
    let only_b = read_log(store, ReadLog::from(Position::new(50)).filter(LogFilter::all().stream_prefix("b-"))).await?;
    assert_eq!(only_b.len(), 91);
    Ok(())
}

pub(crate) async fn a_filtered_log_read_crosses_more_non_matching_events_than_one_scan_looks_at<S: TestStore>(
    store: &S,
) -> TestResult {
    let signal = stream("signal-1")?;
    let noise = stream("noise-1")?;
    let ping = || NewEvent::raw("Signal", "{}");
    store.append(&signal, ExpectedVersion::Any, vec![ping()]).await?;
    for round in 0..20 {
        store.append(&noise, ExpectedVersion::Any, events(round * 1000, 1000)).await?;
    }
    store.append(&signal, ExpectedVersion::Any, vec![ping()]).await?;
    store.append(&noise, ExpectedVersion::Any, events(0, 10)).await?;
    let last_signal = 20_002;
    for filter in [LogFilter::all().event_types(["Signal"]), LogFilter::all().stream_prefix("signal-")] {
        let read = read_log(store, ReadLog::from_start().filter(filter.clone())).await?;
        assert_eq!(positions(&read), [1, last_signal], "{filter:?}");
        let read = read_log(store, ReadLog::from(Position::new(2)).filter(filter.clone()).limit(1)).await?;
        assert_eq!(positions(&read), [last_signal], "{filter:?} from 2");
        let read =
            read_log(store, ReadLog::from_start().filter(filter.clone()).until_position(Position::new(20_001))).await?;
        assert_eq!(positions(&read), [1], "{filter:?} until 20001");
    }
    // The paging primitive itself: every chunk moves on, and the chunks end at the head.
    let filter = LogFilter::all().event_types(["Signal"]);
    let (mut from, mut found, mut chunks) = (Position::new(2), Vec::new(), 0);
    loop {
        let chunk = store.read_log_chunk(from, 512, &filter).await?;
        assert!(chunk.next > from, "a chunk from {from} did not move on: {:?}", chunk.next);
        found.extend(positions(&chunk.events));
        from = chunk.next;
        chunks += 1;
        assert!(chunks < 100, "too many chunks");
        if chunk.end {
            break;
        }
    }
    assert_eq!(found, [last_signal]);
    assert_eq!(from, Position::new(20_013), "the last chunk ends just past the head");
    Ok(())
}

pub(crate) async fn a_type_filtered_read_pages_past_512_matching_events<S: TestStore>(store: &S) -> TestResult {
    let stream = StreamId::new("mixed-1")?;
    for _ in 0..6 {
        let events = (0..250).map(|i| NewEvent::raw(if i % 2 == 0 { "Wanted" } else { "Other" }, "{}")).collect();
        store.append(&stream, ExpectedVersion::Any, events).await?;
    }
    let wanted = read_log(store, ReadLog::from_start().filter(LogFilter::all().event_types(["Wanted"]))).await?;
    assert_eq!(positions(&wanted), (0..750).map(|i| 2 * i + 1).collect::<Vec<u64>>());
    let both =
        read_log(store, ReadLog::from(Position::new(700)).filter(LogFilter::all().event_types(["Other", "Wanted"])))
            .await?;
    assert_eq!(positions(&both), (700..=1500).collect::<Vec<u64>>());
    Ok(())
}
