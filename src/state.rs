//! State records and erasure events (docs/privacy.md). Pure: no
//! I/O, no clock.
//!
//! After a notification's events, the entity's state topic (compacted, keyed by
//! the entity's id) receives one record holding the entity's latest fields as
//! the notification sent them, shaped by the state topic's field rules, or a
//! tombstone (no value) when one of its changes is a deletion. `forget` writes a
//! tombstone too, and one erasure event that carries no personal data.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::entity::Entity;
use crate::event::{write_entries, write_entry, FlatEvent, SCHEMA_VERSION};
use crate::routing::StateTopic;

/// The value of the state record after `events` (one notification's, at least
/// one); `None`: a tombstone, because a change deletes the entity.
pub fn value(events: &[FlatEvent], state: &StateTopic) -> Option<Vec<u8>> {
    let first = events
        .first()
        .expect("a notification has at least one event");
    if state.deletes(events.iter().map(|e| e.change_type.as_deref())) {
        return None;
    }
    let mut out = Vec::with_capacity(first.shared.fields.len() * 48 + 256);
    out.extend_from_slice(b"{\"schema_version\":");
    crate::event::write_value(&mut out, &SCHEMA_VERSION);
    write_entry(&mut out, "entity", &first.entity.name);
    write_entry(&mut out, first.entity.id_key, &first.entity_id);
    write_entry(&mut out, "change_date_time", &first.change_date_time);
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    write_entry(&mut out, "event_ids", &ids);
    write_entry(&mut out, "received_at", &first.received_at);
    write_entries(
        &mut out,
        state.rules.as_deref(),
        first.shared.entity_fields(),
    );
    out.push(b'}');
    Some(out)
}

/// The erasure event `forget` writes: which entity, which id, when, and the
/// state topics it tombstoned. No personal data.
pub fn erasure_event(
    entity: &Entity,
    id: i64,
    erasure_id: Uuid,
    requested_at: &str,
    state_topic: Option<&str>,
) -> Value {
    json!({
        "erasure_id": erasure_id,
        "schema_version": SCHEMA_VERSION,
        "entity": entity.name,
        entity.id_key: id,
        "requested_at": requested_at,
        "state_topic": state_topic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routing_file;
    use crate::entity::{BOOKING, CUSTOMER};
    use crate::pipeline::{accept, Input, Limits};

    const LIMITS: Limits = Limits {
        max_body_bytes: 1 << 20,
        max_changes: 100,
        max_request_bytes: 1 << 26,
    };

    const ROUTES: &str = "[unmatched]\ntopic = \"u\"\n\
        [[state]]\nentity = \"customer\"\ntopic = \"customer.state\"\n\
        exclude = [\"customer_email\", \"customer_mobile_number\"]\n\
        [[state]]\nentity = \"booking\"\ntopic = \"booking.state\"\n\
        deletions = [\"BookingPurged\", \"*Cancelled\"]\n";

    fn events(body: &[u8], entity: &'static Entity) -> Vec<FlatEvent> {
        let table = routing_file::parse(ROUTES, "routes.toml", None).unwrap();
        accept(Input {
            body,
            entity,
            received_at: chrono::Utc::now(),
            limits: &LIMITS,
            table: &table,
        })
        .unwrap()
        .events
    }

    fn validate(entity: &Entity, state: &StateTopic, value: &Value) {
        let schema = crate::contract::schema::state_record(entity, state.rules.as_deref());
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}\n{value}");
    }

    #[test]
    fn the_state_holds_the_entity_s_latest_fields_as_the_rules_shape_them() {
        let table = routing_file::parse(ROUTES, "routes.toml", None).unwrap();
        let state = table.state_for(&CUSTOMER).unwrap();
        let body = br#"{"ChangeDateTime":"2018-11-16T10:46:20Z","Customer":{"Id":862,"FirstName":"A","Email":"a@example.com","Extra":{"x":1}},"Changes":[{"ChangeType":"CustomerEmailChanged","OldValue":"b@example.com","NewValue":"a@example.com","Note":"n"},{"ChangeType":"CustomerSmsChanged"}],"Source":"web"}"#;
        let events = events(body, &CUSTOMER);
        let value: Value = serde_json::from_slice(&super::value(&events, state).unwrap()).unwrap();
        let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
        assert_eq!(
            value,
            json!({
                "schema_version": 1, "entity": "customer", "customer_id": 862,
                "change_date_time": "2018-11-16T10:46:20Z", "event_ids": ids,
                "received_at": events[0].received_at,
                "customer_first_name": "A", "customer_extra": "{\"x\":1}",
            })
        );
        // Keys in this order, the envelope first.
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys[..6],
            [
                "schema_version",
                "entity",
                "customer_id",
                "change_date_time",
                "event_ids",
                "received_at"
            ]
        );
        validate(&CUSTOMER, state, &value);
        // A notification without changes still has a state.
        let none = br#"{"ChangeDateTime":"2018-11-16T10:46:20Z","Customer":{"Id":1},"Changes":[]}"#;
        let events = super::tests::events(none, &CUSTOMER);
        assert!(super::value(&events, state).is_some());
    }

    #[test]
    fn a_deletion_anywhere_in_the_notification_is_a_tombstone() {
        let table = routing_file::parse(ROUTES, "routes.toml", None).unwrap();
        let customer = table.state_for(&CUSTOMER).unwrap();
        for (changes, tombstone) in [
            (r#"[{"ChangeType":"CustomerDeleted"}]"#, true),
            (
                r#"[{"ChangeType":"CustomerSmsChanged"},{"ChangeType":"CustomerAccountDeleted"}]"#,
                true,
            ),
            (r#"[{"ChangeType":"CustomerDeletedNot"}]"#, false),
            (r#"[{"ChangeType":"customerdeleted"}]"#, false),
            ("[]", false),
        ] {
            let body = format!(
                r#"{{"ChangeDateTime":"2018-11-16T10:46:20Z","Customer":{{"Id":862}},"Changes":{changes}}}"#
            );
            let events = events(body.as_bytes(), &CUSTOMER);
            assert_eq!(value(&events, customer).is_none(), tombstone, "{changes}");
        }
        // The booking's own deletion patterns, instead of the default.
        let booking = table.state_for(&BOOKING).unwrap();
        let sample = include_bytes!("../tests/fixtures/booking_sample.json");
        let events = events(sample, &BOOKING);
        let value: Value =
            serde_json::from_slice(&super::value(&events, booking).unwrap()).unwrap();
        assert_eq!(value["booking_id"], 51234);
        assert_eq!(value["entity"], "booking");
        validate(&BOOKING, booking, &value);
        let body =
            String::from_utf8_lossy(sample).replace("BookingStatusChanged", "BookingCancelled");
        assert!(super::value(&super::tests::events(body.as_bytes(), &BOOKING), booking).is_none());
    }

    #[test]
    fn an_erasure_event_carries_no_personal_data() {
        let id = Uuid::from_u128(1);
        let event = erasure_event(&BOOKING, 7, id, "2026-11-29T10:00:00Z", None);
        assert_eq!(
            event,
            json!({"erasure_id": id, "schema_version": 1, "entity": "booking", "booking_id": 7,
                   "requested_at": "2026-11-29T10:00:00Z", "state_topic": null})
        );
        let schema = crate::contract::schema::erasure_event(&BOOKING);
        assert!(jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap()
            .is_valid(&event));
    }

    #[test]
    fn a_field_renamed_because_two_names_met_gets_the_rules_of_its_name() {
        let key = std::sync::Arc::new(crate::privacy::Key::new(&"k".repeat(32)).unwrap());
        let routes = "[unmatched]\ntopic = \"u\"\n\
            [[routes]]\nname = \"m\"\nchange_types = [\"*\"]\ntopics = [\"m\"]\n\
            exclude = [\"customer_email\", \"customer_first_name\", \"booking_customer_email\"]\n\
            pseudonymise = [\"customer_mobile_number\"]\n\
            [[state]]\nentity = \"customer\"\ntopic = \"s\"\nexclude = [\"customer_email\"]\n";
        let table = routing_file::parse(routes, "routes.toml", Some(&key)).unwrap();
        let body = br#"{"ChangeDateTime":"2018-11-16T10:46:20Z","Customer":{"Id":862,"Email":"a@example.com","email":"b@example.com","FirstName":"Ann","first_name":"Anna","MobileNumber":"1","mobile_number":"2"},"Changes":[{"ChangeType":"CustomerSmsChanged"}]}"#;
        let accepted = accept(Input {
            body,
            entity: &CUSTOMER,
            received_at: chrono::Utc::now(),
            limits: &LIMITS,
            table: &table,
        })
        .unwrap();
        let whole = accepted.events[0].to_value();
        assert_eq!(whole["customer_email_2"], "b@example.com");
        let shaped = accepted.events[0].to_value_for(table.rules_for("m"));
        for removed in [
            "customer_email",
            "customer_email_2",
            "customer_first_name",
            "customer_first_name_2",
        ] {
            assert!(shaped.get(removed).is_none(), "{removed}: {shaped}");
        }
        assert_eq!(shaped["customer_mobile_number_2"], key.token(&json!("2")));
        let schema = crate::contract::schema::shaped_event(&CUSTOMER, table.rules_for("m"));
        let validator = jsonschema::options().build(&schema).unwrap();
        assert!(validator.is_valid(&shaped), "{shaped}");
        let mut leaked = shaped.clone();
        leaked["customer_email_2"] = json!("b@example.com");
        assert!(
            !validator.is_valid(&leaked),
            "the shaped schema refuses the leak"
        );
        let state: Value =
            serde_json::from_slice(accepted.state.as_ref().unwrap().1.as_ref().unwrap()).unwrap();
        assert!(state.get("customer_email_2").is_none(), "{state}");
        // A booking's top-level CustomerEmail takes booking_customer_email; the
        // guest's Customer.Email, renamed, is removed as well.
        let booking = br#"{"ChangeDateTime":"2018-11-16T10:46:20Z","Booking":{"Id":5,"CustomerEmail":"x@example.com","Customer":{"Email":"g@example.com"}},"Changes":[]}"#;
        let accepted = accept(Input {
            body: booking,
            entity: &BOOKING,
            received_at: chrono::Utc::now(),
            limits: &LIMITS,
            table: &table,
        })
        .unwrap();
        let shaped = accepted.events[0].to_value_for(table.rules_for("m"));
        assert!(!shaped.to_string().contains("example.com"), "{shaped}");
    }
}
