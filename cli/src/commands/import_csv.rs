//! `annals import csv`: a CSV event log through `annals::import::CsvImport`, with a progress bar
//! for large files and a summary.

use std::io::{self, IsTerminal};
use std::time::Duration;

use annals::import::{BadRows, CsvImport, ImportProgress, ImportSummary, TimeFormat};
use annals::EventStore;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::is_stdio;
use crate::cli::ImportCsvArgs;
use crate::failure::Failure;
use crate::output::Output;

/// Files at least this large show a progress bar (when standard error is a terminal).
const PROGRESS_BAR_FROM_BYTES: u64 = 1024 * 1024;

pub(super) async fn run(store: &dyn EventStore, args: ImportCsvArgs, out: &mut Output) -> Result<(), Failure> {
    let import = options(&args);
    let bar = progress_bar(&args, out.json());
    let on_progress = |progress: ImportProgress| {
        if let Some(total) = progress.rows_total {
            bar.set_length(total);
        }
        bar.set_position(progress.rows_read);
    };
    let summary = if is_stdio(&args.file) {
        import.import_reader(store, io::stdin().lock(), on_progress).await
    } else {
        import.import_file(store, &args.file, on_progress).await
    };
    bar.finish_and_clear();
    print_summary(&summary?, out)
}

/// The library's import options from the command line.
fn options(args: &ImportCsvArgs) -> CsvImport {
    let bad_rows = if args.skip_bad_rows { BadRows::Skip } else { BadRows::Abort };
    let mut import = CsvImport::new(&args.stream_column, &args.type_column, &args.time_column)
        .stream_prefix(&args.stream_prefix)
        .time_format(time_format(&args.time_format))
        .batch_size(args.batch)
        .bad_rows(bad_rows)
        .delimiter(args.delimiter);
    if let Some(columns) = &args.payload_columns {
        import = import.payload_columns(columns.iter().map(|c| c.trim().to_owned()));
    }
    import
}

/// `rfc3339`, or a strftime format: with an offset field (`%z`, `%:z`, `%#z`) the times carry their
/// offset; without one they are taken as UTC.
fn time_format(text: &str) -> TimeFormat {
    if text.eq_ignore_ascii_case("rfc3339") {
        TimeFormat::Rfc3339
    } else if text.contains("%z") || text.contains("%:z") || text.contains("%#z") {
        TimeFormat::WithOffset(text.to_owned())
    } else {
        TimeFormat::NaiveUtc(text.to_owned())
    }
}

/// A bar on standard error for a file of at least [`PROGRESS_BAR_FROM_BYTES`], when standard error
/// is a terminal and the output is not JSON; a hidden one otherwise.
fn progress_bar(args: &ImportCsvArgs, json: bool) -> ProgressBar {
    let large =
        !is_stdio(&args.file) && std::fs::metadata(&args.file).is_ok_and(|m| m.len() >= PROGRESS_BAR_FROM_BYTES);
    if json || !large || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} importing [{bar:40}] {human_pos}/{human_len} rows ({percent}%), {eta} left",
    )
    .map(|style| style.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn print_summary(summary: &ImportSummary, out: &mut Output) -> Result<(), Failure> {
    if out.json() {
        let skipped: Vec<_> =
            summary.skipped.iter().map(|row| json!({ "line": row.line, "reason": row.reason.to_string() })).collect();
        out.json_line(&json!({
            "rows": summary.rows,
            "written": summary.events_written,
            "already_present": summary.already_present,
            "streams": summary.streams,
            "skipped": skipped,
        }))?;
        return Ok(());
    }
    out.line(format!("rows read:        {}", summary.rows))?;
    out.line(format!("events written:   {}", summary.events_written))?;
    out.line(format!("already present:  {}", summary.already_present))?;
    out.line(format!("streams:          {}", summary.streams))?;
    out.line(format!("rows skipped:     {}", summary.skipped.len()))?;
    for row in &summary.skipped {
        out.line(format!("  {row}"))?;
    }
    Ok(())
}
