//! Failures are one line on stderr (`error: ...`) with exit code 1, read commands never create a
//! store (a directory or a PostgreSQL schema), a bad or unreachable PostgreSQL URL fails at once
//! without showing its password, and `verify` exits 0 on a healthy store and 2 with each problem on
//! a damaged one.
#![allow(missing_docs)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use annals::{EventStore as _, SledStore};
use common::{annals, annals_pg, command, fresh_schema, pg_url, small_store, Run, TestResult};

const READ_COMMANDS: [&[&str]; 9] = [
    &["streams"],
    &["read", "order-1"],
    &["log"],
    &["tail"],
    &["stats"],
    &["subscriptions"],
    &["subscriptions", "emails", "skip", "--all"],
    &["export", "jsonl", "-"],
    &["verify"],
];

#[test]
fn a_missing_store_is_one_line_and_is_not_created() -> TestResult {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("nothing-here");
    for args in READ_COMMANDS {
        let line = annals(&missing, args)?.one_line_error(1).to_owned();
        assert!(line.contains("no database at") && line.contains("nothing-here"), "{args:?}: {line}");
        assert!(!missing.exists(), "{args:?} created the store");
    }
    // An empty directory is not a store either, and stays empty.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty)?;
    for args in READ_COMMANDS {
        assert!(annals(&empty, args)?.one_line_error(1).contains("no database at"), "{args:?}");
    }
    assert_eq!(std::fs::read_dir(&empty)?.count(), 0);
    Ok(())
}

#[tokio::test]
async fn a_schema_without_a_store_is_one_line_and_is_not_created() -> TestResult {
    let url = pg_url()?;
    let schema = fresh_schema();
    for args in READ_COMMANDS {
        let line = annals_pg(&url, &schema, args)?.one_line_error(1).to_owned();
        assert!(line.contains(&format!("no store in schema \"{schema}\" at ")), "{args:?}: {line}");
        assert!(line.ends_with("only import and copy create one"), "{args:?}: {line}");
    }
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let row = client.query_one("SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = $1", &[&schema]).await?;
    assert_eq!(row.try_get::<_, i64>(0)?, 0, "a read command created the schema");
    Ok(())
}

#[test]
fn a_bad_postgres_url_is_one_line_naming_the_problem() -> TestResult {
    for args in [&["streams"][..], &["verify"], &["import", "jsonl", "-"]] {
        let run = annals_pg("postgres://ada:s3cret@db.internal:notaport/shop", "annals", args)?;
        let line = run.one_line_error(1);
        assert!(line.starts_with("error: the connection string does not parse: "), "{args:?}: {line}");
        assert!(line.contains("port"), "{args:?}: {line}");
        assert!(!line.contains("s3cret"), "{args:?}: {line}");
    }
    let copy: Run = command().args(["copy", "--from", "postgresql://h:x/db", "--to", "target"]).output()?.into();
    assert!(copy.one_line_error(1).contains("the connection string does not parse"), "{copy:?}");
    Ok(())
}

#[test]
fn an_unreachable_server_is_one_line_at_once() -> TestResult {
    // Nothing listens on port 1: the connection is refused, well within the connect timeout.
    let url = "postgres://ada:s3cret@127.0.0.1:1/shop";
    for args in [&["streams"][..], &["tail", "-f"], &["verify"], &["import", "jsonl", "-"]] {
        let started = Instant::now();
        let run = annals_pg(url, "annals", args)?;
        let line = run.one_line_error(1);
        assert!(line.starts_with("error: cannot reach the database server 127.0.0.1:1: "), "{args:?}: {line}");
        assert!(!line.contains("s3cret"), "{args:?}: {line}");
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?} took {:?}", started.elapsed());
    }
    let dir = tempfile::tempdir()?;
    let target = dir.path().join("target");
    let copy: Run =
        command().args(["copy", "--from", url, "--connect-timeout", "1", "--to"]).arg(&target).output()?.into();
    assert!(copy.one_line_error(1).contains("cannot reach the database server 127.0.0.1:1"), "{copy:?}");
    assert!(!target.exists(), "the copy created its target without a source");
    Ok(())
}

#[tokio::test]
async fn a_locked_store_is_one_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    small_store(dir.path()).await?;
    let held = SledStore::open(dir.path())?;
    for args in [&["streams"][..], &["verify"], &["import", "jsonl", "-"]] {
        let line = annals(dir.path(), args)?.one_line_error(1).to_owned();
        assert!(line.contains("is locked by another process"), "{args:?}: {line}");
    }
    drop(held);
    Ok(())
}

#[test]
fn without_a_store_the_error_says_how_to_name_one() -> TestResult {
    let run: Run = command().arg("streams").output()?.into();
    assert!(run.one_line_error(1).contains("--store DIR|URL or set ANNALS_STORE"));
    Ok(())
}

#[test]
fn a_bad_command_line_exits_with_1_not_2() -> TestResult {
    let dir = tempfile::tempdir()?;
    for args in [&["log", "--until", "yesterday"][..], &["bogus"], &["read"], &["subscriptions", "x", "skip"]] {
        let run = annals(dir.path(), args)?;
        assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
        assert!(run.stderr.starts_with("error: "), "{args:?}: {run:?}");
    }
    Ok(())
}

#[tokio::test]
async fn verify_passes_a_healthy_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    small_store(dir.path()).await?;
    let run = annals(dir.path(), &["verify"])?;
    assert!(run.ok(), "{run:?}");
    assert!(run.stdout.contains("events:         4\n"), "{}", run.stdout);
    assert!(run.stdout.ends_with("no problems found\n"), "{}", run.stdout);
    let report = annals(dir.path(), &["verify", "--json"])?.json()?;
    assert_eq!((&report["ok"], &report["events"], &report["streams"]), (&true.into(), &4.into(), &3.into()));
    assert_eq!(report["problems"], serde_json::json!([]));
    Ok(())
}

/// sled releases the lock of a just-closed store a little later.
fn raw_open(dir: &Path) -> sled::Result<sled::Db> {
    let started = Instant::now();
    loop {
        match sled::open(dir) {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && started.elapsed() < Duration::from_secs(2) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            opened => return opened,
        }
    }
}

/// Flips a bit in the last event of the log record whose first position is `first`, the way
/// `tests/sled_verify.rs` does, following `docs/storage-format.md`: the `annals` tree, key `L` and
/// the record's first position as 8 big-endian bytes.
fn damage_record(dir: &Path, first: u64) -> TestResult {
    let db = raw_open(dir)?;
    let tree = db.open_tree("annals")?;
    let mut key = vec![b'L'];
    key.extend_from_slice(&first.to_be_bytes());
    let mut value = tree.get(&key)?.ok_or("no record there")?.to_vec();
    if let Some(last) = value.last_mut() {
        *last ^= 0x20;
    }
    tree.insert(key, value)?;
    db.flush()?;
    Ok(())
}

/// Three appends, three log records: positions 1, 2 to 3, and 4.
async fn three_records(dir: &Path) -> TestResult {
    use annals::{EventStore, ExpectedVersion, NewEvent, StreamId};
    let store = SledStore::open(dir)?;
    let (a, b) = (StreamId::new("a")?, StreamId::new("b")?);
    store.append(&a, ExpectedVersion::NoStream, vec![NewEvent::raw("E", "{\"n\":1}")]).await?;
    store
        .append(&b, ExpectedVersion::NoStream, vec![NewEvent::raw("E", "{\"n\":2}"), NewEvent::raw("E", "{}")])
        .await?;
    store.append(&a, ExpectedVersion::Any, vec![NewEvent::raw("E", "{\"n\":4}")]).await?;
    Ok(())
}

#[tokio::test]
async fn verify_exits_with_2_and_names_each_problem_on_a_damaged_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    three_records(dir.path()).await?;
    damage_record(dir.path(), 2)?;

    let run = annals(dir.path(), &["verify"])?;
    let line = run.one_line_error(2);
    assert!(line.contains("the store is damaged"), "{line}");
    assert!(run.stdout.contains("problem(s):\n"), "{}", run.stdout);
    assert!(
        run.stdout.lines().any(|l| l.starts_with("  position 3: ") && l.contains("does not decode")),
        "{}",
        run.stdout
    );

    let json = annals(dir.path(), &["verify", "--json"])?;
    assert_eq!(json.code, Some(2));
    let report = json.json()?;
    assert_eq!(report["ok"], false);
    let problems = report["problems"].as_array().ok_or("no problems array")?;
    assert!(problems
        .iter()
        .any(|p| p["position"] == 3 && p["what"].as_str().is_some_and(|w| w.contains("does not decode"))));
    Ok(())
}

#[tokio::test]
async fn a_command_that_reads_a_damaged_record_exits_with_2() -> TestResult {
    let dir = tempfile::tempdir()?;
    three_records(dir.path()).await?;
    damage_record(dir.path(), 4)?;
    let log = annals(dir.path(), &["log", "--json"])?;
    let line = log.one_line_error(2);
    assert!(line.contains("corrupt log record at position 4"), "{line}");
    assert_eq!(log.json_lines()?.len(), 3, "the events before the damage are printed");
    let read = annals(dir.path(), &["read", "a"])?;
    assert!(read.one_line_error(2).contains("corrupt"), "{read:?}");
    Ok(())
}

/// Damage done to a store's data file.
type Cut = fn(&Path) -> std::io::Result<()>;

/// A store with many records, closed cleanly (its head file then holds its head).
async fn larger_store(dir: &Path) -> TestResult {
    let store = SledStore::open(dir)?;
    for i in 0..300 {
        let stream = annals::StreamId::new(format!("s-{}", i % 10))?;
        let events = (0..10).map(|_| annals::NewEvent::raw("Touched", r#"{"padding":"to fill a few pages"}"#));
        store.append(&stream, annals::ExpectedVersion::Any, events.collect()).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_store_damaged_past_opening_exits_2_on_every_command() -> TestResult {
    // The reproductions of issue 10: a data file cut (to 25 %), emptied, and deleted. A cut must
    // reach the events: the later half of the file of a store closed cleanly holds what sled and the
    // next open can do without (the last slice of the id index, pages since rewritten), and a store
    // cut there opens whole (`verify` finds all 3,000 events), as it did from 50 % up when measured.
    let cuts: [(&str, Cut); 3] = [
        ("cut to 25 %", |db| {
            let file = std::fs::OpenOptions::new().write(true).open(db)?;
            let len = file.metadata()?.len();
            file.set_len(len / 4)
        }),
        ("emptied", |db| std::fs::OpenOptions::new().write(true).open(db)?.set_len(0)),
        ("deleted", |db| std::fs::remove_file(db)),
    ];
    for (label, cut) in cuts {
        let dir = tempfile::tempdir()?;
        larger_store(dir.path()).await?;
        cut(&dir.path().join("db"))?;
        for args in [&["verify"][..], &["streams"], &["log"]] {
            let run = annals(dir.path(), args)?;
            assert_eq!(run.code, Some(2), "{label}, {args:?}: {run:?}");
            assert!(!run.stderr.contains("panicked"), "{label}, {args:?}: {run:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn verify_on_postgres_exits_with_2_and_names_each_problem() -> TestResult {
    use annals::{EventStore, ExpectedVersion, NewEvent, StreamId};
    let url = pg_url()?;
    let schema = fresh_schema();
    {
        let store = common::open_pg(&url, &schema).await?;
        let (a, b) = (StreamId::new("a")?, StreamId::new("b")?);
        for stream in [&a, &b, &a, &a] {
            store.append(stream, ExpectedVersion::Any, vec![NewEvent::raw("E", "{}")]).await?;
        }
    }
    let healthy = annals_pg(&url, &schema, &["verify"])?;
    assert!(healthy.ok() && healthy.stdout.ends_with("no problems found\n"), "{healthy:?}");

    // Damage the tables behind the store's back: "a" jumps from version 2 to 5 at position 4, and
    // "b" is listed past its events.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client.execute(&format!("UPDATE \"{schema}\".events SET version = 5 WHERE position = 4"), &[]).await?;
    client.execute(&format!("UPDATE \"{schema}\".streams SET version = 7 WHERE stream = 'b'"), &[]).await?;

    let run = annals_pg(&url, &schema, &["verify"])?;
    assert!(run.one_line_error(2).contains("the store is damaged: verify found 3 problem(s)"), "{run:?}");
    for expected in [
        "  position 4: a version 5, expected 3",
        "  position 0: stream a is listed at version 3, its events reach 5",
        "  position 0: stream b is listed at version 7, its events reach 1",
    ] {
        assert!(run.stdout.lines().any(|l| l == expected), "{expected:?} in\n{}", run.stdout);
    }
    let json = annals_pg(&url, &schema, &["verify", "--json"])?;
    assert_eq!(json.code, Some(2));
    let report = json.json()?;
    assert_eq!((&report["ok"], &report["events"], &report["head"]), (&false.into(), &4.into(), &4.into()));

    // A hole in the log: the store's reader refuses it as damage, which is exit code 2 too.
    client.execute(&format!("DELETE FROM \"{schema}\".events WHERE position = 3"), &[]).await?;
    let run = annals_pg(&url, &schema, &["verify"])?;
    assert!(run.one_line_error(2).contains("corrupt event row at position 3"), "{run:?}");
    Ok(())
}
