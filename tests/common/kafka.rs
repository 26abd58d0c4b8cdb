//! Reading topics back over the Kafka protocol, as a consumer outside any group.
//! Every record value read is checked against the published schema.
//! One polling loop ([`read`]) serves every read; they differ in when they stop.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use super::broker::{kafka, unique_topic};
use super::contract::assert_published_event;

/// A record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub key: Option<String>,
    pub value: Value,
    /// Header name -> value; `None` for a header with a null value.
    pub headers: BTreeMap<String, Option<String>>,
}

/// At least `count` records of `topic`, from its beginning.
pub fn read_topic(topic: &str, count: usize) -> Vec<Record> {
    let records = read(&kafka(), topic, Until::Count(count));
    assert!(
        records.len() >= count,
        "topic {topic}: {} of {count} records after 15 s",
        records.len()
    );
    records
}

/// Exactly `count` records of `topic`: fails when fewer arrive or more follow.
pub fn read_exactly(topic: &str, count: usize) -> Vec<Record> {
    read_exactly_on(&kafka(), topic, count)
}

/// [`read_exactly`] on the broker at `bootstrap`. It writes a marker record after
/// everything under test was answered, then reads up to the marker: "exactly N"
/// (and "exactly 0") is then a checked fact, not a read that merely found nothing.
pub fn read_exactly_on(bootstrap: &str, topic: &str, count: usize) -> Vec<Record> {
    let marker = write_marker(bootstrap, topic);
    let records = read(bootstrap, topic, Until::Marker(&marker));
    assert_eq!(
        records.len(),
        count,
        "topic {topic}: expected exactly {count} records: {records:#?}"
    );
    records
}

/// Every record of `topic`: reads until none arrived for `quiet` (at most 60 s).
pub fn read_all_on(bootstrap: &str, topic: &str, quiet: Duration) -> Vec<Record> {
    read(bootstrap, topic, Until::Quiet(quiet))
}

/// The key of the marker records [`read_exactly_on`] writes; reads skip them.
const SENTINEL_KEY: &str = "test-sentinel";

/// When a [`read`] stops.
#[derive(Clone, Copy)]
enum Until<'a> {
    /// Once `count` records arrived, or after 15 s with fewer.
    Count(usize),
    /// At the marker record with this payload; panics when it is not seen in 15 s.
    Marker(&'a str),
    /// Once nothing arrived for this long, or after 60 s.
    Quiet(Duration),
}

/// Reads partition 0 of `topic` from the beginning, skipping marker records,
/// until `until` says to stop.
fn read(bootstrap: &str, topic: &str, until: Until) -> Vec<Record> {
    let consumer = consumer_of(bootstrap, topic);
    let give_up = Instant::now()
        + match until {
            Until::Quiet(_) => Duration::from_secs(60),
            Until::Count(_) | Until::Marker(_) => Duration::from_secs(15),
        };
    let mut last_seen = Instant::now();
    let mut records = Vec::new();
    loop {
        let done = match until {
            Until::Count(count) => records.len() >= count,
            Until::Quiet(quiet) => last_seen.elapsed() >= quiet,
            Until::Marker(_) => false,
        };
        if done {
            return records;
        }
        if Instant::now() >= give_up {
            if let Until::Marker(_) = until {
                panic!(
                    "topic {topic}: marker not seen after 15 s; read {} records",
                    records.len()
                );
            }
            return records;
        }
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => panic!("topic {topic}: consumer error: {e}"),
            Some(Ok(message)) => message,
        };
        last_seen = Instant::now();
        if message.key() != Some(SENTINEL_KEY.as_bytes()) {
            records.push(to_record(&message));
            continue;
        }
        match until {
            Until::Marker(marker) if message.payload() == Some(marker.as_bytes()) => {
                return records
            }
            _ => {} // another check's marker
        }
    }
}

/// Writes a marker record with a new payload to partition 0 of `topic`; returns
/// the payload.
fn write_marker(bootstrap: &str, topic: &str) -> String {
    let marker = uuid::Uuid::new_v4().to_string();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create()
        .expect("producer is created");
    producer
        .send(
            BaseRecord::to(topic)
                .partition(0)
                .key(SENTINEL_KEY)
                .payload(&marker),
        )
        .map_err(|(e, _)| e)
        .expect("marker is queued");
    producer
        .flush(Duration::from_secs(10))
        .expect("marker is written");
    marker
}

/// A consumer of partition 0 of `topic`, from the beginning, outside any group.
fn consumer_of(bootstrap: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_topic("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer is created");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).expect("partition is assigned");
    consumer
}

fn to_record(message: &impl Message) -> Record {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let headers = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(text)))
                .collect()
        })
        .unwrap_or_default();
    let value = serde_json::from_slice(message.payload().unwrap_or_default())
        .expect("record value is JSON");
    assert_published_event(&value);
    Record {
        topic: message.topic().to_string(),
        key: message.key().map(text),
        value,
        headers,
    }
}
