//! Retry: backoff schedules, classification, hints, max_elapsed and the budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience::{Jitter, ManualClock, Retry, RetryBudget, RetryDecision, RetryPolicy};
use search_error::{Classify, ErrorCode};
use tokio::time::Instant;

#[derive(Debug, PartialEq)]
struct E(ErrorCode);

impl Classify for E {
    fn code(&self) -> ErrorCode {
        self.0
    }
}

fn policy(jitter: Jitter) -> RetryPolicy {
    RetryPolicy {
        max_attempts: 20,
        base: Duration::from_millis(10),
        cap: Duration::from_millis(700),
        jitter,
        max_elapsed: Some(Duration::from_secs(3)),
    }
}

fn big_budget() -> Arc<RetryBudget> {
    Arc::new(RetryBudget::new(Duration::from_secs(10), 1_000_000, 10.0).unwrap())
}

#[test]
fn every_delay_is_within_its_formula_bounds() {
    for jitter in [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ] {
        let p = policy(jitter);
        let (base, cap) = (p.base, p.cap);
        for seed in 0..500 {
            let mut b = p.backoff(seed);
            let mut prev = base;
            for n in 0..30u32 {
                let t = base.saturating_mul(2u32.saturating_pow(n.min(31))).min(cap);
                let d = b.next_delay();
                assert!(d <= cap, "{jitter:?} seed {seed} retry {n}: {d:?} > cap");
                match jitter {
                    Jitter::None => assert_eq!(d, t),
                    Jitter::Full => assert!(d <= t),
                    Jitter::Equal => assert!(d >= t / 2 && d <= t, "{d:?} vs {t:?}"),
                    Jitter::Decorrelated => {
                        assert!(d >= base, "{d:?} < base");
                        assert!(d <= (prev * 3).min(cap), "{d:?} > min(cap, 3 × {prev:?})");
                        prev = d;
                    }
                }
            }
        }
    }
}

#[test]
fn jittered_schedules_actually_vary() {
    for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
        let p = policy(jitter);
        let firsts: std::collections::HashSet<_> = (0..50)
            .map(|s| {
                let mut b = p.backoff(s);
                (b.next_delay(), b.next_delay(), b.next_delay())
            })
            .collect();
        assert!(firsts.len() > 40, "{jitter:?}: {} distinct", firsts.len());
    }
}

#[tokio::test(start_paused = true)]
async fn total_time_never_exceeds_max_elapsed() {
    for jitter in [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ] {
        for seed in 0..30 {
            let retry = Retry::new(policy(jitter), big_budget())
                .unwrap()
                .with_seed(seed);
            let start = Instant::now();
            let attempts = AtomicU32::new(0);
            let last_start = std::sync::Mutex::new(Duration::ZERO);
            let r: Result<(), E> = retry
                .run(|_| {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    *last_start.lock().unwrap() = start.elapsed();
                    async { Err(E(ErrorCode::Unavailable)) }
                })
                .await;
            assert!(r.is_err());
            let total = start.elapsed();
            assert!(
                total <= Duration::from_secs(3),
                "{jitter:?} {seed}: {total:?}"
            );
            assert!(*last_start.lock().unwrap() <= Duration::from_secs(3));
            assert!(attempts.load(Ordering::Relaxed) >= 2);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn succeeds_after_retries_and_passes_attempt_numbers() {
    let retry = Retry::new(policy(Jitter::Full), big_budget()).unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let r = retry
        .run(|attempt| {
            seen.lock().unwrap().push(attempt);
            async move {
                if attempt < 2 {
                    Err(E(ErrorCode::Timeout))
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
    assert_eq!(r, Ok(2));
    assert_eq!(*seen.lock().unwrap(), [0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_are_not_retried() {
    let retry = Retry::new(policy(Jitter::Full), big_budget()).unwrap();
    for code in [
        ErrorCode::InvalidInput,
        ErrorCode::NotFound,
        ErrorCode::DataCorruption,
        ErrorCode::Internal,
    ] {
        let calls = AtomicU32::new(0);
        let r: Result<(), E> = retry
            .run(|_| {
                calls.fetch_add(1, Ordering::Relaxed);
                async move { Err(E(code)) }
            })
            .await;
        assert_eq!(r, Err(E(code)));
        assert_eq!(calls.load(Ordering::Relaxed), 1, "{code} was retried");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_hint_is_waited_for_but_never_past_max_elapsed() {
    let hinted = |hint: Duration| {
        move |_: &E| RetryDecision::Retry {
            retry_after: Some(hint),
        }
    };
    // A 1 s hint with a 10 ms base: each retry waits at least 1 s.
    let retry = Retry::new(
        RetryPolicy {
            max_attempts: 3,
            ..policy(Jitter::Full)
        },
        big_budget(),
    )
    .unwrap()
    .with_classifier(hinted(Duration::from_secs(1)));
    let start = Instant::now();
    let times = std::sync::Mutex::new(Vec::new());
    let _: Result<(), E> = retry
        .run(|_| {
            times.lock().unwrap().push(start.elapsed());
            async { Err(E(ErrorCode::RateLimited)) }
        })
        .await;
    let times = times.into_inner().unwrap();
    assert_eq!(times.len(), 3);
    for w in times.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_secs(1), "{times:?}");
    }
    // A hint beyond max_elapsed (3 s): give up at once instead of sleeping.
    let retry = Retry::new(policy(Jitter::Full), big_budget())
        .unwrap()
        .with_classifier(hinted(Duration::from_secs(5)));
    let start = Instant::now();
    let calls = AtomicU32::new(0);
    let r: Result<(), E> = retry
        .run(|_| {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Err(E(ErrorCode::Overloaded)) }
        })
        .await;
    assert!(r.is_err());
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn budget_bounds_retries_against_a_dependency_that_always_fails() {
    let (ratio, min_per_sec, ttl) = (0.1, 1u32, Duration::from_secs(10));
    // The budget's clock stands still, so all 1,000 calls fall within one TTL window.
    let clock = ManualClock::new();
    let budget =
        Arc::new(RetryBudget::with_clock(ttl, min_per_sec, ratio, Arc::new(clock)).unwrap());
    let retry = Retry::new(
        RetryPolicy {
            max_attempts: 5,
            max_elapsed: None,
            ..policy(Jitter::Full)
        },
        Arc::clone(&budget),
    )
    .unwrap()
    .with_seed(1);
    let attempts = AtomicU32::new(0);
    let calls = 1_000u32;
    for _ in 0..calls {
        let _: Result<(), E> = retry
            .run(|_| {
                attempts.fetch_add(1, Ordering::Relaxed);
                async { Err(E(ErrorCode::Unavailable)) }
            })
            .await;
    }
    let retries = attempts.load(Ordering::Relaxed) - calls;
    let bound = (ratio * f64::from(calls)) as u32 + min_per_sec * ttl.as_secs() as u32;
    println!(
        "1000 failing calls, ratio {ratio}, floor {min_per_sec}/s over {ttl:?}: {retries} retries (bound {bound}; without a budget: {})",
        calls * 4
    );
    assert!(retries <= bound, "{retries} retries > budget {bound}");
    assert!(retries >= bound - 1, "the budget should be used: {retries}");
    assert_eq!(budget.balance(), 0);
}

#[test]
fn budget_tokens_expire_after_the_ttl() {
    let clock = ManualClock::new();
    let budget =
        RetryBudget::with_clock(Duration::from_secs(10), 0, 0.5, Arc::new(clock.clone())).unwrap();
    for _ in 0..10 {
        budget.deposit();
    }
    assert_eq!(budget.balance(), 5);
    assert!(budget.withdraw());
    clock.advance(Duration::from_secs(11));
    assert_eq!(budget.balance(), 0);
    assert!(!budget.withdraw());
}

#[tokio::test(start_paused = true)]
async fn dropping_a_run_mid_sleep_is_fine() {
    let retry = Retry::new(policy(Jitter::None), big_budget()).unwrap();
    let fut = retry.run(|_| async { Err::<(), _>(E(ErrorCode::Timeout)) });
    // Cut off during the second backoff sleep.
    assert!(
        tokio::time::timeout(Duration::from_millis(15), fut)
            .await
            .is_err()
    );
    let r = retry.run(|_| async { Ok::<_, E>(7) }).await;
    assert_eq!(r, Ok(7));
}

#[test]
fn invalid_policies_and_budgets_are_rejected() {
    let bad = RetryPolicy {
        max_attempts: 0,
        ..RetryPolicy::default()
    };
    assert_eq!(
        Retry::new(bad, big_budget()).unwrap_err().field,
        "max_attempts"
    );
    let bad = RetryPolicy {
        cap: Duration::from_millis(1),
        ..RetryPolicy::default()
    };
    assert_eq!(Retry::new(bad, big_budget()).unwrap_err().field, "cap");
    assert_eq!(
        RetryBudget::new(Duration::ZERO, 1, 0.1).unwrap_err().field,
        "ttl"
    );
    assert_eq!(
        RetryBudget::new(Duration::from_secs(1), 1, f64::NAN)
            .unwrap_err()
            .field,
        "retry_ratio"
    );
}
