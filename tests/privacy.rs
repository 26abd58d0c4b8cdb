//! Privacy against a real broker (docs/privacy.md): field rules
//! (`include`, `exclude`, `pseudonymise`) shaping what each topic receives, the
//! compacted state topic and its tombstones, and the `forget` and `create-topics`
//! commands run as a user would run them. Every record is read back over the
//! Kafka protocol and checked against the schema of what its topic holds
//! ([`Check::for_topic`]): shaped events, state records, erasure events.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;
use webhook_connector::config::Settings;

/// The `privacy.key` of the tests' connectors (at least 32 bytes).
const KEY: &str = "privacy-test-key-0123456789abcdef0123456789";
/// Another key, for tokens that must differ.
const OTHER_KEY: &str = "another-privacy-test-key-fedcba9876543210";
/// The seed sample customer's email address.
const EMAIL: &str = "aardvark@example.com";

/// What every customer event carries whatever its topic's rules: the envelope.
const CUSTOMER_ENVELOPE: [&str; 8] = [
    "event_id",
    "schema_version",
    "change_type",
    "change_index",
    "change_count",
    "change_date_time",
    "customer_id",
    "received_at",
];

/// Test settings with `privacy.key` set to `key`.
fn keyed_settings(key: &str) -> Settings {
    let mut settings = test_settings();
    settings.privacy.key = Some(key.into());
    settings
}

/// The `[unmatched]` table of a routing file.
fn unmatched(topic: &str) -> String {
    format!("[unmatched]\ntopic = {topic:?}\n")
}

/// A `[[routes]]` entry taking customer events of `change_types` to `topic`,
/// with field `rules` (TOML lines, or nothing).
fn route(name: &str, change_types: &[&str], topic: &str, rules: &str) -> String {
    format!(
        "\n[[routes]]\nname = {name:?}\nentities = [\"customer\"]\nchange_types = {change_types:?}\ntopics = [{topic:?}]\n{rules}\n"
    )
}

/// `"hmac-sha256:" + hex(HMAC-SHA256(key, text))`, computed here, apart from the
/// connector.
fn token(key: &str, text: &str) -> Value {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(text.as_bytes());
    json!(format!(
        "hmac-sha256:{}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

/// The seed sample with fields the contract does not name: the customer's
/// (`customer_nickname`), the notification's (`notification_source`) and the
/// first change's (`change_reason`).
fn seed_with_unknown_fields() -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&seed_sample()).unwrap();
    body["Customer"]["Nickname"] = json!("Aardy");
    body["Source"] = json!("web");
    body["Changes"][0]["Reason"] = json!("typo");
    serde_json::to_vec(&body).unwrap()
}

/// The keys of a JSON object, in order.
fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

/// `value` (an object) with only the members whose key `keep` accepts, in order.
fn only(value: &Value, keep: impl Fn(&str) -> bool) -> Value {
    let members = value.as_object().expect("an object").iter();
    Value::Object(
        members
            .filter(|(key, _)| keep(key))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
    )
}

/// Headers from `(name, value)` pairs, as [`Record::headers`] holds them.
fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, Option<String>> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), Some(value.to_string())))
        .collect()
}

/// The standard output of a binary run, after checking it exited with 0.
fn succeeded(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

/// Posts the seed sample (with unknown fields) to a connector whose route `label`
/// has `rules` and whose other route sends the same events whole; the 4 events as
/// the shaped topic and the whole topic received them, after checking the shaped
/// ones carry the event ids answered, in order.
async fn shaped_beside_whole(label: &str, rules: &str) -> (Vec<Record>, Vec<Record>) {
    let [shaped, whole, unrouted] = new_topics([label, "whole", "unrouted"]).await;
    let routes = [
        unmatched(&unrouted),
        route(label, &["Customer*"], &shaped, rules),
        route("whole", &["Customer*"], &whole, ""),
    ]
    .concat();
    let (connector, table) = start_connector_and_table(test_settings(), &routes).await;
    let _turn = shared().await;

    let answer = post(&connector.endpoint(), seed_with_unknown_fields(), &[]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let ids = event_ids(&answer);
    assert_eq!(ids.len(), 4);
    let [shaped, full, _] = read_exactly_each(&[
        (&shaped, 4, &Check::for_topic(&table, &shaped)),
        (&whole, 4, &Check::published()),
        (&unrouted, 0, &Check::published()),
    ])
    .try_into()
    .unwrap();
    for (i, shaped) in shaped.iter().enumerate() {
        assert_eq!(shaped.value["event_id"], json!(ids[i]), "event {i}");
    }
    connector.stop().await;
    (shaped, full)
}

#[tokio::test]
async fn a_topic_with_an_include_list_receives_exactly_those_fields_and_the_envelope() {
    let rules = r#"include = ["new_value", "customer_email", "customer_receive_*"]"#;
    let (shaped, full) = shaped_beside_whole("included", rules).await;
    let included_fields = [
        "new_value",
        "customer_email",
        "customer_receive_group_email_marketing",
        "customer_receive_group_sms_marketing",
        "customer_receive_restaurant_email_marketing",
        "customer_receive_restaurant_sms_marketing",
    ];
    // The whole events hold much more: what the rules leave out is really there.
    for field in [
        "old_value",
        "customer_first_name",
        "customer_mobile_number",
        "customer_nickname",
        "notification_source",
        "change_reason",
    ] {
        assert!(
            full[0].value.get(field).is_some(),
            "{field}: {}",
            full[0].value
        );
    }
    for (i, (shaped, full)) in shaped.iter().zip(&full).enumerate() {
        // Exactly the envelope and the included fields, valued and ordered as in
        // the whole event on the topic without rules.
        let kept: BTreeSet<&str> = keys(&shaped.value).into_iter().collect();
        let wanted: BTreeSet<&str> = CUSTOMER_ENVELOPE
            .into_iter()
            .chain(included_fields)
            .collect();
        assert_eq!(kept, wanted, "event {i}");
        let expected = only(&full.value, |key| wanted.contains(key));
        assert_eq!(keys(&shaped.value), keys(&expected), "event {i}");
        assert_eq!(shaped.value, expected, "event {i}");
        // Rules shape the value only: the same key and headers.
        assert_eq!(shaped.key.as_deref(), Some("862"));
        assert_eq!(shaped.key, full.key, "event {i}");
        assert_eq!(shaped.headers, full.headers, "event {i}");
    }
}

#[tokio::test]
async fn an_exclude_list_removes_what_it_names_and_nothing_else() {
    let rules = r#"exclude = ["old_value", "customer_email", "customer_*_opt_in_text"]"#;
    let (shaped, full) = shaped_beside_whole("excluded", rules).await;
    let removed = [
        "old_value",
        "customer_email",
        "customer_group_email_marketing_opt_in_text",
        "customer_group_sms_marketing_opt_in_text",
        "customer_restaurant_email_marketing_opt_in_text",
        "customer_restaurant_sms_marketing_opt_in_text",
    ];
    for (i, (shaped, full)) in shaped.iter().zip(&full).enumerate() {
        for field in removed {
            assert!(full.value.get(field).is_some(), "{field} in {}", full.value);
            assert!(
                shaped.value.get(field).is_none(),
                "{field} in {}",
                shaped.value
            );
        }
        // Everything else, fields the contract does not name too, as it is and in order.
        let expected = only(&full.value, |key| !removed.contains(&key));
        assert_eq!(keys(&shaped.value), keys(&expected), "event {i}");
        assert_eq!(shaped.value, expected, "event {i}");
        assert_eq!(shaped.headers, full.headers, "event {i}");
    }
    for field in ["customer_nickname", "notification_source", "change_reason"] {
        assert!(
            shaped[0].value.get(field).is_some(),
            "{field}: {}",
            shaped[0].value
        );
    }
}

#[tokio::test]
async fn pseudonymised_fields_are_keyed_hmac_tokens_stable_across_requests_and_topics() {
    let [tokens, emails, unrouted, other_key, other_unrouted] =
        new_topics(["tokens", "emails", "unrouted", "other-key", "unrouted"]).await;
    let every_token = r#"pseudonymise = ["old_value", "new_value", "customer_email", "customer_mobile_number", "customer_related_provider_id", "customer_*_opt_in_text"]"#;
    let email_token = r#"include = ["customer_email"]
pseudonymise = ["customer_email"]"#;
    let routes = [
        unmatched(&unrouted),
        route("tokens", &["Customer*"], &tokens, every_token),
        route("emails", &["CustomerSmsChanged"], &emails, email_token),
    ]
    .concat();
    let other_routes = [
        unmatched(&other_unrouted),
        route("emails", &["CustomerSmsChanged"], &other_key, email_token),
    ]
    .concat();
    let (connector, table) = start_connector_and_table(keyed_settings(KEY), &routes).await;
    let (other, other_table) =
        start_connector_and_table(keyed_settings(OTHER_KEY), &other_routes).await;
    let _turn = shared().await;

    // The seed sample, then another customer with the same email address; and
    // the seed sample to the connector with the other key, meanwhile.
    let mobile = "07700 900123";
    let second_body = json!({
        "ChangeDateTime": "2018-11-17T08:00:00Z",
        "Customer": {"Id": 863, "Email": EMAIL, "MobileNumber": mobile, "RelatedProviderId": 1044},
        "Changes": [{"ChangeType": "CustomerSmsChanged", "OldValue": "3", "NewValue": mobile}],
    });
    let other_endpoint = other.endpoint();
    let ((first, second), under_other_key) = tokio::join!(
        async {
            let first = post(&connector.endpoint(), seed_sample(), &[]).await;
            (
                first,
                post(&connector.endpoint(), second_body.to_string(), &[]).await,
            )
        },
        post(&other_endpoint, seed_sample(), &[]),
    );
    for answer in [&first, &second, &under_other_key] {
        assert_eq!(answer.status, 200, "{:?}", answer.json);
    }
    let (first_ids, second_ids) = (event_ids(&first), event_ids(&second));

    let [token_records, email_records, other_records, _, _] = read_exactly_each(&[
        (&tokens, 5, &Check::for_topic(&table, &tokens)),
        (&emails, 2, &Check::for_topic(&table, &emails)),
        (&other_key, 1, &Check::for_topic(&other_table, &other_key)),
        (&unrouted, 0, &Check::published()),
        (&other_unrouted, 3, &Check::published()),
    ])
    .try_into()
    .unwrap();

    // Every value the rules name is the HMAC-SHA256 of its text under KEY, a
    // non-string scalar by its JSON text; null stays null; the rest as it is.
    let value = |i: usize, field: &str| token_records[i].value[field].clone();
    let email = token(KEY, EMAIL);
    for (i, record) in token_records.iter().enumerate() {
        assert_eq!(record.value["customer_email"], email, "record {i}");
        assert_eq!(value(i, "customer_related_provider_id"), token(KEY, "1044"));
    }
    assert_eq!(value(0, "customer_mobile_number"), token(KEY, "3"));
    assert_eq!(value(0, "old_value"), token(KEY, "2"));
    assert_eq!(value(0, "new_value"), token(KEY, "3"));
    assert_eq!(value(0, "customer_first_name"), json!("Aardvark"));
    assert_eq!(
        value(0, "customer_receive_group_sms_marketing"),
        json!(true)
    );
    assert_eq!(
        value(0, "customer_group_sms_marketing_opt_in_text"),
        token(
            KEY,
            "Would you like to receive news and offers from Laharna by SMS"
        )
    );
    assert_eq!(
        value(0, "customer_group_email_marketing_opt_in_text"),
        Value::Null
    );
    assert_eq!(value(1, "old_value"), token(KEY, "true"));
    assert_eq!(value(1, "new_value"), token(KEY, "false"));
    assert_eq!(value(2, "new_value"), Value::Null);
    // The second request: the same address gives the same token, another
    // mobile number another one.
    assert_eq!(value(4, "customer_id"), json!(863));
    assert_eq!(value(4, "customer_mobile_number"), token(KEY, mobile));
    assert_ne!(
        value(4, "customer_mobile_number"),
        value(0, "customer_mobile_number")
    );

    // The other topic, with other rules: the same token for the same address,
    // and each event with the same event_id as on the first topic.
    for (record, (full, id)) in email_records.iter().zip([
        (&token_records[0], &first_ids[0]),
        (&token_records[4], &second_ids[0]),
    ]) {
        let wanted: BTreeSet<&str> = CUSTOMER_ENVELOPE
            .into_iter()
            .chain(["customer_email"])
            .collect();
        assert_eq!(
            keys(&record.value).into_iter().collect::<BTreeSet<_>>(),
            wanted
        );
        assert_eq!(record.value["customer_email"], email);
        assert_eq!(record.value["event_id"], json!(id));
        assert_eq!(record.value["event_id"], full.value["event_id"]);
        assert_eq!(record.headers["event_id"], full.headers["event_id"]);
    }

    // Another key, another token for the same address.
    let under_other = &other_records[0].value["customer_email"];
    assert_eq!(*under_other, token(OTHER_KEY, EMAIL));
    assert_ne!(*under_other, email);
    assert_eq!(other_records[0].value["event_id"], json!(first_ids[0]));

    // The raw values appear nowhere, not even within a token.
    for record in token_records
        .iter()
        .chain(&email_records)
        .chain(&other_records)
    {
        let text = record.value.to_string();
        for raw in [EMAIL, "aardvark@", mobile] {
            assert!(!text.contains(raw), "{raw} in {text}");
        }
    }
    connector.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn a_customer_change_then_a_deletion_leave_its_latest_state_then_a_tombstone() {
    let [state, unrouted] = new_topics(["state", "unrouted"]).await;
    let routes = format!(
        "{}\n[[state]]\nentity = \"customer\"\ntopic = {state:?}\nexclude = [\"customer_email\"]\n",
        unmatched(&unrouted)
    );
    let (connector, table) = start_connector_and_table(test_settings(), &routes).await;
    let _turn = shared().await;

    let changed = post(&connector.endpoint(), seed_sample(), &[]).await;
    assert_eq!(changed.status, 200, "{:?}", changed.json);
    let deletion = json!({
        "ChangeDateTime": "2018-11-17T09:00:00Z",
        "Customer": {"Id": 862},
        "Changes": [{"ChangeType": "CustomerDeleted"}],
    });
    let deleted = post(&connector.endpoint(), deletion.to_string(), &[]).await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.json);

    let [events, records] = read_exactly_each(&[
        (&unrouted, 5, &Check::published()),
        (&state, 2, &Check::for_topic(&table, &state)),
    ])
    .try_into()
    .unwrap();
    let (latest, tombstone) = (&records[0], &records[1]);

    // The latest state: the envelope, then the notification's customer fields
    // as its events carry them (the committed first event of the seed sample),
    // but the one the state topic's rules exclude.
    let first_event: Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/seed_sample_first_event.json").unwrap(),
    )
    .unwrap();
    let mut expected = json!({
        "schema_version": 1,
        "entity": "customer",
        "customer_id": 862,
        "change_date_time": "2018-11-16T10:46:20.774102600Z",
        "event_ids": event_ids(&changed),
        "received_at": events[0].value["received_at"],
    });
    let customer = only(&first_event, |key| {
        key.starts_with("customer_") && !matches!(key, "customer_id" | "customer_email")
    });
    expected
        .as_object_mut()
        .unwrap()
        .extend(customer.as_object().unwrap().clone());
    assert!(!latest.tombstone);
    assert_eq!(latest.key.as_deref(), Some("862"));
    assert_eq!(keys(&latest.value), keys(&expected));
    assert_eq!(latest.value, expected);
    assert_eq!(latest.value["customer_first_name"], json!("Aardvark"));
    assert_eq!(latest.value["customer_related_provider_id"], json!(1044));
    assert_eq!(
        without_trace(&latest.headers),
        headers(&[
            ("entity", "customer"),
            ("schema_version", "1"),
            ("content-type", "application/json"),
        ])
    );

    // Then the deletion: the same key without a value, and no content type.
    assert!(tombstone.tombstone, "{tombstone:?}");
    assert_eq!(tombstone.value, Value::Null);
    assert_eq!(tombstone.key.as_deref(), Some("862"));
    assert_eq!(
        without_trace(&tombstone.headers),
        headers(&[("entity", "customer"), ("schema_version", "1")])
    );
    // The deletion's event went its way as any other.
    assert_eq!(events[4].value["change_type"], json!("CustomerDeleted"));
    assert_eq!(events[4].value["event_id"], json!(event_ids(&deleted)[0]));
    connector.stop().await;
}

#[tokio::test]
async fn forget_writes_a_tombstone_and_an_erasure_event_without_personal_data() {
    let [state, erasures, unrouted] = new_topics(["state", "erasures", "unrouted"]).await;
    // As the shipped routing file: the state topic's rules need the key.
    let routes = format!(
        "{}\n[[state]]\nentity = \"customer\"\ntopic = {state:?}\npseudonymise = [\"customer_email\"]\n\n[erasure]\ntopic = {erasures:?}\n",
        unmatched(&unrouted)
    );
    let table = routing_table(&routes, &keyed_settings(KEY));
    let (_dir, settings) = settings_file(&kafka(), &routes);
    let forget = |entity: &str, id: &str| {
        run_forget(&settings, entity, id, &[("CONNECTOR__PRIVACY__KEY", KEY)])
    };
    let _turn = shared().await;

    let before = chrono::Utc::now();
    let customer = succeeded(&forget("customer", "862"));
    let booking = succeeded(&forget("booking", "51234"));
    let after = chrono::Utc::now();

    // Two lines each: the tombstone (none for bookings, which have no state
    // topic), then the erasure event with its id.
    let erasure_id = |stdout: &str, line: &str| -> Uuid {
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{stdout}");
        let id = lines[1]
            .strip_prefix(line)
            .unwrap_or_else(|| panic!("{line:?} does not start {stdout}"));
        Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id:?}: {e}"))
    };
    assert_eq!(
        customer.lines().next(),
        Some(format!("tombstone  {state}  key 862").as_str())
    );
    let customer_erasure = erasure_id(
        &customer,
        &format!("erasure    {erasures}  key 862  erasure_id "),
    );
    assert_eq!(
        booking.lines().next(),
        Some("tombstone  (none: booking has no state topic)")
    );
    let booking_erasure = erasure_id(
        &booking,
        &format!("erasure    {erasures}  key 51234  erasure_id "),
    );
    assert_ne!(customer_erasure, booking_erasure);

    let [tombstones, records, _] = read_exactly_each(&[
        (&state, 1, &Check::for_topic(&table, &state)),
        (&erasures, 2, &Check::for_topic(&table, &erasures)),
        (&unrouted, 0, &Check::published()),
    ])
    .try_into()
    .unwrap();
    assert!(tombstones[0].tombstone, "{:?}", tombstones[0]);
    assert_eq!(tombstones[0].key.as_deref(), Some("862"));
    assert_eq!(
        without_trace(&tombstones[0].headers),
        headers(&[("entity", "customer"), ("schema_version", "1")])
    );
    // The tombstone and the customer's erasure event: one forget, one trace.
    assert_eq!(
        trace_id_of(&tombstones[0].headers),
        trace_id_of(&records[0].headers)
    );

    for (record, (entity, id_key, id, erasure_id, state_topic)) in records.iter().zip([
        (
            "customer",
            "customer_id",
            862,
            customer_erasure,
            json!(state),
        ),
        ("booking", "booking_id", 51234, booking_erasure, Value::Null),
    ]) {
        let requested_at = record.value["requested_at"].as_str().unwrap();
        let requested = chrono::DateTime::parse_from_rfc3339(requested_at).unwrap();
        assert!(requested >= before - chrono::Duration::milliseconds(1) && requested <= after);
        assert!(requested_at.ends_with('Z'), "{requested_at}");
        // Exactly the documented keys: which entity, which id, when. Nothing personal.
        let expected = json!({
            "erasure_id": erasure_id,
            "schema_version": 1,
            "entity": entity,
            id_key: id,
            "requested_at": requested_at,
            "state_topic": state_topic,
        });
        assert_eq!(keys(&record.value), keys(&expected));
        assert_eq!(record.value, expected);
        assert_eq!(record.key.as_deref(), Some(id.to_string().as_str()));
        let erasure_id = erasure_id.to_string();
        assert_eq!(
            without_trace(&record.headers),
            headers(&[
                ("entity", entity),
                ("schema_version", "1"),
                ("content-type", "application/json"),
                ("ce_specversion", "1.0"),
                ("ce_id", &erasure_id),
                ("ce_source", "urn:webhook-connector:reservation-platform"),
                ("ce_type", &format!("webhook-connector.{entity}.Erased")),
                ("ce_time", requested_at),
                ("ce_subject", &id.to_string()),
            ])
        );
    }
}

#[tokio::test]
async fn forget_without_an_erasure_topic_exits_64_and_writes_nothing() {
    let [state, unrouted] = new_topics(["state", "unrouted"]).await;
    let routes = format!(
        "{}\n[[state]]\nentity = \"customer\"\ntopic = {state:?}\n",
        unmatched(&unrouted)
    );
    let table = routing_table(&routes, &test_settings());
    let (_dir, settings) = settings_file(&kafka(), &routes);
    let _turn = shared().await;

    let output = run_forget(&settings, "customer", "862", &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("no [erasure] topic"), "{stderr}");
    assert!(output.stdout.is_empty(), "{:?}", output.stdout);
    // Not even the tombstone: an erasure consumers never learn of is not written.
    assert!(read_exactly_with(&state, 0, &Check::for_topic(&table, &state)).is_empty());
}

#[tokio::test]
async fn create_topics_makes_the_state_topic_compacted_and_only_it() {
    let [routed, state, erasures, unrouted] =
        unique_topics(["routed", "state", "erasures", "unrouted"]);
    let routes = format!(
        "{}{}\n[[state]]\nentity = \"customer\"\ntopic = {state:?}\n\n[erasure]\ntopic = {erasures:?}\n",
        unmatched(&unrouted),
        route("routed", &["Customer*"], &routed, ""),
    );
    let (_dir, settings) = settings_file(&kafka(), &routes);
    let create = || {
        run_binary(
            &["create-topics", "--config", settings.to_str().unwrap()],
            &[],
        )
    };
    let _turn = shared().await;

    // One line per topic the routing file names, sorted by name.
    let lines = |what: &str| -> Vec<String> {
        let mut lines: Vec<String> = [&routed, &state, &erasures, &unrouted]
            .into_iter()
            .map(|topic| {
                let compact = if *topic == state && what == "created" {
                    "  (cleanup.policy=compact, max.compaction.lag.ms=86400000)"
                } else {
                    ""
                };
                format!("{what:<8} {topic}{compact}")
            })
            .collect();
        lines.sort();
        lines
    };
    let created = succeeded(&create());
    assert_eq!(created.lines().collect::<Vec<_>>(), lines("created"));

    // As the admin API describes the topics back.
    let policy =
        |config: &BTreeMap<String, Option<String>>| config.get("cleanup.policy").cloned().flatten();
    let state_config = topic_config(&state).await;
    assert_eq!(
        policy(&state_config).as_deref(),
        Some("compact"),
        "{state_config:?}"
    );
    // Compacted within a day, however quiet the topic.
    assert_eq!(
        state_config
            .get("max.compaction.lag.ms")
            .cloned()
            .flatten()
            .as_deref(),
        Some("86400000"),
        "{state_config:?}"
    );
    for topic in [&routed, &erasures, &unrouted] {
        let config = topic_config(topic).await;
        assert_ne!(
            policy(&config).as_deref(),
            Some("compact"),
            "{topic}: {config:?}"
        );
    }

    // Again: every topic exists, and the state topic stays compacted.
    let again = succeeded(&create());
    assert_eq!(again.lines().collect::<Vec<_>>(), lines("exists"));
    assert_eq!(
        policy(&topic_config(&state).await).as_deref(),
        Some("compact")
    );
    let checked = run_binary(
        &["check", "--kafka", "--config", settings.to_str().unwrap()],
        &[("CONNECTOR__WEBHOOK__ALLOW_UNSIGNED", "true")],
    );
    assert!(
        succeeded(&checked).contains("kafka: all 4 topics exist, the state topics compacted"),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
}

#[tokio::test]
async fn a_state_topic_that_exists_without_compaction_fails_create_topics_and_check() {
    let [state, erasures, unrouted] = unique_topics(["plain-state", "erasures", "unrouted"]);
    let _turn = shared().await;
    // Created by someone else, with the default policy (delete).
    create_topics(&[&state]).await;
    let routes = format!(
        "{}\n[[state]]\nentity = \"customer\"\ntopic = {state:?}\n\n[erasure]\ntopic = {erasures:?}\n",
        unmatched(&unrouted),
    );
    let (_dir, settings) = settings_file(&kafka(), &routes);
    let config = settings.to_str().unwrap();
    let created = run_binary(&["create-topics", "--config", config], &[]);
    assert_eq!(created.status.code(), Some(69), "{created:?}");
    let stdout = String::from_utf8_lossy(&created.stdout);
    assert!(stdout.contains(&format!("exists   {state}\n")), "{stdout}");
    assert!(!stdout.contains("cleanup.policy=compact"), "{stdout}");
    let stderr = String::from_utf8_lossy(&created.stderr);
    assert!(
        stderr.contains(&format!(
            "state topics without cleanup.policy=compact: {state}"
        )),
        "{stderr}"
    );
    let unsigned = ("CONNECTOR__WEBHOOK__ALLOW_UNSIGNED", "true");
    let checked = run_binary(&["check", "--kafka", "--config", config], &[unsigned]);
    assert_eq!(checked.status.code(), Some(69), "{checked:?}");
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(
        stderr.contains("state topics without cleanup.policy=compact"),
        "{stderr}"
    );
}

/// The plain event ids of the seed sample's four changes (pinned in tests/pipeline.rs).
const SEED_PLAIN_IDS: [&str; 4] = [
    "0159f331-0d29-5e8c-a971-7a6c41ba47c1",
    "46350860-9d47-5c46-ba5e-eb038a832df9",
    "459a21f6-556b-56c8-8b63-fb1cd410975c",
    "0e1b4f5b-d08e-500d-97ea-260a47b9eb66",
];

/// A keyed event id as docs/events.md describes it: the UUIDv5, in the keyed-id
/// namespace, of HMAC-SHA256(key, "event_id\n" + the plain id's 16 bytes).
fn keyed_id(key: &str, plain: &str) -> String {
    let namespace = Uuid::parse_str("3d0b91c4-5e27-4f86-b1a9-6c2e8f47d503").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(b"event_id\n");
    mac.update(Uuid::parse_str(plain).unwrap().as_bytes());
    Uuid::new_v5(&namespace, &mac.finalize().into_bytes()).to_string()
}

#[tokio::test]
async fn keyed_event_ids_are_keyed_hashes_of_the_plain_ones_the_same_on_every_topic() {
    let [hidden, whole, state, unrouted] =
        new_topics(["hidden", "whole", "state", "unrouted"]).await;
    let routes = format!(
        "{}{}{}\n[[state]]\nentity = \"customer\"\ntopic = {state:?}\n",
        unmatched(&unrouted),
        route(
            "hidden",
            &["Customer*"],
            &hidden,
            r#"exclude = ["old_value", "new_value"]"#
        ),
        route("whole", &["Customer*"], &whole, ""),
    );
    let mut settings = keyed_settings(KEY);
    settings.privacy.keyed_event_ids = true;
    let (connector, table) = start_connector_and_table(settings, &routes).await;
    assert!(table.warnings().is_empty(), "{:?}", table.warnings());
    let _turn = shared().await;

    let answer = post(&connector.endpoint(), seed_sample(), &[]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let expected: Vec<String> = SEED_PLAIN_IDS.iter().map(|id| keyed_id(KEY, id)).collect();
    assert_eq!(event_ids(&answer), expected);
    // Retried, the same ids.
    let again = post(&connector.endpoint(), seed_sample(), &[]).await;
    assert_eq!(event_ids(&again), expected);

    let [hidden, whole, states] = read_exactly_each(&[
        (&hidden, 8, &Check::for_topic(&table, &hidden)),
        (&whole, 8, &Check::published()),
        (&state, 2, &Check::for_topic(&table, &state)),
    ])
    .try_into()
    .unwrap();
    for (i, (hidden, whole)) in hidden.iter().zip(&whole).enumerate() {
        let id = &expected[i % 4];
        assert_eq!(hidden.value["event_id"], json!(id), "event {i}");
        assert_eq!(whole.value["event_id"], json!(id), "event {i}");
        for record in [hidden, whole] {
            assert_eq!(record.headers["event_id"].as_deref(), Some(id.as_str()));
            assert_eq!(record.headers["ce_id"].as_deref(), Some(id.as_str()));
        }
        assert!(hidden.value.get("new_value").is_none());
    }
    for record in &states {
        assert_eq!(record.value["event_ids"], json!(expected));
    }
    // No plain id anywhere.
    for record in hidden.iter().chain(&whole).chain(&states) {
        let text = format!("{record:?}");
        assert!(SEED_PLAIN_IDS.iter().all(|id| !text.contains(id)), "{text}");
    }
    connector.stop().await;
}
