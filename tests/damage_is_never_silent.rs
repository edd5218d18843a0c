//! Damage to a closed sled store is never silent: whatever happened to its files, opening and reading
//! it either give every acknowledged event back or answer a typed error (`Corrupt`, `LogTruncated`),
//! never a panic, a hang, a shorter history or another stream's events.
//!
//! The reproductions of issue 10: a truncated data file, an emptied one, a deleted one, garbage after
//! sled's config, a flipped byte, a log record removed (in the middle and at the end), and a stream
//! index entry rewritten through sled (so sled's own checks pass and only the store's remain).

#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use annals::{Error, EventStore, ExpectedVersion, NewEvent, Position, ReadLog, ReadStream, SledStore, StreamId};
use common::raw_sled::{damage, log_key, stream_entry, stream_key};
use futures_util::TryStreamExt;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Appends 300 appends of 10 events over ten streams and closes the store cleanly.
async fn filled(dir: &Path) -> Result<u64, Box<dyn std::error::Error>> {
    let store = SledStore::open(dir)?;
    for i in 0..300 {
        let stream = StreamId::new(format!("s-{}", i % 10))?;
        let events = (0..10).map(|_| NewEvent::raw("Touched", r#"{"padding":"a fairly long payload, to fill pages"}"#));
        store.append(&stream, ExpectedVersion::Any, events.collect()).await?;
    }
    Ok(store.head().await?.get())
}

/// Opens the store on a blocking thread, with a panic caught (it must not happen) and a time limit.
async fn open(dir: &Path) -> Result<SledStore, Error> {
    let dir = dir.to_owned();
    let opening = tokio::task::spawn_blocking(move || std::panic::catch_unwind(|| SledStore::open(&dir)));
    match tokio::time::timeout(Duration::from_secs(30), opening).await {
        Ok(Ok(Ok(opened))) => opened,
        Ok(Ok(Err(_))) => panic!("opening a damaged store panicked"),
        Ok(Err(join)) => panic!("the opening thread failed: {join}"),
        Err(_) => panic!("opening a damaged store hung"),
    }
}

/// Reads the whole log, within a time limit.
async fn whole_log(store: &SledStore) -> Result<Vec<annals::RecordedEvent>, Error> {
    let read = store.read_log(ReadLog::from_start()).try_collect::<Vec<_>>();
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("reading the log hung")
}

fn is_damage(error: &Error) -> bool {
    matches!(error, Error::Corrupt { .. } | Error::LogTruncated { .. })
}

fn set_len(file: &Path, len: impl FnOnce(u64) -> u64) -> std::io::Result<()> {
    let handle = std::fs::OpenOptions::new().write(true).open(file)?;
    let now = handle.metadata()?.len();
    handle.set_len(len(now))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_data_file_does_not_open_with_a_shorter_log() -> TestResult {
    let dir = tempfile::tempdir()?;
    let head = filled(dir.path()).await?;
    set_len(&dir.path().join("db"), |len| len * 8 / 10)?;
    match open(dir.path()).await {
        Err(error) => assert!(is_damage(&error), "{error:?}"),
        Ok(store) => {
            // Opened: then nothing acknowledged may be missing.
            assert_eq!(store.head().await?.get(), head, "the store opened with a shorter log");
            if let Ok(events) = whole_log(&store).await {
                assert_eq!(events.len() as u64, head);
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_or_deleted_data_file_is_damage_not_a_new_store() -> TestResult {
    for delete in [false, true] {
        let dir = tempfile::tempdir()?;
        filled(dir.path()).await?;
        let db = dir.path().join("db");
        if delete {
            std::fs::remove_file(&db)?;
        } else {
            set_len(&db, |_| 0)?;
        }
        let opened = open(dir.path()).await;
        assert!(
            matches!(&opened, Err(Error::Corrupt { what: "data file (db)", .. })),
            "deleted {delete}: {:?}",
            opened.map(|s| s.path().to_owned())
        );
        let left = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
        assert_eq!(left, 0, "nothing was written in its place");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_sleds_config_is_damage() -> TestResult {
    let dir = tempfile::tempdir()?;
    filled(dir.path()).await?;
    let mut conf = std::fs::OpenOptions::new().append(true).open(dir.path().join("conf"))?;
    conf.write_all(b"garbage\x00\x01\x02")?;
    drop(conf);
    let opened = open(dir.path()).await;
    assert!(matches!(&opened, Err(error) if is_damage(error)), "{:?}", opened.map(|s| s.path().to_owned()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_never_shortens_the_log_silently() -> TestResult {
    for at in [3, 2, 1] {
        let dir = tempfile::tempdir()?;
        let head = filled(dir.path()).await?;
        let db = dir.path().join("db");
        let mut bytes = std::fs::read(&db)?;
        let i = bytes.len() * at / 4;
        bytes[i] ^= 0x40;
        std::fs::write(&db, bytes)?;
        match open(dir.path()).await {
            Err(error) => assert!(is_damage(&error), "byte at {at}/4: {error:?}"),
            Ok(store) => {
                assert_eq!(store.head().await?.get(), head, "byte at {at}/4: a shorter log");
                match whole_log(&store).await {
                    Ok(events) => assert_eq!(events.len() as u64, head, "byte at {at}/4"),
                    Err(error) => assert!(is_damage(&error), "byte at {at}/4: {error:?}"),
                }
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_log_record_is_a_gap_the_reads_report() -> TestResult {
    let dir = tempfile::tempdir()?;
    let head = filled(dir.path()).await?;
    // The record holding position 1000, removed through sled: sled's checks all pass.
    let mut removed = 0;
    damage(dir.path(), "annals", |tree| {
        let (key, _) = tree.range(log_key(0)..=log_key(1000)).next_back().expect("a record")?;
        removed = u64::from_be_bytes(key[1..9].try_into().expect("a position"));
        tree.remove(key)?;
        Ok(())
    })?;
    let store = open(dir.path()).await?;
    assert_eq!(store.head().await?.get(), head);
    let read = whole_log(&store).await;
    assert!(
        matches!(&read, Err(Error::Corrupt { what: "log record", position, .. }) if position.get() == removed),
        "{:?}",
        read.map(|e| e.len())
    );
    // A read from after the gap still works.
    let after: Vec<_> = store.read_log(ReadLog::from(Position::new(1100))).try_collect().await?;
    assert_eq!(after.len() as u64, head - 1099);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_last_record_does_not_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    let head = filled(dir.path()).await?;
    damage(dir.path(), "annals", |tree| {
        let (key, _) = tree.range(log_key(0)..=log_key(u64::MAX)).next_back().expect("a record")?;
        tree.remove(key)?;
        Ok(())
    })?;
    let opened = open(dir.path()).await;
    assert!(
        matches!(&opened, Err(Error::LogTruncated { acknowledged, found, .. })
            if acknowledged.get() == head && found.get() < head),
        "{:?}",
        opened.map(|s| s.path().to_owned())
    );
    Ok(())
}

/// Rewrites stream `s-1`'s first index entry through sled to `value` and reads the stream.
async fn read_with_entry(
    value: Vec<u8>,
) -> Result<Result<Vec<annals::RecordedEvent>, Error>, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    filled(dir.path()).await?;
    damage(dir.path(), "annals", |tree| {
        tree.insert(stream_key("s-1", 1), value.as_slice())?;
        Ok(())
    })?;
    let store = open(dir.path()).await?;
    let stream = StreamId::new("s-1")?;
    let read = store.read_stream(&stream, ReadStream::forward()).try_collect::<Vec<_>>();
    Ok(tokio::time::timeout(Duration::from_secs(30), read).await.expect("the stream read hung"))
}

/// A plausible entry for `s-1` version 1, with a valid checksum: only the store's other checks can
/// tell it is wrong.
fn entry(first_position: u64, count: u32) -> Vec<u8> {
    stream_entry(&stream_key("s-1", 1), first_position, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_stream_index_entry_gives_an_error_not_wrong_events() -> TestResult {
    // s-1's first append is positions 11..=20. Point it at s-0's events, shift it, stretch it,
    // shrink it, or make it absurd.
    for (label, value) in [
        ("another stream's events", entry(1, 10)),
        ("shifted by one", entry(12, 10)),
        ("stretched", entry(11, 40)),
        ("shrunk", entry(11, 3)),
        ("past the head", entry(1_000_000, 10)),
        ("overflowing", entry(u64::MAX - 1, u32::MAX)),
        ("without a checksum", entry(11, 10)[..12].to_vec()),
        ("with a wrong checksum", {
            let mut value = entry(11, 10);
            value[15] ^= 1;
            value
        }),
    ] {
        let read = read_with_entry(value).await?;
        match read {
            Err(error) => assert!(is_damage(&error), "{label}: {error:?}"),
            Ok(events) => {
                // Whatever comes back must be this stream's, at versions 1, 2, 3, ... in order.
                for (i, event) in events.iter().enumerate() {
                    assert_eq!(event.stream.as_str(), "s-1", "{label}: another stream's event");
                    assert_eq!(event.version.get(), i as u64 + 1, "{label}: versions skip or repeat");
                }
                assert_eq!(events.len(), 300, "{label}: events missing without an error");
            }
        }
    }
    Ok(())
}

/// The type-filtered log read of `Touched` events, within a time limit.
async fn touched(store: &SledStore) -> Result<Vec<annals::RecordedEvent>, Error> {
    let filter = annals::LogFilter::all().event_types(["Touched"]);
    let read = store.read_log(ReadLog::from_start().filter(filter)).try_collect::<Vec<_>>();
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("the filtered read hung")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_event_type_index_entry_fails_a_filtered_read_instead_of_dropping_events() -> TestResult {
    for which in ["a middle one", "the last one"] {
        let dir = tempfile::tempdir()?;
        let head = filled(dir.path()).await?;
        damage(dir.path(), "annals", |tree| {
            let keys: Vec<_> = tree.scan_prefix(b"TTouched\x00").keys().collect::<Result<_, _>>()?;
            let key = if which == "the last one" { keys.last() } else { keys.get(keys.len() / 2) };
            tree.remove(key.expect("entries"))?;
            Ok(())
        })?;
        let store = open(dir.path()).await?;
        match touched(&store).await {
            Ok(events) => assert_eq!(events.len() as u64, head, "{which}: events dropped without an error"),
            Err(error) => {
                assert!(matches!(&error, Error::Corrupt { what: "event-type index entry", .. }), "{which}: {error:?}")
            }
        }
        assert!(touched(&store).await.is_err(), "{which}: the damage was not reported");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_copied_under_another_name_is_damage() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = SledStore::open(dir.path())?;
        let saved = annals::Checkpoint::new("projection/a", Position::new(7)).with_state("{}");
        store.save_checkpoints(vec![annals::CheckpointWrite::Save(saved)]).await?;
    }
    damage(dir.path(), "annals-checkpoints", |tree| {
        let value = tree.get("projection/a")?.expect("saved");
        tree.insert("projection/b", value)?;
        Ok(())
    })?;
    let store = open(dir.path()).await?;
    assert_eq!(store.load_checkpoint("projection/a").await?.map(|c| c.position.get()), Some(7));
    let copied = store.load_checkpoint("projection/b").await;
    assert!(matches!(&copied, Err(Error::Corrupt { what: "checkpoint", .. })), "{copied:?}");
    Ok(())
}

/// Copies the directory `from` to `to`, files and subdirectories.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Under `Fsync` the head file is written while the store runs (a second or 4,096 groups after the
/// last time), not only at a clean close: a copy of a running store's files, as a crash would leave
/// them, whose log then lost its last records does not open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_shorter_than_the_head_recorded_while_running_does_not_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path())?;
    let stream = StreamId::new("s-1")?;
    let one = || vec![NewEvent::raw("Touched", "{}")];
    store.append(&stream, ExpectedVersion::Any, one()).await?;
    // More than a second later, the next group is due to record the head (2) after its answer; the
    // group after it is handled only once that is done.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    store.append(&stream, ExpectedVersion::Any, one()).await?;
    store.append(&stream, ExpectedVersion::Any, one()).await?;
    let crashed = tempfile::tempdir()?;
    copy_dir(dir.path(), crashed.path())?;
    drop(store);

    // The records of positions 2 and 3 are gone: the log ends at 1, before the recorded head.
    damage(crashed.path(), "annals", |tree| {
        for first in [3, 2] {
            tree.remove(log_key(first))?.expect("a record per append");
        }
        Ok(())
    })?;
    let opened = open(crashed.path()).await;
    assert!(
        matches!(&opened, Err(Error::LogTruncated { acknowledged, found, .. })
            if acknowledged.get() >= 2 && found.get() == 1),
        "{:?}",
        opened.map(|s| s.path().to_owned())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_last_index_entry_is_gone_is_damage_not_a_shorter_stream() -> TestResult {
    let dir = tempfile::tempdir()?;
    filled(dir.path()).await?;
    damage(dir.path(), "annals", |tree| {
        let last = tree.scan_prefix(b"Ss-1\x00").keys().last().expect("entries")?;
        tree.remove(last)?;
        Ok(())
    })?;
    let store = open(dir.path()).await?;
    let stream = StreamId::new("s-1")?;
    let version = store.stream_version(&stream).await;
    assert!(matches!(&version, Err(Error::Corrupt { what: "stream index entry", .. })), "{version:?}");
    for read in [ReadStream::forward(), ReadStream::backward()] {
        let events = store.read_stream(&stream, read).try_collect::<Vec<_>>().await;
        assert!(matches!(&events, Err(Error::Corrupt { .. })), "{:?}", events.map(|e| e.len()));
    }
    let appended = store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("Touched", "{}")]).await;
    assert!(matches!(&appended, Err(Error::Corrupt { .. })), "the lost versions would be reused: {appended:?}");
    // Other streams are untouched.
    let other = StreamId::new("s-2")?;
    assert_eq!(store.stream_version(&other).await?.map(|v| v.get()), Some(300));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_checkpoint_is_damage_not_one_never_saved() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = SledStore::open(dir.path())?;
        let saved = |name: &str| annals::CheckpointWrite::Save(annals::Checkpoint::new(name, Position::new(7)));
        store.save_checkpoints(vec![saved("projection/a"), saved("projection/b")]).await?;
        // Deleted by the store: gone for good, and not damage.
        store.save_checkpoints(vec![annals::CheckpointWrite::Delete("projection/b".into())]).await?;
    }
    damage(dir.path(), "annals-checkpoints", |tree| tree.remove("projection/a").map(drop))?;
    let store = open(dir.path()).await?;
    let loaded = store.load_checkpoint("projection/a").await;
    assert!(matches!(&loaded, Err(Error::Corrupt { what: "checkpoint", .. })), "{loaded:?}");
    let listed = store.list_checkpoints("projection/").await;
    assert!(matches!(&listed, Err(Error::Corrupt { .. })), "{listed:?}");
    assert_eq!(store.load_checkpoint("projection/b").await?, None, "a deleted checkpoint is simply gone");
    assert!(!store.verify()?.is_ok(), "verify reports it");
    Ok(())
}
