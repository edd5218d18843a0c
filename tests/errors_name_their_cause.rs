//! Errors say what failed and where: opening a path that is not a store directory names the path and
//! the cause (not "storage failure"), and a consumer whose handler panicked stops with
//! `Error::HandlerPanicked` naming the consumer and the panic's message (not a storage error).

#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use annals::{
    handler_fn, Error, EventStore, ExpectedVersion, HandlerError, MemoryStore, NewEvent, Phase, Projection, Projector,
    RecordedEvent, SledStore, StreamId, Subscription, SubscriptionConfig,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

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

async fn one_event(store: &MemoryStore) -> TestResult {
    let stream = StreamId::new("order-1")?;
    store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("Placed", "{}")]).await?;
    Ok(())
}

#[tokio::test]
async fn a_subscription_whose_handler_panics_stops_with_handler_panicked() -> TestResult {
    let store = MemoryStore::new();
    one_event(&store).await?;
    let handler = handler_fn(|_event: RecordedEvent, _phase: Phase| async move {
        if std::hint::black_box(true) {
            panic!("boom");
        }
        Ok::<(), HandlerError>(())
    });
    let subscription = Subscription::start(store.clone(), SubscriptionConfig::new("panicky"), handler).await?;
    // The worker ends on its own; give it time to reach the event.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = subscription.stop().await;
    assert!(
        matches!(&stopped, Err(Error::HandlerPanicked { consumer, message: Some(message) })
            if consumer == "panicky" && message == "boom"),
        "{stopped:?}"
    );
    Ok(())
}

struct Panicky;

#[async_trait::async_trait]
impl Projection for Panicky {
    fn name(&self) -> &str {
        "panicky-projection"
    }

    async fn handle(&mut self, _event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        panic!("{}", String::from("bad state"))
    }
}

#[tokio::test]
async fn a_projection_whose_handler_panics_stops_with_handler_panicked() -> TestResult {
    let store = MemoryStore::new();
    one_event(&store).await?;
    let projection = Projector::in_memory(store.clone(), || Panicky).run().await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = projection.stop().await;
    assert!(
        matches!(&stopped, Err(Error::HandlerPanicked { consumer, message: Some(message) })
            if consumer == "panicky-projection" && message == "bad state"),
        "{stopped:?}"
    );
    Ok(())
}
