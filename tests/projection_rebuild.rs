//! Keeping and rebuilding projections: a persisted projection restarts from its saved state without
//! replaying (also after the store is reopened) and equals a full replay; a version bump rebuilds it
//! from the start in a shadow copy that replaces the saved one atomically (an interrupted shadow
//! resumes where it stopped); a rebuild on request, under concurrent appends, never shows readers a
//! half-built state; a checkpointed projection sees only the events after its checkpoint again, and
//! commits it `checkpoint_interval` after its progress; readers wait for a rebuild when the saved
//! state no longer decodes.

#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "postgres")]
#[path = "common/postgres.rs"]
mod postgres_support;

#[path = "common/projections.rs"]
mod projections;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use annals::{
    replay, Checkpoint, CheckpointWrite, EventStore, MemoryStore, Phase, Position, Projector, SledStore, Start, Until,
};
use projections::{append, Recorder, Tally, TallyV2, TestResult, TALLY, WAIT};

type Opened<S> = Result<S, Box<dyn std::error::Error>>;

fn live_key() -> String {
    format!("projection/{TALLY}")
}

fn shadow_key() -> String {
    format!("projection-rebuild/{TALLY}")
}

/// The saved checkpoint's `version` and `state`.
async fn saved(
    store: &impl EventStore,
    name: &str,
) -> Result<(Checkpoint, serde_json::Value), Box<dyn std::error::Error>> {
    let checkpoint = store.load_checkpoint(name).await?.ok_or_else(|| format!("no checkpoint {name}"))?;
    let json = serde_json::from_str(checkpoint.state.as_deref().ok_or("a checkpoint without state")?)?;
    Ok((checkpoint, json))
}

async fn full_replay(store: &impl EventStore) -> Result<Tally, Box<dyn std::error::Error>> {
    Ok(replay(store, Tally::default(), Start::Beginning, Until::default()).await?)
}

async fn replay_through(store: &impl EventStore, position: u64) -> Result<Tally, Box<dyn std::error::Error>> {
    let until = Until { position: Some(Position::new(position)), ..Until::default() };
    Ok(replay(store, Tally::default(), Start::Beginning, until).await?)
}

// --- 5. a persisted projection restarts from its saved state --------------------------------------

async fn a_persisted_projection_restarts_from_its_state<S, F>(open: F) -> TestResult
where
    S: EventStore + Clone + 'static,
    F: Fn() -> Opened<S>,
{
    let first_run = {
        let store = open()?;
        for _ in 0..4 {
            append(&store, "tally-1", "Touched", 5).await?;
        }
        let handle = Projector::persisted(store.clone(), Tally::default).run().await?;
        handle.wait_for(Position::new(20), WAIT).await?;
        let state = handle.read().await?.clone();
        assert_eq!(state.handled, 20);
        handle.stop().await?;
        let (checkpoint, json) = saved(&store, &live_key()).await?;
        assert_eq!(checkpoint.position, Position::new(20));
        assert_eq!(json["version"], 1);
        assert_eq!(json["state"], serde_json::json!({ "count": 20, "sum": 210, "last": 20 }));
        state
    };

    let store = open()?;
    assert_eq!(store.head().await?, Position::new(20));
    let handle = Projector::persisted(store.clone(), Tally::default).run().await?;
    {
        // Restored, not replayed: the handler has not been called in this run.
        let state = handle.read().await?;
        assert_eq!(state.handled, 0);
        assert_eq!(state.totals(), first_run.totals());
    }
    assert_eq!(handle.checkpoint(), Position::new(20));
    assert_eq!(handle.position(), Position::new(20));

    let appended = append(&store, "tally-2", "Touched", 5).await?;
    handle.wait_for(appended.last_position, WAIT).await?;
    {
        let state = handle.read().await?;
        // Only the new events, from right after the checkpoint (a duplicate would have failed).
        assert_eq!((state.handled, state.first_handled), (5, Some(21)));
        assert_eq!(state.totals(), full_replay(&store).await?.totals());
        assert_eq!(state.totals(), (25, 325, 25));
    }
    handle.stop().await?;
    let (checkpoint, json) = saved(&store, &live_key()).await?;
    assert_eq!(checkpoint.position, Position::new(25));
    assert_eq!(json["state"], serde_json::json!({ "count": 25, "sum": 325, "last": 25 }));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_projection_restarts_from_its_state_memory() -> TestResult {
    let store = MemoryStore::new();
    a_persisted_projection_restarts_from_its_state(|| Ok(store.clone())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_projection_restarts_from_its_state_after_a_reopen_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    a_persisted_projection_restarts_from_its_state(|| Ok(SledStore::open(dir.path())?)).await
}

// --- 6. a version bump rebuilds ---------------------------------------------------------------------

async fn a_version_bump_rebuilds_from_the_start<S, F>(open: F) -> TestResult
where
    S: EventStore + Clone + 'static,
    F: Fn() -> Opened<S>,
{
    {
        let store = open()?;
        append(&store, "tally-1", "Touched", 12).await?;
        let v1 = Projector::persisted(store.clone(), Tally::default).run().await?;
        v1.wait_for(Position::new(12), WAIT).await?;
        v1.stop().await?;
        assert_eq!(saved(&store, &live_key()).await?.1["version"], 1);
        append(&store, "tally-1", "Touched", 3).await?; // 13..=15, after the v1 checkpoint
    }

    let store = open()?;
    let v2 = Projector::persisted(store.clone(), TallyV2::default).run().await?;
    {
        // Readers do not wait for the rebuild: they see the saved version 1 state (it still decodes),
        // or the rebuilt one if the swap came first, never anything in between.
        let state = v2.read().await?;
        let (old, rebuilt) = ((0, (12, 78, 12)), (15, (15, 120, 15)));
        let seen = (state.0.handled, state.0.totals());
        assert!(seen == old || seen == rebuilt, "{:?}", state.0);
    }
    // The first catch-up of version 2 is the rebuild's: it ends with the swap.
    assert_eq!(v2.caught_up().await?, Position::new(15));
    {
        let state = v2.read().await?;
        // The handler saw every event again, from the first.
        assert_eq!((state.0.handled, state.0.first_handled), (15, Some(1)));
        assert_eq!(state.0.totals(), full_replay(&store).await?.totals());
    }
    // The swap saved version 2 and dropped the shadow's checkpoint, in one write.
    let (checkpoint, json) = saved(&store, &live_key()).await?;
    assert_eq!(checkpoint.position, Position::new(15));
    assert_eq!(json["version"], 2);
    assert_eq!(json["state"], serde_json::json!({ "count": 15, "sum": 120, "last": 15 }));
    assert_eq!(store.load_checkpoint(&shadow_key()).await?, None);

    // Live after the rebuild, at version 2.
    let appended = append(&store, "tally-2", "Touched", 2).await?;
    v2.wait_for(appended.last_position, WAIT).await?;
    assert_eq!(v2.read().await?.0.handled, 17);
    v2.stop().await?;
    assert_eq!(saved(&store, &live_key()).await?.1["version"], 2);
    assert_eq!(store.load_checkpoint(&shadow_key()).await?, None);

    // Version 2 is now the saved one: the next run restores it without a rebuild.
    let again = Projector::persisted(store.clone(), TallyV2::default).run().await?;
    assert_eq!(again.caught_up().await?, Position::new(17));
    let state = again.read().await?.clone();
    assert_eq!((state.0.handled, state.0.totals()), (0, full_replay(&store).await?.totals()));
    again.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_bump_rebuilds_from_the_start_memory() -> TestResult {
    let store = MemoryStore::new();
    a_version_bump_rebuilds_from_the_start(|| Ok(store.clone())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_bump_rebuilds_from_the_start_after_a_reopen_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    a_version_bump_rebuilds_from_the_start(|| Ok(SledStore::open(dir.path())?)).await
}

/// A rebuild interrupted by a crash left its shadow at position 6: the next run of the same version
/// resumes the shadow from 7, not from the start. A shadow of another version is not resumed.
async fn an_interrupted_rebuild_resumes_its_shadow<S: EventStore + Clone + 'static>(store: S) -> TestResult {
    append(&store, "tally-1", "Touched", 10).await?;
    let v1 = Projector::persisted(store.clone(), Tally::default).run().await?;
    v1.wait_for(Position::new(10), WAIT).await?;
    v1.stop().await?;

    let partial = replay_through(&store, 6).await?;
    let shadow = format!(r#"{{"version":2,"state":{}}}"#, serde_json::to_string(&partial)?);
    let write = CheckpointWrite::Save(Checkpoint::new(shadow_key(), Position::new(6)).with_state(shadow));
    store.save_checkpoints(vec![write]).await?;

    let v2 = Projector::persisted(store.clone(), TallyV2::default).run().await?;
    assert_eq!(v2.caught_up().await?, Position::new(10));
    {
        let state = v2.read().await?;
        assert_eq!((state.0.handled, state.0.first_handled), (4, Some(7)), "resumed after the shadow's checkpoint");
        assert_eq!(state.0.totals(), full_replay(&store).await?.totals());
    }
    v2.stop().await?;
    assert_eq!(saved(&store, &live_key()).await?.1["version"], 2);
    assert_eq!(store.load_checkpoint(&shadow_key()).await?, None);

    // Back to a saved version 1, with a shadow left by another version (3): version 2 does not resume
    // that shadow, it rebuilds from the start.
    let reset =
        vec![
            CheckpointWrite::Save(Checkpoint::new(live_key(), Position::new(10)).with_state(format!(
                r#"{{"version":1,"state":{}}}"#,
                serde_json::to_string(&full_replay(&store).await?)?
            ))),
            CheckpointWrite::Save(
                Checkpoint::new(shadow_key(), Position::new(6))
                    .with_state(format!(r#"{{"version":3,"state":{}}}"#, serde_json::to_string(&partial)?)),
            ),
        ];
    store.save_checkpoints(reset).await?;
    let v2 = Projector::persisted(store.clone(), TallyV2::default).run().await?;
    assert_eq!(v2.caught_up().await?, Position::new(10));
    assert_eq!(v2.read().await?.0.first_handled, Some(1));
    v2.stop().await?;
    assert_eq!(store.load_checkpoint(&shadow_key()).await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rebuild_resumes_its_shadow_memory() -> TestResult {
    an_interrupted_rebuild_resumes_its_shadow(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rebuild_resumes_its_shadow_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    an_interrupted_rebuild_resumes_its_shadow(SledStore::open(dir.path())?).await
}

// --- 7. a rebuild on request never shows a half-built state --------------------------------------

/// At most this many appends race the rebuild: a writer that never stops could keep any follower
/// from reaching the head.
const RACING_APPENDS: u64 = 2_000;

/// What a reader saw while the rebuild ran.
#[derive(Debug, Default)]
struct Observed {
    reads: u64,
    rebuilt_reads: u64,
}

/// Reads the state until `done`, checking every read: it is the replay of a whole prefix of the log,
/// it never goes back, and once the rebuilt instance shows it is at least at `head_at_rebuild`. Counts
/// itself in `started` after its first read.
async fn watch_reads(
    handle: annals::ProjectionHandle<Tally>,
    started: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    old_generation: u64,
    head_at_rebuild: u64,
) -> Result<Observed, String> {
    let mut observed = Observed::default();
    let mut last = 0;
    let mut rebuilt = false;
    while !done.load(Ordering::SeqCst) {
        let state = handle.read().await.map_err(|e| e.to_string())?.clone();
        observed.reads += 1;
        if observed.reads == 1 {
            started.fetch_add(1, Ordering::SeqCst);
        }
        if !state.is_complete_prefix() {
            return Err(format!("a state that is no replay of a prefix: {state:?}"));
        }
        if state.last < last {
            return Err(format!("the state went back from {last} to {}", state.last));
        }
        last = state.last;
        if state.generation != old_generation {
            rebuilt = true;
            observed.rebuilt_reads += 1;
            if state.last < head_at_rebuild {
                return Err(format!("a half-built state at {} (the head was {head_at_rebuild})", state.last));
            }
        } else if rebuilt {
            return Err("the old instance came back after the swap".into());
        }
        tokio::task::yield_now().await;
    }
    Ok(observed)
}

async fn a_rebuild_under_appends_never_shows_a_half_built_state<S: EventStore + Clone + 'static>(
    store: S,
) -> TestResult {
    for _ in 0..30 {
        append(&store, "tally-1", "Touched", 100).await?;
    }
    let generations = Arc::new(AtomicU64::new(0));
    let factory = {
        let generations = Arc::clone(&generations);
        move || Tally { generation: generations.fetch_add(1, Ordering::SeqCst) + 1, ..Tally::default() }
    };
    let handle = Projector::persisted(store.clone(), factory).run().await?;
    assert_eq!(handle.caught_up().await?, Position::new(3000));
    let old_generation = handle.read().await?.generation;

    let writing = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn({
        let (store, writing) = (store.clone(), Arc::clone(&writing));
        async move {
            let mut appended = 0u64;
            while (writing.load(Ordering::SeqCst) || appended < 50) && appended < RACING_APPENDS {
                append(&store, "tally-2", "Touched", 1).await.map_err(|e| e.to_string())?;
                appended += 1;
                // A memory store's append never waits: let the other tasks run.
                tokio::task::yield_now().await;
            }
            Ok::<_, String>(appended)
        }
    });
    let head_at_rebuild = store.head().await?.get();
    let (started, done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (started, done) = (Arc::clone(&started), Arc::clone(&done));
            tokio::spawn(watch_reads(handle.clone(), started, done, old_generation, head_at_rebuild))
        })
        .collect();
    // Both readers have seen the old state before the rebuild is asked for.
    tokio::time::timeout(WAIT, async {
        while started.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await?;

    tokio::time::timeout(3 * WAIT, handle.rebuild()).await??;
    {
        // Right after the rebuild: the rebuilt instance, complete up to a head at least as recent as
        // the one when the rebuild was asked for, equal to a full replay up to where it stands.
        let state = handle.read().await?.clone();
        assert_ne!(state.generation, old_generation);
        assert!(state.last >= head_at_rebuild, "{} < {head_at_rebuild}", state.last);
        assert_eq!(state.first_handled, Some(1), "rebuilt from the start");
        assert_eq!(state.totals(), replay_through(&store, state.last).await?.totals());
    }
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        let observed = reader.await??;
        assert!(observed.reads > observed.rebuilt_reads, "it read the old state first: {observed:?}");
    }
    writing.store(false, Ordering::SeqCst);
    let appended = writer.await??;
    let head = store.head().await?;
    assert_eq!(head.get(), 3000 + appended);

    handle.wait_for(head, WAIT).await?;
    assert_eq!(handle.position(), head);
    {
        let state = handle.read().await?;
        assert_eq!(state.totals(), full_replay(&store).await?.totals());
        assert_eq!(state.totals(), replay_through(&store, handle.position().get()).await?.totals());
    }
    handle.stop().await?;
    let (checkpoint, json) = saved(&store, &live_key()).await?;
    assert_eq!(checkpoint.position, head);
    assert_eq!(json["state"]["last"], head.get());
    assert_eq!(store.load_checkpoint(&shadow_key()).await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_appends_never_shows_a_half_built_state_memory() -> TestResult {
    a_rebuild_under_appends_never_shows_a_half_built_state(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_appends_never_shows_a_half_built_state_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    a_rebuild_under_appends_never_shows_a_half_built_state(SledStore::open(dir.path())?).await
}

// --- 8. a checkpointed projection resumes after its checkpoint ------------------------------------

async fn a_checkpointed_projection_resumes_after_its_checkpoint<S, F>(open: F) -> TestResult
where
    S: EventStore + Clone + 'static,
    F: Fn() -> Opened<S>,
{
    {
        let store = open()?;
        append(&store, "order-1", "Touched", 6).await?;
        let handle = Projector::checkpointed(store.clone(), || Recorder::new("mailer")).run().await?;
        handle.wait_for(Position::new(6), WAIT).await?;
        assert_eq!(handle.read().await?.positions(), (1..=6).collect::<Vec<_>>());
        handle.stop().await?;
        let checkpoint = store.load_checkpoint("projection/mailer").await?.ok_or("no checkpoint")?;
        assert_eq!(checkpoint.position, Position::new(6));
        // Only the version is kept, no state.
        assert_eq!(checkpoint.state.as_deref(), Some(r#"{"version":1}"#));
        // Appended while it is stopped: 7..=9.
        append(&store, "order-2", "Touched", 3).await?;
    }

    let store = open()?;
    let handle = Projector::checkpointed(store.clone(), || Recorder::new("mailer")).run().await?;
    assert_eq!(handle.caught_up().await?, Position::new(9));
    let appended = append(&store, "order-3", "Touched", 2).await?; // 10..=11
    handle.wait_for(appended.last_position, WAIT).await?;
    {
        let state = handle.read().await?;
        // Nothing up to the checkpoint again; what came while it was stopped is caught up on.
        assert_eq!(state.positions(), (7..=11).collect::<Vec<_>>());
        assert_eq!(state.phases(), [Phase::CatchUp, Phase::CatchUp, Phase::CatchUp, Phase::Live, Phase::Live]);
    }
    handle.stop().await?;
    assert_eq!(store.load_checkpoint("projection/mailer").await?.map(|c| c.position), Some(Position::new(11)));

    // A third run has nothing to catch up on.
    let handle = Projector::checkpointed(store.clone(), || Recorder::new("mailer")).run().await?;
    assert_eq!(handle.caught_up().await?, Position::new(11));
    assert!(handle.read().await?.seen.is_empty());
    handle.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpointed_projection_resumes_after_its_checkpoint_memory() -> TestResult {
    let store = MemoryStore::new();
    a_checkpointed_projection_resumes_after_its_checkpoint(|| Ok(store.clone())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpointed_projection_resumes_after_its_checkpoint_after_a_reopen_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    a_checkpointed_projection_resumes_after_its_checkpoint(|| Ok(SledStore::open(dir.path())?)).await
}

// --- 9. a checkpointed projection commits an interval after its progress --------------------------

/// Polls `condition` every few milliseconds until it holds; an error naming `what` after [`WAIT`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) -> TestResult {
    let deadline = std::time::Instant::now() + WAIT;
    while !condition() {
        if std::time::Instant::now() > deadline {
            return Err(format!("timed out waiting until {what}").into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Catching up commits; and with neither `checkpoint_every` nor catching up nor stop to commit it, a
/// projector's progress is committed `checkpoint_interval` after it was first made: not sooner (a
/// lower bound, measured from before the append), and also while events keep coming.
async fn a_projector_commits_an_interval_after_its_progress<S: EventStore + Clone + 'static>(store: S) -> TestResult {
    const INTERVAL: std::time::Duration = std::time::Duration::from_millis(300);
    append(&store, "order-1", "Touched", 3).await?;
    // Catching up commits, though neither the count nor the hour-long interval would.
    let hourly = Projector::checkpointed(store.clone(), || Recorder::new("hourly"))
        .checkpoint_every(1_000_000)
        .checkpoint_interval(std::time::Duration::from_secs(3600))
        .run()
        .await?;
    let caught_up = hourly.caught_up().await?;
    eventually("catching up commits", || hourly.checkpoint() == caught_up).await?;
    let saved = store.load_checkpoint("projection/hourly").await?.map(|c| c.position);
    assert_eq!(saved, Some(Position::new(3)));
    hourly.stop().await?;

    let handle = Projector::checkpointed(store.clone(), || Recorder::new("timed"))
        .checkpoint_every(1_000_000)
        .checkpoint_interval(INTERVAL)
        .run()
        .await?;
    let caught_up = handle.caught_up().await?;
    eventually("catching up commits", || handle.checkpoint() == caught_up).await?;

    let before = std::time::Instant::now();
    let one = append(&store, "order-1", "Touched", 1).await?.last_position;
    handle.wait_for(one, WAIT).await?;
    eventually("the interval commits the live event", || handle.checkpoint() == one).await?;
    let took = before.elapsed();
    assert!(took >= INTERVAL, "committed {took:?} after the append, before the {INTERVAL:?} interval");
    let saved = store.load_checkpoint("projection/timed").await?.map(|c| c.position);
    assert_eq!(saved, Some(one), "saved, not only reported");

    let mut last = one;
    for _ in 0..40 {
        last = append(&store, "order-1", "Touched", 1).await?.last_position;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let during = handle.checkpoint();
    assert!(during > one, "no commit in 2 s of events {INTERVAL:?} apart or less: checkpoint {during}");
    handle.wait_for(last, WAIT).await?;
    eventually("the last events are committed", || handle.checkpoint() == last).await?;
    handle.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_commits_an_interval_after_its_progress_memory() -> TestResult {
    a_projector_commits_an_interval_after_its_progress(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_commits_an_interval_after_its_progress_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    a_projector_commits_an_interval_after_its_progress(SledStore::open(dir.path())?).await
}

// --- 10. after a version bump whose saved state no longer decodes, readers wait -------------------

/// The tally under the same name at version 3, with a state the version 1 state does not decode into
/// (it needs `events`). Its handler waits at the first event until `open` is set.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Recounted {
    events: u64,
    #[serde(skip)]
    open: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl annals::Projection for Recounted {
    fn name(&self) -> &str {
        TALLY
    }

    fn version(&self) -> u32 {
        3
    }

    async fn handle(&mut self, _event: &annals::RecordedEvent, _phase: Phase) -> Result<(), annals::HandlerError> {
        while !self.open.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        self.events += 1;
        Ok(())
    }
}

/// Readers of a projection whose saved state no longer decodes wait for the rebuild: they never see
/// a fresh or half-built state.
async fn readers_wait_for_the_rebuild_when_the_saved_state_does_not_decode<S>(store: S) -> TestResult
where
    S: EventStore + Clone + 'static,
{
    append(&store, "tally-1", "Touched", 10).await?;
    let v1 = Projector::persisted(store.clone(), Tally::default).run().await?;
    v1.wait_for(Position::new(10), WAIT).await?;
    v1.stop().await?;

    let open = Arc::new(AtomicBool::new(false));
    let factory = {
        let open = Arc::clone(&open);
        move || Recounted { events: 0, open: Arc::clone(&open) }
    };
    let v3 = Projector::persisted(store.clone(), factory).run().await?;
    // The rebuild is held at its first event: a reader must wait, not see an empty state.
    let early = tokio::time::timeout(std::time::Duration::from_millis(200), async {
        v3.read().await.map(|state| state.events)
    })
    .await;
    assert!(early.is_err(), "a reader got a state before the rebuild: {early:?}");
    open.store(true, Ordering::SeqCst);
    let events = tokio::time::timeout(WAIT, async { v3.read().await.map(|state| state.events) }).await??;
    assert_eq!(events, 10, "the first state readers see is the whole rebuild");
    v3.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_wait_for_the_rebuild_when_the_saved_state_does_not_decode_memory() -> TestResult {
    readers_wait_for_the_rebuild_when_the_saved_state_does_not_decode(MemoryStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_wait_for_the_rebuild_when_the_saved_state_does_not_decode_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    readers_wait_for_the_rebuild_when_the_saved_state_does_not_decode(SledStore::open(dir.path())?).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_projection_restarts_from_its_state_postgres() -> TestResult {
    let store = postgres_support::fresh_config()?.open().await?;
    a_persisted_projection_restarts_from_its_state(|| Ok(store.clone())).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_bump_rebuilds_from_the_start_postgres() -> TestResult {
    let store = postgres_support::fresh_config()?.open().await?;
    a_version_bump_rebuilds_from_the_start(|| Ok(store.clone())).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rebuild_resumes_its_shadow_postgres() -> TestResult {
    an_interrupted_rebuild_resumes_its_shadow(postgres_support::fresh_config()?.open().await?).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_appends_never_shows_a_half_built_state_postgres() -> TestResult {
    a_rebuild_under_appends_never_shows_a_half_built_state(postgres_support::fresh_config()?.open().await?).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpointed_projection_resumes_after_its_checkpoint_postgres() -> TestResult {
    let store = postgres_support::fresh_config()?.open().await?;
    a_checkpointed_projection_resumes_after_its_checkpoint(|| Ok(store.clone())).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_commits_an_interval_after_its_progress_postgres() -> TestResult {
    a_projector_commits_an_interval_after_its_progress(postgres_support::fresh_config()?.open().await?).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_wait_for_the_rebuild_when_the_saved_state_does_not_decode_postgres() -> TestResult {
    readers_wait_for_the_rebuild_when_the_saved_state_does_not_decode(postgres_support::fresh_config()?.open().await?)
        .await
}
