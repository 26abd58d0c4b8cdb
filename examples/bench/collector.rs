//! An OTLP/HTTP collector that takes every export and discards it: the variants
//! that export spans send them here, so what they are measured paying is the
//! connector's side of tracing alone (this process's CPU is not counted).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use warp::Filter;

/// The running collector: where to export, and how many bytes it took.
pub struct Collector {
    pub endpoint: String,
    pub bytes: Arc<AtomicU64>,
}

/// Starts the collector on a loopback port of its own, on the current runtime.
pub async fn start() -> Collector {
    let bytes = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&bytes);
    let traces = warp::post()
        .and(warp::path!("v1" / "traces"))
        .and(warp::body::bytes())
        .map(move |body: bytes::Bytes| {
            counted.fetch_add(body.len() as u64, Ordering::Relaxed);
            // An empty ExportTraceServiceResponse: everything accepted.
            warp::reply::with_header(Vec::new(), "content-type", "application/x-protobuf")
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let port = listener.local_addr().expect("its address").port();
    tokio::spawn(warp::serve(traces).incoming(listener).run());
    Collector {
        endpoint: format!("http://127.0.0.1:{port}"),
        bytes,
    }
}
