//! Snapshots: every field loads back exactly; by default every snapshot is kept (what time travel
//! needs); with `SnapshotRetention::Last(n)` a save keeps the newest `n` of its stream and deletes
//! the others, atomically, so that readers and concurrent savers never find the stream's newest
//! snapshot gone; export and import, and `copy_store`, carry snapshots into the store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use annals::{
    copy_store, export_jsonl, export_jsonl_with_snapshots, import_jsonl, Error, EventStore, ExpectedVersion,
    MemoryStore, Snapshot, SnapshotRetention, StreamId, Version,
};

use super::{events, Backend, TestResult, TestStore};

fn snapshot(stream: &StreamId, version: u64) -> Snapshot {
    Snapshot::new(stream.clone(), Version::new(version), 3, format!(r#"{{"v":{version},"name":"é\n"}}"#))
}

/// Every snapshot of `stream`, newest first, by walking down from the newest.
async fn all<S: EventStore + ?Sized>(store: &S, stream: &StreamId) -> Result<Vec<Snapshot>, Error> {
    let mut found = Vec::new();
    let mut at = Some(Version::MAX);
    while let Some(version) = at {
        let Some(snapshot) = store.load_snapshot(stream, version).await? else { break };
        at = snapshot.version.get().checked_sub(1).filter(|v| *v > 0).map(Version::new);
        found.push(snapshot);
    }
    Ok(found)
}

async fn versions<S: EventStore + ?Sized>(store: &S, stream: &StreamId) -> Result<Vec<u64>, Error> {
    Ok(all(store, stream).await?.iter().map(|s| s.version.get()).collect())
}

pub(crate) async fn a_snapshot_loads_back_exactly_and_every_one_is_kept_by_default<S: TestStore>(
    store: &S,
) -> TestResult {
    let stream = StreamId::new("ledger-1")?;
    assert_eq!(store.load_snapshot(&stream, Version::MAX).await?, None);
    // Saved out of order; each loads back with every field.
    for version in [40, 10, 30, 20, 50] {
        store.save_snapshot(snapshot(&stream, version)).await?;
    }
    let newest = store.load_snapshot(&stream, Version::MAX).await?.ok_or("no snapshot")?;
    let mut expected = snapshot(&stream, 50);
    expected.taken_at = newest.taken_at;
    assert_eq!(newest, expected);
    assert_eq!(store.load_snapshot(&stream, Version::new(39)).await?.map(|s| s.version.get()), Some(30));
    assert_eq!(store.load_snapshot(&stream, Version::new(9)).await?, None);
    assert_eq!(versions(store, &stream).await?, [50, 40, 30, 20, 10], "the default keeps every snapshot");

    // Saving at a stored version replaces it.
    let replaced = Snapshot::new(stream.clone(), Version::new(30), 4, "[30]".into());
    store.save_snapshot(replaced.clone()).await?;
    assert_eq!(store.load_snapshot(&stream, Version::new(30)).await?, Some(replaced));
    assert_eq!(versions(store, &stream).await?, [50, 40, 30, 20, 10]);
    Ok(())
}

pub(crate) async fn a_save_keeps_the_newest_n_snapshots_of_its_stream_and_deletes_the_others<B: Backend>() -> TestResult
{
    let fixture = B::open_with_snapshot_retention(SnapshotRetention::last(3)).await?;
    let store = &fixture.store;
    let (a, a10, other) = (StreamId::new("acct-1")?, StreamId::new("acct-10")?, StreamId::new("acct-2")?);
    store.save_snapshot(snapshot(&other, 1)).await?;
    store.save_snapshot(snapshot(&a10, 7)).await?;
    for version in 1..=10 {
        store.save_snapshot(snapshot(&a, version * 10)).await?;
        let expected: Vec<u64> = (version.saturating_sub(2).max(1)..=version).rev().map(|v| v * 10).collect();
        assert_eq!(versions(store, &a).await?, expected, "after the save at {}", version * 10);
    }
    // Other streams, one whose name starts with this one's included, are left alone.
    assert_eq!(versions(store, &other).await?, [1]);
    assert_eq!(versions(store, &a10).await?, [7]);

    // A snapshot older than the newest three is not kept; one between them replaces the oldest.
    store.save_snapshot(snapshot(&a, 5)).await?;
    assert_eq!(versions(store, &a).await?, [100, 90, 80]);
    store.save_snapshot(snapshot(&a, 95)).await?;
    assert_eq!(versions(store, &a).await?, [100, 95, 90]);
    // Saving the newest again replaces it and deletes nothing.
    let again = Snapshot::new(a.clone(), Version::new(100), 9, "{}".into());
    store.save_snapshot(again.clone()).await?;
    assert_eq!(store.load_snapshot(&a, Version::MAX).await?, Some(again));
    assert_eq!(versions(store, &a).await?, [100, 95, 90]);

    // `last(0)` keeps one: the newest.
    let one = B::open_with_snapshot_retention(SnapshotRetention::last(0)).await?;
    for version in [3, 1, 2, 4] {
        one.store.save_snapshot(snapshot(&a, version)).await?;
    }
    assert_eq!(versions(&one.store, &a).await?, [4]);
    Ok(())
}

/// The highest version the racing savers save.
const SAVES: u64 = 2_000;

pub(crate) async fn readers_and_concurrent_saves_never_find_the_newest_snapshot_gone<B: Backend>() -> TestResult {
    let fixture = B::open_with_snapshot_retention(SnapshotRetention::last(1)).await?;
    let store = fixture.store.clone();
    let stream = StreamId::new("hot-1")?;
    store.save_snapshot(snapshot(&stream, 1)).await?;
    let done = Arc::new(AtomicBool::new(false));
    // Reads so far, of all readers: the savers start once the readers are reading (on a busy machine
    // the savers once finished before a reader had run).
    let started = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (store, stream, done, started) = (store.clone(), stream.clone(), Arc::clone(&done), Arc::clone(&started));
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !done.load(Ordering::Relaxed) {
                if store.load_snapshot(&stream, Version::MAX).await.map_err(|e| e.to_string())?.is_none() {
                    return Err("a reader found no snapshot while saves replaced it".to_owned());
                }
                reads += 1;
                started.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
            Ok::<u64, String>(reads)
        }));
    }
    let since = std::time::Instant::now();
    while started.load(Ordering::Relaxed) < 3 {
        assert!(since.elapsed() < std::time::Duration::from_secs(30), "the readers never read");
        tokio::task::yield_now().await;
    }
    let before_saves = started.load(Ordering::Relaxed);
    // Four savers, each its own versions (2, 6, 10, ... / 3, 7, ... / ...) up to `SAVES`, at once.
    let mut savers = Vec::new();
    for first in 2..6u64 {
        let (store, stream, started) = (store.clone(), stream.clone(), Arc::clone(&started));
        savers.push(tokio::spawn(async move {
            for version in (first..=SAVES).step_by(4) {
                store.save_snapshot(snapshot(&stream, version)).await?;
                // The next save waits for a read: a store whose save never waits (memory) would
                // otherwise keep its worker thread until all its saves were done, and the readers
                // would run only after them.
                let (seen, since) = (started.load(Ordering::Relaxed), std::time::Instant::now());
                while started.load(Ordering::Relaxed) == seen {
                    assert!(since.elapsed() < std::time::Duration::from_secs(30), "the readers stopped reading");
                    tokio::task::yield_now().await;
                }
            }
            Ok::<(), Error>(())
        }));
    }
    for saver in savers {
        saver.await??;
    }
    done.store(true, Ordering::Relaxed);
    let during_saves = started.load(Ordering::Relaxed) - before_saves;
    for reader in readers {
        reader.await??;
    }
    assert!(during_saves > 0, "the readers read nothing while the saves ran: the test proved little");
    let kept = versions(&store, &stream).await?;
    assert_eq!(kept.first(), Some(&SAVES), "the newest snapshot survives concurrent saves: {kept:?}");
    assert!(kept.len() <= 4, "one per saver at most is left over by a race: {kept:?}");
    // The next save trims to one.
    store.save_snapshot(snapshot(&stream, SAVES + 1)).await?;
    assert_eq!(versions(&store, &stream).await?, [SAVES + 1]);
    Ok(())
}

/// A source store with two streams, snapshots at several versions, and one snapshot past its stream.
async fn source() -> Result<MemoryStore, Box<dyn std::error::Error>> {
    let source = MemoryStore::new();
    let (a, b) = (StreamId::new("order-a")?, StreamId::new("order-b")?);
    source.append(&a, ExpectedVersion::NoStream, events(1, 30)).await?;
    source.append(&b, ExpectedVersion::NoStream, events(31, 12)).await?;
    for (stream, version) in [(&a, 10), (&a, 20), (&a, 30), (&b, 5), (&b, 10)] {
        source.save_snapshot(snapshot(stream, version)).await?;
    }
    Ok(source)
}

pub(crate) async fn an_export_with_snapshots_imports_every_snapshot_exactly<S: TestStore>(store: &S) -> TestResult {
    let source = source().await?;
    let (a, b) = (StreamId::new("order-a")?, StreamId::new("order-b")?);
    // A snapshot past its stream's events stays out of the export.
    source.save_snapshot(snapshot(&b, 13)).await?;

    let mut plain = Vec::new();
    let exported = export_jsonl(&source, &mut plain).await?;
    assert_eq!((exported.events, exported.snapshots), (42, 0), "a plain export leaves snapshots out");
    let mut lines = Vec::new();
    let exported = export_jsonl_with_snapshots(&source, &mut lines).await?;
    assert_eq!((exported.events, exported.checkpoints, exported.snapshots), (42, 0, 5));
    let text = String::from_utf8(lines.clone())?;
    let first_snapshot = text.lines().position(|l| l.starts_with(r#"{"snapshot":"#)).ok_or("no snapshot line")?;
    assert_eq!(first_snapshot, 42, "snapshots come after the events");

    let imported = import_jsonl(store, lines.as_slice()).await?;
    assert_eq!((imported.events, imported.snapshots, imported.snapshots_left_out), (42, 5, 0));
    assert_eq!(all(store, &a).await?, all(&source, &a).await?);
    let b_in_source: Vec<_> = all(&source, &b).await?.into_iter().filter(|s| s.version.get() <= 12).collect();
    assert_eq!(all(store, &b).await?, b_in_source);
    // The same export again restores no event and saves the same snapshots over themselves.
    let again = import_jsonl(store, lines.as_slice()).await?;
    assert_eq!((again.events, again.snapshots), (0, 5));
    assert_eq!(all(store, &a).await?, all(&source, &a).await?);
    Ok(())
}

pub(crate) async fn an_imported_snapshot_past_its_stream_is_left_out_and_one_not_json_is_refused<S: TestStore>(
    store: &S,
) -> TestResult {
    let source = source().await?;
    let mut lines = Vec::new();
    export_jsonl_with_snapshots(&source, &mut lines).await?;
    let text = String::from_utf8(lines)?;
    let last = text.lines().last().ok_or("an empty export")?;
    assert!(last.contains(r#""stream":"order-b","version":10"#), "{last}");

    // By hand: a snapshot of order-b at 13 (the stream ends at 12) and one of a stream with no events.
    let past = last.replace(r#""version":10"#, r#""version":13"#);
    let nowhere = last.replace("order-b", "order-z");
    let bad = format!("{text}{past}\n{nowhere}\n");
    let imported = import_jsonl(store, bad.as_bytes()).await?;
    assert_eq!((imported.snapshots, imported.snapshots_left_out), (5, 2));
    let b = StreamId::new("order-b")?;
    assert_eq!(versions(store, &b).await?, [10, 5]);
    assert_eq!(versions(store, &StreamId::new("order-z")?).await?, Vec::<u64>::new());

    // A state that is not JSON is refused, naming the line, before anything is saved.
    let fresh = MemoryStore::new();
    let broken = last.replace(r#""state":"{"#, r#""state":"{{"#);
    assert_ne!(broken, last);
    let lines = text.lines().count() as u64;
    let result = import_jsonl(&fresh, format!("{text}{broken}\n").as_bytes()).await;
    let Err(Error::InvalidExport { line, source }) = &result else {
        return Err(format!("a snapshot whose state is not JSON was taken: {result:?}").into());
    };
    assert_eq!(*line, lines + 1);
    assert!(source.downcast_ref::<serde_json::Error>().is_some(), "{source:?}");
    assert_eq!(versions(&fresh, &b).await?, Vec::<u64>::new());
    Ok(())
}

pub(crate) async fn a_copy_and_an_import_keep_only_what_the_target_retains<B: Backend>() -> TestResult {
    let source = source().await?;
    let a = StreamId::new("order-a")?;
    let copied = B::open_with_snapshot_retention(SnapshotRetention::last(2)).await?;
    let report = copy_store(&source, &copied.store).await?;
    assert_eq!(report.snapshots, 5, "{report:?}");
    assert_eq!(versions(&copied.store, &a).await?, [30, 20]);
    assert_eq!(all(&copied.store, &a).await?[..], all(&source, &a).await?[..2]);

    let imported = B::open_with_snapshot_retention(SnapshotRetention::last(2)).await?;
    let mut lines = Vec::new();
    export_jsonl_with_snapshots(&source, &mut lines).await?;
    import_jsonl(&imported.store, lines.as_slice()).await?;
    assert_eq!(all(&imported.store, &a).await?, all(&copied.store, &a).await?);
    Ok(())
}
