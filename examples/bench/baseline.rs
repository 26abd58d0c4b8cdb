//! The baseline: the cheapest way to produce the connector's records for the same
//! notifications. Every record (topic, key, value bytes, headers) is built before
//! the clock starts, then produced with the connector's producer settings (acks,
//! idempotence, compression, linger, queue bounds) through a `ThreadedProducer`
//! whose delivery callback only counts. No HTTP, no parsing, no per-record futures:
//! what producing these records costs here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use webhook_connector::config::{KafkaSettings, Settings};
use webhook_connector::entity::CUSTOMER;
use webhook_connector::records::TraceHeaders;
use webhook_connector::routing::RoutingTable;
use webhook_connector::{pipeline, sink};

use crate::process;

/// One pre-built record.
struct Prepared {
    topic: String,
    key: String,
    value: Option<Vec<u8>>,
    headers: OwnedHeaders,
}

/// One notification's records and how many events (changes) they carry.
struct Notification {
    records: Vec<Prepared>,
    events: usize,
}

/// Counts acknowledgements and failures, nothing else.
#[derive(Default)]
struct Counting {
    acknowledged: AtomicUsize,
    failed: AtomicUsize,
}

#[derive(Clone, Default)]
struct CountingContext(Arc<Counting>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = match result {
            Ok(_) => &self.0.acknowledged,
            Err(_) => &self.0.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the baseline measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Baseline {
    /// Events (changes) whose records were all acknowledged.
    pub events: usize,
    pub records: usize,
    pub events_per_sec: f64,
    /// CPU seconds (user + system, every thread of this process) per 10 000 events.
    pub cpu_seconds_per_10k_events: f64,
}

impl Baseline {
    /// The median of each rate over `runs` (the counts of the first; each round
    /// produces as many events as its busiest level delivered).
    pub fn median(runs: &[Baseline]) -> Baseline {
        let of = |figure: fn(&Baseline) -> f64| crate::median(runs.iter().map(figure).collect());
        Baseline {
            events_per_sec: of(|b| b.events_per_sec),
            cpu_seconds_per_10k_events: of(|b| b.cpu_seconds_per_10k_events),
            ..runs[0].clone()
        }
    }
}

/// Produces the records of the corpus's notifications, in turn, until they carry
/// at least `events` events, and waits for every acknowledgement. The producer's
/// queue is bounded by `queue_bytes` (`server.max_in_flight_bytes`), as the connector's.
pub fn run(
    kafka: &KafkaSettings,
    queue_bytes: usize,
    routing: &RoutingTable,
    bodies: &[String],
    events: usize,
) -> Baseline {
    let notifications = prepare(kafka, routing, bodies);
    let context = CountingContext::default();
    let counts = Arc::clone(&context.0);
    let producer: ThreadedProducer<CountingContext> = sink::producer_config(kafka, queue_bytes)
        .create_with_context(context)
        .expect("producer");
    // Connect and fetch metadata for every topic before the clock starts, as the
    // connector has by the time it is measured.
    let mut warmed = std::collections::BTreeSet::new();
    for record in notifications.iter().flat_map(|n| &n.records) {
        if warmed.insert(&record.topic) {
            send(&producer, record);
        }
    }
    let sent = warmed.len();
    wait_for(&counts, sent);

    let pid = std::process::id();
    let cpu_before = process::cpu_seconds(pid);
    let started = Instant::now();
    let (mut produced_events, mut records) = (0, 0);
    for notification in notifications.iter().cycle() {
        if produced_events >= events {
            break;
        }
        for record in &notification.records {
            send(&producer, record);
        }
        records += notification.records.len();
        produced_events += notification.events;
    }
    wait_for(&counts, sent + records);
    let elapsed = started.elapsed();
    let cpu = process::cpu_seconds(pid) - cpu_before;
    assert_eq!(
        counts.failed.load(Ordering::Relaxed),
        0,
        "every baseline record is acknowledged"
    );
    Baseline {
        events: produced_events,
        records,
        events_per_sec: produced_events as f64 / elapsed.as_secs_f64(),
        cpu_seconds_per_10k_events: cpu / produced_events as f64 * 10_000.0,
    }
}

/// The connector's own records of each body: the same value bytes and headers.
fn prepare(kafka: &KafkaSettings, routing: &RoutingTable, bodies: &[String]) -> Vec<Notification> {
    let received_at = chrono::Utc::now();
    let limits = pipeline::Limits::of(&Settings::default());
    let prepare = |body: &String| {
        let accepted = pipeline::accept(pipeline::Input {
            body: body.as_bytes(),
            entity: &CUSTOMER,
            received_at,
            limits: &limits,
            table: routing,
        })
        .expect("corpus bodies are accepted");
        let events = accepted.events.len();
        let mut records = accepted.into_records();
        // The trace context a request without one gets: a new sampled trace.
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        records.trace = Some(TraceHeaders::new(traceparent.into(), ""));
        let headers = records.headers(&kafka.cloudevents_source);
        let prepared = (records.records.iter().zip(headers))
            .map(|(record, headers)| Prepared {
                topic: record.topic.to_string(),
                key: record.key.clone(),
                value: records.value(record).map(<[u8]>::to_vec),
                headers,
            })
            .collect();
        Notification {
            records: prepared,
            events,
        }
    };
    bodies.iter().map(prepare).collect()
}

/// Hands one record to librdkafka, waiting while its queue is full.
fn send(producer: &ThreadedProducer<CountingContext>, record: &Prepared) {
    let mut next = BaseRecord::to(&record.topic)
        .key(&record.key)
        .headers(record.headers.clone());
    next.payload = record.value.as_deref();
    loop {
        match producer.send(next) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                next = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((error, _)) => panic!("baseline produce failed: {error}"),
        }
    }
}

/// Waits until `total` records were answered for (the polling thread counts them).
fn wait_for(counts: &Counting, total: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while counts.acknowledged.load(Ordering::Relaxed) + counts.failed.load(Ordering::Relaxed)
        < total
    {
        assert!(
            Instant::now() < deadline,
            "the baseline's records were not all answered for"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
