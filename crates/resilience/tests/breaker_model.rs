//! Model-based test: the breaker against a plain, separately written reference model.
//!
//! Random sequences of acquires, outcomes (success, failure, ignored, dropped) and time steps
//! run on both; state and every acquire's answer (admitted or not, probe or not, retry-after)
//! must be identical at every step. `PROPTEST_CASES` sets the number of sequences (default 256).

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use resilience::{
    BreakerConfig, BreakerPermit, BreakerState, CircuitBreaker, ManualClock, OpenWait, Outcome,
    SlidingWindow,
};

#[derive(Debug, Clone, Copy, PartialEq)]
enum St {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
struct MPermit {
    generation: u64,
    start: u64,
    probe: u64,
}

/// The reference: a Vec window, recomputed from scratch every time.
struct Model {
    cfg: BreakerConfig,
    state: St,
    generation: u64,
    /// (second, failed, slow) of every closed-state outcome since the last close.
    calls: Vec<(u64, bool, bool)>,
    consecutive: u32,
    open_until: u64,
    streak: i32,
    next_probe: u64,
    probes: Vec<(u64, u64)>,
    done: u32,
    failed: u32,
    slow: u32,
}

const SEC: u64 = 1_000_000_000;

impl Model {
    fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            state: St::Closed,
            generation: 0,
            calls: Vec::new(),
            consecutive: 0,
            open_until: 0,
            streak: 0,
            next_probe: 1,
            probes: Vec::new(),
            done: 0,
            failed: 0,
            slow: 0,
        }
    }

    fn window(&self, now: u64) -> Vec<(u64, bool, bool)> {
        match self.cfg.window {
            SlidingWindow::Count(n) => {
                let skip = self.calls.len().saturating_sub(n as usize);
                self.calls[skip..].to_vec()
            }
            SlidingWindow::Time(n) => {
                let s = now / SEC;
                self.calls
                    .iter()
                    .copied()
                    .filter(|&(sec, _, _)| sec + u64::from(n) > s)
                    .collect()
            }
        }
    }

    fn is_slow(&self, start: u64, now: u64) -> bool {
        self.cfg.slow_call_rate_threshold.is_some()
            && now - start >= self.cfg.slow_call_duration.as_nanos() as u64
    }

    fn go(&mut self, to: St, now: u64) {
        self.generation += 1;
        self.state = to;
        match to {
            St::Open => {
                self.streak += 1;
                let wait = match self.cfg.open_wait {
                    OpenWait::Fixed(d) => d,
                    OpenWait::Exponential {
                        initial,
                        multiplier,
                        max,
                        ..
                    } => Duration::from_secs_f64(
                        (initial.as_secs_f64() * multiplier.powi(self.streak - 1))
                            .min(max.as_secs_f64()),
                    )
                    .min(max),
                };
                self.open_until = now + wait.as_nanos() as u64;
                self.probes.clear();
                self.consecutive = 0;
            }
            St::HalfOpen => {
                self.probes.clear();
                self.done = 0;
                self.failed = 0;
                self.slow = 0;
            }
            St::Closed => {
                self.calls.clear();
                self.consecutive = 0;
                self.streak = 0;
                self.probes.clear();
            }
        }
    }

    fn probe_done(&mut self, failed: bool, slow: bool, now: u64) {
        self.done += 1;
        self.failed += u32::from(failed);
        self.slow += u32::from(slow);
        let max = f64::from(self.cfg.max_probes);
        let fail_open = match self.cfg.failure_rate_threshold {
            Some(t) => f64::from(self.failed) * 100.0 >= t * max,
            None => self.failed > 0,
        };
        let slow_open = self
            .cfg
            .slow_call_rate_threshold
            .is_some_and(|t| f64::from(self.slow) * 100.0 >= t * max);
        if fail_open || slow_open {
            self.go(St::Open, now);
        } else if self.done >= self.cfg.max_probes {
            self.go(St::Closed, now);
        }
    }

    fn expire(&mut self, now: u64) {
        let timeout = self.cfg.probe_timeout.as_nanos() as u64;
        while self.state == St::HalfOpen {
            let Some(pos) = self.probes.iter().position(|&(_, s)| s + timeout <= now) else {
                break;
            };
            self.probes.remove(pos);
            self.probe_done(true, false, now);
        }
    }

    /// Ok(permit) or Err(retry_after nanos).
    fn acquire(&mut self, now: u64) -> Result<MPermit, u64> {
        match self.state {
            St::Closed => {
                return Ok(MPermit {
                    generation: self.generation,
                    start: now,
                    probe: 0,
                });
            }
            St::Open => {
                if now < self.open_until {
                    return Err(self.open_until - now);
                }
                self.go(St::HalfOpen, now);
            }
            St::HalfOpen => {
                self.expire(now);
                if self.state == St::Open {
                    return Err(self.open_until.saturating_sub(now));
                }
            }
        }
        if self.done + (self.probes.len() as u32) < self.cfg.max_probes {
            let id = self.next_probe;
            self.next_probe += 1;
            self.probes.push((id, now));
            Ok(MPermit {
                generation: self.generation,
                start: now,
                probe: id,
            })
        } else {
            let timeout = self.cfg.probe_timeout.as_nanos() as u64;
            Err(self
                .probes
                .iter()
                .map(|&(_, s)| (s + timeout).saturating_sub(now))
                .min()
                .unwrap_or(0))
        }
    }

    fn record(&mut self, p: MPermit, outcome: Outcome, now: u64) {
        if p.probe != 0 {
            if p.generation != self.generation {
                return;
            }
            self.expire(now);
            if p.generation != self.generation {
                return;
            }
            let Some(pos) = self.probes.iter().position(|&(id, _)| id == p.probe) else {
                return;
            };
            self.probes.remove(pos);
            if outcome == Outcome::Ignored {
                return;
            }
            let slow = self.is_slow(p.start, now);
            self.probe_done(outcome == Outcome::Failure, slow, now);
            return;
        }
        if outcome == Outcome::Ignored || p.generation != self.generation {
            return;
        }
        let failed = outcome == Outcome::Failure;
        let slow = self.is_slow(p.start, now);
        self.calls.push((now / SEC, failed, slow));
        if failed {
            self.consecutive += 1;
        } else {
            self.consecutive = 0;
        }
        let w = self.window(now);
        let n = w.len() as f64;
        let fails = w.iter().filter(|c| c.1).count() as f64;
        let slows = w.iter().filter(|c| c.2).count() as f64;
        let by_streak = self
            .cfg
            .consecutive_failures
            .is_some_and(|k| self.consecutive >= k);
        let enough = w.len() as u32 >= self.cfg.minimum_calls;
        let by_rate = enough
            && (self
                .cfg
                .failure_rate_threshold
                .is_some_and(|t| fails * 100.0 >= t * n)
                || self
                    .cfg
                    .slow_call_rate_threshold
                    .is_some_and(|t| slows * 100.0 >= t * n));
        if by_streak || by_rate {
            self.go(St::Open, now);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Record(usize, Outcome),
    Drop(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Acquire),
        3 => (any::<usize>(), Just(Outcome::Success)).prop_map(|(i, o)| Op::Record(i, o)),
        3 => (any::<usize>(), Just(Outcome::Failure)).prop_map(|(i, o)| Op::Record(i, o)),
        1 => (any::<usize>(), Just(Outcome::Ignored)).prop_map(|(i, o)| Op::Record(i, o)),
        1 => any::<usize>().prop_map(Op::Drop),
        // Coarse steps so that boundaries (exact timeouts, exact waits) are hit often.
        2 => prop_oneof![Just(0u64), Just(50), Just(100), Just(250), Just(500), Just(1_000), 0u64..3_000].prop_map(Op::Advance),
    ]
}

fn config() -> impl Strategy<Value = BreakerConfig> {
    let window = prop_oneof![
        (1u32..8).prop_map(SlidingWindow::Count),
        (1u32..4).prop_map(SlidingWindow::Time)
    ];
    let wait = prop_oneof![
        (0u64..40).prop_map(|k| OpenWait::Fixed(Duration::from_millis(k * 50))),
        (1u64..10)
            .prop_map(|k| k * 50)
            .prop_map(|ms| OpenWait::Exponential {
                initial: Duration::from_millis(ms),
                multiplier: 2.0,
                max: Duration::from_millis(ms * 5),
                jitter: 0.0,
            }),
    ];
    (
        window,
        prop::option::of(prop_oneof![Just(20.0), Just(50.0), Just(100.0)]),
        prop::option::of(prop_oneof![Just(34.0), Just(60.0)]),
        (1u64..12).prop_map(|k| k * 50),
        1u32..5,
        prop::option::of(1u32..5),
        wait,
        1u32..4,
        (1u64..12).prop_map(|k| k * 250),
    )
        .prop_filter_map(
            "invalid",
            |(window, fail, slow, slow_ms, min, consec, wait, probes, probe_ms)| {
                let min = match window {
                    SlidingWindow::Count(n) => min.min(n),
                    SlidingWindow::Time(_) => min,
                };
                let cfg = BreakerConfig {
                    window,
                    failure_rate_threshold: fail,
                    slow_call_rate_threshold: slow,
                    slow_call_duration: Duration::from_millis(slow_ms),
                    minimum_calls: min,
                    consecutive_failures: consec,
                    open_wait: wait,
                    max_probes: probes,
                    probe_timeout: Duration::from_millis(probe_ms),
                };
                cfg.validate().is_ok().then_some(cfg)
            },
        )
}

fn state_of(s: BreakerState) -> St {
    match s {
        BreakerState::Closed => St::Closed,
        BreakerState::Open => St::Open,
        BreakerState::HalfOpen => St::HalfOpen,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn breaker_matches_the_reference_model(cfg in config(), ops in prop::collection::vec(op(), 1..200)) {
        let clock = ManualClock::new();
        let breaker = CircuitBreaker::with_clock("model", cfg.clone(), Arc::new(clock.clone())).unwrap();
        let mut model = Model::new(cfg);
        let mut open: Vec<(BreakerPermit<'_>, MPermit)> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            let now = clock.elapsed().as_nanos() as u64;
            match op {
                Op::Acquire => {
                    let real = breaker.try_acquire();
                    let expected = model.acquire(now);
                    match (real, expected) {
                        (Ok(p), Ok(m)) => {
                            prop_assert_eq!(p.is_probe(), m.probe != 0, "step {}: probe", step);
                            open.push((p, m));
                        }
                        (Err(e), Err(retry)) => {
                            prop_assert_eq!(e.retry_after, Duration::from_nanos(retry), "step {}: retry_after", step);
                        }
                        (real, expected) => {
                            prop_assert!(false, "step {}: breaker {:?} vs model {:?}", step, real.map(|_| ()), expected.map(|_| ()));
                        }
                    }
                }
                Op::Record(i, outcome) if !open.is_empty() => {
                    let (p, m) = open.remove(i % open.len());
                    p.record(outcome);
                    model.record(m, outcome, now);
                }
                Op::Drop(i) if !open.is_empty() => {
                    let (p, m) = open.remove(i % open.len());
                    drop(p);
                    model.record(m, Outcome::Ignored, now);
                }
                Op::Record(..) | Op::Drop(_) => {}
                Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
            }
            prop_assert_eq!(state_of(breaker.state()), model.state, "step {}", step);
            if model.state == St::Closed {
                let now = clock.elapsed().as_nanos() as u64;
                prop_assert_eq!(breaker.snapshot().calls_in_window, model.window(now).len() as u64, "step {}: window", step);
            }
        }
    }
}
