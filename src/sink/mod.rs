//! The Kafka side: an idempotent rdkafka producer that delivers a request's events
//! and reports success only when Kafka acknowledged every one of them (`acks=all`).
//!
//! Records: key = customer id (decimal), value = the flat event as JSON, headers
//! `event_id`, `change_type` (null value when there is none), `schema_version` and
//! `content-type`. Failures are classified as retriable (the broker is slow or
//! away) or permanent (the topic is missing, access is denied, the record is too
//! large); both mean "not persisted", so the caller must not answer 200.

pub mod admin;

use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use tokio::time::Instant;

use crate::config::KafkaSettings;
use crate::normalize::{FlatEvent, SCHEMA_VERSION};

/// An event and the topics it must reach.
pub type RoutedEvent<'a> = (&'a FlatEvent, Vec<&'a str>);

/// Why the producer could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the Kafka producer: {0}")]
pub struct ProducerError(#[from] KafkaError);

/// Why a request's events are not all in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// No acknowledgement within `kafka.delivery_timeout_ms`.
    #[error("Kafka did not acknowledge every event within {timeout_ms} ms (topics: {topics})")]
    TimedOut { topics: String, timeout_ms: u64 },
    /// Kafka or the client refused a record.
    #[error("Kafka refused the {change_type} event for topic {topic}: {reason}")]
    Refused {
        topic: String,
        change_type: String,
        reason: String,
        retriable: bool,
    },
}

impl DeliveryError {
    /// Whether sending the same request again later may succeed without an operator.
    pub fn is_retriable(&self) -> bool {
        match self {
            DeliveryError::TimedOut { .. } => true,
            DeliveryError::Refused { retriable, .. } => *retriable,
        }
    }
}

/// The producer and its delivery deadline.
pub struct KafkaSink {
    producer: FutureProducer,
    delivery_timeout: Duration,
}

/// The librdkafka configuration: the operator's properties under the settings the
/// connector's guarantees rest on.
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in &settings.properties {
        config.set(key, value);
    }
    config
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("client.id", "webhook-connector");
    config
}

impl KafkaSink {
    pub fn new(settings: &KafkaSettings) -> Result<Self, ProducerError> {
        let producer: FutureProducer = client_config(settings)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                settings.delivery_timeout_ms.to_string(),
            )
            .create()?;
        Ok(KafkaSink {
            producer,
            delivery_timeout: settings.delivery_timeout(),
        })
    }

    /// Produces every event to each of its topics and waits until Kafka acknowledged
    /// all of them, or fails at the first refusal or at the delivery timeout.
    /// Records are enqueued in order, so one customer's events keep their order.
    pub async fn deliver(&self, routed: &[RoutedEvent<'_>]) -> Result<(), DeliveryError> {
        let deadline = Instant::now() + self.delivery_timeout;
        let mut pending = Vec::with_capacity(routed.len());
        for (event, topics) in routed {
            let payload = serde_json::to_vec(event).expect("a flat event always serializes");
            let key = event.key();
            let headers = headers(event);
            for topic in topics {
                let record = FutureRecord::to(topic)
                    .key(&key)
                    .payload(&payload)
                    .headers(headers.clone());
                let delivery = self.enqueue(record, deadline, event).await?;
                pending.push(async move {
                    match delivery.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((error, _))) => Err(refused(topic, event, &error)),
                        Err(_canceled) => Err(DeliveryError::Refused {
                            topic: topic.to_string(),
                            change_type: change_type_name(event).into(),
                            reason: "the producer shut down before Kafka answered".into(),
                            retriable: true,
                        }),
                    }
                });
            }
        }
        let all = try_join_all(pending);
        match tokio::time::timeout_at(deadline, all).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(DeliveryError::TimedOut {
                topics: distinct_topics(routed).join(", "),
                timeout_ms: self.delivery_timeout.as_millis() as u64,
            }),
        }
    }

    /// Hands one record to librdkafka, waiting while its queue is full.
    async fn enqueue(
        &self,
        mut record: FutureRecord<'_, String, Vec<u8>>,
        deadline: Instant,
        event: &FlatEvent,
    ) -> Result<rdkafka::producer::DeliveryFuture, DeliveryError> {
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, back)) => return Err(refused(back.topic, event, &error)),
            }
        }
    }

    /// Waits up to `timeout` for every queued record to be delivered or to fail.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// The producer, for metadata queries.
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }
}

fn distinct_topics<'a>(routed: &[RoutedEvent<'a>]) -> Vec<&'a str> {
    let mut topics: Vec<&str> = routed.iter().flat_map(|(_, t)| t.iter().copied()).collect();
    topics.sort_unstable();
    topics.dedup();
    topics
}

fn headers(event: &FlatEvent) -> OwnedHeaders {
    let event_id = event.event_id.to_string();
    let schema_version = SCHEMA_VERSION.to_string();
    OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: "event_id",
            value: Some(&event_id),
        })
        .insert(Header {
            key: "change_type",
            value: event.change_type.as_deref(),
        })
        .insert(Header {
            key: "schema_version",
            value: Some(&schema_version),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        })
}

fn change_type_name(event: &FlatEvent) -> &str {
    event.change_type.as_deref().unwrap_or("(no change)")
}

fn refused(topic: &str, event: &FlatEvent, error: &KafkaError) -> DeliveryError {
    DeliveryError::Refused {
        topic: topic.to_string(),
        change_type: change_type_name(event).to_string(),
        reason: error.to_string(),
        retriable: is_retriable(error),
    }
}

/// Permanent: fixing it needs an operator (create the topic, grant access, raise a
/// size limit). Everything else may pass when the same request is sent again.
fn is_retriable(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    !matches!(
        error.rdkafka_error_code(),
        Some(
            UnknownTopicOrPartition
                | UnknownTopic
                | TopicAuthorizationFailed
                | ClusterAuthorizationFailed
                | MessageSizeTooLarge
                | InvalidMessageSize
                | InvalidMessage
                | InvalidRecord
                | InvalidTopic
                | UnknownPartition
                | InvalidArgument
                | Authentication
                | SaslAuthenticationFailed,
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_kafka_errors() {
        let produce = |code| KafkaError::MessageProduction(code);
        assert!(!is_retriable(&produce(
            RDKafkaErrorCode::UnknownTopicOrPartition
        )));
        assert!(!is_retriable(&produce(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
        assert!(!is_retriable(&produce(
            RDKafkaErrorCode::MessageSizeTooLarge
        )));
        assert!(is_retriable(&produce(RDKafkaErrorCode::MessageTimedOut)));
        assert!(is_retriable(&produce(RDKafkaErrorCode::AllBrokersDown)));
        assert!(is_retriable(&produce(RDKafkaErrorCode::NotEnoughReplicas)));
        assert!(is_retriable(&produce(RDKafkaErrorCode::QueueFull)));
    }
}
