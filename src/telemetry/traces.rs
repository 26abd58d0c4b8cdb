//! Traces (docs/tracing.md): the W3C trace context taken from a request
//! ([`incoming`]), the spans of its work ([`start`]) and the context its records
//! carry ([`record_headers`]). Spans are exported over OTLP/HTTP with the
//! OpenTelemetry SDK when `[traces]` or the `OTEL_*` variables name an endpoint
//! ([`layer`]); otherwise nothing is exported, and the records still carry the
//! request's trace id with span ids of their own.
//!
//! Export never holds a request: finished spans wait in a bounded queue
//! (`traces.max_queued_spans`) for the SDK's batch exporter, on a thread of its
//! own; spans that do not fit, or that the collector did not take, are dropped
//! and counted ([`SPANS`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::{
    EnvResourceDetector, ResourceDetector, TelemetryResourceDetector,
};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, SdkTracer,
    SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::registry::LookupSpan;
use warp::http::HeaderMap;

use crate::config::traces::{redacted, Export, Root, Sampler};
use crate::records::{bounded_tracestate, TraceHeaders};

/// Spans handed to the collector, and spans dropped (process-wide, as the
/// exporter is): served as `webhook_connector_trace_spans_exported_total` and
/// `webhook_connector_trace_spans_dropped_total{reason}`.
pub struct SpanCounts {
    pub exported: Counter,
    pub dropped: Family<DropLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `queue_full`: more finished spans than `traces.max_queued_spans`;
    /// `export_failed`: the collector did not take them (unreachable, refused,
    /// timed out).
    reason: &'static str,
}

impl SpanCounts {
    fn dropped(&self, reason: &'static str, spans: usize) {
        self.dropped
            .get_or_create(&DropLabels { reason })
            .inc_by(spans as u64);
    }
}

pub static SPANS: LazyLock<SpanCounts> = LazyLock::new(|| {
    let counts = SpanCounts {
        exported: Counter::default(),
        dropped: Family::default(),
    };
    // Both reasons are served from the start, at 0.
    counts.dropped(QUEUE_FULL, 0);
    counts.dropped(EXPORT_FAILED, 0);
    counts
});

const QUEUE_FULL: &str = "queue_full";
const EXPORT_FAILED: &str = "export_failed";

/// Whether spans are exported (set once, by [`super::init`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: attributes only they show are made only then.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Names `span`'s exported span (`make`) and gives its kind (`server`,
/// `producer`), when spans are exported; `span` declares `otel.name` and
/// `otel.kind` empty, so logs never show them. Before [`start`].
pub fn name_and_kind(span: &Span, make: impl FnOnce() -> String, kind: &'static str) {
    if exporting() {
        span.record("otel.name", make());
        span.record("otel.kind", kind);
    }
}

/// The span of one notification `replay` writes again (a producer).
pub fn replay_span() -> Span {
    let span = tracing::info_span!("replay", otel.name = Empty, otel.kind = Empty);
    name_and_kind(&span, || "replay".into(), "producer");
    span
}

/// The span of `forget` erasing one `entity` (a producer).
pub fn forget_span(entity: &'static str) -> Span {
    let span = tracing::info_span!("forget", otel.name = Empty, otel.kind = Empty, entity);
    name_and_kind(&span, || "forget".into(), "producer");
    span
}

/// Sets the attributes `make` returns on `span`'s exported span, when it is
/// recorded (exported, and sampled): nothing is made for the others.
pub fn set_attributes(span: &Span, make: impl FnOnce() -> Vec<KeyValue>) {
    if recorded(span) {
        for attribute in make() {
            span.set_attribute(attribute.key, attribute.value);
        }
    }
}

/// Sets an error status on `span`'s exported span, when it is recorded.
pub fn set_error(span: &Span, description: impl Into<std::borrow::Cow<'static, str>>) {
    if recorded(span) {
        span.set_status(opentelemetry::trace::Status::error(description));
    }
}

/// Whether `span`'s exported span is recorded: spans are exported, and its
/// context (or that of the nearest span above it that [`start`] began) is sampled.
fn recorded(span: &Span) -> bool {
    if !exporting() {
        return false;
    }
    let sampled = span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let mut scope = registry.span(id)?.scope();
        scope.find_map(|span| span.extensions().get::<TraceIds>().map(|ids| ids.sampled))
    });
    sampled.flatten().unwrap_or(false)
}

/// Where the connector's exported spans are made: a webhook request's
/// ([`crate::ingress`]'s spans module), and `replay`'s and `forget`'s (here).
/// Not the `request` span every HTTP request has (probes and scrapes
/// included). Neither module logs: these targets name spans only.
pub const SPAN_TARGETS: [&str; 2] = [
    "webhook_connector::ingress::spans",
    "webhook_connector::telemetry::traces",
];

/// The ids of a span, for the logs (`trace_id`, `span_id`, written as hex only
/// when a line is), kept in the span's extensions by [`start`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct TraceIds {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// Whether the span is sampled (recorded, when spans are exported).
    pub sampled: bool,
}

/// The W3C trace context of a request's `traceparent` and `tracestate` (its
/// `tracestate` fields joined, and cut to what records carry), when it has a
/// well-formed one; anything else is ignored (a new trace starts).
pub fn incoming(headers: &HeaderMap) -> Option<SpanContext> {
    let text = |name| headers.get(name).and_then(|value| value.to_str().ok());
    let states = headers
        .get_all("tracestate")
        .iter()
        .filter_map(|v| v.to_str().ok());
    extract(text("traceparent")?, &states.collect::<Vec<_>>().join(","))
}

/// The trace context an archived record carries (its `traceparent` and
/// `tracestate` headers), when it has a well-formed one.
pub fn archived(headers: &BTreeMap<String, Option<String>>) -> Option<SpanContext> {
    let text = |name| headers.get(name).and_then(Option::as_deref);
    extract(text("traceparent")?, text("tracestate").unwrap_or_default())
}

/// The context of a `traceparent` and `tracestate`, read by the OpenTelemetry
/// propagator once the `traceparent` is known to be well formed (the
/// propagator takes `00-1-2-01`, say).
fn extract(traceparent: &str, tracestate: &str) -> Option<SpanContext> {
    if !well_formed(traceparent) {
        return None;
    }
    let carrier = W3c {
        traceparent,
        tracestate: bounded_tracestate(tracestate),
    };
    let context = TraceContextPropagator::new().extract(&carrier);
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// Whether `value` is a `traceparent` as W3C Trace Context writes it: lowercase
/// hex fields of 2, 32, 16 and 2 digits, dash-separated, the version not `ff`;
/// a version after `00` may add fields after another dash.
fn well_formed(value: &str) -> bool {
    let bytes = value.as_bytes();
    let hex = |at: std::ops::Range<usize>| {
        (bytes.get(at))
            .is_some_and(|field| field.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    };
    let fields = hex(0..2) && hex(3..35) && hex(36..52) && hex(53..55);
    let dashes = [2, 35, 52].iter().all(|&at| bytes.get(at) == Some(&b'-'));
    let version = bytes.get(..2);
    let ends = match version {
        Some(b"00") => bytes.len() == 55,
        _ => bytes.len() == 55 || bytes.get(55) == Some(&b'-'),
    };
    fields && dashes && version != Some(b"ff") && ends
}

/// W3C headers, for the propagator.
struct W3c<'h> {
    traceparent: &'h str,
    tracestate: Option<String>,
}

impl Extractor for W3c<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The span context of `span`, just created with no span of the connector's
/// above it, as a child of `remote` (a request's incoming context, an archived
/// record's) when given: exported when the OpenTelemetry layer is installed and
/// samples it. Without the layer, a context of its own: `remote`'s trace (or a
/// new one) with a new span id. Its ids are kept for the log lines within it.
pub fn start(span: &Span, remote: Option<&SpanContext>) -> SpanContext {
    if let Some(remote) = remote {
        let _ = span.set_parent(Context::new().with_remote_span_context(remote.clone()));
    }
    begin(span, remote)
}

/// [`start`] for a span created within the span of `parent`.
pub fn start_child(span: &Span, parent: &SpanContext) -> SpanContext {
    begin(span, Some(parent))
}

/// The context of `span`, exported or one of its own under `parent`, kept.
fn begin(span: &Span, parent: Option<&SpanContext>) -> SpanContext {
    let exported = span.context().span().span_context().clone();
    let context = match exported.is_valid() {
        true => exported,
        false => unexported(parent),
    };
    keep_ids(span, &context);
    context
}

/// A context in `parent`'s trace (or a new, sampled one) with a new span id.
fn unexported(parent: Option<&SpanContext>) -> SpanContext {
    let ids = RandomIdGenerator::default();
    let (trace_id, flags, state) = match parent {
        Some(parent) => (
            parent.trace_id(),
            parent.trace_flags(),
            parent.trace_state().clone(),
        ),
        None => (ids.new_trace_id(), TraceFlags::SAMPLED, Default::default()),
    };
    SpanContext::new(trace_id, ids.new_span_id(), flags, false, state)
}

/// Keeps `context`'s ids, as logs show them, in `span`'s extensions.
fn keep_ids(span: &Span, context: &SpanContext) {
    span.with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() else {
            return;
        };
        if let Some(span) = registry.span(id) {
            span.extensions_mut().replace(TraceIds {
                trace_id: context.trace_id(),
                span_id: context.span_id(),
                sampled: context.is_sampled(),
            });
        }
    });
}

/// The trace headers of records produced within the span of `context`.
pub fn record_headers(context: &SpanContext) -> TraceHeaders {
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    );
    TraceHeaders::new(traceparent, &context.trace_state().header())
}

/// The installed exporter; [`Exporter::shutdown`] sends what is queued.
pub struct Exporter(SdkTracerProvider);

impl Exporter {
    /// Exports the queued spans, waiting at most a second (a stopping replica
    /// must stay within its grace period), and stops.
    pub fn shutdown(self) {
        let _ = self.0.shutdown_with_timeout(Duration::from_secs(1));
    }
}

/// The layer exporting spans as `export` says, and the exporter behind it.
pub(super) fn layer<S>(
    export: &Export,
) -> Result<(OpenTelemetryLayer<S, SdkTracer>, Exporter), String>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(&export.traces_url)
        .build()
        .map_err(|err| {
            // Its text may quote the URL, user and password included.
            let shown = redacted(&export.traces_url);
            let err = err.to_string().replace(&export.traces_url, &shown);
            format!("the OTLP exporter cannot be made for {shown}: {err}")
        })?;
    let pending = Arc::new(AtomicUsize::new(0));
    let batch = BatchConfigBuilder::default()
        // Never full: Bounded keeps fewer than this waiting.
        .with_max_queue_size(export.max_queued_spans + BATCH_SPANS)
        .with_max_export_batch_size(BATCH_SPANS)
        .with_scheduled_delay(export.schedule_delay)
        .build();
    let processor = BatchSpanProcessor::builder(Counted {
        inner: exporter,
        pending: Arc::clone(&pending),
    })
    .with_batch_config(batch)
    .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Bounded {
            inner: processor,
            pending,
            limit: export.max_queued_spans,
        })
        .with_sampler(sampler(export.sampler))
        .with_resource(resource(export))
        .build();
    let tracer = provider.tracer("webhook-connector");
    EXPORTING.store(true, Ordering::Relaxed);
    // Only what the connector sets on its spans: no source locations, threads,
    // targets or busy and idle times.
    let layer = (tracing_opentelemetry::layer().with_tracer(tracer))
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false);
    Ok((layer, Exporter(provider)))
}

/// Spans per export request.
const BATCH_SPANS: usize = 512;

fn sampler(sampler: Sampler) -> opentelemetry_sdk::trace::Sampler {
    use opentelemetry_sdk::trace::Sampler as Sdk;
    let root = |root: Root| match root {
        Root::AlwaysOn => Sdk::AlwaysOn,
        Root::AlwaysOff => Sdk::AlwaysOff,
        Root::Ratio(ratio) => Sdk::TraceIdRatioBased(ratio),
    };
    match sampler {
        Sampler::AlwaysOn => Sdk::AlwaysOn,
        Sampler::AlwaysOff => Sdk::AlwaysOff,
        Sampler::Ratio(ratio) => Sdk::TraceIdRatioBased(ratio),
        Sampler::ParentBased(inner) => Sdk::ParentBased(Box::new(root(inner))),
    }
}

/// The settings' attributes, then `OTEL_RESOURCE_ATTRIBUTES`', then
/// `OTEL_SERVICE_NAME`, each over the ones before; and the SDK's own.
fn resource(export: &Export) -> Resource {
    let settings =
        (export.resource_attributes.iter()).map(|(k, v)| KeyValue::new(k.clone(), v.clone()));
    let detectors: [Box<dyn ResourceDetector>; 2] = [
        Box::new(EnvResourceDetector::new()),
        Box::new(TelemetryResourceDetector),
    ];
    let builder = Resource::builder_empty()
        .with_attributes(settings)
        .with_detectors(&detectors);
    match &export.service_name {
        Some(name) => builder.with_service_name(name.clone()),
        None => builder,
    }
    .build()
}

/// The span processor in front of the SDK's batch processor: it keeps at most
/// `limit` spans waiting for export, dropping (and counting) the rest.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    /// Spans handed on and not yet given to the exporter.
    pending: Arc<AtomicUsize>,
    limit: usize,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            SPANS.dropped(QUEUE_FULL, 1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting what it exported and what it could not.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    pending: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        self.pending.fetch_sub(spans, Ordering::AcqRel);
        let result = self.inner.export(batch).await;
        match result {
            Ok(()) => drop(SPANS.exported.inc_by(spans as u64)),
            Err(_) => SPANS.dropped(EXPORT_FAILED, spans),
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";

    #[test]
    fn only_a_well_formed_traceparent_is_continued() {
        let valid = format!("00-{TRACE}-{PARENT}-01");
        assert!(well_formed(&valid));
        assert!(well_formed(&format!("01-{TRACE}-{PARENT}-00-later-fields")));
        for malformed in [
            "00-1-2-01".to_string(),
            format!("00-+{}-{PARENT}-01", &TRACE[1..]),
            format!("00-0{TRACE}-{PARENT}-01"),
            format!("00-{}-{PARENT}-01", TRACE.to_uppercase()),
            format!("0-{TRACE}-{PARENT}-01"),
            format!("00-{TRACE}-{PARENT}-1"),
            format!("00-{TRACE}-{PARENT}-01-"),
            format!("00-{TRACE}-{PARENT}-01-x"),
            format!("ff-{TRACE}-{PARENT}-01"),
            format!("00_{TRACE}-{PARENT}-01"),
            format!("00-{TRACE}-{PARENT}"),
            String::new(),
        ] {
            assert!(!well_formed(&malformed), "{malformed}");
            assert_eq!(extract(&malformed, ""), None, "{malformed}");
        }
        // Well formed, but invalid: all-zero ids.
        assert_eq!(
            extract(&format!("00-{}-{PARENT}-01", "0".repeat(32)), ""),
            None
        );
        let context = extract(&valid, "a=1, b=2").unwrap();
        assert_eq!(context.trace_state().header(), "a=1,b=2");
        assert_eq!(record_headers(&context).traceparent.len(), 55);
    }

    #[test]
    fn a_request_s_tracestate_fields_are_joined_and_cut() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            format!("00-{TRACE}-{PARENT}-01").parse().unwrap(),
        );
        headers.append("tracestate", "a=1".parse().unwrap());
        headers.append("tracestate", "b=2".parse().unwrap());
        assert_eq!(
            incoming(&headers).unwrap().trace_state().header(),
            "a=1,b=2"
        );
        // Valid entries of 250 bytes: two fit in 512 after `a=1,b=2`, not three.
        let entry = |key: &str| format!("{key}={}", "v".repeat(248));
        for key in ["x", "y", "z"] {
            headers.append("tracestate", entry(key).parse().unwrap());
        }
        let kept = format!("a=1,b=2,{},{}", entry("x"), entry("y"));
        assert_eq!(incoming(&headers).unwrap().trace_state().header(), kept);
    }
}
