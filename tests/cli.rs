//! The `check` and `explain` commands, run as a user would run the binary.
//! They need no Kafka.

mod common;

use std::process::Output;

use common::{
    assert_published_event, routes_file, run_binary, run_forget, settings_file, temp_file,
};

use serde_json::Value;

/// The `privacy.key` the example routing file needs (it pseudonymises).
const PRIVACY_KEY: (&str, &str) = (
    "CONNECTOR__PRIVACY__KEY",
    "cli-test-key-of-at-least-32-bytes",
);

/// Unsigned requests allowed, as the quick start does.
const UNSIGNED: (&str, &str) = ("CONNECTOR__WEBHOOK__ALLOW_UNSIGNED", "true");

/// Runs the binary with unsigned requests allowed and a privacy key.
fn connector(args: &[&str]) -> Output {
    run_binary(args, &[UNSIGNED, PRIVACY_KEY])
}

/// The standard error of `command` (`run` or `check`) of the example settings
/// with `env`, after checking it exited 64.
fn refused(command: &str, env: &[(&str, &str)]) -> String {
    let output = run_binary(&[command, "--config", "config/default.toml"], env);
    stderr_of(&output, 64)
}

#[test]
fn run_and_check_refuse_an_open_endpoint_unless_told_to_allow_it() {
    for command in ["run", "check"] {
        let stderr = refused(command, &[PRIVACY_KEY]);
        assert!(stderr.contains("webhook.secrets: is empty"), "{stderr}");
        assert!(stderr.contains("CONNECTOR__WEBHOOK__SECRETS="), "{stderr}");
        assert!(
            stderr.contains("CONNECTOR__WEBHOOK__ALLOW_UNSIGNED=true"),
            "{stderr}"
        );
    }
    let signed = run_binary(
        &["check", "--config", "config/default.toml"],
        &[("CONNECTOR__WEBHOOK__SECRETS", "s3cret"), PRIVACY_KEY],
    );
    assert!(signed.status.success(), "{}", text(&signed.stderr));
}

#[test]
fn the_example_routes_need_a_privacy_key_of_32_bytes() {
    let short = ("CONNECTOR__PRIVACY__KEY", "too-short");
    for (env, why) in [
        // The example settings key event ids with it.
        (
            vec![UNSIGNED],
            "privacy.keyed_event_ids: needs privacy.key (CONNECTOR__PRIVACY__KEY)",
        ),
        // And its routes pseudonymise.
        (
            vec![UNSIGNED, ("CONNECTOR__PRIVACY__KEYED_EVENT_IDS", "false")],
            "config/routes.toml: routes[0] (\"contact-details\").pseudonymise: needs privacy.key (CONNECTOR__PRIVACY__KEY)",
        ),
        (vec![UNSIGNED, short], "privacy.key: must be at least 32 bytes"),
    ] {
        let stderr = refused("check", &env);
        assert!(stderr.contains(why), "{stderr}");
        assert!(
            !stderr.contains("too-short"),
            "the key is never printed: {stderr}"
        );
    }
}

#[test]
fn forget_without_an_erasure_topic_exits_64_before_reaching_kafka() {
    let (_dir, settings) = settings_file("127.0.0.1:1", "[unmatched]\ntopic = \"u\"\n");
    let output = run_forget(&settings, "customer", "862", &[UNSIGNED, PRIVACY_KEY]);
    let stderr = stderr_of(&output, 64);
    assert!(
        stderr.contains("the routing file has no [erasure] topic"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The standard error of a run, after checking it exited with `code`.
fn stderr_of(output: &Output, code: i32) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    stderr
}

#[test]
fn check_prints_the_route_table_of_the_example_config() {
    let output = connector(&["check", "--config", "config/default.toml"]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.contains("routing file: config/routes.toml"),
        "{stdout}"
    );
    // Each route's line, columns separated by any run of spaces.
    let lines: Vec<String> = stdout
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let minimal = "customer_title,customer_first_name,customer_surname,customer_email,customer_mobile_number,customer_company";
    for line in [
        "ROUTE ENTITIES CHANGE TYPES TOPICS FIELDS",
        "contact-details customer CustomerEmailChanged, CustomerSmsChanged customer.contact-details include old_value,new_value,customer_email,customer_mobile_number,customer_related_provider_id; pseudonymise old_value,new_value,customer_email,customer_mobile_number",
        &format!("marketing-opt-ins customer Customer*Marketing*Changed customer.marketing-opt-ins exclude {minimal}"),
        "lifecycle customer Customer*Created, Customer*Deleted customer.lifecycle all",
        "booking-status booking Booking*Status* booking.status all",
        "booking-cancellations booking Booking*Cancel* booking.cancellations all",
        "booking-tables booking Booking*Table*, Booking*Area* booking.tables all",
        "(unmatched) all anything no route matches webhooks.unrouted all",
        &format!("(state) customer tombstone on Customer*Deleted customer.state exclude {minimal}"),
        "(erasure) all `forget` only privacy.erasures -",
    ] {
        assert!(lines.iter().any(|l| l == line), "{line} missing from:\n{stdout}");
    }
    assert!(!stdout.contains("warning"), "{stdout}");
}

#[test]
fn check_fails_with_exit_64_naming_file_route_and_key() {
    let (dir, routes) = routes_file(
        "[unmatched]\ntopic = \"u\"\n[[routes]]\nname = \"r\"\nchange_types = []\ntopics = [\"t\"]\n",
    );
    let settings = dir.path().join("settings.toml");
    let routing = format!("[routing]\nfile = {:?}\n", routes.display().to_string());
    std::fs::write(&settings, routing).unwrap();
    let output = connector(&["check", "--config", settings.to_str().unwrap()]);
    let stderr = stderr_of(&output, 64);
    assert!(
        stderr.contains(&format!(
            "{}: routes[0] (\"r\").change_types: empty",
            routes.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_bad_setting_exits_64_naming_the_key() {
    let (_dir, settings) = temp_file("settings.toml", "[server]\nmax_in_flight = 0\n");
    let output = connector(&["check", "--config", settings.to_str().unwrap()]);
    let stderr = stderr_of(&output, 64);
    assert!(stderr.contains("server.max_in_flight"), "{stderr}");
}

#[test]
fn a_kafka_property_librdkafka_refuses_is_named_but_its_secret_value_never_shown() {
    let text = "[routing]\nfile = \"config/routes.toml\"\n\n[webhook]\nallow_unsigned = true\n\n\
                [kafka.properties]\n\"SASL.Password\" = \"hunter2-cli-secret\"\n";
    let (_dir, settings) = temp_file("settings.toml", text);
    let output = run_binary(
        &["check", "--config", settings.to_str().unwrap()],
        &[PRIVACY_KEY],
    );
    let stderr = stderr_of(&output, 64);
    assert!(stderr.contains("\"SASL.Password\""), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn explain_prints_the_events_and_their_topics() {
    let output = connector(&[
        "explain",
        "--config",
        "config/default.toml",
        "tests/fixtures/seed_sample.json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let explained: Value = serde_json::from_slice(&output.stdout).expect("explain prints JSON");
    let events = explained["events"].as_array().unwrap();
    assert_eq!(events.len(), 4);
    let topics = |event: &Value| -> Vec<String> {
        event["topics"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(topics(&events[0]), ["customer.contact-details"]);
    assert_eq!(events[0]["key"], "862");
    assert_eq!(events[0]["change_type"], "CustomerSmsChanged");
    // The contact topic gets the minimum, its values pseudonymised.
    let contact = &events[0]["topics"]["customer.contact-details"];
    assert_eq!(contact["event_id"], events[0]["event_id"]);
    assert!(contact["new_value"]
        .as_str()
        .unwrap()
        .starts_with("hmac-sha256:"));
    assert!(contact.get("customer_first_name").is_none());
    for event in &events[1..] {
        assert_eq!(topics(event), ["customer.marketing-opt-ins"]);
        let marketing = &event["topics"]["customer.marketing-opt-ins"];
        assert!(marketing.get("customer_email").is_none());
        assert_eq!(marketing["customer_receive_group_sms_marketing"], true);
    }
    // The state record after the events, without contact details.
    let state = &explained["state"];
    assert_eq!(state["topic"], "customer.state");
    assert_eq!(state["key"], "862");
    assert_eq!(state["value"]["customer_id"], 862);
    assert!(state["value"].get("customer_email").is_none());
}

#[test]
fn explain_works_on_a_fresh_checkout_with_a_placeholder_key_and_says_so() {
    let ids = |output: &Output| -> Vec<String> {
        let explained: Value = serde_json::from_slice(&output.stdout).expect("explain prints JSON");
        (explained["events"].as_array().unwrap().iter())
            .map(|event| event["event_id"].as_str().unwrap().to_string())
            .collect()
    };
    // No settings file named, no environment: the example settings, which key
    // event ids, and no privacy key.
    let fresh = run_binary(&["explain", "tests/fixtures/seed_sample.json"], &[]);
    assert!(fresh.status.success(), "{}", text(&fresh.stderr));
    assert_eq!(ids(&fresh).len(), 4);
    assert!(
        text(&fresh.stderr).contains("keyed with a public placeholder key"),
        "{}",
        text(&fresh.stderr)
    );
    // Stable from run to run, and not the ids a deployment with its own key writes.
    let again = run_binary(&["explain", "tests/fixtures/seed_sample.json"], &[]);
    assert_eq!(ids(&again), ids(&fresh));
    let keyed = connector(&["explain", "tests/fixtures/seed_sample.json"]);
    assert!(keyed.status.success(), "{}", text(&keyed.stderr));
    assert!(!text(&keyed.stderr).contains("placeholder"));
    assert_ne!(ids(&keyed), ids(&fresh));
    // A key that is set but too short is still refused, not replaced.
    let short = run_binary(
        &["explain", "tests/fixtures/seed_sample.json"],
        &[("CONNECTOR__PRIVACY__KEY", "short")],
    );
    assert_eq!(short.status.code(), Some(64), "{}", text(&short.stderr));
}

#[test]
fn explain_detects_a_booking_or_takes_the_entity_it_is_told() {
    let explain = |extra: &[&str]| {
        let args = [&["explain", "--config", "config/default.toml"], extra].concat();
        connector(&args)
    };
    let output = explain(&["tests/fixtures/booking_sample.json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let explained: Value = serde_json::from_slice(&output.stdout).expect("explain prints JSON");
    let events = explained["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    let (status, tables) = (&events[0]["topics"], &events[1]["topics"]);
    for event in [&status["booking.status"], &tables["booking.tables"]] {
        assert_eq!(event["entity"], "booking");
        assert_published_event(event);
    }
    assert_eq!(status.as_object().unwrap().len(), 1);
    assert_eq!(tables.as_object().unwrap().len(), 1);
    assert!(events.iter().all(|e| e["key"] == "51234"));
    assert!(
        explained.get("state").is_none(),
        "bookings have no state topic"
    );
    // Told the entity, the same events (but for the receive time).
    let told = explain(&["--entity", "booking", "tests/fixtures/booking_sample.json"]);
    let mut told: Value = serde_json::from_slice(&told.stdout).expect("explain prints JSON");
    let mut detected = explained.clone();
    for explained in [&mut told, &mut detected] {
        for event in explained["events"].as_array_mut().unwrap() {
            for (_, value) in event["topics"].as_object_mut().unwrap() {
                value["received_at"] = Value::Null;
            }
        }
    }
    assert_eq!(told, detected);

    // Told otherwise, it answers as that endpoint would.
    let output = explain(&["--entity", "customer", "tests/fixtures/booking_sample.json"]);
    let stderr = stderr_of(&output, 65);
    assert!(stderr.contains("Customer: missing field"), "{stderr}");
    let output = explain(&["--entity", "table", "tests/fixtures/booking_sample.json"]);
    let stderr = stderr_of(&output, 2);
    assert!(
        stderr.contains("unknown entity; use customer, booking"),
        "{stderr}"
    );

    // A body it cannot tell: exit 65, asking for --entity.
    let (_dir, body) = temp_file("body.json", r#"{"ChangeDateTime":"x","Changes":[]}"#);
    let output = explain(&[body.to_str().unwrap()]);
    let stderr = stderr_of(&output, 65);
    assert!(
        stderr.contains(
            "it has none of the keys Customer, Booking; pass --entity (customer, booking)"
        ),
        "{stderr}"
    );
}

/// The standard error of `explain` of the example settings on a body file
/// holding `body`, with `env`, after checking it exited 65.
fn explain_refused(body: &str, env: &[(&str, &str)]) -> String {
    let (_dir, file) = temp_file("body.json", body);
    let args = ["explain", "--config", "config/default.toml"];
    let output = run_binary(&[&args[..], &[file.to_str().unwrap()]].concat(), env);
    stderr_of(&output, 65)
}

#[test]
fn explain_refuses_what_the_endpoint_refuses_with_exit_65() {
    let changes: Vec<String> = (0..101)
        .map(|i| format!(r#"{{"ChangeType":"T{i}"}}"#))
        .collect();
    let cases = [
        (
            format!(
                r#"{{"ChangeDateTime":"2018-11-12T10:15:00","Customer":{{"Id":1}},"Changes":[{}]}}"#,
                changes.join(",")
            ),
            "101 changes; at most 100",
        ),
        (
            r#"{"ChangeDateTime":"2018-11-12T10:15:00","Customer":{"Id":1,"P":{"a":1,"a":2}},"Changes":[]}"#
                .to_string(),
            "Customer.P: duplicate field `a`",
        ),
        (
            format!(
                r#"{{"ChangeDateTime":"2018-11-12T10:15:00","Customer":{{"Id":1,"Pad":"{}"}},"Changes":[]}}"#,
                "x".repeat(262_144)
            ),
            "larger than the limit of 262144 bytes",
        ),
    ];
    for (body, expected) in cases {
        let stderr = explain_refused(&body, &[UNSIGNED, PRIVACY_KEY]);
        assert!(stderr.contains(expected), "{stderr}");
    }
    // Records larger than one request may hold under a small byte budget.
    let changes: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"ChangeType":"T{i}"}}"#))
        .collect();
    let body = format!(
        r#"{{"ChangeDateTime":"2018-11-12T10:15:00","Customer":{{"Id":1,"Pad":"{}"}},"Changes":[{}]}}"#,
        "x".repeat(1000),
        changes.join(",")
    );
    let small_budget = [
        ("CONNECTOR__SERVER__MAX_BODY_BYTES", "4000"),
        ("CONNECTOR__SERVER__MAX_IN_FLIGHT_BYTES", "16000"),
        PRIVACY_KEY,
    ];
    let stderr = explain_refused(&body, &small_budget);
    assert!(
        stderr.contains("more than one request may hold (12000"),
        "{stderr}"
    );
}

#[test]
fn explain_refuses_a_malformed_body_with_exit_65() {
    let body = r#"{"ChangeDateTime": "x", "Customer": {}, "Changes": []}"#;
    let stderr = explain_refused(body, &[UNSIGNED, PRIVACY_KEY]);
    assert!(stderr.contains("Customer.Id: missing field"), "{stderr}");
}
