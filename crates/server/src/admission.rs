//! Admission control for the HTTP service, built from `resilience`: per-client rate limits,
//! separate bulkheads for searching and indexing, a breaker per index, and the result cache
//! that answers (flagged `degraded`) when the breaker is open or the service is overloaded;
//! and the chaos drill's fault injection ([`resilience::ChaosLayer`] around each search's work).
//!
//! Health, readiness, metrics and the OpenAPI document bypass all of it.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use resilience::{
    BreakerConfig, BreakerRegistry, Bulkhead, KeyedRateLimiter, Rejected, ResultCache, Weighted,
    quota_per_second,
};
use search_error::ErrorCode;

use crate::error::ApiError;
use crate::listener::ClientAddr;
use crate::state::AppState;

/// Settings of admission control (part of [`crate::ServerConfig`]).
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// Searches running at once (default: one per core).
    pub search_concurrency: usize,
    /// Searches that may wait for a slot; beyond, or when the wait would outlast the request's
    /// deadline, a search is refused at once with 503 + `Retry-After` (default 64).
    pub search_queue: usize,
    /// Writes (document batches, deletes, commits, snapshots) running at once (default 4;
    /// they share the index's writer and its log fsyncs).
    pub index_concurrency: usize,
    /// Writes that may wait for a slot (default 256).
    pub index_queue: usize,
    /// Requests per second allowed per client (API key, else IP address); 0 disables (default).
    pub rate_limit: u32,
    /// Burst allowed above the rate (default: twice the rate).
    pub rate_burst: u32,
    /// Clients tracked by the rate limiter; more share one overflow budget (default 100,000).
    pub rate_limit_keys: usize,
    /// Memory for cached search answers (default 64 MiB; 0 disables the cache).
    pub cache_bytes: usize,
    /// Fault injection for chaos drills (off by default; also settable at
    /// `PUT /v1/admin/chaos`).
    pub chaos: ChaosConfig,
    /// The per-index search breaker: opens when this percentage of the last `breaker_window`
    /// searches failed for server-side reasons (default 50).
    pub breaker_failure_rate: f64,
    /// Searches in the breaker's window (default 50); rates count once 10 are in.
    pub breaker_window: u32,
    /// First open period; it doubles (with jitter) on each re-opening, up to 60 s (default 5 s).
    pub breaker_open: std::time::Duration,
}

/// Faults injected into search execution, inside the breaker's scope, for chaos drills: the
/// settings of `PUT /v1/admin/chaos` and the `--chaos-*` flags. They drive a
/// [`resilience::ChaosLayer`] around each search's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosConfig {
    /// Fraction of searches failing with an injected error (0 to 1).
    #[serde(default)]
    pub search_error_rate: f64,
    /// Latency added to every search, in milliseconds.
    #[serde(default)]
    pub search_latency_ms: u64,
    /// Fraction of searches that panic (0 to 1): shows that a panic is contained.
    #[serde(default)]
    pub search_panic_rate: f64,
}

impl ChaosConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.search_error_rate) {
            return Err(format!(
                "search_error_rate must be between 0 and 1, not {}",
                self.search_error_rate
            ));
        }
        if !(0.0..=1.0).contains(&self.search_panic_rate) {
            return Err(format!(
                "search_panic_rate must be between 0 and 1, not {}",
                self.search_panic_rate
            ));
        }
        if self.search_latency_ms > 60_000 {
            return Err("search_latency_ms must be at most 60000".into());
        }
        Ok(())
    }

    /// The same faults as settings of the generic layer: the latency applies to every search.
    fn to_layer(self) -> resilience::ChaosConfig {
        let latency = std::time::Duration::from_millis(self.search_latency_ms);
        resilience::ChaosConfig::default()
            .with_error_rate(self.search_error_rate)
            .with_panic_rate(self.search_panic_rate)
            .with_latency(latency, if latency.is_zero() { 0.0 } else { 1.0 })
    }

    fn from_layer(c: resilience::ChaosConfig) -> ChaosConfig {
        ChaosConfig {
            search_error_rate: c.error_rate,
            search_latency_ms: if c.latency_rate > 0.0 {
                u64::try_from(c.latency_min.as_millis()).unwrap_or(u64::MAX)
            } else {
                0
            },
            search_panic_rate: c.panic_rate,
        }
    }
}

/// The live chaos settings of searches (changed at run time by the admin endpoint): a
/// [`resilience::Chaos`] handle, whose [`resilience::ChaosLayer`] wraps the search work in
/// `routes::run_search` (inside the breaker's scope and the bulkhead slot, so injected errors
/// open the breaker and injected latency holds a slot, as a slow search would).
#[derive(Debug)]
pub(crate) struct Chaos {
    handle: resilience::Chaos,
}

impl Chaos {
    fn new(c: ChaosConfig) -> Result<Chaos, String> {
        let chaos = Chaos {
            handle: resilience::Chaos::new("search"),
        };
        chaos.set(c)?;
        Ok(chaos)
    }

    /// Replaces the settings (checked first).
    pub(crate) fn set(&self, c: ChaosConfig) -> Result<(), String> {
        c.validate()?;
        self.handle.set(c.to_layer()).map_err(|e| e.to_string())?;
        if c != ChaosConfig::default() {
            tracing::warn!(?c, "chaos: injecting faults into searches");
        }
        Ok(())
    }

    pub(crate) fn get(&self) -> ChaosConfig {
        ChaosConfig::from_layer(self.handle.config())
    }

    /// The layer injecting the configured faults into a search.
    pub(crate) fn layer(&self) -> resilience::ChaosLayer {
        resilience::ChaosLayer::new(self.handle.clone())
    }
}

/// A search failed by the chaos layer: 503 with `Retry-After`, like a transient fault.
impl From<resilience::Injected> for ApiError {
    fn from(_: resilience::Injected) -> Self {
        ApiError::new(
            ErrorCode::Unavailable,
            "injected fault (chaos drill): the search failed",
        )
        .retry_after(1)
    }
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        AdmissionConfig {
            // One more than the search threads (one per core): when a thread finishes, the
            // next admitted search is already waiting for it in the pool, instead of the
            // thread idling until the async side admits and hands over another. On 2 cores
            // under 64 connections, 3 admitted at a time served 7-13 % more than 2.
            search_concurrency: cores + 1,
            search_queue: 64,
            index_concurrency: 4,
            index_queue: 256,
            rate_limit: 0,
            rate_burst: 0,
            rate_limit_keys: 100_000,
            cache_bytes: 64 << 20,
            chaos: ChaosConfig::default(),
            breaker_failure_rate: 50.0,
            breaker_window: 50,
            breaker_open: std::time::Duration::from_secs(5),
        }
    }
}

/// A cached search answer of one index generation: the start of the response body,
/// `{"hits":[...]`, serialized once (shared, never copied: every answer sends these bytes as
/// they are, followed by its own `,"total":...}`), and the total.
#[derive(Clone)]
pub(crate) struct CachedAnswer {
    pub(crate) generation: u64,
    pub(crate) head: axum::body::Bytes,
    pub(crate) total: Option<u64>,
}

impl Weighted for CachedAnswer {
    fn weight(&self) -> usize {
        // The bytes and the shared handle's bookkeeping (the buffer may hold up to an eighth
        // more as spare room: the caller trims anything beyond that before caching).
        self.head.len() + 32
    }
}

pub(crate) struct Admission {
    pub(crate) search: Bulkhead,
    pub(crate) index: Bulkhead,
    limiter: Option<KeyedRateLimiter<String>>,
    pub(crate) breakers: BreakerRegistry,
    pub(crate) cache: Option<ResultCache<String, CachedAnswer>>,
    pub(crate) chaos: Chaos,
    breaker_config: BreakerConfig,
}

impl Admission {
    pub(crate) fn new(cfg: &AdmissionConfig) -> Result<Admission, String> {
        let e = |what: &str, err: resilience::ConfigError| format!("{what}: {err}");
        let search = Bulkhead::new("search", cfg.search_concurrency.max(1), cfg.search_queue)
            .map_err(|err| e("search concurrency", err))?;
        let index = Bulkhead::new("index", cfg.index_concurrency.max(1), cfg.index_queue)
            .map_err(|err| e("index concurrency", err))?;
        let limiter = if cfg.rate_limit > 0 {
            let burst = if cfg.rate_burst > 0 {
                cfg.rate_burst
            } else {
                cfg.rate_limit.saturating_mul(2)
            };
            let quota =
                quota_per_second(cfg.rate_limit, burst).map_err(|err| e("rate limit", err))?;
            Some(
                KeyedRateLimiter::new("clients", quota, cfg.rate_limit_keys.max(1))
                    .map_err(|err| e("rate limit", err))?,
            )
        } else {
            None
        };
        let cache = if cfg.cache_bytes > 0 {
            Some(ResultCache::new("search", cfg.cache_bytes).map_err(|err| e("cache size", err))?)
        } else {
            None
        };
        let breaker_config = BreakerConfig {
            window: resilience::SlidingWindow::Count(cfg.breaker_window.max(1)),
            failure_rate_threshold: Some(cfg.breaker_failure_rate),
            minimum_calls: 10.min(cfg.breaker_window.max(1)),
            open_wait: resilience::OpenWait::Exponential {
                initial: cfg.breaker_open,
                multiplier: 2.0,
                max: cfg.breaker_open.max(std::time::Duration::from_secs(60)),
                jitter: 0.2,
            },
            ..BreakerConfig::default()
        };
        breaker_config.validate().map_err(|err| e("breaker", err))?;
        let chaos = Chaos::new(cfg.chaos)?;
        Ok(Admission {
            search,
            index,
            limiter,
            breakers: BreakerRegistry::new(),
            cache,
            chaos,
            breaker_config,
        })
    }

    /// The breaker guarding searches on one index (client errors and deadlines never count).
    pub(crate) fn breaker(&self, index: &str) -> Option<Arc<resilience::CircuitBreaker>> {
        self.breakers
            .get_or_insert(&format!("search:{index}"), || self.breaker_config.clone())
            .ok()
    }
}

/// A refusal by a bulkhead as an API error: 503 with `Retry-After` (whole seconds, ≥ 1).
pub(crate) fn shed(r: &Rejected) -> ApiError {
    let what = if &*r.bulkhead == "search" {
        "searches"
    } else {
        "writes"
    };
    ApiError::new(
        ErrorCode::Overloaded,
        format!("too many {what} in progress ({}); retry shortly", r.reason),
    )
    .retry_after(r.retry_after.as_secs_f64().ceil().max(1.0) as u64)
}

/// Who a request comes from, for rate limiting: its API key when it has one (a hash, so the
/// key itself is not kept), else its IP address.
fn client_key(req: &Request) -> Option<String> {
    if let Some(auth) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return Some(format!("key:{:016x}", fnv1a(auth.as_bytes())));
    }
    req.extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|ci| format!("ip:{}", ci.0.0.ip()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Rate limiting middleware: 429 with `Retry-After` once a client exceeds its rate.
pub(crate) async fn rate_limit(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(limiter) = &state.0.admission.limiter else {
        return next.run(req).await;
    };
    if matches!(
        req.uri().path(),
        "/livez" | "/readyz" | "/metrics" | "/v1/openapi.json"
    ) {
        return next.run(req).await;
    }
    let Some(key) = client_key(&req) else {
        return next.run(req).await;
    };
    match limiter.check(&key) {
        Ok(()) => next.run(req).await,
        Err(limited) => {
            let secs = limited.retry_after.as_secs_f64().ceil().max(1.0) as u64;
            ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "rate limit exceeded ({} requests/s per client); retry in {secs} s",
                    state.0.config.admission.rate_limit
                ),
            )
            .retry_after(secs)
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaos_settings_read_back_as_set_and_bad_ones_change_nothing() {
        let chaos = Chaos::new(ChaosConfig::default()).unwrap();
        assert_eq!(chaos.get(), ChaosConfig::default());
        let c = ChaosConfig {
            search_error_rate: 0.3,
            search_latency_ms: 120,
            search_panic_rate: 0.01,
        };
        chaos.set(c).unwrap();
        assert_eq!(chaos.get(), c);
        let bad = ChaosConfig {
            search_error_rate: 1.5,
            ..c
        };
        assert!(chaos.set(bad).unwrap_err().contains("search_error_rate"));
        assert_eq!(chaos.get(), c);
        chaos.set(ChaosConfig::default()).unwrap();
        assert_eq!(chaos.get(), ChaosConfig::default());
    }
}
