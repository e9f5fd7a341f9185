//! The health model: named checks, each with a status, a detail and the time it took.
//!
//! Liveness is "the process answers"; readiness is "every check passes and we are not shutting
//! down". Checks are cheap, synchronous functions (a stat, an atomic read); they must not wait
//! on the work queues they report on, so readiness stays fast under load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Working.
    Pass,
    /// Working but worth attention; does not make the service unready.
    Warn,
    /// Not working; the service is unready.
    Fail,
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The status.
    pub status: Status,
    /// A human explanation (e.g. "3 indexes open", "disk 97% full").
    pub detail: String,
}

impl Outcome {
    /// A passing outcome.
    pub fn pass(detail: impl Into<String>) -> Self {
        Outcome {
            status: Status::Pass,
            detail: detail.into(),
        }
    }
    /// A warning outcome.
    pub fn warn(detail: impl Into<String>) -> Self {
        Outcome {
            status: Status::Warn,
            detail: detail.into(),
        }
    }
    /// A failing outcome.
    pub fn fail(detail: impl Into<String>) -> Self {
        Outcome {
            status: Status::Fail,
            detail: detail.into(),
        }
    }
}

/// A named readiness check.
pub trait HealthCheck: Send + Sync {
    /// Name shown in reports (e.g. `indexes`, `disk`).
    fn name(&self) -> &str;
    /// Runs the check.
    fn check(&self) -> Outcome;
}

impl<F: Fn() -> Outcome + Send + Sync> HealthCheck for (&'static str, F) {
    fn name(&self) -> &str {
        self.0
    }
    fn check(&self) -> Outcome {
        (self.1)()
    }
}

/// A check whose outcome is reused for `ttl`: for checks that read the system (disk, memory)
/// and change slowly, so a readiness probe under load costs an atomic read, not syscalls.
pub struct Cached<C> {
    inner: C,
    ttl: Duration,
    last: Mutex<Option<(Instant, Outcome)>>,
}

impl<C: HealthCheck> Cached<C> {
    /// Wraps `inner`, reusing its outcome for `ttl`.
    pub fn new(inner: C, ttl: Duration) -> Self {
        Cached {
            inner,
            ttl,
            last: Mutex::new(None),
        }
    }
}

impl<C: HealthCheck> HealthCheck for Cached<C> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn check(&self) -> Outcome {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, outcome)) = &*last
            && at.elapsed() < self.ttl
        {
            return outcome.clone();
        }
        let outcome = self.inner.check();
        *last = Some((Instant::now(), outcome.clone()));
        outcome
    }
}

/// One check's result in a report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckResult {
    /// Check name.
    pub name: String,
    /// Its status.
    pub status: Status,
    /// Its detail.
    pub detail: String,
    /// How long the check took, in milliseconds.
    pub took_ms: f64,
}

/// The readiness report rendered by `/readyz`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// True when every check passes (or warns) and the service is not shutting down.
    pub ready: bool,
    /// `ready`, `unready` or `shutting_down`.
    pub status: &'static str,
    /// Each check.
    pub checks: Vec<CheckResult>,
}

/// The registry of checks plus the shutting-down flag.
#[derive(Default)]
pub struct Health {
    checks: RwLock<Vec<Arc<dyn HealthCheck>>>,
    shutting_down: AtomicBool,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("shutting_down", &self.is_shutting_down())
            .finish_non_exhaustive()
    }
}

impl Health {
    /// No checks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check.
    pub fn register(&self, check: Arc<dyn HealthCheck>) {
        self.checks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(check);
    }

    /// From now on the service reports unready, whatever the checks say.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Runs every check and builds the report.
    pub fn report(&self) -> Report {
        let checks = self
            .checks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let results: Vec<CheckResult> = checks
            .iter()
            .map(|c| {
                let started = Instant::now();
                let o = c.check();
                CheckResult {
                    name: c.name().to_string(),
                    status: o.status,
                    detail: o.detail,
                    took_ms: started.elapsed().as_secs_f64() * 1e3,
                }
            })
            .collect();
        let shutting_down = self.is_shutting_down();
        let failing = results.iter().any(|r| r.status == Status::Fail);
        let (ready, status) = match (shutting_down, failing) {
            (true, _) => (false, "shutting_down"),
            (false, true) => (false, "unready"),
            (false, false) => (true, "ready"),
        };
        Report {
            ready,
            status,
            checks: results,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn report_follows_checks_and_shutdown() {
        let h = Health::new();
        assert!(h.report().ready);
        let broken = Arc::new(AtomicBool::new(false));
        let b = broken.clone();
        h.register(Arc::new(("disk", move || {
            if b.load(Ordering::SeqCst) {
                Outcome::fail("disk gone")
            } else {
                Outcome::pass("ok")
            }
        })));
        h.register(Arc::new(("memory", || Outcome::warn("80% used"))));
        let r = h.report();
        assert!(r.ready, "a warning does not make the service unready");
        assert_eq!(r.checks.len(), 2);
        broken.store(true, Ordering::SeqCst);
        let r = h.report();
        assert!(!r.ready);
        assert_eq!(r.status, "unready");
        assert_eq!(r.checks[0].detail, "disk gone");
        broken.store(false, Ordering::SeqCst);
        h.set_shutting_down();
        assert_eq!(h.report().status, "shutting_down");
    }

    #[test]
    fn cached_checks_reuse_their_outcome_for_the_ttl() {
        use std::sync::atomic::AtomicU32;
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let cached = Cached::new(
            ("disk", move || {
                c.fetch_add(1, Ordering::SeqCst);
                Outcome::pass("ok")
            }),
            Duration::from_millis(200),
        );
        for _ in 0..5 {
            assert_eq!(cached.check().status, Status::Pass);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        std::thread::sleep(Duration::from_millis(250));
        cached.check();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(cached.name(), "disk");
    }

    #[test]
    fn shutdown_status_is_sticky() {
        let h = Health::new();
        h.set_shutting_down();
        assert_eq!(h.report().status, "shutting_down");
    }
}
