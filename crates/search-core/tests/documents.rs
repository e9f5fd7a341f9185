//! JSON documents: upsert by id, get, delete, schemas, NDJSON with bad lines, writer locking.

use search_core::{Catalog, CoreError, IndexKind, SchemaSpec, SearchIndex, SearchRequest};
use search_error::{Classify, ErrorCode};
use serde_json::json;

fn docs_index() -> (tempfile::TempDir, SearchIndex) {
    let data = tempfile::tempdir().unwrap();
    let idx = Catalog::open(data.path())
        .unwrap()
        .create("docs", IndexKind::Documents, None)
        .unwrap();
    (data, idx)
}

fn ids(idx: &SearchIndex, q: &str) -> Vec<String> {
    let mut v: Vec<String> = idx
        .search(&SearchRequest::new(q).limit(100))
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.id)
        .collect();
    v.sort();
    v
}

#[test]
fn upsert_replaces_and_delete_removes() {
    let (_d, idx) = docs_index();
    idx.upsert(json!({"id": "a", "title": "first draft", "n": 1}))
        .unwrap();
    idx.upsert(json!({"id": 2, "title": "other"})).unwrap();
    idx.commit().unwrap();
    assert_eq!(ids(&idx, "draft"), ["a"]);
    assert_eq!(idx.get("2").unwrap().unwrap()["title"], "other");

    // Same id again: replaced, not duplicated — also within one uncommitted batch.
    idx.upsert(json!({"id": "a", "title": "second version", "n": 2}))
        .unwrap();
    idx.upsert(json!({"id": "a", "title": "final version", "n": 3}))
        .unwrap();
    idx.commit().unwrap();
    assert_eq!(ids(&idx, "draft"), Vec::<String>::new());
    assert_eq!(ids(&idx, "version"), ["a"]);
    assert_eq!(idx.get("a").unwrap().unwrap()["n"], 3);
    assert_eq!(idx.stats().unwrap().docs, 2);

    assert!(idx.delete("a").unwrap());
    assert!(!idx.delete("missing").unwrap());
    idx.commit().unwrap();
    assert!(idx.get("a").unwrap().is_none());
    assert_eq!(ids(&idx, ""), ["2"]);

    // Generated ids are unique.
    let x = idx.upsert(json!({"title": "anon"})).unwrap();
    let y = idx.upsert(json!({"title": "anon"})).unwrap();
    assert_ne!(x, y);
    idx.commit().unwrap();
    assert_eq!(ids(&idx, "anon").len(), 2);
}

#[test]
fn schemaless_fields_are_searchable_by_name_and_path() {
    let (_d, idx) = docs_index();
    idx.upsert(json!({"id": "1", "title": "Rust in action", "meta": {"lang": "english", "pages": 456}, "tags": ["systems", "memory"]})).unwrap();
    idx.upsert(json!({"id": "2", "title": "Python tricks", "meta": {"lang": "english", "pages": 300}, "tags": ["scripting"]})).unwrap();
    idx.commit().unwrap();
    assert_eq!(ids(&idx, "rust"), ["1"]);
    assert_eq!(ids(&idx, "title:python"), ["2"]);
    assert_eq!(ids(&idx, "meta.lang:english"), ["1", "2"]);
    assert_eq!(ids(&idx, "meta.pages:456"), ["1"]);
    assert_eq!(ids(&idx, "tags:memory"), ["1"]);
    assert_eq!(ids(&idx, "english -rust"), ["2"]);
    assert_eq!(ids(&idx, "\"rust in action\""), ["1"]);
    assert_eq!(ids(&idx, "pyth*"), ["2"]);
    assert_eq!(ids(&idx, "+english +tricks"), ["2"]);

    let hit = &idx
        .search(&SearchRequest::new("memory rust").highlight(true))
        .unwrap()
        .hits[0];
    assert_eq!(hit.doc["meta"]["pages"], 456);
    let hl = &hit.highlights["title"];
    let [s, e] = hl.ranges[0];
    assert_eq!(&hl.fragment[s..e], "Rust");
    assert!(hit.highlights.contains_key("tags"), "{:?}", hit.highlights);
}

#[test]
fn explicit_schema_types_are_enforced() {
    let data = tempfile::tempdir().unwrap();
    let spec: SchemaSpec = serde_json::from_value(json!({"fields": [
        {"name": "title", "type": "text"},
        {"name": "year", "type": "u64", "fast": true},
        {"name": "tag", "type": "string"},
        {"name": "price", "type": "f64"},
        {"name": "used", "type": "bool"}
    ]}))
    .unwrap();
    let idx = Catalog::open(data.path())
        .unwrap()
        .create("typed", IndexKind::Documents, Some(spec))
        .unwrap();
    idx.upsert(json!({"id": "a", "title": "Dune", "year": 1965, "tag": "Sci-Fi", "price": 9.5, "used": true})).unwrap();
    idx.upsert(json!({"id": "b", "title": "Emma", "year": 1815, "tag": ["classic", "romance"]}))
        .unwrap();
    idx.commit().unwrap();
    assert_eq!(ids(&idx, "dune"), ["a"]);
    assert_eq!(ids(&idx, "tag:Sci-Fi"), ["a"]);
    assert_eq!(ids(&idx, "tag:romance"), ["b"]);
    assert_eq!(ids(&idx, "year:[1900 TO 2000]"), ["a"]);
    assert_eq!(ids(&idx, "used:true"), ["a"]);
    let got = idx.get("b").unwrap().unwrap();
    assert_eq!(got["tag"], json!(["classic", "romance"]));
    assert_eq!(got["year"], 1815);

    for (doc, needle) in [
        (
            json!({"id": "c", "year": "old"}),
            "\"year\" expects an integer",
        ),
        (
            json!({"id": "c", "year": -3}),
            "\"year\" expects a non-negative integer",
        ),
        (
            json!({"id": "c", "colour": "red"}),
            "\"colour\" is not in the index schema",
        ),
        (json!({"id": "c", "title": 5}), "\"title\" expects a string"),
        (
            json!({"id": "c", "used": "yes"}),
            "\"used\" expects a boolean",
        ),
        (
            json!({"id": {"x": 1}}),
            "\"id\" must be a string or an integer",
        ),
        (json!({"id": ""}), "1 to 512 bytes"),
        (
            json!(["not", "an", "object"]),
            "expected a JSON object, found an array",
        ),
    ] {
        let e = idx.upsert(doc).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidInput);
        assert!(e.to_string().contains(needle), "{e} lacks {needle}");
    }
    // Unknown fields in a query are an InvalidInput naming the field.
    let e = idx.search(&SearchRequest::new("colour:red")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidInput);
    assert!(e.to_string().contains("colour"), "{e}");
}

#[test]
fn ndjson_bad_lines_are_reported_and_good_lines_kept() {
    let (_d, idx) = docs_index();
    let input = concat!(
        "{\"id\":\"1\",\"text\":\"one\"}\n",
        "\n",
        "{\"id\":\"2\",\"text\":\"two\"\n",
        "[1,2,3]\n",
        "{\"id\":\"3\",\"text\":\"three\"}\r\n",
        "\u{feff}garbage\n",
        "{\"id\":true}\n",
        "{\"id\":\"4\",\"text\":\"caf\u{e9}\"}"
    );
    let r = idx.ingest_ndjson(input.as_bytes()).unwrap();
    idx.commit().unwrap();
    assert_eq!(r.indexed, 3);
    assert_eq!(r.failed, 4);
    let lines: Vec<u64> = r.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [3, 4, 6, 7]);
    assert!(
        r.errors[0].reason.contains("malformed JSON"),
        "{:?}",
        r.errors[0]
    );
    assert_eq!(ids(&idx, ""), ["1", "3", "4"]);
    assert_eq!(ids(&idx, "café"), ["4"]);
}

/// The in-memory form (request bodies) reads lines exactly like the streaming one: same
/// counts, same line numbers, same documents; a line that is not UTF-8 is refused (not
/// silently altered), and a batch larger than one logged part lands whole.
#[test]
fn ndjson_from_memory_matches_ndjson_from_a_reader() {
    let mut input = String::new();
    for i in 0..2_500 {
        match i % 500 {
            7 => input.push_str("{\"id\":\"broken\"\n"),
            8 => input.push('\n'),
            9 => input.push_str("   \t\r\n"),
            _ => input.push_str(&format!(
                "  {{\"id\":\"d{i}\",\"text\":\"word{} common caf\u{e9}\"}}\r\n",
                i % 10
            )),
        }
    }
    let mut bytes = input.into_bytes();
    // One line with a byte that is not UTF-8 inside a string.
    bytes.extend_from_slice(b"{\"id\":\"latin1\",\"text\":\"caf\xe9\"}\n");
    bytes.extend_from_slice(b"{\"id\":\"last\",\"text\":\"no newline at the end\"}");

    let (_d1, streamed) = docs_index();
    let (_d2, in_memory) = docs_index();
    let (_d3, in_pieces) = docs_index();
    let a = streamed.ingest_ndjson(&bytes[..]).unwrap();
    let b = in_memory.ingest_ndjson_bytes(&bytes).unwrap();
    // Pieces of uneven sizes, many lines straddling two or more of them.
    let mut pieces = Vec::new();
    let mut rest = &bytes[..];
    let mut k = 0;
    while !rest.is_empty() {
        let n = [1, 7, 300, 4096, 13][k % 5].min(rest.len());
        pieces.push(&rest[..n]);
        rest = &rest[n..];
        k += 1;
    }
    let c = in_pieces.ingest_ndjson_chunks(pieces).unwrap();
    assert_eq!((c.indexed, c.failed), (a.indexed, a.failed));
    assert_eq!(a.indexed, 2_500 - 15 + 1);
    assert_eq!(a.failed, 5 + 1);
    let reasons = |r: &search_core::IngestReport| -> Vec<(u64, String)> {
        r.errors
            .iter()
            .map(|e| (e.line, e.reason.clone()))
            .collect()
    };
    assert_eq!(reasons(&a), reasons(&b));
    assert_eq!(reasons(&a), reasons(&c));
    assert_eq!((a.indexed, a.failed), (b.indexed, b.failed));
    assert_eq!(
        a.errors.last().unwrap().line,
        2_501,
        "{:?}",
        a.errors.last()
    );
    for idx in [&streamed, &in_memory, &in_pieces] {
        idx.commit().unwrap();
        assert_eq!(idx.stats().unwrap().docs, 2_500 - 15 + 1);
        let word3 = idx
            .search(&SearchRequest::new("word3").count(true))
            .unwrap()
            .total;
        assert_eq!(word3, Some(250));
        assert!(idx.get("latin1").unwrap().is_none());
        assert_eq!(
            idx.get("d1").unwrap().unwrap()["text"],
            "word1 common caf\u{e9}"
        );
        assert_eq!(
            idx.get("last").unwrap().unwrap()["text"],
            "no newline at the end"
        );
    }
}

#[test]
fn a_second_writer_gets_a_lock_error_naming_the_lock() {
    let data = tempfile::tempdir().unwrap();
    let cat = Catalog::open(data.path()).unwrap();
    let first = cat.create("locked", IndexKind::Documents, None).unwrap();
    first.upsert(json!({"id": "1"})).unwrap();
    let second = cat.open_index("locked").unwrap();
    let started = std::time::Instant::now();
    let e = second.upsert(json!({"id": "2"})).unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "lock wait hung"
    );
    assert!(matches!(e, CoreError::WriterLocked { .. }), "{e:?}");
    assert_eq!(e.code(), ErrorCode::Conflict);
    assert!(e.to_string().contains(".tantivy-writer.lock"), "{e}");
    // Readers are never blocked by the writer.
    assert_eq!(
        second.search(&SearchRequest::new("")).unwrap().total,
        Some(0)
    );
    first.commit().unwrap();
    first.close_writer();
    second.upsert(json!({"id": "2"})).unwrap();
    second.commit().unwrap();
    assert_eq!(second.stats().unwrap().docs, 2);
}

#[test]
fn stats_count_docs_segments_and_bytes() {
    let (_d, idx) = docs_index();
    let empty = idx.stats().unwrap();
    assert_eq!((empty.docs, empty.segments), (0, 0));
    for i in 0..50 {
        idx.upsert(json!({"id": i, "body": format!("document number {i}")}))
            .unwrap();
    }
    idx.commit().unwrap();
    idx.delete("7").unwrap();
    idx.commit().unwrap();
    let s = idx.stats().unwrap();
    assert_eq!(s.docs, 49);
    assert!(s.segments >= 1);
    assert!(s.bytes_on_disk > empty.bytes_on_disk);
}

#[test]
fn hits_serialize_straight_from_storage_like_their_json_form() {
    let data = tempfile::tempdir().unwrap();
    let cat = Catalog::open(data.path()).unwrap();
    let spec: SchemaSpec = serde_json::from_value(json!({"fields": [
        {"name": "title", "type": "text"}, {"name": "tag", "type": "string"},
        {"name": "n", "type": "i64"}, {"name": "x", "type": "f64"}, {"name": "ok", "type": "bool"}
    ]}))
    .unwrap();
    let typed = cat
        .create("typed", IndexKind::Documents, Some(spec))
        .unwrap();
    typed
        .upsert(json!({"id": "1", "title": "stream me", "tag": ["a", "b"], "n": -3, "x": 1.5, "ok": true}))
        .unwrap();
    typed.commit().unwrap();
    let free = cat.create("free", IndexKind::Documents, None).unwrap();
    free.upsert(json!({"id": "1", "title": "stream me", "nested": {"a": [1, "two", null, {"b": false}]}, "u": 18446744073709551615u64}))
        .unwrap();
    free.commit().unwrap();
    for idx in [&typed, &free] {
        let hit = idx
            .search(&SearchRequest::new("stream"))
            .unwrap()
            .hits
            .remove(0);
        let streamed = serde_json::to_value(&hit.doc).unwrap(); // before any map is built
        assert_eq!(
            streamed,
            serde_json::Value::Object(hit.doc.as_json().clone())
        );
        assert_eq!(hit.doc["title"], "stream me");
    }
    let hit = typed
        .search(&SearchRequest::new("stream"))
        .unwrap()
        .hits
        .remove(0);
    assert_eq!(
        serde_json::to_value(&hit.doc).unwrap()["tag"],
        json!(["a", "b"])
    );
    let hit = free
        .search(&SearchRequest::new("stream"))
        .unwrap()
        .hits
        .remove(0);
    assert_eq!(
        serde_json::to_value(&hit.doc).unwrap()["nested"]["a"][3]["b"],
        false
    );
}

/// A body of many bad lines is answered with the count of all of them but only the first
/// `MAX_LINE_ERRORS` listed: the answer stays small whatever the input.
#[test]
fn the_list_of_rejected_lines_is_capped() {
    let (_data, idx) = docs_index();
    let mut body = "x\n".repeat(50_000);
    body.push_str("{\"id\":\"ok\"}\n");
    let report = idx.ingest_ndjson(body.as_bytes()).unwrap();
    assert_eq!(report.failed, 50_000);
    assert_eq!(report.indexed, 1);
    assert_eq!(report.errors.len(), search_core::MAX_LINE_ERRORS);
    assert_eq!(report.errors[0].line, 1);
}

/// A UTF-8 byte-order mark at the start of a JSON-lines file is not a malformed first line.
#[test]
fn a_byte_order_mark_before_the_first_line_is_ignored() {
    let (_data, idx) = docs_index();
    let body = b"\xEF\xBB\xBF{\"id\":\"a\",\"t\":\"x\"}\n{\"id\":\"b\"}\n";
    let report = idx.ingest_ndjson(&body[..]).unwrap();
    assert_eq!((report.indexed, report.failed), (2, 0), "{report:?}");
    // Only at the very start: elsewhere it is not JSON.
    let report = idx
        .ingest_ndjson(&b"{\"id\":\"c\"}\n\xEF\xBB\xBF{\"id\":\"d\"}\n"[..])
        .unwrap();
    assert_eq!((report.indexed, report.failed), (1, 1), "{report:?}");
}
