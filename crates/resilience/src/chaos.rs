//! Chaos drills: injected latency, errors and panics in a share of calls, off unless configured.
//!
//! [`Chaos`] is the shared handle holding the live settings ([`ChaosConfig`]); it can be
//! changed at run time (e.g. from an admin endpoint) and every clone sees the change. On the
//! call path it is atomics only, and a single load when chaos is off. [`ChaosLayer`] puts a
//! service behind it; [`Chaos::draw`] gives the same decisions to code that is not a service.
//!
//! Each call draws, from a seeded generator (SplitMix64 over a call counter, so the same seed
//! and the same order of calls give the same faults):
//! 1. whether it is delayed (`latency_rate`) and by how much (uniform in
//!    `latency_min..=latency_max`; tokio's timer, so paused-clock tests are exact);
//! 2. whether it panics (`panic_rate`); if not, whether it fails (`error_rate`), so the share
//!    of errors is `(1 - panic_rate) * error_rate`.
//!
//! The delay comes first; a failing or panicking call then never reaches the inner service. The
//! injected error is made with `From<Injected>`, so the service keeps its own error type. A
//! panic happens when the call's future is polled: put [`crate::CatchPanicLayer`] (or another
//! panic boundary) outside to show that it is contained. Injections are counted in
//! `ironsift_chaos_injected_total{chaos, kind}` (`kind`: `delay`, `error`, `panic`).
//!
//! ```
//! use std::time::Duration;
//! use resilience::{Chaos, ChaosConfig, ChaosLayer, Injected};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let chaos = Chaos::new("search");
//! let svc = ChaosLayer::new(chaos.clone())
//!     .layer(service_fn(|q: u32| async move { Ok::<_, Injected>(q) }));
//! assert_eq!(svc.clone().oneshot(1).await, Ok(1)); // off by default
//! chaos.set(ChaosConfig::default().with_error_rate(1.0)).unwrap();
//! assert_eq!(svc.clone().oneshot(2).await, Err(Injected));
//! chaos.set(ChaosConfig::default()).unwrap();
//! assert_eq!(svc.oneshot(3).await, Ok(3));
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use search_error::{Classify, ErrorCode};
use tower::{Layer, Service};

use crate::error::ConfigError;

/// Counter of injected faults, by chaos handle and kind (`delay`, `error`, `panic`).
pub const CHAOS_INJECTED_TOTAL: &str = "ironsift_chaos_injected_total";

/// Seed of [`Chaos::new`].
pub const DEFAULT_SEED: u64 = 0x1f0e_5175_c4a0_5eed;

/// What to inject; the default injects nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChaosConfig {
    /// Share of calls (not panicking) that fail with an injected error, 0 to 1.
    pub error_rate: f64,
    /// Share of calls that panic, 0 to 1.
    pub panic_rate: f64,
    /// Share of calls delayed, 0 to 1.
    pub latency_rate: f64,
    /// Shortest delay.
    pub latency_min: Duration,
    /// Longest delay (equal to `latency_min` for a fixed delay).
    pub latency_max: Duration,
}

impl ChaosConfig {
    /// Fails this share of calls.
    pub fn with_error_rate(mut self, rate: f64) -> Self {
        self.error_rate = rate;
        self
    }

    /// Panics in this share of calls.
    pub fn with_panic_rate(mut self, rate: f64) -> Self {
        self.panic_rate = rate;
        self
    }

    /// Delays this share of calls by `delay`.
    pub fn with_latency(self, delay: Duration, rate: f64) -> Self {
        self.with_latency_between(delay, delay, rate)
    }

    /// Delays this share of calls by a duration drawn uniformly between `min` and `max`.
    pub fn with_latency_between(mut self, min: Duration, max: Duration, rate: f64) -> Self {
        self.latency_rate = rate;
        self.latency_min = min;
        self.latency_max = max;
        self
    }

    /// Whether nothing is injected.
    pub fn is_off(&self) -> bool {
        self.error_rate == 0.0
            && self.panic_rate == 0.0
            && (self.latency_rate == 0.0 || self.latency_max.is_zero())
    }

    /// Checks the ranges: rates within 0 to 1, `latency_min <= latency_max`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, rate) in [
            ("error_rate", self.error_rate),
            ("panic_rate", self.panic_rate),
            ("latency_rate", self.latency_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(ConfigError::new(
                    field,
                    format!("must be between 0 and 1, not {rate}"),
                ));
            }
        }
        if self.latency_min > self.latency_max {
            return Err(ConfigError::new(
                "latency_max",
                format!(
                    "must be at least latency_min ({:?}), not {:?}",
                    self.latency_min, self.latency_max
                ),
            ));
        }
        if self.latency_max.as_nanos() > u128::from(u64::MAX) {
            return Err(ConfigError::new("latency_max", "too long"));
        }
        Ok(())
    }
}

/// The error a chaos layer injects; the service's error type is made from it with `From`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("injected fault (chaos drill)")]
pub struct Injected;

impl Classify for Injected {
    fn code(&self) -> ErrorCode {
        ErrorCode::Unavailable
    }
}

/// How an injected fault ends a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with [`Injected`].
    Error,
    /// The call panics.
    Panic,
}

/// What one call gets: a delay first, then possibly a fault instead of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Injection {
    /// Wait this long before going on.
    pub delay: Option<Duration>,
    /// End the call with this instead of making it.
    pub fault: Option<Fault>,
}

/// Counts of what a [`Chaos`] handle injected since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChaosStats {
    /// Calls that drew while chaos was on.
    pub draws: u64,
    /// Calls delayed.
    pub delays: u64,
    /// Calls failed with [`Injected`].
    pub errors: u64,
    /// Calls that panicked.
    pub panics: u64,
}

/// The live chaos settings, shared by every clone and every [`ChaosLayer`] made from it.
#[derive(Debug, Clone)]
pub struct Chaos {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    on: AtomicBool,
    // f64 bits, so a rate reads back exactly as it was set.
    error_rate: AtomicU64,
    panic_rate: AtomicU64,
    latency_rate: AtomicU64,
    latency_min_ns: AtomicU64,
    latency_max_ns: AtomicU64,
    seed: u64,
    calls: AtomicU64,
    delays: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    metrics: [metrics::Counter; 3],
}

impl Chaos {
    /// A handle named `name` (the metric label), off, seeded with [`DEFAULT_SEED`].
    pub fn new(name: &str) -> Self {
        Self::with_seed(name, DEFAULT_SEED)
    }

    /// A handle named `name`, off, whose draws follow `seed`.
    pub fn with_seed(name: &str, seed: u64) -> Self {
        let counter = |kind: &'static str| metrics::counter!(CHAOS_INJECTED_TOTAL, "chaos" => name.to_owned(), "kind" => kind);
        Chaos {
            shared: Arc::new(Shared {
                on: AtomicBool::new(false),
                error_rate: AtomicU64::new(0),
                panic_rate: AtomicU64::new(0),
                latency_rate: AtomicU64::new(0),
                latency_min_ns: AtomicU64::new(0),
                latency_max_ns: AtomicU64::new(0),
                seed,
                calls: AtomicU64::new(0),
                delays: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                panics: AtomicU64::new(0),
                metrics: [counter("delay"), counter("error"), counter("panic")],
            }),
        }
    }

    /// Replaces the settings (checked first). Calls drawing while this runs may see a mix of
    /// the old and the new values.
    pub fn set(&self, cfg: ChaosConfig) -> Result<(), ConfigError> {
        cfg.validate()?;
        let s = &self.shared;
        s.on.store(false, Relaxed);
        s.error_rate.store(cfg.error_rate.to_bits(), Relaxed);
        s.panic_rate.store(cfg.panic_rate.to_bits(), Relaxed);
        s.latency_rate.store(cfg.latency_rate.to_bits(), Relaxed);
        // validate() bounded latency_max to u64 nanoseconds (584 years).
        s.latency_min_ns
            .store(cfg.latency_min.as_nanos() as u64, Relaxed);
        s.latency_max_ns
            .store(cfg.latency_max.as_nanos() as u64, Relaxed);
        s.on.store(!cfg.is_off(), Relaxed);
        Ok(())
    }

    /// The settings now in force.
    pub fn config(&self) -> ChaosConfig {
        let s = &self.shared;
        let rate = |a: &AtomicU64| f64::from_bits(a.load(Relaxed));
        ChaosConfig {
            error_rate: rate(&s.error_rate),
            panic_rate: rate(&s.panic_rate),
            latency_rate: rate(&s.latency_rate),
            latency_min: Duration::from_nanos(s.latency_min_ns.load(Relaxed)),
            latency_max: Duration::from_nanos(s.latency_max_ns.load(Relaxed)),
        }
    }

    /// Whether anything is being injected.
    pub fn is_on(&self) -> bool {
        self.shared.on.load(Relaxed)
    }

    /// What was injected so far.
    pub fn stats(&self) -> ChaosStats {
        let s = &self.shared;
        ChaosStats {
            draws: s.calls.load(Relaxed),
            delays: s.delays.load(Relaxed),
            errors: s.errors.load(Relaxed),
            panics: s.panics.load(Relaxed),
        }
    }

    /// Decides (and counts) what one call gets. Nothing, at the cost of one atomic load, when
    /// chaos is off.
    pub fn draw(&self) -> Injection {
        let s = &self.shared;
        if !s.on.load(Relaxed) {
            return Injection::default();
        }
        let n = s.calls.fetch_add(1, Relaxed);
        let rate = |a: &AtomicU64| f64::from_bits(a.load(Relaxed));
        // Four independent uniforms per call, from consecutive positions of the sequence.
        let u = |k: u64| unit(splitmix64(s.seed, n.wrapping_mul(4).wrapping_add(k)));
        let mut out = Injection::default();
        if u(0) < rate(&s.latency_rate) {
            let min = s.latency_min_ns.load(Relaxed);
            let max = s.latency_max_ns.load(Relaxed).max(min);
            let ns = min + ((max - min) as f64 * u(1)).round() as u64;
            if ns > 0 {
                out.delay = Some(Duration::from_nanos(ns.min(max)));
                s.delays.fetch_add(1, Relaxed);
                s.metrics[0].increment(1);
            }
        }
        if u(2) < rate(&s.panic_rate) {
            out.fault = Some(Fault::Panic);
            s.panics.fetch_add(1, Relaxed);
            s.metrics[2].increment(1);
        } else if u(3) < rate(&s.error_rate) {
            out.fault = Some(Fault::Error);
            s.errors.fetch_add(1, Relaxed);
            s.metrics[1].increment(1);
        }
        out
    }
}

/// Position `i` of the SplitMix64 sequence started at `seed`.
fn splitmix64(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform value in `[0, 1)` from 53 random bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Puts a service behind a [`Chaos`] handle (see the module docs).
#[derive(Debug, Clone)]
pub struct ChaosLayer {
    chaos: Chaos,
}

impl ChaosLayer {
    /// Injects what `chaos` is set to, now and after every later change.
    pub fn new(chaos: Chaos) -> Self {
        Self { chaos }
    }
}

impl<S> Layer<S> for ChaosLayer {
    type Service = ChaosService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ChaosService {
            inner,
            chaos: self.chaos.clone(),
        }
    }
}

/// The service made by [`ChaosLayer`]. Needs a `Clone` inner service: a delayed call calls a
/// clone once the delay is over.
#[derive(Debug, Clone)]
pub struct ChaosService<S> {
    inner: S,
    chaos: Chaos,
}

impl<S, Req> Service<Req> for ChaosService<S>
where
    S: Service<Req> + Clone,
    S::Error: From<Injected>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ChaosFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let Injection { delay, fault } = self.chaos.draw();
        let kind = match (delay, fault) {
            (None, None) => ChaosFutureKind::Running {
                fut: self.inner.call(req),
            },
            (None, Some(fault)) => ChaosFutureKind::Fault { fault: Some(fault) },
            (Some(delay), fault) => {
                // Keep the instance that was polled ready; leave a fresh clone in the service.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ChaosFutureKind::Delayed {
                    sleep: tokio::time::sleep(delay),
                    rest: Some((inner, req)),
                    fault,
                }
            }
        };
        ChaosFuture { kind }
    }
}

pin_project_lite::pin_project! {
    /// Future of [`ChaosService`]: the delay (if any), then the fault or the inner call.
    pub struct ChaosFuture<S: Service<Req>, Req> {
        #[pin]
        kind: ChaosFutureKind<S, Req>,
    }
}

pin_project_lite::pin_project! {
    #[project = ChaosFutureProj]
    enum ChaosFutureKind<S: Service<Req>, Req> {
        Delayed { #[pin] sleep: tokio::time::Sleep, rest: Option<(S, Req)>, fault: Option<Fault> },
        Fault { fault: Option<Fault> },
        Running { #[pin] fut: S::Future },
    }
}

impl<S: Service<Req>, Req> std::fmt::Debug for ChaosFuture<S, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.kind {
            ChaosFutureKind::Delayed { .. } => "ChaosFuture::Delayed",
            ChaosFutureKind::Fault { .. } => "ChaosFuture::Fault",
            ChaosFutureKind::Running { .. } => "ChaosFuture::Running",
        })
    }
}

impl<S, Req> Future for ChaosFuture<S, Req>
where
    S: Service<Req>,
    S::Error: From<Injected>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        loop {
            match kind.as_mut().project() {
                ChaosFutureProj::Delayed { sleep, rest, fault } => {
                    ready!(sleep.poll(cx));
                    if let Some(fault) = *fault {
                        kind.set(ChaosFutureKind::Fault { fault: Some(fault) });
                        continue;
                    }
                    let Some((mut inner, req)) = rest.take() else {
                        return Poll::Pending; // polled after completion
                    };
                    let fut = inner.call(req);
                    kind.set(ChaosFutureKind::Running { fut });
                }
                ChaosFutureProj::Fault { fault } => {
                    return match fault.take() {
                        Some(Fault::Error) => Poll::Ready(Err(S::Error::from(Injected))),
                        Some(Fault::Panic) => panic!("injected panic (chaos drill)"),
                        None => Poll::Pending, // polled after completion
                    };
                }
                ChaosFutureProj::Running { fut } => return fut.poll(cx),
            }
        }
    }
}
