//! Keeping a service up under faults and overload, independent of what it serves.
//!
//! Every piece works alone around any call (async or blocking) and as a tower layer
//! ([`layer`]); none knows Tantivy or HTTP. Rejections and failures come back as
//! [`ResilienceError`], which implements [`search_error::Classify`] so the HTTP layer maps them
//! like any other error, and each rejection tells the caller when to come back
//! ([`ResilienceError::retry_after`]).
//!
//! - [`breaker`]: circuit breaker (count or time window, failure and slow-call rates, minimum
//!   calls, consecutive failures, exponential open wait with jitter, bounded half-open probes
//!   with a probe timeout); lock-free when closed; permits for blocking work; snapshots and a
//!   registry for health and admin endpoints.
//! - [`retry`]: capped exponential backoff with None/Full/Equal/Decorrelated jitter,
//!   `Retry-After` hints, `max_elapsed`, and a shared [`RetryBudget`] that bounds retries to a
//!   fraction of recent traffic.
//! - [`ratelimit`]: per-key GCRA (governor) over a memory-bounded, sharded key table.
//! - [`bulkhead`]: bounded concurrency and queue; sheds at once when the queue is full or the
//!   deadline cannot be met (EWMA wait estimate); expired waiters leave the queue.
//! - [`timeout`]: [`Deadline`] and timeouts that count `ironsift_timeouts_total{operation}`.
//! - [`mod@panic`]: panics in closures and futures become [`Panicked`] errors.
//! - [`cache`]: byte-bounded LRU for serving the last good answer when degraded.
//! - [`clock`]: injectable time ([`ManualClock`], [`TokioClock`]) for deterministic tests.
//! - [`chaos`]: chaos drills — [`ChaosLayer`] injects latency (fixed or a range), errors and
//!   panics into a share of calls, from a seeded generator, behind a [`Chaos`] handle that can
//!   be changed at run time; off unless configured.
//!
//! Metric handles are resolved when a component is built: install the metrics recorder first.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use resilience::{BreakerConfig, CircuitBreaker, Outcome};
//!
//! // "Open after 5 consecutive failures, probe again after 30 s."
//! let breaker = CircuitBreaker::new("index-a", BreakerConfig::consecutive(5, Duration::from_secs(30)))?;
//! match breaker.try_acquire() {
//!     Ok(permit) => {
//!         let result: Result<u32, std::io::Error> = Ok(42); // the protected (blocking) work
//!         permit.record(if result.is_ok() { Outcome::Success } else { Outcome::Failure });
//!     }
//!     Err(open) => eprintln!("unavailable, retry in {:?}", open.retry_after),
//! }
//! # Ok::<(), resilience::ConfigError>(())
//! ```
//!
//! As tower layers (each adds one level of [`ResilienceError`]; `flatten` merges them):
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use resilience::*;
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), ConfigError> {
//! let breaker = Arc::new(CircuitBreaker::new("search", BreakerConfig::default())?);
//! let limiter = Arc::new(KeyedRateLimiter::<String>::new("api", quota_per_second(50, 100)?, 100_000)?);
//! let layers = ServiceBuilder::new()
//!     .layer(CatchPanicLayer::new())
//!     .layer(RateLimitLayer::new(limiter, |req: &(String, u32)| Some(req.0.clone())))
//!     .layer(BulkheadLayer::new(Bulkhead::new("search", 8, 64)?))
//!     .layer(CircuitBreakerLayer::new(breaker))
//!     .layer(TimeoutLayer::new("search", Duration::from_secs(5)));
//! # let _ = layers;
//! # Ok(()) }
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod breaker;
pub mod bulkhead;
pub mod cache;
pub mod chaos;
pub mod clock;
mod error;
pub mod layer;
pub mod panic;
pub mod ratelimit;
pub mod retry;
pub mod timeout;

pub use breaker::{
    BreakerConfig, BreakerOpen, BreakerPermit, BreakerRegistry, BreakerSnapshot, BreakerState,
    CircuitBreaker, OpenWait, Outcome, OwnedBreakerPermit, SlidingWindow,
};
pub use bulkhead::{Bulkhead, BulkheadPermit, BulkheadSnapshot, RejectReason, Rejected};
pub use cache::{CacheStats, ResultCache, Weighted};
pub use chaos::{
    Chaos, ChaosConfig, ChaosLayer, ChaosService, ChaosStats, Fault, Injected, Injection,
};
pub use clock::{Clock, ManualClock, SystemClock, TokioClock};
pub use error::{ConfigError, ResilienceError};
pub use layer::{
    BulkheadLayer, CatchPanicLayer, CircuitBreakerLayer, RateLimitLayer, TimeoutLayer,
};
pub use panic::{CatchPanic, Panicked, catch_panic, catch_panic_blocking};
pub use ratelimit::{KeyedRateLimiter, Quota, RateLimited, quota_per_second};
pub use retry::{
    Backoff, DefaultClassifier, HintedClassifier, Jitter, Retry, RetryBudget, RetryClassifier,
    RetryDecision, RetryPolicy,
};
pub use timeout::{Deadline, Elapsed, with_deadline, with_timeout};

/// Registers help text for every metric this crate records, so exporters (and `promtool check
/// metrics`) describe them. Call once after installing the recorder.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "ironsift_breaker_transitions_total",
        "Circuit breaker state changes, by breaker, from and to."
    );
    describe_gauge!(
        "ironsift_breaker_state",
        "Circuit breaker state by breaker: 0 closed, 1 open, 2 half-open."
    );
    describe_counter!(
        "ironsift_breaker_rejected_total",
        "Calls refused by an open (or saturated half-open) breaker, by breaker."
    );
    describe_gauge!(
        "ironsift_bulkhead_in_flight",
        "Calls running inside a bulkhead, by bulkhead."
    );
    describe_gauge!(
        "ironsift_bulkhead_queued",
        "Calls waiting for a bulkhead slot, by bulkhead."
    );
    describe_counter!(
        "ironsift_bulkhead_rejected_total",
        "Calls shed by a bulkhead, by bulkhead and reason."
    );
    describe_histogram!(
        "ironsift_bulkhead_queue_wait_seconds",
        Unit::Seconds,
        "Time calls waited for a bulkhead slot, by bulkhead."
    );
    describe_counter!(
        "ironsift_ratelimit_rejected_total",
        "Requests refused by a rate limiter, by limiter."
    );
    describe_counter!("ironsift_retries_total", "Retries made.");
    describe_counter!(
        "ironsift_retry_gave_up_total",
        "Calls that stopped retrying, by reason."
    );
    describe_counter!(
        timeout::TIMEOUTS_TOTAL,
        "Operations stopped by their deadline, by operation."
    );
    describe_histogram!(
        timeout::OPERATION_DURATION,
        Unit::Seconds,
        "Duration of operations run under a timeout, by operation."
    );
    describe_counter!(
        panic::PANICS_CAUGHT_TOTAL,
        "Panics caught and turned into errors."
    );
    describe_counter!(
        chaos::CHAOS_INJECTED_TOTAL,
        "Faults injected by chaos drills, by chaos handle and kind (delay, error, panic)."
    );
    describe_counter!("ironsift_cache_hits_total", "Result cache hits, by cache.");
    describe_counter!(
        "ironsift_cache_misses_total",
        "Result cache misses, by cache."
    );
}
