//! The sled store facing bad directories, bad bytes and bad settings: a store open in another handle
//! is `AlreadyOpen`, one whose lock is still held `Locked` (after `open` waited half a second for the
//! lock), a missing one `NotFound`, a foreign or newer database `UnsupportedFormat`, damaged log
//! bytes `Corrupt` with the position (and only for the damaged event, without a panic), an
//! out-of-range setting `Config`; and a retry is still recognised after the store is reopened.
//!
//! The damage is done with raw sled on the closed store's directory, following
//! `docs/storage-format.md`: everything lives in the tree `annals`; the format version is under
//! `M\0format` (u32 big-endian); log records are under `L` + their first position (u64 big-endian).
#![allow(missing_docs)]

mod common;

use std::path::Path;

use annals::{
    Error, EventStore, ExpectedVersion, NewEvent, Position, ReadLog, ReadStream, RecordedEvent, SledConfig, SledStore,
    StreamId, Version, MAX_EVENT_SIZE_LIMIT,
};
use common::raw_sled::{damage, log_key, raw_open};
use futures_util::{StreamExt, TryStreamExt};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TREE: &str = "annals";
const FORMAT_KEY: &[u8] = b"M\x00format";

fn event(n: u64) -> NewEvent {
    NewEvent::raw("Counted", format!("{{\"n\":{n}}}"))
}

/// Collects a read into the events it gave before its first error, and that error.
async fn read_until_error(read: annals::EventStream<'_>) -> (Vec<RecordedEvent>, Option<Error>) {
    let mut events = Vec::new();
    let mut read = read;
    while let Some(item) = read.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(error) => return (events, Some(error)),
        }
    }
    (events, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_open_in_another_handle_is_locked_until_that_handle_is_dropped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let order = StreamId::new("order-1")?;
    let first = SledStore::open(dir.path())?;
    first.append(&order, ExpectedVersion::NoStream, vec![event(1), event(2)]).await?;
    let second = SledStore::open(dir.path());
    assert!(matches!(&second, Err(Error::AlreadyOpen { path }) if path == dir.path()), "{second:?}");
    // A clone is the same store: it keeps the lock after the original handle is gone.
    let clone = first.clone();
    drop(first);
    let again = SledConfig::new(dir.path()).open();
    assert!(matches!(again, Err(Error::AlreadyOpen { .. })), "{again:?}");
    assert_eq!(clone.stream_version(&order).await?, Some(Version::new(2)));
    drop(clone);

    let reopened = SledStore::open(dir.path())?;
    assert_eq!(reopened.head().await?, Position::new(2));
    let events: Vec<_> = reopened.read_stream(&order, ReadStream::forward()).try_collect().await?;
    assert_eq!(events.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>(), [r#"{"n":1}"#, r#"{"n":2}"#]);
    let result = reopened.append(&order, ExpectedVersion::Exact(Version::new(2)), vec![event(3)]).await?;
    assert_eq!((result.version, result.first_position), (Version::new(3), Position::new(3)));
    Ok(())
}

/// `open` waits up to 500 ms for the lock: a handle dropped 50 ms into the wait lets it open; one
/// kept makes it `Locked`, after the whole wait. Only lower bounds on time are asserted.
#[test]
fn open_waits_up_to_half_a_second_for_the_lock() -> TestResult {
    let dir = tempfile::tempdir()?;
    let first = SledStore::open(dir.path())?;
    let started = std::time::Instant::now();
    let dropper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(first);
    });
    let second = SledStore::open(dir.path());
    let waited = started.elapsed();
    dropper.join().map_err(|_| "the dropping thread panicked")?;
    assert!(second.is_ok(), "the lock was let go 50 ms into the wait: {second:?}");
    assert!(waited >= std::time::Duration::from_millis(50), "opened after {waited:?}, before the drop");

    let started = std::time::Instant::now();
    let third = SledStore::open(dir.path());
    let waited = started.elapsed();
    // Held in this process: `AlreadyOpen`, after the same wait (another process gets `Locked`).
    assert!(matches!(&third, Err(Error::AlreadyOpen { .. })), "{third:?}");
    assert!(waited >= std::time::Duration::from_millis(500), "gave up after {waited:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opening_a_missing_store_without_create_if_missing_is_not_found() -> TestResult {
    let dir = tempfile::tempdir()?;
    for path in [dir.path().to_owned(), dir.path().join("not-there")] {
        let opened = SledConfig::new(&path).create_if_missing(false).open();
        assert!(matches!(&opened, Err(Error::NotFound { path: p }) if *p == path), "{opened:?}");
    }
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0, "a failed open left files behind");
    // Once created, the same config opens it.
    drop(SledStore::open(dir.path())?);
    let store = SledConfig::new(dir.path()).create_if_missing(false).open()?;
    assert_eq!(store.head().await?, Position::ZERO);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sled_database_that_is_not_an_annals_store_is_unsupported_format_0() -> TestResult {
    // A key in sled's default tree, and (in another directory) a tree of some other program.
    let in_default = tempfile::tempdir()?;
    {
        let db = raw_open(in_default.path())?;
        db.insert(b"user:1", b"ada".as_slice())?;
        db.flush()?;
    }
    let in_other_tree = tempfile::tempdir()?;
    {
        let db = raw_open(in_other_tree.path())?;
        db.open_tree("sessions")?.insert(b"s1", b"x".as_slice())?;
        db.flush()?;
    }
    for dir in [&in_default, &in_other_tree] {
        let opened = SledStore::open(dir.path());
        assert!(
            matches!(
                &opened,
                Err(Error::UnsupportedFormat { path, found: 0, supported })
                    if path == dir.path() && *supported == SledStore::FORMAT_VERSION
            ),
            "{opened:?}"
        );
    }
    // The foreign database is left as it was: no format key was written into it.
    let db = raw_open(in_default.path())?;
    assert_eq!(db.get(b"user:1")?.as_deref(), Some(b"ada".as_slice()));
    assert_eq!(db.open_tree(TREE)?.get(FORMAT_KEY)?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_with_another_format_version_is_unsupported_format() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = SledStore::open(dir.path())?;
        store.append(&StreamId::new("order-1")?, ExpectedVersion::Any, vec![event(1)]).await?;
    }
    damage(dir.path(), TREE, |tree| {
        assert_eq!(tree.get(FORMAT_KEY)?.as_deref(), Some(SledStore::FORMAT_VERSION.to_be_bytes().as_slice()));
        tree.insert(FORMAT_KEY, 99u32.to_be_bytes().as_slice()).map(drop)
    })?;
    let opened = SledStore::open(dir.path());
    let supported = SledStore::FORMAT_VERSION;
    assert!(
        matches!(&opened, Err(Error::UnsupportedFormat { found: 99, supported: s, .. }) if *s == supported),
        "{opened:?}"
    );
    // A format value that is not a u32 at all reads as "not an Annals store".
    damage(dir.path(), TREE, |tree| tree.insert(FORMAT_KEY, b"v1".as_slice()).map(drop))?;
    let opened = SledStore::open(dir.path());
    assert!(matches!(&opened, Err(Error::UnsupportedFormat { found: 0, .. })), "{opened:?}");
    // Putting the right version back makes the store open again, with its event.
    damage(dir.path(), TREE, |tree| tree.insert(FORMAT_KEY, 1u32.to_be_bytes().as_slice()).map(drop))?;
    let store = SledStore::open(dir.path())?;
    assert_eq!(store.head().await?, Position::FIRST);
    Ok(())
}

/// A store with three appends, hence three log records: position 1, positions 2 and 3, position 4,
/// all in stream `order-1`. Closed again when this returns.
async fn three_records(dir: &Path) -> Result<StreamId, Box<dyn std::error::Error>> {
    let order = StreamId::new("order-1")?;
    let store = SledStore::open(dir)?;
    store.append(&order, ExpectedVersion::NoStream, vec![event(1)]).await?;
    store.append(&order, ExpectedVersion::Any, vec![event(2), event(3)]).await?;
    store.append(&order, ExpectedVersion::Any, vec![event(4)]).await?;
    drop(store);
    let mut keys = Vec::new();
    damage(dir, TREE, |tree| {
        for item in tree.scan_prefix(b"L") {
            keys.push(item?.0.to_vec());
        }
        Ok(())
    })?;
    assert_eq!(keys, [log_key(1), log_key(2), log_key(4)], "one record per append");
    Ok(order)
}

fn is_corrupt_at(error: &Option<Error>, at: u64) -> bool {
    matches!(error, Some(Error::Corrupt { what: "log record", position, .. }) if position.get() == at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_event_reads_as_corrupt_with_its_position_and_the_others_still_read() -> TestResult {
    let dir = tempfile::tempdir()?;
    let order = three_records(dir.path()).await?;
    // Flip the last byte of record 2: the end of the payload of the event at position 3.
    damage(dir.path(), TREE, |tree| {
        let mut value = tree.get(log_key(2))?.map(|v| v.to_vec()).unwrap_or_default();
        if let Some(last) = value.last_mut() {
            *last ^= 0x20;
        }
        tree.insert(log_key(2), value).map(drop)
    })?;
    let store = SledStore::open(dir.path())?;
    assert_eq!(store.head().await?, Position::new(4));

    let (read, error) = read_until_error(store.read_stream(&order, ReadStream::forward())).await;
    assert_eq!(read.iter().map(|e| e.position.get()).collect::<Vec<_>>(), [1, 2]);
    assert!(is_corrupt_at(&error, 3), "{error:?}");
    let (read, error) = read_until_error(store.read_log(ReadLog::from_start())).await;
    assert_eq!(read.iter().map(|e| e.position.get()).collect::<Vec<_>>(), [1, 2]);
    assert!(is_corrupt_at(&error, 3), "{error:?}");
    // A filter by type reads through the event-type index: it reaches the damaged event only if it
    // wants its type, and then reports it; a filter by stream reads every record.
    let by_type = |t: &'static str| ReadLog::from_start().filter(annals::LogFilter::all().event_types([t]));
    let (read, error) = read_until_error(store.read_log(by_type("Counted"))).await;
    assert_eq!(read.iter().map(|e| e.position.get()).collect::<Vec<_>>(), [1, 2]);
    assert!(is_corrupt_at(&error, 3), "{error:?}");
    let (read, error) = read_until_error(store.read_log(by_type("Other"))).await;
    assert!(read.is_empty() && error.is_none(), "{read:?} {error:?}");
    let by_stream = ReadLog::from_start().filter(annals::LogFilter::all().stream_prefix("elsewhere-"));
    let (read, error) = read_until_error(store.read_log(by_stream)).await;
    assert!(read.is_empty() && is_corrupt_at(&error, 3), "{read:?} {error:?}");

    // Everything else reads: around the damage, and backwards from the end.
    let tail: Vec<_> = store.read_log(ReadLog::from(Position::new(4))).try_collect().await?;
    assert_eq!(tail.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>(), [r#"{"n":4}"#]);
    let last: Vec<_> = store.read_stream(&order, ReadStream::backward().limit(1)).try_collect().await?;
    assert_eq!(last.first().map(|e| e.version), Some(Version::new(4)));
    let head: Vec<_> = store.read_stream(&order, ReadStream::forward().limit(2)).try_collect().await?;
    assert_eq!(head.len(), 2);
    assert_eq!(store.stream_version(&order).await?, Some(Version::new(4)));
    // The store still takes appends, after the damaged event.
    let result = store.append(&order, ExpectedVersion::Exact(Version::new(4)), vec![event(5)]).await?;
    assert_eq!(result.first_position, Position::new(5));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_garbage_log_record_reads_as_corrupt_with_its_position_and_the_others_still_read() -> TestResult {
    let dir = tempfile::tempdir()?;
    let order = three_records(dir.path()).await?;
    damage(dir.path(), TREE, |tree| tree.insert(log_key(2), b"not a log record at all".as_slice()).map(drop))?;
    let store = SledStore::open(dir.path())?;
    assert_eq!(store.head().await?, Position::new(4));

    let (read, error) = read_until_error(store.read_stream(&order, ReadStream::forward())).await;
    assert_eq!(read.iter().map(|e| e.position.get()).collect::<Vec<_>>(), [1]);
    assert!(is_corrupt_at(&error, 2), "{error:?}");
    let (read, error) = read_until_error(store.read_log(ReadLog::from_start())).await;
    assert_eq!(read.iter().map(|e| e.position.get()).collect::<Vec<_>>(), [1]);
    assert!(is_corrupt_at(&error, 2), "{error:?}");
    let tail: Vec<_> = store.read_log(ReadLog::from(Position::new(4))).try_collect().await?;
    assert_eq!(tail.iter().map(|e| e.version.get()).collect::<Vec<_>>(), [4]);
    let last: Vec<_> = store.read_stream(&order, ReadStream::backward().limit(1)).try_collect().await?;
    assert_eq!(last.first().map(|e| e.payload.as_str()), Some(r#"{"n":4}"#));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_garbage_last_log_record_fails_open_as_corrupt() -> TestResult {
    let dir = tempfile::tempdir()?;
    three_records(dir.path()).await?;
    damage(dir.path(), TREE, |tree| tree.insert(log_key(4), vec![0xA1, 0, 0]).map(drop))?;
    let opened = SledStore::open(dir.path());
    assert!(
        matches!(&opened, Err(Error::Corrupt { what: "log record", position, .. }) if position.get() == 4),
        "{opened:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_max_event_size_of_0_or_over_1_mib_is_a_config_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    for max in [0, MAX_EVENT_SIZE_LIMIT + 1, usize::MAX] {
        let opened = SledConfig::new(dir.path()).max_event_size(max).open();
        assert!(matches!(&opened, Err(Error::Config { .. })), "max {max}: {opened:?}");
    }
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0, "a rejected config created files");
    let store = SledConfig::new(dir.path()).max_event_size(MAX_EVENT_SIZE_LIMIT).open()?;
    let big = NewEvent::raw("Big", format!("\"{}\"", "x".repeat(MAX_EVENT_SIZE_LIMIT - 5)));
    assert_eq!(big.size(), MAX_EVENT_SIZE_LIMIT);
    let order = StreamId::new("order-1")?;
    store.append(&order, ExpectedVersion::NoStream, vec![big.clone()]).await?;
    let read: Vec<_> = store.read_stream(&order, ReadStream::forward()).try_collect().await?;
    assert_eq!(read.first().map(|e| e.payload.len()), Some(big.payload().len()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_is_recognised_after_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (order, other) = (StreamId::new("order-1")?, StreamId::new("order-2")?);
    let append = vec![event(1), event(2)];
    let original = {
        let store = SledStore::open(dir.path())?;
        let original = store.append(&order, ExpectedVersion::NoStream, append.clone()).await?;
        store.append(&other, ExpectedVersion::NoStream, vec![event(3)]).await?;
        original
    };
    let store = SledStore::open(dir.path())?;
    let retry = store.append(&order, ExpectedVersion::NoStream, append.clone()).await?;
    assert!(retry.already_appended, "{retry:?}");
    assert_eq!(
        (retry.version, retry.first_position, retry.last_position),
        (original.version, original.first_position, original.last_position)
    );
    assert_eq!(store.head().await?, Position::new(3));
    // Reusing one of the ids elsewhere is still refused after the reopen.
    let reused = store.append(&other, ExpectedVersion::Any, vec![append[1].clone()]).await;
    let (id, at) = (append[1].id(), Position::new(2));
    assert!(
        matches!(&reused, Err(Error::DuplicateEventId { id: i, position }) if *i == id && *position == at),
        "{reused:?}"
    );
    let next = store.append(&order, ExpectedVersion::Exact(Version::new(2)), vec![event(4)]).await?;
    assert_eq!((next.version, next.first_position), (Version::new(3), Position::new(4)));
    let log: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await?;
    assert_eq!(log.iter().map(|e| e.position.get()).collect::<Vec<_>>(), [1, 2, 3, 4]);
    Ok(())
}
