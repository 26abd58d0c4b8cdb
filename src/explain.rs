//! What the `check` and `explain` commands print. Pure: text in, text out.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::entity::CUSTOMER;
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

/// The flat events of a webhook body and their topics, exactly as `run` would
/// produce them; refused exactly when the endpoint would refuse the body.
pub fn explain<'a>(
    body: &[u8],
    limits: &Limits,
    routing: &'a RoutingTable,
    received_at: DateTime<Utc>,
) -> Result<Vec<ExplainedEvent<'a>>, AcceptError> {
    let accepted = pipeline::accept(body, &CUSTOMER, limits, routing, received_at)?;
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
    let mut rows: Vec<[String; 3]> = vec![["ROUTE".into(), "CHANGE TYPES".into(), "TOPICS".into()]];
    for route in routing.routes() {
        rows.push([
            route.name().to_string(),
            route.patterns().join(", "),
            route.topics().join(", "),
        ]);
    }
    rows.push([
        "(unmatched)".into(),
        "anything no route matches".into(),
        routing.unmatched_topic().to_string(),
    ]);
    let width = |column: usize| {
        rows.iter()
            .map(|r| r[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (name_width, types_width) = (width(0), width(1));
    rows.iter()
        .map(|[name, types, topics]| {
            format!("{name:<name_width$}  {types:<types_width$}  {topics}\n")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routing_file;

    const ROUTES: &str = r#"
        [unmatched]
        topic = "unrouted"
        [[routes]]
        name = "contact"
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
        let explained = explain(body, &LIMITS, &table, Utc::now()).unwrap();
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
        let err = explain(b"{", &LIMITS, &table, Utc::now()).err().unwrap();
        assert!(matches!(err, AcceptError::Payload(_)), "{err}");
        let tight = Limits {
            max_changes: 3,
            ..LIMITS
        };
        let body = include_bytes!("../tests/fixtures/seed_sample.json");
        let err = explain(body, &tight, &table, Utc::now()).err().unwrap();
        assert!(matches!(err, AcceptError::TooManyChanges { .. }), "{err}");
    }

    #[test]
    fn route_table_lists_routes_and_the_unmatched_topic() {
        let table = routing_file::parse(ROUTES, "routes.toml").unwrap();
        let text = route_table(&table);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].starts_with("contact  "));
        assert!(lines[1].ends_with("CustomerEmailChanged, CustomerSmsChanged  contact"));
        assert!(lines[3].starts_with("(unmatched)"));
        assert!(lines[3].ends_with("unrouted"));
    }
}
