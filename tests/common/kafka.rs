//! Reading topics back over the Kafka protocol, as a consumer outside any group.
//! Every record value read is checked against the published schema, or, on a
//! topic of the privacy feature (field rules, state, erasure), against the schema
//! of what that topic holds ([`Check`]), after refusing a value or a record's
//! headers that name a key twice (a map would keep only one of them).
//! One polling loop ([`poll_until`]) serves every read; they differ in when they
//! stop. Only [`read_raw_exactly`] of one record or more reads to the topic's end
//! as the broker reports it instead, leaving no marker for `replay` to read.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use webhook_connector::contract::schema;
use webhook_connector::entity::{Entity, ENTITIES};
use webhook_connector::routing::RoutingTable;

use super::broker::{kafka, unique_topic};
use super::contract::assert_published_event;

/// A record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub key: Option<String>,
    /// The value as JSON; `Value::Null` for a tombstone.
    pub value: Value,
    /// Whether the record has no value (a tombstone), as opposed to a JSON `null`.
    pub tombstone: bool,
    /// Header name -> value; `None` for a header with a null value.
    pub headers: BTreeMap<String, Option<String>>,
}

/// What every record value read from a topic must be.
pub struct Check {
    /// What the topic holds, for messages.
    what: &'static str,
    /// The schema of each entity's values, by entity name; empty: the committed
    /// schemas of the full event ([`assert_published_event`]).
    schemas: Vec<(&'static str, jsonschema::Validator)>,
    /// Whether a record may have no value (a state topic's tombstones).
    tombstones: bool,
}

impl Check {
    /// Full events, as published: the committed schema of their entity, never a
    /// tombstone. What every read without a `Check` does.
    pub fn published() -> Check {
        Check {
            what: "published event",
            schemas: Vec::new(),
            tombstones: false,
        }
    }

    /// What `topic` holds by `table`: state records or tombstones on a state
    /// topic, erasure events on the erasure topic, events shaped by the field rules
    /// of a topic that has some, and full published events on any other.
    pub fn for_topic(table: &RoutingTable, topic: &str) -> Check {
        if let Some(state) = table.states().iter().find(|s| s.topic == topic) {
            let rules = state.rules.as_deref();
            return Check::compiled("state record", true, &[state.entity], |entity| {
                schema::state_record(entity, rules)
            });
        }
        if table.erasure_topic() == Some(topic) {
            return Check::compiled("erasure event", false, &ENTITIES, schema::erasure_event);
        }
        match table.rules_for(topic) {
            Some(rules) => Check::compiled("shaped event", false, &ENTITIES, |entity| {
                schema::shaped_event(entity, Some(rules))
            }),
            None => Check::published(),
        }
    }

    /// Values of `entities` matching `schema_of` their entity (formats asserted).
    fn compiled(
        what: &'static str,
        tombstones: bool,
        entities: &[&'static Entity],
        schema_of: impl Fn(&Entity) -> Value,
    ) -> Check {
        let options = jsonschema::options().should_validate_formats(true);
        let schemas = entities
            .iter()
            .map(|entity| {
                let schema = schema_of(entity);
                let validator = options
                    .build(&schema)
                    .unwrap_or_else(|e| panic!("the {what} schema compiles: {e}\n{schema}"));
                (entity.name, validator)
            })
            .collect();
        Check {
            what,
            schemas,
            tombstones,
        }
    }

    /// Panics unless `value` (`None`: a tombstone) of a record of `topic` is one
    /// of what the topic holds.
    fn assert_value(&self, topic: &str, value: Option<&Value>) {
        let Some(value) = value else {
            assert!(
                self.tombstones,
                "topic {topic}: a tombstone where every record is a {}",
                self.what
            );
            return;
        };
        if self.schemas.is_empty() {
            return assert_published_event(value);
        }
        // Customer events have no `entity` field; state records and erasure events do.
        let name = value["entity"].as_str().unwrap_or("customer");
        let (_, schema) =
            (self.schemas.iter().find(|(entity, _)| *entity == name)).unwrap_or_else(|| {
                panic!("topic {topic}: a {} of entity {name:?}: {value}", self.what)
            });
        if let Err(error) = schema.validate(value) {
            let at = error.instance_path();
            panic!("topic {topic}: not a {}: {at}: {error}\n{value}", self.what);
        }
    }
}

/// At least `count` records of `topic`, from its beginning.
pub fn read_topic(topic: &str, count: usize) -> Vec<Record> {
    let records = read(&kafka(), topic, Until::Count(count), &Check::published());
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

/// [`read_exactly`] with every value checked by `check` instead of against the
/// published event's schema: for ruled, state and erasure topics.
pub fn read_exactly_with(topic: &str, count: usize, check: &Check) -> Vec<Record> {
    read_exactly_on_with(&kafka(), topic, count, check)
}

/// [`read_exactly`] on the broker at `bootstrap`. It writes a marker record after
/// everything under test was answered, then reads up to the marker: "exactly N"
/// (and "exactly 0") is then a checked fact, not a read that merely found nothing.
pub fn read_exactly_on(bootstrap: &str, topic: &str, count: usize) -> Vec<Record> {
    read_exactly_on_with(bootstrap, topic, count, &Check::published())
}

/// [`read_exactly_with`] of several topics at once, each `(topic, count, check)`
/// on a thread of its own (a read takes about a second, mostly waiting); their
/// records, in the order of `reads`.
pub fn read_exactly_each(reads: &[(&str, usize, &Check)]) -> Vec<Vec<Record>> {
    let bootstrap = kafka();
    std::thread::scope(|scope| {
        let readers: Vec<_> = reads
            .iter()
            .map(|&(topic, count, check)| {
                let bootstrap = &bootstrap;
                scope.spawn(move || read_exactly_on_with(bootstrap, topic, count, check))
            })
            .collect();
        readers
            .into_iter()
            .map(|reader| {
                reader
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// [`read_exactly_on`] with every value checked by `check`.
pub fn read_exactly_on_with(
    bootstrap: &str,
    topic: &str,
    count: usize,
    check: &Check,
) -> Vec<Record> {
    let records = read_to_new_marker(bootstrap, topic, check);
    assert_eq!(
        records.len(),
        count,
        "topic {topic}: expected exactly {count} records: {records:#?}"
    );
    records
}

/// Every record of `topic` written before this call: reads up to a marker
/// written now (at most 60 s).
pub fn read_all_before_now_on(bootstrap: &str, topic: &str) -> Vec<Record> {
    read_to_new_marker(bootstrap, topic, &Check::published())
}

/// Writes a marker to `topic` and reads every record before it, each checked
/// by `check`.
fn read_to_new_marker(bootstrap: &str, topic: &str, check: &Check) -> Vec<Record> {
    let marker = write_marker(bootstrap, topic);
    read(bootstrap, topic, Until::Marker(&marker), check)
}

/// A record read back as it was written, for the raw topic and dead-letter
/// topics: their values are request bodies, byte for byte (JSON or not), so
/// nothing is parsed or checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub topic: String,
    pub key: Option<String>,
    /// The value's bytes; `None`: a record without value.
    pub value: Option<Vec<u8>>,
    /// Header name -> value; `None` for a header with a null value.
    pub headers: BTreeMap<String, Option<String>>,
}

/// Exactly `count` records of `topic` as written, unchecked ([`RawRecord`]).
///
/// A read of 0 writes a marker record after everything under test was answered
/// and reads up to it, as [`read_exactly`] does: "exactly 0" is then a checked
/// fact (the topic was read, and nothing was written before the marker), not a
/// read that merely found nothing. The marker stays in the topic: `replay`
/// would read it (and refuse it), so do not replay from a topic read empty.
///
/// A read of more writes no marker, so the topic stays fit to replay: it reads
/// up to the topic's end as the broker reports it now (its high watermark),
/// after everything under test was answered; the connector answers only once
/// Kafka acknowledged, so "exactly N" is still a checked fact. Both skip the
/// markers of earlier reads.
pub fn read_raw_exactly(topic: &str, count: usize) -> Vec<RawRecord> {
    read_raw_exactly_on(&kafka(), topic, count)
}

/// [`read_raw_exactly`] on the broker at `bootstrap`.
pub fn read_raw_exactly_on(bootstrap: &str, topic: &str, count: usize) -> Vec<RawRecord> {
    let records = if count == 0 {
        let marker = write_marker(bootstrap, topic);
        poll_until(bootstrap, topic, Until::Marker(&marker), raw_record)
    } else {
        read_raw_to_end(bootstrap, topic)
    };
    assert_eq!(
        records.len(),
        count,
        "topic {topic}: expected exactly {count} records: {records:#?}"
    );
    records
}

/// The records of `topic` up to its high watermark now, markers skipped.
fn read_raw_to_end(bootstrap: &str, topic: &str) -> Vec<RawRecord> {
    let consumer = consumer_of(bootstrap, topic);
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("topic {topic}: no watermarks: {e}"));
    let give_up = Instant::now() + Duration::from_secs(15);
    let mut records = Vec::new();
    let mut next = low;
    while next < high {
        assert!(
            Instant::now() < give_up,
            "topic {topic}: offsets {low}..{high}, only up to {next} read after 15 s: {records:#?}"
        );
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => panic!("topic {topic}: consumer error: {e}"),
            Some(Ok(message)) => message,
        };
        next = message.offset() + 1;
        if message.key() != Some(SENTINEL_KEY.as_bytes()) {
            records.push(raw_record(&message));
        }
    }
    records
}

/// `message` as written ([`RawRecord`]).
fn raw_record(message: &BorrowedMessage) -> RawRecord {
    RawRecord {
        topic: message.topic().to_string(),
        key: (message.key()).map(|k| String::from_utf8_lossy(k).into_owned()),
        value: message.payload().map(<[u8]>::to_vec),
        headers: headers_of(message),
    }
}

/// The key of the marker records [`read_exactly_on`] and [`read_raw_exactly`]
/// (of 0) write; reads skip them.
const SENTINEL_KEY: &str = "test-sentinel";

/// When a [`read`] stops.
#[derive(Clone, Copy)]
enum Until<'a> {
    /// Once `count` records arrived, or after 15 s with fewer.
    Count(usize),
    /// At the marker record with this payload; panics when it is not seen in 60 s.
    Marker(&'a str),
}

/// Reads partition 0 of `topic` from the beginning, skipping marker records,
/// until `until` says to stop; `check` checks each value.
fn read(bootstrap: &str, topic: &str, until: Until, check: &Check) -> Vec<Record> {
    poll_until(bootstrap, topic, until, |message| to_record(message, check))
}

/// Reads partition 0 of `topic` from the beginning, skipping marker records,
/// until `until` says to stop; each record as `record` makes it.
fn poll_until<R>(
    bootstrap: &str,
    topic: &str,
    until: Until,
    mut record: impl FnMut(&BorrowedMessage) -> R,
) -> Vec<R> {
    let consumer = consumer_of(bootstrap, topic);
    let give_up = Instant::now()
        + match until {
            Until::Count(_) => Duration::from_secs(15),
            // Behind a marker may be a load run's thousands of records.
            Until::Marker(_) => Duration::from_secs(60),
        };
    let mut records = Vec::new();
    loop {
        let done = match until {
            Until::Count(count) => records.len() >= count,
            Until::Marker(_) => false,
        };
        if done {
            return records;
        }
        if Instant::now() >= give_up {
            if let Until::Marker(_) = until {
                panic!(
                    "topic {topic}: marker not seen after 60 s; read {} records",
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
        if message.key() != Some(SENTINEL_KEY.as_bytes()) {
            records.push(record(&message));
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

/// The headers of `message`: name -> value (`None`: a null value). Panics on a
/// name given twice, which a map of them would hide.
fn headers_of(message: &impl Message) -> BTreeMap<String, Option<String>> {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let mut headers = BTreeMap::new();
    for header in message.headers().into_iter().flat_map(|h| h.iter()) {
        let value = header.value.map(text);
        if let Some(before) = headers.insert(header.key.to_string(), value) {
            panic!(
                "topic {}: header {:?} twice ({before:?}, then {:?})",
                message.topic(),
                header.key,
                headers[header.key]
            );
        }
    }
    headers
}

/// Whether the JSON document `bytes` repeats a key in one of its objects (at
/// any depth): `serde_json::Value` keeps the last of two equal keys, so a
/// repeated key would pass every check of the parsed value unseen.
fn repeated_key(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<UniqueKeys>(bytes)
        .err()
        .map(|e| e.to_string())
}

/// A JSON value whose objects never repeat a key; only checked, not kept.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeys)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self, A::Error> {
        while items.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    // Numbers arrive here too, as serde_json's arbitrary-precision map of one key.
    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Self, A::Error> {
        let mut keys = HashSet::new();
        while let Some(key) = members.next_key::<String>()? {
            if !keys.insert(key.clone()) {
                return Err(de::Error::custom(format!(
                    "key {key:?} twice in one object"
                )));
            }
            members.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

fn to_record(message: &impl Message, check: &Check) -> Record {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let headers = headers_of(message);
    let value: Option<Value> = message.payload().map(|payload| {
        let value = serde_json::from_slice(payload).unwrap_or_else(|e| {
            panic!(
                "topic {}: record value is not JSON ({e}): {:?}",
                message.topic(),
                text(payload)
            )
        });
        if let Some(error) = repeated_key(payload) {
            panic!(
                "topic {}: record value repeats a key ({error}): {:?}",
                message.topic(),
                text(payload)
            );
        }
        value
    });
    check.assert_value(message.topic(), value.as_ref());
    Record {
        topic: message.topic().to_string(),
        key: message.key().map(text),
        tombstone: value.is_none(),
        value: value.unwrap_or(Value::Null),
        headers,
    }
}

/// `headers` without their trace context, which must be there: every record
/// carries the trace of the request it comes from (tests/traces.rs checks it).
pub fn without_trace(
    headers: &BTreeMap<String, Option<String>>,
) -> BTreeMap<String, Option<String>> {
    let mut headers = headers.clone();
    trace_id_of(&headers);
    headers.retain(|name, _| !name.contains("trace"));
    headers
}

/// The trace id of a record's `traceparent`.
pub fn trace_id_of(headers: &BTreeMap<String, Option<String>>) -> String {
    let traceparent = headers
        .get("traceparent")
        .cloned()
        .flatten()
        .expect("a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert!(parts.len() == 4 && parts[0] == "00", "{traceparent}");
    parts[1].to_string()
}
