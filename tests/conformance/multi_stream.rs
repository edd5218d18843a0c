//! Appends over several streams: atomic, with one result per stream in request order.

use annals::{Error, ExpectedVersion, ReadLog, ReadStream, StreamAppend, Version};

use super::{
    assert_appended, events, expect_error, positions, read_log, read_stream, span, stream, versions, Snapshot,
    TestResult, TestStore,
};

pub(crate) async fn a_multi_stream_append_with_one_failing_expectation_writes_nothing<S: TestStore>(
    store: &S,
) -> TestResult {
    let (a, b, c) = (stream("a-1")?, stream("b-1")?, stream("c-1")?);
    store.append(&a, ExpectedVersion::NoStream, events(1, 1)).await?;
    let good = [
        StreamAppend::new(a.clone(), ExpectedVersion::Exact(Version::FIRST), events(10, 2)),
        StreamAppend::new(b.clone(), ExpectedVersion::NoStream, events(20, 2)),
        StreamAppend::new(c.clone(), ExpectedVersion::Any, events(30, 2)),
    ];
    // The failing part goes first, in the middle, last: none of the others may be written.
    for failing in 0..good.len() {
        let mut appends = good.to_vec();
        let (expected, actual) = match failing {
            0 => (ExpectedVersion::NoStream, Some(Version::FIRST)),
            1 => (ExpectedVersion::StreamExists, None),
            _ => (ExpectedVersion::Exact(Version::new(5)), None),
        };
        appends[failing].expected = expected;
        let bad_stream = appends[failing].stream.clone();
        let before = Snapshot::take(store).await?;
        let error = expect_error(store.append_multi(appends).await)?;
        assert!(
            matches!(
                &error,
                Error::WrongExpectedVersion { stream, expected: e, actual: v }
                    if *stream == bad_stream && *e == expected && *v == actual
            ),
            "part {failing} failing gave {error:?}"
        );
        before.assert_unchanged(store, &[&a, &b, &c]).await?;
    }
    let results = store.append_multi(good.to_vec()).await?;
    assert_eq!(results.len(), 3);
    Ok(())
}

pub(crate) async fn a_multi_stream_append_answers_per_stream_in_order_with_contiguous_positions<S: TestStore>(
    store: &S,
) -> TestResult {
    let (a, b, c) = (stream("a-1")?, stream("b-1")?, stream("c-1")?);
    store.append(&a, ExpectedVersion::NoStream, events(1, 1)).await?;
    let results = store
        .append_multi(vec![
            StreamAppend::new(b.clone(), ExpectedVersion::NoStream, events(10, 2)),
            StreamAppend::new(a.clone(), ExpectedVersion::Exact(Version::FIRST), events(20, 1)),
            StreamAppend::new(c.clone(), ExpectedVersion::Any, events(30, 3)),
        ])
        .await?;
    assert_eq!(results.len(), 3, "{results:?}");
    assert_appended(&results[0], 2, 2, 3);
    assert_appended(&results[1], 2, 4, 4);
    assert_appended(&results[2], 3, 5, 7);

    let log = read_log(store, ReadLog::from_start()).await?;
    assert_eq!(positions(&log), span(1, 7));
    let streams: Vec<_> = log.iter().map(|e| e.stream.as_str()).collect();
    assert_eq!(streams, ["a-1", "b-1", "b-1", "a-1", "c-1", "c-1", "c-1"]);
    let payloads: Vec<_> = log.iter().map(|e| e.payload.as_str()).collect();
    assert_eq!(
        payloads[1..],
        [r#"{"n":10}"#, r#"{"n":11}"#, r#"{"n":20}"#, r#"{"n":30}"#, r#"{"n":31}"#, r#"{"n":32}"#]
    );
    for (stream, count) in [(&a, 2), (&b, 2), (&c, 3)] {
        assert_eq!(versions(&read_stream(store, stream, ReadStream::forward()).await?), span(1, count), "{stream}");
    }
    Ok(())
}
