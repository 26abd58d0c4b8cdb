//! The contract published to downstream teams, generated from the code and the
//! routing file that produce the records, so it cannot drift from them:
//!
//! - [`schema`]: the JSON Schema of each entity's flat event (`schema/<entity>-event.v1.json`);
//! - [`compat`]: whether a new version of that schema breaks its consumers;
//! - [`asyncapi`]: the AsyncAPI 3.0 document of the topics a routing file feeds;
//! - [`cloudevents_type`]: the CloudEvents type of the records' `ce_type` header.
//!
//! Pure: documents in, documents out. docs/consuming.md is the prose
//! beside them.

pub mod asyncapi;
pub mod compat;
pub mod schema;

/// The last part of an erasure event's CloudEvents type:
/// `webhook-connector.customer.Erased`.
pub const ERASED: &str = "Erased";

/// The CloudEvents `type` of an event of `entity` (its name) and `change_type`:
/// `webhook-connector.<entity>.<ChangeType>`, or `webhook-connector.<entity>`
/// for the event of a notification without changes. CloudEvents forbids control
/// characters in attributes: those, and `%`, are percent-encoded (`a\nb` ->
/// `a%0Ab`), so the type stays one line and tells every change type apart.
pub fn cloudevents_type(entity: &str, change_type: Option<&str>) -> String {
    let length = CLOUDEVENTS_TYPE_PREFIX.len() + entity.len() + 1;
    let mut out = String::with_capacity(length + change_type.map_or(0, str::len));
    out.push_str(CLOUDEVENTS_TYPE_PREFIX);
    out.push_str(entity);
    let Some(change_type) = change_type else {
        return out;
    };
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

const CLOUDEVENTS_TYPE_PREFIX: &str = "webhook-connector.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cloudevents_type_names_the_change_type_on_one_line() {
        for (entity, change_type, ce_type) in [
            (
                "customer",
                Some("CustomerSmsChanged"),
                "webhook-connector.customer.CustomerSmsChanged",
            ),
            (
                "booking",
                Some("BookingStatusChanged"),
                "webhook-connector.booking.BookingStatusChanged",
            ),
            ("customer", None, "webhook-connector.customer"),
            ("booking", None, "webhook-connector.booking"),
            ("customer", Some(""), "webhook-connector.customer."),
            (
                "customer",
                Some("a\nb%\u{85}"),
                "webhook-connector.customer.a%0Ab%25%C2%85",
            ),
        ] {
            assert_eq!(cloudevents_type(entity, change_type), ce_type);
        }
    }
}
