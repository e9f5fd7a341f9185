//! A registry of live resources, for leak detection and the admin view.
//!
//! Code that holds something worth counting (an index reader, a pooled object, a writer's heap,
//! a temporary file) keeps a [`TrackedResource`] guard next to it; dropping the guard untracks it.
//! Counts and bytes per kind are atomics, so tracking costs two atomic adds plus one short,
//! per-kind lock to record the label and creation time (used for the "oldest" age that makes
//! a leak visible). Process-wide figures (open descriptors, threads) come from `/proc`.
//!
//! Tests take a [`Baseline`], run the scenario, then assert that [`ResourceRegistry::diff`] is
//! clean, or wait for it with [`ResourceRegistry::wait_for_baseline`].

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::procfs::Procfs;

/// Shared handle to the registry; clones are cheap and see the same resources.
#[derive(Clone, Default)]
pub struct ResourceRegistry {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    kinds: RwLock<HashMap<&'static str, Arc<Kind>>>,
    procfs: Procfs,
}

#[derive(Default)]
struct Kind {
    live: AtomicU64,
    bytes: AtomicU64,
    created: AtomicU64,
    slab: Mutex<Slab>,
}

/// Slots for live entries with a free list, so tracking never searches.
#[derive(Default)]
struct Slab {
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
}

struct Entry {
    label: String,
    since: Instant,
    bytes: u64,
}

impl Slab {
    fn insert(&mut self, entry: Entry) -> usize {
        // Free slots past the end are stale (the tail was trimmed); skip them.
        while let Some(slot) = self.free.pop() {
            if let Some(place @ None) = self.entries.get_mut(slot) {
                *place = Some(entry);
                return slot;
            }
        }
        self.entries.push(Some(entry));
        self.entries.len() - 1
    }

    fn remove(&mut self, slot: usize) {
        if let Some(e) = self.entries.get_mut(slot)
            && e.take().is_some()
        {
            self.free.push(slot);
        }
        // Give memory back after a burst: trailing free slots are dropped, and stale free-list
        // entries with them once they dominate.
        while matches!(self.entries.last(), Some(None)) {
            self.entries.pop();
        }
        if self.free.len() > 2 * self.entries.len() + 16 {
            let len = self.entries.len();
            self.free.retain(|&s| s < len);
        }
        if self.entries.is_empty() {
            self.free.clear();
        }
    }

    fn live(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().flatten()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the slab lock leaves it consistent (single push/take), so poisoning
    // is ignored rather than turned into more panics.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl fmt::Debug for ResourceRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceRegistry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

impl ResourceRegistry {
    /// An empty registry reading process figures from the real `/proc`.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry reading process figures from `procfs` (fixtures in tests).
    pub fn with_procfs(procfs: Procfs) -> Self {
        ResourceRegistry {
            inner: Arc::new(Inner {
                kinds: RwLock::default(),
                procfs,
            }),
        }
    }

    fn kind(&self, kind: &'static str) -> Arc<Kind> {
        if let Some(k) = self
            .inner
            .kinds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kind)
        {
            return k.clone();
        }
        self.inner
            .kinds
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind)
            .or_default()
            .clone()
    }

    /// Starts tracking one resource of `kind`; it stays counted until the guard is dropped.
    pub fn track(
        &self,
        kind: &'static str,
        label: impl Into<String>,
        bytes: u64,
    ) -> TrackedResource {
        let state = self.kind(kind);
        state.live.fetch_add(1, Ordering::Relaxed);
        state.bytes.fetch_add(bytes, Ordering::Relaxed);
        state.created.fetch_add(1, Ordering::Relaxed);
        let slot = lock(&state.slab).insert(Entry {
            label: label.into(),
            since: Instant::now(),
            bytes,
        });
        TrackedResource {
            kind_name: kind,
            kind: state,
            slot,
            bytes,
        }
    }

    /// Live resources of `kind` now.
    pub fn live(&self, kind: &str) -> u64 {
        self.get(kind, |k| k.live.load(Ordering::Relaxed))
    }

    /// Bytes accounted to live resources of `kind` now.
    pub fn bytes(&self, kind: &str) -> u64 {
        self.get(kind, |k| k.bytes.load(Ordering::Relaxed))
    }

    fn get(&self, kind: &str, f: impl FnOnce(&Kind) -> u64) -> u64 {
        self.inner
            .kinds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kind)
            .map_or(0, |k| f(k))
    }

    /// The kinds seen so far, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<_> = self
            .inner
            .kinds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        kinds.sort_unstable();
        kinds
    }

    fn kind_list(&self) -> Vec<(&'static str, Arc<Kind>)> {
        self.inner
            .kinds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, k)| (*name, k.clone()))
            .collect()
    }

    /// Every kind's figures plus the process's descriptors and threads.
    pub fn snapshot(&self) -> RegistrySnapshot {
        let now = Instant::now();
        let kinds = self
            .kind_list()
            .into_iter()
            .map(|(name, k)| {
                let slab = lock(&k.slab);
                let oldest = slab.live().min_by_key(|e| e.since);
                let snap = KindSnapshot {
                    live: k.live.load(Ordering::Relaxed),
                    bytes: k.bytes.load(Ordering::Relaxed),
                    created_total: k.created.load(Ordering::Relaxed),
                    oldest_age_ms: oldest.map(|e| millis(now.saturating_duration_since(e.since))),
                    oldest_label: oldest.map(|e| e.label.clone()),
                };
                (name.to_string(), snap)
            })
            .collect();
        RegistrySnapshot {
            kinds,
            process: ProcessSnapshot {
                open_fds: self.inner.procfs.open_fds(),
                threads: self.inner.procfs.threads(),
            },
        }
    }

    /// Up to `limit` live resources of `kind`, oldest first (for hunting a leak).
    pub fn live_entries(&self, kind: &str, limit: usize) -> Vec<LiveEntry> {
        let Some(k) = self
            .inner
            .kinds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kind)
            .cloned()
        else {
            return Vec::new();
        };
        let now = Instant::now();
        let slab = lock(&k.slab);
        let mut entries: Vec<&Entry> = slab.live().collect();
        entries.sort_by_key(|e| e.since);
        entries
            .into_iter()
            .take(limit)
            .map(|e| LiveEntry {
                label: e.label.clone(),
                bytes: e.bytes,
                age_ms: millis(now.saturating_duration_since(e.since)),
            })
            .collect()
    }

    /// Records the current live counts and bytes, descriptors and threads.
    pub fn baseline(&self) -> Baseline {
        Baseline {
            kinds: self
                .kind_list()
                .into_iter()
                .map(|(name, k)| {
                    let figures = (
                        k.live.load(Ordering::Relaxed),
                        k.bytes.load(Ordering::Relaxed),
                    );
                    (name, figures)
                })
                .collect(),
            open_fds: self.inner.procfs.open_fds(),
            threads: self.inner.procfs.threads(),
        }
    }

    /// What changed since `baseline`: kinds whose live count or bytes differ, and the change in
    /// descriptors and threads.
    pub fn diff(&self, baseline: &Baseline) -> RegistryDiff {
        let now = self.baseline();
        let mut kinds = BTreeMap::new();
        let names: std::collections::BTreeSet<&'static str> = now
            .kinds
            .keys()
            .chain(baseline.kinds.keys())
            .copied()
            .collect();
        for name in names {
            let (l0, b0) = baseline.kinds.get(name).copied().unwrap_or((0, 0));
            let (l1, b1) = now.kinds.get(name).copied().unwrap_or((0, 0));
            if (l0, b0) != (l1, b1) {
                kinds.insert(
                    name.to_string(),
                    KindDiff {
                        live: l1 as i64 - l0 as i64,
                        bytes: b1 as i64 - b0 as i64,
                    },
                );
            }
        }
        RegistryDiff {
            kinds,
            open_fds: delta(baseline.open_fds, now.open_fds),
            threads: delta(baseline.threads, now.threads),
        }
    }

    /// Waits (polling every 10 ms) until every kind is back to `baseline`, for resources released
    /// by background tasks; after `timeout`, returns the remaining difference.
    pub async fn wait_for_baseline(
        &self,
        baseline: &Baseline,
        timeout: Duration,
    ) -> Result<(), RegistryDiff> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let diff = self.diff(baseline);
            if diff.is_clean() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(diff);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn delta(before: Option<u64>, after: Option<u64>) -> Option<i64> {
    Some(after? as i64 - before? as i64)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// RAII guard of one tracked resource: dropping it untracks the resource.
#[must_use = "dropping the guard untracks the resource at once"]
pub struct TrackedResource {
    kind_name: &'static str,
    kind: Arc<Kind>,
    slot: usize,
    bytes: u64,
}

impl TrackedResource {
    /// The kind this resource was tracked under.
    pub fn kind(&self) -> &'static str {
        self.kind_name
    }

    /// The bytes currently accounted to it.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Changes the bytes accounted to this resource (a buffer grew, a heap was flushed).
    pub fn set_bytes(&mut self, bytes: u64) {
        if bytes >= self.bytes {
            self.kind
                .bytes
                .fetch_add(bytes - self.bytes, Ordering::Relaxed);
        } else {
            self.kind
                .bytes
                .fetch_sub(self.bytes - bytes, Ordering::Relaxed);
        }
        self.bytes = bytes;
        if let Some(Some(e)) = lock(&self.kind.slab).entries.get_mut(self.slot) {
            e.bytes = bytes;
        }
    }
}

impl fmt::Debug for TrackedResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackedResource")
            .field("kind", &self.kind_name)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Drop for TrackedResource {
    fn drop(&mut self) {
        self.kind.live.fetch_sub(1, Ordering::Relaxed);
        self.kind.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        lock(&self.kind.slab).remove(self.slot);
    }
}

/// Figures of one kind in a [`RegistrySnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindSnapshot {
    /// Resources alive now.
    pub live: u64,
    /// Bytes accounted to them.
    pub bytes: u64,
    /// Resources ever tracked under this kind.
    pub created_total: u64,
    /// Age of the oldest live one, in milliseconds (a steadily growing age hints at a leak).
    pub oldest_age_ms: Option<u64>,
    /// Label of the oldest live one.
    pub oldest_label: Option<String>,
}

/// Process-wide figures read from `/proc` (`None` where unreadable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessSnapshot {
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Threads.
    pub threads: Option<u64>,
}

/// Everything the registry knows, for `/v1/admin/resources`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistrySnapshot {
    /// Per kind, sorted by name.
    pub kinds: BTreeMap<String, KindSnapshot>,
    /// Descriptors and threads of the process.
    pub process: ProcessSnapshot,
}

/// One live resource, as listed by [`ResourceRegistry::live_entries`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveEntry {
    /// The label given when it was tracked.
    pub label: String,
    /// Bytes accounted to it.
    pub bytes: u64,
    /// How long it has been alive, in milliseconds.
    pub age_ms: u64,
}

/// Live counts and process figures at one moment (see [`ResourceRegistry::diff`]).
#[derive(Debug, Clone)]
pub struct Baseline {
    kinds: HashMap<&'static str, (u64, u64)>,
    open_fds: Option<u64>,
    threads: Option<u64>,
}

/// Change of one kind since a [`Baseline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KindDiff {
    /// Change in live count (positive: more alive than at the baseline).
    pub live: i64,
    /// Change in accounted bytes.
    pub bytes: i64,
}

/// What differs from a [`Baseline`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryDiff {
    /// Kinds whose live count or bytes changed.
    pub kinds: BTreeMap<String, KindDiff>,
    /// Change in open descriptors (reported, not part of [`RegistryDiff::is_clean`]: runtimes and
    /// test harnesses open descriptors of their own).
    pub open_fds: Option<i64>,
    /// Change in threads (reported only, like descriptors).
    pub threads: Option<i64>,
}

impl RegistryDiff {
    /// Whether every tracked kind is back to its baseline.
    pub fn is_clean(&self) -> bool {
        self.kinds.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_and_uncount() {
        let reg = ResourceRegistry::new();
        let base = reg.baseline();
        let a = reg.track("reader", "idx-a", 100);
        let mut b = reg.track("reader", "idx-b", 50);
        assert_eq!(reg.live("reader"), 2);
        assert_eq!(reg.bytes("reader"), 150);
        b.set_bytes(10);
        assert_eq!(reg.bytes("reader"), 110);
        b.set_bytes(400);
        assert_eq!(reg.bytes("reader"), 500);
        assert_eq!(b.kind(), "reader");
        let diff = reg.diff(&base);
        assert_eq!(
            diff.kinds["reader"],
            KindDiff {
                live: 2,
                bytes: 500
            }
        );
        assert!(!diff.is_clean());
        drop(a);
        assert_eq!(reg.live("reader"), 1);
        assert_eq!(reg.live_entries("reader", 10)[0].label, "idx-b");
        drop(b);
        assert_eq!(reg.live("reader"), 0);
        assert_eq!(reg.bytes("reader"), 0);
        assert!(reg.diff(&base).is_clean());
        assert_eq!(reg.live("never-seen"), 0);
    }

    #[test]
    fn snapshot_reports_oldest_and_serializes() {
        let reg = ResourceRegistry::new();
        let _old = reg.track("file", "first", 1);
        std::thread::sleep(Duration::from_millis(5));
        let _new = reg.track("file", "second", 2);
        let snap = reg.snapshot();
        let file = &snap.kinds["file"];
        assert_eq!((file.live, file.bytes, file.created_total), (2, 3, 2));
        assert_eq!(file.oldest_label.as_deref(), Some("first"));
        assert!(file.oldest_age_ms.unwrap() >= 5);
        assert!(snap.process.open_fds.unwrap() >= 3);
        assert!(snap.process.threads.unwrap() >= 1);
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["kinds"]["file"]["live"], 2);
        assert!(json["process"]["threads"].is_u64());
        let entries = reg.live_entries("file", 1);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].label, "first");
    }

    #[test]
    fn many_thousands_across_threads() {
        let reg = ResourceRegistry::new();
        let base = reg.baseline();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let reg = reg.clone();
                std::thread::spawn(move || {
                    let mut kept = Vec::new();
                    for i in 0..5_000u64 {
                        let g = reg.track(
                            if i % 2 == 0 { "even" } else { "odd" },
                            format!("{t}/{i}"),
                            i,
                        );
                        if i % 3 == 0 {
                            kept.push(g);
                        }
                    }
                    kept
                })
            })
            .collect();
        let kept: Vec<Vec<TrackedResource>> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        let expected: u64 = kept.iter().map(|v| v.len() as u64).sum();
        assert_eq!(reg.live("even") + reg.live("odd"), expected);
        let snap = reg.snapshot();
        assert_eq!(
            snap.kinds["even"].created_total + snap.kinds["odd"].created_total,
            40_000
        );
        // Dropping on other threads than the ones that tracked.
        let droppers: Vec<_> = kept
            .into_iter()
            .map(|v| std::thread::spawn(move || drop(v)))
            .collect();
        for d in droppers {
            d.join().unwrap();
        }
        assert!(reg.diff(&base).is_clean(), "{:?}", reg.diff(&base));
        assert_eq!(reg.bytes("even"), 0);
    }

    #[tokio::test]
    async fn wait_for_baseline_sees_late_release() {
        let reg = ResourceRegistry::new();
        let base = reg.baseline();
        let guard = reg.track("conn", "late", 0);
        let err = reg
            .wait_for_baseline(&base, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(err.kinds["conn"].live, 1);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(guard);
        });
        reg.wait_for_baseline(&base, Duration::from_secs(5))
            .await
            .unwrap();
    }

    #[test]
    fn slab_reuses_and_shrinks() {
        let reg = ResourceRegistry::new();
        let guards: Vec<_> = (0..1000)
            .map(|i| reg.track("s", i.to_string(), 1))
            .collect();
        drop(guards);
        let k = reg.kind("s");
        let slab = lock(&k.slab);
        assert!(slab.entries.is_empty());
        assert!(slab.free.is_empty());
    }
}
