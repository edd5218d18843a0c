//! The life of a stream: soft and hard deletes, truncation, retention and scavenging answer the same
//! on every store. What each read answers is the table in `docs/guarantees.md` ("The life of a
//! stream"); these checks prove it row by row.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use annals::{
    scavenge, DeleteMode, Direction, Error, ExpectedVersion, LogFilter, NewEvent, Position, ReadLog, ReadStream,
    RetentionPolicy, RetentionRule, RetentionScope, ScavengeOptions, Snapshot, StreamId, StreamView, Version,
};

use super::{events, expect_error, positions, read_log, read_stream, span, stream, versions, TestResult, TestStore};

/// Whether `error` is `StreamDeleted` for `stream`.
fn is_deleted(error: &Error, stream: &StreamId) -> bool {
    matches!(error, Error::StreamDeleted { stream: s } if s == stream)
}

/// Runs a whole scavenge with small steps, so that every store crosses step boundaries.
async fn scavenge_all<S: TestStore>(store: &S) -> Result<annals::ScavengeReport, Error> {
    scavenge(store, ScavengeOptions::new().chunk_size(7), |_| {}).await
}

pub(crate) async fn a_soft_deleted_stream_reads_as_missing_and_starts_again_at_the_next_version<S: TestStore>(
    store: &S,
) -> TestResult {
    let cart = stream("cart-1")?;
    let other = stream("cart-2")?;
    store.append(&cart, ExpectedVersion::NoStream, events(1, 3)).await?;
    store.append(&other, ExpectedVersion::NoStream, events(10, 1)).await?;
    store.save_snapshot(Snapshot::new(cart.clone(), Version::new(2), 1, "{}".into())).await?;

    store.delete_stream(&cart, ExpectedVersion::Exact(Version::new(3)), DeleteMode::Soft).await?;
    // Reads answer "not found", exactly as for a stream never written.
    assert_eq!(store.stream_version(&cart).await?, None);
    assert!(read_stream(store, &cart, ReadStream::forward()).await?.is_empty());
    assert!(read_stream(store, &cart, ReadStream::backward()).await?.is_empty());
    assert!(store.list_streams("cart-").await?.iter().all(|(s, _)| s != &cart), "listed after its delete");
    assert_eq!(store.load_snapshot(&cart, Version::MAX).await?, None, "a soft delete drops the snapshots");
    // The log and the history view still see the old events.
    assert_eq!(positions(&read_log(store, ReadLog::from_start()).await?), span(1, 4));
    let history = read_stream(store, &cart, ReadStream::forward().view(StreamView::History)).await?;
    assert_eq!(versions(&history), [1, 2, 3]);
    let info = store.stream_info(&cart).await?;
    assert_eq!((info.last_version, info.truncated_before), (Some(Version::new(3)), Version::new(4)));
    assert_eq!(info.soft_deletions.iter().map(|d| d.next_version.get()).collect::<Vec<_>>(), [4]);
    assert!(!info.tombstone);

    // Only "no stream" (or any) fits now; the stream starts again at version 4.
    for expected in [ExpectedVersion::Exact(Version::new(3)), ExpectedVersion::StreamExists] {
        let error = expect_error(store.append(&cart, expected, events(20, 1)).await)?;
        assert!(
            matches!(&error, Error::WrongExpectedVersion { actual: None, .. }),
            "{expected:?} after a soft delete gave {error:?}"
        );
    }
    let again = store.append(&cart, ExpectedVersion::NoStream, events(30, 2)).await?;
    assert_eq!((again.version.get(), again.first_position.get()), (5, 5));
    let current = read_stream(store, &cart, ReadStream::forward()).await?;
    assert_eq!(versions(&current), [4, 5]);
    assert_eq!(store.stream_version(&cart).await?, Some(Version::new(5)));
    assert_eq!(versions(&read_stream(store, &cart, ReadStream::backward()).await?), [5, 4]);
    // Reading from a version below the new start starts at the new start; backwards from it, nothing.
    assert_eq!(versions(&read_stream(store, &cart, ReadStream::forward().from(Version::new(2))).await?), [4, 5]);
    assert!(read_stream(store, &cart, ReadStream::backward().from(Version::new(3))).await?.is_empty());
    // A soft delete of a stream with nothing to show changes nothing.
    store.delete_stream(&other, ExpectedVersion::Any, DeleteMode::Soft).await?;
    let before = store.stream_info(&other).await?;
    store.delete_stream(&other, ExpectedVersion::NoStream, DeleteMode::Soft).await?;
    assert_eq!(store.stream_info(&other).await?, before);
    Ok(())
}

pub(crate) async fn a_delete_checks_the_expected_version_and_changes_nothing_when_it_fails<S: TestStore>(
    store: &S,
) -> TestResult {
    let order = stream("order-1")?;
    store.append(&order, ExpectedVersion::NoStream, events(1, 2)).await?;
    for mode in [DeleteMode::Soft, DeleteMode::Hard] {
        for expected in [ExpectedVersion::Exact(Version::new(1)), ExpectedVersion::NoStream] {
            let error = expect_error(store.delete_stream(&order, expected, mode).await)?;
            assert!(
                matches!(&error, Error::WrongExpectedVersion { actual: Some(v), .. } if v.get() == 2),
                "{mode:?} delete expecting {expected:?} gave {error:?}"
            );
        }
    }
    assert_eq!(store.stream_version(&order).await?, Some(Version::new(2)));
    assert_eq!(store.stream_info(&order).await?.truncated_before, Version::FIRST);
    Ok(())
}

pub(crate) async fn a_hard_deleted_stream_refuses_every_read_and_append_forever<S: TestStore>(store: &S) -> TestResult {
    let account = stream("account-1")?;
    let ledger = stream("ledger-1")?;
    store.append(&account, ExpectedVersion::NoStream, events(1, 3)).await?;
    store.save_snapshot(Snapshot::new(account.clone(), Version::new(3), 1, "{}".into())).await?;
    store.delete_stream(&account, ExpectedVersion::StreamExists, DeleteMode::Hard).await?;

    for view in [StreamView::Current, StreamView::History] {
        let error =
            expect_error(store.read_stream_chunk(&account, Version::FIRST, Direction::Forward, 10, view).await)?;
        assert!(is_deleted(&error, &account), "a {view:?} read gave {error:?}");
    }
    assert!(is_deleted(&expect_error(store.stream_version(&account).await)?, &account));
    for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream, ExpectedVersion::Exact(Version::new(3))] {
        let error = expect_error(store.append(&account, expected, events(10, 1)).await)?;
        assert!(is_deleted(&error, &account), "append expecting {expected:?} gave {error:?}");
    }
    // In a multi-stream append, the whole append fails and nothing is written.
    let head = store.head().await?;
    let error = expect_error(
        store
            .append_multi(vec![
                annals::StreamAppend::new(ledger.clone(), ExpectedVersion::Any, events(20, 1)),
                annals::StreamAppend::new(account.clone(), ExpectedVersion::Any, events(21, 1)),
            ])
            .await,
    )?;
    assert!(is_deleted(&error, &account), "multi-stream append gave {error:?}");
    assert_eq!(store.head().await?, head);
    assert_eq!(store.stream_version(&ledger).await?, None);
    // Deleting or truncating again answers the same; the snapshots are gone; the log still has the events.
    assert!(is_deleted(
        &expect_error(store.delete_stream(&account, ExpectedVersion::Any, DeleteMode::Hard).await)?,
        &account
    ));
    assert!(is_deleted(
        &expect_error(store.delete_stream(&account, ExpectedVersion::Any, DeleteMode::Soft).await)?,
        &account
    ));
    assert!(is_deleted(&expect_error(store.truncate_stream(&account, Version::new(2)).await)?, &account));
    assert_eq!(store.load_snapshot(&account, Version::MAX).await?, None);
    assert!(store.list_streams("").await?.is_empty());
    assert_eq!(positions(&read_log(store, ReadLog::from_start()).await?), span(1, 3));
    let info = store.stream_info(&account).await?;
    assert!(info.tombstone && info.last_version == Some(Version::new(3)), "{info:?}");

    // A stream never written can be tombstoned too.
    let never = stream("never-1")?;
    store.delete_stream(&never, ExpectedVersion::NoStream, DeleteMode::Hard).await?;
    assert!(is_deleted(&expect_error(store.append(&never, ExpectedVersion::Any, events(30, 1)).await)?, &never));
    Ok(())
}

pub(crate) async fn truncation_hides_versions_below_it_only_moves_forward_and_keeps_snapshots<S: TestStore>(
    store: &S,
) -> TestResult {
    let sensor = stream("sensor-1")?;
    store.append(&sensor, ExpectedVersion::NoStream, events(1, 10)).await?;
    store.save_snapshot(Snapshot::new(sensor.clone(), Version::new(6), 1, "{}".into())).await?;
    store.truncate_stream(&sensor, Version::new(7)).await?;
    assert_eq!(versions(&read_stream(store, &sensor, ReadStream::forward()).await?), span(7, 10));
    assert_eq!(versions(&read_stream(store, &sensor, ReadStream::backward()).await?), [10, 9, 8, 7]);
    assert!(read_stream(store, &sensor, ReadStream::backward().from(Version::new(6))).await?.is_empty());
    assert_eq!(
        versions(&read_stream(store, &sensor, ReadStream::forward().from(Version::new(3)).limit(2)).await?),
        [7, 8]
    );
    let history = read_stream(store, &sensor, ReadStream::forward().view(StreamView::History)).await?;
    assert_eq!(versions(&history), span(1, 10));
    assert_eq!(store.stream_version(&sensor).await?, Some(Version::new(10)));
    assert_eq!(store.load_snapshot(&sensor, Version::MAX).await?.map(|s| s.version.get()), Some(6));
    // Appends carry on; the expected version is the last one.
    store.append(&sensor, ExpectedVersion::Exact(Version::new(10)), events(11, 1)).await?;

    // Backwards changes nothing; past the version after the last one is refused.
    store.truncate_stream(&sensor, Version::new(3)).await?;
    assert_eq!(store.stream_info(&sensor).await?.truncated_before, Version::new(7));
    let error = expect_error(store.truncate_stream(&sensor, Version::new(13)).await)?;
    assert!(
        matches!(&error, Error::InvalidTruncation { before, last: Some(last), .. } if before.get() == 13 && last.get() == 11),
        "{error:?}"
    );
    // Truncating to the end empties the stream for readers, like a soft delete but keeping snapshots.
    store.truncate_stream(&sensor, Version::new(12)).await?;
    assert_eq!(store.stream_version(&sensor).await?, None);
    assert!(read_stream(store, &sensor, ReadStream::forward()).await?.is_empty());
    assert_eq!(store.load_snapshot(&sensor, Version::MAX).await?.map(|s| s.version.get()), Some(6));
    let error = expect_error(store.truncate_stream(&stream("nothing-1")?, Version::new(2)).await)?;
    assert!(matches!(&error, Error::InvalidTruncation { last: None, .. }), "{error:?}");
    Ok(())
}

pub(crate) async fn a_scavenge_removes_what_reads_no_longer_show_and_positions_never_change<S: TestStore>(
    store: &S,
) -> TestResult {
    // Interleaved streams, so removed events sit between kept ones in every storage unit.
    let (gone, cut, soft, kept) = (stream("gone-1")?, stream("cut-1")?, stream("soft-1")?, stream("kept-1")?);
    for round in 0..5 {
        for s in [&gone, &cut, &soft, &kept] {
            store
                .append(s, ExpectedVersion::Any, vec![NewEvent::raw("Tick", format!("{{\"round\":{round}}}"))])
                .await?;
        }
    }
    store.delete_stream(&gone, ExpectedVersion::Any, DeleteMode::Hard).await?;
    store.truncate_stream(&cut, Version::new(4)).await?;
    store.delete_stream(&soft, ExpectedVersion::Any, DeleteMode::Soft).await?;
    let before = read_log(store, ReadLog::from_start()).await?;
    let expected: Vec<_> =
        before.iter().filter(|e| e.stream == kept || (e.stream == cut && e.version.get() >= 4)).cloned().collect();

    let report = scavenge_all(store).await?;
    assert_eq!((report.examined, report.removed), (20, 13), "{report:?}");
    assert!(report.bytes_removed > 0);
    assert_eq!(report.head, Position::new(20));
    // Every kept event is exactly as it was, at its position; the log reads skip the gaps.
    assert_eq!(read_log(store, ReadLog::from_start()).await?, expected);
    assert_eq!(store.head().await?, Position::new(20), "the head never moves back");
    assert_eq!(positions(&read_log(store, ReadLog::from_start().limit(3)).await?), [4, 8, 12]);
    let filtered = read_log(store, ReadLog::from_start().filter(LogFilter::all().stream_prefix("cut-"))).await?;
    assert_eq!(versions(&filtered), [4, 5]);
    let typed = read_log(store, ReadLog::from(Position::new(5)).filter(LogFilter::all().event_types(["Tick"]))).await?;
    assert_eq!(positions(&typed), positions(&expected[1..]));
    // Stream reads in both views show only what is stored; the soft-deleted history is gone too.
    assert_eq!(versions(&read_stream(store, &cut, ReadStream::forward().view(StreamView::History)).await?), [4, 5]);
    assert!(read_stream(store, &soft, ReadStream::forward().view(StreamView::History)).await?.is_empty());
    assert_eq!(versions(&read_stream(store, &kept, ReadStream::forward()).await?), span(1, 5));
    // seek_recorded works over what is left.
    let first_kept = &expected[0];
    assert_eq!(store.seek_recorded(first_kept.recorded_at).await?, Some(first_kept.position));

    // Positions and versions are never reused: new events go after the head, and the soft-deleted
    // stream, every event of it removed, starts again after its last version.
    let next = store.append(&soft, ExpectedVersion::NoStream, events(100, 1)).await?;
    assert_eq!((next.version.get(), next.first_position.get()), (6, 21));
    let again = scavenge_all(store).await?;
    assert_eq!(again.removed, 0, "a second scavenge removes nothing: {again:?}");
    assert_eq!(again.examined, 8);
    Ok(())
}

pub(crate) async fn scavenge_steps_resume_anywhere_and_one_stream_can_be_scavenged_alone<S: TestStore>(
    store: &S,
) -> TestResult {
    let (a, b) = (stream("a-1")?, stream("b-1")?);
    for n in 0..30 {
        store.append(if n % 3 == 0 { &a } else { &b }, ExpectedVersion::Any, events(n, 1)).await?;
    }
    store.truncate_stream(&b, Version::new(11)).await?;
    // Step by step: each step's `next` is where the next starts; repeating a step removes nothing more.
    let first = store.scavenge_chunk(Position::FIRST, 10).await?;
    assert!(first.next > Position::FIRST && !first.end, "{first:?}");
    let repeated = store.scavenge_chunk(Position::FIRST, 10).await?;
    assert_eq!(repeated.removed, 0);
    let mut at = first.next;
    let mut removed = first.removed;
    loop {
        let step = store.scavenge_chunk(at, 10).await?;
        removed += step.removed;
        at = step.next;
        if step.end {
            break;
        }
    }
    assert_eq!(removed, 10);
    assert_eq!(versions(&read_stream(store, &b, ReadStream::forward().view(StreamView::History)).await?), span(11, 20));

    // One stream, now, without walking the log.
    store.delete_stream(&a, ExpectedVersion::Any, DeleteMode::Hard).await?;
    assert_eq!(store.scavenge_stream(&a).await?, 10);
    assert_eq!(store.scavenge_stream(&a).await?, 0);
    assert_eq!(read_log(store, ReadLog::from_start()).await?.len(), 10);
    store.truncate_stream(&b, Version::new(15)).await?;
    assert_eq!(store.scavenge_stream(&b).await?, 4);
    assert_eq!(versions(&read_log(store, ReadLog::from_start()).await?), span(15, 20));
    Ok(())
}

pub(crate) async fn retention_rules_by_count_and_age_are_applied_by_a_scavenge<S: TestStore>(store: &S) -> TestResult {
    let readings: Vec<StreamId> = (1..=3).map(|n| stream(&format!("reading-{n}"))).collect::<Result<_, _>>()?;
    let audit = stream("audit-1")?;
    for s in &readings {
        store.append(s, ExpectedVersion::NoStream, events(1, 8)).await?;
    }
    store.append(&audit, ExpectedVersion::NoStream, events(1, 4)).await?;
    // Clocks have microseconds: make sure the young events are recorded later than the old ones.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let young_from = store.head().await?.get() + 1;
    store.append(&audit, ExpectedVersion::Any, events(5, 2)).await?;
    let young = read_log(store, ReadLog::from(Position::new(young_from))).await?;
    let cutoff_age = Duration::from_secs(3600);
    // A scavenge "now" one hour after the young events were recorded: everything before them is older.
    let now = young[0].recorded_at + chrono::Duration::from_std(cutoff_age)?;

    let by_count = RetentionRule::new(RetentionScope::Prefix("reading-".into()), RetentionPolicy::max_count(3));
    let by_age = RetentionRule::new(RetentionScope::Stream(audit.clone()), RetentionPolicy::max_age(cutoff_age));
    store.set_retention(by_count.clone()).await?;
    store.set_retention(by_age.clone()).await?;
    assert_eq!(store.retention_rules().await?, [by_count.clone(), by_age.clone()]);
    // Setting a scope again replaces its rule.
    let by_count = RetentionRule::new(by_count.scope, RetentionPolicy::max_count(2));
    store.set_retention(by_count.clone()).await?;
    assert_eq!(store.retention_rules().await?, [by_count.clone(), by_age.clone()]);

    // Until a scavenge runs, expired events are still read.
    assert_eq!(read_stream(store, &readings[0], ReadStream::forward()).await?.len(), 8);
    let report = scavenge(store, ScavengeOptions::new().now(now), |_| {}).await?;
    assert_eq!(report.streams_truncated, 4, "{report:?}");
    assert_eq!(report.removed, 3 * 6 + 4);
    for s in &readings {
        assert_eq!(versions(&read_stream(store, s, ReadStream::forward()).await?), [7, 8], "{s}");
    }
    assert_eq!(versions(&read_stream(store, &audit, ReadStream::forward()).await?), [5, 6]);

    assert!(store.remove_retention(&by_age.scope).await?);
    assert!(!store.remove_retention(&by_age.scope).await?);
    assert_eq!(store.retention_rules().await?, [by_count]);
    // A rule that keeps everything truncates nothing.
    store
        .set_retention(RetentionRule::new(RetentionScope::Stream(audit.clone()), RetentionPolicy::max_count(10)))
        .await?;
    let report = scavenge(store, ScavengeOptions::new().now(now), |_| {}).await?;
    assert_eq!((report.streams_truncated, report.removed), (0, 0), "{report:?}");
    Ok(())
}

pub(crate) async fn a_scavenge_interrupted_between_steps_resumes_from_its_checkpoint<S: TestStore>(
    store: &S,
) -> TestResult {
    let (a, b) = (stream("a-1")?, stream("b-1")?);
    for n in 0..40 {
        store.append(if n % 2 == 0 { &a } else { &b }, ExpectedVersion::Any, events(n, 1)).await?;
    }
    store.delete_stream(&a, ExpectedVersion::Any, DeleteMode::Hard).await?;
    // Stop after the second step, as Ctrl-C in `annals scavenge` does.
    let stop = Arc::new(AtomicBool::new(false));
    let mut steps = 0;
    let options = ScavengeOptions::new().chunk_size(8).stop_when(Arc::clone(&stop));
    let stopped = scavenge(store, options, |_| {
        steps += 1;
        stop.store(steps == 2, Ordering::SeqCst);
    })
    .await?;
    assert!(!stopped.finished && stopped.removed == 8, "{stopped:?}");
    let saved = store.load_checkpoint(annals::SCAVENGE_CHECKPOINT).await?.ok_or("no progress saved")?;
    assert_eq!(saved.position, Position::new(17), "two steps of 8 from position 1");
    let report = scavenge_all(store).await?;
    assert_eq!(report.resumed_from, Some(Position::new(17)));
    assert!(report.finished);
    assert_eq!(report.removed, 20, "the totals carry over from the first run: {report:?}");
    assert_eq!(report.examined, 40);
    assert_eq!(store.load_checkpoint(annals::SCAVENGE_CHECKPOINT).await?, None, "a finished run deletes it");
    assert_eq!(read_log(store, ReadLog::from_start()).await?.len(), 20);
    Ok(())
}
