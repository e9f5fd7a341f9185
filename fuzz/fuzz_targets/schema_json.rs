//! JSON read as a schema (created, written, searched, deleted) and as a search request.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ironsift_fuzz::harness::schema_json(data));
