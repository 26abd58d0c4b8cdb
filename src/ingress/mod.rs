//! The HTTP side: warp filters and the handlers behind them.
//!
//! `POST /webhooks/customer` runs the whole pipeline for one notification:
//! admission (in-flight bound) -> content type -> body limit -> signature -> parse
//! -> normalize -> route -> deliver, and answers 200 only once Kafka acknowledged
//! every event. `GET /healthz` and `GET /readyz` are the probes. Every failure is
//! an [`ApiError`], turned into the JSON contract in one place.

mod error;
mod readiness;
pub mod signature;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::Semaphore;
use tracing::{debug, error, warn, Instrument};
use uuid::Uuid;
use warp::http::{header, HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

pub use error::ApiError;
pub use readiness::Readiness;

use crate::normalize::normalize;
use crate::payload;
use crate::routing::RoutingTable;
use crate::sink::{KafkaSink, RoutedEvent};

/// What the handlers share.
pub struct Ingress {
    pub routing: RoutingTable,
    pub sink: Arc<KafkaSink>,
    /// HMAC secrets; empty means unsigned requests are accepted.
    pub secrets: Vec<String>,
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
    pub in_flight: Semaphore,
    pub readiness: Readiness,
}

/// The answer to an accepted notification.
#[derive(Serialize)]
struct Accepted {
    events: usize,
    event_ids: Vec<Uuid>,
}

/// All endpoints, with every rejection mapped to the JSON contract.
pub fn routes(
    state: Arc<Ingress>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with_state = warp::any().map(move || Arc::clone(&state));
    // Path filters come before method filters, so a known path with the wrong
    // method is a 405 and an unknown path a 404.
    let webhook = warp::path!("webhooks" / "customer")
        .and(warp::post())
        .and(with_state.clone())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(handle_webhook);
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})).into_response());
    let readyz = warp::path!("readyz").and(warp::get()).and(with_state).then(
        |state: Arc<Ingress>| async move {
            let report = state.readiness.check(&state.sink, &state.routing).await;
            report.into_response()
        },
    );
    webhook
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .recover(error::recover)
        .unify()
}

async fn handle_webhook<S, B>(state: Arc<Ingress>, headers: HeaderMap, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let span = tracing::info_span!("webhook", customer_id = tracing::field::Empty);
    async move {
        match accept_notification(&state, &headers, body).await {
            Ok(accepted) => warp::reply::json(&accepted).into_response(),
            Err(err) => {
                log_refusal(&err);
                err.into_response()
            }
        }
    }
    .instrument(span)
    .await
}

async fn accept_notification<S, B>(
    state: &Ingress,
    headers: &HeaderMap,
    body: S,
) -> Result<Accepted, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let received_at = chrono::Utc::now();
    let _permit = state
        .in_flight
        .try_acquire()
        .map_err(|_| ApiError::Overloaded)?;
    check_content_type(headers)?;
    let body = tokio::time::timeout(
        state.body_read_timeout,
        read_body(headers, body, state.max_body_bytes),
    )
    .await
    .map_err(|_| ApiError::BodyReadTimeout {
        timeout_ms: state.body_read_timeout.as_millis() as u64,
    })??;
    if !state.secrets.is_empty() {
        let header = headers
            .get(signature::SIGNATURE_HEADER)
            .map(|v| v.as_bytes());
        signature::verify(&state.secrets, header, &body)?;
    }
    let notification = payload::parse(&body)?;
    tracing::Span::current().record("customer_id", notification.customer.id);
    let events = normalize(&notification, received_at)?;
    let routed: Vec<RoutedEvent> = events
        .iter()
        .map(|e| (e, state.routing.topics_for(e.change_type.as_deref())))
        .collect();
    state.sink.deliver(&routed).await?;
    debug!(events = events.len(), "notification delivered");
    Ok(Accepted {
        events: events.len(),
        event_ids: events.iter().map(|e| e.event_id).collect(),
    })
}

/// `application/json` with any parameters, or no `Content-Type` at all.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let media_type = text.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(text.into_owned()))
    }
}

/// Collects the body, refusing it as soon as it is known to exceed `limit`.
async fn read_body<S, B>(headers: &HeaderMap, body: S, limit: usize) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = std::pin::pin!(body);
    let mut collected = BytesMut::with_capacity(declared.map_or(8 * 1024, |l| l as usize));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::BodyRead(e.to_string()))?;
        if collected.len() + chunk.remaining() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        collected.put(chunk);
    }
    Ok(collected.freeze())
}

fn log_refusal(err: &ApiError) {
    let status = err.status();
    match err {
        ApiError::Delivery(delivery) if !delivery.is_retriable() => {
            error!(status = status.as_u16(), error = err.code(), %delivery, "notification refused by Kafka")
        }
        _ if status == StatusCode::SERVICE_UNAVAILABLE => {
            warn!(status = status.as_u16(), error = err.code(), reason = %err, "notification not accepted")
        }
        _ => warn!(status = status.as_u16(), error = err.code(), reason = %err, "request refused"),
    }
}
