//! `annals verify`: the library's full check of the store, with exit code 2 for damage.

use annals::SledStore;
use serde_json::json;

use crate::failure::Failure;
use crate::output::{table, Output};

/// Runs [`SledStore::verify`] (it blocks: no runtime needed) and prints its report.
pub(super) fn run(store: &SledStore, out: &mut Output) -> Result<(), Failure> {
    let report = store.verify()?;
    if out.json() {
        let problems: Vec<_> =
            report.problems.iter().map(|p| json!({ "position": p.position.get(), "what": p.what })).collect();
        out.json_line(&json!({
            "ok": report.is_ok(),
            "events": report.events,
            "records": report.records,
            "streams": report.streams,
            "index_entries": report.index_entries,
            "checkpoints": report.checkpoints,
            "snapshots": report.snapshots,
            "problems": problems,
        }))?;
    } else {
        let rows = [
            ("events:", report.events),
            ("log records:", report.records),
            ("streams:", report.streams),
            ("index entries:", report.index_entries),
            ("checkpoints:", report.checkpoints),
            ("snapshots:", report.snapshots),
        ]
        .map(|(name, n)| vec![name.to_owned(), n.to_string()]);
        for line in table(&rows) {
            out.line(line)?;
        }
        if report.is_ok() {
            out.line("no problems found")?;
        } else {
            out.line(format!("{} problem(s):", report.problems.len()))?;
            for problem in &report.problems {
                out.line(format!("  {problem}"))?;
            }
        }
    }
    if report.is_ok() {
        Ok(())
    } else {
        Err(Failure::Damaged { problems: report.problems.len() })
    }
}
