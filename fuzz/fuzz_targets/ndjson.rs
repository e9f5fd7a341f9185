//! JSON lines ingested into a schemaless and an explicit-schema index, committed, read back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ironsift_fuzz::harness::ndjson(data));
