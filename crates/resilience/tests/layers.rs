//! Each tower layer through `ServiceExt::oneshot`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use resilience::{
    BreakerConfig, Bulkhead, BulkheadLayer, CatchPanicLayer, CircuitBreaker, CircuitBreakerLayer,
    Deadline, KeyedRateLimiter, ManualClock, Outcome, RateLimitLayer, RejectReason,
    ResilienceError, TimeoutLayer, quota_per_second,
};
use search_error::{Classify, ErrorCode};
use tower::{Layer, ServiceExt, service_fn};

#[derive(Debug, PartialEq)]
struct E(ErrorCode);

impl Classify for E {
    fn code(&self) -> ErrorCode {
        self.0
    }
}

#[tokio::test]
async fn circuit_breaker_layer_opens_and_rejects_with_unavailable() {
    let clock = ManualClock::new();
    let breaker = Arc::new(
        CircuitBreaker::with_clock(
            "svc",
            BreakerConfig::consecutive(2, Duration::from_secs(30)),
            Arc::new(clock.clone()),
        )
        .unwrap(),
    );
    let layer = CircuitBreakerLayer::new(Arc::clone(&breaker));
    let svc = layer.layer(service_fn(|fail: bool| async move {
        if fail {
            Err(E(ErrorCode::Io))
        } else {
            Ok("ok")
        }
    }));
    assert_eq!(svc.clone().oneshot(false).await.unwrap(), "ok");
    for _ in 0..2 {
        let err = svc.clone().oneshot(true).await.unwrap_err();
        assert!(matches!(err, ResilienceError::Inner(E(ErrorCode::Io))));
    }
    let err = svc.clone().oneshot(false).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    assert!(err.is_rejection());
    clock.advance(Duration::from_secs(30));
    assert_eq!(svc.clone().oneshot(false).await.unwrap(), "ok");
    assert_eq!(breaker.state(), resilience::BreakerState::Closed);
}

#[tokio::test]
async fn circuit_breaker_layer_uses_a_custom_classifier() {
    let breaker = Arc::new(
        CircuitBreaker::new(
            "status",
            BreakerConfig::consecutive(1, Duration::from_secs(5)),
        )
        .unwrap(),
    );
    // An HTTP-like status in an Ok response: 5xx counts as a failure.
    let layer = CircuitBreakerLayer::new(Arc::clone(&breaker)).with_classifier(
        |r: &Result<u16, Infallible>| match r {
            Ok(s) if *s >= 500 => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        },
    );
    let svc = layer.layer(service_fn(|status: u16| async move {
        Ok::<_, Infallible>(status)
    }));
    assert_eq!(svc.clone().oneshot(404).await.unwrap(), 404);
    assert_eq!(svc.clone().oneshot(503).await.unwrap(), 503);
    assert!(matches!(
        svc.clone().oneshot(200).await,
        Err(ResilienceError::BreakerOpen(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn bulkhead_layer_queues_sheds_and_honours_request_deadlines() {
    let bh = Bulkhead::new("svc", 1, 1).unwrap();
    let layer = BulkheadLayer::new(bh.clone()).with_deadline(|ms: &u64| {
        (*ms > 0).then(|| Deadline::from_timeout(Duration::from_millis(*ms)))
    });
    let svc = layer.layer(service_fn(|_: u64| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, E>("done")
    }));
    assert_eq!(svc.clone().oneshot(0).await.unwrap(), "done");
    let first = tokio::spawn(svc.clone().oneshot(0));
    tokio::task::yield_now().await;
    let second = tokio::spawn(svc.clone().oneshot(0)); // queued
    tokio::task::yield_now().await;
    let err = svc.clone().oneshot(0).await.unwrap_err(); // queue full
    assert_eq!(err.code(), ErrorCode::Overloaded);
    assert!(matches!(&err, ResilienceError::Rejected(r) if r.reason == RejectReason::QueueFull));
    assert!(err.retry_after().is_some());
    assert_eq!(
        bh.snapshot().rejected_queue_full,
        1,
        "queued requests are not rejections"
    );
    assert_eq!(first.await.unwrap().unwrap(), "done");
    assert_eq!(second.await.unwrap().unwrap(), "done");
    // With one call running, a 10 ms deadline cannot be met (service time ~100 ms).
    let running = tokio::spawn(svc.clone().oneshot(0));
    tokio::task::yield_now().await;
    let err = svc.clone().oneshot(10).await.unwrap_err();
    assert!(
        matches!(&err, ResilienceError::Rejected(r) if r.reason == RejectReason::WouldMissDeadline)
    );
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn rate_limit_layer_limits_per_key_and_skips_unkeyed_requests() {
    let limiter = Arc::new(
        KeyedRateLimiter::<String>::new("api", quota_per_second(1, 2).unwrap(), 100).unwrap(),
    );
    let layer = RateLimitLayer::new(limiter, |req: &(Option<&'static str>, u32)| {
        req.0.map(str::to_owned)
    });
    let svc = layer.layer(service_fn(|req: (Option<&'static str>, u32)| async move {
        Ok::<_, E>(req.1)
    }));
    assert_eq!(svc.clone().oneshot((Some("a"), 1)).await.unwrap(), 1);
    assert_eq!(svc.clone().oneshot((Some("a"), 2)).await.unwrap(), 2);
    let err = svc.clone().oneshot((Some("a"), 3)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::RateLimited);
    assert!(err.retry_after().unwrap() > Duration::ZERO);
    assert_eq!(svc.clone().oneshot((Some("b"), 4)).await.unwrap(), 4);
    for i in 0..10 {
        assert_eq!(
            svc.clone().oneshot((None, i)).await.unwrap(),
            i,
            "no key: not limited"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn timeout_layer_cuts_off_slow_calls() {
    let layer = TimeoutLayer::new("test_op", Duration::from_millis(50));
    let svc = layer.layer(service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, E>(ms)
    }));
    assert_eq!(svc.clone().oneshot(10).await.unwrap(), 10);
    let err = svc.clone().oneshot(100).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert!(
        matches!(&err, ResilienceError::Timeout(t) if t.operation == "test_op" && t.after == Duration::from_millis(50))
    );
}

#[tokio::test]
async fn catch_panic_layer_turns_panics_into_internal_errors() {
    let svc = CatchPanicLayer::new().layer(service_fn(|kind: u8| async move {
        match kind {
            1 => panic!("boom in the future"),
            2 => std::panic::panic_any(42u32),
            _ => Ok::<_, E>("fine"),
        }
    }));
    assert_eq!(svc.clone().oneshot(0).await.unwrap(), "fine");
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal);
    assert!(matches!(&err, ResilienceError::Panicked(p) if p.message == "boom in the future"));
    let err = svc.clone().oneshot(2).await.unwrap_err();
    assert!(matches!(&err, ResilienceError::Panicked(p) if p.message.contains("non-string")));
    // A panic in `call` itself (before any future exists).
    let svc = CatchPanicLayer::new().layer(tower::service_fn(
        |_: ()| -> std::future::Ready<Result<(), E>> { panic!("boom in call") },
    ));
    let err = svc.oneshot(()).await.unwrap_err();
    assert!(matches!(&err, ResilienceError::Panicked(p) if p.message == "boom in call"));
}

#[tokio::test]
async fn stacked_layers_flatten_to_one_error() {
    let breaker = Arc::new(
        CircuitBreaker::new(
            "stack",
            BreakerConfig::consecutive(1, Duration::from_secs(5)),
        )
        .unwrap(),
    );
    let svc = tower::ServiceBuilder::new()
        .layer(CatchPanicLayer::new())
        .layer(CircuitBreakerLayer::new(breaker))
        .service(service_fn(|_: ()| async { Err::<(), _>(E(ErrorCode::Io)) }));
    let err = svc.clone().oneshot(()).await.unwrap_err().flatten();
    assert!(matches!(err, ResilienceError::Inner(E(ErrorCode::Io))));
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(
        err.code(),
        ErrorCode::Unavailable,
        "classify sees through nesting"
    );
    assert!(matches!(err.flatten(), ResilienceError::BreakerOpen(_)));
}
