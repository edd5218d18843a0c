//! Consumers, repositories and rebuilds report what `docs/observability.md` promises: a handler's
//! failed attempts as `warn` events and counters, a parked event as an `error` event and a gauge that
//! follows the parked list, a stop as an `error` event, lag as a gauge, conflicts and cache use as
//! counters with the command's outcome on its span, and a rebuild as its span and counter.
//!
//! Consumers run on tokio tasks on other threads, so the capturing recorder and subscriber are
//! installed globally, once for this test binary; each test uses its own consumer names (labels).

#![allow(clippy::panic)] // failing the test with the unexpected outcome is the point

mod common;
#[path = "common/projections.rs"]
mod projections;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use annals::{
    handler_fn, CommandContext, CommandError, EventStore, ExpectedVersion, HandlerError, MemoryStore, NewEvent,
    OnFailure, Phase, Position, Projector, RecordedEvent, Repository, RetryPolicy, StreamId, Subscription,
    SubscriptionConfig, SubscriptionGroup,
};
use common::bank::{Account, AccountCommand, AccountError};
use common::counting::Counting;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------------
// A capturing recorder.

/// Every metric registered, by name and sorted labels (`name{k=v,k=v}`).
#[derive(Default)]
struct Metrics {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

fn key_of(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

fn metric_key(key: &Key) -> String {
    let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
    key_of(key.name(), &labels)
}

struct CapturingRecorder(Arc<Metrics>);

impl metrics::Recorder for CapturingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = lock(&self.0.counters);
        Counter::from_arc(Arc::clone(counters.entry(metric_key(key)).or_default()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut gauges = lock(&self.0.gauges);
        Gauge::from_arc(Arc::clone(gauges.entry(metric_key(key)).or_default()))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

// ---------------------------------------------------------------------------------------------------
// A capturing subscriber.

#[derive(Clone, Debug)]
struct CapturedSpan {
    name: &'static str,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
struct CapturedEvent {
    level: Level,
    fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Traces {
    spans: Mutex<Vec<CapturedSpan>>,
    events: Mutex<Vec<CapturedEvent>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

struct CapturingSubscriber(Arc<Traces>);

impl Subscriber for CapturingSubscriber {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attributes: &Attributes<'_>) -> Id {
        let mut fields = BTreeMap::new();
        attributes.record(&mut Fields(&mut fields));
        let mut spans = lock(&self.0.spans);
        spans.push(CapturedSpan { name: attributes.metadata().name(), fields });
        Id::from_u64(spans.len() as u64)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = lock(&self.0.spans);
        if let Some(captured) = usize::try_from(span.into_u64()).ok().and_then(|i| spans.get_mut(i - 1)) {
            values.record(&mut Fields(&mut captured.fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        lock(&self.0.events).push(CapturedEvent { level: *event.metadata().level(), fields });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The global recorder and subscriber, installed on first use.
fn capture() -> &'static (Arc<Metrics>, Arc<Traces>) {
    static CAPTURE: OnceLock<(Arc<Metrics>, Arc<Traces>)> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let metrics = Arc::new(Metrics::default());
        let traces = Arc::new(Traces::default());
        let installed = metrics::set_global_recorder(CapturingRecorder(Arc::clone(&metrics))).is_ok()
            && tracing::subscriber::set_global_default(CapturingSubscriber(Arc::clone(&traces))).is_ok();
        assert!(installed, "the capturing recorder and subscriber are the first installed");
        (metrics, traces)
    })
}

fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    lock(&capture().0.counters).get(&key_of(name, labels)).map_or(0, |c| c.load(Ordering::SeqCst))
}

/// A gauge's value, `None` when it was never set.
fn gauge(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    lock(&capture().0.gauges).get(&key_of(name, labels)).map(|g| f64::from_bits(g.load(Ordering::SeqCst)))
}

/// The events at `level` whose `annals.consumer` is `consumer`.
fn events(level: Level, consumer: &str) -> Vec<CapturedEvent> {
    lock(&capture().1.events)
        .iter()
        .filter(|e| e.level == level && e.fields.get("annals.consumer").is_some_and(|c| c == consumer))
        .cloned()
        .collect()
}

/// The spans named `name` whose field `field` is `value`.
fn spans(name: &str, field: &str, value: &str) -> Vec<CapturedSpan> {
    lock(&capture().1.spans)
        .iter()
        .filter(|s| s.name == name && s.fields.get(field).is_some_and(|v| v == value))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// Helpers.

async fn append_one(
    store: &MemoryStore,
    stream: &str,
    event_type: &str,
) -> Result<RecordedEvent, Box<dyn std::error::Error>> {
    let stream = StreamId::new(stream)?;
    let appended = store.append(&stream, ExpectedVersion::Any, vec![NewEvent::raw(event_type, "{}")]).await?;
    let chunk = store.read_log_chunk(appended.last_position, 1, &annals::LogFilter::all()).await?;
    chunk.events.into_iter().next().ok_or_else(|| "the appended event reads back".into())
}

/// A handler that fails its first `failures` calls, then succeeds.
fn failing(failures: u32) -> impl annals::Handler {
    let calls = Arc::new(AtomicU32::new(0));
    handler_fn(move |_event: RecordedEvent, _phase: Phase| {
        let calls = Arc::clone(&calls);
        async move {
            if calls.fetch_add(1, Ordering::SeqCst) < failures {
                return Err::<(), HandlerError>("the printer is on fire".into());
            }
            Ok(())
        }
    })
}

fn quick_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::attempts(attempts).backoff(Duration::from_millis(1), Duration::from_millis(1))
}

// ---------------------------------------------------------------------------------------------------
// Subscriptions.

#[tokio::test]
async fn each_failed_attempt_before_success_is_a_warning_and_counted() -> TestResult {
    capture();
    let store = MemoryStore::new();
    let event = append_one(&store, "order-1", "OrderPlaced").await?;
    let config = SubscriptionConfig::new("obs-retry").retry(quick_retries(3));
    let subscription = Subscription::start(store.clone(), config, failing(2)).await?;
    subscription.wait_for(event.position, WAIT).await?;

    let warnings = events(Level::WARN, "obs-retry");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    for (attempt, warning) in (1..).zip(&warnings) {
        assert_eq!(warning.fields.get("annals.position"), Some(&event.position.get().to_string()));
        assert_eq!(warning.fields.get("annals.event.id"), Some(&event.id.to_string()));
        assert_eq!(warning.fields.get("annals.event.type").map(String::as_str), Some("OrderPlaced"));
        assert_eq!(warning.fields.get("annals.attempt"), Some(&attempt.to_string()));
        assert_eq!(warning.fields.get("error.message").map(String::as_str), Some("the printer is on fire"));
    }
    assert_eq!(counter("annals.handler.errors", &[("consumer", "obs-retry"), ("kind", "subscription")]), 2);
    assert_eq!(counter("annals.handler.retries", &[("consumer", "obs-retry")]), 2);
    assert!(events(Level::ERROR, "obs-retry").is_empty());
    subscription.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_parked_event_is_an_error_and_the_parked_gauge_follows_the_list() -> TestResult {
    capture();
    let store = MemoryStore::new();
    let event = append_one(&store, "order-1", "OrderPlaced").await?;
    let config = SubscriptionConfig::new("obs-park").retry(quick_retries(2)).on_failure(OnFailure::Park);
    let subscription = Subscription::start(store.clone(), config, failing(u32::MAX)).await?;
    subscription.wait_for(event.position, WAIT).await?;

    let errors = events(Level::ERROR, "obs-park");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].fields.get("annals.event.id"), Some(&event.id.to_string()));
    assert_eq!(errors[0].fields.get("annals.position"), Some(&event.position.get().to_string()));
    assert_eq!(errors[0].fields.get("annals.attempts").map(String::as_str), Some("2"));
    assert_eq!(gauge("annals.parked", &[("consumer", "obs-park")]), Some(1.0));
    assert_eq!(counter("annals.parked.total", &[("consumer", "obs-park")]), 1);

    assert!(subscription.skip_parked(event.position).await?);
    assert_eq!(gauge("annals.parked", &[("consumer", "obs-park")]), Some(0.0));
    assert_eq!(counter("annals.parked.total", &[("consumer", "obs-park")]), 1);
    subscription.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_subscription_stopping_on_a_failure_is_an_error_naming_it() -> TestResult {
    capture();
    let store = MemoryStore::new();
    let event = append_one(&store, "order-1", "OrderPlaced").await?;
    let config = SubscriptionConfig::new("obs-stop").retry(quick_retries(1)).on_failure(OnFailure::Stop);
    let subscription = Subscription::start(store.clone(), config, failing(u32::MAX)).await?;
    // It stops on the first event, before it catches up.
    assert!(subscription.caught_up().await.is_err());
    let ended = subscription.stop().await;
    assert!(matches!(ended, Err(annals::Error::Handler { .. })), "{ended:?}");

    let errors = events(Level::ERROR, "obs-stop");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].fields.get("error.type").map(String::as_str), Some("Handler"));
    assert_eq!(errors[0].fields.get("annals.position"), Some(&event.position.get().to_string()));
    assert!(errors[0].fields.get("error.message").is_some_and(|m| m.contains("obs-stop")), "{errors:?}");
    Ok(())
}

#[tokio::test]
async fn a_handler_panic_is_an_error_naming_the_subscription() -> TestResult {
    capture();
    let store = MemoryStore::new();
    let event = append_one(&store, "order-1", "OrderPlaced").await?;
    let handler = handler_fn(|_event: RecordedEvent, _phase: Phase| async {
        panic!("the handler fell over");
        #[allow(unreachable_code)]
        Ok::<(), HandlerError>(())
    });
    let subscription = Subscription::start(store.clone(), SubscriptionConfig::new("obs-panic"), handler).await?;
    assert!(subscription.caught_up().await.is_err());
    let ended = subscription.stop().await;
    assert!(matches!(ended, Err(annals::Error::HandlerPanicked { .. })), "{ended:?}");

    let errors = events(Level::ERROR, "obs-panic");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].fields.get("error.type").map(String::as_str), Some("HandlerPanicked"));
    assert!(errors[0].fields.get("error.message").is_some_and(|m| m.contains("the handler fell over")), "{errors:?}");
    assert_eq!(errors[0].fields.get("annals.position"), Some(&(event.position.get() - 1).to_string()));
    Ok(())
}

#[tokio::test]
async fn lag_is_zero_when_caught_up_and_counts_what_was_appended_while_stopped() -> TestResult {
    capture();
    let labels = [("consumer", "obs-lag"), ("kind", "subscription")];
    let store = MemoryStore::new();
    let first = append_one(&store, "order-1", "OrderPlaced").await?;
    let config = || SubscriptionConfig::new("obs-lag");
    let subscription = Subscription::start(store.clone(), config(), failing(0)).await?;
    subscription.wait_for(first.position, WAIT).await?;
    assert_eq!(gauge("annals.consumer.lag", &labels), Some(0.0));
    assert_eq!(gauge("annals.consumer.position", &labels), Some(first.position.get() as f64));
    subscription.stop().await?;
    assert_eq!(gauge("annals.consumer.checkpoint", &labels), Some(first.position.get() as f64));

    for _ in 0..3 {
        append_one(&store, "order-2", "OrderPaid").await?;
    }
    let group = SubscriptionGroup::new(store.clone(), config()).await?;
    assert_eq!(gauge("annals.consumer.lag", &labels), Some(3.0));

    let worker = group.join(failing(0)).await?;
    worker.wait_for(Position::new(first.position.get() + 3), WAIT).await?;
    assert_eq!(gauge("annals.consumer.lag", &labels), Some(0.0));
    assert!(!spans("annals.consumer.batch", "annals.consumer", "obs-lag").is_empty());
    worker.stop().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Projections.

#[tokio::test]
async fn a_rebuild_has_its_span_and_is_counted_when_swapped_in() -> TestResult {
    capture();
    let store = MemoryStore::new();
    let appended = projections::append(&store, "order-1", "OrderPlaced", 3).await?;
    let handle = Projector::in_memory(store.clone(), || projections::Recorder::new("obs-rebuild")).run().await?;
    handle.wait_for(appended.last_position, WAIT).await?;
    assert_eq!(counter("annals.projection.rebuilds", &[("consumer", "obs-rebuild")]), 0);
    let labels = [("consumer", "obs-rebuild"), ("kind", "projection")];
    assert_eq!(gauge("annals.consumer.lag", &labels), Some(0.0));

    handle.rebuild().await?;
    assert_eq!(counter("annals.projection.rebuilds", &[("consumer", "obs-rebuild")]), 1);
    let rebuilds = spans("annals.projection.rebuild", "annals.consumer", "obs-rebuild");
    assert_eq!(rebuilds.len(), 1, "{rebuilds:?}");
    assert_eq!(rebuilds[0].fields.get("annals.position"), Some(&appended.last_position.get().to_string()));
    assert_eq!(spans("annals.projection.swap", "annals.consumer", "obs-rebuild").len(), 1);
    assert_eq!(
        gauge("annals.projection.rebuild.position", &[("consumer", "obs-rebuild")]),
        Some(appended.last_position.get() as f64)
    );
    handle.stop().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Repository.

fn open(owner: &str) -> AccountCommand {
    AccountCommand::Open { owner: owner.into() }
}

#[tokio::test]
async fn a_retried_conflict_is_counted_and_the_command_span_has_its_outcome() -> TestResult {
    capture();
    let store = Counting::new(MemoryStore::new());
    let repository = Repository::<Account, _>::new(store.clone());
    let context = CommandContext::new();
    repository.execute("obs-conflict", open("ada"), &context).await?;
    let conflicts_before = counter("annals.repository.conflicts", &[("aggregate", "account")]);
    store.interfere_once.store(true, Ordering::SeqCst);
    let committed = repository.execute("obs-conflict", AccountCommand::Deposit { amount_cents: 10 }, &context).await?;
    // Other tests of this binary use the same aggregate: count from before, and at least this one.
    assert!(counter("annals.repository.conflicts", &[("aggregate", "account")]) > conflicts_before);

    let commands = spans("annals.command", "annals.id", "obs-conflict");
    assert_eq!(commands.len(), 2, "{commands:?}");
    let last = committed.last_position().map(|p| p.get().to_string());
    assert_eq!(commands[1].fields.get("annals.aggregate").map(String::as_str), Some("account"));
    assert_eq!(commands[1].fields.get("annals.outcome").map(String::as_str), Some("ok"));
    assert_eq!(commands[1].fields.get("annals.retries").map(String::as_str), Some("1"));
    assert_eq!(commands[1].fields.get("annals.position.last"), last.as_ref());
    assert_eq!(commands[0].fields.get("annals.retries").map(String::as_str), Some("0"));

    let rejected_before = counter("annals.repository.commands", &[("aggregate", "account"), ("outcome", "rejected")]);
    let refused = repository.execute("obs-conflict", open("bob"), &context).await;
    assert!(matches!(refused, Err(CommandError::Rejected(AccountError::AlreadyOpen))), "{refused:?}");
    let rejected = spans("annals.command", "annals.id", "obs-conflict");
    assert_eq!(rejected.get(2).and_then(|s| s.fields.get("annals.outcome")).map(String::as_str), Some("rejected"));
    assert!(
        counter("annals.repository.commands", &[("aggregate", "account"), ("outcome", "rejected")]) > rejected_before
    );
    Ok(())
}

#[tokio::test]
async fn cache_hits_and_misses_are_counted() -> TestResult {
    capture();
    let labels = |result| [("aggregate", "cached"), ("result", result)];
    let repository = Repository::<Cached, _>::new(MemoryStore::new()).with_cache(8);
    let context = CommandContext::new();
    // Loads the empty stream (a miss), then caches what it wrote.
    repository.execute("c1", (), &context).await?;
    assert_eq!(
        (counter("annals.repository.cache", &labels("hit")), counter("annals.repository.cache", &labels("miss"))),
        (0, 1)
    );
    // The stream has not moved: a hit.
    repository.execute("c1", (), &context).await?;
    assert_eq!(
        (counter("annals.repository.cache", &labels("hit")), counter("annals.repository.cache", &labels("miss"))),
        (1, 1)
    );
    // Another aggregate: a miss.
    repository.load("c2").await?;
    assert_eq!(
        (counter("annals.repository.cache", &labels("hit")), counter("annals.repository.cache", &labels("miss"))),
        (1, 2)
    );
    assert_eq!(counter("annals.repository.commands", &[("aggregate", "cached"), ("outcome", "ok")]), 2);
    Ok(())
}

/// An aggregate of its own, so that no other test of this binary counts under its label.
#[derive(Clone, Debug, Default)]
struct Cached {
    touched: u64,
}

#[derive(annals::Event, Clone, Debug, PartialEq)]
enum CachedEvent {
    Touched,
}

impl annals::Aggregate for Cached {
    const TYPE: &'static str = "cached";
    type Event = CachedEvent;
    type Command = ();
    type Error = std::convert::Infallible;

    fn apply(&mut self, _event: &CachedEvent) {
        self.touched += 1;
    }

    fn handle(&self, _command: ()) -> Result<Vec<CachedEvent>, Self::Error> {
        Ok(vec![CachedEvent::Touched])
    }
}
