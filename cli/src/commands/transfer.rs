//! `annals export jsonl` and `annals import jsonl`: a whole store as JSON lines and back.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};

use annals::{export_jsonl, export_jsonl_with_snapshots, import_jsonl, EventStore, Transfer};
use serde_json::json;

use super::is_stdio;
use crate::cli::{ExportJsonlArgs, ImportJsonlArgs};
use crate::failure::Failure;
use crate::output::Output;

pub(super) async fn export(store: &dyn EventStore, args: ExportJsonlArgs, out: &mut Output) -> Result<(), Failure> {
    if is_stdio(&args.file) {
        let transfer = {
            let stdout = io::stdout();
            let writer = BufWriter::new(stdout.lock());
            if args.snapshots {
                export_jsonl_with_snapshots(store, writer).await?
            } else {
                export_jsonl(store, writer).await?
            }
        };
        // Standard output holds the export: the summary goes to standard error.
        let mut stderr = io::stderr().lock();
        if out.json() {
            serde_json::to_writer(&mut stderr, &summary_json(&transfer)).map_err(io::Error::from)?;
            writeln!(stderr)?;
        } else {
            writeln!(stderr, "exported {}", describe(&transfer))?;
        }
        return Ok(());
    }
    let path = &args.file;
    let file = File::create(path).map_err(|e| Failure::io(format!("cannot create {}", path.display()), e))?;
    let mut writer = BufWriter::new(file);
    let transfer = if args.snapshots {
        export_jsonl_with_snapshots(store, &mut writer).await?
    } else {
        export_jsonl(store, &mut writer).await?
    };
    let file =
        writer.into_inner().map_err(|e| Failure::io(format!("cannot write {}", path.display()), e.into_error()))?;
    file.sync_all().map_err(|e| Failure::io(format!("cannot write {}", path.display()), e))?;
    if out.json() {
        out.json_line(&summary_json(&transfer))?;
    } else {
        out.line(format!("exported {} to {}", describe(&transfer), path.display()))?;
    }
    Ok(())
}

pub(super) async fn import(store: &dyn EventStore, args: ImportJsonlArgs, out: &mut Output) -> Result<(), Failure> {
    let transfer = if is_stdio(&args.file) {
        import_jsonl(store, io::stdin().lock()).await?
    } else {
        let path = &args.file;
        let file = File::open(path).map_err(|e| Failure::io(format!("cannot open {}", path.display()), e))?;
        import_jsonl(store, BufReader::new(file)).await?
    };
    if out.json() {
        out.json_line(&summary_json(&transfer))?;
    } else {
        out.line(format!("imported {}", describe(&transfer)))?;
    }
    Ok(())
}

fn describe(transfer: &Transfer) -> String {
    let mut text = format!("{} event(s) and {} checkpoint(s)", transfer.events, transfer.checkpoints);
    if transfer.snapshots > 0 || transfer.snapshots_left_out > 0 {
        text.push_str(&format!(", {} snapshot(s)", transfer.snapshots));
    }
    if transfer.snapshots_left_out > 0 {
        text.push_str(&format!(" ({} left out: past their stream's version)", transfer.snapshots_left_out));
    }
    text
}

/// The counts, with the snapshot ones only when snapshots were carried.
fn summary_json(transfer: &Transfer) -> serde_json::Value {
    let mut summary = json!({ "events": transfer.events, "checkpoints": transfer.checkpoints });
    if transfer.snapshots > 0 || transfer.snapshots_left_out > 0 {
        summary["snapshots"] = json!(transfer.snapshots);
        summary["snapshots_left_out"] = json!(transfer.snapshots_left_out);
    }
    summary
}
