//! `subscriptions` lists a subscription run through the library, with its checkpoint, lag and
//! parked events, and `requeue` / `skip` change its parked events the way the library reads them.
#![allow(missing_docs)]

mod common;

use std::path::Path;
use std::time::Duration;

use annals::{
    handler_fn, EventStore, ExpectedVersion, HandlerError, NewEvent, OnFailure, Phase, Position, RecordedEvent,
    RetryPolicy, SledStore, StreamId, Subscription, SubscriptionConfig,
};
use common::{annals, small_store, TestResult};
use serde_json::json;

/// Runs the subscription `emails` over the small store with a handler that fails on `OrderPaid`
/// (position 3), so that it parks that event, then stops it and appends one more event (lag 1).
async fn emails_with_a_parked_event(dir: &Path) -> TestResult {
    small_store(dir).await?;
    let store = SledStore::open(dir)?;
    let handler = handler_fn(|event: RecordedEvent, _phase: Phase| async move {
        if event.event_type == "OrderPaid" {
            return Err::<(), HandlerError>("the mail server said no".into());
        }
        Ok(())
    });
    let config = SubscriptionConfig::new("emails").retry(RetryPolicy::never()).on_failure(OnFailure::Park);
    let running = Subscription::start(store.clone(), config, handler).await?;
    running.wait_for(Position::new(4), Duration::from_secs(10)).await?;
    running.stop().await?;
    store
        .append(&StreamId::new("order-3")?, ExpectedVersion::NoStream, vec![NewEvent::raw("OrderPlaced", "{}")])
        .await?;
    let parked = Subscription::parked(&store, "emails").await?;
    assert_eq!(parked.iter().map(|p| p.position.get()).collect::<Vec<_>>(), [3]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_lists_and_shows_a_subscription_with_its_parked_event() -> TestResult {
    let dir = tempfile::tempdir()?;
    emails_with_a_parked_event(dir.path()).await?;

    let list = annals(dir.path(), &["subscriptions", "--json"])?;
    assert_eq!(
        list.json_lines()?,
        [json!({ "name": "emails", "checkpoint": 4, "head": 5, "lag": 1, "parked": 1, "partitions": 1 })]
    );
    let text = annals(dir.path(), &["subscriptions"])?;
    assert_eq!(
        text.stdout.lines().collect::<Vec<_>>(),
        ["SUBSCRIPTION  CHECKPOINT  LAG  PARKED  PARTITIONS", "emails        4           1    1       1"]
    );

    let one = annals(dir.path(), &["subscriptions", "emails", "--json"])?.json()?;
    assert_eq!((&one["checkpoint"], &one["lag"]), (&json!(4), &json!(1)));
    assert_eq!(one["partitions"][0]["name"], "subscription/emails/0");
    let parked = &one["parked"][0];
    assert_eq!(
        (&parked["position"], &parked["stream"], &parked["event_type"]),
        (&json!(3), &json!("order-1"), &json!("OrderPaid"))
    );
    assert_eq!((&parked["error"], &parked["requeued"]), (&json!("the mail server said no"), &json!(false)));

    let text = annals(dir.path(), &["subscriptions", "emails"])?;
    assert!(text.stdout.contains("\n  lag:         1 event(s) behind the head at 5\n"), "{}", text.stdout);
    assert!(text.stdout.contains("\n  parked:      1\n"), "{}", text.stdout);
    assert!(text.stdout.contains("position 3: OrderPaid in order-1, 1 attempt(s)"), "{}", text.stdout);
    assert!(text.stdout.contains("error: the mail server said no"), "{}", text.stdout);

    let unknown = annals(dir.path(), &["subscriptions", "sms"])?;
    assert!(unknown.one_line_error(1).contains("no subscription \"sms\""));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_and_skip_change_the_parked_events() -> TestResult {
    let dir = tempfile::tempdir()?;
    emails_with_a_parked_event(dir.path()).await?;

    let nothing_there = annals(dir.path(), &["subscriptions", "emails", "requeue", "--position", "2"])?;
    assert!(nothing_there.one_line_error(1).contains("no parked event at position 2"));
    let requeued = annals(dir.path(), &["subscriptions", "emails", "requeue", "--position", "3", "--json"])?;
    assert_eq!(requeued.json()?, json!({ "name": "emails", "requeued": 1 }), "{requeued:?}");
    {
        let store = SledStore::open(dir.path())?;
        let parked = Subscription::parked(&store, "emails").await?;
        assert!(parked.len() == 1 && parked[0].requeued, "{parked:?}");
    }

    let skipped = annals(dir.path(), &["subscriptions", "emails", "skip", "--all"])?;
    assert_eq!(skipped.stdout, "skipped 1 parked event(s) of subscription emails\n", "{skipped:?}");
    let store = SledStore::open(dir.path())?;
    assert_eq!(Subscription::parked(&store, "emails").await?, []);
    assert_eq!(Subscription::checkpoint(&store, "emails").await?, Some(Position::new(4)));
    Ok(())
}
