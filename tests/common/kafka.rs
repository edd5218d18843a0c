//! What the Kafka tests share: reading a whole topic back with the broker's own client, and
//! asking a consumer group for its committed offsets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// One record read back.
#[derive(Clone, Debug)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: BTreeMap<String, String>,
}

impl Rec {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// Every record of `topic` (all its partitions, at least `partitions`, more if the broker's metadata
/// says so: a topic the broker created on its own may have more), read from the beginning until at
/// least `at_least` arrived and then nothing more for `quiet` (the broker's end offsets are not
/// trusted: tansu under-reports them). Panics after 120 s.
pub fn read_topic(bootstrap: &str, topic: &str, partitions: i32, at_least: usize, quiet: Duration) -> Vec<Rec> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let known = metadata.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len() as i32);
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions.max(known) {
        list.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut records = Vec::new();
    let started = Instant::now();
    let mut last = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let mut headers = BTreeMap::new();
                if let Some(hs) = m.headers() {
                    for h in hs.iter() {
                        headers.insert(
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                records.push(Rec {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
                    headers,
                });
                last = Instant::now();
            }
            Some(Err(e)) => panic!("reading topic {topic}: {e}"),
            None => {}
        }
        if records.len() >= at_least && last.elapsed() >= quiet {
            return records;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "topic {topic}: only {} of at least {at_least} records after 120 s",
            records.len()
        );
    }
}

/// The offsets the group `group` committed on `topic`'s partitions (absent: none committed).
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let answered = consumer.committed_offsets(list, Duration::from_secs(10)).unwrap();
    answered
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// A record to produce: key, value and headers.
pub type Raw<'a> = (Option<&'a str>, &'a str, Vec<(&'a str, &'a str)>);

/// Produces records straight to the topic with the broker's own client (acks=all), waiting for each.
pub async fn produce(bootstrap: &str, topic: &str, records: &[Raw<'_>]) {
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("acks", "all").create().unwrap();
    for (key, value, headers) in records {
        let mut hs = rdkafka::message::OwnedHeaders::new();
        for (k, v) in headers {
            hs = hs.insert(rdkafka::message::Header { key: k, value: Some(v.as_bytes()) });
        }
        let mut record = FutureRecord::<str, str>::to(topic).payload(value).headers(hs);
        if let Some(key) = key {
            record = record.key(key);
        }
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
    }
}
