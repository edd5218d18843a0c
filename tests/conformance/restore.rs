//! Restoring recorded events: an export loads back exactly, and events that do not continue the log
//! are refused.

use annals::{
    export_jsonl, import_jsonl, Checkpoint, CheckpointWrite, Error, EventStore, ExpectedVersion, LogFilter, Metadata,
    NewEvent, Position, RecordedEvent, StreamId,
};

use super::{TestResult, TestStore};

/// A log with interleaved streams over several appends (so several `recorded_at`), business times
/// and metadata.
async fn fill<S: TestStore>(store: &S) -> TestResult {
    let a = StreamId::new("order-a")?;
    let b = StreamId::new("order-b")?;
    let occurred = chrono::DateTime::from_timestamp_micros(1_500_000_000_000_001).ok_or("time")?;
    let meta =
        Metadata { correlation_id: Some("c-1".into()), causation_id: None, headers: [("k".into(), "v".into())].into() };
    for round in 0..3 {
        let event = |n: u32| {
            NewEvent::raw("Touched", format!(r#"{{"round":{round},"n":{n}}}"#))
                .with_schema_version(2)
                .with_occurred_at(occurred)
                .with_metadata(meta.clone())
        };
        store
            .append_multi(vec![
                annals::StreamAppend::new(a.clone(), ExpectedVersion::Any, vec![event(1), event(2)]),
                annals::StreamAppend::new(b.clone(), ExpectedVersion::Any, vec![event(3)]),
            ])
            .await?;
        store.append(&a, ExpectedVersion::Any, vec![event(4)]).await?;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let saved = Checkpoint::new("projection/x", Position::new(7)).with_state(r#"{"version":1,"state":[1,2]}"#);
    store.save_checkpoints(vec![CheckpointWrite::Save(saved)]).await?;
    Ok(())
}

async fn everything<S: TestStore>(store: &S) -> Result<Vec<RecordedEvent>, Error> {
    Ok(store.read_log_chunk(Position::FIRST, 10_000, &LogFilter::all()).await?.events)
}

pub(crate) async fn an_export_imports_into_an_empty_store_exactly_and_a_second_import_adds_nothing<S: TestStore>(
    store: &S,
) -> TestResult {
    let source = annals::MemoryStore::new();
    fill(&source).await?;
    let mut lines = Vec::new();
    let exported = export_jsonl(&source, &mut lines).await?;
    assert_eq!((exported.events, exported.checkpoints), (12, 1));

    let imported = import_jsonl(store, lines.as_slice()).await?;
    assert_eq!((imported.events, imported.checkpoints), (12, 1));
    assert_eq!(everything(store).await?, everything(&source).await?);
    assert_eq!(store.list_checkpoints("").await?, source.list_checkpoints("").await?);
    assert_eq!(store.stream_version(&StreamId::new("order-a")?).await?.map(|v| v.get()), Some(9));

    let again = import_jsonl(store, lines.as_slice()).await?;
    assert_eq!(again.events, 0);
    assert_eq!(everything(store).await?, everything(&source).await?);

    // And the store goes on normally after a restore.
    let next =
        store.append(&StreamId::new("order-b")?, ExpectedVersion::Any, vec![NewEvent::raw("Next", "{}")]).await?;
    assert_eq!((next.version.get(), next.first_position.get()), (4, 13));
    Ok(())
}

pub(crate) async fn restoring_events_that_do_not_continue_the_log_is_refused_and_writes_nothing<S: TestStore>(
    store: &S,
) -> TestResult {
    let source = annals::MemoryStore::new();
    fill(&source).await?;
    let events = everything(&source).await?;

    // Not starting at the next position.
    let result = store.restore(events[1..3].to_vec()).await;
    assert!(matches!(result, Err(Error::Restore { position, .. }) if position == Position::new(2)), "{result:?}");
    // Mixing recorded times in one batch (events 3 and 4 came from different appends).
    let mut mixed = events[0..3].to_vec();
    mixed.push(events[3].clone());
    mixed[3].recorded_at = mixed[0].recorded_at + chrono::Duration::milliseconds(1);
    let result = store.restore(mixed).await;
    assert!(matches!(result, Err(Error::Restore { .. })), "{result:?}");
    // A version gap within a stream.
    let mut gap = events[0..1].to_vec();
    gap[0].version = annals::Version::new(2);
    let result = store.restore(gap).await;
    assert!(matches!(result, Err(Error::WrongExpectedVersion { .. })), "{result:?}");
    // Version 0 and position 0 do not exist.
    let mut zero = events[0..1].to_vec();
    zero[0].version = annals::Version::ZERO;
    let result = store.restore(zero).await;
    assert!(matches!(result, Err(Error::Restore { .. })), "{result:?}");
    let mut zero = events[0..1].to_vec();
    zero[0].position = Position::ZERO;
    let result = store.restore(zero).await;
    assert!(matches!(result, Err(Error::Restore { .. })), "{result:?}");
    assert_eq!(store.head().await?, Position::ZERO);

    // The right first batch goes in; an older recorded time after it is refused.
    store.restore(events[0..3].to_vec()).await?;
    let mut older = events[3..4].to_vec();
    older[0].recorded_at = events[0].recorded_at - chrono::Duration::seconds(1);
    let result = store.restore(older).await;
    assert!(matches!(result, Err(Error::Restore { .. })), "{result:?}");
    assert_eq!(store.head().await?, Position::new(3));
    Ok(())
}
