//! Faults injected for real: a broker paused with SIGSTOP and killed, the connector
//! stopped with SIGTERM under load and with SIGINT, stalled clients, too many
//! requests at once. The invariant checked everywhere: every request answered 200
//! has all its events in Kafka (by `event_id`); and every request a fault catches in
//! flight gets an answer docs/http-contract.md documents for it, never a dropped connection.
//! That requests are in flight is read from the connector's gauge, never assumed
//! after a sleep.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Polls `{url}/metrics` until at least `count` webhook requests are being
/// processed (or panics after 10 s): the load is in flight.
async fn wait_for_requests_in_flight(url: &str, count: u32) {
    wait_for_metric_to(url, IN_FLIGHT, |n| n >= Some(f64::from(count))).await
}

/// Starts `clients` unsigned senders to `endpoint` of the connector at `url`, and
/// waits until the load flows ([`wait_for_load`]).
async fn start_load(url: &str, endpoint: String, clients: usize) -> Load {
    let load = Load::start(Senders::unsigned(endpoint, clients));
    wait_for_load(url).await;
    load
}

/// Polls `{url}/metrics` until the load flows (a hundred notifications accepted)
/// and requests are in flight (at least four being processed).
async fn wait_for_load(url: &str) {
    wait_for_metric_to(url, ACCEPTED, |n| n >= Some(100.0)).await;
    wait_for_requests_in_flight(url, 4).await;
}

/// Polls until a new connection to `port` is refused (or panics after 5 s): the
/// connector took the signal and stopped accepting.
async fn wait_for_connections_refused(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "port {port} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let (broker, topic, connector) = warm_connector_on_own_broker("paused", timeout).await;
    let _turn = alone().await;

    let load = start_load(&connector.url, connector.endpoint(), 16).await;
    broker.pause();
    let paused_at = Instant::now();
    // Time passing: the pause outlasts the delivery timeout three times over.
    tokio::time::sleep(3 * timeout).await;
    broker.resume();
    let resumed_at = Instant::now();
    // Time passing: the load runs on while the connector recovers, and beyond.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let outcomes = load.stop().await;
    let all: Vec<&Outcome> = outcomes.iter().collect();

    assert_all(&all, "answered", |o| o.status.is_some());
    // Nobody sent during the pause waits longer than the delivery timeout plus 1 s.
    let sent_in_pause = started(&all, |at| at >= paused_at && at < resumed_at);
    assert_all(
        &sent_in_pause,
        "answered within the delivery timeout plus 1 s",
        |o| o.elapsed <= timeout + Duration::from_millis(1000),
    );
    // Requests whose whole delivery window fell inside the pause were refused.
    let during = started(&all, |at| {
        at > paused_at + Duration::from_millis(200)
            && at + timeout + Duration::from_millis(500) < resumed_at
    });
    assert!(!during.is_empty(), "{}", summary(&all));
    assert_all(&during, "503 during the pause", |o| o.status == Some(503));
    // 200s came back without restarting the connector.
    let late = started(&all, |at| at > resumed_at + Duration::from_millis(2500));
    assert!(!late.is_empty(), "{}", summary(&all));
    assert_all(&late, "200 again after the pause", |o| {
        o.status == Some(200)
    });

    assert_acknowledged_are_in_kafka(&broker.bootstrap(), &topic, &all);
    connector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_and_restarted_the_connector_recovers_without_restart() {
    let delivery_timeout = Duration::from_millis(2000);
    // With a producer id from the broker about to die, so the new one has never
    // heard of it.
    let (mut broker, topic, connector) =
        warm_connector_on_own_broker("restarted", delivery_timeout).await;
    let _turn = alone().await;

    let load = start_load(&connector.url, connector.endpoint(), 16).await;
    broker.kill();
    // The old broker is gone: nothing started from now on can be acknowledged by it.
    let killed_at = Instant::now();
    broker.start_again();
    // The new broker keeps nothing (in-memory storage): recreate the topic.
    create_topics_on(&broker.bootstrap(), &[&topic]).await;
    let restarted_at = Instant::now();
    // Time passing: the load runs on while the connector recovers, and beyond.
    tokio::time::sleep(Duration::from_millis(6000)).await;
    let outcomes = load.stop().await;
    let all: Vec<&Outcome> = outcomes.iter().collect();

    // Every request was answered, none later than a delivery could take.
    assert_all(&all, "answered", |o| o.status.is_some());
    assert_all(&all, "answered within the delivery timeout plus 1 s", |o| {
        o.elapsed <= delivery_timeout + Duration::from_millis(1000)
    });
    // Those in flight at the kill were answered 200 or their documented 503.
    let in_flight: Vec<&Outcome> = all.iter().copied().filter(|o| o.spans(killed_at)).collect();
    assert!(
        !in_flight.is_empty(),
        "none in flight at the kill: {}",
        summary(&all)
    );
    assert_all(
        &in_flight,
        "in flight at the kill: 200 or 503 kafka_*",
        |o| o.is_200_or_503(&["kafka_unavailable", "kafka_refused"]),
    );
    let late = started(&all, |at| at > restarted_at + Duration::from_millis(4000));
    assert!(!late.is_empty(), "{}", summary(&all));
    assert_all(&late, "200 again after the restart", |o| {
        o.status == Some(200)
    });
    // Every 200 to a request started since the kill was acknowledged by the new
    // broker, so it is there (the old one took its records with it).
    let since_the_kill = started(&all, |at| at >= killed_at);
    assert_acknowledged_are_in_kafka(&broker.bootstrap(), &topic, &since_the_kill);
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
    let (topic, connector) = connector_on_new_topic("stalled", |s| {
        s.server.max_in_flight = 1;
        s.server.request_read_timeout_ms = 500;
    })
    .await;

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
    let grace_ms = 5000;
    let grace = grace_ms.to_string();
    let (broker, topic, mut process) = process_on_own_broker(
        "sigterm",
        &[("CONNECTOR__SERVER__SHUTDOWN_GRACE_MS", &grace)],
    )
    .await;
    warm_up(&process.endpoint()).await;
    let _turn = alone().await;

    let clients = 16;
    let load = start_load(&process.url, process.endpoint(), clients).await;
    // Every client's request held in the connector by a frozen broker, so each
    // one is being processed (none on its way) when the signal comes.
    broker.pause();
    wait_for_requests_in_flight(&process.url, clients as u32).await;
    let signalled_at = Instant::now();
    process.signal("-TERM");
    wait_for_connections_refused(process.port).await;
    broker.resume();
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
    // Time passing: the clients keep sending for a moment after the exit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outcomes = load.stop().await;
    let all: Vec<&Outcome> = outcomes.iter().collect();

    assert_eq!(exit.code(), Some(0));
    assert!(exited_after < Duration::from_millis(grace_ms + 500));
    // Every request started before the signal was answered: 200, or 503
    // shutting_down near the end of the grace period; never a dropped connection.
    let before = started(&all, |at| at < signalled_at);
    let in_flight = before.iter().filter(|o| o.spans(signalled_at)).count();
    assert!(in_flight >= clients, "{in_flight} in flight at the signal");
    assert_all(
        &before,
        "started before the signal: 200 or 503 shutting_down",
        |o| o.is_200_or_503(&["shutting_down"]),
    );
    // After the process is gone, requests are refused at the connection.
    let late = started(&all, |at| at > signalled_at + exited_after);
    assert!(!late.is_empty(), "{}", summary(&all));
    assert_all(&late, "refused once the connector is gone", |o| {
        o.status.is_none()
    });
    assert_acknowledged_are_in_kafka(&broker.bootstrap(), &topic, &all);
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
    let (_topic, connector) = connector_on_new_topic("stalled-headers", |s| {
        s.server.request_read_timeout_ms = 500
    })
    .await;
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

/// Holds a request in a connector run as a process (its broker frozen), sends it
/// `signal`, and checks the drain: new connections are refused soon after, the held
/// request is answered 200 once the broker is back, the process exits 0, and the
/// request's events are in Kafka.
async fn drains_on(signal: &str) {
    let (broker, topic, mut process) = process_on_own_broker(
        "draining",
        &[("CONNECTOR__SERVER__SHUTDOWN_GRACE_MS", "8000")],
    )
    .await;
    let endpoint = process.endpoint();
    assert_eq!(post(&endpoint, seed_sample(), &[]).await.status, 200);

    // A request waits for the frozen broker while the connector is told to stop.
    broker.pause();
    let waiting = tokio::spawn({
        let endpoint = endpoint.clone();
        async move { post(&endpoint, seed_sample(), &[]).await }
    });
    wait_for_metric(&process.url, IN_FLIGHT, 1.0).await;
    process.signal(signal);
    wait_for_connections_refused(process.port).await;
    assert!(
        process.child.0.try_wait().unwrap().is_none(),
        "still draining"
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

/// Sends SIGTERM to a connector run with `drain_delay_ms`, and checks the drain
/// delay: `/readyz` answers 503 at once while new connections are still accepted
/// and answered 200. Returns when that is seen, with the time of the signal.
async fn terminated_in_its_drain_delay(
    drain_delay_ms: &str,
) -> (Broker, String, ConnectorProcess, Instant) {
    let (broker, topic, process) = process_on_own_broker(
        "drain-delay",
        &[("CONNECTOR__SERVER__DRAIN_DELAY_MS", drain_delay_ms)],
    )
    .await;
    let endpoint = process.endpoint();
    assert_eq!(post(&endpoint, seed_sample(), &[]).await.status, 200);
    assert_eq!(
        get_json(&format!("{}/readyz", process.url)).await.status,
        200
    );
    let signalled_at = Instant::now();
    process.signal("-TERM");
    // The signal is taken by the process's own thread: soon, not at once.
    let readyz = format!("{}/readyz", process.url);
    let body = wait_for_status(&readyz, 503, Duration::from_secs(1)).await;
    let reasons = serde_json::from_str::<serde_json::Value>(&body).unwrap()["reasons"].clone();
    assert_eq!(reasons, json!(["shutting down"]), "{body}");
    // A new connection (the test client opens one per request) is served.
    let answer = post(&endpoint, seed_sample(), &[]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    (broker, topic, process, signalled_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_readiness_fails_first_and_requests_are_served_for_the_drain_delay() {
    let _turn = shared().await;
    let (broker, topic, mut process, signalled_at) = terminated_in_its_drain_delay("4000").await;
    assert!(signalled_at.elapsed() < Duration::from_millis(3000));
    tokio::time::sleep(Duration::from_millis(3000).saturating_sub(signalled_at.elapsed())).await;
    assert!(
        process.child.0.try_wait().unwrap().is_none(),
        "gone before the drain delay"
    );
    assert_eq!(
        post(&process.endpoint(), seed_sample(), &[]).await.status,
        200
    );
    let exit = tokio::task::spawn_blocking(move || process.child.0.wait().unwrap())
        .await
        .unwrap();
    let exited_after = signalled_at.elapsed();
    assert_eq!(exit.code(), Some(0));
    assert!(
        exited_after >= Duration::from_millis(4000) && exited_after < Duration::from_millis(7000),
        "{exited_after:?}"
    );
    // The first request's events and those of the two in the drain delay.
    read_exactly_on(&broker.bootstrap(), &topic, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_cuts_the_drain_delay_short() {
    let _turn = shared().await;
    for second in ["-TERM", "-INT"] {
        let (_broker, _topic, mut process, _) = terminated_in_its_drain_delay("60000").await;
        let second_at = Instant::now();
        process.signal(second);
        let exit = tokio::task::spawn_blocking(move || process.child.0.wait().unwrap())
            .await
            .unwrap();
        assert_eq!(exit.code(), Some(0));
        assert!(second_at.elapsed() < Duration::from_secs(3), "{second}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_draining_new_connections_are_refused_and_in_flight_requests_finish() {
    let _turn = shared().await;
    drains_on("-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_like_sigterm_and_exits_zero() {
    let _turn = shared().await;
    drains_on("-INT").await;
}
