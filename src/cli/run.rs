//! `run`: serve the webhook endpoints until SIGTERM or SIGINT, then drain within
//! the grace period. On SIGTERM `/readyz` fails first and the server goes on
//! serving for `server.drain_delay_ms`, so load balancers take the replica out
//! before it stops accepting; a second SIGTERM, or SIGINT, cuts that short.

use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{info, warn};
use webhook_connector::config::routing_file::RoutingFile;
use webhook_connector::config::Settings;
use webhook_connector::{app, entity, reload};

use super::{init_telemetry, load, runtime, ConfigArg, Failure};

/// How long past the grace period shutdown may take before the process exits anyway.
const SHUTDOWN_LEFTOVER: Duration = Duration::from_secs(1);

pub(super) fn run(config: &ConfigArg) -> Result<(), Failure> {
    let (settings, routing_file) = load(config)?;
    let exporter = init_telemetry(&settings)?;
    reload::log_warnings(&routing_file.table);
    let runtime = runtime()?;
    let result = runtime.block_on(serve(settings, routing_file));
    // Work still running (a readiness probe, an acknowledgement wait) may not
    // hold the process past its grace period.
    runtime.shutdown_timeout(SHUTDOWN_LEFTOVER);
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    result
}

async fn serve(settings: Settings, routing_file: RoutingFile) -> Result<(), Failure> {
    // Watched before the server starts: a signal during start-up stops it once started.
    let mut signals = StopSignals::watch();
    let topics = routing_file.table.all_topics().len();
    let server = app::start(&settings, routing_file).await?;
    info!(
        listen = %server.addr(),
        kafka = %settings.kafka.bootstrap_servers,
        topics,
        endpoints = %entity::endpoints(),
        "webhook-connector listening"
    );
    if signals.next().await == Stop::Terminate {
        drain_delay(&server, settings.server.drain_delay(), &mut signals).await;
    }
    info!(
        grace_ms = settings.server.shutdown_grace_ms,
        "stopping: draining in-flight requests"
    );
    let grace = settings.server.shutdown_grace();
    match tokio::time::timeout(grace + SHUTDOWN_LEFTOVER, server.shutdown()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(panicked)) => Err(Failure::Stopped(panicked)),
        Err(_) => {
            warn!("shutdown took longer than the grace period; exiting anyway");
            Ok(())
        }
    }
}

/// Serves on with `/readyz` failing for `delay`, or until the next signal.
async fn drain_delay(server: &app::RunningServer, delay: Duration, signals: &mut StopSignals) {
    server.stop_being_ready();
    info!(
        drain_delay_ms = delay.as_millis() as u64,
        "SIGTERM: /readyz answers 503; serving on for the drain delay before stopping"
    );
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        _ = signals.next() => info!("another signal: the drain delay is cut short"),
    }
}

/// Which signal asked the process to stop.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    Terminate,
    Interrupt,
}

/// SIGTERM and SIGINT, each a stream that keeps what arrives until it is read.
struct StopSignals {
    terminate: Option<Signal>,
    interrupt: Option<Signal>,
}

impl StopSignals {
    fn watch() -> Self {
        let watch = |kind: SignalKind, name: &str| {
            signal(kind)
                .inspect_err(|error| warn!(%error, "cannot watch {name}"))
                .ok()
        };
        StopSignals {
            terminate: watch(SignalKind::terminate(), "SIGTERM"),
            interrupt: watch(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// The next SIGTERM or SIGINT (never, when neither can be watched).
    async fn next(&mut self) -> Stop {
        tokio::select! {
            () = next_of(&mut self.interrupt) => Stop::Interrupt,
            () = next_of(&mut self.terminate) => Stop::Terminate,
        }
    }
}

/// The next signal `stream` receives; never, when it could not be watched.
async fn next_of(stream: &mut Option<Signal>) {
    match stream {
        Some(stream) => {
            stream.recv().await;
        }
        None => std::future::pending().await,
    }
}
