//! The live table: the routing table in use, and its hot reload on SIGHUP or when
//! the routing file changes on disk.
//!
//! A reload parses and validates the whole file first; only a valid table replaces
//! the current one, in one atomic swap. Requests take the table once, when they
//! start, so a reload never changes the routes of a request in flight. An invalid
//! file keeps the old table, logs what is wrong (file, route, key) and is counted.
//! When polling, a changed file is applied once two checks in a row read the same
//! text, so a file caught half-written is not applied. Reading, parsing and
//! validating the file run on a blocking thread, one check at a time: the file may
//! sit on a slow volume, and the async threads serve the requests.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::routing_file::{self, RoutingFile, RoutingFileError};
use crate::privacy::Key;
use crate::routing::RoutingTable;
use crate::telemetry::metrics::Metrics;

/// The routing table in use and the file it comes from.
pub struct LiveTable {
    file: PathBuf,
    /// Topics a reloaded file may not name (the `[archive]` ones).
    reserved: Vec<String>,
    /// `privacy.key`, for rules that pseudonymise.
    key: Option<Arc<Key>>,
    current: RwLock<Arc<RoutingTable>>,
    /// The text of the table in use, and a changed text seen at the last check.
    texts: Mutex<Texts>,
    metrics: Arc<Metrics>,
}

struct Texts {
    /// The text in use (`None` after the file could not be read).
    applied: Option<String>,
    /// What the last check saw when it differed from `applied`: a text, or `None`
    /// for a file that could not be read; `pending` itself is `None` when nothing
    /// is pending.
    pending: Option<Option<String>>,
}

impl LiveTable {
    /// Starts with the routing file loaded at start-up.
    pub fn new(loaded: RoutingFile, metrics: Arc<Metrics>) -> Self {
        LiveTable {
            file: loaded.path,
            reserved: Vec::new(),
            key: loaded.key,
            current: RwLock::new(Arc::new(loaded.table)),
            texts: Mutex::new(Texts {
                applied: Some(loaded.text),
                pending: None,
            }),
            metrics,
        }
    }

    /// The same live table, refusing reloaded files that name one of `topics`.
    pub fn reserving(self, topics: Vec<String>) -> Self {
        LiveTable {
            reserved: topics,
            ..self
        }
    }

    /// The table for a request starting now.
    pub fn current(&self) -> Arc<RoutingTable> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the file now and applies it when valid.
    pub fn reload(&self, trigger: &str) -> Result<(), RoutingFileError> {
        self.apply(trigger, routing_file::read(&self.file))
    }

    fn apply(
        &self,
        trigger: &str,
        text: Result<String, RoutingFileError>,
    ) -> Result<(), RoutingFileError> {
        let mut texts = self.texts.lock().unwrap_or_else(PoisonError::into_inner);
        texts.pending = None;
        texts.applied = text.as_ref().ok().cloned();
        let file = self.file.display().to_string();
        let table = text
            .and_then(|text| routing_file::parse(&text, &file, self.key.as_ref()))
            .and_then(|table| {
                let named = table.named_topics();
                match self.reserved.iter().find(|t| named.contains(t.as_str())) {
                    Some(topic) => Err(RoutingFileError::Invalid {
                        file: file.clone(),
                        location: "topics".into(),
                        message: format!("{topic:?} is an [archive] topic of the settings: raw notifications need a topic of their own"),
                    }),
                    None => Ok(table),
                }
            });
        match table {
            Ok(table) => {
                let routes = table.routes().len();
                log_warnings(&table);
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

    /// One polling check: applies a changed file once it read the same twice in a
    /// row (a file that cannot be read twice in a row is an error, logged and
    /// counted; the table stays).
    fn check_file(&self) {
        let read = routing_file::read(&self.file);
        let text = read.as_ref().ok();
        {
            let mut texts = self.texts.lock().unwrap_or_else(PoisonError::into_inner);
            if text == texts.applied.as_ref() {
                texts.pending = None;
                return;
            }
            let seen_before = matches!(&texts.pending, Some(seen) if seen.as_ref() == text);
            if !seen_before {
                texts.pending = Some(text.cloned());
                return;
            }
        }
        let _ = self.apply("file changed", read);
    }
}

/// Logs what loading the routing file found worth saying.
pub fn log_warnings(table: &RoutingTable) {
    for warning in table.warnings() {
        warn!(warning = %warning, "routing file");
    }
}

/// The SIGHUP stream; created when the server starts, so a SIGHUP arriving at any
/// time after that reloads instead of ending the process.
pub(crate) fn hangups() -> Option<Signal> {
    signal(SignalKind::hangup())
        .inspect_err(|error| warn!(%error, "cannot watch SIGHUP; routing reloads only when the file changes"))
        .ok()
}

/// Reloads on SIGHUP, and checks the file every `interval` (not at all when it is
/// zero), until `stop` is cancelled.
pub(crate) async fn watch(
    live: Arc<LiveTable>,
    mut hangups: Option<Signal>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = (!interval.is_zero()).then(|| tokio::time::interval(interval));
    loop {
        tokio::select! {
            // Stopping wins over a tick due at the same time.
            biased;
            () = stop.cancelled() => return,
            Some(()) = async { hangups.as_mut()?.recv().await } => {
                off_the_async_threads(&live, |live| {
                    let _ = live.reload("SIGHUP");
                })
                .await;
            }
            Some(_) = async { Some(ticks.as_mut()?.tick().await) } => {
                off_the_async_threads(&live, LiveTable::check_file).await;
            }
        }
    }
}

/// Runs `check` (file reads, parsing) on a blocking thread and waits for it, so
/// the next check starts only once this one is done.
async fn off_the_async_threads(live: &Arc<LiveTable>, check: fn(&LiveTable)) {
    let live = Arc::clone(live);
    if let Err(error) = tokio::task::spawn_blocking(move || check(&live)).await {
        error!(%error, "checking the routing file failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: &str = "[unmatched]\ntopic = \"first\"\n";
    const SECOND: &str = "[unmatched]\ntopic = \"second\"\n";

    fn live_on(text: &str) -> (tempfile::TempDir, PathBuf, LiveTable) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.toml");
        std::fs::write(&file, text).unwrap();
        let loaded = routing_file::load(&file, None).unwrap();
        (dir, file, LiveTable::new(loaded, Arc::new(Metrics::new())))
    }

    /// Asserts that `live` counted exactly one failed reload.
    fn assert_one_failed_reload(live: &LiveTable) {
        let metrics = live.metrics.render();
        assert!(
            metrics.contains("routing_reloads_total{result=\"failed\"} 1"),
            "{metrics}"
        );
    }

    #[test]
    fn a_reloaded_file_may_not_name_an_archive_topic() {
        let (_dir, file, live) = live_on(FIRST);
        let live = live.reserving(vec!["second".into()]);
        std::fs::write(&file, SECOND).unwrap();
        let err = live.reload("test").unwrap_err().to_string();
        assert!(
            err.contains("topics: \"second\" is an [archive] topic"),
            "{err}"
        );
        assert_eq!(live.current().unmatched_topic(), "first");
    }

    #[test]
    fn a_changed_file_applies_once_two_checks_agree() {
        let (_dir, file, live) = live_on(FIRST);
        live.check_file();
        assert_eq!(live.current().unmatched_topic(), "first");
        std::fs::write(&file, SECOND).unwrap();
        live.check_file();
        assert_eq!(
            live.current().unmatched_topic(),
            "first",
            "seen once: maybe half-written"
        );
        live.check_file();
        assert_eq!(live.current().unmatched_topic(), "second");
    }

    #[test]
    fn a_file_still_changing_is_not_applied() {
        let (_dir, file, live) = live_on(FIRST);
        std::fs::write(&file, "[unmatched]\ntopic = \"sec").unwrap();
        live.check_file();
        std::fs::write(&file, SECOND).unwrap();
        live.check_file();
        assert_eq!(live.current().unmatched_topic(), "first");
        live.check_file();
        assert_eq!(live.current().unmatched_topic(), "second");
    }

    #[test]
    fn a_file_that_is_gone_keeps_the_table_and_says_why() {
        let (dir, file, live) = live_on(FIRST);
        std::fs::remove_file(&file).unwrap();
        let err = live.reload("test").unwrap_err().to_string();
        assert!(err.contains("cannot read"), "{err}");
        assert!(err.contains("No such file"), "{err}");
        assert_eq!(live.current().unmatched_topic(), "first");
        drop(dir);
    }

    #[test]
    fn a_file_missing_at_one_poll_is_not_an_error() {
        let (_dir, file, live) = live_on(FIRST);
        std::fs::remove_file(&file).unwrap();
        live.check_file();
        std::fs::write(&file, FIRST).unwrap();
        live.check_file();
        live.check_file();
        let metrics = live.metrics.render();
        assert!(!metrics.contains("routing_reloads_total{"), "{metrics}");
        std::fs::remove_file(&file).unwrap();
        live.check_file();
        live.check_file();
        assert_one_failed_reload(&live);
        assert_eq!(live.current().unmatched_topic(), "first");
    }

    /// Makes a FIFO at `path`: opening it for reading waits for a writer, like a
    /// file on a volume that does not answer.
    fn mkfifo(path: &std::path::Path) {
        let made = std::process::Command::new("mkfifo").arg(path).status();
        assert!(made.unwrap().success(), "mkfifo");
    }

    // A current-thread runtime: had the check read the file on the one async
    // thread, the timer below would fire only once the file is written.
    #[tokio::test]
    async fn a_file_that_is_slow_to_read_holds_no_async_thread() {
        let (dir, _file, live) = live_on(FIRST);
        let slow = dir.path().join("slow.toml");
        mkfifo(&slow);
        let live = Arc::new(LiveTable {
            file: slow.clone(),
            ..live
        });
        let (release, released) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            // Once told, or after 5 s so that a failing test ends.
            let _ = released.recv_timeout(Duration::from_secs(5));
            std::fs::write(slow, SECOND).unwrap();
        });
        let stop = CancellationToken::new();
        let watching = tokio::spawn(watch(
            Arc::clone(&live),
            None,
            Duration::from_millis(10),
            stop.clone(),
        ));
        let started = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // Stopped before the file comes: the check under way ends, no other starts.
        stop.cancel();
        release.send(()).unwrap();
        writer.join().unwrap();
        watching.await.unwrap();
    }

    #[test]
    fn an_invalid_file_keeps_the_table_and_is_not_retried_until_it_changes() {
        let (_dir, file, live) = live_on(FIRST);
        std::fs::write(&file, "[unmatched]\ntopic = \"a b\"\n").unwrap();
        assert!(live.reload("test").is_err());
        assert_eq!(live.current().unmatched_topic(), "first");
        live.check_file();
        live.check_file();
        assert_one_failed_reload(&live);
    }
}
