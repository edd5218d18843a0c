//! `copy_store` is lossless across backends: a `MemoryStore` copied into a `SledStore` and back into
//! a `MemoryStore` reads back the same events (whole envelopes, multi-stream commit groups), the
//! same checkpoints and the same snapshots, and no snapshot past the copied events comes along. A
//! target that holds events is refused before anything is written.

use annals::{
    copy_store, Checkpoint, CheckpointWrite, CopyReport, Error, EventStore, ExpectedVersion, MemoryStore, NewEvent,
    Position, ReadLog, RecordedEvent, SledStore, Snapshot, StreamAppend, StreamId, Version,
};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).map(|t| t.to_utc()).unwrap_or_default()
}

/// A source with single and multi-stream appends, metadata, checkpoints (with and without state)
/// and snapshots at several versions of two streams.
async fn source() -> Result<MemoryStore, Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    let (order, stock, customer) = (StreamId::new("order-1")?, StreamId::new("stock-7")?, StreamId::new("customer-1")?);
    let placed = NewEvent::json("OrderPlaced", &serde_json::json!({ "total": 1250 }))?
        .with_occurred_at(at("2013-01-10T09:00:00Z"))
        .with_correlation_id("checkout-19")
        .with_causation_id("cart-3")
        .with_header("user", "ada")
        .with_schema_version(2);
    store.append(&order, ExpectedVersion::NoStream, vec![placed]).await?;
    // One commit group over two streams, one recorded_at.
    store
        .append_multi(vec![
            StreamAppend::new(
                order.clone(),
                ExpectedVersion::Exact(Version::new(1)),
                vec![NewEvent::raw("OrderPaid", r#"{"amount":1250}"#), NewEvent::raw("OrderShipped", "{}")],
            ),
            StreamAppend::new(stock.clone(), ExpectedVersion::NoStream, vec![NewEvent::raw("Reserved", r#"{"n":1}"#)]),
        ])
        .await?;
    store.append(&customer, ExpectedVersion::NoStream, vec![NewEvent::raw("CustomerJoined", "{}")]).await?;
    store.append(&stock, ExpectedVersion::Any, vec![NewEvent::raw("Released", r#"{"n":1}"#)]).await?;
    store
        .save_checkpoints(vec![
            CheckpointWrite::Save(Checkpoint::new("projection/totals", Position::new(4)).with_state(r#"{"sum":1250}"#)),
            CheckpointWrite::Save(Checkpoint::new("subscription/emails/0", Position::new(2))),
        ])
        .await?;
    for (stream, version) in [(&order, 1), (&order, 3), (&stock, 2)] {
        let state = format!(r#"{{"at":{version}}}"#);
        store.save_snapshot(Snapshot::new(stream.clone(), Version::new(version), 1, state)).await?;
    }
    Ok(store)
}

async fn events<S: EventStore + ?Sized>(store: &S) -> Result<Vec<RecordedEvent>, Error> {
    store.read_log(ReadLog::from_start()).try_collect().await
}

/// Every snapshot of every stream, by walking down from the newest.
async fn snapshots<S: EventStore + ?Sized>(store: &S) -> Result<Vec<Snapshot>, Error> {
    let mut found = Vec::new();
    for (stream, _) in store.list_streams("").await? {
        let mut at = Some(Version::MAX);
        while let Some(version) = at {
            let Some(snapshot) = store.load_snapshot(&stream, version).await? else { break };
            at = snapshot.version.get().checked_sub(1).map(Version::new);
            found.push(snapshot);
        }
    }
    Ok(found)
}

#[tokio::test]
async fn memory_to_sled_to_memory_keeps_events_checkpoints_and_snapshots() -> TestResult {
    let source = source().await?;
    let dir = tempfile::tempdir()?;
    let sled = SledStore::open(dir.path())?;
    let report = copy_store(&source, &sled).await?;
    assert_eq!((report.events, report.checkpoints, report.snapshots), (6, 2, 3));

    let back = MemoryStore::new();
    assert_eq!(copy_store(&sled, &back).await?, report);

    let original = events(&source).await?;
    assert_eq!(original.len(), 6);
    assert_eq!(events(&sled).await?, original);
    assert_eq!(events(&back).await?, original);
    // The multi-stream group kept its one recorded_at, and the first event its whole envelope.
    assert!(original[1].recorded_at == original[2].recorded_at && original[2].recorded_at == original[3].recorded_at);
    assert_eq!(events(&back).await?[0].metadata.headers.get("user").map(String::as_str), Some("ada"));

    let checkpoints = source.list_checkpoints("").await?;
    assert_eq!(checkpoints.len(), 2);
    assert_eq!(sled.list_checkpoints("").await?, checkpoints);
    assert_eq!(back.list_checkpoints("").await?, checkpoints);

    let snapshots_before = snapshots(&source).await?;
    assert_eq!(snapshots_before.len(), 3);
    assert_eq!(snapshots(&sled).await?, snapshots_before);
    assert_eq!(snapshots(&back).await?, snapshots_before);
    assert_eq!(back.list_streams("").await?, source.list_streams("").await?);
    Ok(())
}

#[tokio::test]
async fn a_snapshot_past_the_copied_events_stays_behind() -> TestResult {
    let source = source().await?;
    // At version 9 of a stream at version 3: nothing it folded is in the copy.
    let ahead = Snapshot::new(StreamId::new("order-1")?, Version::new(9), 1, "{}".to_owned());
    source.save_snapshot(ahead).await?;
    let copy = MemoryStore::new();
    let report = copy_store(&source, &copy).await?;
    assert_eq!(report.snapshots, 3, "{report:?}");
    let newest = copy.load_snapshot(&StreamId::new("order-1")?, Version::MAX).await?.ok_or("no snapshot")?;
    assert_eq!(newest.version, Version::new(3));
    Ok(())
}

#[tokio::test]
async fn a_target_that_holds_events_is_refused_and_unchanged() -> TestResult {
    let source = source().await?;
    let dir = tempfile::tempdir()?;
    let target = SledStore::open(dir.path())?;
    let other = StreamId::new("other-1")?;
    target.append(&other, ExpectedVersion::NoStream, vec![NewEvent::raw("Elsewhere", "{}")]).await?;
    let own = Checkpoint::new("projection/own", Position::new(1));
    target.save_checkpoints(vec![CheckpointWrite::Save(own)]).await?;
    let (log_before, checkpoints_before) = (events(&target).await?, target.list_checkpoints("").await?);

    let refused = copy_store(&source, &target).await;
    assert!(matches!(refused, Err(Error::Restore { position: Position::FIRST, .. })), "{refused:?}");
    assert_eq!(events(&target).await?, log_before);
    assert_eq!(target.list_checkpoints("").await?, checkpoints_before);
    assert_eq!(snapshots(&target).await?, []);

    // The target of a finished copy is refused the same way: a second copy changes nothing.
    let copy = MemoryStore::new();
    copy_store(&source, &copy).await?;
    let again = copy_store(&source, &copy).await;
    assert!(matches!(again, Err(Error::Restore { .. })), "{again:?}");
    assert_eq!(events(&copy).await?, events(&source).await?);

    // An empty source into an empty target copies nothing, and is fine.
    assert_eq!(copy_store(&MemoryStore::new(), &MemoryStore::new()).await?, CopyReport::default());
    Ok(())
}
