//! The baseline: the same flat events, built before the clock starts, produced
//! straight to Kafka with the connector's producer settings, as fast as Kafka
//! acknowledges them. No HTTP, no parsing: what Kafka itself allows here.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use webhook_connector::config::{KafkaSettings, ServerSettings, Settings};
use webhook_connector::entity::CUSTOMER;
use webhook_connector::routing::RoutingTable;
use webhook_connector::sink::record::headers_of;
use webhook_connector::{pipeline, sink};

/// One pre-built record.
struct Prepared {
    topic: String,
    key: String,
    payload: Vec<u8>,
    headers: rdkafka::message::OwnedHeaders,
}

/// Produces `events` records cycling through the corpus's events; returns events/s.
pub async fn run(
    kafka: &KafkaSettings,
    routing: &RoutingTable,
    bodies: &[String],
    events: usize,
) -> f64 {
    let received_at = chrono::Utc::now();
    let limits = Settings::default().limits();
    let mut prepared = Vec::new();
    for body in bodies {
        // The connector's own records: the same payload bytes and headers.
        let accepted = pipeline::accept(body.as_bytes(), &CUSTOMER, &limits, routing, received_at)
            .expect("corpus bodies are accepted");
        let records = accepted.records();
        for record in &records.records {
            prepared.push(Prepared {
                topic: record.topic.to_string(),
                key: record.key.clone(),
                payload: records.payload(record).unwrap_or_default().to_vec(),
                headers: headers_of(record, &kafka.cloudevents_source),
            });
        }
    }
    // The connector's queue bound too, from the default settings.
    let queue_bytes = ServerSettings::default().max_in_flight_bytes;
    let producer: FutureProducer = sink::producer_config(kafka, queue_bytes)
        .create()
        .expect("producer");
    // Connect and fetch metadata before the clock starts, as the connector has.
    let warm = &prepared[0];
    producer
        .send(
            FutureRecord::to(&warm.topic)
                .key(&warm.key)
                .payload(&warm.payload),
            Duration::from_secs(10),
        )
        .await
        .expect("warm-up record acknowledged");

    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(events);
    for record in prepared.iter().cycle().take(events) {
        let mut next = FutureRecord::to(&record.topic)
            .key(&record.key)
            .payload(&record.payload)
            .headers(record.headers.clone());
        loop {
            match producer.send_result(next) {
                Ok(delivery) => break deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    next = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((error, _)) => panic!("baseline produce failed: {error}"),
            }
        }
    }
    for delivery in deliveries {
        delivery
            .await
            .expect("delivery reported")
            .expect("baseline record acknowledged");
    }
    let elapsed = started.elapsed();
    producer.flush(Duration::from_secs(10)).ok();
    events as f64 / elapsed.as_secs_f64()
}
