//! The contract published to downstream teams, generated from the code and the
//! routing file that produce the records, so it cannot drift from them:
//!
//! - [`schema`]: the JSON Schema of the flat event (`schema/flat-event.v1.json`);
//! - [`compat`]: whether a new version of that schema breaks its consumers;
//! - [`asyncapi`]: the AsyncAPI 3.0 document of the topics a routing file feeds;
//! - [`cloudevents_type`]: the CloudEvents type of the records' `ce_type` header.
//!
//! Pure: documents in, documents out. The README's "Consuming the events" section
//! is the prose beside them.

pub mod asyncapi;
pub mod compat;
pub mod schema;

/// The CloudEvents `type` of an event of `change_type`:
/// `webhook-connector.customer.<ChangeType>`, or `webhook-connector.customer`
/// for the event of a notification without changes.
pub fn cloudevents_type(change_type: Option<&str>) -> String {
    match change_type {
        Some(change_type) => format!("{CLOUDEVENTS_TYPE}.{change_type}"),
        None => CLOUDEVENTS_TYPE.to_string(),
    }
}

const CLOUDEVENTS_TYPE: &str = "webhook-connector.customer";
