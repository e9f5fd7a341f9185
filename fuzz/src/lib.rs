//! What each fuzz target does with one input; the targets in `fuzz_targets/` are one-liners.
//!
//! [`harness`] holds the search-core targets (also replayed by `cargo test` from
//! `fuzz/regressions/`), [`http`] the router target.

pub mod harness;
pub mod http;
