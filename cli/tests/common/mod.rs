//! Running the `annals` binary on stores built through the library.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use annals::{EventStore, ExpectedVersion, NewEvent, SledStore, StreamId};
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

/// The binary, without `ANNALS_STORE` from the environment.
pub fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_annals"));
    command.env_remove("ANNALS_STORE").stdin(Stdio::null());
    command
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
