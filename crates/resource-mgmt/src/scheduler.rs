//! Background maintenance jobs on tokio: intervals with jitter or cron, one run at a time per
//! job, per-run timeouts, failures and panics contained, statistics per job.
//!
//! Each job has its own loop task. A tick starts a run unless the previous run of the same job is
//! still going, in which case the tick is *skipped* and counted (single flight). A run longer
//! than the job's timeout is cancelled (async jobs: the future is dropped) and counted as a
//! failure. A blocking job ([`Scheduler::add_blocking`]) runs on tokio's blocking pool; a thread
//! cannot be cancelled, so after a timeout it is abandoned, and the job stays "running" (later
//! ticks are skipped) until the thread returns, so two runs never overlap. A job that returns an
//! error or panics is logged, recorded in its [`JobStats`] and runs again at its next tick.
//!
//! Interval schedules keep a fixed rate: the k-th tick fires within `[k·interval,
//! k·interval + jitter]` of the job's start, so jitter spreads jobs without drift. Cron schedules
//! are evaluated in UTC against the wall clock read once when the job starts and advanced by
//! tokio's monotonic clock (so clock steps do not cause bursts, and tests can pause time).

use std::{
    collections::BTreeMap,
    fmt,
    future::Future,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::{FutureExt, future::BoxFuture};
use serde::Serialize;
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
    time::Instant,
};

use crate::{Error, cron::CronExpr, metric_names};

/// What a job returns; any error type converts with `?` or `.into()` (strings too).
pub type JobResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// When a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every `interval`, each tick delayed by a random amount in `[0, jitter]`.
    Every {
        /// The period.
        interval: Duration,
        /// The largest random delay added to each tick.
        jitter: Duration,
    },
    /// At the times a cron expression names (UTC).
    Cron(CronExpr),
}

impl Schedule {
    /// Every `interval`, without jitter.
    pub fn every(interval: Duration) -> Self {
        Schedule::Every {
            interval,
            jitter: Duration::ZERO,
        }
    }

    /// A cron schedule; see [`crate::cron`] for the syntax.
    pub fn cron(expr: &str) -> Result<Self, Error> {
        Ok(Schedule::Cron(CronExpr::parse(expr)?))
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every { interval, jitter } if jitter.is_zero() => {
                write!(f, "every {interval:?}")
            }
            Schedule::Every { interval, jitter } => {
                write!(f, "every {interval:?} (+ up to {jitter:?})")
            }
            Schedule::Cron(expr) => write!(f, "cron {expr}"),
        }
    }
}

/// A job's name, schedule and timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// Unique name (the `task` label of the metrics).
    pub name: String,
    /// When it runs.
    pub schedule: Schedule,
    /// How long one run may take before it is cancelled and counted as failed.
    pub timeout: Option<Duration>,
}

impl JobSpec {
    /// A job on `schedule` without a timeout.
    pub fn new(name: impl Into<String>, schedule: Schedule) -> Self {
        JobSpec {
            name: name.into(),
            schedule,
            timeout: None,
        }
    }

    /// A job every `interval`.
    pub fn every(name: impl Into<String>, interval: Duration) -> Self {
        Self::new(name, Schedule::every(interval))
    }

    /// A job on a cron expression.
    pub fn cron(name: impl Into<String>, expr: &str) -> Result<Self, Error> {
        Ok(Self::new(name, Schedule::cron(expr)?))
    }

    /// Sets the jitter of an interval schedule (no effect on cron).
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        if let Schedule::Every { jitter: j, .. } = &mut self.schedule {
            *j = jitter;
        }
        self
    }

    /// Sets the per-run timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: &str| {
            Err(Error::InvalidSchedule {
                job: self.name.clone(),
                reason: reason.to_string(),
            })
        };
        if self.name.is_empty() {
            return invalid("the name is empty");
        }
        match &self.schedule {
            Schedule::Every { interval, .. } if interval.is_zero() => {
                invalid("the interval is zero")
            }
            Schedule::Cron(expr) if expr.next_after(unix_ms() as i64 / 1000).is_none() => {
                invalid("the cron expression never fires")
            }
            _ if self.timeout.is_some_and(|t| t.is_zero()) => invalid("the timeout is zero"),
            _ => Ok(()),
        }
    }
}

/// Statistics of one job, for `/v1/admin/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStats {
    /// The job's name.
    pub name: String,
    /// Its schedule, in words.
    pub schedule: String,
    /// Its per-run timeout, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Whether a run is in progress (or an abandoned blocking run has not returned yet).
    pub running: bool,
    /// Runs finished (successfully or not).
    pub runs: u64,
    /// Runs that returned `Ok`.
    pub successes: u64,
    /// Runs that returned an error, timed out or panicked.
    pub failures: u64,
    /// Of the failures, runs cancelled by the timeout.
    pub timeouts: u64,
    /// Of the failures, runs that panicked.
    pub panics: u64,
    /// Ticks skipped because the previous run was still going.
    pub skipped: u64,
    /// When the last finished run started (Unix milliseconds).
    pub last_run_unix_ms: Option<u64>,
    /// How long it took, in milliseconds.
    pub last_duration_ms: Option<f64>,
    /// Mean duration of finished runs, in milliseconds.
    pub mean_duration_ms: Option<f64>,
    /// Longest finished run, in milliseconds.
    pub max_duration_ms: Option<f64>,
    /// The last failure's message (`"timed out after 5s"`, `"panicked: ..."`, or the error).
    pub last_error: Option<String>,
    /// When that failure happened (Unix milliseconds).
    pub last_error_unix_ms: Option<u64>,
    /// When the next tick is due (Unix milliseconds), while the scheduler runs.
    pub next_run_unix_ms: Option<u64>,
}

/// What [`Scheduler::shutdown`] could not wait for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShutdownReport {
    /// Jobs whose run was still going at the deadline (async runs were cancelled; blocking ones
    /// keep their thread until it returns).
    pub abandoned: Vec<String>,
}

type JobFn = Arc<dyn Fn(RunGuard) -> BoxFuture<'static, JobResult> + Send + Sync>;

struct Job {
    spec: JobSpec,
    run: JobFn,
    running: AtomicBool,
    trigger: Notify,
    stats: Mutex<StatsInner>,
}

#[derive(Default)]
struct StatsInner {
    runs: u64,
    successes: u64,
    failures: u64,
    timeouts: u64,
    panics: u64,
    skipped: u64,
    total: Duration,
    max: Duration,
    last_duration: Option<Duration>,
    last_run_unix_ms: Option<u64>,
    last_error: Option<String>,
    last_error_unix_ms: Option<u64>,
    next: Option<Instant>,
}

/// Held for the whole of a run, dropped when the job's code is done; for blocking jobs it lives
/// in the thread, so an abandoned run still blocks the next one.
struct RunGuard(Arc<Job>);

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

enum Outcome {
    Ok,
    Failed(String),
    TimedOut(Duration),
    Panicked(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed(_) => "error",
            Outcome::TimedOut(_) => "timeout",
            Outcome::Panicked(_) => "panic",
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

impl Job {
    fn stats(&self) -> JobStats {
        let s = lock(&self.stats);
        let now = Instant::now();
        let now_unix = unix_ms();
        JobStats {
            name: self.spec.name.clone(),
            schedule: self.spec.schedule.to_string(),
            timeout_ms: self.spec.timeout.map(|t| t.as_millis() as u64),
            running: self.running.load(Ordering::Acquire),
            runs: s.runs,
            successes: s.successes,
            failures: s.failures,
            timeouts: s.timeouts,
            panics: s.panics,
            skipped: s.skipped,
            last_run_unix_ms: s.last_run_unix_ms,
            last_duration_ms: s.last_duration.map(ms),
            mean_duration_ms: (s.runs > 0).then(|| ms(s.total) / s.runs as f64),
            max_duration_ms: (s.runs > 0).then(|| ms(s.max)),
            last_error: s.last_error.clone(),
            last_error_unix_ms: s.last_error_unix_ms,
            next_run_unix_ms: s
                .next
                .map(|next| now_unix + next.saturating_duration_since(now).as_millis() as u64),
        }
    }

    fn skip(&self) {
        lock(&self.stats).skipped += 1;
        metrics::counter!(metric_names::TASK_RUNS, "task" => self.spec.name.clone(), "outcome" => "skipped")
            .increment(1);
        tracing::debug!(task = %self.spec.name, "previous run still going; tick skipped");
    }

    fn record(&self, outcome: Outcome, took: Duration, started_unix_ms: u64) {
        let name = &self.spec.name;
        metrics::counter!(metric_names::TASK_RUNS, "task" => name.clone(), "outcome" => outcome.label())
            .increment(1);
        metrics::histogram!(metric_names::TASK_DURATION, "task" => name.clone())
            .record(took.as_secs_f64());
        let mut s = lock(&self.stats);
        s.runs += 1;
        s.total += took;
        s.max = s.max.max(took);
        s.last_duration = Some(took);
        s.last_run_unix_ms = Some(started_unix_ms);
        let error = match outcome {
            Outcome::Ok => {
                s.successes += 1;
                tracing::debug!(task = %name, ?took, "background task finished");
                return;
            }
            Outcome::Failed(e) => e,
            Outcome::TimedOut(limit) => {
                s.timeouts += 1;
                format!("timed out after {limit:?}")
            }
            Outcome::Panicked(m) => {
                s.panics += 1;
                format!("panicked: {m}")
            }
        };
        s.failures += 1;
        tracing::error!(task = %name, error = %error, ?took, "background task failed");
        s.last_error = Some(error);
        s.last_error_unix_ms = Some(unix_ms());
    }
}

async fn run_once(job: Arc<Job>, guard: RunGuard) {
    let started = Instant::now();
    let started_unix = unix_ms();
    let run = AssertUnwindSafe((job.run)(guard)).catch_unwind();
    let caught = match job.spec.timeout {
        Some(limit) => tokio::time::timeout(limit, run).await.map_err(|_| limit),
        None => Ok(run.await),
    };
    let outcome = match caught {
        Ok(Ok(Ok(()))) => Outcome::Ok,
        Ok(Ok(Err(e))) => Outcome::Failed(e.to_string()),
        Ok(Err(payload)) => Outcome::Panicked(panic_message(&*payload)),
        Err(limit) => Outcome::TimedOut(limit),
    };
    job.record(outcome, started.elapsed(), started_unix);
}

/// When the next tick is due.
struct Ticker {
    schedule: Schedule,
    rng: fastrand::Rng,
    /// The un-jittered time of the last tick (interval schedules).
    base: Instant,
    /// Wall-clock anchor for cron: this instant is that many Unix milliseconds.
    anchor: (Instant, u64),
}

impl Ticker {
    fn new(schedule: Schedule) -> Self {
        let now = Instant::now();
        Ticker {
            schedule,
            rng: fastrand::Rng::new(),
            base: now,
            anchor: (now, unix_ms()),
        }
    }

    fn next(&mut self) -> Option<Instant> {
        let now = Instant::now();
        match &self.schedule {
            Schedule::Every { interval, jitter } => {
                let jitter_ns = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
                if self.base + *interval + *jitter < now {
                    // Fell behind by more than a period (suspended host): restart the rate from
                    // now instead of firing a burst of catch-up ticks.
                    self.base = now;
                }
                self.base += *interval;
                Some(self.base + Duration::from_nanos(self.rng.u64(0..=jitter_ns)))
            }
            Schedule::Cron(expr) => {
                let (anchor, anchor_ms) = self.anchor;
                let now_ms = anchor_ms + now.duration_since(anchor).as_millis() as u64;
                let next_s = expr.next_after((now_ms / 1000) as i64)?;
                let delay_ms = (next_s as u64 * 1000).saturating_sub(now_ms);
                Some(now + Duration::from_millis(delay_ms))
            }
        }
    }
}

async fn job_loop(job: Arc<Job>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = Ticker::new(job.spec.schedule.clone());
    let mut next = ticker.next();
    let mut current: Option<BoxFuture<'static, ()>> = None;
    let start = |current: &mut Option<BoxFuture<'static, ()>>| {
        if current.is_some() || job.running.swap(true, Ordering::AcqRel) {
            job.skip();
        } else {
            let guard = RunGuard(job.clone());
            *current = Some(Box::pin(run_once(job.clone(), guard)));
        }
    };
    loop {
        lock(&job.stats).next = next;
        tokio::select! {
            biased;
            // Err: every Scheduler handle was dropped, which stops the jobs too.
            _ = shutdown.wait_for(|stop| *stop) => break,
            () = async { current.as_mut().expect("guarded by the branch condition").await }, if current.is_some() => {
                current = None;
            }
            () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                next = ticker.next();
                start(&mut current);
            }
            () = job.trigger.notified() => start(&mut current),
        }
    }
    lock(&job.stats).next = None;
    // Let the run in progress finish; `shutdown` bounds this by aborting the task.
    if let Some(run) = current {
        run.await;
    }
}

/// Runs background jobs; clones share the same jobs. Dropping every handle stops the ticks
/// (runs in progress finish), as does [`Scheduler::shutdown`].
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    loops: Mutex<Vec<(String, JoinHandle<()>)>>,
    stop: watch::Sender<bool>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("jobs", &lock(&self.inner.jobs).keys().collect::<Vec<_>>())
            .field("shut_down", &self.is_shut_down())
            .finish()
    }
}

impl Scheduler {
    /// A scheduler without jobs.
    pub fn new() -> Self {
        Scheduler {
            inner: Arc::new(Inner {
                jobs: Mutex::default(),
                loops: Mutex::default(),
                stop: watch::Sender::new(false),
            }),
        }
    }

    /// Whether [`Scheduler::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// Schedules an async job. Must be called inside a tokio runtime; the first tick is one
    /// period (or the next cron time) from now.
    pub fn add<F, Fut>(&self, spec: JobSpec, job: F) -> Result<(), Error>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        let job = Arc::new(job);
        self.insert(
            spec,
            Arc::new(move |guard: RunGuard| {
                let job = job.clone();
                async move {
                    let _guard = guard;
                    job().await
                }
                .boxed()
            }),
        )
    }

    /// Schedules a blocking job, run on tokio's blocking pool (index merges, file sweeps).
    ///
    /// A timed-out blocking run cannot be stopped: it is recorded as a failure and abandoned, and
    /// the job's later ticks are skipped until its thread returns.
    pub fn add_blocking<F>(&self, spec: JobSpec, job: F) -> Result<(), Error>
    where
        F: Fn() -> JobResult + Send + Sync + 'static,
    {
        let job = Arc::new(job);
        self.insert(
            spec,
            Arc::new(move |guard: RunGuard| {
                let job = job.clone();
                async move {
                    let thread = tokio::task::spawn_blocking(move || {
                        let _guard = guard;
                        job()
                    });
                    match thread.await {
                        Ok(result) => result,
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(e) => Err(e.into()),
                    }
                }
                .boxed()
            }),
        )
    }

    fn insert(&self, spec: JobSpec, run: JobFn) -> Result<(), Error> {
        spec.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidConfig("Scheduler::add needs to run inside a tokio runtime".into())
        })?;
        let mut jobs = lock(&self.inner.jobs);
        if self.is_shut_down() {
            return Err(Error::ShutDown);
        }
        if jobs.contains_key(&spec.name) {
            return Err(Error::DuplicateJob(spec.name));
        }
        let name = spec.name.clone();
        let job = Arc::new(Job {
            spec,
            run,
            running: AtomicBool::new(false),
            trigger: Notify::new(),
            stats: Mutex::default(),
        });
        jobs.insert(name.clone(), job.clone());
        let handle = runtime.spawn(job_loop(job, self.inner.stop.subscribe()));
        lock(&self.inner.loops).push((name, handle));
        Ok(())
    }

    /// Starts a run of `name` now, outside its schedule (skipped, like a tick, if one is going).
    pub fn run_now(&self, name: &str) -> Result<(), Error> {
        if self.is_shut_down() {
            return Err(Error::ShutDown);
        }
        let jobs = lock(&self.inner.jobs);
        let job = jobs
            .get(name)
            .ok_or_else(|| Error::UnknownJob(name.to_string()))?;
        job.trigger.notify_one();
        Ok(())
    }

    /// Statistics of every job, sorted by name.
    pub fn stats(&self) -> Vec<JobStats> {
        lock(&self.inner.jobs).values().map(|j| j.stats()).collect()
    }

    /// Statistics of one job.
    pub fn job_stats(&self, name: &str) -> Option<JobStats> {
        lock(&self.inner.jobs).get(name).map(|j| j.stats())
    }

    /// Stops all ticks at once, then waits up to `grace` for runs in progress. Runs still going at
    /// the deadline are cancelled (async) or abandoned (blocking) and named in the report.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        self.inner.stop.send_replace(true);
        let deadline = Instant::now() + grace;
        let loops = std::mem::take(&mut *lock(&self.inner.loops));
        let mut abandoned = Vec::new();
        for (name, mut handle) in loops {
            if tokio::time::timeout_at(deadline, &mut handle)
                .await
                .is_err()
            {
                handle.abort();
                abandoned.push(name);
            }
        }
        // Blocking runs abandoned after a timeout may still hold their thread.
        let jobs: Vec<Arc<Job>> = lock(&self.inner.jobs).values().cloned().collect();
        for job in jobs {
            while job.running.load(Ordering::Acquire) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if job.running.load(Ordering::Acquire) && !abandoned.contains(&job.spec.name) {
                abandoned.push(job.spec.name.clone());
            }
        }
        if abandoned.is_empty() {
            tracing::info!("background tasks stopped");
        } else {
            tracing::warn!(
                ?abandoned,
                "background tasks still running at the shutdown deadline"
            );
        }
        ShutdownReport { abandoned }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Records each run's start, relative to `t0`.
    fn recorder(
        t0: Instant,
    ) -> (
        Arc<Mutex<Vec<Duration>>>,
        impl Fn() -> BoxFuture<'static, JobResult> + Send + Sync + 'static,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let job = move || {
            s.lock().unwrap().push(Instant::now() - t0);
            async { Ok(()) }.boxed()
        };
        (seen, job)
    }

    #[tokio::test(start_paused = true)]
    async fn intervals_fire_at_the_right_virtual_times() {
        let sched = Scheduler::new();
        let t0 = Instant::now();
        let (seen, job) = recorder(t0);
        sched
            .add(JobSpec::every("tick", Duration::from_secs(10)), job)
            .unwrap();
        tokio::time::sleep(Duration::from_secs(35)).await;
        let secs: Vec<u64> = seen.lock().unwrap().iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [10, 20, 30]);
        let stats = sched.job_stats("tick").unwrap();
        assert_eq!(
            (stats.runs, stats.successes, stats.failures, stats.skipped),
            (3, 3, 0, 0)
        );
        assert_eq!(stats.schedule, "every 10s");
        assert!(stats.next_run_unix_ms.is_some());
        assert!(
            sched
                .shutdown(Duration::from_secs(1))
                .await
                .abandoned
                .is_empty()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_within_bounds_without_drift() {
        let sched = Scheduler::new();
        let t0 = Instant::now();
        let (seen, job) = recorder(t0);
        let spec =
            JobSpec::every("jittery", Duration::from_secs(10)).with_jitter(Duration::from_secs(3));
        assert_eq!(spec.schedule.to_string(), "every 10s (+ up to 3s)");
        sched.add(spec, job).unwrap();
        tokio::time::sleep(Duration::from_secs(1000)).await;
        let seen = seen.lock().unwrap().clone();
        assert!(seen.len() >= 99, "{} runs", seen.len());
        for (k, at) in seen.iter().enumerate() {
            let base = Duration::from_secs(10 * (k as u64 + 1));
            assert!(
                *at >= base && *at <= base + Duration::from_secs(3),
                "run {k} at {at:?}"
            );
        }
        let distinct: std::collections::HashSet<_> =
            seen.iter().map(|d| d.as_millis() % 10_000).collect();
        assert!(distinct.len() > 10, "jitter was not applied");
    }

    #[tokio::test(start_paused = true)]
    async fn runs_never_overlap_and_late_ticks_are_skipped() {
        let sched = Scheduler::new();
        let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n, m) = (now.clone(), max.clone());
        sched
            .add(JobSpec::every("slow", Duration::from_secs(10)), move || {
                let (n, m) = (n.clone(), m.clone());
                async move {
                    let c = n.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(c, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(25)).await;
                    n.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .unwrap();
        tokio::time::sleep(Duration::from_secs(101)).await;
        assert_eq!(max.load(Ordering::SeqCst), 1);
        let s = sched.job_stats("slow").unwrap();
        // Runs start at 10, 40, 70, 100; ticks 20, 30, 50, 60, 80, 90 are skipped.
        assert_eq!((s.runs, s.skipped), (3, 6));
        assert!(s.running);
        assert_eq!(s.max_duration_ms, Some(25_000.0));
        assert_eq!(s.mean_duration_ms, Some(25_000.0));
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_cancel_the_run_and_count_as_failures() {
        let sched = Scheduler::new();
        let finished = Arc::new(AtomicUsize::new(0));
        let f = finished.clone();
        let spec =
            JobSpec::every("stuck", Duration::from_secs(10)).with_timeout(Duration::from_secs(5));
        sched
            .add(spec, move || {
                let f = f.clone();
                async move {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    f.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .unwrap();
        tokio::time::sleep(Duration::from_secs(16)).await;
        let s = sched.job_stats("stuck").unwrap();
        assert_eq!((s.runs, s.failures, s.timeouts, s.successes), (1, 1, 1, 0));
        assert_eq!(s.last_error.as_deref(), Some("timed out after 5s"));
        assert_eq!(s.last_duration_ms, Some(5000.0));
        assert!(!s.running, "the cancelled run released the job");
        tokio::time::sleep(Duration::from_secs(10)).await;
        let s = sched.job_stats("stuck").unwrap();
        assert_eq!(
            (s.runs, s.timeouts, s.skipped),
            (2, 2, 0),
            "it ran again at its next tick"
        );
        assert_eq!(finished.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_and_panics_are_contained() {
        let recorder = crate::test_metrics::Captured::default();
        let _local = metrics::set_default_local_recorder(&recorder);
        let sched = Scheduler::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        sched
            .add(JobSpec::every("flaky", Duration::from_secs(1)), move || {
                let n = c.fetch_add(1, Ordering::SeqCst);
                async move {
                    match n % 3 {
                        0 => panic!("boom {n}"),
                        1 => Err("disk full".into()),
                        _ => Ok(()),
                    }
                }
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(6500)).await;
        let s = sched.job_stats("flaky").unwrap();
        assert_eq!((s.runs, s.panics, s.failures, s.successes), (6, 2, 4, 2));
        assert_eq!(s.last_error.as_deref(), Some("disk full"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = sched.job_stats("flaky").unwrap();
        assert_eq!(s.last_error.as_deref(), Some("panicked: boom 6"));
        assert!(s.last_error_unix_ms.is_some());
        let json = serde_json::to_value(sched.stats()).unwrap();
        assert_eq!(json[0]["name"], "flaky");
        assert_eq!(json[0]["panics"], 3);
        let runs = |outcome: &str| {
            recorder.get(&format!(
                "ironsift_task_runs_total{{task=flaky,outcome={outcome}}}"
            ))
        };
        assert_eq!(
            (runs("ok"), runs("error"), runs("panic")),
            (Some(2.0), Some(2.0), Some(3.0))
        );
        assert_eq!(
            recorder.get("ironsift_task_duration_seconds{task=flaky}"),
            Some(7.0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_ticks_and_waits_for_runs() {
        let sched = Scheduler::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        sched
            .add(JobSpec::every("a", Duration::from_secs(1)), move || {
                let r = r.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    r.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .unwrap();
        let (_seen, job) = recorder(Instant::now());
        sched
            .add(JobSpec::every("b", Duration::from_secs(3)), job)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(3200)).await;
        // "a" is half-way through its third run: shutdown waits for it.
        let report = sched.shutdown(Duration::from_secs(5)).await;
        assert!(report.abandoned.is_empty());
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "no tick after shutdown");
        assert!(
            sched
                .stats()
                .iter()
                .all(|s| s.next_run_unix_ms.is_none() && !s.running)
        );
        assert!(matches!(sched.run_now("a"), Err(Error::ShutDown)));
        let again = sched.add(JobSpec::every("c", Duration::from_secs(1)), || async {
            Ok(())
        });
        assert!(matches!(again, Err(Error::ShutDown)));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cancels_runs_past_the_grace() {
        let sched = Scheduler::new();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        sched
            .add(JobSpec::every("long", Duration::from_secs(1)), move || {
                let d = d.clone();
                async move {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    d.store(true, Ordering::SeqCst);
                    Ok(())
                }
            })
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t = Instant::now();
        let report = sched.shutdown(Duration::from_secs(3)).await;
        assert_eq!(report.abandoned, ["long"]);
        assert_eq!(Instant::now() - t, Duration::from_secs(3));
        tokio::time::sleep(Duration::from_secs(7200)).await;
        assert!(!done.load(Ordering::SeqCst), "the run was cancelled");
        assert!(!sched.job_stats("long").unwrap().running);
    }

    #[tokio::test(start_paused = true)]
    async fn cron_fires_on_minute_boundaries() {
        let sched = Scheduler::new();
        let t0 = Instant::now();
        let (seen, job) = recorder(t0);
        sched
            .add(JobSpec::cron("minutely", "* * * * *").unwrap(), job)
            .unwrap();
        tokio::time::sleep(Duration::from_secs(181)).await;
        let seen = seen.lock().unwrap().clone();
        assert!(seen.len() == 3 || seen.len() == 4, "{seen:?}");
        assert!(seen[0] <= Duration::from_secs(60));
        for pair in seen.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_secs(60));
        }
        assert_eq!(sched.stats()[0].schedule, "cron * * * * *");
    }

    #[tokio::test(start_paused = true)]
    async fn run_now_and_registration_errors() {
        let sched = Scheduler::new();
        let (seen, job) = recorder(Instant::now());
        sched
            .add(JobSpec::every("daily", Duration::from_secs(86_400)), job)
            .unwrap();
        sched.run_now("daily").unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert!(matches!(sched.run_now("nope"), Err(Error::UnknownJob(_))));
        let dup = sched.add(JobSpec::every("daily", Duration::from_secs(1)), || async {
            Ok(())
        });
        assert!(matches!(dup, Err(Error::DuplicateJob(_))));
        let zero = sched.add(JobSpec::every("z", Duration::ZERO), || async { Ok(()) });
        assert!(matches!(zero, Err(Error::InvalidSchedule { .. })));
        let never = sched.add(JobSpec::cron("n", "0 0 31 2 *").unwrap(), || async {
            Ok(())
        });
        assert!(matches!(never, Err(Error::InvalidSchedule { .. })));
        assert!(JobSpec::cron("bad", "61 * * * *").is_err());
    }

    #[test]
    fn add_outside_a_runtime_is_an_error() {
        let sched = Scheduler::new();
        let r = sched.add(JobSpec::every("x", Duration::from_secs(1)), || async {
            Ok(())
        });
        assert!(matches!(r, Err(Error::InvalidConfig(_))));
    }

    /// Blocking jobs run on real threads, so this test uses real (short) time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_jobs_time_out_without_overlap() {
        let sched = Scheduler::new();
        let (now, max, runs) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (n, m, r) = (now.clone(), max.clone(), runs.clone());
        let spec = JobSpec::every("merge", Duration::from_millis(20))
            .with_timeout(Duration::from_millis(80));
        sched
            .add_blocking(spec, move || {
                let c = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(c, Ordering::SeqCst);
                let k = r.fetch_add(1, Ordering::SeqCst);
                if k == 0 {
                    std::thread::sleep(Duration::from_millis(300));
                }
                n.fetch_sub(1, Ordering::SeqCst);
                if k == 2 {
                    panic!("blocking boom");
                }
                Ok(())
            })
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sched.job_stats("merge").unwrap().runs < 5 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = sched.job_stats("merge").unwrap();
        assert!(s.runs >= 5, "{s:?}");
        assert_eq!(
            max.load(Ordering::SeqCst),
            1,
            "no overlap even after a timeout"
        );
        assert!(s.timeouts >= 1, "{s:?}");
        assert!(
            s.skipped >= 1,
            "ticks while the abandoned thread ran were skipped: {s:?}"
        );
        assert_eq!(s.panics, 1);
        assert!(
            sched
                .shutdown(Duration::from_secs(5))
                .await
                .abandoned
                .is_empty()
        );
    }
}
