//! Any bytes through the HTTP-level acceptance step, as the endpoint runs it:
//! `pipeline::accept` (size limit, parse with duplicate keys refused at every depth
//! and exact numbers, change limit, normalize, routing with a fixed table, the
//! records: every event serialized as a record value, shaped by its topic's field
//! rules, then the customer's state record, counted against the request limit).
//! Nothing may panic; a refused body's error must be consistent with its numbers
//! and format (one refused as too large to deliver needs exactly what it says;
//! `NoRoom` never comes from `accept`); an accepted body must give max(changes, 1)
//! events, routed to at least one topic each (no topic twice), whose records hold
//! exactly the bytes reserved for them and whose values parse back as flat JSON
//! objects, every key once (fewer, exactly as the rules shape them, on a topic with
//! rules), carrying the event id and the entity's id, written once per event and
//! rules in one buffer per event of exactly their size. Accepted again with the
//! raw topic's copy (`pipeline::accept_within`), the copy is counted and asked
//! for like the records, and a budget refusing at any ask gives `NoRoom`. Every
//! input is tried as each entity's body (customer, booking).
#![no_main]

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use webhook_connector::config::routing_file;
use webhook_connector::entity::{Entity, ENTITIES};
use webhook_connector::normalize::fixed_keys;
use webhook_connector::pipeline::{
    self, AcceptError, Accepted, Limits, MAX_NAME_BYTES_PER_BODY_BYTE,
};
use webhook_connector::privacy::{FieldRules, Key};
use webhook_connector::records::{self, Kind, RawMeta, Slot, RECORD_OVERHEAD_BYTES};
use webhook_connector::routing::RoutingTable;

/// Small limits, so that every refusal is reached with short inputs
/// (scripts/fuzz.sh passes -max_len=8192, so inputs over 4096 bytes are refused as
/// too large and the size check is exercised too; 32 KiB of body and records is
/// more than most accepted bodies need, not more than all).
const LIMITS: Limits = Limits {
    max_body_bytes: 4096,
    max_changes: 8,
    max_request_bytes: 32 * 1024,
};

/// A table with a literal name, globs, a route to two topics, routes sharing a
/// topic, routes naming their entities, a route with field rules, the unmatched
/// topic and a state topic for customers.
const ROUTES: &str = include_str!("../../tests/fixtures/routes/fuzz.toml");

fn table() -> &'static RoutingTable {
    static TABLE: OnceLock<RoutingTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let key = std::sync::Arc::new(Key::new(&"f".repeat(32)).expect("a long key"));
        routing_file::parse(ROUTES, "routes.toml", Some(&key)).expect("the fixed table is valid")
    })
}

/// The raw topic's topic when the copy is on (`archive.raw_topic`).
const RAW_TOPIC: &str = "webhooks.raw";

fuzz_target!(|body: &[u8]| {
    for entity in ENTITIES {
        check(entity, body);
    }
});

fn check(entity: &'static Entity, body: &[u8]) {
    let received_at = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
    let Some(accepted) = accept_checked(entity, body, received_at) else {
        return;
    };
    check_events(entity, body, &accepted);
    check_records(entity, &accepted);
    check_buffers(&accepted);
    check_raw_copy(entity, body, &accepted, received_at);
}

/// `body` through `pipeline::accept` with [`LIMITS`]; `None` when it is refused.
/// A body refused as too large to deliver must need exactly what it says: its
/// body and records, as accepting it with no request limit measures them.
fn accept_checked(
    entity: &'static Entity,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Option<Accepted<'static>> {
    let error = match pipeline::accept(pipeline::Input {
        body,
        entity,
        received_at,
        limits: &LIMITS,
        table: table(),
    }) {
        Ok(accepted) => return Some(accepted),
        Err(error) => error,
    };
    // Every refusal is one of the variants and says something.
    let message = error.to_string();
    assert!(!message.is_empty(), "an empty error message for {error:?}");
    match error {
        AcceptError::TooLarge { limit } => assert!(body.len() > limit),
        AcceptError::TooManyChanges { changes, limit } => assert!(changes > limit),
        AcceptError::TooLargeToDeliver { needed, limit } => {
            assert!(body.len() <= LIMITS.max_body_bytes);
            assert!(needed > limit);
            let unlimited = Limits {
                max_request_bytes: usize::MAX,
                ..LIMITS
            };
            let whole = pipeline::accept(pipeline::Input {
                body,
                entity,
                received_at,
                limits: &unlimited,
                table: table(),
            })
            .expect("refused only for its size, accepted without the request limit");
            assert_eq!(needed, body.len() + whole.record_bytes, "{message}");
        }
        AcceptError::NamesTooLong { limit } => {
            assert!(entity.flatten_objects);
            assert_eq!(limit, MAX_NAME_BYTES_PER_BODY_BYTE * LIMITS.max_body_bytes);
        }
        // `accept` grants every byte its records ask for: the budget is never short.
        AcceptError::NoRoom => panic!("pipeline::accept answered NoRoom: {message}"),
        AcceptError::Payload(_) | AcceptError::Normalize(_) => {}
    }
    None
}

/// max(changes, 1) events within the limits, each routed to at least one topic
/// and to none twice, all within the request limit.
fn check_events(entity: &Entity, body: &[u8], accepted: &Accepted) {
    assert!(body.len() <= LIMITS.max_body_bytes);
    let events = &accepted.events;
    assert!(!events.is_empty());
    let change_count = events[0].change_count;
    assert!(change_count <= LIMITS.max_changes);
    assert_eq!(events.len(), change_count.max(1));
    assert!(body.len() + accepted.record_bytes <= LIMITS.max_request_bytes);
    assert!(events.iter().all(|e| e.entity.name == entity.name));

    assert_eq!(accepted.topics.len(), events.len());
    for (event, topics) in accepted.routed() {
        assert!(!topics.is_empty(), "an event routed nowhere");
        let mut distinct = topics.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            topics.len(),
            "a topic twice for {:?}",
            event.change_type
        );
    }
    let state = usize::from(accepted.state.is_some());
    assert_eq!(state == 1, entity.name == "customer");
    let expected: usize = accepted.topics.iter().map(Vec::len).sum();
    assert_eq!(accepted.records.records.len(), expected + state);
}

/// One record per event and topic, then the state record; what was reserved is
/// what they hold: their values, keys and change types (four times) plus the same
/// fixed amount (headers and librdkafka's overhead) for every record, whatever the
/// input.
fn check_records(entity: &Entity, accepted: &Accepted) {
    let records = &accepted.records;
    let mut variable = check_event_records(entity, accepted);
    if accepted.state.is_some() {
        let record = records.records.last().expect("the state record");
        assert_eq!(record.kind, Kind::State);
        assert_eq!(record.topic, "customer.state");
        assert_eq!(record.key, accepted.events[0].entity_id.to_string());
        if let Some(value) = records.value(record) {
            let value: Value = serde_json::from_slice(value).expect("a state record parses back");
            assert_eq!(
                value["customer_id"],
                Value::from(accepted.events[0].entity_id)
            );
            assert!(value.get("customer_email").is_none());
        }
        assert_eq!(
            records.value(record),
            accepted.state.as_ref().and_then(|(_, v)| v.as_deref())
        );
        variable += record.value_len() + record.key.len();
    }
    let held: usize = records.records.iter().map(|r| r.held_bytes()).sum();
    assert_eq!(accepted.record_bytes, held);
    assert_eq!(accepted.record_bytes, records.held_bytes());
    let fixed = accepted
        .record_bytes
        .checked_sub(variable)
        .expect("the reserved size covers the values, keys and change types");
    assert_eq!(
        fixed % records.records.len(),
        0,
        "reserved {} for {variable}",
        accepted.record_bytes
    );
    let per_record = fixed / records.records.len();
    assert!(per_record >= RECORD_OVERHEAD_BYTES);
    static PER_RECORD: OnceLock<usize> = OnceLock::new();
    assert_eq!(*PER_RECORD.get_or_init(|| per_record), per_record);
}

/// The event records, in event and topic order: each value parses back as the
/// event shaped by its topic's rules, a flat JSON object with every key once (on
/// a topic without rules), the event id, the entity's id (also the key), the
/// change count, and `entity` in booking events only. Returns the bytes of their
/// values, keys and change types (four times: as sent and escaped in `ce_type`).
fn check_event_records(entity: &Entity, accepted: &Accepted) -> usize {
    let records = &accepted.records;
    let (mut index, mut variable) = (0, 0);
    for (event, topics) in accepted.routed() {
        for topic in topics.iter() {
            let record = &records.records[index];
            let Kind::Event {
                event_id,
                change_type,
                ..
            } = &record.kind
            else {
                panic!("record {index} is not an event");
            };
            assert_eq!(
                (*event_id, change_type),
                (event.event_id, &event.change_type)
            );
            assert_eq!((record.topic, record.key.as_str()), (*topic, &*event.key()));
            let value_bytes = records.value(record).expect("an event has a value");
            assert_eq!(value_bytes.len(), record.value_len());
            let value: Value = serde_json::from_slice(value_bytes)
                .unwrap_or_else(|e| panic!("record {index} does not parse back: {e}"));
            let rules = table().rules_for(topic);
            assert_eq!(value, event.to_value_for(rules), "record {index}");
            let object = value.as_object().expect("a record value is a JSON object");
            assert!(
                object.values().all(|v| !v.is_object() && !v.is_array()),
                "record {index} is not flat"
            );
            // Every key once: a repeated key would collapse in the parsed object.
            let keys =
                fixed_keys(entity).len() + event.shared.fields.len() + event.change_fields.len();
            if rules.is_none() {
                assert_eq!(object.len(), keys, "record {index}: a key was lost");
            }
            assert_eq!(object[entity.id_key], Value::from(event.entity_id));
            let named = (!entity.predates_entities).then_some(entity.name);
            assert_eq!(object.get("entity"), named.map(Value::from).as_ref());
            assert_eq!(object["event_id"], Value::from(event_id.to_string()));
            assert_eq!(object["change_count"], Value::from(event.change_count));
            let change_type = record.change_type().map_or(0, str::len);
            variable += record.value_len() + record.key.len() + 4 * change_type;
            index += 1;
        }
    }
    variable
}

/// One buffer per event, then one for the state record's value: an event's
/// records point into its own buffer, topics with the same rules share one slot,
/// the distinct slots lie end to end and fill the buffer; every buffer is
/// allocated at exactly its size (what the budget counts is what is held).
fn check_buffers(accepted: &Accepted) {
    let records = &accepted.records;
    let state_value = accepted.state.as_ref().and_then(|(_, v)| v.as_ref());
    let events = accepted.events.len();
    assert_eq!(
        records.buffers.len(),
        events + usize::from(state_value.is_some())
    );
    let mut index = 0;
    for (buffer, (_, topics)) in accepted.routed().enumerate() {
        let mut slots = Vec::new();
        for topic in topics {
            let slot = records.records[index].value.as_ref().expect("a value");
            assert_eq!(
                slot.buffer, buffer,
                "record {index} outside its event's buffer"
            );
            let rules = table().rules_for(topic);
            match slots.iter().find(|(r, _)| same_rules(*r, rules)) {
                Some((_, range)) => assert_eq!(range, &slot.range, "written twice"),
                None => slots.push((rules, slot.range.clone())),
            }
            index += 1;
        }
        let end = slots.iter().fold(0, |end, (_, range)| {
            assert_eq!(range.start, end, "a gap or an overlap in buffer {buffer}");
            range.end
        });
        let values = &records.buffers[buffer];
        assert_eq!(
            end,
            values.len(),
            "buffer {buffer} holds more than its values"
        );
    }
    if let Some(value) = state_value {
        let record = records.records.last().expect("the state record");
        let whole = Slot {
            buffer: events,
            range: 0..value.len(),
        };
        assert_eq!(record.value.as_ref(), Some(&whole));
    }
    for (buffer, values) in records.buffers.iter().enumerate() {
        let (len, capacity) = (values.len(), values.capacity());
        assert_eq!(capacity, len, "buffer {buffer} is oversized");
    }
    let written: usize = records.buffers.iter().map(Vec::len).sum();
    assert_eq!(records.value_bytes(), written);
}

/// Whether two topics' rules are the same ones (the table shares them per topic).
fn same_rules(a: Option<&FieldRules>, b: Option<&FieldRules>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => std::ptr::eq(a, b),
        _ => false,
    }
}

/// The body again through `pipeline::accept_within`, with the raw topic's copy,
/// as the endpoint and replay run it: the copy is counted like the records (so
/// replay accepts what live accepts). Granted every ask, the request holds
/// exactly what it asked for, one ask per record, the raw record last with the
/// body as it came and `records::raw_bytes` of it; past the request limit it is
/// refused with what it needed. Refused at one ask (chosen by the input): `NoRoom`,
/// and nothing asked after it.
fn check_raw_copy(
    entity: &'static Entity,
    body: &[u8],
    accepted: &Accepted,
    received_at: DateTime<Utc>,
) {
    let meta = RawMeta {
        entity: entity.name,
        request_id: "fuzz-request".into(),
        received_at: received_at.to_rfc3339(),
        content_type: Some("application/json".into()),
        refusal: None,
    };
    let key = accepted.events[0].key();
    let raw = records::raw_bytes(body.len(), &key, &meta);
    let needed = body.len() + accepted.record_bytes + raw;
    // Accepted with the copy, `reserve` asked for every record's bytes.
    let accept_with_copy = |reserve: &mut dyn FnMut(usize) -> bool| {
        let input = pipeline::Input {
            body,
            entity,
            received_at,
            limits: &LIMITS,
            table: table(),
        };
        pipeline::accept_within(input, Some((RAW_TOPIC, meta.clone())), reserve)
    };
    let mut asked = Vec::new();
    let result = accept_with_copy(&mut |bytes| {
        asked.push(bytes);
        true
    });
    let limit = LIMITS.max_request_bytes;
    let with_raw = match result {
        Ok(with_raw) => with_raw,
        Err(error) => {
            assert_eq!(error, AcceptError::TooLargeToDeliver { needed, limit });
            return;
        }
    };
    assert!(needed <= limit, "held {needed} bytes, over {limit}");
    assert_eq!(with_raw.record_bytes, accepted.record_bytes + raw);
    assert_eq!(asked.iter().sum::<usize>(), with_raw.record_bytes);
    let records = &with_raw.records;
    assert_eq!(asked.len(), records.records.len());
    let last = records.records.last().expect("the raw record");
    assert_eq!((last.topic, last.key.as_str()), (RAW_TOPIC, key.as_str()));
    assert_eq!(last.kind, Kind::Raw(meta.clone()));
    assert_eq!(records.value(last), Some(body));
    assert_eq!(last.held_bytes(), raw);

    let refuse_at = body.len() % asked.len();
    let mut asks = 0;
    let result = accept_with_copy(&mut |_| {
        asks += 1;
        asks <= refuse_at
    });
    assert_eq!(result.err(), Some(AcceptError::NoRoom));
    assert_eq!(asks, refuse_at + 1, "asked again after a refusal");
}
