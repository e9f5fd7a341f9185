//! Keyed rate limiter: bursts, retry-after, key independence, the bounded key table.

use std::sync::Arc;
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use resilience::{KeyedRateLimiter, quota_per_second};

fn limiter(
    rate: u32,
    burst: u32,
    max_keys: usize,
) -> (KeyedRateLimiter<u64, FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    let l = KeyedRateLimiter::with_clock(
        "test",
        quota_per_second(rate, burst).unwrap(),
        max_keys,
        clock.clone(),
    )
    .unwrap();
    (l, clock)
}

#[test]
fn burst_then_rejection_with_a_sensible_retry_after() {
    let (l, clock) = limiter(10, 5, 100);
    for i in 0..5 {
        assert!(l.check(&1).is_ok(), "call {i} of the burst");
    }
    let err = l.check(&1).unwrap_err();
    assert_eq!(err.retry_after, Duration::from_millis(100), "1 / rate");
    clock.advance(Duration::from_millis(60));
    assert_eq!(
        l.check(&1).unwrap_err().retry_after,
        Duration::from_millis(40)
    );
    clock.advance(Duration::from_millis(40));
    assert!(l.check(&1).is_ok());
    assert!(l.check(&1).is_err());
    // A full second refills 10 cells but the burst caps at 5.
    clock.advance(Duration::from_secs(1));
    assert_eq!((0..10).filter(|_| l.check(&1).is_ok()).count(), 5);
}

#[test]
fn keys_are_independent() {
    let (l, _) = limiter(1, 3, 100);
    for _ in 0..3 {
        l.check(&1).unwrap();
    }
    assert!(l.check(&1).is_err());
    for _ in 0..3 {
        l.check(&2).unwrap();
    }
    assert!(l.check(&2).is_err());
    assert!(l.check(&3).is_ok());
    assert_eq!(l.len(), 3);
}

#[test]
fn concurrent_checks_admit_exactly_the_burst() {
    let (l, _) = limiter(1, 1_000, 10);
    let l = Arc::new(l);
    let admitted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let l = Arc::clone(&l);
                s.spawn(move || (0..1_000).filter(|_| l.check(&7).is_ok()).count())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(admitted, 1_000, "time stands still: exactly the burst");
}

#[test]
fn key_table_stays_bounded_under_100k_distinct_keys() {
    let max_keys = 1_000;
    let (l, clock) = limiter(10, 5, max_keys);
    // An active client already in the table.
    l.check(&u64::MAX).unwrap();
    let mut admitted_new = 0;
    for k in 0..100_000u64 {
        if l.check(&k).is_ok() {
            admitted_new += 1;
        }
        if k % 1_000 == 0 {
            assert!(l.len() <= max_keys, "{} keys after {k}", l.len());
        }
    }
    assert_eq!(l.len(), max_keys);
    // 999 keys fit in the table (5 cells each would pass, 1 used each); the other ~99,000
    // newcomers share one overflow state: its burst of 5, not 99,000 × 5.
    assert_eq!(
        admitted_new,
        (max_keys - 1) + 5,
        "table keys + one overflow burst"
    );
    // The active client kept its own state: 4 cells of its burst left.
    assert_eq!((0..10).filter(|_| l.check(&u64::MAX).is_ok()).count(), 4);
    // Once the keys have been idle long enough to be indistinguishable from new ones, the next
    // overflow sweeps them and newcomers get their own state again.
    clock.advance(Duration::from_secs(2));
    assert!(l.check(&200_000).is_ok(), "overflow state has refilled");
    assert!(l.len() <= 1, "idle keys swept, {} left", l.len());
    for _ in 0..4 {
        l.check(&200_001).unwrap();
    }
    assert!(l.check(&200_002).is_ok(), "own state, not the overflow one");
}

#[test]
fn invalid_configs_are_rejected() {
    assert_eq!(quota_per_second(0, 1).unwrap_err().field, "rate_per_sec");
    assert_eq!(quota_per_second(1, 0).unwrap_err().field, "burst");
    let q = quota_per_second(1, 1).unwrap();
    assert_eq!(
        KeyedRateLimiter::<String>::new("x", q, 0)
            .unwrap_err()
            .field,
        "max_keys"
    );
}

#[test]
fn string_keys_work_with_the_default_clock() {
    let l = KeyedRateLimiter::<String>::new("api", quota_per_second(1, 2).unwrap(), 10).unwrap();
    let key = "key-abc".to_string();
    assert!(l.check(&key).is_ok());
    assert!(l.check(&key).is_ok());
    let err = l.check(&key).unwrap_err();
    assert!(
        err.retry_after > Duration::from_millis(900) && err.retry_after <= Duration::from_secs(1)
    );
}
