//! The routing table in use, and its hot reload on SIGHUP or when the routing file
//! changes on disk.
//!
//! A reload parses and validates the whole file first; only a valid table replaces
//! the current one, in one atomic swap. Requests take the table once, when they
//! start, so a reload never changes the routes of a request in flight. An invalid
//! file keeps the old table, logs what is wrong (file, route, key) and is counted.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::routes::{self, RoutesError};
use crate::routing::RoutingTable;
use crate::telemetry::metrics::Metrics;

/// The current routing table and where it comes from.
pub struct Routing {
    file: PathBuf,
    current: RwLock<Arc<RoutingTable>>,
    /// The file's text when it was last read, to tell whether it changed.
    last_text: Mutex<Option<String>>,
    metrics: Arc<Metrics>,
}

impl Routing {
    /// Starts with `table`, already loaded from `file`.
    pub fn new(file: PathBuf, table: RoutingTable, metrics: Arc<Metrics>) -> Self {
        let text = std::fs::read_to_string(&file).ok();
        Routing {
            file,
            current: RwLock::new(Arc::new(table)),
            last_text: Mutex::new(text),
            metrics,
        }
    }

    /// The table for a request starting now.
    pub fn current(&self) -> Arc<RoutingTable> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads and validates the file; swaps the table in when it is valid.
    pub fn reload(&self, trigger: &str) -> Result<(), RoutesError> {
        let text = std::fs::read_to_string(&self.file);
        *self
            .last_text
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = text.as_ref().ok().cloned();
        let table = text
            .map_err(|cause| RoutesError::Read {
                file: self.file.display().to_string(),
                cause,
            })
            .and_then(|text| routes::parse(&text, &self.file.display().to_string()));
        match table {
            Ok(table) => {
                let routes = table.routes().len();
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
                self.metrics.routing_reloaded(true);
                info!(trigger, file = %self.file.display(), routes, "routing table reloaded");
                Ok(())
            }
            Err(err) => {
                self.metrics.routing_reloaded(false);
                error!(trigger, error = %err, "routing file invalid; keeping the current table");
                Err(err)
            }
        }
    }

    /// Whether the file's text differs from what was last read.
    fn changed_on_disk(&self) -> bool {
        let text = std::fs::read_to_string(&self.file).ok();
        *self
            .last_text
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            != text
    }
}

/// Reloads on SIGHUP, and every `interval` when the file changed (no polling when
/// `interval` is zero), until `stop` is cancelled.
pub async fn watch(routing: Arc<Routing>, interval: Duration, stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(error) => {
            warn!(%error, "cannot watch SIGHUP; routing reloads only when the file changes");
            None
        }
    };
    let mut ticks = (!interval.is_zero()).then(|| tokio::time::interval(interval));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            Some(()) = async { hangups.as_mut()?.recv().await } => {
                let _ = routing.reload("SIGHUP");
            }
            Some(_) = async { Some(ticks.as_mut()?.tick().await) } => {
                if routing.changed_on_disk() {
                    let _ = routing.reload("file changed");
                }
            }
        }
    }
}
