//! The head, stream versions, and finding a position by recorded time.

use annals::{ExpectedVersion, LogFilter, NewEvent, Position, ReadLog, ReadStream, Version};
use chrono::{DateTime, TimeDelta, Utc};

use super::stream_reads::pause;
use super::{events, read_log, read_stream, stream, TestResult, TestStore};

pub(crate) async fn an_empty_store_has_head_zero_and_nothing_to_read<S: TestStore>(store: &S) -> TestResult {
    let order = stream("order-1")?;
    assert_eq!(store.head().await?, Position::ZERO);
    assert_eq!(store.watch_head().current(), Position::ZERO);
    assert_eq!(store.stream_version(&order).await?, None);
    assert!(read_log(store, ReadLog::from_start()).await?.is_empty());
    assert!(read_log(store, ReadLog::from_start().filter(LogFilter::all().event_types(["X"]))).await?.is_empty());
    assert!(read_stream(store, &order, ReadStream::backward()).await?.is_empty());
    assert_eq!(store.seek_recorded(Utc::now() - TimeDelta::days(1)).await?, None);
    assert_eq!(store.seek_recorded(DateTime::<Utc>::MIN_UTC).await?, None);
    Ok(())
}

pub(crate) async fn head_and_stream_version_follow_every_append<S: TestStore>(store: &S) -> TestResult {
    let (a, b) = (stream("a-1")?, stream("b-1")?);
    let mut head = 0;
    for (stream, count, version) in [(&a, 3, 3), (&b, 1, 1), (&a, 2, 5), (&b, 4, 5), (&a, 1, 6)] {
        let result = store.append(stream, ExpectedVersion::Any, events(head, count)).await?;
        head += count;
        assert_eq!(store.head().await?, Position::new(head));
        assert_eq!(store.head().await?, result.last_position);
        assert_eq!(store.watch_head().current(), Position::new(head), "the watch shows the acknowledged head");
        assert_eq!(store.stream_version(stream).await?, Some(Version::new(version)), "{stream}");
    }
    assert_eq!(store.stream_version(&a).await?, Some(Version::new(6)));
    assert_eq!(store.stream_version(&b).await?, Some(Version::new(5)));
    Ok(())
}

pub(crate) async fn seek_recorded_finds_the_first_event_recorded_at_or_after_a_time<S: TestStore>(
    store: &S,
) -> TestResult {
    let s = stream("s-1")?;
    // Batches of 1, 3 and 60 events (the last larger than one sled record), a pause between them.
    let big = |n: u64| NewEvent::raw("Big", format!("{{\"n\":{n},\"pad\":\"{}\"}}", "p".repeat(200)));
    let mut batches = Vec::new();
    for batch in [events(0, 1), events(1, 3), (0..60).map(big).collect(), events(4, 2)] {
        pause().await;
        batches.push(store.append(&s, ExpectedVersion::Any, batch).await?);
    }
    let log = read_log(store, ReadLog::from_start()).await?;
    let time_of = |p: Position| log.iter().find(|e| e.position == p).map(|e| e.recorded_at).ok_or("no event");
    let mut times = Vec::new();
    for batch in &batches {
        let first = time_of(batch.first_position)?;
        assert_eq!(time_of(batch.last_position)?, first, "one append, one recorded time");
        times.push(first);
    }
    assert!(times.windows(2).all(|w| w[0] < w[1]), "batches {times:?} not recorded one after the other");
    let micro = TimeDelta::microseconds(1);
    let first = Some(Position::FIRST);
    let cases = [
        (DateTime::<Utc>::MIN_UTC, first),
        (times[0] - TimeDelta::days(1), first),
        (times[0] - micro, first),
        (times[0], first),
        (times[0] + micro, Some(batches[1].first_position)),
        (times[1], Some(batches[1].first_position)),
        (times[1] + micro, Some(batches[2].first_position)),
        (times[2], Some(batches[2].first_position)),
        (times[2] + micro, Some(batches[3].first_position)),
        (times[3], Some(batches[3].first_position)),
        (times[3] + micro, None),
        (Utc::now() + TimeDelta::days(1), None),
    ];
    for (at, expected) in cases {
        assert_eq!(store.seek_recorded(at).await?, expected, "seek {at}");
    }
    // Between the batches, the answer agrees with a scan of the log.
    for (i, pair) in times.windows(2).enumerate() {
        let between = pair[0] + (pair[1] - pair[0]) / 2;
        let scanned = log.iter().find(|e| e.recorded_at >= between).map(|e| e.position);
        assert_eq!(store.seek_recorded(between).await?, scanned, "between batches {i} and {}", i + 1);
        assert_eq!(scanned, Some(batches[i + 1].first_position));
    }
    Ok(())
}
