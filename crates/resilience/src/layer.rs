//! Tower layers over the crate's primitives, each returning [`ResilienceError`].
//!
//! | layer                  | refuses with                          | code          |
//! |------------------------|---------------------------------------|---------------|
//! | [`CircuitBreakerLayer`] | [`ResilienceError::BreakerOpen`]     | `unavailable` |
//! | [`BulkheadLayer`]      | [`ResilienceError::Rejected`]         | `overloaded`  |
//! | [`RateLimitLayer`]     | [`ResilienceError::RateLimited`]      | `rate_limited`|
//! | [`TimeoutLayer`]       | [`ResilienceError::Timeout`]          | `timeout`     |
//! | [`CatchPanicLayer`]    | [`ResilienceError::Panicked`]         | `internal`    |
//!
//! Rejections are decided in `call` (never in `poll_ready`), so a refused request is an error
//! response, not a broken service. Stacking layers nests errors
//! (`ResilienceError<ResilienceError<E>>`); [`ResilienceError::flatten`] merges them.

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use search_error::Classify;
use tower::{Layer, Service};

use crate::breaker::{BreakerOpen, CircuitBreaker, Outcome, OwnedBreakerPermit};
use crate::bulkhead::{Bulkhead, BulkheadPermit, Rejected};
use crate::error::ResilienceError;
use crate::panic::{CatchPanic, Panicked, catch_panic_blocking};
use crate::ratelimit::KeyedRateLimiter;
use crate::timeout::{Deadline, Timeout, TimeoutMetrics};

// --- circuit breaker ------------------------------------------------------------------------

/// Decides what a service's result means to a breaker.
pub trait OutcomeClassifier<T, E> {
    /// The outcome of `result`.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

impl<T, E, F> OutcomeClassifier<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// [`Outcome::from_result`]: client errors ignored, other errors are failures.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultOutcome;

impl<T, E: Classify> OutcomeClassifier<T, E> for DefaultOutcome {
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        Outcome::from_result(result)
    }
}

/// Wraps a service in a [`CircuitBreaker`].
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<Cl = DefaultOutcome> {
    breaker: Arc<CircuitBreaker>,
    classifier: Cl,
}

impl CircuitBreakerLayer<DefaultOutcome> {
    /// Classifies results with [`DefaultOutcome`].
    pub fn new(breaker: Arc<CircuitBreaker>) -> Self {
        Self {
            breaker,
            classifier: DefaultOutcome,
        }
    }
}

impl<Cl> CircuitBreakerLayer<Cl> {
    /// Classifies results with `classifier` (e.g. an HTTP response's status).
    pub fn with_classifier<Cl2>(self, classifier: Cl2) -> CircuitBreakerLayer<Cl2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }
}

impl<S, Cl: Clone> Layer<S> for CircuitBreakerLayer<Cl> {
    type Service = CircuitBreakerService<S, Cl>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: Arc::clone(&self.breaker),
            classifier: self.classifier.clone(),
        }
    }
}

/// The service made by [`CircuitBreakerLayer`].
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S, Cl> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
    classifier: Cl,
}

impl<S, Req, Cl> Service<Req> for CircuitBreakerService<S, Cl>
where
    S: Service<Req>,
    Cl: OutcomeClassifier<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = ResilienceError<S::Error>;
    type Future = BreakerFuture<S::Future, Cl>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(ResilienceError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.try_acquire_owned() {
            Ok(permit) => BreakerFuture {
                kind: BreakerFutureKind::Running {
                    fut: self.inner.call(req),
                    permit: Some(permit),
                    classifier: self.classifier.clone(),
                },
            },
            Err(open) => BreakerFuture {
                kind: BreakerFutureKind::Refused { error: Some(open) },
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// Future of [`CircuitBreakerService`]. Dropping it before completion records nothing.
    #[derive(Debug)]
    pub struct BreakerFuture<F, Cl> {
        #[pin]
        kind: BreakerFutureKind<F, Cl>,
    }
}

pin_project_lite::pin_project! {
    #[project = BreakerFutureProj]
    #[derive(Debug)]
    enum BreakerFutureKind<F, Cl> {
        Refused { error: Option<BreakerOpen> },
        Running { #[pin] fut: F, permit: Option<OwnedBreakerPermit>, classifier: Cl },
    }
}

impl<F, T, E, Cl> Future for BreakerFuture<F, Cl>
where
    F: Future<Output = Result<T, E>>,
    Cl: OutcomeClassifier<T, E>,
{
    type Output = Result<T, ResilienceError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            BreakerFutureProj::Refused { error } => match error.take() {
                Some(e) => Poll::Ready(Err(ResilienceError::BreakerOpen(e))),
                None => Poll::Pending, // polled after completion
            },
            BreakerFutureProj::Running {
                fut,
                permit,
                classifier,
            } => {
                let result = ready!(fut.poll(cx));
                if let Some(p) = permit.take() {
                    p.record(classifier.classify(&result));
                }
                Poll::Ready(result.map_err(ResilienceError::Inner))
            }
        }
    }
}

// --- bulkhead ------------------------------------------------------------------------------

/// Puts a service behind a [`Bulkhead`]; the deadline of each request comes from an extractor.
#[derive(Clone)]
pub struct BulkheadLayer<D = NoDeadline> {
    bulkhead: Bulkhead,
    deadline: D,
}

impl<D> std::fmt::Debug for BulkheadLayer<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("bulkhead", &self.bulkhead)
            .finish_non_exhaustive()
    }
}

/// A deadline extractor that gives no deadline.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDeadline;

/// Extracts a request's deadline (e.g. from a header or a request extension).
pub trait DeadlineOf<Req> {
    /// The deadline of `req`, if any.
    fn deadline(&self, req: &Req) -> Option<Deadline>;
}

impl<Req> DeadlineOf<Req> for NoDeadline {
    fn deadline(&self, _: &Req) -> Option<Deadline> {
        None
    }
}

impl<Req, F> DeadlineOf<Req> for F
where
    F: Fn(&Req) -> Option<Deadline>,
{
    fn deadline(&self, req: &Req) -> Option<Deadline> {
        self(req)
    }
}

impl BulkheadLayer<NoDeadline> {
    /// Requests carry no deadline (they wait as long as the queue takes).
    pub fn new(bulkhead: Bulkhead) -> Self {
        Self {
            bulkhead,
            deadline: NoDeadline,
        }
    }
}

impl<D> BulkheadLayer<D> {
    /// Takes each request's deadline from `extractor`.
    pub fn with_deadline<D2>(self, extractor: D2) -> BulkheadLayer<D2> {
        BulkheadLayer {
            bulkhead: self.bulkhead,
            deadline: extractor,
        }
    }
}

impl<S, D: Clone> Layer<S> for BulkheadLayer<D> {
    type Service = BulkheadService<S, D>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
            deadline: self.deadline.clone(),
        }
    }
}

/// The service made by [`BulkheadLayer`]. Needs a `Clone` inner service: a request that waits
/// in the queue calls a clone once admitted.
#[derive(Debug, Clone)]
pub struct BulkheadService<S, D> {
    inner: S,
    bulkhead: Bulkhead,
    deadline: D,
}

type AcquireFuture = Pin<Box<dyn Future<Output = Result<BulkheadPermit, Rejected>> + Send>>;

impl<S, Req, D> Service<Req> for BulkheadService<S, D>
where
    S: Service<Req> + Clone,
    D: DeadlineOf<Req>,
{
    type Response = S::Response;
    type Error = ResilienceError<S::Error>;
    type Future = BulkheadFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(ResilienceError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(permit) = self.bulkhead.try_admit() {
            return BulkheadFuture {
                kind: BulkheadFutureKind::Running {
                    fut: self.inner.call(req),
                    permit: Some(permit),
                },
            };
        }
        let deadline = self.deadline.deadline(&req);
        let bulkhead = self.bulkhead.clone();
        // Keep the instance that was polled ready; leave a fresh clone in the service.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        BulkheadFuture {
            kind: BulkheadFutureKind::Queued {
                acquire: Box::pin(async move { bulkhead.acquire(deadline).await }),
                rest: Some((inner, req)),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// Future of [`BulkheadService`]: waits for a slot (if needed), then runs the call holding it.
    pub struct BulkheadFuture<S: Service<Req>, Req> {
        #[pin]
        kind: BulkheadFutureKind<S, Req>,
    }
}

pin_project_lite::pin_project! {
    #[project = BulkheadFutureProj]
    enum BulkheadFutureKind<S: Service<Req>, Req> {
        Queued { acquire: AcquireFuture, rest: Option<(S, Req)> },
        Running { #[pin] fut: S::Future, permit: Option<BulkheadPermit> },
    }
}

impl<S: Service<Req>, Req> std::fmt::Debug for BulkheadFuture<S, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.kind {
            BulkheadFutureKind::Queued { .. } => "BulkheadFuture::Queued",
            BulkheadFutureKind::Running { .. } => "BulkheadFuture::Running",
        })
    }
}

impl<S: Service<Req>, Req> Future for BulkheadFuture<S, Req> {
    type Output = Result<S::Response, ResilienceError<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        loop {
            match kind.as_mut().project() {
                BulkheadFutureProj::Queued { acquire, rest } => {
                    let permit = match ready!(acquire.as_mut().poll(cx)) {
                        Ok(p) => p,
                        Err(rejected) => {
                            return Poll::Ready(Err(ResilienceError::Rejected(rejected)));
                        }
                    };
                    let Some((mut inner, req)) = rest.take() else {
                        return Poll::Pending; // polled after completion
                    };
                    let fut = inner.call(req);
                    kind.set(BulkheadFutureKind::Running {
                        fut,
                        permit: Some(permit),
                    });
                }
                BulkheadFutureProj::Running { fut, permit } => {
                    let out = ready!(fut.poll(cx));
                    drop(permit.take()); // release the slot as soon as the call is done
                    return Poll::Ready(out.map_err(ResilienceError::Inner));
                }
            }
        }
    }
}

// --- rate limit ----------------------------------------------------------------------------

/// Rate-limits a service per key; the key of each request comes from an extractor returning
/// `Option<K>` (`None`: not limited, e.g. health probes).
#[derive(Debug)]
pub struct RateLimitLayer<K, F, C = governor::clock::DefaultClock>
where
    K: Hash + Eq + Clone,
    C: governor::clock::Clock,
{
    limiter: Arc<KeyedRateLimiter<K, C>>,
    key: F,
}

impl<K, F: Clone, C> Clone for RateLimitLayer<K, F, C>
where
    K: Hash + Eq + Clone,
    C: governor::clock::Clock,
{
    fn clone(&self) -> Self {
        Self {
            limiter: Arc::clone(&self.limiter),
            key: self.key.clone(),
        }
    }
}

impl<K, F, C> RateLimitLayer<K, F, C>
where
    K: Hash + Eq + Clone,
    C: governor::clock::Clock,
{
    /// Limits with `limiter`, keyed by `key(&request)`.
    pub fn new(limiter: Arc<KeyedRateLimiter<K, C>>, key: F) -> Self {
        Self { limiter, key }
    }
}

impl<S, K, F: Clone, C> Layer<S> for RateLimitLayer<K, F, C>
where
    K: Hash + Eq + Clone,
    C: governor::clock::Clock,
{
    type Service = RateLimitService<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limiter: Arc::clone(&self.limiter),
            key: self.key.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Debug)]
pub struct RateLimitService<S, K, F, C>
where
    K: Hash + Eq + Clone,
    C: governor::clock::Clock,
{
    inner: S,
    limiter: Arc<KeyedRateLimiter<K, C>>,
    key: F,
}

impl<S: Clone, K, F: Clone, C> Clone for RateLimitService<S, K, F, C>
where
    K: Hash + Eq + Clone,
    C: governor::clock::Clock,
{
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: Arc::clone(&self.limiter),
            key: self.key.clone(),
        }
    }
}

impl<S, Req, K, F, C> Service<Req> for RateLimitService<S, K, F, C>
where
    S: Service<Req>,
    K: Hash + Eq + Clone,
    C: governor::clock::Clock,
    F: Fn(&Req) -> Option<K>,
{
    type Response = S::Response;
    type Error = ResilienceError<S::Error>;
    type Future = InnerOrRefused<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(ResilienceError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(key) = (self.key)(&req)
            && let Err(limited) = self.limiter.check(&key)
        {
            return InnerOrRefused {
                kind: InnerOrRefusedKind::Refused {
                    error: Some(ResilienceError::RateLimited(limited)),
                },
            };
        }
        InnerOrRefused {
            kind: InnerOrRefusedKind::Inner {
                fut: self.inner.call(req),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// Future of [`RateLimitService`]: the inner call or an immediate refusal.
    #[derive(Debug)]
    pub struct InnerOrRefused<F, E> {
        #[pin]
        kind: InnerOrRefusedKind<F, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = InnerOrRefusedProj]
    #[derive(Debug)]
    enum InnerOrRefusedKind<F, E> {
        Refused { error: Option<ResilienceError<E>> },
        Inner { #[pin] fut: F },
    }
}

impl<F, T, E> Future for InnerOrRefused<F, E>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, ResilienceError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            InnerOrRefusedProj::Refused { error } => match error.take() {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
            InnerOrRefusedProj::Inner { fut } => fut.poll(cx).map_err(ResilienceError::Inner),
        }
    }
}

// --- timeout -------------------------------------------------------------------------------

/// Bounds each call by a timeout, counting timeouts per operation (see [`crate::timeout`]).
#[derive(Debug, Clone)]
pub struct TimeoutLayer {
    timeout: Duration,
    metrics: TimeoutMetrics,
}

impl TimeoutLayer {
    /// Calls of `operation` get at most `timeout`.
    pub fn new(operation: &'static str, timeout: Duration) -> Self {
        Self {
            timeout,
            metrics: TimeoutMetrics::new(operation),
        }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimeoutService {
            inner,
            timeout: self.timeout,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service made by [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct TimeoutService<S> {
    inner: S,
    timeout: Duration,
    metrics: TimeoutMetrics,
}

impl<S, Req> Service<Req> for TimeoutService<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = ResilienceError<S::Error>;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(ResilienceError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        TimeoutFuture {
            inner: Timeout::new(
                self.inner.call(req),
                Deadline::from_timeout(self.timeout),
                self.metrics.clone(),
            ),
        }
    }
}

pin_project_lite::pin_project! {
    /// Future of [`TimeoutService`].
    #[derive(Debug)]
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: Timeout<F>,
    }
}

impl<F, T, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, ResilienceError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(self.project().inner.poll(cx)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ResilienceError::Inner(e)),
            Err(elapsed) => Err(ResilienceError::Timeout(elapsed)),
        })
    }
}

// --- catch panic ---------------------------------------------------------------------------

/// Turns panics of the inner service (in `call` or in its future) into
/// [`ResilienceError::Panicked`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl CatchPanicLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanicService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanicService { inner }
    }
}

/// The service made by [`CatchPanicLayer`].
#[derive(Debug, Clone)]
pub struct CatchPanicService<S> {
    inner: S,
}

impl<S, Req> Service<Req> for CatchPanicService<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = ResilienceError<S::Error>;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(ResilienceError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match catch_panic_blocking(|| self.inner.call(req)) {
            Ok(fut) => CatchPanicFuture {
                kind: CatchPanicFutureKind::Running {
                    fut: crate::panic::catch_panic(fut),
                },
            },
            Err(p) => CatchPanicFuture {
                kind: CatchPanicFutureKind::Panicked { error: Some(p) },
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// Future of [`CatchPanicService`].
    #[derive(Debug)]
    pub struct CatchPanicFuture<F> {
        #[pin]
        kind: CatchPanicFutureKind<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = CatchPanicFutureProj]
    #[derive(Debug)]
    enum CatchPanicFutureKind<F> {
        Panicked { error: Option<Panicked> },
        Running { #[pin] fut: CatchPanic<F> },
    }
}

impl<F, T, E> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, ResilienceError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            CatchPanicFutureProj::Panicked { error } => match error.take() {
                Some(p) => Poll::Ready(Err(ResilienceError::Panicked(p))),
                None => Poll::Pending,
            },
            CatchPanicFutureProj::Running { fut } => Poll::Ready(match ready!(fut.poll(cx)) {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(ResilienceError::Inner(e)),
                Err(p) => Err(ResilienceError::Panicked(p)),
            }),
        }
    }
}
