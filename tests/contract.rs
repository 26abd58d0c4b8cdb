//! The published contract, checked by validators written by others: the JSON
//! Schema of each entity's flat event against its meta-schema (the `jsonschema`
//! crate) and against every committed version of its file for compatibility
//! (git's history of `schema/<entity>-event.v1.json`, so regenerating the file
//! cannot hide a breaking change; a shallow clone, without that history, fails
//! the check), and the AsyncAPI
//! documents `asyncapi` prints through the official parser (`@asyncapi/parser`,
//! installed by `scripts/test.sh`). Every event the other tests read back is
//! checked against the committed schema by `common::kafka`.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;
use webhook_connector::contract::{compat, schema};
use webhook_connector::entity::{Entity, CUSTOMER, ENTITIES};

/// Runs the binary (with the privacy key the example routes need); its standard
/// output, after asserting it exited 0.
fn connector(args: &[&str]) -> String {
    let key = (
        "CONNECTOR__PRIVACY__KEY",
        "contract-test-key-of-32-bytes-or-more",
    );
    let output = run_binary(args, &[key]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

/// Runs git in the repository; its standard output, after asserting it exited 0.
fn git(args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git runs: the compatibility check reads the schema's history");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// How many commits at least published each schema file (added or changed it),
/// by file: the history the compatibility check must find. Versions are only
/// ever added, so a later count is never smaller; raise it when publishing.
const PUBLISHED_AT_LEAST: [(&str, usize); 2] = [
    ("schema/flat-event.v1.json", 3),
    ("schema/booking-event.v1.json", 1),
];

/// Every published version of `entity`'s schema file, oldest first: each one
/// git's history has. Panics in a shallow clone, whose history stops at its
/// first commit (the older versions would never be compared).
fn published_schemas(entity: &Entity) -> Vec<(String, Value)> {
    let shallow = git(&["rev-parse", "--is-shallow-repository"]);
    assert_eq!(
        shallow.trim(),
        "false",
        "a shallow clone: the schema's older published versions are not there to \
         compare against. Fetch the whole history (git fetch --unshallow, or \
         actions/checkout with fetch-depth: 0) and run the tests again"
    );
    let file = schema::schema_file(entity);
    // Commits that added or changed the file (not one that removed it).
    let history = git(&[
        "log",
        "--reverse",
        "--diff-filter=AM",
        "--format=%H",
        "--",
        &file,
    ]);
    history
        .lines()
        .map(|commit| {
            let text = git(&["show", &format!("{commit}:{file}")]);
            let version = format!("{}:{file}", &commit[..12]);
            let schema = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{version} is not JSON: {e}"));
            (version, schema)
        })
        .collect()
}

#[test]
fn each_schema_is_compatible_with_every_published_version_of_its_schema_version() {
    for entity in ENTITIES {
        let file = schema::schema_file(entity);
        let mut versions = published_schemas(entity);
        let at_least = (PUBLISHED_AT_LEAST.iter())
            .find(|(published, _)| *published == file)
            .unwrap_or_else(|| panic!("{file}: add it to PUBLISHED_AT_LEAST"))
            .1;
        assert!(
            versions.len() >= at_least,
            "{file}: git's history has {} published versions, at least {at_least} \
             were: {:?}",
            versions.len(),
            versions.iter().map(|(v, _)| v).collect::<Vec<_>>()
        );
        versions.push(("the working tree".into(), committed_schema(entity)));
        for (version, published) in &versions {
            let problems = compat::breaking_changes(published, &schema::flat_event(entity));
            assert!(
                problems.is_empty(),
                "the {} event's schema breaks consumers of {version}; such a change \
                 needs a new schema_version, produced beside this one:\n{}",
                entity.name,
                problems.join("\n")
            );
        }
    }
}

#[test]
fn the_committed_schemas_are_what_the_schema_command_prints() {
    for entity in ENTITIES {
        let printed = connector(&["schema", "--entity", entity.name]);
        let printed: Value = serde_json::from_str(&printed).unwrap();
        let file = schema::schema_file(entity);
        assert_eq!(
            printed,
            committed_schema(entity),
            "{file} is not what the code generates. When the change is \
             compatible (the test above passes), publish it: \
             cargo run -- schema --entity {} > {file} (the test above keeps \
             checking the code against every version committed before)",
            entity.name
        );
    }
    let default: Value = serde_json::from_str(&connector(&["schema"])).unwrap();
    assert_eq!(default, committed_schema(&CUSTOMER));
}

#[test]
fn the_committed_schemas_are_valid_draft_2020_12_schemas() {
    for entity in ENTITIES {
        let schema = committed_schema(entity);
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        jsonschema::meta::validate(&schema).expect("valid against the 2020-12 meta-schema");
    }
}

/// What the official AsyncAPI parser says of `document`
/// (`scripts/validate-asyncapi.cjs`): its output, whatever its exit status.
fn parse_asyncapi(document: &str) -> std::process::Output {
    let parser = std::env::var("WEBHOOK_CONNECTOR_ASYNCAPI_PARSER").unwrap_or_else(|_| {
        panic!(
            "WEBHOOK_CONNECTOR_ASYNCAPI_PARSER is not set: run the tests with \
             `scripts/test.sh`, which installs @asyncapi/parser"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("asyncapi.json");
    std::fs::write(&file, document).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/validate-asyncapi.cjs");
    Command::new("node")
        .arg(script)
        .arg(parser)
        .arg(&file)
        .output()
        .expect("node runs: the AsyncAPI document is checked with Node.js")
}

/// Checks `document` with the official AsyncAPI parser; panics with its
/// diagnostics when it reports an error.
fn assert_valid_asyncapi(document: &str) {
    let output = parse_asyncapi(document);
    assert!(
        output.status.success(),
        "the AsyncAPI parser refuses the document:\n{}{}\n{document}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_asyncapi_document_of_the_example_routing_file_passes_the_official_parser() {
    let text = connector(&["asyncapi", "--config", "config/default.toml"]);
    assert_valid_asyncapi(&text);
    let document: Value = serde_json::from_str(&text).unwrap();
    let channels: Vec<&String> = document["channels"].as_object().unwrap().keys().collect();
    assert_eq!(
        channels,
        [
            "booking.cancellations",
            "booking.status",
            "booking.tables",
            "customer.contact-details",
            "customer.lifecycle",
            "customer.marketing-opt-ins",
            "webhooks.unrouted",
            "customer.state",
            "privacy.erasures",
            "webhooks.dead-letter"
        ]
    );
    assert_eq!(document["servers"]["broker-1"]["host"], "127.0.0.1:9092");
    // Each payload is the committed schema, embedded as draft-07.
    for entity in ENTITIES {
        let mut payload = committed_schema(entity);
        payload.as_object_mut().unwrap().remove("$schema");
        payload.as_object_mut().unwrap().remove("$id");
        let message = format!("{}Event", entity.name);
        assert_eq!(
            document["components"]["messages"][&message]["payload"]["schema"],
            payload
        );
    }
    // A topic carries the messages of the entities that reach it.
    let messages = |topic: &str| -> Vec<&String> {
        document["channels"][topic]["messages"]
            .as_object()
            .unwrap()
            .keys()
            .collect()
    };
    assert_eq!(messages("booking.status"), ["bookingEvent"]);
    assert_eq!(messages("customer.lifecycle"), ["customerEvent"]);
    assert_eq!(
        messages("webhooks.unrouted"),
        ["customerEvent", "bookingEvent"]
    );
    assert_eq!(messages("customer.state"), ["customerState"]);
    assert_eq!(
        messages("privacy.erasures"),
        ["customerErasure", "bookingErasure"]
    );
}

/// The payload schema of `message` on `topic` in `document` (resolving a
/// reference to the components).
fn payload_schema<'d>(document: &'d Value, topic: &str, message: &str) -> &'d Value {
    let message = &document["channels"][topic]["messages"][message];
    let message = match message["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &document["components"]["messages"][name]
        }
        None => message,
    };
    &message["payload"]["schema"]
}

#[test]
fn what_explain_says_each_topic_receives_matches_that_topic_s_channel_in_the_asyncapi_document() {
    let document: Value =
        serde_json::from_str(&connector(&["asyncapi", "--config", "config/default.toml"])).unwrap();
    let validator = |schema: &Value| {
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .should_validate_formats(true)
            .build(schema)
            .expect("a channel's payload schema compiles")
    };
    let mut checked = std::collections::BTreeSet::new();
    for body in [
        "tests/fixtures/seed_sample.json",
        "tests/fixtures/booking_sample.json",
    ] {
        let explained: Value = serde_json::from_str(&connector(&[
            "explain",
            "--config",
            "config/default.toml",
            body,
        ]))
        .unwrap();
        for event in explained["events"].as_array().unwrap() {
            for (topic, value) in event["topics"].as_object().unwrap() {
                let entity = value["entity"].as_str().unwrap_or("customer");
                let schema = payload_schema(&document, topic, &format!("{entity}Event"));
                if let Err(error) = validator(schema).validate(value) {
                    panic!("{topic}: {} {error}\n{value}", error.instance_path());
                }
                checked.insert(topic.clone());
            }
        }
        if let Some(state) = explained.get("state") {
            let topic = state["topic"].as_str().unwrap();
            let schema = payload_schema(&document, topic, "customerState");
            validator(schema).validate(&state["value"]).unwrap();
            checked.insert(topic.to_string());
        }
    }
    // The ruled topics, a whole-event topic and the state topic were all checked.
    for topic in [
        "customer.contact-details",
        "customer.marketing-opt-ins",
        "booking.status",
        "customer.state",
    ] {
        assert!(checked.contains(topic), "{topic} not checked: {checked:?}");
    }
    // A pseudonymised field is a token in the contract, not the raw value.
    let contact = payload_schema(&document, "customer.contact-details", "customerEvent");
    assert_eq!(
        contact["properties"]["customer_email"]["pattern"],
        "^hmac-sha256:[0-9a-f]{64}$"
    );
    assert_eq!(contact["properties"]["customer_first_name"], false);
}

#[test]
fn the_asyncapi_document_of_fan_out_and_overlapping_globs_passes_the_official_parser() {
    let routes = routes_toml(
        "all.unrouted",
        &[
            (
                "contact",
                &["CustomerEmailChanged", "Customer*Sms*"],
                &["contact", "audit"],
            ),
            ("sms", &["*Sms*"], &["sms", "audit"]),
            ("everything", &["*"], &["audit", "all.unrouted"]),
        ],
    );
    let (_dir, settings) = settings_file("k1:9092,k2:9092", &routes);
    let text = connector(&["asyncapi", "--config", settings.to_str().unwrap()]);
    assert_valid_asyncapi(&text);
    let document: Value = serde_json::from_str(&text).unwrap();
    let routes_of = |topic: &str| -> Vec<String> {
        document["channels"][topic]["x-webhook-connector-routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["route"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(routes_of("audit"), ["contact", "sms", "everything"]);
    assert_eq!(routes_of("all.unrouted"), ["everything"]);
    assert_eq!(
        document["channels"]["all.unrouted"]["x-webhook-connector-unmatched"],
        true
    );
    assert_eq!(document["servers"]["broker-2"]["host"], "k2:9092");
}

#[test]
fn the_parser_check_is_real_a_broken_document_is_refused() {
    let mut document: Value =
        serde_json::from_str(&connector(&["asyncapi", "--config", "config/default.toml"])).unwrap();
    document["operations"]["send-customer.lifecycle"]["channel"]["$ref"] =
        Value::from("#/channels/no-such-topic");
    let output = parse_asyncapi(&document.to_string());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    // 1: the parser ran and found an error (2 would be the script failing:
    // arguments, the document, or @asyncapi/parser not loading).
    assert_eq!(
        output.status.code(),
        Some(1),
        "the parser must refuse the document for its content:\n{stdout}{stderr}"
    );
    assert!(stdout.starts_with("invalid: "), "{stdout}");
    // The diagnostic names the missing channel, where it is referred to.
    let at = "(at $.operations[\"send-customer.lifecycle\"].channel.$ref)";
    let named = stderr.lines().any(|line| {
        line.contains("error [invalid-ref]")
            && line.contains("'#/channels/no-such-topic' does not exist")
            && line.ends_with(at)
    });
    assert!(named, "no error naming the missing channel:\n{stderr}");
}
