//! The help desk example (`examples/helpdesk.rs`) answers right: its import, projection and aggregate,
//! run on a real event log, agree with a plain computation over the CSV rows that uses no Annals code.
//! On the committed excerpt (`tests/fixtures/helpdesk-excerpt.csv`) and on the whole log shipped with
//! the repository (`data/helpdesk.csv.gz`, which the example imports through its gzip decoder and the
//! plain computation reads decompressed). Also: importing again writes nothing, and a bad row is named
//! by its line, writing nothing under `BadRows::Abort` and left out under `BadRows::Skip`.
//!
//! Data: "Helpdesk" by Ilya Verenich, Mendeley Data (2016), doi:10.17632/39bp3vv62t.1, via the test data
//! of pm4py.

// The example's code, compiled into this test so that its own answers are the ones checked. Its
// `main` is unused here.
#[path = "../examples/helpdesk.rs"]
#[allow(dead_code)]
mod helpdesk;

use std::collections::BTreeMap;
use std::error::Error;
use std::io::Read;
use std::path::{Path, PathBuf};

use annals::import::{BadRowReason, BadRows, ImportError, ImportProblem};
use annals::{EventStore, SledStore};
use flate2::read::GzDecoder;

use helpdesk::{desk_as_of, helpdesk_import, import, shipped_log, start_of, ticket_as_of, CLOSED};

type TestResult = Result<(), Box<dyn Error>>;

/// Days (at 00:00 UTC) the answers are compared on.
const DAYS: [&str; 9] = [
    "2010-06-01",
    "2011-01-01",
    "2012-01-01",
    "2012-11-01",
    "2013-01-01",
    "2013-06-01",
    "2013-08-03",
    "2013-11-23",
    "2014-01-01",
];

/// Tickets whose state is compared on every day: "Case 7" (asked about in the example), one that was
/// reopened after "Closed" (192, 2436), one with the rare activities (1345), one never closed (28).
const CASES: [&str; 5] = ["Case 7", "Case 192", "Case 2436", "Case 1345", "Case 28"];

fn excerpt() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/helpdesk-excerpt.csv")
}

// ---------------------------------------------------------------------------------------------------
// The plain computation: read the text (decompressed here, apart from the example's reader, if the
// file is gzipped), split lines on commas (the log has no quoted fields), compare timestamps as text
// (every one is `YYYY-MM-DDTHH:MM:SS+00:00`, so text order is time order).

struct Row {
    case: String,
    activity: String,
    resource: String,
    timestamp: String,
}

/// The CSV text of the file at `path`, gunzipped if its name ends in `.gz`.
fn text(path: &Path) -> Result<String, Box<dyn Error>> {
    if path.extension().is_some_and(|extension| extension == "gz") {
        let mut text = String::new();
        GzDecoder::new(std::fs::File::open(path)?).read_to_string(&mut text)?;
        Ok(text)
    } else {
        Ok(std::fs::read_to_string(path)?)
    }
}

fn rows(path: &Path) -> Result<Vec<Row>, Box<dyn Error>> {
    let text = text(path)?;
    let mut lines = text.lines();
    let header = lines.next().ok_or("no header")?;
    assert_eq!(header.split(',').take(4).collect::<Vec<_>>(), ["case", "activity", "resource", "timestamp"]);
    let mut rows = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 13, "{line}");
        let timestamp = fields[3].to_owned();
        assert!(timestamp.len() == 25 && timestamp.ends_with("+00:00"), "{timestamp}");
        rows.push(Row {
            case: fields[0].to_owned(),
            activity: fields[1].to_owned(),
            resource: fields[2].to_owned(),
            timestamp,
        });
    }
    Ok(rows)
}

fn midnight(day: &str) -> String {
    format!("{day}T00:00:00+00:00")
}

/// Tickets open at the start of `day` (their last activity by then, in file order, is not "Closed"),
/// and tickets seen by then.
fn open_on(rows: &[Row], day: &str) -> (usize, usize) {
    let at = midnight(day);
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    for row in rows.iter().filter(|row| row.timestamp <= at) {
        last.insert(&row.case, &row.activity);
    }
    (last.values().filter(|activity| **activity != CLOSED).count(), last.len())
}

fn activity_counts(rows: &[Row]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for row in rows {
        *counts.entry(row.activity.clone()).or_default() += 1;
    }
    counts
}

/// A ticket at the start of `day`: steps by then, the last activity and its resource.
fn ticket_on(rows: &[Row], case: &str, day: &str) -> (u32, Option<String>, Option<String>) {
    let at = midnight(day);
    let steps: Vec<&Row> = rows.iter().filter(|row| row.case == case && row.timestamp <= at).collect();
    let last = steps.last();
    (steps.len() as u32, last.map(|row| row.activity.clone()), last.map(|row| row.resource.clone()))
}

// ---------------------------------------------------------------------------------------------------
// The cross-check.

/// Imports `csv` with the example's code and compares its answers with the plain computation.
async fn cross_check(csv: &Path) -> TestResult {
    let rows = rows(csv)?;
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path())?;
    let (summary, _) = import(&store, csv).await?;
    assert_eq!(summary.rows, rows.len() as u64);
    assert_eq!(summary.events_written, rows.len() as u64);
    assert!(summary.skipped.is_empty());
    let cases: std::collections::BTreeSet<&str> = rows.iter().map(|row| row.case.as_str()).collect();
    assert_eq!(summary.streams, cases.len() as u64);

    for day in DAYS {
        let desk = desk_as_of(&store, Some(start_of(day)?)).await?;
        assert_eq!((desk.open(), desk.tickets()), open_on(&rows, day), "open tickets at the start of {day}");
    }
    let everything = desk_as_of(&store, None).await?;
    assert_eq!(everything.per_activity(), &activity_counts(&rows));
    assert_eq!(everything.open(), open_on(&rows, "9999-12-31").0);

    for case in CASES {
        for day in DAYS {
            let ticket = ticket_as_of(&store, case, start_of(day)?).await?;
            let (steps, activity, resource) = ticket_on(&rows, case, day);
            let state = &ticket.state;
            assert_eq!(ticket.version.get(), u64::from(steps), "{case} on {day}");
            assert_eq!(state.steps, steps, "{case} on {day}");
            assert_eq!(state.last_activity.map(str::to_owned), activity, "{case} on {day}");
            assert_eq!(state.last_resource, resource, "{case} on {day}");
            assert_eq!(state.closed, activity.as_deref() == Some(CLOSED), "{case} on {day}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_answers_on_the_excerpt_match_a_plain_computation() -> TestResult {
    let rows = rows(&excerpt())?;
    // The excerpt exercises what it is checked on: open tickets then, and Case 7's history.
    assert_eq!(open_on(&rows, "2013-01-01"), (6, 28));
    assert_eq!(ticket_on(&rows, "Case 7", "2012-11-01"), (0, None, None), "Case 7 was not opened yet");
    assert_eq!(ticket_on(&rows, "Case 7", "2013-11-23").0, 3);
    cross_check(&excerpt()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_answers_on_the_whole_shipped_log_match_a_plain_computation() -> TestResult {
    // No skip: the log is part of the repository, so a missing or unreadable file fails here.
    let path = shipped_log();
    let rows = rows(&path)?;
    assert_eq!(rows.len(), 21_348);
    assert_eq!(open_on(&rows, "2013-01-01"), (49, 3_907));
    cross_check(&path).await
}

// ---------------------------------------------------------------------------------------------------
// Running again, and bad rows.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_the_same_file_again_writes_nothing_and_leaves_the_head_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path())?;
    // Small batches, so that the second run meets many stored batches.
    let batches = helpdesk_import().batch_size(25);
    let first = batches.import_file(&store, excerpt(), |_| {}).await?;
    assert_eq!((first.events_written, first.already_present), (212, 0));
    let head = store.head().await?;

    let mut progress = Vec::new();
    let again = batches.import_file(&store, excerpt(), |p| progress.push(p)).await?;
    assert_eq!((again.rows, again.events_written, again.already_present), (212, 0, 212));
    assert_eq!(again.streams, first.streams);
    assert_eq!(store.head().await?, head);
    // Progress: once before the first batch, then after each of the 9 batches, with the total.
    assert_eq!(progress.len(), 10);
    assert!(progress.iter().all(|p| p.rows_total == Some(212)));
    assert_eq!(progress.last().map(|p| (p.rows_read, p.already_present)), Some((212, 212)));

    // Reopened, the store still knows the events: a third run writes nothing either.
    drop(store);
    let store = SledStore::open(dir.path())?;
    let third = batches.import_file(&store, excerpt(), |_| {}).await?;
    assert_eq!((third.events_written, third.already_present), (0, 212));
    assert_eq!(store.head().await?, head);
    Ok(())
}

/// The excerpt with the timestamp of line `line` (1-based, the header is line 1) replaced.
fn with_bad_time(line: usize, dir: &Path) -> Result<PathBuf, Box<dyn Error>> {
    let text = std::fs::read_to_string(excerpt())?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let target = lines.get_mut(line - 1).ok_or("no such line")?;
    let mut fields: Vec<&str> = target.split(',').collect();
    fields[3] = "2013-13-45T99:00:00+00:00";
    *target = fields.join(",");
    let path = dir.join("helpdesk-bad.csv");
    std::fs::write(&path, lines.join("\n") + "\n")?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_with_a_bad_row_writes_nothing_and_names_its_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let bad = with_bad_time(150, dir.path())?;
    let store = SledStore::open(dir.path().join("db"))?;
    let result = helpdesk_import().bad_rows(BadRows::Abort).batch_size(25).import_file(&store, &bad, |_| {}).await;
    let Err(ImportError::Input { line, problem: ImportProblem::BadRows { rows } }) = result else {
        unreachable!("expected the bad row, got {result:?}");
    };
    assert_eq!(line, 150);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].line, 150);
    assert!(matches!(&rows[0].reason, BadRowReason::BadTime { value, .. } if value == "2013-13-45T99:00:00+00:00"));
    assert_eq!(store.head().await?.get(), 0, "nothing was written, not even the batches before line 150");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_reports_the_bad_row_and_imports_the_others() -> TestResult {
    let dir = tempfile::tempdir()?;
    let bad = with_bad_time(150, dir.path())?;
    let store = SledStore::open(dir.path().join("db"))?;
    let summary = helpdesk_import().bad_rows(BadRows::Skip).import_file(&store, &bad, |_| {}).await?;
    assert_eq!((summary.rows, summary.events_written), (212, 211));
    assert_eq!(summary.skipped.len(), 1);
    assert_eq!(summary.skipped[0].line, 150);
    assert!(matches!(summary.skipped[0].reason, BadRowReason::BadTime { .. }));
    assert_eq!(store.head().await?.get(), 211);
    Ok(())
}
