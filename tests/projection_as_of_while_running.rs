//! `ProjectionHandle::as_of` answers "what did the read model look like then?" on a running
//! projection while it keeps running and events keep coming: for bounds by position, recorded time,
//! occurred (business) time and both, its answer is the same as a full replay to the same bound,
//! starts from the saved copies of the projection's history, and leaves the live projection alone
//! (it goes on handling appends meanwhile, and ends equal to a full replay to the head).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use annals::{
    replay, EventStore, ExpectedVersion, HandlerError, MemoryStore, NewEvent, Phase, Position, Projection, Projector,
    ReadLog, RecordedEvent, SledStore, Start, StreamId, Until,
};
use chrono::{DateTime, TimeZone, Utc};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Counts events and sums their positions; `handled` (not saved) counts the calls of one instance.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Sum {
    count: u64,
    positions: u64,
    #[serde(skip)]
    handled: u64,
}

impl Sum {
    fn value(&self) -> (u64, u64) {
        (self.count, self.positions)
    }
}

#[async_trait::async_trait]
impl Projection for Sum {
    fn name(&self) -> &str {
        "sum"
    }

    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        self.count += 1;
        self.positions += event.position.get();
        self.handled += 1;
        Ok(())
    }
}

/// The business day of the `n`th event: days go round a week, so occurred times do not follow the log.
fn occurred(n: u64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + (n % 7) as i64 * 86_400, 0).single().unwrap_or_default()
}

/// Appends batches of 10 events to a few streams until `stop` is set; returns how many appends it made.
fn keep_appending<S: EventStore + Clone + 'static>(
    store: S,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<u64, annals::Error>> {
    tokio::spawn(async move {
        let mut appends = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let stream = StreamId::new(format!("numbers-{}", appends % 3))?;
            let events = (0..10).map(|i| NewEvent::raw("N", "{}").with_occurred_at(occurred(appends * 10 + i)));
            store.append(&stream, ExpectedVersion::Any, events.collect()).await?;
            appends += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(appends)
    })
}

async fn as_of_on_a_running_projection_agrees_with_a_full_replay<S: EventStore + Clone + 'static>(
    store: S,
) -> TestResult {
    let projector = Projector::persisted(store.clone(), Sum::default).checkpoint_every(20).keep_history_every(100);
    let handle = projector.run().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let appender = keep_appending(store.clone(), Arc::clone(&stop));
    handle.wait_for(Position::new(500), Duration::from_secs(20)).await?;

    let live_before = handle.position();
    let head_before = store.head().await?;
    let mut asked = 0;
    for round in 0..12u64 {
        let head = store.head().await?;
        // By position: at the head (which the live projection may not have handled yet), and before.
        for bound in [head.get(), head.get() * 2 / 3, 250 + round * 7] {
            let saved = handle.checkpoint().get();
            let until = Until { position: Some(Position::new(bound)), ..Until::default() };
            let past = handle.as_of(until).await?;
            let full = replay(&store, Sum::default(), Start::Beginning, until).await?;
            assert_eq!(past.value(), full.value(), "as of position {bound}");
            assert_eq!(past.count, bound, "every event up to {bound}");
            if saved >= bound {
                // From the copy saved at the first checkpoint past the last multiple of 100 crossed.
                assert!(past.handled <= 200, "as of {bound} replayed {} events", past.handled);
            }
            asked += 1;
        }
        // By recorded time: that of an event somewhere in the log.
        let events: Vec<RecordedEvent> =
            store.read_log(ReadLog::from_start().until_position(head)).try_collect().await?;
        let Some(middle) = events.get(events.len() / 2) else { return Err("an empty log".into()) };
        let recorded = Until { recorded: Some(middle.recorded_at), ..Until::default() };
        let past = handle.as_of(recorded).await?;
        assert_eq!(past.value(), replay(&store, Sum::default(), Start::Beginning, recorded).await?.value());
        let by_hand = events.iter().filter(|e| e.recorded_at <= middle.recorded_at).count() as u64;
        assert_eq!(past.count, by_hand, "as of recorded {}", middle.recorded_at);
        // By business time, up to the head read above (appends go on), and with a recorded bound.
        let day = occurred(round);
        for until in [
            Until { occurred: Some(day), position: Some(head), ..Until::default() },
            Until { occurred: Some(day), recorded: Some(middle.recorded_at), ..Until::default() },
        ] {
            let past = handle.as_of(until).await?;
            assert_eq!(past.value(), replay(&store, Sum::default(), Start::Beginning, until).await?.value());
            asked += 1;
        }
        // A replay needs no lock on the live state: it completes while a reader holds it.
        let live = handle.read().await?;
        let past = tokio::time::timeout(Duration::from_secs(10), handle.as_of(Until::default())).await??;
        assert!(past.count >= live.count);
        drop(live);
    }
    assert_eq!(asked, 12 * 5);

    // The projection kept going while it was asked, and so did the appends.
    let (live_after, head_after) = (handle.position(), store.head().await?);
    assert!(live_after > live_before, "the live projection stood still at {live_after}");
    assert!(head_after > head_before, "no event came in meanwhile");

    stop.store(true, Ordering::Relaxed);
    let appends = appender.await??;
    let head = store.head().await?;
    assert_eq!(head.get(), appends * 10);
    handle.wait_for(head, Duration::from_secs(20)).await?;
    let full = replay(&store, Sum::default(), Start::Beginning, Until::default()).await?;
    assert_eq!(handle.read().await?.value(), full.value(), "the live projection was not disturbed");
    assert_eq!(full.count, head.get());
    handle.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn as_of_on_a_running_projection_agrees_with_a_full_replay_on_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    as_of_on_a_running_projection_agrees_with_a_full_replay(SledStore::open(dir.path())?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn as_of_on_a_running_projection_agrees_with_a_full_replay_in_memory() -> TestResult {
    as_of_on_a_running_projection_agrees_with_a_full_replay(MemoryStore::new()).await
}

/// An in-memory projector keeps no history: the handle replays from the projector's start, and a
/// handle kept after `stop` still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_replays_from_the_projectors_start_without_history_and_after_stop() -> TestResult {
    let store = MemoryStore::new();
    let stream = StreamId::new("numbers")?;
    for _ in 0..10 {
        store.append(&stream, ExpectedVersion::Any, (0..10).map(|_| NewEvent::raw("N", "{}")).collect()).await?;
    }
    let from_41 = Projector::in_memory(store.clone(), Sum::default).start_from(Start::Position(Position::new(41)));
    let handle = from_41.run().await?;
    handle.caught_up().await?;
    let kept = handle.clone();
    handle.stop().await?;
    let until = Until { position: Some(Position::new(60)), ..Until::default() };
    let past = kept.as_of(until).await?;
    assert_eq!((past.count, past.handled), (20, 20), "positions 41 to 60");
    Ok(())
}
