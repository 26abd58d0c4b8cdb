//! What an operator relies on: readiness that follows Kafka, metrics that match the
//! traffic, request ids, routing hot reload (file change, a ConfigMap's symlink
//! swap, invalid file, SIGHUP, requests in flight) and `check --kafka`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The routing reloads counted with `result` (`ok` or `failed`).
fn reloads(result: &str) -> String {
    format!("webhook_connector_routing_reloads_total{{result=\"{result}\"}}")
}

/// A connector sending everything to `topic` that checks its routing file for
/// changes every 100 ms.
async fn watching_connector(topic: &str) -> Connector {
    let mut settings = test_settings();
    settings.routing.watch_interval_ms = 100;
    start_connector(settings, &routes_toml(topic, &[])).await
}

/// Writes `routes_toml` over the connector's routing file and waits until its
/// reload is counted with `result`.
async fn replace_routing_file(connector: &Connector, routes_toml: &str, result: &str) {
    std::fs::write(&connector.routes_file, routes_toml).unwrap();
    wait_for_metric(&connector.url, &reloads(result), 1.0).await;
}

/// Posts the seed sample to `endpoint` and checks it is accepted.
async fn post_seed_sample(endpoint: &str) {
    let answer = post(endpoint, seed_sample(), &[]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
}

#[tokio::test]
async fn readiness_turns_503_while_the_broker_is_stopped_and_200_when_it_returns() {
    let (broker, _topic, connector) = connector_on_own_broker("ready", |_| {}).await;
    let readyz = format!("{}/readyz", connector.url);

    wait_for_status(&readyz, 200, Duration::from_secs(10)).await;
    broker.pause();
    let body = wait_for_status(&readyz, 503, Duration::from_secs(10)).await;
    assert!(body.contains("Kafka is unreachable"), "{body}");
    // Liveness does not depend on Kafka.
    assert_eq!(get_text(&format!("{}/healthz", connector.url)).await.0, 200);
    broker.resume();
    wait_for_status(&readyz, 200, Duration::from_secs(10)).await;
    connector.stop().await;
}

#[tokio::test]
async fn readiness_names_a_routed_topic_missing_from_kafka() {
    let present = unique_topic("present");
    let missing = unique_topic("missing");
    create_topics(&[&present]).await;
    let routes = routes_toml(&present, &[("r", &["CustomerSmsChanged"], &[&missing])]);
    let connector = start_connector(test_settings(), &routes).await;
    let body = wait_for_status(
        &format!("{}/readyz", connector.url),
        503,
        Duration::from_secs(10),
    )
    .await;
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["ready"], json!(false));
    assert_eq!(
        report["reasons"],
        json!([format!("topic {missing} does not exist in Kafka")])
    );
    connector.stop().await;
}

#[tokio::test]
async fn metrics_report_counts_that_match_the_requests_sent() {
    let [contact, marketing] = new_topics(["contact", "marketing"]).await;
    let routes = routes_toml(
        &marketing,
        &[("contact", &["CustomerSmsChanged"], &[&contact])],
    );
    let mut settings = test_settings();
    settings.webhook.secrets = vec!["s".into()];
    let connector = start_connector(settings, &routes).await;
    let body = seed_sample();
    let signature = webhook_connector::ingress::signature::sign("s", &body);
    let signed = [("X-ResDiary-Signature", signature.as_str())];
    for _ in 0..3 {
        assert_eq!(
            post(&connector.endpoint(), body.clone(), &signed)
                .await
                .status,
            200
        );
    }
    let bad_json = webhook_connector::ingress::signature::sign("s", b"{");
    for _ in 0..2 {
        let answer = post(
            &connector.endpoint(),
            "{",
            &[("X-ResDiary-Signature", &bad_json)],
        )
        .await;
        assert_eq!(answer.status, 400);
    }
    assert_eq!(
        post(&connector.endpoint(), body.clone(), &[]).await.status,
        401
    );
    assert_eq!(get_text(&format!("{}/nowhere", connector.url)).await.0, 404);

    let (status, headers, text) = get_text(&format!("{}/metrics", connector.url)).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let expect = [
        ("webhook_connector_http_requests_total{endpoint=\"customer\",status=\"200\"}", 3.0),
        ("webhook_connector_http_requests_total{endpoint=\"customer\",status=\"400\"}", 2.0),
        ("webhook_connector_http_requests_total{endpoint=\"customer\",status=\"401\"}", 1.0),
        ("webhook_connector_http_requests_total{endpoint=\"other\",status=\"404\"}", 1.0),
        ("webhook_connector_notifications_total{endpoint=\"customer\",result=\"accepted\"}", 3.0),
        ("webhook_connector_notifications_total{endpoint=\"customer\",result=\"invalid_json\"}", 2.0),
        ("webhook_connector_notifications_total{endpoint=\"customer\",result=\"signature_missing\"}", 1.0),
        ("webhook_connector_signature_failures_total{reason=\"missing\"}", 1.0),
        (
            &format!("webhook_connector_events_total{{change_type=\"CustomerSmsChanged\",topic=\"{contact}\"}}"),
            3.0,
        ),
        (
            &format!(
                "webhook_connector_events_total{{change_type=\"CustomerGroupEmailMarketingOptinChanged\",topic=\"{marketing}\"}}"
            ),
            3.0,
        ),
        ("webhook_connector_kafka_delivery_duration_seconds_count", 3.0),
        ("webhook_connector_webhook_requests_in_flight", 0.0),
        ("webhook_connector_kafka_producer_replacements_total", 0.0),
        ("webhook_connector_held_bytes_limit", 134_217_728.0),
    ];
    for (series, value) in expect {
        assert_eq!(metric(&text, series), Some(value), "{series} in:\n{text}");
    }
    assert!(
        text.contains("webhook_connector_build_info{version=\""),
        "{text}"
    );
    connector.stop().await;
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let (_topic, connector) = connector_on_new_topic("ids", |_| {}).await;
    let given = post(
        &connector.endpoint(),
        seed_sample(),
        &[("X-Request-Id", "trace-42")],
    )
    .await;
    assert_eq!(given.status, 200);
    assert_eq!(given.headers["x-request-id"], "trace-42");
    let generated = post(&connector.endpoint(), "{", &[]).await;
    assert_eq!(generated.status, 400);
    let id = generated.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let (status, headers, _) = get_text(&format!("{}/nowhere", connector.url)).await;
    assert_eq!(status, 404);
    assert!(headers.contains_key("x-request-id"));
    connector.stop().await;
}

#[tokio::test]
async fn a_changed_routing_file_applies_to_later_requests() {
    let [first, second] = new_topics(["first", "second"]).await;
    let connector = watching_connector(&first).await;
    post_seed_sample(&connector.endpoint()).await;

    replace_routing_file(&connector, &routes_toml(&second, &[]), "ok").await;
    post_seed_sample(&connector.endpoint()).await;

    read_exactly(&first, 4);
    read_exactly(&second, 4);
    connector.stop().await;
}

#[tokio::test]
async fn an_invalid_routing_file_keeps_the_old_table() {
    let (topic, connector) =
        connector_on_new_topic("kept", |s| s.routing.watch_interval_ms = 100).await;

    let broken = routes_toml(&topic, &[("bad", &[], &["elsewhere"])]);
    replace_routing_file(&connector, &broken, "failed").await;
    post_seed_sample(&connector.endpoint()).await;
    read_exactly(&topic, 4);
    let (_, _, text) = get_text(&format!("{}/metrics", connector.url)).await;
    assert_eq!(metric(&text, &reloads("ok")), None);
    connector.stop().await;
}

/// A directory laid out as the kubelet mounts a ConfigMap: the data in a
/// timestamped directory, `..data` a symlink to it, and the file a symlink through
/// `..data`.
struct ConfigMapVolume {
    root: PathBuf,
    version: u32,
}

impl ConfigMapVolume {
    const FILE: &'static str = "routes.toml";

    fn create(root: &Path, routes_toml: &str) -> ConfigMapVolume {
        let mut volume = ConfigMapVolume {
            root: root.to_path_buf(),
            version: 0,
        };
        volume.update(routes_toml);
        std::os::unix::fs::symlink(Path::new("..data").join(Self::FILE), volume.file()).unwrap();
        volume
    }

    /// The path the connector is given: `<root>/routes.toml`.
    fn file(&self) -> PathBuf {
        self.root.join(Self::FILE)
    }

    /// Updates the data as the kubelet does: writes a new timestamped directory,
    /// points a new symlink at it, renames that over `..data` (atomically), and
    /// removes the old directory.
    fn update(&mut self, routes_toml: &str) {
        self.version += 1;
        let data = format!(
            "..2026_12_07_10_00_{:02}.{}",
            self.version,
            1000 + self.version
        );
        std::fs::create_dir(self.root.join(&data)).unwrap();
        std::fs::write(self.root.join(&data).join(Self::FILE), routes_toml).unwrap();
        let staged = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&data, &staged).unwrap();
        let old = std::fs::read_link(self.root.join("..data")).ok();
        std::fs::rename(&staged, self.root.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(self.root.join(old)).unwrap();
        }
    }
}

#[tokio::test]
async fn a_configmap_update_is_taken_and_a_broken_one_refused() {
    let [first, second] = new_topics(["configmap-first", "configmap-second"]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut volume = ConfigMapVolume::create(dir.path(), &routes_toml(&first, &[]));
    let mut settings = test_settings();
    settings.routing.watch_interval_ms = 100;
    let connector = start_connector_on(settings, volume.file(), dir).await;
    post_seed_sample(&connector.endpoint()).await;

    volume.update(&routes_toml(&second, &[]));
    wait_for_metric(&connector.url, &reloads("ok"), 1.0).await;
    post_seed_sample(&connector.endpoint()).await;
    volume.update(&routes_toml(&second, &[("bad", &[], &["elsewhere"])]));
    wait_for_metric(&connector.url, &reloads("failed"), 1.0).await;
    post_seed_sample(&connector.endpoint()).await;

    read_exactly(&first, 4);
    read_exactly(&second, 8);
    connector.stop().await;
}

#[tokio::test]
async fn a_reload_never_reroutes_a_request_in_flight() {
    let [old, new] = new_topics(["old", "new"]).await;
    let connector = watching_connector(&old).await;

    // The request starts (headers and half its body) under the old table...
    let body = seed_sample();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut stream = tokio::net::TcpStream::connect(connector.addr())
        .await
        .unwrap();
    let request_head = format!(
        "POST /webhooks/customer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request_head.as_bytes()).await.unwrap();
    stream.write_all(head).await.unwrap();
    // The connector holds the half it received: the request has started.
    wait_for_metric_to(&connector.url, HELD_BYTES, |held| {
        held >= Some(head.len() as f64)
    })
    .await;
    // ...the table changes while it is in flight...
    replace_routing_file(&connector, &routes_toml(&new, &[]), "ok").await;
    // ...and it completes under the table it started with.
    stream.write_all(tail).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    read_exactly(&old, 4);
    read_exactly(&new, 0);
    // A request that starts now uses the new table.
    post_seed_sample(&connector.endpoint()).await;
    read_exactly(&new, 4);
    connector.stop().await;
}

#[tokio::test]
async fn sighup_reloads_the_routing_file() {
    let [first, second] = new_topics(["first", "second"]).await;
    // No polling: only the signal may reload.
    let mut process = spawn_connector(
        &kafka(),
        &routes_toml(&first, &[]),
        &[("CONNECTOR__ROUTING__WATCH_INTERVAL_MS", "0")],
    )
    .await;
    let (url, routes) = (process.url.clone(), process.routes_file.clone());
    let endpoint = format!("{url}/webhooks/customer");

    std::fs::write(&routes, routes_toml(&second, &[])).unwrap();
    // Time passing: long enough for a watcher to have seen the change, were
    // there one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    post_seed_sample(&endpoint).await;
    process.signal("-HUP");
    wait_for_metric(&url, &reloads("ok"), 1.0).await;
    post_seed_sample(&endpoint).await;

    process.signal("-TERM");
    assert!(process.child.0.wait().unwrap().success());
    read_exactly(&first, 4);
    read_exactly(&second, 4);
}

#[test]
fn check_with_kafka_verifies_that_every_routed_topic_exists() {
    let present = unique_topic("present");
    let missing = unique_topic("missing");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(create_topics(&[&present]));
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    let check = |routes_text: String| {
        std::fs::write(&routes, routes_text).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_webhook-connector"))
            .args(["check", "--kafka", "--config", "config/default.toml"])
            .env("CONNECTOR__KAFKA__BOOTSTRAP_SERVERS", kafka())
            .env("CONNECTOR__ROUTING__FILE", &routes)
            .env("CONNECTOR__WEBHOOK__ALLOW_UNSIGNED", "true")
            .env(
                "CONNECTOR__PRIVACY__KEY",
                "operations-test-key-0123456789abcdef",
            )
            // The example's dead-letter topic is not under test here.
            .env("CONNECTOR__ARCHIVE__DEAD_LETTER_TOPIC", "")
            .output()
            .unwrap()
    };
    let ok = check(routes_toml(&present, &[]));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("all 1 topics exist"));

    let failed = check(routes_toml(&present, &[("r", &["X"], &[&missing])]));
    assert_eq!(failed.status.code(), Some(69));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains(&format!("routed topics missing in Kafka: {missing}")),
        "{stderr}"
    );
}
