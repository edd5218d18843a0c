//! `SledStore::verify` passes a healthy store and names each kind of damage with its position:
//! a damaged record, a missing index entry, an index entry pointing at the wrong event, a damaged
//! checkpoint. The damage is done with raw sled on the closed store, following
//! `docs/storage-format.md`.
#![allow(missing_docs)]

mod common;

use std::path::Path;

use annals::{Checkpoint, CheckpointWrite, EventStore, ExpectedVersion, NewEvent, Position, SledStore, StreamId};
use common::raw_sled::{damage, log_key, stream_entry, stream_key};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Three appends (one record each) to two streams, and a checkpoint.
async fn healthy(dir: &Path) -> TestResult {
    let store = SledStore::open(dir)?;
    let (a, b) = (StreamId::new("a")?, StreamId::new("b")?);
    store.append(&a, ExpectedVersion::NoStream, vec![NewEvent::raw("E", "{\"n\":1}")]).await?;
    store
        .append(&b, ExpectedVersion::NoStream, vec![NewEvent::raw("E", "{\"n\":2}"), NewEvent::raw("E", "{}")])
        .await?;
    store.append(&a, ExpectedVersion::Any, vec![NewEvent::raw("E", "{\"n\":4}")]).await?;
    let checkpoint = Checkpoint::new("projection/p", Position::new(2)).with_state("{}");
    store.save_checkpoints(vec![CheckpointWrite::Save(checkpoint)]).await?;
    let report = store.verify()?;
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.events, report.records, report.streams, report.index_entries), (4, 3, 2, 3));
    assert_eq!(report.checkpoints, 1);
    Ok(())
}

fn problems_at(report: &annals::VerifyReport) -> Vec<u64> {
    report.problems.iter().map(|p| p.position.get()).collect()
}

#[tokio::test]
async fn a_damaged_record_is_reported_at_its_position() -> TestResult {
    let dir = tempfile::tempdir()?;
    healthy(dir.path()).await?;
    damage(dir.path(), "annals", |tree| {
        let mut value = tree.get(log_key(2))?.map(|v| v.to_vec()).unwrap_or_default();
        if let Some(last) = value.last_mut() {
            *last ^= 0x20;
        }
        tree.insert(log_key(2), value).map(drop)
    })?;
    let report = SledStore::open(dir.path())?.verify()?;
    assert!(!report.is_ok());
    assert!(problems_at(&report).contains(&3), "{:?}", report.problems);
    assert!(report.problems.iter().any(|p| p.what.contains("does not decode")), "{:?}", report.problems);
    Ok(())
}

#[tokio::test]
async fn a_missing_index_entry_is_reported_for_each_event_it_covered() -> TestResult {
    let dir = tempfile::tempdir()?;
    healthy(dir.path()).await?;
    damage(dir.path(), "annals", |tree| tree.remove(stream_key("b", 1)).map(drop))?;
    let report = SledStore::open(dir.path())?.verify()?;
    let missing: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.what.contains("missing from its stream's index"))
        .map(|p| p.position.get())
        .collect();
    assert_eq!(missing, [2, 3], "{:?}", report.problems);
    Ok(())
}

#[tokio::test]
async fn an_index_entry_pointing_elsewhere_is_reported() -> TestResult {
    let dir = tempfile::tempdir()?;
    healthy(dir.path()).await?;
    // Stream a's second entry (version 2) now claims position 2, where b's first event is.
    damage(dir.path(), "annals", |tree| {
        let key = stream_key("a", 2);
        tree.insert(&key, stream_entry(&key, 2, 1)).map(drop)
    })?;
    let report = SledStore::open(dir.path())?.verify()?;
    assert!(
        report.problems.iter().any(|p| p.position.get() == 2 && p.what.contains("the log disagrees")),
        "{:?}",
        report.problems
    );
    assert!(problems_at(&report).contains(&4), "position 4 is no longer covered: {:?}", report.problems);
    Ok(())
}

#[tokio::test]
async fn a_damaged_checkpoint_is_reported() -> TestResult {
    let dir = tempfile::tempdir()?;
    healthy(dir.path()).await?;
    damage(dir.path(), "annals-checkpoints", |tree| {
        let mut value = tree.get("projection/p")?.map(|v| v.to_vec()).unwrap_or_default();
        if let Some(byte) = value.get_mut(6) {
            *byte ^= 1;
        }
        tree.insert("projection/p", value).map(drop)
    })?;
    let report = SledStore::open(dir.path())?.verify()?;
    assert_eq!(report.checkpoints, 0);
    assert!(report.problems.iter().any(|p| p.what.contains("checkpoint \"projection/p\"")), "{:?}", report.problems);
    Ok(())
}
