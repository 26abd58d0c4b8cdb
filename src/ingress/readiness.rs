//! `GET /readyz`: ready only while Kafka answers a metadata request and every
//! routed topic exists, and not once the process is stopping. The answer is
//! cached for a second so probes cost nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use crate::routing::RoutingTable;
use rdkafka::producer::Producer;

use crate::sink::{admin, KafkaSink};

/// How long one answer is reused.
const CACHE_FOR: Duration = Duration::from_secs(1);
/// How long the metadata request may take before Kafka counts as unreachable.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// The cached result of the last check.
#[derive(Default)]
pub struct Readiness {
    last: Mutex<Option<(Instant, Report)>>,
    /// Set on SIGTERM: load balancers are to take the replica out.
    stopping: AtomicBool,
}

/// What `/readyz` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    ready: bool,
    reasons: Vec<String>,
}

impl Report {
    fn stopping() -> Report {
        Report {
            ready: false,
            reasons: vec!["shutting down".into()],
        }
    }

    pub fn into_response(self) -> Response {
        let status = if self.ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        warp::reply::with_status(warp::reply::json(&self), status).into_response()
    }
}

impl Readiness {
    /// From now on, not ready: the process is stopping.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Whether every topic a request may write to exists: `routing`'s and the
    /// `archive` ones.
    pub async fn check(
        &self,
        sink: &Arc<KafkaSink>,
        routing: &RoutingTable,
        archive: &[&str],
    ) -> Report {
        if !self.is_stopping() {
            let report = self.kafka_report(sink, routing, archive).await;
            // Asked again: the stop may have come while the probe ran.
            if !self.is_stopping() {
                return report;
            }
        }
        Report::stopping()
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The last report, or a new one when it is older than [`CACHE_FOR`].
    async fn kafka_report(
        &self,
        sink: &Arc<KafkaSink>,
        routing: &RoutingTable,
        archive: &[&str],
    ) -> Report {
        let mut last = self.last.lock().await;
        if let Some((at, report)) = last.as_ref() {
            if at.elapsed() < CACHE_FOR {
                return report.clone();
            }
        }
        let report = probe(Arc::clone(sink), routing, archive).await;
        *last = Some((Instant::now(), report.clone()));
        report
    }
}

async fn probe(sink: Arc<KafkaSink>, routing: &RoutingTable, archive: &[&str]) -> Report {
    let mut topics = routing.all_topics();
    topics.extend(archive);
    let topics: Vec<String> = topics.into_iter().map(String::from).collect();
    let result = tokio::task::spawn_blocking(move || {
        admin::missing_topics(
            sink.producer().client(),
            topics.iter().map(String::as_str),
            METADATA_TIMEOUT,
        )
        .map(|missing| missing.into_iter().map(String::from).collect::<Vec<_>>())
    })
    .await;
    let reasons = match result {
        Ok(Ok(missing)) => missing
            .into_iter()
            .map(|t| format!("topic {t} does not exist in Kafka"))
            .collect(),
        Ok(Err(error)) => vec![format!("Kafka is unreachable: {error}")],
        Err(join_error) => vec![format!("the readiness check failed: {join_error}")],
    };
    Report {
        ready: reasons.is_empty(),
        reasons,
    }
}
