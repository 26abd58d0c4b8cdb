//! What tests send and configure: request bodies and routing files.

use std::path::PathBuf;

use serde_json::{json, Value};
use webhook_connector::config::{routing_file, Settings};
use webhook_connector::routing::RoutingTable;

/// The seed sample notification as bytes.
pub fn seed_sample() -> Vec<u8> {
    std::fs::read("tests/fixtures/seed_sample.json").expect("fixture exists")
}

/// The booking sample notification as bytes: a nested customer, a nested
/// cancellation reason, arrays of ids and of objects, two changes.
pub fn booking_sample() -> Vec<u8> {
    std::fs::read("tests/fixtures/booking_sample.json").expect("fixture exists")
}

/// A notification of `changes` changes whose customer carries `padding` bytes.
pub fn padded_body(changes: usize, padding: usize) -> String {
    let changes: Vec<Value> = (0..changes)
        .map(|i| json!({"ChangeType": "CustomerSmsChanged", "OldValue": i, "NewValue": i + 1}))
        .collect();
    json!({
        "ChangeDateTime": "2018-11-12T10:15:00",
        "Customer": {"Id": 9, "Notes": "x".repeat(padding)},
        "Changes": changes,
    })
    .to_string()
}

/// A routing file: one route per `(name, change_types, topics)`, and the unmatched topic.
pub fn routes_toml(unmatched: &str, routes: &[(&str, &[&str], &[&str])]) -> String {
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|i| format!("{i:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!("[unmatched]\ntopic = {unmatched:?}\n");
    for (name, change_types, topics) in routes {
        text.push_str(&format!(
            "\n[[routes]]\nname = {name:?}\nchange_types = [{}]\ntopics = [{}]\n",
            list(change_types),
            list(topics)
        ));
    }
    text
}

/// `contents` written to a file `name` in a new temporary directory, which
/// lives as long as the returned handle.
pub fn temp_file(name: &str, contents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, contents).unwrap();
    (dir, file)
}

/// `routes_toml` written to `routes.toml` in a new temporary directory, which
/// lives as long as the returned handle.
pub fn routes_file(routes_toml: &str) -> (tempfile::TempDir, PathBuf) {
    temp_file("routes.toml", routes_toml)
}

/// The routing table of `routes_toml` as a connector with `settings` (its
/// `privacy.key`) loads it: which topics have field rules, which are state and
/// erasure topics (for [`super::kafka::Check::for_topic`]).
pub fn routing_table(routes_toml: &str, settings: &Settings) -> RoutingTable {
    routing_file::parse(routes_toml, "routes.toml", settings.privacy_key().as_ref())
        .expect("the routing file is valid")
}

/// A settings file for the binary, in a new temporary directory (which lives as
/// long as the returned handle): `routes_toml` as its routing file and the broker
/// at `bootstrap`. Returns the directory and the settings file's path.
pub fn settings_file(bootstrap: &str, routes_toml: &str) -> (tempfile::TempDir, PathBuf) {
    settings_file_with(bootstrap, routes_toml, "")
}

/// [`settings_file`] with `more_toml` (other tables, e.g. `[archive]` and
/// `[webhook]`) appended to the settings.
pub fn settings_file_with(
    bootstrap: &str,
    routes_toml: &str,
    more_toml: &str,
) -> (tempfile::TempDir, PathBuf) {
    let (dir, routes) = routes_file(routes_toml);
    let settings = dir.path().join("settings.toml");
    let text = format!(
        "[routing]\nfile = {:?}\n\n[kafka]\nbootstrap_servers = {bootstrap:?}\n\n{more_toml}",
        routes.display().to_string()
    );
    std::fs::write(&settings, text).unwrap();
    (dir, settings)
}

/// Bodies the acceptance step refuses with 400: `(body, error code, part of the
/// message)`. The message names the place in the body that is wrong.
pub fn malformed_bodies() -> Vec<(String, &'static str, &'static str)> {
    let valid_change =
        json!([{"ChangeType": "CustomerSmsChanged", "OldValue": "1", "NewValue": "2"}]);
    vec![
        ("not json".into(), "invalid_json", "not valid JSON"),
        ("{\"ChangeDateTime\": ".into(), "invalid_json", "not valid JSON"),
        (
            json!({"ChangeDateTime": 5, "Customer": {"Id": 1}, "Changes": []}).to_string(),
            "invalid_payload",
            "ChangeDateTime: invalid type: integer `5`, expected a string",
        ),
        (
            json!({"ChangeDateTime": "2018-11-12T10:15:00", "Customer": {"FirstName": "A"}, "Changes": valid_change}).to_string(),
            "invalid_payload",
            "Customer.Id: missing field",
        ),
        (
            json!({"ChangeDateTime": "2018-11-12T10:15:00", "Customer": {"Id": "862"}, "Changes": []}).to_string(),
            "invalid_payload",
            "Customer.Id: invalid type: string \"862\", expected i64",
        ),
        (
            json!({"ChangeDateTime": "2018-11-12T10:15:00", "Customer": {"Id": 1}, "Changes": {"ChangeType": "X"}}).to_string(),
            "invalid_payload",
            "Changes: invalid type: map, expected a sequence",
        ),
        (
            json!({"ChangeDateTime": "2018-11-12T10:15:00", "Customer": {"Id": 1},
                   "Changes": [{"ChangeType": "A"}, {"OldValue": 1}]}).to_string(),
            "invalid_payload",
            "Changes[1].ChangeType: missing field",
        ),
        (
            json!({"ChangeDateTime": "12/11/2018 10:15", "Customer": {"Id": 1}, "Changes": valid_change}).to_string(),
            "invalid_payload",
            "ChangeDateTime: \"12/11/2018 10:15\" is not a date-time",
        ),
        (
            json!({"Customer": {"Id": 1}, "Changes": []}).to_string(),
            "invalid_payload",
            "ChangeDateTime: missing field",
        ),
    ]
}

/// A booking whose state nests `members` fields `levels` deep under names of
/// `name_bytes` bytes: its names by path take about `levels * name_bytes *
/// members` bytes from a body of about `levels * name_bytes + 9 * members`.
pub fn deep_named_booking(levels: usize, name_bytes: usize, members: usize) -> String {
    let mut state = serde_json::Value::Object(
        (0..members)
            .map(|i| (format!("m{i}"), serde_json::json!(1)))
            .collect(),
    );
    for level in 0..levels {
        let name = format!("{level:0name_bytes$}");
        state = serde_json::json!({ name: state });
    }
    serde_json::json!({
        "ChangeDateTime": "2024-05-03T17:42:10Z",
        "Booking": {"Id": 51234, "State": state},
        "Changes": [{"ChangeType": "BookingStatusChanged", "OldValue": "A", "NewValue": "B"}],
    })
    .to_string()
}
