//! Appends that succeed: what they answer, and the versions and positions they assign.

use annals::{ExpectedVersion, Position, ReadLog, ReadStream, Version};

use super::{assert_appended, events, positions, read_log, read_stream, span, stream, versions, TestResult, TestStore};

pub(crate) async fn a_new_stream_accepts_no_stream_exact_zero_and_any<S: TestStore>(store: &S) -> TestResult {
    let cases = [
        ("a-1", ExpectedVersion::NoStream),
        ("b-1", ExpectedVersion::Exact(Version::ZERO)),
        ("c-1", ExpectedVersion::Any),
    ];
    let mut first = 1;
    for (name, expected) in cases {
        let stream = stream(name)?;
        assert_eq!(store.stream_version(&stream).await?, None, "{name} before its first append");
        let result = store.append(&stream, expected, events(first, 2)).await?;
        assert_appended(&result, 2, first, first + 1);
        assert_eq!(store.stream_version(&stream).await?, Some(Version::new(2)), "{name} after {expected}");
        let read = read_stream(store, &stream, ReadStream::forward()).await?;
        assert_eq!(versions(&read), [1, 2], "{name}");
        assert_eq!(positions(&read), [first, first + 1], "{name}");
        first += 2;
    }
    assert_eq!(store.head().await?, Position::new(6));
    Ok(())
}

pub(crate) async fn versions_start_at_1_per_stream_and_positions_are_gap_free_across_streams<S: TestStore>(
    store: &S,
) -> TestResult {
    // (stream, events in the append), interleaved over three streams.
    let plan = [("a-1", 2), ("b-1", 1), ("a-1", 3), ("c-1", 4), ("b-1", 2), ("a-1", 1)];
    let mut next_position = 1;
    for (name, count) in plan {
        let stream = stream(name)?;
        let before = store.stream_version(&stream).await?.map_or(0, Version::get);
        let result = store.append(&stream, ExpectedVersion::Any, events(next_position, count)).await?;
        assert_appended(&result, before + count, next_position, next_position + count - 1);
        next_position += count;
    }
    let head = next_position - 1;
    assert_eq!(store.head().await?, Position::new(head));
    let log = read_log(store, ReadLog::from_start()).await?;
    assert_eq!(positions(&log), span(1, head));
    for (name, count) in [("a-1", 6), ("b-1", 3), ("c-1", 4)] {
        let stream = stream(name)?;
        let read = read_stream(store, &stream, ReadStream::forward()).await?;
        assert_eq!(versions(&read), span(1, count), "{name}");
        assert!(read.windows(2).all(|w| w[0].position < w[1].position), "{name}: positions out of order");
        let in_log: Vec<_> = log.iter().filter(|e| e.stream == stream).cloned().collect();
        assert_eq!(read, in_log, "{name}: the stream read and the log disagree");
    }
    Ok(())
}

pub(crate) async fn each_append_continues_at_the_version_the_previous_one_returned<S: TestStore>(
    store: &S,
) -> TestResult {
    let stream = stream("order-1")?;
    let mut expected = ExpectedVersion::NoStream;
    let mut version = 0;
    for round in 1..=5 {
        let result = store.append(&stream, expected, events(round * 10, round)).await?;
        version += round;
        assert_eq!(result.version, Version::new(version), "round {round}");
        assert_eq!(result.last_position.get() - result.first_position.get() + 1, round, "round {round}");
        expected = ExpectedVersion::Exact(result.version);
    }
    let result = store.append(&stream, ExpectedVersion::StreamExists, events(99, 1)).await?;
    assert_appended(&result, version + 1, version + 1, version + 1);
    Ok(())
}
