//! Any bytes through the HTTP-level acceptance step, as the endpoint runs it:
//! `pipeline::accept` (size limit, parse with duplicate keys refused at every depth
//! and exact numbers, change limit, normalize), `pipeline::route` with a fixed
//! routing table and `Records::build` (every event serialized as a record value).
//! Nothing may panic; a refused body's error must format; an accepted body must
//! give max(changes, 1) events, routed to at least one topic each, whose record
//! values parse back as flat JSON objects carrying the customer id.
#![no_main]

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use webhook_connector::config::routes;
use webhook_connector::pipeline::{self, AcceptError, Limits};
use webhook_connector::routing::RoutingTable;
use webhook_connector::sink::record::Records;

/// Small limits, so that both refusals are reached with short inputs
/// (scripts/fuzz.sh passes -max_len=8192, so inputs over 4096 bytes are refused as
/// too large and the size check is exercised too).
const LIMITS: Limits = Limits {
    max_body_bytes: 4096,
    max_changes: 8,
};

/// A table with a literal name, globs, a route to two topics, two routes sharing a
/// topic, and the unmatched topic.
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
change_types = ["Customer*Created", "Customer*Deleted"]
topics = ["customer.lifecycle", "customer.audit"]
"#;

fn table() -> &'static RoutingTable {
    static TABLE: OnceLock<RoutingTable> = OnceLock::new();
    TABLE.get_or_init(|| routes::parse(ROUTES, "routes.toml").expect("the fixed table is valid"))
}

fuzz_target!(|body: &[u8]| {
    let received_at = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
    let events = match pipeline::accept(body, &LIMITS, received_at) {
        Ok(events) => events,
        Err(error) => {
            // Every refusal is one of the variants and says something.
            let message = error.to_string();
            assert!(!message.is_empty(), "an empty error message for {error:?}");
            match error {
                AcceptError::TooLarge { limit } => {
                    assert!(body.len() > limit);
                }
                AcceptError::TooManyChanges { changes, limit } => {
                    assert!(changes > limit);
                }
                AcceptError::Payload(_) | AcceptError::Normalize(_) => {}
            }
            return;
        }
    };
    assert!(body.len() <= LIMITS.max_body_bytes);
    assert!(!events.is_empty());
    let change_count = events[0].change_count;
    assert!(change_count <= LIMITS.max_changes);
    assert_eq!(events.len(), change_count.max(1));
    let customer_id = events[0].customer_id;

    let routed = pipeline::route(&events, table());
    assert_eq!(routed.len(), events.len());
    for (event, topics) in &routed {
        assert!(!topics.is_empty(), "an event routed nowhere");
        let mut distinct = topics.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            topics.len(),
            "a topic twice for {:?}",
            event.change_type
        );
    }

    let records = Records::build(&routed);
    let expected: usize = routed.iter().map(|(_, topics)| topics.len()).sum();
    assert_eq!(records.records.len(), expected);
    for (index, record) in records.records.iter().enumerate() {
        assert_eq!(record.key, customer_id.to_string());
        let value: Value = serde_json::from_slice(records.payload(record))
            .unwrap_or_else(|e| panic!("record {index} does not parse back: {e}"));
        let object = value.as_object().expect("a record value is a JSON object");
        assert!(
            object.values().all(|v| !v.is_object() && !v.is_array()),
            "record {index} is not flat"
        );
        assert_eq!(object["customer_id"], Value::from(customer_id));
        assert_eq!(
            object["event_id"],
            Value::from(record.event.event_id.to_string())
        );
        assert_eq!(object["change_count"], Value::from(change_count));
    }
    assert!(records.bytes() > records.payloads.len());
});
