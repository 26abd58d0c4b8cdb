//! Reading a request body within its limits: refused as soon as it is known to
//! exceed `server.max_body_bytes`, every byte taken from the byte budget before it
//! is kept.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use warp::http::{header, HeaderMap};

use super::ApiError;
use crate::pipeline::AcceptError;

/// Collects the body, refusing it as soon as it is known to exceed `limit`;
/// `reserve` is asked for the bytes of every chunk before it is kept.
pub(super) async fn read_body<S, B>(
    headers: &HeaderMap,
    body: S,
    limit: usize,
    mut reserve: impl FnMut(usize) -> Result<(), ApiError>,
) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let too_large = || ApiError::Accept(AcceptError::TooLarge { limit });
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    // Memory grows with what arrives, not with what a sender announces.
    let initial = declared.map_or(8 * 1024, |l| l as usize).min(64 * 1024);
    let mut body = std::pin::pin!(body);
    let mut collected = BytesMut::with_capacity(initial);
    let (mut received, mut refused) = (0, None);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| ApiError::BodyRead(e.to_string()))?;
        received += chunk.remaining();
        if received > limit {
            return Err(too_large());
        }
        if refused.is_none() {
            match reserve(chunk.remaining()) {
                Ok(()) => collected.put(chunk),
                // The rest is read and dropped, so the sender gets the answer rather
                // than a connection reset while it is still sending.
                Err(error) => {
                    refused = Some(error);
                    collected = BytesMut::new();
                }
            }
        } else {
            chunk.advance(chunk.remaining());
        }
    }
    match refused {
        Some(error) => Err(error),
        None => Ok(collected.freeze()),
    }
}

