//! The life of a stream from the command line, on sled and on PostgreSQL: `delete` (soft and hard),
//! `truncate`, `info`, `retention set|list|remove`, `scavenge` applying the rules and removing what
//! reads no longer show (resumed after Ctrl-C), and `forget` erasing a subject's personal data; the
//! destructive commands change nothing without `--yes`; `read` of a deleted stream fails clearly, `streams` leaves deleted streams out, and
//! `verify` counts what scavenges and deletes left as information, not damage.
#![allow(missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use annals::personal::PersonalStore;
use annals::{EventStore, ExpectedVersion, NewEvent, PersonalData, SledStore, StreamId};
use common::{annals, annals_pg, command, fresh_schema, open_pg, pg_url, Run, TestResult};
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error>;

/// The binary on one store: `annals --store ... ARGS...`.
type Annals<'a> = &'a dyn Fn(&[&str]) -> std::io::Result<Run>;

/// Fourteen events: 1 order-1, 2 order-2, 3 order-1 (version 2), 4 customer-1, 5 to 14 reading-1
/// (versions 1 to 10).
async fn fill<S: EventStore + ?Sized>(store: &S) -> TestResult {
    let (order1, order2) = (StreamId::new("order-1")?, StreamId::new("order-2")?);
    let event = |n: u32| NewEvent::raw("Happened", format!("{{\"n\":{n}}}"));
    store.append(&order1, ExpectedVersion::NoStream, vec![event(1)]).await?;
    store.append(&order2, ExpectedVersion::NoStream, vec![event(2)]).await?;
    store.append(&order1, ExpectedVersion::Any, vec![event(3)]).await?;
    store.append(&StreamId::new("customer-1")?, ExpectedVersion::NoStream, vec![event(4)]).await?;
    let readings = (5..15).map(event).collect();
    store.append(&StreamId::new("reading-1")?, ExpectedVersion::NoStream, readings).await?;
    Ok(())
}

fn info(annals: Annals<'_>, stream: &str) -> Result<Value, Error> {
    let run = annals(&["info", stream, "--json"])?;
    assert!(run.ok(), "{run:?}");
    Ok(run.json()?)
}

fn versions(run: &Run) -> Result<Vec<u64>, Error> {
    assert!(run.ok(), "{run:?}");
    Ok(run.json_lines()?.iter().filter_map(|e| e["version"].as_u64()).collect())
}

fn positions(run: &Run) -> Result<Vec<u64>, Error> {
    assert!(run.ok(), "{run:?}");
    Ok(run.json_lines()?.iter().filter_map(|e| e["position"].as_u64()).collect())
}

/// The value of the row `label` of a table printed as `label   value`.
fn row<'a>(run: &'a Run, label: &str) -> Option<&'a str> {
    run.stdout.lines().find_map(|line| line.strip_prefix(label)).map(str::trim_start)
}

fn streams(annals: Annals<'_>) -> Result<Vec<String>, Error> {
    let run = annals(&["streams", "--json"])?;
    assert!(run.ok(), "{run:?}");
    Ok(run.json_lines()?.iter().filter_map(|s| s["stream"].as_str().map(str::to_owned)).collect())
}

/// Everything the store holds, events and checkpoints, as `export jsonl` prints it.
fn everything(annals: Annals<'_>) -> Result<String, Error> {
    let run = annals(&["export", "jsonl"])?;
    assert!(run.ok(), "{run:?}");
    Ok(run.stdout)
}

/// The destructive commands without `--yes`: one line saying what they would do and to add
/// `--yes`, exit code 1, and the store as it was.
fn refusals_change_nothing(annals: Annals<'_>) -> TestResult {
    // The log and checkpoints, and what each stream's life is (deletes and truncations are not in
    // an export).
    let before = everything(annals)?;
    let lives = ["order-1", "order-2", "reading-1"].map(|stream| info(annals, stream).ok());
    let refused: [(&[&str], &[&str]); 5] = [
        (&["delete", "order-1"], &["not deleting stream \"order-1\"", "soft-deleted at version 2"]),
        (&["delete", "order-2", "--hard"], &["not deleting stream \"order-2\"", "hard-deleted at version 1"]),
        (&["truncate", "reading-1", "--before", "5"], &["not truncating stream \"reading-1\"", "versions 1 to 4"]),
        (&["scavenge"], &["not scavenging", "hard-deleted streams"]),
        (&["scavenge", "--chunk", "1", "--json"], &["not scavenging"]),
    ];
    for (args, says) in refused {
        let run = annals(args)?;
        let line = run.one_line_error(1);
        assert!(line.contains("add --yes"), "{args:?}: {line}");
        for said in says {
            assert!(line.contains(said), "{args:?}: {said:?} in {line}");
        }
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
    }
    assert_eq!(everything(annals)?, before, "a refused command changed the store");
    assert_eq!(["order-1", "order-2", "reading-1"].map(|stream| info(annals, stream).ok()), lives);
    Ok(())
}

/// Soft and hard deletion, conditional deletion and truncation, and what reads answer after.
fn delete_and_truncate(annals: Annals<'_>) -> TestResult {
    // Soft: reads show nothing, the log and --history still show the events.
    let run = annals(&["delete", "order-1", "--yes"])?;
    assert!(run.ok(), "{run:?}");
    assert!(run.stdout.starts_with("soft-deleted stream \"order-1\" at version 2: "), "{run:?}");
    assert!(run.stdout.contains("an append starts it again at version 3"), "{run:?}");
    assert!(!streams(annals)?.contains(&"order-1".to_owned()));
    let read = annals(&["read", "order-1"])?;
    assert!(read.one_line_error(1).contains("stream \"order-1\" has no events: it was deleted at "), "{read:?}");
    assert_eq!(versions(&annals(&["read", "order-1", "--history", "--json"])?)?, [1, 2]);
    assert_eq!(positions(&annals(&["log", "--json"])?)?, (1..=14).collect::<Vec<_>>());
    let order = info(annals, "order-1")?;
    assert_eq!((&order["last_version"], &order["current_version"]), (&json!(2), &Value::Null), "{order}");
    assert_eq!((&order["truncated_before"], &order["tombstone"]), (&json!(3), &json!(false)), "{order}");
    assert_eq!(order["soft_deletions"][0]["next_version"], 3, "{order}");
    assert!(order["soft_deletions"][0]["at"].is_string(), "{order}");
    let text = annals(&["info", "order-1"])?;
    assert!(text.stdout.contains("current version:   none (deleted)"), "{text:?}");
    assert!(text.stdout.contains("(the next life starts at 3)"), "{text:?}");
    let again = annals(&["delete", "order-1", "--yes"])?;
    assert_eq!(again.stdout, "stream \"order-1\" has no events to delete: nothing changed\n", "{again:?}");

    // A failed expectation changes nothing.
    let wrong = annals(&["delete", "order-2", "--expected-version", "5", "--yes"])?;
    assert!(wrong.one_line_error(1).contains("order-2"), "{wrong:?}");
    let order2 = info(annals, "order-2")?;
    assert_eq!((&order2["tombstone"], &order2["soft_deletions"]), (&json!(false), &json!([])), "{order2}");

    // Hard: a tombstone, every read fails, forever.
    let hard = annals(&["delete", "order-2", "--hard", "--expected-version", "1", "--yes", "--json"])?;
    let hard = hard.json()?;
    assert_eq!((&hard["mode"], &hard["changed"], &hard["version"]), (&json!("hard"), &json!(true), &json!(1)));
    for args in [&["read", "order-2"][..], &["read", "order-2", "--history"]] {
        let run = annals(args)?;
        assert!(run.one_line_error(1).contains("stream \"order-2\" is hard-deleted"), "{args:?}: {run:?}");
    }
    assert_eq!(info(annals, "order-2")?["tombstone"], true);
    assert!(annals(&["info", "order-2"])?.stdout.contains("hard-deleted:      yes"));
    let twice = annals(&["delete", "order-2", "--hard", "--yes"])?;
    assert!(twice.one_line_error(1).contains("stream \"order-2\" is deleted"), "{twice:?}");
    assert_eq!(streams(annals)?, ["customer-1", "reading-1"]);

    // Truncation: the point only moves forward, and not past the end.
    let truncated = annals(&["truncate", "reading-1", "--before", "5", "--yes"])?;
    assert!(truncated.stdout.starts_with("stream \"reading-1\" now starts at version 5: versions 1 to 4"));
    assert_eq!(versions(&annals(&["read", "reading-1", "--json"])?)?, (5..=10).collect::<Vec<_>>());
    assert_eq!(versions(&annals(&["read", "reading-1", "--history", "--json"])?)?, (1..=10).collect::<Vec<_>>());
    let back = annals(&["truncate", "reading-1", "--before", "3", "--yes", "--json"])?.json()?;
    assert_eq!((&back["changed"], &back["truncated_before"]), (&json!(false), &json!(5)), "{back}");
    let past = annals(&["truncate", "reading-1", "--before", "12", "--yes"])?;
    assert!(past.one_line_error(1).contains("cannot truncate stream \"reading-1\" before version 12"), "{past:?}");
    assert_eq!(info(annals, "reading-1")?["truncated_before"], 5);
    Ok(())
}

/// Retention rules set, listed and shown by `info`; a scavenge applies them and removes what the
/// deletes and truncation hid; a second one removes nothing; the rule is removed.
fn retention_and_scavenge(annals: Annals<'_>, logical_verify: bool) -> TestResult {
    let set = annals(&["retention", "set", "--prefix", "reading-", "--max-count", "3"])?;
    assert_eq!(set.stdout, "retention of prefix \"reading-\": max count 3; `annals scavenge` applies it\n", "{set:?}");
    let aged = annals(&["retention", "set", "--stream", "customer-1", "--max-age", "30d", "--json"])?.json()?;
    assert_eq!(
        aged,
        json!({ "stream": "customer-1", "max_age": "30d", "max_age_seconds": 2_592_000, "max_count": null })
    );
    let list = annals(&["retention", "list", "--json"])?.json_lines()?;
    assert_eq!(
        list,
        [
            json!({ "stream": "customer-1", "max_age": "30d", "max_age_seconds": 2_592_000, "max_count": null }),
            json!({ "prefix": "reading-", "max_age": null, "max_age_seconds": null, "max_count": 3 }),
        ]
    );
    let text = annals(&["retention", "list"])?;
    assert!(text.stdout.contains("prefix \"reading-\"  -        3\n"), "{text:?}");
    assert_eq!(info(annals, "reading-1")?["retention"], json!([list[1]]));

    // order-2 is hard-deleted, order-1 soft-deleted: information, not damage.
    let verify = annals(&["verify", "--json"])?;
    assert!(verify.ok(), "before the scavenge: {verify:?}");
    assert_eq!((&verify.json()?["deleted_streams"], &verify.json()?["scavenged"]), (&json!(2), &json!(0)));
    let text = annals(&["verify"])?;
    assert!(row(&text, "deleted streams:").is_some_and(|r| r.starts_with("2 ")), "{text:?}");
    assert!(text.stdout.ends_with("no problems found\n"), "{text:?}");

    let run = annals(&["scavenge", "--yes", "--chunk", "4", "--json"])?;
    assert!(run.ok(), "{run:?}");
    let lines = run.json_lines()?;
    assert_eq!(lines[0], json!({ "type": "start", "head": 14, "resumed_from": null, "retention_rules": 2 }));
    let summary = lines.last().ok_or("no summary")?;
    assert_eq!((&summary["type"], &summary["reason"]), (&json!("summary"), &json!("finished")), "{summary}");
    // order-1's 2 events, order-2's 1 (hard-deleted), reading-1's 7 (truncated before 5, then kept
    // its newest 3: from 8); customer-1 is younger than 30 days.
    assert_eq!((&summary["removed"], &summary["streams_truncated"]), (&json!(10), &json!(1)), "{summary}");
    assert!(summary["examined"].as_u64().is_some_and(|n| n >= 10), "{summary}");
    assert!(summary["bytes_removed"].as_u64().is_some_and(|n| n > 0), "{summary}");

    assert_eq!(positions(&annals(&["log", "--json"])?)?, [4, 12, 13, 14]);
    assert_eq!(versions(&annals(&["read", "reading-1", "--json"])?)?, [8, 9, 10]);
    assert_eq!(versions(&annals(&["read", "order-1", "--history", "--json"])?)?, Vec::<u64>::new());
    assert_eq!(info(annals, "order-1")?["last_version"], 2, "scavenging keeps the last version");
    let verify = annals(&["verify", "--json"])?;
    assert!(verify.ok(), "the holes are not damage: {verify:?}");
    assert_eq!(verify.json()?["scavenged"], 10, "{verify:?}");
    let text = annals(&["verify"])?;
    let scavenged = row(&text, "scavenged:");
    assert!(scavenged.is_some_and(|r| r.starts_with("10 event(s) removed by scavenges")), "{text:?}");
    assert!(text.stdout.ends_with("no problems found\n"), "{text:?}");
    if logical_verify {
        assert_eq!(verify.json()?["gaps"], 2, "{verify:?}");
    }

    let again = annals(&["scavenge", "--yes"])?;
    assert!(again.ok(), "{again:?}");
    assert!(again.stdout.starts_with("scavenging the log up to position 14, after applying 2 retention rule(s)\n"));
    assert!(again.stdout.contains(": examined 4 event(s), removed 0, 0 bytes of event data, "), "{again:?}");

    let removed = annals(&["retention", "remove", "--prefix", "reading-"])?;
    assert_eq!(removed.stdout, "removed the retention rule of prefix \"reading-\"\n", "{removed:?}");
    assert!(annals(&["retention", "remove", "--stream", "customer-1", "--json"])?.ok());
    assert_eq!(annals(&["retention", "list"])?.stdout, "(no retention rules)\n");
    let none = annals(&["retention", "remove", "--prefix", "reading-"])?;
    assert!(none.one_line_error(1).contains("there is no retention rule for prefix \"reading-\""), "{none:?}");
    Ok(())
}

fn on_sled(dir: &Path) -> impl Fn(&[&str]) -> std::io::Result<Run> + '_ {
    move |args: &[&str]| annals(dir, args)
}

#[tokio::test]
async fn refusals_without_yes_change_nothing_on_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    fill(&SledStore::open(dir.path())?).await?;
    refusals_change_nothing(&on_sled(dir.path()))?;
    Ok(())
}

#[tokio::test]
async fn delete_truncate_retention_and_scavenge_on_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    fill(&SledStore::open(dir.path())?).await?;
    delete_and_truncate(&on_sled(dir.path()))?;
    retention_and_scavenge(&on_sled(dir.path()), false)?;
    // The soft-deleted stream starts again after its last version, even with its events scavenged.
    let store = SledStore::open(dir.path())?;
    let order = StreamId::new("order-1")?;
    let appended = store.append(&order, ExpectedVersion::NoStream, vec![NewEvent::raw("E", "{}")]).await?;
    assert_eq!(appended.version.get(), 3);
    Ok(())
}

#[tokio::test]
async fn delete_truncate_retention_and_scavenge_on_postgres() -> TestResult {
    let url = pg_url()?;
    let schema = fresh_schema();
    fill(&open_pg(&url, &schema).await?).await?;
    let on_pg = |args: &[&str]| annals_pg(&url, &schema, args);
    refusals_change_nothing(&on_pg)?;
    delete_and_truncate(&on_pg)?;
    retention_and_scavenge(&on_pg, true)?;
    let store = open_pg(&url, &schema).await?;
    let order = StreamId::new("order-1")?;
    let appended = store.append(&order, ExpectedVersion::NoStream, vec![NewEvent::raw("E", "{}")]).await?;
    assert_eq!(appended.version.get(), 3);
    Ok(())
}

#[tokio::test]
async fn a_max_age_rule_removes_what_is_older() -> TestResult {
    let dir = tempfile::tempdir()?;
    let sensor = StreamId::new("sensor-1")?;
    {
        let store = SledStore::open(dir.path())?;
        let old = (0..3).map(|n| NewEvent::raw("Read", format!("{{\"n\":{n}}}"))).collect();
        store.append(&sensor, ExpectedVersion::NoStream, old).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        store.append(&sensor, ExpectedVersion::Any, vec![NewEvent::raw("Read", "{\"n\":3}")]).await?;
    }
    let annals = on_sled(dir.path());
    assert!(annals(&["retention", "set", "--stream", "sensor-1", "--max-age", "2s"])?.ok());
    let run = annals(&["scavenge", "--yes", "--json"])?;
    let summary = run.json_lines()?.pop().ok_or("no summary")?;
    assert_eq!((&summary["removed"], &summary["streams_truncated"]), (&json!(3), &json!(1)), "{run:?}");
    assert_eq!(versions(&annals(&["read", "sensor-1", "--json"])?)?, [4]);
    Ok(())
}

/// A store of `events` events in 10 streams, the odd ones hard-deleted: a scavenge removes half.
async fn half_deleted<S: EventStore + ?Sized>(store: &S, events: u64) -> TestResult {
    let per_append = 100;
    for n in 0..events / per_append {
        let stream = StreamId::new(format!("s-{}", n % 10))?;
        let batch = (0..per_append).map(|_| NewEvent::raw("Touched", r#"{"padding":"a few bytes to remove"}"#));
        store.append(&stream, ExpectedVersion::Any, batch.collect()).await?;
    }
    for n in (1..10).step_by(2) {
        store.delete_stream(&StreamId::new(format!("s-{n}"))?, ExpectedVersion::Any, annals::DeleteMode::Hard).await?;
    }
    Ok(())
}

/// Reads JSON lines from a child's stdout until one of type `kind`.
fn until_line(lines: &mut impl Iterator<Item = std::io::Result<String>>, kind: &str) -> Result<Value, Error> {
    for line in lines {
        let value: Value = serde_json::from_str(&line?)?;
        if value["type"] == kind {
            return Ok(value);
        }
    }
    Err(format!("no {kind} line before the end of the output").into())
}

/// Waits for `child` to exit, killing it after 30 seconds.
fn wait(child: &mut Child) -> Result<std::process::ExitStatus, Error> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if started.elapsed() > Duration::from_secs(30) {
            child.kill()?;
            return Err("the scavenge did not stop".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a scavenge of the store `store` names (`--store ...` arguments) one event a step, stops it
/// with `signal` once it printed its first progress (after its first step), checks it stopped cleanly with exit code 130, then runs it again and
/// checks it resumed where it stopped and removed exactly `expected` events in all.
fn interrupted_then_resumed(store: &[&str], signal: &str, expected: u64) -> TestResult {
    let mut child = command()
        .args(store)
        .args(["scavenge", "--yes", "--chunk", "1", "--no-retention", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let start = until_line(&mut lines, "start")?;
    assert_eq!(start["resumed_from"], Value::Null, "{start}");
    let progress = until_line(&mut lines, "progress")?;
    assert!(child.try_wait()?.is_none(), "the scavenge ended before it could be interrupted: grow the store");
    let sent = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status()?;
    assert!(sent.success());
    let stopping = until_line(&mut lines, "stopping")?;
    assert_eq!(stopping, json!({ "type": "stopping" }));
    let summary = until_line(&mut lines, "summary")?;
    let status = wait(&mut child)?;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().ok_or("no stderr")?, &mut stderr)?;
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert_eq!(summary["reason"], "interrupted", "{summary}");
    let stopped_at = summary["position"].as_u64().ok_or("no position in the summary")?;
    assert!(stopped_at >= progress["position"].as_u64().unwrap_or(0), "{summary} after {progress}");
    assert!(stopped_at <= start["head"].as_u64().unwrap_or(0), "{summary}");
    assert!(summary["removed"].as_u64().is_some_and(|n| n < expected), "{summary}");
    assert_eq!(
        stderr,
        format!("error: the scavenge was interrupted: run `annals scavenge --yes` again to resume from position {stopped_at}\n")
    );

    let run: Run = command().args(store).args(["scavenge", "--yes", "--no-retention"]).output()?.into();
    assert!(run.ok(), "{run:?}");
    let first = run.stdout.lines().next().unwrap_or_default();
    assert!(first.contains(&format!("resuming from position {stopped_at}")), "{run:?}");
    let last = run.stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("scavenge finished up to position "), "{run:?}");
    assert!(last.contains(&format!("(resumed from position {stopped_at}): ")), "{run:?}");
    // Stopped between two steps: the totals kept in the checkpoint add up to every removed event.
    assert!(last.contains(&format!(", removed {expected}, ")), "{run:?}");
    Ok(())
}

#[tokio::test]
async fn a_scavenge_stopped_by_ctrl_c_resumes_where_it_stopped_on_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    let events = 20_000;
    half_deleted(&SledStore::open(dir.path())?, events).await?;
    let path = dir.path().to_str().ok_or("a temporary path that is not UTF-8")?;
    interrupted_then_resumed(&["--store", path], "-INT", events / 2)?;
    let log = annals(dir.path(), &["log", "--json"])?;
    assert_eq!(log.json_lines()?.len() as u64, events / 2);
    assert!(annals(dir.path(), &["verify"])?.ok());
    Ok(())
}

#[tokio::test]
async fn a_scavenge_stopped_by_sigterm_resumes_where_it_stopped_on_postgres() -> TestResult {
    let url = pg_url()?;
    let schema = fresh_schema();
    let events = 20_000;
    half_deleted(&open_pg(&url, &schema).await?, events).await?;
    interrupted_then_resumed(&["--store", &url, "--schema", &schema], "-TERM", events / 2)?;
    let verify = annals_pg(&url, &schema, &["verify", "--json"])?;
    assert!(verify.ok(), "{verify:?}");
    assert_eq!(verify.json()?["scavenged"], events / 2);
    Ok(())
}

#[test]
fn every_lifecycle_help_has_examples() -> TestResult {
    let commands: [&[&str]; 9] = [
        &["delete"],
        &["truncate"],
        &["info"],
        &["retention"],
        &["retention", "set"],
        &["retention", "list"],
        &["retention", "remove"],
        &["scavenge"],
        &["forget"],
    ];
    for args in commands {
        let run: Run = command().args(args).arg("--help").output()?.into();
        assert!(run.ok(), "{args:?}: {run:?}");
        let example = run.stdout.split("Example:\n").nth(1).ok_or_else(|| format!("{args:?}: no example"))?;
        let shown = format!("annals -s data/events {}", args.join(" "));
        let first = args.first().copied().unwrap_or_default();
        assert!(example.contains(&format!(" {first}")), "{args:?} --help has no example of itself:\n{}", run.stdout);
        assert!(example.contains("annals -s "), "{shown}: {}", run.stdout);
    }
    let top: Run = command().arg("--help").output()?.into();
    for name in ["delete", "truncate", "retention", "scavenge", "forget", "info"] {
        assert!(top.stdout.contains(&format!("  {name} ")), "{name} is not listed:\n{}", top.stdout);
    }
    Ok(())
}

#[test]
fn bad_lifecycle_command_lines_exit_with_1() -> TestResult {
    let dir = tempfile::tempdir()?;
    let bad: [(&[&str], &str); 6] = [
        (&["retention", "set", "--prefix", "r-"], "--max-age"),
        (&["retention", "set", "--prefix", "r-", "--stream", "s", "--max-count", "3"], "cannot be used with"),
        (&["retention", "set", "--stream", "s", "--max-age", "30x"], "is not a duration"),
        (&["retention", "set", "--stream", "s", "--max-count", "0"], "0"),
        (&["delete", "s", "--expected-version", "latest", "--yes"], "is not a version"),
        (&["truncate", "s", "--yes"], "--before"),
    ];
    for (args, says) in bad {
        let run = annals(dir.path(), args)?;
        assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
        assert!(run.stderr.starts_with("error: ") && run.stderr.contains(says), "{args:?}: {run:?}");
    }
    Ok(())
}

/// One event of `member-42` with a personal e-mail address, appended through a `PersonalStore`.
async fn member<S: EventStore>(store: S) -> TestResult {
    let store = PersonalStore::new(store);
    let joined = NewEvent::json("Joined", &json!({ "member": "42", "email": "ada@example.com", "plan": "gold" }))?
        .with_personal_data(PersonalData::new("member-42", ["email"]));
    store.append(&StreamId::new("member-42")?, ExpectedVersion::NoStream, vec![joined]).await?;
    Ok(())
}

/// The e-mail address of `member-42` as a `PersonalStore` reads it, and whether the subject is
/// forgotten.
async fn email<S: EventStore>(store: S) -> Result<(Value, bool), Error> {
    use futures_util::TryStreamExt;
    let store = PersonalStore::new(store);
    let stream = StreamId::new("member-42")?;
    let events: Vec<_> = store.read_stream(&stream, annals::ReadStream::forward()).try_collect().await?;
    let payload: Value = serde_json::from_str(&events.first().ok_or("no event")?.payload)?;
    Ok((payload["email"].clone(), store.is_forgotten("member-42").await?))
}

/// `forget` refused without `--yes` (nothing changes), then done, then done again (nothing more).
fn forget(annals: Annals<'_>) -> TestResult {
    let before = everything(annals)?;
    let refused = annals(&["forget", "member-42"])?;
    let line = refused.one_line_error(1);
    assert!(line.contains("not forgetting subject \"member-42\" without --yes"), "{line}");
    assert!(line.contains("add --yes"), "{line}");
    assert_eq!(everything(annals)?, before, "a refused forget changed the store");

    let run = annals(&["forget", "member-42", "--yes"])?;
    assert!(run.stdout.starts_with("forgot subject \"member-42\": destroyed 1 key(s); "), "{run:?}");
    let again = annals(&["forget", "member-42", "--yes"])?;
    assert_eq!(again.stdout, "subject \"member-42\" is forgotten already: nothing changed\n", "{again:?}");
    let nobody = annals(&["forget", "member-7", "--yes", "--json"])?.json()?;
    assert_eq!(nobody, json!({ "subject": "member-7", "keys_destroyed": 0, "forgotten": false }));
    // The key's removal left a hole in the log: information, not damage.
    let verify = annals(&["verify", "--json"])?;
    assert!(verify.ok(), "{verify:?}");
    assert_eq!(verify.json()?["scavenged"], 1, "{verify:?}");
    Ok(())
}

#[tokio::test]
async fn forget_erases_a_subject_on_sled() -> TestResult {
    let dir = tempfile::tempdir()?;
    member(SledStore::open(dir.path())?).await?;
    assert_eq!(email(SledStore::open(dir.path())?).await?, (json!("ada@example.com"), false));
    let annals = on_sled(dir.path());
    assert!(annals(&["forget", "member-42"])?.code == Some(1));
    assert_eq!(email(SledStore::open(dir.path())?).await?, (json!("ada@example.com"), false), "refused");
    forget(&annals)?;
    assert_eq!(email(SledStore::open(dir.path())?).await?, (Value::Null, true));
    Ok(())
}

#[tokio::test]
async fn forget_erases_a_subject_on_postgres() -> TestResult {
    let url = pg_url()?;
    let schema = fresh_schema();
    member(open_pg(&url, &schema).await?).await?;
    forget(&|args: &[&str]| annals_pg(&url, &schema, args))?;
    assert_eq!(email(open_pg(&url, &schema).await?).await?, (Value::Null, true));
    Ok(())
}
