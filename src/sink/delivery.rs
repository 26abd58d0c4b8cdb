//! Delivering a request's records: enqueue them in order, then wait until Kafka
//! acknowledged every one, or fail at the first refusal, at the delivery timeout or
//! when shutdown can wait no longer. The request's bytes are held until Kafka
//! answered for every enqueued record, even when the request is gone.

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

use super::classify::{refused, DeliveryError, ProducerError};
use super::config::producer_config;
use super::record::{headers_of, Record, Records};
use super::recovery::DetachedProducer;
use crate::config::KafkaSettings;

/// The producer and its delivery deadline.
pub struct KafkaSink {
    /// How to make a producer; used again when one hits a fatal error.
    pub(super) config: ClientConfig,
    /// The producer in use. Replaced (never mutated) after a fatal error, so a
    /// request holds one producer from its first record to its last.
    pub(super) producer: RwLock<Arc<DetachedProducer>>,
    pub(super) delivery_timeout: Duration,
    /// Cancelled when shutdown can wait no longer: pending deliveries fail at once.
    pub(super) give_up: CancellationToken,
    /// When a timed-out delivery last led to checking whether the producer is stuck.
    pub(super) last_stuck_check: tokio::sync::Mutex<Option<Instant>>,
    /// When a request's events were last all acknowledged (or the producer created).
    pub(super) last_acknowledged: std::sync::Mutex<Instant>,
    /// Counts producer replacements (a metric).
    pub(super) replacements: Counter,
    /// The records' CloudEvents source (`kafka.cloudevents_source`).
    pub(super) cloudevents_source: String,
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
            producer: RwLock::new(Arc::new(DetachedProducer(Some(producer)))),
            delivery_timeout: settings.delivery_timeout(),
            give_up: CancellationToken::new(),
            last_stuck_check: tokio::sync::Mutex::new(None),
            last_acknowledged: std::sync::Mutex::new(Instant::now()),
            replacements,
            cloudevents_source: settings.cloudevents_source.clone(),
        })
    }

    /// Produces every record and waits until Kafka acknowledged all of them, or fails
    /// at the first refusal, at the delivery timeout or when shutdown can wait no
    /// longer. Records are enqueued in order, so one entity's events keep their
    /// order. `held` (the request's share of `server.max_in_flight_bytes`) is kept
    /// until Kafka answered for every enqueued record, even when the caller is gone.
    pub(crate) async fn deliver(
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
            Err(error) => {
                let topic = records.records.first().map(|r| r.topic.to_string());
                self.after_failure(producer, error, topic);
            }
        }
        result
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
        let mut future_record = FutureRecord::<str, [u8]>::to(record.topic)
            .key(record.key.as_str())
            .headers(headers_of(record, &self.cloudevents_source));
        // No payload: a tombstone.
        future_record.payload = records.payload(record);
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
    pub(crate) fn stop_waiting(&self) {
        self.give_up.cancel();
    }

    /// Waits up to `timeout` for every queued record to be delivered or to fail.
    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer().flush(timeout)
    }

    /// The producer in use (also for metadata queries).
    pub(crate) fn producer(&self) -> Arc<DetachedProducer> {
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
