//! Bytes decoded as a write-ahead log segment.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ironsift_fuzz::harness::wal_decode(data));
