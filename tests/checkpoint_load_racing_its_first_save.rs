//! A checkpoint load that races the first save of that checkpoint answers "not there" or the saved
//! checkpoint, never an error. (`ProjectionHandle::as_of` loads a projection's history copies while
//! the running projector saves new ones; the sled store once answered such a load with
//! `Corrupt { what: "checkpoint", reason: "it was saved but is missing" }`: the load missed the value,
//! then found the name the save had just listed.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::{Checkpoint, CheckpointWrite, EventStore, MemoryStore, Position, SledStore};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const SAVES: u64 = 3_000;

async fn loads_racing_first_saves_never_fail<S: EventStore + Clone + 'static>(store: S) -> TestResult {
    let next = Arc::new(AtomicU64::new(0));
    // Passes the loaders have begun: the saver waits for a new one before each save, so the loaders
    // are running while it saves. (On a busy 2-core machine the in-memory saves once finished before
    // a loader had been scheduled at all.)
    let passes = Arc::new(AtomicU64::new(0));
    let mut loaders = Vec::new();
    for _ in 0..2 {
        let (store, next, passes) = (store.clone(), Arc::clone(&next), Arc::clone(&passes));
        loaders.push(tokio::spawn(async move {
            let mut found = 0u64;
            loop {
                passes.fetch_add(1, Ordering::Relaxed);
                let at = next.load(Ordering::Relaxed);
                if at >= SAVES {
                    return Ok::<u64, annals::Error>(found);
                }
                // The checkpoint being saved now, or the next one.
                for name in [at, at + 1] {
                    if store.load_checkpoint(&format!("race/{name:05}")).await?.is_some() {
                        found += 1;
                    }
                }
            }
        }));
    }
    for i in 0..SAVES {
        next.store(i, Ordering::Relaxed);
        let (seen, since) = (passes.load(Ordering::Relaxed), Instant::now());
        while passes.load(Ordering::Relaxed) == seen {
            assert!(since.elapsed() < Duration::from_secs(30), "the loaders stopped making passes");
            tokio::task::yield_now().await;
        }
        let checkpoint = Checkpoint::new(format!("race/{i:05}"), Position::new(i));
        store.save_checkpoints(vec![CheckpointWrite::Save(checkpoint)]).await?;
        tokio::task::yield_now().await;
    }
    next.store(SAVES, Ordering::Relaxed);
    let mut found = 0;
    for loader in loaders {
        found += loader.await??;
    }
    assert!(found > 0, "no load ever found a saved checkpoint: the loads did not race the saves");
    assert_eq!(store.list_checkpoints("race/").await?.len() as u64, SAVES);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn loads_racing_first_saves_never_fail_on_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    loads_racing_first_saves_never_fail(SledStore::open(dir.path())?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn loads_racing_first_saves_never_fail_in_memory() -> TestResult {
    loads_racing_first_saves_never_fail(MemoryStore::new()).await
}
