//! Circuit breaker: every transition on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use resilience::{
    BreakerConfig, BreakerRegistry, BreakerState, CircuitBreaker, ManualClock, OpenWait, Outcome,
    ResilienceError, SlidingWindow,
};
use search_error::{Classify, ErrorCode};

#[derive(Debug, PartialEq)]
struct E(ErrorCode);

impl Classify for E {
    fn code(&self) -> ErrorCode {
        self.0
    }
}

fn breaker(cfg: BreakerConfig) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let b = CircuitBreaker::with_clock_and_seed("dep", cfg, Arc::new(clock.clone()), 7).unwrap();
    (b, clock)
}

fn rate_config() -> BreakerConfig {
    BreakerConfig {
        window: SlidingWindow::Count(10),
        failure_rate_threshold: Some(50.0),
        slow_call_rate_threshold: None,
        slow_call_duration: Duration::from_secs(1),
        minimum_calls: 4,
        consecutive_failures: None,
        open_wait: OpenWait::Fixed(Duration::from_secs(10)),
        max_probes: 2,
        probe_timeout: Duration::from_secs(5),
    }
}

fn fail(b: &CircuitBreaker) {
    b.try_acquire().unwrap().failure();
}

fn succeed(b: &CircuitBreaker) {
    b.try_acquire().unwrap().success();
}

#[test]
fn opens_on_failure_rate_only_after_minimum_calls() {
    let (b, _) = breaker(rate_config());
    fail(&b);
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed, "3 calls < minimum of 4");
    succeed(&b); // 4 calls, 75 % failures
    assert_eq!(b.state(), BreakerState::Open);
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.state, BreakerState::Open);
    assert_eq!(err.retry_after, Duration::from_secs(10));
}

#[test]
fn stays_closed_below_the_failure_rate() {
    let (b, _) = breaker(rate_config());
    for _ in 0..20 {
        fail(&b);
        succeed(&b);
        succeed(&b);
        succeed(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    let snap = b.snapshot();
    assert_eq!(snap.calls_in_window, 10);
    assert!(snap.failure_rate.unwrap() < 50.0);
}

#[test]
fn opens_on_slow_call_rate() {
    let cfg = BreakerConfig {
        failure_rate_threshold: None,
        slow_call_rate_threshold: Some(50.0),
        slow_call_duration: Duration::from_millis(100),
        ..rate_config()
    };
    let (b, clock) = breaker(cfg);
    for i in 0..4 {
        let p = b.try_acquire().unwrap();
        if i % 2 == 0 {
            clock.advance(Duration::from_millis(150));
        } else {
            clock.advance(Duration::from_millis(10));
        }
        p.success();
    }
    assert_eq!(
        b.state(),
        BreakerState::Open,
        "2 of 4 successful calls were slow"
    );
    let snap = b.snapshot();
    assert_eq!(snap.slow_rate, Some(50.0));
}

#[test]
fn consecutive_five_failures_open_and_thirty_seconds_later_a_probe_decides() {
    let (b, clock) = breaker(BreakerConfig::consecutive(5, Duration::from_secs(30)));
    for _ in 0..4 {
        fail(&b);
    }
    succeed(&b); // resets the streak
    for _ in 0..4 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(1)
    );
    clock.advance(Duration::from_secs(1));
    let probe = b.try_acquire().unwrap();
    assert!(probe.is_probe());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(b.try_acquire().is_err(), "one probe at a time");
    probe.success();
    assert_eq!(b.state(), BreakerState::Closed);
    // Closed again with a fresh streak.
    for _ in 0..4 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn probe_failure_reopens_for_another_wait() {
    let (b, clock) = breaker(BreakerConfig::consecutive(5, Duration::from_secs(30)));
    for _ in 0..5 {
        fail(&b);
    }
    clock.advance(Duration::from_secs(30));
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(30)
    );
}

#[test]
fn half_open_admits_at_most_max_probes_and_closes_when_all_succeed() {
    let cfg = BreakerConfig {
        max_probes: 3,
        ..rate_config()
    };
    let (b, clock) = breaker(cfg);
    for _ in 0..4 {
        fail(&b);
    }
    clock.advance(Duration::from_secs(10));
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    let p3 = b.try_acquire().unwrap();
    for _ in 0..10 {
        let err = b.try_acquire().unwrap_err();
        assert_eq!(err.state, BreakerState::HalfOpen);
        assert_eq!(
            err.retry_after,
            Duration::from_secs(5),
            "oldest probe times out in 5 s"
        );
    }
    assert_eq!(b.snapshot().probes_in_flight, 3);
    p1.success();
    p2.success();
    assert_eq!(
        b.state(),
        BreakerState::HalfOpen,
        "decided when all probes are done"
    );
    assert!(b.try_acquire().is_err(), "2 done + 1 in flight = max");
    p3.success();
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().calls_in_window, 0, "window reset on close");
}

#[test]
fn probe_failures_reaching_the_rate_reopen_early() {
    let cfg = BreakerConfig {
        max_probes: 4,
        ..rate_config()
    };
    let (b, clock) = breaker(cfg);
    for _ in 0..4 {
        fail(&b);
    }
    clock.advance(Duration::from_secs(10));
    let probes: Vec<_> = (0..4).map(|_| b.try_acquire().unwrap()).collect();
    let mut it = probes.into_iter();
    it.next().unwrap().failure();
    assert_eq!(b.state(), BreakerState::HalfOpen, "1/4 < 50 %");
    it.next().unwrap().failure();
    assert_eq!(
        b.state(),
        BreakerState::Open,
        "2/4 reaches 50 % whatever the rest does"
    );
    // The remaining probes are stale now: their outcomes change nothing.
    it.next().unwrap().success();
    it.next().unwrap().failure();
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn hung_probe_counts_as_failed_after_probe_timeout() {
    let (b, clock) = breaker(BreakerConfig::consecutive(1, Duration::from_secs(1)));
    fail(&b);
    clock.advance(Duration::from_secs(1));
    let hung = b.try_acquire().unwrap();
    clock.advance(Duration::from_secs(9));
    assert!(b.try_acquire().is_err(), "still within the probe timeout");
    clock.advance(Duration::from_secs(1)); // 10 s: probe timeout
    let err = b.try_acquire().unwrap_err();
    assert_eq!(
        err.state,
        BreakerState::Open,
        "the hung probe failed: re-opened"
    );
    assert_eq!(err.retry_after, Duration::from_secs(1));
    hung.success(); // too late: ignored
    assert_eq!(b.state(), BreakerState::Open);
    clock.advance(Duration::from_secs(1));
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn ignored_outcomes_and_dropped_permits_never_count() {
    let (b, clock) = breaker(BreakerConfig::consecutive(2, Duration::from_secs(5)));
    for _ in 0..100 {
        b.try_acquire().unwrap().record(Outcome::Ignored);
        drop(b.try_acquire().unwrap());
    }
    assert_eq!(b.snapshot().calls_in_window, 0);
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    clock.advance(Duration::from_secs(5));
    // A dropped probe frees its slot for the next one.
    drop(b.try_acquire().unwrap());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let p = b.try_acquire().expect("slot freed by the dropped probe");
    p.success();
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test]
async fn call_ignores_client_errors_and_counts_server_errors() {
    let (b, _) = breaker(BreakerConfig::consecutive(3, Duration::from_secs(5)));
    for code in [
        ErrorCode::InvalidInput,
        ErrorCode::NotFound,
        ErrorCode::PayloadTooLarge,
    ] {
        for _ in 0..10 {
            let r = b.call(async { Err::<(), _>(E(code)) }).await;
            assert!(matches!(r, Err(ResilienceError::Inner(E(c))) if c == code));
        }
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().calls_in_window, 0);
    for _ in 0..3 {
        let _ = b.call(async { Err::<(), _>(E(ErrorCode::Io)) }).await;
    }
    assert_eq!(b.state(), BreakerState::Open);
    let r = b.call(async { Ok::<_, E>(1) }).await;
    let err = r.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));
}

#[test]
fn stale_permits_from_before_a_transition_are_ignored() {
    let (b, clock) = breaker(BreakerConfig::consecutive(2, Duration::from_secs(5)));
    let early: Vec<_> = (0..10).map(|_| b.try_acquire().unwrap()).collect();
    fail(&b);
    fail(&b);
    clock.advance(Duration::from_secs(5));
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), BreakerState::Closed);
    for p in early {
        p.failure(); // issued two transitions ago
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().consecutive_failures, 0);
}

#[test]
fn exponential_open_wait_grows_within_jitter_bounds_and_cap() {
    for seed in 0..200u64 {
        let cfg = BreakerConfig {
            open_wait: OpenWait::Exponential {
                initial: Duration::from_secs(1),
                multiplier: 2.0,
                max: Duration::from_secs(10),
                jitter: 0.25,
            },
            ..BreakerConfig::consecutive(1, Duration::ZERO)
        };
        let clock = ManualClock::new();
        let b =
            CircuitBreaker::with_clock_and_seed("x", cfg, Arc::new(clock.clone()), seed).unwrap();
        fail(&b);
        for k in 0..8u32 {
            let nominal = (2f64.powi(k as i32)).min(10.0);
            let wait = b.try_acquire().unwrap_err().retry_after.as_secs_f64();
            assert!(
                wait >= nominal * 0.75 - 1e-9 && wait <= nominal + 1e-9,
                "seed {seed} opening {k}: {wait} not in [{}, {nominal}]",
                nominal * 0.75
            );
            clock.advance(Duration::from_secs_f64(wait));
            b.try_acquire().unwrap().failure(); // the probe fails: re-open, longer
        }
    }
}

#[test]
fn time_window_forgets_old_seconds() {
    let cfg = BreakerConfig {
        window: SlidingWindow::Time(3),
        minimum_calls: 4,
        ..rate_config()
    };
    let (b, clock) = breaker(cfg);
    fail(&b);
    fail(&b);
    fail(&b);
    clock.advance(Duration::from_secs(3)); // those failures left the 3 s window
    succeed(&b);
    assert_eq!(b.snapshot().calls_in_window, 1);
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed, "3 calls in window < 4");
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn snapshot_serializes_and_registry_shares_breakers() {
    let reg = BreakerRegistry::new();
    let a = reg.get_or_insert("b", BreakerConfig::default).unwrap();
    let a2 = reg.get_or_insert("b", || panic!("not called")).unwrap();
    assert!(Arc::ptr_eq(&a, &a2));
    reg.get_or_insert("a", BreakerConfig::default).unwrap();
    let snaps = reg.snapshot_all();
    assert_eq!(
        snaps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let json = serde_json::to_value(&snaps[1]).unwrap();
    assert_eq!(json["state"], "closed");
    assert_eq!(json["calls_in_window"], 0);
    assert!(json["failure_rate"].is_null());
}

#[test]
fn invalid_configs_are_rejected_with_the_field_named() {
    let bad = [
        (
            BreakerConfig {
                failure_rate_threshold: Some(0.0),
                ..Default::default()
            },
            "failure_rate_threshold",
        ),
        (
            BreakerConfig {
                failure_rate_threshold: Some(f64::NAN),
                ..Default::default()
            },
            "failure_rate_threshold",
        ),
        (
            BreakerConfig {
                window: SlidingWindow::Count(0),
                ..Default::default()
            },
            "window",
        ),
        (
            BreakerConfig {
                minimum_calls: 101,
                ..Default::default()
            },
            "minimum_calls",
        ),
        (
            BreakerConfig {
                max_probes: 0,
                ..Default::default()
            },
            "max_probes",
        ),
        (
            BreakerConfig {
                failure_rate_threshold: None,
                ..Default::default()
            },
            "failure_rate_threshold",
        ),
        (
            BreakerConfig::consecutive(0, Duration::from_secs(1)),
            "consecutive_failures",
        ),
    ];
    for (cfg, field) in bad {
        let err = CircuitBreaker::new("x", cfg).unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
}
