//! Bulkhead: concurrency bound, immediate rejections, deadline handling, cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use resilience::{Bulkhead, Deadline, RejectReason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_never_exceeded_under_a_storm() {
    let bh = Bulkhead::new("storm", 4, 10_000).unwrap();
    let current = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let (bh, current, peak) = (bh.clone(), current.clone(), peak.clone());
            tokio::spawn(async move {
                let _permit = bh.acquire(None).await.unwrap();
                let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                for _ in 0..(i % 5) {
                    tokio::task::yield_now().await;
                }
                current.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 4, "peak concurrency {peak}");
    assert!(peak >= 2, "the storm should actually overlap ({peak})");
    let snap = bh.snapshot();
    assert_eq!((snap.in_flight, snap.queued), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn full_queue_rejects_at_once() {
    let bh = Bulkhead::new("q", 1, 2).unwrap();
    let _held = bh.acquire(None).await.unwrap();
    let w1 = tokio::spawn({
        let bh = bh.clone();
        async move { bh.acquire(None).await.map(drop) }
    });
    let w2 = tokio::spawn({
        let bh = bh.clone();
        async move { bh.acquire(None).await.map(drop) }
    });
    tokio::task::yield_now().await;
    assert_eq!(bh.snapshot().queued, 2);
    // `now_or_never`: the rejection is returned on the first poll, without waiting.
    let err = bh
        .acquire(None)
        .now_or_never()
        .expect("no wait")
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::QueueFull);
    assert!(err.retry_after > Duration::ZERO);
    assert_eq!(
        bh.try_acquire().unwrap_err().reason,
        RejectReason::QueueFull
    );
    drop(_held);
    w1.await.unwrap().unwrap();
    w2.await.unwrap().unwrap();
    assert_eq!(bh.snapshot().rejected_queue_full, 2);
}

async fn teach_service_time(bh: &Bulkhead, each: Duration) {
    for _ in 0..5 {
        let p = bh.acquire(None).await.unwrap();
        tokio::time::sleep(each).await;
        drop(p);
    }
}

#[tokio::test(start_paused = true)]
async fn deadline_shorter_than_the_estimated_wait_rejects_at_once() {
    let bh = Bulkhead::new("d", 1, 10).unwrap();
    teach_service_time(&bh, Duration::from_millis(100)).await;
    let ewma = bh.snapshot().ewma_service_secs.unwrap();
    assert!((ewma - 0.1).abs() < 1e-3, "{ewma}");
    let _held = bh.acquire(None).await.unwrap();
    let err = bh
        .acquire(Some(Deadline::from_timeout(Duration::from_millis(50))))
        .now_or_never()
        .expect("no wait")
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::WouldMissDeadline);
    assert!(
        err.retry_after >= Duration::from_millis(99),
        "{:?}",
        err.retry_after
    );
    assert_eq!(bh.snapshot().queued, 0);
    // A deadline that the estimate allows is queued and served.
    let bh2 = bh.clone();
    let waiter = tokio::spawn(async move {
        bh2.acquire(Some(Deadline::from_timeout(Duration::from_millis(500))))
            .await
            .map(drop)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(_held);
    waiter.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn queued_waiters_past_their_deadline_are_rejected_and_leave_the_queue() {
    let bh = Bulkhead::new("late", 1, 10).unwrap();
    let held = bh.acquire(None).await.unwrap();
    let start = tokio::time::Instant::now();
    let err = bh
        .acquire(Some(Deadline::from_timeout(Duration::from_secs(1))))
        .await
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::DeadlineExceeded);
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(bh.snapshot().queued, 0);
    // An already expired deadline is rejected without queueing.
    let past = Deadline::from_timeout(Duration::ZERO);
    let err = bh.acquire(Some(past)).now_or_never().unwrap().unwrap_err();
    assert_eq!(err.reason, RejectReason::DeadlineExceeded);
    drop(held);
    assert!(bh.acquire(None).now_or_never().unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiters_leave_the_queue() {
    let bh = Bulkhead::new("c", 1, 1).unwrap();
    let _held = bh.acquire(None).await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(10), bh.acquire(None)).await;
    assert!(r.is_err());
    assert_eq!(bh.snapshot().queued, 0);
    // The queue slot is free again: the next waiter is queued, not rejected.
    let r = tokio::time::timeout(Duration::from_millis(10), bh.acquire(None)).await;
    assert!(r.is_err(), "queued (and timed out), not rejected");
}

#[test]
fn invalid_sizes_are_rejected() {
    assert_eq!(
        Bulkhead::new("x", 0, 1).unwrap_err().field,
        "max_concurrent"
    );
    assert_eq!(
        Bulkhead::new("x", 1, 10_000_000).unwrap_err().field,
        "max_queue"
    );
}
