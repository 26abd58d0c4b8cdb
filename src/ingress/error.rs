//! Every way a request can fail, mapped once to the HTTP contract (docs/http-contract.md): a status, a stable `error` code, a message for a human, and
//! `Retry-After` where sending again later may succeed.

use std::convert::Infallible;

use serde::Serialize;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Rejection, Reply};

use super::signature::SignatureError;
use crate::payload::PayloadError;
use crate::pipeline::AcceptError;
use crate::sink::DeliveryError;

/// Seconds a sender should wait before retrying after a Kafka failure.
pub(crate) const RETRY_AFTER_KAFKA_SECS: u64 = 5;
/// The longest error message, in characters; longer ones are cut with `…`.
pub(crate) const MAX_MESSAGE_CHARS: usize = 1024;
/// Seconds a sender should wait before retrying when too many requests are in flight.
pub(crate) const RETRY_AFTER_OVERLOAD_SECS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no such endpoint; webhooks go to {}", crate::entity::endpoints())]
    NotFound,
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    #[error("Content-Type {0:?} is not supported; send application/json")]
    UnsupportedMediaType(String),
    /// Refused by the acceptance step (size, shape, changes, date-time); never
    /// [`AcceptError::NoRoom`], which is [`Overload::Bytes`] (see the `From`).
    #[error("{0}")]
    Accept(AcceptError),
    #[error("the request body could not be read: {0}")]
    BodyRead(String),
    #[error("the request body did not arrive within {timeout_ms} ms")]
    BodyReadTimeout { timeout_ms: u64 },
    #[error("{0}")]
    Signature(#[from] SignatureError),
    #[error("{0}; retry later")]
    Overloaded(Overload),
    #[error("{}", delivery_message(.0))]
    Delivery(#[from] DeliveryError),
    /// A refused notification could not be written to the dead-letter topic:
    /// rather than lose it, the sender is asked to send it again.
    #[error("the notification is refused ({refusal}: {message}) but could not be kept on the dead-letter topic ({cause}); retry later")]
    DeadLetter {
        refusal: &'static str,
        message: String,
        cause: String,
    },
    #[error("bad request: {0}")]
    BadRequest(String),
}

/// Which bound an overloaded request hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overload {
    #[error("too many requests in flight (server.max_in_flight)")]
    Requests,
    #[error("too many request bodies arriving at once (server.max_receiving)")]
    Receiving,
    #[error("too many bytes of requests and records held at once (server.max_in_flight_bytes)")]
    Bytes,
}

/// A content refusal can never pass, so it does not ask for a retry.
fn delivery_message(error: &DeliveryError) -> String {
    match error.is_content_refusal() {
        true => format!("{error}; the notification can never be delivered as it is"),
        false => format!("{error}; not every event was acknowledged, retry later"),
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl From<AcceptError> for ApiError {
    /// No room in the byte budget now is an overload, not a fault of the body.
    fn from(error: AcceptError) -> Self {
        match error {
            AcceptError::NoRoom => ApiError::Overloaded(Overload::Bytes),
            error => ApiError::Accept(error),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Accept(
                AcceptError::TooLarge { .. }
                | AcceptError::TooManyChanges { .. }
                | AcceptError::TooLargeToDeliver { .. }
                | AcceptError::NamesTooLong { .. },
            ) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Delivery(refusal) if refusal.is_too_large() => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Delivery(refusal) if refusal.is_content_refusal() => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Signature(_) => StatusCode::UNAUTHORIZED,
            ApiError::BodyReadTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::BodyRead(_) | ApiError::Accept(_) | ApiError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Overloaded(_) | ApiError::Delivery(_) | ApiError::DeadLetter { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The stable, machine-readable `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Accept(
                AcceptError::TooLarge { .. }
                | AcceptError::TooLargeToDeliver { .. }
                | AcceptError::NamesTooLong { .. },
            ) => "payload_too_large",
            ApiError::Accept(AcceptError::TooManyChanges { .. }) => "too_many_changes",
            ApiError::Accept(AcceptError::Payload(PayloadError::InvalidJson { .. })) => {
                "invalid_json"
            }
            ApiError::Accept(_) => "invalid_payload",
            ApiError::BodyRead(_) => "body_unreadable",
            ApiError::BodyReadTimeout { .. } => "request_timeout",
            ApiError::Signature(SignatureError::Missing) => "signature_missing",
            ApiError::Signature(_) => "signature_invalid",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::Delivery(DeliveryError::ShuttingDown) => "shutting_down",
            ApiError::Delivery(e) if e.is_too_large() => "record_too_large",
            ApiError::Delivery(e) if e.is_content_refusal() => "record_invalid",
            ApiError::Delivery(e) if e.is_retriable() => "kafka_unavailable",
            ApiError::Delivery(_) => "kafka_refused",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::DeadLetter { .. } => "dead_letter_unavailable",
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::Overloaded(_) => Some(RETRY_AFTER_OVERLOAD_SECS),
            ApiError::Delivery(e) if e.is_content_refusal() => None,
            ApiError::Delivery(_) | ApiError::DeadLetter { .. } => Some(RETRY_AFTER_KAFKA_SECS),
            _ => None,
        }
    }

    /// The message for a human, at most [`MAX_MESSAGE_CHARS`] characters: it may
    /// quote the sender's input (a key, a value), which can be as long as the body.
    pub fn message(&self) -> String {
        let mut message = self.to_string();
        if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
            message.truncate(cut);
            message.push('…');
        }
        message
    }

    pub fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code(),
            message: self.message(),
        };
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status()).into_response();
        if let Some(secs) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Maps warp's own rejections (unknown path, wrong method, bad headers) to the
/// same JSON contract as the handlers' errors.
pub(crate) async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if rejection.is_not_found() {
        ApiError::NotFound
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed
    } else {
        ApiError::BadRequest(format!("{rejection:?}"))
    };
    Ok(error.into_response())
}

#[cfg(test)]
mod tests {
    use rdkafka::types::RDKafkaErrorCode;

    use super::*;

    #[test]
    fn kafka_failures_ask_for_a_retry() {
        let timed_out = ApiError::Delivery(DeliveryError::TimedOut {
            topics: "t".into(),
            timeout_ms: 10,
        });
        assert_eq!(timed_out.code(), "kafka_unavailable");
        let response = timed_out.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");

        let refused = ApiError::Delivery(DeliveryError::Refused {
            topic: "t".into(),
            change_type: "X".into(),
            reason: "Broker: Unknown topic or partition".into(),
            retriable: false,
            code: None,
        });
        assert_eq!(refused.code(), "kafka_refused");
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn records_kafka_can_never_take_are_client_errors_without_retry_after() {
        let refused = |code, reason: &str| {
            ApiError::Delivery(DeliveryError::Refused {
                topic: "t".into(),
                change_type: "X".into(),
                reason: reason.into(),
                retriable: false,
                code: Some(code),
            })
        };
        let too_large = refused(RDKafkaErrorCode::MessageSizeTooLarge, "too large");
        assert_eq!(too_large.code(), "record_too_large");
        assert_eq!(
            too_large.message(),
            "Kafka refused the X event for topic t: too large; the notification can never be delivered as it is"
        );
        let response = too_large.into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        let invalid = refused(RDKafkaErrorCode::InvalidRecord, "invalid");
        assert_eq!(invalid.code(), "record_invalid");
        assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn no_room_for_the_records_now_is_an_overload_not_a_refused_body() {
        let error = ApiError::from(AcceptError::NoRoom);
        assert!(matches!(error, ApiError::Overloaded(Overload::Bytes)));
        assert_eq!(error.code(), "overloaded");
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        let too_large = AcceptError::TooLargeToDeliver {
            needed: 2,
            limit: 1,
        };
        assert_eq!(ApiError::from(too_large).code(), "payload_too_large");
    }

    #[test]
    fn messages_quoting_long_input_are_cut() {
        let key = "k".repeat(100_000);
        let error = ApiError::Accept(AcceptError::Payload(PayloadError::InvalidShape {
            path: "Customer".into(),
            message: format!("duplicate field `{key}`"),
        }));
        let message = error.message();
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(message.starts_with("Customer: duplicate field `kkk"));
        assert!(message.ends_with("k…"));
        let short = ApiError::Accept(AcceptError::TooLarge { limit: 1 });
        assert_eq!(short.message(), short.to_string());
    }

    #[test]
    fn client_errors_have_no_retry_after() {
        let response = ApiError::Accept(AcceptError::TooLarge { limit: 1 }).into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }
}
