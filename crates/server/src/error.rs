//! The one mapping from `ErrorCode` to HTTP status, and the JSON error body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use search_error::{Classify, ErrorCode, Severity};
use serde::Serialize;

use crate::context;

/// HTTP status for each error code. The only place this mapping exists.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists | ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Overloaded | ErrorCode::Unavailable | ErrorCode::ResourceExhausted => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::DataCorruption | ErrorCode::Io | ErrorCode::Internal => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        // `ErrorCode` is non-exhaustive; a code added later is a server fault until mapped.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error on its way to becoming an HTTP response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The closed code.
    pub code: ErrorCode,
    /// Severity, for the error reporter.
    pub severity: Severity,
    /// Message for the client (never a key or secret).
    pub message: String,
    /// Whether the client may retry unchanged.
    pub retryable: bool,
    /// Seconds the client should wait before retrying, when known.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with the code's default severity and retryability.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            severity: code.default_severity(),
            message: message.into(),
            retryable: code.is_retryable(),
            retry_after: None,
        }
    }

    /// From any classified error, keeping its message.
    pub fn from_classified<E: Classify + std::fmt::Display>(e: &E) -> Self {
        ApiError {
            code: e.code(),
            severity: e.severity(),
            message: e.to_string(),
            retryable: e.is_retryable(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` hint.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl From<search_core::CoreError> for ApiError {
    fn from(e: search_core::CoreError) -> Self {
        ApiError::from_classified(&e)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: ErrorCode,
    message: &'a str,
    request_id: Option<String>,
    retryable: bool,
}

/// What the request middleware needs to report an error after the response is built.
#[derive(Debug, Clone)]
pub(crate) struct ErrorInfo {
    pub(crate) code: ErrorCode,
    pub(crate) severity: Severity,
    pub(crate) message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(self.code);
        let body = serde_json::to_vec(&Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                request_id: context::current_request_id().map(|r| r.to_string()),
                retryable: self.retryable,
            },
        })
        .unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp.extensions_mut().insert(ErrorInfo {
            code: self.code,
            severity: self.severity,
            message: self.message,
        });
        resp
    }
}

impl Classify for ApiError {
    fn code(&self) -> ErrorCode {
        self.code
    }

    fn severity(&self) -> Severity {
        self.severity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_documented_status() {
        let expected = [
            (ErrorCode::InvalidInput, 400),
            (ErrorCode::Unauthenticated, 401),
            (ErrorCode::PermissionDenied, 403),
            (ErrorCode::NotFound, 404),
            (ErrorCode::AlreadyExists, 409),
            (ErrorCode::Conflict, 409),
            (ErrorCode::PayloadTooLarge, 413),
            (ErrorCode::UnsupportedMediaType, 415),
            (ErrorCode::RateLimited, 429),
            (ErrorCode::Overloaded, 503),
            (ErrorCode::Unavailable, 503),
            (ErrorCode::ResourceExhausted, 503),
            (ErrorCode::Timeout, 504),
            (ErrorCode::StorageFull, 507),
            (ErrorCode::DataCorruption, 500),
            (ErrorCode::Io, 500),
            (ErrorCode::Internal, 500),
        ];
        assert_eq!(expected.len(), ErrorCode::ALL.len());
        for (code, status) in expected {
            assert_eq!(status_of(code).as_u16(), status, "{code}");
            assert_eq!(
                status_of(code).is_client_error(),
                code.is_client_error(),
                "{code}"
            );
        }
    }
}
