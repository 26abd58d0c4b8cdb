//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.
//!
//! Counters end in `_total`. Label values are bounded: endpoints, statuses, error
//! codes and topics come from fixed sets, and change types, which senders may
//! invent at will, are capped at [`MAX_CHANGE_TYPES`] distinct values (later ones
//! count as `_other`) of at most [`MAX_LABEL_LENGTH`] characters from
//! `[A-Za-z0-9_.:-]` (anything else counts as `_invalid`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

/// Distinct change types that get a label value of their own.
pub(crate) const MAX_CHANGE_TYPES: usize = 100;
/// The label value of change types beyond the cap.
pub(crate) const OTHER_CHANGE_TYPE: &str = "_other";
/// The label value of the event of a notification without changes.
pub(crate) const NO_CHANGE_TYPE: &str = "_none";
/// The label value of change types too long or with characters outside the set.
pub(crate) const INVALID_CHANGE_TYPE: &str = "_invalid";
/// The longest change type that gets a label value of its own.
pub(crate) const MAX_LABEL_LENGTH: usize = 64;

/// The content type of [`Metrics::render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    /// The webhook endpoint: its entity (`customer`, `booking`).
    endpoint: &'static str,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    change_type: String,
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadLetterLabels {
    endpoint: &'static str,
    /// The refusal's `error` code.
    reason: &'static str,
    /// `true`, or `false` for a body over `server.max_body_bytes` (counted only).
    stored: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    topic: String,
    /// `state` or `tombstone`.
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Every metric the connector exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    in_flight: Gauge,
    bytes_held: Gauge,
    bytes_held_limit: Gauge,
    notifications: Family<NotificationLabels, Counter>,
    events: Family<EventLabels, Counter>,
    state_records: Family<StateLabels, Counter>,
    dead_letters: Family<DeadLetterLabels, Counter>,
    delivery_seconds: Histogram,
    delivery_failures: Family<ReasonLabels, Counter>,
    signature_failures: Family<ReasonLabels, Counter>,
    routing_reloads: Family<ResultLabels, Counter>,
    producer_replacements: Counter,
    change_types: Mutex<HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` (a handle to it) under `name`.
fn add<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: &M) {
    registry.register(name, help, metric.clone());
}

impl Metrics {
    pub fn new() -> Self {
        let metrics = Metrics {
            requests: Family::default(),
            in_flight: Gauge::default(),
            bytes_held: Gauge::default(),
            bytes_held_limit: Gauge::default(),
            notifications: Family::default(),
            events: Family::default(),
            state_records: Family::default(),
            dead_letters: Family::default(),
            delivery_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            delivery_failures: Family::default(),
            signature_failures: Family::default(),
            routing_reloads: Family::default(),
            producer_replacements: Counter::default(),
            change_types: Mutex::new(HashSet::new()),
            registry: Registry::default(),
        };
        Metrics {
            registry: metrics.registry(),
            ..metrics
        }
    }

    /// A registry of every metric under its name and help text, in the order
    /// `/metrics` lists them.
    fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("webhook_connector");
        self.register_requests(&mut registry);
        self.register_records(&mut registry);
        self.register_operations(&mut registry);
        registry
    }

    /// The HTTP side: requests answered and in flight, the bytes they hold, and
    /// what became of their notifications.
    fn register_requests(&self, registry: &mut Registry) {
        add(
            registry,
            "http_requests",
            "HTTP requests answered, by endpoint and status",
            &self.requests,
        );
        add(
            registry,
            "webhook_requests_in_flight",
            "Webhook requests being processed now",
            &self.in_flight,
        );
        add(registry, "held_bytes", "Bytes of request bodies and produced records held now (bounded by server.max_in_flight_bytes)", &self.bytes_held);
        add(
            registry,
            "held_bytes_limit",
            "The most bytes held at once: server.max_in_flight_bytes",
            &self.bytes_held_limit,
        );
        add(
            registry,
            "notifications",
            "Webhook notifications by endpoint (entity) and result: accepted, or the error code they were refused with",
            &self.notifications,
        );
    }

    /// The Kafka side: records acknowledged or kept as dead letters, and how
    /// delivery went.
    fn register_records(&self, registry: &mut Registry) {
        add(
            registry,
            "events",
            "Events acknowledged by Kafka, by change type and topic",
            &self.events,
        );
        add(
            registry,
            "state_records",
            "State records acknowledged by Kafka, by state topic and kind (state or tombstone)",
            &self.state_records,
        );
        add(
            registry,
            "dead_letters",
            "Notifications refused for their content and kept on the dead-letter topic (stored=true), or too large to keep (stored=false), by endpoint and reason",
            &self.dead_letters,
        );
        add(
            registry,
            "kafka_delivery_duration_seconds",
            "Time from producing a notification's events to Kafka's acknowledgement of all of them",
            &self.delivery_seconds,
        );
        add(
            registry,
            "kafka_delivery_failures",
            "Notifications whose events Kafka did not all acknowledge, by reason",
            &self.delivery_failures,
        );
    }

    /// What operators watch besides the traffic: refused signatures, routing
    /// reloads, replaced producers, and the version running.
    fn register_operations(&self, registry: &mut Registry) {
        add(
            registry,
            "signature_failures",
            "Requests refused for a missing or invalid signature",
            &self.signature_failures,
        );
        add(
            registry,
            "routing_reloads",
            "Routing file reloads, by result (ok, failed)",
            &self.routing_reloads,
        );
        add(
            registry,
            "kafka_producer_replacements",
            "Kafka producers replaced after they could no longer produce",
            &self.producer_replacements,
        );
        let spans = &super::traces::SPANS;
        add(
            registry,
            "trace_spans_exported",
            "Spans the OTLP collector took (traces export, docs/tracing.md)",
            &spans.exported,
        );
        add(
            registry,
            "trace_spans_dropped",
            "Spans dropped, not exported, by reason: queue_full (more than traces.max_queued_spans waiting), export_failed (the collector did not take them)",
            &spans.dropped,
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        add(
            registry,
            "build_info",
            "Version of the running connector",
            &build_info,
        );
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }

    pub(crate) fn request_answered(&self, endpoint: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { endpoint, status })
            .inc();
    }

    /// Counts a webhook request in flight until the returned guard is dropped.
    pub(crate) fn webhook_in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    pub(crate) fn notification(&self, endpoint: &'static str, result: &str) {
        self.notifications
            .get_or_create(&NotificationLabels {
                endpoint,
                result: result.to_string(),
            })
            .inc();
    }

    /// Sets the gauge of the most bytes held at once (`server.max_in_flight_bytes`).
    pub(crate) fn bytes_held_limit(&self, bytes: usize) {
        self.bytes_held_limit
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Sets the gauge of bytes held (read when `/metrics` is rendered).
    pub(crate) fn bytes_held(&self, bytes: usize) {
        self.bytes_held
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Counts a delivered request's events ([`EventCounts::of`] the request): one
    /// update per (change type, topic) of the request, not per event.
    pub(crate) fn events_delivered(&self, counts: EventCounts<'_>) {
        for ((change_type, topic), count) in counts.0 {
            self.events_acknowledged(change_type.as_deref(), topic, count);
        }
    }

    pub(crate) fn events_acknowledged(&self, change_type: Option<&str>, topic: &str, count: u64) {
        let change_type = self.change_type_label(change_type);
        self.events
            .get_or_create(&EventLabels {
                change_type,
                topic: topic.to_string(),
            })
            .inc_by(count);
    }

    /// Counts a delivered request's state record on `topic` (`None`: a tombstone).
    pub(crate) fn state_delivered(&self, topic: &str, tombstone: bool) {
        let kind = if tombstone { "tombstone" } else { "state" };
        let topic = topic.to_string();
        self.state_records
            .get_or_create(&StateLabels { topic, kind })
            .inc();
    }

    /// Counts a refused notification kept on the dead-letter topic (`stored`) or
    /// too large to keep.
    pub(crate) fn dead_lettered(&self, endpoint: &'static str, reason: &'static str, stored: bool) {
        let stored = if stored { "true" } else { "false" };
        let labels = DeadLetterLabels {
            endpoint,
            reason,
            stored,
        };
        self.dead_letters.get_or_create(&labels).inc();
    }

    pub(crate) fn delivery_took(&self, seconds: f64) {
        self.delivery_seconds.observe(seconds);
    }

    pub(crate) fn delivery_failed(&self, reason: &str) {
        self.delivery_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub(crate) fn signature_failed(&self, reason: &str) {
        self.signature_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub(crate) fn routing_reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.routing_reloads
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// The counter the Kafka sink increments when it replaces its producer.
    pub(crate) fn producer_replacements(&self) -> Counter {
        self.producer_replacements.clone()
    }

    /// The change type itself while fewer than [`MAX_CHANGE_TYPES`] were seen, else
    /// `_other`; `_invalid` when it is not a short word of the label charset.
    fn change_type_label(&self, change_type: Option<&str>) -> String {
        let Some(change_type) = change_type else {
            return NO_CHANGE_TYPE.to_string();
        };
        if !is_label_value(change_type) {
            return INVALID_CHANGE_TYPE.to_string();
        }
        let mut seen = self
            .change_types
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(change_type) {
            return change_type.to_string();
        }
        if seen.len() < MAX_CHANGE_TYPES {
            seen.insert(change_type.to_string());
            return change_type.to_string();
        }
        OTHER_CHANGE_TYPE.to_string()
    }
}

/// A request's events by (change type, topic), taken before its events are
/// dropped and counted once Kafka acknowledged them.
pub(crate) struct EventCounts<'t>(HashMap<(Option<String>, &'t str), u64>);

impl<'t> EventCounts<'t> {
    /// Counts events given as (change type, topics) pairs.
    pub(crate) fn of<'a>(events: impl Iterator<Item = (Option<&'a str>, &'a [&'t str])>) -> Self
    where
        't: 'a,
    {
        let mut counts = HashMap::new();
        for (change_type, topics) in events {
            for &topic in topics {
                *counts
                    .entry((change_type.map(str::to_string), topic))
                    .or_insert(0) += 1;
            }
        }
        EventCounts(counts)
    }
}

/// 1 to [`MAX_LABEL_LENGTH`] characters of `[A-Za-z0-9_.:-]`.
fn is_label_value(text: &str) -> bool {
    (1..=MAX_LABEL_LENGTH).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Decrements the in-flight gauge when dropped.
pub(crate) struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_total_and_build_info() {
        let metrics = Metrics::new();
        metrics.request_answered("booking", 200);
        metrics.request_answered("booking", 200);
        metrics.notification("booking", "accepted");
        let text = metrics.render();
        assert!(
            text.contains(
                "webhook_connector_http_requests_total{endpoint=\"booking\",status=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains(
            "webhook_connector_notifications_total{endpoint=\"booking\",result=\"accepted\"} 1"
        ));
        assert!(text.contains("webhook_connector_build_info{version=\""));
        assert!(text.ends_with("# EOF\n"));
        metrics.dead_lettered("booking", "invalid_json", true);
        metrics.dead_lettered("booking", "payload_too_large", false);
        let text = metrics.render();
        assert!(text.contains(
            "webhook_connector_dead_letters_total{endpoint=\"booking\",reason=\"invalid_json\",stored=\"true\"} 1"
        ), "{text}");
        assert!(
            text.contains("reason=\"payload_too_large\",stored=\"false\"} 1"),
            "{text}"
        );
        metrics.state_delivered("customer.state", false);
        metrics.state_delivered("customer.state", true);
        metrics.state_delivered("customer.state", true);
        let text = metrics.render();
        assert!(
            text.contains(
                "webhook_connector_state_records_total{topic=\"customer.state\",kind=\"state\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains(
            "webhook_connector_state_records_total{topic=\"customer.state\",kind=\"tombstone\"} 2"
        ), "{text}");
    }

    #[test]
    fn change_type_labels_are_capped() {
        let metrics = Metrics::new();
        for i in 0..MAX_CHANGE_TYPES + 50 {
            metrics.events_acknowledged(Some(&format!("Type{i}")), "t", 1);
        }
        metrics.events_acknowledged(Some("Type0"), "t", 1);
        metrics.events_acknowledged(None, "t", 1);
        let text = metrics.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("webhook_connector_events_total{"))
            .count();
        assert_eq!(series, MAX_CHANGE_TYPES + 2, "{text}");
        assert!(text.contains("change_type=\"_other\",topic=\"t\"} 50"));
        assert!(text.contains("change_type=\"Type0\",topic=\"t\"} 2"));
        assert!(text.contains("change_type=\"_none\""));
    }

    #[test]
    fn change_types_outside_the_label_charset_or_too_long_count_as_invalid() {
        let metrics = Metrics::new();
        let long = "A".repeat(MAX_LABEL_LENGTH + 1);
        for junk in [long.as_str(), "", "a\nb", "a\"b", "Ünïcode", "x y", "{}"] {
            metrics.events_acknowledged(Some(junk), "t", 1);
        }
        let fits = "A".repeat(MAX_LABEL_LENGTH);
        metrics.events_acknowledged(Some(&fits), "t", 1);
        metrics.events_acknowledged(Some("Customer.Email:Changed-2_x"), "t", 1);
        let text = metrics.render();
        assert!(
            text.contains("change_type=\"_invalid\",topic=\"t\"} 7"),
            "{text}"
        );
        assert!(text.contains(&format!("change_type=\"{fits}\"")), "{text}");
        assert!(
            text.contains("change_type=\"Customer.Email:Changed-2_x\""),
            "{text}"
        );
    }

    #[test]
    fn metrics_stay_small_whatever_change_types_senders_invent() {
        let metrics = Metrics::new();
        for i in 0..5_000 {
            let name = format!("{}{i}", "X".repeat(if i % 2 == 0 { 20_000 } else { 40 }));
            metrics.events_acknowledged(Some(&name), "webhooks.unrouted", 1);
        }
        assert!(metrics.render().len() < 200 * 1024);
    }

    #[test]
    fn in_flight_goes_down_when_the_guard_drops() {
        let metrics = Metrics::new();
        let guard = metrics.webhook_in_flight();
        assert!(metrics
            .render()
            .contains("webhook_connector_webhook_requests_in_flight 1"));
        drop(guard);
        assert!(metrics
            .render()
            .contains("webhook_connector_webhook_requests_in_flight 0"));
    }
}
