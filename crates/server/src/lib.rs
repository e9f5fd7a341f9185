//! The ironsift HTTP service.
//!
//! This is the only crate that knows HTTP: the axum router (built by a function so tests can
//! call it without a socket), the mapping from `ErrorCode` to HTTP status, authentication, body
//! limits and graceful shutdown. Its content lands with issue #3; the crate is intentionally empty
//! until then.
#![warn(missing_docs, unreachable_pub)]
