//! Benchmarks of the relay (`annals::relay`, issue 13) against a local Kafka-protocol broker (tansu,
//! memory storage, started by the bench with `annals_testkit::Tansu`), each beside a baseline doing
//! the same broker work with the same client (rdkafka, bundled librdkafka) in the same run. Every
//! event carries the 200-byte JSON payload of the other benches; throughput is in events per second.
//!
//! | group | what |
//! | --- | --- |
//! | `relay_out_50k` | `annals_relay`: a fresh relay (fresh name, fresh topic of 3 partitions, default `RelayConfig` and `KafkaSinkConfig`) publishing a sled store of 50,000 events over 1,000 streams, from `Relay::start` until its checkpoint reaches the head. Baseline `raw_producer_all_in_flight`: the same records (keys, values, headers, timestamps) sent by a `FutureProducer` of the sink's settings, every delivery awaited at the end. Diagnostics: the relay with pages of 10,000 (`annals_relay_pages_of_10000`) and with `linger.ms=5`, the sink's default before runs K4–K6 (`annals_relay_linger_5`), and the raw producer awaiting each page of 1,000 before the next, as the relay does (`raw_producer_pages_of_1000`) |
//! | `relay_in_50k` | `annals_relay_in`: a relay in with a fresh consumer group reading a topic of 50,000 records (published by a relay out: envelope headers) into a fresh sled store (`Durability::Fsync`), from the first record received (`status.consumed > 0`) until `status.stored == 50,000`. Baselines, a consumer of the same settings reading the same records in the same pages (`ready_chunks(1000)`), timed from its first record: `raw_consume_sled_commit` copies each record out, writes the page's bytes to raw sled (a key per record) with a flush + `fdatasync`, and commits the page's offsets synchronously, as the relay in does; `raw_consume` only copies the records out (the consumer alone) |
//! | `relay_latency` | (not criterion) store A → relay out → tansu → relay in → store B, 500 events one at a time 5 ms apart, from just before A's append to B's head holding the event (read and decoded); p50 / p99 / max. Baseline: a `FutureProducer` → `StreamConsumer` round trip of the same records in the same run. Measured twice: with librdkafka's default `fetch.wait.max.ms` (500), then with 10 ms on both sides |
//!
//! Tansu admits consumer-group members only with a short `max.poll.interval.ms`: every consumer
//! here (the relay in's and the baselines') sets `max.poll.interval.ms` and `session.timeout.ms` to
//! 6000, and joining a group takes about 3 s, which the relay-in group does not time (it times from
//! the first record received). The consumers' other settings are librdkafka's defaults, which is
//! what `InboundConfig` gives. The producers use `KafkaSinkConfig`'s settings: `acks=all`,
//! `enable.idempotence=true`, `linger.ms=0`, `message.timeout.ms=10000`. Every producer sends one
//! record (outside the timing) before its timed section: see `warm_up`.
//!
//! Criterion cannot report percentiles, so `relay_latency` is a plain measurement: it prints its
//! figures to stderr on lines starting with its name. Other diagnostics on stderr: `fixture:`
//! (building the source store and the relay-in topic), and after each benchmark its events/s per
//! iteration, the CPU time per event of this process and of tansu, the events per page (relay in:
//! the store's commit groups; baselines: consumer batches), and how long the consumers took to
//! join. A criterion filter selects groups as usual; `relay_latency` runs when the filter is a
//! substring of its name (`|` separates alternatives). The whole run takes 3.5 to 4.5 minutes on 2
//! busy cores (about 3 s of each relay-in iteration is the group join). Figures, and the machine
//! they were measured on, are in `docs/PERFORMANCE.md`.
//!
//! ```text
//! cargo bench --features kafka --bench relay
//! cargo bench --features kafka --bench relay -- 'relay_in|relay_latency'   # some groups only
//! # the figures and diagnostics only:
//! cargo bench --features kafka --bench relay 2>&1 | grep -E '^[a-z_0-9]+/|time:|thrpt:|^[a-z_0-9]+:'
//! ```
#![allow(clippy::print_stderr, missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::cell::RefCell;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{multi_thread_runtime, payload, scratch_dir, PAYLOAD_LEN};

use annals::relay::{
    InboundConfig, InboundRecord, KafkaInbound, KafkaSink, KafkaSinkConfig, OutboundRecord, Relay, RelayConfig, Sink,
};
use annals::{EventStore, ExpectedVersion, LogFilter, NewEvent, Position, ReadLog, SledStore, StreamAppend, StreamId};
use annals_testkit::Tansu;
use chrono::{TimeZone, Utc};
use criterion::measurement::WallTime;
use criterion::{criterion_group, BenchmarkGroup, Criterion, SamplingMode, Throughput};
use futures_util::{StreamExt, TryStreamExt};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use tokio::runtime::Runtime;

const EVENT_TYPE: &str = "OrderPlaced";
/// Events in the source store and records in the relay-in topic.
const EVENTS: u64 = 50_000;
/// Streams the events are spread over (round robin).
const STREAMS: u64 = 1000;
/// Events per `append_multi` while filling the source store.
const FILL_BATCH: u64 = 500;
/// Partitions of every topic.
const PARTITIONS: u32 = 3;
/// The relay's page (`RelayConfig` and `InboundConfig` default to 1,000), for the paged baselines.
const PAGE: usize = 1000;
/// Latency samples kept, after a warm-up of `LATENCY_WARMUP` events, and the pause between appends.
const LATENCY_SAMPLES: usize = 500;
const LATENCY_WARMUP: usize = 20;
const LATENCY_PAUSE: Duration = Duration::from_millis(5);
/// Consumer settings without which tansu does not admit a member to a group (see the notes on
/// brokers), given to the relay in and to every baseline consumer alike.
const CONSUMER_OPTIONS: [(&str, &str); 2] = [("max.poll.interval.ms", "6000"), ("session.timeout.ms", "6000")];
/// How long any one wait of the bench may take before it is a failure.
const PATIENCE: Duration = Duration::from_secs(120);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // The fixture lives in a static, which is never dropped: remove its directory by hand.
    if let Some(fixture) = FIXTURE.get() {
        let _ = std::fs::remove_dir_all(fixture.dir.path());
    }
}

// ---------------------------------------------------------------------------------------------------
// The broker, topics and clients.
// ---------------------------------------------------------------------------------------------------

/// The bench's broker, started on first use (and killed by its watchdog when the bench exits).
fn broker() -> &'static Tansu {
    static BROKER: OnceLock<Tansu> = OnceLock::new();
    BROKER.get_or_init(|| {
        let started = Instant::now();
        let broker = Tansu::start().unwrap();
        eprintln!("tansu: listening on {} (started in {:.1?})", broker.bootstrap(), started.elapsed());
        broker
    })
}

/// Whether the plain measurement `name` runs: no filter, or a filter alternative it contains.
fn selected(name: &str) -> bool {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    match args.next() {
        None => true,
        Some(filter) => filter.split('|').any(|part| name.contains(part)),
    }
}

/// A topic of its own for one iteration: `<prefix>-<n>`, created with `PARTITIONS` partitions.
fn fresh_topic(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    broker().create_topic(&name, PARTITIONS).unwrap();
    name
}

/// Deletes a topic, so that the broker (which keeps everything in memory) does not grow over the
/// run. A failure is reported once and otherwise ignored.
async fn delete_topic(name: &str) {
    static REPORTED: OnceLock<()> = OnceLock::new();
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", broker().bootstrap()).create().unwrap();
    let result = admin.delete_topics(&[name], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))));
    let failed = match result.await {
        Ok(results) => results.into_iter().find_map(|r| r.err()).map(|(_, code)| code.to_string()),
        Err(error) => Some(error.to_string()),
    };
    if let Some(error) = failed {
        REPORTED.get_or_init(|| eprintln!("tansu: deleting topic {name} failed ({error}); topics are kept"));
    }
}

/// The producer settings of `KafkaSinkConfig` (`src/relay/kafka.rs`).
fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker().bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap()
}

/// The consumer settings of `InboundConfig` (`src/relay/kafka_in.rs`) with `CONSUMER_OPTIONS` and
/// `extra`.
fn consumer(group: &str, extra: &[(&str, &str)]) -> StreamConsumer {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", broker().bootstrap()).set("group.id", group).set("auto.offset.reset", "earliest");
    for (key, value) in CONSUMER_OPTIONS.iter().chain(extra) {
        config.set(*key, *value);
    }
    config.set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
    config.create().unwrap()
}

fn inbound_config(name: &str, group: &str, topic: &str, extra: &[(&str, &str)]) -> InboundConfig {
    CONSUMER_OPTIONS
        .iter()
        .chain(extra)
        .fold(InboundConfig::new(name, broker().bootstrap(), group, [topic]), |config, (key, value)| {
            config.option(*key, *value)
        })
}

/// CPU time used so far (user + system, clock ticks of 10 ms) by this process and by the bench's
/// broker, from `/proc`.
fn cpu_ticks() -> (u64, u64) {
    fn ticks(stat: &str) -> Option<u64> {
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    }
    static BROKER_PID: OnceLock<Option<String>> = OnceLock::new();
    let pid = BROKER_PID.get_or_init(|| {
        let listener = format!("tcp://127.0.0.1:{}", broker().port());
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains("tansu\0broker") && cmdline.contains(&listener)).then_some(name)
        })
    });
    let read = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| ticks(&s));
    (read("self").unwrap_or(0), pid.as_deref().and_then(read).unwrap_or(0))
}

/// What the timed sections of one benchmark took: each iteration's time, and the CPU time of this
/// process and of the broker over them (set-up between iterations included, e.g. topic creation).
#[derive(Default)]
struct Report {
    times: Vec<Duration>,
    cpu: (u64, u64),
    /// Pages (consumer batches, or the store's commit groups) over all iterations, when counted.
    pages: u64,
}

impl Report {
    fn start() -> (u64, u64) {
        cpu_ticks()
    }

    fn add(&mut self, time: Duration, cpu_at_start: (u64, u64)) {
        let now = cpu_ticks();
        self.times.push(time);
        self.cpu.0 += now.0.saturating_sub(cpu_at_start.0);
        self.cpu.1 += now.1.saturating_sub(cpu_at_start.1);
    }

    /// Prints every iteration's throughput and the CPU time per event of both processes.
    fn print(&self, what: &str) {
        let events = EVENTS * self.times.len() as u64;
        if events == 0 {
            return;
        }
        let rates: Vec<String> =
            self.times.iter().map(|t| format!("{:.1}k", EVENTS as f64 / t.as_secs_f64() / 1000.0)).collect();
        let per_event = |ticks: u64| Duration::from_millis(10 * ticks) / events as u32;
        eprintln!("{what}: events/s per iteration: {}", rates.join(" "));
        if self.pages > 0 {
            eprintln!("{what}: {:.0} events per page on average", events as f64 / self.pages as f64);
        }
        eprintln!(
            "{what}: CPU per event (user + system, /proc, 10 ms ticks): this process {:.1?}, tansu {:.1?}",
            per_event(self.cpu.0),
            per_event(self.cpu.1)
        );
    }
}

fn fresh_group() -> String {
    format!("bench-{}", uuid::Uuid::new_v4())
}

/// Readies `producer` for a timed section: one record of `template` sent to `topic` and
/// acknowledged. A new idempotent producer holds its first records until it has a producer id,
/// which it asks for on a 500 ms timer when no broker connection is up yet: without this, about
/// half of the iterations started with a 0.5 s stall.
async fn warm_up(producer: &FutureProducer, topic: &str, template: &OutboundRecord) {
    let delivery = send(producer, topic, &template.key, &template.value, &template.headers, Utc::now()).await;
    delivery.await.unwrap().unwrap();
}

/// Sends `records` as `KafkaSink::publish` does (headers built per record, the record's timestamp,
/// a short sleep when librdkafka's queue is full), awaiting every delivery of a page before the
/// next page. A page as long as `records` keeps them all in flight at once.
async fn produce(producer: &FutureProducer, topic: &str, records: &[OutboundRecord], page: usize) {
    for page in records.chunks(page) {
        let mut pending = Vec::with_capacity(page.len());
        for record in page {
            pending.push(send(producer, topic, &record.key, &record.value, &record.headers, record.recorded_at).await);
        }
        for delivery in pending {
            delivery.await.unwrap().unwrap();
        }
    }
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &str,
    headers: &[(String, String)],
    at: chrono::DateTime<Utc>,
) -> rdkafka::producer::DeliveryFuture {
    let mut owned = OwnedHeaders::new_with_capacity(headers.len());
    for (key, value) in headers {
        owned = owned.insert(Header { key, value: Some(value.as_bytes()) });
    }
    let mut message = FutureRecord::to(topic).key(key).payload(value).headers(owned).timestamp(at.timestamp_millis());
    loop {
        match producer.send_result(message) {
            Ok(delivery) => return delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                message = back;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((error, _)) => panic!("producing to {topic}: {error}"),
        }
    }
}

/// A message copied out of librdkafka's buffer, as the relay in copies it (`record_of`).
fn record_of(message: &rdkafka::message::BorrowedMessage<'_>) -> InboundRecord {
    let mut record = InboundRecord::new(message.topic(), message.partition(), message.offset());
    record.key = message.key().map(<[u8]>::to_vec);
    record.value = message.payload().map(<[u8]>::to_vec);
    if let Some(headers) = message.headers() {
        record.headers = headers.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect();
    }
    record.timestamp = message.timestamp().to_millis().and_then(|ms| Utc.timestamp_millis_opt(ms).single());
    record
}

// ---------------------------------------------------------------------------------------------------
// The source store, its records, and the relay-in topic.
// ---------------------------------------------------------------------------------------------------

/// A sled store (default settings: `Durability::Fsync`) of `EVENTS` events over `STREAMS` streams,
/// built once, and the records the relay publishes for them.
struct Fixture {
    store: SledStore,
    head: Position,
    records: Vec<OutboundRecord>,
    /// A topic holding the `EVENTS` records, published by a relay out (envelope headers and all).
    inbound_topic: OnceLock<String>,
    dir: tempfile::TempDir,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fn fixture(runtime: &Runtime) -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let dir = scratch_dir();
        let store = SledStore::open(dir.path().join("source")).unwrap();
        let started = Instant::now();
        let payload = payload();
        let streams: Vec<StreamId> = (0..STREAMS).map(|i| StreamId::new(format!("order-{i}")).unwrap()).collect();
        let (head, records) = runtime.block_on(async {
            for first in (0..EVENTS).step_by(FILL_BATCH as usize) {
                let appends = (first..first + FILL_BATCH)
                    .map(|n| {
                        let event = NewEvent::raw(EVENT_TYPE, payload.as_str());
                        StreamAppend::new(streams[(n % STREAMS) as usize].clone(), ExpectedVersion::Any, vec![event])
                    })
                    .collect();
                store.append_multi(appends).await.unwrap();
            }
            let events: Vec<_> = store.read_log(ReadLog::from_start()).try_collect().await.unwrap();
            (store.head().await.unwrap(), events.iter().map(OutboundRecord::from_event).collect::<Vec<_>>())
        });
        assert_eq!(head, Position::new(EVENTS));
        let bytes: usize = records.iter().map(|r| r.key.len() + r.value.len()).sum::<usize>()
            + records.iter().flat_map(|r| &r.headers).map(|(k, v)| k.len() + v.len()).sum::<usize>();
        eprintln!(
            "fixture: {EVENTS} events over {STREAMS} streams in appends of {FILL_BATCH} in {:.1?}; {} headers and \
             {} bytes of key, value and headers per record on average",
            started.elapsed(),
            records[0].headers.len(),
            bytes / records.len()
        );
        Fixture { store, head, records, inbound_topic: OnceLock::new(), dir }
    })
}

impl Fixture {
    /// The relay-in topic, published by a relay out on first use.
    fn inbound_topic(&self, runtime: &Runtime) -> &str {
        self.inbound_topic.get_or_init(|| {
            let topic = fresh_topic("relay-in-source");
            let started = Instant::now();
            runtime.block_on(async {
                let sink = KafkaSink::new(KafkaSinkConfig::new(broker().bootstrap(), &topic)).unwrap();
                let relay = Relay::start(self.store.clone(), RelayConfig::new("fill-in-topic"), sink).await.unwrap();
                relay.wait_for(self.head, PATIENCE).await.unwrap();
                assert_eq!(relay.status().published, EVENTS);
                relay.stop().await.unwrap();
            });
            eprintln!(
                "fixture: topic {topic} filled with {EVENTS} records by a relay out in {:.1?}",
                started.elapsed()
            );
            topic
        })
    }
}

fn slow_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    // One iteration is a whole run over 50,000 events (about a second): one warm-up iteration, then
    // ten samples of one iteration each.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(EVENTS));
    group
}

// ---------------------------------------------------------------------------------------------------
// 1. Relay out: the whole log of a filled store to a topic.
// ---------------------------------------------------------------------------------------------------

fn relay_out(c: &mut Criterion) {
    let runtime = multi_thread_runtime();
    let mut group = slow_group(c, "relay_out_50k");
    let run = AtomicU64::new(0);
    // The relay as configured by default, then two diagnostics: bigger pages, and the 5 ms linger
    // the sink had before runs K4-K6.
    let variants: [(&str, usize, Option<&str>); 3] = [
        ("annals_relay", PAGE, None),
        ("annals_relay_pages_of_10000", 10 * PAGE, None),
        ("annals_relay_linger_5", PAGE, Some("5")),
    ];
    for (name, page, linger) in variants {
        let report = RefCell::new(Report::default());
        group.bench_function(name, |b| {
            let f = fixture(&runtime);
            b.to_async(&runtime).iter_custom(|iters| {
                let (run, report) = (&run, &report);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let topic = fresh_topic("relay-out");
                        let mut config = KafkaSinkConfig::new(broker().bootstrap(), &topic);
                        if let Some(linger) = linger {
                            config = config.option("linger.ms", linger);
                        }
                        let sink = KafkaSink::new(config).unwrap();
                        // Ready the sink's producer, as `warm_up` readies the baseline's.
                        sink.publish(&f.records[..1]).await.unwrap();
                        let name = format!("bench-out-{}", run.fetch_add(1, Ordering::Relaxed));
                        let cpu = Report::start();
                        let start = Instant::now();
                        let relay =
                            Relay::start(f.store.clone(), RelayConfig::new(name).batch_size(page), sink).await.unwrap();
                        relay.wait_for(f.head, PATIENCE).await.unwrap();
                        let elapsed = start.elapsed();
                        report.borrow_mut().add(elapsed, cpu);
                        total += elapsed;
                        assert_eq!(relay.status().published, EVENTS);
                        relay.stop().await.unwrap();
                        delete_topic(&topic).await;
                    }
                    total
                }
            });
        });
        report.borrow().print(&format!("relay_out_50k/{name}"));
    }
    for (name, page) in [("raw_producer_all_in_flight", EVENTS as usize), ("raw_producer_pages_of_1000", PAGE)] {
        let report = RefCell::new(Report::default());
        group.bench_function(name, |b| {
            let f = fixture(&runtime);
            b.to_async(&runtime).iter_custom(|iters| {
                let report = &report;
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let topic = fresh_topic("raw-out");
                        let producer = producer();
                        warm_up(&producer, &topic, &f.records[0]).await;
                        let cpu = Report::start();
                        let start = Instant::now();
                        produce(&producer, &topic, &f.records, page).await;
                        let elapsed = start.elapsed();
                        report.borrow_mut().add(elapsed, cpu);
                        total += elapsed;
                        delete_topic(&topic).await;
                    }
                    total
                }
            });
        });
        report.borrow().print(&format!("relay_out_50k/{name}"));
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------------
// 2. Relay in: a topic of 50,000 records into a durable store.
// ---------------------------------------------------------------------------------------------------

fn relay_in(c: &mut Criterion) {
    let runtime = multi_thread_runtime();
    let mut group = slow_group(c, "relay_in_50k");
    let scratch = scratch_dir();
    let run = AtomicU64::new(0);
    let next = || run.fetch_add(1, Ordering::Relaxed);
    let joins = RefCell::new(Vec::new());

    let report = RefCell::new(Report::default());
    group.bench_function("annals_relay_in", |b| {
        let f = fixture(&runtime);
        let topic = f.inbound_topic(&runtime);
        b.to_async(&runtime).iter_custom(|iters| {
            let (next, scratch, report, joins) = (&next, &scratch, &report, &joins);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let n = next();
                    let path = scratch.path().join(format!("in-{n}"));
                    let store = SledStore::open(&path).unwrap();
                    let config = inbound_config(&format!("bench-in-{n}"), &fresh_group(), topic, &[]);
                    let joining = Instant::now();
                    let inbound = KafkaInbound::start(store.clone(), config).await.unwrap();
                    inbound.wait_until(|s| s.consumed > 0, PATIENCE).await.unwrap();
                    let (cpu, start) = (Report::start(), Instant::now());
                    inbound.wait_until(|s| s.stored >= EVENTS, PATIENCE).await.unwrap();
                    let elapsed = start.elapsed();
                    report.borrow_mut().add(elapsed, cpu);
                    total += elapsed;
                    joins.borrow_mut().push(start - joining);
                    let status = inbound.status();
                    assert_eq!((status.stored, status.parked), (EVENTS, 0));
                    inbound.stop().await.unwrap();
                    assert_eq!(store.head().await.unwrap(), Position::new(EVENTS));
                    report.borrow_mut().pages += commit_groups(&store).await;
                    drop(store);
                    let _ = std::fs::remove_dir_all(&path);
                }
                total
            }
        });
    });
    report.borrow().print("relay_in_50k/annals_relay_in");
    print_joins("relay_in_50k/annals_relay_in", &joins);

    for (name, durable) in [("raw_consume", false), ("raw_consume_sled_commit", true)] {
        let report = RefCell::new(Report::default());
        group.bench_function(name, |b| {
            let f = fixture(&runtime);
            let topic = f.inbound_topic(&runtime);
            b.to_async(&runtime).iter_custom(|iters| {
                let (next, scratch, report, joins) = (&next, &scratch, &report, &joins);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let path = scratch.path().join(format!("raw-{}", next()));
                        let sink = durable.then(|| RawSink::open(&path));
                        let joining = Instant::now();
                        let (start, elapsed, cpu, pages) = raw_consume(topic, sink.as_ref()).await;
                        report.borrow_mut().add(elapsed, cpu);
                        report.borrow_mut().pages += pages;
                        total += elapsed;
                        joins.borrow_mut().push(start - joining);
                        drop(sink);
                        let _ = std::fs::remove_dir_all(&path);
                    }
                    total
                }
            });
        });
        report.borrow().print(&format!("relay_in_50k/{name}"));
        print_joins(&format!("relay_in_50k/{name}"), &joins);
    }
    group.finish();
}

/// How many commit groups wrote `store`'s log (each has its own `recorded_at`): for the relay in,
/// one per page it stored.
async fn commit_groups(store: &SledStore) -> u64 {
    let mut log = store.read_log(ReadLog::from_start());
    let (mut groups, mut last) = (0, None);
    while let Some(event) = log.try_next().await.unwrap() {
        if last != Some(event.recorded_at) {
            groups += 1;
            last = Some(event.recorded_at);
        }
    }
    groups
}

/// Prints how long the consumers took from their start to their first record (the group join),
/// and forgets them.
fn print_joins(what: &str, joins: &RefCell<Vec<Duration>>) {
    let mut joins = joins.borrow_mut();
    if let (Some(min), Some(max)) = (joins.iter().min(), joins.iter().max()) {
        eprintln!("{what}: first record {:.2?} to {:.2?} after the consumer started (the group join)", min, max);
    }
    joins.clear();
}

/// Raw sled for the relay-in baseline: each page's record bytes in one batch, then flush +
/// `fdatasync` of the data file (as the raw baselines of `benches/store.rs` make a commit durable).
struct RawSink {
    db: sled::Db,
    tree: sled::Tree,
    data: File,
}

impl RawSink {
    fn open(path: &std::path::Path) -> Self {
        let db = sled::Config::new().path(path).open().unwrap();
        let tree = db.open_tree("records").unwrap();
        let data = File::options().read(true).write(true).open(path.join("db")).unwrap();
        RawSink { db, tree, data }
    }

    /// One key per record (partition and offset), its value the record's headers and value bytes.
    fn write(&self, records: &[InboundRecord]) {
        let mut batch = sled::Batch::default();
        for record in records {
            let mut key = [0u8; 12];
            key[..4].copy_from_slice(&record.partition.to_be_bytes());
            key[4..].copy_from_slice(&record.offset.to_be_bytes());
            let mut value = Vec::with_capacity(1024);
            for (name, header) in &record.headers {
                value.extend_from_slice(name.as_bytes());
                value.extend_from_slice(header.as_deref().unwrap_or_default());
            }
            value.extend_from_slice(record.value.as_deref().unwrap_or_default());
            batch.insert(&key[..], value);
        }
        self.tree.apply_batch(batch).unwrap();
        self.db.flush().unwrap();
        self.data.sync_data().unwrap();
    }
}

/// Reads the whole relay-in topic with a fresh group, in pages as the relay in reads it
/// (`ready_chunks` of 1,000), copying every record out; with a sink, writes each page to it and
/// commits the page's offsets synchronously. Returns when the first record arrived, and the time
/// from then until the last record was handled.
async fn raw_consume(topic: &str, sink: Option<&RawSink>) -> (Instant, Duration, (u64, u64), u64) {
    let consumer = Arc::new(consumer(&fresh_group(), &[]));
    consumer.subscribe(&[topic]).unwrap();
    let mut pages = consumer.stream().ready_chunks(PAGE);
    let (mut first, mut cpu, mut count, mut batches) = (None, (0, 0), 0u64, 0u64);
    while count < EVENTS {
        let page = tokio::time::timeout(PATIENCE, pages.next()).await.unwrap().unwrap();
        if first.is_none() {
            cpu = Report::start();
            first = Some(Instant::now());
        }
        let records: Vec<InboundRecord> = page.iter().map(|m| record_of(m.as_ref().unwrap())).collect();
        count += records.len() as u64;
        batches += 1;
        if let Some(sink) = sink {
            tokio::task::block_in_place(|| sink.write(&records));
            let mut list = TopicPartitionList::new();
            for record in &records {
                list.add_partition_offset(&record.topic, record.partition, Offset::Offset(record.offset + 1)).unwrap();
            }
            let consumer = Arc::clone(&consumer);
            tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync)).await.unwrap().unwrap();
        }
    }
    let first = first.unwrap();
    let elapsed = first.elapsed();
    assert_eq!(count, EVENTS);
    (first, elapsed, cpu, batches)
}

// ---------------------------------------------------------------------------------------------------
// 3. End-to-end latency: store A → relay out → tansu → relay in → store B.
// ---------------------------------------------------------------------------------------------------

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// A 200-byte JSON payload carrying the wall-clock time it was made.
fn stamped_payload(sent_us: i64) -> String {
    let mut json = format!(r#"{{"sent_us":{sent_us},"note":""#);
    json.extend(std::iter::repeat_n('x', PAYLOAD_LEN - json.len() - 2));
    json.push_str("\"}");
    assert_eq!(json.len(), PAYLOAD_LEN);
    json
}

#[derive(Deserialize)]
struct Stamp {
    sent_us: i64,
}

fn sent_us(payload: &[u8]) -> i64 {
    serde_json::from_slice::<Stamp>(payload).unwrap().sent_us
}

/// p50 / p99 / max of `samples` (microseconds), as a line.
fn distribution(samples: &mut [i64]) -> String {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let ms = |us: i64| format!("{:.2} ms", us as f64 / 1000.0);
    format!("p50 {}, p99 {}, max {} over {} events", ms(at(0.5)), ms(at(0.99)), ms(at(1.0)), samples.len())
}

fn latency(_: &mut Criterion) {
    if !selected("relay_latency") {
        return;
    }
    let runtime = multi_thread_runtime();
    let dir = scratch_dir();
    // librdkafka's default `fetch.wait.max.ms` (500), then 10 ms: tansu answers a fetch only after
    // sleeping part of that wait (see `docs/PERFORMANCE.md`), which dominates the default's latency.
    for (label, extra) in [("", &[][..]), ("fetch_wait_10ms_", &[("fetch.wait.max.ms", "10")][..])] {
        let what = format!("relay_latency/{label}annals");
        let path = dir.path().join(format!("{label}annals"));
        let (mut samples, mut acks, template) = runtime.block_on(annals_latency(&path, extra, &what));
        eprintln!("{what}: append start in A -> event read in B: {}", distribution(&mut samples[LATENCY_WARMUP..]));
        eprintln!("{what}: append start -> durable ack in A: {}", distribution(&mut acks[LATENCY_WARMUP..]));
        let what = format!("relay_latency/{label}raw_producer_consumer");
        let (mut samples, mut acks) = runtime.block_on(raw_latency(&template, extra, &what));
        eprintln!("{what}: send start -> record received: {}", distribution(&mut samples[LATENCY_WARMUP..]));
        eprintln!("{what}: send start -> delivery acknowledged: {}", distribution(&mut acks[LATENCY_WARMUP..]));
    }
}

/// The stream of the `n`th latency event.
fn latency_stream(n: usize) -> StreamId {
    StreamId::new(format!("order-{}", n as u64 % STREAMS)).unwrap()
}

/// A → relay out → topic → relay in → B, in this process: the latency of every event (from just
/// before A's append to B's head holding it, read back and decoded), the latency of A's appends,
/// and the record of the first event, for the raw measurement's headers.
async fn annals_latency(
    dir: &std::path::Path,
    extra: &[(&str, &str)],
    what: &str,
) -> (Vec<i64>, Vec<i64>, OutboundRecord) {
    let total = LATENCY_WARMUP + LATENCY_SAMPLES;
    let topic = fresh_topic("latency");
    let a = SledStore::open(dir.join("a")).unwrap();
    let b = SledStore::open(dir.join("b")).unwrap();
    let sink = KafkaSink::new(KafkaSinkConfig::new(broker().bootstrap(), &topic)).unwrap();
    sink.check(Duration::from_secs(10)).await.unwrap();
    let relay = Relay::start(a.clone(), RelayConfig::new("latency"), sink).await.unwrap();
    let inbound =
        KafkaInbound::start(b.clone(), inbound_config("latency", &fresh_group(), &topic, extra)).await.unwrap();
    // A first event, which waits for the relay in to join its group.
    let joining = Instant::now();
    let probe = NewEvent::raw(EVENT_TYPE, stamped_payload(now_us()));
    a.append(&latency_stream(0), ExpectedVersion::Any, vec![probe]).await.unwrap();
    tokio::time::timeout(PATIENCE, b.watch_head().wait_past(Position::ZERO)).await.unwrap().unwrap();
    eprintln!("{what}: the first event reached B in {:.2?} (the group join)", joining.elapsed());
    let first = a.read_log(ReadLog::from_start()).try_next().await.unwrap().unwrap();

    // B's side: the events after the probe, read as soon as B's head moves past them.
    let reader = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut head = b.watch_head();
            let (mut seen, mut next, mut samples) = (Position::FIRST, Position::new(2), Vec::with_capacity(total));
            while samples.len() < total {
                seen = tokio::time::timeout(PATIENCE, head.wait_past(seen)).await.unwrap().unwrap();
                loop {
                    let chunk = b.read_log_chunk(next, 512, &LogFilter::all()).await.unwrap();
                    let now = now_us();
                    samples.extend(chunk.events.iter().map(|e| now - sent_us(e.payload.as_bytes())));
                    next = chunk.next;
                    if chunk.end {
                        break;
                    }
                }
            }
            samples
        })
    };
    let mut acks = Vec::with_capacity(total);
    for n in 0..total {
        let sent = now_us();
        let event = NewEvent::raw(EVENT_TYPE, stamped_payload(sent));
        a.append(&latency_stream(n), ExpectedVersion::Any, vec![event]).await.unwrap();
        acks.push(now_us() - sent);
        tokio::time::sleep(LATENCY_PAUSE).await;
    }
    let samples = reader.await.unwrap();
    relay.stop().await.unwrap();
    inbound.stop().await.unwrap();
    delete_topic(&topic).await;
    (samples, acks, OutboundRecord::from_event(&first))
}

/// The same records (the relay's headers of `template`, the stream as key, a stamped value) sent one
/// at a time with a producer of the relay's settings and read with a consumer of the relay in's:
/// the latency of every record (from just before the send to the consumer holding it) and of every
/// delivery acknowledgement.
async fn raw_latency(template: &OutboundRecord, extra: &[(&str, &str)], what: &str) -> (Vec<i64>, Vec<i64>) {
    let total = LATENCY_WARMUP + LATENCY_SAMPLES;
    let topic = fresh_topic("latency-raw");
    let producer = producer();
    let consumer = consumer(&fresh_group(), extra);
    consumer.subscribe(&[topic.as_str()]).unwrap();
    let (received, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut stream = consumer.stream();
        for _ in 0..=total {
            let message = tokio::time::timeout(PATIENCE, stream.next()).await.unwrap().unwrap().unwrap();
            received.send(now_us() - sent_us(message.payload().unwrap())).unwrap();
        }
    });
    // A first record, which waits for the consumer to join its group.
    let joining = Instant::now();
    let probe = stamped_payload(now_us());
    send(&producer, &topic, &template.key, &probe, &template.headers, Utc::now()).await.await.unwrap().unwrap();
    tokio::time::timeout(PATIENCE, arrivals.recv()).await.unwrap().unwrap();
    eprintln!("{what}: the first record arrived in {:.2?} (the group join)", joining.elapsed());
    let mut acks = Vec::with_capacity(total);
    for n in 0..total {
        let sent = now_us();
        let value = stamped_payload(sent);
        let key = latency_stream(n);
        let delivery = send(&producer, &topic, key.as_str(), &value, &template.headers, Utc::now()).await;
        delivery.await.unwrap().unwrap();
        acks.push(now_us() - sent);
        tokio::time::sleep(LATENCY_PAUSE).await;
    }
    reader.await.unwrap();
    let mut samples = Vec::with_capacity(total);
    while let Ok(sample) = arrivals.try_recv() {
        samples.push(sample);
    }
    assert_eq!(samples.len(), total);
    delete_topic(&topic).await;
    (samples, acks)
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = relay_out, relay_in, latency
}
