//! The HTTP API: handlers and the router.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Json, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use search_core::{IndexKind, SchemaSpec, SearchRequest};
use search_error::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower::ServiceExt;

use crate::admission::CachedAnswer;
use crate::context;
use crate::error::ApiError;
use crate::middleware::{authenticate, request_context};
use crate::state::{AppState, IndexEntry};

type ApiResult = Result<Response, ApiError>;

/// Builds the router. Tests call it directly (`app(state).oneshot(request)`), the binary serves it.
pub fn app(state: AppState) -> Router {
    app_with(Router::new(), state)
}

/// [`app`] plus `extra` routes behind the same layers (auth, request context, panic isolation).
/// For embedders adding routes, and for tests that need a misbehaving handler.
pub fn app_with(extra: Router<AppState>, state: AppState) -> Router {
    let body_limit = state.0.config.body_limit;
    extra
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/indexes", get(list_indexes).post(create_index))
        .route("/v1/indexes/{name}", get(get_index).delete(delete_index))
        .route("/v1/indexes/{name}/documents", post(add_documents))
        .route(
            "/v1/indexes/{name}/documents/{id}",
            get(get_document).delete(delete_document),
        )
        .route(
            "/v1/indexes/{name}/search",
            get(search_get).post(search_post),
        )
        .route("/v1/indexes/{name}/commit", post(commit))
        .route(
            "/v1/indexes/{name}/snapshots",
            get(list_snapshots).post(create_snapshot),
        )
        .route("/v1/indexes/{name}/repair", post(repair_index))
        .route("/v1/admin/errors", get(admin_errors))
        .route("/v1/admin/verify", post(admin_verify))
        .route("/v1/admin/tasks", get(admin_tasks))
        .route("/v1/admin/breakers", get(admin_breakers))
        .route("/v1/admin/resources", get(admin_resources))
        .route("/v1/admin/chaos", get(get_chaos).put(put_chaos))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(
            crate::middleware::refuse_encoded_bodies,
        ))
        // Inside authentication: a client is its (valid) API key, or its address.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::admission::rate_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .with_state(state)
}

/// A response with an already encoded JSON body.
fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut r = (status, bytes).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    // sonic-rs escapes strings with SIMD: search answers are mostly document text, and
    // escaping it byte by byte was a sixth of the server's CPU under load.
    match sonic_rs::to_vec(body) {
        Ok(bytes) => json_bytes(status, bytes),
        Err(e) => ApiError::new(
            ErrorCode::Internal,
            format!("response encoding failed: {e}"),
        )
        .into_response(),
    }
}

fn rejection(status: StatusCode, text: String) -> ApiError {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::InvalidInput,
    };
    ApiError::new(code, text)
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        rejection(r.status(), r.body_text())
    }
}
impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        rejection(r.status(), r.body_text())
    }
}
impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        rejection(r.status(), r.body_text())
    }
}

/// A JSON request body that must be an object: serde would otherwise fill a struct from an
/// array too (`["name"]` creating an index, `[]` searching for everything).
struct JsonObject<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S>
    for JsonObject<T>
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let is_json = media_type(req.headers()).is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| rejection(r.status(), r.body_text()))?;
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {}
            first => {
                return Err(ApiError::new(
                    ErrorCode::InvalidInput,
                    format!(
                        "the request body must be a JSON object{}",
                        match first {
                            Some(b'[') => ", not an array",
                            None => ", not empty",
                            _ => "",
                        }
                    ),
                ));
            }
        }
        Ok(JsonObject(Json::<T>::from_bytes(&bytes)?.0))
    }
}

/// Runs synchronous index work off the async threads, in the request's span.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let span = tracing::Span::current();
    let id = context::current_request_id();
    match tokio::task::spawn_blocking(move || {
        let _enter = span.enter();
        crate::pool::at_indexing_priority(f)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(request_id = ?id, "blocking task failed: {e}");
            Err(ApiError::new(
                ErrorCode::Internal,
                "internal error: the operation panicked; the index is unaffected",
            ))
        }
    }
}

async fn livez() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "alive"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let report = state.0.health.report();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = json(status, &report);
    if !report.ready {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    state.refresh_index_gauges();
    let mut r = state.0.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn openapi() -> Response {
    json(StatusCode::OK, &crate::openapi::spec())
}

async fn admin_errors(State(state): State<AppState>) -> Response {
    json(
        StatusCode::OK,
        &serde_json::json!({"errors": state.0.errors.snapshot()}),
    )
}

async fn no_route() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route; see /v1/openapi.json")
}

async fn method_not_allowed() -> Response {
    let mut r = ApiError::new(
        ErrorCode::InvalidInput,
        "method not allowed on this route; see /v1/openapi.json",
    )
    .into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    ApiError::new(
        ErrorCode::Internal,
        "internal error: the request handler panicked",
    )
    .into_response()
}

#[derive(Serialize)]
struct IndexInfo {
    #[serde(flatten)]
    stats: search_core::IndexStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<SchemaSpec>,
}

fn info(entry: &IndexEntry) -> Result<IndexInfo, ApiError> {
    Ok(IndexInfo {
        stats: entry.index.stats()?,
        schema: entry.index.schema_spec().cloned(),
    })
}

async fn list_indexes(State(state): State<AppState>) -> ApiResult {
    let entries = state.entries();
    let infos = blocking(move || {
        entries
            .iter()
            .map(|(_, e)| info(e))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(json(StatusCode::OK, &serde_json::json!({"indexes": infos})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateIndex {
    name: String,
    #[serde(default = "documents")]
    kind: IndexKind,
    #[serde(default)]
    schema: Option<SchemaSpec>,
}

fn documents() -> IndexKind {
    IndexKind::Documents
}

async fn create_index(
    State(state): State<AppState>,
    body: Result<JsonObject<CreateIndex>, ApiError>,
) -> ApiResult {
    let JsonObject(req) = body?;
    let entry = blocking(move || state.create_index(&req.name, req.kind, req.schema)).await?;
    Ok(json(StatusCode::CREATED, &info(&entry)?))
}

async fn get_index(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let Path(name) = name?;
    let entry = state.entry(&name)?;
    let info = blocking(move || info(&entry)).await?;
    Ok(json(StatusCode::OK, &info))
}

async fn delete_index(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let Path(name) = name?;
    let n = name.clone();
    blocking(move || state.delete_index(&n)).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"deleted": true, "name": name}),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WriteParams {
    /// `wait_for` (or `true`): answer once the write is searchable.
    refresh: Option<String>,
}

impl WriteParams {
    fn wait(&self) -> Result<bool, ApiError> {
        match self.refresh.as_deref() {
            None | Some("false") => Ok(false),
            Some("wait_for") | Some("true") | Some("") => Ok(true),
            Some(other) => Err(ApiError::new(
                ErrorCode::InvalidInput,
                format!("refresh must be wait_for, true or false, not {other:?}"),
            )),
        }
    }
}

/// Applies the write's visibility: commit now (`refresh=wait_for`) or let the committer do it.
fn after_write(entry: &IndexEntry, wait: bool) -> Result<(), ApiError> {
    entry.dirty.store(true, Ordering::SeqCst);
    if wait {
        entry.commit()?;
    }
    Ok(())
}

enum Body {
    Array(Vec<Value>),
    Lines,
}

/// A request body as the chunks it arrived in (no copy into one buffer), read within the
/// configured body limit.
struct BodyChunks(Vec<Bytes>);

impl BodyChunks {
    /// The first byte that is not whitespace (nor a UTF-8 byte-order mark).
    fn first_non_space(&self) -> Option<u8> {
        self.0
            .iter()
            .flat_map(|c| c.iter())
            .find(|b| !b.is_ascii_whitespace() && ![0xEF, 0xBB, 0xBF].contains(*b))
            .copied()
    }

    /// The whole body in one buffer (copied unless it came in one chunk), without a leading
    /// UTF-8 byte-order mark.
    fn contiguous(&self) -> Bytes {
        let all = match &self.0[..] {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut all = Vec::with_capacity(many.iter().map(Bytes::len).sum());
                many.iter().for_each(|c| all.extend_from_slice(c));
                Bytes::from(all)
            }
        };
        if all.starts_with(b"\xEF\xBB\xBF") {
            all.slice(3..)
        } else {
            all
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for BodyChunks {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, _: &S) -> Result<Self, ApiError> {
        use axum::RequestExt as _;
        use http_body_util::BodyExt as _;
        let mut body = req.into_limited_body();
        let mut chunks = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                let too_large = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                    || e.to_string().contains("length limit");
                if too_large {
                    ApiError::new(
                        ErrorCode::PayloadTooLarge,
                        "the request body is larger than the configured limit",
                    )
                } else {
                    ApiError::new(
                        ErrorCode::InvalidInput,
                        format!("failed to read the request body: {e}"),
                    )
                }
            })?;
            if let Ok(data) = frame.into_data()
                && !data.is_empty()
            {
                chunks.push(data);
            }
        }
        Ok(BodyChunks(chunks))
    }
}

/// The request's media type (`Content-Type` without parameters), lowercase.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

fn classify_body(headers: &HeaderMap, chunks: &BodyChunks) -> Result<Body, ApiError> {
    let ct = media_type(headers);
    let first = chunks.first_non_space();
    match ct.as_deref() {
        Some(
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/json-lines"
            | "application/jsonlines",
        ) => Ok(Body::Lines),
        None | Some("application/json") => match first {
            Some(b'[') => serde_json::from_slice::<Vec<Value>>(&chunks.contiguous())
                .map(Body::Array)
                .map_err(|e| {
                    ApiError::new(
                        ErrorCode::InvalidInput,
                        format!(
                            "malformed JSON at line {} column {}: {e}",
                            e.line(),
                            e.column()
                        ),
                    )
                }),
            // One object (possibly pretty-printed over several lines), or JSON lines.
            Some(b'{') => match serde_json::from_slice::<Value>(&chunks.contiguous()) {
                Ok(one) => Ok(Body::Array(vec![one])),
                Err(_) => Ok(Body::Lines),
            },
            None => Ok(Body::Lines),
            Some(_) => Err(ApiError::new(
                ErrorCode::InvalidInput,
                "expected a JSON array of objects or JSON lines (one object per line)",
            )),
        },
        Some(other) => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "content type {other:?} is not accepted; use application/json (an array) or \
                 application/x-ndjson (one object per line)"
            ),
        )),
    }
}

async fn add_documents(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<WriteParams>, QueryRejection>,
    headers: HeaderMap,
    body: Result<BodyChunks, ApiError>,
) -> ApiResult {
    let Path(name) = name?;
    let Query(params) = params?;
    let wait = params.wait()?;
    let entry = state.entry(&name)?;
    let body = body?;
    let parsed = classify_body(&headers, &body)?;
    let _slot = write_slot(&state).await?;
    let report = blocking(move || {
        let report = match parsed {
            Body::Lines => entry
                .index
                .ingest_ndjson_chunks(body.0.iter().map(|c| &c[..])),
            Body::Array(items) => entry.index.upsert_many(items),
        };
        // Even a failed batch may have logged and applied its first part: commit it too.
        entry.dirty.store(true, Ordering::SeqCst);
        let report = report?;
        if report.indexed > 0 {
            after_write(&entry, wait)?;
        }
        Ok(report)
    })
    .await?;
    Ok(json(StatusCode::OK, &report))
}

async fn get_document(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let Path((name, id)) = path?;
    let entry = state.entry(&name)?;
    let doc = state
        .0
        .search_pool
        .run(move || {
            entry.index.get(&id)?.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!("document {id:?} not found in index {name:?}"),
                )
            })
        })
        .await?;
    Ok(json(StatusCode::OK, &doc))
}

async fn delete_document(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<WriteParams>, QueryRejection>,
) -> ApiResult {
    let Path((name, id)) = path?;
    let Query(params) = params?;
    let wait = params.wait()?;
    let entry = state.entry(&name)?;
    let id2 = id.clone();
    let _slot = write_slot(&state).await?;
    let existed = blocking(move || {
        let existed = entry.index.delete(&id2)?;
        after_write(&entry, wait)?;
        Ok(existed)
    })
    .await?;
    // The delete is logged and applied whether or not a searchable document had the id: a
    // document written but not yet refreshed is not seen by `existed`, yet deleted. So the
    // answer is a success either way; `found` says what the searchable view held.
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"deleted": true, "id": id, "found": existed}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    q: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
    highlight: Option<bool>,
    count: Option<bool>,
    timeout_ms: Option<u64>,
    complete: Option<bool>,
}

/// Per-request options that are not part of the query itself.
#[derive(Deserialize, Default)]
struct SearchOptions {
    /// Deadline in milliseconds (default and maximum from the configuration).
    timeout_ms: Option<u64>,
    /// Answer 504 rather than partial hits when the deadline passes.
    complete: Option<bool>,
}

impl SearchOptions {
    fn timeout(&self, cfg: &crate::ServerConfig) -> Result<std::time::Duration, ApiError> {
        match self.timeout_ms {
            None => Ok(cfg.search_timeout),
            Some(0) => Err(ApiError::new(
                ErrorCode::InvalidInput,
                "timeout_ms must be at least 1",
            )),
            Some(ms) if u128::from(ms) > cfg.max_search_timeout.as_millis() => Err(ApiError::new(
                ErrorCode::InvalidInput,
                format!(
                    "timeout_ms is {ms}, the limit is {}",
                    cfg.max_search_timeout.as_millis()
                ),
            )),
            Some(ms) => Ok(std::time::Duration::from_millis(ms)),
        }
    }
}

/// The cache key of a search: the index and the normalized request.
fn cache_key(index: &str, req: &SearchRequest) -> String {
    format!(
        "{index}\u{1}{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}",
        req.query.trim(),
        req.limit,
        req.offset,
        req.highlight,
        req.count
    )
}

/// A search answer from its parts: the head (`{"hits":[...]`) was serialized once, on the
/// pool, and goes out as it is, shared with the cache; only the tail is written per answer.
fn search_answer(
    ans: &CachedAnswer,
    started: Instant,
    timed_out: bool,
    degraded: bool,
) -> Response {
    let total = ans
        .total
        .map_or_else(|| "null".to_string(), |t| t.to_string());
    let tail = format!(
        ",\"total\":{total},\"took_ms\":{:.3},\"timed_out\":{timed_out},\"degraded\":{degraded}}}",
        started.elapsed().as_secs_f64() * 1e3
    );
    let body = Chunks([Some(ans.head.clone()), Some(axum::body::Bytes::from(tail))]);
    let mut r = (StatusCode::OK, axum::body::Body::new(body)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A response body of two shared chunks with an exact length (so it goes out with a
/// `Content-Length` and in one vectored write, not chunked): a search answer's hits, often
/// tens of kilobytes of document text, are not copied into a new buffer for each answer.
struct Chunks([Option<axum::body::Bytes>; 2]);

impl http_body::Body for Chunks {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let next = self.0.iter_mut().find_map(Option::take);
        std::task::Poll::Ready(next.map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.iter().flatten().map(|b| b.len() as u64).sum())
    }
}

async fn run_search(
    state: AppState,
    name: String,
    mut req: SearchRequest,
    opts: SearchOptions,
) -> ApiResult {
    let started = Instant::now();
    let entry = state.entry(&name)?;
    let timeout = opts.timeout(&state.0.config)?;
    let deadline = resilience::Deadline::from_timeout(timeout);
    let adm = &state.0.admission;
    let key = cache_key(&name, &req);
    let generation = entry.index.generation();
    if let Some(hit) = adm.cache.as_ref().and_then(|c| c.get(&key))
        && hit.generation == generation
    {
        return Ok(search_answer(&hit, started, false, false));
    }
    // When the index's breaker is open or the service is overloaded, the last answer to the
    // same request (possibly from an older generation) is better than none.
    let fallback = |err: ApiError| -> ApiResult {
        match adm.cache.as_ref().and_then(|c| c.get(&key)) {
            Some(hit) => {
                metrics::counter!(observability::metrics::DEGRADED_ANSWERS).increment(1);
                Ok(search_answer(&hit, started, false, true))
            }
            None => Err(err),
        }
    };
    let permit = match adm
        .breaker(&name)
        .map(|b| b.try_acquire_owned())
        .transpose()
    {
        Ok(p) => p,
        Err(open) => {
            let secs = open.retry_after.as_secs_f64().ceil().max(1.0) as u64;
            return fallback(
                ApiError::new(
                    ErrorCode::Unavailable,
                    format!("searches on index {name:?} have been failing; paused for {secs} s"),
                )
                .retry_after(secs),
            );
        }
    };
    // At critical memory, searches run only if a slot is free now (no queue).
    let admitted = if state.memory_critical() {
        adm.search.try_acquire()
    } else {
        adm.search.acquire(Some(deadline)).await
    };
    let slot = match admitted {
        Ok(slot) => slot,
        Err(rejected) => return fallback(crate::admission::shed(&rejected)),
    };
    // Under pressure, drop the expensive extra (snippets) before refusing anyone.
    let mut degraded = false;
    let snap = adm.search.snapshot();
    if req.highlight && snap.max_queue > 0 && snap.queued * 2 >= snap.max_queue {
        req.highlight = false;
        degraded = true;
    }
    let suspect = state.clone();
    let suspect_name = name.clone();
    // The deadline counts from arrival: time queued for a slot is part of the budget.
    req.deadline = Some(started + timeout);
    req.timeout_ms = None;
    req.allow_partial = !opts.complete.unwrap_or(false);
    let tracked = state.0.registry.track("search", name.clone(), 0);
    let job = SearchJob(Box::new(move || {
        let _tracked = tracked;
        let resp = entry.index.search(&req).inspect_err(|e| {
            if search_error::Classify::code(e) == ErrorCode::DataCorruption {
                suspect.suspect(&suspect_name);
            }
        })?;
        // Sized once from the documents' lengths: a buffer grown by doubling copies what it
        // holds at each step (tens of kilobytes of document text per answer).
        let size: usize = resp
            .hits
            .iter()
            .map(|h| {
                let marks: usize = h
                    .highlights
                    .values()
                    .map(|m| m.fragment.len() + 16 * m.ranges.len() + 64)
                    .sum();
                h.doc.json_size_hint() + h.id.len() + marks + 64
            })
            .sum();
        let mut head = Vec::with_capacity(size + 16);
        head.extend_from_slice(b"{\"hits\":");
        write_hits(&mut head, &resp.hits).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("response encoding failed: {e}"),
            )
        })?;
        Ok((head, resp.total, resp.timed_out))
    }));
    let result = search_work(&state).oneshot(job).await.map_err(|e| match e {
        resilience::ResilienceError::Inner(e) => e,
        resilience::ResilienceError::Panicked(_) => panicked(),
        // Not made by these layers; classified all the same.
        other => ApiError::new(
            search_error::Classify::code(&other),
            "the search was refused",
        ),
    });
    drop(slot);
    let deadline_hit = match &result {
        Ok((_, _, timed_out)) => *timed_out,
        Err(e) => e.code == ErrorCode::Timeout,
    };
    if deadline_hit {
        metrics::counter!(observability::metrics::TIMEOUTS, "operation" => "search").increment(1);
    }
    if let Some(p) = permit {
        // A deadline is the caller's budget, not the index failing: it never trips the breaker.
        p.record(if deadline_hit {
            resilience::Outcome::Ignored
        } else {
            resilience::Outcome::from_result(&result)
        });
    }
    let (mut head, total, timed_out) = result?;
    // Spare room past a size hint that overshot would stay held as long as the answer stays
    // cached: trim it when it is worth a copy.
    if head.capacity() - head.len() > head.len() / 8 {
        head.shrink_to_fit();
    }
    let ans = CachedAnswer {
        generation,
        head: axum::body::Bytes::from(head),
        total,
    };
    if !timed_out
        && !degraded
        && let Some(cache) = &adm.cache
    {
        cache.insert(key, ans.clone());
    }
    Ok(search_answer(&ans, started, timed_out, degraded))
}

/// Writes `hits` as a JSON array, exactly as `Hit`'s `Serialize` would, but copying a
/// document rendered once (`Document::raw_json`) as it is instead of serializing it again.
fn write_hits(out: &mut Vec<u8>, hits: &[search_core::Hit]) -> sonic_rs::Result<()> {
    out.push(b'[');
    for (i, hit) in hits.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let Some(raw) = hit.doc.raw_json() else {
            sonic_rs::to_writer(&mut *out, hit)?;
            continue;
        };
        out.extend_from_slice(b"{\"id\":");
        sonic_rs::to_writer(&mut *out, &hit.id)?;
        out.extend_from_slice(b",\"score\":");
        sonic_rs::to_writer(&mut *out, &hit.score)?;
        out.extend_from_slice(b",\"doc\":");
        out.extend_from_slice(raw.as_bytes());
        if !hit.highlights.is_empty() {
            out.extend_from_slice(b",\"highlights\":");
            sonic_rs::to_writer(&mut *out, &hit.highlights)?;
        }
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}

/// One search's work, run on the search pool. (A struct rather than an alias of the boxed
/// closure: the compiler cannot prove the handler's future `Send` through a trait object's
/// lifetime inside the layers' futures.)
struct SearchJob(Box<dyn FnOnce() -> Result<Searched, ApiError> + Send>);

/// A search's answer, off the pool: the serialized hits, total and `timed_out`.
type Searched = (Vec<u8>, Option<u64>, bool);

/// The search work as a tower service: the chaos layer (faults of a chaos drill, off unless
/// configured) around the search pool, inside a panic boundary for the panics it injects.
/// Panics of the search itself are caught by the pool.
fn search_work(state: &AppState) -> SearchWork {
    tower::ServiceBuilder::new()
        .layer(resilience::CatchPanicLayer::new())
        .layer(state.0.admission.chaos.layer())
        .service(OnSearchPool(state.clone()))
}

/// The service [`search_work`] builds (one per search: a few reference-count increments).
type SearchWork = resilience::layer::CatchPanicService<resilience::ChaosService<OnSearchPool>>;

/// Runs a [`SearchJob`] on the search pool.
#[derive(Clone)]
struct OnSearchPool(AppState);

impl tower::Service<SearchJob> for OnSearchPool {
    type Response = Searched;
    type Error = ApiError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, ApiError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ApiError>> {
        // A full pool is an immediate `Overloaded` answer from `call`, never back-pressure.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: SearchJob) -> Self::Future {
        let state = self.0.clone();
        let work = job.0;
        Box::pin(async move {
            state
                .0
                .search_pool
                .run(move || {
                    crate::pool::note_search();
                    work()
                })
                .await
        })
    }
}

/// What a panic during a search answers (the same as the search pool's).
fn panicked() -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        "internal error: the operation panicked; the index is unaffected",
    )
}

async fn search_get(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> ApiResult {
    let Path(name) = name?;
    let Query(p) = params?;
    let mut req = SearchRequest::new(p.q.unwrap_or_default());
    if let Some(l) = p.limit {
        req.limit = l;
    }
    req.offset = p.offset.unwrap_or(0);
    req.highlight = p.highlight.unwrap_or(false);
    req.count = p.count.unwrap_or(true);
    let opts = SearchOptions {
        timeout_ms: p.timeout_ms,
        complete: p.complete,
    };
    run_search(state, name, req, opts).await
}

async fn search_post(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<SearchOptions>, QueryRejection>,
    body: Result<JsonObject<SearchRequest>, ApiError>,
) -> ApiResult {
    let Path(name) = name?;
    let Query(mut opts) = params?;
    let JsonObject(req) = body?;
    opts.timeout_ms = opts.timeout_ms.or(req.timeout_ms);
    opts.complete = opts.complete.or((!req.allow_partial).then_some(true));
    run_search(state, name, req, opts).await
}

async fn commit(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let Path(name) = name?;
    let entry = state.entry(&name)?;
    let _slot = write_slot(&state).await?;
    let docs = blocking(move || {
        entry.dirty.store(false, Ordering::SeqCst);
        entry.commit()?;
        Ok(entry.index.stats()?.docs)
    })
    .await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"committed": true, "docs": docs}),
    ))
}

async fn create_snapshot(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let Path(name) = name?;
    let entry = state.entry(&name)?;
    let keep = state.0.config.snapshot_keep;
    let _slot = write_slot(&state).await?;
    let info = blocking(move || {
        entry.index.require_documents()?;
        let info = entry.index.snapshot()?;
        entry.index.prune_snapshots(keep)?;
        Ok(info)
    })
    .await?;
    Ok(json(StatusCode::CREATED, &info))
}

async fn list_snapshots(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let Path(name) = name?;
    let entry = state.entry(&name)?;
    let list = blocking(move || Ok(entry.index.snapshots()?)).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "snapshots": list }),
    ))
}

async fn repair_index(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let Path(name) = name?;
    let st = state.clone();
    let report = blocking(move || st.repair(&name)).await?;
    Ok(json(StatusCode::OK, &report))
}

async fn admin_verify(State(state): State<AppState>) -> ApiResult {
    let st = state.clone();
    let reports = blocking(move || Ok(st.verify_all())).await?;
    let sound = reports.iter().all(|r| r.is_sound());
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "sound": sound, "indexes": reports }),
    ))
}

async fn admin_tasks(State(state): State<AppState>) -> ApiResult {
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "tasks": state.0.tasks.stats() }),
    ))
}

async fn admin_breakers(State(state): State<AppState>) -> ApiResult {
    let adm = &state.0.admission;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "breakers": adm.breakers.snapshot_all(),
            "bulkheads": [adm.search.snapshot(), adm.index.snapshot()],
            "cache": adm.cache.as_ref().map(|c| c.stats()),
        }),
    ))
}

/// A slot in the indexing bulkhead: writes beyond its concurrency wait in a short queue;
/// beyond that they are refused at once with 503 + `Retry-After`.
async fn write_slot(state: &AppState) -> Result<resilience::BulkheadPermit, ApiError> {
    if state.memory_critical() {
        return Err(ApiError::new(
            ErrorCode::Overloaded,
            "memory use is at its critical level: writes are refused until it drops; retry shortly",
        )
        .retry_after(2));
    }
    state
        .0
        .admission
        .index
        .acquire(None)
        .await
        .map_err(|r| crate::admission::shed(&r))
}

async fn get_chaos(State(state): State<AppState>) -> ApiResult {
    Ok(json(StatusCode::OK, &state.0.admission.chaos.get()))
}

async fn put_chaos(
    State(state): State<AppState>,
    body: Result<JsonObject<crate::admission::ChaosConfig>, ApiError>,
) -> ApiResult {
    let JsonObject(cfg) = body?;
    state
        .0
        .admission
        .chaos
        .set(cfg)
        .map_err(|e| ApiError::new(ErrorCode::InvalidInput, e))?;
    Ok(json(StatusCode::OK, &cfg))
}

async fn admin_resources(State(state): State<AppState>) -> ApiResult {
    Ok(json(StatusCode::OK, &state.resources()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use search_core::{Catalog, DocCache, IndexConfig, IndexKind, SearchRequest};
    use serde_json::{Value, json};

    /// Hits copied from rendered documents read back exactly as hits serialized field by
    /// field (same keys, values and order of hits), snippets included.
    #[test]
    fn hits_written_from_rendered_documents_match_serialized_hits() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::with_config(
            dir.path(),
            IndexConfig {
                writer_heap_bytes: 20 << 20,
                writer_threads: Some(1),
                doc_cache: Some(Arc::new(DocCache::new(1 << 20))),
                ..IndexConfig::default()
            },
        )
        .unwrap();
        let index = catalog.open_or_create("d", IndexKind::Documents).unwrap();
        for i in 0..30 {
            index
                .upsert(json!({
                    "id": format!("d{i}"),
                    "text": format!("needle {i} \"q\" \\ \u{1}\n\t é 日本 {}", "hay ".repeat(i)),
                    "n": i, "f": 0.1 * i as f64, "ok": i % 2 == 0, "none": null,
                    "nested": {"a": [1, "two", {"b": i}]},
                }))
                .unwrap();
        }
        index.commit().unwrap();
        for highlight in [false, true] {
            let mut req = SearchRequest::new("needle");
            req.limit = 20;
            req.highlight = highlight;
            // The reference: the same index searched without the cache, serialized as usual.
            let plain = Catalog::open(dir.path()).unwrap().open_index("d").unwrap();
            let stored = plain.search(&req).unwrap().hits;
            assert!(stored.iter().all(|h| h.doc.raw_json().is_none()));
            let _ = index.search(&req).unwrap(); // renders and caches
            let second = index.search(&req).unwrap().hits; // from the cache
            assert!(second.iter().all(|h| h.doc.raw_json().is_some()));
            let reference: Value =
                serde_json::from_slice(&sonic_rs::to_vec(&stored).unwrap()).unwrap();
            let mut out = Vec::new();
            super::write_hits(&mut out, &second).unwrap();
            let written: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(written, reference, "highlight {highlight}");
            assert_eq!(written.as_array().unwrap().len(), 20);
        }
    }
}
