//! Deadlines and timeouts that leave a trace in the metrics.
//!
//! A [`Deadline`] is an absolute instant (Tokio's clock, so `tokio::time::pause` controls it in
//! tests) that travels with a request: each stage asks how much time is
//! [`remaining`](Deadline::remaining) instead of stacking its own timeout. [`with_timeout`] and
//! [`with_deadline`] bound a future and record `ironsift_timeouts_total{operation}` when it is
//! cut off and `ironsift_operation_duration_seconds{operation}` when it finishes in time.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use search_error::{Classify, ErrorCode};
use tokio::time::{Instant, Sleep};

/// Counter of operations cut off by their timeout or deadline, by `operation`.
pub const TIMEOUTS_TOTAL: &str = "ironsift_timeouts_total";
/// Histogram of the duration of operations that finished in time, by `operation`.
pub const OPERATION_DURATION: &str = "ironsift_operation_duration_seconds";

/// A point in time by which work must be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// `timeout` from now (a timeout too large to represent is about 30 years).
    pub fn from_timeout(timeout: Duration) -> Self {
        let now = Instant::now();
        Deadline(
            now.checked_add(timeout)
                .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30)),
        )
    }

    /// A deadline at `instant` (a `tokio::time::Instant` or a `std::time::Instant`).
    pub fn at(instant: impl Into<Instant>) -> Self {
        Deadline(instant.into())
    }

    /// The instant itself.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// Time left (zero once passed).
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn expired(self) -> bool {
        Instant::now() >= self.0
    }

    /// The earlier of two deadlines.
    pub fn min(self, other: Deadline) -> Deadline {
        std::cmp::min(self, other)
    }
}

/// An operation did not finish before its timeout or deadline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} timed out after {after:?}")]
pub struct Elapsed {
    /// The operation's name (the metric label).
    pub operation: &'static str,
    /// How long it had run when it was cut off.
    pub after: Duration,
}

impl Classify for Elapsed {
    fn code(&self) -> ErrorCode {
        ErrorCode::Timeout
    }
}

/// Runs `fut` for at most `timeout`; see the [module docs](self) for the metrics.
pub async fn with_timeout<F: Future>(
    operation: &'static str,
    timeout: Duration,
    fut: F,
) -> Result<F::Output, Elapsed> {
    with_deadline(operation, Deadline::from_timeout(timeout), fut).await
}

/// Runs `fut` until `deadline` at most; see the [module docs](self) for the metrics.
pub async fn with_deadline<F: Future>(
    operation: &'static str,
    deadline: Deadline,
    fut: F,
) -> Result<F::Output, Elapsed> {
    let metrics = TimeoutMetrics::new(operation);
    Timeout::new(fut, deadline, metrics).await
}

/// Pre-resolved metric handles for one operation.
#[derive(Debug, Clone)]
pub(crate) struct TimeoutMetrics {
    pub(crate) operation: &'static str,
    timeouts: metrics::Counter,
    duration: metrics::Histogram,
}

impl TimeoutMetrics {
    pub(crate) fn new(operation: &'static str) -> Self {
        Self {
            operation,
            timeouts: metrics::counter!(TIMEOUTS_TOTAL, "operation" => operation),
            duration: metrics::histogram!(OPERATION_DURATION, "operation" => operation),
        }
    }
}

pin_project_lite::pin_project! {
    /// A future bounded by a deadline; yields `Err(Elapsed)` when the deadline passes first.
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct Timeout<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        start: Instant,
        metrics: TimeoutMetrics,
    }
}

impl<F> Timeout<F> {
    pub(crate) fn new(inner: F, deadline: Deadline, metrics: TimeoutMetrics) -> Self {
        Self {
            inner,
            sleep: tokio::time::sleep_until(deadline.instant()),
            start: Instant::now(),
            metrics,
        }
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            this.metrics
                .duration
                .record(this.start.elapsed().as_secs_f64());
            return Poll::Ready(Ok(out));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => {
                this.metrics.timeouts.increment(1);
                let after = this.start.elapsed();
                tracing::debug!(
                    operation = this.metrics.operation,
                    ?after,
                    "operation timed out"
                );
                Poll::Ready(Err(Elapsed {
                    operation: this.metrics.operation,
                    after,
                }))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
