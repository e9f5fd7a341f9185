//! Replays the crashes `cargo xtask fuzz` found: every file under
//! `fuzz/regressions/<target>/` goes through the fuzz target's own code once more.
//!
//! The targets' code is included from `fuzz/src/harness.rs` (the fuzz crate is a workspace of
//! its own, built with nightly instrumentation), so a plain `cargo test` replays exactly what
//! the fuzzer ran. The router target (`http_router`) needs the `server` crate and is replayed by
//! running its fuzz binary on the file instead.

use std::path::{Path, PathBuf};
use std::{fs, panic};

#[path = "../../../fuzz/src/harness.rs"]
#[allow(dead_code)]
mod harness;

fn regressions(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target)
}

/// Runs every saved input of `target`; fails naming each one that still panics.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = regressions(target);
    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => return, // nothing saved for this target
    };
    files.sort();
    let mut failures = Vec::new();
    for file in &files {
        let bytes =
            fs::read(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        if let Err(payload) = panic::catch_unwind(|| run(&bytes)) {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            failures.push(format!("{} ({bytes:?}): {msg}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} saved `{target}` fuzz inputs still fail:\n  {}",
        failures.len(),
        files.len(),
        failures.join("\n  ")
    );
}

#[test]
fn query() {
    replay("query", harness::query);
}

#[test]
fn ndjson() {
    replay("ndjson", harness::ndjson_committed);
}

#[test]
fn wal_decode() {
    replay("wal_decode", harness::wal_decode);
}

#[test]
fn schema_json() {
    replay("schema_json", harness::schema_json);
}
