//! `annals copy`: a whole store into an empty one, of either kind, through `annals::copy_store`.

use std::time::Duration;

use annals::{copy_store, CopyReport, Position};
use serde_json::json;

use super::runtime;
use crate::cli::CopyArgs;
use crate::failure::Failure;
use crate::output::Output;
use crate::store::{Create, Location};

/// Opens the source (it must exist), then the target (created if missing), and copies. Sled sides
/// open before the runtime starts, PostgreSQL sides inside it.
pub(super) fn run(args: &CopyArgs, schema: &str, connect_timeout: Duration, out: &mut Output) -> Result<(), Failure> {
    let from_schema = args.from_schema.as_deref().unwrap_or(schema);
    let to_schema = args.to_schema.as_deref().unwrap_or(schema);
    // The source first: a source that does not open creates no target.
    let from = Location::new(&args.from, from_schema, connect_timeout).prepare(Create::No)?;
    let to = Location::new(&args.to, to_schema, connect_timeout);
    runtime()?.block_on(async {
        let from = from.open().await?;
        let target = to.describe();
        let to = to.open(Create::IfMissing).await?;
        // `copy_store` refuses it too, in the library's words; these name the target.
        let head = to.events().head().await?;
        if head != Position::ZERO {
            return Err(Failure::Usage(format!(
                "the target {target} holds events (up to position {head}): copy only into an empty store"
            )));
        }
        let report = copy_store(from.events(), to.events()).await?;
        print_report(&report, out)
    })
}

fn print_report(report: &CopyReport, out: &mut Output) -> Result<(), Failure> {
    if out.json() {
        out.json_line(&json!({
            "events": report.events,
            "checkpoints": report.checkpoints,
            "snapshots": report.snapshots,
        }))?;
    } else {
        out.line(format!(
            "copied {} event(s), {} checkpoint(s) and {} snapshot(s)",
            report.events, report.checkpoints, report.snapshots
        ))?;
    }
    Ok(())
}
