//! `annals relay` against real brokers started by the tests on 127.0.0.1 (tansu for Kafka,
//! pulsar-lite for Pulsar): every position of a sled store reaches the topic, `relay status` shows
//! the saved checkpoint, and later runs resume from it; next to an application appending to a
//! PostgreSQL store, the relay shows its lag, follows the appends, catches up and ends cleanly on
//! Ctrl-C; the filtered log is acknowledged by Pulsar; an unreachable broker shows as retrying with
//! its address; and `relay parked` lists what a relay in parked.
#![allow(missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use annals::relay::{InboundConfig, KafkaInbound};
use annals::{EventStore, ExpectedVersion, NewEvent, SledStore, StreamId};
use annals_testkit::{free_port, PulsarLite, Tansu};
use common::{annals, annals_pg, command, fresh_schema, open_pg, pg_url, TestResult};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error>;

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
}

/// Appends events `from..=to` to `store`, one append each, so that event N is at position N:
/// `OrderPlaced` in `order-N` (seven streams), and every fifth one a `CustomerJoined` in
/// `customer-N`.
async fn fill<S: EventStore + ?Sized>(store: &S, from: u64, to: u64) -> TestResult {
    for n in from..=to {
        let (stream, kind) = if n % 5 == 0 {
            (format!("customer-{}", n % 3), "CustomerJoined")
        } else {
            (format!("order-{}", n % 7), "OrderPlaced")
        };
        let event = NewEvent::raw(kind, format!(r#"{{"n":{n}}}"#));
        store.append(&StreamId::new(stream)?, ExpectedVersion::Any, vec![event]).await?;
    }
    Ok(())
}

/// A sled store in `dir` holding events `from..=to` (see [`fill`]); closed when this returns.
fn sled_store(dir: &Path, from: u64, to: u64) -> TestResult {
    runtime()?.block_on(async {
        let store = SledStore::open(dir)?;
        fill(&store, from, to).await
    })
}

/// One record read back from Kafka.
#[derive(Debug)]
struct Record {
    key: Option<String>,
    headers: BTreeMap<String, String>,
}

impl Record {
    fn position(&self) -> Result<u64, Error> {
        let position = self.headers.get("annals-position").ok_or("a record without annals-position")?;
        Ok(position.parse()?)
    }
}

/// Every record of `topic` (all `partitions`, assigned from the beginning), read until at least
/// `at_least` arrived and then nothing more for `quiet`. The broker's end offsets are never asked
/// for: tansu under-reports them.
fn read_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    at_least: usize,
    quiet: Duration,
) -> Result<Vec<Record>, Error> {
    static READERS: AtomicU64 = AtomicU64::new(0);
    let group = format!("reader-{}-{}", std::process::id(), READERS.fetch_add(1, Ordering::Relaxed));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    let mut records = Vec::new();
    let started = Instant::now();
    let mut last = Instant::now();
    loop {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message?;
            let mut headers = BTreeMap::new();
            for header in message.headers().iter().flat_map(|h| h.iter()) {
                let value = String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned();
                headers.insert(header.key.to_owned(), value);
            }
            let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned());
            records.push(Record { key, headers });
            last = Instant::now();
        }
        if records.len() >= at_least && last.elapsed() >= quiet {
            return Ok(records);
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!("topic {topic}: {} of at least {at_least} records after 120 s", records.len()).into());
        }
    }
}

/// How many times each position is on the topic; every record's key is its stream.
fn positions(records: &[Record]) -> Result<BTreeMap<u64, u32>, Error> {
    let mut seen = BTreeMap::new();
    for record in records {
        *seen.entry(record.position()?).or_insert(0) += 1;
        assert_eq!(record.key.as_deref(), record.headers.get("annals-stream").map(String::as_str));
    }
    Ok(seen)
}

/// `annals ARGS...` running in the background, its stdout read line by line in a thread.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Background {
    fn spawn(args: &[&str]) -> Result<Background, Error> {
        let mut child = command().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Background { child, lines })
    }

    /// The next line of its stdout, waiting `timeout` at most.
    fn next_line(&self, timeout: Duration) -> Result<String, Error> {
        self.lines.recv_timeout(timeout).map_err(|_| format!("no output line within {timeout:?}").into())
    }

    /// Sends it SIGINT (Ctrl-C) and waits for it to exit; returns its exit status, the rest of its
    /// stdout and its stderr.
    fn interrupt(mut self) -> Result<(ExitStatus, Vec<String>, String), Error> {
        assert!(self.child.try_wait()?.is_none(), "it ended before Ctrl-C");
        let sent = std::process::Command::new("kill").args(["-INT", &self.child.id().to_string()]).status()?;
        assert!(sent.success());
        let waited = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if waited.elapsed() > Duration::from_secs(20) {
                return Err("it did not end within 20 s of Ctrl-C".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr)?;
        }
        let rest = std::iter::from_fn(|| self.lines.recv_timeout(Duration::from_secs(5)).ok()).collect();
        Ok((status, rest, stderr))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // A test that failed half-way leaves no relay behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_sled_store_reaches_kafka_whole_and_later_runs_resume_from_the_checkpoint() -> TestResult {
    let broker = Tansu::start()?;
    broker.create_topic("orders", 3)?;
    let bootstrap = broker.bootstrap();
    let dir = tempfile::tempdir()?;
    sled_store(dir.path(), 1, 500)?;
    let relay = ["relay", "kafka", "--brokers", &bootstrap, "--topic", "orders", "--batch", "64", "--until-caught-up"];

    let run = annals(dir.path(), &relay)?;
    assert!(run.ok(), "{run:?}");
    assert_eq!(run.stderr, "", "the broker and topic are there: no warning");
    let lines: Vec<&str> = run.stdout.lines().collect();
    let start = format!("relay kafka-orders to kafka {bootstrap} topic \"orders\": from checkpoint 0, head 500");
    assert_eq!(lines[0], start);
    let summary =
        "relay kafka-orders caught up: published 500 event(s), checkpoint 500, head 500, lag 0, 0 failed attempt(s)";
    assert_eq!(lines.last().copied(), Some(summary));
    let published = read_topic(&bootstrap, "orders", 3, 500, Duration::from_secs(1))?;
    let seen = positions(&published)?;
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (1..=500).collect::<Vec<_>>(), "every position");
    assert!(seen.values().all(|n| *n == 1), "one run publishes each event once");

    // The relay is saved in the store, with no lag.
    let status = annals(dir.path(), &["relay", "status", "--json"])?;
    let destination = format!("kafka {bootstrap} topic \"orders\"");
    let expected =
        json!({ "name": "kafka-orders", "checkpoint": 500, "head": 500, "lag": 0, "destination": destination });
    assert_eq!(status.json_lines()?, [expected]);
    let text = annals(dir.path(), &["relay", "status"])?.stdout;
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["RELAY", "CHECKPOINT", "LAG", "DESTINATION"]);
    assert_eq!(rows[1], ["kafka-orders", "500", "0", "kafka", &bootstrap, "topic", "\"orders\""]);

    // Run again: nothing more to publish.
    let again = annals(dir.path(), &[&relay[..], &["--json"]].concat())?;
    assert!(again.ok(), "{again:?}");
    let summary = again.json_lines()?.pop().ok_or("no summary")?;
    assert_eq!((&summary["type"], &summary["reason"]), (&json!("summary"), &json!("caught_up")));
    assert_eq!((&summary["published"], &summary["checkpoint"], &summary["lag"]), (&json!(0), &json!(500), &json!(0)));

    // Twenty more events: a third run publishes those and nothing else.
    sled_store(dir.path(), 501, 520)?;
    let third = annals(dir.path(), &[&relay[..], &["--json"]].concat())?;
    let summary = third.json_lines()?.pop().ok_or("no summary")?;
    assert_eq!((&summary["published"], &summary["checkpoint"]), (&json!(20), &json!(520)), "{third:?}");
    let published = read_topic(&bootstrap, "orders", 3, 520, Duration::from_secs(2))?;
    let seen = positions(&published)?;
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (1..=520).collect::<Vec<_>>());
    assert!(seen.values().all(|n| *n == 1), "the second and third runs published nothing twice");
    Ok(())
}

/// An application in a thread of its own, with its own runtime and connections: appends one event
/// after another (a few milliseconds apart) until told to stop. Returns how many.
fn application(url: String, schema: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Result<u64, String>> {
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
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            Ok(appended)
        })
    })
}

/// The next `"type": "progress"` line of a relay run with `--json`.
fn next_progress(relay: &Background) -> Result<Value, Error> {
    loop {
        let line: Value = serde_json::from_str(&relay.next_line(Duration::from_secs(15))?)?;
        if line["type"] == "progress" {
            return Ok(line);
        }
    }
}

fn number(line: &Value, key: &str) -> Result<u64, Error> {
    line[key].as_u64().ok_or_else(|| format!("no {key} in {line}").into())
}

#[test]
fn next_to_an_application_on_postgresql_the_relay_shows_its_lag_catches_up_and_stops_on_ctrl_c() -> TestResult {
    const BEFORE: u64 = 300;
    let broker = Tansu::start()?;
    broker.create_topic("live", 2)?;
    let bootstrap = broker.bootstrap();
    let url = pg_url()?;
    let schema = fresh_schema();
    runtime()?.block_on(async {
        let store = open_pg(&url, &schema).await?;
        fill(&store, 1, BEFORE).await
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let app = application(url.clone(), schema.clone(), Arc::clone(&stop));

    let store = ["--store", &url, "--schema", &schema, "--json"];
    let relay =
        Background::spawn(&[&store[..], &["relay", "kafka", "--brokers", &bootstrap, "--topic", "live"]].concat())?;
    let start: Value = serde_json::from_str(&relay.next_line(Duration::from_secs(30))?)?;
    let expected = (&json!("start"), &json!("kafka-live"), &json!(0));
    assert_eq!((&start["type"], &start["relay"], &start["checkpoint"]), expected);
    assert!(number(&start, "head")? >= BEFORE, "{start}");

    // While the application appends, the relay publishes its events as they commit: its checkpoint
    // goes past what was there at the start, and the head it shows keeps moving. The first line
    // shows it behind.
    let mut progress = vec![next_progress(&relay)?];
    let started = Instant::now();
    while number(&progress[progress.len() - 1], "checkpoint")? < BEFORE + 300 {
        assert!(started.elapsed() < Duration::from_secs(60), "the relay does not follow the application: {progress:?}");
        progress.push(next_progress(&relay)?);
    }
    assert!(number(&progress[0], "lag")? > 0, "the first progress line shows the relay behind: {}", progress[0]);
    for line in &progress {
        let (head, checkpoint, lag) = (number(line, "head")?, number(line, "checkpoint")?, number(line, "lag")?);
        assert_eq!(lag, head - checkpoint, "{line}");
        assert_eq!(line["error"], Value::Null, "{line}");
    }
    let heads: Vec<u64> = progress.iter().map(|l| number(l, "head")).collect::<Result<_, _>>()?;
    assert!(heads.windows(2).all(|w| w[0] <= w[1]) && heads[0] < heads[heads.len() - 1], "heads: {heads:?}");

    // The application stops; the relay catches up with its last event and says so.
    stop.store(true, Ordering::Relaxed);
    let total = BEFORE + app.join().map_err(|_| "the application panicked")??;
    let started = Instant::now();
    loop {
        let line = next_progress(&relay)?;
        if number(&line, "checkpoint")? == total {
            let expected = (&json!("caught_up"), &json!(0), &json!(total));
            assert_eq!((&line["state"], &line["lag"], &line["head"]), expected);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not caught up with {total}: {line}");
    }

    // Ctrl-C: a clean stop, with the summary.
    let (status, rest, stderr) = relay.interrupt()?;
    assert!(status.success(), "{status:?}: {stderr}");
    assert_eq!(stderr, "");
    let summary: Value = serde_json::from_str(rest.last().ok_or("no summary")?)?;
    assert_eq!((&summary["type"], &summary["reason"]), (&json!("summary"), &json!("interrupted")));
    let expected = (&json!(total), &json!(total), &json!(0), &json!(total));
    assert_eq!((&summary["checkpoint"], &summary["head"], &summary["lag"], &summary["published"]), expected);

    // Every event is on the topic, and the saved checkpoint says so.
    let published = read_topic(&bootstrap, "live", 2, total as usize, Duration::from_secs(1))?;
    let seen = positions(&published)?;
    let missing: Vec<u64> = (1..=total).filter(|p| !seen.contains_key(p)).collect();
    assert!(missing.is_empty(), "positions never published: {missing:?}");
    let status = annals_pg(&url, &schema, &["relay", "status", "--json"])?.json_lines()?;
    assert_eq!((&status[0]["checkpoint"], &status[0]["lag"]), (&json!(total), &json!(0)));
    Ok(())
}

/// The broker's acknowledgements are what this checks: the relay saves its checkpoint only after
/// every send of a page has its receipt. The messages are not read back: the `pulsar` crate's
/// consumer (6.9.1) cannot decode the frames pulsar-lite 0.2.0 dispatches ("Error decoding payload
/// frame") and ends after the first batch; the library's own `tests/relay_pulsar.rs` stops there
/// too.
#[test]
fn the_filtered_log_is_acknowledged_by_pulsar_until_caught_up() -> TestResult {
    const TOPIC: &str = "persistent://public/default/orders";
    let broker = PulsarLite::start()?;
    let dir = tempfile::tempdir()?;
    sled_store(dir.path(), 1, 120)?;
    let orders = (1..=120u64).filter(|n| n % 5 != 0).count();

    let url = broker.url();
    let relay = ["relay", "pulsar", "--url", &url, "--topic", TOPIC, "--prefix", "order-", "--batch", "25"];
    let run = annals(dir.path(), &[&relay[..], &["--until-caught-up", "--json"]].concat())?;
    assert!(run.ok(), "{run:?}");
    assert_eq!(run.stderr, "");
    let lines = run.json_lines()?;
    let name = format!("pulsar-{TOPIC}");
    let destination = format!("pulsar {url} topic \"{TOPIC}\"");
    let start = json!({ "type": "start", "relay": name, "destination": destination, "checkpoint": 0, "head": 120 });
    assert_eq!(lines[0], start);
    let summary = lines.last().ok_or("no summary")?;
    let expected = (&json!(name), &json!("caught_up"), &Value::Null);
    assert_eq!((&summary["relay"], &summary["reason"], &summary["error"]), expected);
    // The customer events are left out, and the checkpoint still reaches the head.
    let published = (&summary["published"], &summary["checkpoint"], &summary["lag"]);
    assert_eq!(published, (&json!(orders), &json!(120), &json!(0)), "{summary}");
    let status = annals(dir.path(), &["relay", "status", "--json"])?.json_lines()?;
    assert_eq!(status, [json!({ "name": name, "checkpoint": 120, "head": 120, "lag": 0, "destination": destination })]);

    // Ten more events, two of them customers': the next run sends the eight orders only.
    sled_store(dir.path(), 121, 130)?;
    let again = annals(dir.path(), &[&relay[..], &["--until-caught-up", "--json"]].concat())?;
    let summary = again.json_lines()?.pop().ok_or("no summary")?;
    assert_eq!((&summary["published"], &summary["checkpoint"]), (&json!(8), &json!(130)), "{again:?}");
    Ok(())
}

#[test]
fn an_unreachable_broker_shows_as_retrying_with_its_address_until_ctrl_c() -> TestResult {
    let port = free_port()?;
    let brokers = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir()?;
    sled_store(dir.path(), 1, 40)?;
    let store = dir.path().to_string_lossy().into_owned();
    let relay = Background::spawn(&[
        "--store",
        &store,
        "--connect-timeout",
        "1",
        "relay",
        "kafka",
        "--brokers",
        &brokers,
        "--topic",
        "late",
        "--option",
        "message.timeout.ms=1000",
        "--until-caught-up",
    ])?;
    let started = Instant::now();
    let mut lines = Vec::new();
    let retrying = loop {
        let line = relay.next_line(Duration::from_secs(30))?;
        if line.starts_with("retrying: ") {
            break line;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no retrying line: {lines:?}");
        lines.push(line);
    };
    assert!(retrying.contains(&format!("cannot reach the broker {brokers}")), "{retrying}");
    assert!(retrying.contains("checkpoint 0, head 40, lag 40; attempt "), "{retrying}");

    // Still retrying (not caught up, not failed): Ctrl-C stops it cleanly, with nothing saved.
    let (status, rest, stderr) = relay.interrupt()?;
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.starts_with(&format!("warning: cannot reach the broker {brokers}")), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let summary = rest.last().ok_or("no summary")?;
    let expected = "relay kafka-late stopped on request: published 0 event(s), checkpoint 0, head 40, lag 40";
    assert!(summary.starts_with(expected), "{summary}");
    assert_eq!(annals(dir.path(), &["relay", "status"])?.stdout, "(no relays)\n");
    Ok(())
}

#[test]
fn relay_parked_lists_what_a_relay_in_parked() -> TestResult {
    let broker = Tansu::start()?;
    broker.create_topic("legacy", 1)?;
    let bootstrap = broker.bootstrap();
    let dir = tempfile::tempdir()?;
    runtime()?.block_on(async {
        // A record without the relay's headers: the envelope mapping parks it.
        let producer: FutureProducer =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).set("acks", "all").create()?;
        let record = FutureRecord::to("legacy").key("k-1").payload(r#"{"old":true}"#);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
        let store = SledStore::open(dir.path())?;
        let config = InboundConfig::new("legacy-in", &bootstrap, "stock", ["legacy"])
            .option("max.poll.interval.ms", "6000")
            .option("session.timeout.ms", "6000");
        let inbound = KafkaInbound::start(store, config).await?;
        inbound.wait_until(|s| s.parked == 1, Duration::from_secs(60)).await?;
        inbound.stop().await?;
        Ok::<(), Error>(())
    })?;

    let parked = annals(dir.path(), &["relay", "parked", "legacy-in", "--json"])?.json_lines()?;
    assert_eq!(parked.len(), 1, "{parked:?}");
    let record = &parked[0];
    assert_eq!((&record["topic"], &record["partition"], &record["offset"]), (&json!("legacy"), &json!(0), &json!(0)));
    assert_eq!((&record["key"], &record["value"]), (&json!("k-1"), &json!(r#"{"old":true}"#)));
    let reason = record["reason"].as_str().ok_or("no reason")?;
    assert!(!reason.is_empty());
    let text = annals(dir.path(), &["relay", "parked", "legacy-in"])?.stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("legacy partition 0 offset 0, parked "), "{text}");
    assert_eq!(lines[1], format!("  reason:  {reason}"));
    assert_eq!(&lines[2..4], ["  key:     k-1", r#"  value:   {"old":true}"#]);
    let none = annals(dir.path(), &["relay", "parked", "other"])?.stdout;
    assert_eq!(none, "(no parked records for relay other)\n");
    Ok(())
}
