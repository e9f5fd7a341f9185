//! `cargo xtask`: ironsift's project automation (checks before a push, benchmark reports).
//!
//! Run through the alias in `.cargo/config.toml` (`cargo xtask <command>`). Every sub-process is
//! started with `$CARGO` (the cargo that launched us, so toolchain overrides carry through) and
//! with the workspace root as its working directory, whatever folder the alias was run from.

mod bench;
mod bench_http;
mod bench_ingest;
mod bench_overhead;
mod corpus;
mod crash;
mod fuzz;
mod golden;
mod http;
mod json;
mod report;
mod server;
mod soak;
mod stress;
mod summary;
mod verify;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Errors are plain messages: every failure here ends the command with a line for a human.
pub(crate) type Result<T, E = String> = std::result::Result<T, E>;

const HELP: &str = "\
cargo xtask <command> [options]

Commands:
  verify                    fmt --check, clippy -D warnings, tests, fail-point tests
                            (search-core --features failpoints), docs with -D warnings, and
                            with CI=true or IRONSIFT_FUZZ_SECS=N a short fuzz run (N s per
                            target, default 10); stops at the first failure
  bench [--quick] [--data DIR] [--check] [--only PARTS] [-- CRITERION_ARGS...]
                            every benchmark against its baseline measured in the same run, as
                            one report, target/bench-report/report.{md,json}: a summary table
                            (ironsift, baseline, ratio, target, PASS/MISS per comparison), then
                            each part's details. Parts, in this order:
                              core      `cargo bench --bench core`: in-process indexing (MB/s)
                                        and search (QPS, p50/p99) vs plain Tantivy
                              ingest    bulk NDJSON over HTTP vs plain Tantivy indexing (MB/s),
                                        restart time with a full log (as bench-ingest)
                              http      search over HTTP under load vs plain Tantivy in-process
                                        (QPS, p50/p99, /readyz; as bench-http)
                              overhead  resilience breaker / rate limit / bulkhead vs a bare
                                        call (ns; targets: breaker < 50, rate limit < 30)
                            A part that fails (build error, server not starting) is reported
                            with its reason and the others still run; the exit status is 1.
      --quick               short form of each part: Documentation/ only and 2,000 queries
                            (core), 1 ingest run and 25,000 restart documents, 3 s loads,
                            0.5 s + 1 s per overhead function (2-3 minutes once built)
      --data DIR            corpus folder (default: $IRONSIFT_BENCH_DATA or target/bench-data),
                            fetched and prepared there if missing (Linux 6.1 from Debian)
      --check               exit with status 2 if any comparison misses its target
      --only PARTS          comma-separated subset of core,ingest,http,overhead
      -- CRITERION_ARGS     passed to the core bench (Criterion filters and flags)
  bench-http [--quick] [--data DIR]
                            the http part alone: build the release binary, index
                            DIR/linux-docs.jsonl, run `ironsift serve` and load it with
                            `ironsift bench-http` (closed loop, then open loop at half that
                            rate) against plain Tantivy in-process search from the same run;
                            write target/bench-report/http.{md,json}
      --quick               3 s load runs and 2,000 baseline queries
  bench-ingest [--quick] [--data DIR] [--runs N] [--restart-docs N]
                            the ingest part alone: bulk NDJSON ingest of DIR/linux-docs.jsonl
                            over HTTP with --durability request and async against plain Tantivy
                            in-process indexing (MB/s ratios, N runs each, default 2; 1 with
                            --quick), then the time to ready after SIGKILL with N un-committed
                            documents in the log (default 100,000; 25,000 with --quick); write
                            target/bench-report/ingest.{md,json}
  corpus [--data DIR]       only fetch/prepare the benchmark corpus
  crash [--rounds N] [--seed S]
                            the crash test in release (`cargo test --release --test crash`):
                            N rounds (default 300) of SIGKILL at random moments under writes;
                            prints rounds, operations acknowledged and lost
  fuzz [--secs N] [--target T]
                            build the cargo-fuzz targets in fuzz/ (installing cargo-fuzz if
                            missing) and run each for N seconds (default 60); exit 1 on a crash
                            and print the input's path. Targets: query, ndjson, wal_decode,
                            schema_json, http_router
  bless                     regenerate tests/golden/expected.json from the golden corpus (after
                            a change to ranking or parsing that is meant to change the results)
  report                    rewrite report.{md,json} from the latest core Criterion results
                            on disk (core part only, no run)
  stress <SCENARIO|all> [--quick] [--docs N] [-- BENCH_HTTP_ARGS...]
                            build the release binary, index a generated corpus (N docs, default
                            20,000; 5,000 with --quick), start `ironsift serve` on loopback and
                            run `ironsift bench-http --scenario SCENARIO` against it; reports in
                            target/stress-reports/. Scenarios: concurrency, sustained,
                            memory-pressure, exhaustion, scale, chaos (SIGKILL + restart)
      --quick               the short CI form of each scenario (seconds)
  soak [--minutes N] [--sample-secs S]
                            build the release binary, run `ironsift serve` on loopback under a
                            fixed mixed load (searches, upserts, deletes, commits, snapshots,
                            index create/delete cycles) for N minutes (default 10), sample RSS,
                            fds, /v1/admin/resources and segments every S s (default 5) into
                            target/soak/; exit 1 on growth after the 20 % warm-up
  help                      this text
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        None | Some("help" | "-h" | "--help") => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        Some("verify") if args.len() == 1 => verify::run(),
        Some("verify") => Err(format!("verify takes no arguments\n\n{HELP}")),
        Some("bench") => bench::run(&args[1..]),
        Some("bench-http") => bench_http::run(&args[1..]),
        Some("bench-ingest") => bench_ingest::run(&args[1..]),
        Some("corpus") => bench::corpus_only(&args[1..]),
        Some("crash") => crash::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("bless") if args.len() == 1 => golden::bless(),
        Some("bless") => Err(format!("bless takes no arguments\n\n{HELP}")),
        Some("report") if args.len() == 1 => bench::report_only(),
        Some("report") => Err(format!("report takes no arguments\n\n{HELP}")),
        Some("stress") => stress::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        Some(other) => Err(format!("unknown command {other:?}\n\n{HELP}")),
    };
    match outcome {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("xtask: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask lives one level below it.
pub(crate) fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
}

/// Cargo's target folder, honouring `CARGO_TARGET_DIR` like cargo itself.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => absolute(Path::new(&dir)),
        None => workspace_root().join("target"),
    }
}

/// `path` made absolute against the current directory (the folder `cargo xtask` ran in).
pub(crate) fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// A `cargo` command run from the workspace root, using the cargo that launched xtask.
pub(crate) fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args.into_iter().map(Into::into))
        .current_dir(workspace_root());
    cmd
}

/// Runs a command with inherited stdio; a non-zero exit or a failure to start is an error
/// naming the command.
pub(crate) fn run_status(cmd: &mut Command) -> Result<()> {
    let shown = show(cmd);
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}

/// The command line as a human would type it (for messages).
pub(crate) fn show(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Seconds with one decimal, or milliseconds for short steps.
pub(crate) fn fmt_duration(d: std::time::Duration) -> String {
    if d.as_secs_f64() < 1.0 {
        format!("{} ms", d.as_millis())
    } else if d.as_secs() < 120 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}
