//! A memory-bounded LRU cache of results, for degraded answers ("last good answer") when the
//! breaker is open or the service is overloaded.
//!
//! Hand-written rather than a dependency: it is ~150 lines, needs weights in bytes, and the
//! obvious crate with weights (`quick_cache`) uses CLOCK-Pro, not LRU, and is not in the lock
//! file. Entries are spread over 8 shards by key hash, each an `Mutex`-guarded map plus a
//! `BTreeMap` recency index (O(log n) per operation), each with `max_bytes / 8` of the budget;
//! an entry heavier than a shard's budget is not cached. The weight of an entry is given by
//! a weigher function (by default [`Weighted::weight`] of key and value plus their inline
//! sizes, the key counted twice as it is held twice, and a fixed per-entry overhead). Values are cloned out: store `Arc`s.
//! Hits and misses are counted (`ironsift_cache_hits_total`, `ironsift_cache_misses_total`,
//! labelled `cache`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::error::ConfigError;

/// Values that know how many heap bytes they hold.
pub trait Weighted {
    /// Approximate heap bytes owned by the value (not counting `size_of::<Self>()`).
    fn weight(&self) -> usize;
}

impl Weighted for String {
    fn weight(&self) -> usize {
        self.capacity()
    }
}

impl Weighted for Vec<u8> {
    fn weight(&self) -> usize {
        self.capacity()
    }
}

impl Weighted for Arc<str> {
    fn weight(&self) -> usize {
        self.len() + 16
    }
}

impl Weighted for Arc<[u8]> {
    fn weight(&self) -> usize {
        self.len() + 16
    }
}

macro_rules! weightless {
    ($($t:ty),*) => {$(
        impl Weighted for $t {
            fn weight(&self) -> usize {
                0
            }
        }
    )*};
}
weightless!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, bool, char
);

impl<T: Weighted> Weighted for Arc<T> {
    fn weight(&self) -> usize {
        std::mem::size_of::<T>() + 16 + (**self).weight()
    }
}

const SHARDS: usize = 8;
/// Bookkeeping per entry (hash map slot, recency index node), roughly.
const ENTRY_OVERHEAD: usize = 64;

struct Entry<V> {
    value: V,
    weight: usize,
    tick: u64,
}

struct Shard<K, V> {
    map: HashMap<K, Entry<V>>,
    by_age: BTreeMap<u64, K>,
    bytes: usize,
    tick: u64,
}

impl<K: Hash + Eq + Clone, V> Shard<K, V> {
    fn touch(&mut self, key: &K) -> Option<&V> {
        self.tick += 1;
        let tick = self.tick;
        let e = self.map.get_mut(key)?;
        let old = std::mem::replace(&mut e.tick, tick);
        if let Some(k) = self.by_age.remove(&old) {
            self.by_age.insert(tick, k);
        }
        Some(&e.value)
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let e = self.map.remove(key)?;
        self.by_age.remove(&e.tick);
        self.bytes -= e.weight;
        Some(e.value)
    }

    fn evict_oldest(&mut self) -> bool {
        match self.by_age.pop_first() {
            Some((_, k)) => {
                if let Some(e) = self.map.remove(&k) {
                    self.bytes -= e.weight;
                }
                true
            }
            None => false,
        }
    }
}

type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> usize + Send + Sync>;

/// Hit and size figures of a [`ResultCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Lookups that found an entry.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Entries held.
    pub entries: usize,
    /// Weight held, in bytes.
    pub bytes: usize,
    /// Budget, in bytes.
    pub max_bytes: usize,
}

/// A thread-safe, byte-bounded LRU cache; see the [module docs](self).
pub struct ResultCache<K, V> {
    name: Arc<str>,
    shards: Box<[Mutex<Shard<K, V>>]>,
    hasher: foldhash::fast::RandomState,
    shard_budget: usize,
    max_bytes: usize,
    weigher: Weigher<K, V>,
    hits: AtomicU64,
    misses: AtomicU64,
    m_hits: metrics::Counter,
    m_misses: metrics::Counter,
}

impl<K, V> fmt::Debug for ResultCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultCache")
            .field("name", &self.name)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<K, V> ResultCache<K, V>
where
    K: Hash + Eq + Clone + Weighted,
    V: Clone + Weighted,
{
    /// A cache of at most `max_bytes` (≥ 1 KiB) weighing entries by [`Weighted`]: the key
    /// twice (the map and the recency index each hold a copy), the value, and the entry.
    pub fn new(name: impl Into<Arc<str>>, max_bytes: usize) -> Result<Self, ConfigError> {
        Self::with_weigher(name, max_bytes, |k: &K, v: &V| {
            2 * (k.weight() + std::mem::size_of::<K>())
                + v.weight()
                + std::mem::size_of::<Entry<V>>()
        })
    }
}

impl<K, V> ResultCache<K, V>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    /// A cache of at most `max_bytes` (≥ 1 KiB) weighing entries with `weigher` (bytes; a
    /// fixed per-entry overhead is added).
    pub fn with_weigher(
        name: impl Into<Arc<str>>,
        max_bytes: usize,
        weigher: impl Fn(&K, &V) -> usize + Send + Sync + 'static,
    ) -> Result<Self, ConfigError> {
        if max_bytes < 1024 {
            return Err(ConfigError::new(
                "max_bytes",
                format!("{max_bytes} is below the minimum of 1024"),
            ));
        }
        let name: Arc<str> = name.into();
        let label = name.to_string();
        Ok(Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        by_age: BTreeMap::new(),
                        bytes: 0,
                        tick: 0,
                    })
                })
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            shard_budget: max_bytes / SHARDS,
            max_bytes,
            weigher: Arc::new(weigher),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            m_hits: metrics::counter!("ironsift_cache_hits_total", "cache" => label.clone()),
            m_misses: metrics::counter!("ironsift_cache_misses_total", "cache" => label),
            name,
        })
    }

    fn shard(&self, key: &K) -> &Mutex<Shard<K, V>> {
        &self.shards[(self.hasher.hash_one(key) >> 40) as usize % SHARDS]
    }

    /// The cached value for `key` (marks it most recently used).
    pub fn get(&self, key: &K) -> Option<V> {
        let found = lock(self.shard(key)).touch(key).cloned();
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.m_hits.increment(1);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            self.m_misses.increment(1);
        }
        found
    }

    /// Caches `value` under `key`, evicting least recently used entries to make room.
    /// Returns `false` (and caches nothing) if the entry alone exceeds a shard's budget.
    pub fn insert(&self, key: K, value: V) -> bool {
        let weight = (self.weigher)(&key, &value).saturating_add(ENTRY_OVERHEAD);
        let mut shard = lock(self.shard(&key));
        shard.remove(&key);
        if weight > self.shard_budget {
            return false;
        }
        while shard.bytes + weight > self.shard_budget {
            if !shard.evict_oldest() {
                break;
            }
        }
        shard.tick += 1;
        let tick = shard.tick;
        shard.by_age.insert(tick, key.clone());
        shard.bytes += weight;
        shard.map.insert(
            key,
            Entry {
                value,
                weight,
                tick,
            },
        );
        true
    }

    /// Removes and returns the entry for `key`.
    pub fn remove(&self, key: &K) -> Option<V> {
        lock(self.shard(key)).remove(key)
    }

    /// Drops every entry.
    pub fn clear(&self) {
        for s in self.shards.iter() {
            let mut s = lock(s);
            s.map.clear();
            s.by_age.clear();
            s.bytes = 0;
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held (by the weigher's count, overhead included).
    pub fn weight(&self) -> usize {
        self.shards.iter().map(|s| lock(s).bytes).sum()
    }

    /// Hits, misses and size.
    pub fn stats(&self) -> CacheStats {
        let (entries, bytes) = self.shards.iter().fold((0, 0), |(n, b), s| {
            let s = lock(s);
            (n + s.map.len(), b + s.bytes)
        });
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries,
            bytes,
            max_bytes: self.max_bytes,
        }
    }
}
