//! A persisted projector keeping its history answers "as of" from the nearest saved copy of its state,
//! with the same answer as a replay from the start.
#![allow(missing_docs)]

use std::time::Duration;

use annals::{
    replay, EventStore, ExpectedVersion, HandlerError, NewEvent, Phase, Position, Projection, Projector, RecordedEvent,
    SledStore, Start, StreamId, Until,
};
use serde::{Deserialize, Serialize};

/// Counts events and sums their positions; `handled` (not saved) counts the calls of one instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Sum {
    count: u64,
    positions: u64,
    #[serde(skip)]
    handled: u64,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_starts_from_the_nearest_saved_state_and_agrees_with_a_full_replay(
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path())?;
    let stream = StreamId::new("numbers")?;
    for _ in 0..25 {
        let events = (0..100).map(|_| NewEvent::raw("N", "{}")).collect();
        store.append(&stream, ExpectedVersion::Any, events).await?;
    }
    let projector = || Projector::persisted(store.clone(), Sum::default).checkpoint_every(100).keep_history_every(500);
    let running = projector().run().await?;
    running.wait_for(Position::new(2_500), Duration::from_secs(10)).await?;
    running.stop().await?;
    let saved = store.list_checkpoints("projection-history/sum/v1/").await?;
    assert!(saved.len() >= 4, "a copy per multiple of 500 crossed: {saved:?}");

    for bound in [1, 499, 500, 1_234, 2_000, 2_499] {
        let until = Until { position: Some(Position::new(bound)), ..Until::default() };
        let fast = projector().as_of(until).await?;
        let full = replay(&store, Sum::default(), Start::Beginning, until).await?;
        assert_eq!((fast.count, fast.positions), (full.count, full.positions), "as of position {bound}");
        assert!(fast.handled <= 600, "as of {bound} replayed {} events, not from a saved copy", fast.handled);
    }
    Ok(())
}
