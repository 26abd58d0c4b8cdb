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
/// for the event of a notification without changes. CloudEvents forbids control
/// characters in attributes: those, and `%`, are percent-encoded (`a\nb` ->
/// `a%0Ab`), so the type stays one line and tells every change type apart.
pub fn cloudevents_type(change_type: Option<&str>) -> String {
    let Some(change_type) = change_type else {
        return CLOUDEVENTS_TYPE.to_string();
    };
    let mut out = String::with_capacity(CLOUDEVENTS_TYPE.len() + 1 + change_type.len());
    out.push_str(CLOUDEVENTS_TYPE);
    out.push('.');
    for c in change_type.chars() {
        if c.is_control() || c == '%' {
            let mut bytes = [0; 4];
            for byte in c.encode_utf8(&mut bytes).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

const CLOUDEVENTS_TYPE: &str = "webhook-connector.customer";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cloudevents_type_names_the_change_type_on_one_line() {
        assert_eq!(
            cloudevents_type(Some("CustomerSmsChanged")),
            "webhook-connector.customer.CustomerSmsChanged"
        );
        assert_eq!(cloudevents_type(None), "webhook-connector.customer");
        assert_eq!(cloudevents_type(Some("")), "webhook-connector.customer.");
        assert_eq!(
            cloudevents_type(Some("a\nb%\u{85}")),
            "webhook-connector.customer.a%0Ab%25%C2%85"
        );
    }
}
