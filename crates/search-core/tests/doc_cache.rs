//! Documents rendered once (`IndexConfig::doc_cache`) give exactly the answers the document
//! store gives: for each layout, with and without snippets, for repeated searches, and after
//! documents change (a new version lives in a new segment, so its key is new).

use std::sync::Arc;

use search_core::{
    Catalog, DocCache, IndexConfig, IndexDirOptions, IndexKind, SchemaSpec, SearchIndex,
    SearchRequest,
};
use serde_json::{Value, json};

fn catalogs() -> (tempfile::TempDir, Catalog, Catalog, Arc<DocCache>) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(DocCache::new(1 << 20));
    let small = IndexConfig {
        writer_heap_bytes: 20 << 20,
        writer_threads: Some(1),
        ..IndexConfig::default()
    };
    let cached = Catalog::with_config(
        dir.path(),
        IndexConfig {
            doc_cache: Some(cache.clone()),
            ..small.clone()
        },
    )
    .unwrap();
    let plain = Catalog::with_config(dir.path(), small).unwrap();
    (dir, cached, plain, cache)
}

/// The answer as JSON, the way the server would send it (ids, scores, documents, snippets).
fn answer(index: &SearchIndex, q: &str, highlight: bool) -> Value {
    let mut req = SearchRequest::new(q);
    req.limit = 20;
    req.highlight = highlight;
    serde_json::to_value(index.search(&req).unwrap().hits).unwrap()
}

fn same_answers(cached: &SearchIndex, plain: &SearchIndex, queries: &[&str]) {
    for q in queries {
        for highlight in [false, true] {
            let want = answer(plain, q, highlight);
            assert!(
                want.as_array().is_some_and(|h| !h.is_empty()),
                "{q}: no hits"
            );
            // First search renders and caches, the second serves from the cache.
            for round in 0..2 {
                assert_eq!(
                    answer(cached, q, highlight),
                    want,
                    "{q} (highlight {highlight}, round {round})"
                );
            }
        }
    }
}

#[test]
fn documents_indexes_answer_the_same_from_the_cache() {
    let (_dir, cached, plain, cache) = catalogs();
    let spec: SchemaSpec = serde_json::from_value(json!({"fields": [
        {"name": "title", "type": "text"},
        {"name": "body", "type": "text"},
        {"name": "n", "type": "u64"},
        {"name": "tags", "type": "string"}
    ]}))
    .unwrap();
    cached
        .create("typed", IndexKind::Documents, Some(spec))
        .unwrap();
    for name in ["free", "typed"] {
        let writer = cached.open_or_create(name, IndexKind::Documents).unwrap();
        for i in 0..50u64 {
            let doc = json!({
                "id": format!("d{i}"),
                "title": format!("title {i} \"quoted\" \\ back\nslash é 日本"),
                "body": format!("alpha beta gamma {} text number {i}", if i % 2 == 0 { "even" } else { "odd" }),
                "n": i,
                "tags": ["x", format!("t{}", i % 3)],
            });
            writer.upsert(doc).unwrap();
        }
        writer.commit_and_close().unwrap();
        let (c, p) = (
            cached.open_index(name).unwrap(),
            plain.open_index(name).unwrap(),
        );
        same_answers(&c, &p, &["alpha", "even", "quoted", "日本", "number 7"]);
    }
    assert!(!cache.is_empty());

    // A changed document comes back changed, not as its cached old version.
    let free = cached.open_index("free").unwrap();
    free.upsert(json!({"id": "d4", "body": "alpha replaced"}))
        .unwrap();
    free.commit().unwrap();
    let hits = answer(&free, "replaced", false);
    assert_eq!(hits[0]["doc"]["body"], "alpha replaced");
    let all = answer(&free, "alpha", false);
    let d4: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["id"] == "d4")
        .collect();
    assert_eq!(d4.len(), 1, "{all}");
    assert_eq!(d4[0]["doc"]["body"], "alpha replaced");
}

#[test]
fn files_indexes_answer_the_same_from_the_cache() {
    let (dir, cached, plain, _cache) = catalogs();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..20 {
        std::fs::write(
            src.join(format!("f{i}.rs")),
            format!("fn main() {{\n    // widget {i}\n    println!(\"widget\");\n}}\n"),
        )
        .unwrap();
    }
    let writer = cached.open_or_create("files", IndexKind::Files).unwrap();
    writer
        .index_dir(&src, &IndexDirOptions::default(), &mut |_| {})
        .unwrap();
    writer.commit_and_close().unwrap();
    let (c, p) = (
        cached.open_index("files").unwrap(),
        plain.open_index("files").unwrap(),
    );
    same_answers(&c, &p, &["widget", "println", "main"]);
}
