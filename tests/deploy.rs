//! The monitoring files of deploy/ name metrics the connector exports: every
//! metric of every `expr` of deploy/grafana/dashboard.json and
//! deploy/prometheus/rules.yaml, and every input series of the rules' unit tests
//! (deploy/prometheus/rules_test.yaml), is read against a live `/metrics` of
//! connectors in this process, after traffic that gives every labelled metric a
//! series (on the test broker, and with Kafka out of reach for a delivery
//! failure). A renamed metric fails here, where `promtool` alone would still pass
//! (its unit tests feed the rules the series they name). The other way round,
//! every metric the connector exports has a place on the dashboard.
//!
//! The files themselves are checked by real tools in scripts/check-deploy.sh.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use common::*;
use webhook_connector::config::{KafkaSettings, Settings};
use webhook_connector::ingress::signature::{sign, SIGNATURE_HEADER};

/// Series Prometheus makes itself, not the connector: `up` of each target.
const PROMETHEUS_SERIES: &[&str] = &["up"];

/// What may stand before `(` or around names in PromQL without being a metric:
/// aggregation operators (written `sum by (...) (...)` too), their modifiers,
/// the set and matching operators.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "atan2",
    "inf",
    "nan",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The names a running connector exports, from the `# TYPE` lines of its
/// `/metrics` (a labelled counter with no child yet has its TYPE line but no
/// sample): a counter `x` is sampled as `x_total`, a histogram `x` as
/// `x_bucket`, `x_sum` and `x_count`.
fn exported(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
    }
    names
}

/// The metric names of a PromQL expression: its identifiers that are not
/// functions (followed by `(`), keywords, label names or values (inside `{}`,
/// `by (...)` and the like), durations or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let text = without_groups(expr);
    let chars: Vec<char> = text.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || c == '.' {
            // A number or a duration (`5m`, `0.6`, `1e3`): not a name.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if next != Some(&'(') && !KEYWORDS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// `expr` with what holds no metric name blanked: quoted strings, label
/// matchers `{...}`, ranges `[...]`, and the label lists of `by`, `without`,
/// `on`, `ignoring`, `group_left` and `group_right`.
fn without_groups(expr: &str) -> String {
    let blank_between = |text: &str, open: char, close: char| {
        let mut out = String::new();
        let mut depth = 0;
        for c in text.chars() {
            if c == open {
                depth += 1;
            } else if c == close && depth > 0 {
                depth -= 1;
                out.push(' ');
                continue;
            }
            out.push(if depth > 0 { ' ' } else { c });
        }
        out
    };
    let quotes = regex::Regex::new(r#""[^"]*"|'[^']*'"#).unwrap();
    let text = quotes.replace_all(expr, " ");
    let text = blank_between(&blank_between(&text, '{', '}'), '[', ']');
    let label_lists =
        regex::Regex::new(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
            .unwrap();
    label_lists.replace_all(&text, "$1 ").into_owned()
}

/// Every `expr` of the dashboard's panels.
fn dashboard_exprs() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/dashboard.json")).expect("dashboard JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    exprs
}

fn collect_exprs(value: &Value, exprs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => exprs.push(expr.clone()),
                    _ => collect_exprs(value, exprs),
                }
            }
        }
        Value::Array(values) => values.iter().for_each(|v| collect_exprs(v, exprs)),
        _ => {}
    }
}

/// The values of `key:` in a YAML file as written in deploy/prometheus/: on
/// the line itself, or as a block scalar (`key: |`) on the lines indented below.
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}:");
    let lines: Vec<&str> = text.lines().collect();
    let mut values = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        let Some(value) = trimmed.strip_prefix(&prefix).map(str::trim) else {
            continue;
        };
        if value != "|" && value != ">" {
            values.push(value.trim_matches('\'').to_string());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let block: Vec<&str> = (lines[i + 1..].iter())
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
            .copied()
            .collect();
        values.push(block.join("\n"));
    }
    values
}

/// The secret the test connector's webhooks are signed with.
const SECRET: &str = "deploy-test-secret";

/// What a running connector's `/metrics` lists once every labelled metric has a
/// child (a labelled counter has no line at all before its first increment): a
/// connector on the test broker with a state topic and the dead-letter topic on
/// takes a signed sample (events, a state record, the delivery time), an
/// unsigned body (401) and a signed broken one (a dead letter), then an invalid
/// routing file (a failed reload); a second one, Kafka out of reach, times out
/// delivering (a delivery failure).
async fn live_metrics() -> String {
    let [unrouted, state, dead_letters] = new_topics(["unrouted", "state", "dead-letters"]).await;
    let routes = format!(
        "[unmatched]\ntopic = {unrouted:?}\n\n[[state]]\nentity = \"customer\"\ntopic = {state:?}\n"
    );
    let mut settings = test_settings();
    settings.webhook.allow_unsigned = false;
    settings.webhook.secrets = vec![SECRET.into()];
    settings.archive.dead_letter_topic = dead_letters;
    let _turn = shared().await;
    let connector = start_connector(settings, &routes).await;
    let signed = |body: &[u8]| sign(SECRET, body);
    let sample = seed_sample();
    let answer = post(
        &connector.endpoint(),
        sample.clone(),
        &[(SIGNATURE_HEADER, &signed(&sample))],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(post(&connector.endpoint(), "{", &[]).await.status, 401);
    let broken = post(
        &connector.endpoint(),
        "{",
        &[(SIGNATURE_HEADER, &signed(b"{"))],
    )
    .await;
    assert_eq!(broken.status, 400, "{broken:?}");
    std::fs::write(&connector.routes_file, "not a routing file").unwrap();
    let failed = "webhook_connector_routing_reloads_total{result=\"failed\"}";
    wait_for_metric(&connector.url, failed, 1.0).await;
    let mut text = metrics_text(&connector.url).await;
    connector.stop().await;
    text.push_str(&metrics_without_kafka().await);
    text
}

/// `/metrics` of a connector whose Kafka is out of reach after a delivery that
/// timed out.
async fn metrics_without_kafka() -> String {
    let mut settings = Settings {
        kafka: KafkaSettings {
            bootstrap_servers: "127.0.0.1:1".into(),
            delivery_timeout_ms: 500,
            ..KafkaSettings::default()
        },
        ..Settings::default()
    };
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.webhook.allow_unsigned = true;
    let connector = start_connector(settings, &routes_toml("test.unrouted", &[])).await;
    assert_eq!(
        post(&connector.endpoint(), seed_sample(), &[]).await.status,
        503
    );
    let text = metrics_text(&connector.url).await;
    connector.stop().await;
    text
}

/// Which of `names` (found in `source`) neither the connector exports nor
/// `recorded` defines nor Prometheus makes: one line each.
fn unknown(
    names: &BTreeSet<String>,
    source: &str,
    exported: &BTreeSet<String>,
    recorded: &BTreeSet<String>,
) -> Vec<String> {
    (names.iter())
        .filter(|name| {
            !exported.contains(*name)
                && !recorded.contains(*name)
                && !PROMETHEUS_SERIES.contains(&name.as_str())
        })
        .map(|name| format!("{source}: {name}"))
        .collect()
}

/// The metrics of `deploy/` that the connector does not export; panics if the
/// files yielded too few names to be read right.
fn named_but_not_exported(exported: &BTreeSet<String>) -> Vec<String> {
    let rules = read("deploy/prometheus/rules.yaml");
    let recorded: BTreeSet<String> = yaml_values(&rules, "record").into_iter().collect();
    let none = BTreeSet::new();
    let sources = [
        ("dashboard.json", dashboard_exprs(), &none),
        ("rules.yaml", yaml_values(&rules, "expr"), &recorded),
        (
            "rules_test.yaml",
            yaml_values(&read("deploy/prometheus/rules_test.yaml"), "series"),
            &recorded,
        ),
    ];
    let mut missing = Vec::new();
    let mut named = BTreeSet::new();
    for (source, exprs, recorded) in sources {
        for expr in exprs {
            let names = metric_names(&expr);
            missing.extend(unknown(&names, source, exported, recorded));
            named.extend(names);
        }
    }
    assert!(
        named.len() > 10 && recorded.len() >= 5,
        "the exprs were read: {named:?}, {recorded:?}"
    );
    missing
}

/// The metrics `exported` that no panel of the dashboard shows.
fn exported_but_not_on_the_dashboard(exported: &BTreeSet<String>) -> Vec<String> {
    let on_dashboard: BTreeSet<String> = (dashboard_exprs().iter())
        .flat_map(|expr| metric_names(expr))
        .collect();
    let histograms: BTreeSet<&str> = (exported.iter())
        .filter_map(|name| name.strip_suffix("_bucket"))
        .collect();
    (exported.iter())
        .filter(|name| !on_dashboard.contains(*name))
        .filter(|name| {
            // A histogram is shown by its buckets (quantiles) and sum / count.
            let base = ["_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix));
            !base.is_some_and(|base| histograms.contains(base))
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn the_dashboard_and_the_rules_name_the_metrics_the_connector_exports() {
    let exported = exported(&live_metrics().await);
    for family in ["events_total", "state_records_total", "dead_letters_total"] {
        let name = format!("webhook_connector_{family}");
        assert!(
            exported.contains(&name),
            "{name} was exercised: {exported:?}"
        );
    }
    let missing = named_but_not_exported(&exported);
    assert!(
        missing.is_empty(),
        "metrics named in deploy/ that the connector does not export:\n{}\nexported: {exported:?}",
        missing.join("\n")
    );
    let absent = exported_but_not_on_the_dashboard(&exported);
    assert!(
        absent.is_empty(),
        "exported but on no panel of deploy/grafana/dashboard.json: {absent:?}"
    );
}

#[test]
fn metric_names_skip_functions_keywords_labels_and_durations() {
    let expr = r#"sum by (le) (rate(a_bucket{endpoint=~"x|y",status="5.."}[5m])) / ignoring(le) b_total offset 15m > 0.6 * 134217728 and on(instance) c:rec:ratio"#;
    let names: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(names, ["a_bucket", "b_total", "c:rec:ratio"]);
}

#[test]
fn the_configmap_settings_and_routing_file_pass_check() {
    let configmap = read("deploy/kubernetes/configmap.yaml");
    let dir = tempfile::tempdir().unwrap();
    for file in ["settings.toml", "routes.toml"] {
        let values = yaml_values(&configmap, file);
        assert_eq!(values.len(), 1, "{file} once in the ConfigMap");
        std::fs::write(dir.path().join(file), &values[0]).unwrap();
    }
    let settings = dir.path().join("settings.toml");
    let routes = dir.path().join("routes.toml");
    let env = [
        ("CONNECTOR__ROUTING__FILE", routes.to_str().unwrap()),
        // What the Secret gives the pods (deployment.yaml).
        ("CONNECTOR__WEBHOOK__SECRETS", "a-webhook-secret"),
        (
            "CONNECTOR__PRIVACY__KEY",
            "a-privacy-key-of-at-least-32-bytes-0123",
        ),
    ];
    let output = run_binary(&["check", "--config", settings.to_str().unwrap()], &env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("customer.contact-details"), "{stdout}");
}
