//! Appends whose expected version does not hold: `WrongExpectedVersion` with what was expected and
//! what the stream is at, and nothing written.

use annals::{ExpectedVersion, Version};

use super::{assert_appended, assert_conflict, events, stream, TestResult, TestStore};

pub(crate) async fn a_wrong_exact_version_is_rejected_with_the_actual_version<S: TestStore>(store: &S) -> TestResult {
    let stream = stream("order-1")?;
    store.append(&stream, ExpectedVersion::NoStream, events(1, 2)).await?;
    let actual = Some(Version::new(2));
    for wrong in [0, 1, 3, 100] {
        assert_conflict(store, &stream, ExpectedVersion::Exact(Version::new(wrong)), actual).await?;
    }
    let result = store.append(&stream, ExpectedVersion::Exact(Version::new(2)), events(3, 1)).await?;
    assert_appended(&result, 3, 3, 3);
    Ok(())
}

pub(crate) async fn no_stream_is_rejected_when_the_stream_exists<S: TestStore>(store: &S) -> TestResult {
    let stream = stream("order-1")?;
    store.append(&stream, ExpectedVersion::NoStream, events(1, 3)).await?;
    assert_conflict(store, &stream, ExpectedVersion::NoStream, Some(Version::new(3))).await
}

pub(crate) async fn stream_exists_is_rejected_when_the_stream_is_missing<S: TestStore>(store: &S) -> TestResult {
    // Another stream exists, so the store is not empty: the check is per stream.
    store.append(&stream("order-2")?, ExpectedVersion::NoStream, events(1, 1)).await?;
    let missing = stream("order-1")?;
    assert_conflict(store, &missing, ExpectedVersion::StreamExists, None).await?;
    assert_conflict(store, &missing, ExpectedVersion::Exact(Version::FIRST), None).await?;
    let result = store.append(&missing, ExpectedVersion::NoStream, events(2, 1)).await?;
    assert_appended(&result, 1, 2, 2);
    let result = store.append(&missing, ExpectedVersion::StreamExists, events(3, 1)).await?;
    assert_appended(&result, 2, 3, 3);
    Ok(())
}

pub(crate) async fn a_stream_prefix_of_another_does_not_share_its_version<S: TestStore>(store: &S) -> TestResult {
    // "order-1" is a prefix of "order-10": a store keying streams by name must not mix them up.
    let long = stream("order-10")?;
    let short = stream("order-1")?;
    store.append(&long, ExpectedVersion::NoStream, events(1, 4)).await?;
    assert_eq!(store.stream_version(&short).await?, None);
    assert_conflict(store, &short, ExpectedVersion::StreamExists, None).await?;
    let result = store.append(&short, ExpectedVersion::NoStream, events(5, 1)).await?;
    assert_appended(&result, 1, 5, 5);
    assert_eq!(store.stream_version(&long).await?, Some(Version::new(4)));
    Ok(())
}
