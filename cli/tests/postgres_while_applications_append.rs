//! A PostgreSQL store is shared: every command runs while an application keeps appending through
//! its own connection (no "locked", verify stays healthy, a copy takes a prefix of the log), and
//! `tail -f` prints, as they commit, the events that other processes append after it started.
#![allow(missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use annals::{EventStore as _, ExpectedVersion, NewEvent, StreamId};
use common::{annals_pg, command, fresh_schema, open_pg, pg_url, TestResult};
use serde_json::Value;

/// An application in a thread of its own, with its own runtime and connections: appends one event
/// to `app-N` (N cycling over 5 streams) after another until told to stop. Returns how many.
fn application(
    url: String,
    schema: String,
    stop: Arc<AtomicBool>,
    started: mpsc::Sender<()>,
) -> std::thread::JoinHandle<Result<u64, String>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let store = open_pg(&url, &schema).await.map_err(|e| e.to_string())?;
            let mut appended = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let stream = StreamId::new(format!("app-{}", appended % 5)).map_err(|e| e.to_string())?;
                let event = NewEvent::raw("Ticked", format!(r#"{{"n":{appended}}}"#));
                store.append(&stream, ExpectedVersion::Any, vec![event]).await.map_err(|e| e.to_string())?;
                appended += 1;
                if appended == 20 {
                    let _ = started.send(());
                }
            }
            Ok(appended)
        })
    })
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).to_string_lossy().into_owned()
}

#[test]
fn every_command_runs_while_an_application_appends() -> TestResult {
    let url = pg_url()?;
    let schema = fresh_schema();
    let stop = Arc::new(AtomicBool::new(false));
    let (started, running) = mpsc::channel();
    let app = application(url.clone(), schema.clone(), Arc::clone(&stop), started);
    running
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| format!("the application did not start: {:?}", app.is_finished()))?;

    let tickets = fixture("tickets.csv");
    let export = tempfile::NamedTempFile::new()?;
    let export_path = export.path().to_string_lossy().into_owned();
    let commands: [&[&str]; 14] = [
        &["streams"],
        &["streams", "--as-of", "2013-01-01", "--json"],
        &["read", "app-1", "--limit", "5"],
        &["log", "--type", "Ticked", "--limit", "50", "--json"],
        &["tail", "-n", "3"],
        &["stats"],
        &["subscriptions"],
        &["export", "jsonl", &export_path],
        &["verify"],
        &["verify", "--json"],
        &[
            "import",
            "csv",
            &tickets,
            "--stream-column",
            "case",
            "--stream-prefix",
            "ticket-",
            "--type-column",
            "activity",
            "--time-column",
            "timestamp",
            "--skip-bad-rows",
        ],
        &["read", "ticket-7"],
        &["streams", "--prefix", "ticket-", "--json"],
        &["stats", "--json"],
    ];
    let mut failures = Vec::new();
    for args in commands {
        let run = annals_pg(&url, &schema, args)?;
        if !run.ok() || run.stderr.contains("locked") {
            failures.push(format!("{args:?}: {run:?}"));
        }
    }
    // A copy of the store in use: the log up to the head when the copy started.
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("copy");
    let copied: common::Run =
        command().args(["copy", "--from", &url, "--from-schema", &schema, "--to"]).arg(&copy).output()?.into();
    if !copied.ok() {
        failures.push(format!("copy: {copied:?}"));
    }
    stop.store(true, Ordering::Relaxed);
    let appended = app.join().map_err(|_| "the application panicked")??;
    assert!(failures.is_empty(), "while the application appended:\n{}", failures.join("\n"));
    assert!(std::fs::read_to_string(export.path())?.lines().count() >= 20);

    // Everything the application appended is there, with the four imported tickets.
    let stats = annals_pg(&url, &schema, &["stats", "--json"])?.json()?;
    assert_eq!(stats["events"], appended + 4, "{stats}");
    assert_eq!(stats["event_types"]["Ticked"], appended);
    let verify = annals_pg(&url, &schema, &["verify", "--json"])?.json()?;
    assert_eq!((&verify["ok"], &verify["events"]), (&Value::from(true), &Value::from(appended + 4)));

    // The copy holds a prefix of the log, and is healthy.
    assert!(common::annals(&copy, &["verify"])?.ok());
    let copied = common::annals(&copy, &["log", "--json"])?.stdout;
    let log = annals_pg(&url, &schema, &["log", "--json"])?.stdout;
    assert!(copied.lines().count() >= 24 && log.starts_with(&copied), "the copy is not a prefix of the log");
    Ok(())
}

/// Reads `annals tail -f --json` lines in a thread, so the test can wait for them with a timeout.
fn lines_of(child: &mut std::process::Child) -> Result<mpsc::Receiver<String>, &'static str> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    Ok(lines)
}

fn next_event(lines: &mpsc::Receiver<String>) -> Result<Value, Box<dyn std::error::Error>> {
    let line = lines.recv_timeout(Duration::from_secs(15)).map_err(|_| "tail -f printed nothing within 15 s")?;
    Ok(serde_json::from_str(&line)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follow_prints_what_other_processes_append_as_they_commit() -> TestResult {
    let url = pg_url()?;
    let schema = fresh_schema();
    let store = open_pg(&url, &schema).await?;
    let first = StreamId::new("order-1")?;
    store.append(&first, ExpectedVersion::NoStream, vec![NewEvent::raw("OrderPlaced", "{}")]).await?;

    let mut child = command()
        .args(["--store", &url, "--schema", &schema, "tail", "-f", "-n", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let lines = lines_of(&mut child)?;
    // The last event first: from then on, tail follows the head.
    assert_eq!(next_event(&lines)?["position"], 1);

    // This process appends through its own connection...
    store
        .append(&first, ExpectedVersion::Exact(annals::Version::new(1)), vec![NewEvent::raw("OrderPaid", "{}")])
        .await?;
    let paid = next_event(&lines)?;
    assert_eq!((&paid["position"], &paid["event_type"]), (&Value::from(2), &Value::from("OrderPaid")));

    // ... and so does another process: an import by a second `annals`.
    let tickets = fixture("tickets.csv");
    let import = annals_pg(
        &url,
        &schema,
        &[
            "import",
            "csv",
            &tickets,
            "--stream-column",
            "case",
            "--type-column",
            "activity",
            "--time-column",
            "timestamp",
            "--skip-bad-rows",
        ],
    )?;
    assert!(import.ok(), "{import:?}");
    let started = Instant::now();
    let mut imported = Vec::new();
    while imported.len() < 4 {
        let event = next_event(&lines)?;
        imported.push(event["position"].as_u64().ok_or("no position")?);
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    assert_eq!(imported, [3, 4, 5, 6]);

    let interrupt = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status()?;
    assert!(interrupt.success());
    let waited = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if waited.elapsed() > Duration::from_secs(10) {
            child.kill()?;
            return Err("tail -f did not end on Ctrl-C".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = {
        let mut text = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut text)?;
        }
        text
    };
    assert!(status.success(), "{status:?}: {stderr}");
    Ok(())
}
