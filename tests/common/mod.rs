//! Shared helpers of the integration tests: the broker address, unique topics, an
//! in-process connector on a free loopback port, an HTTP client and a consumer
//! that reads topics back over the Kafka protocol.
//!
//! The broker is started by `scripts/test.sh`, which exports its address as
//! `WEBHOOK_CONNECTOR_TEST_KAFKA`. Without it these tests fail; they never skip.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use webhook_connector::app::{self, RunningServer};
use webhook_connector::config::{KafkaSettings, Settings};
use webhook_connector::sink::admin;

pub const KAFKA_ENV: &str = "WEBHOOK_CONNECTOR_TEST_KAFKA";

/// The test broker's `host:port`; panics with instructions when there is none.
pub fn kafka() -> String {
    std::env::var(KAFKA_ENV).unwrap_or_else(|_| {
        panic!(
            "{KAFKA_ENV} is not set: these tests need a Kafka-compatible broker. \
             Run them with `scripts/test.sh`, which starts one."
        )
    })
}

fn kafka_settings(bootstrap: &str) -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers: bootstrap.to_string(),
        ..KafkaSettings::default()
    }
}

/// A topic name no other test (or earlier run against the same broker) uses.
pub fn unique_topic(label: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test.{label}.{}-{nanos}-{n}", std::process::id())
}

/// Creates single-partition topics, so reading one back gives production order.
pub async fn create_topics(topics: &[&str]) {
    create_topics_on(&kafka(), topics).await
}

/// [`create_topics`] on the broker at `bootstrap`.
pub async fn create_topics_on(bootstrap: &str, topics: &[&str]) {
    let outcomes = admin::create_topics(&kafka_settings(bootstrap), topics, 1, 1)
        .await
        .unwrap_or_else(|e| panic!("cannot create topics on the test broker: {e}"));
    assert_eq!(outcomes.len(), topics.len());
}

/// A connector running in this process on a free loopback port.
pub struct Connector {
    pub server: RunningServer,
    pub url: String,
    /// The routing file the connector watches.
    pub routes_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Connector {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn endpoint(&self) -> String {
        format!("{}/webhooks/customer", self.url)
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}

/// Settings for a test connector: loopback, port 0, the test broker.
pub fn test_settings() -> Settings {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.kafka = kafka_settings(&kafka());
    settings.webhook.allow_unsigned = true;
    settings
}

/// Starts a connector with `routes_toml` as its routing file (written to a
/// temporary file it watches).
pub async fn start_connector(mut settings: Settings, routes_toml: &str) -> Connector {
    let dir = tempfile::tempdir().unwrap();
    let routes_file = dir.path().join("routes.toml");
    std::fs::write(&routes_file, routes_toml).unwrap();
    settings.routing.file = routes_file.clone();
    let server = app::start(&settings).await.expect("connector starts");
    let url = format!("http://{}", server.addr());
    Connector {
        server,
        url,
        routes_file,
        _dir: dir,
    }
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

/// An HTTP answer: status, headers and the body parsed as JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

/// POSTs `body` as `application/json` with extra headers.
pub async fn post(url: &str, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer(request.send().await.expect("the connector answers")).await
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("a complete body");
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "status {status}: body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Answer {
        status,
        headers,
        json,
    }
}

/// The seed sample notification as bytes.
pub fn seed_sample() -> Vec<u8> {
    std::fs::read("tests/fixtures/seed_sample.json").expect("fixture exists")
}

/// A record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub key: Option<String>,
    pub value: Value,
    /// Header name -> value; `None` for a header with a null value.
    pub headers: BTreeMap<String, Option<String>>,
}

/// A consumer of partition 0 of `topic`, from the beginning, outside any group.
fn consumer_of(bootstrap: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_topic("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer is created");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).expect("partition is assigned");
    consumer
}

/// Reads a single-partition topic from the beginning until `count` records
/// arrived or 15 s passed.
fn read(bootstrap: &str, topic: &str, count: usize) -> Vec<Record> {
    let consumer = consumer_of(bootstrap, topic);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut records = Vec::new();
    while records.len() < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => panic!("topic {topic}: consumer error: {e}"),
            Some(Ok(message)) if message.key() == Some(SENTINEL_KEY.as_bytes()) => {}
            Some(Ok(message)) => records.push(to_record(&message)),
        }
    }
    records
}

fn to_record(message: &impl Message) -> Record {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let headers = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(text)))
                .collect()
        })
        .unwrap_or_default();
    Record {
        topic: message.topic().to_string(),
        key: message.key().map(text),
        value: serde_json::from_slice(message.payload().unwrap_or_default())
            .expect("record value is JSON"),
        headers,
    }
}

/// At least `count` records of `topic`, from its beginning.
pub fn read_topic(topic: &str, count: usize) -> Vec<Record> {
    let records = read(&kafka(), topic, count);
    assert!(
        records.len() >= count,
        "topic {topic}: {} of {count} records after 15 s",
        records.len()
    );
    records
}

/// Exactly `count` records of `topic`: fails when fewer arrive or more follow.
pub fn read_exactly(topic: &str, count: usize) -> Vec<Record> {
    read_exactly_on(&kafka(), topic, count)
}

/// The key of the marker records [`read_exactly_on`] writes; reads skip them.
const SENTINEL_KEY: &str = "test-sentinel";

/// [`read_exactly`] on the broker at `bootstrap`. It writes a marker record after
/// everything under test was answered, then reads up to the marker: "exactly N"
/// (and "exactly 0") is then a checked fact, not a read that merely found nothing.
pub fn read_exactly_on(bootstrap: &str, topic: &str, count: usize) -> Vec<Record> {
    let marker = uuid::Uuid::new_v4().to_string();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create()
        .expect("producer is created");
    producer
        .send(
            BaseRecord::to(topic)
                .partition(0)
                .key(SENTINEL_KEY)
                .payload(&marker),
        )
        .map_err(|(e, _)| e)
        .expect("marker is queued");
    producer
        .flush(Duration::from_secs(10))
        .expect("marker is written");

    let consumer = consumer_of(bootstrap, topic);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut records = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "topic {topic}: marker not seen after 15 s; read {} records",
            records.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => panic!("topic {topic}: consumer error: {e}"),
            Some(Ok(message)) => {
                if message.key() == Some(SENTINEL_KEY.as_bytes()) {
                    if message.payload() == Some(marker.as_bytes()) {
                        break;
                    }
                    continue; // an earlier check's marker
                }
                records.push(to_record(&message));
            }
        }
    }
    assert_eq!(
        records.len(),
        count,
        "topic {topic}: expected exactly {count} records: {records:#?}"
    );
    records
}

/// Every record of `topic`: reads until none arrived for `quiet` (at most 60 s).
pub fn read_all_on(bootstrap: &str, topic: &str, quiet: Duration) -> Vec<Record> {
    let consumer = consumer_of(bootstrap, topic);
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut last_seen = Instant::now();
    let mut records = Vec::new();
    while last_seen.elapsed() < quiet && Instant::now() < give_up {
        match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => panic!("topic {topic}: consumer error: {e}"),
            Some(Ok(message)) => {
                if message.key() != Some(SENTINEL_KEY.as_bytes()) {
                    records.push(to_record(&message));
                }
                last_seen = Instant::now();
            }
        }
    }
    records
}

/// The Tansu binary `scripts/test.sh` installed, for tests that need a broker of
/// their own to pause, kill and restart.
pub fn tansu_binary() -> String {
    std::env::var("WEBHOOK_CONNECTOR_TANSU").unwrap_or_else(|_| {
        panic!(
            "WEBHOOK_CONNECTOR_TANSU is not set: fault tests start their own broker. \
             Run them with `scripts/test.sh`."
        )
    })
}

/// A broker of this test's own on a free loopback port; killed when dropped.
pub struct Broker {
    child: std::process::Child,
    port: u16,
}

impl Broker {
    pub fn start() -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Broker::start_on(port)
    }

    fn start_on(port: u16) -> Broker {
        Broker {
            child: spawn_broker(port),
            port,
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGSTOP: the broker keeps its sockets but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGKILL, then a new broker on the same port (in-memory storage: empty).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.port;
        // The port may take a moment to be free again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "port {port} stayed busy");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = spawn_broker(port);
    }
}

/// Starts Tansu on 127.0.0.1:`port` and waits until it accepts connections.
fn spawn_broker(port: u16) -> std::process::Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let child = std::process::Command::new(tansu_binary())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tansu starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "broker did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when dropped, so a failing test leaves nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The connector binary running as a process of its own, for tests with real
/// signals; killed when dropped.
pub struct ConnectorProcess {
    pub child: KillOnDrop,
    pub url: String,
    pub port: u16,
    pub routes_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl ConnectorProcess {
    pub fn endpoint(&self) -> String {
        format!("{}/webhooks/customer", self.url)
    }

    /// Sends `signal` (`-TERM`, `-HUP`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }
}

/// Runs `webhook-connector run` with `config/default.toml`, `routes_toml` as its
/// routing file, the broker at `bootstrap` and the extra `env` overrides, on a free
/// loopback port; returns once `/healthz` answers.
pub async fn spawn_connector(
    bootstrap: &str,
    routes_toml: &str,
    env: &[(&str, &str)],
) -> ConnectorProcess {
    spawn_connector_logging(bootstrap, routes_toml, env, std::process::Stdio::inherit()).await
}

/// [`spawn_connector`] with the connector's log (stderr) going to `log`.
pub async fn spawn_connector_logging(
    bootstrap: &str,
    routes_toml: &str,
    env: &[(&str, &str)],
    log: impl Into<std::process::Stdio>,
) -> ConnectorProcess {
    let dir = tempfile::tempdir().unwrap();
    let routes_file = dir.path().join("routes.toml");
    std::fs::write(&routes_file, routes_toml).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_webhook-connector"));
    command
        .args(["run", "--config", "config/default.toml"])
        .env("CONNECTOR__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("CONNECTOR__KAFKA__BOOTSTRAP_SERVERS", bootstrap)
        .env("CONNECTOR__ROUTING__FILE", &routes_file)
        .env("CONNECTOR__WEBHOOK__ALLOW_UNSIGNED", "true")
        .env("CONNECTOR__LOG__LEVEL", "warn");
    for (name, value) in env {
        command.env(name, value);
    }
    command.stderr(log);
    let mut child = KillOnDrop(command.spawn().expect("the connector starts"));
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while reqwest::get(format!("{url}/healthz")).await.is_err() {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the connector exited at start"
        );
        assert!(Instant::now() < deadline, "the connector did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ConnectorProcess {
        child,
        url,
        port,
        routes_file,
        _dir: dir,
    }
}

/// A new topic on the test broker and an in-process connector sending everything
/// there; `configure` adjusts the connector's settings first.
pub async fn connector_on_new_topic(
    label: &str,
    configure: impl FnOnce(&mut Settings),
) -> (String, Connector) {
    let topic = unique_topic(label);
    create_topics(&[&topic]).await;
    let mut settings = test_settings();
    configure(&mut settings);
    let connector = start_connector(settings, &routes_toml(&topic, &[])).await;
    (topic, connector)
}

/// A broker of the test's own with one topic, and an in-process connector sending
/// everything there; `configure` adjusts the connector's settings first.
pub async fn connector_on_own_broker(
    label: &str,
    configure: impl FnOnce(&mut Settings),
) -> (Broker, String, Connector) {
    let broker = Broker::start();
    let topic = unique_topic(label);
    create_topics_on(&broker.bootstrap(), &[&topic]).await;
    let mut settings = test_settings();
    settings.kafka.bootstrap_servers = broker.bootstrap();
    configure(&mut settings);
    let connector = start_connector(settings, &routes_toml(&topic, &[])).await;
    (broker, topic, connector)
}

/// A broker of the test's own with one topic, and the connector binary run as a
/// process sending everything there, with the extra `env` overrides.
pub async fn process_on_own_broker(
    label: &str,
    env: &[(&str, &str)],
) -> (Broker, String, ConnectorProcess) {
    let broker = Broker::start();
    let topic = unique_topic(label);
    create_topics_on(&broker.bootstrap(), &[&topic]).await;
    let process = spawn_connector(&broker.bootstrap(), &routes_toml(&topic, &[]), env).await;
    (broker, topic, process)
}

/// GETs `url` and parses the JSON answer.
pub async fn get_json(url: &str) -> Answer {
    answer(reqwest::get(url).await.expect("the connector answers")).await
}

/// The value of the metric line starting with `series` (name and labels).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
}

/// The text of `{url}/metrics`.
pub async fn metrics_text(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .expect("the connector answers")
        .text()
        .await
        .expect("a complete body")
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
/// The series of bytes of bodies and records held.
pub const HELD_BYTES: &str = "webhook_connector_held_bytes";

/// Warms the connector's producer up with one request, pauses `broker`, and sends
/// `count` seed-sample requests that then wait for Kafka; returns once all `count`
/// are in flight (by the connector's gauge), with their pending answers.
pub async fn hold_requests(
    connector: &Connector,
    broker: &Broker,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Answer>> {
    let warm = post(&connector.endpoint(), seed_sample(), &[]).await;
    assert_eq!(warm.status, 200, "{:?}", warm.json);
    broker.pause();
    let held = (0..count)
        .map(|_| {
            let endpoint = connector.endpoint();
            tokio::spawn(async move { post(&endpoint, seed_sample(), &[]).await })
        })
        .collect();
    wait_for_metric(&connector.url, IN_FLIGHT, count as f64).await;
    held
}
