//! Routed events -> Kafka records: key = the entity's id (decimal), value = the
//! flat event as JSON, headers `event_id`, `entity`, `change_type` (null value
//! when there is none), `schema_version`, `content-type` and the CloudEvents binary-mode
//! attributes (`ce_specversion`, `ce_id`, `ce_source`, `ce_type`, `ce_time`,
//! `ce_subject`). Built before anything is produced, so a request's size is
//! known, and reserved, first.

use std::ops::Range;

use rdkafka::message::{Header, OwnedHeaders};
use uuid::Uuid;

use crate::config::MAX_CLOUDEVENTS_SOURCE_BYTES;
use crate::contract::cloudevents_type;
use crate::normalize::{FlatEvent, SCHEMA_VERSION};

/// What librdkafka keeps per record beyond key, value and headers (its message
/// struct and queue links), counted so that many small records are bounded too.
pub const RECORD_OVERHEAD_BYTES: usize = 256;

/// One record to produce. It owns what it needs, so the events it came from can
/// be dropped before Kafka answers.
pub struct Record<'t> {
    pub topic: &'t str,
    pub key: String,
    pub event_id: Uuid,
    /// The entity's name (`customer`).
    pub entity: &'static str,
    pub change_type: Option<String>,
    /// RFC 3339 UTC, the header `ce_time`.
    pub change_date_time: String,
    /// The value's place in [`Records::payloads`].
    pub payload: Range<usize>,
}

/// A request's records; the values share one buffer (librdkafka copies each one
/// when it is enqueued, and an event going to several topics is serialized once).
pub struct Records<'t> {
    pub payloads: Vec<u8>,
    pub records: Vec<Record<'t>>,
}

impl<'t> Records<'t> {
    /// One record per event and topic (`topics[i]` the topics of `events[i]`), in
    /// event order; `capacity`: the bytes of the values, each event once, when known.
    pub fn build(events: &[FlatEvent], topics: &[Vec<&'t str>], capacity: usize) -> Records<'t> {
        let mut payloads = Vec::with_capacity(capacity);
        let mut records = Vec::with_capacity(topics.iter().map(Vec::len).sum());
        for (event, topics) in events.iter().zip(topics) {
            let start = payloads.len();
            event.write_json(&mut payloads);
            let payload = start..payloads.len();
            let key = event.key();
            for topic in topics {
                records.push(Record {
                    topic,
                    key: key.clone(),
                    event_id: event.event_id,
                    entity: event.entity.name,
                    change_type: event.change_type.clone(),
                    change_date_time: event.change_date_time.clone(),
                    payload: payload.clone(),
                });
            }
        }
        Records { payloads, records }
    }

    /// The value of `record`.
    pub fn payload(&self, record: &Record<'_>) -> &[u8] {
        &self.payloads[record.payload.clone()]
    }

    /// The topics of these records, each once, sorted.
    pub(crate) fn distinct_topics(&self) -> Vec<&'t str> {
        let mut topics: Vec<&str> = self.records.iter().map(|r| r.topic).collect();
        topics.sort_unstable();
        topics.dedup();
        topics
    }
}

/// The bytes the records of `events` (`topics[i]` the topics of `events[i]`) hold
/// once enqueued: keys, values, headers and librdkafka's per-record overhead.
/// Known before any record is built, so a request too large for the byte budget
/// is refused before the work.
/// Also returns the bytes of the values themselves, each event once (the buffer
/// [`Records::build`] writes them to).
pub(crate) fn bytes_needed(events: &[FlatEvent], topics: &[Vec<&str>]) -> (usize, usize) {
    let mut scratch = Vec::new();
    let (mut held, mut values) = (0, 0);
    for (event, topics) in events.iter().zip(topics) {
        let value = event.json_len(&mut scratch);
        // The change type is sent twice: in `change_type`, and in `ce_type`, where
        // an escaped character takes at most three times its bytes.
        let change_type = 4 * event.change_type.as_deref().map_or(0, str::len);
        let one = value + event.key().len() + HEADER_BYTES + change_type + RECORD_OVERHEAD_BYTES;
        held += one * topics.len();
        values += value;
    }
    (held, values)
}

/// What a record's headers hold but the change type: the names and values of the
/// event id (twice), the entity (twice: alone and in the type), the schema
/// version, the content type, the CloudEvents version, source (at most
/// [`MAX_CLOUDEVENTS_SOURCE_BYTES`]), type prefix, time and subject, and
/// librdkafka's allocation per header (its header struct and list slot, about 48
/// bytes each).
const HEADER_BYTES: usize = 1088;
/// The longest entity name the headers allow for (checked by a test).
const MAX_ENTITY_NAME_BYTES: usize = 16;
// Names (103 bytes), two ids (72), the entity twice, the other values but the
// source (at most 90: "1", the content type, "1.0", the type prefix, a 30-byte
// time, a 20-digit id), the source, and eleven headers' allocations.
const _: () = assert!(
    HEADER_BYTES
        >= 103 + 72 + 2 * MAX_ENTITY_NAME_BYTES + 90 + MAX_CLOUDEVENTS_SOURCE_BYTES + 11 * 48
);

/// The headers of `record`, with `source` as its CloudEvents source.
pub fn headers_of(record: &Record<'_>, source: &str) -> OwnedHeaders {
    let event_id = record.event_id.to_string();
    let schema_version = SCHEMA_VERSION.to_string();
    let change_type = record.change_type.as_deref();
    OwnedHeaders::new_with_capacity(11)
        .insert(header("event_id", Some(&event_id)))
        .insert(header("entity", Some(record.entity)))
        .insert(header("change_type", change_type))
        .insert(header("schema_version", Some(&schema_version)))
        .insert(header("content-type", Some("application/json")))
        .insert(header("ce_specversion", Some("1.0")))
        .insert(header("ce_id", Some(&event_id)))
        .insert(header("ce_source", Some(source)))
        .insert(header(
            "ce_type",
            Some(&cloudevents_type(record.entity, change_type)),
        ))
        .insert(header("ce_time", Some(&record.change_date_time)))
        .insert(header("ce_subject", Some(&record.key)))
}

fn header<'a>(key: &'a str, value: Option<&'a str>) -> Header<'a, &'a str> {
    Header { key, value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{accept, Limits};

    #[test]
    fn headers_carry_the_event_and_its_cloudevents_attributes() {
        use rdkafka::message::Headers;
        let record = Record {
            topic: "t",
            key: "862".into(),
            event_id: Uuid::nil(),
            entity: "customer",
            change_type: Some("CustomerSmsChanged".into()),
            change_date_time: "2018-11-16T10:46:20Z".into(),
            payload: 0..0,
        };
        let pairs = |headers: &OwnedHeaders| -> Vec<(String, Option<String>)> {
            headers
                .iter()
                .map(|h| {
                    let value = h.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
                    (h.key.to_string(), value)
                })
                .collect()
        };
        let nil = Uuid::nil().to_string();
        let expected = |change_type: Option<&str>, ce_type: &str| {
            [
                ("event_id", Some(nil.as_str())),
                ("entity", Some("customer")),
                ("change_type", change_type),
                ("schema_version", Some("1")),
                ("content-type", Some("application/json")),
                ("ce_specversion", Some("1.0")),
                ("ce_id", Some(nil.as_str())),
                ("ce_source", Some("urn:x")),
                ("ce_type", Some(ce_type)),
                ("ce_time", Some("2018-11-16T10:46:20Z")),
                ("ce_subject", Some("862")),
            ]
            .map(|(k, v)| (k.to_string(), v.map(String::from)))
            .to_vec()
        };
        assert_eq!(
            pairs(&headers_of(&record, "urn:x")),
            expected(
                Some("CustomerSmsChanged"),
                "webhook-connector.customer.CustomerSmsChanged"
            )
        );
        let none = Record {
            change_type: None,
            ..record
        };
        assert_eq!(
            pairs(&headers_of(&none, "urn:x")),
            expected(None, "webhook-connector.customer")
        );
        // Within what a record reserves for its headers: the fixed bytes plus four
        // times the change type (sent as it is, and escaped in `ce_type`).
        assert!(crate::entity::ENTITIES
            .iter()
            .all(|e| e.name.len() <= MAX_ENTITY_NAME_BYTES));
        let worst = "\n\u{85}".repeat(50);
        let record = Record {
            change_type: Some(worst.clone()),
            key: i64::MIN.to_string(),
            entity: "e".repeat(MAX_ENTITY_NAME_BYTES).leak(),
            ..none
        };
        let bytes: usize = pairs(&headers_of(&record, &"s".repeat(256)))
            .iter()
            .map(|(k, v)| k.len() + v.as_deref().map_or(0, str::len))
            .sum();
        assert!(bytes <= HEADER_BYTES + 4 * worst.len(), "{bytes}");
    }

    #[test]
    fn one_record_per_event_and_topic_sharing_one_serialization() {
        let table = crate::config::routing_file::parse(
            "[unmatched]\ntopic = \"u\"\n[[routes]]\nname = \"r\"\nchange_types = [\"CustomerSmsChanged\"]\ntopics = [\"a\", \"b\"]\n",
            "routes.toml",
        )
        .unwrap();
        let limits = Limits {
            max_body_bytes: 1 << 20,
            max_changes: 100,
            max_request_bytes: 1 << 20,
        };
        let body = include_bytes!("../../tests/fixtures/seed_sample.json");
        let accepted = accept(
            body,
            &crate::entity::CUSTOMER,
            &limits,
            &table,
            chrono::Utc::now(),
        )
        .unwrap();
        let records = Records::build(&accepted.events, &accepted.topics, 0);
        let topics: Vec<&str> = records.records.iter().map(|r| r.topic).collect();
        assert_eq!(topics, ["a", "b", "u", "u", "u"]);
        assert_eq!(records.records[0].payload, records.records[1].payload);
        assert_eq!(records.distinct_topics(), ["a", "b", "u"]);
        for (record, event) in records.records.iter().skip(1).zip(&accepted.events) {
            assert_eq!(records.payload(record), event.to_json());
            assert_eq!(record.event_id, event.event_id);
            assert_eq!(record.change_type, event.change_type);
            assert_eq!(record.key, "862");
        }
        // What was reserved is what the records hold.
        let held: usize = records
            .records
            .iter()
            .map(|r| {
                r.payload.len()
                    + r.key.len()
                    + HEADER_BYTES
                    + 4 * r.change_type.as_deref().map_or(0, str::len)
                    + RECORD_OVERHEAD_BYTES
            })
            .sum();
        assert_eq!(accepted.record_bytes, held);
    }
}
