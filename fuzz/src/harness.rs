//! The search-core side of the fuzz targets: what one input does to an index.
//!
//! Shared with the test that replays saved crashes
//! (`crates/search-core/tests/fuzz_regressions.rs` includes this file by path), so a crash
//! found by `cargo xtask fuzz` is replayed by `cargo test` through exactly the same code. It may
//! only use `search_core`, `serde_json` and `tempfile` for that reason.
//!
//! Errors are expected answers to bad input; a panic (or a broken invariant, asserted here) is
//! the bug the fuzzer looks for.

use std::sync::{Mutex, OnceLock};

use search_core::{
    Catalog, Durability, FieldType, IndexConfig, IndexKind, SchemaSpec, SearchIndex, SearchRequest,
    SearchResponse,
};
use serde_json::{Value, json};

/// Small writer settings: one thread, the smallest heap Tantivy accepts, no fsync per write.
pub fn small_config() -> IndexConfig {
    IndexConfig {
        writer_heap_bytes: 20 << 20,
        writer_threads: Some(1),
        durability: Durability::Async,
        ..IndexConfig::default()
    }
}

/// The explicit schema of the typed index: one field of every type and tokenizer.
pub fn typed_schema() -> SchemaSpec {
    serde_json::from_value(json!({"fields": [
        {"name": "title", "type": "text"},
        {"name": "body", "type": "text", "tokenizer": "en_stem"},
        {"name": "raw", "type": "text", "tokenizer": "raw"},
        {"name": "tag", "type": "string", "fast": true},
        {"name": "n", "type": "i64", "fast": true},
        {"name": "u", "type": "u64"},
        {"name": "price", "type": "f64", "fast": true},
        {"name": "ok", "type": "bool"}
    ]}))
    .expect("the typed schema is valid JSON for SchemaSpec")
}

const WORDS: [&str; 16] = [
    "rust",
    "search",
    "index",
    "tantivy",
    "query",
    "phrase",
    "linux",
    "kernel",
    "memory",
    "disk",
    "café",
    "naïve",
    "東京",
    "straße",
    "emoji🙂",
    "zürich",
];

/// Forty documents of every field type; `nested` (schemaless only) adds an object and an array.
fn sample_docs(nested: bool) -> Vec<Value> {
    (0..40u64)
        .map(|i| {
            let w = |k: u64| WORDS[((i * 7 + k * 3) % WORDS.len() as u64) as usize];
            let mut doc = json!({
                "id": i.to_string(),
                "title": format!("{} {} {}", w(0), w(1), w(2)),
                "body": format!("{} {} of the {} and {} {}", w(3), w(4), w(5), w(6), w(7)),
                "raw": w(8),
                "tag": w(9),
                "n": i as i64 - 20,
                "u": i * 1000,
                "price": i as f64 / 3.0,
                "ok": i.is_multiple_of(2),
            });
            if nested {
                doc["nested"] = json!({"k": w(10), "list": [w(11), i]});
            }
            doc
        })
        .collect()
}

/// A temp catalog with a schemaless documents index and a typed index, both filled.
pub struct Fixture {
    _dir: tempfile::TempDir,
    /// The catalog (for targets that create more indexes).
    pub catalog: Catalog,
    /// Schemaless documents index.
    pub docs: SearchIndex,
    /// Explicit-schema index ([`typed_schema`]).
    pub typed: SearchIndex,
}

impl Fixture {
    /// Builds the fixture; `fill` adds the sample documents and commits.
    pub fn new(fill: bool) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let catalog = Catalog::with_config(dir.path(), small_config()).expect("catalog");
        let docs = catalog
            .create("docs", IndexKind::Documents, None)
            .expect("docs index");
        let typed = catalog
            .create("typed", IndexKind::Documents, Some(typed_schema()))
            .expect("typed index");
        if fill {
            for (idx, nested) in [(&docs, true), (&typed, false)] {
                let report = idx.upsert_many(sample_docs(nested)).expect("sample docs");
                assert_eq!(report.failed, 0, "{report:?}");
                idx.commit().expect("commit");
            }
        }
        Fixture {
            _dir: dir,
            catalog,
            docs,
            typed,
        }
    }

    /// The filled, read-only fixture shared by every input of a process.
    pub fn shared() -> &'static Fixture {
        static CELL: OnceLock<Fixture> = OnceLock::new();
        CELL.get_or_init(|| Fixture::new(true))
    }
}

/// Checks what a successful search promises, and that the answer serializes.
fn check_response(req: &SearchRequest, resp: &SearchResponse) {
    assert!(resp.hits.len() <= req.limit, "more hits than the limit");
    if let Some(total) = resp.total {
        assert!(
            total >= (req.offset + resp.hits.len()) as u64 || resp.hits.is_empty(),
            "total {total} below offset {} + {} hits",
            req.offset,
            resp.hits.len()
        );
    }
    for hit in &resp.hits {
        for (field, h) in &hit.highlights {
            for [start, end] in &h.ranges {
                assert!(
                    h.fragment.get(*start..*end).is_some(),
                    "highlight range {start}..{end} of {field:?} is not inside {:?} on char \
                     boundaries",
                    h.fragment
                );
            }
        }
    }
    serde_json::to_vec(resp).expect("a search response serializes");
}

/// Runs `req` on `idx`: any error is fine, a panic or a broken promise is not.
pub fn search(idx: &SearchIndex, req: &SearchRequest) {
    if let Ok(resp) = idx.search(req) {
        check_response(req, &resp);
    }
}

/// `query` target: the bytes, as a (lossy UTF-8) query string, parsed and executed on both
/// indexes of the shared fixture, with highlighting and counting.
pub fn query(bytes: &[u8]) {
    let q = String::from_utf8_lossy(bytes);
    let fx = Fixture::shared();
    let req = SearchRequest::new(q.as_ref()).limit(5).highlight(true);
    search(&fx.docs, &req);
    search(&fx.typed, &req);
}

/// `ndjson` target: the bytes ingested as JSON lines into a schemaless and a typed index, read
/// back, and committed every 16th input (a commit costs more than the rest of an input, and
/// documents from several inputs in one commit make mixed segments). The indexes are replaced
/// every few thousand inputs so a long run does not fill the disk.
pub fn ndjson(bytes: &[u8]) {
    ndjson_with(bytes, 16);
}

/// [`ndjson`] committing after every input: how a saved crash is replayed alone.
pub fn ndjson_committed(bytes: &[u8]) {
    ndjson_with(bytes, 1);
}

fn ndjson_with(bytes: &[u8], commit_every: u32) {
    static STATE: Mutex<Option<(Fixture, u32)>> = Mutex::new(None);
    let mut guard = STATE.lock().unwrap_or_else(|p| p.into_inner());
    if guard.as_ref().is_none_or(|(_, n)| *n >= 4_000) {
        *guard = None; // drop (and delete) the old one first
        *guard = Some((Fixture::new(false), 0));
    }
    let (fx, n) = guard.as_mut().expect("just set");
    *n += 1;
    let commit = (*n).is_multiple_of(commit_every);
    for idx in [&fx.docs, &fx.typed] {
        if let Ok(report) = idx.ingest_ndjson(bytes) {
            assert_eq!(
                report.failed as usize,
                report.errors.len(),
                "every failed line is reported"
            );
        }
        if commit {
            let _ = idx.commit();
            search(idx, &SearchRequest::new("").limit(3).highlight(true));
        }
        if let Ok(stats) = idx.stats() {
            serde_json::to_vec(&stats).expect("stats serialize");
        }
    }
}

/// `wal_decode` target: the bytes as a write-ahead log segment.
pub fn wal_decode(bytes: &[u8]) {
    let (_records, used) = search_core::decode_wal_bytes(bytes);
    assert!(used <= bytes.len(), "decoded past the end: {used}");
}

/// A value of the declared type, for a document that fits a fuzzed schema.
fn value_for(t: FieldType, i: usize) -> Value {
    match t {
        FieldType::Text => json!(format!(
            "{} {}",
            WORDS[i % WORDS.len()],
            WORDS[(i + 5) % 16]
        )),
        FieldType::String => json!(WORDS[i % WORDS.len()]),
        FieldType::I64 => json!(-(i as i64) * 7),
        FieldType::U64 => json!(i * 11),
        FieldType::F64 => json!(i as f64 / 7.0),
        FieldType::Bool => json!(i.is_multiple_of(2)),
    }
}

/// `schema_json` target: the bytes as JSON, read as a [`SchemaSpec`] (created as an index on a
/// temp catalog, given a fitting document, searched by field, then deleted) and as a
/// [`SearchRequest`] (run on the shared fixture).
pub fn schema_json(bytes: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<SearchRequest>(bytes) {
        let fx = Fixture::shared();
        search(&fx.docs, &req);
        search(&fx.typed, &req);
    }
    let Ok(spec) = serde_json::from_slice::<SchemaSpec>(bytes) else {
        return;
    };
    static CATALOG: OnceLock<(tempfile::TempDir, Catalog)> = OnceLock::new();
    let (_, catalog) = CATALOG.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let catalog = Catalog::with_config(dir.path(), small_config()).expect("catalog");
        (dir, catalog)
    });
    let created = catalog.create("fuzzed", IndexKind::Documents, Some(spec.clone()));
    let Ok(idx) = created else {
        return;
    };
    let mut doc = serde_json::Map::new();
    doc.insert("id".into(), json!("x"));
    for (i, f) in spec.fields.iter().enumerate() {
        doc.insert(f.name.clone(), value_for(f.field_type, i));
    }
    let _ = idx.upsert(Value::Object(doc));
    let _ = idx.commit();
    let _ = idx.get("x");
    for (i, f) in spec.fields.iter().enumerate() {
        let q = match f.field_type {
            FieldType::Text | FieldType::String => format!("{}:{}", f.name, WORDS[i % 16]),
            _ => format!("{}:[* TO *]", f.name),
        };
        search(&idx, &SearchRequest::new(q).limit(3).highlight(true));
    }
    idx.close_writer();
    drop(idx);
    catalog
        .delete("fuzzed")
        .expect("an index just created can be deleted");
}
