//! The `check` and `explain` commands, run as a user would run the binary.
//! They need no Kafka.

mod common;

use std::process::Output;

use common::{assert_published_event, run_binary};

use serde_json::Value;

/// Runs the binary with unsigned requests allowed (as the quick start does).
fn connector(args: &[&str]) -> Output {
    run_binary(args, &[("CONNECTOR__WEBHOOK__ALLOW_UNSIGNED", "true")])
}

#[test]
fn run_and_check_refuse_an_open_endpoint_unless_told_to_allow_it() {
    for command in ["run", "check"] {
        let output = run_binary(&[command, "--config", "config/default.toml"], &[]);
        assert_eq!(output.status.code(), Some(64), "{command}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains("webhook.secrets: is empty"), "{stderr}");
        assert!(stderr.contains("CONNECTOR__WEBHOOK__SECRETS="), "{stderr}");
        assert!(
            stderr.contains("CONNECTOR__WEBHOOK__ALLOW_UNSIGNED=true"),
            "{stderr}"
        );
    }
    let signed = run_binary(
        &["check", "--config", "config/default.toml"],
        &[("CONNECTOR__WEBHOOK__SECRETS", "s3cret")],
    );
    assert!(signed.status.success(), "{}", text(&signed.stderr));
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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
    for line in [
        "ROUTE ENTITIES CHANGE TYPES TOPICS",
        "contact-details customer CustomerEmailChanged, CustomerSmsChanged customer.contact-details",
        "marketing-opt-ins customer Customer*Marketing*Changed customer.marketing-opt-ins",
        "lifecycle customer Customer*Created, Customer*Deleted customer.lifecycle",
        "booking-status booking Booking*Status* booking.status",
        "booking-cancellations booking Booking*Cancel* booking.cancellations",
        "booking-tables booking Booking*Table*, Booking*Area* booking.tables",
        "(unmatched) all anything no route matches webhooks.unrouted",
    ] {
        assert!(lines.iter().any(|l| l == line), "{line} missing from:\n{stdout}");
    }
}

#[test]
fn check_fails_with_exit_64_naming_file_route_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    std::fs::write(
        &routes,
        "[unmatched]\ntopic = \"u\"\n[[routes]]\nname = \"r\"\nchange_types = []\ntopics = [\"t\"]\n",
    )
    .unwrap();
    let settings = dir.path().join("settings.toml");
    std::fs::write(
        &settings,
        format!("[routing]\nfile = {:?}\n", routes.display().to_string()),
    )
    .unwrap();
    let output = connector(&["check", "--config", settings.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(64));
    let stderr = text(&output.stderr);
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
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.toml");
    std::fs::write(&settings, "[server]\nmax_in_flight = 0\n").unwrap();
    let output = connector(&["check", "--config", settings.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        text(&output.stderr).contains("server.max_in_flight"),
        "{}",
        text(&output.stderr)
    );
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
    let events = explained.as_array().unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(
        events[0]["topics"],
        serde_json::json!(["customer.contact-details"])
    );
    assert_eq!(events[0]["key"], "862");
    assert_eq!(events[0]["event"]["change_type"], "CustomerSmsChanged");
    for event in events {
        assert_published_event(&event["event"]);
    }
    for event in &events[1..] {
        assert_eq!(
            event["topics"],
            serde_json::json!(["customer.marketing-opt-ins"])
        );
    }
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
    let events = explained.as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["topics"], serde_json::json!(["booking.status"]));
    assert_eq!(events[1]["topics"], serde_json::json!(["booking.tables"]));
    for event in events {
        assert_eq!(event["key"], "51234");
        assert_eq!(event["event"]["entity"], "booking");
        assert_published_event(&event["event"]);
    }
    // Told the entity, the same events (but for the receive time).
    let told = explain(&["--entity", "booking", "tests/fixtures/booking_sample.json"]);
    let mut told: Value = serde_json::from_slice(&told.stdout).expect("explain prints JSON");
    let mut detected = explained.clone();
    for events in [&mut told, &mut detected] {
        for event in events.as_array_mut().unwrap() {
            event["event"]["received_at"] = Value::Null;
        }
    }
    assert_eq!(told, detected);

    // Told otherwise, it answers as that endpoint would.
    let output = explain(&["--entity", "customer", "tests/fixtures/booking_sample.json"]);
    assert_eq!(output.status.code(), Some(65));
    assert!(
        text(&output.stderr).contains("Customer: missing field"),
        "{}",
        text(&output.stderr)
    );
    let output = explain(&["--entity", "table", "tests/fixtures/booking_sample.json"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("unknown entity; use customer, booking"),
        "{}",
        text(&output.stderr)
    );

    // A body it cannot tell: exit 65, asking for --entity.
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, r#"{"ChangeDateTime":"x","Changes":[]}"#).unwrap();
    let output = explain(&[body.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(65));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(
            "it has none of the keys Customer, Booking; pass --entity (customer, booking)"
        ),
        "{stderr}"
    );
}

#[test]
fn explain_refuses_what_the_endpoint_refuses_with_exit_65() {
    let dir = tempfile::tempdir().unwrap();
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
    for (text_of_body, expected) in cases {
        let body = dir.path().join("body.json");
        std::fs::write(&body, text_of_body).unwrap();
        let output = connector(&[
            "explain",
            "--config",
            "config/default.toml",
            body.to_str().unwrap(),
        ]);
        assert_eq!(output.status.code(), Some(65), "{expected}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
    // Records larger than one request may hold under a small byte budget.
    let body = dir.path().join("body.json");
    let changes: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"ChangeType":"T{i}"}}"#))
        .collect();
    std::fs::write(
        &body,
        format!(
            r#"{{"ChangeDateTime":"2018-11-12T10:15:00","Customer":{{"Id":1,"Pad":"{}"}},"Changes":[{}]}}"#,
            "x".repeat(1000),
            changes.join(",")
        ),
    )
    .unwrap();
    let output = run_binary(
        &[
            "explain",
            "--config",
            "config/default.toml",
            body.to_str().unwrap(),
        ],
        &[
            ("CONNECTOR__SERVER__MAX_BODY_BYTES", "4000"),
            ("CONNECTOR__SERVER__MAX_IN_FLIGHT_BYTES", "16000"),
        ],
    );
    {
        let expected = "more than one request may hold (12000";
        assert_eq!(output.status.code(), Some(65), "{expected}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[test]
fn explain_refuses_a_malformed_body_with_exit_65() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(
        &body,
        r#"{"ChangeDateTime": "x", "Customer": {}, "Changes": []}"#,
    )
    .unwrap();
    let output = connector(&[
        "explain",
        "--config",
        "config/default.toml",
        body.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(65));
    assert!(
        text(&output.stderr).contains("Customer.Id: missing field"),
        "{}",
        text(&output.stderr)
    );
}
