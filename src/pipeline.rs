//! The acceptance step: a raw body becomes flat events with their topics, or is
//! refused. Pure: no I/O, no clock (the receive time is passed in).
//!
//! The endpoint and the `explain` command both call [`accept`], so they refuse
//! exactly the same bodies: over `server.max_body_bytes`, not JSON, not of the
//! notification's shape (duplicate keys at any depth included), more than
//! `webhook.max_changes` changes, an unparsable `ChangeDateTime`. The work is
//! linear in the body's size whatever its shape.

use chrono::{DateTime, Utc};

use crate::normalize::{normalize, FlatEvent, NormalizeError};
use crate::payload::{self, PayloadError};
use crate::routing::RoutingTable;

/// What one request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body in bytes (`server.max_body_bytes`).
    pub max_body_bytes: usize,
    /// Most changes in one notification (`webhook.max_changes`): every change becomes
    /// an event carrying the whole customer, so this bounds a request's output.
    pub max_changes: usize,
}

/// Why a body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    #[error("the body is larger than the limit of {limit} bytes (server.max_body_bytes)")]
    TooLarge { limit: usize },
    #[error("the notification has {changes} changes; at most {limit} are accepted (webhook.max_changes)")]
    TooManyChanges { changes: usize, limit: usize },
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Normalize(#[from] NormalizeError),
}

/// An event and the topics it must reach.
pub type RoutedEvent<'a> = (&'a FlatEvent, Vec<&'a str>);

/// Checks the limits, parses and normalizes one body.
pub fn accept(
    body: &[u8],
    limits: &Limits,
    received_at: DateTime<Utc>,
) -> Result<Vec<FlatEvent>, AcceptError> {
    if body.len() > limits.max_body_bytes {
        return Err(AcceptError::TooLarge {
            limit: limits.max_body_bytes,
        });
    }
    let notification = payload::parse(body)?;
    if notification.changes.len() > limits.max_changes {
        return Err(AcceptError::TooManyChanges {
            changes: notification.changes.len(),
            limit: limits.max_changes,
        });
    }
    Ok(normalize(notification, received_at)?)
}

/// The topics of every event, by the routing table in force.
pub fn route<'a>(events: &'a [FlatEvent], table: &'a RoutingTable) -> Vec<RoutedEvent<'a>> {
    events
        .iter()
        .map(|event| (event, table.topics_for(event.change_type.as_deref())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_body_bytes: 4096,
        max_changes: 4,
    };

    fn body(changes: usize) -> Vec<u8> {
        let changes: Vec<String> = (0..changes)
            .map(|i| format!(r#"{{"ChangeType":"T{i}"}}"#))
            .collect();
        format!(
            r#"{{"ChangeDateTime":"2018-11-12T10:15:00","Customer":{{"Id":1}},"Changes":[{}]}}"#,
            changes.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn accepts_up_to_the_limits() {
        let events = accept(&body(4), &LIMITS, Utc::now()).unwrap();
        assert_eq!(events.len(), 4);
        let seed = include_bytes!("../tests/fixtures/seed_sample.json");
        assert_eq!(accept(seed, &LIMITS, Utc::now()).unwrap().len(), 4);
    }

    #[test]
    fn refuses_more_changes_than_the_limit() {
        assert_eq!(
            accept(&body(5), &LIMITS, Utc::now()).unwrap_err(),
            AcceptError::TooManyChanges {
                changes: 5,
                limit: 4
            }
        );
    }

    #[test]
    fn refuses_a_body_over_the_limit_before_parsing_it() {
        let limits = Limits {
            max_body_bytes: 10,
            ..LIMITS
        };
        // Not even JSON: the size is checked first.
        assert_eq!(
            accept(b"{{{{{{{{{{{", &limits, Utc::now()).unwrap_err(),
            AcceptError::TooLarge { limit: 10 }
        );
        let exact = Limits {
            max_body_bytes: body(1).len(),
            ..LIMITS
        };
        assert!(accept(&body(1), &exact, Utc::now()).is_ok());
    }

    #[test]
    fn routes_every_event() {
        let table = crate::config::routes::parse(
            "[unmatched]\ntopic = \"u\"\n[[routes]]\nname = \"r\"\nchange_types = [\"T1\"]\ntopics = [\"a\", \"b\"]\n",
            "routes.toml",
        )
        .unwrap();
        let events = accept(&body(2), &LIMITS, Utc::now()).unwrap();
        let routed = route(&events, &table);
        assert_eq!(routed[0].1, ["u"]);
        assert_eq!(routed[1].1, ["a", "b"]);
    }
}
