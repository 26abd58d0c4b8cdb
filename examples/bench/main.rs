//! The request-path benchmark, run by `scripts/bench.sh` (which builds everything in
//! release mode and starts the broker).
//!
//! 1. Generates a corpus of signed notifications and a wrk script that sends them.
//! 2. Starts the connector (signatures on) and drives `POST /webhooks/customer` with
//!    wrk at each concurrency level for a fixed duration: requests/s, events/s,
//!    latency percentiles, connector CPU seconds per 10 000 events, peak RSS.
//! 3. Measures latency at half the maximum throughput (wrk with a per-request pause).
//! 4. Soaks at concurrency 64 and reports RSS at start and end.
//! 5. Runs the baseline (the cheapest way to produce the same records with the same
//!    producer settings, see [`baseline`]) and reports, against it,
//!    `ratio = connector events/s / baseline events/s` and
//!    `cpu_ratio = connector CPU per event / baseline CPU per event`.
//!
//! This build is measured three times at every level: with no trace export (the
//! default), and exporting spans over OTLP to a collector that discards them
//! ([`collector`]) at sampling 1.0 and 0.01 (`--no-traces`: only the first).
//!
//! `--compare LABEL=BINARY[,CONFIG]` measures other builds (an earlier commit) or
//! settings at every concurrency level too, interleaved with this one, so before and
//! after come from the same run. Writes the results as JSON and prints a table.

mod baseline;
mod collector;
mod corpus;
mod process;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use serde_json::Value;

use webhook_connector::config::{routing_file, KafkaSettings, Settings};
use webhook_connector::routing::RoutingTable;
use webhook_connector::sink::admin;

// The connector's allocator (src/main.rs): the baseline's Rust side allocates as
// the connector's does (librdkafka uses the system malloc in both).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECRET: &str = "bench-secret";
/// `privacy.key` of the benchmarked connector and baseline (the example routes pseudonymise).
const PRIVACY_KEY: &str = "bench-privacy-key-of-at-least-32-bytes";

#[derive(Parser)]
// A later value wins: `scripts/bench.sh --rounds 1` overrides the script's own.
#[command(args_override_self = true)]
struct Args {
    /// The Tansu broker binary; every measurement starts a fresh broker, so none
    /// runs against the records an earlier one left behind.
    #[arg(long)]
    tansu: PathBuf,
    /// The connector binary (release build).
    #[arg(long)]
    connector: PathBuf,
    /// Seconds per concurrency level.
    #[arg(long, default_value_t = 15)]
    duration_secs: u64,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    levels: Vec<usize>,
    /// Seconds of the soak at concurrency 64 (0: none).
    #[arg(long, default_value_t = 120)]
    soak_secs: u64,
    /// Where to write the JSON results.
    #[arg(long)]
    out: PathBuf,
    /// Only write the wrk script of the corpus to this file (for profiling by hand).
    #[arg(long)]
    write_script: Option<PathBuf>,
    /// The connector's settings file; the baseline uses its Kafka properties too.
    #[arg(long, default_value = "config/default.toml")]
    config: PathBuf,
    /// Another connector to measure at every level, `LABEL=BINARY[,CONFIG]` (CONFIG
    /// defaults to `--config`); repeatable. Half load and soak run for `--connector` only.
    #[arg(long, value_parser = parse_variant)]
    compare: Vec<Variant>,
    /// Events the baseline produces (default: as many as the busiest level delivered,
    /// at least 10 000).
    #[arg(long)]
    baseline_events: Option<usize>,
    /// How many times to run every level of every connector and the baseline, in
    /// turn; the table shows medians (peak RSS: the highest; failures: the sum).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Measure this build without trace export only (no exporting variants).
    #[arg(long)]
    no_traces: bool,
}

/// A connector binary and settings file under a label.
#[derive(Clone)]
struct Variant {
    label: String,
    binary: PathBuf,
    config: PathBuf,
    /// More environment for the connector (trace export).
    env: Vec<(String, String)>,
}

fn parse_variant(text: &str) -> Result<Variant, String> {
    let (label, rest) = text
        .split_once('=')
        .ok_or("expected LABEL=BINARY[,CONFIG]")?;
    let (binary, config) = match rest.split_once(',') {
        Some((binary, config)) => (binary, Some(config)),
        None => (rest, None),
    };
    Ok(Variant {
        label: label.to_string(),
        binary: binary.into(),
        // Empty: filled in with `--config` once the arguments are parsed.
        config: config.map(PathBuf::from).unwrap_or_default(),
        env: Vec::new(),
    })
}

/// What wrk's `done` prints.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
struct WrkRun {
    requests: u64,
    duration_us: u64,
    non2xx: u64,
    connect_errors: u64,
    read_errors: u64,
    write_errors: u64,
    timeouts: u64,
    mean_us: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Level {
    /// Which connector (`this build` or a `--compare` label).
    connector: String,
    /// The round of a single run; `None` for the medians over every round.
    round: Option<usize>,
    concurrency: usize,
    requests_per_sec: f64,
    events_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    cpu_seconds_per_10k_events: f64,
    peak_rss_mib: f64,
    /// events/s over the baseline's events/s.
    ratio: f64,
    /// CPU per event over the baseline's CPU per event.
    cpu_ratio: f64,
    failed_requests: u64,
}

#[derive(Debug, Serialize)]
struct Results {
    machine: String,
    corpus_notifications: usize,
    corpus_mean_bytes: f64,
    corpus_mean_events: f64,
    duration_secs: u64,
    rounds: usize,
    /// The medians over the rounds (each round's runs are in `runs`).
    baseline: baseline::Baseline,
    baseline_runs: Vec<baseline::Baseline>,
    levels: Vec<Level>,
    runs: Vec<Level>,
    half_load: Option<Level>,
    soak: Option<Soak>,
}

#[derive(Debug, Serialize)]
struct Soak {
    seconds: u64,
    concurrency: usize,
    /// RSS before the soak's load (after the 2 s warm-up).
    rss_before_load_mib: f64,
    /// RSS once the load ran for 15 s (steady state: buffers and allocator pages filled).
    rss_start_mib: f64,
    rss_end_mib: f64,
    /// From `rss_start_mib` to `rss_end_mib`.
    growth_percent: f64,
    /// (seconds into the soak, RSS MiB) every 5 s.
    rss_series: Vec<(u64, f64)>,
    events_per_sec: f64,
    failed_requests: u64,
}

/// The connector process, stopped when dropped.
struct Connector {
    child: Child,
    port: u16,
    /// Which connector (`this build` or a `--compare` label).
    label: String,
}

/// A broker process, killed when dropped.
struct Broker {
    child: Child,
    bootstrap: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts an empty in-memory broker and creates the topics the connector writes to
/// (3 partitions): routed, state and `archive` ones.
async fn fresh_broker(
    tansu: &Path,
    settings: &KafkaSettings,
    routing: &RoutingTable,
    archive: &[&str],
) -> Broker {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the broker did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let broker = Broker {
        child,
        bootstrap: format!("127.0.0.1:{port}"),
    };
    let settings = KafkaSettings {
        bootstrap_servers: broker.bootstrap.clone(),
        ..settings.clone()
    };
    let mut topics: Vec<&str> = routing.all_topics().into_iter().collect();
    topics.extend(archive);
    let compacted: Vec<&str> = routing.states().iter().map(|s| s.topic.as_str()).collect();
    admin::create_topics(&settings, &topics, &compacted, 3, 1)
        .await
        .expect("topics are created");
    broker
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            // SIGINT: stopping at once, with no drain delay to wait out.
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn start_connector(variant: &Variant, kafka: &str) -> Connector {
    let port = free_port();
    let child = Command::new(&variant.binary)
        .arg("run")
        .arg("--config")
        .arg(&variant.config)
        .env("CONNECTOR__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("CONNECTOR__KAFKA__BOOTSTRAP_SERVERS", kafka)
        .env("CONNECTOR__WEBHOOK__SECRETS", SECRET)
        .env("CONNECTOR__LOG__LEVEL", "warn")
        .envs(variant.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .spawn()
        .expect("the connector starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = Command::new("curl")
            .args(["-fsS", "-o", "/dev/null"])
            .arg(format!("http://127.0.0.1:{port}/readyz"))
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the connector did not become ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Connector {
        child,
        port,
        label: variant.label.clone(),
    }
}

fn wrk(script: &Path, port: u16, concurrency: usize, seconds: u64, pause_ms: u64) -> WrkRun {
    let threads = concurrency.min(2);
    let output = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{concurrency}"))
        .arg(format!("-d{seconds}s"))
        .args(["--timeout", "30s", "-s"])
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--", &pause_ms.to_string()])
        .output()
        .expect("wrk runs (scripts/bench.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no result from wrk:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    serde_json::from_str(line).expect("wrk's result line is JSON")
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}; broker, wrk and connector on the same machine")
}

fn main() {
    // The example settings need a privacy key: the benchmark's own view of them and
    // the connector it starts (which inherits the environment) use this one. Set
    // before any thread exists.
    if std::env::var_os("CONNECTOR__PRIVACY__KEY").is_none() {
        std::env::set_var("CONNECTOR__PRIVACY__KEY", PRIVACY_KEY);
    }
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(run());
}

async fn run() {
    let args = Args::parse();
    let Some(bench) = Bench::prepare(&args).await else {
        return;
    };
    let (runs, baseline_runs) = bench.rounds().await;
    let exported = bench
        .collector
        .bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "the exporting variants sent {:.1} MiB of spans",
        exported as f64 / 1048576.0
    );
    let baseline = baseline::Baseline::median(&baseline_runs);
    let mut levels = medians(&runs);
    let best = levels
        .iter()
        .filter(|l| l.connector == bench.this_build().label)
        .max_by(|a, b| a.requests_per_sec.total_cmp(&b.requests_per_sec))
        .cloned();
    let mut half_load = match best {
        Some(best) => Some(bench.half_load(&best).await),
        None => None,
    };
    let soak = match args.soak_secs {
        0 => None,
        seconds => Some(bench.soak(seconds).await),
    };
    for level in levels.iter_mut().chain(half_load.iter_mut()) {
        compare_with(level, &baseline);
    }
    let results = Results {
        machine: machine(),
        corpus_notifications: bench.corpus.bodies.len(),
        corpus_mean_bytes: bench.corpus.mean_bytes(),
        corpus_mean_events: bench.corpus.mean_events,
        duration_secs: args.duration_secs,
        rounds: args.rounds,
        baseline,
        baseline_runs,
        levels,
        runs,
        half_load,
        soak,
    };
    write_results(&args.out, &results);
    print_table(&results);
    eprintln!("results written to {}", args.out.display());
    exit_if_broken(&results);
}

/// What every measurement uses: the arguments, the settings and routes the
/// connector and the baseline share, the corpus and its wrk script, and the
/// connectors to measure.
struct Bench<'a> {
    args: &'a Args,
    /// The settings file as loaded: the baseline uses the connector's producer
    /// settings (their bootstrap servers replaced by each fresh broker's).
    loaded: Settings,
    routing: RoutingTable,
    corpus: corpus::Corpus,
    /// The corpus's wrk script, in `_work` (removed when the bench ends).
    script: PathBuf,
    _work: tempfile::TempDir,
    /// This build, then the `--compare` ones.
    variants: Vec<Variant>,
    /// Where the exporting variants send their spans.
    collector: collector::Collector,
}

impl<'a> Bench<'a> {
    /// Loads the settings and routes and generates the corpus; `None` when
    /// `--write-script` asks only for the corpus's wrk script.
    async fn prepare(args: &'a Args) -> Option<Bench<'a>> {
        // The baseline uses the connector's producer settings, routes and ids.
        let loaded = Settings::load(Some(&args.config)).expect("the settings file loads");
        let routing = routing_file::load(
            Path::new("config/routes.toml"),
            loaded.privacy_key().as_ref(),
        )
        .expect("routes load")
        .table;
        let corpus = corpus::Corpus::generate(1000, SECRET);
        let work = tempfile::tempdir().unwrap();
        let script = work.path().join("corpus.lua");
        std::fs::write(&script, corpus.wrk_script()).unwrap();
        if let Some(path) = &args.write_script {
            std::fs::write(path, corpus.wrk_script()).unwrap();
            return None;
        }
        eprintln!(
            "corpus: {} notifications, {:.0} bytes and {:.2} events on average",
            corpus.bodies.len(),
            corpus.mean_bytes(),
            corpus.mean_events
        );
        let collector = collector::start().await;
        Some(Bench {
            args,
            loaded,
            routing,
            corpus,
            script,
            _work: work,
            variants: variants(args, &collector.endpoint),
            collector,
        })
    }

    fn this_build(&self) -> &Variant {
        &self.variants[0]
    }

    /// A measurement's stack: a fresh broker, the connector of `variant` on it,
    /// a short warm-up (`note` says what for).
    async fn stack(&self, variant: &Variant, note: &str) -> (Connector, Broker) {
        let archive = self.loaded.archive.topics();
        let kafka = &self.loaded.kafka;
        let broker = fresh_broker(&self.args.tansu, kafka, &self.routing, &archive).await;
        let connector = start_connector(variant, &broker.bootstrap);
        eprintln!("{}, {note}: warming up", variant.label);
        wrk(&self.script, connector.port, 16, 2, 0);
        (connector, broker)
    }

    /// Runs one measured load and turns it into a [`Level`] (ratio filled in later).
    fn measure(
        &self,
        connector: &Connector,
        concurrency: usize,
        seconds: u64,
        pause_ms: u64,
    ) -> Level {
        let pid = connector.child.id();
        let rss = process::RssSampler::start(pid);
        let cpu_before = process::cpu_seconds(pid);
        let run = wrk(&self.script, connector.port, concurrency, seconds, pause_ms);
        let cpu = process::cpu_seconds(pid) - cpu_before;
        let peak_rss_mib = rss.finish();
        let failed =
            run.non2xx + run.connect_errors + run.read_errors + run.write_errors + run.timeouts;
        let secs = run.duration_us as f64 / 1e6;
        let ok = run.requests.saturating_sub(run.non2xx) as f64;
        let events = ok * self.corpus.mean_events;
        Level {
            connector: connector.label.clone(),
            round: None,
            concurrency,
            requests_per_sec: ok / secs,
            events_per_sec: events / secs,
            p50_ms: run.p50_us as f64 / 1000.0,
            p99_ms: run.p99_us as f64 / 1000.0,
            p999_ms: run.p999_us as f64 / 1000.0,
            cpu_seconds_per_10k_events: if events > 0.0 {
                cpu / events * 10_000.0
            } else {
                0.0
            },
            peak_rss_mib,
            ratio: 0.0,
            cpu_ratio: 0.0,
            failed_requests: failed,
        }
    }

    /// Every round: each level of each connector, then the round's baseline,
    /// against which the round's levels get their ratios.
    async fn rounds(&self) -> (Vec<Level>, Vec<baseline::Baseline>) {
        let mut runs: Vec<Level> = Vec::new();
        let mut baseline_runs = Vec::new();
        for round in 1..=self.args.rounds {
            self.measure_levels(round, &mut runs).await;
            let baseline = self.baseline(round, &runs).await;
            for level in runs.iter_mut().filter(|l| l.round == Some(round)) {
                compare_with(level, &baseline);
            }
            baseline_runs.push(baseline);
        }
        (runs, baseline_runs)
    }

    /// Round `round` of every concurrency level of every connector, each on a
    /// stack of its own, added to `runs`.
    async fn measure_levels(&self, round: usize, runs: &mut Vec<Level>) {
        for &concurrency in &self.args.levels {
            for variant in &self.variants {
                let (connector, broker) = self.stack(variant, &format!("c={concurrency}")).await;
                let mut level = self.measure(&connector, concurrency, self.args.duration_secs, 0);
                level.round = Some(round);
                eprintln!(
                    "round {round}, {}, c={concurrency}: {:.0} events/s, p99 {:.1} ms, {:.3} CPU s / 10k events",
                    variant.label, level.events_per_sec, level.p99_ms, level.cpu_seconds_per_10k_events
                );
                runs.push(level);
                // The connector first, so it does not see its broker vanish.
                drop(connector);
                drop(broker);
            }
        }
    }

    /// Round `round` of the baseline, on a fresh broker: it produces as many
    /// events as the busiest of the `runs` so far delivered (or
    /// `--baseline-events`).
    async fn baseline(&self, round: usize, runs: &[Level]) -> baseline::Baseline {
        let baseline_events = self.args.baseline_events.unwrap_or_else(|| {
            runs.iter()
                .map(|l| (l.events_per_sec * self.args.duration_secs as f64) as usize)
                .max()
                .unwrap_or(10_000)
                .max(10_000)
        });
        eprintln!("round {round}, baseline: producing {baseline_events} events");
        let kafka = &self.loaded.kafka;
        let broker = fresh_broker(&self.args.tansu, kafka, &self.routing, &[]).await;
        let baseline_settings = KafkaSettings {
            bootstrap_servers: broker.bootstrap.clone(),
            ..kafka.clone()
        };
        let baseline = baseline::run(
            &baseline_settings,
            self.loaded.server.max_in_flight_bytes,
            &self.routing,
            &self.corpus.bodies,
            baseline_events,
        );
        drop(broker);
        eprintln!(
            "round {round}, baseline: {:.0} events/s, {:.3} CPU s / 10k events",
            baseline.events_per_sec, baseline.cpu_seconds_per_10k_events
        );
        baseline
    }

    /// Latency at half the maximum throughput (`best`, this build's busiest
    /// level): each of 64 connections pauses between its requests so that
    /// together they send about half the best rate seen. A connection's rate is
    /// 1 / (latency + pause); one correction after a first try.
    async fn half_load(&self, best: &Level) -> Level {
        let (connector, broker) = self.stack(self.this_build(), "half load").await;
        let concurrency = 64;
        let seconds = self.args.duration_secs;
        let target = best.requests_per_sec / 2.0;
        let period_ms = concurrency as f64 / target * 1000.0;
        let mut pause_ms = (period_ms / 2.0).max(1.0);
        let mut level = self.measure(&connector, concurrency, seconds, pause_ms as u64);
        if level.requests_per_sec > 0.0 && (level.requests_per_sec / target - 1.0).abs() > 0.1 {
            let achieved_period_ms = concurrency as f64 / level.requests_per_sec * 1000.0;
            pause_ms = (pause_ms + period_ms - achieved_period_ms).max(0.0);
            level = self.measure(&connector, concurrency, seconds, pause_ms.round() as u64);
        }
        eprintln!(
            "half load: {:.0} req/s (max {:.0}), p99 {:.1} ms",
            level.requests_per_sec, best.requests_per_sec, level.p99_ms
        );
        drop(connector);
        drop(broker);
        level
    }

    /// `seconds` of load at concurrency 64, with the connector's RSS before the
    /// load, every 5 s, and at the end.
    async fn soak(&self, seconds: u64) -> Soak {
        let (connector, broker) = self.stack(self.this_build(), "soak").await;
        let pid = connector.child.id();
        let rss_before_load_mib = process::memory_mib(pid, "VmRSS:");
        let sampling = sample_rss(pid, seconds);
        let level = self.measure(&connector, 64, seconds, 0);
        let rss_end_mib = process::memory_mib(pid, "VmRSS:");
        let rss_series = sampling.join().unwrap_or_default();
        let rss_start_mib = rss_series
            .iter()
            .find(|(at, _)| *at >= 15)
            .map_or(rss_before_load_mib, |(_, mib)| *mib);
        eprintln!("soak: RSS {rss_before_load_mib:.1} before load, {rss_start_mib:.1} after 15 s, {rss_end_mib:.1} at the end");
        drop(connector);
        drop(broker);
        Soak {
            seconds,
            concurrency: 64,
            rss_before_load_mib,
            rss_start_mib,
            rss_end_mib,
            growth_percent: (rss_end_mib / rss_start_mib - 1.0) * 100.0,
            rss_series,
            events_per_sec: level.events_per_sec,
            failed_requests: level.failed_requests,
        }
    }
}

/// This build, this build exporting spans to `collector` (unless `--no-traces`),
/// then each `--compare` one (with `--config` unless it names its own).
fn variants(args: &Args, collector: &str) -> Vec<Variant> {
    let this_build = Variant {
        label: "this build".into(),
        binary: args.connector.clone(),
        config: args.config.clone(),
        env: Vec::new(),
    };
    let mut variants = vec![this_build.clone()];
    for ratio in ["1.0", "0.01"].into_iter().filter(|_| !args.no_traces) {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", ratio),
        ];
        variants.push(Variant {
            label: format!("export {ratio}"),
            env: env.map(|(k, v)| (k.to_string(), v.to_string())).to_vec(),
            ..this_build.clone()
        });
    }
    for variant in &args.compare {
        let mut variant = variant.clone();
        if variant.config.as_os_str().is_empty() {
            variant.config = args.config.clone();
        }
        variants.push(variant);
    }
    variants
}

/// The RSS of process `pid` every 5 s for `seconds`, as (seconds in, MiB), from
/// a thread of its own.
fn sample_rss(pid: u32, seconds: u64) -> std::thread::JoinHandle<Vec<(u64, f64)>> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut series = Vec::new();
        for step in 1..=(seconds / 5) {
            std::thread::sleep(
                (started + Duration::from_secs(step * 5)).saturating_duration_since(Instant::now()),
            );
            series.push((step * 5, process::memory_mib(pid, "VmRSS:")));
        }
        series
    })
}

/// Sets `level`'s ratios to the `baseline`'s events/s and CPU per event.
fn compare_with(level: &mut Level, baseline: &baseline::Baseline) {
    level.ratio = level.events_per_sec / baseline.events_per_sec;
    level.cpu_ratio = level.cpu_seconds_per_10k_events / baseline.cpu_seconds_per_10k_events;
}

/// Writes `results` as pretty JSON to `out`, creating its directory.
fn write_results(out: &Path, results: &Results) {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let json: Value = serde_json::to_value(results).unwrap();
    std::fs::write(out, serde_json::to_string_pretty(&json).unwrap() + "\n").unwrap();
}

/// Exits 1, naming them, when any run shows a broken connector ([`broken_runs`]).
fn exit_if_broken(results: &Results) {
    let broken = broken_runs(results);
    if !broken.is_empty() {
        for what in &broken {
            eprintln!("FAIL: {what}");
        }
        std::process::exit(1);
    }
}

/// Every run that shows a broken connector (or baseline): a failed request (a
/// non-2xx answer or a transport error) or no throughput at all. A benchmark of
/// a connector that refuses its load measures nothing.
fn broken_runs(r: &Results) -> Vec<String> {
    let levels = r.runs.iter().chain(&r.half_load);
    let mut broken: Vec<String> = levels
        .filter(|l| l.failed_requests > 0 || l.requests_per_sec <= 0.0)
        .map(|l| {
            format!(
                "{} at concurrency {}: {} failed requests, {:.0} requests/s",
                l.connector, l.concurrency, l.failed_requests, l.requests_per_sec
            )
        })
        .collect();
    if let Some(soak) = r
        .soak
        .as_ref()
        .filter(|s| s.failed_requests > 0 || s.events_per_sec <= 0.0)
    {
        broken.push(format!(
            "soak: {} failed requests, {:.0} events/s",
            soak.failed_requests, soak.events_per_sec
        ));
    }
    let baselines = std::iter::once(&r.baseline).chain(&r.baseline_runs);
    if baselines.into_iter().any(|b| b.events_per_sec <= 0.0) {
        broken.push("the baseline produced no events".into());
    }
    broken
}

fn print_table(r: &Results) {
    println!("machine: {}", r.machine);
    println!(
        "corpus: {} signed notifications, {:.0} bytes and {:.2} events each on average; {} s per level",
        r.corpus_notifications, r.corpus_mean_bytes, r.corpus_mean_events, r.duration_secs
    );
    println!(
        "baseline (the same records, pre-built, same producer settings, straight to Kafka): {:.0} events/s, {:.3} CPU s / 10k events, over {} events in {} records{}",
        r.baseline.events_per_sec, r.baseline.cpu_seconds_per_10k_events, r.baseline.events, r.baseline.records,
        if r.rounds > 1 { format!(" (medians of {} rounds)", r.rounds) } else { String::new() }
    );
    println!();
    println!("| connector | concurrency | requests/s | events/s | ratio | p50 ms | p99 ms | p99.9 ms | CPU s / 10k events | CPU ratio | peak RSS MiB | failed |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let row = |name: String, l: &Level| {
        println!(
            "| {} | {name} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} | {:.3} | {:.1} | {:.1} | {} |",
            l.connector,
            l.requests_per_sec,
            l.events_per_sec,
            l.ratio,
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            l.cpu_seconds_per_10k_events,
            l.cpu_ratio,
            l.peak_rss_mib,
            l.failed_requests
        )
    };
    for level in &r.levels {
        row(level.concurrency.to_string(), level);
    }
    if let Some(half) = &r.half_load {
        row(format!("{} at half load", half.concurrency), half);
    }
    if let Some(soak) = &r.soak {
        println!();
        println!(
            "soak: {} s at concurrency {}: RSS {:.1} MiB before load, {:.1} after 15 s, {:.1} at the end ({:+.1}% from 15 s), {:.0} events/s, {} failed",
            soak.seconds, soak.concurrency, soak.rss_before_load_mib, soak.rss_start_mib, soak.rss_end_mib,
            soak.growth_percent, soak.events_per_sec, soak.failed_requests
        );
        let series: Vec<String> = soak
            .rss_series
            .iter()
            .map(|(at, mib)| format!("{at}s {mib:.1}"))
            .collect();
        println!("soak RSS every 5 s (MiB): {}", series.join(", "));
    }
}

/// One row per connector and concurrency (in the order first measured): the median
/// of each figure over the rounds, the highest peak RSS and the sum of failures.
fn medians(runs: &[Level]) -> Vec<Level> {
    let mut rows: Vec<Level> = Vec::new();
    for run in runs {
        if rows
            .iter()
            .any(|r| r.connector == run.connector && r.concurrency == run.concurrency)
        {
            continue;
        }
        let same: Vec<&Level> = runs
            .iter()
            .filter(|r| r.connector == run.connector && r.concurrency == run.concurrency)
            .collect();
        let of = |figure: fn(&Level) -> f64| median(same.iter().map(|l| figure(l)).collect());
        rows.push(Level {
            connector: run.connector.clone(),
            round: None,
            concurrency: run.concurrency,
            requests_per_sec: of(|l| l.requests_per_sec),
            events_per_sec: of(|l| l.events_per_sec),
            p50_ms: of(|l| l.p50_ms),
            p99_ms: of(|l| l.p99_ms),
            p999_ms: of(|l| l.p999_ms),
            cpu_seconds_per_10k_events: of(|l| l.cpu_seconds_per_10k_events),
            peak_rss_mib: same.iter().map(|l| l.peak_rss_mib).fold(0.0, f64::max),
            ratio: 0.0,
            cpu_ratio: 0.0,
            failed_requests: same.iter().map(|l| l.failed_requests).sum(),
        });
    }
    rows
}

/// The median (the mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
