//! Cache, panic isolation, deadlines and timeouts, error classification, emitted metrics.

use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use resilience::{
    BreakerConfig, CircuitBreaker, Deadline, ManualClock, ResilienceError, ResultCache,
    catch_panic, catch_panic_blocking, with_deadline, with_timeout,
};
use search_error::{Classify, ErrorCode};

#[test]
fn cache_evicts_least_recently_used_within_its_byte_budget() {
    // One shard's budget is max_bytes / 8; use u64 keys so entries spread over shards.
    let cache: ResultCache<u64, String> = ResultCache::new("results", 64 * 1024).unwrap();
    let value = "x".repeat(1_000);
    for k in 0..1_000u64 {
        assert!(cache.insert(k, value.clone()));
        assert!(cache.weight() <= 64 * 1024, "{} bytes", cache.weight());
    }
    let held = cache.len();
    assert!(held > 20 && held < 64, "{held} entries of ~1 KiB in 64 KiB");
    // The most recent entries survived, the oldest did not.
    assert!(cache.get(&999).is_some());
    assert!(cache.get(&0).is_none());
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
    assert_eq!(stats.entries, held);
}

#[test]
fn cache_get_refreshes_recency_and_oversized_entries_are_refused() {
    let cache: ResultCache<u64, String> =
        ResultCache::with_weigher("w", 8 * 1024, |_, v: &String| v.len()).unwrap();
    // Shard budget is 1 KiB: an entry of 2 KiB is not cached.
    assert!(!cache.insert(1, "y".repeat(2_048)));
    assert!(cache.get(&1).is_none());
    // Many inserts evict plenty in every shard; an entry read after each insert is always the
    // most recently used of its shard, so it must survive.
    cache.insert(7, "z".repeat(300));
    for k in 100..2_000u64 {
        cache.insert(k, "z".repeat(300));
        assert!(
            cache.get(&7).is_some(),
            "recently used entry evicted at {k}"
        );
    }
    assert_eq!(cache.remove(&7).as_deref(), Some("z".repeat(300).as_str()));
    cache.clear();
    assert!(cache.is_empty());
    assert_eq!(cache.weight(), 0);
}

#[test]
fn blocking_panics_become_errors_with_their_message() {
    assert_eq!(catch_panic_blocking(|| 5), Ok(5));
    let err = catch_panic_blocking(|| -> u8 { panic!("static str") }).unwrap_err();
    assert_eq!(err.message, "static str");
    let n = 3;
    let err = catch_panic_blocking(|| -> u8 { panic!("formatted {n}") }).unwrap_err();
    assert_eq!(err.message, "formatted 3");
    assert_eq!(err.code(), ErrorCode::Internal);
}

#[tokio::test]
async fn future_panics_become_errors() {
    assert_eq!(catch_panic(async { 1 }).await, Ok(1));
    let err = catch_panic(async {
        tokio::task::yield_now().await;
        panic!("after a yield")
    })
    .await
    .unwrap_err();
    assert_eq!(err.message, "after a yield");
}

#[tokio::test(start_paused = true)]
async fn deadlines_and_timeouts() {
    let d = Deadline::from_timeout(Duration::from_secs(2));
    assert_eq!(d.remaining(), Duration::from_secs(2));
    assert!(!d.expired());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(d.expired());
    assert_eq!(d.remaining(), Duration::ZERO);
    let huge = Deadline::from_timeout(Duration::MAX);
    assert!(!huge.expired());
    assert_eq!(d.min(huge), d);

    let ok = with_timeout("fast", Duration::from_secs(1), async { 7 }).await;
    assert_eq!(ok, Ok(7));
    let slow = with_timeout(
        "slow",
        Duration::from_secs(1),
        tokio::time::sleep(Duration::from_secs(5)),
    )
    .await;
    let err = slow.unwrap_err();
    assert_eq!((err.operation, err.after), ("slow", Duration::from_secs(1)));
    assert_eq!(err.code(), ErrorCode::Timeout);
    let late = with_deadline(
        "late",
        Deadline::from_timeout(Duration::ZERO),
        std::future::pending::<()>(),
    )
    .await;
    assert!(late.is_err());
}

#[test]
fn resilience_errors_map_to_the_closed_codes() {
    #[derive(Debug)]
    struct Inner;
    impl std::fmt::Display for Inner {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("inner")
        }
    }
    impl std::error::Error for Inner {}
    impl Classify for Inner {
        fn code(&self) -> ErrorCode {
            ErrorCode::NotFound
        }
    }
    let panicked = ResilienceError::<Inner>::Panicked(resilience::Panicked {
        message: "x".into(),
    });
    assert_eq!(panicked.code(), ErrorCode::Internal);
    assert_eq!(panicked.retry_after(), None);
    let inner = ResilienceError::Inner(Inner);
    assert_eq!(inner.code(), ErrorCode::NotFound);
    assert!(!inner.is_retryable());
    assert!(!inner.is_rejection());
    assert_eq!(inner.to_string(), "inner");
    let limited = ResilienceError::<Inner>::RateLimited(resilience::RateLimited {
        retry_after: Duration::from_secs(1),
    });
    assert_eq!(limited.code(), ErrorCode::RateLimited);
    assert!(limited.is_retryable());
    assert_eq!(limited.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(limited.to_string(), "rate limited; retry in 1s");
}

#[test]
fn breaker_emits_state_gauge_transition_and_rejection_counters() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let clock = ManualClock::new();
        let b = CircuitBreaker::with_clock(
            "metered",
            BreakerConfig::consecutive(1, Duration::from_secs(1)),
            Arc::new(clock.clone()),
        )
        .unwrap();
        b.try_acquire().unwrap().failure();
        assert!(b.try_acquire().is_err());
        assert!(b.try_acquire().is_err());
    });
    let mut transitions = 0;
    let mut rejected = 0;
    let mut state = None;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let name = key.key().name().to_owned();
        let labels: Vec<_> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        assert!(
            labels.contains(&("breaker".into(), "metered".into())),
            "{name}"
        );
        match (name.as_str(), value) {
            ("ironsift_breaker_transitions_total", DebugValue::Counter(n)) => {
                assert!(labels.contains(&("from".into(), "closed".into())));
                assert!(labels.contains(&("to".into(), "open".into())));
                transitions += n;
            }
            ("ironsift_breaker_rejected_total", DebugValue::Counter(n)) => rejected += n,
            ("ironsift_breaker_state", DebugValue::Gauge(g)) => state = Some(g.into_inner()),
            _ => {}
        }
    }
    assert_eq!((transitions, rejected, state), (1, 2, Some(1.0)));
}
