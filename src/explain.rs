//! What the `check` and `explain` commands print. Pure: text in, text out.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::entity::{self, Entity, ENTITIES};
use crate::pipeline::{self, AcceptError, Limits};
use crate::routing::RoutingTable;

/// One event as `explain` shows it: the Kafka record it becomes.
#[derive(Serialize)]
pub struct ExplainedEvent<'a> {
    pub topics: Vec<&'a str>,
    pub key: String,
    /// The record's value.
    pub event: serde_json::Value,
}

/// Why `explain` prints no events.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("cannot tell which webhook the body is for: {0}; pass --entity ({names})", names = entity::names())]
    UnknownEntity(String),
    /// What the endpoint would answer.
    #[error(transparent)]
    Refused(#[from] AcceptError),
}

/// The entity of a body: the one whose key (`Customer`, `Booking`) its top-level
/// object has.
pub fn detect_entity(body: &[u8]) -> Result<&'static Entity, ExplainError> {
    type TopLevel = std::collections::HashMap<String, serde::de::IgnoredAny>;
    let keys: TopLevel = serde_json::from_slice(body)
        .map_err(|e| ExplainError::UnknownEntity(format!("the body is not a JSON object ({e})")))?;
    let mut present = ENTITIES.iter().filter(|e| keys.contains_key(e.body_key));
    let keys = entity::body_keys();
    match (present.next(), present.next()) {
        (Some(entity), None) => Ok(entity),
        (None, _) => Err(ExplainError::UnknownEntity(format!(
            "it has none of the keys {keys}"
        ))),
        (Some(_), Some(_)) => Err(ExplainError::UnknownEntity(format!(
            "it has more than one of the keys {keys}"
        ))),
    }
}

/// The flat events of a webhook body of `entity` (detected from the body when
/// `None`) and their topics, exactly as `run` would produce them; refused exactly
/// when the endpoint `POST /webhooks/<entity>` would refuse the body.
pub fn explain<'a>(
    body: &[u8],
    entity: Option<&'static Entity>,
    limits: &Limits,
    routing: &'a RoutingTable,
    received_at: DateTime<Utc>,
) -> Result<Vec<ExplainedEvent<'a>>, ExplainError> {
    let entity = match entity {
        Some(entity) => entity,
        None => detect_entity(body)?,
    };
    let accepted = pipeline::accept(body, entity, limits, routing, received_at)?;
    Ok(accepted
        .events
        .iter()
        .zip(accepted.topics)
        .map(|(event, topics)| ExplainedEvent {
            topics,
            key: event.key(),
            event: event.to_value(),
        })
        .collect())
}

/// The route table `check` prints: one line per route, then the unmatched topic.
pub fn route_table(routing: &RoutingTable) -> String {
    let mut rows: Vec<[String; 4]> = vec![[
        "ROUTE".into(),
        "ENTITIES".into(),
        "CHANGE TYPES".into(),
        "TOPICS".into(),
    ]];
    for route in routing.routes() {
        let entities = match route.entities() {
            None => "all".to_string(),
            Some(named) => named.iter().map(|e| e.name).collect::<Vec<_>>().join(", "),
        };
        rows.push([
            route.name().to_string(),
            entities,
            route.patterns().join(", "),
            route.topics().join(", "),
        ]);
    }
    rows.push([
        "(unmatched)".into(),
        "all".into(),
        "anything no route matches".into(),
        routing.unmatched_topic().to_string(),
    ]);
    let width = |column: usize| {
        rows.iter()
            .map(|r| r[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (name_width, entities_width, types_width) = (width(0), width(1), width(2));
    rows.iter()
        .map(|[name, entities, types, topics]| {
            format!(
                "{name:<name_width$}  {entities:<entities_width$}  {types:<types_width$}  {topics}\n"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routing_file;
    use crate::entity::{BOOKING, CUSTOMER};

    const ROUTES: &str = r#"
        [unmatched]
        topic = "unrouted"
        [[routes]]
        name = "contact"
        entities = ["customer"]
        change_types = ["CustomerEmailChanged", "CustomerSmsChanged"]
        topics = ["contact"]
        [[routes]]
        name = "marketing"
        change_types = ["Customer*Marketing*Changed"]
        topics = ["marketing"]
    "#;

    const LIMITS: Limits = Limits {
        max_body_bytes: 262_144,
        max_changes: 100,
        max_request_bytes: 100 << 20,
    };

    #[test]
    fn explains_the_seed_sample() {
        let table = routing_file::parse(ROUTES, "routes.toml").unwrap();
        let body = include_bytes!("../tests/fixtures/seed_sample.json");
        let explained = explain(body, None, &LIMITS, &table, Utc::now()).unwrap();
        let topics: Vec<Vec<&str>> = explained.iter().map(|e| e.topics.clone()).collect();
        assert_eq!(
            topics,
            [["contact"], ["marketing"], ["marketing"], ["marketing"]]
        );
        assert!(explained.iter().all(|e| e.key == "862"));
    }

    #[test]
    fn explain_refuses_what_the_endpoint_refuses() {
        let table = routing_file::parse(ROUTES, "routes.toml").unwrap();
        let err = explain(b"{", Some(&CUSTOMER), &LIMITS, &table, Utc::now())
            .err()
            .unwrap();
        assert!(
            matches!(err, ExplainError::Refused(AcceptError::Payload(_))),
            "{err}"
        );
        let tight = Limits {
            max_changes: 3,
            ..LIMITS
        };
        let body = include_bytes!("../tests/fixtures/seed_sample.json");
        let err = explain(body, None, &tight, &table, Utc::now())
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                ExplainError::Refused(AcceptError::TooManyChanges { .. })
            ),
            "{err}"
        );
        // A customer body posted to the booking endpoint is refused there.
        let err = explain(body, Some(&BOOKING), &LIMITS, &table, Utc::now())
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "Booking: missing field");
    }

    #[test]
    fn the_entity_is_detected_from_the_body() {
        let booking = include_bytes!("../tests/fixtures/booking_sample.json");
        let seed = include_bytes!("../tests/fixtures/seed_sample.json");
        assert_eq!(detect_entity(booking).unwrap(), &BOOKING);
        assert_eq!(detect_entity(seed).unwrap(), &CUSTOMER);
        for (body, why) in [
            (
                &b"{"[..],
                "the body is not a JSON object (EOF while parsing an object at line 1 column 1)",
            ),
            (b"[1]", "the body is not a JSON object"),
            (b"{\"Changes\": []}", "none of the keys"),
            (b"{\"Customer\": {}, \"Booking\": {}}", "more than one"),
        ] {
            let err = detect_entity(body).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
            assert!(err.ends_with("pass --entity (customer, booking)"), "{err}");
        }
        let table = routing_file::parse(ROUTES, "routes.toml").unwrap();
        let explained = explain(booking, None, &LIMITS, &table, Utc::now()).unwrap();
        assert_eq!(explained.len(), 2);
        assert!(explained.iter().all(|e| e.key == "51234"));
        assert_eq!(explained[0].event["entity"], "booking");
    }

    #[test]
    fn route_table_lists_routes_and_the_unmatched_topic() {
        let table = routing_file::parse(ROUTES, "routes.toml").unwrap();
        let text = route_table(&table);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("ROUTE        ENTITIES  CHANGE TYPES"),
            "{text}"
        );
        assert!(lines[1].starts_with("contact      customer  "), "{text}");
        assert!(lines[1].ends_with("CustomerEmailChanged, CustomerSmsChanged  contact"));
        assert!(lines[2].starts_with("marketing    all  "), "{text}");
        assert!(lines[3].starts_with("(unmatched)  all  "), "{text}");
        assert!(lines[3].ends_with("unrouted"));
    }
}
