//! What the `check` and `explain` commands print. Pure: text in, text out.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::Settings;
use crate::entity::{self, Entity, ENTITIES};
use crate::pipeline::{self, AcceptError, Accepted, Limits};
use crate::records::{RawMeta, TraceHeaders};
use crate::routing::RoutingTable;
use crate::sink::{first_oversized, DeliveryError};

/// What `explain` prints: the records a body becomes.
#[derive(Serialize)]
pub struct Explained {
    pub events: Vec<ExplainedEvent>,
    /// The state record, when the entity has a state topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<ExplainedState>,
}

/// One event as `explain` shows it: its key and, per topic, the record's value
/// that topic receives (shaped by the topic's field rules).
#[derive(Serialize)]
pub struct ExplainedEvent {
    pub key: String,
    pub event_id: String,
    pub change_type: Option<String>,
    /// Topic -> value, in routing order.
    pub topics: Map<String, Value>,
}

/// The state record of a body.
#[derive(Serialize)]
pub struct ExplainedState {
    pub topic: String,
    pub key: String,
    /// `null`: a tombstone.
    pub value: Value,
}

/// Why `explain` prints no events.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("cannot tell which webhook the body is for: {0}; pass --entity ({names})", names = entity::names())]
    UnknownEntity(String),
    /// What the endpoint would answer.
    #[error(transparent)]
    Refused(#[from] AcceptError),
    /// A record Kafka would never take: the endpoint answers 413 record_too_large.
    #[error(transparent)]
    Kafka(DeliveryError),
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

/// `entity`, or the one detected from `body` when `None`.
fn entity_of(
    body: &[u8],
    entity: Option<&'static Entity>,
) -> Result<&'static Entity, ExplainError> {
    entity.map_or_else(|| detect_entity(body), Ok)
}

/// The flat events of a webhook body of `entity` (detected from the body when
/// `None`) and their topics, exactly as `run` with `settings` would produce them;
/// refused exactly when the endpoint `POST /webhooks/<entity>` would refuse the
/// body: by the acceptance step (with the raw topic's copy counted when it is
/// on), or for a record larger than `message.max.bytes` with the largest trace
/// context a request may bring (a 512-byte `tracestate`: a body within about
/// 1 KB of the limit is refused although a request without one would pass).
pub fn explain_as_run(
    body: &[u8],
    entity: Option<&'static Entity>,
    settings: &Settings,
    routing: &RoutingTable,
    received_at: DateTime<Utc>,
) -> Result<Explained, ExplainError> {
    let entity = entity_of(body, entity)?;
    let raw = settings.archive.raw().map(|topic| {
        let meta = RawMeta {
            entity: entity.name,
            request_id: String::new(),
            received_at: received_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            content_type: Some("application/json".into()),
            refusal: None,
        };
        (topic, meta)
    });
    let limits = Limits::of(settings);
    let mut accepted = pipeline::accept_within(
        pipeline::Input {
            body,
            entity,
            received_at,
            limits: &limits,
            table: routing,
        },
        raw,
        &mut |_| true,
    )?;
    // Sized with the largest trace context a request may bring.
    accepted.records.trace = Some(TraceHeaders::largest());
    if let Some(refusal) = first_oversized(&accepted.records, &settings.kafka) {
        return Err(ExplainError::Kafka(refusal));
    }
    Ok(described(&accepted, routing))
}

/// What `explain` prints of `accepted`.
fn described(accepted: &Accepted<'_>, routing: &RoutingTable) -> Explained {
    let events = (accepted.routed())
        .map(|(event, topics)| ExplainedEvent {
            key: event.key(),
            event_id: event.event_id.to_string(),
            change_type: event.change_type.clone(),
            topics: (topics.iter())
                .map(|t| (t.to_string(), event.to_value_for(routing.rules_for(t))))
                .collect(),
        })
        .collect();
    let state = accepted
        .state
        .as_ref()
        .map(|(topic, value)| ExplainedState {
            topic: topic.to_string(),
            key: accepted.events[0].key(),
            value: value.as_ref().map_or(Value::Null, |v| {
                serde_json::from_slice(v).expect("a state record's JSON parses")
            }),
        });
    Explained { events, state }
}

/// The route table `check` prints: one line per route, the unmatched topic, the
/// state topics and the erasure topic, each with its field rules; then the
/// warnings of the routing file.
pub fn route_table(routing: &RoutingTable) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "ROUTE".into(),
        "ENTITIES".into(),
        "CHANGE TYPES".into(),
        "TOPICS".into(),
        "FIELDS".into(),
    ]];
    let fields = |rules: Option<&crate::privacy::FieldRules>| {
        rules.map_or_else(|| "all".to_string(), |r| r.summary())
    };
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
            fields(route.rules()),
        ]);
    }
    rows.push([
        "(unmatched)".into(),
        "all".into(),
        "anything no route matches".into(),
        routing.unmatched_topic().to_string(),
        "all".into(),
    ]);
    for state in routing.states() {
        rows.push([
            "(state)".into(),
            state.entity.name.into(),
            format!("tombstone on {}", state.deletions.patterns().join(", ")),
            state.topic.clone(),
            fields(state.rules.as_deref()),
        ]);
    }
    if let Some(topic) = routing.erasure_topic() {
        rows.push([
            "(erasure)".into(),
            "all".into(),
            "`forget` only".into(),
            topic.into(),
            "-".into(),
        ]);
    }
    let width = |column: usize| {
        rows.iter()
            .map(|r| r[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2), width(3)];
    let mut table: String = rows
        .iter()
        .map(|[name, entities, types, topics, fields]| {
            let [w0, w1, w2, w3] = widths;
            format!("{name:<w0$}  {entities:<w1$}  {types:<w2$}  {topics:<w3$}  {fields}\n")
        })
        .collect();
    for warning in routing.warnings() {
        table.push_str(&format!("warning: {warning}\n"));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routing_file;
    use crate::entity::{BOOKING, CUSTOMER};

    /// Two routes, one naming its entity, and the unmatched topic.
    const ROUTES: &str = include_str!("../tests/fixtures/routes/contact_and_marketing.toml");

    /// [`explain_as_run`] with only the acceptance step's `limits` (no raw topic
    /// copy, no record size limit), received now.
    fn explain(
        body: &[u8],
        entity: Option<&'static Entity>,
        limits: &Limits,
        table: &RoutingTable,
    ) -> Result<Explained, ExplainError> {
        let entity = entity_of(body, entity)?;
        let accepted = pipeline::accept(pipeline::Input {
            body,
            entity,
            received_at: Utc::now(),
            limits,
            table,
        })?;
        Ok(described(&accepted, table))
    }

    const LIMITS: Limits = Limits {
        max_body_bytes: 262_144,
        max_changes: 100,
        max_request_bytes: 100 << 20,
    };

    #[test]
    fn explains_the_seed_sample() {
        let table = routing_file::parse(ROUTES, "routes.toml", None).unwrap();
        let body = include_bytes!("../tests/fixtures/seed_sample.json");
        let explained = explain(body, None, &LIMITS, &table).unwrap();
        let topics: Vec<Vec<&str>> = (explained.events.iter())
            .map(|e| e.topics.keys().map(String::as_str).collect())
            .collect();
        assert_eq!(
            topics,
            [["contact"], ["marketing"], ["marketing"], ["marketing"]]
        );
        assert!(explained.events.iter().all(|e| e.key == "862"));
        assert!(explained.state.is_none());
    }

    #[test]
    fn explain_refuses_what_the_endpoint_refuses() {
        let table = routing_file::parse(ROUTES, "routes.toml", None).unwrap();
        let err = explain(b"{", Some(&CUSTOMER), &LIMITS, &table)
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
        let err = explain(body, None, &tight, &table).err().unwrap();
        assert!(
            matches!(
                err,
                ExplainError::Refused(AcceptError::TooManyChanges { .. })
            ),
            "{err}"
        );
        // A customer body posted to the booking endpoint is refused there.
        let err = explain(body, Some(&BOOKING), &LIMITS, &table)
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
        let table = routing_file::parse(ROUTES, "routes.toml", None).unwrap();
        let explained = explain(booking, None, &LIMITS, &table).unwrap();
        assert_eq!(explained.events.len(), 2);
        assert!(explained.events.iter().all(|e| e.key == "51234"));
        assert_eq!(explained.events[0].topics["unrouted"]["entity"], "booking");
    }

    #[test]
    fn route_table_lists_routes_and_the_unmatched_topic() {
        let table = routing_file::parse(ROUTES, "routes.toml", None).unwrap();
        let text = route_table(&table);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("ROUTE        ENTITIES  CHANGE TYPES"),
            "{text}"
        );
        assert!(lines[1].starts_with("contact      customer  "), "{text}");
        assert!(lines[1].ends_with("CustomerEmailChanged, CustomerSmsChanged  contact    all"));
        assert!(lines[2].starts_with("marketing    all  "), "{text}");
        assert!(lines[3].starts_with("(unmatched)  all  "), "{text}");
        assert!(lines[3].ends_with("unrouted   all"), "{text}");
    }

    /// [`ROUTES`] with field rules (one matching no field), a state topic and an
    /// erasure topic.
    const PRIVATE_ROUTES: &str =
        include_str!("../tests/fixtures/routes/contact_and_marketing_with_field_rules.toml");

    fn private_table() -> RoutingTable {
        let key = crate::privacy::Key::new(&"k".repeat(32)).unwrap();
        let key = std::sync::Arc::new(key.keying_event_ids(true));
        routing_file::parse(PRIVATE_ROUTES, "routes.toml", Some(&key)).unwrap()
    }

    #[test]
    fn route_table_shows_the_field_rules_state_and_erasure_topics_and_warnings() {
        let text = route_table(&private_table());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("TOPICS          FIELDS"), "{text}");
        assert!(
            lines[1].ends_with(
                "contact         include new_value,customer_email; pseudonymise new_value"
            ),
            "{text}"
        );
        assert!(
            lines[2].ends_with(
                "marketing       exclude customer_email,customer_mobile_number,notification_*"
            ),
            "{text}"
        );
        assert!(lines[3].ends_with("unrouted        all"), "{text}");
        assert!(
            lines[4].starts_with("(state)      customer  tombstone on Customer*Deleted"),
            "{text}"
        );
        assert!(
            lines[4].ends_with("customer.state  exclude customer_email"),
            "{text}"
        );
        assert!(
            lines[5].starts_with("(erasure)    all       `forget` only"),
            "{text}"
        );
        assert!(lines[5].ends_with("erasures        -"), "{text}");
        assert_eq!(
            lines[6],
            "warning: routes[1] (\"marketing\"): exclude: \"notification_*\" matches no field the contract names (a typo, or a field of another entity?)"
        );
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn explain_shows_each_topic_s_value_and_the_state_record() {
        let table = private_table();
        let body = include_bytes!("../tests/fixtures/seed_sample.json");
        let explained = explain(body, None, &LIMITS, &table).unwrap();
        // CustomerSmsChanged reaches both topics, each with its own value.
        let sms = &explained.events[0];
        assert_eq!(sms.change_type.as_deref(), Some("CustomerSmsChanged"));
        let contact = sms.topics["contact"].as_object().unwrap();
        let keys: Vec<&str> = contact.keys().map(String::as_str).collect();
        let included = "event_id schema_version change_type change_index change_count \
            change_date_time new_value customer_id customer_email received_at";
        assert_eq!(keys.join(" "), included);
        let token = contact["new_value"].as_str().unwrap();
        assert!(
            token.starts_with("hmac-sha256:")
                && !token.contains('3'.to_string().repeat(2).as_str())
        );
        assert_eq!(contact["customer_email"], "aardvark@example.com");
        let marketing = sms.topics["marketing"].as_object().unwrap();
        assert_eq!(marketing["new_value"], "3");
        assert!(!marketing.contains_key("customer_email"));
        assert!(!marketing.contains_key("customer_mobile_number"));
        assert_eq!(marketing["customer_first_name"], "Aardvark");
        assert_eq!(marketing["event_id"], contact["event_id"]);
        assert_eq!(sms.event_id, contact["event_id"]);
        // Keyed: not the plain id the sample's change has (pinned in tests/pipeline.rs).
        assert_ne!(sms.event_id, "0159f331-0d29-5e8c-a971-7a6c41ba47c1");
        // The state record: the latest fields but the excluded, and every event id.
        let state = explained.state.unwrap();
        assert_eq!(
            (state.topic.as_str(), state.key.as_str()),
            ("customer.state", "862")
        );
        assert_eq!(state.value["entity"], "customer");
        assert_eq!(state.value["customer_id"], 862);
        assert_eq!(state.value["customer_first_name"], "Aardvark");
        assert!(state.value.get("customer_email").is_none());
        let ids: Vec<&str> = explained
            .events
            .iter()
            .map(|e| e.event_id.as_str())
            .collect();
        assert_eq!(state.value["event_ids"], serde_json::json!(ids));
    }
}
