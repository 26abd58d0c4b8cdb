//! The Kafka side: an idempotent rdkafka producer that delivers a request's events
//! and reports success only when Kafka acknowledged every one of them (`acks=all`).
//!
//! [`record`] builds the records; this module delivers them. Failures are classified as retriable (the broker is slow or
//! away) or permanent (the topic is missing, access is denied, the record is too
//! large); both mean "not persisted", so the caller must not answer 200.

pub mod admin;
pub mod record;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use prometheus_client::metrics::counter::Counter;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::ClientConfig;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::config::KafkaSettings;
use record::{headers_of, Record, Records, RECORD_OVERHEAD_BYTES};

/// Why the producer could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the Kafka producer: {0}")]
pub struct ProducerError(KafkaError);

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

/// A producer that is destroyed on a thread of its own: destroying one (purge,
/// flush, join its threads) blocks, which must not happen on the async threads.
pub struct Producer(Option<FutureProducer>);

impl std::ops::Deref for Producer {
    type Target = FutureProducer;
    fn deref(&self) -> &FutureProducer {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if let Some(producer) = self.0.take() {
            std::thread::spawn(move || drop(producer));
        }
    }
}

/// The producer and its delivery deadline.
pub struct KafkaSink {
    /// How to make a producer; used again when one hits a fatal error.
    config: ClientConfig,
    /// The producer in use. Replaced (never mutated) after a fatal error, so a
    /// request holds one producer from its first record to its last.
    producer: RwLock<Arc<Producer>>,
    delivery_timeout: Duration,
    /// Cancelled when shutdown can wait no longer: pending deliveries fail at once.
    give_up: CancellationToken,
    /// When a timed-out delivery last led to checking whether the producer is stuck.
    last_stuck_check: tokio::sync::Mutex<Option<Instant>>,
    /// When a request's events were last all acknowledged (or the producer created).
    last_acknowledged: std::sync::Mutex<Instant>,
    /// Counts producer replacements (a metric).
    replacements: Counter,
}

/// The librdkafka configuration: the operator's properties under the settings the
/// connector's guarantees rest on.
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    // Defaults the operator may override: report a missing topic after a second
    // instead of holding its events until the delivery timeout, and never have a
    // topic created as a side effect of producing, a readiness probe or a check.
    config
        .set("topic.metadata.propagation.max.ms", "1000")
        .set("allow.auto.create.topics", "false");
    for (key, value) in &settings.properties {
        config.set(key, value);
    }
    config
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("client.id", "webhook-connector");
    config
}

/// The producer's configuration: [`client_config`] plus the settings "200 means
/// acknowledged" rests on (idempotence, `acks=all`, the delivery timeout), and a
/// queue bounded by `max_in_flight_bytes` (`server.max_in_flight_bytes`), in bytes
/// and, through the per-record overhead the connector counts, in records.
pub fn producer_config(settings: &KafkaSettings, max_in_flight_bytes: usize) -> ClientConfig {
    let mut config = client_config(settings);
    let kbytes = max_in_flight_bytes.div_ceil(1024);
    let messages = (max_in_flight_bytes / RECORD_OVERHEAD_BYTES).max(1);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            settings.delivery_timeout_ms.to_string(),
        )
        .set("queue.buffering.max.kbytes", kbytes.to_string())
        .set("queue.buffering.max.messages", messages.to_string());
    config
}

impl KafkaSink {
    /// `replacements` counts the producers replaced after fatal states; the queue is
    /// bounded by `max_in_flight_bytes`.
    pub fn new(
        settings: &KafkaSettings,
        max_in_flight_bytes: usize,
        replacements: Counter,
    ) -> Result<Self, ProducerError> {
        let config = producer_config(settings, max_in_flight_bytes);
        let producer: FutureProducer = config.create().map_err(ProducerError)?;
        Ok(KafkaSink {
            config,
            producer: RwLock::new(Arc::new(Producer(Some(producer)))),
            delivery_timeout: settings.delivery_timeout(),
            give_up: CancellationToken::new(),
            last_stuck_check: tokio::sync::Mutex::new(None),
            last_acknowledged: std::sync::Mutex::new(Instant::now()),
            replacements,
        })
    }

    /// Produces every record and waits until Kafka acknowledged all of them, or fails
    /// at the first refusal, at the delivery timeout or when shutdown can wait no
    /// longer. Records are enqueued in order, so one customer's events keep their
    /// order. `held` (the request's share of `server.max_in_flight_bytes`) is kept
    /// until Kafka answered for every enqueued record, even when the caller is gone.
    pub async fn deliver(
        self: &Arc<Self>,
        mut records: Records<'_>,
        held: OwnedSemaphorePermit,
    ) -> Result<(), DeliveryError> {
        let producer = self.producer();
        let result = self.deliver_with(&producer, &mut records, held).await;
        match &result {
            Ok(()) => {
                *self
                    .last_acknowledged
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Instant::now();
            }
            Err(DeliveryError::ShuttingDown) => {}
            Err(DeliveryError::Refused { code, .. }) => {
                if code.is_some_and(breaks_idempotence) || producer.client().fatal_error().is_some()
                {
                    self.replace(&producer, code.map(|c| c.to_string()));
                }
            }
            Err(DeliveryError::TimedOut { .. }) => {
                // In the background: the sender gets its 503 now.
                let sink = Arc::clone(self);
                let topic = records.records.first().map(|r| r.topic.to_string());
                tokio::spawn(async move { sink.replace_if_stuck(&producer, topic).await });
            }
        }
        result
    }

    /// After a delivery timeout: when nothing was acknowledged for two delivery
    /// timeouts while Kafka answers a metadata request at once, the brokers are up and
    /// it is this producer that cannot deliver (librdkafka keeps bumping the epoch of
    /// a producer id that a restarted broker no longer knows), so replace it. A slow
    /// or paused broker does not qualify: its metadata requests time out too, or some
    /// deliveries still succeed. One check at a time, at most one per delivery timeout.
    async fn replace_if_stuck(&self, producer: &Arc<Producer>, topic: Option<String>) {
        let Ok(mut last_check) = self.last_stuck_check.try_lock() else {
            return;
        };
        if last_check.is_some_and(|at| at.elapsed() < self.delivery_timeout) {
            return;
        }
        let idle = self
            .last_acknowledged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed();
        if idle < self.delivery_timeout * 2 {
            return;
        }
        *last_check = Some(Instant::now());
        let probe = Arc::clone(producer);
        let reachable = tokio::task::spawn_blocking(move || {
            probe
                .client()
                .fetch_metadata(topic.as_deref(), Duration::from_secs(1))
                .is_ok()
        })
        .await
        .unwrap_or(false);
        if reachable {
            self.replace(
                producer,
                Some("deliveries time out while Kafka answers metadata requests".into()),
            );
        }
    }

    /// A producer in a fatal state, or whose idempotence state the broker no longer
    /// accepts (fenced after an epoch bump, unknown after a broker lost its state),
    /// refuses everything from then on; replace it so the connector recovers without a
    /// restart. Its unacknowledged records were answered 503, so nothing is lost.
    fn replace(&self, failed: &Arc<Producer>, cause: Option<String>) {
        let mut current = self
            .producer
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&current, failed) {
            return; // Another request replaced it already.
        }
        let fatal = failed
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code}: {reason}"));
        let cause = fatal.or(cause).unwrap_or_default();
        match self.config.create::<FutureProducer>() {
            Ok(fresh) => {
                *current = Arc::new(Producer(Some(fresh)));
                *self
                    .last_acknowledged
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Instant::now();
                self.replacements.inc();
                error!(%cause, "the Kafka producer can no longer produce; replaced it with a new one");
            }
            Err(error) => {
                error!(%cause, %error, "the Kafka producer can no longer produce and a new one could not be created");
            }
        }
    }

    async fn deliver_with(
        &self,
        producer: &FutureProducer,
        records: &mut Records<'_>,
        held: OwnedSemaphorePermit,
    ) -> Result<(), DeliveryError> {
        let deadline = Instant::now() + self.delivery_timeout;
        // The task that waits for Kafka's answers owns the request's bytes from the
        // start: if this request is dropped mid-way (its sender left), the records
        // already enqueued stay counted until Kafka answered for them.
        let (enqueued, incoming) = mpsc::unbounded_channel();
        let (report, answer) = oneshot::channel();
        tokio::spawn(await_acknowledgements(incoming, held, report));
        for (n, record) in records.records.iter().enumerate() {
            // A large notification must not hold this thread for long.
            if n % 64 == 63 {
                tokio::task::yield_now().await;
            }
            let delivery = self.enqueue(producer, records, record, deadline).await?;
            // The task ends only after this sender is dropped: it is still there.
            let _ = enqueued.send(delivery);
        }
        drop(enqueued);
        // librdkafka copied every value: free them now, not when the request ends.
        records.payloads = Vec::new();
        tokio::select! {
            answer = tokio::time::timeout_at(deadline, answer) => match answer {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err((index, error)))) => Err(refused(&records.records[index], error.as_ref())),
                // The acknowledgement task ended without an answer: the runtime stops.
                Ok(Err(_)) => Err(DeliveryError::ShuttingDown),
                Err(_) => Err(self.timed_out(records)),
            },
            () = self.give_up.cancelled() => Err(DeliveryError::ShuttingDown),
        }
    }

    /// Hands one record to librdkafka, waiting while its queue is full, until the
    /// deadline or until shutdown can wait no longer.
    async fn enqueue(
        &self,
        producer: &FutureProducer,
        records: &Records<'_>,
        record: &Record<'_>,
        deadline: Instant,
    ) -> Result<rdkafka::producer::DeliveryFuture, DeliveryError> {
        let mut future_record = FutureRecord::to(record.topic)
            .key(record.key.as_str())
            .payload(records.payload(record))
            .headers(headers_of(record.event_id, record.change_type.as_deref()));
        loop {
            if self.give_up.is_cancelled() {
                return Err(DeliveryError::ShuttingDown);
            }
            match producer.send_result(future_record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    future_record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(self.timed_out(records))
                }
                Err((error, _)) => return Err(refused(record, Some(&error))),
            }
        }
    }

    fn timed_out(&self, records: &Records<'_>) -> DeliveryError {
        DeliveryError::TimedOut {
            topics: records.distinct_topics().join(", "),
            timeout_ms: self.delivery_timeout.as_millis() as u64,
        }
    }

    /// Makes every pending and future [`deliver`](Self::deliver) fail at once with
    /// [`DeliveryError::ShuttingDown`]; the records stay queued for [`flush`](Self::flush).
    pub fn stop_waiting(&self) {
        self.give_up.cancel();
    }

    /// Waits up to `timeout` for every queued record to be delivered or to fail.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer().flush(timeout)
    }

    /// The producer in use (also for metadata queries).
    pub fn producer(&self) -> Arc<Producer> {
        Arc::clone(&self.producer.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Waits until Kafka answered for every record sent on `incoming` (in enqueue
/// order), reports the first failure (or success, once `incoming` is closed and
/// every answer is in) as soon as it is known, and gives the request's bytes back
/// only after the last answer: a request whose sender went away stays counted
/// until then.
async fn await_acknowledgements(
    mut incoming: mpsc::UnboundedReceiver<rdkafka::producer::DeliveryFuture>,
    held: OwnedSemaphorePermit,
    report: oneshot::Sender<Result<(), (usize, Option<KafkaError>)>>,
) {
    let mut pending = FuturesUnordered::new();
    let (mut enqueued, mut open) = (0, true);
    let mut report = Some(report);
    loop {
        let (index, outcome) = tokio::select! {
            delivery = incoming.recv(), if open => {
                match delivery {
                    Some(delivery) => {
                        let index = enqueued;
                        enqueued += 1;
                        pending.push(async move { (index, delivery.await) });
                    }
                    None => open = false,
                }
                continue;
            }
            Some(answered) = pending.next(), if !pending.is_empty() => answered,
            else => break,
        };
        let failure = match outcome {
            Ok(Ok(_)) => continue,
            Ok(Err((error, _))) => Some(error),
            // The producer was destroyed before Kafka answered.
            Err(_canceled) => None,
        };
        if let Some(report) = report.take() {
            let _ = report.send(Err((index, failure)));
        }
    }
    if let Some(report) = report {
        let _ = report.send(Ok(()));
    }
    drop(held);
}

/// Why `record` is not in Kafka: `error`, or `None` when the producer was
/// destroyed before Kafka answered (retriable).
fn refused(record: &Record<'_>, error: Option<&KafkaError>) -> DeliveryError {
    let change_type = record.change_type.as_deref().unwrap_or("(no change)");
    DeliveryError::Refused {
        topic: record.topic.to_string(),
        change_type: change_type.to_string(),
        reason: error.map_or_else(
            || "the producer shut down before Kafka answered".to_string(),
            KafkaError::to_string,
        ),
        retriable: error.is_none_or(is_retriable),
        code: error.and_then(KafkaError::rdkafka_error_code),
    }
}

/// Errors after which this producer's idempotence state (producer id, epoch,
/// sequence numbers) is no longer accepted by the broker.
fn breaks_idempotence(code: RDKafkaErrorCode) -> bool {
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
