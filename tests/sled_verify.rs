//! `SledStore::verify` passes a healthy store and names each kind of damage with its position:
//! a damaged record, a missing index entry, an index entry pointing at the wrong event, a damaged
//! checkpoint, a damaged or copied lifecycle key, holes the lifecycle does not explain; and it counts
//! what scavenging removed and the streams deleted or truncated without calling them damage. The
//! damage is done with raw sled on the closed store, following `docs/storage-format.md`.
#![allow(missing_docs)]

mod common;

use std::path::Path;

use annals::{
    scavenge, Checkpoint, CheckpointWrite, DeleteMode, Direction, Error, EventStore, ExpectedVersion, NewEvent,
    Position, ScavengeOptions, SledStore, StreamId, StreamView, Version,
};
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

/// A store where every part of a stream's life shows: `gone` hard-deleted, `soft` soft-deleted, `cut`
/// truncated before version 3, `kept` untouched, interleaved (so records hold kept events and holes),
/// then scavenged. Returns the number of events removed.
async fn scavenged(dir: &Path) -> Result<u64, Box<dyn std::error::Error>> {
    let store = SledStore::open(dir)?;
    let names = ["gone", "soft", "cut", "kept"];
    for round in 0..4 {
        for name in names {
            let event = NewEvent::raw("E", format!("{{\"round\":{round}}}"));
            store.append(&StreamId::new(name)?, ExpectedVersion::Any, vec![event]).await?;
        }
    }
    store.delete_stream(&StreamId::new("gone")?, ExpectedVersion::Any, DeleteMode::Hard).await?;
    store.delete_stream(&StreamId::new("soft")?, ExpectedVersion::Any, DeleteMode::Soft).await?;
    store.truncate_stream(&StreamId::new("cut")?, Version::new(3)).await?;
    let before = store.verify()?;
    assert!(before.is_ok(), "{:?}", before.problems);
    assert_eq!((before.scavenged, before.deleted_streams, before.truncated_streams), (0, 2, 2));
    let report = scavenge(&store, ScavengeOptions::new().chunk_size(5), |_| {}).await?;
    Ok(report.removed)
}

#[tokio::test]
async fn holes_and_deleted_or_truncated_streams_are_counted_not_reported() -> TestResult {
    let dir = tempfile::tempdir()?;
    assert_eq!(scavenged(dir.path()).await?, 4 + 4 + 2);
    let report = SledStore::open(dir.path())?.verify()?;
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.events, report.scavenged), (6, 10));
    assert_eq!((report.deleted_streams, report.truncated_streams), (2, 2));
    // The index entries of `gone`, `soft` and `cut` below version 3 went with their events.
    assert_eq!((report.streams, report.index_entries), (2, 6));
    Ok(())
}

#[tokio::test]
async fn a_damaged_lifecycle_key_is_reported_and_its_stream_reads_as_damaged() -> TestResult {
    let dir = tempfile::tempdir()?;
    scavenged(dir.path()).await?;
    damage(dir.path(), "annals", |tree| {
        let mut value = tree.get(life_key("cut"))?.map(|v| v.to_vec()).unwrap_or_default();
        if let Some(byte) = value.get_mut(3) {
            *byte ^= 0x01;
        }
        tree.insert(life_key("cut"), value).map(drop)
    })?;
    let store = SledStore::open(dir.path())?;
    let report = store.verify()?;
    assert!(
        report.problems.iter().any(|p| p.what.contains("lifecycle of \"cut\" does not decode")),
        "{:?}",
        report.problems
    );
    let read = store
        .read_stream_chunk(&StreamId::new("cut")?, Version::FIRST, Direction::Forward, 10, StreamView::Current)
        .await;
    assert!(matches!(&read, Err(Error::Corrupt { what: "stream lifecycle", .. })), "{read:?}");
    let info = store.stream_info(&StreamId::new("cut")?).await;
    assert!(matches!(&info, Err(Error::Corrupt { what: "stream lifecycle", .. })), "{info:?}");
    Ok(())
}

#[tokio::test]
async fn a_lifecycle_key_copied_under_another_stream_is_reported() -> TestResult {
    let dir = tempfile::tempdir()?;
    scavenged(dir.path()).await?;
    damage(dir.path(), "annals", |tree| {
        let value = tree.get(life_key("gone"))?.map(|v| v.to_vec()).unwrap_or_default();
        tree.insert(life_key("kept"), value).map(drop)
    })?;
    let store = SledStore::open(dir.path())?;
    let report = store.verify()?;
    assert!(report.problems.iter().any(|p| p.what.contains("lifecycle of \"kept\"")), "{:?}", report.problems);
    let read = store.stream_version(&StreamId::new("kept")?).await;
    assert!(matches!(&read, Err(Error::Corrupt { .. })), "a copied tombstone must not delete kept: {read:?}");
    Ok(())
}

#[tokio::test]
async fn holes_a_lifecycle_does_not_explain_are_damage() -> TestResult {
    let dir = tempfile::tempdir()?;
    scavenged(dir.path()).await?;
    // Without its lifecycle key, `cut` looks like a stream never truncated: its removed versions 1
    // and 2 (positions 3 and 7) are now unexplained.
    damage(dir.path(), "annals", |tree| tree.remove(life_key("cut")).map(drop))?;
    let store = SledStore::open(dir.path())?;
    let report = store.verify()?;
    assert!(!report.is_ok());
    assert!(
        report.problems.iter().any(|p| p.what.contains("cut version 3, expected 1") && p.position.get() == 11),
        "{:?}",
        report.problems
    );
    let cut = StreamId::new("cut")?;
    let history = store.read_stream_chunk(&cut, Version::FIRST, Direction::Forward, 10, StreamView::History).await;
    assert!(matches!(&history, Err(Error::Corrupt { what: "stream index entry", .. })), "{history:?}");
    let backward = store.read_stream_chunk(&cut, Version::new(4), Direction::Backward, 10, StreamView::Current).await;
    assert_eq!(backward?.iter().map(|e| e.version.get()).collect::<Vec<_>>(), [4, 3], "the page before the damage");
    let rest = store.read_stream_chunk(&cut, Version::new(2), Direction::Backward, 10, StreamView::Current).await;
    assert!(matches!(&rest, Err(Error::Corrupt { .. })), "{rest:?}");
    Ok(())
}

/// The lifecycle key of a stream, as `docs/storage-format.md` describes it.
fn life_key(stream: &str) -> Vec<u8> {
    let mut key = vec![b'D'];
    key.extend_from_slice(stream.as_bytes());
    key
}
