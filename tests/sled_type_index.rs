//! The sled store's event-type index: a store written without it (before it existed) gets it built
//! at open, filtered reads through it find exactly what a scan finds, and `verify` checks it.
#![allow(missing_docs)]

mod common;

use annals::{EventStore, ExpectedVersion, LogFilter, NewEvent, ReadLog, SledStore, StreamId};
use common::raw_sled::raw_open;
use futures_util::TryStreamExt;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// 1,200 events over 3 streams and 4 types, in appends of varying size.
async fn fill(store: &SledStore) -> TestResult {
    for n in 0..300u32 {
        let stream = StreamId::new(format!("s-{}", n % 3))?;
        let events =
            (0..=(n % 7)).map(|i| NewEvent::raw(["A", "B", "C", "Rare"][((n + i) % 4) as usize], "{}")).collect();
        store.append(&stream, ExpectedVersion::Any, events).await?;
    }
    Ok(())
}

async fn positions(store: &SledStore, filter: LogFilter) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    let events: Vec<_> = store.read_log(ReadLog::from_start().filter(filter)).try_collect().await?;
    Ok(events.iter().map(|e| e.position.get()).collect())
}

/// What a scan of every event says the filter should give.
async fn scanned(
    store: &SledStore,
    types: &[&str],
    prefix: Option<&str>,
) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    let events: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await?;
    Ok(events
        .iter()
        .filter(|e| types.contains(&e.event_type.as_str()) && prefix.is_none_or(|p| e.stream.as_str().starts_with(p)))
        .map(|e| e.position.get())
        .collect())
}

#[tokio::test]
async fn indexed_filters_find_what_a_scan_finds_and_an_old_store_gets_its_index_at_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = SledStore::open(dir.path())?;
        fill(&store).await?;
    }
    // Make it a store from before the index: no `T` keys, no marker.
    {
        let db = raw_open(dir.path())?;
        let tree = db.open_tree("annals")?;
        let keys: Vec<_> = tree.scan_prefix(b"T").keys().collect::<Result<_, _>>()?;
        assert!(!keys.is_empty(), "the store wrote an index");
        for key in keys {
            tree.remove(key)?;
        }
        assert!(tree.remove(b"M\x00type-index")?.is_some(), "the store marked its index complete");
        db.flush()?;
    }
    let store = SledStore::open(dir.path())?;
    for (types, prefix) in
        [(&["Rare"][..], None), (&["A", "Rare"][..], None), (&["B"][..], Some("s-1")), (&["Nope"][..], None)]
    {
        let mut filter = LogFilter::all().event_types(types.iter().copied());
        if let Some(prefix) = prefix {
            filter = filter.stream_prefix(prefix);
        }
        assert_eq!(positions(&store, filter).await?, scanned(&store, types, prefix).await?, "{types:?} {prefix:?}");
    }
    let report = store.verify()?;
    assert!(report.is_ok(), "{:?}", report.problems);
    Ok(())
}

#[tokio::test]
async fn verify_reports_an_event_missing_from_the_type_index() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = SledStore::open(dir.path())?;
        fill(&store).await?;
    }
    {
        let db = raw_open(dir.path())?;
        let tree = db.open_tree("annals")?;
        let key = tree.scan_prefix(b"TRare\x00").keys().next().ok_or("no Rare entry")??;
        tree.remove(key)?;
        db.flush()?;
    }
    let report = SledStore::open(dir.path())?.verify()?;
    assert!(
        report.problems.iter().any(|p| p.what.contains("missing from the event-type index")),
        "{:?}",
        report.problems
    );
    Ok(())
}
