//! The HTTP/1.1 server around the warp filters: accepts connections, bounds how
//! long a client may take to send its request headers and how large and many they
//! may be (431 beyond) and how much a connection buffers, gives every request an id
//! (`X-Request-Id`, taken from the request when sane, generated otherwise, echoed
//! in the response) and a `request` span carrying it, counts answers by endpoint
//! and status, and drains open connections on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use tracing::{debug, warn, Instrument};
use warp::http::HeaderValue;

use crate::entity;
use crate::telemetry::metrics::Metrics;

/// The request and response header carrying the request id.
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// How the server runs.
pub(crate) struct ServerOptions {
    /// Request headers must arrive within this, else the connection is closed.
    pub(crate) header_read_timeout: Duration,
    /// Connections open at once; further ones wait in the listen backlog.
    pub(crate) max_connections: usize,
    /// Largest request head (request line and headers); larger ones get 431. (More
    /// than 100 headers get 431 too: hyper's own limit, kept because setting another
    /// moves header parsing from the stack to the heap.)
    pub(crate) max_header_bytes: usize,
}

/// Serves `filter` on `listener` until `stop` resolves; then stops accepting and
/// returns a future that resolves once every open connection finished its request,
/// and a token that closes the connections still open when cancelled.
pub(crate) async fn serve<F, S>(
    listener: TcpListener,
    filter: F,
    metrics: Arc<Metrics>,
    options: ServerOptions,
    stop: S,
) -> (impl Future<Output = ()>, CancellationToken)
where
    F: warp::Filter<Extract = (warp::reply::Response,), Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    F::Future: Send,
    S: Future<Output = ()>,
{
    let warp_service = warp::service(filter);
    let graceful = GracefulShutdown::new();
    let force_close = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let mut stop = std::pin::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut stop => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let (warp_service, metrics) = (warp_service.clone(), Arc::clone(&metrics));
        let service = hyper::service::service_fn(move |request| {
            answer(warp_service.clone(), Arc::clone(&metrics), request)
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout)
            .max_header_size(options.max_header_bytes)
            .max_buf_size(read_buffer_bytes(options.max_header_bytes))
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        let closed = force_close.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = connection => if let Err(error) = result {
                    debug!(%error, "connection ended with an error");
                },
                () = closed.cancelled() => debug!("connection closed at the end of the grace period"),
            }
            drop(slot);
        });
    }
    drop(listener);
    (graceful.shutdown(), force_close)
}

/// hyper's smallest read buffer bound (its `MINIMUM_MAX_BUFFER_SIZE`).
const MIN_READ_BUFFER_BYTES: usize = 8 * 1024;

/// The bound of a connection's read buffer (hyper's `max_buf_size`): the largest
/// request head must fit (`server.max_header_bytes`), and more is not needed, as
/// body bytes are handed on as they arrive (and counted in the byte budget by the
/// handler). Unset, hyper lets the buffer grow to about 400 KiB per connection,
/// outside the budget. Bounded, a connection holds at most this many received bytes
/// (16 KiB by default), in at most about twice as much memory (the buffer may double
/// as it grows, and the chunk handed on keeps its part until copied). With hyper's
/// write buffer and the connection's task, an idle connection was measured at
/// about 22 KiB, one trickling a body at about 31 KiB.
fn read_buffer_bytes(max_header_bytes: usize) -> usize {
    max_header_bytes.max(MIN_READ_BUFFER_BYTES)
}

async fn answer<W>(
    mut warp_service: W,
    metrics: Arc<Metrics>,
    mut request: Request<Incoming>,
) -> Result<warp::reply::Response, Infallible>
where
    W: Service<Request<Incoming>, Response = warp::reply::Response, Error = Infallible>,
{
    let request_id = request_id(&request);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        request.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let endpoint = endpoint_of(request.uri().path());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = warp_service.call(request).instrument(span).await?;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    metrics.request_answered(endpoint, response.status().as_u16());
    Ok(response)
}

/// The sender's `X-Request-Id` when it is 1 to 128 visible ASCII characters,
/// a new UUID otherwise.
fn request_id<B>(request: &Request<B>) -> String {
    request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string)
}

/// The endpoint label of a path: a fixed set, so metrics stay bounded; a webhook
/// endpoint's is its entity (`customer`, `booking`). A trailing `/` is the same
/// endpoint, as warp serves it.
fn endpoint_of(path: &str) -> &'static str {
    let path = path.strip_suffix('/').unwrap_or(path);
    let webhook = path.strip_prefix("/webhooks/").and_then(entity::by_name);
    if let Some(entity) = webhook {
        return entity.name;
    }
    match path {
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_id(id: &str) -> Request<()> {
        Request::builder()
            .header(REQUEST_ID_HEADER, id)
            .body(())
            .unwrap()
    }

    #[test]
    fn keeps_a_sane_request_id_and_replaces_others() {
        assert_eq!(request_id(&with_id("abc-123")), "abc-123");
        let generated = request_id(&with_id("has space"));
        assert!(uuid::Uuid::parse_str(&generated).is_ok());
        assert!(uuid::Uuid::parse_str(&request_id(&with_id(&"x".repeat(129)))).is_ok());
        assert!(uuid::Uuid::parse_str(&request_id(&Request::new(()))).is_ok());
    }

    #[test]
    fn a_connection_buffers_the_largest_request_head_and_at_least_what_hyper_needs() {
        assert_eq!(read_buffer_bytes(16 * 1024), 16 * 1024);
        assert_eq!(read_buffer_bytes(64 * 1024), 64 * 1024);
        assert_eq!(read_buffer_bytes(1024), 8 * 1024);
    }

    #[test]
    fn endpoints_are_a_fixed_set() {
        for (path, endpoint) in [
            ("/webhooks/customer", "customer"),
            ("/webhooks/booking", "booking"),
            ("/webhooks/other", "other"),
            ("/webhooks/booking/x", "other"),
            ("/webhooks/booking/", "booking"),
            ("/healthz/", "healthz"),
            ("/webhooks//", "other"),
            ("/metrics", "metrics"),
            ("/anything/else", "other"),
        ] {
            assert_eq!(endpoint_of(path), endpoint, "{path}");
        }
    }
}
