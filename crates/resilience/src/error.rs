//! The crate's error types: configuration errors and the one wrapper every layer returns.

use std::time::Duration;

use search_error::{Classify, ErrorCode};

use crate::breaker::BreakerOpen;
use crate::bulkhead::Rejected;
use crate::panic::Panicked;
use crate::ratelimit::RateLimited;
use crate::timeout::Elapsed;

/// A configuration value is out of range; raised by constructors, never later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ConfigError {
    /// The offending field, e.g. `"failure_rate_threshold"`.
    pub field: &'static str,
    /// Why it is rejected, with the accepted range.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

impl Classify for ConfigError {
    fn code(&self) -> ErrorCode {
        ErrorCode::InvalidInput
    }
}

/// What a resilience layer returns: the wrapped service's own error, or why the call was not
/// made or not finished.
///
/// Implements [`Classify`]: breaker open → `Unavailable`, rate limited → `RateLimited`, bulkhead
/// rejection → `Overloaded`, timeout → `Timeout`, panic → `Internal`; the inner error keeps its
/// own code. Nested layers give nested errors; [`ResilienceError::flatten`] merges one level.
#[derive(Debug, thiserror::Error)]
pub enum ResilienceError<E> {
    /// The wrapped call ran and failed with its own error.
    #[error(transparent)]
    Inner(E),
    /// The circuit breaker is open (or half-open with every probe slot taken).
    #[error(transparent)]
    BreakerOpen(BreakerOpen),
    /// The caller exceeded its rate limit.
    #[error(transparent)]
    RateLimited(RateLimited),
    /// Admission control shed the call (queue full, deadline unreachable or passed).
    #[error(transparent)]
    Rejected(Rejected),
    /// The call did not finish in time.
    #[error(transparent)]
    Timeout(Elapsed),
    /// The call panicked; the panic was contained.
    #[error(transparent)]
    Panicked(Panicked),
}

impl<E> ResilienceError<E> {
    /// How long the caller should wait before trying again, when the rejection says so.
    ///
    /// `None` for inner errors, timeouts and panics.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ResilienceError::BreakerOpen(e) => Some(e.retry_after),
            ResilienceError::RateLimited(e) => Some(e.retry_after),
            ResilienceError::Rejected(e) => Some(e.retry_after),
            ResilienceError::Inner(_)
            | ResilienceError::Timeout(_)
            | ResilienceError::Panicked(_) => None,
        }
    }

    /// Whether the call was refused before reaching the wrapped service (so it had no effect).
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            ResilienceError::BreakerOpen(_)
                | ResilienceError::RateLimited(_)
                | ResilienceError::Rejected(_)
        )
    }

    /// The inner error, if this is one.
    pub fn into_inner(self) -> Option<E> {
        match self {
            ResilienceError::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// Applies `f` to the inner error, keeping rejections as they are.
    pub fn map_inner<F, E2>(self, f: F) -> ResilienceError<E2>
    where
        F: FnOnce(E) -> E2,
    {
        match self {
            ResilienceError::Inner(e) => ResilienceError::Inner(f(e)),
            ResilienceError::BreakerOpen(e) => ResilienceError::BreakerOpen(e),
            ResilienceError::RateLimited(e) => ResilienceError::RateLimited(e),
            ResilienceError::Rejected(e) => ResilienceError::Rejected(e),
            ResilienceError::Timeout(e) => ResilienceError::Timeout(e),
            ResilienceError::Panicked(e) => ResilienceError::Panicked(e),
        }
    }
}

impl<E> ResilienceError<ResilienceError<E>> {
    /// Merges the errors of two stacked layers into one level.
    pub fn flatten(self) -> ResilienceError<E> {
        match self {
            ResilienceError::Inner(inner) => inner,
            ResilienceError::BreakerOpen(e) => ResilienceError::BreakerOpen(e),
            ResilienceError::RateLimited(e) => ResilienceError::RateLimited(e),
            ResilienceError::Rejected(e) => ResilienceError::Rejected(e),
            ResilienceError::Timeout(e) => ResilienceError::Timeout(e),
            ResilienceError::Panicked(e) => ResilienceError::Panicked(e),
        }
    }
}

impl<E: Classify> Classify for ResilienceError<E> {
    fn code(&self) -> ErrorCode {
        match self {
            ResilienceError::Inner(e) => e.code(),
            ResilienceError::BreakerOpen(_) => ErrorCode::Unavailable,
            ResilienceError::RateLimited(_) => ErrorCode::RateLimited,
            ResilienceError::Rejected(_) => ErrorCode::Overloaded,
            ResilienceError::Timeout(_) => ErrorCode::Timeout,
            ResilienceError::Panicked(_) => ErrorCode::Internal,
        }
    }

    fn severity(&self) -> search_error::Severity {
        match self {
            ResilienceError::Inner(e) => e.severity(),
            other => other.code().default_severity(),
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            ResilienceError::Inner(e) => e.is_retryable(),
            other => other.code().is_retryable(),
        }
    }
}
