//! Measuring and bounding what the process holds.
//!
//! - [`memory`]: real memory figures (statm RSS and anonymous memory, cgroup v2 with a v1
//!   fallback, `/proc/meminfo`), a [`MemoryBudget`] with warn and critical levels, the pure
//!   [`LevelTracker`] state machine with hysteresis, and the [`MemoryMonitor`] that samples on an
//!   interval, publishes on a `watch` channel and runs registered actions on level changes.
//! - [`registry`]: the [`ResourceRegistry`] of RAII-tracked resources ([`TrackedResource`]) with
//!   per-kind live counts, bytes and oldest age, plus open descriptors and threads; baselines and
//!   diffs make leak checks one assertion.
//! - [`pool`]: a [`Pool`] over `deadpool::managed` adding an acquire timeout, maximum lifetime,
//!   idle timeout, a health check at recycle time, metrics and a serializable status.
//! - [`scheduler`]: the background maintenance [`Scheduler`]: fixed intervals with jitter or
//!   cron expressions ([`cron`]), single-flight runs, per-job timeouts, panics contained, bounded
//!   shutdown and per-job statistics.
//! - [`procfs`]: the `/proc` and cgroup parsers behind the figures, testable on fixture text.
//!
//! Nothing here knows Tantivy or HTTP: the server wires these to its indexes and admin routes.
//! Errors are [`Error`] (and the generic [`PoolError`]), both classified with
//! [`search_error::Classify`].
//!
//! # Wiring
//!
//! ```no_run
//! # async fn serve() -> Result<(), resource_mgmt::Error> {
//! use std::time::Duration;
//! use resource_mgmt::{JobSpec, MemoryBudget, MemoryLevel, MemoryMonitor, ResourceRegistry, Scheduler};
//!
//! let registry = ResourceRegistry::new();
//! let monitor = MemoryMonitor::builder(MemoryBudget::detect(None)?)
//!     .registry(registry.clone())
//!     .build()?;
//! monitor.on_level(MemoryLevel::Critical, |transition, status| {
//!     // e.g. flip a flag that makes ingestion answer 503 until the level falls
//! });
//! let mut levels = monitor.subscribe(); // or watch the channel
//! let _sampling = monitor.spawn(Duration::from_secs(5)); // dropping it stops sampling
//! let writer_heap = monitor.account("index docs: writer heap", 2 * 50 << 20);
//!
//! let scheduler = Scheduler::new();
//! let every_30s = JobSpec::every("reap-pools", Duration::from_secs(30))
//!     .with_jitter(Duration::from_secs(5));
//! scheduler.add(every_30s, || async { Ok(()) })?;
//! let nightly = JobSpec::cron("merge", "0 3 * * *")?.with_timeout(Duration::from_secs(600));
//! scheduler.add_blocking(nightly, || Ok(()))?;
//!
//! let resources = registry.snapshot(); // GET /v1/admin/resources (Serialize)
//! let tasks = scheduler.stats(); // GET /v1/admin/tasks (Serialize)
//! let report = scheduler.shutdown(Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod cron;
mod error;
pub mod memory;
pub mod pool;
pub mod procfs;
pub mod registry;
pub mod scheduler;
#[cfg(test)]
mod test_metrics;

pub use cron::CronExpr;
pub use error::Error;
pub use memory::{
    AllocatorReading, AllocatorStats, BudgetSource, LevelTracker, MemoryBudget, MemoryLevel,
    MemoryMonitor, MemoryReading, MemoryStatus, MonitorTask, Transition,
};
pub use pool::{Pool, PoolBuilder, PoolConfig, PoolError, PoolStatus, Pooled};
pub use registry::{RegistryDiff, RegistrySnapshot, ResourceRegistry, TrackedResource};
pub use scheduler::{JobResult, JobSpec, JobStats, Schedule, Scheduler, ShutdownReport};

/// Names of the metrics this crate records (for the exporter's descriptions).
pub mod metric_names {
    /// Gauge: resident set size of the process, in bytes.
    pub const MEMORY_RSS: &str = "ironsift_memory_rss_bytes";
    /// Gauge: the figure compared with the budget (anonymous resident + accounted), in bytes.
    pub const MEMORY_USED: &str = "ironsift_memory_used_bytes";
    /// Gauge: the memory budget, in bytes.
    pub const MEMORY_BUDGET: &str = "ironsift_memory_budget_bytes";
    /// Gauge: the memory level, 0 normal, 1 warn, 2 critical.
    pub const MEMORY_LEVEL: &str = "ironsift_memory_level";
    /// Counter: memory level changes, by `to`.
    pub const MEMORY_TRANSITIONS: &str = "ironsift_memory_level_transitions_total";
    /// Histogram: time to acquire a pooled object, by `pool`, in seconds.
    pub const POOL_ACQUIRE: &str = "ironsift_pool_acquire_seconds";
    /// Counter: acquisitions that timed out, by `pool`.
    pub const POOL_TIMEOUTS: &str = "ironsift_pool_timeouts_total";
    /// Gauge: objects in the pool (in use or idle), by `pool`.
    pub const POOL_SIZE: &str = "ironsift_pool_size";
    /// Gauge: idle objects ready to hand out, by `pool`.
    pub const POOL_AVAILABLE: &str = "ironsift_pool_available";
    /// Gauge: callers waiting for an object, by `pool`.
    pub const POOL_WAITING: &str = "ironsift_pool_waiting";
    /// Counter: runs of background tasks, by `task` and `outcome`
    /// (`ok`, `error`, `timeout`, `panic`, `skipped`).
    pub const TASK_RUNS: &str = "ironsift_task_runs_total";
    /// Histogram: duration of background task runs, by `task`, in seconds.
    pub const TASK_DURATION: &str = "ironsift_task_duration_seconds";
}

/// Registers help text for every metric this crate records, so exporters (and `promtool check
/// metrics`) describe them. Call once after installing the recorder.
pub fn describe_metrics() {
    use metric_names::*;
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(MEMORY_RSS, Unit::Bytes, "Resident set size of the process.");
    describe_gauge!(
        MEMORY_USED,
        Unit::Bytes,
        "Memory compared with the budget: anonymous resident plus accounted bytes."
    );
    describe_gauge!(MEMORY_BUDGET, Unit::Bytes, "The memory budget.");
    describe_gauge!(MEMORY_LEVEL, "Memory level: 0 normal, 1 warn, 2 critical.");
    describe_counter!(
        MEMORY_TRANSITIONS,
        "Memory level changes, by the level entered."
    );
    describe_histogram!(
        POOL_ACQUIRE,
        Unit::Seconds,
        "Time to acquire a pooled object, by pool."
    );
    describe_counter!(POOL_TIMEOUTS, "Pool acquisitions that timed out, by pool.");
    describe_gauge!(POOL_SIZE, "Objects in the pool, by pool.");
    describe_gauge!(POOL_AVAILABLE, "Idle objects ready to hand out, by pool.");
    describe_gauge!(
        POOL_WAITING,
        "Callers waiting for a pooled object, by pool."
    );
    describe_counter!(TASK_RUNS, "Runs of background tasks, by task and outcome.");
    describe_histogram!(
        TASK_DURATION,
        Unit::Seconds,
        "Duration of background task runs, by task."
    );
}
