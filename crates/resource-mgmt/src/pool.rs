//! Object pools over `deadpool::managed`, with the limits a long-running service needs.
//!
//! [`Pool`] wraps a deadpool pool of the caller's [`Manager`] and adds: an acquire timeout that
//! bounds the whole acquisition (waiting for a slot, recycling, creating), a maximum lifetime and
//! an idle timeout (checked when an object is recycled, and proactively by [`Pool::reap`], which
//! a scheduled job can call), a synchronous health check run after the manager's own recycle,
//! metrics per pool, registry tracking of live objects, and a serializable [`PoolStatus`].
//!
//! Ages are measured on tokio's clock, so tests can drive lifetimes with paused time.

use std::{
    fmt,
    ops::{Deref, DerefMut},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

pub use deadpool::managed::{Manager, Metrics as ObjectMetrics, RecycleError, RecycleResult};
use deadpool::{Runtime, managed};
use search_error::{Classify, ErrorCode};
use serde::Serialize;
use tokio::time::Instant;

use crate::{
    Error, metric_names,
    registry::{ResourceRegistry, TrackedResource},
};

/// The registry kind under which pooled objects are tracked (labelled with the pool's name).
pub const POOL_OBJECT_KIND: &str = "pool_object";

/// Limits of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most objects alive at once (in use plus idle).
    pub max_size: usize,
    /// Longest a caller waits in [`Pool::get`] (slot, recycle and creation together); `None`
    /// waits forever.
    pub acquire_timeout: Option<Duration>,
    /// Longest one [`Manager::create`] may take.
    pub create_timeout: Option<Duration>,
    /// Objects older than this are dropped instead of reused.
    pub max_lifetime: Option<Duration>,
    /// Objects idle longer than this are dropped instead of reused.
    pub idle_timeout: Option<Duration>,
}

impl Default for PoolConfig {
    /// Sixteen objects, a five-second acquire timeout, no lifetime limits.
    fn default() -> Self {
        PoolConfig {
            max_size: 16,
            acquire_timeout: Some(Duration::from_secs(5)),
            create_timeout: None,
            max_lifetime: None,
            idle_timeout: None,
        }
    }
}

/// Failure to get an object from a [`Pool`]; `E` is the manager's error.
#[derive(Debug, thiserror::Error)]
pub enum PoolError<E> {
    /// No object became available within the acquire timeout: the pool is saturated.
    #[error("pool {pool}: no object available within {waited:?}")]
    Timeout {
        /// The pool's name.
        pool: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// Creating (or recycling) an object took longer than its own timeout.
    #[error("pool {pool}: creating an object timed out")]
    CreateTimeout {
        /// The pool's name.
        pool: String,
    },
    /// The pool was closed.
    #[error("pool {pool} is closed")]
    Closed {
        /// The pool's name.
        pool: String,
    },
    /// The manager failed to create an object.
    #[error("pool {pool}: {source}")]
    Backend {
        /// The pool's name.
        pool: String,
        /// The manager's error.
        #[source]
        source: E,
    },
    /// deadpool reported something this wrapper rules out (no runtime, hook failure).
    #[error("pool {pool}: {message}")]
    Internal {
        /// The pool's name.
        pool: String,
        /// deadpool's description.
        message: String,
    },
}

impl<E: Classify> Classify for PoolError<E> {
    fn code(&self) -> ErrorCode {
        match self {
            PoolError::Timeout { .. } => ErrorCode::Overloaded,
            PoolError::CreateTimeout { .. } => ErrorCode::Timeout,
            PoolError::Closed { .. } => ErrorCode::Unavailable,
            PoolError::Backend { source, .. } => source.code(),
            PoolError::Internal { .. } => ErrorCode::Internal,
        }
    }
}

/// How a pool is doing, for the admin view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolStatus {
    /// The pool's name.
    pub name: String,
    /// Most objects alive at once.
    pub max_size: usize,
    /// Objects alive now (in use plus idle).
    pub size: usize,
    /// Idle objects ready to hand out.
    pub available: usize,
    /// Objects handed out now.
    pub in_use: usize,
    /// Callers waiting for an object.
    pub waiting: usize,
    /// Successful acquisitions so far.
    pub acquired_total: u64,
    /// Acquisitions that timed out.
    pub timeouts_total: u64,
    /// Objects created.
    pub created_total: u64,
    /// Objects dropped for exceeding the maximum lifetime.
    pub expired_total: u64,
    /// Objects dropped for being idle too long.
    pub idle_closed_total: u64,
    /// Objects dropped because recycling or the health check failed.
    pub unhealthy_total: u64,
}

type HealthCheck<T> = Arc<dyn Fn(&mut T) -> bool + Send + Sync>;

#[derive(Default)]
struct Counters {
    acquired: AtomicU64,
    timeouts: AtomicU64,
    created: AtomicU64,
    expired: AtomicU64,
    idle_closed: AtomicU64,
    unhealthy: AtomicU64,
}

struct Shared {
    name: String,
    config: PoolConfig,
    counters: Counters,
}

impl Shared {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Why `entry` must not be reused, if it must not.
    fn expired<T>(&self, entry: &Entry<T>) -> Option<&'static str> {
        if self
            .config
            .max_lifetime
            .is_some_and(|l| entry.created.elapsed() >= l)
        {
            Self::bump(&self.counters.expired);
            return Some("maximum lifetime reached");
        }
        if self
            .config
            .idle_timeout
            .is_some_and(|l| entry.returned.elapsed() >= l)
        {
            Self::bump(&self.counters.idle_closed);
            return Some("idle too long");
        }
        None
    }
}

/// A pooled value with the bookkeeping the wrapper needs.
struct Entry<T> {
    value: T,
    created: Instant,
    returned: Instant,
    _tracked: Option<TrackedResource>,
}

/// The caller's manager, wrapped to add lifetimes and health checks to `recycle`.
struct Wrapped<M: Manager> {
    manager: M,
    shared: Arc<Shared>,
    health: Option<HealthCheck<M::Type>>,
    registry: Option<ResourceRegistry>,
}

impl<M: Manager> Manager for Wrapped<M> {
    type Type = Entry<M::Type>;
    type Error = M::Error;

    async fn create(&self) -> Result<Self::Type, Self::Error> {
        let value = self.manager.create().await?;
        Shared::bump(&self.shared.counters.created);
        let now = Instant::now();
        Ok(Entry {
            value,
            created: now,
            returned: now,
            _tracked: self
                .registry
                .as_ref()
                .map(|r| r.track(POOL_OBJECT_KIND, self.shared.name.clone(), 0)),
        })
    }

    async fn recycle(
        &self,
        entry: &mut Self::Type,
        metrics: &ObjectMetrics,
    ) -> RecycleResult<Self::Error> {
        if let Some(why) = self.shared.expired(entry) {
            return Err(RecycleError::message(why));
        }
        if let Err(e) = self.manager.recycle(&mut entry.value, metrics).await {
            Shared::bump(&self.shared.counters.unhealthy);
            return Err(e);
        }
        if let Some(check) = &self.health
            && !check(&mut entry.value)
        {
            Shared::bump(&self.shared.counters.unhealthy);
            return Err(RecycleError::message("health check failed"));
        }
        Ok(())
    }

    fn detach(&self, entry: &mut Self::Type) {
        self.manager.detach(&mut entry.value);
    }
}

/// Builds a [`Pool`].
pub struct PoolBuilder<M: Manager> {
    name: String,
    manager: M,
    config: PoolConfig,
    health: Option<HealthCheck<M::Type>>,
    registry: Option<ResourceRegistry>,
}

impl<M: Manager> PoolBuilder<M> {
    /// All limits at once.
    pub fn config(mut self, config: PoolConfig) -> Self {
        self.config = config;
        self
    }

    /// See [`PoolConfig::max_size`].
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.config.max_size = max_size;
        self
    }

    /// See [`PoolConfig::acquire_timeout`].
    pub fn acquire_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.acquire_timeout = timeout;
        self
    }

    /// See [`PoolConfig::create_timeout`].
    pub fn create_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.create_timeout = timeout;
        self
    }

    /// See [`PoolConfig::max_lifetime`].
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.config.max_lifetime = lifetime;
        self
    }

    /// See [`PoolConfig::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// A check run on every reused object after the manager's `recycle`; `false` drops the
    /// object and the pool tries the next idle one or creates a fresh one.
    pub fn health_check(
        mut self,
        check: impl Fn(&mut M::Type) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.health = Some(Arc::new(check));
        self
    }

    /// Tracks every live object in `registry` under [`POOL_OBJECT_KIND`], labelled with the name.
    pub fn registry(mut self, registry: ResourceRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Builds the pool; no object is created until the first [`Pool::get`].
    pub fn build(self) -> Result<Pool<M>, Error> {
        if self.config.max_size == 0 {
            return Err(Error::InvalidConfig(format!(
                "pool {}: max_size must be at least 1",
                self.name
            )));
        }
        let shared = Arc::new(Shared {
            name: self.name,
            config: self.config,
            counters: Counters::default(),
        });
        let wrapped = Wrapped {
            manager: self.manager,
            shared: shared.clone(),
            health: self.health,
            registry: self.registry,
        };
        let inner = managed::Pool::builder(wrapped)
            .max_size(shared.config.max_size)
            .create_timeout(shared.config.create_timeout)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| Error::InvalidConfig(format!("pool {}: {e}", shared.name)))?;
        Ok(Pool { inner, shared })
    }
}

/// A bounded pool of `M`'s objects; clones share the pool.
pub struct Pool<M: Manager> {
    inner: managed::Pool<Wrapped<M>>,
    shared: Arc<Shared>,
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<M: Manager> fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("status", &self.status())
            .finish()
    }
}

fn publish_gauges(name: &str, status: deadpool::Status) {
    let pool = name.to_string();
    metrics::gauge!(metric_names::POOL_SIZE, "pool" => pool.clone()).set(status.size as f64);
    metrics::gauge!(metric_names::POOL_AVAILABLE, "pool" => pool.clone())
        .set(status.available as f64);
    metrics::gauge!(metric_names::POOL_WAITING, "pool" => pool).set(status.waiting as f64);
}

impl<M: Manager> Pool<M> {
    /// A builder with [`PoolConfig::default`] limits.
    pub fn builder(name: impl Into<String>, manager: M) -> PoolBuilder<M> {
        PoolBuilder {
            name: name.into(),
            manager,
            config: PoolConfig::default(),
            health: None,
            registry: None,
        }
    }

    /// The pool's name (the `pool` label of its metrics).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Its limits.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// The caller's manager.
    pub fn manager(&self) -> &M {
        &self.inner.manager().manager
    }

    /// Gets an object, waiting at most the configured acquire timeout.
    pub async fn get(&self) -> Result<Pooled<M>, PoolError<M::Error>> {
        self.get_timeout(self.shared.config.acquire_timeout).await
    }

    /// Gets an object, waiting at most `timeout` (`None`: as long as it takes).
    pub async fn get_timeout(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        let pool = || self.shared.name.clone();
        let started = Instant::now();
        let got = match timeout {
            Some(limit) => tokio::time::timeout(limit, self.inner.get()).await,
            None => Ok(self.inner.get().await),
        };
        let waited = started.elapsed();
        let result = match got {
            Ok(Ok(obj)) => {
                Shared::bump(&self.shared.counters.acquired);
                metrics::histogram!(metric_names::POOL_ACQUIRE, "pool" => pool())
                    .record(waited.as_secs_f64());
                Ok(Pooled { obj: Some(obj) })
            }
            Err(_) | Ok(Err(managed::PoolError::Timeout(managed::TimeoutType::Wait))) => {
                Shared::bump(&self.shared.counters.timeouts);
                metrics::counter!(metric_names::POOL_TIMEOUTS, "pool" => pool()).increment(1);
                tracing::debug!(pool = %self.shared.name, ?waited, "pool acquire timed out");
                Err(PoolError::Timeout {
                    pool: pool(),
                    waited,
                })
            }
            Ok(Err(managed::PoolError::Timeout(_))) => {
                Err(PoolError::CreateTimeout { pool: pool() })
            }
            Ok(Err(managed::PoolError::Closed)) => Err(PoolError::Closed { pool: pool() }),
            Ok(Err(managed::PoolError::Backend(source))) => Err(PoolError::Backend {
                pool: pool(),
                source,
            }),
            Ok(Err(
                other @ (managed::PoolError::NoRuntimeSpecified
                | managed::PoolError::PostCreateHook(_)),
            )) => {
                let message = match other {
                    managed::PoolError::PostCreateHook(_) => {
                        "a post-create hook failed".to_string()
                    }
                    _ => "no async runtime configured".to_string(),
                };
                Err(PoolError::Internal {
                    pool: pool(),
                    message,
                })
            }
        };
        publish_gauges(&self.shared.name, self.inner.status());
        result
    }

    /// Sizes and counters now (also refreshes the gauges).
    pub fn status(&self) -> PoolStatus {
        let s = self.inner.status();
        publish_gauges(&self.shared.name, s);
        let c = &self.shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PoolStatus {
            name: self.shared.name.clone(),
            max_size: s.max_size,
            size: s.size,
            available: s.available,
            in_use: s.size - s.available,
            waiting: s.waiting,
            acquired_total: load(&c.acquired),
            timeouts_total: load(&c.timeouts),
            created_total: load(&c.created),
            expired_total: load(&c.expired),
            idle_closed_total: load(&c.idle_closed),
            unhealthy_total: load(&c.unhealthy),
        }
    }

    /// Drops idle objects past their lifetime or idle timeout now, instead of at their next
    /// reuse; returns how many were dropped. Schedule it to release resources of a quiet pool.
    pub fn reap(&self) -> usize {
        let removed = self
            .inner
            .retain(|entry, _| self.shared.expired(entry).is_none());
        let count = removed.removed.len();
        drop(removed);
        publish_gauges(&self.shared.name, self.inner.status());
        count
    }

    /// Closes the pool: waiting and future callers get [`PoolError::Closed`]; idle objects are
    /// dropped, objects in use are dropped when returned.
    pub fn close(&self) {
        self.inner.close();
    }
}

/// An object on loan from a [`Pool`]; dereferences to the manager's type and goes back to the
/// pool when dropped.
pub struct Pooled<M: Manager> {
    obj: Option<managed::Object<Wrapped<M>>>,
}

impl<M: Manager> Pooled<M> {
    fn entry(&self) -> &Entry<M::Type> {
        self.obj.as_ref().expect("present until drop")
    }

    /// How long ago the object was created.
    pub fn age(this: &Self) -> Duration {
        this.entry().created.elapsed()
    }

    /// Removes the object from the pool for good, freeing its slot.
    pub fn take(mut this: Self) -> M::Type {
        let obj = this.obj.take().expect("present until drop");
        managed::Object::take(obj).value
    }
}

impl<M: Manager> Deref for Pooled<M> {
    type Target = M::Type;
    fn deref(&self) -> &M::Type {
        &self.entry().value
    }
}

impl<M: Manager> DerefMut for Pooled<M> {
    fn deref_mut(&mut self) -> &mut M::Type {
        &mut self.obj.as_mut().expect("present until drop").value
    }
}

impl<M: Manager> fmt::Debug for Pooled<M>
where
    M::Type: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pooled").field(&**self).finish()
    }
}

impl<M: Manager> Drop for Pooled<M> {
    fn drop(&mut self) {
        if let Some(mut obj) = self.obj.take() {
            obj.returned = Instant::now();
            let pool = managed::Object::pool(&obj);
            drop(obj);
            if let Some(pool) = pool {
                publish_gauges(&pool.manager().shared.name, pool.status());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("backend down")]
    struct Down;

    impl Classify for Down {
        fn code(&self) -> ErrorCode {
            ErrorCode::Unavailable
        }
    }

    /// Counts creations and live objects; objects can be made unhealthy from outside.
    #[derive(Default)]
    struct Counting {
        next_id: AtomicUsize,
        live: Arc<AtomicUsize>,
        fail_create: AtomicBool,
        /// Objects with an id below this fail `recycle`.
        unhealthy_below: AtomicUsize,
    }

    #[derive(Debug)]
    struct Conn {
        id: usize,
        live: Arc<AtomicUsize>,
        healthy: bool,
    }

    impl Drop for Conn {
        fn drop(&mut self) {
            self.live.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Manager for Counting {
        type Type = Conn;
        type Error = Down;

        async fn create(&self) -> Result<Conn, Down> {
            if self.fail_create.load(Ordering::SeqCst) {
                return Err(Down);
            }
            self.live.fetch_add(1, Ordering::SeqCst);
            Ok(Conn {
                id: self.next_id.fetch_add(1, Ordering::SeqCst),
                live: self.live.clone(),
                healthy: true,
            })
        }

        async fn recycle(&self, conn: &mut Conn, _: &ObjectMetrics) -> RecycleResult<Down> {
            if conn.id < self.unhealthy_below.load(Ordering::SeqCst) {
                conn.healthy = false;
                return Err(RecycleError::Backend(Down));
            }
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reuses_objects_and_reports_status() {
        let registry = ResourceRegistry::new();
        let pool = Pool::builder("conns", Counting::default())
            .max_size(2)
            .registry(registry.clone())
            .build()
            .unwrap();
        let a = pool.get().await.unwrap();
        assert_eq!(a.id, 0);
        let s = pool.status();
        assert_eq!(
            (s.size, s.in_use, s.available, s.created_total),
            (1, 1, 0, 1)
        );
        drop(a);
        let a = pool.get().await.unwrap();
        assert_eq!(a.id, 0, "reused");
        let b = pool.get().await.unwrap();
        assert_eq!(b.id, 1);
        assert_eq!(registry.live(POOL_OBJECT_KIND), 2);
        assert_eq!(registry.live_entries(POOL_OBJECT_KIND, 1)[0].label, "conns");
        let taken = Pooled::take(b);
        assert_eq!(pool.status().size, 1);
        drop(taken);
        assert_eq!(registry.live(POOL_OBJECT_KIND), 1);
        drop(a);
        let json = serde_json::to_value(pool.status()).unwrap();
        assert_eq!(json["name"], "conns");
        assert_eq!(json["acquired_total"], 3);
        pool.close();
        let closed = pool.get().await.unwrap_err();
        assert!(matches!(closed, PoolError::Closed { .. }));
        assert_eq!(closed.code(), ErrorCode::Unavailable);
        assert_eq!(
            registry.live(POOL_OBJECT_KIND),
            0,
            "closing dropped the idle object"
        );
        assert!(
            Pool::builder("zero", Counting::default())
                .max_size(0)
                .build()
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_timeout_is_honoured() {
        let recorder = crate::test_metrics::Captured::default();
        let _local = metrics::set_default_local_recorder(&recorder);
        let pool = Pool::builder("busy", Counting::default())
            .max_size(1)
            .acquire_timeout(Some(Duration::from_millis(50)))
            .build()
            .unwrap();
        let held = pool.get().await.unwrap();
        let t = Instant::now();
        let err = pool.get().await.unwrap_err();
        assert_eq!(t.elapsed(), Duration::from_millis(50));
        assert!(
            matches!(err, PoolError::Timeout { waited, .. } if waited == Duration::from_millis(50))
        );
        assert_eq!(err.code(), ErrorCode::Overloaded);
        assert!(err.to_string().contains("busy"));
        assert_eq!(pool.status().timeouts_total, 1);
        // A waiter gets the object as soon as it is returned.
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get_timeout(None).await.map(|c| c.id) })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(pool.status().waiting, 1);
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), 0);
        assert_eq!(
            recorder.get("ironsift_pool_timeouts_total{pool=busy}"),
            Some(1.0)
        );
        assert_eq!(
            recorder.get("ironsift_pool_acquire_seconds{pool=busy}"),
            Some(2.0)
        );
        assert_eq!(recorder.get("ironsift_pool_size{pool=busy}"), Some(1.0));
        assert_eq!(recorder.get("ironsift_pool_waiting{pool=busy}"), Some(0.0));
    }

    #[tokio::test(start_paused = true)]
    async fn create_failures_are_classified_by_the_backend() {
        let manager = Counting::default();
        manager.fail_create.store(true, Ordering::SeqCst);
        let pool = Pool::builder("down", manager).build().unwrap();
        let err = pool.get().await.unwrap_err();
        assert!(matches!(err, PoolError::Backend { .. }));
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert_eq!(err.to_string(), "pool down: backend down");
        pool.manager().fail_create.store(false, Ordering::SeqCst);
        assert!(pool.get().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn max_lifetime_and_idle_timeout_replace_objects() {
        let pool = Pool::builder("aging", Counting::default())
            .max_size(4)
            .max_lifetime(Some(Duration::from_secs(60)))
            .idle_timeout(Some(Duration::from_secs(10)))
            .build()
            .unwrap();
        let live = pool.manager().live.clone();
        drop(pool.get().await.unwrap());
        tokio::time::sleep(Duration::from_secs(5)).await;
        let c = pool.get().await.unwrap();
        assert_eq!(c.id, 0, "idle 5s < 10s: reused");
        assert_eq!(Pooled::age(&c), Duration::from_secs(5));
        drop(c);
        tokio::time::sleep(Duration::from_secs(11)).await;
        let c = pool.get().await.unwrap();
        assert_eq!(c.id, 1, "idle 11s: replaced");
        assert_eq!(live.load(Ordering::SeqCst), 1);
        // Keep it busy (never idle long) until it is older than the lifetime.
        drop(c);
        for _ in 0..7 {
            tokio::time::sleep(Duration::from_secs(9)).await;
            drop(pool.get().await.unwrap());
        }
        let c = pool.get().await.unwrap();
        assert_eq!(c.id, 2, "older than 60s: replaced");
        drop(c);
        let s = pool.status();
        assert_eq!(
            (s.expired_total, s.idle_closed_total, s.created_total),
            (1, 1, 3)
        );

        // The reaper drops idle objects without waiting for a caller.
        let held: Vec<_> = futures_util::future::join_all((0..3).map(|_| pool.get())).await;
        drop(held);
        assert_eq!(pool.status().size, 3);
        assert_eq!(pool.reap(), 0);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(pool.reap(), 3);
        assert_eq!(pool.status().size, 0);
        assert_eq!(live.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn unhealthy_objects_are_replaced() {
        let pool = Pool::builder("health", Counting::default())
            .max_size(2)
            .health_check(|c: &mut Conn| c.id.is_multiple_of(2))
            .build()
            .unwrap();
        let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
        assert_eq!((a.id, b.id), (0, 1));
        drop(b);
        drop(a);
        // id 1 fails the health check, id 0 passes.
        let x = pool.get().await.unwrap();
        let y = pool.get().await.unwrap();
        let mut ids = [x.id, y.id];
        ids.sort_unstable();
        assert_eq!(ids, [0, 2]);
        drop((x, y));
        // Now the manager's recycle rejects everything below id 3.
        pool.manager().unhealthy_below.store(3, Ordering::SeqCst);
        let z = pool.get().await.unwrap();
        assert!(z.healthy && z.id >= 3);
        assert!(pool.status().unhealthy_total >= 3);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Under random contention: never more than `max_size` objects out or alive, every
        /// acquisition either succeeds or times out after exactly its timeout, and every object
        /// handed out is healthy even when the manager marks objects unhealthy midway.
        #[test]
        fn bounded_and_healthy_under_contention(
            max in 1usize..5,
            holds in proptest::collection::vec(0u64..40, 1..24),
            timeout_ms in 1u64..60,
            turn_unhealthy_at in 0usize..24,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async move {
                let pool = Pool::builder("prop", Counting::default())
                    .max_size(max)
                    .acquire_timeout(Some(Duration::from_millis(timeout_ms)))
                    .build()
                    .unwrap();
                let out = Arc::new(AtomicUsize::new(0));
                let max_out = Arc::new(AtomicUsize::new(0));
                let mut tasks = Vec::new();
                for (i, hold) in holds.iter().copied().enumerate() {
                    let (pool, out, max_out) = (pool.clone(), out.clone(), max_out.clone());
                    tasks.push(tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(i as u64 % 7)).await;
                        if i == turn_unhealthy_at {
                            let below = pool.manager().next_id.load(Ordering::SeqCst);
                            pool.manager().unhealthy_below.store(below, Ordering::SeqCst);
                        }
                        let t = Instant::now();
                        match pool.get().await {
                            Ok(conn) => {
                                assert!(conn.healthy);
                                let now = out.fetch_add(1, Ordering::SeqCst) + 1;
                                max_out.fetch_max(now, Ordering::SeqCst);
                                assert!(pool.manager().live.load(Ordering::SeqCst) <= max);
                                tokio::time::sleep(Duration::from_millis(hold)).await;
                                out.fetch_sub(1, Ordering::SeqCst);
                                true
                            }
                            Err(PoolError::Timeout { waited, .. }) => {
                                assert_eq!(waited, Duration::from_millis(timeout_ms));
                                assert_eq!(t.elapsed(), Duration::from_millis(timeout_ms));
                                false
                            }
                            Err(e) => panic!("unexpected {e}"),
                        }
                    }));
                }
                let mut ok = 0u64;
                for t in tasks {
                    ok += u64::from(t.await.unwrap());
                }
                let s = pool.status();
                assert!(max_out.load(Ordering::SeqCst) <= max);
                assert_eq!(s.acquired_total, ok);
                assert_eq!(s.acquired_total + s.timeouts_total, holds.len() as u64);
                assert!(s.size <= max && s.in_use == 0);
                assert_eq!(pool.manager().live.load(Ordering::SeqCst), s.size);
            });
        }
    }
}
