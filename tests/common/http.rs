//! HTTP: requests to a connector and their answers, raw requests over TCP, and
//! metrics read over HTTP. Every request goes through [`http_client`] (or
//! [`http_client_with_timeout`]), so none can wait for ever.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test's HTTP client may take to connect to the connector.
pub const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a test's request may take, from connecting to the answer's last byte,
/// unless the test says otherwise: above the slowest answer a test waits for on
/// purpose (a request held by a paused broker until the longest delivery timeout a
/// test sets, 20 s), so that it fails instead of hanging, never before.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A new HTTP client with [`HTTP_CONNECT_TIMEOUT`] and [`HTTP_TIMEOUT`]. New per
/// use: a client's pooled connections belong to the runtime of the test that made
/// them.
pub fn http_client() -> reqwest::Client {
    http_client_with_timeout(HTTP_TIMEOUT)
}

/// [`http_client`] with `total` instead of [`HTTP_TIMEOUT`], for a test that
/// waits longer on purpose.
pub fn http_client_with_timeout(total: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(HTTP_CONNECT_TIMEOUT)
        .timeout(total)
        .build()
        .expect("an HTTP client")
}

/// An HTTP answer: status, headers and the body parsed as JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

impl Answer {
    /// An answer from its parts; panics when `body` is not JSON.
    pub fn from_parts(status: u16, headers: reqwest::header::HeaderMap, body: &[u8]) -> Answer {
        let json = serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "status {status}: body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(body)
            )
        });
        Answer {
            status,
            headers,
            json,
        }
    }
}

/// The `event_ids` of an accepted notification's answer.
pub fn event_ids(answer: &Answer) -> Vec<String> {
    answer.json["event_ids"]
        .as_array()
        .expect("event_ids is an array")
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect()
}

/// POSTs `body` as `application/json` with extra headers.
pub async fn post(url: &str, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> Answer {
    let mut request = http_client()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer(request.send().await.expect("the connector answers")).await
}

/// POSTs `body` with `content_type` as its `Content-Type` (`None`: no
/// `Content-Type` header at all) and extra headers.
pub async fn post_with_content_type(
    url: &str,
    body: impl Into<reqwest::Body>,
    content_type: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = http_client().post(url).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer(request.send().await.expect("the connector answers")).await
}

/// Reads `response` whole into an [`Answer`].
pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("a complete body");
    Answer::from_parts(status, headers, &bytes)
}

/// GETs `url` and parses the JSON answer.
pub async fn get_json(url: &str) -> Answer {
    let response = http_client().get(url).send().await;
    answer(response.expect("the connector answers")).await
}

/// GETs `url`: status, headers and the body as text.
pub async fn get_text(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let response = http_client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: no answer: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a complete body");
    (status, headers, text)
}

/// Opens a connection to `addr` and sends `bytes` (often a request cut short); the
/// caller trickles, stalls or reads the rest.
pub async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// What the server sends on `stream` (one read), or the read error; panics when
/// it neither answers nor closes within 5 s.
pub async fn read_raw(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buffer = vec![0u8; 8192];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("an answer or a close within 5 s");
    read.map(|n| String::from_utf8_lossy(&buffer[..n]).into_owned())
}

/// The value of the metric line starting with `series` (name and labels).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
}

/// The text of `{url}/metrics`.
pub async fn metrics_text(url: &str) -> String {
    get_text(&format!("{url}/metrics")).await.2
}

/// Polls `url` until it answers `status` (its body), or panics after `within`.
pub async fn wait_for_status(url: &str, status: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (got, _, body) = get_text(url).await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url} still answers {got}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `{url}/metrics` until `check` holds for the value of `series` (absent:
/// `None`), or panics after 10 s.
pub async fn wait_for_metric_to(url: &str, series: &str, check: impl Fn(Option<f64>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics_text(url).await;
        if check(metric(&text, series)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached the expected value:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `{url}/metrics` until `series` reaches `value`, or panics after 10 s.
pub async fn wait_for_metric(url: &str, series: &str, value: f64) {
    wait_for_metric_to(url, series, |v| v == Some(value)).await
}

/// The series of webhook requests being processed.
pub const IN_FLIGHT: &str = "webhook_connector_webhook_requests_in_flight";
/// The series of notifications accepted at the customer endpoint.
pub const ACCEPTED: &str =
    "webhook_connector_notifications_total{endpoint=\"customer\",result=\"accepted\"}";
/// The series of bytes of bodies and records held.
pub const HELD_BYTES: &str = "webhook_connector_held_bytes";
