//! What subscriptions and projections report through `tracing` and `metrics`: the names, units and
//! labels of `docs/observability.md`, in one place. Nothing here installs a subscriber or a recorder.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Once;
use std::time::Instant;

use futures_util::FutureExt;

use metrics::Unit;
use tracing::field::Empty;
use tracing::Span;

use crate::consumer::follow::{Batch, Phase};
use crate::error::{Error, Result};
use crate::position::Position;

/// The `kind` label of a subscription's metrics.
pub(crate) const SUBSCRIPTION: &str = "subscription";
/// The `kind` label of a projection's (or SQL projection's) metrics.
pub(crate) const PROJECTION: &str = "projection";

/// Describes every consumer metric (its unit and meaning) to the installed recorder, once per process.
pub(crate) fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        metrics::describe_gauge!("annals.consumer.position", Unit::Count, "every event up to here handled");
        metrics::describe_gauge!("annals.consumer.checkpoint", Unit::Count, "the last committed checkpoint");
        metrics::describe_gauge!("annals.consumer.lag", Unit::Count, "head minus position, in events");
        metrics::describe_histogram!("annals.consumer.batch.duration", Unit::Seconds, "handling one page of events");
        metrics::describe_histogram!(
            "annals.consumer.checkpoint.duration",
            Unit::Seconds,
            "committing one checkpoint write"
        );
        metrics::describe_counter!("annals.handler.errors", Unit::Count, "handler calls that failed (each attempt)");
        metrics::describe_counter!("annals.handler.retries", Unit::Count, "subscription retries after a failure");
        metrics::describe_gauge!(
            "annals.parked",
            Unit::Count,
            "events parked by a subscription's workers in this process, now"
        );
        metrics::describe_counter!("annals.parked.total", Unit::Count, "events parked since start");
        metrics::describe_gauge!(
            "annals.projection.rebuild.position",
            Unit::Count,
            "how far a running rebuild (shadow) has got"
        );
        metrics::describe_counter!("annals.projection.rebuilds", Unit::Count, "rebuilds swapped in");
        metrics::describe_gauge!(
            "annals.subscription.checkpoint_lag",
            Unit::Count,
            "head minus a subscription's saved checkpoint, from Subscription::record_saved_metrics"
        );
        metrics::describe_gauge!(
            "annals.subscription.parked",
            Unit::Count,
            "a subscription's saved parked events, from Subscription::record_saved_metrics"
        );
    });
}

/// Sets a consumer's position, checkpoint and lag gauges.
pub(crate) fn progress(consumer: &str, kind: &'static str, processed: Position, checkpoint: Position, head: Position) {
    let labels = [("consumer", consumer.to_owned()), ("kind", kind.to_owned())];
    metrics::gauge!("annals.consumer.position", &labels).set(processed.get() as f64);
    metrics::gauge!("annals.consumer.checkpoint", &labels).set(checkpoint.get() as f64);
    metrics::gauge!("annals.consumer.lag", &labels).set(head.get().saturating_sub(processed.get()) as f64);
}

/// The span of one page a consumer handles.
pub(crate) fn batch_span(consumer: &str, kind: &'static str, batch: &Batch) -> Span {
    let phase = match batch.phase {
        Phase::CatchUp => "catch-up",
        Phase::Live => "live",
    };
    let span = tracing::debug_span!(
        "annals.consumer.batch",
        annals.consumer = consumer,
        annals.consumer.kind = kind,
        annals.phase = phase,
        annals.position.first = Empty,
        annals.position.last = batch.through.get(),
        annals.events = batch.events.len(),
    );
    if let Some(first) = batch.events.first() {
        span.record("annals.position.first", first.position.get());
    }
    span
}

/// Records how long a page took, from `started`.
pub(crate) fn batch_done(consumer: &str, kind: &'static str, started: Instant) {
    metrics::histogram!("annals.consumer.batch.duration", "consumer" => consumer.to_owned(), "kind" => kind)
        .record(started.elapsed().as_secs_f64());
}

/// The span of one checkpoint write.
pub(crate) fn checkpoint_span(consumer: &str, position: Position) -> Span {
    tracing::debug_span!("annals.checkpoint.commit", annals.consumer = consumer, annals.position = position.get())
}

/// Records how long a checkpoint write took, from `started`.
pub(crate) fn checkpoint_done(consumer: &str, kind: &'static str, started: Instant) {
    metrics::histogram!("annals.consumer.checkpoint.duration", "consumer" => consumer.to_owned(), "kind" => kind)
        .record(started.elapsed().as_secs_f64());
}

/// Counts one failed handler call.
pub(crate) fn handler_failed(consumer: &str, kind: &'static str) {
    metrics::counter!("annals.handler.errors", "consumer" => consumer.to_owned(), "kind" => kind).increment(1);
}

/// Runs a consumer's task `work`, reporting the error that stops it, or its handler's panic (which
/// then goes on unwinding, so that joining the task sees it as before). `position` says how far the
/// consumer got.
pub(crate) async fn reporting_stop(
    consumer: &str,
    position: impl Fn() -> Position,
    work: impl Future<Output = Result<()>>,
) -> Result<()> {
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => {
            if let Err(error) = &result {
                stopped(consumer, position(), error);
            }
            result
        }
        Err(payload) => {
            let message = match payload.downcast_ref::<String>() {
                Some(message) => Some(message.clone()),
                None => payload.downcast_ref::<&str>().map(|message| (*message).to_owned()),
            };
            stopped(consumer, position(), &Error::HandlerPanicked { consumer: consumer.to_owned(), message });
            std::panic::resume_unwind(payload)
        }
    }
}

/// Reports a consumer that stopped on `error` at `position`.
pub(crate) fn stopped(consumer: &str, position: Position, error: &Error) {
    let position = match error {
        Error::Handler { position, .. } => *position,
        _ => position,
    };
    tracing::error!(
        annals.consumer = consumer,
        annals.position = position.get(),
        "error.type" = error.kind(),
        "error.message" = %error,
        "consumer stopped on an error"
    );
}

/// Reports a storage failure a consumer recovers from.
pub(crate) fn recovering(consumer: &str, error: &Error) {
    tracing::warn!(annals.consumer = consumer, "error.message" = %error, "consumer recovering from a storage failure");
}
