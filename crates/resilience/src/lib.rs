//! Keeping a service up under faults and overload, independent of what it serves.
//!
//! This crate will own the circuit breaker, retry with jittered backoff and a retry budget,
//! deadlines, per-client rate limiting, admission control and load shedding, degradation and panic
//! isolation, each as a tower layer that is also usable around any async call. It knows nothing
//! of Tantivy or HTTP. Its content lands with issue #4; until then the crate is intentionally
//! empty rather than holding a naive version that would have to be unlearned.
#![warn(missing_docs, unreachable_pub)]
