//! Running the `annals` binary on stores built through the library, sled and PostgreSQL (the test
//! binary's cluster from `annals-testkit`, a fresh schema per store).
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use annals::{
    handler_fn, Checkpoint, CheckpointWrite, EventStore, ExpectedVersion, HandlerError, NewEvent, OnFailure, Phase,
    Position, RecordedEvent, RetryPolicy, SledStore, Snapshot, StreamId, Subscription, SubscriptionConfig, Version,
};
use chrono::{DateTime, Utc};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// The stdout as JSON lines, each parsed.
    pub fn json_lines(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        self.stdout.lines().map(serde_json::from_str).collect()
    }

    /// The stdout as one JSON document.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.stdout)
    }

    /// Asserts the run failed with exit code `code` and exactly one line on stderr starting with
    /// `error: `, and returns that line.
    pub fn one_line_error(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "{self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {self:?}");
        assert!(lines[0].starts_with("error: "), "{self:?}");
        lines[0]
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// The binary, without `ANNALS_STORE`, `ANNALS_SCHEMA` or `RUST_LOG` from the environment.
pub fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_annals"));
    command.env_remove("ANNALS_STORE").env_remove("ANNALS_SCHEMA").env_remove("RUST_LOG").stdin(Stdio::null());
    command
}

/// Runs `annals --store URL --schema SCHEMA ARGS...`.
pub fn annals_pg(url: &str, schema: &str, args: &[&str]) -> std::io::Result<Run> {
    let mut command = command();
    command.args(["--store", url, "--schema", schema]).args(args);
    Ok(command.output()?.into())
}

/// The URL of the test binary's PostgreSQL cluster. Without one the test fails, saying why.
pub fn pg_url() -> Result<String, Box<dyn std::error::Error>> {
    let cluster = annals_testkit::shared().map_err(|e| format!("no PostgreSQL cluster for the test: {e}"))?;
    Ok(cluster.url())
}

/// A schema no other test (of this or another test binary) uses.
pub fn fresh_schema() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("cli{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Opens the PostgreSQL store in `schema` through the library (created if missing).
pub async fn open_pg(url: &str, schema: &str) -> Result<annals::PostgresStore, annals::Error> {
    annals::PostgresConfig::new(url).schema(schema).pool_size(2).open().await
}

/// Every snapshot of every stream of `store`, walking down from each stream's newest.
pub async fn all_snapshots<S: EventStore + ?Sized>(store: &S) -> Result<Vec<Snapshot>, annals::Error> {
    let mut found = Vec::new();
    for (stream, _) in store.list_streams("").await? {
        let mut at = Some(Version::MAX);
        while let Some(version) = at {
            let Some(snapshot) = store.load_snapshot(&stream, version).await? else { break };
            at = snapshot.version.get().checked_sub(1).map(Version::new);
            found.push(snapshot);
        }
    }
    Ok(found)
}

/// Runs `annals --store DIR ARGS...`.
pub fn annals(store: &Path, args: &[&str]) -> std::io::Result<Run> {
    let mut command = command();
    command.arg("--store").arg(store).args(args);
    Ok(command.output()?.into())
}

pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).map(|t| t.to_utc()).unwrap_or_default()
}

/// Four events in three streams, then the store is closed:
/// 1 order-1 OrderPlaced (occurred 2013-01-10, correlation and a header), 2 order-2 OrderPlaced
/// (occurred 2013-03-01), 3 order-1 OrderPaid (occurred 2013-02-01), 4 customer-1 CustomerJoined
/// (occurred 2012-12-24).
pub async fn small_store(dir: &Path) -> TestResult {
    let store = SledStore::open(dir)?;
    let (order1, order2, customer) =
        (StreamId::new("order-1")?, StreamId::new("order-2")?, StreamId::new("customer-1")?);
    let placed = NewEvent::json("OrderPlaced", &serde_json::json!({ "item": "book", "total": 1250 }))?
        .with_occurred_at(at("2013-01-10T09:00:00Z"))
        .with_correlation_id("checkout-19")
        .with_header("user", "ada");
    store.append(&order1, ExpectedVersion::NoStream, vec![placed]).await?;
    let placed = NewEvent::json("OrderPlaced", &serde_json::json!({ "item": "pen", "total": 300 }))?
        .with_occurred_at(at("2013-03-01T12:00:00Z"));
    store.append(&order2, ExpectedVersion::NoStream, vec![placed]).await?;
    let paid = NewEvent::json("OrderPaid", &serde_json::json!({ "amount": 1250 }))?
        .with_occurred_at(at("2013-02-01T00:00:00Z"));
    store.append(&order1, ExpectedVersion::Exact(annals::Version::new(1)), vec![paid]).await?;
    let joined = NewEvent::json("CustomerJoined", &serde_json::json!({ "name": "Ada" }))?
        .with_occurred_at(at("2012-12-24T00:00:00Z"));
    store.append(&customer, ExpectedVersion::NoStream, vec![joined]).await?;
    Ok(())
}

/// The small store, then something for every command to show: the subscription `emails` parked
/// `OrderPaid` (position 3) and stopped at 4, a projection checkpoint with state at 4, snapshots of
/// `order-1` at versions 1 and 2, then one more event (position 5, `order-3`), so the subscription
/// lags by 1. Needs a multi-threaded runtime (the subscription runs on it).
pub async fn store_with_everything(dir: &Path) -> TestResult {
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
    let totals = Checkpoint::new("projection/totals", Position::new(4)).with_state(r#"{"sum":1550}"#);
    store.save_checkpoints(vec![CheckpointWrite::Save(totals)]).await?;
    let order = StreamId::new("order-1")?;
    for version in [1, 2] {
        let state = format!(r#"{{"version":{version}}}"#);
        store.save_snapshot(Snapshot::new(order.clone(), Version::new(version), 1, state)).await?;
    }
    let placed =
        NewEvent::raw("OrderPlaced", r#"{"item":"ink","total":90}"#).with_occurred_at(at("2013-04-01T00:00:00Z"));
    store.append(&StreamId::new("order-3")?, ExpectedVersion::NoStream, vec![placed]).await?;
    Ok(())
}
