//! Routed events -> Kafka records: key = customer id (decimal), value = the flat
//! event as JSON, headers `event_id`, `change_type` (null value when there is
//! none), `schema_version` and `content-type`. Built before anything is produced,
//! so a request's size is known, and reserved, first.

use std::ops::Range;

use rdkafka::message::{Header, OwnedHeaders};
use uuid::Uuid;

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
    pub change_type: Option<String>,
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
                    change_type: event.change_type.clone(),
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
        let change_type = event.change_type.as_deref().map_or(0, str::len);
        let one = value + event.key().len() + HEADER_BYTES + change_type + RECORD_OVERHEAD_BYTES;
        held += one * topics.len();
        values += value;
    }
    (held, values)
}

/// Header names and the fixed-size values (event id, schema version, content type).
const HEADER_BYTES: usize = 128;

/// The record headers of the event `event_id` of type `change_type`.
pub fn headers_of(event_id: Uuid, change_type: Option<&str>) -> OwnedHeaders {
    let event_id = event_id.to_string();
    let schema_version = SCHEMA_VERSION.to_string();
    OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: "event_id",
            value: Some(&event_id),
        })
        .insert(Header {
            key: "change_type",
            value: change_type,
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
    use crate::pipeline::{accept, Limits};

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
        let accepted = accept(body, &limits, &table, chrono::Utc::now()).unwrap();
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
                    + r.change_type.as_deref().map_or(0, str::len)
                    + RECORD_OVERHEAD_BYTES
            })
            .sum();
        assert_eq!(accepted.record_bytes, held);
    }
}
