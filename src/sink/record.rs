//! Routed events -> Kafka records: key = customer id (decimal), value = the flat
//! event as JSON, headers `event_id`, `change_type` (null value when there is
//! none), `schema_version` and `content-type`. Built before anything is produced,
//! so a request's size is known, and reserved, first.

use std::ops::Range;

use rdkafka::message::{Header, OwnedHeaders};

use crate::normalize::{FlatEvent, SCHEMA_VERSION};
use crate::pipeline::RoutedEvent;

/// What librdkafka keeps per record beyond key, value and headers (its message
/// struct and queue links), counted so that many small records are bounded too.
pub const RECORD_OVERHEAD_BYTES: usize = 256;

/// One record to produce.
pub struct Record<'a> {
    pub event: &'a FlatEvent,
    pub topic: &'a str,
    pub key: String,
    /// The value's place in [`Records::payloads`].
    pub payload: Range<usize>,
}

/// A request's records; the values share one buffer (librdkafka copies each one
/// when it is enqueued, and an event going to several topics is serialized once).
pub struct Records<'a> {
    pub payloads: Vec<u8>,
    pub records: Vec<Record<'a>>,
}

impl<'a> Records<'a> {
    /// One record per event and topic, in event order.
    pub fn build(routed: &[RoutedEvent<'a>]) -> Records<'a> {
        let mut payloads = Vec::with_capacity(routed.len() * 1024);
        let mut records = Vec::with_capacity(routed.iter().map(|(_, t)| t.len()).sum());
        for (event, topics) in routed {
            let start = payloads.len();
            event.write_json(&mut payloads);
            let payload = start..payloads.len();
            let key = event.key();
            for topic in topics {
                records.push(Record {
                    event,
                    topic,
                    key: key.clone(),
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

    /// The bytes these records hold once enqueued: keys, values, headers and
    /// librdkafka's per-record overhead.
    pub fn bytes(&self) -> usize {
        self.records
            .iter()
            .map(|r| {
                let change_type = r.event.change_type.as_deref().map_or(0, str::len);
                r.key.len() + r.payload.len() + HEADER_BYTES + change_type + RECORD_OVERHEAD_BYTES
            })
            .sum()
    }

    /// The topics of these records, each once, sorted.
    pub fn distinct_topics(&self) -> Vec<&'a str> {
        let mut topics: Vec<&str> = self.records.iter().map(|r| r.topic).collect();
        topics.sort_unstable();
        topics.dedup();
        topics
    }
}

/// Header names and the fixed-size values (event id, schema version, content type).
const HEADER_BYTES: usize = 128;

/// The record headers of an event.
pub fn headers(event: &FlatEvent) -> OwnedHeaders {
    let event_id = event.event_id.to_string();
    let schema_version = SCHEMA_VERSION.to_string();
    OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: "event_id",
            value: Some(&event_id),
        })
        .insert(Header {
            key: "change_type",
            value: event.change_type.as_deref(),
        })
        .insert(Header {
            key: "schema_version",
            value: Some(&schema_version),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{accept, route, Limits};

    #[test]
    fn one_record_per_event_and_topic_sharing_one_serialization() {
        let table = crate::config::routes::parse(
            "[unmatched]\ntopic = \"u\"\n[[routes]]\nname = \"r\"\nchange_types = [\"CustomerSmsChanged\"]\ntopics = [\"a\", \"b\"]\n",
            "routes.toml",
        )
        .unwrap();
        let limits = Limits {
            max_body_bytes: 1 << 20,
            max_changes: 100,
        };
        let body = include_bytes!("../../tests/fixtures/seed_sample.json");
        let events = accept(body, &limits, chrono::Utc::now()).unwrap();
        let routed = route(&events, &table);
        let records = Records::build(&routed);
        let topics: Vec<&str> = records.records.iter().map(|r| r.topic).collect();
        assert_eq!(topics, ["a", "b", "u", "u", "u"]);
        assert_eq!(records.records[0].payload, records.records[1].payload);
        assert_eq!(records.distinct_topics(), ["a", "b", "u"]);
        for (record, event) in records.records.iter().skip(1).zip(&events) {
            let value: serde_json::Value = serde_json::from_slice(records.payload(record)).unwrap();
            assert_eq!(value["event_id"], event.event_id.to_string());
            assert_eq!(record.key, "862");
        }
        let values: usize = records.records.iter().map(|r| r.payload.len()).sum();
        assert!(records.bytes() > values + 5 * RECORD_OVERHEAD_BYTES);
    }
}
