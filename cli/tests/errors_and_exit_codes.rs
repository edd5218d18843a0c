//! Failures are one line on stderr (`error: ...`) with exit code 1, read commands never create a
//! store, and `verify` exits 0 on a healthy store and 2 with each problem on a damaged one.
#![allow(missing_docs)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use annals::{EventStore as _, SledStore};
use common::{annals, command, small_store, Run, TestResult};

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
    assert!(run.one_line_error(1).contains("--store DIR or set ANNALS_STORE"));
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
    // The reproductions of issue 10: a data file cut to 80 %, emptied, and deleted.
    let cuts: [(&str, Cut); 3] = [
        ("cut to 80 %", |db| {
            let file = std::fs::OpenOptions::new().write(true).open(db)?;
            let len = file.metadata()?.len();
            file.set_len(len * 8 / 10)
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
