//! Why a request's records are not all in Kafka, and whether sending the same
//! request again later may succeed (the broker is slow or away) or needs an operator
//! (the topic is missing, access is denied, the record is too large). Both mean "not
//! persisted", so the caller must not answer 200.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::record::Record;

/// Why the producer could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the Kafka producer: {0}")]
pub struct ProducerError(pub(super) KafkaError);

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
