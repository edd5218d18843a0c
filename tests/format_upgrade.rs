//! A store written in storage format 1 (stream index entries and checkpoints without the checksums
//! of format 2, an event-type index without counts) opens with this version: it is upgraded in
//! place, reads give back everything, `verify` finds nothing, and the format key says 2.
//!
//! The format-1 store is made by writing a store with this version and rewriting its index entries
//! and checkpoints through sled to the format-1 layout `docs/storage-format.md` describes.

#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use annals::{
    Checkpoint, CheckpointWrite, EventStore, ExpectedVersion, LogFilter, NewEvent, Position, ReadLog, ReadStream,
    SledStore, StreamId,
};
use common::raw_sled::raw_open;
use futures_util::TryStreamExt;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Rewrites the closed store in `dir` to format 1.
fn downgrade(dir: &std::path::Path) -> sled::Result<()> {
    let db = raw_open(dir)?;
    let tree = db.open_tree("annals")?;
    for item in tree.scan_prefix(b"S") {
        let (key, value) = item?;
        tree.insert(key, &value[..12])?;
    }
    for item in tree.scan_prefix(b"T") {
        let (key, value) = item?;
        // Format 1: the varints only (no count before them, no checksum after).
        tree.insert(key, &value[8..value.len() - 4])?;
    }
    for key in tree.scan_prefix(b"C").keys() {
        tree.remove(key?)?;
    }
    let checkpoints = db.open_tree("annals-checkpoints")?;
    // Format 1 kept no list of checkpoint names.
    checkpoints.remove(b"\x00names")?;
    for item in checkpoints.iter() {
        let (key, value) = item?;
        let mut old = value.to_vec();
        let crc = crc32fast::hash(&old[4..]);
        old[..4].copy_from_slice(&crc.to_le_bytes());
        checkpoints.insert(key, old)?;
    }
    tree.insert(b"M\x00format", &1u32.to_be_bytes())?;
    db.flush()?;
    Ok(())
}

#[tokio::test]
async fn a_format_1_store_is_upgraded_at_open_and_reads_the_same() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (log, streams) = {
        let store = SledStore::open(dir.path())?;
        for i in 0..40u64 {
            let stream = StreamId::new(format!("order-{}", i % 4))?;
            let kind = if i % 3 == 0 { "Rare" } else { "Common" };
            store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw(kind, format!("{{\"i\":{i}}}"))]).await?;
        }
        let saved = Checkpoint::new("projection/totals", Position::new(30)).with_state(r#"{"version":1}"#);
        store.save_checkpoints(vec![CheckpointWrite::Save(saved)]).await?;
        let log: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await?;
        let mut streams = Vec::new();
        for i in 0..4 {
            let stream = StreamId::new(format!("order-{i}"))?;
            let events: Vec<_> = store.read_stream(&stream, ReadStream::forward()).try_collect().await?;
            streams.push(events);
        }
        (log, streams)
    };
    downgrade(dir.path())?;

    let store = SledStore::open(dir.path())?;
    let again: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await?;
    assert_eq!(again, log);
    for (i, expected) in streams.iter().enumerate() {
        let stream = StreamId::new(format!("order-{i}"))?;
        let events: Vec<_> = store.read_stream(&stream, ReadStream::forward()).try_collect().await?;
        assert_eq!(&events, expected, "stream {i}");
    }
    let rare: Vec<_> =
        store.read_log(ReadLog::from_start().filter(LogFilter::all().event_types(["Rare"]))).try_collect().await?;
    assert_eq!(rare.len(), 14);
    let checkpoint = store.load_checkpoint("projection/totals").await?;
    assert_eq!(checkpoint.map(|c| c.position.get()), Some(30));
    let report = store.verify()?;
    assert!(report.is_ok(), "{:?}", report.problems);
    // New appends continue the event-type counts.
    store.append(&StreamId::new("order-9")?, ExpectedVersion::Any, vec![NewEvent::raw("Rare", "{}")]).await?;
    let rare: Vec<_> =
        store.read_log(ReadLog::from_start().filter(LogFilter::all().event_types(["Rare"]))).try_collect().await?;
    assert_eq!(rare.len(), 15);
    drop(store);

    let db = raw_open(dir.path())?;
    let format = db.open_tree("annals")?.get(b"M\x00format")?.expect("a format key");
    assert_eq!(format.as_ref(), 2u32.to_be_bytes().as_slice());
    Ok(())
}
