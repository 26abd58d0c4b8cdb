//! Replacing a producer that can no longer produce: after a fatal error, an error
//! that breaks its idempotence state, or when its deliveries time out while Kafka
//! answers metadata requests (it is stuck).
//!
//! Nothing here blocks an async worker or the requests: the new producer is built
//! on a blocking thread (librdkafka starts its threads and loads TLS material,
//! which may sit on a slow volume) while requests keep taking the old one; only the
//! swap takes the producer lock, briefly. One replacement runs at a time. Old
//! producers are destroyed on a thread of their own.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rdkafka::producer::Producer as _;
use tokio::time::Instant;
use tracing::error;

use rdkafka::error::RDKafkaErrorCode;

use super::classify::{breaks_idempotence, DeliveryError};
use super::delivery::{create_producer, DetachedProducer, KafkaSink};

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
                    // In a task of its own: this request is answered now, and a
                    // request gone meanwhile does not cancel the replacement.
                    let sink = Arc::clone(self);
                    let cause = code.map(|c| c.to_string());
                    tokio::spawn(async move { sink.replace(&producer, cause).await });
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
            )
            .await;
        }
    }

    /// A producer in a fatal state, or whose idempotence state the broker no longer
    /// accepts (fenced after an epoch bump, unknown after a broker lost its state),
    /// refuses everything from then on; replace it so the connector recovers without a
    /// restart. Its unacknowledged records were answered 503, so nothing is lost.
    /// Requests failing while a replacement is under way leave it be (no herd of
    /// producers built at once); requests starting meanwhile still take `failed`.
    pub(super) async fn replace(&self, failed: &Arc<DetachedProducer>, cause: Option<String>) {
        let Ok(_replacing) = self.replacing.try_lock() else {
            return; // Under way.
        };
        if !Arc::ptr_eq(&self.producer(), failed) {
            return; // Replaced already.
        }
        let fatal = failed
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code}: {reason}"));
        let cause = fatal.or(cause).unwrap_or_default();
        let config = self.config.clone();
        let built = tokio::task::spawn_blocking(move || {
            // Wrapped here, so a producer built for a replacement that was
            // cancelled meanwhile is destroyed off the async threads too.
            create_producer(&config).map(|fresh| Arc::new(DetachedProducer(Some(fresh))))
        })
        .await;
        match built {
            Ok(Ok(fresh)) => {
                self.swap_in(fresh);
                error!(%cause, "the Kafka producer can no longer produce; replaced it with a new one");
            }
            Ok(Err(error)) => {
                error!(%cause, %error, "the Kafka producer can no longer produce and a new one could not be created");
            }
            Err(error) => {
                error!(%cause, %error, "the Kafka producer can no longer produce and creating a new one failed");
            }
        }
    }

    /// Puts `fresh` in use. The write lock every request's read waits for is held
    /// for the swap only; the old producer is let go after it is released.
    fn swap_in(&self, fresh: Arc<DetachedProducer>) {
        let old = std::mem::replace(
            &mut *self
                .producer
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            fresh,
        );
        *self
            .last_acknowledged
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.replacements.inc();
        drop(old);
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
    use std::path::Path;
    use std::sync::mpsc;

    use prometheus_client::metrics::counter::Counter;

    use super::*;
    use crate::config::KafkaSettings;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A self-signed CA: TLS material a producer loads when it is created.
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBoDCCAUWgAwIBAgIUGAU5/xBQjbG9hd0BEOqxAVMJha4wCgYIKoZIzj0EAwIw
JDEiMCAGA1UEAwwZd2ViaG9vay1jb25uZWN0b3IgdGVzdCBDQTAgFw0yNjEyMDcy
MDI1MDdaGA8yMTI2MTExMzIwMjUwN1owJDEiMCAGA1UEAwwZd2ViaG9vay1jb25u
ZWN0b3IgdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABB4fSVRpFmhA
QH70i77ThxGWyv3HIyS452/gsn5mfvqBL+dc3dOCmqb88CJnTn5KaylYsMUvB1bo
7S2OiFamURejUzBRMB0GA1UdDgQWBBTOttrgF89WKO+ezU0txqI2uFKDsDAfBgNV
HSMEGDAWgBTOttrgF89WKO+ezU0txqI2uFKDsDAPBgNVHRMBAf8EBTADAQH/MAoG
CCqGSM49BAMCA0kAMEYCIQDfyRg99BpjeXA2CQPt1PFbBLnidlG9D9QML8/s2fOe
EAIhAM3cZ8ZESaoJpvVcUQLPCXXsNBGCSaCbaKwBaPGwh4uU
-----END CERTIFICATE-----
";

    /// A sink (no broker needed: creating a producer connects to nothing) whose
    /// next producers read their CA from `ca`, and its replacements counter.
    fn sink_loading_ca_from(ca: &Path) -> (Arc<KafkaSink>, Counter) {
        let settings = KafkaSettings {
            bootstrap_servers: "127.0.0.1:1".into(),
            ..KafkaSettings::default()
        };
        let replacements = Counter::default();
        let mut sink = KafkaSink::new(&settings, 1 << 20, replacements.clone()).unwrap();
        sink.config
            .set("security.protocol", "ssl")
            .set("ssl.ca.location", ca.display().to_string());
        (Arc::new(sink), replacements)
    }

    /// A slow volume for real: opening a FIFO for reading waits for a writer. Once
    /// `release` says so (or after 5 s, so a failing test ends), writes the CA.
    fn slow_ca_file(dir: &Path) -> (std::path::PathBuf, mpsc::Sender<()>) {
        let ca = dir.join("ca.pem");
        let made = std::process::Command::new("mkfifo").arg(&ca).status();
        assert!(made.unwrap().success(), "mkfifo");
        let (release, released) = mpsc::channel();
        let fifo = ca.clone();
        std::thread::spawn(move || {
            let _ = released.recv_timeout(Duration::from_secs(5));
            std::fs::write(fifo, CA_PEM).unwrap();
        });
        (ca, release)
    }

    // A current-thread runtime: had the build run on the one async thread, or held
    // the lock `producer()` takes, the test would stall there until the CA comes.
    #[tokio::test]
    async fn while_a_replacement_is_built_requests_are_served_and_no_second_one_starts() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, release) = slow_ca_file(dir.path());
        let (sink, replacements) = sink_loading_ca_from(&ca);
        let failed = sink.producer();
        let replacing = tokio::spawn({
            let (sink, failed) = (Arc::clone(&sink), Arc::clone(&failed));
            async move { sink.replace(&failed, Some("test".into())).await }
        });
        // The build is now waiting for its CA.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let during = Instant::now();
        assert!(
            Arc::ptr_eq(&sink.producer(), &failed),
            "the old one meanwhile"
        );
        let second = tokio::time::timeout(Duration::from_secs(1), sink.replace(&failed, None));
        assert!(second.await.is_ok(), "a second failure waits for nothing");
        assert!(
            during.elapsed() < Duration::from_secs(1),
            "{:?}",
            during.elapsed()
        );
        assert!(!replacing.is_finished());
        assert_eq!(replacements.get(), 0);

        release.send(()).unwrap();
        replacing.await.unwrap();
        assert!(!Arc::ptr_eq(&sink.producer(), &failed), "replaced");
        assert_eq!(replacements.get(), 1);
        sink.replace(&failed, None).await;
        assert_eq!(replacements.get(), 1, "a producer is replaced once");
    }

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
