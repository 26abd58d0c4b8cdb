//! The AsyncAPI 3.0 document of what the connector writes, generated from the
//! settings and the routing table in use: the Kafka servers, one channel per
//! topic (the unmatched topic included) with the routes and change-type patterns
//! that feed it, and on each channel the message of every entity whose events can
//! reach it: that entity's flat event ([`super::schema`], as a draft-07 payload,
//! shaped by the topic's field rules when it has some), its record key, its
//! headers and the Kafka bindings. State topics (compacted) carry their entity's
//! state record, the erasure topic the erasure events of `forget`.

use serde_json::{json, Map, Value};

use super::{cloudevents_type, schema, ERASED};
use crate::config::{ArchiveSettings, KafkaSettings};
use crate::entity::{Entity, ENTITIES};
use crate::privacy::FieldRules;
use crate::routing::{Route, RoutingTable, StateTopic};

/// The version of the Kafka bindings used.
const BINDING_VERSION: &str = "0.5.0";

/// The AsyncAPI document for a connector with `kafka` settings and routing `table`.
pub fn document(kafka: &KafkaSettings, table: &RoutingTable) -> Value {
    document_with_archive(kafka, &ArchiveSettings::default(), table)
}

/// [`document`] with the `[archive]` topics (dead-letter, raw topic) as channels.
pub fn document_with_archive(
    kafka: &KafkaSettings,
    archive: &ArchiveSettings,
    table: &RoutingTable,
) -> Value {
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut add = |topic: &str, channel: Value| {
        let names = channel["messages"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>());
        let messages: Vec<Value> = (names.unwrap_or_default().iter())
            .map(|name| json!({"$ref": format!("#/channels/{topic}/messages/{name}")}))
            .collect();
        operations.insert(
            format!("send-{topic}"),
            json!({
                "action": "send",
                "title": format!("Produce to {topic}"),
                "channel": {"$ref": format!("#/channels/{topic}")},
                "messages": messages,
            }),
        );
        channels.insert(topic.to_string(), channel);
    };
    let states: Vec<&str> = table.states().iter().map(|s| s.topic.as_str()).collect();
    for topic in table.all_topics() {
        if !states.contains(&topic) {
            let entities = entities_reaching(topic, table);
            add(topic, channel(kafka, topic, table, &entities));
        }
    }
    for state in table.states() {
        add(&state.topic, state_channel(state));
    }
    if let Some(topic) = table.erasure_topic() {
        add(topic, erasure_channel(kafka, topic));
    }
    if let Some(topic) = archive.dead_letter() {
        add(topic, raw_channel(topic, true));
    }
    if let Some(topic) = archive.raw() {
        add(topic, raw_channel(topic, false));
    }
    let messages: Map<String, Value> = ENTITIES
        .iter()
        .map(|entity| (message_name(entity), event_message(kafka, entity, None)))
        .collect();
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "webhook-connector",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("Change notifications of the reservation platform ({}), one flat event per change, on the Kafka topics of the routing file. Records are keyed by the entity's id (per-entity order within a partition) and delivered at least once: de-duplicate by event_id.", crate::entity::names()),
        },
        "defaultContentType": "application/json",
        "servers": servers(kafka),
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
        },
    })
}

/// One server per bootstrap address.
fn servers(kafka: &KafkaSettings) -> Value {
    let secure = kafka
        .properties
        .get("security.protocol")
        .is_some_and(|p| p.eq_ignore_ascii_case("ssl") || p.eq_ignore_ascii_case("sasl_ssl"));
    let mut servers = Map::new();
    let hosts = kafka.bootstrap_servers.split(',').map(str::trim);
    for (n, host) in hosts.filter(|h| !h.is_empty()).enumerate() {
        servers.insert(
            format!("broker-{}", n + 1),
            json!({
                "host": host,
                "protocol": if secure { "kafka-secure" } else { "kafka" },
                "description": "A bootstrap server of kafka.bootstrap_servers.",
                "bindings": {"kafka": {"bindingVersion": BINDING_VERSION}},
            }),
        );
    }
    Value::Object(servers)
}

/// The component name of `entity`'s message: `customerEvent`.
fn message_name(entity: &Entity) -> String {
    format!("{}Event", entity.name)
}

/// The entities whose events can reach `topic`: those of the routes feeding it,
/// or all for the unmatched topic.
fn entities_reaching(topic: &str, table: &RoutingTable) -> Vec<&'static Entity> {
    let unmatched = table.unmatched_topic() == topic;
    let feeding = |entity: &Entity| {
        let routes = table.routes().iter();
        routes
            .filter(|route| route.topics().iter().any(|t| t == topic))
            .any(|route| route.applies_to(entity))
    };
    ENTITIES
        .into_iter()
        .filter(|entity| unmatched || feeding(entity))
        .collect()
}

/// The channel of `topic`: which routes feed it, with which entities and
/// patterns, and the messages of `entities` (shaped by the topic's field rules).
fn channel(
    kafka: &KafkaSettings,
    topic: &str,
    table: &RoutingTable,
    entities: &[&Entity],
) -> Value {
    let feeding: Vec<&Route> = table
        .routes()
        .iter()
        .filter(|route| route.topics().iter().any(|t| t == topic))
        .collect();
    let routes: Vec<Value> = feeding
        .iter()
        .map(|route| json!({"route": route.name(), "entities": route_entities(route), "change_types": route.patterns()}))
        .collect();
    let unmatched = table.unmatched_topic() == topic;
    let mut feeds: Vec<String> = feeding
        .iter()
        .map(|r| {
            let entities = route_entities(r).join(", ");
            format!(
                "route `{}` ({entities}: {})",
                r.name(),
                r.patterns().join(", ")
            )
        })
        .collect();
    if unmatched {
        feeds.push(
            "every event no route matches (new change types, notifications without changes)".into(),
        );
    }
    let rules = table.rules_for(topic);
    let messages: Map<String, Value> = entities
        .iter()
        .map(|e| {
            let name = message_name(e);
            let message = match rules {
                None => json!({"$ref": format!("#/components/messages/{name}")}),
                Some(rules) => event_message(kafka, e, Some(rules)),
            };
            (name, message)
        })
        .collect();
    let shaped = rules.map_or(String::new(), |r| {
        format!(" Its events are shaped by field rules: {}.", r.summary())
    });
    json!({
        "address": topic,
        "title": topic,
        "description": format!("Fed by {}.{shaped}", feeds.join("; ")),
        "messages": messages,
        "bindings": {"kafka": {"topic": topic, "bindingVersion": BINDING_VERSION}},
        "x-webhook-connector-routes": routes,
        "x-webhook-connector-unmatched": unmatched,
    })
}

/// The names of the entities `route` applies to.
fn route_entities(route: &Route) -> Vec<&'static str> {
    let all = ENTITIES.into_iter();
    all.filter(|e| route.applies_to(e))
        .map(|e| e.name)
        .collect()
}

/// The channel of an entity's compacted state topic.
fn state_channel(state: &StateTopic) -> Value {
    let (entity, topic) = (state.entity, state.topic.as_str());
    let name = format!("{}State", entity.name);
    let body = entity.body_key;
    let message = json!({
        "name": name,
        "title": format!("{} state", entity.name),
        "summary": format!("The latest state of one {}; no value (a tombstone) once deleted or erased.", entity.name),
        "contentType": "application/json",
        "payload": draft_07(schema::state_record(entity, state.rules.as_deref())),
        "headers": {
            "type": "object",
            "properties": {
                "entity": {"const": entity.name},
                "schema_version": {"type": "string", "description": "The schema_version, in decimal."},
                "content-type": {"const": "application/json", "description": "Absent on a tombstone."},
            },
            "required": ["entity", "schema_version"],
        },
        "bindings": {"kafka": {"key": id_key(entity), "bindingVersion": BINDING_VERSION}},
    });
    let message = with_trace_headers(message, false);
    json!({
        "address": topic,
        "title": topic,
        "description": format!(
            "The latest state of each {}, keyed by {body}.Id: one record after every notification, a tombstone when a change matches {}. Compacted (cleanup.policy=compact): a consumer reading from the start gets every {}'s latest record.",
            entity.name, state.deletions.patterns().join(", "), entity.name
        ),
        "messages": {name: message},
        "bindings": {"kafka": {"topic": topic, "topicConfiguration": {"cleanup.policy": ["compact"]}, "bindingVersion": BINDING_VERSION}},
    })
}

/// The channel of the erasure topic: one message per entity.
fn erasure_channel(kafka: &KafkaSettings, topic: &str) -> Value {
    let text = |description: &str| json!({"type": "string", "description": description});
    let messages: Map<String, Value> = ENTITIES
        .iter()
        .map(|entity| {
            let name = format!("{}Erasure", entity.name);
            let message = json!({
                "name": name,
                "title": format!("{} erasure", entity.name),
                "summary": format!("Erase one {} (webhook-connector forget): no personal data.", entity.name),
                "contentType": "application/json",
                "payload": draft_07(schema::erasure_event(entity)),
                "headers": {
                    "type": "object",
                    "properties": {
                        "entity": {"const": entity.name},
                        "schema_version": text("The schema_version, in decimal."),
                        "content-type": {"const": "application/json"},
                        "ce_specversion": {"const": "1.0"},
                        "ce_id": text("CloudEvents id: the erasure_id."),
                        "ce_source": {"const": kafka.cloudevents_source},
                        "ce_type": {"const": cloudevents_type(entity.name, Some(ERASED))},
                        "ce_time": text("CloudEvents time: requested_at."),
                        "ce_subject": text(&format!("CloudEvents subject: {}.Id in decimal.", entity.body_key)),
                    },
                    "required": ["entity", "schema_version", "content-type", "ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject"],
                },
                "bindings": {"kafka": {"key": id_key(entity), "bindingVersion": BINDING_VERSION}},
            });
            (name, with_trace_headers(message, true))
        })
        .collect();
    json!({
        "address": topic,
        "title": topic,
        "description": "Erasure requests (webhook-connector forget): a consumer holding an entity's data erases it when one arrives.",
        "messages": messages,
        "bindings": {"kafka": {"topic": topic, "bindingVersion": BINDING_VERSION}},
    })
}

/// The channel of the dead-letter topic (`refused`) or the raw topic: the
/// notifications as they arrived, for `webhook-connector replay`.
fn raw_channel(topic: &str, refused: bool) -> Value {
    let text = |description: &str| json!({"type": "string", "description": description});
    let mut headers = json!({
        "entity": {"enum": ENTITIES.map(|e| e.name), "description": "The endpoint it was posted to (POST /webhooks/<entity>)."},
        "request_id": text("The request's X-Request-Id."),
        "received_at": text("When the connector received it (RFC 3339 UTC)."),
        "request_content_type": {"type": ["string", "null"], "description": "The request's Content-Type; null when it had none."},
    });
    let mut required = vec![
        "entity",
        "request_id",
        "received_at",
        "request_content_type",
    ];
    if refused {
        headers["error_status"] = text("The HTTP status it was answered with, in decimal.");
        headers["error_code"] = text("The answer's error code (invalid_json, invalid_payload, too_many_changes, payload_too_large, unsupported_media_type).");
        headers["error_message"] = text("The answer's message.");
        required.extend(["error_status", "error_code", "error_message"]);
    }
    let (name, summary, description, key) = if refused {
        ("deadLetter", "A notification refused for its content, byte for byte.",
         "Notifications refused for their content after the signature check (archive.dead_letter_topic), written before they were answered: `webhook-connector replay --from` re-drives them after a fix.",
         "The request's X-Request-Id.")
    } else {
        ("rawNotification", "An accepted notification, byte for byte.",
         "Every accepted notification (archive.raw_topic), written in the same delivery as its events: `webhook-connector replay --from` re-derives topics from it.",
         "The entity's id in decimal.")
    };
    let message = json!({
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": "application/octet-stream",
        "payload": {"schemaFormat": "application/schema+json;version=draft-07", "schema": {"description": "The request body as it arrived (usually JSON, possibly not)."}},
        "headers": {"type": "object", "properties": headers, "required": required},
        "bindings": {"kafka": {"key": {"type": "string", "description": key}, "bindingVersion": BINDING_VERSION}},
    });
    let message = with_trace_headers(message, false);
    json!({
        "address": topic,
        "title": topic,
        "description": description,
        "messages": {name: message},
        "bindings": {"kafka": {"topic": topic, "bindingVersion": BINDING_VERSION}},
    })
}

/// The record key of `entity`'s records.
fn id_key(entity: &Entity) -> Value {
    let (name, body) = (entity.name, entity.body_key);
    json!({"type": "string", "pattern": "^-?[0-9]+$", "description": format!("{body}.Id in decimal: one {name}'s records share a partition, in order.")})
}

/// `schema` as a draft-07 payload: the AsyncAPI tools check draft-07, and the
/// keywords used are the same in both drafts.
fn draft_07(mut schema: Value) -> Value {
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
        object.remove("$id");
    }
    json!({"schemaFormat": "application/schema+json;version=draft-07", "schema": schema})
}

/// `message` with the W3C trace context among its headers (docs/tracing.md),
/// and for CloudEvents (`cloudevents`) its distributed-tracing extension too.
/// Optional: records written before the connector carried trace context have none.
fn with_trace_headers(mut message: Value, cloudevents: bool) -> Value {
    let traceparent = "W3C Trace Context traceparent: the trace of the request that produced the record, and the connector's span that wrote it (docs/tracing.md).";
    let tracestate =
        "W3C Trace Context tracestate: the request's, when it had one (at most 512 bytes).";
    let properties = &mut message["headers"]["properties"];
    properties["traceparent"] =
        json!({"type": "string", "pattern": TRACEPARENT_PATTERN, "description": traceparent});
    properties["tracestate"] = json!({"type": "string", "description": tracestate});
    if cloudevents {
        properties["ce_traceparent"] = json!({"type": "string", "pattern": TRACEPARENT_PATTERN, "description": "CloudEvents distributed-tracing extension: the traceparent header's value."});
        properties["ce_tracestate"] = json!({"type": "string", "description": "CloudEvents distributed-tracing extension: the tracestate header's value."});
    }
    message
}

/// A version-00 `traceparent`: version, trace id, parent (span) id, flags.
const TRACEPARENT_PATTERN: &str = "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$";

/// `entity`'s flat event as a message (shaped by `rules`): payload, key, headers.
fn event_message(kafka: &KafkaSettings, entity: &Entity, rules: Option<&FieldRules>) -> Value {
    let (name, body) = (entity.name, entity.body_key);
    let text = |description: &str| json!({"type": "string", "description": description});
    let summary = match rules {
        None => format!("One change of one {name} notification, flat."),
        Some(rules) => format!(
            "One change of one {name} notification, flat, shaped by field rules: {}.",
            rules.summary()
        ),
    };
    let message = json!({
        "name": message_name(entity),
        "title": format!("Flat {name} event"),
        "summary": summary,
        "contentType": "application/json",
        "payload": draft_07(schema::shaped_event(entity, rules)),
        "headers": {
            "type": "object",
            "properties": {
                "event_id": text("The event's event_id."),
                "entity": {"const": name, "description": "The event's entity."},
                "change_type": {"type": ["string", "null"], "description": "The event's change_type; a null value when it is null."},
                "schema_version": text("The event's schema_version, in decimal."),
                "content-type": {"const": "application/json"},
                "ce_specversion": {"const": "1.0", "description": "CloudEvents binary mode: the version of the CloudEvents spec."},
                "ce_id": text("CloudEvents id: the event_id."),
                "ce_source": {"const": kafka.cloudevents_source, "description": "CloudEvents source (kafka.cloudevents_source)."},
                "ce_type": text(&format!("CloudEvents type: {} or, for an event without a change type, {}.", cloudevents_type(name, Some("<change_type>")), cloudevents_type(name, None))),
                "ce_time": text("CloudEvents time: the event's change_date_time."),
                "ce_subject": text(&format!("CloudEvents subject: {body}.Id in decimal.")),
            },
            "required": ["event_id", "entity", "schema_version", "content-type", "ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject"],
        },
        "bindings": {"kafka": {"key": id_key(entity), "bindingVersion": BINDING_VERSION}},
    });
    with_trace_headers(message, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routing_file;

    fn table() -> RoutingTable {
        routing_file::parse(
            "[unmatched]\ntopic = \"u\"\n\
             [[routes]]\nname = \"contact\"\nentities = [\"customer\"]\nchange_types = [\"CustomerEmailChanged\", \"Customer*Sms*\"]\ntopics = [\"a\", \"b\"]\n\
             [[routes]]\nname = \"all-sms\"\nchange_types = [\"*Sms*\"]\ntopics = [\"b\", \"u\"]\n",
            "routes.toml",
            None,
        )
        .unwrap()
    }

    #[test]
    fn one_channel_and_operation_per_topic_naming_the_routes_that_feed_it() {
        let doc = document(&KafkaSettings::default(), &table());
        let channels = doc["channels"].as_object().unwrap();
        assert_eq!(channels.keys().collect::<Vec<_>>(), ["a", "b", "u"]);
        assert_eq!(doc["channels"]["b"]["address"], "b");
        assert_eq!(
            doc["channels"]["b"]["x-webhook-connector-routes"],
            json!([
                {"route": "contact", "entities": ["customer"], "change_types": ["CustomerEmailChanged", "Customer*Sms*"]},
                {"route": "all-sms", "entities": ["customer", "booking"], "change_types": ["*Sms*"]},
            ])
        );
        assert_eq!(doc["channels"]["u"]["x-webhook-connector-unmatched"], true);
        assert_eq!(doc["channels"]["a"]["x-webhook-connector-unmatched"], false);
        let described = doc["channels"]["u"]["description"].as_str().unwrap();
        assert!(
            described.contains("route `all-sms` (customer, booking: *Sms*)"),
            "{described}"
        );
        // A channel carries the messages of the entities that reach it.
        let names = |topic: &str| -> Vec<String> {
            doc["channels"][topic]["messages"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        assert_eq!(names("a"), ["customerEvent"]);
        assert_eq!(names("b"), ["customerEvent", "bookingEvent"]);
        assert_eq!(names("u"), ["customerEvent", "bookingEvent"]);
        assert_eq!(
            doc["operations"]["send-a"]["messages"],
            json!([{"$ref": "#/channels/a/messages/customerEvent"}])
        );
        assert!(described.contains("no route matches"), "{described}");
        assert_eq!(doc["operations"]["send-b"]["action"], "send");
        assert_eq!(
            doc["operations"]["send-b"]["channel"]["$ref"],
            "#/channels/b"
        );
    }

    #[test]
    fn servers_come_from_the_bootstrap_list_and_the_payload_is_the_event_schema() {
        let mut kafka = KafkaSettings {
            bootstrap_servers: "k1:9092, k2:9093".into(),
            ..KafkaSettings::default()
        };
        kafka
            .properties
            .insert("security.protocol".into(), "SASL_SSL".into());
        let doc = document(&kafka, &table());
        assert_eq!(doc["servers"]["broker-1"]["host"], "k1:9092");
        assert_eq!(doc["servers"]["broker-2"]["host"], "k2:9093");
        assert_eq!(doc["servers"]["broker-2"]["protocol"], "kafka-secure");
        for entity in ENTITIES {
            let message = &doc["components"]["messages"][message_name(entity)];
            let mut expected = schema::flat_event(entity);
            expected.as_object_mut().unwrap().remove("$schema");
            expected.as_object_mut().unwrap().remove("$id");
            assert_eq!(message["payload"]["schema"], expected);
            let headers = &message["headers"]["properties"];
            assert_eq!(headers["ce_source"]["const"], kafka.cloudevents_source);
            assert_eq!(headers["entity"]["const"], entity.name);
        }
    }

    #[test]
    fn ruled_topics_state_and_erasure_topics_get_their_own_messages() {
        let key = std::sync::Arc::new(crate::privacy::Key::new(&"k".repeat(32)).unwrap());
        let table = routing_file::parse(
            "[unmatched]\ntopic = \"u\"\n\
             [[routes]]\nname = \"contact\"\nentities = [\"customer\"]\nchange_types = [\"CustomerEmailChanged\"]\ntopics = [\"a\"]\n\
             include = [\"new_value\", \"customer_email\"]\npseudonymise = [\"new_value\", \"customer_email\"]\n\
             [[state]]\nentity = \"customer\"\ntopic = \"s\"\nexclude = [\"customer_email\"]\n\
             [erasure]\ntopic = \"e\"\n",
            "routes.toml",
            Some(&key),
        )
        .unwrap();
        let doc = document(&KafkaSettings::default(), &table);
        let channels = doc["channels"].as_object().unwrap();
        assert_eq!(channels.keys().collect::<Vec<_>>(), ["a", "u", "s", "e"]);
        // The ruled topic's message is inline, its payload shaped.
        let message = &doc["channels"]["a"]["messages"]["customerEvent"];
        let schema = &message["payload"]["schema"];
        assert_eq!(
            schema["properties"]["new_value"]["pattern"],
            "^hmac-sha256:[0-9a-f]{64}$"
        );
        assert_eq!(
            schema["properties"]["customer_email"]["pattern"],
            "^hmac-sha256:[0-9a-f]{64}$"
        );
        assert_eq!(schema["properties"]["old_value"], false);
        assert_eq!(schema["properties"]["customer_surname"], false);
        assert!(!schema["required"]
            .as_array()
            .unwrap()
            .contains(&json!("old_value")));
        assert!(schema["required"]
            .as_array()
            .unwrap()
            .contains(&json!("customer_id")));
        assert!(doc["channels"]["a"]["description"]
            .as_str()
            .unwrap()
            .contains("shaped by field rules"));
        assert_eq!(
            doc["channels"]["u"]["messages"]["customerEvent"]["$ref"],
            "#/components/messages/customerEvent"
        );
        // The state topic: compacted, the state record without the excluded field.
        let state = &doc["channels"]["s"];
        assert_eq!(
            state["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"],
            json!(["compact"])
        );
        let schema = &state["messages"]["customerState"]["payload"]["schema"];
        assert_eq!(schema["properties"]["customer_email"], false);
        assert_eq!(schema["properties"]["entity"]["const"], "customer");
        assert_eq!(
            doc["operations"]["send-s"]["messages"],
            json!([{"$ref": "#/channels/s/messages/customerState"}])
        );
        // The erasure topic: one message per entity.
        let erasure = doc["channels"]["e"]["messages"].as_object().unwrap();
        assert_eq!(
            erasure.keys().collect::<Vec<_>>(),
            ["customerErasure", "bookingErasure"]
        );
        assert_eq!(
            erasure["bookingErasure"]["headers"]["properties"]["ce_type"]["const"],
            "webhook-connector.booking.Erased"
        );
    }

    #[test]
    fn the_archive_topics_are_channels_of_raw_notifications() {
        let archive = ArchiveSettings {
            dead_letter_topic: "dead".into(),
            raw_topic: "raw".into(),
        };
        let doc = document_with_archive(&KafkaSettings::default(), &archive, &table());
        let dead = &doc["channels"]["dead"]["messages"]["deadLetter"];
        assert_eq!(dead["contentType"], "application/octet-stream");
        let required = dead["headers"]["required"].as_array().unwrap();
        assert!(required.contains(&json!("error_code")));
        let raw = &doc["channels"]["raw"]["messages"]["rawNotification"];
        assert!(!raw["headers"]["required"]
            .as_array()
            .unwrap()
            .contains(&json!("error_code")));
        assert_eq!(
            doc["operations"]["send-raw"]["messages"],
            json!([{"$ref": "#/channels/raw/messages/rawNotification"}])
        );
        assert!(document(&KafkaSettings::default(), &table())["channels"]["dead"].is_null());
    }
}
