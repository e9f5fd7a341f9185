//! `cargo xtask bench`: prepare the corpus, run the Criterion benchmarks, write the report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use crate::{Result, absolute, cargo, corpus, fmt_duration, report, run_status, show, target_dir};

pub(crate) struct Options {
    pub(crate) quick: bool,
    pub(crate) data: PathBuf,
    pub(crate) check: bool,
    /// Passed to the bench binary after `--` (Criterion filters and flags).
    pub(crate) criterion_args: Vec<String>,
}

pub(crate) fn parse_args(args: &[String]) -> Result<Options> {
    let env_quick = std::env::var("IRONSIFT_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut quick = env_quick;
    let mut check = false;
    let mut data = None;
    let mut criterion_args = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--check" => check = true,
            "--data" => {
                let dir = it.next().ok_or("--data needs a folder")?;
                data = Some(PathBuf::from(dir));
            }
            "--" => {
                criterion_args.extend(it.by_ref().cloned());
            }
            a if a.starts_with("--data=") => data = Some(PathBuf::from(&a["--data=".len()..])),
            other => {
                return Err(format!(
                    "bench: unknown option {other:?} (see `cargo xtask help`)"
                ));
            }
        }
    }
    let data = match data {
        Some(d) => absolute(&d),
        None => match std::env::var_os("IRONSIFT_BENCH_DATA") {
            Some(d) if !d.is_empty() => absolute(PathBuf::from(d).as_path()),
            _ => crate::workspace_root().join("target/bench-data"),
        },
    };
    Ok(Options {
        quick,
        data,
        check,
        criterion_args,
    })
}

/// Keeps two `cargo xtask bench` runs apart: they would share Criterion's result folder and
/// the notes file, and each would slow the other down. A lock left by a dead process is taken
/// over (checked through /proc where it exists).
pub(crate) struct RunLock(PathBuf);

impl RunLock {
    pub(crate) fn acquire(path: &std::path::Path) -> Result<RunLock> {
        use std::io::Write as _;
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(RunLock(path.to_path_buf()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = std::fs::read_to_string(path).unwrap_or_default();
                    let pid = pid.trim();
                    let proc = std::path::Path::new("/proc");
                    let alive = proc.is_dir() && !pid.is_empty() && proc.join(pid).exists();
                    if alive {
                        return Err(format!(
                            "another `cargo xtask bench` (pid {pid}) is running; wait for it \
                             (or delete {} if that is wrong)",
                            path.display()
                        ));
                    }
                    let _ = std::fs::remove_file(path);
                }
                Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
            }
        }
        Err(format!("cannot take {}", path.display()))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `cargo xtask corpus`: the first step of `bench` alone (e.g. to fetch data ahead of time).
pub(crate) fn corpus_only(args: &[String]) -> Result<ExitCode> {
    let opts = parse_args(args)?;
    if opts.quick || opts.check || !opts.criterion_args.is_empty() {
        return Err("corpus only takes --data DIR".into());
    }
    corpus::ensure(&opts.data)?;
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask report`: the last step of `bench` alone, over whatever results are on disk
/// (e.g. after running `cargo bench --bench core` by hand).
pub(crate) fn report_only() -> Result<ExitCode> {
    let target = target_dir();
    let report_dir = target.join("bench-report");
    std::fs::create_dir_all(&report_dir)
        .map_err(|e| format!("cannot create {}: {e}", report_dir.display()))?;
    let rep = report::build(
        &target.join("criterion"),
        &report_dir.join("notes.json"),
        SystemTime::UNIX_EPOCH,
        "latest",
        std::time::Duration::ZERO,
    );
    let (md_path, json_path) = report::write(&rep, &report_dir)?;
    println!("{}", rep.markdown());
    println!("report: {} and {}", md_path.display(), json_path.display());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let opts = parse_args(args)?;
    let started_all = Instant::now();
    corpus::ensure(&opts.data)?;

    let target = target_dir();
    let criterion_home = target.join("criterion");
    let report_dir = target.join("bench-report");
    std::fs::create_dir_all(&report_dir)
        .map_err(|e| format!("cannot create {}: {e}", report_dir.display()))?;
    let _lock = RunLock::acquire(&report_dir.join(".lock"))?;
    let notes = report_dir.join("notes.json");
    // Notes from an earlier run must not pass for this run's.
    let _ = std::fs::remove_file(&notes);

    let mut cmd = cargo(["bench", "-p", "ironsift", "--bench", "core"]);
    if !opts.criterion_args.is_empty() {
        cmd.arg("--").args(&opts.criterion_args);
    }
    cmd.env("IRONSIFT_BENCH_DATA", &opts.data)
        .env("IRONSIFT_BENCH_NOTES", &notes)
        // Pin Criterion's output folder: it otherwise asks `cargo metadata`, and the report must
        // read exactly where the benchmarks wrote.
        .env("CRITERION_HOME", &criterion_home);
    if opts.quick {
        cmd.env("IRONSIFT_BENCH_QUICK", "1");
    } else {
        cmd.env_remove("IRONSIFT_BENCH_QUICK");
    }
    let mode = if opts.quick { "quick" } else { "full" };
    println!("==> bench ({mode}): {}", show(&cmd));
    // Results older than this belong to an earlier run and are reported as missing.
    let since = SystemTime::now();
    let t = Instant::now();
    let bench_result = run_status(&mut cmd);
    let bench_time = t.elapsed();

    let rep = report::build(&criterion_home, &notes, since, mode, bench_time);
    let (md_path, json_path) = report::write(&rep, &report_dir)?;
    println!("\n{}", rep.markdown());
    println!(
        "report: {} and {} (bench {}, total {})",
        md_path.display(),
        json_path.display(),
        fmt_duration(bench_time),
        fmt_duration(started_all.elapsed())
    );
    bench_result?;
    if opts.check && !rep.all_targets_met() {
        eprintln!("xtask: some comparisons missed their target (--check)");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
