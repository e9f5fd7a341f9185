//! Seeing what the service does: logs, metrics, request ids, health, error reports.
//!
//! This crate knows nothing of HTTP or Tantivy. It owns:
//! - [`logging`]: tracing setup, human or JSON lines, level from `RUST_LOG` or a flag;
//! - [`request_id`]: validation and generation of correlation ids;
//! - [`metrics`]: the process-wide Prometheus recorder and the metric names we export;
//! - [`errors`]: an error reporter counting errors by code and severity;
//! - [`health`]: components with a status, a detail and the time their check took.
#![warn(missing_docs, unreachable_pub)]

pub mod errors;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod request_id;
