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
