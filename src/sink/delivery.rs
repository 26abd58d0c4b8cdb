//! Delivering a request's records: enqueue them in order, then wait until Kafka
//! acknowledged every one, or fail at the first refusal, at the delivery timeout or
//! when shutdown can wait no longer. A request's records share one [`Acknowledgements`]
//! counter: librdkafka's delivery reports count it down, and the request's task is
//! woken once, by the last acknowledgement or the first failure (not once per
//! record). The request's bytes are held until Kafka answered for every enqueued
//! record, even when the request is gone.
//!
//! The producer is made here too ([`create_producer`]) and destroyed off the async
//! threads ([`DetachedProducer`]); [`super::recovery`] replaces it, and this module
//! imports nothing of that one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::ClientConfig;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::classify::{oversized, refused, DeliveryError, ProducerError};
use super::config::producer_config;
use crate::config::KafkaSettings;
use crate::records::{Record, Records};

/// The connector's producer: librdkafka's delivery reports are served on its own
/// polling thread and counted by [`Reports`].
pub(crate) type KafkaProducer = ThreadedProducer<Reports>;

/// A producer that is destroyed on a thread of its own: destroying one (purge,
/// flush, join its threads) blocks, which must not happen on the async threads.
pub(crate) struct DetachedProducer(pub(super) Option<KafkaProducer>);

impl std::ops::Deref for DetachedProducer {
    type Target = KafkaProducer;
    fn deref(&self) -> &KafkaProducer {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for DetachedProducer {
    fn drop(&mut self) {
        if let Some(producer) = self.0.take() {
            std::thread::spawn(move || drop(producer));
        }
    }
}

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
    /// Held while a replacement producer is built: one replacement at a time,
    /// however many requests see the old one fail (a tokio Mutex, for `try_lock`
    /// held across the build without blocking a thread).
    pub(super) replacing: tokio::sync::Mutex<()>,
    /// Counts producer replacements (a metric).
    pub(super) replacements: Counter,
    /// The records' CloudEvents source (`kafka.cloudevents_source`).
    pub(super) cloudevents_source: String,
    /// The producer's `message.max.bytes`: a larger record is refused before
    /// anything of its request is enqueued.
    pub(super) max_message_bytes: usize,
}

/// How a request's delivery ended: every record acknowledged, or the index of the
/// first record Kafka refused, and why.
type Outcome = Result<(), (usize, KafkaError)>;

/// One request's delivery: how many of its records Kafka has not answered for yet,
/// and where to report the outcome. Every enqueued record holds it (through its
/// delivery opaque), so it, and with it the request's bytes (`_held`), lives until
/// Kafka answered for the last one, even when the request is gone.
struct Acknowledgements {
    /// Records enqueued and not answered for, plus one while the request is still
    /// enqueuing (so the count cannot reach zero before the last record is in).
    pending: AtomicUsize,
    /// Taken by whoever reports first: the first failure, or the last acknowledgement.
    report: Mutex<Option<oneshot::Sender<Outcome>>>,
    /// A record refused because another record of its batch was invalid
    /// (`InvalidDifferentRecord`): reported by the last answer, unless a record of
    /// this request is refused for itself first (then that refusal, which may be
    /// a content refusal, is the request's outcome).
    deferred: Mutex<Option<(usize, KafkaError)>>,
    _held: OwnedSemaphorePermit,
}

impl Acknowledgements {
    /// Reports `outcome` unless something was reported already.
    fn report(&self, outcome: Outcome) {
        let sender = self
            .report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(sender) = sender {
            let _ = sender.send(outcome);
        }
    }

    /// One fewer record (or the enqueuing itself) to wait for; the last one reports
    /// success, or the deferred refusal (a failure reported earlier stands).
    fn answered(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let deferred = self
                .deferred
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            self.report(deferred.map_or(Ok(()), Err));
        }
    }

    /// Record `index` was refused with `error`: reported at once, or, when it was
    /// refused for another record of its batch, kept for the last answer.
    fn refused(&self, index: usize, error: &KafkaError) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::InvalidDifferentRecord) {
            return self.report(Err((index, error.clone())));
        }
        let mut deferred = self.deferred.lock().unwrap_or_else(PoisonError::into_inner);
        deferred.get_or_insert_with(|| (index, error.clone()));
    }
}

/// What each record carries to its delivery report: its request's counter and its
/// index among the request's records (to name it when it is refused).
pub(crate) struct Acknowledgement {
    of: Arc<Acknowledgements>,
    index: usize,
}

/// The producer's context: counts every delivery report against its request.
pub(crate) struct Reports;

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<Acknowledgement>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Box<Acknowledgement>) {
        if let Err((error, _)) = result {
            ack.of.refused(ack.index, error);
        }
        ack.of.answered();
    }
}

/// Creates a producer with `config` that counts delivery reports per request.
/// Blocks (threads, TLS material): never call it on an async worker.
pub(super) fn create_producer(config: &ClientConfig) -> Result<KafkaProducer, KafkaError> {
    config.create_with_context(Reports)
}

impl KafkaSink {
    /// `replacements` counts the producers replaced after fatal states; the queue is
    /// bounded by `max_in_flight_bytes`. Creating the producer blocks (librdkafka
    /// starts its threads and loads TLS material): inside the runtime, call this on
    /// a blocking thread, as [`crate::app::start`] does.
    pub fn new(
        settings: &KafkaSettings,
        max_in_flight_bytes: usize,
        replacements: Counter,
    ) -> Result<Self, ProducerError> {
        let config = producer_config(settings, max_in_flight_bytes);
        let producer = create_producer(&config).map_err(ProducerError)?;
        Ok(KafkaSink {
            config,
            producer: RwLock::new(Arc::new(DetachedProducer(Some(producer)))),
            delivery_timeout: settings.delivery_timeout(),
            give_up: CancellationToken::new(),
            last_stuck_check: tokio::sync::Mutex::new(None),
            last_acknowledged: std::sync::Mutex::new(Instant::now()),
            replacing: tokio::sync::Mutex::new(()),
            replacements,
            cloudevents_source: settings.cloudevents_source.clone(),
            max_message_bytes: settings.max_message_bytes(),
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
        producer: &KafkaProducer,
        records: &mut Records<'_>,
        held: OwnedSemaphorePermit,
    ) -> Result<(), DeliveryError> {
        let deadline = Instant::now() + self.delivery_timeout;
        // Every record is checked before any is enqueued: a request with a record
        // Kafka can never take is refused whole (a content refusal).
        let mut headers = records.headers(&self.cloudevents_source);
        if let Some(refusal) = oversized(records, &headers, self.max_message_bytes) {
            return Err(refusal);
        }
        let (report, answer) = oneshot::channel();
        let acks = Arc::new(Acknowledgements {
            pending: AtomicUsize::new(1),
            report: Mutex::new(Some(report)),
            deferred: Mutex::new(None),
            _held: held,
        });
        // librdkafka copies each value: an event's buffer is freed as soon as its
        // last record is in, not when the request ends.
        let mut values = std::mem::take(&mut records.buffers);
        for (index, (record, headers)) in
            (records.records.iter()).zip(headers.drain(..)).enumerate()
        {
            // A large notification must not hold this thread for long.
            if index % 64 == 63 {
                tokio::task::yield_now().await;
            }
            let ack = Acknowledgement {
                of: Arc::clone(&acks),
                index,
            };
            let value =
                (record.value.as_ref()).map(|slot| &values[slot.buffer][slot.range.clone()]);
            self.enqueue(producer, records, (record, value, headers), ack, deadline)
                .await?;
            let buffer = record.value.as_ref().map(|slot| slot.buffer);
            let next = (records.records.get(index + 1)).and_then(|r| r.value.as_ref());
            if let Some(buffer) = buffer.filter(|b| next.is_none_or(|n| n.buffer != *b)) {
                values[buffer] = Vec::new();
            }
        }
        drop(values);
        // Every record is in: the last delivery report may now report success.
        acks.answered();
        drop(acks);
        tokio::select! {
            answer = tokio::time::timeout_at(deadline, answer) => match answer {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err((index, error)))) => Err(refused(&records.records[index], &error)),
                // Unreachable while a record is pending: its report holds the sender.
                Ok(Err(_)) => Err(DeliveryError::ShuttingDown),
                Err(_) => Err(self.timed_out(records)),
            },
            () = self.give_up.cancelled() => Err(DeliveryError::ShuttingDown),
        }
    }

    /// Hands one record to librdkafka, waiting while its queue is full, until the
    /// deadline or until shutdown can wait no longer. The record counts as pending
    /// from before it is handed over (its report may come at once) until it is
    /// answered, or refused here.
    async fn enqueue(
        &self,
        producer: &KafkaProducer,
        records: &Records<'_>,
        (record, value, headers): (&Record<'_>, Option<&[u8]>, OwnedHeaders),
        ack: Acknowledgement,
        deadline: Instant,
    ) -> Result<(), DeliveryError> {
        let acks = Arc::clone(&ack.of);
        acks.pending.fetch_add(1, Ordering::AcqRel);
        let mut base = BaseRecord::with_opaque_to(record.topic, Box::new(ack))
            .key(record.key.as_str())
            .headers(headers);
        // No value: a tombstone.
        base.payload = value;
        let error = loop {
            if self.give_up.is_cancelled() {
                break DeliveryError::ShuttingDown;
            }
            match producer.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    base = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    break self.timed_out(records)
                }
                Err((error, _)) => break refused(record, &error),
            }
        };
        // Never handed over: it will not be answered for.
        acks.pending.fetch_sub(1, Ordering::AcqRel);
        Err(error)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use super::*;

    /// A request's counter holding `bytes` of a pool of 10, and where it reports.
    fn acknowledgements(
        pool: &Arc<Semaphore>,
        bytes: u32,
    ) -> (Arc<Acknowledgements>, oneshot::Receiver<Outcome>) {
        let (report, answer) = oneshot::channel();
        let held = Arc::clone(pool).try_acquire_many_owned(bytes).unwrap();
        let acks = Arc::new(Acknowledgements {
            pending: AtomicUsize::new(1),
            report: Mutex::new(Some(report)),
            deferred: Mutex::new(None),
            _held: held,
        });
        (acks, answer)
    }

    #[test]
    fn success_is_reported_once_every_record_and_the_enqueuing_are_done() {
        let pool = Arc::new(Semaphore::new(10));
        let (acks, mut answer) = acknowledgements(&pool, 4);
        acks.pending.fetch_add(2, Ordering::AcqRel);
        acks.answered();
        // One record is still pending, and so is the enqueuing.
        assert!(answer.try_recv().is_err());
        acks.answered();
        assert!(answer.try_recv().is_err());
        acks.answered();
        assert_eq!(answer.try_recv().unwrap(), Ok(()));
    }

    #[test]
    fn the_first_failure_is_reported_at_once_and_later_answers_change_nothing() {
        let pool = Arc::new(Semaphore::new(10));
        let (acks, mut answer) = acknowledgements(&pool, 4);
        acks.pending.fetch_add(3, Ordering::AcqRel);
        let refused = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        acks.report(Err((1, refused.clone())));
        acks.answered();
        acks.report(Err((2, KafkaError::Canceled)));
        for _ in 0..3 {
            acks.answered();
        }
        assert_eq!(answer.try_recv().unwrap(), Err((1, refused)));
    }

    #[test]
    fn a_refusal_for_another_record_of_the_batch_gives_way_to_one_for_a_record_itself() {
        let pool = Arc::new(Semaphore::new(10));
        let other = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidDifferentRecord);
        let invalid = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord);
        let (acks, mut answer) = acknowledgements(&pool, 4);
        acks.pending.fetch_add(2, Ordering::AcqRel);
        acks.answered();
        acks.refused(0, &other);
        acks.answered();
        assert!(
            answer.try_recv().is_err(),
            "not before the request's own records"
        );
        acks.refused(1, &invalid);
        acks.answered();
        assert_eq!(answer.try_recv().unwrap(), Err((1, invalid)));
        // Only refused for others: that refusal (retriable), once all answered.
        let (acks, mut answer) = acknowledgements(&pool, 4);
        acks.pending.fetch_add(1, Ordering::AcqRel);
        acks.refused(0, &other);
        acks.answered();
        assert!(answer.try_recv().is_err());
        acks.answered();
        assert_eq!(answer.try_recv().unwrap(), Err((0, other)));
    }

    #[test]
    fn the_bytes_are_held_until_the_last_record_is_answered_even_when_the_request_is_gone() {
        let pool = Arc::new(Semaphore::new(10));
        let (acks, answer) = acknowledgements(&pool, 4);
        let records: Vec<Box<Acknowledgement>> = (0..2)
            .map(|index| {
                acks.pending.fetch_add(1, Ordering::AcqRel);
                Box::new(Acknowledgement {
                    of: Arc::clone(&acks),
                    index,
                })
            })
            .collect();
        acks.answered();
        // The request gives up (its sender left): its records are still in flight.
        drop((acks, answer));
        assert_eq!(pool.available_permits(), 6);
        let mut records = records.into_iter();
        let first = records.next().unwrap();
        first.of.answered();
        drop(first);
        assert_eq!(pool.available_permits(), 6);
        let last = records.next().unwrap();
        last.of.answered();
        drop(last);
        assert_eq!(pool.available_permits(), 10);
    }
}
