//! Query handling: hostile and odd inputs never panic, limits give `InvalidInput`, and results
//! match plain Tantivy's for the same schema, tokenizer and documents.

use proptest::prelude::*;
use search_core::tantivy::{self, collector::TopDocs, query::QueryParser, schema::Value as _};
use search_core::{Catalog, IndexConfig, IndexKind, SchemaSpec, SearchIndex, SearchRequest};
use search_error::{Classify, ErrorCode};
use serde_json::json;
use testkit::rng::Rng;

fn small_index() -> (tempfile::TempDir, SearchIndex) {
    let data = tempfile::tempdir().unwrap();
    let idx = Catalog::open(data.path())
        .unwrap()
        .create("q", IndexKind::Documents, None)
        .unwrap();
    for (i, text) in [
        "the quick brown fox",
        "jumps over the lazy dog",
        "rust search engine on tantivy",
        "crash safe write ahead log",
        "東京 検索 🚀 emoji",
    ]
    .iter()
    .enumerate()
    {
        idx.upsert(json!({"id": i.to_string(), "text": text, "n": i}))
            .unwrap();
    }
    idx.commit().unwrap();
    (data, idx)
}

/// Results or a client error; anything else (panic, internal error) fails the test.
fn outcome(idx: &SearchIndex, q: &str) -> Result<usize, String> {
    match idx.search(&SearchRequest::new(q).highlight(true)) {
        Ok(r) => Ok(r.hits.len()),
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::InvalidInput, "query {q:?} gave {e}");
            Err(e.to_string())
        }
    }
}

#[test]
fn edge_cases_give_results_or_invalid_input() {
    let (_d, idx) = small_index();
    assert_eq!(outcome(&idx, ""), Ok(5), "empty matches all");
    assert_eq!(outcome(&idx, "   "), Ok(5));
    assert_eq!(outcome(&idx, "-the"), Ok(3), "only a negative term");
    assert_eq!(outcome(&idx, "-the -rust"), Ok(2));
    assert_eq!(outcome(&idx, "NOT the"), Ok(3));
    for q in [
        "\"unbalanced",
        "unbalanced\"",
        "(open",
        "close)",
        "((a)",
        "a))",
        "\"",
        "(",
        ")",
        "\\",
        "*",
        "**",
        ":",
        "text:",
        ":x",
        "a:[1 TO",
        "[a TO b]",
        "{",
        "}",
        "''",
        "\"\"",
        "a^",
        "a^1e309",
        "a~2",
        "+",
        "-",
        "+-+-a",
        "AND",
        "OR OR",
        "a AND",
        "NOT",
        "n:abc",
        "n:>3",
        "n:[0 TO 2]",
        "text:\"quick fox\"~2",
        "\"quick br\"*",
        "qu*",
        "text:qu*",
        "nope*",
        "\u{0}",
        "\u{feff}",
        "🚀",
        "東京",
        "a\tb\nc",
        "title:(a b)",
        "\"\"*",
        "*:*",
        "IN [a b]",
        "text: IN [quick lazy]",
        "_id:1",
        "_source:x",
        "exists:text",
    ] {
        let _ = outcome(&idx, q);
    }
    assert_eq!(outcome(&idx, "qu*"), Ok(1));
    assert_eq!(outcome(&idx, "text:qu*"), Ok(1));
    assert_eq!(outcome(&idx, "QUICK"), Ok(1));
}

#[test]
fn limits_are_enforced_with_clear_errors() {
    let (_d, idx) = small_index();
    // 10,000 terms: over the clause limit.
    let many: String = (0..10_000).map(|i| format!("t{i} ")).collect();
    let e = outcome(&idx, &many).unwrap_err();
    assert!(e.contains("number of clauses is 10000"), "{e}");
    // 1 MB: over the length limit, refused before parsing.
    let huge = "a ".repeat(512 * 1024);
    let e = outcome(&idx, &huge).unwrap_err();
    assert!(e.contains("length in bytes"), "{e}");
    // Deep nesting that would overflow the stack of a recursive parser.
    let deep = format!("{}a{}", "(".repeat(20_000), ")".repeat(20_000));
    let e = outcome(&idx, &deep).unwrap_err();
    assert!(e.contains("nesting depth"), "{e}");
    // Long chains of prefix operators stay within bounds too.
    let _ = outcome(&idx, &"NOT ".repeat(10_000));
    let _ = outcome(&idx, &format!("{}a", "-".repeat(60_000)));
    let _ = outcome(&idx, &format!("{}a", "+".repeat(60_000)));
    let _ = outcome(&idx, &"\"".repeat(60_000));
    // Syntax errors say where.
    let e = outcome(&idx, "fox \"open").unwrap_err();
    assert!(e.contains("at byte"), "{e}");
    // Paging limits.
    let e = idx
        .search(&SearchRequest::new("fox").limit(1001))
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidInput);
    assert!(e.to_string().contains("limit"), "{e}");
    assert_eq!(
        idx.search(&SearchRequest::new("").limit(0)).unwrap().total,
        Some(5)
    );
    assert_eq!(
        idx.search(&SearchRequest::new("").offset(3))
            .unwrap()
            .hits
            .len(),
        2
    );
}

fn query_like() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        "[a-z]{1,6}",
        Just("the".to_string()),
        Just("fox".to_string()),
        Just("AND".to_string()),
        Just("OR".to_string()),
        Just("NOT".to_string()),
        "[-+]?[a-z]{1,4}\\*?",
        "[a-z_]{1,5}:[a-z0-9]{0,4}",
        "\"[a-z ]{0,12}\"?\\*?",
        "[\\[\\]{}()^~:*\"'\\\\!<>=]",
        "[0-9]{1,3}",
        "n:[<>]=?[0-9]{1,3}",
        "\\PC{1,4}",
    ];
    prop::collection::vec(token, 0..12).prop_map(|v| v.join(" "))
}

proptest! {
    // PROPTEST_CASES raises the count for longer local runs.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_strings_never_panic(q in any::<String>()) {
        let (_d, idx) = small_index_cached();
        let _ = outcome(idx, &q);
    }

    #[test]
    fn query_shaped_strings_never_panic(q in query_like()) {
        let (_d, idx) = small_index_cached();
        let _ = outcome(idx, &q);
    }
}

fn small_index_cached() -> (&'static (), &'static SearchIndex) {
    use std::sync::OnceLock;
    static CELL: OnceLock<(tempfile::TempDir, SearchIndex)> = OnceLock::new();
    let (_, idx) = CELL.get_or_init(small_index);
    (&(), idx)
}

fn web_queries() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../benches/data/queries-web-50k.txt"
    );
    let text = std::fs::read_to_string(path).expect("web queries file is committed");
    text.lines()
        .map(|l| l.split_once(':').map_or(l, |(_, q)| q).trim().to_string())
        .filter(|q| !q.is_empty())
        .collect()
}

/// For the same schema, tokenizer and documents, the top-10 ids equal plain Tantivy's.
#[test]
fn top10_matches_plain_tantivy_on_web_queries() {
    let queries: Vec<String> = web_queries().into_iter().take(2_000).collect();
    let mut vocab: Vec<String> = queries
        .iter()
        .flat_map(|q| q.split_whitespace().map(str::to_lowercase))
        .collect();
    vocab.sort();
    vocab.dedup();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // Shuffle the vocabulary deterministically so Zipf ranks are not alphabetical.
    for i in (1..vocab.len()).rev() {
        vocab.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let docs: Vec<(String, String, String)> = (0..3_000)
        .map(|i| {
            let mut words = |n| {
                (0..n)
                    .map(|_| vocab[rng.zipf(vocab.len())].as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let title_len = 2 + (i % 7);
            let text_len = 20 + (i * 37 % 300);
            (format!("doc{i}"), words(title_len), words(text_len))
        })
        .collect();

    // ironsift, explicit schema.
    let data = tempfile::tempdir().unwrap();
    let config = IndexConfig {
        writer_threads: Some(1),
        writer_heap_bytes: 64 << 20,
        ..IndexConfig::default()
    };
    let spec: SchemaSpec = serde_json::from_value(json!({"fields": [
        {"name": "title", "type": "text"}, {"name": "text", "type": "text"}
    ]}))
    .unwrap();
    let ours = Catalog::with_config(data.path(), config)
        .unwrap()
        .create("c", IndexKind::Documents, Some(spec))
        .unwrap();
    for (id, title, text) in &docs {
        ours.upsert(json!({"id": id, "title": title, "text": text}))
            .unwrap();
    }
    ours.commit().unwrap();

    // Plain Tantivy, same fields and tokenizer, same writer shape and insertion order.
    let mut sb = tantivy::schema::Schema::builder();
    let f_id = sb.add_text_field("_id", tantivy::schema::STRING | tantivy::schema::STORED);
    let f_title = sb.add_text_field("title", tantivy::schema::TEXT | tantivy::schema::STORED);
    let f_text = sb.add_text_field("text", tantivy::schema::TEXT | tantivy::schema::STORED);
    let plain = tantivy::Index::create_in_ram(sb.build());
    let mut w: tantivy::IndexWriter = plain.writer_with_num_threads(1, 64 << 20).unwrap();
    for (id, title, text) in &docs {
        let mut d = tantivy::TantivyDocument::default();
        d.add_text(f_id, id);
        d.add_text(f_title, title);
        d.add_text(f_text, text);
        w.add_document(d).unwrap();
    }
    w.commit().unwrap();
    let searcher = plain.reader().unwrap().searcher();
    let parser = QueryParser::for_index(&plain, vec![f_title, f_text]);

    let (mut compared, mut with_hits, mut prefix_skipped) = (0, 0, 0);
    for q in &queries {
        if q.contains('*') {
            // ironsift turns `word*` into a term-prefix query; plain Tantivy has none.
            prefix_skipped += 1;
            continue;
        }
        let theirs = match parser.parse_query(q) {
            Ok(query) => searcher
                .search(&query, &TopDocs::with_limit(10).order_by_score())
                .unwrap()
                .into_iter()
                .map(|(_, a)| {
                    let d: tantivy::TantivyDocument = searcher.doc(a).unwrap();
                    d.get_first(f_id).unwrap().as_str().unwrap().to_string()
                })
                .collect::<Vec<_>>(),
            Err(_) => {
                let e = ours.search(&SearchRequest::new(q)).unwrap_err();
                assert_eq!(e.code(), ErrorCode::InvalidInput, "{q}");
                continue;
            }
        };
        let mine: Vec<String> = ours
            .search(&SearchRequest::new(q))
            .unwrap()
            .hits
            .into_iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(mine, theirs, "query {q:?}");
        compared += 1;
        with_hits += usize::from(!theirs.is_empty());
    }
    eprintln!(
        "compared {compared} queries ({with_hits} with hits), {prefix_skipped} prefix queries skipped"
    );
    assert!(
        compared > 1_900 && with_hits > 1_000,
        "{compared} / {with_hits}"
    );
}
