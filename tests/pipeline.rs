//! End to end against a real broker: HTTP in, records read back over the Kafka protocol.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use uuid::Uuid;

/// A notification for customer `id` with the given changes.
fn notification(id: i64, change_date_time: &str, changes: Value) -> String {
    json!({
        "ChangeDateTime": change_date_time,
        "Customer": {"Id": id, "FirstName": "Ada", "Email": "ada@example.com"},
        "Changes": changes,
    })
    .to_string()
}

#[tokio::test]
async fn seed_sample_reaches_the_routed_topics_with_key_headers_and_every_field() {
    let [contact, marketing, unrouted] = new_topics(["contact", "marketing", "unrouted"]).await;
    let routes = routes_toml(
        &unrouted,
        &[
            (
                "contact",
                &["CustomerEmailChanged", "CustomerSmsChanged"],
                &[&contact],
            ),
            ("marketing", &["Customer*Marketing*Changed"], &[&marketing]),
        ],
    );
    let connector = start_connector(test_settings(), &routes).await;

    let before = chrono::Utc::now();
    let answer = post(&connector.endpoint(), seed_sample(), &[]).await;
    let after = chrono::Utc::now();
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    assert_eq!(answer.json["events"], json!(4));
    let ids = event_ids(&answer);
    assert_eq!(ids.len(), 4);

    let contact_records = read_exactly(&contact, 1);
    let marketing_records = read_exactly(&marketing, 3);
    assert!(read_exactly(&unrouted, 0).is_empty());

    let sms = &contact_records[0];
    assert_eq!(sms.key.as_deref(), Some("862"));
    assert_eq!(sms.headers["event_id"].as_deref(), Some(ids[0].as_str()));
    assert_eq!(
        sms.headers["change_type"].as_deref(),
        Some("CustomerSmsChanged")
    );
    assert_eq!(sms.headers["schema_version"].as_deref(), Some("1"));
    assert_eq!(
        sms.headers["content-type"].as_deref(),
        Some("application/json")
    );
    // CloudEvents, Kafka binding, binary mode.
    let ce = |name: &str| sms.headers[name].as_deref();
    assert_eq!(ce("ce_specversion"), Some("1.0"));
    assert_eq!(ce("ce_id"), Some(ids[0].as_str()));
    assert_eq!(
        ce("ce_source"),
        Some("urn:webhook-connector:reservation-platform")
    );
    assert_eq!(
        ce("ce_type"),
        Some("webhook-connector.customer.CustomerSmsChanged")
    );
    assert_eq!(ce("ce_time"), Some("2018-11-16T10:46:20.774102600Z"));
    assert_eq!(ce("ce_time"), sms.value["change_date_time"].as_str());
    assert_eq!(ce("ce_subject"), Some("862"));
    assert_eq!(sms.headers["entity"].as_deref(), Some("customer"));
    // And the trace context, twice (tests/traces.rs checks it).
    assert_eq!(ce("ce_traceparent"), sms.headers["traceparent"].as_deref());
    assert_eq!(sms.headers.len(), 13);

    let received_at = sms.value["received_at"].as_str().unwrap().to_string();
    let received = chrono::DateTime::parse_from_rfc3339(&received_at).unwrap();
    assert!(received >= before - chrono::Duration::milliseconds(1) && received <= after);
    assert!(received_at.ends_with('Z'));
    let mut expected: Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/seed_sample_first_event.json").unwrap(),
    )
    .unwrap();
    expected["received_at"] = json!(received_at);
    assert_eq!(expected["event_id"], json!(ids[0]));
    assert_eq!(sms.value, expected);

    let expected = [
        (
            "CustomerGroupEmailMarketingOptinChanged",
            json!(true),
            json!(false),
        ),
        (
            "CustomerGroupEmailMarketingTextChanged",
            json!("Would you like to receive news and offers from Laharna by Email"),
            Value::Null,
        ),
        (
            "CustomerGroupEmailMarketingDateChanged",
            json!("2018-11-12T09:31:00.0000000"),
            Value::Null,
        ),
    ];
    for (i, (record, (change_type, old, new))) in marketing_records.iter().zip(expected).enumerate()
    {
        let index = i + 1;
        assert_eq!(record.key.as_deref(), Some("862"));
        assert_eq!(record.headers["change_type"].as_deref(), Some(change_type));
        assert_eq!(
            record.headers["event_id"].as_deref(),
            Some(ids[index].as_str())
        );
        assert_eq!(record.value["event_id"], json!(ids[index]));
        assert_eq!(record.value["change_type"], json!(change_type));
        assert_eq!(record.value["change_index"], json!(index));
        assert_eq!(record.value["change_count"], json!(4));
        assert_eq!(record.value["old_value"], old);
        assert_eq!(record.value["new_value"], new);
        // Customer fields are the same snapshot in every event of the notification.
        let customer = |v: &Value| {
            v.as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| k.starts_with("customer_"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(customer(&record.value), customer(&sms.value));
    }
    connector.stop().await;
}

#[tokio::test]
async fn fans_out_to_every_topic_of_every_matching_route() {
    let [contact, audit, unrouted] = new_topics(["contact", "audit", "unrouted"]).await;
    let routes = routes_toml(
        &unrouted,
        &[
            ("contact", &["CustomerEmailChanged"], &[&contact, &audit]),
            ("audit-all", &["Customer*"], &[&audit]),
        ],
    );
    let connector = start_connector(test_settings(), &routes).await;
    let body = notification(
        5,
        "2018-11-16T10:46:20Z",
        json!([
            {"ChangeType": "CustomerEmailChanged", "OldValue": "a@x", "NewValue": "b@x"},
            {"ChangeType": "CustomerSmsChanged", "OldValue": "1", "NewValue": "2"},
        ]),
    );
    let answer = post(&connector.endpoint(), body, &[]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let ids = event_ids(&answer);

    let contact_records = read_exactly(&contact, 1);
    assert_eq!(contact_records[0].value["event_id"], json!(ids[0]));
    // The email change matches both routes but reaches the audit topic once.
    let audit_records = read_exactly(&audit, 2);
    let audit_ids: Vec<&Value> = audit_records.iter().map(|r| &r.value["event_id"]).collect();
    assert_eq!(audit_ids, [&json!(ids[0]), &json!(ids[1])]);
    assert_eq!(audit_records[0].value, contact_records[0].value);
    read_exactly(&unrouted, 0);
    connector.stop().await;
}

#[tokio::test]
async fn unknown_change_types_and_empty_notifications_reach_the_unmatched_topic() {
    let [contact, unrouted] = new_topics(["contact", "unrouted"]).await;
    let routes = routes_toml(
        &unrouted,
        &[("contact", &["CustomerEmailChanged"], &[&contact])],
    );
    let connector = start_connector(test_settings(), &routes).await;

    let unknown = notification(
        7,
        "2018-11-16T10:46:20Z",
        json!([{"ChangeType": "CustomerLoyaltyTierChanged", "OldValue": "gold", "NewValue": "platinum"}]),
    );
    let answer = post(&connector.endpoint(), unknown, &[]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let empty = notification(8, "2018-11-16T10:47:00Z", json!([]));
    let answer_empty = post(&connector.endpoint(), empty, &[]).await;
    assert_eq!(answer_empty.status, 200, "{:?}", answer_empty.json);
    assert_eq!(answer_empty.json["events"], json!(1));

    let records = read_exactly(&unrouted, 2);
    assert_eq!(
        records[0].value["change_type"],
        json!("CustomerLoyaltyTierChanged")
    );
    assert_eq!(records[0].value["new_value"], json!("platinum"));
    assert_eq!(records[0].key.as_deref(), Some("7"));
    let empty_event = &records[1].value;
    assert_eq!(empty_event["event_id"], json!(event_ids(&answer_empty)[0]));
    assert_eq!(empty_event["change_type"], Value::Null);
    assert_eq!(empty_event["change_index"], json!(0));
    assert_eq!(empty_event["change_count"], json!(0));
    assert_eq!(empty_event["old_value"], Value::Null);
    assert_eq!(empty_event["customer_email"], json!("ada@example.com"));
    assert_eq!(records[1].headers["change_type"], None);
    assert_eq!(
        records[1].headers["ce_type"].as_deref(),
        Some("webhook-connector.customer")
    );
    assert_eq!(records[1].key.as_deref(), Some("8"));
    read_exactly(&contact, 0);
    connector.stop().await;
}

#[tokio::test]
async fn every_timestamp_shape_and_value_type_survives_the_trip() {
    let [all, unrouted] = new_topics(["all", "unrouted"]).await;
    let connector = start_connector(
        test_settings(),
        &routes_toml(&unrouted, &[("all", &["*"], &[&all])]),
    )
    .await;

    let shapes = [
        (
            "2018-11-16T10:46:20.7741026Z",
            "2018-11-16T10:46:20.774102600Z",
        ),
        (
            "2018-11-16T10:46:20.7115562+00:00",
            "2018-11-16T10:46:20.711556200Z",
        ),
        ("2018-11-12T10:15:00", "2018-11-12T10:15:00Z"),
        ("2018-11-12T09:31:00.0000000", "2018-11-12T09:31:00Z"),
    ];
    let values = [
        json!("text"),
        json!(true),
        json!(false),
        json!(42),
        json!(-1.5),
        Value::Null,
    ];
    for (i, (raw, normalized)) in shapes.iter().enumerate() {
        let body = json!({
            "ChangeDateTime": raw,
            "Customer": {"Id": 100 + i, "GroupSmsMarketingOptInDateTime": raw},
            "Changes": values
                .iter()
                .map(|v| json!({"ChangeType": "CustomerThingChanged", "OldValue": v, "NewValue": v}))
                .collect::<Vec<_>>(),
        });
        let answer = post(&connector.endpoint(), body.to_string(), &[]).await;
        assert_eq!(answer.status, 200, "{raw}: {:?}", answer.json);
        let records = read_topic(&all, (i + 1) * values.len());
        let mine = &records[i * values.len()..];
        for (record, value) in mine.iter().zip(&values) {
            assert_eq!(record.value["change_date_time"], json!(normalized), "{raw}");
            assert_eq!(
                record.value["customer_group_sms_marketing_opt_in_date_time"],
                json!(normalized),
                "{raw}"
            );
            // Values keep their JSON type exactly.
            assert_eq!(&record.value["old_value"], value);
            assert_eq!(&record.value["new_value"], value);
        }
    }
    read_exactly(&all, shapes.len() * values.len());
    connector.stop().await;
}

#[tokio::test]
async fn numbers_reach_kafka_digit_for_digit() {
    let (topic, connector) = connector_on_new_topic("numbers", |_| {}).await;
    let body = r#"{"ChangeDateTime":"2018-11-12T10:15:00",
        "Customer":{"Id":3,"Huge":123456789012345678901234567890,"Precise":0.1000000000000000055511151231257827,"Plain":12.50},
        "Changes":[{"ChangeType":"CustomerThingChanged","OldValue":18446744073709551617,"NewValue":-99999999999999999999.5}]}"#;
    let answer = post(&connector.endpoint(), body, &[]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let record = &read_exactly(&topic, 1)[0];
    let text = |field: &str| record.value[field].to_string();
    assert_eq!(text("old_value"), "18446744073709551617");
    assert_eq!(text("new_value"), "-99999999999999999999.5");
    assert_eq!(text("customer_huge"), "123456789012345678901234567890");
    assert_eq!(
        text("customer_precise"),
        "0.1000000000000000055511151231257827"
    );
    assert_eq!(text("customer_plain"), "12.50");
    connector.stop().await;
}

#[tokio::test]
async fn the_same_notification_twice_gives_the_same_event_ids() {
    let (all, connector) = connector_on_new_topic("all", |_| {}).await;
    let first = post(&connector.endpoint(), seed_sample(), &[]).await;
    let second = post(&connector.endpoint(), seed_sample(), &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 200);
    assert_eq!(event_ids(&first), event_ids(&second));
    let unique: BTreeSet<String> = event_ids(&first).into_iter().collect();
    assert_eq!(unique.len(), 4);
    for id in &unique {
        Uuid::parse_str(id).expect("event ids are UUIDs");
    }
    // Both deliveries are in Kafka (at-least-once); consumers dedupe by event_id.
    let records = read_exactly(&all, 8);
    let ids: Vec<&Value> = records.iter().map(|r| &r.value["event_id"]).collect();
    assert_eq!(ids[..4], ids[4..]);
    connector.stop().await;
}

#[tokio::test]
async fn malformed_bodies_get_400_and_produce_nothing() {
    // Their messages are checked in process, in tests/http_contract.rs.
    let (all, connector) = connector_on_new_topic("all", |_| {}).await;
    for (body, code, _) in malformed_bodies() {
        let answer = post(&connector.endpoint(), body.clone(), &[]).await;
        assert_eq!(answer.status, 400, "{body}: {:?}", answer.json);
        assert_eq!(answer.json["error"], json!(code), "{body}");
    }
    // Then one valid request: it must be the only thing in the topic.
    let sentinel = post(&connector.endpoint(), seed_sample(), &[]).await;
    assert_eq!(sentinel.status, 200);
    let records = read_exactly(&all, 4);
    assert!(records.iter().all(|r| r.value["customer_id"] == json!(862)));
    connector.stop().await;
}

#[tokio::test]
async fn refused_sizes_and_content_types_produce_nothing() {
    // Paths, methods and the probes without Kafka are checked in process, in
    // tests/http_contract.rs; here: over a real socket, what reaches Kafka.
    let (all, connector) = connector_on_new_topic("all", |s| s.server.max_body_bytes = 4096).await;

    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(5000));
    let too_large = post(&connector.endpoint(), big.clone(), &[]).await;
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.json["error"], json!("payload_too_large"));
    // Without a Content-Length (chunked), the limit still holds.
    let stream = futures::stream::iter(
        big.into_bytes()
            .chunks(512)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let chunked = post(
        &connector.endpoint(),
        reqwest::Body::wrap_stream(stream),
        &[],
    )
    .await;
    assert_eq!(chunked.status, 413);

    let endpoint = connector.endpoint();
    let text = post_with_content_type(&endpoint, seed_sample(), Some("text/plain"), &[]).await;
    assert_eq!(text.status, 415);
    assert_eq!(text.json["error"], json!("unsupported_media_type"));

    let json_with_charset = Some("Application/JSON; charset=utf-8");
    let with_charset =
        post_with_content_type(&endpoint, seed_sample(), json_with_charset, &[]).await;
    assert_eq!(with_charset.status, 200, "{:?}", with_charset.json);
    let without = post_with_content_type(&endpoint, seed_sample(), None, &[]).await;
    assert_eq!(without.status, 200, "{:?}", without.json);

    let ready = get_json(&format!("{}/readyz", connector.url)).await;
    assert_eq!(ready.status, 200, "{:?}", ready.json);

    read_exactly(&all, 8);
    connector.stop().await;
}

#[tokio::test]
async fn a_route_to_a_missing_topic_answers_503_never_200() {
    let present = unique_topic("present");
    let missing = unique_topic("missing");
    create_topics(&[&present]).await;
    let mut settings = test_settings();
    settings.kafka.delivery_timeout_ms = 3000;
    let routes = routes_toml(
        &present,
        &[("to-missing", &["CustomerSmsChanged"], &[&missing])],
    );
    let connector = start_connector(settings, &routes).await;

    let started = std::time::Instant::now();
    let answer = post(&connector.endpoint(), seed_sample(), &[]).await;
    assert_eq!(answer.status, 503, "{:?}", answer.json);
    assert_eq!(answer.json["error"], "kafka_refused");
    assert!(started.elapsed() < Duration::from_millis(3000));
    assert!(answer.headers.contains_key("retry-after"));
    let message = answer.json["message"].as_str().unwrap();
    assert!(message.contains(&missing), "{message}");

    let ready = get_json(&format!("{}/readyz", connector.url)).await;
    assert_eq!(ready.status, 503);
    assert!(
        ready.json["reasons"].to_string().contains(&missing),
        "{:?}",
        ready.json
    );
    connector.stop().await;
}

#[tokio::test]
async fn signed_requests_are_verified_when_secrets_are_set() {
    let (all, connector) = connector_on_new_topic("all", |s| {
        s.webhook.secrets = vec!["old-secret".into(), "new-secret".into()]
    })
    .await;
    let body = seed_sample();
    let sign = webhook_connector::ingress::signature::sign;

    let unsigned = post(&connector.endpoint(), body.clone(), &[]).await;
    assert_eq!(unsigned.status, 401);
    assert_eq!(unsigned.json["error"], json!("signature_missing"));
    for secret in ["old-secret", "new-secret"] {
        let header = sign(secret, &body);
        let signed = post(
            &connector.endpoint(),
            body.clone(),
            &[("X-ResDiary-Signature", &header)],
        )
        .await;
        assert_eq!(signed.status, 200, "{secret}: {:?}", signed.json);
    }
    let mut changed = body.clone();
    let at = changed.iter().position(|&b| b == b'3').unwrap();
    changed[at] = b'4';
    let header = sign("new-secret", &body);
    let tampered = post(
        &connector.endpoint(),
        changed,
        &[("X-ResDiary-Signature", &header)],
    )
    .await;
    assert_eq!(tampered.status, 401);
    assert_eq!(tampered.json["error"], json!("signature_invalid"));
    let wrong_key = sign("other", &body);
    let wrong = post(
        &connector.endpoint(),
        body.clone(),
        &[("X-ResDiary-Signature", &wrong_key)],
    )
    .await;
    assert_eq!(wrong.status, 401);

    read_exactly(&all, 8);
    connector.stop().await;
}
