//! Any bytes through the HTTP-level acceptance step, as the endpoint runs it:
//! `pipeline::accept` (size limit, parse with duplicate keys refused at every depth
//! and exact numbers, change limit, normalize, routing with a fixed table, the
//! request byte limit) and `Accepted::records` (every event serialized as a record
//! value, shaped by its topic's field rules, then the customer's state record).
//! Nothing may panic; a refused body's error must format; an accepted body
//! must give max(changes, 1) events, routed to at least one topic each (no topic
//! twice), whose records hold exactly the bytes reserved before they were built and
//! whose values parse back as flat JSON objects, every key once (fewer, exactly as
//! the rules shape them, on a topic with rules), carrying the event id and the
//! entity's id. Every input is tried as each entity's body (customer, booking).
#![no_main]

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use webhook_connector::config::routing_file;
use webhook_connector::entity::{Entity, ENTITIES};
use webhook_connector::normalize::fixed_keys;
use webhook_connector::pipeline::{self, AcceptError, Limits, MAX_NAME_BYTES_PER_BODY_BYTE};
use webhook_connector::privacy::Key;
use webhook_connector::routing::RoutingTable;
use webhook_connector::sink::record::{Kind, RECORD_OVERHEAD_BYTES};

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
const ROUTES: &str = r#"
[unmatched]
topic = "customer.unrouted"

[[routes]]
name = "contact"
change_types = ["CustomerEmailChanged", "CustomerSmsChanged"]
topics = ["customer.contact", "customer.audit"]

[[routes]]
name = "marketing"
change_types = ["Customer*Marketing*Changed", "?{a,b}[xyz]*"]
topics = ["customer.marketing"]

[[routes]]
name = "lifecycle"
entities = ["customer"]
change_types = ["Customer*Created", "Customer*Deleted"]
topics = ["customer.lifecycle", "customer.audit"]

[[routes]]
name = "bookings"
entities = ["booking"]
change_types = ["Booking*", "*Created"]
topics = ["booking.changes", "customer.audit"]

[[routes]]
name = "minimal"
change_types = ["*Changed"]
topics = ["minimal"]
include = ["*_value", "customer_e*", "booking_customer_*", "change_*"]
exclude = ["customer_extra"]
pseudonymise = ["new_value", "customer_email", "booking_customer_*"]

[[state]]
entity = "customer"
topic = "customer.state"
exclude = ["customer_email"]
"#;

fn table() -> &'static RoutingTable {
    static TABLE: OnceLock<RoutingTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let key = std::sync::Arc::new(Key::new(&"f".repeat(32)).expect("a long key"));
        routing_file::parse(ROUTES, "routes.toml", Some(&key)).expect("the fixed table is valid")
    })
}

fuzz_target!(|body: &[u8]| {
    for entity in ENTITIES {
        check(entity, body);
    }
});

fn check(entity: &'static Entity, body: &[u8]) {
    let received_at = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
    let accepted = match pipeline::accept(body, entity, &LIMITS, table(), received_at) {
        Ok(accepted) => accepted,
        Err(error) => {
            // Every refusal is one of the variants and says something.
            let message = error.to_string();
            assert!(!message.is_empty(), "an empty error message for {error:?}");
            match error {
                AcceptError::TooLarge { limit } => assert!(body.len() > limit),
                AcceptError::TooManyChanges { changes, limit } => assert!(changes > limit),
                AcceptError::TooLargeToDeliver { needed, limit } => {
                    assert!(body.len() <= LIMITS.max_body_bytes);
                    assert!(needed > limit);
                }
                AcceptError::NamesTooLong { limit } => {
                    assert!(entity.flatten_objects);
                    assert_eq!(limit, MAX_NAME_BYTES_PER_BODY_BYTE * LIMITS.max_body_bytes);
                }
                AcceptError::Payload(_) | AcceptError::Normalize(_) => {}
            }
            return;
        }
    };
    assert!(body.len() <= LIMITS.max_body_bytes);
    let events = &accepted.events;
    assert!(!events.is_empty());
    let change_count = events[0].change_count;
    assert!(change_count <= LIMITS.max_changes);
    assert_eq!(events.len(), change_count.max(1));
    let entity_id = events[0].entity_id;
    assert!(body.len() + accepted.record_bytes <= LIMITS.max_request_bytes);

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

    let records = &accepted.records;
    let state = usize::from(accepted.state.is_some());
    assert_eq!(state == 1, entity.name == "customer");
    let expected: usize = accepted.topics.iter().map(Vec::len).sum();
    assert_eq!(records.records.len(), expected + state);
    let mut index = 0;
    let mut variable = 0;
    for (event, topics) in accepted.routed() {
        for topic in topics.iter() {
            let record = &records.records[index];
            let Kind::Event { event_id, change_type, .. } = &record.kind else {
                panic!("record {index} is not an event");
            };
            assert_eq!(*event_id, event.event_id);
            assert_eq!(*change_type, event.change_type);
            assert_eq!(record.key, entity_id.to_string());
            let payload = records.payload(record).expect("an event has a value");
            let value: Value = serde_json::from_slice(payload)
                .unwrap_or_else(|e| panic!("record {index} does not parse back: {e}"));
            let rules = table().rules_for(topic);
            assert_eq!(value, event.to_value_for(rules), "record {index}");
            let object = value.as_object().expect("a record value is a JSON object");
            assert!(
                object.values().all(|v| !v.is_object() && !v.is_array()),
                "record {index} is not flat"
            );
            // Every key once: a repeated key would collapse in the parsed object.
            let fixed = fixed_keys(entity).len();
            let keys = fixed + event.shared.fields.len() + event.change_fields.len();
            if rules.is_none() {
                assert_eq!(object.len(), keys, "record {index}: a key was lost");
            }
            assert_eq!(object[entity.id_key], Value::from(entity_id));
            let named = (!entity.predates_entities).then_some(entity.name);
            assert_eq!(object.get("entity"), named.map(Value::from).as_ref());
            assert_eq!(object["event_id"], Value::from(event_id.to_string()));
            assert_eq!(object["change_count"], Value::from(change_count));
            // The change type is reserved four times: as sent and escaped in `ce_type`.
            let change_type = record.change_type().map_or(0, str::len);
            variable += payload.len() + record.key.len() + 4 * change_type;
            index += 1;
        }
    }
    if let Some(record) = records.records.get(index) {
        assert_eq!(record.kind, Kind::State);
        assert_eq!(record.topic, "customer.state");
        assert_eq!(record.key, entity_id.to_string());
        if let Some(value) = records.payload(record) {
            let value: Value = serde_json::from_slice(value).expect("a state record parses back");
            assert_eq!(value["customer_id"], Value::from(entity_id));
            assert!(value.get("customer_email").is_none());
        }
        variable += records.payload(record).map_or(0, <[u8]>::len) + record.key.len();
    }
    // The size reserved is what the records hold: their
    // values, keys and change types plus the same fixed amount (headers and
    // librdkafka's overhead) for every record, whatever the input.
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
