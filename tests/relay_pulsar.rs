//! The relay out to a real Pulsar-protocol broker (pulsar-lite, alpha, started by the test on
//! 127.0.0.1): every event arrives with its stream as the key and its envelope as properties, each
//! send checked; a broker that is down at the start is retried until it is up. pulsar-lite is an
//! alpha broker: these tests are a protocol smoke test, the Kafka tests carry the fault campaign.
#![cfg(feature = "pulsar")]
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use annals::relay::{PulsarSink, PulsarSinkConfig, Relay, RelayConfig, RelayError, RelayState};
use annals::{EventStore, ExpectedVersion, NewEvent, Position, ReadLog, SledStore, StreamId};
use annals_testkit::{free_port, PulsarLite};
use futures_util::{StreamExt, TryStreamExt};
use pulsar::consumer::InitialPosition;
use pulsar::{ConsumerOptions, Pulsar, SubType, TokioExecutor};

const TOPIC: &str = "persistent://public/default/orders";

async fn fill(store: &SledStore, count: u64) {
    for n in 1..=count {
        let stream = StreamId::new(format!("order-{}", n % 9)).unwrap();
        let event = NewEvent::raw("OrderPlaced", format!(r#"{{"n":{n}}}"#)).with_correlation_id(format!("c-{n}"));
        store.append(&stream, ExpectedVersion::Any, vec![event]).await.unwrap();
    }
}

/// Every message of the topic, by its `annals-position` property: key, properties and payload.
async fn read_back(url: &str, count: usize) -> BTreeMap<u64, (Option<String>, BTreeMap<String, String>, String)> {
    let client = Pulsar::builder(url, TokioExecutor).build().await.unwrap();
    let mut consumer: pulsar::Consumer<Vec<u8>, _> = client
        .consumer()
        .with_topic(TOPIC)
        .with_subscription("check")
        .with_subscription_type(SubType::Exclusive)
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build()
        .await
        .unwrap();
    let mut seen = BTreeMap::new();
    let started = Instant::now();
    while seen.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await;
        let message = next.expect("no message within 30 s").expect("the consumer ended").unwrap();
        let properties: BTreeMap<String, String> =
            message.metadata().properties.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect();
        let position: u64 = properties["annals-position"].parse().unwrap();
        let payload = String::from_utf8(message.payload.data.clone()).unwrap();
        seen.insert(position, (message.key(), properties, payload));
        consumer.ack(&message).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(120));
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

    let seen = read_back(&broker.url(), 300).await;
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
    assert_eq!(read_back(&broker.url(), 20).await.len(), 20);
}

#[test]
fn a_sink_that_is_not_a_pulsar_url_is_refused() {
    let refused = PulsarSink::new(PulsarSinkConfig::new("http://127.0.0.1:8080", TOPIC));
    assert!(matches!(refused, Err(RelayError::Config { ref setting, .. }) if setting == "url"), "{refused:?}");
}
