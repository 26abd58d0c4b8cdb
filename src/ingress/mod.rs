//! The HTTP side: warp filters and the handlers behind them.
//!
//! `POST /webhooks/<entity>` (one endpoint per [`crate::entity::ENTITIES`] row:
//! `customer`, `booking`) runs the whole pipeline for one notification:
//! body (a receiving slot, bytes from the byte budget) -> processing bytes -> a
//! processing slot -> signature -> content type -> the acceptance step
//! ([`crate::pipeline`]; records, their bytes reserved) -> deliver, and answers 200 only once Kafka
//! acknowledged every event. Every bound refuses at once (503 + `Retry-After`)
//! rather than queueing, so no sender can make others wait. `GET /healthz` and `GET /readyz` are the probes, `GET /metrics`
//! the Prometheus metrics. Every failure is an [`ApiError`], turned into the JSON
//! contract in one place. [`server`] is the HTTP server around all this.

mod body;
mod error;
mod readiness;
pub(crate) mod server;
pub mod signature;
mod spans;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::Stream;
use opentelemetry::trace::SpanContext;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, error, warn, Instrument, Span};
use uuid::Uuid;
use warp::http::{header, HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

pub use error::{ApiError, Overload};
pub use readiness::Readiness;

use crate::config::routing_file::RoutingFile;
use crate::config::{ArchiveSettings, Settings};
use crate::entity::{self, Entity};
use crate::pipeline::{self, AcceptError, Limits};
use crate::records::{self, RawMeta, Records};
use crate::reload::LiveTable;
use crate::routing::RoutingTable;
use crate::sink::{DeliveryError, KafkaSink, ProducerError};
use crate::telemetry::metrics::EventCounts;
use crate::telemetry::metrics::{self, Metrics};
use crate::telemetry::{escape, traces, Throttle};

/// What the handlers share.
pub struct Ingress {
    /// The routing table in use (reloaded on change).
    pub live: Arc<LiveTable>,
    pub sink: Arc<KafkaSink>,
    pub metrics: Arc<Metrics>,
    /// HMAC secrets; empty means unsigned requests are accepted.
    pub secrets: Vec<String>,
    pub limits: Limits,
    pub request_read_timeout: Duration,
    /// Requests whose bodies are still arriving (`server.max_receiving`).
    pub receiving: Semaphore,
    /// Requests being processed (`server.max_in_flight`).
    pub in_flight: Semaphore,
    pub bytes: ByteBudget,
    pub readiness: Readiness,
    /// `[archive]`: the dead-letter and raw topics.
    pub archive: ArchiveSettings,
    /// Signature refusals since the last warning about them.
    unsigned: Throttle,
}

/// At most one warning about signature refusals per this interval.
const UNSIGNED_WARNING_INTERVAL: Duration = Duration::from_secs(10);

impl Ingress {
    /// What the handlers share, for `settings`, serving with `routing_file`:
    /// the metrics, the live table, the Kafka producer (created, not yet connected)
    /// and every bound.
    pub fn new(settings: &Settings, routing_file: RoutingFile) -> Result<Self, ProducerError> {
        let metrics = Arc::new(Metrics::new());
        metrics.bytes_held_limit(settings.server.max_in_flight_bytes);
        let archive = settings.archive.topics().into_iter().map(String::from);
        let live = Arc::new(
            LiveTable::new(routing_file, Arc::clone(&metrics)).reserving(archive.collect()),
        );
        let sink = Arc::new(KafkaSink::new(
            &settings.kafka,
            settings.server.max_in_flight_bytes,
            metrics.producer_replacements(),
        )?);
        Ok(Ingress {
            live,
            sink,
            metrics,
            secrets: settings.webhook.secrets.clone(),
            limits: Limits::of(settings),
            request_read_timeout: settings.server.request_read_timeout(),
            receiving: Semaphore::new(settings.server.max_receiving),
            in_flight: Semaphore::new(settings.server.max_in_flight),
            bytes: ByteBudget {
                receiving: BytePool::new(settings.server.receiving_bytes()),
                processing: BytePool::new(settings.server.processing_bytes()),
            },
            readiness: Readiness::default(),
            archive: settings.archive.clone(),
            unsigned: Throttle::new(UNSIGNED_WARNING_INTERVAL),
        })
    }
}

/// The bytes of bodies and records held at once (`server.max_in_flight_bytes`),
/// in two pools: one for bodies still arriving, one for requests being processed
/// (their bodies and records until Kafka answered). Slow senders can fill the
/// first, never the second.
pub struct ByteBudget {
    pub receiving: BytePool,
    pub processing: BytePool,
}

impl ByteBudget {
    /// Bytes held now in both pools.
    pub fn held(&self) -> usize {
        self.receiving.held() + self.processing.held()
    }
}

/// One pool of bytes: taken without waiting, given back when the permits drop.
pub struct BytePool {
    free: Arc<Semaphore>,
    size: usize,
}

impl BytePool {
    pub fn new(size: usize) -> Self {
        BytePool {
            free: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// A share of no bytes, to grow with [`take`](Self::take).
    fn empty(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.free)
            .try_acquire_many_owned(0)
            .expect("the semaphore is never closed")
    }

    /// Adds `bytes` to `held`, or refuses at once when they are not free.
    fn take(&self, held: &mut OwnedSemaphorePermit, bytes: usize) -> Result<(), ApiError> {
        let more = u32::try_from(bytes)
            .ok()
            .filter(|_| held.num_permits() + bytes <= self.size)
            .ok_or(ApiError::Overloaded(Overload::Bytes))?;
        let permit = Arc::clone(&self.free)
            .try_acquire_many_owned(more)
            .map_err(|_| ApiError::Overloaded(Overload::Bytes))?;
        held.merge(permit);
        Ok(())
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.size - self.free.available_permits()
    }
}

/// The answer to a notification whose events Kafka acknowledged.
#[derive(Serialize)]
struct Delivered {
    events: usize,
    event_ids: Vec<Uuid>,
}

/// All endpoints, with every rejection mapped to the JSON contract.
pub fn filters(
    ingress: Arc<Ingress>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with_ingress = warp::any().map(move || Arc::clone(&ingress));
    // Path filters come before method filters, so a known path with the wrong
    // method is a 405 and an unknown path a 404.
    let webhook = warp::path!("webhooks" / String)
        .and_then(|name: String| async move {
            entity::by_name(&name).ok_or_else(warp::reject::not_found)
        })
        .and(warp::post())
        .and(with_ingress.clone())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(handle_webhook);
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})).into_response());
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_ingress.clone())
        .then(|ingress: Arc<Ingress>| async move {
            let routing = ingress.live.current();
            let archive = ingress.archive.topics();
            let report = ingress
                .readiness
                .check(&ingress.sink, &routing, &archive)
                .await;
            report.into_response()
        });
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_ingress)
        .map(|ingress: Arc<Ingress>| {
            ingress.metrics.bytes_held(ingress.bytes.held());
            let text = ingress.metrics.render();
            warp::reply::with_header(text, header::CONTENT_TYPE, metrics::CONTENT_TYPE)
                .into_response()
        });
    webhook
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .recover(error::recover)
        .unify()
}

async fn handle_webhook<S, B>(
    entity: &'static Entity,
    ingress: Arc<Ingress>,
    headers: HeaderMap,
    body: S,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let (span, trace) = spans::server(entity, traces::incoming(&headers).as_ref());
    async move {
        let result = accept_notification(entity, &ingress, &headers, body, &trace).await;
        match result {
            Ok(accepted) => {
                ingress.metrics.notification(entity.name, "accepted");
                spans::answered(&Span::current(), StatusCode::OK, None);
                warp::reply::json(&accepted).into_response()
            }
            Err(err) => {
                ingress.metrics.notification(entity.name, err.code());
                // Larger than server.max_body_bytes: not read, so not kept.
                if ingress.archive.dead_letter().is_some()
                    && matches!(err, ApiError::Accept(AcceptError::TooLarge { .. }))
                {
                    ingress
                        .metrics
                        .dead_lettered(entity.name, err.code(), false);
                }
                spans::answered(&Span::current(), err.status(), Some(err.code()));
                log_refusal(&err, &ingress.unsigned);
                err.into_response()
            }
        }
    }
    .instrument(span)
    .await
}

/// One notification, in its stages: receive, authenticate, accept or keep,
/// deliver and count; `trace`: the server span's context.
async fn accept_notification<S, B>(
    entity: &'static Entity,
    ingress: &Ingress,
    headers: &HeaderMap,
    body: S,
    trace: &SpanContext,
) -> Result<Delivered, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let received_at = chrono::Utc::now();
    // The routing table in force when the request started, whatever reloads happen meanwhile.
    let routing = ingress.live.current();
    let body = receive(ingress, headers, body).await?;
    let request = Request {
        entity,
        headers,
        body: &body,
        received_at,
        trace,
    };
    // Boxed: until its body is in, a request holds only the future above (a
    // thousand slow senders hold a thousand of those, not of the whole pipeline).
    Box::pin(process(ingress, &request, &routing)).await
}

/// A received notification: its processing bytes and slot, the signature, then
/// accept or keep, deliver and count.
async fn process(
    ingress: &Ingress,
    request: &Request<'_>,
    routing: &RoutingTable,
) -> Result<Delivered, ApiError> {
    // The body moves from the receiving pool (freed by now) to the processing one.
    let mut held = ingress.bytes.processing.empty();
    ingress
        .bytes
        .processing
        .take(&mut held, request.body.len())?;
    let _permit = ingress
        .in_flight
        .try_acquire()
        .map_err(|_| ApiError::Overloaded(Overload::Requests))?;
    let _in_flight = ingress.metrics.webhook_in_flight();
    spans::verify().in_scope(|| authenticate(ingress, request.headers, request.body))?;
    let (accepted, held) = accept_or_keep(ingress, request, routing, held).await?;
    deliver_and_count(ingress, request, accepted, held).await
}

/// Reads the body within a receiving slot, the byte budget and
/// `server.request_read_timeout_ms`.
async fn receive<S, B>(ingress: &Ingress, headers: &HeaderMap, body: S) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let _receiving = ingress
        .receiving
        .try_acquire()
        .map_err(|_| ApiError::Overloaded(Overload::Receiving))?;
    let mut arriving = ingress.bytes.receiving.empty();
    let read = body::read_body(headers, body, ingress.limits.max_body_bytes, |bytes| {
        ingress.bytes.receiving.take(&mut arriving, bytes)
    });
    let body = tokio::time::timeout(ingress.request_read_timeout, read)
        .await
        .map_err(|_| ApiError::BodyReadTimeout {
            timeout_ms: ingress.request_read_timeout.as_millis() as u64,
        })??;
    spans::body_size(body.len());
    Ok(body)
}

/// Checks the signature when secrets are set; a failure is counted by its kind.
fn authenticate(ingress: &Ingress, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    if ingress.secrets.is_empty() {
        return Ok(());
    }
    let header = headers
        .get(signature::SIGNATURE_HEADER)
        .map(|v| v.as_bytes());
    signature::verify(&ingress.secrets, header, body).inspect_err(|e| {
        ingress.metrics.signature_failed(match e {
            signature::SignatureError::Missing => "missing",
            _ => "invalid",
        })
    })?;
    Ok(())
}

/// The acceptance step, its records (and the raw topic's copy) taking their
/// bytes from `held` as they are built. Past the signature, a refusal for the
/// content is kept on the dead-letter topic before it is answered.
async fn accept_or_keep<'t>(
    ingress: &'t Ingress,
    request: &Request<'_>,
    routing: &'t RoutingTable,
    mut held: OwnedSemaphorePermit,
) -> Result<(pipeline::Accepted<'t>, OwnedSemaphorePermit), ApiError> {
    let raw = ingress
        .archive
        .raw()
        .map(|topic| (topic, request.meta(None)));
    let mut reserve = |bytes| ingress.bytes.processing.take(&mut held, bytes).is_ok();
    let span = spans::accept(request.entity);
    let accepted = span.in_scope(|| {
        check_content_type(request.headers)?;
        let input = pipeline::Input {
            body: request.body,
            entity: request.entity,
            received_at: request.received_at,
            limits: &ingress.limits,
            table: routing,
        };
        pipeline::accept_within(input, raw, &mut reserve).map_err(ApiError::from)
    });
    match &accepted {
        Ok(accepted) => {
            let changes = accepted.events.iter().filter(|e| e.change_type.is_some());
            // As i64: exported as numbers (u64 and usize would be text).
            span.record("webhook.events", accepted.events.len() as i64);
            span.record("webhook.changes", changes.count() as i64);
        }
        Err(refusal) => spans::refused(&span, refusal.code(), refusal.status().is_server_error()),
    }
    drop(span);
    match accepted {
        Ok(accepted) => Ok((accepted, held)),
        Err(overloaded @ ApiError::Overloaded(_)) => Err(overloaded),
        Err(refusal) => Err(dead_letter(ingress, request, refusal, held).await),
    }
}

/// Delivers the records, holding only them (counted) and the body (counted,
/// kept for a dead letter) while Kafka answers, and counts what was delivered.
async fn deliver_and_count(
    ingress: &Ingress,
    request: &Request<'_>,
    accepted: pipeline::Accepted<'_>,
    held: OwnedSemaphorePermit,
) -> Result<Delivered, ApiError> {
    if let Some(event) = accepted.events.first() {
        tracing::Span::current().record("entity_id", event.entity_id);
    }
    let counts = EventCounts::of(
        accepted
            .routed()
            .map(|(event, topics)| (event.change_type.as_deref(), topics)),
    );
    let event_ids = accepted.event_ids();
    let state_record = (accepted.state.as_ref()).map(|(topic, value)| (*topic, value.is_none()));
    let records = accepted.into_records();
    let started = std::time::Instant::now();
    if let Err(err) = deliver(ingress, records, held, request.trace).await {
        ingress.metrics.delivery_failed(&failure_reason(&err));
        // Kafka refuses the records for what they are: no retry can pass.
        if err.is_content_refusal() {
            let held = ingress.bytes.processing.empty();
            return Err(dead_letter(ingress, request, err.into(), held).await);
        }
        return Err(err.into());
    }
    ingress
        .metrics
        .delivery_took(started.elapsed().as_secs_f64());
    ingress.metrics.events_delivered(counts);
    if let Some((topic, tombstone)) = state_record {
        ingress.metrics.state_delivered(topic, tombstone);
    }
    debug!(events = event_ids.len(), "notification delivered");
    Ok(Delivered {
        events: event_ids.len(),
        event_ids,
    })
}

/// Delivers `records` within a producer span under the span of `parent`, whose
/// context they carry.
async fn deliver(
    ingress: &Ingress,
    mut records: Records<'_>,
    held: OwnedSemaphorePermit,
    parent: &SpanContext,
) -> Result<(), DeliveryError> {
    let span = spans::deliver(&mut records, parent);
    let result = ingress
        .sink
        .deliver(records, held)
        .instrument(span.clone())
        .await;
    if let Err(err) = &result {
        spans::failed(&span, failure_reason(err));
    }
    result
}

/// What a raw record says about the request it keeps.
struct Request<'r> {
    entity: &'static Entity,
    headers: &'r HeaderMap,
    body: &'r [u8],
    received_at: chrono::DateTime<chrono::Utc>,
    /// The server span's context.
    trace: &'r SpanContext,
}

impl Request<'_> {
    fn request_id(&self) -> String {
        let id = self.headers.get(server::REQUEST_ID_HEADER);
        id.and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// The record headers' metadata, with why the request is refused, if it is.
    fn meta(&self, refusal: Option<&ApiError>) -> RawMeta {
        let content_type = self.headers.get(header::CONTENT_TYPE);
        RawMeta {
            entity: self.entity.name,
            request_id: self.request_id(),
            received_at: format_timestamp(self.received_at),
            content_type: content_type.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            refusal: refusal.map(|e| (e.status().as_u16(), e.code(), e.message())),
        }
    }
}

/// Keeps a notification refused for its content on the dead-letter topic (when
/// there is one) and returns the answer: the refusal once Kafka acknowledged the
/// record, 503 when it could not be written, so the platform sends it again.
/// `held`: what the request holds; only its body's bytes stay held (taken again
/// when they were given back with a delivery).
async fn dead_letter(
    ingress: &Ingress,
    request: &Request<'_>,
    refusal: ApiError,
    mut held: OwnedSemaphorePermit,
) -> ApiError {
    let Some(topic) = ingress.archive.dead_letter() else {
        return refusal;
    };
    let meta = request.meta(Some(&refusal));
    let key = meta.request_id.clone();
    let unwritten = |cause: String| ApiError::DeadLetter {
        refusal: refusal.code(),
        message: refusal.message(),
        cause,
    };
    let body = request.body.len();
    match held.num_permits().checked_sub(body) {
        Some(records) => drop(held.split(records)),
        None => {
            let missing = body - held.num_permits();
            if let Err(overloaded) = ingress.bytes.processing.take(&mut held, missing) {
                return unwritten(overloaded.to_string());
            }
        }
    }
    let bytes = records::raw_bytes(body, &key, &meta);
    // A copy that could never be held (a tiny byte budget, a huge Content-Type):
    // answered, counted, not kept, rather than 503 at every retry.
    if body + bytes > ingress.limits.max_request_bytes {
        return not_kept(ingress, request, refusal, body + bytes);
    }
    if let Err(overloaded) = ingress.bytes.processing.take(&mut held, bytes) {
        return unwritten(overloaded.to_string());
    }
    let records = Records::raw(topic, key, request.body, meta);
    match deliver(ingress, records, held, request.trace).await {
        Ok(()) => {}
        // Kafka can never take the copy either (larger than message.max.bytes).
        Err(err) if err.is_content_refusal() => {
            ingress.metrics.delivery_failed(&failure_reason(&err));
            return not_kept(ingress, request, refusal, body + bytes);
        }
        Err(err) => {
            ingress.metrics.delivery_failed(&failure_reason(&err));
            return unwritten(err.to_string());
        }
    }
    ingress
        .metrics
        .dead_lettered(request.entity.name, refusal.code(), true);
    refusal
}

/// A refused notification whose dead letter can never be written: counted, logged
/// as an error, and answered with its refusal.
fn not_kept(ingress: &Ingress, request: &Request<'_>, refusal: ApiError, bytes: usize) -> ApiError {
    ingress
        .metrics
        .dead_lettered(request.entity.name, refusal.code(), false);
    error!(
        error = refusal.code(),
        bytes, "a refused notification is too large to keep on the dead-letter topic"
    );
    refusal
}

/// RFC 3339 UTC with `Z`, as events write it.
fn format_timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The `reason` label of a delivery failure: a fixed set plus librdkafka's error names.
fn failure_reason(err: &DeliveryError) -> String {
    match err {
        DeliveryError::TimedOut { .. } => "timed_out".into(),
        DeliveryError::ShuttingDown => "shutting_down".into(),
        DeliveryError::Refused {
            code: Some(code), ..
        } => format!("{code:?}"),
        DeliveryError::Refused { code: None, .. } => "refused".into(),
    }
}

/// `application/json` with any parameters, or no `Content-Type` at all.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes());
    match value {
        Some(value) if !pipeline::content_type_accepted(Some(value)) => Err(
            ApiError::UnsupportedMediaType(String::from_utf8_lossy(value).into_owned()),
        ),
        _ => Ok(()),
    }
}

/// Logs a refusal; its text may quote the sender's input, so it is escaped (and
/// cut, as in the answer). Overload refusals are `debug`: during a flood there is
/// one per request, and `notifications_total{result="overloaded"}` counts them. So
/// are signature refusals, which anyone who reaches the endpoint can cause
/// (`signature_failures_total` counts them), with one warning per
/// [`UNSIGNED_WARNING_INTERVAL`] through `unsigned` giving their number.
fn log_refusal(err: &ApiError, unsigned: &Throttle) {
    let status = err.status();
    let text = err.message();
    let reason = escape(&text);
    match err {
        ApiError::Delivery(delivery) if !delivery.is_retriable() => {
            error!(status = status.as_u16(), error = err.code(), %reason, "notification refused by Kafka")
        }
        ApiError::DeadLetter { .. } => {
            error!(status = status.as_u16(), error = err.code(), %reason, "a refused notification could not be kept")
        }
        ApiError::Overloaded(_) => {
            debug!(status = status.as_u16(), error = err.code(), %reason, "request refused")
        }
        ApiError::Signature(_) => {
            debug!(status = status.as_u16(), error = err.code(), %reason, "request refused");
            if let Some(refused) = unsigned.occurred(std::time::Instant::now()) {
                warn!(
                    refused,
                    since_secs = UNSIGNED_WARNING_INTERVAL.as_secs(),
                    "requests refused for a missing or invalid signature (at most one such line per interval)"
                );
            }
        }
        _ if status == StatusCode::SERVICE_UNAVAILABLE => {
            warn!(status = status.as_u16(), error = err.code(), %reason, "notification not accepted")
        }
        _ => warn!(status = status.as_u16(), error = err.code(), %reason, "request refused"),
    }
}
