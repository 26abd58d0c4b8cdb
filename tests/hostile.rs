//! Hostile input, sent for real: bodies shaped to be expensive, senders that
//! trickle or send nothing, oversized headers, invented change types, forged log
//! lines, a flood of large bodies while Kafka is away, clients that leave mid-way
//! and SIGTERM with expensive requests in flight. None may stall the connector,
//! starve other senders or grow its memory past `server.max_in_flight_bytes`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A notification whose customer has `keys` distinct keys that all snake-case to
/// the same name (`!#$`, `!#%`, ... all become `customer____`).
fn colliding_keys_body(keys: usize) -> String {
    let punctuation: Vec<char> = "!#$%&'()*+,-./:;<=>?@[]^`{|}~".chars().collect();
    let mut customer = Map::new();
    customer.insert("Id".into(), json!(7));
    'fill: for a in &punctuation {
        for b in &punctuation {
            for c in &punctuation {
                if customer.len() > keys {
                    break 'fill;
                }
                customer.insert(format!("{a}{b}{c}"), json!(1));
            }
        }
    }
    json!({
        "ChangeDateTime": "2018-11-12T10:15:00",
        "Customer": customer,
        "Changes": [{"ChangeType": "CustomerEmailChanged", "OldValue": "a", "NewValue": "b"}],
    })
    .to_string()
}

/// The peak resident set of process `pid` in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM")
}

/// The resident set of process `pid` now in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS")
}

/// The `field` of `/proc/PID/status` in KiB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_colliding_keys_is_answered_quickly_and_does_not_stall_the_probes() {
    let (topic, connector) = connector_on_new_topic("colliding", |_| {}).await;
    let body = colliding_keys_body(22_000);
    assert!(body.len() <= 262_144, "{}", body.len());
    let _turn = alone().await;

    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..2 {
        let (endpoint, body) = (connector.endpoint(), body.clone());
        senders.push(tokio::spawn(
            async move { post(&endpoint, body, &[]).await },
        ));
    }
    // The probes answer while both are being worked on.
    let health = tokio::time::timeout(
        Duration::from_secs(2),
        reqwest::get(format!("{}/healthz", connector.url)),
    )
    .await
    .expect("/healthz answers within 2 s")
    .unwrap();
    assert_eq!(health.status(), 200);
    for sender in senders {
        let answer = sender.await.unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.json);
    }
    // Quadratic de-duplication took most of a minute for one such body.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let records = read_exactly(&topic, 2);
    let event = records[0].value.as_object().unwrap();
    assert!(event.contains_key("customer____"));
    assert!(event.contains_key("customer_____22000"));
    connector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_nested_deep_under_long_names_are_bounded_and_answered_at_once() {
    let (topic, connector) = connector_on_new_topic("deep-names", |_| {}).await;
    let booking = connector.webhook("booking");
    // 60 levels of 200-byte names over 2000 members: 24 MB of names from a 30 kB
    // body, past the bound of 4 times server.max_body_bytes (1 MiB).
    let over = deep_named_booking(60, 200, 2000);
    assert!(over.len() < 40_000, "{}", over.len());
    let _turn = alone().await;
    let started = Instant::now();
    let answers =
        futures::future::join_all((0..4).map(|_| post(&booking, over.clone(), &[]))).await;
    for answer in answers {
        assert_eq!(answer.status, 413, "{:?}", answer.json);
        assert_eq!(answer.json["error"], "payload_too_large");
        let message = answer.json["message"].as_str().unwrap();
        assert!(
            message.contains("more than 1048576 bytes (4 times server.max_body_bytes)"),
            "{message}"
        );
    }
    // The work stops at the bound: four such bodies take well under a second each.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // Within the bound (3 levels of 20-byte names over 3000 members, 190 kB of
    // names), every member arrives under its path.
    let within = deep_named_booking(3, 20, 3000);
    let answer = post(&booking, within, &[]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let records = read_exactly(&topic, 1);
    let event = records[0].value.as_object().unwrap();
    // The outermost name first: levels 2, 1, 0.
    let path = format!("booking_state_{:020}_{:020}_{:020}", 2, 1, 0);
    assert_eq!(event[&format!("{path}_m2999")], json!(1));
    assert_eq!(event.keys().filter(|k| k.starts_with(&path)).count(), 3000);
    connector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_do_not_take_the_slots_of_ready_requests() {
    let (topic, connector) = connector_on_new_topic("trickle", |s| {
        s.server.max_in_flight = 64;
        s.server.request_read_timeout_ms = 20_000;
    })
    .await;
    let _turn = alone().await;

    // 100 connections send their headers and then a byte now and then.
    let head = b"POST /webhooks/customer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{";
    let mut tricklers = Vec::new();
    for _ in 0..100 {
        tricklers.push(send_raw(connector.addr(), head).await);
    }
    let trickle = tokio::spawn(async move {
        for _ in 0..10 {
            for stream in &mut tricklers {
                let _ = stream.write_all(b" ").await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tricklers
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    for _ in 0..10 {
        let started = Instant::now();
        let answer = post(&connector.endpoint(), seed_sample(), &[]).await;
        assert_eq!(answer.status, 200, "{:?}", answer.json);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    assert!(
        !trickle.is_finished(),
        "the slow senders were still sending"
    );
    drop(trickle.await.unwrap());
    read_exactly(&topic, 40);
    connector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_nothing_are_closed_and_starve_nobody() {
    let (topic, connector) = connector_on_new_topic("silent", |s| {
        s.server.request_read_timeout_ms = 1000;
    })
    .await;
    let _turn = alone().await;

    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(connector.addr()).await.unwrap());
    }
    let answer = post(&connector.endpoint(), seed_sample(), &[]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    read_exactly(&topic, 4);
    // Each is closed once the header read timeout passes.
    let started = Instant::now();
    for stream in &mut silent {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("closed within 5 s");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    connector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_senders_announcing_256_kib_add_at_most_32_mib_of_memory() {
    let [topic] = new_topics(["announced"]).await;
    // Quiet: every sender hanging up at the end is a warning.
    let quiet = [("CONNECTOR__LOG__LEVEL", "error")];
    let process = spawn_connector(&kafka(), &routes_toml(&topic, &[]), &quiet).await;
    assert_eq!(
        post(&process.endpoint(), seed_sample(), &[]).await.status,
        200
    );
    let _turn = alone().await;
    let pid = process.child.0.id();
    let idle_kib = rss_kib(pid);

    // 1,000 connections announce the largest body allowed and send a byte of it,
    // then a few bytes each every 200 ms for 2 s: no memory is set aside for what
    // is announced, only for what arrives (and hyper's read buffer per connection).
    let started = Instant::now();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], process.port));
    let head = b"POST /webhooks/customer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 262144\r\n\r\n{";
    let mut senders = Vec::new();
    for _ in 0..1000 {
        senders.push(send_raw(addr, head).await);
    }
    for _ in 0..10 {
        for stream in &mut senders {
            let _ = stream.write_all(b"    ").await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak_kib = peak_rss_kib(pid);
    // None was refused for what it announced: all still wait to send the rest.
    let answered = senders
        .iter()
        .filter(|stream| {
            let read = stream.try_read(&mut [0u8; 64]);
            !matches!(read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    drop(senders);
    drop(process);
    let added_mib = peak_kib.saturating_sub(idle_kib) as f64 / 1024.0;
    eprintln!(
        "slow senders: idle RSS {idle_kib} KiB, peak {peak_kib} KiB (+{added_mib:.1} MiB), \
         {answered} answered early, {:?}",
        started.elapsed()
    );
    assert_eq!(
        answered, 0,
        "connections answered before their body arrived"
    );
    assert!(added_mib <= 32.0, "+{added_mib:.1} MiB");
}

#[tokio::test]
async fn oversized_or_too_many_headers_get_431() {
    let _turn = shared().await;
    let (_topic, connector) = connector_on_new_topic("headers", |_| {}).await;
    let request =
        |headers: String| format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{headers}\r\n").into_bytes();

    let big = request(format!("X-Big: {}\r\n", "a".repeat(64 * 1024)));
    let mut stream = send_raw(connector.addr(), &big).await;
    let text = read_raw(&mut stream).await.unwrap_or_default();
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");

    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut stream = send_raw(connector.addr(), &request(many)).await;
    let text = read_raw(&mut stream).await.unwrap_or_default();
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");

    // Just under both limits is fine.
    let fine: String = (0..90)
        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(100)))
        .collect();
    let mut stream = send_raw(connector.addr(), &request(fine)).await;
    let text = read_raw(&mut stream).await.unwrap_or_default();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    connector.stop().await;
}

#[tokio::test]
async fn invented_change_types_keep_metrics_small_and_labels_bounded() {
    let _turn = shared().await;
    let (topic, connector) = connector_on_new_topic("labels", |_| {}).await;
    let long = "X".repeat(20 * 1024);
    for (n, change_type) in [long.as_str(), "a\nb", "ok.Type-1"].into_iter().enumerate() {
        let body = json!({
            "ChangeDateTime": "2018-11-12T10:15:00",
            "Customer": {"Id": n},
            "Changes": [{"ChangeType": change_type}],
        });
        let answer = post(&connector.endpoint(), body.to_string(), &[]).await;
        assert_eq!(answer.status, 200, "{:?}", answer.json);
    }
    // 150 more invented ones: past the cap of 100 distinct values.
    let changes: Vec<Value> = (0..100)
        .map(|i| json!({"ChangeType": format!("Made{i}Up")}))
        .collect();
    for chunk in 0..2 {
        let body = json!({
            "ChangeDateTime": "2018-11-12T10:15:00",
            "Customer": {"Id": chunk},
            "Changes": changes[chunk * 50..chunk * 50 + 50].to_vec(),
        });
        assert_eq!(
            post(&connector.endpoint(), body.to_string(), &[])
                .await
                .status,
            200
        );
    }
    let more: Vec<Value> = (0..50)
        .map(|i| json!({"ChangeType": format!("Late{i}")}))
        .collect();
    let body =
        json!({"ChangeDateTime": "2018-11-12T10:15:00", "Customer": {"Id": 5}, "Changes": more});
    assert_eq!(
        post(&connector.endpoint(), body.to_string(), &[])
            .await
            .status,
        200
    );

    let text = metrics_text(&connector.url).await;
    assert!(text.len() < 200 * 1024, "{} bytes", text.len());
    assert!(!text.contains(&long[..100]), "a 20 KB label value");
    let series = |change_type: &str| {
        format!("webhook_connector_events_total{{change_type=\"{change_type}\",topic=\"{topic}\"}}")
    };
    assert_eq!(metric(&text, &series("_invalid")), Some(2.0), "{text}");
    assert_eq!(metric(&text, &series("ok.Type-1")), Some(1.0), "{text}");
    assert!(metric(&text, &series("_other")) >= Some(50.0), "{text}");
    connector.stop().await;
}

#[tokio::test]
async fn a_key_with_a_newline_cannot_forge_a_log_line() {
    let _turn = shared().await;
    let [topic] = new_topics(["forged-log"]).await;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("connector.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let process = spawn_connector_logging(&kafka(), &routes_toml(&topic, &[]), &[], log).await;
    let forged = "x\n2026-11-29T00:00:00.000000Z  INFO webhook_connector: FORGED all is well";
    let body = format!(
        r#"{{"ChangeDateTime":"2018-11-12T10:15:00","Customer":{{"Id":1,{k}:1,{k}:2}},"Changes":[]}}"#,
        k = serde_json::to_string(forged).unwrap()
    );
    let answer = post(&process.endpoint(), body, &[]).await;
    assert_eq!(answer.status, 400, "{:?}", answer.json);
    assert!(answer.json["message"]
        .as_str()
        .unwrap()
        .contains("duplicate field"));
    drop(process);
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("duplicate field"), "{text}");
    assert!(text.contains("x\\n2026"), "{text}");
    assert!(
        text.lines()
            .all(|line| !line.contains("FORGED") || line.contains("request refused")),
        "a forged line:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_while_kafka_is_away_peaks_at_one_and_a_half_budgets_and_72_mib() {
    // Kafka answers nothing while paused: requests wait 3 s for it (then 503), so
    // their slots and bytes keep changing hands during the flood. Half the default
    // byte budget: two requests' records fill its processing share.
    let budget_mib = 64;
    let budget_bytes = (budget_mib * 1024 * 1024).to_string();
    let (broker, _topic, process) = process_on_own_broker(
        "flood",
        &[
            ("CONNECTOR__KAFKA__DELIVERY_TIMEOUT_MS", "3000"),
            ("CONNECTOR__SERVER__MAX_IN_FLIGHT_BYTES", &budget_bytes),
        ],
    )
    .await;
    let endpoint = process.endpoint();
    assert_eq!(post(&endpoint, seed_sample(), &[]).await.status, 200);
    let _turn = alone().await;
    broker.pause();

    // 32 clients, each posting 250 KB bodies of 100 changes (25 MB of records
    // each) for 6 s.
    let body = padded_body(100, 250_000 - 6_000);
    assert!((240_000..=262_144).contains(&body.len()), "{}", body.len());
    let stop_at = Instant::now() + Duration::from_secs(6);
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (endpoint, body) = (endpoint.clone(), body.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut statuses = Vec::new();
            while Instant::now() < stop_at {
                let sent = http
                    .post(&endpoint)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(answer) => {
                        let status = answer.status().as_u16();
                        let json: Value = answer.json().await.unwrap_or_default();
                        statuses.push((status, json["error"].as_str().unwrap_or("").to_string()))
                    }
                    Err(error) => {
                        eprintln!("flood: no answer: {error:?}");
                        statuses.push((0, String::new()))
                    }
                }
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for client in clients {
        statuses.extend(client.await.unwrap());
    }
    let peak_mib = peak_rss_kib(process.child.0.id()) / 1024;
    broker.resume();
    // The byte budget refused some at once; the rest waited for Kafka and got 503
    // when the delivery timeout passed.
    let count = |error: &str| statuses.iter().filter(|(_, e)| e == error).count();
    let overloaded = count("overloaded");
    eprintln!(
        "flood: budget {budget_mib} MiB, {} requests, {overloaded} refused overloaded, {} kafka_unavailable, peak RSS {peak_mib} MiB",
        statuses.len(),
        count("kafka_unavailable")
    );
    assert!(overloaded > 0, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|(status, _)| *status == 503 || *status == 200),
        "{statuses:?}"
    );
    // The budget; beside it, librdkafka's copy of the records of a request being
    // handed over (each event's own buffer is freed once its records are in), the
    // allocator's slack under the churn of refused bodies, and the process itself
    // (about 22 MiB; a few more since the OpenTelemetry exporter and its TLS client
    // are linked in). Measured before tracing: 140 to 154 MiB; with it, 151 to 163 MiB
    // over three runs and one of 161 in CI, where the same load was answered ten times
    // as fast (more refused bodies churned). Not explained further yet.
    let bound_mib = budget_mib * 3 / 2 + 72;
    assert!(
        peak_mib <= bound_mib,
        "peak RSS {peak_mib} MiB > {bound_mib} MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_process_within_the_grace_period_whatever_requests_do() {
    let (broker, _topic, mut process) = process_on_own_broker(
        "term-hostile",
        &[("CONNECTOR__SERVER__SHUTDOWN_GRACE_MS", "2000")],
    )
    .await;
    assert_eq!(
        post(&process.endpoint(), seed_sample(), &[]).await.status,
        200
    );
    let _turn = alone().await;
    // Kafka away, expensive bodies being worked on, a body trickling in.
    broker.pause();
    let body = colliding_keys_body(22_000);
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (endpoint, body) = (process.endpoint(), body.clone());
        senders.push(tokio::spawn(async move {
            let _ = reqwest::Client::new()
                .post(&endpoint)
                .body(body)
                .send()
                .await;
        }));
    }
    let _trickler = send_raw(
        std::net::SocketAddr::from(([127, 0, 0, 1], process.port)),
        b"POST /webhooks/customer HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    process.signal("-TERM");
    let exit = loop {
        if let Some(exit) = process.child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            signalled.elapsed() < Duration::from_millis(2000 + 2000),
            "still running {:?} after SIGTERM",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(0));
    broker.resume();
    for sender in senders {
        sender.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_delivery_frees_its_slot_and_its_records_stay_counted() {
    let _turn = shared().await;
    let (broker, topic, connector) = connector_on_own_broker("leaving", |_| {}).await;
    assert_eq!(
        post(&connector.endpoint(), seed_sample(), &[]).await.status,
        200
    );
    wait_for_metric(&connector.url, HELD_BYTES, 0.0).await;
    broker.pause();

    let body = seed_sample();
    let head = format!(
        "POST /webhooks/customer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = send_raw(connector.addr(), head.as_bytes()).await;
    stream.write_all(&body).await.unwrap();
    wait_for_metric(&connector.url, IN_FLIGHT, 1.0).await;
    drop(stream);
    // The slot is free at once; the records' bytes stay held until Kafka answers.
    wait_for_metric(&connector.url, IN_FLIGHT, 0.0).await;
    let held = metric(&metrics_text(&connector.url).await, HELD_BYTES);
    assert!(held > Some(4.0 * 256.0), "{held:?}");

    broker.resume();
    wait_for_metric(&connector.url, HELD_BYTES, 0.0).await;
    // The first request's 4 events, and the 4 Kafka took after the client left.
    read_exactly_on(&broker.bootstrap(), &topic, 8);
    connector.stop().await;
}

#[tokio::test]
async fn the_byte_budget_refuses_at_once_and_a_request_larger_than_it_gets_413() {
    let _turn = shared().await;
    // A quarter for bodies arriving, 24,000 bytes for requests being processed:
    // one seed sample (about 19 KB of body and records) at a time.
    let (broker, _topic, connector) = connector_on_own_broker("budget", |s| {
        s.server.max_body_bytes = 4_000;
        s.server.max_in_flight_bytes = 32_000;
    })
    .await;
    let held = hold_requests(&connector, &broker, 1).await.remove(0);

    let refused = post(&connector.endpoint(), seed_sample(), &[]).await;
    assert_eq!(refused.status, 503, "{:?}", refused.json);
    assert_eq!(refused.json["error"], "overloaded");
    assert!(refused.json["message"]
        .as_str()
        .unwrap()
        .contains("server.max_in_flight_bytes"));
    assert_eq!(refused.headers["retry-after"], "1");

    // 10 changes of a 1 KB customer: over 30 KB of records, more than the whole
    // budget: 413 whether or not the budget is in use.
    let too_big = post(&connector.endpoint(), padded_body(10, 1000), &[]).await;
    assert_eq!(too_big.status, 413, "{:?}", too_big.json);
    assert_eq!(too_big.json["error"], "payload_too_large");

    broker.resume();
    assert_eq!(held.await.unwrap().status, 200);
    wait_for_metric(&connector.url, HELD_BYTES, 0.0).await;
    assert_eq!(
        post(&connector.endpoint(), seed_sample(), &[]).await.status,
        200
    );
    connector.stop().await;
}
