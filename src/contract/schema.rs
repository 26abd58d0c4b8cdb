//! The JSON Schema (draft 2020-12) of each entity's flat event, generated from the
//! normalizer's own tables: the fixed fields, the entity's named fields
//! ([`crate::entity`]) and the open set (`<entity>_*`, `change_*`,
//! `notification_*`), every value a scalar so that "the event is flat" is part of
//! the schema. `schema/<schema name>.v1.json` (`flat-event` for customers, whose
//! schema was published before bookings existed, `booking-event`) is this
//! function's output, committed.

use serde_json::{json, Map, Value};

use crate::entity::{Entity, FieldType, KnownField};
use crate::normalize::{envelope_keys, fixed_keys, SCHEMA_VERSION, STATE_ENVELOPE};
use crate::privacy::{glob_regex, regex_escape, FieldRules, Treatment};

/// The schema's `$id`.
pub fn schema_id(entity: &Entity) -> String {
    format!(
        "urn:webhook-connector:{}:v{SCHEMA_VERSION}",
        entity.schema_name
    )
}

/// The file the schema is published in, relative to the repository.
pub fn schema_file(entity: &Entity) -> String {
    format!("schema/{}.v{SCHEMA_VERSION}.json", entity.schema_name)
}

/// The JSON Schema of `entity`'s flat event of [`SCHEMA_VERSION`].
pub fn flat_event(entity: &Entity) -> Value {
    let (name, body, prefix) = (entity.name, entity.body_key, entity.prefix);
    let mut properties = head_properties(entity);
    for field in entity.known {
        properties.insert(field.key.into(), known_field(body, field));
    }
    properties.insert(
        "received_at".into(),
        timestamp("When the connector received the notification."),
    );
    let nested = if entity.flatten_objects {
        format!(" A nested object's members are named by path: {body}.A.B as {prefix}<a>_<b>; arrays and empty objects are their compact JSON text.")
    } else {
        " Objects and arrays are their compact JSON text.".to_string()
    };
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": schema_id(entity),
        "title": format!("Flat {name} event, schema version {SCHEMA_VERSION}"),
        "description": format!("One change of one {name} notification (POST /webhooks/{name}), flat: every value is a string, number, boolean or null. Fields besides the ones listed here come from fields the platform sends that the contract does not name: {body}.X as {prefix}<x>, unknown top-level fields as notification_<x>, unknown fields of a change as change_<x>.{nested}"),
        "type": "object",
        "required": fixed_keys(entity),
        "properties": properties,
        "patternProperties": {
            format!("^{prefix}"): scalar(&format!("A {name} field the contract does not name ({body}.X as {prefix}<snake_case x>).")),
            "^change_": scalar("An unknown field of the change (as change_<snake_case x>)."),
            "^notification_": scalar("An unknown top-level field of the notification (as notification_<snake_case x>)."),
        },
        "additionalProperties": false,
    })
}

/// The properties of the fixed fields before the entity's own ones, from
/// `event_id` to the entity's id, in order.
fn head_properties(entity: &Entity) -> Map<String, Value> {
    let (name, body) = (entity.name, entity.body_key);
    let mut properties = Map::new();
    let mut add = |key: &str, schema: Value| {
        properties.insert(key.to_string(), schema);
    };
    add(
        "event_id",
        json!({"type": "string", "format": "uuid",
               "description": "UUIDv5 of the entity (not for customers, whose ids predate other entities), its id, the raw ChangeDateTime, the change's index, type and old and new values: the same change delivered twice has the same id."}),
    );
    add(
        "schema_version",
        json!({"const": SCHEMA_VERSION, "description": "The version of this layout."}),
    );
    if !entity.predates_entities {
        add(
            "entity",
            json!({"const": name,
                   "description": format!("Which webhook the event comes from (POST /webhooks/{name}).")}),
        );
    }
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
        entity.id_key,
        json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX,
               "description": format!("{body}.Id: a 64-bit integer; the record key is this id in decimal.")}),
    );
    properties
}

/// The schema of a `field` the contract names, of the entity sent as `body`.
fn known_field(body: &str, field: &KnownField) -> Value {
    let field_name = format!("{body}.{}", field.name);
    let description = match field.field_type {
        FieldType::DateTime => format!("{field_name} in RFC 3339 UTC, or null."),
        FieldType::Scalar => format!("{field_name} as sent (untyped: any scalar; an array as its JSON text; a date-time in RFC 3339 UTC when it parses as one)."),
        _ => format!("{field_name} as sent, or null."),
    };
    let schema = match field.field_type {
        FieldType::Scalar => json!({"type": ["string", "number", "boolean", "null"]}),
        FieldType::Text => json!({"type": ["string", "null"]}),
        FieldType::Integer => {
            json!({"type": ["integer", "null"], "minimum": i64::MIN, "maximum": i64::MAX})
        }
        FieldType::Boolean => json!({"type": ["boolean", "null"]}),
        FieldType::DateTime => json!({"type": ["string", "null"], "format": "date-time",
                                      "pattern": UTC_PATTERN}),
    };
    with_description(schema, &description)
}

/// `entity`'s flat event as a topic with field `rules` receives it: removed
/// fields are left out (and no longer required), pseudonymised ones are tokens
/// (or null). The envelope is untouched.
pub fn shaped_event(entity: &Entity, rules: Option<&FieldRules>) -> Value {
    let schema = flat_event(entity);
    match rules {
        None => schema,
        Some(rules) => shaped(schema, rules, &envelope_keys(entity)),
    }
}

/// The JSON Schema of `entity`'s state record as its state topic's `rules`
/// shape it: the envelope ([`STATE_ENVELOPE`] and the id), then the entity's
/// fields as in its flat event.
pub fn state_record(entity: &Entity, rules: Option<&FieldRules>) -> Value {
    let event = flat_event(entity);
    let (name, prefix) = (entity.name, entity.prefix);
    let mut properties = Map::new();
    properties.insert(
        "schema_version".into(),
        event["properties"]["schema_version"].clone(),
    );
    properties.insert(
        "entity".into(),
        json!({"const": name, "description": "The entity whose state this is."}),
    );
    properties.insert(
        entity.id_key.into(),
        event["properties"][entity.id_key].clone(),
    );
    properties.insert(
        "change_date_time".into(),
        timestamp("The ChangeDateTime of the notification this state comes from: a consumer keeps the state with the latest one (a retried older notification can arrive after a newer one)."),
    );
    properties.insert(
        "event_ids".into(),
        json!({"type": "array", "minItems": 1, "items": {"type": "string", "format": "uuid"},
               "description": "The event_id of each event of that notification, in order."}),
    );
    properties.insert(
        "received_at".into(),
        event["properties"]["received_at"].clone(),
    );
    for field in entity.known {
        properties.insert(field.key.into(), event["properties"][field.key].clone());
    }
    let mut required: Vec<&str> = STATE_ENVELOPE.to_vec();
    required.push(entity.id_key);
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("{name} state, schema version {SCHEMA_VERSION}"),
        "description": format!("The latest state of one {name}, keyed by its id on a compacted topic; a record without a value (a tombstone) when the {name} was deleted or erased. Its fields are those of the {name}'s flat events ({prefix}*), without the notification's and the change's."),
        "type": "object",
        "required": required,
        "properties": properties,
        "patternProperties": {
            format!("^{prefix}"): event["patternProperties"][format!("^{prefix}")].clone(),
        },
        "additionalProperties": false,
    });
    let envelope: Vec<&str> = STATE_ENVELOPE
        .iter()
        .copied()
        .chain([entity.id_key])
        .collect();
    match rules {
        None => schema,
        Some(rules) => shaped(schema, rules, &envelope),
    }
}

/// The JSON Schema of the erasure event `forget` writes for `entity`.
pub fn erasure_event(entity: &Entity) -> Value {
    let name = entity.name;
    let id = flat_event(entity)["properties"][entity.id_key].clone();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("{name} erasure, schema version {SCHEMA_VERSION}"),
        "description": format!("A request to erase one {name} (`webhook-connector forget`): every consumer holding its data erases it. Carries no personal data."),
        "type": "object",
        "required": ["erasure_id", "schema_version", "entity", entity.id_key, "requested_at", "state_topic"],
        "properties": {
            "erasure_id": {"type": "string", "format": "uuid", "description": "A random id of this erasure request."},
            "schema_version": {"const": SCHEMA_VERSION},
            "entity": {"const": name},
            entity.id_key: id,
            "requested_at": timestamp("When the erasure was requested."),
            "state_topic": {"type": ["string", "null"], "description": "The state topic that received a tombstone for the id, or null when the entity has none."},
        },
        "additionalProperties": false,
    })
}

/// A pseudonymised value: a token, or null.
pub(crate) const TOKEN_PATTERN: &str = "^hmac-sha256:[0-9a-f]{64}$";

/// `schema` as `rules` shape what it describes; `envelope` is untouched. The
/// result refuses what the rules remove and raw values where they pseudonymise,
/// for the fields the contract names and for the open set alike:
/// - a named field removed is `false`, pseudonymised a token, kept unchanged;
/// - with `include`, the open set is only what `include` matches; each
///   `exclude` pattern is `false` and each `pseudonymise` pattern a token, as
///   patterns that never match the envelope (globs become ECMA 262 regexes).
fn shaped(mut schema: Value, rules: &FieldRules, envelope: &[&str]) -> Value {
    let token = |was: &str| {
        json!({
            "type": ["string", "null"],
            "pattern": TOKEN_PATTERN,
            "description": format!("Pseudonymised: HMAC-SHA256 of the value, keyed with privacy.key (null stays null). {was}"),
        })
    };
    let properties = schema["properties"]
        .as_object_mut()
        .expect("a schema with properties");
    let mut removed = Vec::new();
    for (key, property) in properties.iter_mut() {
        if envelope.contains(&key.as_str()) {
            continue;
        }
        match rules.treatment(key) {
            Treatment::Keep => {}
            Treatment::Remove => {
                removed.push(key.clone());
                *property = Value::Bool(false);
            }
            Treatment::Pseudonymise => {
                *property = token(property["description"].as_str().unwrap_or_default());
            }
        }
    }
    if let Some(required) = schema["required"].as_array_mut() {
        required.retain(|key| !removed.iter().any(|r| key == r));
    }
    // Patterns over names that are never the envelope's.
    let escaped: Vec<String> = envelope.iter().map(|key| regex_escape(key)).collect();
    let guard = format!("^(?!(?:{})$)", escaped.join("|"));
    // A name with a `_<digits>` suffix gets the rules of the name without it.
    let pattern = |glob: &str| format!("{guard}{}(?:_[0-9]+)?$", glob_regex(glob));
    let open = schema["patternProperties"]
        .as_object_mut()
        .expect("a schema with an open set");
    let [(_, include), (_, exclude), (_, pseudonymise)] = rules.lists();
    if let Some(include) = include {
        let kept = scalar("A field the contract does not name, kept by the topic's include list.");
        *open = include
            .iter()
            .map(|glob| (pattern(glob), kept.clone()))
            .collect();
    }
    let mut add = |glob: &str, schema: Value| {
        let key = pattern(glob);
        let combined = match open.remove(&key) {
            Some(before) => json!({"allOf": [before, schema]}),
            None => schema,
        };
        open.insert(key, combined);
    };
    for glob in exclude.unwrap_or_default() {
        add(glob, Value::Bool(false));
    }
    for glob in pseudonymise.unwrap_or_default() {
        add(glob, token("A field the contract does not name."));
    }
    if let Some(object) = schema.as_object_mut() {
        // No longer the published document that `$id` names.
        object.remove("$id");
    }
    let rules_text = rules.summary();
    if let Some(description) = schema["description"].as_str() {
        schema["description"] = json!(format!(
            "{description} Shaped by field rules: {rules_text}."
        ));
    }
    schema
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

/// Every error of `event` against `entity`'s [`flat_event`] with formats
/// asserted, as `<instance path>: <error>`; empty when it matches. Test builds
/// only: the normalizer's "matches the published schema" property asserts it of
/// every event it makes.
#[cfg(test)]
pub(crate) fn flat_event_errors(entity: &Entity, event: &Value) -> Vec<String> {
    use crate::entity::ENTITIES;
    // One validator per entity, in the order of `ENTITIES`.
    static VALIDATORS: std::sync::OnceLock<Vec<jsonschema::Validator>> = std::sync::OnceLock::new();
    let validators = VALIDATORS.get_or_init(|| {
        let compile = |entity: &Entity| {
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .build(&flat_event(entity))
                .expect("the flat event schema compiles")
        };
        ENTITIES.iter().map(|entity| compile(entity)).collect()
    });
    let at = ENTITIES.iter().position(|e| e.name == entity.name);
    let validator = &validators[at.expect("an entity of the table")];
    validator
        .iter_errors(event)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::{CUSTOMER, ENTITIES};
    use crate::privacy::{Key, TOKEN_PREFIX};

    #[test]
    fn every_fixed_key_is_typed_and_required() {
        for entity in ENTITIES {
            let schema = flat_event(entity);
            for key in fixed_keys(entity) {
                assert!(schema["properties"][key].is_object(), "{key}");
            }
            let required = schema["required"].as_array().unwrap();
            assert_eq!(required.len(), fixed_keys(entity).len());
        }
        // Only a family newer than the customer's names itself in its events.
        let booking = flat_event(&crate::entity::BOOKING);
        assert_eq!(booking["properties"]["entity"]["const"], json!("booking"));
        assert!(booking["required"]
            .as_array()
            .unwrap()
            .contains(&json!("entity")));
        assert!(flat_event(&CUSTOMER)["properties"]["entity"].is_null());
    }

    #[test]
    fn the_schemas_are_valid_draft_2020_12_schemas() {
        for entity in ENTITIES {
            jsonschema::meta::validate(&flat_event(entity)).expect("valid against its meta-schema");
        }
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
        assert_eq!(flat_event_errors(&CUSTOMER, &event()), Vec::<String>::new());
        let schema = jsonschema::options()
            .should_validate_formats(true)
            .build(&flat_event(&CUSTOMER))
            .unwrap();
        for (key, value) in [
            ("customer_extra", serde_json::json!({"a": 1})),
            ("notification_extra", serde_json::json!([1])),
            ("old_value", serde_json::json!({})),
            ("other", serde_json::json!(1)),
            ("event_id", serde_json::json!("not-a-uuid")),
            ("schema_version", serde_json::json!(2)),
            ("entity", serde_json::json!("booking")),
            ("booking_id", serde_json::json!(1)),
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
            assert!(
                !flat_event_errors(&CUSTOMER, &bad).is_empty(),
                "{key} = {}",
                bad[key]
            );
        }
        let mut missing = event();
        missing.as_object_mut().unwrap().remove("received_at");
        assert!(!schema.is_valid(&missing));
    }

    /// Customer field rules, with `privacy.key` set.
    fn customer_rules(
        include: Option<&[&str]>,
        exclude: &[&str],
        pseudonymise: &[&str],
    ) -> FieldRules {
        let key = std::sync::Arc::new(Key::new(&"k".repeat(32)).unwrap());
        let strings = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        FieldRules::new(
            include.map(strings),
            strings(exclude),
            strings(pseudonymise),
            &envelope_keys(&CUSTOMER),
            Some(&key),
        )
        .unwrap()
    }

    /// A customer event of only the fixed fields, then `fields`.
    fn customer_event(fields: &[(&str, Value)]) -> Value {
        let mut event = serde_json::json!({
            "event_id": "0159f331-0d29-5e8c-a971-7a6c41ba47c1", "schema_version": 1,
            "change_type": "CustomerEmailChanged", "change_index": 0, "change_count": 1,
            "change_date_time": "2018-11-16T10:46:20Z",
            "old_value": null, "new_value": null, "customer_id": 862,
            "received_at": "2026-11-28T09:00:00Z",
        });
        for (key, value) in fields {
            event[*key] = value.clone();
        }
        event
    }

    /// Whether the customer schema as `rules` shape it (a valid schema) accepts `event`.
    fn shaped_accepts(rules: &FieldRules, event: &Value) -> bool {
        let schema = shaped_event(&CUSTOMER, Some(rules));
        jsonschema::meta::validate(&schema).expect("a valid schema");
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap()
            .is_valid(event)
    }

    /// Whether it accepts a customer event with `fields`.
    fn accepts(rules: &FieldRules, fields: &[(&str, Value)]) -> bool {
        shaped_accepts(rules, &customer_event(fields))
    }

    #[test]
    fn shaped_schemas_refuse_the_fields_the_rules_exclude() {
        let excluded = customer_rules(None, &["customer_email", "notification_*"], &[]);
        assert!(accepts(&excluded, &[("customer_surname", json!("A"))]));
        assert!(!accepts(
            &excluded,
            &[("customer_email", json!("a@example.com"))]
        ));
        assert!(!accepts(
            &excluded,
            &[("notification_source", json!("web"))]
        ));
        assert!(accepts(&excluded, &[("change_note", json!("x"))]));
    }

    #[test]
    fn shaped_schemas_with_include_accept_only_what_it_matches_besides_the_envelope() {
        let included = customer_rules(
            Some(&["*_value", "customer_receive_*", "change_n*"]),
            &[],
            &[],
        );
        let sms = [("customer_receive_group_sms_marketing", json!(true))];
        assert!(accepts(&included, &sms));
        assert!(accepts(
            &included,
            &[("customer_receive_new_thing", json!(1))]
        ));
        assert!(accepts(&included, &[("change_note", json!("x"))]));
        assert!(!accepts(
            &included,
            &[("customer_email", json!("a@example.com"))]
        ));
        assert!(!accepts(
            &included,
            &[("notification_source", json!("web"))]
        ));
        // Envelope only: old_value is no longer required, nor allowed.
        let envelope = customer_rules(Some(&[]), &[], &[]);
        let mut without = customer_event(&[]);
        without.as_object_mut().unwrap().remove("old_value");
        without.as_object_mut().unwrap().remove("new_value");
        assert!(shaped_accepts(&envelope, &without));
        assert!(!accepts(&envelope, &[]));
    }

    #[test]
    fn shaped_schemas_refuse_raw_values_where_the_rules_pseudonymise() {
        assert_eq!(TOKEN_PATTERN, format!("^{TOKEN_PREFIX}[0-9a-f]{{64}}$"));
        let token = json!(format!("{TOKEN_PREFIX}{}", "0".repeat(64)));
        let raw = json!("a@example.com");
        let tokens = customer_rules(None, &[], &["customer_*", "new_value"]);
        let all_tokens = [
            ("customer_nickname", token.clone()),
            ("customer_email", token.clone()),
            ("new_value", token),
        ];
        assert!(accepts(&tokens, &all_tokens));
        assert!(accepts(&tokens, &[("customer_email", Value::Null)]));
        assert!(!accepts(&tokens, &[("customer_nickname", raw.clone())]));
        assert!(!accepts(&tokens, &[("customer_email", raw.clone())]));
        assert!(!accepts(&tokens, &[("new_value", raw)]));
        // The envelope stays as it is, though `customer_*` matches `customer_id`.
        assert!(accepts(&tokens, &[]));
    }
}
