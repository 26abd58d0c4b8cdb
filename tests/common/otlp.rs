//! A real OTLP/HTTP receiver for the trace tests: `tests/fixtures/otlp_receiver.py`,
//! which decodes what the connector exports with the official `opentelemetry-proto`
//! package (installed by `scripts/test.sh`, which names its Python in
//! `WEBHOOK_CONNECTOR_OTLP_PYTHON`). Without it the tests fail; they never skip.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::KillOnDrop;

/// Where `scripts/test.sh` says the receiver's Python is.
pub const OTLP_PYTHON_ENV: &str = "WEBHOOK_CONNECTOR_OTLP_PYTHON";

/// The receiver, running until stopped or dropped; spans arrive in `spans_file`.
pub struct Collector {
    child: KillOnDrop,
    pub port: u16,
    spans_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Collector {
    pub fn start() -> Collector {
        let python = std::env::var(OTLP_PYTHON_ENV).unwrap_or_else(|_| {
            panic!("{OTLP_PYTHON_ENV} is not set: run the tests with scripts/test.sh, which installs the OTLP decoder")
        });
        let dir = tempfile::tempdir().unwrap();
        let spans_file = dir.path().join("spans.jsonl");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/otlp_receiver.py"
        );
        let mut child = Command::new(&python)
            .args([script, spans_file.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{python} {script} does not start: {e}"));
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the receiver said {line:?}"));
        Collector {
            child: KillOnDrop(child),
            port,
            spans_file,
            _dir: dir,
        }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for this receiver.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far (whole lines: one may be being written).
    pub fn spans(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.spans_file).unwrap_or_default();
        (text.split_inclusive('\n'))
            .filter(|line| line.ends_with('\n'))
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The spans received once `done` holds for them (at most 20 s).
    pub fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} among the spans received: {spans:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the receiver: its port refuses connections from now on.
    pub fn stop(mut self) {
        self.child.kill();
    }
}

/// Owned `env` pairs as a spawned connector or command takes them.
pub fn as_env(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The OTLP settings of a connector exporting to `collector` at once (a
/// 100 ms batch delay), as `service_name`.
pub fn exporting_to(collector: &Collector, service_name: &str) -> Vec<(String, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector.endpoint()),
        ("OTEL_SERVICE_NAME".into(), service_name.into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ]
}
