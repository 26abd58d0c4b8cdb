//! docs/http-contract.md, in process: requests go straight to
//! `ingress::filters`, called as a `tower` service (`warp::service`), with no
//! socket and no broker. (`warp::test` would do for whole bodies, but the crate
//! does not enable warp's `test` feature, and bodies that arrive in chunks, or
//! never end, need a body type of the test's own anyway.)
//!
//! The state is assembled from settings as `app::start` does, with a sink whose
//! Kafka is out of reach (127.0.0.1:1): every refusal comes before delivery, and a
//! delivery times out after 500 ms. What reaches Kafka (and that refused requests
//! reach nothing) is checked on a broker, in tests/pipeline.rs, tests/booking.rs and
//! tests/bad_input.rs. Two checks need a socket, and run the server on a loopback
//! port, still with Kafka out of reach: the count of answers by endpoint (the server
//! counts them around the filters), and a chunked body that breaks off (only hyper,
//! reading a connection, sees the body end before its chunk does).

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use serde_json::{json, Value};
use warp::http::{header, HeaderMap, HeaderName, HeaderValue, Request};

use common::*;
use webhook_connector::config::routing_file::{self, RoutingFile};
use webhook_connector::config::{KafkaSettings, Settings};
use webhook_connector::ingress::signature::{sign, SIGNATURE_HEADER};
use webhook_connector::ingress::{self, BytePool, Ingress};

const ENDPOINT: &str = "/webhooks/customer";
const BOOKING_ENDPOINT: &str = "/webhooks/booking";
/// The media type of `GET /metrics`.
const OPENMETRICS: &str = "application/openmetrics-text";

/// Default settings with Kafka out of reach: nothing listens on 127.0.0.1:1, and
/// a delivery gives up after 500 ms.
fn settings() -> Settings {
    Settings {
        kafka: KafkaSettings {
            bootstrap_servers: "127.0.0.1:1".into(),
            delivery_timeout_ms: 500,
            ..KafkaSettings::default()
        },
        ..Settings::default()
    }
}

/// The handlers' state for `settings`, as `app::start` makes it. librdkafka does
/// not connect when the producer is created.
fn ingress(settings: &Settings) -> Ingress {
    let text = routes_toml(
        "test.unrouted",
        &[("contact", &["CustomerSmsChanged"], &["test.contact"])],
    );
    let table = routing_file::parse(&text, "routes.toml", None).expect("the routes are valid");
    let routes = RoutingFile {
        path: "routes.toml".into(),
        text,
        table,
        key: None,
    };
    Ingress::new(settings, routes).expect("the producer is created")
}

/// [`ingress`] of [`settings`] adjusted by `configure`.
fn state(configure: impl FnOnce(&mut Settings)) -> Arc<Ingress> {
    let mut settings = settings();
    configure(&mut settings);
    Arc::new(ingress(&settings))
}

/// A request with no body.
fn request(method: &str, path: &str) -> Request<Chunked> {
    Request::builder()
        .method(method)
        .uri(path)
        .body(Chunked::of(b"", 1, false))
        .unwrap()
}

/// A POST of `body` to the webhook endpoint as `application/json`, with its
/// `Content-Length`.
fn post_json(body: impl AsRef<[u8]>) -> Request<Chunked> {
    let body = body.as_ref();
    Request::builder()
        .method("POST")
        .uri(ENDPOINT)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(Chunked::of(body, body.len().max(1), false))
        .unwrap()
}

/// `request` with the header `name` set to `value`.
fn with_header(mut request: Request<Chunked>, name: &str, value: &str) -> Request<Chunked> {
    request.headers_mut().insert(
        HeaderName::from_bytes(name.as_bytes()).unwrap(),
        HeaderValue::from_str(value).unwrap(),
    );
    request
}

/// `request` sent to `path` instead.
fn to(path: &str, mut request: Request<Chunked>) -> Request<Chunked> {
    *request.uri_mut() = path.parse().unwrap();
    request
}

/// `request` without the header `name`.
fn without_header(mut request: Request<Chunked>, name: &str) -> Request<Chunked> {
    request.headers_mut().remove(name);
    request
}

/// Calls the filters of `state` with `request`, as the server does: the status,
/// headers and whole body of the answer.
async fn reply(state: &Arc<Ingress>, request: Request<Chunked>) -> (u16, HeaderMap, Vec<u8>) {
    let mut service = warp::service(ingress::filters(Arc::clone(state)));
    let response = tower_service::Service::call(&mut service, request)
        .await
        .unwrap_or_else(|never| match never {});
    let (parts, mut body) = response.into_parts();
    let mut bytes = Vec::new();
    while let Some(frame) = futures::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
    {
        if let Ok(data) = frame.expect("the answer is read").into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    (parts.status.as_u16(), parts.headers, bytes)
}

/// [`reply`], [`checked`] against the error contract.
async fn send(state: &Arc<Ingress>, request: Request<Chunked>) -> Answer {
    let (status, headers, body) = reply(state, request).await;
    checked(status, &headers, &body)
}

/// The answer, once it is checked against the error contract: every error body
/// is `{"error": "<code>", "message": "<text>"}` as JSON, and `Retry-After`
/// comes with the 503s and nothing else.
fn checked(status: u16, headers: &HeaderMap, body: &[u8]) -> Answer {
    let answer = Answer::from_parts(status, headers.clone(), body);
    if status >= 400 {
        let fields = answer.json.as_object().expect("an error body is an object");
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(names, ["error", "message"], "{}", answer.json);
        let code = answer.json["error"].as_str().expect("error is a string");
        assert!(
            !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{code:?}"
        );
        let message = answer.json["message"]
            .as_str()
            .expect("message is a string");
        assert!(!message.is_empty(), "{}", answer.json);
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "application/json",
            "{status}"
        );
        assert_eq!(
            headers.contains_key(header::RETRY_AFTER),
            status == 503,
            "{status} {}",
            answer.json
        );
    }
    answer
}

/// Asserts `answer` is `status` with the error `code` and a message containing
/// `message`.
fn assert_refused(answer: &Answer, status: u16, code: &str, message: &str) {
    assert_eq!(answer.status, status, "{:?}", answer.json);
    assert_eq!(answer.json["error"], json!(code), "{:?}", answer.json);
    let text = answer.json["message"].as_str().unwrap();
    assert!(text.contains(message), "{message:?} not in {text:?}");
}

/// The body of every request here: it arrives chunk by chunk (a whole body is one
/// chunk) and says nothing of its length, as with `Transfer-Encoding: chunked`
/// (a `Content-Length` is a header of the request's own); then it ends, or with
/// `stall` it never does.
struct Chunked {
    chunks: VecDeque<Bytes>,
    stall: bool,
}

impl Chunked {
    fn of(body: &[u8], chunk_size: usize, stall: bool) -> Chunked {
        Chunked {
            chunks: body
                .chunks(chunk_size)
                .map(Bytes::copy_from_slice)
                .collect(),
            stall,
        }
    }
}

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.chunks.pop_front() {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            // Never woken: only a timeout ends the wait.
            None if self.stall => Poll::Pending,
            None => Poll::Ready(None),
        }
    }
}

/// The whole server (the filters behind hyper) on a loopback port, Kafka still out
/// of reach: for what only a connection shows.
async fn on_loopback() -> Connector {
    let mut settings = settings();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.webhook.allow_unsigned = true;
    start_connector(settings, &routes_toml("test.unrouted", &[])).await
}

/// Reads what the server sends on `stream` until it closes (at most 5 s): the
/// status, headers and body of one answer.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> (u16, HeaderMap, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("an answer and a close within 5 s")
        .expect("an answer, not a reset");
    let text = String::from_utf8(raw).expect("a text answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3)?.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {status_line:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(": ").expect("a header line");
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let length: usize = headers[header::CONTENT_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(body.len(), length, "{text}");
    (status, headers, body.as_bytes().to_vec())
}

/// Polls `GET /metrics` of `state` until `count` webhook requests are being
/// processed, or panics after 5 s.
async fn wait_for_in_flight(state: &Arc<Ingress>, count: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, _, body) = reply(state, request("GET", "/metrics")).await;
        let text = String::from_utf8(body).unwrap();
        if metric(&text, IN_FLIGHT) == Some(count) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never {count} in flight:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A POST of `body` to the webhook endpoint with `headers` and no
/// `Content-Length` unless among them.
fn post_streamed(headers: &[(&str, &str)], body: Chunked) -> Request<Chunked> {
    let mut request = Request::builder().method("POST").uri(ENDPOINT);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body).unwrap()
}

#[tokio::test]
async fn healthz_is_200_and_metrics_are_openmetrics_text() {
    let state = state(|_| {});
    let health = send(&state, request("GET", "/healthz")).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json, json!({"status": "ok"}));

    // Refusals, to see them counted by endpoint: a customer notification is no
    // booking notification.
    let refused = send(&state, post_json("{")).await;
    assert_eq!(refused.status, 400);
    for body in [&b"{"[..], &seed_sample(), &seed_sample()] {
        let refused = send(&state, to(BOOKING_ENDPOINT, post_json(body))).await;
        assert_eq!(refused.status, 400);
    }
    let (status, headers, body) = reply(&state, request("GET", "/metrics")).await;
    assert_eq!(status, 200);
    let content_type = headers[header::CONTENT_TYPE].to_str().unwrap();
    assert!(content_type.starts_with(OPENMETRICS), "{content_type}");
    let text = String::from_utf8(body).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let notifications = [
        ("customer", "invalid_json", Some(1.0)),
        ("customer", "invalid_payload", None),
        ("booking", "invalid_json", Some(1.0)),
        ("booking", "invalid_payload", Some(2.0)),
    ];
    for (endpoint, result, count) in notifications {
        let series = format!(
            "webhook_connector_notifications_total{{endpoint=\"{endpoint}\",result=\"{result}\"}}"
        );
        assert_eq!(metric(&text, &series), count, "{series} in:\n{text}");
    }
}

#[tokio::test]
async fn http_requests_are_counted_by_endpoint_booking_customer_or_other() {
    // The server counts answers around the filters: a real one, on a loopback
    // port, with Kafka still out of reach.
    let connector = on_loopback().await;
    let booking = connector.webhook("booking");
    for _ in 0..2 {
        assert_eq!(post(&booking, "{", &[]).await.status, 400);
    }
    // A trailing slash is the same endpoint, in both counters.
    assert_eq!(post(&format!("{booking}/"), "{", &[]).await.status, 400);
    assert_eq!(post(&connector.endpoint(), "{", &[]).await.status, 400);
    let text_plain = http_client()
        .post(&booking)
        .header("content-type", "text/plain")
        .body(seed_sample())
        .send()
        .await
        .unwrap();
    assert_eq!(text_plain.status(), 415);
    assert_eq!(get_text(&booking).await.0, 405);
    assert_eq!(
        post(&connector.webhook("other"), "{", &[]).await.status,
        404
    );

    let text = metrics_text(&connector.url).await;
    let requests = [
        ("booking", 400, Some(3.0)),
        ("booking", 415, Some(1.0)),
        ("booking", 405, Some(1.0)),
        ("customer", 400, Some(1.0)),
        ("other", 404, Some(1.0)),
        ("webhook", 400, None),
    ];
    for (endpoint, status, count) in requests {
        let series = format!(
            "webhook_connector_http_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}}"
        );
        assert_eq!(metric(&text, &series), count, "{series} in:\n{text}");
    }
    let series = "webhook_connector_notifications_total{endpoint=\"booking\",result=\"unsupported_media_type\"}";
    assert_eq!(metric(&text, series), Some(1.0), "{series} in:\n{text}");
    connector.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let state = state(|_| {});
    let wrong_methods = [
        ("GET", ENDPOINT),
        ("PUT", ENDPOINT),
        ("GET", BOOKING_ENDPOINT),
        ("DELETE", BOOKING_ENDPOINT),
        ("POST", "/healthz"),
        ("POST", "/metrics"),
    ];
    for (method, path) in wrong_methods {
        let answer = send(&state, request(method, path)).await;
        assert_refused(&answer, 405, "method_not_allowed", "method not allowed");
    }
    for (method, path) in [
        ("POST", "/webhooks/other"),
        ("GET", "/webhooks/other"),
        ("POST", "/webhooks/Booking"),
        ("POST", "/webhooks/booking/x"),
        ("POST", "/webhooks/"),
        ("GET", "/nowhere"),
        ("GET", "/"),
    ] {
        let answer = send(&state, request(method, path)).await;
        assert_refused(
            &answer,
            404,
            "not_found",
            "webhooks go to POST /webhooks/customer, POST /webhooks/booking",
        );
    }
}

#[tokio::test]
async fn the_booking_endpoint_refuses_what_the_customer_endpoint_refuses_the_same_way() {
    let state = state(|s| {
        s.server.max_body_bytes = 4096;
        s.webhook.secrets = vec!["secret".into()];
    });
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(5000));
    let json = ("content-type", "application/json");
    let length = big.len().to_string();
    type Make<'a> = Box<dyn Fn() -> Request<Chunked> + 'a>;
    let cases: [(u16, &str, Make); 9] = [
        (
            405,
            "method_not_allowed",
            Box::new(|| request("GET", ENDPOINT)),
        ),
        (
            405,
            "method_not_allowed",
            Box::new(|| request("PUT", ENDPOINT)),
        ),
        // Signed: the signature is checked before the content type (a refused
        // body is kept on the dead-letter topic only when its sender is known).
        (
            415,
            "unsupported_media_type",
            Box::new(|| {
                let request = with_header(post_json(seed_sample()), "content-type", "text/plain");
                with_header(request, SIGNATURE_HEADER, &sign("secret", &seed_sample()))
            }),
        ),
        (413, "payload_too_large", Box::new(|| post_json(&big))),
        (
            413,
            "payload_too_large",
            Box::new(|| post_streamed(&[json], Chunked::of(big.as_bytes(), 512, false))),
        ),
        (
            413,
            "payload_too_large",
            Box::new(|| {
                let never_sent = Chunked::of(b"", 1, true);
                post_streamed(&[json, ("content-length", &length)], never_sent)
            }),
        ),
        (401, "signature_missing", Box::new(|| post_json("{"))),
        (
            401,
            "signature_invalid",
            Box::new(|| with_header(post_json("{"), SIGNATURE_HEADER, &sign("other", b"{"))),
        ),
        (
            400,
            "invalid_json",
            Box::new(|| with_header(post_json("{"), SIGNATURE_HEADER, &sign("secret", b"{"))),
        ),
    ];
    for (status, code, make) in cases {
        let customer = send(&state, make()).await;
        assert_eq!(customer.status, status, "{:?}", customer.json);
        assert_eq!(customer.json["error"], json!(code), "{:?}", customer.json);
        let booking = send(&state, to(BOOKING_ENDPOINT, make())).await;
        assert_eq!(booking.status, status, "{code}: {:?}", booking.json);
        assert_eq!(booking.json, customer.json, "{code}");
    }
}

#[tokio::test]
async fn bodies_not_json_or_not_a_notification_are_400_naming_the_place() {
    let state = state(|_| {});
    for (body, code, message) in malformed_bodies() {
        let answer = send(&state, post_json(&body)).await;
        assert_refused(&answer, 400, code, message);
    }
    // A key twice in a nested object, and JSON nested deeper than 128 levels.
    let duplicate = r#"{"ChangeDateTime":"2018-11-12T10:15:00","Customer":{"Id":1,"Prefs":{"a":1,"a":2}},"Changes":[]}"#;
    let answer = send(&state, post_json(duplicate)).await;
    assert_refused(
        &answer,
        400,
        "invalid_payload",
        "Customer.Prefs: duplicate field `a`",
    );
    let deep = format!(
        r#"{{"ChangeDateTime":"2018-11-12T10:15:00","Customer":{{"Id":1,"Deep":{}{}}},"Changes":[]}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let answer = send(&state, post_json(deep)).await;
    assert_refused(&answer, 400, "invalid_json", "body is not valid JSON");
}

#[tokio::test]
async fn with_secrets_a_missing_or_wrong_signature_is_401_and_either_secret_signs() {
    let state = state(|s| s.webhook.secrets = vec!["old-secret".into(), "new-secret".into()]);
    let body = seed_sample();
    let signed = |body: &[u8], header: &str| with_header(post_json(body), SIGNATURE_HEADER, header);

    let missing = send(&state, post_json(&body)).await;
    assert_refused(
        &missing,
        401,
        "signature_missing",
        "X-ResDiary-Signature header is missing",
    );
    let mut changed = body.clone();
    let at = changed.iter().position(|&b| b == b'3').unwrap();
    changed[at] = b'4';
    let tampered = send(&state, signed(&changed, &sign("new-secret", &body))).await;
    assert_refused(
        &tampered,
        401,
        "signature_invalid",
        "does not match the body",
    );
    let wrong_key = send(&state, signed(&body, &sign("other", &body))).await;
    assert_refused(
        &wrong_key,
        401,
        "signature_invalid",
        "does not match the body",
    );
    let sha256 = format!("sha256={}", &sign("new-secret", &body)[5..]);
    let malformed = send(&state, signed(&body, &sha256)).await;
    assert_refused(&malformed, 401, "signature_invalid", "sha1=<40 hex digits>");

    // A right signature from either secret gets past the check, to the next one.
    for secret in ["old-secret", "new-secret"] {
        let passed = send(&state, signed(b"{", &sign(secret, b"{"))).await;
        assert_refused(&passed, 400, "invalid_json", "not valid JSON");
    }
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_413_at_once_whether_announced_or_chunked() {
    let state = state(|s| s.server.max_body_bytes = 4096);
    let limit = "larger than the limit of 4096 bytes (server.max_body_bytes)";
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(5000));
    let json = ("content-type", "application/json");

    let announced = send(&state, post_json(&big)).await;
    assert_refused(&announced, 413, "payload_too_large", limit);
    let chunked = Chunked::of(big.as_bytes(), 512, false);
    let chunked = send(&state, post_streamed(&[json], chunked)).await;
    assert_refused(&chunked, 413, "payload_too_large", limit);

    // At once: a Content-Length over the limit is refused before any byte comes,
    // and a chunked body as soon as it passes the limit, not when it ends.
    let started = Instant::now();
    let length = big.len().to_string();
    let never_sent = post_streamed(
        &[json, ("content-length", &length)],
        Chunked::of(b"", 1, true),
    );
    let never_sent = send(&state, never_sent).await;
    assert_refused(&never_sent, 413, "payload_too_large", limit);
    let unfinished = post_streamed(&[json], Chunked::of(big.as_bytes(), 512, true));
    let unfinished = send(&state, unfinished).await;
    assert_refused(&unfinished, 413, "payload_too_large", limit);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A body of exactly the limit is read, and judged on what it says.
    let exact = format!("{{\"pad\": \"{}\"}}", "x".repeat(4096 - 11));
    assert_eq!(exact.len(), 4096);
    let answer = send(&state, post_json(&exact)).await;
    assert_refused(
        &answer,
        400,
        "invalid_payload",
        "ChangeDateTime: missing field",
    );
}

#[tokio::test]
async fn more_changes_than_max_changes_is_413_too_many_changes() {
    let state = state(|s| s.webhook.max_changes = 3);
    let answer = send(&state, post_json(padded_body(4, 0))).await;
    assert_refused(
        &answer,
        413,
        "too_many_changes",
        "has 4 changes; at most 3 are accepted (webhook.max_changes)",
    );
}

#[tokio::test]
async fn records_larger_than_one_request_may_hold_are_413() {
    // A quarter for bodies arriving, 12,000 bytes for a request being processed.
    let state = state(|s| {
        s.server.max_body_bytes = 4_000;
        s.server.max_in_flight_bytes = 16_000;
    });
    // 10 changes of a 1 KB customer: 10+ KB of records, and the body besides.
    let body = padded_body(10, 1000);
    assert!(body.len() < 4_000);
    let answer = send(&state, post_json(body)).await;
    assert_refused(
        &answer,
        413,
        "payload_too_large",
        "more than one request may hold (12000, from server.max_in_flight_bytes)",
    );
    // Refused before its records were built: no bytes are held.
    assert_eq!(state.bytes.processing.held(), 0);
}

#[tokio::test]
async fn a_content_type_other_than_json_is_415_and_json_with_parameters_passes() {
    let state = state(|_| {});
    for content_type in [
        "text/plain",
        "application/xml",
        "application/json-patch+json",
    ] {
        let request = with_header(post_json(seed_sample()), "content-type", content_type);
        let answer = send(&state, request).await;
        assert_refused(
            &answer,
            415,
            "unsupported_media_type",
            &format!("Content-Type {content_type:?} is not supported"),
        );
    }
    // Parameters and case do not matter, and no Content-Type at all is JSON: these
    // get past the check, to the body's.
    let with_charset = with_header(
        post_json("{"),
        "content-type",
        "Application/JSON; charset=utf-8",
    );
    let answer = send(&state, with_charset).await;
    assert_refused(&answer, 400, "invalid_json", "not valid JSON");
    let without = without_header(post_json("{"), "content-type");
    let answer = send(&state, without).await;
    assert_refused(&answer, 400, "invalid_json", "not valid JSON");
}

#[tokio::test]
async fn every_bound_refuses_at_once_with_503_overloaded_naming_its_setting_at_either_endpoint() {
    let no_slots = state(|s| s.server.max_in_flight = 0);
    let no_receiving = state(|s| s.server.max_receiving = 0);
    let mut no_processing_bytes = ingress(&settings());
    no_processing_bytes.bytes.processing = BytePool::new(0);
    let mut no_receiving_bytes = ingress(&settings());
    no_receiving_bytes.bytes.receiving = BytePool::new(0);
    let cases = [
        (no_slots, "(server.max_in_flight)"),
        (no_receiving, "(server.max_receiving)"),
        (
            Arc::new(no_processing_bytes),
            "(server.max_in_flight_bytes)",
        ),
        (Arc::new(no_receiving_bytes), "(server.max_in_flight_bytes)"),
    ];
    for (state, setting) in cases {
        for (path, body) in [
            (ENDPOINT, seed_sample()),
            (BOOKING_ENDPOINT, booking_sample()),
        ] {
            let started = Instant::now();
            let answer = send(&state, to(path, post_json(body))).await;
            assert_refused(&answer, 503, "overloaded", setting);
            assert!(answer.json["message"]
                .as_str()
                .unwrap()
                .ends_with("retry later"));
            assert_eq!(answer.headers[header::RETRY_AFTER], "1");
            assert!(started.elapsed() < Duration::from_secs(1), "{path}");
        }
    }
}

#[tokio::test]
async fn a_body_not_received_within_the_read_timeout_is_408_at_either_endpoint() {
    let state = state(|s| s.server.request_read_timeout_ms = 200);
    for path in [ENDPOINT, BOOKING_ENDPOINT] {
        let started = Instant::now();
        let stalled = post_streamed(
            &[
                ("content-type", "application/json"),
                ("content-length", "500"),
            ],
            Chunked::of(b"{\"ChangeDateTime\":", 64, true),
        );
        let answer = send(&state, to(path, stalled)).await;
        assert_refused(
            &answer,
            408,
            "request_timeout",
            "did not arrive within 200 ms",
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{path}: {took:?}"
        );
        // Its slot and bytes are given back.
        assert_eq!(
            state.receiving.available_permits(),
            settings().server.max_receiving
        );
        assert_eq!(state.bytes.receiving.held(), 0);
    }
}

#[tokio::test]
async fn more_requests_than_max_in_flight_at_either_endpoint_get_503_overloaded_at_once() {
    // Kafka out of reach holds a delivery for 1.5 s: two requests take both slots.
    let state = state(|s| {
        s.server.max_in_flight = 2;
        s.kafka.delivery_timeout_ms = 1500;
    });
    let customer = (ENDPOINT, seed_sample());
    let booking = (BOOKING_ENDPOINT, booking_sample());
    let held = [customer.clone(), booking.clone()].map(|(path, body)| {
        let state = Arc::clone(&state);
        tokio::spawn(async move { send(&state, to(path, post_json(body))).await })
    });
    wait_for_in_flight(&state, 2.0).await;
    for (path, body) in [booking, customer] {
        let started = Instant::now();
        let answer = send(&state, to(path, post_json(body))).await;
        assert_refused(&answer, 503, "overloaded", "(server.max_in_flight)");
        assert_eq!(answer.headers[header::RETRY_AFTER], "1", "{path}");
        assert!(started.elapsed() < Duration::from_secs(1), "{path}");
    }
    // The held requests end as Kafka out of reach makes them, and give their
    // slots back.
    for answer in held {
        let answer = answer.await.expect("the held request is answered");
        assert_refused(&answer, 503, "kafka_unavailable", "retry later");
    }
    assert_eq!(state.in_flight.available_permits(), 2);
}

#[tokio::test]
async fn a_chunked_body_that_breaks_off_is_400_body_unreadable_at_either_endpoint() {
    // A socket, for hyper to see the body end before its chunk does.
    let connector = on_loopback().await;
    for path in [ENDPOINT, BOOKING_ENDPOINT] {
        // A chunk announcing 0x100 bytes of which 18 come; then the client stops
        // sending (its write side shut, its read side open for the answer).
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n100\r\n{{\"ChangeDateTime\":"
        );
        let mut stream = send_raw(connector.addr(), request.as_bytes()).await;
        tokio::io::AsyncWriteExt::shutdown(&mut stream)
            .await
            .unwrap();
        let (status, headers, body) = read_answer(&mut stream).await;
        let answer = checked(status, &headers, &body);
        assert_refused(
            &answer,
            400,
            "body_unreadable",
            "the request body could not be read",
        );
    }
    let text = metrics_text(&connector.url).await;
    for endpoint in ["customer", "booking"] {
        let series = format!(
            "webhook_connector_notifications_total{{endpoint=\"{endpoint}\",result=\"body_unreadable\"}}"
        );
        assert_eq!(metric(&text, &series), Some(1.0), "{series} in:\n{text}");
    }
    connector.stop().await;
}

#[tokio::test]
async fn kafka_out_of_reach_within_the_delivery_timeout_is_503_kafka_unavailable() {
    let state = state(|_| {});
    let started = Instant::now();
    let answer = send(&state, post_json(seed_sample())).await;
    assert_refused(
        &answer,
        503,
        "kafka_unavailable",
        "not every event was acknowledged, retry later",
    );
    assert_eq!(answer.headers[header::RETRY_AFTER], "5");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn readiness_is_503_naming_kafka_while_it_is_out_of_reach() {
    let state = state(|_| {});
    let (status, _, body) = reply(&state, request("GET", "/readyz")).await;
    let report: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["ready"], json!(false));
    let reasons = report["reasons"].as_array().unwrap();
    assert!(
        reasons.len() == 1
            && reasons[0]
                .as_str()
                .unwrap()
                .starts_with("Kafka is unreachable"),
        "{report}"
    );
    // Liveness does not depend on Kafka.
    let health = send(&state, request("GET", "/healthz")).await;
    assert_eq!(health.status, 200);
}
