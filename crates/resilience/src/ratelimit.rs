//! Per-client rate limiting (GCRA from `governor`) over a memory-bounded key table.
//!
//! The decision algorithm is governor's GCRA (one atomic "theoretical arrival time" per key,
//! updated by compare-and-swap). The key table is ours: governor's keyed stores grow without
//! bound and its DashMap store costs more per check. [`KeyedRateLimiter`] plugs a sharded table
//! ([`BoundedKeyedStore`]) into `governor::RateLimiter`: 64 shards of `RwLock<HashTable>`,
//! one foldhash hash per check, a read lock and a CAS on the hit path.
//!
//! # When the table is full
//!
//! The table holds at most `max_keys` keys. A key seen for the first time when it is full is
//! **not** admitted to the table: it is checked against one shared *overflow* state with the
//! same quota, so all such newcomers together get one key's rate (a spray of fresh keys cannot
//! exhaust memory, nor get more than one client's share). The overflow also triggers a sweep (at
//! most once per `sweep_interval`) that drops idle keys, whose state is indistinguishable from a
//! new key's (governor's `retain_recent`), so room comes back as soon as clients go quiet.
//! Keys already in the table are never evicted while active: an attacker cannot push a
//! legitimate, active client out.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::clock::{Clock as GovClock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use hashbrown::HashTable;
use search_error::{Classify, ErrorCode};

use crate::error::ConfigError;

pub use governor::Quota;

/// The caller exceeded its rate limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limited; retry in {retry_after:?}")]
pub struct RateLimited {
    /// Time until the next call for this key would be admitted.
    pub retry_after: Duration,
}

impl Classify for RateLimited {
    fn code(&self) -> ErrorCode {
        ErrorCode::RateLimited
    }
}

/// A quota of `rate_per_sec` calls per second with bursts of up to `burst` calls.
pub fn quota_per_second(rate_per_sec: u32, burst: u32) -> Result<Quota, ConfigError> {
    let rate = NonZeroU32::new(rate_per_sec)
        .ok_or_else(|| ConfigError::new("rate_per_sec", "must be >= 1"))?;
    let burst = NonZeroU32::new(burst).ok_or_else(|| ConfigError::new("burst", "must be >= 1"))?;
    Ok(Quota::per_second(rate).allow_burst(burst))
}

const SHARDS: usize = 64;

/// One shard of the key table: key → GCRA state (theoretical arrival time, 0 = unused).
type Shard<K> = RwLock<HashTable<(K, AtomicU64)>>;

struct Shared<K> {
    hasher: foldhash::fast::RandomState,
    shards: Box<[Shard<K>]>,
    len: AtomicUsize,
    max_keys: usize,
    overflow: AtomicU64,
    overflow_pending: AtomicBool,
}

/// A keyed `governor` state store holding at most `max_keys` keys (see the module docs).
pub struct BoundedKeyedStore<K> {
    shared: Arc<Shared<K>>,
}

impl<K> fmt::Debug for BoundedKeyedStore<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedKeyedStore")
            .field("len", &self.shared.len.load(Ordering::Relaxed))
            .field("max_keys", &self.shared.max_keys)
            .finish()
    }
}

/// Governor's compare-and-swap loop on one state word (0 = never used).
#[inline]
fn measure_and_replace_one<T, F, E>(state: &AtomicU64, f: F) -> Result<T, E>
where
    F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
{
    let decode = |v: u64| (v != 0).then(|| Nanos::from(v));
    let mut prev = state.load(Ordering::Acquire);
    loop {
        let (result, new) = f(decode(prev))?;
        match state.compare_exchange_weak(prev, new.as_u64(), Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => return Ok(result),
            Err(actual) => prev = actual,
        }
    }
}

impl<K: Hash + Eq + Clone> Shared<K> {
    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K> {
        // Middle bits: hashbrown uses the low bits for the bucket and the top 7 for tags.
        &self.shards[((hash >> 32) as usize) & (SHARDS - 1)]
    }

    fn reserve(&self) -> bool {
        self.len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_keys).then_some(n + 1)
            })
            .is_ok()
    }
}

impl<K: Hash + Eq + Clone> StateStore for BoundedKeyedStore<K> {
    type Key = K;

    #[inline]
    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let s = &*self.shared;
        let hash = s.hasher.hash_one(key);
        let shard = s.shard(hash);
        {
            let table = shard.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, state)) = table.find(hash, |(k, _)| k == key) {
                return measure_and_replace_one(state, f);
            }
        }
        if !s.reserve() {
            s.overflow_pending.store(true, Ordering::Release);
            return measure_and_replace_one(&s.overflow, f);
        }
        let mut table = shard.write().unwrap_or_else(|e| e.into_inner());
        let entry = match table.find(hash, |(k, _)| k == key) {
            Some(entry) => {
                s.len.fetch_sub(1, Ordering::AcqRel); // raced with another insert
                entry
            }
            None => table
                .insert_unique(hash, (key.clone(), AtomicU64::new(0)), |(k, _)| {
                    s.hasher.hash_one(k)
                })
                .into_mut(),
        };
        measure_and_replace_one(&entry.1, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for BoundedKeyedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        let s = &*self.shared;
        for shard in s.shards.iter() {
            let mut table = shard.write().unwrap_or_else(|e| e.into_inner());
            let before = table.len();
            table.retain(|(_, state)| state.load(Ordering::Acquire) > drop_below.as_u64());
            s.len.fetch_sub(before - table.len(), Ordering::AcqRel);
        }
    }

    fn shrink_to_fit(&self) {
        let s = &*self.shared;
        for shard in s.shards.iter() {
            let mut table = shard.write().unwrap_or_else(|e| e.into_inner());
            table.shrink_to_fit(|(k, _)| s.hasher.hash_one(k));
        }
    }

    fn len(&self) -> usize {
        self.shared.len.load(Ordering::Acquire)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-key rate limiter with a bounded key table. Keys are e.g. API keys or `IpAddr`s.
///
/// The clock defaults to governor's TSC-based `QuantaClock`; tests pass a
/// `governor::clock::FakeRelativeClock`.
pub struct KeyedRateLimiter<K, C = DefaultClock>
where
    K: Hash + Eq + Clone,
    C: GovClock,
{
    name: Arc<str>,
    limiter: governor::RateLimiter<K, BoundedKeyedStore<K>, C, NoOpMiddleware<C::Instant>>,
    shared: Arc<Shared<K>>,
    sweep_interval: Duration,
    last_sweep: Mutex<Option<C::Instant>>,
    rejected: metrics::Counter,
}

impl<K, C> fmt::Debug for KeyedRateLimiter<K, C>
where
    K: Hash + Eq + Clone,
    C: GovClock,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("name", &self.name)
            .field("keys", &self.shared.len.load(Ordering::Relaxed))
            .field("max_keys", &self.shared.max_keys)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K> {
    /// A limiter on the default clock: `quota` per key, at most `max_keys` keys
    /// (1 ..= 2^26).
    pub fn new(
        name: impl Into<Arc<str>>,
        quota: Quota,
        max_keys: usize,
    ) -> Result<Self, ConfigError> {
        Self::with_clock(name, quota, max_keys, DefaultClock::default())
    }
}

impl<K, C> KeyedRateLimiter<K, C>
where
    K: Hash + Eq + Clone,
    C: GovClock,
{
    /// A limiter on the given governor clock.
    pub fn with_clock(
        name: impl Into<Arc<str>>,
        quota: Quota,
        max_keys: usize,
        clock: C,
    ) -> Result<Self, ConfigError> {
        if !(1..=1 << 26).contains(&max_keys) {
            return Err(ConfigError::new(
                "max_keys",
                format!("{max_keys} is not in 1..=67108864"),
            ));
        }
        let shared = Arc::new(Shared {
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
            len: AtomicUsize::new(0),
            max_keys,
            overflow: AtomicU64::new(0),
            overflow_pending: AtomicBool::new(false),
        });
        let store = BoundedKeyedStore {
            shared: Arc::clone(&shared),
        };
        let name: Arc<str> = name.into();
        let labels = [("limiter", name.to_string())];
        Ok(Self {
            limiter: governor::RateLimiter::new(quota, store, clock),
            shared,
            sweep_interval: Duration::from_secs(1),
            last_sweep: Mutex::new(None),
            rejected: metrics::counter!("ironsift_ratelimit_rejected_total", &labels),
            name,
        })
    }

    /// Sets the minimum time between two sweeps of idle keys (default 1 s).
    pub fn with_sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Admits one call for `key`, or says how long to wait.
    #[inline]
    pub fn check(&self, key: &K) -> Result<(), RateLimited> {
        let result = self.limiter.check_key(key);
        if self.shared.overflow_pending.load(Ordering::Relaxed) {
            self.sweep_if_due();
        }
        match result {
            Ok(()) => Ok(()),
            Err(not_until) => {
                self.rejected.increment(1);
                Err(RateLimited {
                    retry_after: not_until.wait_time_from(self.limiter.clock().now()),
                })
            }
        }
    }

    #[cold]
    fn sweep_if_due(&self) {
        let Ok(mut last) = self.last_sweep.try_lock() else {
            return; // another thread is sweeping
        };
        let now = self.limiter.clock().now();
        let due = match *last {
            None => true,
            Some(t) => Duration::from(now.duration_since(t)) >= self.sweep_interval,
        };
        if due {
            *last = Some(now);
            self.shared.overflow_pending.store(false, Ordering::Release);
            self.limiter.retain_recent();
            tracing::debug!(limiter = %self.name, keys = self.len(), "rate limiter key table full; swept idle keys");
        }
    }

    /// Drops keys whose state is indistinguishable from a new key's.
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
    }

    /// Keys currently in the table.
    pub fn len(&self) -> usize {
        self.shared.len.load(Ordering::Acquire)
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The table's capacity.
    pub fn max_keys(&self) -> usize {
        self.shared.max_keys
    }
}
