//! The example consumer (`examples/consumer.rs`) run as a downstream team runs it, as a
//! process in a consumer group on the test broker, reading what the connector wrote.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

/// How long the consumer waits for a record, once it has its partitions, before
/// it exits.
const IDLE_MS: &str = "1500";

/// The example's binary, built once per test binary by cargo: a run of this file
/// alone (`--test consumer`) does not build examples, and an earlier build may be
/// stale. It goes where this test binary is, `<target>/<profile>/deps/consumer-<hash>`.
fn example_binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
        let target_dir = profile_dir.parent().unwrap();
        let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
            "debug" => "dev",
            other => other,
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let build = Command::new(cargo)
            .args([
                "build",
                "--locked",
                "--example",
                "consumer",
                "--profile",
                profile,
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo runs");
        let output = String::from_utf8_lossy(&build.stderr);
        assert!(
            build.status.success(),
            "building the example failed:\n{output}"
        );
        profile_dir.join("examples").join("consumer")
    })
}

/// What one run of the example consumer wrote.
struct Run {
    /// Its stdout, one line per event.
    lines: Vec<String>,
    /// Its log (stderr).
    log: String,
}

impl Run {
    /// The `event_id` of each printed event, in the order printed.
    fn event_ids(&self) -> Vec<String> {
        self.lines
            .iter()
            .map(|line| {
                let event: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nlog:\n{}", self.log));
                event["event_id"].as_str().unwrap().to_string()
            })
            .collect()
    }

    /// How many log lines contain `text`.
    fn logged(&self, text: &str) -> usize {
        self.log.lines().filter(|line| line.contains(text)).count()
    }
}

/// Runs the example consumer with `args` and `--exit-when-idle-ms`; waits (at most
/// 60 s, then it is killed) for it to exit 0.
fn run_consumer(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = KillOnDrop(
        Command::new(example_binary())
            .args([
                "--bootstrap-servers",
                &kafka(),
                "--exit-when-idle-ms",
                IDLE_MS,
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("the example consumer starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill();
            let log = std::fs::read_to_string(&stderr).unwrap();
            panic!("the example consumer did not exit within 60 s; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        status.success(),
        "the example consumer: {status}; log:\n{log}"
    );
    let lines = std::fs::read_to_string(&stdout).unwrap();
    Run {
        lines: lines.lines().map(str::to_string).collect(),
        log,
    }
}

/// Writes `value` to partition 0 of `topic`, as another producer would.
fn produce(topic: &str, value: &str) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .create()
        .expect("producer is created");
    let record = BaseRecord::to(topic).partition(0).key("862").payload(value);
    producer
        .send(record)
        .map_err(|(e, _)| e)
        .expect("record is queued");
    producer
        .flush(Duration::from_secs(10))
        .expect("record is written");
}

/// The event ids of a 200 answer.
fn answered_ids(answer: &Answer) -> Vec<String> {
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let ids = answer.json["event_ids"].as_array().expect("event_ids");
    ids.iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_example_consumer_prints_each_event_once_when_a_notification_is_posted_twice() {
    let (topic, connector) = connector_on_new_topic("consumer", |_| {}).await;
    let first = answered_ids(&post(&connector.endpoint(), seed_sample(), &[]).await);
    let retry = answered_ids(&post(&connector.endpoint(), seed_sample(), &[]).await);
    assert_eq!(first.len(), 4);
    assert_eq!(
        retry, first,
        "a retried notification has the same event ids"
    );
    // Both copies are in Kafka. (This also writes a marker record that is not JSON.)
    let records = read_exactly(&topic, 8);
    // Records the consumer must skip (and commit): a value that is not an object, an
    // event of a schema it does not know.
    produce(&topic, "[1, 2]");
    let mut future = records[0].value.clone();
    future["schema_version"] = json!(2);
    future["event_id"] = json!(uuid::Uuid::new_v4().to_string());
    produce(&topic, &future.to_string());

    let group = unique_topic("group");
    let args = ["--topic", topic.as_str(), "--group", group.as_str()];
    let run = run_consumer(&args);
    // Each event once, in the order written (one partition), each line the record's
    // value.
    assert_eq!(run.event_ids(), first, "log:\n{}", run.log);
    for (line, record) in run.lines.iter().zip(&records) {
        assert_eq!(serde_json::from_str::<Value>(line).unwrap(), record.value);
    }
    // Each new event's handling continues the trace of the span that wrote it.
    for record in &records[..4] {
        let traceparent = record.headers["traceparent"].clone().unwrap();
        let [_, trace, span, _] = traceparent.split('-').collect::<Vec<_>>()[..] else {
            panic!("{traceparent}")
        };
        let id = record.value["event_id"].as_str().unwrap();
        let handled = format!("event {id} handled in trace {trace} as span ");
        let line = (run.log.lines()).find(|line| line.contains(&handled));
        let line = line.unwrap_or_else(|| panic!("no {handled:?} in the log:\n{}", run.log));
        assert!(line.ends_with(&format!(", child of span {span}")), "{line}");
    }
    assert_eq!(run.logged("duplicate of event"), 4, "log:\n{}", run.log);
    assert_eq!(
        run.logged("skipped: not a JSON object"),
        2,
        "log:\n{}",
        run.log
    );
    assert_eq!(
        run.logged("skipped: schema_version 2"),
        1,
        "log:\n{}",
        run.log
    );

    // The same group again: it is given the partition, and everything was committed.
    let again = run_consumer(&args);
    assert!(again.lines.is_empty(), "printed again: {:?}", again.lines);
    assert_eq!(
        again.logged(&format!("assigned: {topic}/0")),
        1,
        "log:\n{}",
        again.log
    );
    assert_eq!(again.logged("skipped"), 0, "log:\n{}", again.log);

    // Something new: the same group resumes after what it committed and prints only
    // that (its memory of event ids is empty: this is the committed offset at work).
    let other_customer = String::from_utf8(seed_sample())
        .unwrap()
        .replace("\"Id\": 862", "\"Id\": 863");
    let new = answered_ids(&post(&connector.endpoint(), other_customer, &[]).await);
    assert!(new.iter().all(|id| !first.contains(id)));
    let resumed = run_consumer(&args);
    assert_eq!(resumed.event_ids(), new, "log:\n{}", resumed.log);
    connector.stop().await;
}

#[tokio::test]
async fn the_example_consumer_subscribed_by_pattern_reads_every_matching_topic_and_no_other() {
    // `<prefix>.contact`, `<prefix>.audit` and `<prefix>.marketing` match the pattern;
    // `other` does not. The SMS change goes to both contact and audit.
    let prefix = unique_topic("pattern");
    let contact = format!("{prefix}.contact");
    let audit = format!("{prefix}.audit");
    let marketing = format!("{prefix}.marketing");
    let other = unique_topic("other");
    create_topics(&[&contact, &audit, &marketing, &other]).await;
    let routes = routes_toml(
        &other,
        &[
            ("contact", &["CustomerSmsChanged"], &[&contact, &audit]),
            ("marketing", &["Customer*Marketing*Changed"], &[&marketing]),
        ],
    );
    let connector = start_connector(test_settings(), &routes).await;
    let ids = answered_ids(&post(&connector.endpoint(), seed_sample(), &[]).await);
    let unmatched = json!({
        "ChangeDateTime": "2018-11-16T10:46:20Z",
        "Customer": {"Id": 5},
        "Changes": [{"ChangeType": "CustomerNameChanged", "OldValue": "A", "NewValue": "B"}],
    });
    let other_ids = answered_ids(&post(&connector.endpoint(), unmatched.to_string(), &[]).await);
    assert_eq!(
        read_topic(&other, 1)[0].value["event_id"],
        json!(other_ids[0])
    );

    let pattern = format!("^{}\\..*", prefix.replace('.', "\\."));
    let group = unique_topic("group");
    let run = run_consumer(&["--pattern", &pattern, "--group", &group]);
    // Each event once: the SMS event, the same in two topics, is a duplicate once.
    let printed: Vec<String> = run.event_ids();
    let distinct: BTreeSet<&String> = printed.iter().collect();
    assert_eq!(printed.len(), distinct.len(), "log:\n{}", run.log);
    assert_eq!(distinct, ids.iter().collect(), "log:\n{}", run.log);
    let duplicate = format!("duplicate of event {}", ids[0]);
    assert_eq!(run.logged(&duplicate), 1, "log:\n{}", run.log);
    // Partitions are ordered, topics are not: the contact event comes before or after
    // the marketing ones, which keep their order.
    let marketing_order: Vec<&String> = printed.iter().filter(|id| **id != ids[0]).collect();
    assert_eq!(marketing_order, ids[1..].iter().collect::<Vec<_>>());
    assert_eq!(run.logged("duplicate"), 1, "log:\n{}", run.log);
    connector.stop().await;
}
