//! Assembles the pipeline and runs the HTTP server until asked to stop.
//!
//! Shutdown: stop accepting, let in-flight requests finish within
//! `server.shutdown_grace_ms`, then flush the producer with what is left of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::Settings;
use crate::ingress::{self, Ingress, Readiness};
use crate::routing::RoutingTable;
use crate::sink::{KafkaSink, ProducerError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Producer(#[from] ProducerError),
}

/// A started server: where it listens and how to stop it.
pub struct RunningServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, drains in-flight requests and flushes the producer;
    /// returns when done or when the grace period is over.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Binds `settings.server.listen` and serves until [`RunningServer::shutdown`].
pub async fn start(
    settings: &Settings,
    routing: RoutingTable,
) -> Result<RunningServer, StartError> {
    let sink = Arc::new(KafkaSink::new(&settings.kafka)?);
    let addr = settings.server.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?;
    let state = Arc::new(Ingress {
        routing,
        sink: Arc::clone(&sink),
        secrets: settings.webhook.secrets.clone(),
        max_body_bytes: settings.server.max_body_bytes,
        body_read_timeout: settings.server.body_read_timeout(),
        in_flight: Semaphore::new(settings.server.max_in_flight),
        readiness: Readiness::default(),
    });
    let grace = settings.server.shutdown_grace();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, sink, stopped, grace));
    Ok(RunningServer { addr, stop, task })
}

/// The part of the grace period kept for flushing the producer.
fn flush_reserve(grace: Duration) -> Duration {
    (grace / 10).min(Duration::from_secs(1))
}

async fn serve(
    listener: TcpListener,
    state: Arc<Ingress>,
    sink: Arc<KafkaSink>,
    stopped: oneshot::Receiver<()>,
    grace: Duration,
) {
    let (draining, drain_started) = oneshot::channel::<Instant>();
    let signal = async move {
        let _ = stopped.await;
        let _ = draining.send(Instant::now());
    };
    let server = warp::serve(ingress::routes(state))
        .incoming(listener)
        .graceful(signal)
        .run();
    tokio::pin!(server);
    let deadline = tokio::select! {
        () = &mut server => Instant::now() + grace,
        started = drain_started => {
            let deadline = started.unwrap_or_else(|_| Instant::now()) + grace;
            // Requests still waiting for Kafka near the end of the grace period are
            // answered 503 (never 200); the rest of it goes to the producer flush.
            let stop_waiting_at = deadline - flush_reserve(grace);
            if tokio::time::timeout_at(stop_waiting_at, &mut server).await.is_err() {
                warn!(grace_ms = grace.as_millis() as u64, "grace period nearly over: answering 503 to requests still waiting for Kafka");
                sink.stop_waiting();
                if tokio::time::timeout_at(deadline, &mut server).await.is_err() {
                    warn!("grace period over with connections still open; closing them");
                }
            }
            deadline
        }
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let flushed = tokio::task::spawn_blocking(move || sink.flush(remaining)).await;
    match flushed {
        Ok(Ok(())) => info!("producer flushed; stopped"),
        Ok(Err(error)) => warn!(%error, "producer flush incomplete at shutdown"),
        Err(error) => warn!(%error, "producer flush failed at shutdown"),
    }
}
