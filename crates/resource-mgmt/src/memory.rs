//! The process's real memory use, a budget with warn and critical levels, and a monitor that
//! samples on an interval and tells the rest of the service when the level changes.
//!
//! What is budgeted is *anonymous* resident memory (heap, stacks: statm's resident minus shared)
//! plus bytes callers account explicitly ([`MemoryMonitor::account`], e.g. the Tantivy writer heap
//! that will be needed while a flush runs). File-backed pages (memory-mapped index files) are left
//! out on purpose: the kernel drops them under pressure, and counting them would raise the level
//! merely because searches touched the index. Total RSS and cgroup usage are still reported.
//!
//! Levels use hysteresis: a level is entered when usage reaches its threshold and left only when
//! usage falls below the threshold minus the hysteresis band, so a process hovering around a
//! threshold does not flap between levels (see [`LevelTracker`]).

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    Error, metric_names,
    procfs::Procfs,
    registry::{ResourceRegistry, TrackedResource},
};

/// The kind under which [`MemoryMonitor::account`] tracks accounted bytes in the registry.
pub const ACCOUNTED_KIND: &str = "accounted_memory";

/// One sample of the process's memory and the machine's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryReading {
    /// Resident set size (all resident pages, file-backed included).
    pub rss_bytes: u64,
    /// Resident anonymous memory: what the budget watches.
    pub anon_bytes: u64,
    /// The tightest cgroup memory limit that applies, if any.
    pub cgroup_limit: Option<u64>,
    /// The cgroup's own usage figure (includes page cache).
    pub cgroup_usage: Option<u64>,
    /// `MemTotal`.
    pub total_ram: u64,
    /// `MemAvailable`, where the kernel reports it.
    pub available_ram: Option<u64>,
    /// Allocator statistics, when an [`AllocatorStats`] source is installed.
    pub allocator: Option<AllocatorReading>,
}

impl MemoryReading {
    /// Reads the real process from `procfs` (without allocator statistics).
    pub fn read(procfs: &Procfs) -> Result<Self, Error> {
        let statm = procfs.statm()?;
        let meminfo = procfs.meminfo()?;
        let cgroup = procfs.cgroup_memory();
        Ok(MemoryReading {
            rss_bytes: statm.resident_bytes,
            anon_bytes: statm.anon_bytes(),
            cgroup_limit: cgroup.limit,
            cgroup_usage: cgroup.usage,
            total_ram: meminfo.total_bytes,
            available_ram: meminfo.available_bytes,
            allocator: None,
        })
    }
}

/// Figures from the memory allocator (e.g. jemalloc's `stats.allocated` / `stats.resident`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AllocatorReading {
    /// Bytes the application has allocated and not freed.
    pub allocated_bytes: u64,
    /// Bytes the allocator holds resident (allocated plus fragmentation and caches).
    pub resident_bytes: u64,
}

/// Extension point for allocator statistics.
///
/// The binary that installs jemalloc (tikv-jemallocator + jemalloc-ctl) implements this by
/// advancing the `epoch` and reading `stats.allocated` / `stats.resident`, then passes it to
/// [`MemoryMonitorBuilder::allocator_stats`]. This crate does not pick the allocator.
pub trait AllocatorStats: Send + Sync + 'static {
    /// Current figures, or `None` if they cannot be read now.
    fn read(&self) -> Option<AllocatorReading>;
}

/// Where readings come from: the real `/proc` ([`Procfs`]) or a scripted source in tests.
pub trait MemorySource: Send + Sync + 'static {
    /// Takes one reading.
    fn read(&self) -> Result<MemoryReading, Error>;
}

impl MemorySource for Procfs {
    fn read(&self) -> Result<MemoryReading, Error> {
        MemoryReading::read(self)
    }
}

/// How bad memory use is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryLevel {
    /// Below the warn threshold.
    Normal,
    /// At or above warn: shed optional work (smaller caches, earlier commits).
    Warn,
    /// At or above critical: refuse new memory-hungry work (ingestion, big queries).
    Critical,
}

impl MemoryLevel {
    /// Stable lowercase name (logs, metric labels).
    pub const fn as_str(self) -> &'static str {
        match self {
            MemoryLevel::Normal => "normal",
            MemoryLevel::Warn => "warn",
            MemoryLevel::Critical => "critical",
        }
    }

    /// 0, 1, 2: the value of the `ironsift_memory_level` gauge.
    pub const fn as_gauge(self) -> f64 {
        match self {
            MemoryLevel::Normal => 0.0,
            MemoryLevel::Warn => 1.0,
            MemoryLevel::Critical => 2.0,
        }
    }
}

impl fmt::Display for MemoryLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a budget's limit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetSource {
    /// Given by the operator.
    Explicit,
    /// The cgroup's memory limit.
    Cgroup,
    /// A fraction of the machine's RAM.
    Ram,
}

/// The memory the process may use and the thresholds of each level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MemoryBudget {
    /// The budget in bytes.
    pub limit_bytes: u64,
    /// Fraction of the limit where [`MemoryLevel::Warn`] starts (default 0.70).
    pub warn_ratio: f64,
    /// Fraction of the limit where [`MemoryLevel::Critical`] starts (default 0.85).
    pub critical_ratio: f64,
    /// Fraction of the limit usage must fall below a threshold to leave its level (default 0.05).
    pub hysteresis: f64,
    /// Where `limit_bytes` came from.
    pub source: BudgetSource,
}

impl MemoryBudget {
    /// Fraction of RAM budgeted when neither an explicit nor a cgroup limit exists.
    pub const RAM_FRACTION: f64 = 0.8;

    /// A budget of `limit_bytes` with the default ratios.
    pub fn new(limit_bytes: u64) -> Self {
        MemoryBudget {
            limit_bytes,
            warn_ratio: 0.70,
            critical_ratio: 0.85,
            hysteresis: 0.05,
            source: BudgetSource::Explicit,
        }
    }

    /// The explicit limit if given, else the cgroup limit (when below RAM), else
    /// [`Self::RAM_FRACTION`] of RAM, read from the real process.
    pub fn detect(explicit: Option<u64>) -> Result<Self, Error> {
        if let Some(limit) = explicit {
            return Ok(Self::new(limit));
        }
        let reading = MemoryReading::read(&Procfs::system())?;
        Ok(Self::from_reading(None, &reading))
    }

    /// [`Self::detect`] on a given reading (pure, for tests).
    pub fn from_reading(explicit: Option<u64>, reading: &MemoryReading) -> Self {
        if let Some(limit) = explicit {
            return Self::new(limit);
        }
        match reading.cgroup_limit {
            Some(limit) if limit < reading.total_ram => MemoryBudget {
                source: BudgetSource::Cgroup,
                ..Self::new(limit)
            },
            _ => MemoryBudget {
                source: BudgetSource::Ram,
                ..Self::new((reading.total_ram as f64 * Self::RAM_FRACTION) as u64)
            },
        }
    }

    /// Checks `0 < warn < critical <= 1`, `0 <= hysteresis < warn` and a non-zero limit.
    pub fn validate(&self) -> Result<(), Error> {
        let ok = self.limit_bytes > 0
            && self.warn_ratio > 0.0
            && self.warn_ratio < self.critical_ratio
            && self.critical_ratio <= 1.0
            && self.hysteresis >= 0.0
            && self.hysteresis < self.warn_ratio;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidConfig(format!(
                "memory budget needs a limit > 0 and 0 <= hysteresis < warn < critical <= 1, \
                 got {self:?}"
            )))
        }
    }

    fn fraction(&self, ratio: f64) -> u64 {
        (self.limit_bytes as f64 * ratio) as u64
    }

    /// Usage at which [`MemoryLevel::Warn`] starts.
    pub fn warn_bytes(&self) -> u64 {
        self.fraction(self.warn_ratio)
    }

    /// Usage at which [`MemoryLevel::Critical`] starts.
    pub fn critical_bytes(&self) -> u64 {
        self.fraction(self.critical_ratio)
    }

    /// Width of the hysteresis band in bytes.
    pub fn band_bytes(&self) -> u64 {
        self.fraction(self.hysteresis)
    }
}

/// A change of level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// The level before.
    pub from: MemoryLevel,
    /// The level now.
    pub to: MemoryLevel,
    /// The usage that caused it.
    pub used_bytes: u64,
}

/// The level state machine with hysteresis; pure, no I/O.
///
/// Going up happens as soon as usage reaches a threshold. Going down from a level needs usage
/// below that level's threshold minus the band. From `Critical`, usage that falls below the warn
/// band goes straight to `Normal`.
#[derive(Debug, Clone)]
pub struct LevelTracker {
    warn: u64,
    critical: u64,
    band: u64,
    level: MemoryLevel,
}

impl LevelTracker {
    /// Starts at [`MemoryLevel::Normal`].
    pub fn new(budget: &MemoryBudget) -> Self {
        LevelTracker {
            warn: budget.warn_bytes(),
            critical: budget.critical_bytes(),
            band: budget.band_bytes(),
            level: MemoryLevel::Normal,
        }
    }

    /// The current level.
    pub fn level(&self) -> MemoryLevel {
        self.level
    }

    /// The level that usage alone calls for, going up.
    fn raised(&self, used: u64) -> MemoryLevel {
        if used >= self.critical {
            MemoryLevel::Critical
        } else if used >= self.warn {
            MemoryLevel::Warn
        } else {
            MemoryLevel::Normal
        }
    }

    /// The lowest level usage allows, coming down (thresholds lowered by the band).
    fn lowered(&self, used: u64) -> MemoryLevel {
        if used >= self.critical.saturating_sub(self.band) {
            MemoryLevel::Critical
        } else if used >= self.warn.saturating_sub(self.band) {
            MemoryLevel::Warn
        } else {
            MemoryLevel::Normal
        }
    }

    /// Feeds one usage figure; returns the transition if the level changed.
    pub fn observe(&mut self, used_bytes: u64) -> Option<Transition> {
        let up = self.raised(used_bytes);
        let down = self.lowered(used_bytes);
        let next = if up > self.level {
            up
        } else if down < self.level {
            down
        } else {
            self.level
        };
        if next == self.level {
            return None;
        }
        let transition = Transition {
            from: self.level,
            to: next,
            used_bytes,
        };
        self.level = next;
        Some(transition)
    }
}

/// What the monitor last saw; published on the watch channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryStatus {
    /// The current level.
    pub level: MemoryLevel,
    /// The figure compared with the budget: anonymous resident bytes plus accounted bytes.
    pub used_bytes: u64,
    /// Bytes accounted through [`MemoryMonitor::account`].
    pub accounted_bytes: u64,
    /// The budget.
    pub budget: MemoryBudget,
    /// The last successful reading (`None` before the first).
    pub reading: Option<MemoryReading>,
    /// When the last sample was taken (Unix milliseconds; 0 before the first).
    pub sampled_at_unix_ms: u64,
    /// Level changes so far.
    pub transitions: u64,
    /// The error of the last sample, if it failed (the level is then left unchanged).
    pub last_error: Option<String>,
}

/// An action run on level changes; see [`MemoryMonitor::on_level`].
pub type LevelAction = Arc<dyn Fn(&Transition, &MemoryStatus) + Send + Sync>;

/// Builds a [`MemoryMonitor`] with a non-default source, registry or allocator statistics.
pub struct MemoryMonitorBuilder {
    budget: MemoryBudget,
    source: Box<dyn MemorySource>,
    allocator: Option<Box<dyn AllocatorStats>>,
    registry: ResourceRegistry,
}

impl MemoryMonitorBuilder {
    /// Where readings come from (default: the real `/proc`).
    pub fn source(mut self, source: impl MemorySource) -> Self {
        self.source = Box::new(source);
        self
    }

    /// Allocator statistics to include in every reading.
    pub fn allocator_stats(mut self, stats: impl AllocatorStats) -> Self {
        self.allocator = Some(Box::new(stats));
        self
    }

    /// The registry in which accounted bytes are tracked (share the service's registry so they
    /// show up in the resources view).
    pub fn registry(mut self, registry: ResourceRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// Validates the budget and builds the monitor; no sample is taken yet.
    pub fn build(self) -> Result<MemoryMonitor, Error> {
        self.budget.validate()?;
        let status = MemoryStatus {
            level: MemoryLevel::Normal,
            used_bytes: 0,
            accounted_bytes: 0,
            budget: self.budget,
            reading: None,
            sampled_at_unix_ms: 0,
            transitions: 0,
            last_error: None,
        };
        let (tx, _) = watch::channel(status);
        Ok(MemoryMonitor {
            inner: Arc::new(MonitorInner {
                budget: self.budget,
                source: self.source,
                allocator: self.allocator,
                registry: self.registry,
                state: Mutex::new(MonitorState {
                    tracker: LevelTracker::new(&self.budget),
                    transitions: 0,
                }),
                actions: Mutex::new(Vec::new()),
                tx,
            }),
        })
    }
}

/// Samples memory, keeps the level, and tells subscribers and registered actions about changes.
///
/// Clones share the same state. Sampling reads three small `/proc` files (microseconds, no disk),
/// so it runs on the async threads.
#[derive(Clone)]
pub struct MemoryMonitor {
    inner: Arc<MonitorInner>,
}

struct MonitorInner {
    budget: MemoryBudget,
    source: Box<dyn MemorySource>,
    allocator: Option<Box<dyn AllocatorStats>>,
    registry: ResourceRegistry,
    state: Mutex<MonitorState>,
    actions: Mutex<Vec<(Option<MemoryLevel>, LevelAction)>>,
    tx: watch::Sender<MemoryStatus>,
}

struct MonitorState {
    tracker: LevelTracker,
    transitions: u64,
}

impl fmt::Debug for MemoryMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryMonitor")
            .field("status", &*self.inner.tx.borrow())
            .finish()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl MemoryMonitor {
    /// A builder reading the real process, with its own registry.
    pub fn builder(budget: MemoryBudget) -> MemoryMonitorBuilder {
        MemoryMonitorBuilder {
            budget,
            source: Box::new(Procfs::system()),
            allocator: None,
            registry: ResourceRegistry::new(),
        }
    }

    /// The budget.
    pub fn budget(&self) -> MemoryBudget {
        self.inner.budget
    }

    /// The registry holding accounted bytes.
    pub fn registry(&self) -> &ResourceRegistry {
        &self.inner.registry
    }

    /// The latest status.
    pub fn status(&self) -> MemoryStatus {
        self.inner.tx.borrow().clone()
    }

    /// The current level.
    pub fn level(&self) -> MemoryLevel {
        self.inner.tx.borrow().level
    }

    /// A receiver that sees every new status (one per sample).
    pub fn subscribe(&self) -> watch::Receiver<MemoryStatus> {
        self.inner.tx.subscribe()
    }

    /// Adds `bytes` under `label` to the used figure until the guard is dropped; use
    /// [`TrackedResource::set_bytes`] as the figure changes (e.g. twice the writer heap while a
    /// flush runs, once otherwise).
    pub fn account(&self, label: impl Into<String>, bytes: u64) -> TrackedResource {
        self.inner.registry.track(ACCOUNTED_KIND, label, bytes)
    }

    /// Runs `action` whenever the level *becomes* `level`.
    ///
    /// Actions run on the sampling task, after the status is published; keep them short (set a
    /// flag, send on a channel) and do not block.
    pub fn on_level(
        &self,
        level: MemoryLevel,
        action: impl Fn(&Transition, &MemoryStatus) + Send + Sync + 'static,
    ) {
        self.lock_actions().push((Some(level), Arc::new(action)));
    }

    /// Runs `action` on every level change.
    pub fn on_transition(
        &self,
        action: impl Fn(&Transition, &MemoryStatus) + Send + Sync + 'static,
    ) {
        self.lock_actions().push((None, Arc::new(action)));
    }

    fn lock_actions(&self) -> std::sync::MutexGuard<'_, Vec<(Option<MemoryLevel>, LevelAction)>> {
        self.inner
            .actions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one sample now: updates the level, metrics and subscribers, runs actions on a change.
    ///
    /// A failed reading is logged and recorded in [`MemoryStatus::last_error`]; the level stays.
    pub fn sample(&self) -> MemoryStatus {
        let inner = &*self.inner;
        let accounted = inner.registry.bytes(ACCOUNTED_KIND);
        let reading = inner.source.read().map(|mut r| {
            if let Some(stats) = &inner.allocator {
                r.allocator = stats.read();
            }
            r
        });
        let (status, transition) = {
            let mut state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            let previous = inner.tx.borrow().clone();
            match reading {
                Ok(reading) => {
                    let used = reading.anon_bytes.saturating_add(accounted);
                    let transition = state.tracker.observe(used);
                    if transition.is_some() {
                        state.transitions += 1;
                    }
                    let status = MemoryStatus {
                        level: state.tracker.level(),
                        used_bytes: used,
                        accounted_bytes: accounted,
                        budget: inner.budget,
                        reading: Some(reading),
                        sampled_at_unix_ms: unix_ms(),
                        transitions: state.transitions,
                        last_error: None,
                    };
                    // Published under the state lock so concurrent samples publish in order.
                    inner.tx.send_replace(status.clone());
                    (status, transition)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "memory sample failed; level unchanged");
                    let status = MemoryStatus {
                        sampled_at_unix_ms: unix_ms(),
                        last_error: Some(e.to_string()),
                        ..previous
                    };
                    inner.tx.send_replace(status.clone());
                    (status, None)
                }
            }
        };
        self.record_metrics(&status);
        if let Some(t) = transition {
            self.announce(&t, &status);
        }
        status
    }

    fn record_metrics(&self, status: &MemoryStatus) {
        if let Some(r) = &status.reading {
            metrics::gauge!(metric_names::MEMORY_RSS).set(r.rss_bytes as f64);
        }
        metrics::gauge!(metric_names::MEMORY_USED).set(status.used_bytes as f64);
        metrics::gauge!(metric_names::MEMORY_BUDGET).set(status.budget.limit_bytes as f64);
        metrics::gauge!(metric_names::MEMORY_LEVEL).set(status.level.as_gauge());
    }

    fn announce(&self, t: &Transition, status: &MemoryStatus) {
        let (used, budget) = (t.used_bytes, status.budget.limit_bytes);
        if t.to > t.from {
            tracing::warn!(from = %t.from, to = %t.to, used, budget, "memory level rose");
        } else {
            tracing::info!(from = %t.from, to = %t.to, used, budget, "memory level fell");
        }
        metrics::counter!(metric_names::MEMORY_TRANSITIONS, "to" => t.to.as_str()).increment(1);
        let actions: Vec<LevelAction> = self
            .lock_actions()
            .iter()
            .filter(|(level, _)| level.is_none_or(|l| l == t.to))
            .map(|(_, a)| a.clone())
            .collect();
        for action in actions {
            // A panicking action must not end the sampling task: later transitions still matter.
            let run = std::panic::AssertUnwindSafe(|| action(t, status));
            if std::panic::catch_unwind(run).is_err() {
                tracing::error!(to = %t.to, "a memory level action panicked");
            }
        }
    }

    /// Samples every `every` on the current tokio runtime until the returned handle is dropped or
    /// stopped. The first sample is taken at once.
    #[must_use = "dropping the handle stops sampling"]
    pub fn spawn(&self, every: Duration) -> MonitorTask {
        let monitor = self.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                monitor.sample();
            }
        });
        MonitorTask { task }
    }
}

/// The sampling task of [`MemoryMonitor::spawn`]; dropping it stops sampling.
#[derive(Debug)]
pub struct MonitorTask {
    task: JoinHandle<()>,
}

impl MonitorTask {
    /// Stops sampling.
    pub fn stop(self) {}
}

impl Drop for MonitorTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use proptest::prelude::*;

    use super::*;

    fn budget() -> MemoryBudget {
        MemoryBudget::new(1000)
    }

    #[test]
    fn thresholds() {
        let b = budget();
        assert_eq!(
            (b.warn_bytes(), b.critical_bytes(), b.band_bytes()),
            (700, 850, 50)
        );
        b.validate().unwrap();
        let bad = MemoryBudget {
            warn_ratio: 0.9,
            ..b
        };
        assert!(bad.validate().is_err());
        assert!(MemoryBudget::new(0).validate().is_err());
    }

    #[test]
    fn tracker_goes_up_at_threshold_and_down_below_band() {
        let mut t = LevelTracker::new(&budget());
        assert_eq!(t.observe(699), None);
        assert_eq!(t.observe(700).map(|t| t.to), Some(MemoryLevel::Warn));
        assert_eq!(t.observe(651), None, "inside the band: stay");
        assert_eq!(t.observe(650), None, "at the band edge: stay");
        assert_eq!(t.observe(849), None);
        assert_eq!(t.observe(850).map(|t| t.to), Some(MemoryLevel::Critical));
        assert_eq!(t.observe(800), None);
        assert_eq!(t.observe(799).map(|t| t.to), Some(MemoryLevel::Warn));
        assert_eq!(t.observe(900).map(|t| t.to), Some(MemoryLevel::Critical));
        let down = t.observe(10).unwrap();
        assert_eq!(
            (down.from, down.to, down.used_bytes),
            (MemoryLevel::Critical, MemoryLevel::Normal, 10)
        );
        assert_eq!(
            t.observe(u64::MAX).map(|t| t.to),
            Some(MemoryLevel::Critical)
        );
    }

    fn threshold(b: &MemoryBudget, level: MemoryLevel) -> u64 {
        match level {
            MemoryLevel::Normal => 0,
            MemoryLevel::Warn => b.warn_bytes(),
            MemoryLevel::Critical => b.critical_bytes(),
        }
    }

    proptest! {
        /// Every rise happens at or above the new level's threshold; every fall happens below the
        /// old level's threshold minus the band. So usage moving inside a band never flaps.
        #[test]
        fn transitions_respect_hysteresis(samples in proptest::collection::vec(0u64..1200, 1..200)) {
            let b = budget();
            let mut t = LevelTracker::new(&b);
            for used in samples {
                let before = t.level();
                if let Some(tr) = t.observe(used) {
                    prop_assert_eq!(tr.from, before);
                    if tr.to > tr.from {
                        prop_assert!(used >= threshold(&b, tr.to));
                    } else {
                        prop_assert!(used < threshold(&b, tr.from) - b.band_bytes());
                    }
                }
                prop_assert!(t.raised(used) <= t.level() && t.level() <= t.lowered(used));
            }
        }

        /// Once a level is reached, any usage within [threshold - band, ∞) keeps at least it.
        #[test]
        fn no_flapping_inside_band(offsets in proptest::collection::vec(0u64..=50, 1..100)) {
            let b = budget();
            let mut t = LevelTracker::new(&b);
            t.observe(700);
            for off in offsets {
                prop_assert_eq!(t.observe(650 + off), None);
                prop_assert_eq!(t.level(), MemoryLevel::Warn);
            }
        }
    }

    #[test]
    fn budget_detection() {
        let mut r = MemoryReading {
            rss_bytes: 10,
            anon_bytes: 5,
            cgroup_limit: None,
            cgroup_usage: None,
            total_ram: 10_000,
            available_ram: None,
            allocator: None,
        };
        assert_eq!(MemoryBudget::from_reading(Some(42), &r).limit_bytes, 42);
        let ram = MemoryBudget::from_reading(None, &r);
        assert_eq!((ram.limit_bytes, ram.source), (8000, BudgetSource::Ram));
        r.cgroup_limit = Some(4000);
        let cg = MemoryBudget::from_reading(None, &r);
        assert_eq!((cg.limit_bytes, cg.source), (4000, BudgetSource::Cgroup));
        r.cgroup_limit = Some(1 << 40);
        assert_eq!(
            MemoryBudget::from_reading(None, &r).source,
            BudgetSource::Ram
        );
        let real = MemoryBudget::detect(None).unwrap();
        assert!(real.limit_bytes > 0);
        assert_eq!(
            MemoryBudget::detect(Some(7)).unwrap().source,
            BudgetSource::Explicit
        );
    }

    #[test]
    fn real_reading() {
        let r = MemoryReading::read(&Procfs::system()).unwrap();
        assert!(r.rss_bytes > 0 && r.anon_bytes <= r.rss_bytes && r.total_ram > 0);
    }

    /// A source whose anonymous usage is set by the test.
    struct Scripted(Arc<AtomicU64>);
    impl MemorySource for Scripted {
        fn read(&self) -> Result<MemoryReading, Error> {
            let anon = self.0.load(Ordering::SeqCst);
            if anon == u64::MAX {
                return Err(Error::Parse {
                    path: "/proc/self/statm".into(),
                    what: "scripted failure",
                });
            }
            Ok(MemoryReading {
                rss_bytes: anon * 2,
                anon_bytes: anon,
                cgroup_limit: None,
                cgroup_usage: None,
                total_ram: 1 << 30,
                available_ram: Some(1 << 29),
                allocator: None,
            })
        }
    }

    struct FakeJemalloc;
    impl AllocatorStats for FakeJemalloc {
        fn read(&self) -> Option<AllocatorReading> {
            Some(AllocatorReading {
                allocated_bytes: 3,
                resident_bytes: 4,
            })
        }
    }

    #[test]
    fn monitor_drives_actions_and_publishes() {
        let used = Arc::new(AtomicU64::new(100));
        let monitor = MemoryMonitor::builder(budget())
            .source(Scripted(used.clone()))
            .allocator_stats(FakeJemalloc)
            .build()
            .unwrap();
        let criticals = Arc::new(AtomicUsize::new(0));
        let all = Arc::new(Mutex::new(Vec::new()));
        {
            let c = criticals.clone();
            monitor.on_level(MemoryLevel::Critical, move |_, status| {
                assert_eq!(status.level, MemoryLevel::Critical);
                c.fetch_add(1, Ordering::SeqCst);
            });
            let all = all.clone();
            monitor.on_transition(move |t, _| all.lock().unwrap().push(t.to));
        }
        monitor.on_level(MemoryLevel::Warn, |_, _| panic!("a buggy action"));
        let mut rx = monitor.subscribe();
        let s = monitor.sample();
        assert_eq!(s.level, MemoryLevel::Normal);
        assert_eq!(
            s.reading
                .as_ref()
                .unwrap()
                .allocator
                .unwrap()
                .allocated_bytes,
            3
        );
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().used_bytes, 100);

        // Accounted bytes count toward the used figure.
        let mut heap = monitor.account("writer heap", 650);
        assert_eq!(monitor.sample().level, MemoryLevel::Warn);
        heap.set_bytes(800);
        assert_eq!(monitor.sample().level, MemoryLevel::Critical);
        assert_eq!(
            monitor.sample().level,
            MemoryLevel::Critical,
            "no repeat transition"
        );
        drop(heap);
        let s = monitor.sample();
        assert_eq!(
            (s.level, s.accounted_bytes, s.transitions),
            (MemoryLevel::Normal, 0, 3)
        );
        assert_eq!(criticals.load(Ordering::SeqCst), 1);
        assert_eq!(
            *all.lock().unwrap(),
            vec![
                MemoryLevel::Warn,
                MemoryLevel::Critical,
                MemoryLevel::Normal
            ]
        );

        // A failed reading keeps the level and says why.
        used.store(900, Ordering::SeqCst);
        assert_eq!(monitor.sample().level, MemoryLevel::Critical);
        used.store(u64::MAX, Ordering::SeqCst);
        let s = monitor.sample();
        assert_eq!(s.level, MemoryLevel::Critical);
        assert!(s.last_error.unwrap().contains("scripted failure"));
        assert_eq!(monitor.level(), MemoryLevel::Critical);
    }

    #[test]
    fn transitions_are_counted_and_gauges_set() {
        let recorder = crate::test_metrics::Captured::default();
        let used = Arc::new(AtomicU64::new(100));
        let monitor = MemoryMonitor::builder(budget())
            .source(Scripted(used.clone()))
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            monitor.sample();
            used.store(860, Ordering::SeqCst);
            monitor.sample();
            used.store(10, Ordering::SeqCst);
            monitor.sample();
            used.store(720, Ordering::SeqCst);
            monitor.sample();
        });
        let get = |k: &str| recorder.get(k);
        assert_eq!(
            get("ironsift_memory_level_transitions_total{to=critical}"),
            Some(1.0)
        );
        assert_eq!(
            get("ironsift_memory_level_transitions_total{to=normal}"),
            Some(1.0)
        );
        assert_eq!(
            get("ironsift_memory_level_transitions_total{to=warn}"),
            Some(1.0)
        );
        assert_eq!(get("ironsift_memory_level"), Some(1.0));
        assert_eq!(get("ironsift_memory_rss_bytes"), Some(1440.0));
        assert_eq!(get("ironsift_memory_used_bytes"), Some(720.0));
        assert_eq!(get("ironsift_memory_budget_bytes"), Some(1000.0));
    }

    #[tokio::test(start_paused = true)]
    async fn spawned_monitor_samples_on_interval_and_stops() {
        let used = Arc::new(AtomicU64::new(100));
        let monitor = MemoryMonitor::builder(budget())
            .source(Scripted(used.clone()))
            .build()
            .unwrap();
        let mut rx = monitor.subscribe();
        let task = monitor.spawn(Duration::from_secs(1));
        rx.changed().await.unwrap();
        used.store(900, Ordering::SeqCst);
        rx.wait_for(|s| s.level == MemoryLevel::Critical)
            .await
            .unwrap();
        task.stop();
        let before = monitor.status().sampled_at_unix_ms;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!rx.has_changed().unwrap());
        assert_eq!(monitor.status().sampled_at_unix_ms, before);
    }

    #[test]
    fn monitor_on_real_process() {
        let monitor = MemoryMonitor::builder(MemoryBudget::detect(None).unwrap())
            .build()
            .unwrap();
        let s = monitor.sample();
        assert!(s.last_error.is_none());
        assert!(s.used_bytes > 0);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["level"], "normal");
    }
}
