//! Any bytes through parse + normalize + routing + serialization: nothing may
//! panic, and whatever is accepted must give well-formed flat events.
#![no_main]

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use webhook_connector::{normalize, payload};

fuzz_target!(|body: &[u8]| {
    let Ok(notification) = payload::parse(body) else {
        return;
    };
    let received_at = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
    let (changes, customer_id) = (notification.changes.len(), notification.customer.id);
    let Ok(events) = normalize::normalize(notification, received_at) else {
        return;
    };
    assert_eq!(events.len(), changes.max(1));
    for event in &events {
        let text = serde_json::to_string(event).expect("a flat event serializes");
        let value: serde_json::Value = serde_json::from_str(&text).expect("and parses back");
        let object = value.as_object().expect("as an object");
        assert!(object.values().all(|v| !v.is_object() && !v.is_array()), "flat");
        assert_eq!(object["customer_id"], customer_id);
    }
});
