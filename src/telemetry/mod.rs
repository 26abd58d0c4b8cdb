//! Logging (`tracing`, pretty for people or JSON for collectors; librdkafka's own
//! lines arrive through the `log` bridge), traces ([`traces`]: W3C trace context
//! and OpenTelemetry spans over OTLP) and Prometheus metrics ([`metrics`]).

pub mod metrics;
pub mod traces;

use std::borrow::Cow;

use tracing::{Event, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::traces::Export;
use crate::config::{LogFormat, LogSettings};
use traces::{Exporter, TraceIds};

/// Installs the global subscriber: logs as `log` says (`RUST_LOG`, when set,
/// wins over `log.level`), and the connector's spans exported as `export` says
/// (`None`: not exported). Returns the exporter, to shut down before exiting;
/// `None` when nothing is exported, or a subscriber was installed already (tests
/// start several servers in one process: the first one stays).
pub fn init(log: &LogSettings, export: Option<&Export>) -> Result<Option<Exporter>, String> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let Some(export) = export else {
        // One filter for everything, as cheap as logging gets: lines within a
        // request have its trace ids when the level lets its (info) spans in. An
        // error: a subscriber is installed already, and stays.
        let _ = registry()
            .with(filter)
            .with(log_lines(log.format))
            .try_init();
        return Ok(None);
    };
    // Exported, the connector's spans are made whatever the level (their modules
    // log nothing), and every line logged within a request has its trace ids.
    let filter = traces::SPAN_TARGETS.iter().fold(filter, |filter, target| {
        filter.add_directive(format!("{target}=info").parse().expect("a valid directive"))
    });
    let (traces, exporter) = traces::layer(export)?;
    // The exporter takes only the connector's spans.
    let spans = filter_fn(|meta| meta.is_span() && traces::SPAN_TARGETS.contains(&meta.target()));
    // Filters per layer (a global filter beside a filtered layer hides spans
    // from it, made outside a span of the connector's).
    let installed = registry()
        .with(log_lines(log.format).with_filter(filter))
        .with(traces.with_filter(spans))
        .try_init();
    if installed.is_err() {
        exporter.shutdown();
        return Ok(None);
    }
    Ok(Some(exporter))
}

/// The log layer: lines on stderr, pretty or JSON with trace ids.
fn log_lines<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => lines.boxed(),
        LogFormat::Json => lines
            .fmt_fields(JsonFields::new())
            .event_format(WithTraceIds(
                tracing_subscriber::fmt::format().json().flatten_event(true),
            ))
            .boxed(),
    }
}

/// A JSON log line with `trace_id` and `span_id` first when it is logged within
/// a span that has them ([`traces::start`]): logs and traces join on them.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    N: for<'writer> FormatFields<'writer> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let ids = ctx.event_scope().and_then(|scope| {
            (scope.into_iter()).find_map(|span| span.extensions().get::<TraceIds>().copied())
        });
        let Some(ids) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                ids.trace_id, ids.span_id
            ),
            None => writer.write_str(&line),
        }
    }
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
