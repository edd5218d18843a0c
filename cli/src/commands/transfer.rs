//! `annals export jsonl` and `annals import jsonl`: a whole store as JSON lines and back.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};

use annals::{export_jsonl, import_jsonl, EventStore, Transfer};
use serde_json::json;

use super::is_stdio;
use crate::cli::{ExportJsonlArgs, ImportJsonlArgs};
use crate::failure::Failure;
use crate::output::Output;

pub(super) async fn export(store: &dyn EventStore, args: ExportJsonlArgs, out: &mut Output) -> Result<(), Failure> {
    if is_stdio(&args.file) {
        let transfer = {
            let stdout = io::stdout();
            export_jsonl(store, BufWriter::new(stdout.lock())).await?
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
    let transfer = export_jsonl(store, &mut writer).await?;
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
    format!("{} event(s) and {} checkpoint(s)", transfer.events, transfer.checkpoints)
}

fn summary_json(transfer: &Transfer) -> serde_json::Value {
    json!({ "events": transfer.events, "checkpoints": transfer.checkpoints })
}
