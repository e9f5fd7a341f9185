//! The closed error vocabulary shared by every ironsift crate.
//!
//! Each crate keeps its own `thiserror` enum with context-carrying variants (paths, index names,
//! positions) and implements [`Classify`] for it. Callers branch on the [`ErrorCode`], which is a
//! small closed set; the HTTP layer maps codes to statuses in exactly one place. This crate owns
//! nothing else: no error type of its own, no `Internal(String)` catch-all.
#![warn(missing_docs, unreachable_pub)]

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of failure an error is, independent of which crate raised it.
///
/// The set is closed on purpose: adding a code is an API change that every mapping (HTTP status,
/// retry policy, breaker classifier) must consider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request itself is malformed or violates a limit; retrying it unchanged cannot help.
    InvalidInput,
    /// No credentials were given where they are required.
    Unauthenticated,
    /// Credentials were given but do not allow this operation.
    PermissionDenied,
    /// The named thing (index, document, file) does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// The operation conflicts with the current state (e.g. another writer holds the lock).
    Conflict,
    /// The request body is larger than allowed.
    PayloadTooLarge,
    /// The media type of the request is not one we accept.
    UnsupportedMediaType,
    /// The caller is sending too fast (rate limit).
    RateLimited,
    /// The service is shedding load; try again shortly.
    Overloaded,
    /// The service or a dependency is temporarily unable to serve (starting, shutting down,
    /// breaker open, replaying the log).
    Unavailable,
    /// The operation did not finish before its deadline.
    Timeout,
    /// Memory, file handles or another resource is exhausted.
    ResourceExhausted,
    /// The disk is full (ENOSPC); writes resume once space is back.
    StorageFull,
    /// Stored data failed a checksum or could not be decoded.
    DataCorruption,
    /// An operating-system I/O error that is none of the above.
    Io,
    /// A bug: an invariant did not hold or a task panicked.
    Internal,
}

impl ErrorCode {
    /// Every code, in declaration order (for exhaustive tests and metrics pre-registration).
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::InvalidInput,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RateLimited,
        ErrorCode::Overloaded,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::ResourceExhausted,
        ErrorCode::StorageFull,
        ErrorCode::DataCorruption,
        ErrorCode::Io,
        ErrorCode::Internal,
    ];

    /// Stable snake_case name, used in JSON bodies, logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::DataCorruption => "data_corruption",
            ErrorCode::Io => "io",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether the same request may succeed if retried later without change.
    ///
    /// Client errors never are; shedding, unavailability and timeouts are. Corruption and bugs
    /// are not: retrying would only repeat them.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited
                | ErrorCode::Overloaded
                | ErrorCode::Unavailable
                | ErrorCode::Timeout
                | ErrorCode::ResourceExhausted
                | ErrorCode::StorageFull
                | ErrorCode::Conflict
        )
    }

    /// Whether the fault lies with the caller (the 4xx family).
    pub const fn is_client_error(self) -> bool {
        matches!(
            self,
            ErrorCode::InvalidInput
                | ErrorCode::Unauthenticated
                | ErrorCode::PermissionDenied
                | ErrorCode::NotFound
                | ErrorCode::AlreadyExists
                | ErrorCode::Conflict
                | ErrorCode::PayloadTooLarge
                | ErrorCode::UnsupportedMediaType
                | ErrorCode::RateLimited
        )
    }

    /// The severity an error of this code has unless its type says otherwise.
    pub const fn default_severity(self) -> Severity {
        match self {
            ErrorCode::InvalidInput
            | ErrorCode::Unauthenticated
            | ErrorCode::PermissionDenied
            | ErrorCode::NotFound
            | ErrorCode::AlreadyExists
            | ErrorCode::PayloadTooLarge
            | ErrorCode::UnsupportedMediaType
            | ErrorCode::RateLimited => Severity::Low,
            ErrorCode::Conflict | ErrorCode::Overloaded | ErrorCode::Timeout => Severity::Medium,
            ErrorCode::Unavailable
            | ErrorCode::ResourceExhausted
            | ErrorCode::StorageFull
            | ErrorCode::Io
            | ErrorCode::Internal => Severity::High,
            ErrorCode::DataCorruption => Severity::Critical,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgently a human should look at an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Expected in normal operation (bad input, missing documents).
    Low,
    /// Worth watching when frequent (timeouts, shedding, lock conflicts).
    Medium,
    /// Something is wrong with the service or its environment.
    High,
    /// Data is at risk; page someone.
    Critical,
}

impl Severity {
    /// Stable lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every error type in ironsift so callers can branch without string matching.
pub trait Classify {
    /// The closed code of this error.
    fn code(&self) -> ErrorCode;

    /// How severe this error is; defaults to the code's usual severity.
    fn severity(&self) -> Severity {
        self.code().default_severity()
    }

    /// Whether retrying the same operation later may succeed; defaults to the code's rule.
    fn is_retryable(&self) -> bool {
        self.code().is_retryable()
    }
}

impl<T: Classify + ?Sized> Classify for &T {
    fn code(&self) -> ErrorCode {
        (**self).code()
    }
    fn severity(&self) -> Severity {
        (**self).severity()
    }
    fn is_retryable(&self) -> bool {
        (**self).is_retryable()
    }
}

impl<T: Classify + ?Sized> Classify for Box<T> {
    fn code(&self) -> ErrorCode {
        (**self).code()
    }
    fn severity(&self) -> Severity {
        (**self).severity()
    }
    fn is_retryable(&self) -> bool {
        (**self).is_retryable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_code_once_with_unique_names() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn serde_name_matches_as_str() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn client_errors_are_never_retryable_except_throttling_and_conflicts() {
        for code in ErrorCode::ALL {
            if code.is_client_error() && code.is_retryable() {
                assert!(
                    matches!(code, ErrorCode::RateLimited | ErrorCode::Conflict),
                    "{code} is a client error and retryable"
                );
            }
        }
        assert!(!ErrorCode::InvalidInput.is_retryable());
        assert!(!ErrorCode::NotFound.is_retryable());
        assert!(!ErrorCode::DataCorruption.is_retryable());
        assert!(ErrorCode::Overloaded.is_retryable());
    }

    #[test]
    fn classify_defaults_follow_the_code() {
        struct E;
        impl Classify for E {
            fn code(&self) -> ErrorCode {
                ErrorCode::DataCorruption
            }
        }
        assert_eq!(E.severity(), Severity::Critical);
        assert!(!E.is_retryable());
        let by_ref: &dyn Classify = &E;
        assert_eq!(by_ref.code(), ErrorCode::DataCorruption);
    }
}
