//! One notification followed from the request to every record (docs/tracing.md):
//! the W3C trace context taken from the request, the spans exported over OTLP to
//! a real receiver (the official `opentelemetry-proto` decoder), the context on
//! every record, the trace ids on log lines; export that never fails a request;
//! nothing exported without configuration; malformed context ignored.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::Value;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
const REFUSED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const UNSAMPLED_TRACE: &str = "1af7651916cd43dd8448eb211c80319c";

fn traceparent(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

/// The spans of `trace`.
fn of_trace<'s>(spans: &'s [Value], trace: &str) -> Vec<&'s Value> {
    spans.iter().filter(|s| s["trace_id"] == trace).collect()
}

/// The span of `spans` named `name`.
fn named<'s>(spans: &[&'s Value], name: &str) -> &'s Value {
    let found: Vec<_> = spans.iter().filter(|s| s["name"] == name).collect();
    assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
    found[0]
}

/// Every span of a served request: the server span and its three children.
fn served(spans: &[Value], trace: &str) -> bool {
    of_trace(spans, trace).len() >= 4
}

/// Posts a body that is not JSON in the trace [`REFUSED_TRACE`]: 400.
async fn post_refused(process: &ConnectorProcess) {
    let refused = traceparent(REFUSED_TRACE, PARENT);
    let answer = post(
        &process.endpoint(),
        "{not json",
        &[("traceparent", &refused)],
    )
    .await;
    assert_eq!(answer.status, 400, "{:?}", answer.json);
}

#[tokio::test]
async fn a_notification_is_one_trace_from_the_request_to_every_record_and_log_line() {
    let collector = Collector::start();
    let [events, raw, dead] = new_topics(["traced", "traced-raw", "traced-dead"]).await;
    let mut env = exporting_to(&collector, "traced-connector");
    env.extend([
        ("CONNECTOR__ARCHIVE__RAW_TOPIC".into(), raw.clone()),
        ("CONNECTOR__ARCHIVE__DEAD_LETTER_TOPIC".into(), dead.clone()),
        ("CONNECTOR__LOG__FORMAT".into(), "json".into()),
    ]);
    let log = tempfile::NamedTempFile::new().unwrap();
    let routes = routes_toml(&events, &[]);
    let process =
        spawn_connector_logging(&kafka(), &routes, &as_env(&env), log.reopen().unwrap()).await;

    let request = [
        ("traceparent", traceparent(TRACE, PARENT)),
        ("tracestate", "vendor=abc".into()),
    ];
    let request: Vec<(&str, &str)> = request.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = seed_sample();
    let answer = post(&process.endpoint(), body.clone(), &request).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    // A parent that did not sample: nothing exported, the flag passed on.
    let unsampled = format!("00-{UNSAMPLED_TRACE}-{PARENT}-00");
    let answer = post(
        &process.endpoint(),
        seed_sample(),
        &[("traceparent", &unsampled)],
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    post_refused(&process).await;
    // And one without trace context, after a probe and a scrape.
    get_text(&format!("{}/readyz", process.url)).await;
    metrics_text(&process.url).await;
    let answer = post(&process.endpoint(), seed_sample(), &[]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let new_trace = |spans: &[Value]| -> Option<String> {
        let server = spans.iter().find(|s| {
            s["kind"] == "SPAN_KIND_SERVER"
                && s["trace_id"] != TRACE
                && s["trace_id"] != REFUSED_TRACE
                && s["trace_id"] != UNSAMPLED_TRACE
        });
        server.map(|s| s["trace_id"].as_str().unwrap().to_string())
    };

    let spans = collector.wait_for("the three requests' spans", |spans| {
        let third = new_trace(spans).is_some_and(|trace| served(spans, &trace));
        served(spans, TRACE) && served(spans, REFUSED_TRACE) && third
    });
    // A new trace starts at the server span: the connector's own HTTP `request`
    // span (probes and scrapes have one too) is not exported.
    let started = of_trace(&spans, &new_trace(&spans).unwrap());
    assert_eq!(
        named(&started, "POST /webhooks/customer")["parent_span_id"],
        ""
    );
    assert_eq!(
        spans.len(),
        12,
        "four spans per request, no more: {spans:#?}"
    );
    let traced = of_trace(&spans, TRACE);
    let server = named(&traced, "POST /webhooks/customer");
    assert_eq!(server["kind"], "SPAN_KIND_SERVER");
    assert_eq!(
        server["parent_span_id"], PARENT,
        "the request's span is the parent"
    );
    let attributes = &server["attributes"];
    assert_eq!(attributes["http.request.method"], "POST");
    assert_eq!(attributes["http.route"], "/webhooks/customer");
    assert_eq!(attributes["http.response.status_code"], 200);
    assert_eq!(attributes["http.request.body.size"], body.len());
    assert_eq!(server["resource"]["service.name"], "traced-connector");
    let (verify, accept, send) = (
        named(&traced, "verify"),
        named(&traced, "accept"),
        named(&traced, "send"),
    );
    for child in [verify, accept, send] {
        assert_eq!(child["parent_span_id"], server["span_id"], "{child:#}");
    }
    assert_eq!(accept["attributes"]["webhook.entity"], "customer");
    assert_eq!(accept["attributes"]["webhook.changes"], 4);
    assert_eq!(send["kind"], "SPAN_KIND_PRODUCER");
    assert_eq!(send["attributes"]["messaging.system"], "kafka");
    // The seed sample's four events and the raw topic's copy.
    assert_eq!(send["attributes"]["messaging.batch.message_count"], 5);

    let produced = traceparent(TRACE, send["span_id"].as_str().unwrap());
    // The first request's four, the unsampled one's, then the last one's.
    let records = read_all_before_now_on(&kafka(), &events);
    assert_eq!(records.len(), 12);
    for record in &records[4..8] {
        let traceparent = record.headers["traceparent"].as_deref().unwrap();
        assert!(
            traceparent.starts_with(&format!("00-{UNSAMPLED_TRACE}-")),
            "{traceparent}"
        );
        assert!(
            traceparent.ends_with("-00") && !traceparent.contains(PARENT),
            "{traceparent}"
        );
    }
    let expected = BTreeMap::from([
        ("traceparent", produced.as_str()),
        ("tracestate", "vendor=abc"),
        ("ce_traceparent", produced.as_str()),
        ("ce_tracestate", "vendor=abc"),
    ]);
    for record in &records[..4] {
        assert_trace_headers(&record.headers, &expected);
    }
    let raw = read_raw_exactly(&raw, 3);
    let expected = BTreeMap::from([
        ("traceparent", produced.as_str()),
        ("tracestate", "vendor=abc"),
    ]);
    assert_trace_headers(&raw[0].headers, &expected);

    // The refusal: its code on the server and accept spans, its dead letter in its trace.
    let refused = of_trace(&spans, REFUSED_TRACE);
    let server = named(&refused, "POST /webhooks/customer");
    assert_eq!(server["attributes"]["error.type"], "invalid_json");
    assert_eq!(server["attributes"]["http.response.status_code"], 400);
    assert_eq!(
        named(&refused, "accept")["attributes"]["error.type"],
        "invalid_json"
    );
    let send = named(&refused, "send");
    let dead = read_raw_exactly(&dead, 1);
    let kept = traceparent(REFUSED_TRACE, send["span_id"].as_str().unwrap());
    assert_trace_headers(
        &dead[0].headers,
        &BTreeMap::from([("traceparent", kept.as_str())]),
    );

    // The refusal's log line, logged within the server span, names it.
    let line = refusal_logged(log.path());
    assert_eq!(line["trace_id"], REFUSED_TRACE, "{line}");
    assert_eq!(line["span_id"], server["span_id"], "{line}");
    drop(process);
}

/// The JSON log line of a refused request in the log at `path`.
fn refusal_logged(path: &std::path::Path) -> Value {
    let lines = std::fs::read_to_string(path).unwrap();
    (lines.lines())
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "request refused")
        .unwrap_or_else(|| panic!("no refusal logged: {lines}"))
}

/// The trace headers of a record are `expected`, and nothing else.
fn assert_trace_headers(
    headers: &BTreeMap<String, Option<String>>,
    expected: &BTreeMap<&str, &str>,
) {
    let trace: BTreeMap<&str, &str> = (headers.iter())
        .filter(|(name, _)| name.contains("trace"))
        .map(|(name, value)| (name.as_str(), value.as_deref().unwrap_or("(null)")))
        .collect();
    assert_eq!(&trace, expected);
}

#[tokio::test]
async fn with_the_collector_stopped_requests_are_answered_and_the_dropped_spans_counted() {
    // Nothing listens there (127.0.0.2: no test's receiver can take the port).
    let port = std::net::TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let topic = new_topics(["untraced"]).await[0].clone();
    let env = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.2:{port}"),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        // One span waiting at most: a request's four spans overflow it.
        ("CONNECTOR__TRACES__MAX_QUEUED_SPANS", "1".into()),
    ];
    let env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let process = spawn_connector(&kafka(), &routes_toml(&topic, &[]), &as_env(&env)).await;
    for _ in 0..5 {
        let answer = post(&process.endpoint(), seed_sample(), &[]).await;
        assert_eq!(answer.status, 200, "{:?}", answer.json);
    }
    let dropped = |reason: &str| {
        format!("webhook_connector_trace_spans_dropped_total{{reason=\"{reason}\"}}")
    };
    wait_for_metric_to(&process.url, &dropped("export_failed"), |v| {
        v.is_some_and(|v| v >= 1.0)
    })
    .await;
    wait_for_metric_to(&process.url, &dropped("queue_full"), |v| {
        v.is_some_and(|v| v >= 1.0)
    })
    .await;
    let metrics = metrics_text(&process.url).await;
    assert_eq!(
        metric(&metrics, "webhook_connector_trace_spans_exported_total"),
        Some(0.0)
    );
    assert_eq!(read_all_before_now_on(&kafka(), &topic).len(), 5 * 4);
}

#[tokio::test]
async fn without_otlp_settings_nothing_is_exported_and_records_still_carry_the_trace() {
    let topic = new_topics(["propagated"]).await[0].clone();
    // The batch delay set, the endpoint not: export stays off.
    let env = [
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_SERVICE_NAME", "quiet"),
        ("CONNECTOR__LOG__FORMAT", "json"),
        ("CONNECTOR__LOG__LEVEL", "info"),
    ];
    let log = tempfile::NamedTempFile::new().unwrap();
    let routes = routes_toml(&topic, &[]);
    let process = spawn_connector_logging(&kafka(), &routes, &env, log.reopen().unwrap()).await;
    let incoming = traceparent(TRACE, PARENT);
    let answer = post(
        &process.endpoint(),
        seed_sample(),
        &[("traceparent", &incoming)],
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let answer = post(&process.endpoint(), seed_sample(), &[]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    post_refused(&process).await;
    // At level info, the refusal's line has its trace ids, exported or not.
    let line = refusal_logged(log.path());
    assert_eq!(line["trace_id"], REFUSED_TRACE, "{line}");
    assert_ne!(line["span_id"], PARENT, "{line}");

    // Four events per request, each request's with one context.
    let records = read_all_before_now_on(&kafka(), &topic);
    assert_eq!(records.len(), 2 * 4);
    let [continued, started] = [0, 4].map(|i| {
        let first = &records[i].headers["traceparent"];
        assert!(records[i..i + 4]
            .iter()
            .all(|r| &r.headers["traceparent"] == first));
        let header = |name: &str| records[i].headers[name].clone().unwrap();
        assert_eq!(header("traceparent"), header("ce_traceparent"));
        header("traceparent")
    });
    let parts: Vec<&str> = continued.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", TRACE, "01"),
        "{continued}"
    );
    assert_ne!(parts[2], PARENT, "a span id of the connector's own");
    let parts: Vec<&str> = started.split('-').collect();
    assert_ne!(parts[1], TRACE, "a new trace");
    assert!(
        parts[1].len() == 32 && parts[1] != "0".repeat(32),
        "{started}"
    );
    // Ten batch delays: spans exported anywhere would be counted by now, as
    // taken or as dropped.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = metrics_text(&process.url).await;
    for series in [
        "webhook_connector_trace_spans_exported_total",
        "webhook_connector_trace_spans_dropped_total{reason=\"export_failed\"}",
        "webhook_connector_trace_spans_dropped_total{reason=\"queue_full\"}",
    ] {
        assert_eq!(metric(&metrics, series), Some(0.0), "{series}");
    }
}

#[tokio::test]
async fn malformed_trace_context_is_ignored() {
    let topic = new_topics(["malformed-trace"]).await[0].clone();
    let connector = start_connector(test_settings(), &routes_toml(&topic, &[])).await;
    let zeros = traceparent(&"0".repeat(32), PARENT);
    let cases = [
        vec![("traceparent", "garbage".to_string())],
        vec![("traceparent", zeros)],
        vec![("traceparent", traceparent(TRACE, &"0".repeat(16)))],
        vec![("traceparent", traceparent(&TRACE.to_uppercase(), PARENT))],
        vec![("traceparent", format!("ff-{TRACE}-{PARENT}-01"))],
        vec![("traceparent", format!("00-{TRACE}-{PARENT}"))],
        vec![("traceparent", format!("00-{TRACE}-{PARENT}-01-extra"))],
        vec![
            ("traceparent", String::new()),
            ("tracestate", "=,=,".repeat(1000)),
        ],
        vec![("tracestate", "vendor=abc".into())],
        vec![("traceparent", "00-1-2-01".into())],
        vec![("traceparent", format!("00-+{}-{PARENT}-01", &TRACE[1..]))],
        vec![("traceparent", format!("00-0{TRACE}-{PARENT}-01"))],
    ];
    for headers in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = post(&connector.endpoint(), seed_sample(), &headers).await;
        assert_eq!(answer.status, 200, "{headers:?}: {:?}", answer.json);
    }
    // A malformed context with a malformed body: the body's answer.
    let garbage = [("traceparent", "00-zz")];
    let answer = post(&connector.endpoint(), "{not json", &garbage).await;
    assert_eq!(
        (answer.status, answer.json["error"].as_str()),
        (400, Some("invalid_json"))
    );
    let records = read_all_before_now_on(&kafka(), &topic);
    assert_eq!(records.len(), cases.len() * 4);
    for record in &records {
        let traceparent = record.headers["traceparent"].clone().unwrap();
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(
            (parts.len(), parts[0], parts[3]),
            (4, "00", "01"),
            "{traceparent}"
        );
        assert_ne!(parts[1], TRACE, "a new trace: {traceparent}");
        // Not a malformed id read leniently (`00-1-2-01` as trace 1).
        assert!(!parts[1].starts_with("0000000000"), "{traceparent}");
        assert!(
            !record.headers.contains_key("tracestate"),
            "no tracestate without a traceparent"
        );
    }
    connector.stop().await;
}

#[tokio::test]
async fn forget_is_a_span_whose_context_its_records_carry() {
    let collector = Collector::start();
    let [unrouted, erasures] = new_topics(["forget-traced", "forget-erasures"]).await;
    let routes = format!(
        "{}\n[erasure]\ntopic = {erasures:?}\n",
        routes_toml(&unrouted, &[])
    );
    let (_dir, settings) = settings_file_with(&kafka(), &routes, "");
    let env = exporting_to(&collector, "forgetting");
    let output = run_forget(&settings, "customer", "862", &as_env(&env));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let spans = collector.wait_for("the forget span", |spans| !spans.is_empty());
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let forget = &spans[0];
    assert_eq!(
        (forget["name"].as_str(), forget["kind"].as_str()),
        (Some("forget"), Some("SPAN_KIND_PRODUCER"))
    );
    assert_eq!(forget["parent_span_id"], "", "a trace of its own");
    let written = traceparent(
        forget["trace_id"].as_str().unwrap(),
        forget["span_id"].as_str().unwrap(),
    );
    let records = read_raw_exactly(&erasures, 1);
    assert_eq!(
        records[0].headers["traceparent"].as_deref(),
        Some(written.as_str())
    );
    assert_eq!(
        records[0].headers["ce_traceparent"].as_deref(),
        Some(written.as_str())
    );
}
