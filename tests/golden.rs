//! Golden regression suite: a committed corpus and queries with their expected top hits.
//!
//! `tests/golden/corpus.jsonl` (200 documents) is indexed into a temp documents index, every
//! query of `tests/golden/queries.txt` runs, and the top-5 ids and the total are compared with
//! `tests/golden/expected.json` (scores are floats and not compared; errors are compared by
//! code). A change in tokenization, parsing or ranking shows up here as a readable diff; when
//! it is intended, `cargo xtask bless` (this test with `IRONSIFT_BLESS=1`) rewrites the file.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use ironsift::{Classify, Engine, IndexKind, SearchIndex, SearchRequest};
use serde_json::{Value, json};

const TOP: usize = 5;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn queries() -> Vec<String> {
    let text = fs::read_to_string(golden_dir().join("queries.txt")).expect("queries.txt");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// The corpus in one segment, written by one thread: ties rank the same on every run.
fn build_index(dir: &std::path::Path) -> SearchIndex {
    let engine = Engine::builder()
        .data_dir(dir)
        .writer_threads(Some(1))
        .writer_heap_bytes(50 << 20)
        .build()
        .expect("engine");
    let idx = engine
        .open_or_create("golden", IndexKind::Documents)
        .expect("index");
    let corpus = fs::read(golden_dir().join("corpus.jsonl")).expect("corpus.jsonl");
    let report = idx.ingest_ndjson(&corpus[..]).expect("ingest");
    assert_eq!(
        report.failed, 0,
        "corpus lines rejected: {:?}",
        report.errors
    );
    assert_eq!(report.indexed, 200);
    idx.commit().expect("commit");
    idx
}

/// What the golden file records for one query.
fn outcome(idx: &SearchIndex, query: &str) -> Value {
    match idx.search(&SearchRequest::new(query).limit(TOP)) {
        Ok(resp) => json!({
            "total": resp.total,
            "top": resp.hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        }),
        Err(e) => json!({"error": e.code().as_str()}),
    }
}

#[test]
fn golden_queries() {
    let dir = tempfile::tempdir().unwrap();
    let idx = build_index(dir.path());
    let got: BTreeMap<String, Value> = queries()
        .into_iter()
        .map(|q| {
            let o = outcome(&idx, &q);
            (q, o)
        })
        .collect();
    let path = golden_dir().join("expected.json");

    if std::env::var_os("IRONSIFT_BLESS").is_some() {
        let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
        fs::write(&path, text).expect("write expected.json");
        eprintln!("blessed {} queries into {}", got.len(), path.display());
        return;
    }

    let expected: BTreeMap<String, Value> = serde_json::from_str(
        &fs::read_to_string(&path).expect("expected.json (run `cargo xtask bless` to create it)"),
    )
    .expect("expected.json is a JSON object of query -> outcome");
    let mut diffs = Vec::new();
    for (q, want) in &expected {
        match got.get(q) {
            None => diffs.push(format!(
                "  {q:?}: expected {want}, but it is no longer in queries.txt"
            )),
            Some(have) if have != want => diffs.push(format!(
                "  {q:?}:\n      expected {want}\n      got      {have}"
            )),
            Some(_) => {}
        }
    }
    for (q, have) in &got {
        if !expected.contains_key(q) {
            diffs.push(format!(
                "  {q:?}: new query, got {have}, not in expected.json"
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} golden queries changed:\n{}\n\nrun `cargo xtask bless` if this change is intended",
        diffs.len(),
        got.len(),
        diffs.join("\n")
    );
}
