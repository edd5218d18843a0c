//! Reading one stream: both directions, start version, limit and every upper bound, and paging past
//! the 512-event pages reads fetch internally.

use std::time::Duration;

use annals::{ExpectedVersion, NewEvent, Position, ReadStream, RecordedEvent, StreamId, Version};
use chrono::{SubsecRound, TimeDelta, Utc};

use super::{event, events, read_stream, span, stream, versions, TestResult, TestStore};

/// Ten events in `a-1`, each followed by one in `b-1`: `a-1` version v is at position 2v - 1.
async fn interleaved<S: TestStore>(store: &S) -> Result<StreamId, annals::Error> {
    let (a, b) = (stream("a-1")?, stream("b-1")?);
    for n in 1..=10 {
        store.append(&a, ExpectedVersion::Any, vec![event(n)]).await?;
        store.append(&b, ExpectedVersion::Any, vec![event(100 + n)]).await?;
    }
    Ok(a)
}

/// Lets the clock move on, so that the next append is recorded strictly later.
pub(crate) async fn pause() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

pub(crate) async fn reading_a_missing_stream_yields_nothing<S: TestStore>(store: &S) -> TestResult {
    let missing = stream("order-1")?;
    assert!(read_stream(store, &missing, ReadStream::forward()).await?.is_empty());
    // Streams whose names extend the missing one's must not leak into it.
    store.append(&stream("order-10")?, ExpectedVersion::Any, events(1, 3)).await?;
    store.append(&stream("order-1x")?, ExpectedVersion::Any, events(4, 3)).await?;
    store.append(&stream("order")?, ExpectedVersion::Any, events(7, 3)).await?;
    for options in [ReadStream::forward(), ReadStream::backward(), ReadStream::forward().from(Version::new(2))] {
        let read = read_stream(store, &missing, options.clone()).await?;
        assert!(read.is_empty(), "{options:?} gave {read:?}");
    }
    Ok(())
}

pub(crate) async fn a_stream_reads_forward_and_backward_from_a_version_with_a_limit<S: TestStore>(
    store: &S,
) -> TestResult {
    let a = interleaved(store).await?;
    let v = Version::new;
    let cases: [(ReadStream, Vec<u64>); 11] = [
        (ReadStream::forward(), span(1, 10)),
        (ReadStream::backward(), span(1, 10).into_iter().rev().collect()),
        (ReadStream::forward().from(v(4)), span(4, 10)),
        (ReadStream::forward().from(v(4)).limit(3), vec![4, 5, 6]),
        (ReadStream::forward().from(v(10)), vec![10]),
        (ReadStream::forward().from(v(11)), vec![]),
        (ReadStream::backward().from(v(7)), vec![7, 6, 5, 4, 3, 2, 1]),
        (ReadStream::backward().from(v(7)).limit(2), vec![7, 6]),
        (ReadStream::backward().from(v(50)).limit(2), vec![10, 9]),
        (ReadStream::backward().from(v(1)), vec![1]),
        (ReadStream::forward().limit(0), vec![]),
    ];
    for (options, expected) in cases {
        let read = read_stream(store, &a, options.clone()).await?;
        assert_eq!(versions(&read), expected, "{options:?}");
        assert!(read.iter().all(|e| e.stream == a && e.position.get() == 2 * e.version.get() - 1), "{options:?}");
    }
    Ok(())
}

pub(crate) async fn until_version_and_until_position_bound_a_stream_read_in_both_directions<S: TestStore>(
    store: &S,
) -> TestResult {
    let a = interleaved(store).await?;
    let (v, p) = (Version::new, Position::new);
    let cases: [(ReadStream, Vec<u64>); 10] = [
        (ReadStream::forward().until_version(v(4)), vec![1, 2, 3, 4]),
        (ReadStream::forward().from(v(3)).until_version(v(5)), vec![3, 4, 5]),
        (ReadStream::forward().from(v(6)).until_version(v(5)), vec![]),
        (ReadStream::backward().until_version(v(4)), vec![4, 3, 2, 1]),
        (ReadStream::backward().from(v(8)).until_version(v(5)).limit(2), vec![5, 4]),
        // Version v of `a-1` is at position 2v - 1, so position 8 (in `b-1`) admits versions 1 to 4.
        (ReadStream::forward().until_position(p(8)), vec![1, 2, 3, 4]),
        (ReadStream::forward().until_position(p(9)), vec![1, 2, 3, 4, 5]),
        (ReadStream::backward().until_position(p(8)), vec![4, 3, 2, 1]),
        (ReadStream::backward().until_position(p(8)).limit(1), vec![4]),
        (ReadStream::forward().until_position(Position::ZERO), vec![]),
    ];
    for (options, expected) in cases {
        assert_eq!(versions(&read_stream(store, &a, options.clone()).await?), expected, "{options:?}");
    }
    Ok(())
}

pub(crate) async fn until_recorded_bounds_a_stream_read_to_what_was_recorded_by_then<S: TestStore>(
    store: &S,
) -> TestResult {
    let a = stream("a-1")?;
    let mut batch_times = Vec::new();
    for batch in 0..3 {
        pause().await;
        let result = store.append(&a, ExpectedVersion::Any, events(batch * 10, 2)).await?;
        let read = read_stream(store, &a, ReadStream::backward().limit(1)).await?;
        assert_eq!(read.first().map(|e| e.version), Some(result.version));
        batch_times.push(read.first().map(|e| e.recorded_at).ok_or("no event")?);
    }
    assert!(batch_times.windows(2).all(|w| w[0] < w[1]), "batches {batch_times:?} not recorded one after the other");
    let cases: [(ReadStream, Vec<u64>); 6] = [
        (ReadStream::forward().until_recorded(batch_times[0]), vec![1, 2]),
        (ReadStream::forward().until_recorded(batch_times[1]), vec![1, 2, 3, 4]),
        (ReadStream::forward().until_recorded(batch_times[1] + TimeDelta::microseconds(1)), vec![1, 2, 3, 4]),
        (ReadStream::forward().until_recorded(batch_times[0] - TimeDelta::microseconds(1)), vec![]),
        (ReadStream::backward().until_recorded(batch_times[1]), vec![4, 3, 2, 1]),
        (ReadStream::backward().until_recorded(batch_times[2]).limit(3), vec![6, 5, 4]),
    ];
    for (options, expected) in cases {
        assert_eq!(versions(&read_stream(store, &a, options.clone()).await?), expected, "{options:?}");
    }
    Ok(())
}

pub(crate) async fn until_occurred_filters_by_business_time_and_reads_past_later_events<S: TestStore>(
    store: &S,
) -> TestResult {
    let a = stream("a-1")?;
    let now = Utc::now().trunc_subsecs(6);
    let days_ago = |d: i64| now - TimeDelta::days(d);
    // Business time goes back and forth; version 4 has none (it occurred when it was recorded).
    let first_batch = vec![
        event(1).with_occurred_at(days_ago(5)),
        event(2).with_occurred_at(days_ago(1)),
        event(3).with_occurred_at(days_ago(4)),
    ];
    store.append(&a, ExpectedVersion::NoStream, first_batch).await?;
    pause().await;
    store.append(&a, ExpectedVersion::Any, vec![event(4), event(5).with_occurred_at(days_ago(3))]).await?;
    let all = read_stream(store, &a, ReadStream::forward()).await?;
    let first_recorded = all.first().map(|e| e.recorded_at).ok_or("no event")?;
    let cases: [(ReadStream, Vec<u64>); 7] = [
        (ReadStream::forward().until_occurred(days_ago(2)), vec![1, 3, 5]),
        (ReadStream::backward().until_occurred(days_ago(2)), vec![5, 3, 1]),
        (ReadStream::forward().until_occurred(days_ago(2)).limit(2), vec![1, 3]),
        (ReadStream::forward().until_occurred(days_ago(6)), vec![]),
        (ReadStream::forward().until_occurred(now + TimeDelta::days(1)), vec![1, 2, 3, 4, 5]),
        (ReadStream::forward().until_occurred(days_ago(4)), vec![1, 3]),
        // Bitemporal: what occurred up to two days ago, as known after the first batch.
        (ReadStream::forward().until_occurred(days_ago(2)).until_recorded(first_recorded), vec![1, 3]),
    ];
    for (options, expected) in cases {
        assert_eq!(versions(&read_stream(store, &a, options.clone()).await?), expected, "{options:?}");
    }
    Ok(())
}

/// Appends `count` events to `stream` in appends of `chunk`, alternating with one event in `noise-1`.
async fn fill<S: TestStore>(store: &S, stream: &StreamId, count: u64, chunk: u64) -> Result<(), annals::Error> {
    let noise = StreamId::new("noise-1")?;
    let mut appended = 0;
    while appended < count {
        let n = chunk.min(count - appended);
        store.append(stream, ExpectedVersion::Any, events(appended, n)).await?;
        store.append(&noise, ExpectedVersion::Any, vec![event(0)]).await?;
        appended += n;
    }
    Ok(())
}

pub(crate) async fn stream_reads_page_past_512_events<S: TestStore>(store: &S) -> TestResult {
    let a = stream("a-1")?;
    fill(store, &a, 1300, 100).await?;
    let rev = |from: u64, to: u64| -> Vec<u64> { span(to, from).into_iter().rev().collect() };
    let v = Version::new;
    let cases: [(ReadStream, Vec<u64>); 6] = [
        (ReadStream::forward(), span(1, 1300)),
        (ReadStream::backward(), rev(1300, 1)),
        (ReadStream::forward().from(v(600)).limit(700), span(600, 1299)),
        (ReadStream::backward().from(v(1000)).limit(600), rev(1000, 401)),
        (ReadStream::forward().from(v(200)).until_version(v(1250)), span(200, 1250)),
        (ReadStream::backward().until_version(v(1100)).limit(1050), rev(1100, 51)),
    ];
    for (options, expected) in cases {
        let read = read_stream(store, &a, options.clone()).await?;
        assert_eq!(versions(&read), expected, "{options:?}");
        let payloads_match =
            read.iter().all(|e: &RecordedEvent| e.payload == format!("{{\"n\":{}}}", e.version.get() - 1));
        assert!(payloads_match, "{options:?}: an event has another's payload");
    }
    Ok(())
}

pub(crate) async fn list_streams_gives_every_stream_with_its_version_by_name_and_filters_by_prefix<S: TestStore>(
    store: &S,
) -> TestResult {
    assert!(store.list_streams("").await?.is_empty());
    for (name, events) in [("order-2", 3), ("order-10", 1), ("order", 2), ("payment-1", 1), ("order-2x", 1)] {
        let stream = StreamId::new(name)?;
        for _ in 0..events {
            store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("E", "{}")]).await?;
        }
    }
    let listed = |list: Vec<(StreamId, Version)>| {
        list.into_iter().map(|(s, v)| (s.as_str().to_owned(), v.get())).collect::<Vec<_>>()
    };
    let all = listed(store.list_streams("").await?);
    let expected = [("order", 2), ("order-10", 1), ("order-2", 3), ("order-2x", 1), ("payment-1", 1)];
    assert_eq!(all, expected.map(|(s, v)| (s.to_owned(), v)));
    let orders = listed(store.list_streams("order-").await?);
    assert_eq!(orders, [("order-10", 1), ("order-2", 3), ("order-2x", 1)].map(|(s, v)| (s.to_owned(), v)));
    assert!(store.list_streams("zzz").await?.is_empty());
    Ok(())
}
