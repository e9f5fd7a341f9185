//! Circuit breaker: stop calling a dependency that keeps failing, probe it, resume when healthy.
//!
//! # Algorithm
//!
//! The breaker has three states (after resilience4j and Polly v8):
//!
//! - **Closed**: every call is admitted. Outcomes go into a sliding window, either the last
//!   `N` calls ([`SlidingWindow::Count`]) or the last `N` seconds in per-second buckets
//!   ([`SlidingWindow::Time`]). After each recorded outcome, once the window holds at least
//!   `minimum_calls`, the failure rate and the slow-call rate are compared with their thresholds;
//!   reaching either opens the breaker. Independently, `consecutive_failures` failures in a row
//!   open it (so "open after 5 failures, retry after 30 s" is [`BreakerConfig::consecutive`]).
//! - **Open**: calls are rejected at once with [`BreakerOpen::retry_after`]. The wait is fixed or
//!   grows exponentially with every re-open (reduced by a random jitter, never above its cap).
//!   The first acquire after the wait moves the breaker to half-open; no timer task is needed.
//! - **Half-open**: at most `max_probes` probe calls are admitted (others are rejected fast).
//!   The breaker re-opens as soon as the probes' failures (or slow calls) reach the threshold
//!   rate of `max_probes` (any failure when no rate threshold is set), and closes when all
//!   `max_probes` probes completed without that. A probe that has not reported within
//!   `probe_timeout` counts as failed; this is detected lazily on the next acquire or record.
//!
//! Outcomes are reported through a permit ([`BreakerPermit`]), so blocking work can be wrapped
//! as well as futures. A permit dropped without an outcome is a cancellation: it counts as
//! [`Outcome::Ignored`] (never a failure) and frees its probe slot. Client errors are ignored
//! by the default classifier ([`Outcome::from_result`]).
//!
//! # Concurrency
//!
//! The closed-state path takes no lock: the state is one atomic word (generation and state), the
//! count window is a ring of atomic bytes with atomic totals, the time window per-second buckets
//! of atomics (a lock only when a bucket is recycled, once per second at most). Transitions and
//! the half-open bookkeeping take one mutex. Every permit carries the generation it was issued
//! in; an outcome reported after the breaker changed state is stale and ignored. Counts are
//! exact for sequential use; under contention a call racing with the recycling of a time
//! bucket may be counted in the next second, which the rates tolerate.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use search_error::Classify;
use serde::Serialize;

use crate::clock::{Clock, SplitMix64, SystemClock, nanos};
use crate::error::{ConfigError, ResilienceError};

/// Which calls the closed-state rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last `n` recorded calls (1 ..= 1,000,000).
    Count(u32),
    /// The calls recorded in the last `n` seconds (1 ..= 3,600), in per-second buckets.
    Time(u32),
}

/// How long the breaker stays open before letting probes through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OpenWait {
    /// Always the same wait.
    Fixed(Duration),
    /// `initial × multiplier^(k-1)` for the k-th consecutive opening (reset when the breaker
    /// closes), capped at `max`, then reduced by up to `jitter` × itself at random
    /// (`jitter` in `[0, 1]`): the wait is always within `[w × (1 - jitter), w]`.
    Exponential {
        /// Wait after the first opening.
        initial: Duration,
        /// Growth factor per re-opening (≥ 1).
        multiplier: f64,
        /// Cap on the wait (≥ `initial`).
        max: Duration,
        /// Fraction of the wait that may be randomly taken off, in `[0, 1]`.
        jitter: f64,
    },
}

/// Circuit breaker settings. Checked by [`CircuitBreaker::new`]; see [`BreakerConfig::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// The closed-state window.
    pub window: SlidingWindow,
    /// Open when the failure rate in the window reaches this percentage, in `(0, 100]`.
    pub failure_rate_threshold: Option<f64>,
    /// Open when the rate of calls slower than `slow_call_duration` reaches this percentage.
    pub slow_call_rate_threshold: Option<f64>,
    /// A call taking at least this long is slow (only used with `slow_call_rate_threshold`).
    pub slow_call_duration: Duration,
    /// Rates are evaluated only once the window holds this many calls (≥ 1).
    pub minimum_calls: u32,
    /// Open after this many failures in a row, whatever the rates.
    pub consecutive_failures: Option<u32>,
    /// How long to stay open.
    pub open_wait: OpenWait,
    /// Probes admitted in half-open state (1 ..= 10,000).
    pub max_probes: u32,
    /// A probe that has not reported within this counts as failed (> 0).
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    /// Last 100 calls, open at 50 % failures once 20 calls are seen, no slow-call rule; open
    /// 5 s, doubling per re-opening up to 60 s with 20 % jitter; 3 probes with a 10 s timeout.
    fn default() -> Self {
        Self {
            window: SlidingWindow::Count(100),
            failure_rate_threshold: Some(50.0),
            slow_call_rate_threshold: None,
            slow_call_duration: Duration::from_secs(1),
            minimum_calls: 20,
            consecutive_failures: None,
            open_wait: OpenWait::Exponential {
                initial: Duration::from_secs(5),
                multiplier: 2.0,
                max: Duration::from_secs(60),
                jitter: 0.2,
            },
            max_probes: 3,
            probe_timeout: Duration::from_secs(10),
        }
    }
}

impl BreakerConfig {
    /// Open after `failures` consecutive failures, stay open `open_for`, then one probe: its
    /// success closes the breaker, its failure re-opens it for another `open_for`.
    pub fn consecutive(failures: u32, open_for: Duration) -> Self {
        Self {
            window: SlidingWindow::Count(failures.clamp(1, 1_000_000)),
            failure_rate_threshold: None,
            slow_call_rate_threshold: None,
            slow_call_duration: Duration::from_secs(1),
            minimum_calls: 1,
            consecutive_failures: Some(failures),
            open_wait: OpenWait::Fixed(open_for),
            max_probes: 1,
            probe_timeout: Duration::from_secs(10),
        }
    }

    /// Checks every field; the error names the field and its accepted range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn pct(field: &'static str, v: Option<f64>) -> Result<(), ConfigError> {
            match v {
                Some(p) if !(p.is_finite() && p > 0.0 && p <= 100.0) => Err(ConfigError::new(
                    field,
                    format!("{p} is not a percentage in (0, 100]"),
                )),
                _ => Ok(()),
            }
        }
        match self.window {
            SlidingWindow::Count(n) if !(1..=1_000_000).contains(&n) => {
                return Err(ConfigError::new(
                    "window",
                    format!("count window of {n} calls is not in 1..=1000000"),
                ));
            }
            SlidingWindow::Time(n) if !(1..=3_600).contains(&n) => {
                return Err(ConfigError::new(
                    "window",
                    format!("time window of {n} s is not in 1..=3600"),
                ));
            }
            _ => {}
        }
        pct("failure_rate_threshold", self.failure_rate_threshold)?;
        pct("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        if self.failure_rate_threshold.is_none()
            && self.slow_call_rate_threshold.is_none()
            && self.consecutive_failures.is_none()
        {
            return Err(ConfigError::new(
                "failure_rate_threshold",
                "no failure rate, slow-call rate or consecutive-failure rule: the breaker could never open",
            ));
        }
        if self.slow_call_rate_threshold.is_some() && self.slow_call_duration.is_zero() {
            return Err(ConfigError::new(
                "slow_call_duration",
                "must be > 0 when a slow-call rate threshold is set",
            ));
        }
        if self.minimum_calls == 0 {
            return Err(ConfigError::new("minimum_calls", "must be >= 1"));
        }
        if let SlidingWindow::Count(n) = self.window
            && self.minimum_calls > n
        {
            return Err(ConfigError::new(
                "minimum_calls",
                format!(
                    "{} exceeds the count window of {n} calls: rates would never be evaluated",
                    self.minimum_calls
                ),
            ));
        }
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::new("consecutive_failures", "must be >= 1"));
        }
        if let OpenWait::Exponential {
            initial,
            multiplier,
            max,
            jitter,
        } = self.open_wait
        {
            if initial.is_zero() {
                return Err(ConfigError::new("open_wait.initial", "must be > 0"));
            }
            if !(multiplier.is_finite() && multiplier >= 1.0) {
                return Err(ConfigError::new(
                    "open_wait.multiplier",
                    format!("{multiplier} is not a finite factor >= 1"),
                ));
            }
            if max < initial {
                return Err(ConfigError::new("open_wait.max", "must be >= initial"));
            }
            if !(0.0..=1.0).contains(&jitter) {
                return Err(ConfigError::new(
                    "open_wait.jitter",
                    format!("{jitter} is not in [0, 1]"),
                ));
            }
        }
        if !(1..=10_000).contains(&self.max_probes) {
            return Err(ConfigError::new(
                "max_probes",
                format!("{} is not in 1..=10000", self.max_probes),
            ));
        }
        if self.probe_timeout.is_zero() {
            return Err(ConfigError::new("probe_timeout", "must be > 0"));
        }
        Ok(())
    }
}

/// How a call ended, as far as the breaker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The dependency answered properly.
    Success,
    /// The dependency failed (server error, timeout, unavailable).
    Failure,
    /// Says nothing about the dependency's health (client error, cancellation): not counted.
    Ignored,
}

impl Outcome {
    /// The default classification: `Ok` → success; errors whose code is a client error
    /// (invalid input, not found, …) → ignored; every other error → failure.
    pub fn from_result<T, E: Classify>(result: &Result<T, E>) -> Self {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => Self::from_error(e),
        }
    }

    /// The default classification of an error (see [`Outcome::from_result`]).
    pub fn from_error<E: Classify + ?Sized>(e: &E) -> Self {
        if e.code().is_client_error() {
            Outcome::Ignored
        } else {
            Outcome::Failure
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow; outcomes are recorded.
    Closed,
    /// Calls are rejected until the wait is over.
    Open,
    /// A bounded number of probes decide whether to close or re-open.
    HalfOpen,
}

impl BreakerState {
    /// Stable lowercase name (metric label values, logs).
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The value of the `ironsift_breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub const fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call was refused because the breaker is open (or half-open with every probe slot taken).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker {breaker} is {state}; retry in {retry_after:?}")]
pub struct BreakerOpen {
    /// The breaker's name.
    pub breaker: Arc<str>,
    /// Its state when the call was refused.
    pub state: BreakerState,
    /// Time until probes are let through (open), or until a probe slot may free up
    /// (half-open).
    pub retry_after: Duration,
}

impl Classify for BreakerOpen {
    fn code(&self) -> search_error::ErrorCode {
        search_error::ErrorCode::Unavailable
    }
}

/// A point-in-time view of a breaker, for health checks and an admin endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// The breaker's name.
    pub name: String,
    /// Its current state.
    pub state: BreakerState,
    /// Failure rate in the closed-state window, in percent (`None` with no calls).
    pub failure_rate: Option<f64>,
    /// Slow-call rate in the closed-state window, in percent (`None` with no calls).
    pub slow_rate: Option<f64>,
    /// Calls counted in the window.
    pub calls_in_window: u64,
    /// Failures in a row (closed state).
    pub consecutive_failures: u32,
    /// Seconds since the breaker last opened, while open or half-open.
    pub opened_secs_ago: Option<f64>,
    /// Seconds until probes are let through, while open (0 once due).
    pub next_attempt_in_secs: Option<f64>,
    /// Probes in flight, while half-open.
    pub probes_in_flight: u32,
}

// --- state word -----------------------------------------------------------------------------

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;

fn state_of(word: u64) -> BreakerState {
    match word & 3 {
        CLOSED => BreakerState::Closed,
        OPEN => BreakerState::Open,
        _ => BreakerState::HalfOpen,
    }
}

fn next_word(word: u64, state: u64) -> u64 {
    ((word >> 2).wrapping_add(1) << 2) | state
}

// Outcome bits stored in the windows.
const COUNTED: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

/// Window totals: (calls, failures, slow calls).
type Totals = (u64, u64, u64);

fn rate_reached(count: u64, calls: u64, threshold: f64) -> bool {
    count as f64 * 100.0 >= threshold * calls as f64
}

/// The last N calls: a ring of outcome bytes plus running totals, all atomics.
struct CountWindow {
    slots: Box<[AtomicU8]>,
    next: AtomicU64,
    calls: AtomicI64,
    failures: AtomicI64,
    slow: AtomicI64,
}

impl CountWindow {
    fn new(n: u32) -> Self {
        Self {
            slots: (0..n).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU64::new(0),
            calls: AtomicI64::new(0),
            failures: AtomicI64::new(0),
            slow: AtomicI64::new(0),
        }
    }

    #[inline]
    fn record(&self, bits: u8) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len() as u64;
        // The swap makes each slot's history a sequence: whatever a concurrent recorder
        // replaced is subtracted exactly once, so the totals are exact once recorders finish.
        let old = self.slots[i as usize].swap(bits, Ordering::AcqRel);
        if old != bits {
            let d = |mask: u8| i64::from(bits & mask != 0) - i64::from(old & mask != 0);
            for (counter, mask) in [
                (&self.calls, COUNTED),
                (&self.failures, FAILED),
                (&self.slow, SLOW),
            ] {
                let delta = d(mask);
                if delta != 0 {
                    counter.fetch_add(delta, Ordering::AcqRel);
                }
            }
        }
    }

    #[inline]
    fn totals(&self) -> Totals {
        let get = |c: &AtomicI64| c.load(Ordering::Acquire).max(0) as u64;
        // Recorders add to `calls` before `failures`/`slow`; reading in the opposite order can
        // only under-estimate a rate mid-update, never trip the breaker spuriously.
        let failures = get(&self.failures);
        let slow = get(&self.slow);
        (get(&self.calls), failures, slow)
    }

    fn reset(&self) {
        for s in self.slots.iter() {
            s.store(0, Ordering::Release);
        }
        self.next.store(0, Ordering::Release);
        self.calls.store(0, Ordering::Release);
        self.failures.store(0, Ordering::Release);
        self.slow.store(0, Ordering::Release);
    }
}

struct Bucket {
    /// The second this bucket holds, plus one (0: never used).
    second: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

/// The last N seconds: one bucket of atomic counters per second, recycled in a ring.
struct TimeWindow {
    buckets: Box<[Bucket]>,
    recycle: Mutex<()>,
}

impl TimeWindow {
    fn new(seconds: u32) -> Self {
        Self {
            buckets: (0..seconds)
                .map(|_| Bucket {
                    second: AtomicU64::new(0),
                    calls: AtomicU32::new(0),
                    failures: AtomicU32::new(0),
                    slow: AtomicU32::new(0),
                })
                .collect(),
            recycle: Mutex::new(()),
        }
    }

    fn record(&self, bits: u8, second: u64) {
        let tag = second + 1;
        let b = &self.buckets[(second % self.buckets.len() as u64) as usize];
        let seen = b.second.load(Ordering::Acquire);
        if seen != tag {
            if seen > tag {
                return; // reported so late that its second has left the window
            }
            let _guard = lock(&self.recycle);
            if b.second.load(Ordering::Acquire) < tag {
                b.calls.store(0, Ordering::Release);
                b.failures.store(0, Ordering::Release);
                b.slow.store(0, Ordering::Release);
                b.second.store(tag, Ordering::Release);
            }
        }
        b.calls.fetch_add(1, Ordering::AcqRel);
        if bits & FAILED != 0 {
            b.failures.fetch_add(1, Ordering::AcqRel);
        }
        if bits & SLOW != 0 {
            b.slow.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn totals(&self, second: u64) -> Totals {
        let newest = second + 1;
        let oldest = newest.saturating_sub(self.buckets.len() as u64 - 1);
        let mut t = (0, 0, 0);
        for b in self.buckets.iter() {
            let s = b.second.load(Ordering::Acquire);
            if s != 0 && s >= oldest && s <= newest {
                t.0 += u64::from(b.calls.load(Ordering::Acquire));
                t.1 += u64::from(b.failures.load(Ordering::Acquire));
                t.2 += u64::from(b.slow.load(Ordering::Acquire));
            }
        }
        t
    }

    fn reset(&self) {
        let _guard = lock(&self.recycle);
        for b in self.buckets.iter() {
            b.second.store(0, Ordering::Release);
            b.calls.store(0, Ordering::Release);
            b.failures.store(0, Ordering::Release);
            b.slow.store(0, Ordering::Release);
        }
    }
}

enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

/// State only touched on transitions and in half-open, behind one mutex.
struct Inner {
    rng: SplitMix64,
    /// Consecutive openings without closing (drives the exponential wait).
    open_streak: u32,
    opened_at: Option<u64>,
    next_probe_id: u64,
    /// Probes in flight: (id, start nanos).
    probes: Vec<(u64, u64)>,
    probes_done: u32,
    probes_failed: u32,
    probes_slow: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the breaker's data half-updated in a way
    // that matters more than refusing to work; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Handles {
    state: metrics::Gauge,
    rejected: metrics::Counter,
}

/// A named circuit breaker. Share it with `Arc`; see the [module docs](self) for the algorithm.
pub struct CircuitBreaker {
    name: Arc<str>,
    cfg: BreakerConfig,
    clock: Arc<dyn Clock>,
    epoch: Instant,
    /// `generation << 2 | state`.
    word: AtomicU64,
    /// While open: nanos since `epoch` when probes are let through.
    open_until: AtomicU64,
    consecutive: AtomicU32,
    window: Window,
    /// Whether closed-state calls need the clock (slow-call rule or time window).
    timed: bool,
    inner: Mutex<Inner>,
    metrics: Handles,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// The part of a permit that says what it was issued for.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    word: u64,
    start: u64,
    /// Probe id in half-open, 0 otherwise.
    probe: u64,
}

impl CircuitBreaker {
    /// A breaker on the system clock.
    pub fn new(name: impl Into<Arc<str>>, config: BreakerConfig) -> Result<Self, ConfigError> {
        Self::with_clock(name, config, Arc::new(SystemClock))
    }

    /// A breaker on the given clock (a [`ManualClock`](crate::ManualClock) in tests).
    pub fn with_clock(
        name: impl Into<Arc<str>>,
        config: BreakerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        Self::with_clock_and_seed(name, config, clock, SplitMix64::random_seed())
    }

    /// Like [`CircuitBreaker::with_clock`] with a fixed seed for the open-wait jitter.
    pub fn with_clock_and_seed(
        name: impl Into<Arc<str>>,
        config: BreakerConfig,
        clock: Arc<dyn Clock>,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let name: Arc<str> = name.into();
        let window = match config.window {
            SlidingWindow::Count(n) => Window::Count(CountWindow::new(n)),
            SlidingWindow::Time(n) => Window::Time(TimeWindow::new(n)),
        };
        let timed = config.slow_call_rate_threshold.is_some()
            || matches!(config.window, SlidingWindow::Time(_));
        let labels = [("breaker", name.to_string())];
        let metrics = Handles {
            state: metrics::gauge!("ironsift_breaker_state", &labels),
            rejected: metrics::counter!("ironsift_breaker_rejected_total", &labels),
        };
        metrics.state.set(BreakerState::Closed.gauge_value());
        let epoch = clock.now();
        Ok(Self {
            name,
            cfg: config,
            clock,
            epoch,
            word: AtomicU64::new(CLOSED),
            open_until: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            window,
            timed,
            inner: Mutex::new(Inner {
                rng: SplitMix64::new(seed),
                open_streak: 0,
                opened_at: None,
                next_probe_id: 1,
                probes: Vec::new(),
                probes_done: 0,
                probes_failed: 0,
                probes_slow: 0,
            }),
            metrics,
        })
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// The current state. An open breaker whose wait is over still reports `Open` until the
    /// next acquire moves it to half-open.
    pub fn state(&self) -> BreakerState {
        state_of(self.word.load(Ordering::Acquire))
    }

    #[inline]
    fn now(&self) -> u64 {
        nanos(self.clock.now().saturating_duration_since(self.epoch))
    }

    /// Asks to make a call. In closed state this is a single atomic load (plus a clock read
    /// when the slow-call rule or a time window is configured).
    #[inline]
    pub fn try_acquire(&self) -> Result<BreakerPermit<'_>, BreakerOpen> {
        self.acquire_ticket().map(|ticket| BreakerPermit {
            breaker: self,
            ticket,
            done: false,
        })
    }

    /// Like [`CircuitBreaker::try_acquire`], with a permit that owns an `Arc` of the breaker
    /// (for futures that must be `'static`).
    pub fn try_acquire_owned(self: &Arc<Self>) -> Result<OwnedBreakerPermit, BreakerOpen> {
        self.acquire_ticket().map(|ticket| OwnedBreakerPermit {
            breaker: Arc::clone(self),
            ticket,
            done: false,
        })
    }

    /// Runs `fut` if the breaker admits it and records its outcome with the default
    /// classifier ([`Outcome::from_result`]).
    pub async fn call<T, E, Fut>(&self, fut: Fut) -> Result<T, ResilienceError<E>>
    where
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        self.call_with(fut, Outcome::from_result).await
    }

    /// Runs `fut` if the breaker admits it; `classify` decides what its result means. If the
    /// returned future is dropped before `fut` finishes, nothing is counted.
    pub async fn call_with<T, E, Fut, C>(
        &self,
        fut: Fut,
        classify: C,
    ) -> Result<T, ResilienceError<E>>
    where
        Fut: Future<Output = Result<T, E>>,
        C: FnOnce(&Result<T, E>) -> Outcome,
    {
        let permit = self.try_acquire().map_err(ResilienceError::BreakerOpen)?;
        let result = fut.await;
        permit.record(classify(&result));
        result.map_err(ResilienceError::Inner)
    }

    #[inline]
    fn acquire_ticket(&self) -> Result<Ticket, BreakerOpen> {
        let word = self.word.load(Ordering::Acquire);
        if word & 3 == CLOSED {
            let start = if self.timed { self.now() } else { 0 };
            return Ok(Ticket {
                word,
                start,
                probe: 0,
            });
        }
        self.acquire_slow(word)
    }

    #[cold]
    fn acquire_slow(&self, word: u64) -> Result<Ticket, BreakerOpen> {
        let now = self.now();
        if word & 3 == OPEN {
            let until = self.open_until.load(Ordering::Acquire);
            if now < until {
                return Err(self.reject(BreakerState::Open, Duration::from_nanos(until - now)));
            }
        }
        let mut inner = lock(&self.inner);
        let mut word = self.word.load(Ordering::Acquire);
        match word & 3 {
            CLOSED => {
                return Ok(Ticket {
                    word,
                    start: now,
                    probe: 0,
                });
            }
            OPEN => {
                let until = self.open_until.load(Ordering::Acquire);
                if now < until {
                    drop(inner);
                    return Err(self.reject(BreakerState::Open, Duration::from_nanos(until - now)));
                }
                word = self.transition(&mut inner, word, HALF_OPEN, now);
            }
            _ => {
                word = self.expire_probes(&mut inner, word, now);
                if word & 3 == OPEN {
                    let until = self.open_until.load(Ordering::Acquire);
                    drop(inner);
                    return Err(self.reject(
                        BreakerState::Open,
                        Duration::from_nanos(until.saturating_sub(now)),
                    ));
                }
            }
        }
        let used = inner.probes_done + inner.probes.len() as u32;
        if used < self.cfg.max_probes {
            let id = inner.next_probe_id;
            inner.next_probe_id += 1;
            inner.probes.push((id, now));
            Ok(Ticket {
                word,
                start: now,
                probe: id,
            })
        } else {
            // A slot frees up at the latest when the oldest probe times out.
            let timeout = nanos(self.cfg.probe_timeout);
            let retry = inner
                .probes
                .iter()
                .map(|&(_, start)| start.saturating_add(timeout).saturating_sub(now))
                .min()
                .unwrap_or(0);
            drop(inner);
            Err(self.reject(BreakerState::HalfOpen, Duration::from_nanos(retry)))
        }
    }

    fn reject(&self, state: BreakerState, retry_after: Duration) -> BreakerOpen {
        self.metrics.rejected.increment(1);
        BreakerOpen {
            breaker: Arc::clone(&self.name),
            state,
            retry_after,
        }
    }

    #[inline]
    fn record_ticket(&self, ticket: Ticket, outcome: Outcome) {
        if ticket.probe != 0 {
            return self.record_probe(ticket, outcome);
        }
        if outcome == Outcome::Ignored {
            return;
        }
        let word = self.word.load(Ordering::Acquire);
        if word != ticket.word {
            return; // issued before a transition: stale
        }
        let now = if self.timed { self.now() } else { 0 };
        let mut bits = COUNTED;
        if outcome == Outcome::Failure {
            bits |= FAILED;
        }
        if self.cfg.slow_call_rate_threshold.is_some()
            && now.saturating_sub(ticket.start) >= nanos(self.cfg.slow_call_duration)
        {
            bits |= SLOW;
        }
        let totals = match &self.window {
            Window::Count(w) => {
                w.record(bits);
                w.totals()
            }
            Window::Time(w) => {
                let second = now / 1_000_000_000;
                w.record(bits, second);
                w.totals(second)
            }
        };
        let mut trip = false;
        if outcome == Outcome::Failure {
            let c = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
            trip = self.cfg.consecutive_failures.is_some_and(|n| c >= n);
        } else if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Release);
        }
        trip = trip || self.rates_reached(totals);
        if trip {
            self.trip(word);
        }
    }

    #[inline]
    fn rates_reached(&self, (calls, failures, slow): Totals) -> bool {
        if calls < u64::from(self.cfg.minimum_calls) {
            return false;
        }
        self.cfg
            .failure_rate_threshold
            .is_some_and(|t| rate_reached(failures, calls, t))
            || self
                .cfg
                .slow_call_rate_threshold
                .is_some_and(|t| rate_reached(slow, calls, t))
    }

    #[cold]
    fn trip(&self, word: u64) {
        let mut inner = lock(&self.inner);
        if self.word.load(Ordering::Acquire) == word {
            let now = self.now();
            self.transition(&mut inner, word, OPEN, now);
        }
    }

    #[cold]
    fn record_probe(&self, ticket: Ticket, outcome: Outcome) {
        let mut inner = lock(&self.inner);
        let word = self.word.load(Ordering::Acquire);
        if word != ticket.word {
            return;
        }
        let now = self.now();
        let word = self.expire_probes(&mut inner, word, now);
        if word != ticket.word {
            return;
        }
        let Some(pos) = inner.probes.iter().position(|&(id, _)| id == ticket.probe) else {
            return; // already counted as failed by the probe timeout
        };
        inner.probes.swap_remove(pos);
        if outcome == Outcome::Ignored {
            return; // frees the slot for another probe
        }
        let slow = self.cfg.slow_call_rate_threshold.is_some()
            && now.saturating_sub(ticket.start) >= nanos(self.cfg.slow_call_duration);
        self.count_probe(&mut inner, word, outcome == Outcome::Failure, slow, now);
    }

    /// Counts every probe past `probe_timeout` as failed; returns the (possibly new) word.
    fn expire_probes(&self, inner: &mut Inner, mut word: u64, now: u64) -> u64 {
        let timeout = nanos(self.cfg.probe_timeout);
        while word & 3 == HALF_OPEN {
            let Some(pos) = inner
                .probes
                .iter()
                .position(|&(_, start)| start.saturating_add(timeout) <= now)
            else {
                break;
            };
            let (id, _) = inner.probes.remove(pos);
            tracing::warn!(breaker = %self.name, probe = id, "circuit breaker probe timed out; counted as failed");
            word = self.count_probe(inner, word, true, false, now);
        }
        word
    }

    fn count_probe(&self, inner: &mut Inner, word: u64, failed: bool, slow: bool, now: u64) -> u64 {
        inner.probes_done += 1;
        inner.probes_failed += u32::from(failed);
        inner.probes_slow += u32::from(slow);
        let max = u64::from(self.cfg.max_probes);
        let open = match self.cfg.failure_rate_threshold {
            Some(t) => rate_reached(u64::from(inner.probes_failed), max, t),
            None => inner.probes_failed > 0,
        } || self
            .cfg
            .slow_call_rate_threshold
            .is_some_and(|t| rate_reached(u64::from(inner.probes_slow), max, t));
        if open {
            self.transition(inner, word, OPEN, now)
        } else if inner.probes_done >= self.cfg.max_probes {
            self.transition(inner, word, CLOSED, now)
        } else {
            word
        }
    }

    /// Moves from `word` to `to` (caller holds the lock); returns the new word.
    fn transition(&self, inner: &mut Inner, word: u64, to: u64, now: u64) -> u64 {
        let from = state_of(word);
        let new = next_word(word, to);
        let (calls, failures, slow) = self.totals_at(now);
        match to {
            OPEN => {
                inner.open_streak = inner.open_streak.saturating_add(1);
                let wait = self.open_wait(inner);
                self.open_until
                    .store(now.saturating_add(nanos(wait)), Ordering::Release);
                inner.opened_at = Some(now);
                inner.probes.clear();
                self.consecutive.store(0, Ordering::Release);
                tracing::warn!(
                    breaker = %self.name, from = from.as_str(), to = "open",
                    calls, failures, slow, wait_ms = wait.as_millis() as u64,
                    probes_failed = inner.probes_failed,
                    "circuit breaker opened"
                );
            }
            HALF_OPEN => {
                inner.probes.clear();
                inner.probes_done = 0;
                inner.probes_failed = 0;
                inner.probes_slow = 0;
                tracing::info!(breaker = %self.name, from = from.as_str(), to = "half_open", "circuit breaker half-open: probing");
            }
            _ => {
                match &self.window {
                    Window::Count(w) => w.reset(),
                    Window::Time(w) => w.reset(),
                }
                self.consecutive.store(0, Ordering::Release);
                inner.open_streak = 0;
                inner.opened_at = None;
                inner.probes.clear();
                tracing::info!(breaker = %self.name, from = from.as_str(), to = "closed", "circuit breaker closed");
            }
        }
        self.word.store(new, Ordering::Release);
        let to_state = state_of(new);
        self.metrics.state.set(to_state.gauge_value());
        metrics::counter!(
            "ironsift_breaker_transitions_total",
            "breaker" => self.name.to_string(),
            "from" => from.as_str(),
            "to" => to_state.as_str()
        )
        .increment(1);
        new
    }

    fn open_wait(&self, inner: &mut Inner) -> Duration {
        match self.cfg.open_wait {
            OpenWait::Fixed(d) => d,
            OpenWait::Exponential {
                initial,
                multiplier,
                max,
                jitter,
            } => {
                let exp = i32::try_from(inner.open_streak.saturating_sub(1)).unwrap_or(i32::MAX);
                let grown = initial.as_secs_f64() * multiplier.powi(exp);
                let capped = grown.min(max.as_secs_f64());
                let w = capped * (1.0 - jitter * inner.rng.next_f64());
                Duration::try_from_secs_f64(w).unwrap_or(max).min(max)
            }
        }
    }

    fn totals_at(&self, now: u64) -> Totals {
        match &self.window {
            Window::Count(w) => w.totals(),
            Window::Time(w) => w.totals(now / 1_000_000_000),
        }
    }

    /// A point-in-time view (takes the mutex briefly; not for the hot path).
    pub fn snapshot(&self) -> BreakerSnapshot {
        let inner = lock(&self.inner);
        let now = self.now();
        let word = self.word.load(Ordering::Acquire);
        let state = state_of(word);
        let (calls, failures, slow) = self.totals_at(now);
        let rate = |n: u64| (calls > 0).then(|| n as f64 * 100.0 / calls as f64);
        let secs = |n: u64| Duration::from_nanos(n).as_secs_f64();
        BreakerSnapshot {
            name: self.name.to_string(),
            state,
            failure_rate: rate(failures),
            slow_rate: rate(slow),
            calls_in_window: calls,
            consecutive_failures: self.consecutive.load(Ordering::Acquire),
            opened_secs_ago: match state {
                BreakerState::Closed => None,
                _ => inner.opened_at.map(|t| secs(now.saturating_sub(t))),
            },
            next_attempt_in_secs: (state == BreakerState::Open)
                .then(|| secs(self.open_until.load(Ordering::Acquire).saturating_sub(now))),
            probes_in_flight: if state == BreakerState::HalfOpen {
                inner.probes.len() as u32
            } else {
                0
            },
        }
    }
}

/// Permission to make one call; report how it went with [`success`](Self::success),
/// [`failure`](Self::failure) or [`record`](Self::record). Dropping it unreported counts as
/// [`Outcome::Ignored`] (a cancelled call says nothing about the dependency).
#[must_use = "report the call's outcome; dropping the permit counts it as ignored"]
#[derive(Debug)]
pub struct BreakerPermit<'a> {
    breaker: &'a CircuitBreaker,
    ticket: Ticket,
    done: bool,
}

impl BreakerPermit<'_> {
    /// The call succeeded.
    #[inline]
    pub fn success(self) {
        self.record(Outcome::Success);
    }

    /// The call failed.
    #[inline]
    pub fn failure(self) {
        self.record(Outcome::Failure);
    }

    /// Reports `outcome`; its duration is measured from the acquire.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        self.done = true;
        self.breaker.record_ticket(self.ticket, outcome);
    }

    /// Whether this permit is one of the half-open probes.
    pub fn is_probe(&self) -> bool {
        self.ticket.probe != 0
    }
}

impl Drop for BreakerPermit<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.done {
            self.breaker.record_ticket(self.ticket, Outcome::Ignored);
        }
    }
}

/// [`BreakerPermit`] holding an `Arc` of its breaker, for `'static` futures.
#[must_use = "report the call's outcome; dropping the permit counts it as ignored"]
#[derive(Debug)]
pub struct OwnedBreakerPermit {
    breaker: Arc<CircuitBreaker>,
    ticket: Ticket,
    done: bool,
}

impl OwnedBreakerPermit {
    /// The call succeeded.
    pub fn success(self) {
        self.record(Outcome::Success);
    }

    /// The call failed.
    pub fn failure(self) {
        self.record(Outcome::Failure);
    }

    /// Reports `outcome`; its duration is measured from the acquire.
    pub fn record(mut self, outcome: Outcome) {
        self.done = true;
        self.breaker.record_ticket(self.ticket, outcome);
    }

    /// Whether this permit is one of the half-open probes.
    pub fn is_probe(&self) -> bool {
        self.ticket.probe != 0
    }

    /// The breaker this permit belongs to.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }
}

impl Drop for OwnedBreakerPermit {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.record_ticket(self.ticket, Outcome::Ignored);
        }
    }
}

/// Breakers by name (one per dependency), for sharing and for an admin endpoint.
#[derive(Debug, Default)]
pub struct BreakerRegistry {
    breakers: Mutex<HashMap<String, Arc<CircuitBreaker>>>,
}

impl BreakerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The breaker named `name`, creating it from `config()` if absent.
    pub fn get_or_insert(
        &self,
        name: &str,
        config: impl FnOnce() -> BreakerConfig,
    ) -> Result<Arc<CircuitBreaker>, ConfigError> {
        let mut map = lock(&self.breakers);
        if let Some(b) = map.get(name) {
            return Ok(Arc::clone(b));
        }
        let b = Arc::new(CircuitBreaker::new(name, config())?);
        map.insert(name.to_owned(), Arc::clone(&b));
        Ok(b)
    }

    /// Registers an existing breaker under its name, replacing any previous one.
    pub fn insert(&self, breaker: Arc<CircuitBreaker>) {
        lock(&self.breakers).insert(breaker.name().to_owned(), breaker);
    }

    /// The breaker named `name`, if registered.
    pub fn get(&self, name: &str) -> Option<Arc<CircuitBreaker>> {
        lock(&self.breakers).get(name).cloned()
    }

    /// Snapshots of every breaker, sorted by name.
    pub fn snapshot_all(&self) -> Vec<BreakerSnapshot> {
        let breakers: Vec<_> = lock(&self.breakers).values().cloned().collect();
        let mut snaps: Vec<_> = breakers.iter().map(|b| b.snapshot()).collect();
        snaps.sort_by(|a, b| a.name.cmp(&b.name));
        snaps
    }
}
