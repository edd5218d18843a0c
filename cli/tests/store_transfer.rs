//! Moving events in and out: `export jsonl` then `import jsonl` into a new store reads back the same
//! log (through files and through pipes), and `import csv` imports a CSV event log, aborting or
//! skipping bad rows, storing nothing twice when run again.
#![allow(missing_docs)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use annals::{Checkpoint, CheckpointWrite, EventStore, Position, SledStore};
use common::{annals, command, small_store, Run, TestResult};
use serde_json::json;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

#[tokio::test]
async fn export_with_snapshots_carries_them_and_without_leaves_them_out() -> TestResult {
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("source");
    small_store(&source).await?;
    {
        let store = SledStore::open(&source)?;
        let stream = annals::StreamId::new("order-1")?;
        store
            .save_snapshot(annals::Snapshot::new(stream, annals::Version::new(2), 1, r#"{"paid":true}"#.to_owned()))
            .await?;
    }
    let with = dir.path().join("with.jsonl");
    let exported = annals(&source, &["export", "jsonl", text(&with), "--snapshots", "--json"])?;
    assert_eq!(exported.json()?, json!({ "events": 4, "checkpoints": 0, "snapshots": 1, "snapshots_left_out": 0 }));
    let copy = dir.path().join("copy");
    let imported = annals(&copy, &["import", "jsonl", text(&with)])?;
    assert_eq!(imported.stdout, "imported 4 event(s) and 0 checkpoint(s), 1 snapshot(s)\n", "{imported:?}");
    {
        let store = SledStore::open(&copy)?;
        let stream = annals::StreamId::new("order-1")?;
        let snapshot = store.load_snapshot(&stream, annals::Version::new(2)).await?;
        assert_eq!(snapshot.map(|s| s.state), Some(r#"{"paid":true}"#.to_owned()));
    }
    let without = dir.path().join("without.jsonl");
    let plain = annals(&source, &["export", "jsonl", text(&without), "--json"])?;
    assert_eq!(plain.json()?, json!({ "events": 4, "checkpoints": 0 }));
    assert!(!std::fs::read_to_string(&without)?.contains("paid"));
    Ok(())
}

#[tokio::test]
async fn export_then_import_gives_the_same_log_and_checkpoints() -> TestResult {
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("source");
    small_store(&source).await?;
    {
        let store = SledStore::open(&source)?;
        let checkpoint = Checkpoint::new("projection/totals", Position::new(3)).with_state("{\"sum\":1550}");
        store.save_checkpoints(vec![CheckpointWrite::Save(checkpoint)]).await?;
    }
    let export = dir.path().join("backup.jsonl");
    let exported = annals(&source, &["export", "jsonl", text(&export), "--json"])?;
    assert_eq!(exported.json()?, json!({ "events": 4, "checkpoints": 1 }), "{exported:?}");
    assert_eq!(std::fs::read_to_string(&export)?.lines().count(), 5);

    let copy = dir.path().join("copy");
    let imported = annals(&copy, &["import", "jsonl", text(&export)])?;
    assert!(imported.ok(), "{imported:?}");
    assert_eq!(imported.stdout, "imported 4 event(s) and 1 checkpoint(s)\n");
    let original = annals(&source, &["log", "--json"])?;
    assert_eq!(original.json_lines()?.len(), 4);
    assert_eq!(annals(&copy, &["log", "--json"])?.stdout, original.stdout);
    let again = annals(&copy, &["import", "jsonl", text(&export), "--json"])?;
    assert_eq!(again.json()?["events"], 0, "a second import restores nothing: {again:?}");

    // The same through standard output and standard input.
    let piped = annals(&source, &["export", "jsonl"])?;
    assert!(piped.ok(), "{piped:?}");
    assert_eq!(piped.stderr, "exported 4 event(s) and 1 checkpoint(s)\n");
    let third = dir.path().join("third");
    let mut child = command()
        .arg("--store")
        .arg(&third)
        .args(["import", "jsonl", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().ok_or("no stdin")?.write_all(piped.stdout.as_bytes())?;
    let imported: Run = child.wait_with_output()?.into();
    assert!(imported.ok(), "{imported:?}");
    assert_eq!(annals(&third, &["log", "--json"])?.stdout, original.stdout);
    let checkpoint = SledStore::open(&third)?.load_checkpoint("projection/totals").await?.ok_or("no checkpoint")?;
    assert_eq!((checkpoint.position, checkpoint.state.as_deref()), (Position::new(3), Some("{\"sum\":1550}")));
    Ok(())
}

#[test]
fn import_of_a_missing_file_creates_no_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    let missing = dir.path().join("missing.jsonl");
    assert!(annals(&store, &["import", "jsonl", text(&missing)])?.one_line_error(1).contains("cannot open"));
    let csv = ["import", "csv", text(&missing), "--stream-column", "a", "--type-column", "b", "--time-column", "c"];
    assert!(annals(&store, &csv)?.one_line_error(1).contains("missing.jsonl"));
    assert!(!store.exists());
    Ok(())
}

const TICKETS: [&str; 10] = [
    "--stream-column",
    "case",
    "--stream-prefix",
    "ticket-",
    "--type-column",
    "activity",
    "--time-column",
    "timestamp",
    "--batch",
    "2",
];

fn import_tickets(store: &Path, extra: &[&str]) -> std::io::Result<Run> {
    let file = fixture("tickets.csv");
    let mut args = vec!["import", "csv", text(&file)];
    args.extend_from_slice(&TICKETS);
    args.extend_from_slice(extra);
    annals(store, &args)
}

#[test]
fn csv_import_aborts_on_a_bad_row_by_default_and_writes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    for extra in [&[][..], &["--abort-on-bad-rows"]] {
        let run = import_tickets(dir.path(), extra)?;
        let line = run.one_line_error(1);
        assert!(line.contains("line 5") && line.contains("\"the day after\""), "{line}");
        assert_eq!(annals(dir.path(), &["log", "--json"])?.stdout, "");
    }
    Ok(())
}

#[test]
fn csv_import_skips_bad_rows_when_asked_and_stores_nothing_twice() -> TestResult {
    let dir = tempfile::tempdir()?;
    let first = import_tickets(dir.path(), &["--skip-bad-rows", "--json"])?;
    assert!(first.ok(), "{first:?}");
    let reason = "its time \"the day after\" does not parse as RFC 3339";
    assert_eq!(
        first.json()?,
        json!({ "rows": 5, "written": 4, "already_present": 0, "streams": 2, "skipped": [{ "line": 5, "reason": reason }] })
    );
    let streams = annals(dir.path(), &["streams", "--json"])?.json_lines()?;
    assert_eq!(streams, [json!({ "stream": "ticket-7", "version": 2 }), json!({ "stream": "ticket-8", "version": 2 })]);
    let closed = annals(dir.path(), &["read", "ticket-8", "--from", "2", "--json"])?.json_lines()?;
    assert_eq!(closed[0]["event_type"], "Closed");
    assert_eq!(closed[0]["occurred_at"], "2014-01-03T15:30:00Z");
    assert_eq!(closed[0]["payload"], json!({ "resource": "Bob", "cost": "3" }));

    let again = import_tickets(dir.path(), &["--skip-bad-rows"])?;
    assert!(again.ok(), "{again:?}");
    for expected in ["rows read:        5", "events written:   0", "already present:  4", "rows skipped:     1"] {
        assert!(again.stdout.lines().any(|l| l == expected), "{expected:?} in\n{}", again.stdout);
    }
    assert!(again.stdout.lines().any(|l| l == format!("  line 5: {reason}")), "{}", again.stdout);
    assert_eq!(annals(dir.path(), &["log", "--json"])?.json_lines()?.len(), 4);
    Ok(())
}

#[test]
fn csv_import_takes_a_time_format_a_delimiter_and_payload_columns() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = fixture("tickets-local-times.csv");
    let args = [
        "import",
        "csv",
        text(&file),
        "--stream-column",
        "case",
        "--type-column",
        "activity",
        "--time-column",
        "when",
        "--time-format",
        "%Y/%m/%d %H:%M",
        "--delimiter",
        ";",
        "--payload-columns",
        "resource,case",
        "--json",
    ];
    let run = annals(dir.path(), &args)?;
    assert_eq!(run.json()?["written"], 2, "{run:?}");
    let read = annals(dir.path(), &["read", "7", "--json"])?;
    let events = read.json_lines()?;
    assert_eq!(events[1]["occurred_at"], "2013-12-10T08:57:00Z");
    // The payload's columns come in the order given.
    assert!(read.stdout.contains(r#""payload":{"resource":"Ada","case":"7"}"#), "{}", read.stdout);
    Ok(())
}
