//! The `overhead` part of `cargo xtask bench`: what each resilience primitive adds to a call on
//! its fast path, from the Criterion bench `crates/resilience/benches/overhead.rs`, against the
//! bare call measured in the same run.
//!
//! That bench names its functions at the top level (`c.bench_function`, no group), so Criterion
//! writes `<CRITERION_HOME>/<function>/new/estimates.json`. The overhead is the difference of
//! the medians, in nanoseconds.

use std::fmt::Write as _;
use std::time::{Instant, SystemTime};

use crate::json::Json;
use crate::summary::{self, Target, Unit};
use crate::{Result, bench, cargo, report, run_status, show, target_dir};

/// The protected call alone.
const BARE: &str = "bare_call";

/// A function of the bench, compared with [`BARE`].
struct Primitive {
    function: &'static str,
    what: &'static str,
    /// Most nanoseconds the primitive may add to a call.
    max_overhead_ns: Option<f64>,
}

/// The contract with `crates/resilience/benches/overhead.rs`: its function names.
const PRIMITIVES: &[Primitive] = &[
    // The server's breakers have no slow-call rule: this is the path every search takes.
    Primitive {
        function: "breaker_closed_acquire_record",
        what: "circuit breaker, closed state: acquire + record around the call",
        max_overhead_ns: Some(50.0),
    },
    Primitive {
        function: "breaker_closed_acquire_record_slow_call_rule",
        what: "circuit breaker, closed state, with the slow-call rule (reads the clock twice)",
        max_overhead_ns: None,
    },
    Primitive {
        function: "ratelimit_check_single_key",
        what: "rate-limit check, one key",
        max_overhead_ns: Some(30.0),
    },
    Primitive {
        function: "ratelimit_check_1k_keys",
        what: "rate-limit check, 1,000 keys in turn",
        max_overhead_ns: None,
    },
    Primitive {
        function: "governor_dashmap_check_single_key",
        what: "for comparison: governor's own keyed limiter (DashMap), one key",
        max_overhead_ns: None,
    },
    Primitive {
        function: "governor_dashmap_check_1k_keys",
        what: "for comparison: governor's own keyed limiter (DashMap), 1,000 keys",
        max_overhead_ns: None,
    },
    Primitive {
        function: "bulkhead_acquire_release",
        what: "bulkhead: acquire + release around the call",
        max_overhead_ns: None,
    },
];

/// Criterion's time per phase (seconds): warm-up, measurement.
fn times(quick: bool) -> (&'static str, &'static str) {
    if quick { ("0.5", "1") } else { ("1", "3") }
}

/// Runs the bench and reads its medians; a failed run still reports what it wrote.
pub(crate) fn part(quick: bool) -> summary::Part {
    let criterion_home = target_dir().join("criterion");
    let (warm_up, measure) = times(quick);
    let mut cmd = cargo(["bench", "-p", "resilience", "--bench", "overhead", "--"]);
    cmd.args(["--warm-up-time", warm_up, "--measurement-time", measure])
        .env("CRITERION_HOME", &criterion_home);
    println!("==> {}", show(&cmd));
    let load = summary::machine();
    let since = SystemTime::now();
    let t = Instant::now();
    let result = run_status(&mut cmd);
    let took = t.elapsed();

    let median = |f: &str| report::read_median_ns(&criterion_home, f, since);
    let bare = median(BARE);
    let measured: Vec<(&Primitive, Result<f64>)> =
        PRIMITIVES.iter().map(|p| (p, median(p.function))).collect();

    let mut rows = Vec::new();
    for (p, ns) in &measured {
        let mut row = summary::Row::new(
            format!("{} (`{}` vs `{BARE}`)", p.what, p.function),
            Unit::Nanos,
            ns.as_ref().ok().copied(),
            bare.as_ref().ok().copied(),
            "bare call",
            p.max_overhead_ns.map(Target::OverheadBelow),
        );
        if let Some(why) = [ns.as_ref().err(), bare.as_ref().err()]
            .into_iter()
            .flatten()
            .next()
        {
            row.verdict = summary::Verdict::Missing(why.clone());
        }
        rows.push(row);
    }

    let mut md = String::from(
        "| function | median | overhead vs bare call | target |\n|---|---:|---:|---|\n",
    );
    let show_ns = |r: &Result<f64>| match r {
        Ok(ns) => format!("{ns:.2} ns"),
        Err(why) => format!("— ({why})"),
    };
    let _ = writeln!(md, "| `{BARE}` | {} | — | — |", show_ns(&bare));
    for (p, ns) in &measured {
        let overhead = match (ns, &bare) {
            (Ok(n), Ok(b)) => format!("{:+.2} ns", n - b),
            _ => "—".into(),
        };
        let target = p
            .max_overhead_ns
            .map_or("—".into(), |t| format!("< {t:.0} ns"));
        let _ = writeln!(
            md,
            "| `{}` | {} | {overhead} | {target} |",
            p.function,
            show_ns(ns)
        );
    }
    let _ = writeln!(
        md,
        "\nCriterion medians per call (warm-up {warm_up} s, measurement {measure} s per \
         function; `cargo bench -p resilience --bench overhead`), one thread, {load} before the \
         run. The limiter's quota never rejects here, so the admit path is what is measured."
    );

    let num = |r: &Result<f64>| r.as_ref().map_or(Json::Null, |v| Json::Num(*v));
    let json = Json::Obj(vec![
        ("bench_seconds".into(), Json::Num(took.as_secs_f64())),
        ("warm_up_s".into(), Json::Str(warm_up.into())),
        ("measurement_s".into(), Json::Str(measure.into())),
        ("bare_call_ns".into(), num(&bare)),
        (
            "median_ns".into(),
            Json::Obj(
                measured
                    .iter()
                    .map(|(p, ns)| (p.function.to_string(), num(ns)))
                    .collect(),
            ),
        ),
    ]);
    summary::Part {
        name: "overhead",
        title: bench::PartKind::Overhead.title(),
        took,
        rows,
        details: md,
        json,
        failure: result.err(),
    }
}
