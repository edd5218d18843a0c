//! Relays next to an application's PostgreSQL store: two relays of one name (as in two processes)
//! take turns through a lease in the database. One publishes, the other stands by; when the first
//! stops, the second goes on from its checkpoint, with no position skipped.
#![cfg(all(feature = "kafka", feature = "postgres"))]
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

#[allow(dead_code, unreachable_pub)]
#[path = "common/kafka.rs"]
mod kafka;
#[path = "common/postgres.rs"]
mod postgres_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use annals::relay::{KafkaSink, KafkaSinkConfig, Relay, RelayConfig, RelayState};
use annals::{EventStore, ExpectedVersion, NewEvent, Position, StreamId};
use annals_testkit::Tansu;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_of_one_name_take_turns_and_skip_nothing() {
    let broker = Tansu::start().unwrap();
    broker.create_topic("pg", 2).unwrap();
    let config = postgres_support::fresh_config().unwrap();
    // Two stores on one schema: what two processes would open.
    let app = config.clone().open().await.unwrap();
    let other = config.open().await.unwrap();
    let append = |store: annals::PostgresStore, from: u64, to: u64| async move {
        for n in from..=to {
            let stream = StreamId::new(format!("order-{}", n % 11)).unwrap();
            store
                .append(&stream, ExpectedVersion::Any, vec![NewEvent::raw("Placed", format!(r#"{{"n":{n}}}"#))])
                .await
                .unwrap();
        }
    };
    append(app.clone(), 1, 300).await;

    let relay_config = || RelayConfig::new("pg-out").batch_size(50).lease_ttl(Duration::from_millis(900));
    let sink = || KafkaSink::new(KafkaSinkConfig::new(broker.bootstrap(), "pg")).unwrap();
    let first = Relay::start(app.clone(), relay_config(), sink()).await.unwrap();
    first.wait_for(Position::new(300), Duration::from_secs(60)).await.unwrap();
    let second = Relay::start(other.clone(), relay_config(), sink()).await.unwrap();
    let started = Instant::now();
    while second.status().state != RelayState::Standby {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the second relay does not stand by: {:?}",
            second.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // More events while both run: only the holder publishes them.
    append(app.clone(), 301, 400).await;
    first.wait_for(Position::new(400), Duration::from_secs(60)).await.unwrap();
    assert_eq!(second.status().published, 0);
    assert_eq!(second.status().state, RelayState::Standby);

    // The first stops; the second takes over from the saved checkpoint.
    first.stop().await.unwrap();
    append(app.clone(), 401, 500).await;
    second.wait_for(Position::new(500), Duration::from_secs(60)).await.unwrap();
    assert_eq!(second.status().published, 100, "it went on from the checkpoint, not from the start");
    second.stop().await.unwrap();

    let records = kafka::read_topic(&broker.bootstrap(), "pg", 2, 500, Duration::from_secs(1));
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for record in &records {
        *seen.entry(record.header("annals-position").parse().unwrap()).or_default() += 1;
    }
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (1..=500).collect::<Vec<_>>());
    assert!(
        seen.values().all(|n| *n == 1),
        "published twice: {:?}",
        seen.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert_eq!(Relay::checkpoint(&app, "pg-out").await.unwrap(), Some(Position::new(500)));
}
