//! The routing table in use, and its hot reload on SIGHUP or when the routing file
//! changes on disk.
//!
//! A reload parses and validates the whole file first; only a valid table replaces
//! the current one, in one atomic swap. Requests take the table once, when they
//! start, so a reload never changes the routes of a request in flight. An invalid
//! file keeps the old table, logs what is wrong (file, route, key) and is counted.
//! When polling, a changed file is applied once two checks in a row read the same
//! text, so a file caught half-written is not applied.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::routes::{self, RoutesError};
use crate::routing::RoutingTable;
use crate::telemetry::metrics::Metrics;

/// The current routing table and where it comes from.
pub struct Routing {
    file: PathBuf,
    current: RwLock<Arc<RoutingTable>>,
    /// The text of the table in use, and a changed text seen at the last check.
    texts: Mutex<Texts>,
    metrics: Arc<Metrics>,
}

struct Texts {
    applied: Option<String>,
    pending: Option<String>,
}

fn read(file: &PathBuf) -> Result<String, RoutesError> {
    std::fs::read_to_string(file).map_err(|cause| RoutesError::Read {
        file: file.display().to_string(),
        cause,
    })
}

impl Routing {
    /// Loads and validates `file`.
    pub fn load(file: PathBuf, metrics: Arc<Metrics>) -> Result<Self, RoutesError> {
        let text = read(&file)?;
        let table = routes::parse(&text, &file.display().to_string())?;
        Ok(Routing {
            file,
            current: RwLock::new(Arc::new(table)),
            texts: Mutex::new(Texts {
                applied: Some(text),
                pending: None,
            }),
            metrics,
        })
    }

    /// The table for a request starting now.
    pub fn current(&self) -> Arc<RoutingTable> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the file now and applies it when valid.
    pub fn reload(&self, trigger: &str) -> Result<(), RoutesError> {
        let text = read(&self.file);
        self.apply(trigger, text)
    }

    fn apply(&self, trigger: &str, text: Result<String, RoutesError>) -> Result<(), RoutesError> {
        let mut texts = self.texts.lock().unwrap_or_else(PoisonError::into_inner);
        texts.pending = None;
        texts.applied = text.as_ref().ok().cloned();
        let table = text.and_then(|text| routes::parse(&text, &self.file.display().to_string()));
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

    /// One polling check: applies a changed file once it read the same twice in a row.
    fn check_file(&self) {
        let text = read(&self.file).ok();
        let stable = {
            let mut texts = self.texts.lock().unwrap_or_else(PoisonError::into_inner);
            if text == texts.applied {
                texts.pending = None;
                return;
            }
            if texts.pending != text {
                texts.pending = text;
                return;
            }
            texts.pending.take()
        };
        let text = stable.ok_or_else(|| RoutesError::Read {
            file: self.file.display().to_string(),
            cause: std::io::Error::new(std::io::ErrorKind::NotFound, "the file is gone"),
        });
        let _ = self.apply("file changed", text);
    }
}

/// The SIGHUP stream; created when the server starts, so a SIGHUP arriving at any
/// time after that reloads instead of ending the process.
pub fn hangups() -> Option<Signal> {
    signal(SignalKind::hangup())
        .inspect_err(|error| warn!(%error, "cannot watch SIGHUP; routing reloads only when the file changes"))
        .ok()
}

/// Reloads on SIGHUP, and checks the file every `interval` (not at all when it is
/// zero), until `stop` is cancelled.
pub async fn watch(
    routing: Arc<Routing>,
    mut hangups: Option<Signal>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = (!interval.is_zero()).then(|| tokio::time::interval(interval));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            Some(()) = async { hangups.as_mut()?.recv().await } => {
                let _ = routing.reload("SIGHUP");
            }
            Some(_) = async { Some(ticks.as_mut()?.tick().await) } => routing.check_file(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: &str = "[unmatched]\ntopic = \"first\"\n";
    const SECOND: &str = "[unmatched]\ntopic = \"second\"\n";

    fn routing_on(text: &str) -> (tempfile::TempDir, PathBuf, Routing) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.toml");
        std::fs::write(&file, text).unwrap();
        let routing = Routing::load(file.clone(), Arc::new(Metrics::new())).unwrap();
        (dir, file, routing)
    }

    #[test]
    fn a_changed_file_applies_once_two_checks_agree() {
        let (_dir, file, routing) = routing_on(FIRST);
        routing.check_file();
        assert_eq!(routing.current().unmatched_topic(), "first");
        std::fs::write(&file, SECOND).unwrap();
        routing.check_file();
        assert_eq!(
            routing.current().unmatched_topic(),
            "first",
            "seen once: maybe half-written"
        );
        routing.check_file();
        assert_eq!(routing.current().unmatched_topic(), "second");
    }

    #[test]
    fn a_file_still_changing_is_not_applied() {
        let (_dir, file, routing) = routing_on(FIRST);
        std::fs::write(&file, "[unmatched]\ntopic = \"sec").unwrap();
        routing.check_file();
        std::fs::write(&file, SECOND).unwrap();
        routing.check_file();
        assert_eq!(routing.current().unmatched_topic(), "first");
        routing.check_file();
        assert_eq!(routing.current().unmatched_topic(), "second");
    }

    #[test]
    fn an_invalid_file_keeps_the_table_and_is_not_retried_until_it_changes() {
        let (_dir, file, routing) = routing_on(FIRST);
        std::fs::write(&file, "[unmatched]\ntopic = \"a b\"\n").unwrap();
        assert!(routing.reload("test").is_err());
        assert_eq!(routing.current().unmatched_topic(), "first");
        routing.check_file();
        routing.check_file();
        let failed = routing.metrics.render();
        assert!(
            failed.contains("routing_reloads_total{result=\"failed\"} 1"),
            "{failed}"
        );
    }
}
