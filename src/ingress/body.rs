//! Reading a request body within its limits: refused as soon as it is known to
//! exceed `server.max_body_bytes`, and every byte of the buffer it is kept in taken
//! from the byte budget before it is allocated. Nothing is set aside for what a
//! sender announces (`Content-Length`), only for what arrives.

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use warp::http::{header, HeaderMap};

use super::ApiError;
use crate::pipeline::AcceptError;

/// The first buffer for a body's first bytes when they are fewer: small enough
/// that a thousand senders of one byte each hold little, large enough that a small
/// body is not copied from buffer to buffer.
const FIRST_CAPACITY: usize = 1024;

/// Collects the body, refusing it as soon as it is known to exceed `limit`.
/// `reserve` is asked for every byte of capacity before it is allocated (so it
/// counts what is held, not only what was received), and the body is returned
/// with its capacity equal to its length: what was counted, for the caller to
/// count again once it moves the body on.
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
    // The buffer never grows past the announced length, or the limit without one.
    let ceiling = declared.map_or(limit, |length| length as usize);
    let mut body = std::pin::pin!(body);
    let mut collected = Vec::new();
    let (mut received, mut refused) = (0, None);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| ApiError::BodyRead(e.to_string()))?;
        received += chunk.remaining();
        if received > limit {
            return Err(too_large());
        }
        if refused.is_none() {
            match grow(&mut collected, chunk.remaining(), ceiling, &mut reserve) {
                Ok(()) => copy(&mut chunk, &mut collected),
                // The rest is read and dropped, so the sender gets the answer rather
                // than a connection reset while it is still sending.
                Err(error) => {
                    refused = Some(error);
                    collected = Vec::new();
                }
            }
        }
        chunk.advance(chunk.remaining());
    }
    match refused {
        Some(error) => Err(error),
        None => Ok(Bytes::from(exact(collected))),
    }
}

/// Makes room in `buffer` for `more` bytes, taking every byte of capacity it adds
/// from `reserve` first: twice the capacity (at least [`FIRST_CAPACITY`]), or just
/// enough, but never past `ceiling` unless the bytes themselves need it.
fn grow(
    buffer: &mut Vec<u8>,
    more: usize,
    ceiling: usize,
    reserve: &mut impl FnMut(usize) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let needed = buffer.len() + more;
    if needed <= buffer.capacity() {
        return Ok(());
    }
    let doubled = (buffer.capacity() * 2).max(FIRST_CAPACITY).min(ceiling);
    let capacity = doubled.max(needed);
    reserve(capacity - buffer.capacity())?;
    buffer.reserve_exact(capacity - buffer.len());
    // A `Vec` may be given more than asked for; whatever it holds is counted.
    match buffer.capacity() - capacity {
        0 => Ok(()),
        more => reserve(more),
    }
}

/// Appends all of `chunk` to `buffer`, which has room for it.
fn copy(chunk: &mut impl Buf, buffer: &mut Vec<u8>) {
    while chunk.has_remaining() {
        let part = chunk.chunk();
        buffer.extend_from_slice(part);
        let copied = part.len();
        chunk.advance(copied);
    }
}

/// `buffer` with its capacity equal to its length, so the caller counts what is
/// held by counting its length. A body of announced length already is; one of
/// unknown length (chunked) may have been given up to twice the room it took.
fn exact(mut buffer: Vec<u8>) -> Vec<u8> {
    buffer.shrink_to_fit();
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn headers(content_length: Option<usize>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(length) = content_length {
            headers.insert(header::CONTENT_LENGTH, length.into());
        }
        headers
    }

    /// Reads `chunks` as a body with a budget of `budget` bytes; the body (or the
    /// refusal) and the bytes taken from the budget.
    fn read(
        content_length: Option<usize>,
        chunks: &[&[u8]],
        limit: usize,
        budget: usize,
    ) -> (Result<Bytes, ApiError>, usize) {
        let taken = Cell::new(0);
        let stream = futures::stream::iter(
            chunks
                .iter()
                .map(|c| Ok::<_, warp::Error>(Bytes::copy_from_slice(c))),
        );
        let reserve = |bytes: usize| {
            if taken.get() + bytes > budget {
                return Err(ApiError::Overloaded(crate::ingress::Overload::Bytes));
            }
            taken.set(taken.get() + bytes);
            Ok(())
        };
        let headers = headers(content_length);
        let body = futures::executor::block_on(read_body(&headers, stream, limit, reserve));
        (body, taken.get())
    }

    #[test]
    fn nothing_is_taken_for_an_announced_length_before_bytes_arrive() {
        let (body, taken) = read(Some(262_144), &[b"{"], 262_144, usize::MAX);
        // The announced body never came: the buffer is for the byte that did.
        assert_eq!(body.unwrap().as_ref(), b"{");
        assert_eq!(taken, FIRST_CAPACITY);
    }

    #[test]
    fn a_body_of_announced_length_is_held_at_exactly_its_length() {
        let chunk = [b'x'; 10_000];
        let chunks: Vec<&[u8]> = (0..25).map(|_| &chunk[..]).collect();
        let (body, taken) = read(Some(250_000), &chunks, 262_144, usize::MAX);
        let body = body.unwrap();
        assert_eq!(body.len(), 250_000);
        // Every capacity increase was counted and none went past the announced length.
        assert_eq!(taken, 250_000);
    }

    #[test]
    fn a_body_of_unknown_length_is_counted_by_capacity_and_handed_over_exact() {
        let chunk = [b'x'; 3_000];
        let chunks: Vec<&[u8]> = (0..7).map(|_| &chunk[..]).collect();
        let (body, taken) = read(None, &chunks, 262_144, usize::MAX);
        let body = Vec::from(body.unwrap());
        assert_eq!(body.len(), 21_000);
        // 3,000, then 6,000, 12,000 and 24,000 bytes of room: all of it counted.
        assert_eq!(taken, 24_000);
        assert_eq!(body.capacity(), body.len());
    }

    #[test]
    fn the_room_never_grows_past_the_limit() {
        let chunk = [b'x'; 3_000];
        let chunks: Vec<&[u8]> = (0..3).map(|_| &chunk[..]).collect();
        let (body, taken) = read(None, &chunks, 10_000, usize::MAX);
        assert_eq!(body.unwrap().len(), 9_000);
        assert_eq!(taken, 10_000);
    }

    #[test]
    fn a_body_past_the_limit_or_the_budget_is_refused() {
        let chunk = [b'x'; 3_000];
        let (body, _) = read(None, &[&chunk, &chunk], 5_000, usize::MAX);
        assert!(matches!(
            body,
            Err(ApiError::Accept(AcceptError::TooLarge { limit: 5_000 }))
        ));
        let (body, _) = read(Some(6_001), &[&chunk], 6_000, usize::MAX);
        assert!(matches!(
            body,
            Err(ApiError::Accept(AcceptError::TooLarge { .. }))
        ));
        // Room for the first chunk (3,000) but not for doubling it: refused, and
        // the rest is still read.
        let (body, taken) = read(None, &[&chunk, &chunk, &chunk], 262_144, 5_000);
        assert!(matches!(body, Err(ApiError::Overloaded(_))));
        assert_eq!(taken, 3_000);
    }
}
