//! The OpenAPI 3 description of the API, served at `/v1/openapi.json`.
//!
//! Built from one table of operations; a test requests every operation listed here and checks
//! the router knows it, so the description cannot silently drift from the routes.

use serde_json::{Value, json};

/// `(method, path, summary, success status)` of every operation.
pub(crate) const OPERATIONS: &[(&str, &str, &str, u16)] = &[
    ("get", "/livez", "Liveness: the process answers.", 200),
    (
        "get",
        "/readyz",
        "Readiness: every check passes and the server is not shutting down (else 503 with the checks).",
        200,
    ),
    ("get", "/metrics", "Prometheus metrics (text format).", 200),
    ("get", "/v1/openapi.json", "This document.", 200),
    ("get", "/v1/indexes", "List indexes with their stats.", 200),
    (
        "post",
        "/v1/indexes",
        "Create an index: {name, kind?: documents|files, schema?}.",
        201,
    ),
    (
        "get",
        "/v1/indexes/{name}",
        "Stats and schema of an index.",
        200,
    ),
    (
        "delete",
        "/v1/indexes/{name}",
        "Delete an index and its files.",
        200,
    ),
    (
        "post",
        "/v1/indexes/{name}/documents",
        "Upsert documents by id: a JSON array or JSON lines; bad lines are reported, good ones kept. ?refresh=wait_for answers once searchable.",
        200,
    ),
    (
        "get",
        "/v1/indexes/{name}/documents/{id}",
        "Get a document by id.",
        200,
    ),
    (
        "delete",
        "/v1/indexes/{name}/documents/{id}",
        "Delete a document by id (idempotent: 200 whether or not it existed; `found` says whether a searchable document had the id, so a write not yet refreshed shows false though it is deleted too). ?refresh=wait_for answers once applied.",
        200,
    ),
    (
        "get",
        "/v1/indexes/{name}/search",
        "Search: ?q=&limit=&offset=&highlight=&count=&timeout_ms=&complete=",
        200,
    ),
    (
        "post",
        "/v1/indexes/{name}/search",
        "Search with a JSON body {query, limit, offset, highlight, count}.",
        200,
    ),
    (
        "post",
        "/v1/indexes/{name}/commit",
        "Make pending writes searchable and durable now.",
        200,
    ),
    (
        "post",
        "/v1/indexes/{name}/snapshots",
        "Take a snapshot of a documents index (committing pending writes first); old ones beyond the retention are pruned.",
        201,
    ),
    (
        "get",
        "/v1/indexes/{name}/snapshots",
        "List an index's snapshots, oldest first.",
        200,
    ),
    (
        "post",
        "/v1/indexes/{name}/repair",
        "Repair a damaged index: roll back to the newest sound snapshot and replay the write-ahead log (files indexes: rebuild from the source folder). Damaged files are kept aside.",
        200,
    ),
    (
        "get",
        "/v1/admin/errors",
        "Errors seen since start, by code and severity.",
        200,
    ),
    (
        "post",
        "/v1/admin/verify",
        "Check every index's files now (checksums, presence, write-ahead log); damaged indexes are taken out of service.",
        200,
    ),
    (
        "get",
        "/v1/admin/breakers",
        "Circuit breakers (per index), bulkheads (search, index) and the result cache.",
        200,
    ),
    (
        "get",
        "/v1/admin/resources",
        "Live resources (open indexes, searches in flight, writer memory), open files, threads, memory against its budget, and what the result and document caches hold against their bounds.",
        200,
    ),
    (
        "get",
        "/v1/admin/chaos",
        "Faults injected into searches for chaos drills (off unless configured).",
        200,
    ),
    (
        "put",
        "/v1/admin/chaos",
        "Set injected faults: {search_error_rate: 0..1, search_latency_ms, search_panic_rate: 0..1}. All zero turns them off.",
        200,
    ),
    (
        "get",
        "/v1/admin/tasks",
        "Background tasks (scrub, snapshots) with runs, failures, durations and last error.",
        200,
    ),
];

fn parameters(path: &str, method: &str) -> Vec<Value> {
    let mut params = Vec::new();
    for name in ["name", "id"] {
        if path.contains(&format!("{{{name}}}")) {
            params.push(
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}),
            );
        }
    }
    if path.ends_with("/search") && method == "get" {
        for (n, t) in [
            ("q", "string"),
            ("limit", "integer"),
            ("offset", "integer"),
            ("highlight", "boolean"),
            ("count", "boolean"),
        ] {
            params
                .push(json!({"name": n, "in": "query", "required": false, "schema": {"type": t}}));
        }
    }
    if (path.ends_with("/documents") && method == "post")
        || (path.ends_with("{id}") && method == "delete")
    {
        params.push(json!({"name": "refresh", "in": "query", "required": false, "schema": {"type": "string", "enum": ["wait_for", "true", "false"]}}));
    }
    params
}

/// The OpenAPI document.
pub fn spec() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, status) in OPERATIONS {
        let item = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        let mut op = json!({
            "summary": summary,
            "parameters": parameters(path, method),
            "responses": {
                status.to_string(): {"description": "Success"},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if path.ends_with("/search") && *method == "post" {
            op["requestBody"] = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}}}});
        }
        if path.ends_with("/search") {
            op["responses"]["200"]["content"] = json!({"application/json": {"schema": {"$ref": "#/components/schemas/SearchResponse"}}});
        }
        if path.ends_with("/documents") && *method == "post" {
            op["requestBody"] = json!({"content": {
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                "application/x-ndjson": {"schema": {"type": "string"}}
            }});
        }
        item[*method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "ironsift", "version": env!("CARGO_PKG_VERSION"), "description": "Full-text search on Tantivy that stays up and loses nothing."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message", "retryable"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"},
                    "request_id": {"type": "string", "nullable": true}, "retryable": {"type": "boolean"}}}}},
                "SearchRequest": {"type": "object", "properties": {
                    "query": {"type": "string"}, "limit": {"type": "integer", "maximum": 1000},
                    "offset": {"type": "integer"}, "highlight": {"type": "boolean"}, "count": {"type": "boolean"}}},
                "SearchResponse": {"type": "object", "required": ["hits", "total", "took_ms", "timed_out", "degraded"], "properties": {
                    "hits": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "string"}, "score": {"type": "number"}, "doc": {"type": "object"}, "highlights": {"type": "object"}}}},
                    "total": {"type": "integer", "nullable": true}, "took_ms": {"type": "number"},
                    "timed_out": {"type": "boolean"}, "degraded": {"type": "boolean"}}}
            }
        },
        "security": [{}, {"bearer": []}]
    })
}
