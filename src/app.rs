//! Assembles the pipeline and runs the HTTP server until asked to stop.
//!
//! Shutdown: `/readyz` answers 503 first (for the drain delay the caller waits,
//! see [`RunningServer::stop_being_ready`]), then stop accepting, let in-flight requests finish within
//! `server.shutdown_grace_ms` (those still waiting for Kafka near its end are
//! answered 503), then flush the producer with what is left of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::Signal;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::routing_file::RoutingFile;
use crate::config::{Settings, SettingsError};
use crate::ingress::{self, server, Ingress};
use crate::reload::{self, LiveTable};
use crate::sink::{KafkaSink, ProducerError};
use crate::telemetry::metrics::Metrics;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// Settings that may not be served (no secrets without `allow_unsigned`).
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

/// A started server: where it listens and how to stop it.
pub struct RunningServer {
    addr: SocketAddr,
    ingress: Arc<Ingress>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers `/readyz` with 503 from now on while serving on, so load balancers
    /// take this replica out before [`RunningServer::shutdown`] stops accepting.
    pub fn stop_being_ready(&self) {
        self.ingress.readiness.stop();
    }

    /// Stops accepting, drains in-flight requests and flushes the producer;
    /// returns when done or when the grace period is over. An error means the
    /// server task panicked (the panic was printed when it happened).
    pub async fn shutdown(self) -> Result<(), tokio::task::JoinError> {
        self.stop_being_ready();
        let _ = self.stop.send(());
        self.task.await
    }
}

/// Binds `settings.server.listen` and serves with `routing_file`
/// (loaded and validated by the caller) until [`RunningServer::shutdown`],
/// reloading the routing file when it changes.
pub async fn start(
    settings: &Settings,
    routing_file: RoutingFile,
) -> Result<RunningServer, StartError> {
    settings.check_serving()?;
    settings.check_archive_topics(&routing_file.table)?;
    if settings.webhook.secrets.is_empty() {
        warn!("webhook.allow_unsigned is set and there are no secrets: anyone who can reach the endpoint can post events");
    }
    let ingress = Arc::new(ingress_off_the_async_threads(settings, routing_file).await?);
    let (live, sink, metrics) = (
        Arc::clone(&ingress.live),
        Arc::clone(&ingress.sink),
        Arc::clone(&ingress.metrics),
    );
    let addr = settings.server.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|cause| StartError::Listen { addr, cause })?;
    let addr = listener
        .local_addr()
        .map_err(|cause| StartError::Listen { addr, cause })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let run = Run {
        listener,
        ingress: Arc::clone(&ingress),
        sink,
        live,
        metrics,
        grace: settings.server.shutdown_grace(),
        server_options: server::ServerOptions {
            header_read_timeout: settings.server.request_read_timeout(),
            max_connections: settings.server.max_connections,
            max_header_bytes: settings.server.max_header_bytes,
        },
        watch_interval: settings.routing.watch_interval(),
        hangups: reload::hangups(),
    };
    let task = tokio::spawn(run.until(stopped));
    Ok(RunningServer {
        addr,
        ingress,
        stop,
        task,
    })
}

/// [`Ingress::new`] on a blocking thread: creating the producer starts librdkafka's
/// threads and loads its TLS material, which may sit on a slow volume.
async fn ingress_off_the_async_threads(
    settings: &Settings,
    routing_file: RoutingFile,
) -> Result<Ingress, ProducerError> {
    let settings = settings.clone();
    match tokio::task::spawn_blocking(move || Ingress::new(&settings, routing_file)).await {
        Ok(ingress) => ingress,
        // A panic goes on as the caller's; the task is cancelled only when the
        // runtime shuts down, which drops this future first.
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Everything a running server owns.
struct Run {
    listener: TcpListener,
    ingress: Arc<Ingress>,
    sink: Arc<KafkaSink>,
    live: Arc<LiveTable>,
    metrics: Arc<Metrics>,
    grace: Duration,
    server_options: server::ServerOptions,
    watch_interval: Duration,
    hangups: Option<Signal>,
}

impl Run {
    async fn until(self, stopped: oneshot::Receiver<()>) {
        let watching = CancellationToken::new();
        tokio::spawn(reload::watch(
            self.live,
            self.hangups,
            self.watch_interval,
            watching.clone(),
        ));
        let (drain, force_close) = server::serve(
            self.listener,
            ingress::filters(self.ingress),
            self.metrics,
            self.server_options,
            async {
                let _ = stopped.await;
            },
        )
        .await;
        watching.cancel();
        let deadline = Instant::now() + self.grace;
        // Requests still waiting for Kafka near the end of the grace period are
        // answered 503 (never 200); the rest of it goes to the producer flush.
        let stop_waiting_at = deadline - flush_reserve(self.grace);
        tokio::pin!(drain);
        if tokio::time::timeout_at(stop_waiting_at, &mut drain)
            .await
            .is_err()
        {
            warn!(
                grace_ms = self.grace.as_millis() as u64,
                "grace period nearly over: answering 503 to requests still waiting for Kafka"
            );
            self.sink.stop_waiting();
            if tokio::time::timeout_at(deadline, &mut drain).await.is_err() {
                warn!("grace period over with connections still open; closing them");
                force_close.cancel();
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let sink = self.sink;
        match tokio::task::spawn_blocking(move || sink.flush(remaining)).await {
            Ok(Ok(())) => info!("producer flushed; stopped"),
            Ok(Err(error)) => warn!(%error, "producer flush incomplete at shutdown"),
            Err(error) => warn!(%error, "producer flush failed at shutdown"),
        }
    }
}

/// The part of the grace period kept for flushing the producer.
fn flush_reserve(grace: Duration) -> Duration {
    (grace / 10).min(Duration::from_secs(1))
}
