//! The connector under test: in this process on a free loopback port, or the
//! binary run as a process of its own (for real signals and its log).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use webhook_connector::app::{self, RunningServer};
use webhook_connector::config::routing_file;
use webhook_connector::config::Settings;
use webhook_connector::routing::RoutingTable;

use super::broker::{create_topics, create_topics_on, kafka, kafka_settings, unique_topic, Broker};
use super::fixtures::{routes_file, routes_toml, routing_table, seed_sample};
use super::http::{http_client, post, wait_for_metric, Answer, IN_FLIGHT};
use super::process::{free_port, send_signal, KillOnDrop};

/// A connector running in this process on a free loopback port.
pub struct Connector {
    pub server: RunningServer,
    pub url: String,
    /// The routing file the connector watches.
    pub routes_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Connector {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The customer webhook's URL.
    pub fn endpoint(&self) -> String {
        self.webhook("customer")
    }

    /// The URL of the webhook of `entity` (`customer`, `booking`).
    pub fn webhook(&self, entity: &str) -> String {
        format!("{}/webhooks/{entity}", self.url)
    }

    pub async fn stop(self) {
        self.server
            .shutdown()
            .await
            .expect("the server task ends without panicking");
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
pub async fn start_connector(settings: Settings, routes_toml: &str) -> Connector {
    let (dir, routes_file) = routes_file(routes_toml);
    start_connector_on(settings, routes_file, dir).await
}

/// Starts a connector watching the routing file at `routes_file`, which lives in
/// `dir` (kept as long as the connector runs).
pub async fn start_connector_on(
    mut settings: Settings,
    routes_file: PathBuf,
    dir: tempfile::TempDir,
) -> Connector {
    settings.routing.file = routes_file.clone();
    let routes = routing_file::load(&routes_file, settings.privacy_key().as_ref())
        .expect("the routing file is valid");
    let server = app::start(&settings, routes)
        .await
        .expect("connector starts");
    let url = format!("http://{}", server.addr());
    Connector {
        server,
        url,
        routes_file,
        _dir: dir,
    }
}

/// [`start_connector`], and the routing table it loads from `routes_toml` (for
/// [`super::kafka::Check::for_topic`]).
pub async fn start_connector_and_table(
    settings: Settings,
    routes_toml: &str,
) -> (Connector, RoutingTable) {
    let table = routing_table(routes_toml, &settings);
    (start_connector(settings, routes_toml).await, table)
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

/// [`connector_on_own_broker`] with `delivery_timeout`, warmed up ([`warm_up`]):
/// its producer holds a producer id from the broker, ready for the broker to fail.
pub async fn warm_connector_on_own_broker(
    label: &str,
    delivery_timeout: Duration,
) -> (Broker, String, Connector) {
    let (broker, topic, connector) = connector_on_own_broker(label, |s| {
        s.kafka.delivery_timeout_ms = delivery_timeout.as_millis() as u64;
    })
    .await;
    warm_up(&connector.endpoint()).await;
    (broker, topic, connector)
}

/// Posts the seed sample to `endpoint` until it is answered 200 (at most 10 s):
/// the connector's producer is then connected and has its producer id, which
/// librdkafka takes about a second to get after the producer is created.
pub async fn warm_up(endpoint: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = post(endpoint, seed_sample(), &[]).await;
        if answer.status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "not warm after 10 s: {answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Warms the connector's producer up ([`warm_up`]), pauses `broker`, and sends
/// `count` seed-sample requests that then wait for Kafka; returns once all `count`
/// are in flight (by the connector's gauge), with their pending answers.
pub async fn hold_requests(
    connector: &Connector,
    broker: &Broker,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Answer>> {
    warm_up(&connector.endpoint()).await;
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

/// The connector binary running as a process of its own, for tests with real
/// signals; killed when dropped.
pub struct ConnectorProcess {
    pub child: KillOnDrop,
    pub url: String,
    pub port: u16,
    pub routes_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl ConnectorProcess {
    pub fn endpoint(&self) -> String {
        format!("{}/webhooks/customer", self.url)
    }

    /// Sends `signal` (`-TERM`, `-HUP`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        assert!(send_signal(&self.child.0, signal), "kill {signal} failed");
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
    let at = Listen {
        port: free_port(),
        log: log.into(),
    };
    spawn_connector_at(at, bootstrap, routes_toml, env).await
}

/// Where a spawned connector listens (a loopback port) and where its log goes.
pub struct Listen {
    pub port: u16,
    pub log: std::process::Stdio,
}

/// [`spawn_connector`] listening `at` a given port, its log (stderr) going to `at.log`.
pub async fn spawn_connector_at(
    at: Listen,
    bootstrap: &str,
    routes_toml: &str,
    env: &[(&str, &str)],
) -> ConnectorProcess {
    let (dir, routes_file) = routes_file(routes_toml);
    let Listen { port, log } = at;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_webhook-connector"));
    command
        .args(["run", "--config", "config/default.toml"])
        .env("CONNECTOR__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("CONNECTOR__KAFKA__BOOTSTRAP_SERVERS", bootstrap)
        .env("CONNECTOR__ROUTING__FILE", &routes_file)
        .env("CONNECTOR__WEBHOOK__ALLOW_UNSIGNED", "true")
        // The example settings key event ids, which needs a privacy key.
        .env(
            "CONNECTOR__PRIVACY__KEY",
            "spawned-connector-test-key-0123456789",
        )
        // The example's dead-letter topic is not on the test broker: off unless a
        // test sets it.
        .env("CONNECTOR__ARCHIVE__DEAD_LETTER_TOPIC", "")
        // SIGTERM stops accepting at once unless a test sets a drain delay.
        .env("CONNECTOR__SERVER__DRAIN_DELAY_MS", "0")
        .env("CONNECTOR__LOG__LEVEL", "warn");
    for (name, value) in env {
        command.env(name, value);
    }
    command.stderr(log);
    let mut child = KillOnDrop(command.spawn().expect("the connector starts"));
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let http = http_client();
    while http.get(format!("{url}/healthz")).send().await.is_err() {
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
