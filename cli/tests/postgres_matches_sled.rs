//! Every read command prints the same on a PostgreSQL store as on the sled store it was copied from
//! with `annals copy`: streams, read, log, tail, subscriptions and export byte for byte, with their
//! filters and time bounds (both times), and stats but for the size on disk; verify finds both
//! healthy with the same counts; requeue and skip change parked events the same way; an export of
//! the sled store imports into PostgreSQL and exports back the same bytes.
#![allow(missing_docs)]

mod common;

use common::{annals, annals_pg, fresh_schema, pg_url, store_with_everything, Run, TestResult};
use serde_json::{json, Value};

/// What every run must print the same on both stores.
const SAME_OUTPUT: [&[&str]; 26] = [
    &["streams"],
    &["streams", "--json"],
    &["streams", "--prefix", "order-"],
    &["streams", "--as-of", "2013-02-15", "--occurred", "--json"],
    &["read", "order-1"],
    &["read", "order-1", "--json"],
    &["read", "order-1", "--backward", "--limit", "1", "--json"],
    &["read", "order-1", "--from", "2", "--json"],
    &["read", "order-1", "--as-of", "2013-01-15", "--occurred", "--json"],
    &["log"],
    &["log", "--json"],
    &["log", "--type", "OrderPlaced", "--prefix", "order-", "--json"],
    &["log", "--prefix", "customer-", "--prefix", "order-2", "--json"],
    &["log", "--from", "2", "--until", "3", "--json"],
    &["log", "--limit", "2", "--json"],
    &["log", "--until", "2013-02-01", "--occurred", "--json"],
    &["tail"],
    &["tail", "-n", "2", "--json"],
    &["tail", "--from", "3", "--type", "OrderPlaced", "--json"],
    &["subscriptions"],
    &["subscriptions", "--json"],
    &["subscriptions", "emails"],
    &["subscriptions", "emails", "--json"],
    &["export", "jsonl"],
    &["export", "jsonl", "--json"],
    &["read", "no-such-stream"],
];

fn same(sled: &Run, postgres: &Run, args: &[&str]) {
    assert_eq!(sled.code, postgres.code, "{args:?}: sled {sled:?}, postgres {postgres:?}");
    assert_eq!(sled.stdout, postgres.stdout, "{args:?}");
    assert_eq!(sled.stderr, postgres.stderr, "{args:?}");
}

/// A `stats --json` document without its size (a sled directory's and a schema's differ).
fn without_size(run: &Run) -> Result<Value, Box<dyn std::error::Error>> {
    let mut stats = run.json()?;
    let size = stats.as_object_mut().and_then(|o| o.remove("size_on_disk")).ok_or("no size_on_disk")?;
    assert!(size.as_u64().is_some_and(|bytes| bytes > 0), "{run:?}");
    Ok(stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_command_prints_the_same_on_postgres_as_on_sled() -> TestResult {
    let url = pg_url()?;
    let schema = fresh_schema();
    let dir = tempfile::tempdir()?;
    store_with_everything(dir.path()).await?;
    let copied = common::command()
        .args(["copy", "--from"])
        .arg(dir.path())
        .args(["--to", &url, "--to-schema", &schema, "--json"])
        .output()?;
    let copied = Run::from(copied);
    assert_eq!(copied.json()?, json!({ "events": 5, "checkpoints": 2, "snapshots": 2 }), "{copied:?}");

    for args in SAME_OUTPUT {
        let sled = annals(dir.path(), args)?;
        let postgres = annals_pg(&url, &schema, args)?;
        same(&sled, &postgres, args);
    }
    // The runs above printed something: the comparison is not of two empty outputs.
    let log = annals_pg(&url, &schema, &["log", "--json"])?;
    assert_eq!(log.json_lines()?.len(), 5, "{log:?}");
    let parked = annals_pg(&url, &schema, &["subscriptions", "emails", "--json"])?.json()?;
    assert_eq!(parked["parked"][0]["position"], 3);

    // Recording time: up to the third event's recorded_at, which only the stores know.
    let third = &log.json_lines()?[2]["recorded_at"];
    let third = third.as_str().ok_or("no recorded_at")?;
    for args in [
        &["log", "--until", third, "--json"][..],
        &["streams", "--as-of", third, "--json"],
        &["read", "order-1", "--as-of", third, "--recorded", "--json"],
        &["stats", "--as-of", third, "--json"],
        &["stats", "--as-of", "2013-02-15", "--occurred", "--json"],
    ] {
        let (sled, postgres) = (annals(dir.path(), args)?, annals_pg(&url, &schema, args)?);
        if args[0] == "stats" {
            assert_eq!(without_size(&sled)?, without_size(&postgres)?);
        } else {
            same(&sled, &postgres, args);
        }
    }

    // Stats: the same counts and times; the size is the schema's tables'.
    let (sled, postgres) = (annals(dir.path(), &["stats", "--json"])?, annals_pg(&url, &schema, &["stats", "--json"])?);
    assert_eq!(without_size(&sled)?, without_size(&postgres)?);
    let (sled, postgres) = (annals(dir.path(), &["stats"])?, annals_pg(&url, &schema, &["stats"])?);
    let counts =
        |run: &Run| run.stdout.lines().filter(|l| !l.starts_with("size on disk:")).collect::<Vec<_>>().join("\n");
    assert_eq!(counts(&sled), counts(&postgres));
    let size = postgres.stdout.lines().find(|l| l.starts_with("size on disk:")).ok_or("no size line")?;
    assert!(size.ends_with(&format!("bytes), the tables of schema {schema}")), "{size}");

    // Verify: a byte check on sled, a logical check on PostgreSQL, both healthy, the same counts.
    let (sled, postgres) =
        (annals(dir.path(), &["verify", "--json"])?, annals_pg(&url, &schema, &["verify", "--json"])?);
    let (sled, postgres) = (sled.json()?, postgres.json()?);
    assert_eq!((&sled["ok"], &postgres["ok"]), (&json!(true), &json!(true)), "{postgres}");
    assert_eq!(postgres["check"], "logical");
    for count in ["events", "streams", "checkpoints", "snapshots"] {
        assert_eq!(sled[count], postgres[count], "{count}: {postgres}");
    }
    let text = annals_pg(&url, &schema, &["verify"])?;
    assert!(text.ok() && text.stdout.ends_with("no problems found\n"), "{text:?}");

    // The changes to parked events do the same on both (but for the time each store saved them).
    let parked = |run: &Run| -> Result<Value, Box<dyn std::error::Error>> {
        let shown = run.json()?;
        Ok(json!([shown["checkpoint"], shown["lag"], shown["parked"]]))
    };
    let show = ["subscriptions", "emails", "--json"];
    for args in [
        &["subscriptions", "emails", "requeue", "--position", "2"][..],
        &["subscriptions", "emails", "requeue", "--position", "3", "--json"],
        &["subscriptions", "emails", "skip", "--all"],
        &["subscriptions", "--json"],
    ] {
        let (sled, postgres) = (annals(dir.path(), args)?, annals_pg(&url, &schema, args)?);
        same(&sled, &postgres, args);
        let (sled, postgres) = (annals(dir.path(), &show)?, annals_pg(&url, &schema, &show)?);
        assert_eq!(parked(&sled)?, parked(&postgres)?, "after {args:?}");
    }
    let skipped = annals_pg(&url, &schema, &show)?.json()?;
    assert_eq!(skipped["parked"], json!([]), "{skipped}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_imports_into_postgres_and_exports_the_same_bytes() -> TestResult {
    let url = pg_url()?;
    let schema = fresh_schema();
    let dir = tempfile::tempdir()?;
    store_with_everything(dir.path()).await?;
    let export = dir.path().join("backup.jsonl");
    let export_text = export.to_str().ok_or("a temporary path that is not UTF-8")?;
    assert!(annals(dir.path(), &["export", "jsonl", export_text])?.ok());

    let imported = annals_pg(&url, &schema, &["import", "jsonl", export_text])?;
    assert_eq!(imported.stdout, "imported 5 event(s) and 2 checkpoint(s)\n", "{imported:?}");
    let (sled, postgres) = (annals(dir.path(), &["export", "jsonl"])?, annals_pg(&url, &schema, &["export", "jsonl"])?);
    same(&sled, &postgres, &["export", "jsonl"]);
    let again = annals_pg(&url, &schema, &["import", "jsonl", export_text, "--json"])?;
    assert_eq!(again.json()?, json!({ "events": 0, "checkpoints": 2 }), "a second import restores nothing: {again:?}");
    Ok(())
}
