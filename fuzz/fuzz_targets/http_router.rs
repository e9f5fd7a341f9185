//! One HTTP request (`METHOD TARGET`, header lines, blank line, body) through `server::app`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ironsift_fuzz::http::http_router(data));
