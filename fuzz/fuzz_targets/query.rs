//! A query string (lossy UTF-8) parsed and executed on a small documents index and a typed one.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ironsift_fuzz::harness::query(data));
