//! `annals copy` is lossless: sled → PostgreSQL → a new sled directory gives a store whose export is
//! byte-identical to the first one's, with the same checkpoints and snapshots. A target that holds
//! events is refused and left as it was, and a source that does not open creates no target.
#![allow(missing_docs)]

mod common;

use annals::{EventStore, SledStore};
use common::TestResult;
use common::{all_snapshots, annals, annals_pg, command, fresh_schema, open_pg, pg_url, store_with_everything, Run};
use serde_json::json;

fn copy(from: &str, from_schema: Option<&str>, to: &str, to_schema: Option<&str>) -> std::io::Result<Run> {
    let mut command = command();
    command.args(["copy", "--from", from, "--to", to]);
    if let Some(schema) = from_schema {
        command.args(["--from-schema", schema]);
    }
    if let Some(schema) = to_schema {
        command.args(["--to-schema", schema]);
    }
    Ok(command.output()?.into())
}

fn text(path: &std::path::Path) -> Result<&str, &'static str> {
    path.to_str().ok_or("a temporary path that is not UTF-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_to_postgres_to_sled_is_lossless() -> TestResult {
    let url = pg_url()?;
    let schema = fresh_schema();
    let dir = tempfile::tempdir()?;
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    store_with_everything(&first).await?;

    let there = copy(text(&first)?, None, &url, Some(&schema))?;
    assert!(there.ok(), "{there:?}");
    assert_eq!(there.stdout, "copied 5 event(s), 2 checkpoint(s) and 2 snapshot(s)\n");
    let back = copy(&url, Some(&schema), text(&second)?, None)?;
    assert!(back.ok(), "{back:?}");
    assert_eq!(back.stdout, there.stdout);

    // The exports of both sled stores, and of the PostgreSQL one, are the same bytes.
    let exported = annals(&first, &["export", "jsonl"])?;
    assert!(exported.ok(), "{exported:?}");
    assert_eq!(exported.stdout.lines().count(), 7, "5 events and 2 checkpoints: {exported:?}");
    assert_eq!(annals(&second, &["export", "jsonl"])?.stdout, exported.stdout);
    assert_eq!(annals_pg(&url, &schema, &["export", "jsonl"])?.stdout, exported.stdout);

    // Checkpoints (with their states and times) and snapshots came along, through PostgreSQL.
    let (first, second) = (SledStore::open(&first)?, SledStore::open(&second)?);
    let checkpoints = first.list_checkpoints("").await?;
    assert_eq!(checkpoints.len(), 2);
    assert_eq!(second.list_checkpoints("").await?, checkpoints);
    let snapshots = all_snapshots(&first).await?;
    assert_eq!(snapshots.len(), 2);
    assert_eq!(all_snapshots(&second).await?, snapshots);
    let postgres = open_pg(&url, &schema).await?;
    assert_eq!(all_snapshots(&postgres).await?, snapshots);
    assert_eq!(second.list_streams("").await?, first.list_streams("").await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_holds_events_is_refused_and_unchanged() -> TestResult {
    let url = pg_url()?;
    let schema = fresh_schema();
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("source");
    store_with_everything(&source).await?;
    let first = copy(text(&source)?, None, &url, Some(&schema))?;
    assert!(first.ok(), "{first:?}");
    let before = annals_pg(&url, &schema, &["export", "jsonl"])?;

    // Again into the same schema: refused, naming the target, and nothing changes.
    let again = copy(text(&source)?, None, &url, Some(&schema))?;
    let line = again.one_line_error(1);
    assert!(line.contains(&format!("the target schema \"{schema}\" at ")), "{line}");
    assert!(line.contains("holds events (up to position 5): copy only into an empty store"), "{line}");
    assert_eq!(annals_pg(&url, &schema, &["export", "jsonl"])?.stdout, before.stdout);

    // A sled directory that holds events is refused the same way, with --json too.
    let other = dir.path().join("other");
    common::small_store(&other).await?;
    let refused = copy(&url, Some(&schema), text(&other)?, None)?;
    assert!(refused.one_line_error(1).contains("holds events (up to position 4)"), "{refused:?}");
    assert_eq!(annals(&other, &["log", "--json"])?.json_lines()?.len(), 4);
    Ok(())
}

#[test]
fn a_source_that_does_not_open_creates_no_target() -> TestResult {
    let url = pg_url()?;
    let dir = tempfile::tempdir()?;
    let (missing, target) = (dir.path().join("missing"), dir.path().join("target"));
    let run = copy(text(&missing)?, None, text(&target)?, None)?;
    assert!(run.one_line_error(1).contains("no database at"), "{run:?}");
    assert!(!target.exists());

    // A schema without a store is no source either; the target schema is not created.
    let (empty, target_schema) = (fresh_schema(), fresh_schema());
    let run = copy(&url, Some(&empty), &url, Some(&target_schema))?;
    assert!(run.one_line_error(1).contains(&format!("no store in schema \"{empty}\"")), "{run:?}");
    let run = copy(&url, Some(&target_schema), text(&target)?, None)?;
    assert!(run.one_line_error(1).contains(&format!("no store in schema \"{target_schema}\"")), "{run:?}");
    assert!(!target.exists());

    // An empty source copies nothing, and that is fine.
    let empty_source = dir.path().join("empty-source");
    SledStore::open(&empty_source).map(drop)?;
    let run = copy(text(&empty_source)?, None, &url, Some(&fresh_schema()))?;
    assert!(run.ok(), "{run:?}");
    let json_run = copy(text(&empty_source)?, None, text(&target)?, None)?;
    assert!(json_run.ok(), "{json_run:?}");
    let json = {
        let mut command = command();
        command.args(["copy", "--json", "--from"]).arg(&empty_source).arg("--to").arg(dir.path().join("third"));
        Run::from(command.output()?)
    };
    assert_eq!(json.json()?, json!({ "events": 0, "checkpoints": 0, "snapshots": 0 }), "{json:?}");
    Ok(())
}
