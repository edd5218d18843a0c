//! The relay out to a real Pulsar-protocol broker (pulsar-lite, alpha, started by the test on
//! 127.0.0.1): every event arrives with its stream as the key and its envelope as properties, each
//! send checked; a broker that is down at the start is retried until it is up. pulsar-lite is an
//! alpha broker: these tests are a protocol smoke test, the Kafka tests carry the fault campaign.
#![cfg(feature = "pulsar")]
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use annals::relay::{PulsarSink, PulsarSinkConfig, Relay, RelayConfig, RelayError, RelayState};
use annals::{EventStore, ExpectedVersion, NewEvent, Position, ReadLog, SledStore, StreamId};
use annals_testkit::{free_port, PulsarLite};
use futures_util::TryStreamExt;

const TOPIC: &str = "persistent://public/default/orders";

async fn fill(store: &SledStore, count: u64) {
    for n in 1..=count {
        let stream = StreamId::new(format!("order-{}", n % 9)).unwrap();
        let event = NewEvent::raw("OrderPlaced", format!(r#"{{"n":{n}}}"#)).with_correlation_id(format!("c-{n}"));
        store.append(&stream, ExpectedVersion::Any, vec![event]).await.unwrap();
    }
}

/// Reads `count` messages of a topic from the earliest and prints each as a JSON line.
const READER: &str = r#"
import sys, json, pulsar
url, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
consumer = client.subscribe(topic, "check", initial_position=pulsar.InitialPosition.Earliest)
for _ in range(count):
    m = consumer.receive(timeout_millis=30000)
    print(json.dumps({"key": m.partition_key(), "properties": m.properties(), "data": m.data().decode()}), flush=True)
    consumer.acknowledge(m)
client.close()
"#;

/// Apache Pulsar's own Python client (PyPI `pulsar-client`), installed on first use into the
/// brokers' cache. The Rust `pulsar` crate 6.9 cannot read from pulsar-lite (its consumer fails to
/// decode the broker's message frames), so the reference client is the oracle here.
fn python_client() -> PathBuf {
    let cache = std::env::var_os("ANNALS_BROKER_CACHE")
        .map_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/annals/brokers"), PathBuf::from);
    let target = cache.join("pulsar-client-3.13.0");
    if target.join("pulsar").is_dir() {
        return target;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let staging = cache.join(format!("pulsar-client.tmp-{}-{:?}", std::process::id(), std::thread::current().id()));
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--only-binary=:all:", "--target"])
        .arg(&staging)
        .arg("pulsar-client==3.13.0")
        .output()
        .expect("python3 is needed to install the PyPI package pulsar-client");
    assert!(out.status.success(), "pip install pulsar-client==3.13.0 failed: {}", String::from_utf8_lossy(&out.stderr));
    if std::fs::rename(&staging, &target).is_err() {
        // Another test installed it meanwhile.
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(target.join("pulsar").is_dir(), "pulsar-client is not in {}", target.display());
    target
}

/// A message read back: key, properties and payload.
type Read = (Option<String>, BTreeMap<String, String>, String);

/// Every message of the topic, by its `annals-position` property.
fn read_back(url: &str, count: usize) -> BTreeMap<u64, Read> {
    let out = Command::new("python3")
        .env("PYTHONPATH", python_client())
        .args(["-c", READER, url, TOPIC, &count.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "reading the topic back failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut seen = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let message: serde_json::Value = serde_json::from_str(line).unwrap();
        let properties: BTreeMap<String, String> = serde_json::from_value(message["properties"].clone()).unwrap();
        let position: u64 = properties["annals-position"].parse().unwrap();
        let key = message["key"].as_str().map(str::to_owned);
        seen.insert(position, (key, properties, message["data"].as_str().unwrap().to_owned()));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_pulsar_with_its_key_and_envelope() {
    let broker = PulsarLite::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("s")).unwrap();
    fill(&store, 300).await;
    let sink = PulsarSink::new(PulsarSinkConfig::new(broker.url(), TOPIC).in_flight(50)).unwrap();
    let relay = Relay::start(store.clone(), RelayConfig::new("to-pulsar").batch_size(100), sink).await.unwrap();
    relay.wait_for(Position::new(300), Duration::from_secs(60)).await.unwrap();
    relay.stop().await.unwrap();

    let seen = read_back(&broker.url(), 300);
    let events: Vec<_> = store.read_log(ReadLog::default()).try_collect().await.unwrap();
    for event in &events {
        let (key, properties, payload) = &seen[&event.position.get()];
        assert_eq!(key.as_deref(), Some(event.stream.as_str()));
        assert_eq!(properties["annals-id"], event.id.to_string());
        assert_eq!(properties["annals-type"], "OrderPlaced");
        assert_eq!(properties["annals-version"], event.version.get().to_string());
        assert_eq!(properties["annals-correlation-id"], format!("c-{}", event.position.get()));
        assert_eq!(payload, &event.payload);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulsar_broker_down_at_the_start_is_retried_until_it_is_up() {
    let port = free_port().unwrap();
    let url = format!("pulsar://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("s")).unwrap();
    fill(&store, 20).await;
    let sink = PulsarSink::new(PulsarSinkConfig::new(&url, TOPIC).connect_timeout(Duration::from_secs(2))).unwrap();
    let config = RelayConfig::new("late").backoff(Duration::from_millis(200), Duration::from_secs(1));
    let relay = Relay::start(store.clone(), config, sink).await.unwrap();
    let started = Instant::now();
    loop {
        if let RelayState::Retrying { attempt, error, .. } = relay.status().state {
            if attempt >= 2 {
                assert!(error.contains(&url), "the error names the broker: {error}");
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no retry shown: {:?}", relay.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(Relay::checkpoint(&store, "late").await.unwrap(), None);
    let broker = PulsarLite::start_on(port).unwrap();
    relay.wait_for(Position::new(20), Duration::from_secs(60)).await.unwrap();
    relay.stop().await.unwrap();
    assert_eq!(read_back(&broker.url(), 20).len(), 20);
}

#[test]
fn a_sink_that_is_not_a_pulsar_url_is_refused() {
    let refused = PulsarSink::new(PulsarSinkConfig::new("http://127.0.0.1:8080", TOPIC));
    assert!(matches!(refused, Err(RelayError::Config { ref setting, .. }) if setting == "url"), "{refused:?}");
}
