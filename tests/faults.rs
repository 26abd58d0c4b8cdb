//! Faults injected for real: a broker paused with SIGSTOP and killed, the connector
//! stopped with SIGTERM under load, stalled clients, too many requests at once.
//! The invariant checked everywhere: every request answered 200 has all its events
//! in Kafka (by `event_id`).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// One request of a load run.
#[derive(Debug, Clone)]
struct Outcome {
    started: Instant,
    elapsed: Duration,
    /// `None` when no HTTP answer came (connection refused or reset).
    status: Option<u16>,
    event_ids: Vec<String>,
    /// The `message` of an error answer.
    message: String,
}

/// Runs `clients` concurrent senders of distinct two-change notifications until
/// `stop` is set; returns every request's outcome.
async fn run_load(endpoint: String, clients: usize, stop: Arc<AtomicBool>) -> Vec<Outcome> {
    static NEXT_CUSTOMER: AtomicI64 = AtomicI64::new(1);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, endpoint, stop) = (http.clone(), endpoint.clone(), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let customer = NEXT_CUSTOMER.fetch_add(1, Ordering::Relaxed);
                let body = json!({
                    "ChangeDateTime": "2018-11-16T10:46:20.7741026Z",
                    "Customer": {"Id": customer, "Email": "x@example.com"},
                    "Changes": [
                        {"ChangeType": "CustomerEmailChanged", "OldValue": "a", "NewValue": "b"},
                        {"ChangeType": "CustomerSmsChanged", "OldValue": "1", "NewValue": "2"},
                    ],
                })
                .to_string();
                let started = Instant::now();
                let response = http
                    .post(&endpoint)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let (status, event_ids, message) = match response {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let json: serde_json::Value = response.json().await.unwrap_or_default();
                        let ids = json["event_ids"]
                            .as_array()
                            .map(|a| a.iter().map(|i| i.as_str().unwrap().to_string()).collect())
                            .unwrap_or_default();
                        let message = json["message"].as_str().unwrap_or_default().to_string();
                        (Some(status), ids, message)
                    }
                    Err(_) => {
                        // Refused while the connector is down: do not spin.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        (None, Vec::new(), String::new())
                    }
                };
                outcomes.push(Outcome {
                    started,
                    elapsed: started.elapsed(),
                    status,
                    event_ids,
                    message,
                });
            }
            outcomes
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a load client does not panic"));
    }
    all
}

/// Asserts every 200 among `outcomes` has both its events in `topic`.
fn assert_acknowledged_are_in_kafka(bootstrap: &str, topic: &str, outcomes: &[&Outcome]) {
    let in_kafka: BTreeSet<String> = read_all_on(bootstrap, topic, Duration::from_secs(3))
        .into_iter()
        .map(|r| r.value["event_id"].as_str().unwrap().to_string())
        .collect();
    let mut checked = 0;
    for outcome in outcomes.iter().filter(|o| o.status == Some(200)) {
        assert_eq!(outcome.event_ids.len(), 2, "{outcome:?}");
        for id in &outcome.event_ids {
            assert!(
                in_kafka.contains(id),
                "answered 200 but {id} is not in Kafka: {outcome:?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no request was answered 200");
}

/// Counts of outcomes by status and error message.
fn summary(outcomes: &[&Outcome]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for o in outcomes {
        *counts
            .entry(format!("{:?} {}", o.status, o.message))
            .or_insert(0) += 1;
    }
    format!("{counts:#?}")
}

/// Asserts every outcome passes `check`, showing a few that do not.
fn assert_all(outcomes: &[&Outcome], what: &str, check: impl Fn(&Outcome) -> bool) {
    let failing: Vec<&&Outcome> = outcomes.iter().filter(|o| !check(o)).collect();
    assert!(
        failing.is_empty(),
        "{what}: {} of {} fail, e.g. {:#?}\n{}",
        failing.len(),
        outcomes.len(),
        &failing[..failing.len().min(3)],
        summary(outcomes)
    );
}

/// Sends `bytes` (a request cut short) and waits up to 5 s for what the connector
/// sends back before closing: the text read (or the read error) and how long it took.
async fn send_and_stall(
    connector: &Connector,
    bytes: &[u8],
) -> (std::io::Result<String>, Duration) {
    let mut stream = send_raw(connector.addr(), bytes).await;
    let started = Instant::now();
    let text = read_raw(&mut stream).await;
    (text, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_paused_beyond_the_delivery_timeout_loses_nothing_and_recovers() {
    let timeout = Duration::from_millis(1000);
    let (broker, topic, connector) = connector_on_own_broker("paused", |s| {
        s.kafka.delivery_timeout_ms = timeout.as_millis() as u64;
    })
    .await;
    warm_up(&connector.endpoint()).await;
    let _turn = alone().await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run_load(connector.endpoint(), 16, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    broker.pause();
    let paused_at = Instant::now();
    tokio::time::sleep(3 * timeout).await;
    broker.resume();
    let resumed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(4000)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = load.await.unwrap();
    let all: Vec<&Outcome> = outcomes.iter().collect();

    assert_all(&all, "answered", |o| o.status.is_some());
    // Nobody sent during the pause waits longer than the delivery timeout plus 1 s.
    let sent_in_pause: Vec<&Outcome> = all
        .iter()
        .copied()
        .filter(|o| o.started >= paused_at && o.started < resumed_at)
        .collect();
    assert_all(
        &sent_in_pause,
        "answered within the delivery timeout plus 1 s",
        |o| o.elapsed <= timeout + Duration::from_millis(1000),
    );
    // Requests whose whole delivery window fell inside the pause were refused.
    let during: Vec<&Outcome> = all
        .iter()
        .copied()
        .filter(|o| o.started > paused_at + Duration::from_millis(200))
        .filter(|o| o.started + timeout + Duration::from_millis(500) < resumed_at)
        .collect();
    assert!(!during.is_empty(), "{}", summary(&all));
    assert_all(&during, "503 during the pause", |o| o.status == Some(503));
    // 200s came back without restarting the connector.
    let late: Vec<&Outcome> = all
        .iter()
        .copied()
        .filter(|o| o.started > resumed_at + Duration::from_millis(2500))
        .collect();
    assert!(!late.is_empty(), "{}", summary(&all));
    assert_all(&late, "200 again after the pause", |o| {
        o.status == Some(200)
    });

    assert_acknowledged_are_in_kafka(&broker.bootstrap(), &topic, &all);
    connector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_and_restarted_the_connector_recovers_without_restart() {
    let (mut broker, topic, connector) = connector_on_own_broker("restarted", |s| {
        s.kafka.delivery_timeout_ms = 2000;
    })
    .await;
    // With a producer id from the broker about to die, so the new one has never
    // heard of it.
    warm_up(&connector.endpoint()).await;
    let _turn = alone().await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run_load(connector.endpoint(), 16, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    broker.restart();
    // The new broker keeps nothing (in-memory storage): recreate the topic.
    create_topics_on(&broker.bootstrap(), &[&topic]).await;
    let restarted_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(6000)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = load.await.unwrap();
    // Answered after the restart: acknowledged by the new broker, so checkable there.
    let after: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.started + o.elapsed > restarted_at)
        .collect();

    let late: Vec<&Outcome> = after
        .iter()
        .copied()
        .filter(|o| o.started > restarted_at + Duration::from_millis(4000))
        .collect();
    assert!(!late.is_empty(), "{}", summary(&after));
    assert_all(&late, "200 again after the restart", |o| {
        o.status == Some(200)
    });
    assert_acknowledged_are_in_kafka(&broker.bootstrap(), &topic, &after);
    // The recovery came from replacing the producer, not from luck.
    let replacements = metric(
        &metrics_text(&connector.url).await,
        "webhook_connector_kafka_producer_replacements_total",
    );
    assert!(replacements >= Some(1.0), "{replacements:?}");
    connector.stop().await;
}

#[tokio::test]
async fn too_many_requests_in_flight_get_503_at_once() {
    let _turn = shared().await;
    let (broker, _topic, connector) = connector_on_own_broker("busy", |s| {
        s.kafka.delivery_timeout_ms = 3000;
        s.server.max_in_flight = 4;
    })
    .await;
    // Every delivery held by freezing the broker.
    let requests = hold_requests(&connector, &broker, 4).await;
    let started = Instant::now();
    for _ in 0..5 {
        let refused = post(&connector.endpoint(), seed_sample(), &[]).await;
        assert_eq!(refused.status, 503, "{:?}", refused.json);
        assert_eq!(refused.json["error"], "overloaded");
        assert_eq!(refused.headers["retry-after"], "1");
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "refusals come at once"
    );
    broker.resume();
    for request in requests {
        let answer = request.await.unwrap();
        assert!(matches!(answer.status, 200 | 503), "{answer:?}");
    }
    // Slots are free again.
    assert_eq!(
        post(&connector.endpoint(), seed_sample(), &[]).await.status,
        200
    );
    connector.stop().await;
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_gives_its_slot_back() {
    let _turn = shared().await;
    let topic = unique_topic("stalled");
    create_topics(&[&topic]).await;
    let mut settings = test_settings();
    settings.server.max_in_flight = 1;
    settings.server.request_read_timeout_ms = 500;
    let connector = start_connector(settings, &routes_toml(&topic, &[])).await;

    let (answer, took) = send_and_stall(
        &connector,
        b"POST /webhooks/customer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"ChangeDateTime\":",
    )
    .await;
    let text = answer.expect("an answer, not a reset");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"request_timeout\""), "{text}");
    assert!(took < Duration::from_millis(1500));

    let ok = post(&connector.endpoint(), seed_sample(), &[]).await;
    assert_eq!(ok.status, 200, "{:?}", ok.json);
    read_exactly(&topic, 4);
    connector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_flushes_and_exits_zero() {
    let topic = unique_topic("sigterm");
    create_topics(&[&topic]).await;
    let grace_ms = 5000;
    let grace = grace_ms.to_string();
    let mut process = spawn_connector(
        &kafka(),
        &routes_toml(&topic, &[]),
        &[("CONNECTOR__SERVER__SHUTDOWN_GRACE_MS", &grace)],
    )
    .await;
    warm_up(&process.endpoint()).await;
    let _turn = alone().await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run_load(process.endpoint(), 16, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let signalled_at = Instant::now();
    process.signal("-TERM");
    let exit = loop {
        if let Some(exit) = process.child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            signalled_at.elapsed() < Duration::from_millis(grace_ms + 2000),
            "the connector did not exit within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exited_after = signalled_at.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = load.await.unwrap();
    let all: Vec<&Outcome> = outcomes.iter().collect();

    assert_eq!(exit.code(), Some(0));
    assert!(exited_after < Duration::from_millis(grace_ms + 500));
    // After the process is gone, requests are refused at the connection.
    let late: Vec<&Outcome> = all
        .iter()
        .copied()
        .filter(|o| o.started > signalled_at + exited_after)
        .collect();
    assert!(!late.is_empty(), "{}", summary(&all));
    assert_all(&late, "refused once the connector is gone", |o| {
        o.status.is_none()
    });
    assert_acknowledged_are_in_kafka(&kafka(), &topic, &all);
}

#[tokio::test]
async fn requests_still_waiting_when_the_grace_period_ends_get_503_not_200() {
    let _turn = shared().await;
    let (broker, _topic, connector) = connector_on_own_broker("grace", |s| {
        s.kafka.delivery_timeout_ms = 20_000;
        s.server.shutdown_grace_ms = 1500;
    })
    .await;
    let stuck = hold_requests(&connector, &broker, 1).await.remove(0);
    let stopping = Instant::now();
    connector.stop().await;
    let stopped_after = stopping.elapsed();
    let answer = stuck.await.unwrap();
    assert_eq!(answer.status, 503, "{:?}", answer.json);
    assert_eq!(answer.json["error"], "shutting_down");
    assert!(answer.headers.contains_key("retry-after"));
    assert!(
        stopped_after < Duration::from_millis(1500 + 1000),
        "{stopped_after:?}"
    );
    broker.resume();
}

#[tokio::test]
async fn a_client_stalling_in_its_headers_is_disconnected() {
    let _turn = shared().await;
    let topic = unique_topic("stalled-headers");
    create_topics(&[&topic]).await;
    let mut settings = test_settings();
    settings.server.request_read_timeout_ms = 500;
    let connector = start_connector(settings, &routes_toml(&topic, &[])).await;
    let (answer, took) = send_and_stall(
        &connector,
        b"POST /webhooks/customer HTTP/1.1\r\nHost: x\r\nContent-Ty",
    )
    .await;
    // Closed (nothing, or a reset), possibly after a 408 the server may send first.
    if let Ok(text) = answer {
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
    assert!(took < Duration::from_millis(2000));
    connector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_draining_new_connections_are_refused_and_in_flight_requests_finish() {
    let _turn = shared().await;
    let (broker, topic, mut process) = process_on_own_broker(
        "draining",
        &[("CONNECTOR__SERVER__SHUTDOWN_GRACE_MS", "8000")],
    )
    .await;
    let port = process.port;
    let url = process.url.clone();
    let endpoint = process.endpoint();
    assert_eq!(post(&endpoint, seed_sample(), &[]).await.status, 200);

    // A request waits for the frozen broker while the connector is told to stop.
    broker.pause();
    let waiting = tokio::spawn({
        let endpoint = endpoint.clone();
        async move { post(&endpoint, seed_sample(), &[]).await }
    });
    wait_for_metric(&url, IN_FLIGHT, 1.0).await;
    process.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        process.child.0.try_wait().unwrap().is_none(),
        "still draining"
    );
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(
        refused.is_err(),
        "a new connection while draining must be refused"
    );

    broker.resume();
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let exit = tokio::task::spawn_blocking(move || process.child.0.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    read_exactly_on(&broker.bootstrap(), &topic, 8);
}
