//! Bookings end to end against a real broker: `POST /webhooks/booking` in, records
//! read back over the Kafka protocol, beside customers on the same connector.
//! (The endpoint's refusals are in tests/bad_input.rs and tests/http_contract.rs.)

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{json, Value};
use webhook_connector::ingress::signature::{sign, SIGNATURE_HEADER};

/// The entity, change type and event id of each record, in topic order.
fn summary(records: &[Record]) -> Vec<(String, String, String)> {
    records
        .iter()
        .map(|record| {
            let field = |name: &str| record.value[name].as_str().unwrap_or_default().to_string();
            // The header: customer events have no `entity` field.
            let entity = record.headers["entity"].clone().unwrap_or_default();
            (entity, field("change_type"), field("event_id"))
        })
        .collect()
}

/// A [`summary`] row.
fn row(entity: &str, change_type: &str, event_id: &str) -> (String, String, String) {
    (entity.into(), change_type.into(), event_id.into())
}

#[tokio::test]
async fn the_signed_booking_sample_reaches_kafka_with_its_key_every_header_and_every_field() {
    const SECRET: &str = "booking-secret";
    let (bookings, connector) =
        connector_on_new_topic("bookings", |s| s.webhook.secrets = vec![SECRET.into()]).await;

    let body = booking_sample();
    let signature = sign(SECRET, &body);
    let before = chrono::Utc::now();
    let answer = post(
        &connector.webhook("booking"),
        body,
        &[(SIGNATURE_HEADER, &signature)],
    )
    .await;
    let after = chrono::Utc::now();
    // The ids are pinned: UUIDv5 over "booking\n51234\n<ChangeDateTime>\n<index>\n
    // <ChangeType>\n<OldValue>\n<NewValue>", worked out apart from the connector.
    let ids = [
        "39a51330-ad92-5521-a5a3-a7c91ff39291",
        "1da4e57d-6b48-5f3b-8c2b-b9bbf55ace60",
    ];
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    assert_eq!(answer.json, json!({"events": 2, "event_ids": ids}));

    let records = read_exactly(&bookings, 2);
    let received_at = records[0].value["received_at"]
        .as_str()
        .unwrap()
        .to_string();
    let received = chrono::DateTime::parse_from_rfc3339(&received_at).unwrap();
    assert!(received >= before - chrono::Duration::milliseconds(1) && received <= after);
    assert!(received_at.ends_with('Z'), "{received_at}");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/booking_sample_events.json").unwrap(),
    )
    .unwrap();
    let expected = expected.as_array().unwrap();
    assert_eq!(records.len(), expected.len());
    let change_types = ["BookingStatusChanged", "BookingTablesChanged"];
    let pattern = regex::Regex::new("^00-[0-9a-f]{32}-[0-9a-f]{16}-01$").unwrap();
    for (i, (record, expected)) in records.iter().zip(expected).enumerate() {
        let mut expected = expected.clone();
        expected["received_at"] = json!(received_at);
        assert_eq!(record.value, expected, "event {i}");
        // Key order too: as consumers read the raw value.
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&record.value), keys(&expected), "event {i}");

        assert_eq!(record.key.as_deref(), Some("51234"), "event {i}");
        // A request without trace context: a new trace, sampled.
        let traceparent = record.headers["traceparent"].clone().unwrap();
        assert!(pattern.is_match(&traceparent), "{traceparent}");
        let headers: BTreeMap<String, Option<String>> = [
            ("traceparent", traceparent.as_str()),
            ("ce_traceparent", &traceparent),
            ("event_id", ids[i]),
            ("entity", "booking"),
            ("change_type", change_types[i]),
            ("schema_version", "1"),
            ("content-type", "application/json"),
            ("ce_specversion", "1.0"),
            ("ce_id", ids[i]),
            ("ce_source", "urn:webhook-connector:reservation-platform"),
            (
                "ce_type",
                &format!("webhook-connector.booking.{}", change_types[i]),
            ),
            ("ce_time", "2024-05-03T17:42:10.123456700Z"),
            ("ce_subject", "51234"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), Some(value.to_string())))
        .collect();
        assert_eq!(record.headers, headers, "event {i}");
    }

    // Counted under the booking endpoint.
    let text = metrics_text(&connector.url).await;
    for series in [
        "webhook_connector_http_requests_total{endpoint=\"booking\",status=\"200\"}",
        "webhook_connector_notifications_total{endpoint=\"booking\",result=\"accepted\"}",
    ] {
        assert_eq!(metric(&text, series), Some(1.0), "{series} in:\n{text}");
    }
    assert_eq!(
        metric(
            &text,
            "webhook_connector_notifications_total{endpoint=\"customer\",result=\"accepted\"}"
        ),
        None,
        "{text}"
    );
    connector.stop().await;
}

#[tokio::test]
async fn routes_naming_an_entity_take_only_its_events_and_routes_naming_none_take_both() {
    let [bookings, customers, any, unrouted] =
        new_topics(["bookings", "customers", "any", "unrouted"]).await;
    // The two entity routes' patterns overlap: each takes every *Changed event,
    // and the booking route every *Created one too.
    let routes = format!(
        r#"
[unmatched]
topic = "{unrouted}"

[[routes]]
name = "bookings"
entities = ["booking"]
change_types = ["*Changed", "*Created"]
topics = ["{bookings}"]

[[routes]]
name = "customers"
entities = ["customer"]
change_types = ["*Changed"]
topics = ["{customers}"]

[[routes]]
name = "any"
change_types = ["*Sms*", "*Status*"]
topics = ["{any}"]
"#
    );
    let connector = start_connector(test_settings(), &routes).await;

    let customer = post(&connector.endpoint(), seed_sample(), &[]).await;
    assert_eq!(customer.status, 200, "{:?}", customer.json);
    let booking = post(&connector.webhook("booking"), booking_sample(), &[]).await;
    assert_eq!(booking.status, 200, "{:?}", booking.json);
    // Matched only by the booking route's *Created: a customer event goes unmatched.
    let created = json!({
        "ChangeDateTime": "2024-05-03T17:42:10Z",
        "Customer": {"Id": 7},
        "Changes": [{"ChangeType": "CustomerCreated", "OldValue": null, "NewValue": 7}],
    });
    let created = post(&connector.endpoint(), created.to_string(), &[]).await;
    assert_eq!(created.status, 200, "{:?}", created.json);
    let (c, b, u) = (
        event_ids(&customer),
        event_ids(&booking),
        event_ids(&created),
    );

    assert_eq!(
        summary(&read_exactly(&customers, 4)),
        [
            row("customer", "CustomerSmsChanged", &c[0]),
            row("customer", "CustomerGroupEmailMarketingOptinChanged", &c[1]),
            row("customer", "CustomerGroupEmailMarketingTextChanged", &c[2]),
            row("customer", "CustomerGroupEmailMarketingDateChanged", &c[3]),
        ]
    );
    assert_eq!(
        summary(&read_exactly(&bookings, 2)),
        [
            row("booking", "BookingStatusChanged", &b[0]),
            row("booking", "BookingTablesChanged", &b[1]),
        ]
    );
    assert_eq!(
        summary(&read_exactly(&any, 2)),
        [
            row("customer", "CustomerSmsChanged", &c[0]),
            row("booking", "BookingStatusChanged", &b[0]),
        ]
    );
    let unmatched = read_exactly(&unrouted, 1);
    assert_eq!(
        summary(&unmatched),
        [row("customer", "CustomerCreated", &u[0])]
    );
    assert_eq!(unmatched[0].headers["entity"].as_deref(), Some("customer"));
    connector.stop().await;
}

#[tokio::test]
async fn a_booking_and_a_customer_with_the_same_id_and_change_get_different_event_ids() {
    let (all, connector) = connector_on_new_topic("all", |_| {}).await;
    // The seed sample's first change, under either key.
    let body = |key: &str| {
        json!({
            "ChangeDateTime": "2018-11-16T10:46:20.7741026Z",
            key: {"Id": 862},
            "Changes": [{"ChangeType": "CustomerSmsChanged", "OldValue": "2", "NewValue": "3"}],
        })
        .to_string()
    };
    let customer = post(&connector.endpoint(), body("Customer"), &[]).await;
    let booking = post(&connector.webhook("booking"), body("Booking"), &[]).await;
    let again = post(&connector.webhook("booking"), body("Booking"), &[]).await;
    for answer in [&customer, &booking, &again] {
        assert_eq!(answer.status, 200, "{:?}", answer.json);
    }
    let (customer_id, booking_id) = (&event_ids(&customer)[0], &event_ids(&booking)[0]);
    // The customer's id is the seed sample's, as earlier versions gave it.
    assert_eq!(customer_id, "0159f331-0d29-5e8c-a971-7a6c41ba47c1");
    assert_ne!(customer_id, booking_id);
    // The booking's is as stable as the customer's.
    assert_eq!(&event_ids(&again)[0], booking_id);

    let records = read_exactly(&all, 3);
    assert_eq!(
        summary(&records),
        [
            row("customer", "CustomerSmsChanged", customer_id),
            row("booking", "CustomerSmsChanged", booking_id),
            row("booking", "CustomerSmsChanged", booking_id),
        ]
    );
    for record in &records {
        assert_eq!(record.key.as_deref(), Some("862"));
    }
    assert_eq!(records[0].value["customer_id"], json!(862));
    assert_eq!(records[1].value["booking_id"], json!(862));
    connector.stop().await;
}
