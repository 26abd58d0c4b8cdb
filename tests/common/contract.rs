//! The published contract as consumers get it: the committed JSON Schemas
//! (`schema/flat-event.v1.json` for customers, `schema/booking-event.v1.json`),
//! against which every record value read back from Kafka is checked
//! ([`super::kafka`] does it for every read).

use std::sync::OnceLock;

use serde_json::Value;
use webhook_connector::contract::schema;
use webhook_connector::entity::{Entity, ENTITIES};

/// The committed schema of `entity`'s event.
pub fn committed_schema(entity: &Entity) -> Value {
    let file = schema::schema_file(entity);
    let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_json::from_str(&text).expect("the committed schema is JSON")
}

/// Panics, naming the first error, when `event` does not match the committed
/// schema of its entity (its `entity` field; customer events have none;
/// formats asserted).
pub fn assert_published_event(event: &Value) {
    // One validator per entity, in the order of `ENTITIES`.
    static SCHEMAS: OnceLock<Vec<jsonschema::Validator>> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        let options = jsonschema::options().should_validate_formats(true);
        let compile = |entity: &Entity| options.build(&committed_schema(entity)).unwrap();
        ENTITIES.iter().map(|entity| compile(entity)).collect()
    });
    let name = event["entity"].as_str().unwrap_or("customer");
    let at = ENTITIES.iter().position(|e| e.name == name);
    let schema = &schemas[at.unwrap_or_else(|| panic!("unknown entity {name:?}"))];
    if let Err(error) = schema.validate(event) {
        let at = error.instance_path();
        panic!("not a published event: {at}: {error}\n{event}");
    }
}
