//! The HTTP side: one input becomes one request sent through `server::app` without a socket.
//!
//! Inputs are written like HTTP/1.1 requests so seeds stay readable and mutations stay
//! meaningful: a request line `METHOD TARGET`, then `Name: value` header lines, a blank line,
//! and the body. Parts that could never reach the router (a target that is not a URI, a header
//! a client could not send) are dropped, as the HTTP parser in front of the router would.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use search_core::Catalog;
use server::{AppState, ServerConfig};
use tower::ServiceExt;

use crate::harness::{Fixture, small_config};

/// The admin key of the fuzzed service (seeds send it, so the fuzzer gets past auth).
pub const ADMIN_KEY: &str = "fuzz-admin";
/// The search-only key.
pub const SEARCH_KEY: &str = "fuzz-search";
/// Indexes the fixture starts with; others the fuzzer creates are deleted now and then.
const FIXTURE_INDEXES: [&str; 2] = ["docs", "typed"];

struct Service {
    _fixture: Fixture,
    catalog: Catalog,
    runtime: tokio::runtime::Runtime,
    router: Router,
    inputs: AtomicU32,
}

fn service() -> &'static Service {
    static CELL: OnceLock<Service> = OnceLock::new();
    CELL.get_or_init(|| {
        let fixture = Fixture::new(true);
        // The service opens its own handles: release the fixture's writer locks first.
        fixture.docs.close_writer();
        fixture.typed.close_writer();
        let catalog =
            Catalog::with_config(fixture.catalog.root(), small_config()).expect("catalog");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let config = ServerConfig {
            admin_keys: vec![ADMIN_KEY.into()],
            search_keys: vec![SEARCH_KEY.into()],
            protect_metrics: true,
            search_threads: 1,
            ..ServerConfig::default()
        };
        let state = runtime
            .block_on(async { AppState::open(catalog.clone(), config) })
            .expect("app state");
        let svc = Service {
            _fixture: fixture,
            catalog,
            runtime,
            router: server::app(state),
            inputs: AtomicU32::new(0),
        };
        // Indexes are verified and their logs replayed in the background first; fuzz the
        // ready service (503s meanwhile are correct but teach the fuzzer nothing).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let probe = Request::get("/readyz")
                .body(Body::empty())
                .expect("a valid request");
            if send(&svc, probe).0 == StatusCode::OK {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        svc
    })
}

/// Splits `METHOD TARGET\nName: value\n...\n\nbody` into a request; `None` when the method or
/// target could not come from a real HTTP parser.
pub fn parse_request(bytes: &[u8]) -> Option<Request<Body>> {
    let (line, mut rest) = split_line(bytes);
    let line = trim_cr(line);
    let (method, target) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (&b"GET"[..], line),
    };
    let method = Method::from_bytes(method).ok()?;
    let uri = Uri::try_from(target).ok()?;
    uri.path_and_query()?;
    let mut req = Request::builder().method(method).uri(uri);
    loop {
        if rest.is_empty() {
            break;
        }
        let (header, after) = split_line(rest);
        rest = after;
        let header = trim_cr(header);
        if header.is_empty() {
            break;
        }
        let Some(colon) = header.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&header[..colon]),
            HeaderValue::from_bytes(header[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        req = req.header(name, value);
    }
    req.body(Body::from(rest.to_vec())).ok()
}

fn split_line(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[]),
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Sends `req` through the router; returns the status and the whole body.
fn send(svc: &Service, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    svc.runtime.block_on(async {
        let resp = svc
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("response bodies are in memory")
            .to_bytes()
            .to_vec();
        (status, body)
    })
}

/// `http_router` target: never a panic, never a 5xx other than 503 (overloaded, not ready) and
/// 507 (disk full), and every error answer (but `/readyz`'s report) is the JSON error body.
pub fn http_router(bytes: &[u8]) {
    let svc = service();
    if let Some(req) = parse_request(bytes) {
        let shown = format!("{} {}", req.method(), req.uri());
        // `/readyz` answers 503 with its health report, not an error body.
        let readiness = req.uri().path() == "/readyz";
        let (status, body) = send(svc, req);
        if std::env::var_os("IRONSIFT_FUZZ_DEBUG").is_some() {
            eprintln!("{shown} -> {status}: {}", String::from_utf8_lossy(&body));
        }
        assert!(
            status.as_u16() < 500
                || status == StatusCode::SERVICE_UNAVAILABLE
                || status == StatusCode::INSUFFICIENT_STORAGE,
            "{shown} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        if (status.is_client_error() || status.is_server_error()) && !readiness {
            let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&body);
            assert!(
                parsed
                    .as_ref()
                    .is_ok_and(|v| v["error"]["code"].is_string()),
                "{shown} answered {status} without the JSON error body: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    if svc.inputs.fetch_add(1, Ordering::Relaxed) % 1_000 == 999 {
        tidy(svc);
    }
}

/// Deletes the indexes the fuzzer created, through the API, so a long run stays small.
fn tidy(svc: &Service) {
    let Ok(names) = svc.catalog.list() else {
        return;
    };
    for name in names {
        if FIXTURE_INDEXES.contains(&name.as_str()) {
            continue;
        }
        let Ok(uri) = Uri::try_from(format!("/v1/indexes/{name}")) else {
            continue;
        };
        let req = Request::delete(uri)
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .body(Body::empty())
            .expect("a valid request");
        let _ = send(svc, req);
    }
}
