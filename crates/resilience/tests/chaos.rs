//! The chaos layer: off by default, rates within bounds over many seeded calls (and the same
//! faults for the same seed), latency injected exactly on tokio's paused clock, panics
//! contained by the panic layer, settings changed at run time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use resilience::{
    CatchPanicLayer, Chaos, ChaosConfig, ChaosLayer, Fault, Injected, ResilienceError,
};
use search_error::{Classify, ErrorCode};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

/// The wrapped service's own error, made from an injected fault.
#[derive(Debug, PartialEq)]
enum E {
    Injected,
}

impl From<Injected> for E {
    fn from(_: Injected) -> Self {
        E::Injected
    }
}

/// A service counting its calls, wrapped in the chaos layer.
fn counted(
    chaos: &Chaos,
) -> (
    impl Service<u32, Response = u32, Error = E, Future: Send + 'static>
    + Clone
    + Send
    + 'static
    + use<>,
    Arc<AtomicU64>,
) {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let svc = ChaosLayer::new(chaos.clone()).layer(service_fn(move |x: u32| {
        c.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, E>(x) }
    }));
    (svc, calls)
}

#[tokio::test(start_paused = true)]
async fn off_by_default_every_call_passes_untouched() {
    let chaos = Chaos::new("test");
    assert!(!chaos.is_on());
    assert_eq!(chaos.config(), ChaosConfig::default());
    let (svc, calls) = counted(&chaos);
    let start = Instant::now();
    for i in 0..1000 {
        assert_eq!(svc.clone().oneshot(i).await, Ok(i));
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.load(Ordering::Relaxed), 1000);
    assert_eq!(chaos.stats(), Default::default());
}

#[tokio::test(start_paused = true)]
async fn the_error_rate_holds_over_many_calls_and_the_seed_fixes_the_sequence() {
    const N: u64 = 20_000;
    let outcomes = |seed: u64| async move {
        let chaos = Chaos::with_seed("test", seed);
        chaos
            .set(ChaosConfig::default().with_error_rate(0.1))
            .unwrap();
        let (svc, calls) = counted(&chaos);
        let mut failed = Vec::new();
        for i in 0..N as u32 {
            match svc.clone().oneshot(i).await {
                Ok(v) => assert_eq!(v, i),
                Err(E::Injected) => failed.push(i),
            }
        }
        // A failed call never reached the service.
        assert_eq!(calls.load(Ordering::Relaxed) + failed.len() as u64, N);
        assert_eq!(chaos.stats().errors, failed.len() as u64);
        assert_eq!(chaos.stats().draws, N);
        failed
    };
    let a = outcomes(7).await;
    // Binomial(20,000, 0.1): mean 2,000, standard deviation 42; ±5 σ.
    assert!((1_790..=2_210).contains(&a.len()), "{} errors", a.len());
    assert_eq!(outcomes(7).await, a, "the same seed gives the same faults");
    let b = outcomes(8).await;
    assert!((1_790..=2_210).contains(&b.len()), "{} errors", b.len());
    assert_ne!(b, a, "another seed gives other faults");
}

#[tokio::test(start_paused = true)]
async fn a_fixed_latency_delays_every_call_by_exactly_that_before_calling_the_service() {
    let chaos = Chaos::new("test");
    chaos
        .set(ChaosConfig::default().with_latency(Duration::from_millis(100), 1.0))
        .unwrap();
    let (svc, calls) = counted(&chaos);
    for i in 0..10 {
        let start = Instant::now();
        assert_eq!(svc.clone().oneshot(i).await, Ok(i));
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }
    assert_eq!(chaos.stats().delays, 10);

    // The service is not called before the delay is over.
    let before = calls.load(Ordering::Relaxed);
    let task = tokio::spawn(svc.clone().oneshot(99));
    tokio::time::sleep(Duration::from_millis(99)).await;
    assert_eq!(calls.load(Ordering::Relaxed), before);
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(calls.load(Ordering::Relaxed), before + 1);
    assert_eq!(task.await.unwrap(), Ok(99));
}

#[tokio::test(start_paused = true)]
async fn a_latency_range_at_a_rate_delays_that_share_of_calls_within_the_range() {
    const N: u32 = 4_000;
    let (min, max) = (Duration::from_millis(10), Duration::from_millis(50));
    let chaos = Chaos::with_seed("test", 42);
    chaos
        .set(ChaosConfig::default().with_latency_between(min, max, 0.25))
        .unwrap();
    let (svc, _) = counted(&chaos);
    let mut delays = Vec::new();
    for i in 0..N {
        let start = Instant::now();
        assert_eq!(svc.clone().oneshot(i).await, Ok(i));
        let took = start.elapsed();
        if took > Duration::ZERO {
            assert!(took >= min && took <= max, "{took:?}");
            delays.push(took);
        }
    }
    // Binomial(4,000, 0.25): mean 1,000, standard deviation 27; ±5 σ.
    assert!((865..=1_135).contains(&delays.len()), "{}", delays.len());
    assert_eq!(chaos.stats().delays, delays.len() as u64);
    // Uniform over 10-50 ms: mean 30 ms (standard error ~0.4 ms).
    let mean = delays.iter().sum::<Duration>() / delays.len() as u32;
    assert!(
        mean > Duration::from_millis(28) && mean < Duration::from_millis(32),
        "{mean:?}"
    );
    assert!(delays.iter().any(|d| *d < Duration::from_millis(15)));
    assert!(delays.iter().any(|d| *d > Duration::from_millis(45)));
}

#[tokio::test(start_paused = true)]
async fn an_injected_panic_is_contained_by_the_panic_layer() {
    let chaos = Chaos::new("test");
    chaos
        .set(
            ChaosConfig::default()
                .with_panic_rate(1.0)
                .with_latency(Duration::from_millis(5), 1.0),
        )
        .unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let svc = CatchPanicLayer::new().layer(ChaosLayer::new(chaos.clone()).layer(service_fn(
        move |x: u32| {
            c.fetch_add(1, Ordering::Relaxed);
            async move { Ok::<_, E>(x) }
        },
    )));
    let start = Instant::now();
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(5));
    match &err {
        ResilienceError::Panicked(p) => assert!(p.message.contains("injected panic"), "{p:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    assert_eq!(chaos.stats().panics, 1);
    // Panics win over errors; turning chaos off lets calls through again.
    chaos
        .set(
            ChaosConfig::default()
                .with_panic_rate(1.0)
                .with_error_rate(1.0),
        )
        .unwrap();
    assert!(matches!(
        svc.clone().oneshot(2).await,
        Err(ResilienceError::Panicked(_))
    ));
    chaos.set(ChaosConfig::default()).unwrap();
    assert!(matches!(svc.oneshot(3).await, Ok(3)));
}

#[tokio::test(start_paused = true)]
async fn settings_change_at_run_time_for_every_clone() {
    let chaos = Chaos::new("test");
    let (svc, _) = counted(&chaos);
    let admin = chaos.clone();
    assert_eq!(svc.clone().oneshot(1).await, Ok(1));
    let cfg = ChaosConfig::default()
        .with_error_rate(1.0)
        .with_latency_between(Duration::from_millis(1), Duration::from_millis(3), 0.5);
    admin.set(cfg).unwrap();
    assert!(chaos.is_on());
    assert_eq!(chaos.config(), cfg, "rates read back exactly");
    assert_eq!(svc.clone().oneshot(2).await, Err(E::Injected));
    admin.set(ChaosConfig::default()).unwrap();
    assert!(!chaos.is_on());
    assert_eq!(svc.oneshot(3).await, Ok(3));
}

#[test]
fn draw_serves_code_that_is_not_a_service() {
    let chaos = Chaos::with_seed("test", 1);
    assert_eq!(chaos.draw(), Default::default());
    chaos
        .set(ChaosConfig::default().with_error_rate(1.0))
        .unwrap();
    let d = chaos.draw();
    assert_eq!(d.fault, Some(Fault::Error));
    assert_eq!(d.delay, None);
    assert_eq!(Injected.code(), ErrorCode::Unavailable);
    assert!(Injected.is_retryable());
}

#[test]
fn bad_settings_are_refused_and_change_nothing() {
    let chaos = Chaos::new("test");
    let good = ChaosConfig::default().with_error_rate(0.5);
    chaos.set(good).unwrap();
    for (bad, field) in [
        (ChaosConfig::default().with_error_rate(1.5), "error_rate"),
        (ChaosConfig::default().with_panic_rate(-0.1), "panic_rate"),
        (
            ChaosConfig::default().with_error_rate(f64::NAN),
            "error_rate",
        ),
        (
            ChaosConfig::default().with_latency(Duration::from_millis(1), 2.0),
            "latency_rate",
        ),
        (
            ChaosConfig::default().with_latency_between(
                Duration::from_millis(5),
                Duration::from_millis(1),
                1.0,
            ),
            "latency_max",
        ),
    ] {
        let err = chaos.set(bad).unwrap_err();
        assert_eq!(err.field, field, "{bad:?}");
        assert_eq!(err.code(), ErrorCode::InvalidInput);
    }
    assert_eq!(chaos.config(), good);
}
