//! Nothing blocks the async threads: while the producer is replaced for real (its
//! broker killed and restarted empty, so it no longer knows the producer id), the
//! probe and the webhook keep being answered promptly.
//!
//! Here the new producer is built quickly (plaintext: no TLS material to load, as
//! the test broker serves no TLS). That a build slow for real (its CA read from a
//! FIFO) runs on a blocking thread, without the lock requests take and once at a
//! time, is pinned by the unit tests in `src/sink/recovery.rs`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const DELIVERY_TIMEOUT: Duration = Duration::from_millis(1000);
const REPLACEMENTS: &str = "webhook_connector_kafka_producer_replacements_total";

/// GETs `url` every 50 ms until `stop`; each answer's status and how long it took
/// (`None`: no answer).
async fn probe(url: String, stop: Arc<AtomicBool>) -> Vec<(Option<u16>, Duration)> {
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let status = client.get(&url).send().await.ok().map(|r| r.status());
        answers.push((status.map(|s| s.as_u16()), started.elapsed()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    answers
}

/// POSTs the seed sample to `endpoint` back to back until `stop`; as [`probe`].
async fn send(endpoint: String, stop: Arc<AtomicBool>) -> Vec<(Option<u16>, Duration)> {
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let request = client
            .post(&endpoint)
            .header("content-type", "application/json")
            .body(seed_sample());
        let status = request.send().await.ok().map(|r| r.status().as_u16());
        answers.push((status, started.elapsed()));
    }
    answers
}

/// Waits until the connector counted a producer replacement (at most 20 s).
async fn wait_for_a_replacement(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&metrics_text(url).await, REPLACEMENTS) < Some(1.0) {
        assert!(Instant::now() < deadline, "no producer replacement in 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_producer_is_replaced_the_probe_and_the_webhook_are_answered_promptly() {
    // With a producer id from the broker about to die.
    let (mut broker, topic, connector) =
        warm_connector_on_own_broker("replaced", DELIVERY_TIMEOUT).await;
    let _turn = alone().await;

    let stop = Arc::new(AtomicBool::new(false));
    let healthz = format!("{}/healthz", connector.url);
    let probes = tokio::spawn(probe(healthz, Arc::clone(&stop)));
    let senders: Vec<_> = (0..4)
        .map(|_| tokio::spawn(send(connector.endpoint(), Arc::clone(&stop))))
        .collect();
    broker.restart();
    create_topics_on(&broker.bootstrap(), &[&topic]).await;
    wait_for_a_replacement(&connector.url).await;
    // And a while after it, with the new producer.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);

    let probes = probes.await.unwrap();
    assert!(probes.len() >= 10, "{probes:?}");
    let slow: Vec<_> = (probes.iter())
        .filter(|(status, took)| *status != Some(200) || *took > Duration::from_millis(500))
        .collect();
    assert!(
        slow.is_empty(),
        "probes not answered 200 within 500 ms: {slow:?}"
    );
    for sender in senders {
        let answers = sender.await.unwrap();
        let slow: Vec<_> = (answers.iter())
            .filter(|(status, took)| status.is_none() || *took > DELIVERY_TIMEOUT * 2)
            .collect();
        assert!(
            slow.is_empty(),
            "webhook requests not answered in time: {slow:?}"
        );
    }
    // The new producer delivers.
    warm_up(&connector.endpoint()).await;
    connector.stop().await;
}
