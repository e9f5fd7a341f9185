//! Overhead of each primitive on its fast path, against a bare call measured in the same run.
//!
//! `cargo bench -p resilience --bench overhead -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use resilience::{BreakerConfig, Bulkhead, CircuitBreaker, KeyedRateLimiter, Outcome, Quota};

/// The "call" being protected: trivial, not inlined, fallible.
#[inline(never)]
fn work(x: u64) -> Result<u64, ()> {
    if x == u64::MAX {
        Err(())
    } else {
        Ok(x.wrapping_mul(3))
    }
}

fn outcome(r: &Result<u64, ()>) -> Outcome {
    if r.is_ok() {
        Outcome::Success
    } else {
        Outcome::Failure
    }
}

/// A quota that never rejects in the benchmark, so the admit path is what is measured.
fn open_quota() -> Quota {
    let n = NonZeroU32::new(1_000_000_000).unwrap();
    Quota::per_second(n).allow_burst(n)
}

fn api_keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("isk_live_{i:016x}")).collect()
}

fn overhead(c: &mut Criterion) {
    c.bench_function("bare_call", |b| b.iter(|| black_box(work(black_box(1)))));

    let breaker = CircuitBreaker::new("bench", BreakerConfig::default()).unwrap();
    c.bench_function("breaker_closed_acquire_record", |b| {
        b.iter(|| {
            let permit = breaker.try_acquire().unwrap();
            let r = work(black_box(1));
            permit.record(outcome(&r));
            black_box(r)
        })
    });

    let timed = CircuitBreaker::new(
        "bench-slow",
        BreakerConfig {
            slow_call_rate_threshold: Some(50.0),
            slow_call_duration: Duration::from_secs(1),
            ..BreakerConfig::default()
        },
    )
    .unwrap();
    c.bench_function("breaker_closed_acquire_record_slow_call_rule", |b| {
        b.iter(|| {
            let permit = timed.try_acquire().unwrap();
            let r = work(black_box(1));
            permit.record(outcome(&r));
            black_box(r)
        })
    });

    let keys = api_keys(1_000);
    let limiter = KeyedRateLimiter::<String>::new("bench", open_quota(), 100_000).unwrap();
    c.bench_function("ratelimit_check_single_key", |b| {
        b.iter(|| {
            limiter.check(black_box(&keys[0])).unwrap();
            black_box(work(black_box(1)))
        })
    });
    let mut i = 0;
    c.bench_function("ratelimit_check_1k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            limiter.check(black_box(&keys[i])).unwrap();
            black_box(work(black_box(1)))
        })
    });

    // For comparison: governor's own keyed limiter (DashMap store, unbounded).
    let gov = governor::RateLimiter::<String, _, _>::dashmap(open_quota());
    c.bench_function("governor_dashmap_check_single_key", |b| {
        b.iter(|| {
            gov.check_key(black_box(&keys[0])).unwrap();
            black_box(work(black_box(1)))
        })
    });
    let mut j = 0;
    c.bench_function("governor_dashmap_check_1k_keys", |b| {
        b.iter(|| {
            j = (j + 1) % keys.len();
            gov.check_key(black_box(&keys[j])).unwrap();
            black_box(work(black_box(1)))
        })
    });

    let bulkhead = Bulkhead::new("bench", 64, 0).unwrap();
    c.bench_function("bulkhead_acquire_release", |b| {
        b.iter(|| {
            let permit = bulkhead.try_acquire().unwrap();
            let r = work(black_box(1));
            drop(permit);
            black_box(r)
        })
    });
}

criterion_group!(benches, overhead);
criterion_main!(benches);
