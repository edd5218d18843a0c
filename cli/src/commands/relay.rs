//! `annals relay`: the relay out to a Kafka or Pulsar topic, run in the foreground with its
//! progress until Ctrl-C or SIGTERM (or until caught up); the relays saved in a store; the records
//! a relay in parked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::relay::{
    KafkaInbound, KafkaSink, KafkaSinkConfig, PulsarSink, PulsarSinkConfig, Relay, RelayConfig, RelayState,
    RelayStatus, Sink,
};
use annals::{EventStore, HeadWatch, Position};
use serde_json::json;

use crate::cli::{RelayKafkaArgs, RelayParkedArgs, RelayPulsarArgs, RelayRunArgs};
use crate::failure::Failure;
use crate::output::{self, table, Output};
use crate::signals::Interrupts;
use crate::store::OpenStore;

/// How often the relay's status is looked at (to stop as soon as it is caught up).
const POLL: Duration = Duration::from_millis(100);
/// How often its progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// `relay kafka`: checks the broker (a warning at most), then runs the relay.
pub(super) async fn kafka(
    open: &OpenStore,
    args: RelayKafkaArgs,
    connect_timeout: Duration,
    out: &mut Output,
) -> Result<(), Failure> {
    let mut config = KafkaSinkConfig::new(args.brokers, args.topic.clone());
    for (key, value) in args.options {
        config = config.option(key, value);
    }
    let sink = KafkaSink::new(config)?;
    if let Err(error) = sink.check(connect_timeout).await {
        warn(&format!("{error}; starting anyway: the relay retries with backoff until it gets through"));
    }
    let name = args.run.name.clone().unwrap_or_else(|| format!("kafka-{}", args.topic));
    run(open, sink, name, args.run, out).await
}

/// `relay pulsar`: runs the relay (the sink connects when it first publishes).
pub(super) async fn pulsar(
    open: &OpenStore,
    args: RelayPulsarArgs,
    connect_timeout: Duration,
    out: &mut Output,
) -> Result<(), Failure> {
    let config = PulsarSinkConfig::new(args.url, args.topic.clone()).connect_timeout(connect_timeout);
    let sink = PulsarSink::new(config)?;
    let name = args.run.name.clone().unwrap_or_else(|| format!("pulsar-{}", args.topic));
    run(open, sink, name, args.run, out).await
}

/// Why the foreground relay ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// `--until-caught-up`, and the checkpoint reached the head as of the start.
    CaughtUp,
    /// The relay stopped by itself (on an error that cannot be retried).
    Stopped,
}

/// Runs the relay named `name` to `sink` on the store, printing its progress about once a second,
/// until it is interrupted, caught up (with `--until-caught-up`) or stopped on an error; then stops
/// it and prints a summary.
async fn run<K: Sink>(
    open: &OpenStore,
    sink: K,
    name: String,
    args: RelayRunArgs,
    out: &mut Output,
) -> Result<(), Failure> {
    // Listen before anything starts, so that an early Ctrl-C stops the relay cleanly too.
    let mut interrupts = Interrupts::listen()?;
    let store = open.shared();
    let destination = sink.describe();
    let saved = Relay::checkpoint(&*store, &name).await?.unwrap_or(Position::ZERO);
    let start_head = store.head().await?;
    let heads = store.watch_head();
    let batch = usize::try_from(args.batch).unwrap_or(usize::MAX);
    let config = RelayConfig::new(name.clone()).filter(args.filter.filter()).batch_size(batch);
    let relay = Relay::start(Arc::clone(&store), config, sink).await?;
    if out.json() {
        out.json_line(&json!({
            "type": "start",
            "relay": name,
            "destination": destination,
            "checkpoint": saved.get(),
            "head": start_head.get(),
        }))?;
    } else {
        out.line(format!("relay {name} to {destination}: from checkpoint {saved}, head {start_head}"))?;
    }
    out.flush()?;

    let mut ticks = tokio::time::interval(POLL);
    let mut printed: Option<Instant> = None;
    let (end, last) = loop {
        tokio::select! {
            _ = ticks.tick() => {}
            interrupted = interrupts.next() => {
                interrupted.map_err(|e| Failure::io("cannot listen for Ctrl-C and SIGTERM", e))?;
                break (End::Interrupted, relay.status());
            }
        }
        let status = relay.status();
        if matches!(status.state, RelayState::Stopped { .. }) {
            break (End::Stopped, status);
        }
        if args.until_caught_up && status.checkpoint >= start_head {
            break (End::CaughtUp, status);
        }
        if printed.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
            progress(&status, saved, &heads, out)?;
            printed = Some(Instant::now());
        }
    };
    let stopped = relay.stop().await;
    // A page acknowledged while the relay was being stopped moved the saved checkpoint past the
    // last status: the store has the final word.
    let checkpoint = Relay::checkpoint(&*store, &name).await?.unwrap_or(Position::ZERO).max(last.checkpoint);
    let summary = Summary { name: &name, destination: &destination, end, last: &last, checkpoint, heads: &heads };
    summary.print(stopped.as_ref().err().map(ToString::to_string), out)?;
    out.flush()?;
    stopped.map_err(Failure::from)
}

/// The store's head: the newest of what the relay last saw and what the store's watch says now
/// (on PostgreSQL it moves as other processes commit).
fn head(status: &RelayStatus, heads: &HeadWatch) -> Position {
    status.head.max(heads.current())
}

/// One progress line.
fn progress(status: &RelayStatus, saved: Position, heads: &HeadWatch, out: &mut Output) -> Result<(), Failure> {
    // While it starts, the relay has not loaded its checkpoint yet: show the saved one.
    let checkpoint = status.checkpoint.max(saved);
    let head = head(status, heads);
    let lag = head.get().saturating_sub(checkpoint.get());
    let (state, error) = match &status.state {
        RelayState::Starting => ("starting", None),
        RelayState::Publishing => ("publishing", None),
        RelayState::CaughtUp => ("caught_up", None),
        RelayState::Retrying { error, .. } => ("retrying", Some(error.as_str())),
        RelayState::Stopped { error } => ("stopped", error.as_deref()),
        RelayState::Standby => ("standby", None),
        _ => ("unknown", None),
    };
    if out.json() {
        let mut line = json!({
            "type": "progress",
            "state": state,
            "published": status.published,
            "checkpoint": checkpoint.get(),
            "head": head.get(),
            "lag": lag,
            "failures": status.failures,
            "error": error,
        });
        if let RelayState::Retrying { attempt, next_in, .. } = &status.state {
            line["attempt"] = json!(attempt);
            line["retry_in_ms"] = json!(u64::try_from(next_in.as_millis()).unwrap_or(u64::MAX));
        }
        out.json_line(&line)?;
    } else {
        let mut line = format!(
            "{}: published {}, checkpoint {checkpoint}, head {head}, lag {lag}",
            state.replace('_', " "),
            status.published
        );
        if let RelayState::Retrying { attempt, next_in, error } = &status.state {
            line.push_str(&format!("; attempt {attempt} failed, next in {next_in:?}: {}", one_line(error)));
        } else if let Some(error) = error {
            line.push_str(&format!("; error: {}", one_line(error)));
        }
        out.line(line)?;
    }
    Ok(out.flush()?)
}

/// What the relay did, for the last line.
struct Summary<'a> {
    name: &'a str,
    destination: &'a str,
    end: End,
    last: &'a RelayStatus,
    checkpoint: Position,
    heads: &'a HeadWatch,
}

impl Summary<'_> {
    fn print(&self, error: Option<String>, out: &mut Output) -> Result<(), Failure> {
        let head = head(self.last, self.heads).max(self.checkpoint);
        let lag = head.get().saturating_sub(self.checkpoint.get());
        let (reason, why) = match (self.end, &error) {
            (_, Some(_)) => ("error", "stopped on an error"),
            (End::Interrupted, None) => ("interrupted", "stopped on request"),
            (End::CaughtUp, None) => ("caught_up", "caught up"),
            (End::Stopped, None) => ("stopped", "stopped"),
        };
        let published = self.last.published;
        if out.json() {
            out.json_line(&json!({
                "type": "summary",
                "relay": self.name,
                "destination": self.destination,
                "reason": reason,
                "published": published,
                "checkpoint": self.checkpoint.get(),
                "head": head.get(),
                "lag": lag,
                "failures": self.last.failures,
                "error": error,
            }))?;
            return Ok(());
        }
        let failures = self.last.failures;
        Ok(out.line(format!(
            "relay {} {why}: published {published} event(s), checkpoint {}, head {head}, lag {lag}, \
             {failures} failed attempt(s)",
            self.name, self.checkpoint
        ))?)
    }
}

/// `relay status`: every relay saved in the store.
pub(super) async fn status(store: &dyn EventStore, out: &mut Output) -> Result<(), Failure> {
    let head = store.head().await?;
    let relays = Relay::list(store).await?;
    let mut rows = vec![["RELAY", "CHECKPOINT", "LAG", "DESTINATION"].map(str::to_owned).to_vec()];
    for (name, checkpoint, destination) in &relays {
        let lag = head.get().saturating_sub(checkpoint.get());
        if out.json() {
            out.json_line(&json!({
                "name": name,
                "checkpoint": checkpoint.get(),
                "head": head.get(),
                "lag": lag,
                "destination": destination,
            }))?;
        }
        rows.push(vec![name.clone(), checkpoint.to_string(), lag.to_string(), destination.clone()]);
    }
    if out.json() {
        return Ok(());
    }
    if relays.is_empty() {
        return Ok(out.line("(no relays)")?);
    }
    for line in table(&rows) {
        out.line(line)?;
    }
    Ok(())
}

/// `relay parked NAME`: the records a relay in parked, oldest first.
pub(super) async fn parked(store: &dyn EventStore, args: RelayParkedArgs, out: &mut Output) -> Result<(), Failure> {
    let parked = KafkaInbound::parked(store, &args.name).await?;
    if out.json() {
        for record in &parked {
            out.json_line(record)?;
        }
        return Ok(());
    }
    if parked.is_empty() {
        return Ok(out.line(format!("(no parked records for relay {})", args.name))?);
    }
    for record in &parked {
        out.line(format!(
            "{} partition {} offset {}, parked {}",
            record.topic,
            record.partition,
            record.offset,
            output::time(record.parked_at)
        ))?;
        let absent = || "(none)".to_owned();
        out.line(format!("  reason:  {}", one_line(&record.reason)))?;
        out.line(format!("  key:     {}", record.key.clone().unwrap_or_else(absent)))?;
        out.line(format!("  value:   {}", record.value.clone().unwrap_or_else(absent)))?;
        for (key, value) in &record.headers {
            out.line(format!("  header:  {key}={}", value.clone().unwrap_or_else(absent)))?;
        }
    }
    Ok(())
}

fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}

/// A warning on standard error (standard output is for progress).
fn warn(message: &str) {
    use std::io::Write as _;
    // A warning that cannot be written is not worth stopping the relay for.
    let _ = writeln!(std::io::stderr().lock(), "warning: {}", one_line(message));
}
