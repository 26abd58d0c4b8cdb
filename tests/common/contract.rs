//! The published contract as consumers get it: the committed JSON Schema
//! (`schema/flat-event.v1.json`), against which every record value read back
//! from Kafka is checked ([`super::kafka`] does it for every read).

use std::sync::OnceLock;

use serde_json::Value;

/// The committed schema file.
pub const SCHEMA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/flat-event.v1.json");

/// The committed schema.
pub fn committed_schema() -> Value {
    let text = std::fs::read_to_string(SCHEMA_FILE).expect("schema/flat-event.v1.json is there");
    serde_json::from_str(&text).expect("the committed schema is JSON")
}

/// Panics, naming the first error, when `event` does not match the committed
/// schema (formats asserted).
pub fn assert_published_event(event: &Value) {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    let options = jsonschema::options().should_validate_formats(true);
    let schema = SCHEMA.get_or_init(|| options.build(&committed_schema()).unwrap());
    if let Err(error) = schema.validate(event) {
        let at = error.instance_path();
        panic!("not a published event: {at}: {error}\n{event}");
    }
}
