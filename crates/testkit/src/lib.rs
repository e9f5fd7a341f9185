//! Tools for testing ironsift the hard way.
//!
//! This crate will own the real-process harness (`ServerProcess`), the deterministic corpus
//! generator and real-data loaders, fault injection (fail points, chaos layers), the load
//! generator and stress scenarios, and shared proptest strategies. Its content lands with issue
//! #7; the crate is intentionally empty until then.
#![warn(missing_docs, unreachable_pub)]
