//! Measuring and bounding what the process holds.
//!
//! This crate will own the memory monitor (real RSS and cgroup v2 figures, a budget with warn and
//! critical levels), the registry of RAII-tracked resources used for leak checks, pools built on
//! deadpool, and the background maintenance scheduler with per-job statistics. Its content lands
//! with issue #6; the crate is intentionally empty until then.
#![warn(missing_docs, unreachable_pub)]
