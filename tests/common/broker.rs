//! Brokers: the shared test broker `scripts/test.sh` started, topics on it, and
//! brokers of a test's own to pause, kill and restart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use webhook_connector::config::KafkaSettings;
use webhook_connector::sink::admin;

use super::process::{free_port, send_signal, wait_until, KillOnDrop};

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

/// Kafka settings with `bootstrap` and every other setting at its default.
pub fn kafka_settings(bootstrap: &str) -> KafkaSettings {
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

/// A [`unique_topic`] name per label, not created.
pub fn unique_topics<const N: usize>(labels: [&str; N]) -> [String; N] {
    labels.map(unique_topic)
}

/// New topics on the test broker: a [`unique_topic`] name per label, created by
/// [`create_topics`].
pub async fn new_topics<const N: usize>(labels: [&str; N]) -> [String; N] {
    let topics = unique_topics(labels);
    create_topics(&topics.each_ref().map(String::as_str)).await;
    topics
}

/// Creates single-partition topics, so reading one back gives production order.
pub async fn create_topics(topics: &[&str]) {
    create_topics_on(&kafka(), topics).await
}

/// [`create_topics`] on the broker at `bootstrap`.
pub async fn create_topics_on(bootstrap: &str, topics: &[&str]) {
    let outcomes = admin::create_topics(&kafka_settings(bootstrap), topics, &[], 1, 1)
        .await
        .unwrap_or_else(|e| panic!("cannot create topics on the test broker: {e}"));
    assert_eq!(outcomes.len(), topics.len());
}

/// The configuration of `topic` on the test broker as the admin API describes it
/// (DescribeConfigs): entry name -> value.
pub async fn topic_config(topic: &str) -> BTreeMap<String, Option<String>> {
    let client: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .create()
        .expect("admin client is created");
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let mut results = client
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
        .await
        .unwrap_or_else(|e| panic!("topic {topic}: DescribeConfigs failed: {e}"));
    assert_eq!(results.len(), 1, "topic {topic}: {results:?}");
    let resource = results
        .remove(0)
        .unwrap_or_else(|code| panic!("topic {topic}: DescribeConfigs answered {code}"));
    resource
        .entries
        .into_iter()
        .map(|entry| (entry.name, entry.value))
        .collect()
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
    child: KillOnDrop,
    port: u16,
}

impl Broker {
    pub fn start() -> Broker {
        let port = free_port();
        Broker {
            child: spawn_broker(port),
            port,
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        assert!(send_signal(&self.child.0, signal), "kill {signal} failed");
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
        self.kill();
        self.start_again();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // A paused broker is resumed first; `child` then kills it.
        send_signal(&self.child.0, "-CONT");
    }
}

/// Starts Tansu on 127.0.0.1:`port` and waits until it accepts connections.
fn spawn_broker(port: u16) -> KillOnDrop {
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
    let child = KillOnDrop(child);
    wait_until(
        &format!("broker did not listen on {port}"),
        Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    child
}

impl Broker {
    /// SIGKILL, returning once the process is gone, and its storage with it (in
    /// memory); [`start_again`](Self::start_again) brings a new, empty broker up.
    /// [`restart`](Self::restart) in two steps, for a test that needs the moment
    /// between.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// After [`kill`](Self::kill): a new broker on the same port (empty).
    pub fn start_again(&mut self) {
        let port = self.port;
        // The port may take a moment to be free again.
        wait_until(
            &format!("port {port} stayed busy"),
            Duration::from_secs(10),
            || std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        );
        self.child = spawn_broker(port);
    }
}
