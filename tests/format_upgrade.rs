//! Stores written in older storage formats open with this version, upgraded in place: reads give
//! back everything, `verify` finds nothing, and the format key says the current format (4).
//!
//! - Format 1 (stream index entries and checkpoints without the checksums of format 2, an event-type
//!   index without counts): made by writing a store with this version and rewriting its index
//!   entries and checkpoints through sled to the format-1 layout `docs/storage-format.md` describes.
//! - Format 2 (before the life of a stream): the committed fixture `tests/fixtures/sled-format-2/`,
//!   written by Annals at commit 88bdbba, opened as a copy; after the upgrade, deletes, truncations
//!   and scavenges work on it.
//! - Format 3 (before the persisted event-id index): the committed fixture
//!   `tests/fixtures/sled-format-3/`, written by Annals at commit 9eb3329, with holes, truncated and
//!   deleted streams; after the upgrade its event ids are in the index, so retries of its appends
//!   are recognised, and it reads exactly as that version read it.

#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use annals::{
    scavenge, Checkpoint, CheckpointWrite, DeleteMode, Direction, EventStore, ExpectedVersion, LogFilter, NewEvent,
    Position, ReadLog, ReadStream, RecordedEvent, ScavengeOptions, SledStore, StreamId, StreamView, Version,
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
    assert_eq!(format.as_ref(), SledStore::FORMAT_VERSION.to_be_bytes().as_slice());
    Ok(())
}

/// The format key of the closed store in `dir`.
fn format_of(dir: &std::path::Path) -> Result<u32, Box<dyn std::error::Error>> {
    let db = raw_open(dir)?;
    let format = db.open_tree("annals")?.get(b"M\x00format")?.ok_or("no format key")?;
    Ok(u32::from_be_bytes(format.as_ref().try_into()?))
}

/// A copy of the fixture `name` in a fresh directory (the fixture itself is never opened).
fn fixture_copy(name: &str) -> Result<tempfile::TempDir, Box<dyn std::error::Error>> {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let dir = tempfile::tempdir()?;
    for name in ["db", "conf", "annals-head"] {
        std::fs::copy(fixture.join(name), dir.path().join(name))?;
    }
    Ok(dir)
}

/// The events of the fixture `name` as the version that wrote it read them back.
fn fixture_events(name: &str) -> Result<Vec<RecordedEvent>, Box<dyn std::error::Error>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.events.jsonl"));
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?)
}

#[tokio::test]
async fn the_format_2_fixture_is_upgraded_at_open_and_reads_exactly_as_its_version_wrote_it() -> TestResult {
    let dir = fixture_copy("sled-format-2")?;
    assert_eq!(format_of(dir.path())?, 2, "the fixture is of format 2");
    let expected = fixture_events("sled-format-2")?;
    assert_eq!(expected.len(), 31);
    let store = SledStore::open(dir.path())?;
    let log: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await?;
    assert_eq!(log, expected);
    for name in ["order-1", "order-2", "reading-7", "member-3"] {
        let stream = StreamId::new(name)?;
        let events: Vec<_> = store.read_stream(&stream, ReadStream::forward()).try_collect().await?;
        let wanted: Vec<_> = expected.iter().filter(|e| e.stream == stream).cloned().collect();
        assert_eq!(events, wanted, "{name}");
        assert_eq!(store.stream_info(&stream).await?.last_version, wanted.last().map(|e| e.version));
    }
    assert!(expected.iter().any(|e| e.occurred_at != e.recorded_at && e.metadata.correlation_id.is_some()));
    let snapshot = store.load_snapshot(&StreamId::new("order-1")?, Version::MAX).await?.ok_or("no snapshot")?;
    assert_eq!((snapshot.version.get(), snapshot.state.as_str()), (3, r#"{"total":3}"#));
    let checkpoint = store.load_checkpoint("projection/totals").await?.ok_or("no checkpoint")?;
    assert_eq!((checkpoint.position.get(), checkpoint.state.as_deref()), (12, Some(r#"{"version":1}"#)));
    let report = store.verify()?;
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.events, report.scavenged, report.deleted_streams), (31, 0, 0));
    drop(store);
    assert_eq!(format_of(dir.path())?, SledStore::FORMAT_VERSION, "the upgrade sets the format key");

    // The life of a stream works on the upgraded store, and survives a reopen.
    let (order, reading, member) = (StreamId::new("order-1")?, StreamId::new("reading-7")?, StreamId::new("member-3")?);
    let store = SledStore::open(dir.path())?;
    store.delete_stream(&order, ExpectedVersion::Any, DeleteMode::Soft).await?;
    assert_eq!(store.load_snapshot(&order, Version::MAX).await?, None, "a delete drops the snapshots");
    store.truncate_stream(&reading, Version::new(4)).await?;
    store.delete_stream(&member, ExpectedVersion::Any, DeleteMode::Hard).await?;
    let report = scavenge(&store, ScavengeOptions::new().chunk_size(5), |_| {}).await?;
    let gone =
        |e: &RecordedEvent| e.stream == order || e.stream == member || (e.stream == reading && e.version.get() < 4);
    assert_eq!(report.removed, expected.iter().filter(|e| gone(e)).count() as u64);
    drop(store);
    let store = SledStore::open(dir.path())?;
    let kept: Vec<_> = expected.iter().filter(|e| !gone(e)).cloned().collect();
    let log: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await?;
    assert_eq!(log, kept, "kept events read back exactly, at their positions");
    let history =
        store.read_stream_chunk(&reading, Version::FIRST, Direction::Forward, 100, StreamView::History).await?;
    assert_eq!(history.first().map(|e| e.version.get()), Some(4));
    let again = store.append(&order, ExpectedVersion::NoStream, vec![NewEvent::raw("Happened", "{}")]).await?;
    let last = expected.iter().filter(|e| e.stream == order).map(|e| e.version.get()).max().unwrap_or(0);
    assert_eq!(again.version.get(), last + 1, "versions continue after the removed ones");
    let report = store.verify()?;
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.scavenged, report.deleted_streams), (31 - kept.len() as u64, 2));
    Ok(())
}

#[tokio::test]
async fn the_format_3_fixture_is_upgraded_at_open_reads_exactly_as_its_version_wrote_it_and_knows_its_ids() -> TestResult
{
    let dir = fixture_copy("sled-format-3")?;
    assert_eq!(format_of(dir.path())?, 3, "the fixture is of format 3");
    let expected = fixture_events("sled-format-3")?;
    assert_eq!((expected.len(), expected.last().map(|e| e.position.get())), (21, Some(37)));
    let infos_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sled-format-3.streams.json");
    let infos: std::collections::BTreeMap<String, annals::StreamInfo> =
        serde_json::from_str(&std::fs::read_to_string(infos_path)?)?;
    let store = SledStore::open(dir.path())?;
    let log: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await?;
    assert_eq!(log, expected);
    for (name, info) in &infos {
        let stream = StreamId::new(name.as_str())?;
        assert_eq!(&store.stream_info(&stream).await?, info, "{name}");
        let events =
            store.read_stream_chunk(&stream, Version::FIRST, Direction::Forward, 100, StreamView::Current).await;
        if info.tombstone {
            assert!(matches!(events, Err(annals::Error::StreamDeleted { .. })), "{name}: {events:?}");
            continue;
        }
        let wanted: Vec<_> =
            expected.iter().filter(|e| e.stream == stream && e.version >= info.truncated_before).cloned().collect();
        assert_eq!(events?, wanted, "{name}");
    }
    let snapshot = store.load_snapshot(&StreamId::new("order-1")?, Version::MAX).await?.ok_or("no snapshot")?;
    assert_eq!((snapshot.version.get(), snapshot.state.as_str()), (3, r#"{"total":3}"#));
    let checkpoint = store.load_checkpoint("projection/totals").await?.ok_or("no checkpoint")?;
    assert_eq!((checkpoint.position.get(), checkpoint.state.as_deref()), (12, Some(r#"{"version":1}"#)));
    assert_eq!(store.retention_rules().await?.len(), 1);
    let report = store.verify()?;
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.events, report.scavenged, report.deleted_streams), (21, 16, 2));

    // A retry of the fixture's last append (order-1, versions 7 and 8) is recognised from the index
    // the upgrade built, before and after a reopen, and a new event goes after the head.
    let order = StreamId::new("order-1")?;
    let last_two: Vec<_> = expected.iter().filter(|e| e.stream == order && e.version.get() >= 7).collect();
    let retry = || {
        last_two
            .iter()
            .map(|e| NewEvent::raw(e.event_type.clone(), e.payload.clone()).with_id(e.id))
            .collect::<Vec<_>>()
    };
    let again = store.append(&order, ExpectedVersion::Any, retry()).await?;
    assert!(again.already_appended, "{again:?}");
    assert_eq!((again.first_position.get(), again.last_position.get(), again.version.get()), (36, 37, 8));
    drop(store);
    assert_eq!(format_of(dir.path())?, SledStore::FORMAT_VERSION, "the upgrade sets the format key");
    let db = raw_open(dir.path())?;
    let tree = db.open_tree("annals")?;
    assert_eq!(tree.scan_prefix(b"I").count(), 21, "one id key per stored event");
    // member-3 has no event left (hard-deleted and scavenged): its lifecycle key keeps its version.
    assert_eq!(tree.scan_prefix(b"H").count(), 4, "one head key per stream with a stored event");
    drop((tree, db));
    let store = SledStore::open(dir.path())?;
    let again = store.append(&order, ExpectedVersion::Any, retry()).await?;
    assert!(again.already_appended && again.first_position.get() == 36, "after a reopen: {again:?}");
    let fresh = store.append(&order, ExpectedVersion::Any, vec![NewEvent::raw("Noted", "{}")]).await?;
    assert_eq!((fresh.first_position.get(), fresh.version.get(), fresh.already_appended), (38, 9, false));
    let report = store.verify()?;
    assert!(report.is_ok(), "{:?}", report.problems);
    Ok(())
}
