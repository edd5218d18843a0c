//! Errors say what failed and where: opening a path that is not a store directory names the path and
//! the cause (not "storage failure"), and a consumer whose handler panicked stops with
//! `Error::HandlerPanicked` naming the consumer and the panic's message (not a storage error), its
//! checkpoint before the event, which a restart delivers again.

#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::{
    handler_fn, Error, EventStore, ExpectedVersion, HandlerError, MemoryStore, NewEvent, Phase, Position, Projection,
    Projector, RecordedEvent, SledStore, StreamId, Subscription, SubscriptionConfig,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How long a wait may take before the test gives up (never a timing assertion).
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn opening_a_regular_file_names_the_path_and_the_cause() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("not-a-store");
    std::fs::write(&file, b"hello")?;
    let opened = SledStore::open(&file);
    let Err(error @ Error::CannotOpen { .. }) = opened else {
        panic!("expected CannotOpen, got {opened:?}");
    };
    assert!(matches!(&error, Error::CannotOpen { path, .. } if *path == file));
    assert!(error.to_string().contains("not-a-store"), "{error}");
    let cause = std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default();
    assert!(cause.contains("not a directory"), "{cause}");
    assert_eq!(std::fs::read(&file)?, b"hello", "the file is left as it was");
    Ok(())
}

#[test]
fn a_store_below_a_regular_file_cannot_be_created_and_says_where() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("file");
    std::fs::write(&file, b"")?;
    let inside = file.join("store");
    let opened = SledStore::open(&inside);
    assert!(matches!(&opened, Err(Error::CannotOpen { path, .. }) if *path == inside), "{opened:?}");
    Ok(())
}

/// Two events, at positions 1 and 2.
async fn two_events(store: &MemoryStore) -> TestResult {
    let stream = StreamId::new("order-1")?;
    let events = vec![NewEvent::raw("Placed", "{}"), NewEvent::raw("Paid", "{}")];
    store.append(&stream, ExpectedVersion::Any, events).await?;
    Ok(())
}

/// The position at which the consumers below panic.
const PANICS_AT: Position = Position::new(2);

#[tokio::test]
async fn a_subscription_whose_handler_panics_stops_with_handler_panicked() -> TestResult {
    let store = MemoryStore::new();
    two_events(&store).await?;
    let handler = handler_fn(|event: RecordedEvent, _phase: Phase| async move {
        if event.position == PANICS_AT {
            panic!("boom");
        }
        Ok::<(), HandlerError>(())
    });
    let config = SubscriptionConfig::new("panicky").checkpoint_every(1);
    let subscription = Subscription::start(store.clone(), config, handler).await?;
    // The worker ends on its own at the panic: a wait answers that it stopped.
    let waited = subscription.wait_for(PANICS_AT, WAIT).await;
    assert!(matches!(&waited, Err(Error::Consumer { .. })), "{waited:?}");
    let stopped = subscription.stop().await;
    assert!(
        matches!(&stopped, Err(Error::HandlerPanicked { consumer, message: Some(message) })
            if consumer == "panicky" && message == "boom"),
        "{stopped:?}"
    );
    // Committed after every event (`checkpoint_every(1)`), yet not past the panicking one: a restart
    // delivers it again.
    let checkpoint = Subscription::checkpoint(&store, "panicky").await?;
    assert_eq!(checkpoint, Some(Position::FIRST), "the checkpoint is where the last commit left it");
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&delivered);
    let handler = handler_fn(move |event: RecordedEvent, _phase: Phase| {
        let recorded = Arc::clone(&recorded);
        async move {
            recorded.lock().map_err(|_| "poisoned")?.push(event.position);
            Ok::<(), HandlerError>(())
        }
    });
    let restarted = Subscription::start(store.clone(), SubscriptionConfig::new("panicky"), handler).await?;
    restarted.wait_for(PANICS_AT, WAIT).await?;
    restarted.stop().await?;
    let delivered = delivered.lock().map_err(|_| "poisoned")?.clone();
    assert!(delivered.contains(&PANICS_AT), "the restart did not deliver the event again: {delivered:?}");
    Ok(())
}

/// A checkpointed projection that panics at [`PANICS_AT`] when told to, and notes what it handled.
#[derive(Default)]
struct Panicky {
    panics: bool,
    handled: Vec<Position>,
}

#[async_trait::async_trait]
impl Projection for Panicky {
    fn name(&self) -> &str {
        "panicky-projection"
    }

    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        if self.panics && event.position == PANICS_AT {
            panic!("{}", String::from("bad state"))
        }
        self.handled.push(event.position);
        Ok(())
    }
}

#[tokio::test]
async fn a_projection_whose_handler_panics_stops_with_handler_panicked() -> TestResult {
    let store = MemoryStore::new();
    two_events(&store).await?;
    let projection = Projector::checkpointed(store.clone(), || Panicky { panics: true, ..Panicky::default() })
        .checkpoint_every(1)
        .run()
        .await?;
    let waited = projection.wait_for(PANICS_AT, WAIT).await;
    assert!(matches!(&waited, Err(Error::Consumer { .. })), "{waited:?}");
    let stopped = projection.stop().await;
    assert!(
        matches!(&stopped, Err(Error::HandlerPanicked { consumer, message: Some(message) })
            if consumer == "panicky-projection" && message == "bad state"),
        "{stopped:?}"
    );
    // Committed after every event (`checkpoint_every(1)`), yet not past the panicking one.
    let checkpoint = store.load_checkpoint("projection/panicky-projection").await?.map(|c| c.position);
    assert_eq!(checkpoint, Some(Position::FIRST), "the checkpoint is where the last commit left it");
    let restarted = Projector::checkpointed(store.clone(), Panicky::default).run().await?;
    restarted.wait_for(PANICS_AT, WAIT).await?;
    assert_eq!(restarted.read().await?.handled, [PANICS_AT], "the restart delivers the event again");
    restarted.stop().await?;
    Ok(())
}
