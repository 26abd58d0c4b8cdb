//! `run`: serve the webhook endpoints until SIGINT or SIGTERM, then drain within
//! the grace period.

use std::time::Duration;

use tracing::{info, warn};
use webhook_connector::config::routing_file::RoutingFile;
use webhook_connector::config::Settings;
use webhook_connector::{app, entity, reload, telemetry};

use super::{load, runtime, ConfigArg, Failure};

/// How long past the grace period shutdown may take before the process exits anyway.
const SHUTDOWN_LEFTOVER: Duration = Duration::from_secs(1);

pub(super) fn run(config: &ConfigArg) -> Result<(), Failure> {
    let (settings, routing_file) = load(config)?;
    telemetry::init(&settings.log);
    reload::log_warnings(&routing_file.table);
    let runtime = runtime()?;
    let result = runtime.block_on(serve(settings, routing_file));
    // Work still running (a readiness probe, an acknowledgement wait) may not
    // hold the process past its grace period.
    runtime.shutdown_timeout(SHUTDOWN_LEFTOVER);
    result
}

async fn serve(settings: Settings, routing_file: RoutingFile) -> Result<(), Failure> {
    let topics = routing_file.table.all_topics().len();
    let server = app::start(&settings, routing_file).await?;
    info!(
        listen = %server.addr(),
        kafka = %settings.kafka.bootstrap_servers,
        topics,
        endpoints = %entity::endpoints(),
        "webhook-connector listening"
    );
    wait_for_stop_signal().await;
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

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(error) => {
            warn!(%error, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
