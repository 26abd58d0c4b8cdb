//! Logging (`tracing`, pretty for people or JSON for collectors; librdkafka's own
//! lines arrive through the `log` bridge) and Prometheus metrics ([`metrics`]).

pub mod metrics;

use std::borrow::Cow;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber; `RUST_LOG`, when set, wins over `log.level`.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match settings.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Already installed (tests start several servers in one process): keep it.
    let _ = result;
}

/// Text from a sender made safe for a log line: control characters (a newline
/// could forge a line of its own), quotes and backslashes are escaped as in Rust
/// string literals, and so are Unicode line separators. Plain ASCII text is
/// returned as it is.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    if text
        .bytes()
        .all(|b| (b.is_ascii_graphic() || b == b' ') && b != b'\\' && b != b'"')
    {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.escape_debug().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_text_cannot_start_a_line() {
        assert_eq!(escape("plain `key`"), "plain `key`");
        let forged = escape("dup\n2026-11-29T00:00:00Z  INFO forged\r\u{1b}[31m\"");
        assert!(!forged.contains('\n') && !forged.contains('\r') && !forged.contains('\u{1b}'));
        assert_eq!(escape("a\u{2028}b"), "a\\u{2028}b");
        assert_eq!(escape("café"), "café");
        assert_eq!(
            forged,
            "dup\\n2026-11-29T00:00:00Z  INFO forged\\r\\u{1b}[31m\\\""
        );
    }
}

/// Lets one warning through per interval for something that may happen on every
/// request (an unsigned flood), with how many happened since the last one let
/// through: the log stays readable whatever a sender does.
pub(crate) struct Throttle {
    interval: std::time::Duration,
    /// When a warning was last let through, and what happened since.
    last_and_count: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    pub(crate) fn new(interval: std::time::Duration) -> Self {
        Throttle {
            interval,
            last_and_count: std::sync::Mutex::new((None, 0)),
        }
    }

    /// Counts one occurrence at `now`; `Some(n)`: warn now, for the `n`
    /// occurrences since the last warning (this one included).
    pub(crate) fn occurred(&self, now: std::time::Instant) -> Option<u64> {
        let mut guard = self
            .last_and_count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, count) = &mut *guard;
        *count += 1;
        if last.is_some_and(|last| now.saturating_duration_since(last) < self.interval) {
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(count))
    }
}

#[cfg(test)]
mod throttle_tests {
    use std::time::{Duration, Instant};

    use super::Throttle;

    #[test]
    fn one_warning_per_interval_with_the_count_since_the_last() {
        let throttle = Throttle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(throttle.occurred(start), Some(1));
        for second in 1..10 {
            assert_eq!(throttle.occurred(start + Duration::from_secs(second)), None);
        }
        assert_eq!(
            throttle.occurred(start + Duration::from_millis(9_999)),
            None
        );
        assert_eq!(throttle.occurred(start + Duration::from_secs(10)), Some(11));
        assert_eq!(throttle.occurred(start + Duration::from_secs(11)), None);
        assert_eq!(throttle.occurred(start + Duration::from_secs(25)), Some(2));
    }
}
