//! Admission control and load shedding: bounded concurrency, a bounded queue, and early
//! rejection of calls that could not start in time.
//!
//! A [`Bulkhead`] admits `max_concurrent` calls; up to `max_queue` more wait (FIFO, Tokio's fair
//! semaphore). A call is rejected **at once**, without waiting, when the queue is full, when its
//! deadline has passed, or when the estimated wait already exceeds its deadline. The estimate is
//! `ewma(service time) × queue position / max_concurrent`, the EWMA (α = 0.2) being fed by every
//! released permit. A queued call whose deadline passes while waiting is rejected then (and
//! leaves the queue), so the queue holds only calls that can still be useful.
//!
//! Cancellation-safe: dropping an `acquire` future leaves the queue; dropping a permit frees
//! its slot. Metrics (handles resolved at construction, labelled `bulkhead`):
//! `ironsift_bulkhead_in_flight`, `ironsift_bulkhead_queued` (gauges),
//! `ironsift_bulkhead_rejected_total{reason}`, `ironsift_bulkhead_queue_wait_seconds`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use search_error::{Classify, ErrorCode};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::clock::nanos;
use crate::error::ConfigError;
use crate::timeout::Deadline;

/// Why admission control refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Every slot is busy and the queue is full (or, for `try_acquire`, every slot is busy).
    QueueFull,
    /// The estimated wait in the queue exceeds the call's deadline.
    WouldMissDeadline,
    /// The deadline passed before a slot freed up (or before the call arrived).
    DeadlineExceeded,
}

impl RejectReason {
    /// Stable snake_case name (metric label).
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::QueueFull => "queue_full",
            RejectReason::WouldMissDeadline => "would_miss_deadline",
            RejectReason::DeadlineExceeded => "deadline_exceeded",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call was shed by a [`Bulkhead`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bulkhead {bulkhead} rejected the call ({reason}); retry in {retry_after:?}")]
pub struct Rejected {
    /// The bulkhead's name.
    pub bulkhead: Arc<str>,
    /// Why.
    pub reason: RejectReason,
    /// Estimated time until the queue has drained enough to admit a call.
    pub retry_after: Duration,
}

impl Classify for Rejected {
    fn code(&self) -> ErrorCode {
        ErrorCode::Overloaded
    }
}

/// A point-in-time view of a bulkhead.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BulkheadSnapshot {
    /// The bulkhead's name.
    pub name: String,
    /// Concurrency limit.
    pub max_concurrent: usize,
    /// Queue limit.
    pub max_queue: usize,
    /// Calls running now.
    pub in_flight: usize,
    /// Calls waiting now.
    pub queued: usize,
    /// Smoothed service time in seconds (`None` before the first call completes).
    pub ewma_service_secs: Option<f64>,
    /// Rejections since creation: queue full.
    pub rejected_queue_full: u64,
    /// Rejections since creation: estimated wait beyond the deadline.
    pub rejected_would_miss_deadline: u64,
    /// Rejections since creation: deadline passed.
    pub rejected_deadline_exceeded: u64,
}

struct Inner {
    name: Arc<str>,
    sem: Arc<Semaphore>,
    max_concurrent: usize,
    max_queue: usize,
    in_flight: AtomicUsize,
    queued: AtomicUsize,
    /// Smoothed service time in nanoseconds; 0 = no sample yet.
    ewma_nanos: AtomicU64,
    rejected: [AtomicU64; 3],
    m_in_flight: metrics::Gauge,
    m_queued: metrics::Gauge,
    m_rejected: [metrics::Counter; 3],
    m_wait: metrics::Histogram,
}

/// Bounded concurrency plus a bounded, deadline-aware queue. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

impl fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &self.inner.name)
            .field("max_concurrent", &self.inner.max_concurrent)
            .field("max_queue", &self.inner.max_queue)
            .field("in_flight", &self.inner.in_flight.load(Ordering::Relaxed))
            .field("queued", &self.inner.queued.load(Ordering::Relaxed))
            .finish()
    }
}

const ALPHA: f64 = 0.2;

fn reason_index(r: RejectReason) -> usize {
    match r {
        RejectReason::QueueFull => 0,
        RejectReason::WouldMissDeadline => 1,
        RejectReason::DeadlineExceeded => 2,
    }
}

/// Leaves the queue when dropped (also when the acquire future is cancelled).
struct QueueSlot<'a>(&'a Inner);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
        self.0.m_queued.decrement(1.0);
    }
}

impl Bulkhead {
    /// `max_concurrent` (1 ..= 1,000,000) calls at once, `max_queue` (0 ..= 1,000,000) waiting.
    pub fn new(
        name: impl Into<Arc<str>>,
        max_concurrent: usize,
        max_queue: usize,
    ) -> Result<Self, ConfigError> {
        if !(1..=1_000_000).contains(&max_concurrent) {
            return Err(ConfigError::new(
                "max_concurrent",
                format!("{max_concurrent} is not in 1..=1000000"),
            ));
        }
        if max_queue > 1_000_000 {
            return Err(ConfigError::new(
                "max_queue",
                format!("{max_queue} is not in 0..=1000000"),
            ));
        }
        let name: Arc<str> = name.into();
        let n = name.to_string();
        let rejected = |r: RejectReason| metrics::counter!("ironsift_bulkhead_rejected_total", "bulkhead" => n.clone(), "reason" => r.as_str());
        Ok(Self {
            inner: Arc::new(Inner {
                sem: Arc::new(Semaphore::new(max_concurrent)),
                max_concurrent,
                max_queue,
                in_flight: AtomicUsize::new(0),
                queued: AtomicUsize::new(0),
                ewma_nanos: AtomicU64::new(0),
                rejected: Default::default(),
                m_in_flight: metrics::gauge!("ironsift_bulkhead_in_flight", "bulkhead" => n.clone()),
                m_queued: metrics::gauge!("ironsift_bulkhead_queued", "bulkhead" => n.clone()),
                m_rejected: [
                    rejected(RejectReason::QueueFull),
                    rejected(RejectReason::WouldMissDeadline),
                    rejected(RejectReason::DeadlineExceeded),
                ],
                m_wait: metrics::histogram!("ironsift_bulkhead_queue_wait_seconds", "bulkhead" => n.clone()),
                name,
            }),
        })
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Takes a slot now if one is free; never queues (busy → `QueueFull`). For blocking callers.
    #[inline]
    pub fn try_acquire(&self) -> Result<BulkheadPermit, Rejected> {
        self.try_admit()
            .ok_or_else(|| self.reject(RejectReason::QueueFull, 1))
    }

    /// A free slot, if any, without counting a rejection otherwise.
    #[inline]
    pub(crate) fn try_admit(&self) -> Option<BulkheadPermit> {
        Arc::clone(&self.inner.sem)
            .try_acquire_owned()
            .ok()
            .map(|p| self.admit(p))
    }

    /// Takes a slot, waiting in the queue if needed and if the deadline allows; see the
    /// [module docs](self) for when it rejects at once.
    pub async fn acquire(&self, deadline: Option<Deadline>) -> Result<BulkheadPermit, Rejected> {
        let inner = &*self.inner;
        if let Ok(p) = Arc::clone(&inner.sem).try_acquire_owned() {
            inner.m_wait.record(0.0);
            return Ok(self.admit(p));
        }
        if deadline.is_some_and(Deadline::expired) {
            return Err(self.reject(RejectReason::DeadlineExceeded, 1));
        }
        let position = inner.queued.fetch_add(1, Ordering::AcqRel) + 1;
        inner.m_queued.increment(1.0);
        let slot = QueueSlot(inner);
        if position > inner.max_queue {
            drop(slot);
            return Err(self.reject(RejectReason::QueueFull, position));
        }
        if let Some(d) = deadline
            && self.estimated_wait(position) > d.remaining()
        {
            drop(slot);
            return Err(self.reject(RejectReason::WouldMissDeadline, position));
        }
        let queued_at = Instant::now();
        let acquire = Arc::clone(&inner.sem).acquire_owned();
        let permit = match deadline {
            Some(d) => match tokio::time::timeout_at(d.instant(), acquire).await {
                Ok(p) => p,
                Err(_) => {
                    drop(slot);
                    let position = inner.queued.load(Ordering::Acquire);
                    return Err(self.reject(RejectReason::DeadlineExceeded, position));
                }
            },
            None => acquire.await,
        };
        drop(slot);
        // The semaphore is never closed, so `acquire` cannot fail; treat it as a full queue.
        let permit = permit.map_err(|_| self.reject(RejectReason::QueueFull, 1))?;
        inner.m_wait.record(queued_at.elapsed().as_secs_f64());
        Ok(self.admit(permit))
    }

    /// Expected wait for queue position `position` (1-based).
    fn estimated_wait(&self, position: usize) -> Duration {
        let ewma = self.inner.ewma_nanos.load(Ordering::Acquire);
        let per_slot = ewma / self.inner.max_concurrent as u64;
        Duration::from_nanos(per_slot.saturating_mul(position as u64))
    }

    fn reject(&self, reason: RejectReason, position: usize) -> Rejected {
        let i = reason_index(reason);
        self.inner.rejected[i].fetch_add(1, Ordering::Relaxed);
        self.inner.m_rejected[i].increment(1);
        Rejected {
            bulkhead: Arc::clone(&self.inner.name),
            reason,
            retry_after: self
                .estimated_wait(position.max(1))
                .max(Duration::from_millis(1)),
        }
    }

    #[inline]
    fn admit(&self, permit: OwnedSemaphorePermit) -> BulkheadPermit {
        self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        self.inner.m_in_flight.increment(1.0);
        BulkheadPermit {
            inner: Arc::clone(&self.inner),
            _permit: permit,
            start: Instant::now(),
        }
    }

    /// A point-in-time view.
    pub fn snapshot(&self) -> BulkheadSnapshot {
        let i = &*self.inner;
        let ewma = i.ewma_nanos.load(Ordering::Acquire);
        BulkheadSnapshot {
            name: i.name.to_string(),
            max_concurrent: i.max_concurrent,
            max_queue: i.max_queue,
            in_flight: i.in_flight.load(Ordering::Acquire),
            queued: i.queued.load(Ordering::Acquire),
            ewma_service_secs: (ewma > 0).then(|| Duration::from_nanos(ewma).as_secs_f64()),
            rejected_queue_full: i.rejected[0].load(Ordering::Relaxed),
            rejected_would_miss_deadline: i.rejected[1].load(Ordering::Relaxed),
            rejected_deadline_exceeded: i.rejected[2].load(Ordering::Relaxed),
        }
    }
}

/// A slot in a [`Bulkhead`]; dropping it frees the slot and feeds the service-time estimate.
#[must_use = "the slot is released when the permit is dropped"]
pub struct BulkheadPermit {
    inner: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
    start: Instant,
}

impl fmt::Debug for BulkheadPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadPermit")
            .field("bulkhead", &self.inner.name)
            .field("start", &self.start)
            .finish()
    }
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        let sample = nanos(self.start.elapsed()).max(1);
        let _ = self
            .inner
            .ewma_nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                Some(if old == 0 {
                    sample
                } else {
                    ((old as f64) + ALPHA * (sample as f64 - old as f64)).max(1.0) as u64
                })
            });
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.inner.m_in_flight.decrement(1.0);
    }
}
