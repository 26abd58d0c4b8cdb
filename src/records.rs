//! Routed events -> Kafka records; pure (the [`crate::sink`] produces them): key = the entity's id (decimal), value = the
//! flat event as JSON, headers `event_id`, `entity`, `change_type` (null value
//! when there is none), `schema_version`, `content-type` and the CloudEvents binary-mode
//! attributes (`ce_specversion`, `ce_id`, `ce_source`, `ce_type`, `ce_time`,
//! `ce_subject`), and the W3C trace context of the span that produced them
//! (`traceparent`, `tracestate`, and for CloudEvents `ce_traceparent`,
//! `ce_tracestate`: [`TraceHeaders`]). Built before anything is produced, so a
//! request's size is known, and reserved, first.

use std::ops::Range;

use rdkafka::message::{Header, OwnedHeaders};
use uuid::Uuid;

use crate::config::MAX_CLOUDEVENTS_SOURCE_BYTES;
use crate::contract::{cloudevents_type, ERASED};
use crate::entity::Entity;
use crate::normalize::{FlatEvent, SCHEMA_VERSION};
use crate::privacy::FieldRules;
use crate::routing::RoutingTable;
use crate::state;

/// What librdkafka keeps per record beyond key, value and headers (its message
/// struct and queue links), counted so that many small records are bounded too.
pub const RECORD_OVERHEAD_BYTES: usize = 256;

/// One record to produce. It owns what it needs, so the events it came from can
/// be dropped before Kafka answers.
#[derive(Debug)]
pub struct Record<'t> {
    pub topic: &'t str,
    pub key: String,
    /// The entity's name (`customer`).
    pub entity: &'static str,
    pub kind: Kind,
    /// Where the value is in [`Records::buffers`]; `None`: a tombstone.
    pub value: Option<Slot>,
}

/// Where a record's value is: a buffer of [`Records::buffers`] and its range there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub buffer: usize,
    pub range: Range<usize>,
}

impl Slot {
    /// The whole of buffer `buffer`, `len` bytes long.
    fn whole(buffer: usize, len: usize) -> Slot {
        Slot {
            buffer,
            range: 0..len,
        }
    }
}

/// What a record holds, for its headers and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A flat event.
    Event {
        event_id: Uuid,
        change_type: Option<String>,
        /// RFC 3339 UTC, the header `ce_time`.
        change_date_time: String,
    },
    /// An entity's latest state (or its tombstone) on its state topic.
    State,
    /// An erasure event of `forget`.
    Erasure {
        erasure_id: Uuid,
        /// RFC 3339 UTC, the header `ce_time`.
        requested_at: String,
    },
    /// A notification as it arrived: on the raw topic, or, with why it was
    /// refused, on the dead-letter topic.
    Raw(RawMeta),
}

/// What a raw record says about its request, in its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMeta {
    /// The endpoint's entity (`customer` for `POST /webhooks/customer`).
    pub entity: &'static str,
    /// The request's `X-Request-Id`.
    pub request_id: String,
    /// RFC 3339 UTC.
    pub received_at: String,
    /// The request's `Content-Type`, when it had one.
    pub content_type: Option<String>,
    /// Why it was refused: the status, the `error` code and the message.
    pub refusal: Option<(u16, &'static str, String)>,
}

impl Record<'_> {
    /// The bytes this record holds once enqueued: its key, value, headers and
    /// librdkafka's per-record overhead.
    pub fn held_bytes(&self) -> usize {
        let value = self.value_len();
        if let Kind::Raw(meta) = &self.kind {
            return raw_bytes(value, &self.key, meta);
        }
        // The change type is sent twice: in `change_type`, and in `ce_type`, where
        // an escaped character takes at most three times its bytes.
        let change_type = 4 * self.change_type().map_or(0, str::len);
        value
            + self.key.len()
            + HEADER_BYTES
            + change_type
            + TRACE_HEADER_BYTES
            + RECORD_OVERHEAD_BYTES
    }

    /// The bytes of its value (0: a tombstone).
    pub fn value_len(&self) -> usize {
        self.value.as_ref().map_or(0, |slot| slot.range.len())
    }

    /// What the record is, for error messages: the event's change type.
    pub fn what(&self) -> &str {
        match &self.kind {
            Kind::Event { change_type, .. } => change_type.as_deref().unwrap_or("(no change)"),
            Kind::State if self.value.is_none() => "(state tombstone)",
            Kind::State => "(state record)",
            Kind::Erasure { .. } => "(erasure event)",
            Kind::Raw(RawMeta { refusal: None, .. }) => "(raw notification)",
            Kind::Raw(_) => "(dead letter)",
        }
    }

    /// The change type sent in the headers (events only).
    pub fn change_type(&self) -> Option<&str> {
        match &self.kind {
            Kind::Event { change_type, .. } => change_type.as_deref(),
            _ => None,
        }
    }
}

/// A request's records. Their values are written in one buffer per event (an
/// event going to several topics with the same field rules is serialized once;
/// librdkafka copies each value when it is enqueued), each buffer exactly as large
/// as what it holds: what the byte budget counts is what is allocated, and no
/// buffer grows past one event's values (a single buffer for all of them would be
/// copied, twice its size at once, as it grows).
#[derive(Debug)]
pub struct Records<'t> {
    pub buffers: Vec<Vec<u8>>,
    pub records: Vec<Record<'t>>,
    /// The trace context every record carries; set by whoever delivers them,
    /// from the span that does.
    pub trace: Option<TraceHeaders>,
}

/// The W3C trace context a request's records carry (docs/tracing.md):
/// `traceparent` names the connector's span that produced them, and `tracestate`
/// is the sender's, cut to [`MAX_TRACESTATE_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeaders {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

/// The most bytes of `tracestate` a record carries (W3C Trace Context asks that
/// at least 512 be passed on): whole entries past it are dropped, the last first.
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// The bytes of a version-00 `traceparent`.
const TRACEPARENT_BYTES: usize = 55;

/// What the trace headers of one record hold at most: four names (48 bytes), two
/// `traceparent` and two `tracestate` values, and four header allocations.
const TRACE_HEADER_BYTES: usize = 48 + 2 * TRACEPARENT_BYTES + 2 * MAX_TRACESTATE_BYTES + 4 * 48;

impl TraceHeaders {
    /// `traceparent` with the `tracestate` entries (comma-separated) that fit in
    /// [`MAX_TRACESTATE_BYTES`]; none: no `tracestate`.
    pub fn new(traceparent: String, tracestate: &str) -> Self {
        TraceHeaders {
            traceparent,
            tracestate: bounded_tracestate(tracestate),
        }
    }

    /// The largest trace context a record may carry, for sizes checked before
    /// the span that writes them exists (`explain`).
    pub fn largest() -> Self {
        let tracestate = format!("k={}", "v".repeat(MAX_TRACESTATE_BYTES - 2));
        TraceHeaders::new("0".repeat(TRACEPARENT_BYTES), &tracestate)
    }
}

/// The `tracestate` entries (comma-separated) that fit in
/// [`MAX_TRACESTATE_BYTES`], from the first; `None`: none.
pub fn bounded_tracestate(tracestate: &str) -> Option<String> {
    let mut kept = String::new();
    for entry in tracestate
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let separator = usize::from(!kept.is_empty());
        if kept.len() + separator + entry.len() > MAX_TRACESTATE_BYTES {
            break;
        }
        if separator == 1 {
            kept.push(',');
        }
        kept.push_str(entry);
    }
    (!kept.is_empty()).then_some(kept)
}

/// The records [`Records::build_within`] keeps while `reserve` grants their bytes,
/// and what all of them take.
struct Kept<'t, 'r> {
    records: Vec<Record<'t>>,
    total: usize,
    refused: bool,
    reserve: &'r mut dyn FnMut(usize) -> bool,
}

impl<'t> Kept<'t, '_> {
    /// Keeps `record` if its bytes are granted and none were refused before;
    /// counts it either way.
    fn push(&mut self, record: Record<'t>) {
        let bytes = record.held_bytes();
        self.total += bytes;
        self.refused = self.refused || !(self.reserve)(bytes);
        match self.refused {
            false => self.records.push(record),
            true => self.records.clear(),
        }
    }
}

/// An entity's state record of a request: its topic and value (`None`: a tombstone).
pub type StateRecord<'t> = (&'t str, Option<Vec<u8>>);

impl<'t> Records<'t> {
    /// One record per event and topic (`topics[i]` the topics of `events[i]`), in
    /// event order, each shaped by its topic's field rules in `table`, then the
    /// state record.
    pub fn build(
        events: &[FlatEvent],
        topics: &[Vec<&'t str>],
        table: &'t RoutingTable,
        state: Option<StateRecord<'t>>,
    ) -> Records<'t> {
        Self::build_within(events, topics, table, state, &mut |_| true).expect("nothing is refused")
    }

    /// [`build`](Self::build), asking `reserve` for each record's bytes (what
    /// [`held_bytes`](Self::held_bytes) counts for it) as soon as its value is
    /// written. After the first refusal nothing more is kept or asked for: each
    /// event's values are only measured, then dropped, and the result is what all
    /// the records would hold. So no request holds more than one event's values
    /// beyond what it was granted, and a refused one still learns its full size.
    pub fn build_within(
        events: &[FlatEvent],
        topics: &[Vec<&'t str>],
        table: &'t RoutingTable,
        state: Option<StateRecord<'t>>,
        reserve: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Records<'t>, usize> {
        let mut buffers = Vec::new();
        let mut kept = Kept {
            records: Vec::with_capacity(topics.iter().map(Vec::len).sum::<usize>() + 1),
            total: 0,
            refused: false,
            reserve,
        };
        let mut shapes = Shapes::default();
        for (event, topics) in events.iter().zip(topics) {
            let key = event.key();
            let (buffer, mut values) = (buffers.len(), Vec::new());
            // One serialization per distinct rules among the event's topics.
            let mut written: Vec<(Option<&FieldRules>, Range<usize>)> = Vec::new();
            for topic in topics {
                let rules = table.rules_for(topic);
                let range = match written.iter().find(|(r, _)| same_rules(*r, rules)) {
                    Some((_, range)) => range.clone(),
                    None => {
                        let start = values.len();
                        event.write_shaped(rules, shapes.get(event, rules), &mut values);
                        written.push((rules, start..values.len()));
                        start..values.len()
                    }
                };
                let record = Record {
                    topic,
                    key: key.clone(),
                    entity: event.entity.name,
                    kind: Kind::Event {
                        event_id: event.event_id,
                        change_type: event.change_type.clone(),
                        change_date_time: event.change_date_time.clone(),
                    },
                    value: Some(Slot { buffer, range }),
                };
                kept.push(record);
            }
            if kept.refused {
                buffers.clear();
            } else {
                values.shrink_to_fit();
                buffers.push(values);
            }
        }
        if let (Some((topic, value)), Some(event)) = (state, events.first()) {
            let slot = value.map(|value| {
                buffers.push(value);
                Slot::whole(buffers.len() - 1, buffers[buffers.len() - 1].len())
            });
            let record = Record {
                topic,
                key: event.key(),
                entity: event.entity.name,
                kind: Kind::State,
                value: slot,
            };
            kept.push(record);
        }
        match kept.refused {
            false => Ok(Records {
                buffers,
                records: kept.records,
                trace: None,
            }),
            true => Err(kept.total),
        }
    }

    /// What `forget` writes for `entity`'s `id`: a tombstone on the state topic,
    /// when the entity has one, then the erasure event on `erasure_topic`.
    pub fn erasure(
        entity: &'static Entity,
        id: i64,
        state_topic: Option<&'t str>,
        erasure_topic: &'t str,
        erasure_id: Uuid,
        requested_at: String,
    ) -> Records<'t> {
        let key = id.to_string();
        let mut records = Vec::with_capacity(2);
        if let Some(topic) = state_topic {
            records.push(Record {
                topic,
                key: key.clone(),
                entity: entity.name,
                kind: Kind::State,
                value: None,
            });
        }
        let event = state::erasure_event(entity, id, erasure_id, &requested_at, state_topic);
        let value = serde_json::to_vec(&event).expect("JSON values serialize");
        records.push(Record {
            topic: erasure_topic,
            key,
            entity: entity.name,
            kind: Kind::Erasure {
                erasure_id,
                requested_at,
            },
            value: Some(Slot::whole(0, value.len())),
        });
        Records {
            buffers: vec![value],
            records,
            trace: None,
        }
    }

    /// One raw record: `body` with `meta`, keyed by `key`, to `topic`.
    pub fn raw(topic: &'t str, key: String, body: &[u8], meta: RawMeta) -> Records<'t> {
        let mut records = Records {
            buffers: Vec::with_capacity(1),
            records: Vec::with_capacity(1),
            trace: None,
        };
        records.push_raw(topic, key, body, meta);
        records
    }

    /// Appends a raw record: `body` with `meta`, keyed by `key`, to `topic`.
    pub fn push_raw(&mut self, topic: &'t str, key: String, body: &[u8], meta: RawMeta) {
        self.buffers.push(body.to_vec());
        self.records.push(Record {
            topic,
            key,
            entity: meta.entity,
            kind: Kind::Raw(meta),
            value: Some(Slot::whole(self.buffers.len() - 1, body.len())),
        });
    }

    /// The bytes the records hold once enqueued: keys, values, headers and
    /// librdkafka's per-record overhead (it copies every value, so a value shared by
    /// two topics counts twice).
    pub fn held_bytes(&self) -> usize {
        self.records.iter().map(Record::held_bytes).sum()
    }

    /// Every record's headers ([`headers_of`]), in order, with `source` as the
    /// CloudEvents source and the records' trace context.
    pub fn headers(&self, source: &str) -> Vec<OwnedHeaders> {
        let trace = self.trace.as_ref();
        (self.records.iter())
            .map(|record| headers_of(record, source, trace))
            .collect()
    }

    /// The value of `record`; `None`: a tombstone.
    pub fn value(&self, record: &Record<'_>) -> Option<&[u8]> {
        (record.value.as_ref()).map(|slot| &self.buffers[slot.buffer][slot.range.clone()])
    }

    /// The bytes of the records' values, each written once.
    pub fn value_bytes(&self) -> usize {
        self.buffers.iter().map(Vec::len).sum()
    }

    /// The topics of these records, each once, sorted.
    pub(crate) fn distinct_topics(&self) -> Vec<&'t str> {
        let mut topics: Vec<&str> = self.records.iter().map(|r| r.topic).collect();
        topics.sort_unstable();
        topics.dedup();
        topics
    }
}

/// Whether two topics' rules are the same ones (rules are shared per topic).
fn same_rules(a: Option<&FieldRules>, b: Option<&FieldRules>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => std::ptr::eq(a, b),
        _ => false,
    }
}

/// The shared fields' JSON per field rules among a request's topics, written
/// once per request: all of a notification's events share their fields.
#[derive(Default)]
struct Shapes<'r> {
    by_rules: Vec<(&'r FieldRules, Vec<u8>)>,
}

impl<'r> Shapes<'r> {
    fn get<'s>(&'s mut self, event: &'s FlatEvent, rules: Option<&'r FieldRules>) -> &'s [u8] {
        let Some(rules) = rules else {
            return event.shared.json();
        };
        let index = match self
            .by_rules
            .iter()
            .position(|(r, _)| std::ptr::eq(*r, rules))
        {
            Some(index) => index,
            None => {
                let json = event.shared.json_for(Some(rules)).into_owned();
                self.by_rules.push((rules, json));
                self.by_rules.len() - 1
            }
        };
        &self.by_rules[index].1
    }
}

/// The bytes a raw record of a `body`-byte body, keyed by `key`, with `meta`,
/// holds once enqueued: the body, key, header names and values (the trace
/// context's as for every record), librdkafka's allocation per header and per record.
pub fn raw_bytes(body: usize, key: &str, meta: &RawMeta) -> usize {
    let values = meta.entity.len()
        + meta.request_id.len()
        + meta.received_at.len()
        + meta.content_type.as_ref().map_or(0, String::len)
        + meta
            .refusal
            .as_ref()
            .map_or(0, |(_, code, message)| 3 + code.len() + message.len());
    // Seven header names (at most 20 bytes each) and allocations (48 each).
    body + key.len() + values + 7 * (20 + 48) + TRACE_HEADER_BYTES + RECORD_OVERHEAD_BYTES
}

/// The most bytes librdkafka adds around a record's key, value and headers when it
/// checks the record against `message.max.bytes` (`RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`:
/// the length, attributes, timestamp and offset deltas, key and value lengths and
/// header count, each as its longest varint).
pub const MAX_RECORD_FRAMING_BYTES: usize = 36;

/// The size librdkafka checks a record against `message.max.bytes` with
/// (`rd_kafka_msg_max_wire_size`): [`MAX_RECORD_FRAMING_BYTES`], the key, the value
/// and every header's name and value with their varint lengths.
pub fn wire_bytes(key: usize, value: usize, headers: &OwnedHeaders) -> usize {
    use rdkafka::message::Headers;
    let headers: usize = (headers.iter())
        .map(|h| {
            let value = h.value.map_or(0, <[u8]>::len);
            h.key.len() + value + varint_bytes(h.key.len()) + varint_bytes(value)
        })
        .sum();
    MAX_RECORD_FRAMING_BYTES + key + value + headers
}

/// The bytes of `length` as a Kafka varint (zigzag-encoded).
fn varint_bytes(length: usize) -> usize {
    let mut rest = (length as u64) << 1;
    let mut bytes = 1;
    while rest >= 0x80 {
        rest >>= 7;
        bytes += 1;
    }
    bytes
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

/// The headers of `record`, with `source` as its CloudEvents source. An event
/// has all eleven; a state record `entity`, `schema_version` and, when it has a
/// value, `content-type`; an erasure event the CloudEvents attributes too; a
/// raw record its request's `entity`, `request_id`, `received_at` and
/// `request_content_type` (null when it had none), and when it was refused,
/// `error_status`, `error_code` and `error_message`. Then `trace`, when there is
/// one: `traceparent` and `tracestate` on every record, and as the CloudEvents
/// distributed-tracing extension (`ce_traceparent`, `ce_tracestate`) on those
/// with CloudEvents attributes.
pub fn headers_of(record: &Record<'_>, source: &str, trace: Option<&TraceHeaders>) -> OwnedHeaders {
    let headers = own_headers(record, source);
    let Some(trace) = trace else {
        return headers;
    };
    let cloudevent = matches!(record.kind, Kind::Event { .. } | Kind::Erasure { .. });
    let names: &[(&str, &str)] = match cloudevent {
        true => &[
            ("traceparent", "tracestate"),
            ("ce_traceparent", "ce_tracestate"),
        ],
        false => &[("traceparent", "tracestate")],
    };
    names.iter().fold(headers, |headers, (parent, state)| {
        let headers = headers.insert(header(parent, Some(&trace.traceparent)));
        match trace.tracestate.as_deref() {
            Some(tracestate) => headers.insert(header(state, Some(tracestate))),
            None => headers,
        }
    })
}

/// The headers of `record` but the trace context's.
fn own_headers(record: &Record<'_>, source: &str) -> OwnedHeaders {
    let schema_version = SCHEMA_VERSION.to_string();
    let entity = Some(record.entity);
    match &record.kind {
        Kind::Event {
            event_id,
            change_type,
            change_date_time,
        } => {
            let event_id = event_id.to_string();
            let change_type = change_type.as_deref();
            let headers = OwnedHeaders::new_with_capacity(11)
                .insert(header("event_id", Some(&event_id)))
                .insert(header("entity", entity))
                .insert(header("change_type", change_type))
                .insert(header("schema_version", Some(&schema_version)))
                .insert(header("content-type", Some("application/json")));
            let ce_type = cloudevents_type(record.entity, change_type);
            cloudevent(
                headers,
                &event_id,
                source,
                &ce_type,
                change_date_time,
                &record.key,
            )
        }
        Kind::State => {
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(header("entity", entity))
                .insert(header("schema_version", Some(&schema_version)));
            match record.value {
                Some(_) => headers.insert(header("content-type", Some("application/json"))),
                None => headers,
            }
        }
        Kind::Raw(meta) => {
            let status = meta
                .refusal
                .as_ref()
                .map(|(status, _, _)| status.to_string());
            let headers = OwnedHeaders::new_with_capacity(7)
                .insert(header("entity", entity))
                .insert(header("request_id", Some(&meta.request_id)))
                .insert(header("received_at", Some(&meta.received_at)))
                .insert(header("request_content_type", meta.content_type.as_deref()));
            match &meta.refusal {
                None => headers,
                Some((_, code, message)) => headers
                    .insert(header("error_status", status.as_deref()))
                    .insert(header("error_code", Some(code)))
                    .insert(header("error_message", Some(message))),
            }
        }
        Kind::Erasure {
            erasure_id,
            requested_at,
        } => {
            let headers = OwnedHeaders::new_with_capacity(9)
                .insert(header("entity", entity))
                .insert(header("schema_version", Some(&schema_version)))
                .insert(header("content-type", Some("application/json")));
            let ce_type = cloudevents_type(record.entity, Some(ERASED));
            let id = erasure_id.to_string();
            cloudevent(headers, &id, source, &ce_type, requested_at, &record.key)
        }
    }
}

/// `headers` with the CloudEvents binary-mode attributes appended.
fn cloudevent(
    headers: OwnedHeaders,
    id: &str,
    source: &str,
    ce_type: &str,
    time: &str,
    subject: &str,
) -> OwnedHeaders {
    headers
        .insert(header("ce_specversion", Some("1.0")))
        .insert(header("ce_id", Some(id)))
        .insert(header("ce_source", Some(source)))
        .insert(header("ce_type", Some(ce_type)))
        .insert(header("ce_time", Some(time)))
        .insert(header("ce_subject", Some(subject)))
}

fn header<'a>(key: &'a str, value: Option<&'a str>) -> Header<'a, &'a str> {
    Header { key, value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{accept, Accepted, Input, Limits};

    const SEED: &[u8] = include_bytes!("../tests/fixtures/seed_sample.json");

    /// Headers as (name, value) pairs, in order.
    fn pairs(headers: &OwnedHeaders) -> Vec<(String, Option<String>)> {
        use rdkafka::message::Headers;
        (headers.iter())
            .map(|h| {
                let value = h.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
                (h.key.to_string(), value)
            })
            .collect()
    }

    #[test]
    fn a_raw_record_counts_its_body_key_header_values_and_fixed_costs() {
        let meta = RawMeta {
            entity: "customer",
            request_id: "req-1".into(),
            received_at: "2026-12-07T10:00:00Z".into(),
            content_type: Some("application/json".into()),
            refusal: Some((400, "invalid_json", "bad".into())),
        };
        // 8 + 5 + 20 + 16 bytes of values, 3 + 12 + 3 of the refusal's, 7 header
        // names and allocations of 20 + 48.
        let fixed = 7 * (20 + 48) + TRACE_HEADER_BYTES + RECORD_OVERHEAD_BYTES;
        assert_eq!(raw_bytes(100, "862", &meta), 100 + 3 + 49 + 18 + fixed);
        let bare = RawMeta {
            content_type: None,
            refusal: None,
            ..meta
        };
        assert_eq!(raw_bytes(0, "", &bare), 33 + fixed);
    }

    #[test]
    fn value_bytes_sums_the_buffers_once_each() {
        let meta = RawMeta {
            entity: "customer",
            request_id: "r".into(),
            received_at: "t".into(),
            content_type: None,
            refusal: None,
        };
        let mut records = Records::raw("a", "1".into(), b"{}", meta.clone());
        records.push_raw("b", "2".into(), b"[1,2]", meta);
        assert_eq!(records.value_bytes(), 2 + 5);
    }

    #[test]
    fn varints_take_a_byte_per_seven_bits_of_the_zigzagged_length() {
        for (length, bytes) in [(0, 1), (63, 1), (64, 2), (8191, 2), (8192, 3)] {
            assert_eq!(varint_bytes(length), bytes, "{length}");
        }
    }

    #[test]
    fn wire_bytes_is_the_size_librdkafka_refuses_a_record_past() {
        use rdkafka::producer::{BaseProducer, BaseRecord};
        // Nothing is sent: librdkafka checks the size when the record is enqueued.
        let producer: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.max.bytes", "1000")
            .create()
            .unwrap();
        let record = event_record(Some("CustomerSmsChanged"));
        let headers = headers_of(&record, "urn:x", None);
        let fixed = wire_bytes(3, 0, &headers);
        assert!(fixed < 1000, "{fixed}");
        let send = |value: &[u8]| {
            let base = BaseRecord::<str, [u8]>::to("t")
                .key("862")
                .payload(value)
                .headers(headers.clone());
            producer.send(base).map_err(|(error, _)| error)
        };
        let fits = vec![b'x'; 1000 - fixed];
        assert_eq!(wire_bytes(3, fits.len(), &headers), 1000);
        assert!(send(&fits).is_ok());
        let over = vec![b'x'; 1001 - fixed];
        let refused = send(&over).unwrap_err();
        assert_eq!(
            refused.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge)
        );
    }

    /// `body` as the customer endpoint accepts it with `table`.
    fn accept_seed<'t>(body: &[u8], table: &'t RoutingTable) -> Accepted<'t> {
        let limits = Limits {
            max_body_bytes: 1 << 20,
            max_changes: 100,
            max_request_bytes: 1 << 20,
        };
        accept(Input {
            body,
            entity: &crate::entity::CUSTOMER,
            received_at: chrono::Utc::now(),
            limits: &limits,
            table,
        })
        .unwrap()
    }

    /// `(name, value)` pairs as [`pairs`] gives them.
    fn owned(pairs: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        (pairs.iter())
            .map(|(k, v)| (k.to_string(), v.map(String::from)))
            .collect()
    }

    /// The seed sample's first event for customer 862 on topic `t`, with
    /// `change_type`.
    fn event_record(change_type: Option<&str>) -> Record<'static> {
        Record {
            topic: "t",
            key: "862".into(),
            entity: "customer",
            kind: Kind::Event {
                event_id: Uuid::nil(),
                change_type: change_type.map(String::from),
                change_date_time: "2018-11-16T10:46:20Z".into(),
            },
            value: Some(Slot::whole(0, 0)),
        }
    }

    #[test]
    fn headers_carry_the_event_and_its_cloudevents_attributes() {
        let nil = Uuid::nil().to_string();
        for (change_type, ce_type) in [
            (
                Some("CustomerSmsChanged"),
                "webhook-connector.customer.CustomerSmsChanged",
            ),
            (None, "webhook-connector.customer"),
        ] {
            let expected = owned(&[
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
            ]);
            let record = event_record(change_type);
            assert_eq!(pairs(&headers_of(&record, "urn:x", None)), expected);
        }
    }

    #[test]
    fn headers_take_at_most_the_fixed_bytes_plus_four_times_the_change_type() {
        // Within what a record reserves for its headers: the change type is sent as
        // it is, and escaped in `ce_type`.
        assert!(crate::entity::ENTITIES
            .iter()
            .all(|e| e.name.len() <= MAX_ENTITY_NAME_BYTES));
        let worst = "\n\u{85}".repeat(50);
        let record = Record {
            key: i64::MIN.to_string(),
            entity: "e".repeat(MAX_ENTITY_NAME_BYTES).leak(),
            ..event_record(Some(&worst))
        };
        let bytes: usize = pairs(&headers_of(&record, &"s".repeat(256), None))
            .iter()
            .map(|(k, v)| k.len() + v.as_deref().map_or(0, str::len))
            .sum();
        assert!(bytes <= HEADER_BYTES + 4 * worst.len(), "{bytes}");
        // The trace context at its largest, with an allocation per header.
        let tracestate = format!("k={}", "v".repeat(MAX_TRACESTATE_BYTES - 2));
        let trace = TraceHeaders::new(TRACEPARENT.into(), &tracestate);
        let traced: usize = pairs(&headers_of(&record, "s", Some(&trace)))
            .iter()
            .map(|(k, v)| k.len() + v.as_deref().map_or(0, str::len))
            .sum::<usize>()
            - pairs(&headers_of(&record, "s", None))
                .iter()
                .map(|(k, v)| k.len() + v.as_deref().map_or(0, str::len))
                .sum::<usize>();
        assert_eq!(traced + 4 * 48, TRACE_HEADER_BYTES);
    }

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_trace_context_follows_the_own_headers_and_cloudevents_get_it_twice() {
        let full = TraceHeaders::new(TRACEPARENT.into(), "a=1, b=2");
        let bare = TraceHeaders::new(TRACEPARENT.into(), "");
        let event = event_record(Some("CustomerSmsChanged"));
        let names = |record: &Record<'_>, trace| -> Vec<String> {
            let pairs = pairs(&headers_of(record, "urn:x", Some(trace)));
            let own = pairs.len() - pairs.iter().filter(|(k, _)| k.contains("trace")).count();
            assert_eq!(
                pairs[..own],
                self::pairs(&headers_of(record, "urn:x", None))
            );
            let trace = pairs[own..].iter();
            trace
                .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap()))
                .collect()
        };
        assert_eq!(
            names(&event, &full),
            [
                format!("traceparent={TRACEPARENT}"),
                "tracestate=a=1,b=2".into(),
                format!("ce_traceparent={TRACEPARENT}"),
                "ce_tracestate=a=1,b=2".into(),
            ]
        );
        assert_eq!(names(&event, &bare).len(), 2);
        let state = Record {
            kind: Kind::State,
            ..event_record(None)
        };
        assert_eq!(names(&state, &full).len(), 2);
        assert_eq!(names(&state, &bare), [format!("traceparent={TRACEPARENT}")]);
    }

    #[test]
    fn tracestate_keeps_the_whole_entries_that_fit() {
        let entry = |i: usize| format!("k{i:02}={}", "v".repeat(60));
        let entries: Vec<String> = (0..20).map(entry).collect();
        let kept = TraceHeaders::new(TRACEPARENT.into(), &entries.join(" , "));
        let kept = kept.tracestate.unwrap();
        // 64-byte entries and commas: 7 fit in 512 bytes (7 * 64 + 6), 8 do not.
        assert_eq!(kept, entries[..7].join(","));
        let exact = format!("k={}", "v".repeat(MAX_TRACESTATE_BYTES - 2));
        assert_eq!(
            TraceHeaders::new(String::new(), &exact).tracestate,
            Some(exact.clone())
        );
        let over = format!("{exact}v,k2=x");
        assert_eq!(TraceHeaders::new(String::new(), &over).tracestate, None);
        assert_eq!(TraceHeaders::new(String::new(), " , ").tracestate, None);
        // The comma counts: 3 + 1 + 508 bytes fit, 3 + 1 + 509 do not.
        let with = |entry: usize| format!("a=1,k={}", "v".repeat(entry - 2));
        assert_eq!(bounded_tracestate(&with(508)), Some(with(508)));
        assert_eq!(bounded_tracestate(&with(509)).as_deref(), Some("a=1"));
    }

    #[test]
    fn a_state_record_says_which_entity_and_a_tombstone_has_no_content_type() {
        let state = Record {
            kind: Kind::State,
            ..event_record(None)
        };
        let state_headers = owned(&[
            ("entity", Some("customer")),
            ("schema_version", Some("1")),
            ("content-type", Some("application/json")),
        ]);
        assert_eq!(pairs(&headers_of(&state, "urn:x", None)), state_headers);
        assert_eq!(state.what(), "(state record)");
        let tombstone = Record {
            value: None,
            ..state
        };
        assert_eq!(
            pairs(&headers_of(&tombstone, "urn:x", None)),
            state_headers[..2]
        );
        assert_eq!(tombstone.what(), "(state tombstone)");
        assert_eq!(tombstone.change_type(), None);
    }

    #[test]
    fn forget_writes_a_tombstone_then_an_erasure_event_without_personal_data() {
        use rdkafka::message::Headers;
        let id = Uuid::from_u128(7);
        let at = "2026-11-29T10:00:00Z".to_string();
        let records = Records::erasure(
            &crate::entity::CUSTOMER,
            862,
            Some("s"),
            "e",
            id,
            at.clone(),
        );
        assert_eq!(records.records.len(), 2);
        let (tombstone, erasure) = (&records.records[0], &records.records[1]);
        assert_eq!((tombstone.topic, tombstone.key.as_str()), ("s", "862"));
        assert_eq!(records.value(tombstone), None);
        assert_eq!((erasure.topic, erasure.key.as_str()), ("e", "862"));
        let value: serde_json::Value =
            serde_json::from_slice(records.value(erasure).unwrap()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"erasure_id": id, "schema_version": 1, "entity": "customer",
                               "customer_id": 862, "requested_at": at, "state_topic": "s"})
        );
        assert_eq!(erasure.what(), "(erasure event)");
        let headers = headers_of(erasure, "urn:x", None);
        let header = |name: &str| headers.iter().find(|h| h.key == name).unwrap().value;
        assert_eq!(
            header("ce_type"),
            Some(&b"webhook-connector.customer.Erased"[..])
        );
        assert_eq!(header("ce_time"), Some(at.as_bytes()));
        // Without a state topic, only the erasure event.
        let records = Records::erasure(&crate::entity::BOOKING, 5, None, "e", id, at);
        assert_eq!(records.records.len(), 1);
        assert_eq!(records.records[0].entity, "booking");
    }

    /// What event and state records hold, by the formula a reservation follows:
    /// value, key, the fixed header bytes, four times the change type and
    /// librdkafka's overhead.
    fn held(records: &Records) -> usize {
        (records.records.iter())
            .map(|r| {
                r.value_len()
                    + r.key.len()
                    + HEADER_BYTES
                    + 4 * r.change_type().map_or(0, str::len)
                    + TRACE_HEADER_BYTES
                    + RECORD_OVERHEAD_BYTES
            })
            .sum()
    }

    #[test]
    fn one_record_per_event_and_topic_sharing_one_serialization() {
        let table = crate::config::routing_file::parse(
            "[unmatched]\ntopic = \"u\"\n[[routes]]\nname = \"r\"\nchange_types = [\"CustomerSmsChanged\"]\ntopics = [\"a\", \"b\"]\n",
            "routes.toml",
            None,
        )
        .unwrap();
        let accepted = accept_seed(SEED, &table);
        let records = Records::build(&accepted.events, &accepted.topics, &table, None);
        let topics: Vec<&str> = records.records.iter().map(|r| r.topic).collect();
        assert_eq!(topics, ["a", "b", "u", "u", "u"]);
        assert_eq!(records.records[0].value, records.records[1].value);
        assert_eq!(records.distinct_topics(), ["a", "b", "u"]);
        for (record, event) in records.records.iter().skip(1).zip(&accepted.events) {
            assert_eq!(records.value(record).unwrap(), event.to_json());
            let Kind::Event { event_id, .. } = &record.kind else {
                panic!("an event")
            };
            assert_eq!(*event_id, event.event_id);
            assert_eq!(record.change_type(), event.change_type.as_deref());
            assert_eq!(record.key, "862");
        }
        // What was reserved is what the records hold.
        assert_eq!(accepted.record_bytes, held(&records));
    }

    #[test]
    fn each_topic_gets_its_rules_value_once_per_rules_and_the_state_record_comes_last() {
        let key = std::sync::Arc::new(crate::privacy::Key::new(&"k".repeat(32)).unwrap());
        let table = crate::config::routing_file::parse(
            "[unmatched]\ntopic = \"u\"\n\
             [[routes]]\nname = \"whole\"\nchange_types = [\"CustomerSmsChanged\"]\ntopics = [\"a\"]\n\
             [[routes]]\nname = \"minimal\"\nchange_types = [\"CustomerSmsChanged\"]\ntopics = [\"b\", \"c\"]\n\
             include = [\"new_value\"]\npseudonymise = [\"new_value\"]\n\
             [[state]]\nentity = \"customer\"\ntopic = \"s\"\n",
            "routes.toml",
            Some(&key),
        )
        .unwrap();
        let accepted = accept_seed(SEED, &table);
        let records = &accepted.records;
        let topics: Vec<&str> = records.records.iter().map(|r| r.topic).collect();
        assert_eq!(topics, ["a", "b", "c", "u", "u", "u", "s"]);
        let (a, b, c) = (
            &records.records[0],
            &records.records[1],
            &records.records[2],
        );
        assert_ne!(a.value, b.value);
        assert_eq!(b.value, c.value, "one serialization per rules");
        let event = &accepted.events[0];
        assert_eq!(records.value(a).unwrap(), event.to_json());
        let minimal: serde_json::Value = serde_json::from_slice(records.value(b).unwrap()).unwrap();
        assert_eq!(minimal, event.to_value_for(table.rules_for("b")));
        assert_eq!(minimal["new_value"], key.token(&serde_json::json!("3")));
        assert!(minimal.get("customer_email").is_none());
        let state = records.records.last().unwrap();
        assert_eq!(
            (state.kind.clone(), state.key.as_str()),
            (Kind::State, "862")
        );
        assert_eq!(
            records.value(state).unwrap(),
            accepted.state.as_ref().unwrap().1.as_deref().unwrap()
        );
        // What was reserved is what the records hold, the state record included.
        assert_eq!(accepted.record_bytes, held(records));
        // A deletion: the state record is a tombstone, still counted.
        let deleted =
            String::from_utf8_lossy(SEED).replace("CustomerSmsChanged", "CustomerDeleted");
        let accepted = accept_seed(deleted.as_bytes(), &table);
        let records = &accepted.records;
        let state = records.records.last().unwrap();
        assert_eq!((state.topic, records.value(state)), ("s", None));
        assert_eq!(state.what(), "(state tombstone)");
    }

    #[test]
    fn raw_records_keep_the_body_and_say_where_it_came_from_and_why_it_was_refused() {
        let meta = RawMeta {
            entity: "booking",
            request_id: "req-1".into(),
            received_at: "2026-11-29T10:00:00Z".into(),
            content_type: None,
            refusal: Some((
                413,
                "too_many_changes",
                "the notification has 101 changes".into(),
            )),
        };
        let body = b"{\"Changes\": [\xff not even UTF-8";
        let records = Records::raw("dead", "req-1".into(), body, meta.clone());
        let record = &records.records[0];
        assert_eq!(
            (record.topic, record.key.as_str(), record.entity),
            ("dead", "req-1", "booking")
        );
        assert_eq!(records.value(record), Some(&body[..]));
        assert_eq!(record.what(), "(dead letter)");
        assert_eq!(
            pairs(&headers_of(record, "urn:x", None)),
            owned(&[
                ("entity", Some("booking")),
                ("request_id", Some("req-1")),
                ("received_at", Some("2026-11-29T10:00:00Z")),
                ("request_content_type", None),
                ("error_status", Some("413")),
                ("error_code", Some("too_many_changes")),
                ("error_message", Some("the notification has 101 changes")),
            ])
        );
        // What a raw record reserves covers what it holds.
        let trace = TraceHeaders::new(TRACEPARENT.into(), &"k=v,".repeat(200));
        let held: usize = pairs(&headers_of(record, "urn:x", Some(&trace)))
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, String::len) + 48)
            .sum::<usize>()
            + body.len()
            + record.key.len()
            + RECORD_OVERHEAD_BYTES;
        assert!(raw_bytes(body.len(), "req-1", &meta) >= held);
        // An archived notification: no refusal headers, appended after the events.
        let archived = RawMeta {
            refusal: None,
            content_type: Some("application/json".into()),
            ..meta
        };
        let mut records = Records::raw("a", "1".into(), b"{}", archived.clone());
        records.push_raw("b", "2".into(), b"[]", archived);
        assert_eq!(records.value(&records.records[1]), Some(&b"[]"[..]));
        assert_eq!(records.records[1].what(), "(raw notification)");
        let headers = pairs(&headers_of(&records.records[0], "urn:x", None));
        assert_eq!(headers.len(), 4);
        assert_eq!(
            headers[3],
            (
                "request_content_type".into(),
                Some("application/json".into())
            )
        );
    }
}
