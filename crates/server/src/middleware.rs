//! Request context (id, span, log line, metrics) and authentication.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use observability::metrics::{HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS};
use observability::request_id::RequestId;
use search_error::{ErrorCode, Severity};
use subtle::ConstantTimeEq;
use tracing::Instrument;

use crate::context;
use crate::error::{ApiError, ErrorInfo};
use crate::state::AppState;

/// Log lines per second for refused and rejected requests (see [`request_context`]).
const REFUSAL_LINES_PER_SECOND: u64 = 20;

static LOG_BUDGET: LogBudget = LogBudget {
    second: AtomicU64::new(0),
    used: AtomicU64::new(0),
    suppressed: AtomicU64::new(0),
};

/// At most [`REFUSAL_LINES_PER_SECOND`] lines a second, lock-free; over the budget, lines are
/// counted and the count goes out with the next line allowed.
struct LogBudget {
    second: AtomicU64,
    used: AtomicU64,
    suppressed: AtomicU64,
}

impl LogBudget {
    /// `Some(lines suppressed since the last one)` when a line may be written now.
    fn admit(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.second.swap(now, Ordering::Relaxed) != now {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < REFUSAL_LINES_PER_SECOND {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Name of the correlation header, read and echoed.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Outermost layer: assigns the request id, opens the request span (so every log line of the
/// request carries the id), counts the request and its latency, echoes the id, reports errors.
pub(crate) async fn request_context(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = RequestId::from_caller(
        req.headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().clone();
    let span = tracing::info_span!("request", id = %id, method = %method, route = %route);
    metrics::gauge!(HTTP_IN_FLIGHT).increment(1.0);
    // The connection's idle limit does not apply while this request is handled.
    let busy = req
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::listener::ClientAddr>>()
        .and_then(|ci| ci.0.1.clone())
        .map(crate::conn_guard::InFlight::new);
    // A body that stops arriving mid-way ends with an error instead of holding the request.
    let req = req.map(|b| {
        axum::body::Body::new(tower_http::timeout::TimeoutBody::new(
            crate::conn_guard::BODY_IDLE_LIMIT,
            b,
        ))
    });
    let mut resp = context::scope(id.clone(), next.run(req).instrument(span.clone())).await;
    drop(busy);
    metrics::gauge!(HTTP_IN_FLIGHT).decrement(1.0);

    let status = resp.status();
    let elapsed = started.elapsed();
    let status_label = status.as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method.to_string(), "status" => status_label.clone())
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route, "method" => method.to_string(), "status" => status_label)
        .record(elapsed.as_secs_f64());
    if let Some(info) = resp.extensions().get::<ErrorInfo>() {
        state
            .0
            .errors
            .record(info.code, info.severity, &info.message);
    }
    let _enter = span.enter();
    let ms = elapsed.as_secs_f64() * 1e3;
    let info = resp.extensions().get::<ErrorInfo>();
    let severity = info.map(|i| i.severity);
    let msg = info.map(|i| i.message.as_str()).unwrap_or("");
    match severity {
        // Something is wrong with the service or the data: every one is logged.
        Some(Severity::High | Severity::Critical) => tracing::error!(
            status = status.as_u16(),
            took_ms = ms,
            error = msg,
            "request failed"
        ),
        // Expected under load or from clients (shedding, timeouts, bad input, 404s): logged
        // within a budget of lines per second, the rest counted and reported with the next
        // line. A server shedding thousands of requests a second must not spend its CPU
        // writing a line for each (the metrics count them all).
        _ if status.is_client_error() || status.is_server_error() => {
            if let Some(suppressed) = LOG_BUDGET.admit() {
                if status.is_server_error() {
                    tracing::warn!(
                        status = status.as_u16(),
                        took_ms = ms,
                        error = msg,
                        suppressed,
                        "request refused"
                    );
                } else {
                    tracing::info!(
                        status = status.as_u16(),
                        took_ms = ms,
                        error = msg,
                        suppressed,
                        "request rejected"
                    );
                }
            }
        }
        _ => tracing::debug!(status = status.as_u16(), took_ms = ms, "request served"),
    }
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    if state.0.health.is_shutting_down() {
        // Clients must not reuse a connection that is about to close.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    Search,
    Admin,
}

fn need(method: &Method, path: &str, protect_metrics: bool) -> Need {
    match path {
        "/livez" | "/readyz" | "/v1/openapi.json" => return Need::Nothing,
        "/metrics" => {
            return if protect_metrics {
                Need::Admin
            } else {
                Need::Nothing
            };
        }
        _ => {}
    }
    let read = *method == Method::GET || *method == Method::HEAD;
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "indexes"] if read => Need::Search,
        ["v1", "indexes", _] if read => Need::Search,
        ["v1", "indexes", _, "search"] if read || *method == Method::POST => Need::Search,
        ["v1", "indexes", _, "documents", _] if read => Need::Search,
        _ => Need::Admin,
    }
}

fn key_in(key: &[u8], keys: &[String]) -> bool {
    // Compare against every key, without stopping early, in constant time per key.
    keys.iter().fold(false, |found, k| {
        found | bool::from(k.as_bytes().ct_eq(key))
    })
}

/// Refuses request bodies in a content encoding (gzip, br...): they are not decoded, and
/// reading compressed bytes as JSON would only report every line as malformed.
pub(crate) async fn refuse_encoded_bodies(req: Request, next: Next) -> Response {
    if let Some(enc) = req.headers().get(header::CONTENT_ENCODING) {
        let enc = String::from_utf8_lossy(enc.as_bytes())
            .trim()
            .to_ascii_lowercase();
        if !enc.is_empty() && enc != "identity" {
            return ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("Content-Encoding {enc:?} is not accepted; send the body uncompressed"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Checks `Authorization: Bearer <key>` when keys are configured. Keys are never logged.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let cfg = &state.0.config;
    if cfg.admin_keys.is_empty() && cfg.search_keys.is_empty() {
        return next.run(req).await;
    }
    let need = need(req.method(), req.uri().path(), cfg.protect_metrics);
    if need == Need::Nothing {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110 section 11.1).
            let (scheme, rest) = v.trim_start().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest)
        })
        .map(str::trim);
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return unauthenticated("an API key is required: send `Authorization: Bearer <key>`");
    };
    let is_admin = key_in(token.as_bytes(), &cfg.admin_keys);
    let is_search = key_in(token.as_bytes(), &cfg.search_keys);
    match (need, is_admin, is_search) {
        (_, true, _) | (Need::Search, _, true) => next.run(req).await,
        (Need::Admin, false, true) => ApiError::new(
            ErrorCode::PermissionDenied,
            "this operation needs an admin key; a search key was given",
        )
        .into_response(),
        _ => unauthenticated("the API key is not valid"),
    }
}

fn unauthenticated(msg: &str) -> Response {
    let mut resp = ApiError::new(ErrorCode::Unauthenticated, msg).into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_right_key() {
        let g = Method::GET;
        let p = Method::POST;
        let d = Method::DELETE;
        assert_eq!(need(&g, "/livez", true), Need::Nothing);
        assert_eq!(need(&g, "/metrics", false), Need::Nothing);
        assert_eq!(need(&g, "/metrics", true), Need::Admin);
        assert_eq!(need(&g, "/v1/indexes", false), Need::Search);
        assert_eq!(need(&p, "/v1/indexes", false), Need::Admin);
        assert_eq!(need(&g, "/v1/indexes/a/search", false), Need::Search);
        assert_eq!(need(&p, "/v1/indexes/a/search", false), Need::Search);
        assert_eq!(need(&g, "/v1/indexes/a/documents/1", false), Need::Search);
        assert_eq!(need(&d, "/v1/indexes/a/documents/1", false), Need::Admin);
        assert_eq!(need(&p, "/v1/indexes/a/documents", false), Need::Admin);
        assert_eq!(need(&g, "/v1/admin/errors", false), Need::Admin);
        assert_eq!(need(&d, "/v1/indexes/a", false), Need::Admin);
    }

    #[test]
    fn key_lookup() {
        let keys = vec!["alpha".to_string(), "beta".to_string()];
        assert!(key_in(b"beta", &keys));
        assert!(!key_in(b"bet", &keys));
        assert!(!key_in(b"", &keys));
    }
}
