//! Shared service state: the open indexes, health, metrics, error reports, configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use observability::errors::ErrorReporter;
use observability::health::{Cached, Health, Outcome};
use observability::metrics::Metrics;
use search_core::{Catalog, CoreError, IndexKind, SchemaSpec, SearchIndex};
use search_error::ErrorCode;

use crate::error::ApiError;

/// Settings of the HTTP service.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted (default 16 MiB).
    pub body_limit: usize,
    /// Keys allowed everything. When this and `search_keys` are empty, no key is required.
    pub admin_keys: Vec<String>,
    /// Keys allowed to search and read documents.
    pub search_keys: Vec<String>,
    /// Require a key for `/metrics` too.
    pub protect_metrics: bool,
    /// How often pending writes are committed (made searchable and durable).
    pub refresh_interval: Duration,
    /// After a shutdown request, how long to keep serving (answering with `Connection: close`,
    /// so clients leave their keep-alive connections) before the listener closes. Without it a
    /// client that reuses an idle connection just as it closes sees a reset (default 500 ms).
    pub drain_delay: Duration,
    /// Threads running searches and reads (default: one per core).
    pub search_threads: usize,
    /// Rate limits, bulkheads, the result cache (see [`crate::AdmissionConfig`]).
    pub admission: crate::admission::AdmissionConfig,
    /// Disk usage above which the service is unready (fraction, default 0.95).
    pub disk_critical: f64,
    /// Memory usage above which the service is unready (fraction of RAM, default 0.95).
    pub memory_critical: f64,
    /// Check every index's files (checksums, presence, log) before serving it (default on).
    pub verify_on_start: bool,
    /// How often every index is checked again in the background (default 1 h; `None`: never).
    pub scrub_interval: Option<Duration>,
    /// How often documents indexes are snapshotted (default 1 h; `None`: never). Repair rolls
    /// back to a snapshot and replays the log; the log is kept back to the oldest snapshot.
    pub snapshot_interval: Option<Duration>,
    /// Snapshots kept per index (default 3).
    pub snapshot_keep: usize,
    /// Memory budget in bytes (default: the cgroup limit, else 80 % of RAM). Above 70 % the
    /// cache is dropped and pending writes flushed; above 85 % writes are refused with 503 and
    /// searches no longer queue; `/readyz` reports it.
    pub memory_limit: Option<u64>,
    /// Deadline of a search without `timeout_ms` (default 2 s).
    pub search_timeout: Duration,
    /// Largest `timeout_ms` accepted (default 30 s).
    pub max_search_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            body_limit: 16 << 20,
            admin_keys: Vec::new(),
            search_keys: Vec::new(),
            protect_metrics: false,
            refresh_interval: Duration::from_secs(1),
            drain_delay: Duration::from_millis(500),
            search_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            admission: crate::admission::AdmissionConfig::default(),
            disk_critical: 0.95,
            memory_critical: 0.95,
            verify_on_start: true,
            scrub_interval: Some(Duration::from_secs(3600)),
            snapshot_interval: Some(Duration::from_secs(3600)),
            snapshot_keep: 3,
            memory_limit: None,
            search_timeout: Duration::from_secs(2),
            max_search_timeout: Duration::from_secs(30),
        }
    }
}

/// Allocator statistics for the memory monitor, set once by the binary that picks the global
/// allocator (the allocator is process-wide, so the hook is too).
static ALLOCATOR_STATS: std::sync::OnceLock<Box<dyn resource_mgmt::AllocatorStats>> =
    std::sync::OnceLock::new();

/// Reads through to the installed [`ALLOCATOR_STATS`].
struct InstalledAllocatorStats;

impl resource_mgmt::AllocatorStats for InstalledAllocatorStats {
    fn read(&self) -> Option<resource_mgmt::AllocatorReading> {
        ALLOCATOR_STATS.get()?.read()
    }
}

/// One open index and its write bookkeeping.
pub(crate) struct IndexEntry {
    pub(crate) index: Arc<SearchIndex>,
    /// Writes since the last commit.
    pub(crate) dirty: AtomicBool,
    /// The last commit failure, cleared by the next success.
    pub(crate) writer_error: Mutex<Option<String>>,
    /// The write-ahead log is being replayed (the index is not ready).
    pub(crate) recovering: AtomicBool,
    /// This open index in the resource registry.
    _tracked: Mutex<Option<resource_mgmt::TrackedResource>>,
    /// Its writer's memory, accounted against the budget while the writer is open.
    pub(crate) writer_memory: Mutex<Option<resource_mgmt::TrackedResource>>,
}

impl IndexEntry {
    fn new(index: SearchIndex) -> Arc<IndexEntry> {
        Arc::new(IndexEntry {
            index: Arc::new(index),
            dirty: AtomicBool::new(false),
            writer_error: Mutex::new(None),
            recovering: AtomicBool::new(false),
            _tracked: Mutex::new(None),
            writer_memory: Mutex::new(None),
        })
    }

    fn tracked(self: Arc<Self>, registry: &resource_mgmt::ResourceRegistry) -> Arc<Self> {
        *self._tracked.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(registry.track("index", self.index.name().to_string(), 0));
        self
    }

    /// Replays the index's write-ahead log (documents indexes), recording a failure where
    /// `/readyz` shows it.
    pub(crate) fn recover(&self) {
        let name = self.index.name().to_string();
        match self.index.recover() {
            Ok(stats) if stats.replayed > 0 || stats.torn_bytes > 0 => tracing::info!(
                index = %name,
                replayed = stats.replayed,
                torn_bytes = stats.torn_bytes,
                "recovered acknowledged writes from the write-ahead log"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(index = %name, error = %e, "write-ahead log recovery failed; writes to this index are refused");
                *self.writer_error.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("recovery failed: {e}"));
            }
        }
        self.recovering.store(false, Ordering::SeqCst);
    }

    /// Commits if anything was written since the last commit; records failures for `/readyz`.
    pub(crate) fn commit_if_dirty(&self) -> Result<(), CoreError> {
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        self.commit()
    }

    pub(crate) fn commit(&self) -> Result<(), CoreError> {
        let result = self.index.commit().map(|_| ());
        let mut err = self.writer_error.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(()) => *err = None,
            Err(e) => {
                // Keep the writes pending so the next tick retries them.
                self.dirty.store(true, Ordering::SeqCst);
                *err = Some(e.to_string());
            }
        }
        result
    }
}

pub(crate) struct Inner {
    pub(crate) catalog: Catalog,
    pub(crate) config: ServerConfig,
    pub(crate) indexes: RwLock<BTreeMap<String, Arc<IndexEntry>>>,
    /// Indexes present on disk that failed to open, with the reason.
    pub(crate) broken: RwLock<BTreeMap<String, String>>,
    pub(crate) health: Health,
    pub(crate) errors: ErrorReporter,
    pub(crate) metrics: Metrics,
    pub(crate) search_pool: crate::pool::Pool,
    /// Live resources (open indexes, searches in flight, writer memory...) for leak checks.
    pub(crate) registry: resource_mgmt::ResourceRegistry,
    /// The process's memory against its budget.
    pub(crate) memory: resource_mgmt::MemoryMonitor,
    /// The sampling task of `memory` (started with the server).
    pub(crate) memory_task: Mutex<Option<resource_mgmt::MonitorTask>>,
    /// Rate limiting, bulkheads, breakers, the result cache.
    pub(crate) admission: crate::admission::Admission,
    /// Background maintenance (scrub, snapshots); jobs are added when serving starts.
    pub(crate) tasks: resource_mgmt::Scheduler,
}

/// Cheap-to-clone handle on the service state.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("data", &self.0.catalog.root())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Includes `stats` (e.g. jemalloc's allocated/resident) in every memory reading of the
    /// services opened after this call. Only the first call counts; returns whether it did.
    pub fn install_allocator_stats(stats: impl resource_mgmt::AllocatorStats) -> bool {
        ALLOCATOR_STATS.set(Box::new(stats)).is_ok()
    }

    /// Opens every index in the catalog. An index that fails to open does not stop the service:
    /// it is listed by `/readyz` (which then answers 503) and requests to it get the error.
    pub fn open(catalog: Catalog, config: ServerConfig) -> Result<AppState, String> {
        crate::pool::init_placement();
        let metrics = Metrics::install(env!("CARGO_PKG_VERSION"))?;
        resilience::describe_metrics();
        resource_mgmt::describe_metrics();
        metrics::describe_counter!(
            "ironsift_memory_actions_total",
            "Actions taken on memory level changes, by action."
        );
        let mut indexes = BTreeMap::new();
        let mut broken = BTreeMap::new();
        for name in catalog.list().map_err(|e| e.to_string())? {
            match catalog.open_index(&name) {
                Ok(idx) => {
                    indexes.insert(name, IndexEntry::new(idx));
                }
                Err(e) => {
                    tracing::error!(index = %name, error = %e, "index failed to open");
                    broken.insert(name, e.to_string());
                }
            }
        }
        let search_pool = crate::pool::Pool::new(
            "ironsift-search",
            config.search_threads,
            // The search bulkhead bounds what reaches the pool; this only guards the pool.
            (config.admission.search_concurrency + config.admission.search_queue).max(1024),
        )
        .map_err(|e| format!("cannot start the search threads: {e}"))?;
        let admission = crate::admission::Admission::new(&config.admission)?;
        let registry = resource_mgmt::ResourceRegistry::new();
        let budget = resource_mgmt::MemoryBudget::detect(config.memory_limit)
            .map_err(|e| format!("memory budget: {e}"))?;
        let mut memory = resource_mgmt::MemoryMonitor::builder(budget).registry(registry.clone());
        if ALLOCATOR_STATS.get().is_some() {
            memory = memory.allocator_stats(InstalledAllocatorStats);
        }
        let memory = memory.build().map_err(|e| format!("memory monitor: {e}"))?;
        let indexes = indexes
            .into_iter()
            .map(|(k, v): (String, Arc<IndexEntry>)| (k, v.tracked(&registry)))
            .collect();
        let state = AppState(Arc::new(Inner {
            admission,
            search_pool,
            catalog,
            config,
            indexes: RwLock::new(indexes),
            broken: RwLock::new(broken),
            health: Health::new(),
            errors: ErrorReporter::new(),
            metrics,
            tasks: resource_mgmt::Scheduler::new(),
            registry,
            memory,
            memory_task: Mutex::new(None),
        }));
        state.register_memory_actions();
        state.register_checks();
        state.start_recovery();
        Ok(state)
    }

    /// Replays the write-ahead logs of documents indexes on a background thread; `/readyz`
    /// answers 503 until every index is done. Writes to an index wait for its replay (they
    /// queue on its writer); searches see the last commit meanwhile.
    fn start_recovery(&self) {
        let verify = self.0.config.verify_on_start;
        let entries: Vec<(String, Arc<IndexEntry>)> = self
            .entries()
            .into_iter()
            .filter(|(_, e)| verify || e.index.kind() == IndexKind::Documents)
            .collect();
        if entries.is_empty() {
            return;
        }
        for (_, e) in &entries {
            e.recovering.store(true, Ordering::SeqCst);
        }
        let state = self.clone();
        let spawned = std::thread::Builder::new()
            .name("ironsift-recovery".into())
            .spawn(move || {
                for (name, e) in &entries {
                    if verify {
                        let report = e.index.verify();
                        tracing::info!(index = %name, files = report.files_checked, bytes = report.bytes_checked, took_ms = report.took_ms, sound = report.is_sound(), "verified");
                        if !report.is_sound() {
                            state.quarantine(name, &report.summary());
                            e.recovering.store(false, Ordering::SeqCst);
                            continue;
                        }
                    }
                    if e.index.kind() == IndexKind::Documents {
                        e.recover();
                    }
                    e.recovering.store(false, Ordering::SeqCst);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the recovery thread; replaying on first write instead");
        }
    }

    /// Takes a damaged index out of service: it is closed, every request to it answers 503
    /// naming the damage, and `/readyz` fails until it is repaired.
    pub(crate) fn quarantine(&self, name: &str, reason: &str) {
        tracing::error!(index = %name, damage = %reason, "index damaged: taken out of service until repaired (`ironsift repair` or POST /v1/indexes/{name}/repair)");
        let removed = self
            .0
            .indexes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(entry) = removed {
            entry.index.close_writer();
        }
        self.0
            .broken
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), reason.to_string());
    }

    /// A read failed as corrupt: check that index on a background thread, quarantining it if
    /// the damage is confirmed.
    pub(crate) fn suspect(&self, name: &str) {
        let Ok(entry) = self.entry(name) else { return };
        let (state, name) = (self.clone(), name.to_string());
        let _ = std::thread::Builder::new()
            .name("ironsift-verify".into())
            .spawn(move || {
                let report = entry.index.verify();
                if !report.is_sound() {
                    state.quarantine(&name, &report.summary());
                }
            });
    }

    /// Checks every open index now; damaged ones are quarantined. Returns the reports.
    pub fn verify_all(&self) -> Vec<search_core::VerifyReport> {
        let mut reports = Vec::new();
        for (name, entry) in self.entries() {
            let mut report = entry.index.verify();
            if !report.is_sound() {
                // A merge or commit can retire files between listing and reading them: only
                // damage seen twice in a row counts.
                report = entry.index.verify();
            }
            if !report.is_sound() {
                self.quarantine(&name, &report.summary());
            }
            reports.push(report);
        }
        reports
    }

    /// Repairs an index (see [`search_core::Catalog::repair`]): it is closed first, repaired,
    /// and opened again; on failure it stays out of service with the reason.
    pub fn repair(&self, name: &str) -> Result<search_core::RepairReport, ApiError> {
        search_core::validate_index_name(name)?;
        let was_open = self
            .0
            .indexes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let was_broken = self
            .0
            .broken
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if was_open.is_none() && was_broken.is_none() {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("index {name:?} not found"),
            ));
        }
        if let Some(entry) = &was_open {
            entry.index.close_writer();
        }
        let result = self.0.catalog.repair(name);
        let reopened = match &result {
            Ok(_) => self.0.catalog.open_index(name).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match reopened {
            Ok(idx) => {
                let entry = IndexEntry::new(idx).tracked(&self.0.registry);
                self.0
                    .indexes
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.to_string(), entry);
            }
            Err(e) => {
                let reason = was_broken.unwrap_or(e);
                self.0
                    .broken
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.to_string(), reason);
            }
        }
        result.map_err(ApiError::from)
    }

    /// Snapshots every documents index and prunes old snapshots (the periodic job).
    pub fn snapshot_all(&self) -> Vec<(String, search_core::CoreError)> {
        let keep = self.0.config.snapshot_keep;
        let mut failures = Vec::new();
        for (name, entry) in self.entries() {
            if entry.index.kind() != IndexKind::Documents {
                continue;
            }
            match entry.index.snapshot().and_then(|s| {
                entry.index.prune_snapshots(keep)?;
                Ok(s)
            }) {
                Ok(s) => {
                    tracing::info!(index = %name, snapshot = %s.id, copied_bytes = s.copied_bytes, "snapshot taken")
                }
                Err(e) => failures.push((name, e)),
            }
        }
        failures
    }

    /// The actions taken when memory crosses its levels: above warn, drop cached answers and
    /// flush pending writes (commits free the writers' arenas); above critical, also refuse
    /// writes and stop queueing searches (see the handlers); each logged and counted.
    fn register_memory_actions(&self) {
        use resource_mgmt::MemoryLevel;
        let weak = Arc::downgrade(&self.0);
        self.0.memory.on_transition(move |t, status| {
            let Some(inner) = weak.upgrade() else { return };
            let state = AppState(inner);
            let used_mb = status.used_bytes >> 20;
            let budget_mb = status.budget.limit_bytes >> 20;
            match t.to {
                MemoryLevel::Normal => {
                    tracing::info!(used_mb, budget_mb, "memory back to normal: writes and queued searches accepted again");
                    count_action("resume");
                }
                level => {
                    if let Some(cache) = &state.0.admission.cache {
                        cache.clear();
                        count_action("drop_cache");
                    }
                    if let Some(docs) = &state.0.catalog.config().doc_cache {
                        docs.clear();
                    }
                    let st = state.clone();
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        rt.spawn_blocking(move || {
                            for (name, e) in st.commit_all() {
                                tracing::warn!(index = %name, error = %e, "flush under memory pressure failed");
                            }
                        });
                        count_action("flush_writes");
                    }
                    if level == MemoryLevel::Critical {
                        tracing::warn!(used_mb, budget_mb, "memory critical: refusing writes, searches no longer queue, cache dropped, pending writes flushed");
                        count_action("refuse_writes");
                    } else {
                        tracing::warn!(used_mb, budget_mb, "memory above warning level: cache dropped, pending writes flushed");
                    }
                }
            }
        });
    }

    /// Whether memory is at its critical level (writes are refused).
    pub(crate) fn memory_critical(&self) -> bool {
        self.0.memory.level() == resource_mgmt::MemoryLevel::Critical
    }

    /// Accounts the writer memory of each index with uncommitted writes against the budget
    /// (called every second). Tantivy's arena grows with the documents not yet committed and
    /// is released by the commit; an open writer with nothing pending holds next to nothing.
    /// (Reserving the bound for every open writer made a handful of idle indexes look like
    /// gigabytes: 8 indexes of one document each were 'critical' under a 4 GiB budget.)
    pub(crate) fn account_writers(&self) {
        for (name, e) in self.entries() {
            let mut slot = e.writer_memory.lock().unwrap_or_else(|p| p.into_inner());
            let pending = e.index.has_uncommitted_writes();
            match (pending, slot.is_some()) {
                (true, false) => {
                    *slot = Some(
                        self.0
                            .memory
                            .account(format!("writer:{name}"), e.index.writer_memory_bound()),
                    )
                }
                (false, true) => *slot = None,
                _ => {}
            }
        }
    }

    /// Live resources and memory, for `/v1/admin/resources`.
    pub fn resources(&self) -> serde_json::Value {
        let results = self.0.admission.cache.as_ref().map(|c| c.stats());
        let documents = self.0.catalog.config().doc_cache.as_ref().map(|d| {
            serde_json::json!({
                "entries": d.len(),
                "bytes": d.bytes(),
                "max_bytes": d.max_bytes(),
            })
        });
        serde_json::json!({
            "registry": self.0.registry.snapshot(),
            "memory": self.0.memory.status(),
            "caches": {"results": results, "documents": documents},
        })
    }

    /// The resource registry (tests use it for leak checks).
    pub fn registry(&self) -> &resource_mgmt::ResourceRegistry {
        &self.0.registry
    }

    /// Whether any index is still replaying its write-ahead log.
    pub fn recovering(&self) -> bool {
        self.entries()
            .iter()
            .any(|(_, e)| e.recovering.load(Ordering::SeqCst))
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.0.catalog.root().to_path_buf()
    }

    /// Marks the service as shutting down: `/readyz` answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.0.health.set_shutting_down();
    }

    /// Commits every index with pending writes; returns the failures.
    pub fn commit_all(&self) -> Vec<(String, CoreError)> {
        let mut failures = Vec::new();
        for (name, entry) in self.entries() {
            if let Err(e) = entry.commit_if_dirty() {
                failures.push((name, e));
            }
        }
        failures
    }

    /// Commits pending writes and closes every index for writing (final step of shutdown):
    /// a write still running either lands before its index's final commit or is refused with
    /// 503, never acknowledged and then dropped. Returns the failures.
    pub fn commit_and_close_all(&self) -> Vec<(String, CoreError)> {
        let mut failures = Vec::new();
        for (name, entry) in self.entries() {
            if let Err(e) = entry.index.commit_and_close() {
                failures.push((name, e));
            }
        }
        failures
    }

    pub(crate) fn entries(&self) -> Vec<(String, Arc<IndexEntry>)> {
        let map = self.0.indexes.read().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub(crate) fn entry(&self, name: &str) -> Result<Arc<IndexEntry>, ApiError> {
        if let Some(e) = self
            .0
            .indexes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            if e.recovering.load(Ordering::SeqCst) {
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    format!("index {name:?} is being verified and recovered; retry shortly"),
                )
                .retry_after(1));
            }
            return Ok(e.clone());
        }
        if let Some(reason) = self
            .0
            .broken
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("index {name:?} is out of service: {reason}"),
            ));
        }
        search_core::validate_index_name(name)?;
        Err(ApiError::new(
            ErrorCode::NotFound,
            format!("index {name:?} not found"),
        ))
    }

    pub(crate) fn create_index(
        &self,
        name: &str,
        kind: IndexKind,
        schema: Option<SchemaSpec>,
    ) -> Result<Arc<IndexEntry>, ApiError> {
        let mut map = self.0.indexes.write().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(name) {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("index {name:?} already exists"),
            ));
        }
        let idx = self.0.catalog.create(name, kind, schema)?;
        let entry = IndexEntry::new(idx).tracked(&self.0.registry);
        map.insert(name.to_string(), entry.clone());
        Ok(entry)
    }

    pub(crate) fn delete_index(&self, name: &str) -> Result<(), ApiError> {
        let removed = self
            .0
            .indexes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let was_broken = self
            .0
            .broken
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some();
        match removed {
            Some(entry) => entry.index.close_writer(),
            None if was_broken => {}
            None => {
                search_core::validate_index_name(name)?;
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("index {name:?} not found"),
                ));
            }
        }
        self.0.catalog.delete(name)?;
        Ok(())
    }

    /// Updates the per-index gauges (called by the metrics endpoint).
    pub(crate) fn refresh_index_gauges(&self) {
        use observability::metrics::{INDEX_BYTES, INDEX_DOCS, INDEX_SEGMENTS};
        for (name, entry) in self.entries() {
            if let Ok(s) = entry.index.stats() {
                metrics::gauge!(INDEX_DOCS, "index" => name.clone()).set(s.docs as f64);
                metrics::gauge!(INDEX_SEGMENTS, "index" => name.clone()).set(s.segments as f64);
                metrics::gauge!(INDEX_BYTES, "index" => name).set(s.bytes_on_disk as f64);
            }
        }
    }

    fn register_checks(&self) {
        let weak = Arc::downgrade(&self.0);
        self.0.health.register(Arc::new(("indexes", move || {
            let Some(inner) = weak.upgrade() else {
                return Outcome::fail("service stopped");
            };
            let broken = inner.broken.read().unwrap_or_else(|p| p.into_inner());
            if !broken.is_empty() {
                let names: Vec<String> = broken
                    .iter()
                    .map(|(n, why)| format!("{n}: {why}"))
                    .collect();
                return Outcome::fail(format!("failed to open: {}", names.join("; ")));
            }
            let map = inner.indexes.read().unwrap_or_else(|p| p.into_inner());
            // The index folder and Tantivy's meta.json must stay readable: a cheap probe that
            // catches a folder removed, unmounted or made unreadable under the running service.
            let mut unreadable = Vec::new();
            for (name, e) in map.iter() {
                let meta = e.index.dir().join("index").join("meta.json");
                if let Err(err) = std::fs::File::open(&meta) {
                    unreadable.push(format!("{name}: {}: {err}", meta.display()));
                }
            }
            if unreadable.is_empty() {
                Outcome::pass(format!("{} open", map.len()))
            } else {
                Outcome::fail(format!("unreadable: {}", unreadable.join("; ")))
            }
        })));
        let weak = Arc::downgrade(&self.0);
        self.0.health.register(Arc::new(("recovery", move || {
            let Some(inner) = weak.upgrade() else {
                return Outcome::fail("service stopped");
            };
            let map = inner.indexes.read().unwrap_or_else(|p| p.into_inner());
            let replaying: Vec<&str> = map
                .iter()
                .filter(|(_, e)| e.recovering.load(Ordering::SeqCst))
                .map(|(n, _)| n.as_str())
                .collect();
            if replaying.is_empty() {
                Outcome::pass("write-ahead logs replayed")
            } else {
                Outcome::fail(format!(
                    "replaying the write-ahead log of {}",
                    replaying.join(", ")
                ))
            }
        })));
        let weak = Arc::downgrade(&self.0);
        self.0.health.register(Arc::new(("writers", move || {
            let Some(inner) = weak.upgrade() else {
                return Outcome::fail("service stopped");
            };
            let map = inner.indexes.read().unwrap_or_else(|p| p.into_inner());
            let failing: Vec<String> = map
                .iter()
                .filter_map(|(n, e)| {
                    let err = e.writer_error.lock().unwrap_or_else(|p| p.into_inner());
                    err.as_ref().map(|m| format!("{n}: {m}"))
                })
                .collect();
            if failing.is_empty() {
                Outcome::pass("healthy")
            } else {
                Outcome::fail(format!("commit failing: {}", failing.join("; ")))
            }
        })));
        // Disk and memory change slowly; reading them once a second keeps /readyz cheap under
        // load while still catching a filling disk within a second.
        let ttl = std::time::Duration::from_secs(1);
        let root = self.data_dir();
        let critical = self.0.config.disk_critical;
        let disk = ("disk", move || match fs4::statvfs(&root) {
            Ok(s) if s.total_space() > 0 => {
                // As `df` counts it: blocks reserved for root are neither used nor available
                // to us, so they are left out of both sides.
                let in_use = s.total_space().saturating_sub(s.free_space()) as f64;
                let used = in_use / (in_use + s.available_space() as f64).max(1.0);
                let detail = format!(
                    "{:.1}% used, {} MiB available",
                    used * 100.0,
                    s.available_space() >> 20
                );
                usage_outcome(used, critical, detail)
            }
            Ok(_) => Outcome::warn("file system reports no size"),
            Err(e) => Outcome::fail(format!("{}: {e}", root.display())),
        });
        self.0.health.register(Arc::new(Cached::new(disk, ttl)));
        let critical = self.0.config.memory_critical;
        let monitor = self.0.memory.clone();
        let memory = ("memory", move || {
            let status = monitor.status();
            let budget = format!(
                "{} MiB of a {} MiB budget ({:?})",
                status.used_bytes >> 20,
                status.budget.limit_bytes >> 20,
                status.level
            );
            match (status.level, memory_used_fraction()) {
                (resource_mgmt::MemoryLevel::Critical, _) => {
                    Outcome::fail(format!("{budget}: refusing writes"))
                }
                (_, Some(used)) if used >= critical => {
                    Outcome::fail(format!("{:.1}% of RAM used; {budget}", used * 100.0))
                }
                (resource_mgmt::MemoryLevel::Warn, _) => Outcome::warn(budget),
                _ => Outcome::pass(budget),
            }
        });
        self.0.health.register(Arc::new(Cached::new(memory, ttl)));
    }
}

/// Fail at or above `critical` (a fraction in use), warn within 10 points of it, else pass.
fn usage_outcome(used: f64, critical: f64, detail: String) -> Outcome {
    if used >= critical {
        Outcome::fail(detail)
    } else if used >= critical - 0.10 {
        Outcome::warn(detail)
    } else {
        Outcome::pass(detail)
    }
}

/// Fraction of system memory in use, from `/proc/meminfo` (MemAvailable / MemTotal).
fn memory_used_fraction() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    (total > 0.0).then(|| 1.0 - available / total)
}

fn count_action(action: &'static str) {
    metrics::counter!("ironsift_memory_actions_total", "action" => action).increment(1);
}
