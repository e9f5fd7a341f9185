//! `cargo xtask verify`: the checks a change must pass, in the order that fails fastest.
//!
//! Formatting is checked first because it takes a second; docs last because they rebuild
//! everything under rustdoc. The first failure stops the run: later steps would mostly repeat
//! the same compile error.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use crate::{Result, cargo, fmt_duration, show};

struct Step {
    name: &'static str,
    cmd: Command,
}

fn steps() -> Vec<Step> {
    let mut doc = cargo(["doc", "--workspace", "--no-deps"]);
    // Keep flags the user already set (e.g. --cfg docsrs), and deny warnings on top.
    let flags = match std::env::var("RUSTDOCFLAGS") {
        Ok(existing) if !existing.trim().is_empty() => format!("{existing} -D warnings"),
        _ => "-D warnings".to_string(),
    };
    doc.env("RUSTDOCFLAGS", flags);
    let mut steps = vec![
        Step {
            name: "fmt",
            cmd: cargo(["fmt", "--all", "--", "--check"]),
        },
        Step {
            name: "clippy",
            cmd: cargo([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        },
        Step {
            name: "test",
            cmd: cargo(["test", "--workspace", "--no-fail-fast"]),
        },
        // Fail-point tests need the `failpoints` feature (off in the plain build, so `test`
        // skips them) and run in their own binary (fail-point state is process-global).
        Step {
            name: "failpoints",
            cmd: cargo([
                "test",
                "--package",
                "search-core",
                "--features",
                "failpoints",
                "--test",
                "failpoints",
            ]),
        },
        Step {
            name: "doc",
            cmd: doc,
        },
    ];
    if let Some(secs) = fuzz_secs() {
        steps.push(Step {
            name: "fuzz",
            cmd: fuzz_step(secs),
        });
    }
    steps
}

/// Seconds per fuzz target in `verify`: `IRONSIFT_FUZZ_SECS`, else 10 under CI, else no fuzzing
/// (the build of the instrumented targets takes minutes).
fn fuzz_secs() -> Option<u64> {
    match std::env::var("IRONSIFT_FUZZ_SECS") {
        Ok(v) => v.trim().parse().ok().filter(|s| *s > 0),
        Err(_) => (std::env::var("CI").as_deref() == Ok("true")).then_some(10),
    }
}

/// `cargo xtask fuzz --secs N`, run by this same xtask binary.
fn fuzz_step(secs: u64) -> Command {
    let mut cmd = match std::env::current_exe() {
        Ok(exe) => Command::new(exe),
        Err(_) => cargo(["run", "--quiet", "--package", "xtask", "--"]),
    };
    cmd.args(["fuzz", "--secs", &secs.to_string()])
        .current_dir(crate::workspace_root());
    cmd
}

enum Outcome {
    Passed(Duration),
    Failed(Duration, String),
    Skipped,
}

pub(crate) fn run() -> Result<ExitCode> {
    let mut steps = steps();
    steps.extend(stress_step());
    let total = steps.len();
    let mut outcomes = Vec::with_capacity(total);
    let started = Instant::now();
    let mut failed = false;
    for (i, step) in steps.iter_mut().enumerate() {
        if failed {
            outcomes.push(Outcome::Skipped);
            continue;
        }
        println!("==> [{}/{total}] {}: {}", i + 1, step.name, show(&step.cmd));
        let t = Instant::now();
        let result = crate::run_status(&mut step.cmd);
        let took = t.elapsed();
        match result {
            Ok(()) => {
                println!("<== {} passed in {}", step.name, fmt_duration(took));
                outcomes.push(Outcome::Passed(took));
            }
            Err(msg) => {
                println!("<== {} FAILED in {}", step.name, fmt_duration(took));
                outcomes.push(Outcome::Failed(took, msg));
                failed = true;
            }
        }
    }

    println!("\nverify summary:");
    for (step, outcome) in steps.iter().zip(&outcomes) {
        let line = match outcome {
            Outcome::Passed(d) => format!("passed   {:>9}", fmt_duration(*d)),
            Outcome::Failed(d, msg) => format!("FAILED   {:>9}  {msg}", fmt_duration(*d)),
            Outcome::Skipped => "skipped".to_string(),
        };
        println!("  {:<10} {line}", step.name);
    }
    let verdict = if failed { "FAILED" } else { "passed" };
    println!("verify {verdict} in {}", fmt_duration(started.elapsed()));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The short form of every stress scenario (`cargo xtask stress all --quick`, a release build
/// and about two minutes), only with `CI=true` or `IRONSIFT_STRESS=1`.
fn stress_step() -> Option<Step> {
    let on = std::env::var("CI").as_deref() == Ok("true")
        || std::env::var("IRONSIFT_STRESS").as_deref() == Ok("1");
    let exe = std::env::current_exe().ok().filter(|_| on)?;
    let mut cmd = Command::new(exe);
    cmd.args(["stress", "all", "--quick"])
        .current_dir(crate::workspace_root());
    Some(Step {
        name: "stress",
        cmd,
    })
}
