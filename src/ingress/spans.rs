//! The spans of a webhook request (docs/tracing.md): the server span (HTTP
//! semantic conventions), and within it `verify`, `accept` and `deliver` (a Kafka
//! producer span, messaging conventions). Attributes that only the exported span
//! needs are set on it directly, and only when spans are exported: logs, and
//! requests when nothing is exported, stay as they were.

use opentelemetry::trace::SpanContext;
use opentelemetry::KeyValue;
use tracing::field::Empty;
use tracing::Span;
use warp::http::StatusCode;

use crate::entity::Entity;
use crate::records::Records;
use crate::telemetry::traces;

/// The server span of a request to `entity`'s endpoint, a child of `remote`
/// (the request's trace context) when it has one, with its context.
pub(super) fn server(entity: &'static Entity, remote: Option<&SpanContext>) -> (Span, SpanContext) {
    let span = tracing::info_span!(
        "webhook",
        otel.name = Empty,
        otel.kind = Empty,
        entity = entity.name,
        entity_id = Empty,
    );
    traces::name_and_kind(
        &span,
        || format!("POST /webhooks/{}", entity.name),
        "server",
    );
    let context = traces::start(&span, remote);
    traces::set_attributes(&span, || {
        let route = format!("/webhooks/{}", entity.name);
        vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", route.clone()),
            KeyValue::new("url.path", route),
            KeyValue::new("url.scheme", "http"),
        ]
    });
    (span, context)
}

/// The server span's answer: its status, and for a refusal its `error` code
/// (an error status for a 5xx: the connector's fault, or Kafka's).
pub(super) fn answered(span: &Span, status: StatusCode, refusal: Option<&'static str>) {
    let status_code = i64::from(status.as_u16());
    traces::set_attributes(span, || {
        vec![KeyValue::new("http.response.status_code", status_code)]
    });
    if let Some(code) = refusal {
        refused(span, code, status.is_server_error());
    }
}

/// Records a refusal's `error` code on `span`, with an error status when `fault`.
pub(super) fn refused(span: &Span, code: &'static str, fault: bool) {
    traces::set_attributes(span, || vec![KeyValue::new("error.type", code)]);
    if fault {
        traces::set_error(span, code);
    }
}

/// Records why a delivery failed (its `reason` label) on its span, an error.
pub(super) fn failed(span: &Span, reason: String) {
    traces::set_attributes(span, || vec![KeyValue::new("error.type", reason.clone())]);
    traces::set_error(span, reason);
}

/// The body's size, on the server span.
pub(super) fn body_size(bytes: usize) {
    let size = bytes as i64;
    traces::set_attributes(&Span::current(), || {
        vec![KeyValue::new("http.request.body.size", size)]
    });
}

/// The span of the signature check.
pub(super) fn verify() -> Span {
    tracing::info_span!("verify")
}

/// The span of the acceptance step (parse, normalize, route) for `entity`.
pub(super) fn accept(entity: &'static Entity) -> Span {
    tracing::info_span!(
        "accept",
        webhook.entity = entity.name,
        webhook.events = Empty,
        webhook.changes = Empty
    )
}

/// The producer span delivering `records`, a child of the span of `parent`,
/// whose context the records then carry.
pub(super) fn deliver(records: &mut Records<'_>, parent: &SpanContext) -> Span {
    let span = tracing::info_span!("deliver", otel.name = Empty, otel.kind = Empty);
    traces::name_and_kind(&span, || "send".into(), "producer");
    let context = traces::start_child(&span, parent);
    records.trace = Some(traces::record_headers(&context));
    traces::set_attributes(&span, || {
        let topics = records.distinct_topics();
        let mut attributes = vec![
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.operation.name", "send"),
            KeyValue::new(
                "messaging.batch.message_count",
                records.records.len() as i64,
            ),
            KeyValue::new("webhook.topics", topics.join(",")),
        ];
        if let [topic] = topics[..] {
            attributes.push(KeyValue::new(
                "messaging.destination.name",
                topic.to_string(),
            ));
        }
        attributes
    });
    span
}
