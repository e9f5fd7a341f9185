//! `cargo xtask bench`: every benchmark of the project against its baseline from the same run
//! (plain Tantivy, or a bare call for the resilience primitives), as one report.
//!
//! Parts, in order: `core` (Criterion, `benches/core.rs`: in-process indexing and search),
//! `ingest` (bulk NDJSON over HTTP, `bench_ingest.rs`), `http` (search over HTTP under load,
//! `bench_http.rs`), `overhead` (Criterion, `crates/resilience/benches/overhead.rs`). Each part
//! runs even when an earlier one failed; the combined report (`summary.rs`) says which failed
//! and why.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use crate::summary::{self, Combined, Part};
use crate::{
    Result, absolute, bench_http, bench_ingest, bench_overhead, cargo, corpus, fmt_duration,
    report, run_status, show, target_dir,
};

/// A part of `cargo xtask bench`, as named by `--only`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PartKind {
    Core,
    Ingest,
    Http,
    Overhead,
}

impl PartKind {
    pub(crate) const ALL: [PartKind; 4] = [
        PartKind::Core,
        PartKind::Ingest,
        PartKind::Http,
        PartKind::Overhead,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            PartKind::Core => "core",
            PartKind::Ingest => "ingest",
            PartKind::Http => "http",
            PartKind::Overhead => "overhead",
        }
    }

    pub(crate) fn title(self) -> &'static str {
        match self {
            PartKind::Core => {
                "in-process indexing and search vs plain Tantivy (Criterion, benches/core.rs)"
            }
            PartKind::Ingest => {
                "bulk NDJSON ingest over HTTP vs plain Tantivy in-process indexing, and restart \
                 time"
            }
            PartKind::Http => "search over HTTP under load vs plain Tantivy in-process search",
            PartKind::Overhead => {
                "resilience primitives vs a bare call (Criterion, \
                 crates/resilience/benches/overhead.rs)"
            }
        }
    }

    fn parse(name: &str) -> Result<PartKind> {
        PartKind::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                format!("--only: unknown part {name:?} (parts: core, ingest, http, overhead)")
            })
    }
}

pub(crate) struct Options {
    pub(crate) quick: bool,
    pub(crate) data: PathBuf,
    pub(crate) check: bool,
    /// `--only a,b`: the parts to run, in the order of [`PartKind::ALL`]; `None` = all.
    pub(crate) only: Option<Vec<PartKind>>,
    /// Passed to the core bench binary after `--` (Criterion filters and flags).
    pub(crate) criterion_args: Vec<String>,
}

fn parse_only(list: &str) -> Result<Vec<PartKind>> {
    let named = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(PartKind::parse)
        .collect::<Result<Vec<_>>>()?;
    if named.is_empty() {
        return Err("--only needs at least one part (core, ingest, http, overhead)".into());
    }
    Ok(PartKind::ALL
        .into_iter()
        .filter(|p| named.contains(p))
        .collect())
}

pub(crate) fn parse_args(args: &[String]) -> Result<Options> {
    let env_quick = std::env::var("IRONSIFT_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut quick = env_quick;
    let mut check = false;
    let mut data = None;
    let mut only = None;
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
            "--only" => {
                let list = it.next().ok_or("--only needs a list of parts")?;
                only = Some(parse_only(list)?);
            }
            "--" => {
                criterion_args.extend(it.by_ref().cloned());
            }
            a if a.starts_with("--data=") => data = Some(PathBuf::from(&a["--data=".len()..])),
            a if a.starts_with("--only=") => only = Some(parse_only(&a["--only=".len()..])?),
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
        only,
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
    if opts.quick || opts.check || opts.only.is_some() || !opts.criterion_args.is_empty() {
        return Err("corpus only takes --data DIR".into());
    }
    corpus::ensure(&opts.data)?;
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask report`: the core part's report rebuilt from whatever Criterion results are on
/// disk (e.g. after running `cargo bench --bench core` by hand), as the combined report.
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
    let combined = Combined {
        mode: "latest",
        parts: vec![rep.part(None)],
        took: std::time::Duration::ZERO,
        machine: summary::machine(),
    };
    let (md_path, json_path) = combined.write(&report_dir)?;
    println!("{}", combined.markdown());
    println!("report: {} and {}", md_path.display(), json_path.display());
    Ok(ExitCode::SUCCESS)
}

/// Builds the release binary (`cargo build --release --bin ironsift`); its path.
pub(crate) fn release_binary() -> Result<PathBuf> {
    let mut build = cargo(["build", "--release", "--bin", "ironsift"]);
    println!("==> {}", show(&build));
    run_status(&mut build)?;
    Ok(target_dir().join("release/ironsift"))
}

/// The core part: `cargo bench --bench core` with the corpus in `data`, then its results.
fn core_part(opts: &Options, report_dir: &Path, mode: &'static str) -> Part {
    let criterion_home = target_dir().join("criterion");
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
    println!("==> bench ({mode}): {}", show(&cmd));
    // Results older than this belong to an earlier run and are reported as missing.
    let since = SystemTime::now();
    let t = Instant::now();
    let result = run_status(&mut cmd);
    let rep = report::build(&criterion_home, &notes, since, mode, t.elapsed());
    rep.part(result.err())
}

/// The commit measured, and whether the working tree differed from it.
fn source_version() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(crate::workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        None => "unknown commit".into(),
        Some(commit) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => {
                format!("commit {commit} with uncommitted changes")
            }
            _ => format!("commit {commit}"),
        },
    }
}

/// The message of a panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let opts = parse_args(args)?;
    let kinds = opts.only.clone().unwrap_or(PartKind::ALL.to_vec());
    if !opts.criterion_args.is_empty() && !kinds.contains(&PartKind::Core) {
        return Err("Criterion arguments after `--` are for the core part, not selected".into());
    }
    let started = Instant::now();
    let mode = if opts.quick { "quick" } else { "full" };
    let machine_before = summary::machine();

    let report_dir = target_dir().join("bench-report");
    std::fs::create_dir_all(&report_dir)
        .map_err(|e| format!("cannot create {}: {e}", report_dir.display()))?;
    let _lock = RunLock::acquire(&report_dir.join(".lock"))?;

    // Steps several parts share, each done once and only if a selected part needs it.
    let mut corpus_ready: Option<Result<()>> = None;
    let mut binary: Option<Result<PathBuf>> = None;
    let mut parts = Vec::new();
    for kind in kinds {
        println!("\n==== bench part `{}`: {}", kind.name(), kind.title());
        let t = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<Part> {
            if kind != PartKind::Overhead {
                corpus_ready
                    .get_or_insert_with(|| corpus::ensure(&opts.data))
                    .clone()
                    .map_err(|e| format!("corpus: {e}"))?;
            }
            let mut bin = || {
                binary
                    .get_or_insert_with(release_binary)
                    .clone()
                    .map_err(|e| format!("release build: {e}"))
            };
            match kind {
                PartKind::Core => Ok(core_part(&opts, &report_dir, mode)),
                PartKind::Ingest => {
                    let settings = bench_ingest::Settings::new(opts.quick);
                    bench_ingest::part(&bin()?, &opts.data, &settings, &report_dir)
                }
                PartKind::Http => bench_http::part(&bin()?, &opts.data, opts.quick, &report_dir),
                PartKind::Overhead => Ok(bench_overhead::part(opts.quick)),
            }
        }));
        let mut part = match outcome {
            Ok(Ok(part)) => part,
            Ok(Err(why)) => Part::failed(kind.name(), kind.title(), why),
            Err(payload) => Part::failed(
                kind.name(),
                kind.title(),
                format!("panicked: {}", panic_text(payload.as_ref())),
            ),
        };
        part.took = t.elapsed();
        match &part.failure {
            Some(why) => eprintln!(
                "xtask: bench part `{}` failed after {}: {why}",
                part.name,
                fmt_duration(part.took)
            ),
            None => println!(
                "bench part `{}` done in {}",
                part.name,
                fmt_duration(part.took)
            ),
        }
        parts.push(part);
    }

    let combined = Combined {
        mode,
        parts,
        took: started.elapsed(),
        machine: format!(
            "Code: {}. Machine: {machine_before} at the start; {} at the end.",
            source_version(),
            summary::machine()
                .split_once("load average ")
                .map_or("?", |(_, l)| l)
        ),
    };
    let (md_path, json_path) = combined.write(&report_dir)?;
    println!("\n{}", combined.summary_table());
    println!(
        "report: {} and {} (total {})",
        md_path.display(),
        json_path.display(),
        fmt_duration(started.elapsed())
    );
    let code = combined.exit_code(opts.check);
    if !combined.failed_parts().is_empty() {
        eprintln!(
            "xtask: bench: part(s) failed: {}",
            combined
                .failed_parts()
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else if code == ExitCode::from(2) {
        eprintln!("xtask: some comparisons missed their target (--check)");
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_selects_parts_in_run_order() {
        let o = parse_args(&args(&["--only", "overhead,core", "--quick"])).unwrap();
        assert_eq!(o.only, Some(vec![PartKind::Core, PartKind::Overhead]));
        assert!(o.quick);
        let o = parse_args(&args(&["--only=http"])).unwrap();
        assert_eq!(o.only, Some(vec![PartKind::Http]));
        assert!(parse_args(&args(&["--only", "disk"])).is_err());
        assert!(parse_args(&args(&["--only", ","])).is_err());
        let o = parse_args(&args(&["--check", "--", "search"])).unwrap();
        assert_eq!(o.only, None);
        assert_eq!(o.criterion_args, vec!["search".to_string()]);
    }
}
