//! Keeping what the platform sent, and sending it again (issue 13:
//! docs/replay.md), against a real broker: the dead-letter topic keeps every
//! notification refused for its content, byte for byte with why, before the
//! refusal is answered; the raw topic keeps every accepted notification in the
//! delivery of its events; `replay`, run as an operator would run it, sends
//! either through the current acceptance step and routing again. Raw and
//! dead-letter records are read back as written ([`read_raw_exactly`], which
//! leaves the topic fit to replay); events are checked against the published
//! schema as everywhere.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::{json, Value};
use webhook_connector::ingress::signature::{sign, SIGNATURE_HEADER};

/// Header name -> value, as [`RawRecord::headers`] and [`Record::headers`] hold them.
type Headers = BTreeMap<String, Option<String>>;

/// The headers of a raw record: the request's endpoint, `X-Request-Id`,
/// reception time and `Content-Type` (null when it had none), and, when it was
/// refused, the status, `error` code and message of the `refusal` it was
/// answered with.
fn raw_headers(
    entity: &str,
    request_id: &str,
    received_at: &str,
    content_type: Option<&str>,
    refusal: Option<&Answer>,
) -> Headers {
    let text = |value: &str| Some(value.to_string());
    let mut headers = BTreeMap::from([
        ("entity".to_string(), text(entity)),
        ("request_id".to_string(), text(request_id)),
        ("received_at".to_string(), text(received_at)),
        (
            "request_content_type".to_string(),
            content_type.and_then(text),
        ),
    ]);
    if let Some(answer) = refusal {
        let field = |name: &str| answer.json[name].as_str().and_then(text);
        headers.insert("error_status".into(), text(&answer.status.to_string()));
        headers.insert("error_code".into(), field("error"));
        headers.insert("error_message".into(), field("message"));
    }
    headers
}

/// The `received_at` header of `record`, after checking it is RFC 3339 UTC
/// (`Z`) and between `before` and `after`.
fn received_at(record: &RawRecord, before: DateTime<Utc>, after: DateTime<Utc>) -> String {
    let text = (record.headers.get("received_at").cloned().flatten())
        .unwrap_or_else(|| panic!("no received_at: {record:?}"));
    let at = DateTime::parse_from_rfc3339(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert!(text.ends_with('Z'), "{text}");
    assert!(
        at >= before && at <= after,
        "{text} is not within {before} .. {after}"
    );
    text
}

/// The request id an answer was given: the `X-Request-Id` sent, or the one the
/// connector made and answered with.
fn answered_request_id(answer: &Answer) -> String {
    let id = answer.headers.get("x-request-id").expect("an X-Request-Id");
    id.to_str().unwrap().to_string()
}

/// A settings file for `replay` with `routes_toml` and `more_toml`.
fn replay_settings(routes_toml: &str, more_toml: &str) -> (tempfile::TempDir, String) {
    let (dir, path) = settings_file_with(&kafka(), routes_toml, more_toml);
    (dir, path.to_str().unwrap().to_string())
}

/// A routing file taking customer events to `customers`, the others to
/// `unrouted`.
fn customer_routes(unrouted: &str, customers: &str) -> String {
    routes_toml(unrouted, &[("customers", &["Customer*"], &[customers])])
}

/// Settings lines for `replay`: 100 changes allowed (more than
/// [`dead_lettering`] allows), and the `[archive]` table of `archive` lines.
fn allowing_more_changes(archive: &str) -> String {
    format!("[webhook]\nmax_changes = 100\n\n[archive]\n{archive}")
}

/// Runs `webhook-connector replay --config <settings> <args>`.
fn replay(settings: &str, args: &[&str]) -> Output {
    let mut all = vec!["replay", "--config", settings];
    all.extend_from_slice(args);
    run_binary(&all, &[])
}

/// The standard output of a run, after checking it exited with `code`.
fn exited(output: &Output, code: i32) -> String {
    let stdout = String::from_utf8(output.stdout.clone()).expect("UTF-8 output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// What a replay's summary says: the rest of each line by its label (`read`,
/// `replayed`, `skipped`, `refused`), and the records per topic listed under
/// `written:` (in a dry run, `would write:`).
struct Summary {
    lines: BTreeMap<String, String>,
    records: BTreeMap<String, usize>,
}

impl Summary {
    fn of(stdout: &str) -> Summary {
        let (mut lines, mut records) = (BTreeMap::new(), BTreeMap::new());
        let mut listing = false;
        for line in stdout.lines().filter(|l| !l.starts_with("would write  ")) {
            if line == "written:" || line == "would write:" {
                listing = true;
            } else if listing {
                let (topic, count) = (line.trim().split_once("  "))
                    .unwrap_or_else(|| panic!("not `topic  count`: {line:?}\n{stdout}"));
                records.insert(topic.to_string(), count.trim().parse().unwrap());
            } else if let Some((label, rest)) = line.split_once(' ') {
                lines.insert(label.to_string(), rest.trim().to_string());
            }
        }
        Summary { lines, records }
    }

    /// The number a line starts with.
    fn count(&self, label: &str) -> usize {
        let line = (self.lines.get(label)).unwrap_or_else(|| panic!("no {label:?} line"));
        let number = line.split(' ').next().unwrap();
        number
            .parse()
            .unwrap_or_else(|e| panic!("{label}: {line:?}: {e}"))
    }

    /// Panics unless it says `read`, `replayed`, `skipped`, `refused` (the
    /// whole line: the number and the reasons) and the records per topic.
    fn assert(&self, counts: [usize; 3], refused: &str, records: &[(&str, usize)]) {
        let said = ["read", "replayed", "skipped"].map(|label| self.count(label));
        assert_eq!(said, counts, "read, replayed, skipped: {:?}", self.lines);
        assert_eq!(self.lines["refused"], refused, "{:?}", self.lines);
        let records: BTreeMap<String, usize> =
            (records.iter()).map(|(t, n)| (t.to_string(), *n)).collect();
        assert_eq!(self.records, records);
    }
}

/// What a consumer of any topic gets of a record: its key, value and headers.
type Content = (Option<String>, Value, Headers);

/// Records by their event id: a replay delivers notifications concurrently, so
/// different entities' records may come in another order than they did live.
fn by_event_id(records: &[Record]) -> BTreeMap<String, Content> {
    let by_id: BTreeMap<String, Content> = (records.iter())
        .map(|r| {
            let id = r.value["event_id"].as_str().expect("an event id");
            (
                id.to_string(),
                (r.key.clone(), r.value.clone(), trace_ids_only(&r.headers)),
            )
        })
        .collect();
    assert_eq!(by_id.len(), records.len(), "ids repeat: {records:#?}");
    by_id
}

/// `headers` with the span ids of their trace context left out: a replayed
/// record is in the trace of the notification it comes from, written by a span
/// of its own.
fn trace_ids_only(headers: &BTreeMap<String, Option<String>>) -> BTreeMap<String, Option<String>> {
    let mut headers = headers.clone();
    for name in ["traceparent", "ce_traceparent"] {
        if let Some(Some(value)) = headers.get_mut(name) {
            let parts: Vec<&str> = value.split('-').collect();
            assert_eq!(parts.len(), 4, "{name}: {value}");
            *value = format!("{}-{}-(span)-{}", parts[0], parts[1], parts[3]);
        }
    }
    headers
}

/// The ids of several answers, as a set.
fn ids_of(answers: &[&Answer]) -> BTreeSet<String> {
    answers.iter().flat_map(|a| event_ids(a)).collect()
}

/// Posts the seed sample (customer 862, 4 events) and the booking sample
/// (booking 51234, 2 events) to `connector`; both must be accepted.
/// The test settings with content refusals kept on `dead` and at most two changes
/// accepted, so the seed sample (four changes) is refused and dead-lettered.
fn dead_lettering(dead: &str) -> webhook_connector::config::Settings {
    let mut settings = test_settings();
    settings.archive.dead_letter_topic = dead.to_string();
    settings.webhook.max_changes = 2;
    settings
}

async fn post_both_samples(connector: &Connector) -> (Answer, Answer) {
    let customer = post(&connector.endpoint(), seed_sample(), &[]).await;
    assert_eq!(customer.status, 200, "{:?}", customer.json);
    let booking = post(&connector.webhook("booking"), booking_sample(), &[]).await;
    assert_eq!(booking.status, 200, "{:?}", booking.json);
    (customer, booking)
}

#[tokio::test]
async fn every_refusal_for_the_content_is_kept_byte_for_byte_with_why_and_then_answered() {
    let [dead, routed] = new_topics(["dead", "routed"]).await;
    let mut settings = dead_lettering(&dead);
    // A quarter for bodies arriving, 12,000 bytes for a request being processed.
    settings.server.max_body_bytes = 4_000;
    settings.server.max_in_flight_bytes = 16_000;
    let connector = start_connector(settings, &routes_toml(&routed, &[])).await;
    // Two changes of a 3.5 KB customer: a body under server.max_body_bytes whose
    // records, with the body, need more than the 12,000 bytes.
    let too_large_to_deliver = padded_body(2, 3_500).into_bytes();
    assert!(too_large_to_deliver.len() < 4_000);
    // Not UTF-8 either: kept as it came all the same.
    let not_json = b"{\"Customer\": \xff\xfe}".to_vec();
    // Its fields' names by path take over 20 kB, more than the 16,000 bytes (four
    // times server.max_body_bytes) the names of one body may take.
    assert!(deep_named_booking(5, 100, 40).len() < 4_000);
    let bad_booking = json!({
        "ChangeDateTime": "2024-05-03T17:42:10Z",
        "Booking": {"Id": "51234"},
        "Changes": [],
    });
    // (endpoint, body, Content-Type, X-Request-Id (none: the connector makes one),
    // status, error)
    type Refusal = (
        &'static str,
        Vec<u8>,
        Option<&'static str>,
        Option<&'static str>,
        u16,
        &'static str,
    );
    let refusals: Vec<Refusal> = vec![
        (
            "customer",
            not_json,
            Some("application/json"),
            Some("dl-json"),
            400,
            "invalid_json",
        ),
        (
            "booking",
            bad_booking.to_string().into_bytes(),
            None,
            Some("dl-payload"),
            400,
            "invalid_payload",
        ),
        (
            "customer",
            padded_body(3, 0).into_bytes(),
            Some("application/json; charset=utf-8"),
            None,
            413,
            "too_many_changes",
        ),
        (
            "customer",
            too_large_to_deliver,
            Some("application/json"),
            Some("dl-too-large"),
            413,
            "payload_too_large",
        ),
        (
            "booking",
            deep_named_booking(5, 100, 40).into_bytes(),
            Some("application/json"),
            Some("dl-names"),
            413,
            "payload_too_large",
        ),
        // Four changes too, but the content type is checked first.
        (
            "customer",
            seed_sample(),
            Some("text/plain"),
            Some("dl-media-type"),
            415,
            "unsupported_media_type",
        ),
    ];
    let _turn = shared().await;

    let before = Utc::now();
    let mut answers = Vec::new();
    for (entity, body, content_type, request_id, status, error) in &refusals {
        let headers: Vec<(&str, &str)> = (request_id.iter())
            .map(|id| ("x-request-id", *id))
            .collect();
        let url = connector.webhook(entity);
        let answer = post_with_content_type(&url, body.clone(), *content_type, &headers).await;
        assert_eq!(answer.status, *status, "{error}: {:?}", answer.json);
        assert_eq!(answer.json["error"], json!(error), "{:?}", answer.json);
        assert!(!answer.headers.contains_key("retry-after"), "{error}");
        answers.push(answer);
    }
    let after = Utc::now();
    // Over server.max_body_bytes: not read whole, so counted but never kept.
    let over_limit = post(&connector.endpoint(), padded_body(1, 5_000), &[]).await;
    assert_eq!(over_limit.status, 413, "{:?}", over_limit.json);
    assert_eq!(over_limit.json["error"], "payload_too_large");

    let kept = read_raw_exactly(&dead, refusals.len());
    for (record, (refusal, answer)) in kept.iter().zip(refusals.iter().zip(&answers)) {
        let (entity, body, content_type, sent_id, _, error) = refusal;
        let request_id = answered_request_id(answer);
        match sent_id {
            Some(sent) => assert_eq!(request_id, *sent),
            None => assert!(uuid::Uuid::parse_str(&request_id).is_ok(), "{request_id}"),
        }
        assert_eq!(record.value.as_deref(), Some(body.as_slice()), "{error}");
        assert_eq!(record.key.as_deref(), Some(request_id.as_str()), "{error}");
        let received_at = received_at(record, before, after);
        let expected = raw_headers(
            entity,
            &request_id,
            &received_at,
            *content_type,
            Some(answer),
        );
        assert_eq!(without_trace(&record.headers), expected, "{error}");
    }
    assert!(read_exactly(&routed, 0).is_empty());

    let text = metrics_text(&connector.url).await;
    let dead_letters = |endpoint: &str, reason: &str, stored: &str| {
        let labels = format!("endpoint=\"{endpoint}\",reason=\"{reason}\",stored=\"{stored}\"");
        metric(
            &text,
            &format!("webhook_connector_dead_letters_total{{{labels}}}"),
        )
    };
    for (entity, _, _, _, _, error) in &refusals {
        assert_eq!(
            dead_letters(entity, error, "true"),
            Some(1.0),
            "{error}\n{text}"
        );
    }
    assert_eq!(
        dead_letters("customer", "payload_too_large", "false"),
        Some(1.0),
        "{text}"
    );
    connector.stop().await;
}

#[tokio::test]
async fn a_refusal_is_answered_only_once_kafka_acknowledged_its_dead_letter() {
    let dead = unique_topic("dead");
    let (broker, _routed, connector) =
        connector_on_own_broker("routed", |s| s.archive.dead_letter_topic = dead.clone()).await;
    create_topics_on(&broker.bootstrap(), &[&dead]).await;
    let _turn = shared().await;
    warm_up(&connector.endpoint()).await;

    broker.pause();
    let endpoint = connector.endpoint();
    let held =
        tokio::spawn(
            async move { post(&endpoint, "not json", &[("x-request-id", "dl-held")]).await },
        );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !held.is_finished(),
        "refused while Kafka could not have its dead letter: {:?}",
        held.await.unwrap()
    );
    broker.resume();
    let answer = held.await.unwrap();
    assert_eq!(answer.status, 400, "{:?}", answer.json);
    assert_eq!(answer.json["error"], "invalid_json");

    let kept = read_raw_exactly_on(&broker.bootstrap(), &dead, 1);
    assert_eq!(kept[0].value.as_deref(), Some(&b"not json"[..]));
    assert_eq!(kept[0].key.as_deref(), Some("dl-held"));
    connector.stop().await;
}

#[tokio::test]
async fn a_refusal_that_cannot_be_kept_is_answered_503_with_retry_after_and_writes_nothing() {
    let [dead, routed] = unique_topics(["dead-missing", "routed"]);
    create_topics(&[&routed]).await;
    let mut settings = dead_lettering(&dead);
    settings.kafka.delivery_timeout_ms = 3000;
    let connector = start_connector(settings, &routes_toml(&routed, &[])).await;
    let _turn = shared().await;

    for (body, refusal) in [
        (b"not json".to_vec(), "invalid_json"),
        (seed_sample(), "too_many_changes"),
    ] {
        let answer = post(&connector.endpoint(), body, &[]).await;
        assert_eq!(answer.status, 503, "{refusal}: {:?}", answer.json);
        assert_eq!(answer.json["error"], "dead_letter_unavailable");
        assert_eq!(answer.headers["retry-after"], "5");
        // Why it is refused, and why it could not be kept.
        let message = answer.json["message"].as_str().unwrap();
        assert!(message.contains(refusal), "{message}");
        assert!(message.contains(&dead), "{message}");
    }
    assert!(read_exactly(&routed, 0).is_empty());
    let text = metrics_text(&connector.url).await;
    assert!(
        !text.contains("webhook_connector_dead_letters_total{"),
        "{text}"
    );

    // Once the topic exists, the platform's next try is kept, then refused.
    create_topics(&[&dead]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let answer = loop {
        let answer = post(
            &connector.endpoint(),
            "not json",
            &[("x-request-id", "dl-retry")],
        )
        .await;
        if answer.status != 503 || std::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(answer.status, 400, "{:?}", answer.json);
    // Only that try: none of those answered 503 was written.
    let kept = read_raw_exactly(&dead, 1);
    assert_eq!(kept[0].key.as_deref(), Some("dl-retry"));
    assert_eq!(kept[0].value.as_deref(), Some(&b"not json"[..]));
    connector.stop().await;
}

#[tokio::test]
async fn a_notification_that_fits_only_without_its_raw_copy_is_refused_413_and_kept() {
    let [raw, dead, routed] = new_topics(["raw", "dead", "routed"]).await;
    let mut settings = test_settings();
    settings.archive.raw_topic = raw.clone();
    settings.archive.dead_letter_topic = dead.clone();
    // 12,000 bytes for a request being processed.
    settings.server.max_body_bytes = 4_000;
    settings.server.max_in_flight_bytes = 16_000;
    let connector = start_connector(settings, &routes_toml(&routed, &[])).await;
    // Two changes of a 2.5 KB customer: the body and its records fit in the
    // 12,000 bytes, not with the raw topic's copy of the body besides.
    let body = padded_body(2, 2_500);
    let _turn = shared().await;

    // Never an `overloaded` 503 on an idle connector, which the platform would
    // retry for ever: refused, every time.
    for _ in 0..2 {
        let answer = post(&connector.endpoint(), body.clone(), &[]).await;
        assert_eq!(answer.status, 413, "{:?}", answer.json);
        assert_eq!(answer.json["error"], "payload_too_large");
        wait_for_metric(&connector.url, HELD_BYTES, 0.0).await;
    }
    let kept = read_raw_exactly(&dead, 2);
    assert_eq!(kept[0].value.as_deref(), Some(body.as_bytes()));
    assert!(read_raw_exactly(&raw, 0).is_empty());
    assert!(read_exactly(&routed, 0).is_empty());
    connector.stop().await;
}

#[tokio::test]
async fn a_notification_with_a_record_larger_than_message_max_bytes_is_refused_413_and_kept() {
    let [dead, routed] = new_topics(["dead", "routed"]).await;
    let mut settings = test_settings();
    settings.archive.dead_letter_topic = dead.clone();
    settings.server.max_body_bytes = 65_536;
    (settings.kafka.properties).insert("message.max.bytes".into(), "100000".into());
    let connector = start_connector(settings, &routes_toml(&routed, &[])).await;
    // 3 kB nested twelve deep under 100-character names: one event of 250 kB.
    let body = std::fs::read("tests/fixtures/bad/booking-deep-record-too-large.json").unwrap();
    // Refused every time, never the 503 the platform would retry for ever.
    for _ in 0..2 {
        let answer = post(&connector.webhook("booking"), body.clone(), &[]).await;
        assert_eq!(answer.status, 413, "{:?}", answer.json);
        assert_eq!(answer.json["error"], "record_too_large");
        let message = answer.json["message"].as_str().unwrap();
        let expected = format!("Kafka refused the BookingDeepChanged event for topic {routed}");
        assert!(message.starts_with(&expected), "{message}");
        assert!(
            message.contains("more than the producer's message.max.bytes (100000)"),
            "{message}"
        );
    }
    let kept = read_raw_exactly(&dead, 2);
    for record in &kept {
        assert_eq!(record.value.as_deref(), Some(&body[..]));
        assert_eq!(
            record.headers["error_code"].as_deref(),
            Some("record_too_large")
        );
        assert_eq!(record.headers["error_status"].as_deref(), Some("413"));
    }
    assert!(read_exactly(&routed, 0).is_empty());
    connector.stop().await;
}

#[tokio::test]
async fn a_request_failing_the_signature_check_is_never_dead_lettered() {
    const SECRET: &str = "dead-letter-secret";
    let [dead, routed] = new_topics(["dead", "routed"]).await;
    let mut settings = test_settings();
    settings.webhook.secrets = vec![SECRET.into()];
    settings.archive.dead_letter_topic = dead.clone();
    let connector = start_connector(settings, &routes_toml(&routed, &[])).await;
    let body = b"not json".to_vec();
    let _turn = shared().await;

    let wrong = sign("not-the-secret", &body);
    for (content_type, signature, error) in [
        ("application/json", None, "signature_missing"),
        (
            "application/json",
            Some(wrong.as_str()),
            "signature_invalid",
        ),
        (
            "application/json",
            Some("sha1=not-hex"),
            "signature_invalid",
        ),
        // The signature is checked before the content type.
        ("text/plain", None, "signature_missing"),
    ] {
        let headers: Vec<(&str, &str)> =
            (signature.iter()).map(|s| (SIGNATURE_HEADER, *s)).collect();
        let url = connector.endpoint();
        let answer = post_with_content_type(&url, body.clone(), Some(content_type), &headers).await;
        assert_eq!(answer.status, 401, "{:?}", answer.json);
        assert_eq!(answer.json["error"], json!(error));
    }
    // The same body signed: refused for its content, and kept.
    let signed = post(
        &connector.endpoint(),
        body.clone(),
        &[
            (SIGNATURE_HEADER, &sign(SECRET, &body)),
            ("x-request-id", "dl-signed"),
        ],
    )
    .await;
    assert_eq!(signed.status, 400, "{:?}", signed.json);
    assert_eq!(signed.json["error"], "invalid_json");

    let kept = read_raw_exactly(&dead, 1);
    assert_eq!(kept[0].key.as_deref(), Some("dl-signed"));
    assert!(read_exactly(&routed, 0).is_empty());
    connector.stop().await;
}

#[tokio::test]
async fn an_accepted_notification_is_archived_raw_beside_its_events() {
    let [raw, dead, customers, unrouted] =
        new_topics(["raw", "dead", "customers", "unrouted"]).await;
    let mut settings = test_settings();
    settings.archive.raw_topic = raw.clone();
    settings.archive.dead_letter_topic = dead.clone();
    let routes = customer_routes(&unrouted, &customers);
    let connector = start_connector(settings, &routes).await;
    let _turn = shared().await;

    let before = Utc::now();
    let customer = post(
        &connector.endpoint(),
        seed_sample(),
        &[("x-request-id", "raw-customer")],
    )
    .await;
    // No Content-Type at all is accepted, and kept as none.
    let booking = post_with_content_type(
        &connector.webhook("booking"),
        booking_sample(),
        None,
        &[("x-request-id", "raw-booking")],
    )
    .await;
    let after = Utc::now();
    assert_eq!(customer.status, 200, "{:?}", customer.json);
    assert_eq!(booking.status, 200, "{:?}", booking.json);

    let archived = read_raw_exactly(&raw, 2);
    assert!(read_raw_exactly(&dead, 0).is_empty());
    let [customer_events, booking_events] = read_exactly_each(&[
        (&customers, 4, &Check::published()),
        (&unrouted, 2, &Check::published()),
    ])
    .try_into()
    .unwrap();
    let cases = [
        (
            "customer",
            "raw-customer",
            seed_sample(),
            "862",
            Some("application/json"),
            &customer,
            &customer_events,
        ),
        (
            "booking",
            "raw-booking",
            booking_sample(),
            "51234",
            None,
            &booking,
            &booking_events,
        ),
    ];
    for (record, (entity, request_id, body, key, content_type, answer, events)) in
        archived.iter().zip(cases)
    {
        assert_eq!(record.value.as_deref(), Some(body.as_slice()), "{entity}");
        assert_eq!(record.key.as_deref(), Some(key), "{entity}");
        let received_at = received_at(record, before, after);
        let expected = raw_headers(entity, request_id, &received_at, content_type, None);
        assert_eq!(without_trace(&record.headers), expected, "{entity}");
        // Its events, received when the raw record says.
        let ids: Vec<&str> = events
            .iter()
            .map(|e| e.value["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, event_ids(answer), "{entity}");
        for event in events.iter() {
            assert_eq!(event.value["received_at"], json!(received_at), "{entity}");
            assert_eq!(event.key.as_deref(), Some(key), "{entity}");
        }
    }
    connector.stop().await;
}

#[tokio::test]
async fn replay_fills_a_new_route_with_what_live_posts_would_have_written_and_nothing_else() {
    let [raw, live, unrouted, added] = new_topics(["raw", "live", "unrouted", "added"]).await;
    let mut settings = test_settings();
    settings.archive.raw_topic = raw.clone();
    let routes = routes_toml(&unrouted, &[("live", &["Customer*"], &[&live])]);
    let connector = start_connector(settings, &routes).await;
    // The routing fix: a new route takes every event to `added` as well.
    let fixed = routes_toml(
        &unrouted,
        &[
            ("live", &["Customer*"], &[&live]),
            ("added", &["Customer*", "Booking*"], &[&added]),
        ],
    );
    let (_dir, config) = replay_settings(&fixed, &format!("[archive]\nraw_topic = {raw:?}\n"));
    let _turn = shared().await;

    let (customer, booking) = post_both_samples(&connector).await;
    let archived = read_raw_exactly(&raw, 2);
    let stdout = exited(
        &replay(&config, &["--from", &raw, "--only-topic", &added]),
        0,
    );
    Summary::of(&stdout).assert([2, 2, 0], "0", &[(&added, 6)]);
    assert!(!stdout.contains("would write  "), "{stdout}");

    let [replayed, live_events, unrouted_events] = read_exactly_each(&[
        (&added, 6, &Check::published()),
        (&live, 4, &Check::published()),
        (&unrouted, 2, &Check::published()),
    ])
    .try_into()
    .unwrap();
    // Exactly the records the live posts gave (ids, values with their
    // received_at, keys, headers): the customer's on `live`, the booking's on
    // the unmatched topic.
    let mut expected = by_event_id(&live_events);
    expected.extend(by_event_id(&unrouted_events));
    assert_eq!(by_event_id(&replayed), expected);
    let ids: BTreeSet<String> = expected.into_keys().collect();
    assert_eq!(ids, ids_of(&[&customer, &booking]));
    // The archive is read, not written.
    assert_eq!(read_raw_exactly(&raw, 2), archived);
    connector.stop().await;
}

#[tokio::test]
async fn a_notification_refused_for_too_many_changes_is_replayed_once_the_limit_allows_it() {
    let [dead, customers, unrouted, reference] =
        new_topics(["dead", "customers", "unrouted", "reference"]).await;
    let routes = customer_routes(&unrouted, &customers);
    let connector = start_connector(dead_lettering(&dead), &routes).await;
    // What a connector allowing the changes makes of the same body, live.
    let mut allowing = test_settings();
    allowing.webhook.max_changes = 100;
    let live = start_connector(allowing, &routes_toml(&reference, &[])).await;
    let (_dir, config) = replay_settings(
        &routes,
        &allowing_more_changes(&format!("dead_letter_topic = {dead:?}\n")),
    );
    let _turn = shared().await;

    let refused = post(&connector.endpoint(), seed_sample(), &[]).await;
    assert_eq!(refused.status, 413, "{:?}", refused.json);
    assert_eq!(refused.json["error"], "too_many_changes");
    let accepted = post(&live.endpoint(), seed_sample(), &[]).await;
    assert_eq!(accepted.status, 200, "{:?}", accepted.json);
    let kept = read_raw_exactly(&dead, 1);
    let received_at = kept[0].headers["received_at"].clone().unwrap();

    let stdout = exited(&replay(&config, &["--from", &dead]), 0);
    Summary::of(&stdout).assert([1, 1, 0], "0", &[(&customers, 4)]);

    let [replayed, expected, _] = read_exactly_each(&[
        (&customers, 4, &Check::published()),
        (&reference, 4, &Check::published()),
        (&unrouted, 0, &Check::published()),
    ])
    .try_into()
    .unwrap();
    let ids: Vec<&str> = (replayed.iter())
        .map(|r| r.value["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, event_ids(&accepted));
    for (replayed, expected) in replayed.iter().zip(&expected) {
        // Received when the platform first sent it, not when it was replayed.
        assert_eq!(replayed.value["received_at"], json!(received_at));
        let mut value = replayed.value.clone();
        value["received_at"] = expected.value["received_at"].clone();
        assert_eq!(value, expected.value);
        assert_eq!(replayed.key, expected.key);
        assert_eq!(
            without_trace(&replayed.headers),
            without_trace(&expected.headers)
        );
        // In the trace of the request whose dead letter it comes from.
        assert_eq!(
            trace_id_of(&replayed.headers),
            trace_id_of(&kept[0].headers)
        );
    }
    // Replayed, not moved: the dead letter is where it was.
    assert_eq!(read_raw_exactly(&dead, 1), kept);
    connector.stop().await;
    live.stop().await;
}

#[tokio::test]
async fn a_dead_letter_accepted_by_replay_is_archived_raw_as_a_live_notification_is() {
    let [dead, raw, customers, unrouted] =
        new_topics(["dead", "raw", "customers", "unrouted"]).await;
    let routes = customer_routes(&unrouted, &customers);
    let mut settings = dead_lettering(&dead);
    settings.archive.raw_topic = raw.clone();
    let connector = start_connector(settings, &routes).await;
    let archive = format!("dead_letter_topic = {dead:?}\nraw_topic = {raw:?}\n");
    let (_dir, config) = replay_settings(&routes, &allowing_more_changes(&archive));
    let _turn = shared().await;

    let refused = post(
        &connector.endpoint(),
        seed_sample(),
        &[("x-request-id", "dl-archived")],
    )
    .await;
    assert_eq!(refused.status, 413, "{:?}", refused.json);
    let kept = read_raw_exactly(&dead, 1);
    assert!(read_raw_exactly(&raw, 0).is_empty());

    let stdout = exited(&replay(&config, &["--from", &dead]), 0);
    Summary::of(&stdout).assert([1, 1, 0], "0", &[(&customers, 4), (&raw, 1)]);
    // The raw record a live request accepted then would have had: the body, the
    // entity's id, the request's headers without the refusal's.
    let archived = read_raw_exactly(&raw, 1);
    assert_eq!(archived[0].value, kept[0].value);
    assert_eq!(archived[0].key.as_deref(), Some("862"));
    let received_at = kept[0].headers["received_at"].clone().unwrap();
    let expected = raw_headers(
        "customer",
        "dl-archived",
        &received_at,
        Some("application/json"),
        None,
    );
    assert_eq!(without_trace(&archived[0].headers), expected);
    assert_eq!(
        trace_id_of(&archived[0].headers),
        trace_id_of(&kept[0].headers)
    );
    read_exactly(&customers, 4);
    connector.stop().await;
}

#[tokio::test]
async fn notifications_refused_again_stay_dead_letters_and_replay_exits_65() {
    let [dead, customers, unrouted] = new_topics(["dead", "customers", "unrouted"]).await;
    let routes = customer_routes(&unrouted, &customers);
    let connector = start_connector(dead_lettering(&dead), &routes).await;
    let (_dir, config) = replay_settings(
        &routes,
        &allowing_more_changes(&format!("dead_letter_topic = {dead:?}\n")),
    );
    let _turn = shared().await;

    let url = connector.endpoint();
    let as_json = Some("application/json");
    for (body, content_type, status) in [
        (b"not json".to_vec(), as_json, 400),
        (seed_sample(), Some("text/plain"), 415),
        (seed_sample(), as_json, 413),
    ] {
        let answer = post_with_content_type(&url, body, content_type, &[]).await;
        assert_eq!(answer.status, status, "{:?}", answer.json);
    }
    let kept = read_raw_exactly(&dead, 3);

    let output = replay(&config, &["--from", &dead]);
    let stdout = exited(&output, 65);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refused again"), "{stderr}");
    Summary::of(&stdout).assert(
        [3, 1, 0],
        "2 (invalid_json 1, unsupported_media_type 1)",
        &[(&customers, 4)],
    );
    // Only the one the new limit accepts is written; the others stay where they
    // are, and are not dead-lettered again.
    let [replayed, _] = read_exactly_each(&[
        (&customers, 4, &Check::published()),
        (&unrouted, 0, &Check::published()),
    ])
    .try_into()
    .unwrap();
    assert_eq!(replayed[0].key.as_deref(), Some("862"));
    assert_eq!(read_raw_exactly(&dead, 3), kept);
    connector.stop().await;
}

#[tokio::test]
async fn a_dry_run_prints_each_record_it_would_write_and_writes_none() {
    let [raw, live, unrouted, added, state] =
        new_topics(["raw", "live", "unrouted", "added", "state"]).await;
    let mut settings = test_settings();
    settings.archive.raw_topic = raw.clone();
    let routes = routes_toml(&unrouted, &[("live", &["Customer*"], &[&live])]);
    let connector = start_connector(settings, &routes).await;
    // A new route and a state topic for customers.
    let fixed = format!(
        "{}\n[[state]]\nentity = \"customer\"\ntopic = {state:?}\n",
        routes_toml(
            &unrouted,
            &[
                ("live", &["Customer*"], &[&live]),
                ("added", &["Customer*"], &[&added]),
            ],
        )
    );
    let table = routing_table(&fixed, &test_settings());
    let (_dir, config) = replay_settings(&fixed, &format!("[archive]\nraw_topic = {raw:?}\n"));
    let _turn = shared().await;

    let answer = post(&connector.endpoint(), seed_sample(), &[]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let stdout = exited(&replay(&config, &["--from", &raw, "--dry-run"]), 0);

    // One line per record, on every topic of the fixed routing.
    let mut printed: Vec<&str> = (stdout.lines())
        .filter(|l| l.starts_with("would write  "))
        .collect();
    printed.sort_unstable();
    let mut expected: Vec<String> = (event_ids(&answer).iter())
        .flat_map(|id| {
            [&live, &added].map(|topic| format!("would write  {topic}  key 862  event_id {id}"))
        })
        .chain([format!("would write  {state}  key 862  (state record)")])
        .collect();
    expected.sort_unstable();
    assert_eq!(printed, expected, "{stdout}");
    Summary::of(&stdout).assert([1, 1, 0], "0", &[(&live, 4), (&added, 4), (&state, 1)]);

    // Only what the live post wrote.
    read_exactly_each(&[
        (&added, 0, &Check::published()),
        (&live, 4, &Check::published()),
        (&unrouted, 0, &Check::published()),
        (&state, 0, &Check::for_topic(&table, &state)),
    ]);
    connector.stop().await;
}

/// A connector archiving raw notifications (no routes but the unmatched one),
/// and replay settings whose routing file adds a route of every customer and
/// booking change to `added`.
struct Archiving {
    raw: String,
    added: String,
    connector: Connector,
    config: String,
    _dir: tempfile::TempDir,
}

async fn archiving() -> Archiving {
    let [raw, unrouted, added] = new_topics(["raw", "unrouted", "added"]).await;
    let mut settings = test_settings();
    settings.archive.raw_topic = raw.clone();
    let connector = start_connector(settings, &routes_toml(&unrouted, &[])).await;
    let fixed = routes_toml(
        &unrouted,
        &[("added", &["Customer*", "Booking*"], &[&added])],
    );
    let (_dir, config) = replay_settings(&fixed, &format!("[archive]\nraw_topic = {raw:?}\n"));
    Archiving {
        raw,
        added,
        connector,
        config,
        _dir,
    }
}

#[tokio::test]
async fn replay_keeps_the_archived_trace_and_links_its_span_to_the_archived_one() {
    let Archiving {
        raw,
        added,
        connector,
        config,
        _dir,
    } = archiving().await;
    let collector = Collector::start();
    let _turn = shared().await;
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let incoming = format!("00-{trace}-00f067aa0ba902b7-01");
    let answer = post(
        &connector.endpoint(),
        seed_sample(),
        &[("traceparent", &incoming)],
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let archived = read_raw_exactly(&raw, 1);
    let archived = archived[0].headers["traceparent"].clone().unwrap();
    let live_span = archived.split('-').nth(2).unwrap().to_string();
    assert!(archived.starts_with(&format!("00-{trace}-")), "{archived}");

    let env = exporting_to(&collector, "replay");
    let env = as_env(&env);
    let args = [
        "replay",
        "--config",
        &config,
        "--from",
        &raw,
        "--only-topic",
        &added,
    ];
    exited(&run_binary(&args, &env), 0);
    let spans = collector.wait_for("the replay span", |spans| {
        spans.iter().any(|s| s["name"] == "replay")
    });
    let replay = spans.iter().find(|s| s["name"] == "replay").unwrap();
    assert_eq!(replay["trace_id"], trace, "{replay:#}");
    assert_eq!(replay["parent_span_id"], live_span.as_str(), "{replay:#}");
    assert_eq!(
        replay["links"],
        serde_json::json!([{"trace_id": trace, "span_id": live_span}])
    );
    let written = format!("00-{trace}-{}-01", replay["span_id"].as_str().unwrap());
    for record in read_exactly(&added, 4) {
        assert_eq!(
            record.headers["traceparent"].as_deref(),
            Some(written.as_str())
        );
        assert_eq!(
            record.headers["ce_traceparent"].as_deref(),
            Some(written.as_str())
        );
    }
    connector.stop().await;
}

#[tokio::test]
async fn replaying_twice_writes_the_same_records_with_the_same_event_ids() {
    let Archiving {
        raw,
        added,
        connector,
        config,
        _dir,
    } = archiving().await;
    let _turn = shared().await;

    let (customer, booking) = post_both_samples(&connector).await;
    let args = ["--from", raw.as_str(), "--only-topic", added.as_str()];
    let first = exited(&replay(&config, &args), 0);
    let second = exited(&replay(&config, &args), 0);
    assert_eq!(first, second);
    Summary::of(&first).assert([2, 2, 0], "0", &[(&added, 6)]);

    // The first run's six records, then the second's: the same, ids and all.
    let records = read_exactly(&added, 12);
    let (once, again) = records.split_at(6);
    assert_eq!(by_event_id(once), by_event_id(again));
    let ids: BTreeSet<String> = by_event_id(once).into_keys().collect();
    assert_eq!(ids, ids_of(&[&customer, &booking]));
    connector.stop().await;
}

#[tokio::test]
async fn since_and_until_replay_only_the_notifications_received_between_them() {
    let Archiving {
        raw,
        added,
        connector,
        config,
        _dir,
    } = archiving().await;
    let _turn = shared().await;

    let customer = post(&connector.endpoint(), seed_sample(), &[]).await;
    assert_eq!(customer.status, 200, "{:?}", customer.json);
    // After the customer was received, before the booking is.
    let between = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let booking = post(&connector.webhook("booking"), booking_sample(), &[]).await;
    assert_eq!(booking.status, 200, "{:?}", booking.json);

    let only = ["--from", raw.as_str(), "--only-topic", added.as_str()];
    let until = exited(
        &replay(&config, &[&only[..], &["--until", &between]].concat()),
        0,
    );
    Summary::of(&until).assert([2, 1, 1], "0", &[(&added, 4)]);
    let since = exited(
        &replay(&config, &[&only[..], &["--since", &between]].concat()),
        0,
    );
    Summary::of(&since).assert([2, 1, 1], "0", &[(&added, 2)]);

    // The customer's events, then the booking's.
    let records = read_exactly(&added, 6);
    let (customers, bookings) = records.split_at(4);
    let ids =
        |records: &[Record]| -> BTreeSet<String> { by_event_id(records).into_keys().collect() };
    assert_eq!(ids(customers), ids_of(&[&customer]));
    assert_eq!(ids(bookings), ids_of(&[&booking]));
    connector.stop().await;
}

#[tokio::test]
async fn replay_exits_69_when_kafka_refuses_its_records_or_its_topic_is_missing() {
    let [raw, unrouted] = new_topics(["raw", "unrouted"]).await;
    let missing = unique_topic("missing");
    let mut settings = test_settings();
    settings.archive.raw_topic = raw.clone();
    let connector = start_connector(settings, &routes_toml(&unrouted, &[])).await;
    // A route to a topic nobody created.
    let fixed = routes_toml(&unrouted, &[("missing", &["Customer*"], &[&missing])]);
    let (_dir, config) = replay_settings(&fixed, &format!("[archive]\nraw_topic = {raw:?}\n"));
    let _turn = shared().await;

    let answer = post(&connector.endpoint(), seed_sample(), &[]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let output = replay(&config, &["--from", &raw, "--only-topic", &missing]);
    let stdout = exited(&output, 69);
    let summary = Summary::of(&stdout);
    assert_eq!(summary.count("failed"), 1, "{stdout}");
    assert!(summary.lines["failed"].contains(&missing), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("run replay again"), "{stderr}");

    // Nothing to read from.
    let never = unique_topic("never-created");
    let output = replay(&config, &["--from", &never]);
    exited(&output, 69);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&never), "{stderr}");
    assert!(stderr.contains("the topic does not exist"), "{stderr}");
    // Only what the live post wrote.
    read_exactly(&unrouted, 4);
    connector.stop().await;
}

#[test]
fn a_since_that_is_not_rfc_3339_is_refused_with_exit_2_before_reading() {
    // No broker is contacted: the address is never dialled.
    let (_dir, config) = settings_file("127.0.0.1:9", &routes_toml("unrouted", &[]));
    let config = config.to_str().unwrap();
    let output = replay(config, &["--from", "raw", "--since", "2026-11-29 10:00"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not an RFC 3339 time"), "{stderr}");
    assert!(output.stdout.is_empty(), "{:?}", output.stdout);
}

#[test]
fn replaying_to_a_topic_the_routing_file_does_not_name_exits_64_before_reading() {
    // No broker is contacted: the address is never dialled.
    let routes = routes_toml("unrouted", &[("live", &["Customer*"], &["live"])]);
    let (_dir, config) = settings_file_with("127.0.0.1:9", &routes, "");
    let config = config.to_str().unwrap();
    let output = replay(config, &["--from", "raw", "--only-topic", "elsewhere"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("--only-topic \"elsewhere\" is not a topic of the routing file"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "{:?}", output.stdout);
}

/// A notification for customer 9 at `at` with `changes` SMS changes, numbered from
/// `first`.
fn numbered_notification(at: &str, changes: usize, first: usize) -> String {
    let changes: Vec<_> = (0..changes)
        .map(|i| serde_json::json!({"ChangeType": "CustomerSmsChanged", "OldValue": first + i, "NewValue": first + i + 1}))
        .collect();
    serde_json::json!({"ChangeDateTime": at, "Customer": {"Id": 9}, "Changes": changes}).to_string()
}

#[tokio::test]
async fn replay_keeps_one_entity_s_notifications_in_the_order_they_were_read() {
    let [raw, unrouted, added, state] = new_topics(["raw", "unrouted", "added", "state"]).await;
    let mut settings = test_settings();
    settings.archive.raw_topic = raw.clone();
    let connector = start_connector(settings, &routes_toml(&unrouted, &[])).await;
    let _turn = shared().await;
    // 70 records: the sink yields after every 64 while enqueuing one notification.
    let older = numbered_notification("2024-01-01T10:00:00", 70, 0);
    let newer = numbered_notification("2024-01-01T11:00:00", 1, 1000);
    for body in [older, newer] {
        let answer = post(&connector.endpoint(), body, &[]).await;
        assert_eq!(answer.status, 200, "{:?}", answer.json);
    }
    connector.stop().await;
    let fixed = format!(
        "{}\n[[state]]\nentity = \"customer\"\ntopic = {state:?}\n",
        routes_toml(&unrouted, &[("added", &["Customer*"], &[&added])])
    );
    let (_dir, config) = replay_settings(&fixed, &format!("[archive]\nraw_topic = {raw:?}\n"));
    let output = replay(
        &config,
        &[
            "--from",
            &raw,
            "--only-topic",
            &added,
            "--only-topic",
            &state,
        ],
    );
    exited(&output, 0);
    let table = routing_table(&fixed, &test_settings());
    let states = read_exactly_with(&state, 2, &Check::for_topic(&table, &state));
    let events = read_exactly(&added, 71);
    let times: Vec<&str> = events
        .iter()
        .map(|r| r.value["change_date_time"].as_str().unwrap())
        .collect();
    assert!(
        times[..70].iter().all(|t| *t == "2024-01-01T10:00:00Z"),
        "{times:?}"
    );
    assert_eq!(times[70], "2024-01-01T11:00:00Z");
    assert_eq!(states[0].value["change_date_time"], "2024-01-01T10:00:00Z");
    assert_eq!(
        states[1].value["change_date_time"], "2024-01-01T11:00:00Z",
        "the latest state is the newer one"
    );
}
