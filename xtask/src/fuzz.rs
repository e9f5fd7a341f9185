//! `cargo xtask fuzz`: builds the cargo-fuzz targets in `fuzz/` once and runs each for a while.
//!
//! cargo-fuzz needs nightly compiler flags; `RUSTC_BOOTSTRAP=1` unlocks them on the stable
//! toolchain, so no second toolchain is needed (and the fuzzed code is compiled by the same
//! compiler as everything else). Builds go to `fuzz/target` whatever `CARGO_TARGET_DIR` says:
//! instrumented artifacts must not mix with the workspace's.
//!
//! Each target starts from the committed seeds (`fuzz/seeds/<target>/`) and the saved crashes
//! (`fuzz/regressions/<target>/`, which must no longer crash) and grows its own corpus in
//! `fuzz/corpus/<target>/` (not committed). A crash, timeout or out-of-memory input is written
//! to `fuzz/artifacts/<target>/`; the run goes on with the other targets and fails at the end.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use crate::{Result, cargo, fmt_duration, show, workspace_root};

/// The targets, in the order they run.
pub(crate) const TARGETS: [&str; 5] = [
    "query",
    "ndjson",
    "wal_decode",
    "schema_json",
    "http_router",
];

const DEFAULT_SECS: u64 = 60;

struct Options {
    secs: u64,
    targets: Vec<&'static str>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut opts = Options {
        secs: DEFAULT_SECS,
        targets: TARGETS.to_vec(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--secs" => {
                let v = it.next().ok_or("--secs needs a number of seconds")?;
                opts.secs = v
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("--secs: {v:?} is not a positive number"))?;
            }
            "--target" => {
                let v = it.next().ok_or("--target needs a target name")?;
                let t = TARGETS.iter().find(|t| *t == v).ok_or_else(|| {
                    format!("unknown fuzz target {v:?}; targets: {}", TARGETS.join(", "))
                })?;
                opts.targets = vec![t];
            }
            other => return Err(format!("fuzz: unknown option {other:?}")),
        }
    }
    Ok(opts)
}

/// What one target's run came to.
struct Run {
    target: &'static str,
    secs: f64,
    execs: Option<u64>,
    corpus: Option<u64>,
    artifact: Option<String>,
    panic: Vec<String>,
    log: PathBuf,
}

pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let opts = parse(args)?;
    let root = workspace_root();
    let fuzz = root.join("fuzz");
    ensure_cargo_fuzz()?;
    // The fuzz workspace locks the same versions as the main one.
    let lock = fuzz.join("Cargo.lock");
    if !lock.exists() {
        fs::copy(root.join("Cargo.lock"), &lock)
            .map_err(|e| format!("cannot seed {}: {e}", lock.display()))?;
    }
    let triple = host_triple()?;
    let target_dir = fuzz.join("target");

    let mut build = fuzz_cmd();
    // No `--debug-assertions`: it applies to every crate, and one of Tantivy's internal
    // assertions fires on queries its release build handles (an exclusion of a phrase that
    // matches nothing). We fuzz what ships; our crates' tests keep their assertions.
    build.args(["build", "-O", "--sanitizer", "none"]);
    // Parallel codegen: builds in minutes on two cores, at a small cost in executions.
    build.args(["--codegen-units", "16", "--target", &triple, "--target-dir"]);
    build.arg(&target_dir);
    println!("==> building fuzz targets: {}", show(&build));
    let t = Instant::now();
    crate::run_status(&mut build)?;
    println!("<== built in {}", fmt_duration(t.elapsed()));

    let bin_dir = target_dir.join(&triple).join("release");
    let mut runs = Vec::new();
    for target in &opts.targets {
        runs.push(run_target(target, opts.secs, &bin_dir, &fuzz)?);
    }

    println!("\nfuzz summary ({} s per target):", opts.secs);
    println!(
        "  {:<12} {:>7} {:>12} {:>9} {:>7}  result",
        "target", "secs", "execs", "exec/s", "corpus"
    );
    let mut crashed = 0;
    for r in &runs {
        let execs = r.execs.map_or("?".to_string(), |n| n.to_string());
        let rate = r.execs.map_or("?".to_string(), |n| {
            format!("{:.0}", n as f64 / r.secs.max(0.001))
        });
        let corpus = r.corpus.map_or("?".to_string(), |n| n.to_string());
        let result = match &r.artifact {
            None => "ok".to_string(),
            Some(a) => {
                crashed += 1;
                format!("CRASHED: {a}")
            }
        };
        println!(
            "  {:<12} {:>7.1} {:>12} {:>9} {:>7}  {result}",
            r.target, r.secs, execs, rate, corpus
        );
    }
    for r in runs.iter().filter(|r| r.artifact.is_some()) {
        let artifact = r.artifact.as_deref().unwrap_or_default();
        println!("\n{} crashed; input: {artifact}", r.target);
        for line in &r.panic {
            println!("    {line}");
        }
        println!(
            "  full log: {}\n  reproduce: {} {artifact}\n  keep it as a regression test: cp {artifact} fuzz/regressions/{}/",
            r.log.display(),
            bin_dir.join(r.target).display(),
            r.target
        );
    }
    if crashed > 0 {
        println!("\nfuzz FAILED: {crashed} of {} targets crashed", runs.len());
        Ok(ExitCode::FAILURE)
    } else {
        println!("\nfuzz passed: no crash in {} targets", runs.len());
        Ok(ExitCode::SUCCESS)
    }
}

/// `cargo fuzz ...` from the workspace root, nightly flags unlocked, `CARGO_TARGET_DIR` ignored.
fn fuzz_cmd() -> Command {
    let mut cmd = cargo(["fuzz"]);
    cmd.env("RUSTC_BOOTSTRAP", "1")
        .env_remove("CARGO_TARGET_DIR");
    cmd
}

/// Installs cargo-fuzz when `cargo fuzz` is not there (a fresh CI machine).
fn ensure_cargo_fuzz() -> Result<()> {
    let present = fuzz_cmd()
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    println!("==> cargo-fuzz is not installed: installing it (cargo install cargo-fuzz --locked)");
    let mut install = cargo(["install", "cargo-fuzz", "--locked"]);
    // Its own build folder: the workspace's target dir is not the place for an installed tool.
    install.env(
        "CARGO_TARGET_DIR",
        crate::target_dir().join("cargo-fuzz-install"),
    );
    crate::run_status(&mut install)
}

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("cannot run rustc -vV: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|s| s.trim().to_string())
        .ok_or_else(|| "rustc -vV printed no host triple".to_string())
}

fn run_target(target: &'static str, secs: u64, bin_dir: &Path, fuzz: &Path) -> Result<Run> {
    let corpus = fuzz.join("corpus").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    for dir in [&corpus, &artifacts] {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let log = artifacts.join("last-run.log");
    let log_file =
        fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let mut cmd = Command::new(bin_dir.join(target));
    cmd.current_dir(fuzz)
        .arg(format!("-max_total_time={secs}"))
        // A single input that takes 30 s is a hang, not a slow query.
        .arg("-timeout=30")
        .arg("-rss_limit_mb=4096")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&corpus);
    for extra in [
        fuzz.join("seeds").join(target),
        fuzz.join("regressions").join(target),
    ] {
        if extra.is_dir() {
            cmd.arg(extra);
        }
    }
    cmd.stdout(Stdio::null()).stderr(log_file);
    println!("==> fuzz {target} for {secs} s: {}", show(&cmd));
    let t = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", show(&cmd)))?;
    let took = t.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log).unwrap_or_default();
    let mut run = parse_log(target, &text);
    run.secs = took;
    run.log = log;
    if !status.success() && run.artifact.is_none() {
        // Died without saying where its input went (killed, or the harness failed to start).
        run.artifact = Some(format!("(none written; exit {status})"));
        run.panic = text.lines().rev().take(15).map(str::to_string).collect();
        run.panic.reverse();
    }
    let verdict = if run.artifact.is_some() {
        "CRASHED"
    } else {
        "ok"
    };
    println!(
        "<== {target}: {verdict}, {} execs in {took:.1} s",
        run.execs.map_or("?".to_string(), |n| n.to_string())
    );
    Ok(run)
}

/// Reads libFuzzer's output: executions, corpus size, the artifact and the panic message.
fn parse_log(target: &'static str, text: &str) -> Run {
    let mut run = Run {
        target,
        secs: 0.0,
        execs: None,
        corpus: None,
        artifact: None,
        panic: Vec::new(),
        log: PathBuf::new(),
    };
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            run.execs = n.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix("Done ") {
            // "Done 1234 runs in 10 second(s)"
            if let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok()) {
                run.execs = Some(n);
            }
        } else if line.starts_with('#') {
            // Status lines: "#4096	pulse  cov: 812 ft: 1503 corp: 97/2Kb ..."
            let mut words = line.split_whitespace();
            if let Some(n) = words.next().and_then(|w| w[1..].parse::<u64>().ok())
                && run.execs.is_none_or(|e| e < n)
            {
                run.execs = Some(n);
            }
            if let Some(c) = line
                .split("corp: ")
                .nth(1)
                .and_then(|s| s.split('/').next())
            {
                run.corpus = c.parse().ok();
            }
        }
        if let Some((_, path)) = line.split_once("Test unit written to ") {
            run.artifact = Some(path.trim().to_string());
        }
        if line.contains("panicked at") && run.panic.is_empty() {
            run.panic = lines[i..]
                .iter()
                .take_while(|l| !l.starts_with("stack backtrace") && !l.starts_with("note:"))
                .take(12)
                .map(|l| l.to_string())
                .collect();
        }
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_output() {
        let ok = "#2\tINITED cov: 10 ft: 11 corp: 5/100b exec/s: 0\n#4096\tpulse  cov: 20 ft: 30 \
                  corp: 9/1Kb exec/s: 2048\nDone 5000 runs in 2 second(s)\nstat::number_of_executed_units: 5001\n";
        let r = parse_log("query", ok);
        assert_eq!((r.execs, r.corpus, r.artifact), (Some(5001), Some(9), None));

        let crash = "#7\tNEW cov: 3 ft: 3 corp: 4/9b\nthread '<unnamed>' panicked at src/a.rs:1:2:\n\
                     boom\nstack backtrace:\n==1== ERROR: libFuzzer: deadly signal\n\
                     artifact_prefix='a/'; Test unit written to a/crash-12\n";
        let r = parse_log("query", crash);
        assert_eq!(r.artifact.as_deref(), Some("a/crash-12"));
        assert_eq!(
            r.panic,
            ["thread '<unnamed>' panicked at src/a.rs:1:2:", "boom"]
        );
        assert_eq!(r.execs, Some(7));
    }

    #[test]
    fn options() {
        let o = parse(&[
            "--secs".into(),
            "5".into(),
            "--target".into(),
            "ndjson".into(),
        ])
        .unwrap();
        assert_eq!((o.secs, o.targets), (5, vec!["ndjson"]));
        assert!(parse(&["--target".into(), "nope".into()]).is_err());
        assert!(parse(&["--secs".into(), "0".into()]).is_err());
    }
}
