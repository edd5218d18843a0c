//! Retries: appending the very same events again (or a consecutive part of them) answers with the
//! stored result and stores nothing; reusing stored ids in anything but such a retry is
//! `DuplicateEventId`.

use annals::{AppendResult, Error, ExpectedVersion, Position, StreamAppend, Version};

use super::{assert_appended, event, events, expect_error, stream, Snapshot, TestResult, TestStore};

/// The result of a retry: the original versions and positions, marked as already appended.
fn assert_retry_of(retry: &AppendResult, original: &AppendResult) {
    assert!(retry.already_appended, "a retry must say so: {retry:?}");
    assert_eq!(
        (retry.version, retry.first_position, retry.last_position),
        (original.version, original.first_position, original.last_position),
        "a retry answers with the original append's result"
    );
}

pub(crate) async fn a_retried_append_returns_the_original_result_and_stores_nothing<S: TestStore>(
    store: &S,
) -> TestResult {
    let order = stream("order-1")?;
    let append = events(1, 3);
    let original = store.append(&order, ExpectedVersion::Any, append.clone()).await?;
    assert_appended(&original, 3, 1, 3);
    // Another stream moves the head on, so that a retry appended again would get other positions.
    let other = stream("other-1")?;
    store.append(&other, ExpectedVersion::Any, events(10, 2)).await?;
    let before = Snapshot::take(store).await?;
    for round in 0..2 {
        let retry = store.append(&order, ExpectedVersion::Any, append.clone()).await?;
        assert_retry_of(&retry, &original);
        before.assert_unchanged(store, &[&order, &other]).await.map_err(|e| format!("round {round}: {e}"))?;
    }
    Ok(())
}

pub(crate) async fn a_retry_is_recognised_even_when_its_expected_version_no_longer_holds<S: TestStore>(
    store: &S,
) -> TestResult {
    let order = stream("order-1")?;
    let first = events(1, 2);
    let original = store.append(&order, ExpectedVersion::NoStream, first.clone()).await?;
    let second = store.append(&order, ExpectedVersion::Exact(original.version), events(3, 1)).await?;
    let before = Snapshot::take(store).await?;
    // Both expectations were right once and are wrong now: the retries still succeed.
    assert_retry_of(&store.append(&order, ExpectedVersion::NoStream, first.clone()).await?, &original);
    assert_retry_of(&store.append(&order, ExpectedVersion::Exact(Version::ZERO), first).await?, &original);
    let retry = store.append(&order, ExpectedVersion::Exact(Version::new(9)), events(3, 1)).await;
    // `events(3, 1)` has a fresh id: not a retry, so the expectation is checked.
    assert!(matches!(retry, Err(Error::WrongExpectedVersion { .. })), "{retry:?}");
    before.assert_unchanged(store, &[&order]).await?;
    assert_eq!(second.version, Version::new(3));
    Ok(())
}

pub(crate) async fn a_retried_multi_stream_append_returns_the_original_results<S: TestStore>(store: &S) -> TestResult {
    let (a, b) = (stream("a-1")?, stream("b-1")?);
    let appends = vec![
        StreamAppend::new(a.clone(), ExpectedVersion::NoStream, events(1, 2)),
        StreamAppend::new(b.clone(), ExpectedVersion::NoStream, events(3, 1)),
    ];
    let original = store.append_multi(appends.clone()).await?;
    store.append(&a, ExpectedVersion::Any, events(4, 1)).await?;
    let before = Snapshot::take(store).await?;
    let retry = store.append_multi(appends).await?;
    assert_eq!(retry.len(), original.len());
    for (retry, original) in retry.iter().zip(&original) {
        assert_retry_of(retry, original);
    }
    before.assert_unchanged(store, &[&a, &b]).await
}

pub(crate) async fn an_append_reusing_a_stored_id_among_new_ids_is_rejected<S: TestStore>(store: &S) -> TestResult {
    let order = stream("order-1")?;
    let stored = events(1, 2);
    store.append(&order, ExpectedVersion::Any, stored.clone()).await?;
    let before = Snapshot::take(store).await?;
    let (first, second) = ((stored[0].id(), Position::FIRST), (stored[1].id(), Position::new(2)));
    // Each attempt, and the stored ids it reuses: the error names one of them, with its position.
    let attempts = [
        (vec![event(3), stored[1].clone()], vec![second]),
        (vec![stored[1].clone(), event(4)], vec![second]),
        (vec![stored[0].clone(), stored[1].clone(), event(5)], vec![first, second]),
    ];
    for (attempt, reused) in attempts {
        let error = expect_error(store.append(&order, ExpectedVersion::Any, attempt).await)?;
        assert!(
            matches!(&error, Error::DuplicateEventId { id, position } if reused.contains(&(*id, *position))),
            "expected one of {reused:?}, got {error:?}"
        );
    }
    // The stored events again, but out of order, are not a retry either.
    let error =
        expect_error(store.append(&order, ExpectedVersion::Any, vec![stored[1].clone(), stored[0].clone()]).await)?;
    assert!(matches!(error, Error::DuplicateEventId { .. }), "{error:?}");
    before.assert_unchanged(store, &[&order]).await
}

pub(crate) async fn an_append_reusing_stored_ids_in_another_stream_is_rejected<S: TestStore>(store: &S) -> TestResult {
    let order = stream("order-1")?;
    let other = stream("order-2")?;
    let stored = events(1, 2);
    store.append(&order, ExpectedVersion::Any, stored.clone()).await?;
    let before = Snapshot::take(store).await?;
    let error = expect_error(store.append(&other, ExpectedVersion::Any, stored.clone()).await)?;
    let first = stored[0].id();
    assert!(
        matches!(&error, Error::DuplicateEventId { id, position } if *id == first && *position == Position::FIRST),
        "{error:?}"
    );
    let split = vec![
        StreamAppend::new(order.clone(), ExpectedVersion::Any, vec![stored[0].clone()]),
        StreamAppend::new(other.clone(), ExpectedVersion::Any, vec![stored[1].clone()]),
    ];
    let error = expect_error(store.append_multi(split).await)?;
    assert!(matches!(&error, Error::DuplicateEventId { id, .. } if *id == stored[1].id()), "{error:?}");
    before.assert_unchanged(store, &[&order, &other]).await
}

pub(crate) async fn a_retry_of_part_of_an_earlier_append_returns_the_stored_part<S: TestStore>(
    store: &S,
) -> TestResult {
    let (order, other) = (stream("order-1")?, stream("other-1")?);
    store.append(&order, ExpectedVersion::NoStream, events(1, 2)).await?;
    store.append(&other, ExpectedVersion::Any, events(10, 1)).await?;
    // Versions 3 to 6 of order-1, at positions 4 to 7: not the stream's first append.
    let append = events(3, 4);
    let original = store.append(&order, ExpectedVersion::Exact(Version::new(2)), append.clone()).await?;
    assert_appended(&original, 6, 4, 7);
    store.append(&other, ExpectedVersion::Any, events(11, 1)).await?;
    let before = Snapshot::take(store).await?;

    // Any consecutive part: its own versions and positions, whatever it expects.
    for (from, to) in [(0, 1), (1, 3), (3, 4), (0, 3), (1, 4), (0, 4)] {
        let retry = store.append(&order, ExpectedVersion::NoStream, append[from..to].to_vec()).await?;
        assert!(retry.already_appended, "part {from}..{to}: {retry:?}");
        assert_eq!(
            (retry.version.get(), retry.first_position.get(), retry.last_position.get()),
            (3 + to as u64 - 1, 4 + from as u64, 4 + to as u64 - 1),
            "part {from}..{to} answers with its own stored versions and positions"
        );
    }
    // Not consecutive (a stored event left out in the middle): not a retry.
    let gapped = vec![append[0].clone(), append[2].clone()];
    let error = expect_error(store.append(&order, ExpectedVersion::Any, gapped).await)?;
    assert!(matches!(error, Error::DuplicateEventId { .. }), "{error:?}");
    before.assert_unchanged(store, &[&order, &other]).await?;

    // Parts of a multi-stream append: of both streams together, or of one alone.
    let (a, b) = (stream("a-1")?, stream("b-1")?);
    let (for_a, for_b) = (events(20, 3), events(30, 2));
    let multi = store
        .append_multi(vec![
            StreamAppend::new(a.clone(), ExpectedVersion::NoStream, for_a.clone()),
            StreamAppend::new(b.clone(), ExpectedVersion::NoStream, for_b.clone()),
        ])
        .await?;
    assert_appended(&multi[0], 3, 9, 11);
    assert_appended(&multi[1], 2, 12, 13);
    let before = Snapshot::take(store).await?;
    let both = store
        .append_multi(vec![
            StreamAppend::new(a.clone(), ExpectedVersion::Any, for_a[1..].to_vec()),
            StreamAppend::new(b.clone(), ExpectedVersion::Any, for_b[..1].to_vec()),
        ])
        .await?;
    let answered: Vec<_> = both
        .iter()
        .map(|r| (r.version.get(), r.first_position.get(), r.last_position.get(), r.already_appended))
        .collect();
    assert_eq!(answered, [(3, 10, 11, true), (1, 12, 12, true)]);
    let alone = store.append(&b, ExpectedVersion::Any, for_b[1..].to_vec()).await?;
    assert!(alone.already_appended, "{alone:?}");
    assert_eq!((alone.version.get(), alone.first_position.get()), (2, 13));
    before.assert_unchanged(store, &[&a, &b]).await
}
