//! Only acknowledged events are visible: with `Durability::Fsync`, a group that sled has applied but
//! the store has not yet synced shows in no read, not in `head()`, `stream_version()`,
//! `list_streams()`, `seek_recorded()` or the head watch, until its `fdatasync` returns.
//!
//! The store lives on the test's FUSE filesystem ([`volatile_fs`]), told to hold back every sync of
//! sled's data file (`db`): the store's `fdatasync` of a group then blocks, after the writer applied
//! the group to sled, for as long as the test likes. sled's own flush thread is set to wait an hour,
//! so that the only syncs of the data file are the store's. Needs `/dev/fuse`, like
//! `tests/power_loss.rs`.
#![allow(missing_docs)]

#[path = "common/volatile_fs.rs"]
mod volatile_fs;

use std::time::{Duration, Instant};

use annals::{
    EventStore, ExpectedVersion, LogFilter, NewEvent, Position, ReadLog, ReadStream, SledConfig, StreamAppend,
    StreamId, Version,
};
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::TryStreamExt;
use volatile_fs::Disk;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How long a wait may take before the test gives up (never a timing assertion).
const WAIT: Duration = Duration::from_secs(20);

/// Releases the held syncs however the test ends, so that the store's writer can finish and the
/// store close.
struct Released<'a>(&'a Disk);

impl Drop for Released<'_> {
    fn drop(&mut self) {
        self.0.release_syncs();
    }
}

fn events(count: usize) -> Vec<NewEvent> {
    (0..count).map(|n| NewEvent::raw("Counted", format!(r#"{{"n":{n}}}"#))).collect()
}

/// What a reader can see of the store, through every read there is.
#[derive(Debug, PartialEq)]
struct Seen {
    head: u64,
    watched: u64,
    log: Vec<u64>,
    typed: Vec<u64>,
    streams: Vec<(String, u64)>,
    versions: Vec<Option<Version>>,
    stream_reads: Vec<Vec<u64>>,
    /// The first position recorded after the first event.
    sought: Option<Position>,
}

async fn seen(store: &impl EventStore, streams: &[&StreamId]) -> Result<Seen, annals::Error> {
    let positions = |events: Vec<annals::RecordedEvent>| events.iter().map(|e| e.position.get()).collect();
    let log: Vec<annals::RecordedEvent> = store.read_log(ReadLog::from_start()).try_collect().await?;
    // The first event recorded after the first one: none while only the first group is visible.
    let first = log.first().map_or(DateTime::<Utc>::MIN_UTC, |e| e.recorded_at);
    let sought = store.seek_recorded(first + TimeDelta::microseconds(1)).await?;
    let filter = LogFilter::all().event_types(["Counted"]);
    let typed = store.read_log(ReadLog::from_start().filter(filter)).try_collect().await?;
    let mut versions = Vec::new();
    let mut stream_reads = Vec::new();
    for stream in streams {
        versions.push(store.stream_version(stream).await?);
        stream_reads.push(positions(store.read_stream(stream, ReadStream::forward()).try_collect().await?));
    }
    let listed = store.list_streams("").await?;
    Ok(Seen {
        head: store.head().await?.get(),
        watched: store.watch_head().current().get(),
        log: positions(log),
        typed: positions(typed),
        streams: listed.into_iter().map(|(s, v)| (s.to_string(), v.get())).collect(),
        versions,
        stream_reads,
        sought,
    })
}

#[test]
fn an_applied_group_is_invisible_until_its_sync_returns() -> TestResult {
    let root = tempfile::Builder::new().prefix("annals-visible-").tempdir()?;
    let mountpoint = root.path().join("disk");
    std::fs::create_dir(&mountpoint)?;
    let disk = Disk::new();
    let mount = disk.mount(&mountpoint);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(check(&disk, &mountpoint));
    disk.release_syncs();
    drop(runtime);
    mount.unmount();
    result
}

async fn check(disk: &Disk, mountpoint: &std::path::Path) -> TestResult {
    let store = SledConfig::new(mountpoint.join("store")).flush_every_ms(3_600_000).open()?;
    let (a, b) = (StreamId::new("order-1")?, StreamId::new("order-2")?);
    store.append(&a, ExpectedVersion::NoStream, events(1)).await?;
    let before = seen(&store, &[&a, &b]).await?;
    assert_eq!((before.head, before.log.clone()), (1, vec![1]), "precondition: one acknowledged event");

    // The next group: applied by the writer, then stuck in the store's fdatasync.
    let released = Released(disk);
    disk.hold_syncs("db");
    let appending = {
        let store = store.clone();
        let (a, b) = (a.clone(), b.clone());
        tokio::spawn(async move {
            store
                .append_multi(vec![
                    StreamAppend::new(a, ExpectedVersion::Exact(Version::FIRST), events(2)),
                    StreamAppend::new(b, ExpectedVersion::NoStream, events(1)),
                ])
                .await
        })
    };
    let waiting = Instant::now();
    while disk.held_syncs() == 0 {
        assert!(waiting.elapsed() < WAIT, "the store never synced its data file");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Applied, not synced, not acknowledged: nothing of it shows.
    assert!(!appending.is_finished(), "the append was acknowledged before its sync returned");
    assert_eq!(seen(&store, &[&a, &b]).await?, before, "an applied but unsynced group is visible");
    let mut watch = store.watch_head();
    let woken = tokio::time::timeout(Duration::from_millis(200), watch.wait_past(Position::FIRST)).await;
    assert!(woken.is_err(), "the head watch moved before the sync returned: {woken:?}");
    assert_eq!(seen(&store, &[&a, &b]).await?, before, "an applied but unsynced group became visible");
    assert!(!appending.is_finished(), "the append was acknowledged before its sync returned");

    // The sync returns: the append is acknowledged, and everything shows it.
    drop(released);
    let results = tokio::time::timeout(WAIT, appending).await???;
    assert_eq!(results.iter().map(|r| r.last_position.get()).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(tokio::time::timeout(WAIT, watch.wait_past(Position::FIRST)).await??, Position::new(4));
    let after = seen(&store, &[&a, &b]).await?;
    assert_eq!((after.head, after.watched, after.log, after.typed), (4, 4, vec![1, 2, 3, 4], vec![1, 2, 3, 4]));
    assert_eq!(after.versions, [Some(Version::new(3)), Some(Version::FIRST)]);
    assert_eq!(after.stream_reads, [vec![1, 2, 3], vec![4]]);
    assert_eq!(after.streams, [("order-1".to_owned(), 3), ("order-2".to_owned(), 1)]);
    assert_eq!(after.sought, Some(Position::new(2)));
    drop(store);
    Ok(())
}
