//! The JSON Schema (draft 2020-12) of the flat event, generated from the
//! normalizer's own tables: the fixed fields, the typed customer fields
//! ([`crate::entity`]) and the open set (`customer_*`, `change_*`,
//! `notification_*`), every value a scalar so that "the event is flat" is part of
//! the schema. `schema/flat-event.v1.json` is this function's output, committed.

use serde_json::{json, Map, Value};

use crate::entity::{FieldType, CUSTOMER};
use crate::normalize::{fixed_keys, SCHEMA_VERSION};

/// The schema's `$id`.
pub fn schema_id() -> String {
    format!("urn:webhook-connector:flat-event:v{SCHEMA_VERSION}")
}

/// The JSON Schema of the flat event of [`SCHEMA_VERSION`].
pub fn flat_event() -> Value {
    let mut properties = Map::new();
    let mut add = |key: &str, schema: Value| {
        properties.insert(key.to_string(), schema);
    };
    add(
        "event_id",
        json!({"type": "string", "format": "uuid",
               "description": "UUIDv5 of the customer id, the raw ChangeDateTime, the change's index, type and old and new values: the same change delivered twice has the same id."}),
    );
    add(
        "schema_version",
        json!({"const": SCHEMA_VERSION, "description": "The version of this layout."}),
    );
    add(
        "change_type",
        json!({"type": ["string", "null"],
               "description": "The change's ChangeType as sent; null for the one event of a notification whose Changes array is empty."}),
    );
    add(
        "change_index",
        json!({"type": "integer", "minimum": 0, "description": "The change's position in the notification's Changes, from 0."}),
    );
    add(
        "change_count",
        json!({"type": "integer", "minimum": 0, "description": "How many changes the notification held (0 when none)."}),
    );
    add(
        "change_date_time",
        timestamp("When the platform made the change (the notification's ChangeDateTime)."),
    );
    add(
        "old_value",
        scalar("The change's OldValue with its JSON type; an object or array as its compact JSON text; null when absent."),
    );
    add(
        "new_value",
        scalar("The change's NewValue with its JSON type; an object or array as its compact JSON text; null when absent."),
    );
    add(
        "customer_id",
        json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX,
               "description": "Customer.Id: a 64-bit integer; the record key is this id in decimal."}),
    );
    for field in CUSTOMER.known {
        let description = match field.field_type {
            FieldType::DateTime => format!("Customer.{} in RFC 3339 UTC, or null.", field.name),
            _ => format!("Customer.{} as sent, or null.", field.name),
        };
        let schema = match field.field_type {
            FieldType::Text => json!({"type": ["string", "null"]}),
            FieldType::Integer => {
                json!({"type": ["integer", "null"], "minimum": i64::MIN, "maximum": i64::MAX})
            }
            FieldType::Boolean => json!({"type": ["boolean", "null"]}),
            FieldType::DateTime => json!({"type": ["string", "null"], "format": "date-time",
                                          "pattern": UTC_PATTERN}),
        };
        add(field.key, with_description(schema, &description));
    }
    add(
        "received_at",
        timestamp("When the connector received the notification."),
    );

    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": schema_id(),
        "title": format!("Flat event, schema version {SCHEMA_VERSION}"),
        "description": "One change of one customer notification, flat: every value is a string, number, boolean or null. Fields besides the ones listed here come from fields the platform sends that the contract does not type: Customer.X as customer_<x>, unknown top-level fields as notification_<x>, unknown fields of a change as change_<x>.",
        "type": "object",
        "required": fixed_keys(&CUSTOMER),
        "properties": properties,
        "patternProperties": {
            "^customer_": scalar("A customer field the contract does not type (Customer.X as customer_<snake_case x>)."),
            "^change_": scalar("An unknown field of the change (as change_<snake_case x>)."),
            "^notification_": scalar("An unknown top-level field of the notification (as notification_<snake_case x>)."),
        },
        "additionalProperties": false,
    })
}

/// RFC 3339 in UTC with `Z`, 0 to 9 fraction digits.
pub(crate) const UTC_PATTERN: &str =
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$";

fn timestamp(description: &str) -> Value {
    json!({"type": "string", "format": "date-time", "pattern": UTC_PATTERN,
           "description": description})
}

fn scalar(description: &str) -> Value {
    json!({"type": ["string", "number", "boolean", "null"], "description": description})
}

fn with_description(mut schema: Value, description: &str) -> Value {
    schema["description"] = json!(description);
    schema
}

/// Panics, listing every error, when `event` does not match [`flat_event`] with
/// formats asserted. Test builds only: there the normalizer checks every event it
/// makes, so every event a unit or property test produces is checked.
#[cfg(test)]
pub(crate) fn assert_matches(event: &Value) {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&flat_event())
            .expect("the flat event schema compiles")
    });
    let errors: Vec<String> = validator
        .iter_errors(event)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\nin {event}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixed_key_is_required_and_typed() {
        let schema = flat_event();
        for key in fixed_keys(&CUSTOMER) {
            assert!(schema["properties"][key].is_object(), "{key}");
        }
        assert_eq!(
            schema["required"].as_array().unwrap().len(),
            fixed_keys(&CUSTOMER).len()
        );
    }

    #[test]
    fn the_schema_is_a_valid_draft_2020_12_schema() {
        jsonschema::meta::validate(&flat_event()).expect("valid against its meta-schema");
    }

    #[test]
    fn the_schema_refuses_nesting_unknown_names_and_mistyped_fields() {
        let event = || {
            serde_json::json!({
                "event_id": "0159f331-0d29-5e8c-a971-7a6c41ba47c1", "schema_version": 1,
                "change_type": null, "change_index": 0, "change_count": 0,
                "change_date_time": "2018-11-16T10:46:20.774102600Z",
                "old_value": null, "new_value": 1.5, "customer_id": 862,
                "customer_email": null, "customer_extra": true, "change_extra": "x",
                "notification_extra": 3, "received_at": "2026-11-28T09:00:00Z",
            })
        };
        assert_matches(&event());
        let schema = jsonschema::options()
            .should_validate_formats(true)
            .build(&flat_event())
            .unwrap();
        for (key, value) in [
            ("customer_extra", serde_json::json!({"a": 1})),
            ("notification_extra", serde_json::json!([1])),
            ("old_value", serde_json::json!({})),
            ("other", serde_json::json!(1)),
            ("event_id", serde_json::json!("not-a-uuid")),
            ("schema_version", serde_json::json!(2)),
            ("customer_id", serde_json::json!(1.5)),
            ("customer_email", serde_json::json!(5)),
            (
                "received_at",
                serde_json::json!("2026-11-28T09:00:00+01:00"),
            ),
            ("change_index", serde_json::json!(-1)),
        ] {
            let mut bad = event();
            bad[key] = value;
            assert!(!schema.is_valid(&bad), "{key} = {}", bad[key]);
        }
        let mut missing = event();
        missing.as_object_mut().unwrap().remove("received_at");
        assert!(!schema.is_valid(&missing));
    }
}
