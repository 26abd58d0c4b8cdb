//! State records and erasure events (the README's "Privacy" section). Pure: no
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
use crate::normalize::{write_entries, write_entry, FlatEvent, SCHEMA_VERSION};
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
    crate::normalize::write_value(&mut out, &SCHEMA_VERSION);
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
