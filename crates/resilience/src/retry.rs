//! Retry with capped exponential backoff, jitter, server hints and a retry budget.
//!
//! Delays follow the AWS Architecture Blog formulas ("Exponential Backoff And Jitter"), with
//! `n` the retry number from 0 and `t = min(cap, base × 2^n)`:
//!
//! | [`Jitter`]     | delay                                  |
//! |----------------|----------------------------------------|
//! | `None`         | `t`                                    |
//! | `Full`         | `rand(0, t)`                           |
//! | `Equal`        | `t/2 + rand(0, t/2)`                   |
//! | `Decorrelated` | `min(cap, rand(base, prev × 3))`, `prev₀ = base` |
//!
//! Only errors the classifier calls retryable are retried. A server hint (`Retry-After`) makes
//! the delay at least the hint; if waiting would pass `max_elapsed`, the retry is not made and
//! the last error is returned. Every retry must also be paid from a [`RetryBudget`] shared by
//! all callers of one target (Finagle's and tower's design): each original call deposits
//! `retry_ratio` of a token, each retry withdraws one, tokens expire after the TTL, and
//! `min_per_sec × ttl` tokens are always available. So over any TTL window,
//! `retries ≤ retry_ratio × calls + min_per_sec × ttl`: a dependency that fails every call sees
//! at most that many extra calls instead of `max_attempts ×` its load.
//!
//! Cancellation-safe: dropping a [`Retry::run`] future (even mid-sleep) leaves nothing behind.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use search_error::Classify;

use crate::clock::{Clock, SplitMix64, SystemClock, nanos};
use crate::error::{ConfigError, ResilienceError};

/// How to randomize backoff delays (see the [module docs](self) for the formulas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// Plain capped exponential backoff.
    None,
    /// Uniform in `[0, t]`.
    Full,
    /// Half fixed, half uniform: `[t/2, t]`.
    Equal,
    /// Uniform in `[base, 3 × previous]`, capped.
    Decorrelated,
}

/// Retry settings; checked by [`Retry::new`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 ..= 100; 1 = never retry).
    pub max_attempts: u32,
    /// First backoff step (> 0).
    pub base: Duration,
    /// Largest backoff (≥ `base`).
    pub cap: Duration,
    /// Randomization.
    pub jitter: Jitter,
    /// No retry starts later than this after the first attempt started (`None`: no bound).
    pub max_elapsed: Option<Duration>,
}

impl Default for RetryPolicy {
    /// 3 attempts, 50 ms base, 2 s cap, full jitter, 10 s overall.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base: Duration::from_millis(50),
            cap: Duration::from_secs(2),
            jitter: Jitter::Full,
            max_elapsed: Some(Duration::from_secs(10)),
        }
    }
}

impl RetryPolicy {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "max_attempts",
                format!("{} is not in 1..=100", self.max_attempts),
            ));
        }
        if self.base.is_zero() {
            return Err(ConfigError::new("base", "must be > 0"));
        }
        if self.cap < self.base {
            return Err(ConfigError::new("cap", "must be >= base"));
        }
        Ok(())
    }

    /// The delay schedule of one call, randomized from `seed`.
    pub fn backoff(&self, seed: u64) -> Backoff {
        Backoff {
            base: nanos(self.base),
            cap: nanos(self.cap),
            jitter: self.jitter,
            retry: 0,
            prev: nanos(self.base),
            rng: SplitMix64::new(seed),
        }
    }
}

/// The successive backoff delays of one call (an endless schedule; the caller stops it).
#[derive(Debug, Clone)]
pub struct Backoff {
    base: u64,
    cap: u64,
    jitter: Jitter,
    retry: u32,
    prev: u64,
    rng: SplitMix64,
}

impl Backoff {
    /// The delay before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        let t = self
            .base
            .saturating_mul(1u64.checked_shl(self.retry).unwrap_or(u64::MAX))
            .min(self.cap);
        self.retry = self.retry.saturating_add(1);
        let d = match self.jitter {
            Jitter::None => t,
            Jitter::Full => self.rng.between(0, t),
            Jitter::Equal => t / 2 + self.rng.between(0, t - t / 2),
            Jitter::Decorrelated => {
                let hi = self.prev.saturating_mul(3).max(self.base);
                let d = self.rng.between(self.base, hi).min(self.cap);
                self.prev = d;
                d
            }
        };
        Duration::from_nanos(d)
    }
}

/// Whether and when an error may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Retrying cannot help (client error, corruption, bug).
    DontRetry,
    /// May succeed later; `retry_after` is the server's hint, if any.
    Retry {
        /// Wait at least this long (e.g. from a `Retry-After` header or a rejection).
        retry_after: Option<Duration>,
    },
}

/// Decides whether an error is worth retrying.
pub trait RetryClassifier<E> {
    /// The decision for `error`.
    fn classify(&self, error: &E) -> RetryDecision;
}

impl<E, F> RetryClassifier<E> for F
where
    F: Fn(&E) -> RetryDecision,
{
    fn classify(&self, error: &E) -> RetryDecision {
        self(error)
    }
}

/// Retries what [`Classify::is_retryable`] says is retryable, without a hint.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl<E: Classify> RetryClassifier<E> for DefaultClassifier {
    fn classify(&self, error: &E) -> RetryDecision {
        if error.is_retryable() {
            RetryDecision::Retry { retry_after: None }
        } else {
            RetryDecision::DontRetry
        }
    }
}

/// For [`ResilienceError`]s: retryable per [`Classify`], hinted by
/// [`ResilienceError::retry_after`] (breaker, rate limit and bulkhead rejections).
#[derive(Debug, Clone, Copy, Default)]
pub struct HintedClassifier;

impl<E: Classify> RetryClassifier<ResilienceError<E>> for HintedClassifier {
    fn classify(&self, error: &ResilienceError<E>) -> RetryDecision {
        if error.is_retryable() {
            RetryDecision::Retry {
                retry_after: error.retry_after(),
            }
        } else {
            RetryDecision::DontRetry
        }
    }
}

const SLOTS: usize = 10;
/// Tokens are counted in thousandths so fractional ratios add up exactly.
const MILLI: i64 = 1000;

#[derive(Debug)]
struct BudgetState {
    /// Net milli-tokens per slot (deposits minus withdrawals).
    slots: [i64; SLOTS],
    current: usize,
    /// Start of the current slot, nanos since `epoch`.
    current_start: u64,
}

/// A token bucket that bounds retries to a fraction of recent traffic; share one per target.
#[derive(Debug)]
pub struct RetryBudget {
    clock: Arc<dyn Clock>,
    epoch: std::time::Instant,
    slot_nanos: u64,
    reserve: i64,
    deposit_amount: i64,
    state: Mutex<BudgetState>,
}

impl RetryBudget {
    /// Retries allowed: `retry_ratio` (0 ..= 1000) per original call over the last `ttl`
    /// (1 s ..= 60 s), plus `min_per_sec` (≤ 1,000,000) per second of `ttl` at any time.
    pub fn new(ttl: Duration, min_per_sec: u32, retry_ratio: f64) -> Result<Self, ConfigError> {
        Self::with_clock(ttl, min_per_sec, retry_ratio, Arc::new(SystemClock))
    }

    /// Like [`RetryBudget::new`] on the given clock.
    pub fn with_clock(
        ttl: Duration,
        min_per_sec: u32,
        retry_ratio: f64,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(ConfigError::new(
                "ttl",
                format!("{ttl:?} is not in 1s..=60s"),
            ));
        }
        if !(retry_ratio.is_finite() && (0.0..=1000.0).contains(&retry_ratio)) {
            return Err(ConfigError::new(
                "retry_ratio",
                format!("{retry_ratio} is not in 0..=1000"),
            ));
        }
        if min_per_sec > 1_000_000 {
            return Err(ConfigError::new(
                "min_per_sec",
                format!("{min_per_sec} is not in 0..=1000000"),
            ));
        }
        let ttl_ms = ttl.as_millis() as i64;
        let epoch = clock.now();
        Ok(Self {
            clock,
            epoch,
            slot_nanos: (nanos(ttl) / SLOTS as u64).max(1),
            reserve: i64::from(min_per_sec) * ttl_ms, // min_per_sec × ttl_secs × MILLI
            deposit_amount: (retry_ratio * MILLI as f64).round() as i64,
            state: Mutex::new(BudgetState {
                slots: [0; SLOTS],
                current: 0,
                current_start: 0,
            }),
        })
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut BudgetState) -> R) -> R {
        let now = nanos(self.clock.now().saturating_duration_since(self.epoch));
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let passed = now.saturating_sub(s.current_start) / self.slot_nanos;
        if passed > 0 {
            for _ in 0..passed.min(SLOTS as u64) {
                s.current = (s.current + 1) % SLOTS;
                let c = s.current;
                s.slots[c] = 0;
            }
            s.current_start += passed * self.slot_nanos;
        }
        f(&mut s)
    }

    /// Records an original call (earns `retry_ratio` of a retry).
    pub fn deposit(&self) {
        let amount = self.deposit_amount;
        self.with_state(|s| {
            let c = s.current;
            s.slots[c] += amount;
        });
    }

    /// Takes one retry from the budget; `false` if it is empty.
    pub fn withdraw(&self) -> bool {
        let reserve = self.reserve;
        self.with_state(|s| {
            let balance = reserve + s.slots.iter().sum::<i64>();
            if balance >= MILLI {
                let c = s.current;
                s.slots[c] -= MILLI;
                true
            } else {
                false
            }
        })
    }

    /// Whole retries available now.
    pub fn balance(&self) -> u64 {
        let reserve = self.reserve;
        self.with_state(|s| ((reserve + s.slots.iter().sum::<i64>()) / MILLI).max(0) as u64)
    }
}

/// Runs an operation with retries; see the [module docs](self).
#[derive(Debug)]
pub struct Retry<C = DefaultClassifier> {
    policy: RetryPolicy,
    budget: Arc<RetryBudget>,
    classifier: C,
    seed: Option<u64>,
    runs: AtomicU64,
}

impl Retry<DefaultClassifier> {
    /// Retries per `policy`, paid from `budget`, classifying with [`DefaultClassifier`].
    pub fn new(policy: RetryPolicy, budget: Arc<RetryBudget>) -> Result<Self, ConfigError> {
        policy.validate()?;
        Ok(Self {
            policy,
            budget,
            classifier: DefaultClassifier,
            seed: None,
            runs: AtomicU64::new(0),
        })
    }
}

impl<C> Retry<C> {
    /// Uses `classifier` to decide which errors are retried.
    pub fn with_classifier<C2>(self, classifier: C2) -> Retry<C2> {
        Retry {
            policy: self.policy,
            budget: self.budget,
            classifier,
            seed: self.seed,
            runs: self.runs,
        }
    }

    /// Makes the jitter deterministic: run `k` uses a generator seeded from `seed` and `k`.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The shared budget.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.budget
    }

    /// Calls `op(attempt)` (attempt 0 first) until it succeeds, fails with an error that is not
    /// retried, attempts or time run out, or the budget is empty; returns the last result.
    pub async fn run<T, E, F, Fut>(&self, mut op: F) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: RetryClassifier<E>,
    {
        let start = tokio::time::Instant::now();
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let seed = match self.seed {
            Some(s) => s ^ run.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            None => SplitMix64::random_seed(),
        };
        let mut backoff = self.policy.backoff(seed);
        self.budget.deposit();
        let mut attempt = 0u32;
        loop {
            let err = match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            attempt += 1;
            if attempt >= self.policy.max_attempts {
                return Err(err);
            }
            let RetryDecision::Retry { retry_after } = self.classifier.classify(&err) else {
                return Err(err);
            };
            let mut delay = backoff.next_delay();
            if let Some(hint) = retry_after {
                delay = delay.max(hint);
            }
            if let Some(max) = self.policy.max_elapsed
                && start.elapsed().saturating_add(delay) > max
            {
                metrics::counter!("ironsift_retry_gave_up_total", "reason" => "max_elapsed")
                    .increment(1);
                return Err(err);
            }
            if !self.budget.withdraw() {
                metrics::counter!("ironsift_retry_gave_up_total", "reason" => "budget")
                    .increment(1);
                tracing::debug!(attempt, "retry budget exhausted; not retrying");
                return Err(err);
            }
            metrics::counter!("ironsift_retries_total").increment(1);
            tokio::time::sleep(delay).await;
        }
    }
}
