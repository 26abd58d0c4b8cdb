//! Why a request's records are not all in Kafka, and whether sending the same
//! request again later may succeed (the broker is slow or away) or needs an operator
//! (the topic is missing, access is denied, the record is too large). Both mean "not
//! persisted", so the caller must not answer 200. A record refused for what it
//! is (too large, invalid) is a content refusal: the same request can never pass.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use rdkafka::message::OwnedHeaders;

use crate::config::{is_secret_property, KafkaSettings};
use crate::records::{wire_bytes, Record, Records};

/// Why the producer could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the Kafka producer: {}", without_values(.0))]
pub struct ProducerError(pub(super) KafkaError);

/// `error` as text, never with a configuration value: librdkafka's client
/// configuration errors quote the value they refuse (`Client config error: ...
/// sasl.password hunter2`). For a property whose name says it holds a secret,
/// librdkafka's own description is left out too (it may quote the value).
pub fn without_values(error: &KafkaError) -> String {
    match error {
        KafkaError::ClientConfig(_, _, key, _) if is_secret_property(key) => {
            format!("librdkafka refused the property {key:?} (its value is not shown)")
        }
        KafkaError::ClientConfig(_, description, key, _) => {
            format!("librdkafka refused the property {key:?}: {description}")
        }
        other => other.to_string(),
    }
}

/// Why a request's events are not all in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// No acknowledgement within `kafka.delivery_timeout_ms`.
    #[error("Kafka did not acknowledge every event within {timeout_ms} ms (topics: {topics})")]
    TimedOut { topics: String, timeout_ms: u64 },
    /// The connector is shutting down and its grace period is over.
    #[error("the connector is shutting down and could not wait longer for Kafka")]
    ShuttingDown,
    /// Kafka or the client refused a record.
    #[error("Kafka refused the {change_type} event for topic {topic}: {reason}")]
    Refused {
        topic: String,
        change_type: String,
        reason: String,
        retriable: bool,
        /// librdkafka's error code, when there is one.
        code: Option<RDKafkaErrorCode>,
    },
}

impl DeliveryError {
    /// Whether sending the same request again later may succeed without an operator.
    pub fn is_retriable(&self) -> bool {
        match self {
            DeliveryError::TimedOut { .. } | DeliveryError::ShuttingDown => true,
            DeliveryError::Refused { retriable, .. } => *retriable,
        }
    }

    /// Whether Kafka refuses the records for what they are, so that sending the same
    /// notification again can never succeed: a content refusal, answered 4xx and
    /// kept on the dead-letter topic, never 503.
    pub fn is_content_refusal(&self) -> bool {
        self.is_too_large()
            || matches!(self, DeliveryError::Refused { code: Some(code), .. } if *code == RDKafkaErrorCode::InvalidRecord)
    }

    /// Whether a record is larger than Kafka takes: past the producer's
    /// `message.max.bytes` (checked before anything is enqueued), or refused by a
    /// broker whose (topic's) limit is lower.
    pub fn is_too_large(&self) -> bool {
        use RDKafkaErrorCode::*;
        matches!(
            self,
            DeliveryError::Refused {
                code: Some(MessageSizeTooLarge | MessageBatchTooLarge),
                ..
            }
        )
    }
}

/// The first of `records` that the sink would refuse before enqueuing anything,
/// for its size against `settings`' `message.max.bytes` (for `explain` and a
/// replay's dry run, which enqueue nothing).
pub fn first_oversized(records: &Records<'_>, settings: &KafkaSettings) -> Option<DeliveryError> {
    let headers = records.headers(&settings.cloudevents_source);
    oversized(records, &headers, settings.max_message_bytes())
}

/// The first record that Kafka would refuse for its size (`headers[i]`: the
/// headers of `records.records[i]`), with why: its size as librdkafka counts it
/// against the producer's `message.max.bytes` (`max_message_bytes`).
pub(super) fn oversized(
    records: &Records<'_>,
    headers: &[OwnedHeaders],
    max_message_bytes: usize,
) -> Option<DeliveryError> {
    records
        .records
        .iter()
        .zip(headers)
        .find_map(|(record, headers)| {
            let bytes = wire_bytes(record.key.len(), record.value_len(), headers);
            (bytes > max_message_bytes).then(|| DeliveryError::Refused {
                topic: record.topic.to_string(),
                change_type: record.what().to_string(),
                reason: format!(
                "the record takes {bytes} bytes as Kafka counts them (key, value and headers), \
                 more than the producer's message.max.bytes ({max_message_bytes})"
            ),
                retriable: false,
                code: Some(RDKafkaErrorCode::MessageSizeTooLarge),
            })
        })
}

/// Why `record` is not in Kafka: `error` (a producer destroyed before Kafka
/// answered reports its records purged, which is retriable).
pub(super) fn refused(record: &Record<'_>, error: &KafkaError) -> DeliveryError {
    DeliveryError::Refused {
        topic: record.topic.to_string(),
        change_type: record.what().to_string(),
        reason: error.to_string(),
        retriable: retriable_kafka_error(error),
        code: error.rdkafka_error_code(),
    }
}

/// Errors after which this producer's idempotence state (producer id, epoch,
/// sequence numbers) is no longer accepted by the broker.
pub(super) fn breaks_idempotence(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        ProducerFenced
            | InvalidProducerEpoch
            | UnknownProducerId
            | OutOfOrderSequenceNumber
            | InvalidProducerIdMapping
            | Fenced
            | Fatal
    )
}

/// Permanent: fixing it needs an operator (create the topic, grant access, raise a
/// size limit). Everything else may pass when the same request is sent again.
fn retriable_kafka_error(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    !matches!(
        error.rdkafka_error_code(),
        Some(
            UnknownTopicOrPartition
                | UnknownTopic
                | TopicAuthorizationFailed
                | ClusterAuthorizationFailed
                | MessageSizeTooLarge
                | MessageBatchTooLarge
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

    fn refused(code: RDKafkaErrorCode) -> DeliveryError {
        DeliveryError::Refused {
            topic: "t".into(),
            change_type: "X".into(),
            reason: "r".into(),
            retriable: false,
            code: Some(code),
        }
    }

    #[test]
    fn records_too_large_or_invalid_are_content_refusals_and_nothing_else_is() {
        use RDKafkaErrorCode::*;
        for code in [MessageSizeTooLarge, MessageBatchTooLarge] {
            assert!(refused(code).is_too_large() && refused(code).is_content_refusal());
        }
        assert!(refused(InvalidRecord).is_content_refusal());
        assert!(!refused(InvalidRecord).is_too_large());
        for code in [
            UnknownTopicOrPartition,
            TopicAuthorizationFailed,
            MessageTimedOut,
            InvalidMessage,
            NotEnoughReplicas,
        ] {
            assert!(!refused(code).is_content_refusal(), "{code:?}");
        }
        let timed_out = DeliveryError::TimedOut {
            topics: "t".into(),
            timeout_ms: 1,
        };
        assert!(!timed_out.is_content_refusal());
        assert!(!DeliveryError::ShuttingDown.is_content_refusal());
    }

    #[test]
    fn the_first_record_over_message_max_bytes_is_named_with_its_size() {
        use crate::records::RawMeta;
        let meta = RawMeta {
            entity: "customer",
            request_id: "r".into(),
            received_at: "2018-11-16T10:46:20Z".into(),
            content_type: None,
            refusal: None,
        };
        let mut records = Records::raw("small", "1".into(), &[b'x'; 10], meta.clone());
        records.push_raw("large", "1".into(), &[b'x'; 2000], meta);
        let headers = records.headers("urn:x");
        let large = wire_bytes(1, 2000, &headers[1]);
        assert!(oversized(&records, &headers, large).is_none());
        let error = oversized(&records, &headers, large - 1).unwrap();
        assert!(error.is_too_large());
        assert_eq!(
            error.to_string(),
            format!(
                "Kafka refused the (raw notification) event for topic large: the record takes \
                 {large} bytes as Kafka counts them (key, value and headers), more than the \
                 producer's message.max.bytes ({})",
                large - 1
            )
        );
    }

    #[test]
    fn client_configuration_errors_never_show_a_value() {
        use rdkafka::producer::BaseProducer;
        let refuse = |key: &str, value: &str| {
            rdkafka::ClientConfig::new()
                .set(key, value)
                .create::<BaseProducer>()
                .err()
                .unwrap()
        };
        // librdkafka's own text quotes the value.
        let secret = refuse("SASL.Password", "hunter2-secret");
        assert!(secret.to_string().contains("hunter2-secret"));
        let text = ProducerError(secret).to_string();
        assert!(!text.contains("hunter2-secret"), "{text}");
        assert!(
            text.contains("\"SASL.Password\" (its value is not shown)"),
            "{text}"
        );
        let plain = without_values(&refuse("linger.ms", "soon"));
        assert!(
            plain.starts_with("librdkafka refused the property \"linger.ms\": "),
            "{plain}"
        );
    }

    #[test]
    fn classifies_kafka_errors() {
        let produce = |code| KafkaError::MessageProduction(code);
        assert!(!retriable_kafka_error(&produce(
            RDKafkaErrorCode::UnknownTopicOrPartition
        )));
        assert!(!retriable_kafka_error(&produce(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
        assert!(!retriable_kafka_error(&produce(
            RDKafkaErrorCode::MessageSizeTooLarge
        )));
        assert!(retriable_kafka_error(&produce(
            RDKafkaErrorCode::MessageTimedOut
        )));
        assert!(retriable_kafka_error(&produce(
            RDKafkaErrorCode::AllBrokersDown
        )));
        assert!(retriable_kafka_error(&produce(
            RDKafkaErrorCode::NotEnoughReplicas
        )));
        assert!(retriable_kafka_error(&produce(RDKafkaErrorCode::QueueFull)));
    }
}
