//! The HTTP API end to end: through the router without a socket, and over real HTTP on port 0.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use search_core::Catalog;
use serde_json::{Value, json};
use server::{AppState, ServerConfig, app, app_with};
use tower::ServiceExt;

/// How requests reach the router: in-process, or over real HTTP on a loopback port.
#[derive(Clone, Copy, Debug)]
enum Transport {
    Oneshot,
    Http,
}

struct Api {
    _dir: tempfile::TempDir,
    state: AppState,
    router: Router,
    http: Option<(String, reqwest::Client)>,
}

/// Runs a test body once through the router and once over real HTTP.
macro_rules! both_transports {
    ($(async fn $name:ident($api:ident: fn(ServerConfig) -> Api) $body:block)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for transport in [Transport::Oneshot, Transport::Http] {
                let $api = |config| api_over(transport, config);
                async { $body }.await;
            }
        }
    )*};
}

fn api(config: ServerConfig) -> Api {
    api_over(Transport::Oneshot, config)
}

fn api_over(transport: Transport, mut config: ServerConfig) -> Api {
    // These tests are about the API, not about the machine: a nearly full disk or busy RAM on
    // the test machine must not turn /readyz red here (the checks are tested in tests/serve.rs).
    config.disk_critical = 1.01;
    config.memory_critical = 1.01;
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::open(Catalog::open(dir.path()).unwrap(), config).unwrap();
    let router = app_with(
        Router::new().route(
            "/v1/test/panic",
            axum::routing::get(|| async {
                panic!("deliberate test panic");
                #[allow(unreachable_code)]
                ""
            }),
        ),
        state.clone(),
    );
    let http = match transport {
        Transport::Oneshot => None,
        Transport::Http => {
            let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            std_listener.set_nonblocking(true).unwrap();
            let addr = std_listener.local_addr().unwrap();
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let served = router.clone();
            tokio::spawn(async move { axum::serve(listener, served).await });
            Some((format!("http://{addr}"), reqwest::Client::new()))
        }
    };
    Api {
        _dir: dir,
        state,
        router,
        http,
    }
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
    text: String,
}

impl Api {
    async fn call(&self, req: Request<Body>) -> Resp {
        if let Some((base, client)) = &self.http {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let mut r = client.request(parts.method, format!("{base}{}", parts.uri));
            for (k, v) in &parts.headers {
                r = r.header(k, v);
            }
            let resp = r.body(bytes).send().await.unwrap();
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await.unwrap();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Resp {
                status,
                headers,
                body,
                text,
            };
        }
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    async fn send(
        &self,
        method: &str,
        uri: &str,
        ct: Option<&str>,
        body: impl Into<Body>,
        key: Option<&str>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(ct) = ct {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        if let Some(k) = key {
            b = b.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        self.call(b.body(body.into()).unwrap()).await
    }

    async fn get(&self, uri: &str) -> Resp {
        self.send("GET", uri, None, Body::empty(), None).await
    }

    async fn post_json(&self, uri: &str, body: Value) -> Resp {
        self.send(
            "POST",
            uri,
            Some("application/json"),
            body.to_string(),
            None,
        )
        .await
    }
}

fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text);
    assert_eq!(r.body["error"]["code"], code, "{}", r.text);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        r.text
    );
    assert!(
        r.body["error"]["request_id"].as_str().is_some(),
        "{}",
        r.text
    );
    assert!(r.body["error"]["retryable"].is_boolean(), "{}", r.text);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
}

both_transports! {
    async fn index_documents_search_get_delete(api: fn(ServerConfig) -> Api) {
    let a = api(ServerConfig::default());
    let r = a.post_json("/v1/indexes", json!({"name": "docs"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["kind"], "documents");
    assert_error(
        &a.post_json("/v1/indexes", json!({"name": "docs"})).await,
        409,
        "already_exists",
    );

    // JSON array, with one bad element.
    let r = a
        .post_json(
            "/v1/indexes/docs/documents?refresh=wait_for",
            json!([{"id": "1", "title": "rust search engine"}, 42, {"id": "2", "title": "tantivy index"}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["indexed"], 2);
    assert_eq!(r.body["failed"], 1);
    assert_eq!(r.body["errors"][0]["line"], 2);

    // NDJSON with a malformed line: good lines kept.
    let nd = "{\"id\":\"3\",\"title\":\"search latency\"}\n{oops\n{\"id\":\"1\",\"title\":\"rust search replaced\"}\n";
    let r = a
        .send(
            "POST",
            "/v1/indexes/docs/documents?refresh=wait_for",
            Some("application/x-ndjson"),
            nd,
            None,
        )
        .await;
    assert_eq!(
        (r.body["indexed"].as_u64(), r.body["failed"].as_u64()),
        (Some(2), Some(1)),
        "{}",
        r.text
    );
    assert_eq!(r.body["errors"][0]["line"], 2);
    assert!(
        r.body["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );

    // A single pretty-printed object is one document, not one bad line per line.
    let r = a
        .send(
            "POST",
            "/v1/indexes/docs/documents?refresh=wait_for",
            Some("application/json"),
            "{\n  \"id\": \"p\",\n  \"title\": \"pretty printed\"\n}\n",
            None,
        )
        .await;
    assert_eq!(
        (r.body["indexed"].as_u64(), r.body["failed"].as_u64()),
        (Some(1), Some(0)),
        "{}",
        r.text
    );
    let r = a
        .send(
            "DELETE",
            "/v1/indexes/docs/documents/p?refresh=wait_for",
            None,
            Body::empty(),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let r = a
        .get("/v1/indexes/docs/search?q=search&highlight=true")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["total"], 2);
    assert_eq!(r.body["timed_out"], false);
    assert_eq!(r.body["degraded"], false);
    assert!(r.body["took_ms"].as_f64().is_some());
    let hit = &r.body["hits"][0];
    assert!(hit["doc"]["title"].as_str().unwrap().contains("search"));
    assert!(
        hit["highlights"]["title"]["fragment"].is_string(),
        "{}",
        r.text
    );

    let r = a
        .post_json(
            "/v1/indexes/docs/search",
            json!({"query": "title:tantivy", "limit": 5}),
        )
        .await;
    assert_eq!(r.body["hits"][0]["id"], "2", "{}", r.text);

    let r = a.get("/v1/indexes/docs/documents/1").await;
    assert_eq!(r.body["title"], "rust search replaced");
    let r = a
        .send(
            "DELETE",
            "/v1/indexes/docs/documents/1?refresh=wait_for",
            None,
            Body::empty(),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["found"], true, "{}", r.text);
    assert_error(
        &a.get("/v1/indexes/docs/documents/1").await,
        404,
        "not_found",
    );
    // Deleting again is a success that found nothing (deletes are idempotent).
    let r = a
        .send(
            "DELETE",
            "/v1/indexes/docs/documents/1",
            None,
            Body::empty(),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["found"], false, "{}", r.text);
    // A document acknowledged but not yet refreshed is deleted too, and the answer says so
    // with a success, not a 404.
    let r = a
        .post_json("/v1/indexes/docs/documents", json!([{"id": "fresh", "title": "new"}]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = a
        .send(
            "DELETE",
            "/v1/indexes/docs/documents/fresh?refresh=wait_for",
            None,
            Body::empty(),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_error(
        &a.get("/v1/indexes/docs/documents/fresh").await,
        404,
        "not_found",
    );

    // Writes without refresh become visible after an explicit commit.
    a.post_json(
        "/v1/indexes/docs/documents",
        json!([{"id": "9", "title": "pending"}]),
    )
    .await;
    assert_eq!(
        a.get("/v1/indexes/docs/search?q=pending").await.body["total"],
        0
    );
    let r = a
        .send("POST", "/v1/indexes/docs/commit", None, Body::empty(), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        a.get("/v1/indexes/docs/search?q=pending").await.body["total"],
        1
    );

    let r = a.get("/v1/indexes").await;
    assert_eq!(r.body["indexes"][0]["name"], "docs");
    assert_eq!(r.body["indexes"][0]["docs"], 3);
    let r = a
        .send("DELETE", "/v1/indexes/docs", None, Body::empty(), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_error(&a.get("/v1/indexes/docs").await, 404, "not_found");
}
}

both_transports! {
    async fn bad_input_gets_the_right_status_and_never_a_5xx(api: fn(ServerConfig) -> Api) {
    let a = api(ServerConfig {
        body_limit: 64 * 1024,
        ..ServerConfig::default()
    });
    a.post_json("/v1/indexes", json!({"name": "docs"})).await;
    let big = format!("[{{\"id\":\"1\",\"t\":\"{}\"}}]", "x".repeat(100 * 1024));
    assert_error(
        &a.send(
            "POST",
            "/v1/indexes/docs/documents",
            Some("application/json"),
            big,
            None,
        )
        .await,
        413,
        "payload_too_large",
    );
    assert_error(
        &a.get("/v1/indexes/docs/search?q=%22open").await,
        400,
        "invalid_input",
    );
    let long: String = (0..5000).map(|i| format!("t{i}%20")).collect();
    assert_error(
        &a.get(&format!("/v1/indexes/docs/search?q={long}")).await,
        400,
        "invalid_input",
    );
    assert_error(
        &a.get("/v1/indexes/docs/search?q=x&limit=1001").await,
        400,
        "invalid_input",
    );
    assert_error(
        &a.get("/v1/indexes/docs/search?q=x&limit=abc").await,
        400,
        "invalid_input",
    );
    assert_error(
        &a.get("/v1/indexes/docs/search?q=x&bogus=1").await,
        400,
        "invalid_input",
    );
    assert_error(
        &a.get("/v1/indexes/nope/search?q=x").await,
        404,
        "not_found",
    );
    assert_error(
        &a.get("/v1/indexes/..%2Fetc/search?q=x").await,
        400,
        "invalid_input",
    );
    let r = a
        .send(
            "POST",
            "/v1/indexes/docs/documents",
            Some("application/json"),
            "[{\"id\":1},\n {\"id\":",
            None,
        )
        .await;
    assert_error(&r, 400, "invalid_input");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 2 column"),
        "{}",
        r.text
    );
    let r = a
        .send(
            "POST",
            "/v1/indexes/docs/search",
            Some("application/json"),
            "{\"query\": 5}",
            None,
        )
        .await;
    assert_error(&r, 400, "invalid_input");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1 column"),
        "{}",
        r.text
    );
    // An array where an object belongs is not read as a struct's fields in order.
    for (path, body) in [
        ("/v1/indexes", "[\"arrayname\"]"),
        ("/v1/indexes/docs/search", "[]"),
        ("/v1/indexes/docs/search", "[\"k5\"]"),
    ] {
        let r = a
            .send("POST", path, Some("application/json"), body, None)
            .await;
        assert_error(&r, 400, "invalid_input");
        assert!(r.text.contains("must be a JSON object"), "{}", r.text);
    }
    assert_eq!(a.get("/v1/indexes/arrayname").await.status, 404);
    // A UTF-8 byte-order mark before a JSON array (as some editors save files) is ignored.
    let r = a
        .call(
            Request::builder()
                .method("POST")
                .uri("/v1/indexes/docs/documents")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b"\xEF\xBB\xBF[{\"id\":\"bom\"}]".to_vec()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["indexed"], 1, "{}", r.text);
    // Compressed bodies are refused, not read as malformed JSON.
    let r = a
        .call(
            Request::builder()
                .method("POST")
                .uri("/v1/indexes/docs/documents")
                .header(header::CONTENT_TYPE, "application/x-ndjson")
                .header(header::CONTENT_ENCODING, "gzip")
                .body(Body::from(vec![0x1f_u8, 0x8b, 8, 0]))
                .unwrap(),
        )
        .await;
    assert_error(&r, 415, "unsupported_media_type");
    // A body of many bad lines is answered with a bounded list of them.
    let r = a
        .send(
            "POST",
            "/v1/indexes/docs/documents",
            Some("application/x-ndjson"),
            "x\n".repeat(20_000),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", &r.text[..200.min(r.text.len())]);
    assert_eq!(r.body["failed"], 20_000);
    assert_eq!(
        r.body["errors"].as_array().unwrap().len(),
        search_core::MAX_LINE_ERRORS
    );
    assert_error(
        &a.send(
            "POST",
            "/v1/indexes/docs/documents",
            Some("text/csv"),
            "a,b",
            None,
        )
        .await,
        415,
        "unsupported_media_type",
    );
    assert_error(
        &a.send(
            "POST",
            "/v1/indexes/docs/search",
            Some("text/plain"),
            "{}",
            None,
        )
        .await,
        415,
        "unsupported_media_type",
    );
    assert_error(
        &a.post_json("/v1/indexes", json!({"name": "bad name"}))
            .await,
        400,
        "invalid_input",
    );
    assert_error(
        &a.post_json(
            "/v1/indexes",
            json!({"name": "x", "schema": {"fields": []}}),
        )
        .await,
        400,
        "invalid_input",
    );
    assert_error(
        &a.post_json("/v1/indexes", json!({"nam": "x"})).await,
        400,
        "invalid_input",
    );
    assert_error(&a.get("/v1/no/such/route").await, 404, "not_found");
    let r = a
        .send("PUT", "/v1/indexes", None, Body::empty(), None)
        .await;
    assert_eq!(r.status, 405, "{}", r.text);
    assert_error(
        &a.get("/v1/indexes/docs/documents/1?refresh=maybe").await,
        404,
        "not_found",
    );
    assert_error(
        &a.send(
            "DELETE",
            "/v1/indexes/docs/documents/1?refresh=maybe",
            None,
            Body::empty(),
            None,
        )
        .await,
        400,
        "invalid_input",
    );
    // None of the above was reported as a server error.
    let errors = a.get("/v1/admin/errors").await;
    for e in errors.body["errors"].as_array().unwrap() {
        assert_ne!(e["severity"], "high", "{e}");
        assert_ne!(e["severity"], "critical", "{e}");
    }
}
}

both_transports! {
    async fn a_panicking_handler_becomes_a_500_with_the_request_id(api: fn(ServerConfig) -> Api) {
    let a = api(ServerConfig::default());
    let req = Request::get("/v1/test/panic")
        .header("x-request-id", "boom-1")
        .body(Body::empty())
        .unwrap();
    let r = a.call(req).await;
    assert_error(&r, 500, "internal");
    assert_eq!(r.body["error"]["request_id"], "boom-1");
    assert_eq!(r.headers["x-request-id"], "boom-1");
    // The service keeps serving.
    assert_eq!(a.get("/livez").await.status, 200);
    let errors = a.get("/v1/admin/errors").await;
    assert!(errors.text.contains("internal"), "{}", errors.text);
}
}

both_transports! {
    async fn request_ids_are_honoured_only_when_safe(api: fn(ServerConfig) -> Api) {
    let a = api(ServerConfig::default());
    let r = a
        .call(
            Request::get("/v1/indexes/x")
                .header("x-request-id", "abc.DEF-1_2")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "abc.DEF-1_2");
    assert_eq!(r.body["error"]["request_id"], "abc.DEF-1_2");
    for bad in ["has space", "<script>", &"a".repeat(65)] {
        let r = a
            .call(
                Request::get("/livez")
                    .header("x-request-id", bad)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        let got = r.headers["x-request-id"].to_str().unwrap();
        assert_ne!(got, bad);
        assert_eq!(got.len(), 32);
    }
    let r = a.get("/livez").await;
    assert_eq!(r.headers["x-request-id"].len(), 32);
}
}

both_transports! {
    async fn auth_matrix(api: fn(ServerConfig) -> Api) {
    let a = api(ServerConfig {
        admin_keys: vec!["admin-secret".into()],
        search_keys: vec!["search-1".into(), "search-2".into()],
        ..ServerConfig::default()
    });
    let admin = Some("admin-secret");
    let search = Some("search-2");
    let wrong = Some("nope");
    let r = a
        .send(
            "POST",
            "/v1/indexes",
            Some("application/json"),
            "{\"name\":\"d\"}",
            admin,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // (method, uri, content type, body, key, expected status)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        &'a str,
        Option<&'a str>,
        u16,
    );
    let cases: Vec<Case<'_>> = vec![
        ("GET", "/livez", None, "", None, 200),
        ("GET", "/readyz", None, "", None, 200),
        ("GET", "/metrics", None, "", None, 200),
        ("GET", "/v1/indexes/d/search?q=x", None, "", None, 401),
        ("GET", "/v1/indexes/d/search?q=x", None, "", wrong, 401),
        ("GET", "/v1/indexes/d/search?q=x", None, "", search, 200),
        ("GET", "/v1/indexes/d/search?q=x", None, "", admin, 200),
        (
            "POST",
            "/v1/indexes/d/search",
            Some("application/json"),
            "{\"query\":\"x\"}",
            search,
            200,
        ),
        ("GET", "/v1/indexes", None, "", search, 200),
        (
            "POST",
            "/v1/indexes/d/documents",
            Some("application/json"),
            "[{\"id\":\"1\"}]",
            None,
            401,
        ),
        (
            "POST",
            "/v1/indexes/d/documents",
            Some("application/json"),
            "[{\"id\":\"1\"}]",
            search,
            403,
        ),
        (
            "POST",
            "/v1/indexes/d/documents",
            Some("application/json"),
            "[{\"id\":\"1\"}]",
            admin,
            200,
        ),
        ("DELETE", "/v1/indexes/d/documents/1", None, "", search, 403),
        ("GET", "/v1/admin/errors", None, "", search, 403),
        ("GET", "/v1/admin/errors", None, "", admin, 200),
        ("DELETE", "/v1/indexes/d", None, "", search, 403),
        (
            "POST",
            "/v1/indexes",
            Some("application/json"),
            "{\"name\":\"e\"}",
            search,
            403,
        ),
    ];
    for (method, uri, ct, body, key, expected) in cases {
        let r = a.send(method, uri, ct, body.to_string(), key).await;
        assert_eq!(
            r.status.as_u16(),
            expected,
            "{method} {uri} with {key:?}: {}",
            r.text
        );
        if expected == 401 {
            assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
            assert_eq!(r.body["error"]["code"], "unauthenticated");
        }
        if expected == 403 {
            assert_eq!(r.body["error"]["code"], "permission_denied");
        }
    }
}
}

both_transports! {
    async fn protected_metrics_need_an_admin_key(api: fn(ServerConfig) -> Api) {
    let a = api(ServerConfig {
        admin_keys: vec!["k".into()],
        protect_metrics: true,
        ..ServerConfig::default()
    });
    assert_eq!(a.get("/metrics").await.status, 401);
    assert_eq!(
        a.send("GET", "/metrics", None, "", Some("k")).await.status,
        200
    );
    // The scheme is case-insensitive; the key is not.
    for (auth, status) in [("BEARER k", 200), ("bearer k", 200), ("Bearer K", 401), ("Basic k", 401)] {
        let r = a
            .call(
                Request::builder()
                    .uri("/metrics")
                    .header(header::AUTHORIZATION, auth)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, status, "{auth}");
    }
    assert_eq!(a.get("/readyz").await.status, 200);
}
}

both_transports! {
    async fn openapi_describes_exactly_the_routed_operations(api: fn(ServerConfig) -> Api) {
    let a = api(ServerConfig::default());
    let spec = a.get("/v1/openapi.json").await.body;
    assert_eq!(spec["openapi"], "3.0.3");
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.len() >= 10);
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let uri = path.replace("{name}", "zz").replace("{id}", "1");
            let r = a
                .send(
                    &method.to_uppercase(),
                    &uri,
                    Some("application/json"),
                    "{}",
                    None,
                )
                .await;
            // Routed: the answer is never the router's "no such route" nor 405.
            assert_ne!(r.status, 405, "{method} {path}");
            let msg = r.body["error"]["message"].as_str().unwrap_or("");
            assert!(
                !msg.contains("no such route"),
                "{method} {path} is not routed"
            );
        }
    }
}
}

#[tokio::test]
async fn readyz_reports_checks_and_shutdown() {
    let a = api(ServerConfig::default());
    let r = a.get("/readyz").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let names: Vec<&str> = r.body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["indexes", "recovery", "writers", "disk", "memory"]);
    assert!(r.body["checks"][0]["took_ms"].as_f64().is_some());
    a.state.begin_shutdown();
    let r = a.get("/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["status"], "shutting_down");
    assert_eq!(a.get("/livez").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_http_on_port_zero_and_graceful_shutdown_commits() {
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::open(
        Catalog::open(dir.path()).unwrap(),
        ServerConfig {
            refresh_interval: std::time::Duration::from_secs(3600),
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = server::shutdown_channel();
    let handle = tokio::spawn(server::run(
        listener,
        state,
        rx,
        std::time::Duration::from_secs(5),
    ));
    let c = reqwest::Client::new();
    let base = format!("http://{addr}");
    let r = c
        .post(format!("{base}/v1/indexes"))
        .json(&json!({"name": "d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Acknowledged without refresh: not yet committed (the interval is an hour).
    let r = c
        .post(format!("{base}/v1/indexes/d/documents"))
        .header("content-type", "application/x-ndjson")
        .body("{\"id\":\"a\",\"t\":\"kept at shutdown\"}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tx.send_modify(|n| *n += 1);
    tokio::time::timeout(std::time::Duration::from_secs(10), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The listener is closed.
    assert!(c.get(format!("{base}/livez")).send().await.is_err());
    let idx = Catalog::open(dir.path()).unwrap().open_index("d").unwrap();
    assert!(
        idx.get("a").unwrap().is_some(),
        "pending write committed at shutdown"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let a = api(ServerConfig::default());
    a.get("/v1/indexes/nope/search?q=x").await;
    let m = a.get("/metrics").await;
    assert!(
        m.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(
        m.text
            .lines()
            .any(|l| l.starts_with("ironsift_http_requests_total{")
                && l.contains("route=\"/v1/indexes/{name}/search\"")
                && l.contains("status=\"404\"")),
        "{}",
        m.text
    );
    assert!(
        m.text
            .contains("ironsift_errors_total{code=\"not_found\",severity=\"low\"}"),
        "{}",
        m.text
    );
    let _ = app; // the plain constructor is the one the binary uses
}

#[tokio::test]
async fn clients_over_their_rate_get_429_with_retry_after_and_health_is_exempt() {
    let mut cfg = ServerConfig {
        admin_keys: vec!["adm".into()],
        search_keys: vec!["s1".into(), "s2".into()],
        ..ServerConfig::default()
    };
    cfg.admission.rate_limit = 5;
    cfg.admission.rate_burst = 5;
    let a = api(cfg);
    let r = a
        .send(
            "POST",
            "/v1/indexes",
            Some("application/json"),
            r#"{"name":"r"}"#,
            Some("adm"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let mut limited = 0;
    for _ in 0..20 {
        let r = a
            .send(
                "GET",
                "/v1/indexes/r/search?q=x",
                None,
                Body::empty(),
                Some("s1"),
            )
            .await;
        if r.status == 429 {
            assert_error(&r, 429, "rate_limited");
            let secs: u64 = r.headers[header::RETRY_AFTER]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(secs >= 1, "{secs}");
            limited += 1;
        } else {
            assert_eq!(r.status, 200, "{}", r.text);
        }
    }
    assert!(
        limited >= 10,
        "only {limited} of 20 limited at 5/s with a burst of 5"
    );
    // Another client (key) has its own budget; health routes are never limited.
    let r = a
        .send(
            "GET",
            "/v1/indexes/r/search?q=x",
            None,
            Body::empty(),
            Some("s2"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for _ in 0..20 {
        assert_eq!(a.get("/livez").await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_index_opens_its_breaker_and_cached_answers_are_served_degraded() {
    let a = api(ServerConfig::default());
    assert_eq!(
        a.post_json("/v1/indexes", json!({"name": "b"}))
            .await
            .status,
        201
    );
    let r = a
        .post_json(
            "/v1/indexes/b/documents?refresh=wait_for",
            json!([{"id": "1", "text": "cached words"}, {"id": "2", "text": "other words"}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let warm = a.get("/v1/indexes/b/search?q=cached").await;
    assert_eq!(warm.status, 200);
    assert_eq!(warm.body["degraded"], false);

    // Every search now fails (injected inside the breaker's scope).
    let r = a
        .send(
            "PUT",
            "/v1/admin/chaos",
            Some("application/json"),
            r#"{"search_error_rate": 1.0}"#,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut failed = 0;
    let mut open = false;
    for i in 0..40 {
        let r = a.get(&format!("/v1/indexes/b/search?q=miss{i}")).await;
        assert_eq!(r.status, 503, "{}", r.text);
        assert!(
            r.headers.get(header::RETRY_AFTER).is_some() || r.text.contains("injected"),
            "{}",
            r.text
        );
        if r.text.contains("injected") {
            failed += 1;
        } else {
            open = true;
            assert!(r.text.contains("failing"), "{}", r.text);
            break;
        }
    }
    assert!(open, "the breaker never opened after {failed} failures");
    let breakers = a.get("/v1/admin/breakers").await;
    assert_eq!(
        breakers.body["breakers"][0]["state"], "open",
        "{}",
        breakers.text
    );

    // A new commit changes the generation: the cached answer is stale but better than none.
    let r = a
        .post_json(
            "/v1/indexes/b/documents?refresh=wait_for",
            json!([{"id": "3", "text": "new"}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = a.get("/v1/indexes/b/search?q=cached").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["degraded"], true, "{}", r.text);
    assert_eq!(r.body["hits"][0]["id"], "1");
    // Never answered before: nothing to fall back to.
    let r = a.get("/v1/indexes/b/search?q=never").await;
    assert_error(&r, 503, "unavailable");
    assert!(r.headers.get(header::RETRY_AFTER).is_some());

    // Faults off: after the open wait the probes succeed and the breaker closes.
    let off = a
        .send(
            "PUT",
            "/v1/admin/chaos",
            Some("application/json"),
            r#"{}"#,
            None,
        )
        .await;
    assert_eq!(off.status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = a.get("/v1/indexes/b/search?q=never").await;
        if r.status == 200 {
            assert_eq!(r.body["degraded"], false);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the breaker never closed: {}",
            r.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let r = a.get("/v1/indexes/b/search?q=cached").await;
    assert_eq!(r.body["degraded"], false, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_give_partial_answers_or_504_when_complete_results_are_required() {
    let a = api(ServerConfig::default());
    assert_eq!(
        a.post_json("/v1/indexes", json!({"name": "t"}))
            .await
            .status,
        201
    );
    let r = a
        .post_json(
            "/v1/indexes/t/documents?refresh=wait_for",
            json!([{"id": "1", "text": "slow words"}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ok = a.get("/v1/indexes/t/search?q=slow&timeout_ms=5000").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["timed_out"], false);
    assert_eq!(ok.body["total"], 1);
    // 100 ms of injected latency before the search runs: a 30 ms deadline has passed.
    let r = a
        .send(
            "PUT",
            "/v1/admin/chaos",
            Some("application/json"),
            r#"{"search_latency_ms": 100}"#,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = a.get("/v1/indexes/t/search?q=words&timeout_ms=30").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["timed_out"], true, "{}", r.text);
    let r = a
        .get("/v1/indexes/t/search?q=words&timeout_ms=30&complete=true")
        .await;
    assert_error(&r, 504, "timeout");
    let r = a
        .post_json(
            "/v1/indexes/t/search",
            json!({"query": "words", "timeout_ms": 30, "allow_partial": false}),
        )
        .await;
    assert_error(&r, 504, "timeout");
    // Bad budgets are the caller's error.
    assert_error(
        &a.get("/v1/indexes/t/search?q=x&timeout_ms=0").await,
        400,
        "invalid_input",
    );
    assert_error(
        &a.get("/v1/indexes/t/search?q=x&timeout_ms=999999999").await,
        400,
        "invalid_input",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_return_to_their_baseline_after_bursts_and_index_cycles() {
    let a = api(ServerConfig::default());
    assert_eq!(
        a.post_json("/v1/indexes", json!({"name": "keep"}))
            .await
            .status,
        201
    );
    let r = a
        .post_json(
            "/v1/indexes/keep/documents?refresh=wait_for",
            json!([{"id": "1", "text": "leak check"}]),
        )
        .await;
    assert_eq!(r.status, 200);
    let baseline = a.state.registry().baseline();
    // A burst of concurrent searches (distinct queries: no cache hits), some failing.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let uri = if i % 10 == 0 {
            "/v1/indexes/keep/search?q=(unbalanced".to_string()
        } else {
            format!("/v1/indexes/keep/search?q=leak{i}")
        };
        let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let router = a.router.clone();
        tasks.push(tokio::spawn(async move {
            router.oneshot(req).await.unwrap().status()
        }));
    }
    for t in tasks {
        let status = t.await.unwrap();
        assert!(status == 200 || status == 400 || status == 503, "{status}");
    }
    // Index create/delete cycles.
    for i in 0..10 {
        let name = format!("tmp{i}");
        assert_eq!(
            a.post_json("/v1/indexes", json!({"name": name}))
                .await
                .status,
            201
        );
        let r = a
            .post_json(
                &format!("/v1/indexes/{name}/documents"),
                json!([{"id": "x", "text": "y"}]),
            )
            .await;
        assert_eq!(r.status, 200);
        let r = a
            .send(
                "DELETE",
                &format!("/v1/indexes/{name}"),
                None,
                Body::empty(),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let diff = a
        .state
        .registry()
        .wait_for_baseline(&baseline, std::time::Duration::from_secs(5))
        .await;
    if let Err(diff) = diff {
        panic!("resources leaked: {diff:?}");
    }
    let res = a.get("/v1/admin/resources").await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.body["registry"]["kinds"]["index"]["live"], 1,
        "{}",
        res.text
    );
    assert!(
        res.body["memory"]["budget"]["limit_bytes"]
            .as_u64()
            .unwrap()
            > 0,
        "{}",
        res.text
    );
    // Both caches report what they hold against their bound (null when disabled).
    for cache in ["results", "documents"] {
        let c = &res.body["caches"][cache];
        assert!(c.is_object() || c.is_null(), "{cache}: {}", res.text);
        if c.is_object() {
            assert!(
                c["bytes"].as_u64().unwrap() <= c["max_bytes"].as_u64().unwrap(),
                "{cache}: {}",
                res.text
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_search_work_is_a_500_with_the_request_id_and_the_index_stays_usable() {
    let a = api(ServerConfig::default());
    assert_eq!(
        a.post_json("/v1/indexes", json!({"name": "p"}))
            .await
            .status,
        201
    );
    let r = a
        .post_json(
            "/v1/indexes/p/documents?refresh=wait_for",
            json!([{"id": "1", "text": "fine"}]),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = a
        .send(
            "PUT",
            "/v1/admin/chaos",
            Some("application/json"),
            r#"{"search_panic_rate": 1.0}"#,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for i in 0..5 {
        let r = a.get(&format!("/v1/indexes/p/search?q=boom{i}")).await;
        assert_error(&r, 500, "internal");
        assert!(r.text.contains("panicked"), "{}", r.text);
    }
    let r = a
        .send(
            "PUT",
            "/v1/admin/chaos",
            Some("application/json"),
            "{}",
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = a.get("/v1/indexes/p/search?q=fine").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["total"], 1);
    let r = a
        .post_json(
            "/v1/indexes/p/documents?refresh=wait_for",
            json!([{"id": "2", "text": "fine again"}]),
        )
        .await;
    assert_eq!(
        r.status, 200,
        "the index takes writes after the panics: {}",
        r.text
    );
}
