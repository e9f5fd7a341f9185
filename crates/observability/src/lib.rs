//! Seeing what the service does.
//!
//! This crate will own tracing setup (human or JSON logs), the metrics registry and Prometheus
//! exporter, request-ID generation and validation, the health model rendered by `/readyz`, and the
//! error reporter. Its content lands with issue #3; the crate is intentionally empty until then.
#![warn(missing_docs, unreachable_pub)]
