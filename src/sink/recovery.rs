//! Replacing a producer that can no longer produce: after a fatal error, an error
//! that breaks its idempotence state, or when its deliveries time out while Kafka
//! answers metadata requests (it is stuck). Old producers are destroyed on a thread
//! of their own.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rdkafka::producer::Producer as _;
use tokio::time::Instant;
use tracing::error;

use rdkafka::error::RDKafkaErrorCode;

use super::classify::{breaks_idempotence, DeliveryError};
use super::delivery::{create_producer, KafkaProducer, KafkaSink};

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

impl KafkaSink {
    /// What a failed delivery says about `producer`: replace it at once when it is
    /// in a fatal state or its idempotence state is broken; after a timeout, check in
    /// the background (the sender gets its 503 now) whether it is stuck.
    pub(super) fn after_failure(
        self: &Arc<Self>,
        producer: Arc<DetachedProducer>,
        error: &DeliveryError,
        topic: Option<String>,
    ) {
        match error {
            DeliveryError::ShuttingDown => {}
            DeliveryError::Refused { code, .. } => {
                let fatal = producer.client().fatal_error().is_some();
                if must_replace(*code, fatal) {
                    self.replace(&producer, code.map(|c| c.to_string()));
                }
            }
            DeliveryError::TimedOut { .. } => {
                let sink = Arc::clone(self);
                tokio::spawn(async move { sink.replace_if_stuck(&producer, topic).await });
            }
        }
    }

    /// After a delivery timeout: when nothing was acknowledged for two delivery
    /// timeouts while Kafka answers a metadata request at once, the brokers are up and
    /// it is this producer that cannot deliver (librdkafka keeps bumping the epoch of
    /// a producer id that a restarted broker no longer knows), so replace it. A slow
    /// or paused broker does not qualify: its metadata requests time out too, or some
    /// deliveries still succeed. One check at a time, at most one per delivery timeout.
    pub(super) async fn replace_if_stuck(
        &self,
        producer: &Arc<DetachedProducer>,
        topic: Option<String>,
    ) {
        let Ok(mut last_check) = self.last_stuck_check.try_lock() else {
            return;
        };
        let idle = self
            .last_acknowledged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed();
        let since_last_check = last_check.map(|at| at.elapsed());
        if !worth_checking(idle, since_last_check, self.delivery_timeout) {
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
    pub(super) fn replace(&self, failed: &Arc<DetachedProducer>, cause: Option<String>) {
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
        match create_producer(&self.config) {
            Ok(fresh) => {
                *current = Arc::new(DetachedProducer(Some(fresh)));
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
}

/// Whether a refusal means the producer can no longer produce: librdkafka says it
/// is in a fatal state, or the error breaks its idempotence state.
fn must_replace(code: Option<RDKafkaErrorCode>, fatal: bool) -> bool {
    fatal || code.is_some_and(breaks_idempotence)
}

/// Whether a producer whose deliveries time out may be stuck, so that a metadata
/// request should tell: nothing was acknowledged for two delivery timeouts, and no
/// such check ran within the last delivery timeout.
fn worth_checking(
    idle: Duration,
    since_last_check: Option<Duration>,
    delivery_timeout: Duration,
) -> bool {
    idle >= delivery_timeout * 2 && since_last_check.is_none_or(|since| since >= delivery_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn a_producer_is_replaced_when_fatal_or_its_idempotence_is_broken() {
        use RDKafkaErrorCode::*;
        for code in [
            ProducerFenced,
            UnknownProducerId,
            OutOfOrderSequenceNumber,
            Fatal,
        ] {
            assert!(must_replace(Some(code), false), "{code:?}");
        }
        for code in [
            MessageTimedOut,
            UnknownTopicOrPartition,
            MessageSizeTooLarge,
        ] {
            assert!(!must_replace(Some(code), false), "{code:?}");
            assert!(must_replace(Some(code), true), "{code:?}");
        }
        assert!(!must_replace(None, false));
    }

    #[test]
    fn a_timed_out_producer_is_checked_after_two_idle_timeouts_at_most_once_per_timeout() {
        let s = Duration::from_secs;
        assert!(worth_checking(s(20), None, TIMEOUT));
        assert!(worth_checking(s(25), Some(s(10)), TIMEOUT));
        // Something was acknowledged recently: a slow broker, not a stuck producer.
        assert!(!worth_checking(s(19), None, TIMEOUT));
        // Checked recently.
        assert!(!worth_checking(s(30), Some(s(9)), TIMEOUT));
    }
}
