//! The read commands (`streams`, `read`, `log`, `tail`, `stats`) on a small store built through the
//! library: their filters and bounds, their text for people and their JSON for scripts, `tail -f`
//! ending cleanly on Ctrl-C, the store named by `ANNALS_STORE`, and an example in every `--help`.
#![allow(missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use annals::{EventStore, ReadLog, SledStore};
use common::{annals, command, small_store, Run, TestResult};
use futures_util::TryStreamExt;
use serde_json::{json, Value};

fn positions(run: &Run) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    assert!(run.ok(), "{run:?}");
    run.json_lines()?.iter().map(|e| e["position"].as_u64().ok_or_else(|| "no position".into())).collect()
}

#[tokio::test]
async fn streams_lists_versions_now_and_as_of_either_time() -> TestResult {
    let dir = tempfile::tempdir()?;
    small_store(dir.path()).await?;
    let all = annals(dir.path(), &["streams", "--json"])?;
    assert_eq!(
        all.json_lines()?,
        [
            json!({ "stream": "customer-1", "version": 1 }),
            json!({ "stream": "order-1", "version": 2 }),
            json!({ "stream": "order-2", "version": 1 }),
        ]
    );
    let orders = annals(dir.path(), &["streams", "--prefix", "order-", "--json"])?;
    assert_eq!(orders.json_lines()?.len(), 2);

    // Business time: order-1's payment occurred on 2013-02-01, order-2 on 2013-03-01.
    let occurred = annals(dir.path(), &["streams", "--as-of", "2013-02-15", "--occurred", "--json"])?;
    assert_eq!(
        occurred.json_lines()?,
        [
            json!({ "stream": "customer-1", "version": 1, "events": 1 }),
            json!({ "stream": "order-1", "version": 2, "events": 2 })
        ]
    );

    // Recording time: as of the second event's recorded_at, the streams as the library saw them.
    let events: Vec<_> = {
        let store = SledStore::open(dir.path())?;
        store.read_log(ReadLog::from_start()).try_collect().await?
    };
    let second = events[1].recorded_at;
    let mut expected: Vec<Value> = Vec::new();
    for name in ["customer-1", "order-1", "order-2"] {
        let count = events.iter().filter(|e| e.stream.as_str() == name && e.recorded_at <= second).count();
        if count > 0 {
            expected.push(json!({ "stream": name, "version": count, "events": count }));
        }
    }
    let as_of = second.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let recorded = annals(dir.path(), &["streams", "--as-of", &as_of, "--recorded", "--json"])?;
    assert_eq!(recorded.json_lines()?, expected);
    let before = annals(dir.path(), &["streams", "--as-of", "2000-01-01"])?;
    assert_eq!(before.stdout.trim(), "(no streams)");

    let text = annals(dir.path(), &["streams"])?;
    assert!(text.ok(), "{text:?}");
    assert_eq!(text.stdout.lines().next(), Some("STREAM      VERSION"));
    assert!(text.stdout.lines().any(|l| l == "order-1     2"), "{}", text.stdout);
    Ok(())
}

/// A stream whose only event that occurred by the time asked is its third (history entered late):
/// as of then it is at version 3 with one event, not "version 1".
#[tokio::test]
async fn streams_as_of_a_business_time_show_the_real_version_and_the_count_apart() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = SledStore::open(dir.path())?;
        let stream = annals::StreamId::new("loan-7")?;
        let at = |day: &str| -> Result<chrono::DateTime<chrono::Utc>, chrono::ParseError> {
            Ok(chrono::DateTime::parse_from_rfc3339(&format!("{day}T12:00:00Z"))?.to_utc())
        };
        let events = vec![
            annals::NewEvent::raw("LoanOpened", "{}").with_occurred_at(at("2026-05-04")?),
            annals::NewEvent::raw("ReminderSent", "{}").with_occurred_at(at("2026-05-18")?),
            // Entered last, happened first: the book was returned before all of it.
            annals::NewEvent::raw("LoanCorrected", "{}").with_occurred_at(at("2026-05-01")?),
        ];
        store.append(&stream, annals::ExpectedVersion::NoStream, events).await?;
    }
    let json = annals(dir.path(), &["streams", "--as-of", "2026-05-02", "--occurred", "--json"])?;
    assert_eq!(json.json_lines()?, [json!({ "stream": "loan-7", "version": 3, "events": 1 })]);
    let text = annals(dir.path(), &["streams", "--as-of", "2026-05-02", "--occurred"])?;
    let lines: Vec<Vec<&str>> = text.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines, [vec!["STREAM", "VERSION", "EVENTS"], vec!["loan-7", "3", "1"]], "{text:?}");
    let now = annals(dir.path(), &["streams", "--json"])?;
    assert_eq!(now.json_lines()?, [json!({ "stream": "loan-7", "version": 3 })]);
    Ok(())
}

#[tokio::test]
async fn read_shows_one_stream_with_whole_envelopes() -> TestResult {
    let dir = tempfile::tempdir()?;
    small_store(dir.path()).await?;
    let run = annals(dir.path(), &["read", "order-1", "--json"])?;
    let events = run.json_lines()?;
    assert_eq!(events.len(), 2);
    assert_eq!((&events[0]["version"], &events[0]["position"]), (&json!(1), &json!(1)));
    assert_eq!(events[0]["event_type"], "OrderPlaced");
    assert_eq!(events[0]["payload"], json!({ "item": "book", "total": 1250 }));
    assert_eq!(events[0]["metadata"], json!({ "correlation_id": "checkout-19", "headers": { "user": "ada" } }));
    assert_eq!(events[0]["occurred_at"], "2013-01-10T09:00:00Z");
    assert!(events[0]["id"].is_string() && events[0]["recorded_at"].is_string());
    assert_eq!(events[1]["event_type"], "OrderPaid");

    let last = annals(dir.path(), &["read", "order-1", "--backward", "--limit", "1", "--json"])?;
    assert_eq!(last.json_lines()?.iter().map(|e| e["version"].clone()).collect::<Vec<_>>(), [json!(2)]);
    let from = annals(dir.path(), &["read", "order-1", "--from", "2", "--json"])?;
    assert_eq!(positions(&from)?, [3]);
    let then = annals(dir.path(), &["read", "order-1", "--as-of", "2013-01-31T23:59:59Z", "--occurred", "--json"])?;
    assert_eq!(positions(&then)?, [1]);

    let text = annals(dir.path(), &["read", "order-1"])?;
    assert!(text.ok(), "{text:?}");
    for expected in [
        "event 1: OrderPlaced in order-1 at version 1",
        "  occurred at: 2013-01-10T09:00:00.000000Z",
        "  correlation: checkout-19",
        "  header:      user=ada",
        "  payload:     {\"item\":\"book\",\"total\":1250}",
        "event 3: OrderPaid in order-1 at version 2",
    ] {
        assert!(text.stdout.lines().any(|l| l == expected), "{expected:?} in\n{}", text.stdout);
    }

    let missing = annals(dir.path(), &["read", "order-9"])?;
    assert!(missing.one_line_error(1).contains("\"order-9\" has no events"));
    Ok(())
}

#[tokio::test]
async fn log_filters_by_type_and_prefix_and_stops_at_positions_and_times() -> TestResult {
    let dir = tempfile::tempdir()?;
    small_store(dir.path()).await?;
    let cases: [(&[&str], &[u64]); 10] = [
        (&[], &[1, 2, 3, 4]),
        (&["--type", "OrderPlaced"], &[1, 2]),
        (&["--type", "OrderPaid", "--type", "CustomerJoined"], &[3, 4]),
        (&["--prefix", "order-", "--type", "OrderPaid"], &[3]),
        (&["--from", "2", "--limit", "2"], &[2, 3]),
        (&["--until", "2"], &[1, 2]),
        (&["--until", "2013-02-15", "--occurred"], &[1, 3, 4]),
        (&["--until", "2000-01-01"], &[]),
        // `--as-of`, as every other command spells it, is the same option.
        (&["--as-of", "2"], &[1, 2]),
        (&["--as-of", "2013-02-15", "--occurred"], &[1, 3, 4]),
    ];
    for (args, expected) in cases {
        let mut all = vec!["log", "--json"];
        all.extend_from_slice(args);
        assert_eq!(positions(&annals(dir.path(), &all)?)?, expected, "log {args:?}");
    }
    let text = annals(dir.path(), &["log", "--prefix", "customer-"])?;
    assert!(text.stdout.starts_with("event 4: CustomerJoined in customer-1 at version 1\n"), "{text:?}");
    let position_and_occurred = annals(dir.path(), &["log", "--until", "2", "--occurred"])?;
    assert!(position_and_occurred.one_line_error(1).contains("--occurred needs a time"));
    Ok(())
}

#[tokio::test]
async fn tail_shows_the_last_events_that_match() -> TestResult {
    let dir = tempfile::tempdir()?;
    small_store(dir.path()).await?;
    assert_eq!(positions(&annals(dir.path(), &["tail", "--json"])?)?, [1, 2, 3, 4]);
    assert_eq!(positions(&annals(dir.path(), &["tail", "-n", "2", "--json"])?)?, [3, 4]);
    assert_eq!(positions(&annals(dir.path(), &["tail", "-n", "1", "--type", "OrderPlaced", "--json"])?)?, [2]);
    assert_eq!(positions(&annals(dir.path(), &["tail", "--from", "3", "--json"])?)?, [3, 4]);
    assert_eq!(positions(&annals(dir.path(), &["tail", "--prefix", "order-", "-n", "5", "--json"])?)?, [1, 2, 3]);
    let text = annals(dir.path(), &["tail", "-n", "1"])?;
    assert!(text.stdout.starts_with("event 4: CustomerJoined"), "{text:?}");
    Ok(())
}

#[tokio::test]
async fn tail_follow_prints_then_waits_and_ends_cleanly_on_ctrl_c() -> TestResult {
    let dir = tempfile::tempdir()?;
    small_store(dir.path()).await?;
    let mut child = command()
        .arg("--store")
        .arg(dir.path())
        .args(["tail", "-f", "-n", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let event: Value = serde_json::from_str(&line)?;
    assert_eq!(event["position"], 4);
    // Still running: it waits for new events.
    std::thread::sleep(Duration::from_millis(200));
    assert!(child.try_wait()?.is_none(), "tail -f ended by itself");
    let interrupt = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status()?;
    assert!(interrupt.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            child.kill()?;
            return Err("tail -f did not end on Ctrl-C".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    Ok(())
}

#[tokio::test]
async fn stats_counts_events_streams_and_types() -> TestResult {
    let dir = tempfile::tempdir()?;
    small_store(dir.path()).await?;
    let stats = annals(dir.path(), &["stats", "--json"])?.json()?;
    assert_eq!((&stats["events"], &stats["streams"], &stats["head"]), (&json!(4), &json!(3), &json!(4)));
    assert_eq!(stats["event_types"], json!({ "CustomerJoined": 1, "OrderPaid": 1, "OrderPlaced": 2 }));
    assert!(stats["size_on_disk"].as_u64().is_some_and(|size| size > 0), "{stats}");
    assert!(stats["first_recorded"].is_string() && stats["last_recorded"].is_string());
    assert_eq!(stats["as_of"], Value::Null);

    let then = annals(dir.path(), &["stats", "--as-of", "2013-02-15", "--occurred", "--json"])?.json()?;
    assert_eq!((&then["events"], &then["streams"]), (&json!(3), &json!(2)));
    assert_eq!(then["as_of"], json!({ "time": "2013-02-15T00:00:00.000000Z", "axis": "occurred" }));

    let text = annals(dir.path(), &["stats"])?;
    assert!(text.ok(), "{text:?}");
    for expected in ["events:          4", "streams:         3", "event types:", "  OrderPlaced     2"] {
        assert!(text.stdout.lines().any(|l| l == expected), "{expected:?} in\n{}", text.stdout);
    }
    Ok(())
}

#[tokio::test]
async fn the_store_can_come_from_annals_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    small_store(dir.path()).await?;
    let run: Run = command().env("ANNALS_STORE", dir.path()).args(["streams", "--json"]).output()?.into();
    assert_eq!(run.json_lines()?.len(), 3, "{run:?}");
    Ok(())
}

#[test]
fn every_help_has_an_example() -> TestResult {
    let commands: [&[&str]; 21] = [
        &[],
        &["streams"],
        &["read"],
        &["log"],
        &["tail"],
        &["stats"],
        &["subscriptions"],
        &["subscriptions", "requeue"],
        &["subscriptions", "skip"],
        &["import"],
        &["import", "csv"],
        &["import", "jsonl"],
        &["export"],
        &["export", "jsonl"],
        &["verify"],
        &["copy"],
        &["relay"],
        &["relay", "kafka"],
        &["relay", "pulsar"],
        &["relay", "status"],
        &["relay", "parked"],
    ];
    for args in commands {
        let run: Run = command().args(args).arg("--help").output()?.into();
        assert!(run.ok(), "{args:?}: {run:?}");
        assert!(run.stdout.contains("Example"), "{args:?} --help has no example:\n{}", run.stdout);
    }
    Ok(())
}
