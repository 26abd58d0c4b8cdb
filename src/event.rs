//! The flat event and its JSON writer with field rules applied: one module, so a
//! record's bytes are written in one place.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::entity::Entity;
use crate::privacy::FieldRules;

/// The version of the flat event layout, sent in every event and as a header.
pub const SCHEMA_VERSION: u32 = 1;

/// One change of one notification, flat and ready to be serialized as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatEvent {
    pub event_id: Uuid,
    /// `None` for the single event of a notification with no changes.
    pub change_type: Option<String>,
    pub change_index: usize,
    pub change_count: usize,
    /// RFC 3339 UTC with `Z`.
    pub change_date_time: String,
    pub old_value: Value,
    pub new_value: Value,
    /// Which family of webhooks the event comes from.
    pub entity: &'static Entity,
    /// The entity's id (`customer_id`).
    pub entity_id: i64,
    /// The entity's (`customer_*`) and `notification_*` fields, shared by all events
    /// of a notification.
    pub shared: Arc<SharedFields>,
    /// `change_*` fields from unknown keys of this change (usually empty).
    pub change_fields: Vec<(String, Value)>,
    /// RFC 3339 UTC with `Z`.
    pub received_at: String,
}

/// The fields every event of a notification carries, and their JSON text, written
/// once per notification: a notification of 100 changes copies that text into 100
/// events instead of serializing the entity 100 times.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedFields {
    /// The entity's fields, then the `notification_*` ones.
    pub fields: Vec<(String, Value)>,
    /// How many of `fields` are the entity's.
    entity_fields: usize,
    /// `,"key":value` for every field, in order.
    json: Vec<u8>,
}

impl SharedFields {
    pub(crate) fn new(fields: Vec<(String, Value)>, entity_fields: usize) -> Self {
        let mut json = Vec::new();
        write_entries(&mut json, None, &fields);
        SharedFields {
            fields,
            entity_fields,
            json,
        }
    }

    /// `,"key":value` for every field, in order.
    pub(crate) fn json(&self) -> &[u8] {
        &self.json
    }

    /// The entity's own fields (`customer_*`), without the notification's.
    pub fn entity_fields(&self) -> &[(String, Value)] {
        &self.fields[..self.entity_fields]
    }

    /// `,"key":value` for every field as a topic with `rules` receives it: written
    /// once per notification and topic payload.
    pub fn json_for(&self, rules: Option<&FieldRules>) -> Cow<'_, [u8]> {
        match rules {
            None => Cow::Borrowed(&self.json),
            Some(rules) => {
                let mut json = Vec::with_capacity(self.json.len());
                write_entries(&mut json, Some(rules), &self.fields);
                Cow::Owned(json)
            }
        }
    }
}

/// Appends `,"key":value` for each of `fields` as `rules` shape them.
pub(crate) fn write_entries(
    out: &mut Vec<u8>,
    rules: Option<&FieldRules>,
    fields: &[(String, Value)],
) {
    for (key, value) in fields {
        write_shaped(out, rules, key, value);
    }
}

/// Appends `,"key":value` as `rules` shape it: as it is, pseudonymised, or nothing.
fn write_shaped(out: &mut Vec<u8>, rules: Option<&FieldRules>, key: &str, value: &Value) {
    match rules {
        None => write_entry(out, key, value),
        Some(rules) => {
            if let Some(value) = rules.apply(key, value) {
                write_entry(out, key, value.as_ref());
            }
        }
    }
}

impl FlatEvent {
    /// The Kafka record key: the entity's id in decimal, for per-entity ordering.
    pub fn key(&self) -> String {
        self.entity_id.to_string()
    }

    /// Appends the event's JSON to `out`: one object, keys in the documented order
    /// (the fixed fields, the entity's and notification fields, the change's own
    /// fields, `received_at`).
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        self.write_shaped(None, &self.shared.json, out);
    }

    /// Appends the event's JSON as a topic with `rules` receives it; `shared_json`
    /// is [`SharedFields::json_for`] those rules.
    pub(crate) fn write_shaped(
        &self,
        rules: Option<&FieldRules>,
        shared_json: &[u8],
        out: &mut Vec<u8>,
    ) {
        out.reserve(shared_json.len() + 512);
        self.write_head(rules, out);
        out.extend_from_slice(shared_json);
        self.write_tail(rules, out);
    }

    /// The event as a topic with `rules` receives it, as a JSON value (for
    /// `explain` and tests).
    pub fn to_value_for(&self, rules: Option<&FieldRules>) -> Value {
        let mut out = Vec::new();
        self.write_shaped(rules, &self.shared.json_for(rules), &mut out);
        serde_json::from_slice(&out).expect("an event's JSON parses")
    }

    /// The fields before the shared ones.
    fn write_head(&self, rules: Option<&FieldRules>, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"event_id\":");
        write_value(out, &self.event_id);
        write_entry(out, "schema_version", &SCHEMA_VERSION);
        if !self.entity.predates_entities {
            write_entry(out, "entity", &self.entity.name);
        }
        write_entry(out, "change_type", &self.change_type);
        write_entry(out, "change_index", &self.change_index);
        write_entry(out, "change_count", &self.change_count);
        write_entry(out, "change_date_time", &self.change_date_time);
        write_shaped(out, rules, "old_value", &self.old_value);
        write_shaped(out, rules, "new_value", &self.new_value);
        write_entry(out, self.entity.id_key, &self.entity_id);
    }

    /// The fields after the shared ones.
    fn write_tail(&self, rules: Option<&FieldRules>, out: &mut Vec<u8>) {
        write_entries(out, rules, &self.change_fields);
        write_entry(out, "received_at", &self.received_at);
        out.push(b'}');
    }

    /// The event's JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_json(&mut out);
        out
    }

    /// The event as a JSON value (for `explain` and tests).
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(&self.to_json()).expect("an event's JSON parses")
    }
}

/// Appends `,"key":value`.
pub(crate) fn write_entry(out: &mut Vec<u8>, key: &str, value: &impl Serialize) {
    out.push(b',');
    write_value(out, key);
    out.push(b':');
    write_value(out, value);
}

pub(crate) fn write_value(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    serde_json::to_writer(out, value).expect("JSON values, strings and numbers always serialize");
}
