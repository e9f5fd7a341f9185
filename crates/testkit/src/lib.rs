//! Tools for testing ironsift the hard way.
//!
//! What exists now:
//! - [`ServerProcess`]: the real `ironsift serve` binary as a child process on a loopback port,
//!   with a temporary (or given) data directory, readiness wait, real signals ([`Signal`]),
//!   bounded exit waits, restarts on the same data, stderr capture, and SIGKILL on drop so no
//!   server outlives its test. Built for graceful-shutdown, crash (SIGKILL + restart) and load
//!   tests alike.
//! - [`http`]: a tiny blocking HTTP/1.1 client for readiness polling and quick checks from
//!   synchronous code, with no async runtime.
//!
//! - [`load`]: an HTTP load generator, closed loop (N connections) or open loop (a fixed rate,
//!   latency from the due time so stalls are not hidden), with HDR histograms, a health
//!   probe and a poll of the server's Prometheus metrics (circuit breaker transitions);
//!   `ironsift bench-http` runs it against any deployment.
//!
//! - [`rng`]: a deterministic PRNG (uniform and Zipf draws) for generated corpora.
//!
//! Still to come (issue #7): the deterministic corpus generator and real-data loaders, fault
//! injection (fail points, chaos layers), stress scenarios and reports, and shared proptest
//! strategies.
#![warn(missing_docs, unreachable_pub)]

pub mod corpus;
pub mod http;
pub mod load;
mod process;
pub mod report;
pub mod rng;
pub mod strategies;

pub use http::HttpResponse;
pub use process::{
    DEFAULT_STARTUP_TIMEOUT, LISTENING_PREFIX, ServerBuilder, ServerProcess, Signal, StartError,
};
