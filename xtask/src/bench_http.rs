//! `cargo xtask bench-http`: the HTTP service under load, against plain Tantivy in-process
//! search measured in the same run, as `target/bench-report/http.{md,json}`.
//!
//! Steps: build the release binary; index `linux-docs.jsonl` into a fresh data folder with an
//! explicit schema (the fields plain Tantivy indexes); run the Criterion function
//! `search/plain_tantivy_top10` for the in-process baseline; start `ironsift serve` on a free
//! port; load it with `ironsift bench-http` in closed loop, then in open loop at half the
//! closed-loop rate; stop it with SIGTERM and check it exits 0.
//!
//! `cargo xtask bench` runs the same steps as its `http` part ([`part`]).

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::json::{self, Json};
use crate::summary::{self, Target, Unit};
use crate::{Result, bench, cargo, corpus, fmt_duration, report, run_status, show, target_dir};

const INDEX: &str = "docs";
const SCHEMA: &str = r#"{"fields":[{"name":"title","type":"text"},{"name":"text","type":"text"}]}"#;
const QUERIES: &str = "benches/data/queries-web-50k.txt";
const CONNECTIONS: &str = "64";
const CLIENT_THREADS: &str = "2";

/// Targets.
const MIN_QPS_RATIO: f64 = 0.6;
const MAX_P99_US: f64 = 5_000.0;
const MAX_PROBE_P99_US: f64 = 1_000.0;

/// The server child: killed (SIGKILL) and reaped when dropped unless it already exited, so an
/// error at any step never leaves it running.
struct ServerGuard {
    child: Child,
    exited: Option<ExitStatus>,
}

impl ServerGuard {
    fn alive(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited.is_none()
    }

    /// SIGTERM, then wait up to `limit`; SIGKILL if it is still running. Returns the exit
    /// status, or `None` if it had to be killed.
    fn terminate(&mut self, limit: Duration) -> Result<Option<ExitStatus>> {
        if !self.alive() {
            return Ok(self.exited);
        }
        run_status(Command::new("kill").args(["-s", "TERM", &self.child.id().to_string()]))?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !self.alive() {
                return Ok(self.exited);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "bench-http: server did not exit within {}; killing it",
            fmt_duration(limit)
        );
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
        Ok(None)
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` with stdout captured (stderr inherited), killing it if it outlasts `limit`.
fn capture_bounded(cmd: &mut Command, limit: Duration) -> Result<String> {
    let shown = show(cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{shown}` did not finish within {}; killed",
                    fmt_duration(limit)
                ));
            }
            Err(e) => return Err(format!("cannot wait for `{shown}`: {e}")),
        }
    };
    let out = reader
        .join()
        .map_err(|_| "stdout reader panicked".to_string())?
        .map_err(|e| format!("cannot read the output of `{shown}`: {e}"))?;
    if !status.success() {
        return Err(format!("`{shown}` failed ({status})"));
    }
    Ok(out)
}

/// One `GET path` on a fresh connection; the status code.
fn http_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))
}

/// Starts the server and waits for its address and a 200 from `/readyz`.
fn start_server(bin: &Path, data: &Path) -> Result<(ServerGuard, SocketAddr)> {
    let mut cmd = Command::new(bin);
    cmd.arg("--data")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn"]);
    println!("==> {}", show(&cmd));
    let limit = Duration::from_secs(30);
    let deadline = Instant::now() + limit;
    let (child, addr) = crate::server::spawn_listening(&mut cmd, limit, None)?;
    let mut guard = ServerGuard {
        child,
        exited: None,
    };
    loop {
        if !guard.alive() {
            return Err(format!(
                "the server exited before it was ready ({:?})",
                guard.exited
            ));
        }
        match http_status(addr, "/readyz") {
            Ok(200) => break,
            _ if Instant::now() >= deadline => {
                return Err(format!("{addr}/readyz did not answer 200 within 30 s"));
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    println!("bench-http: server ready on http://{addr}");
    Ok((guard, addr))
}

/// What the load generator reported (see `testkit::load::LoadReport`).
struct Load {
    raw: Json,
    qps: f64,
    ok: f64,
    shed: f64,
    errors: f64,
    failures: f64,
    timeouts: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    probe_p99_us: Option<f64>,
}

fn parse_load(text: &str) -> Result<Load> {
    let raw = json::parse(text.trim()).map_err(|e| format!("bench-http --json output: {e}"))?;
    let num = |path: &[&str]| -> Result<f64> {
        let mut v = &raw;
        for key in path {
            v = v
                .get(key)
                .ok_or_else(|| format!("bench-http --json output has no {}", path.join(".")))?;
        }
        v.as_f64()
            .ok_or_else(|| format!("bench-http --json: {} is not a number", path.join(".")))
    };
    Ok(Load {
        qps: num(&["qps"])?,
        ok: num(&["ok"])?,
        shed: num(&["shed"])?,
        errors: num(&["errors"])?,
        failures: num(&["failures"])?,
        timeouts: num(&["timeouts"])?,
        p50_us: num(&["latency", "p50_us"])?,
        p99_us: num(&["latency", "p99_us"])?,
        max_us: num(&["latency", "max_us"])?,
        probe_p99_us: num(&["probe", "p99_us"]).ok(),
        raw,
    })
}

fn run_load(bin: &Path, addr: SocketAddr, quick: bool, rate: Option<f64>) -> Result<Load> {
    let (duration, warmup) = if quick { (3, 1) } else { (10, 2) };
    let queries = crate::workspace_root().join(QUERIES);
    let mut cmd = Command::new(bin);
    cmd.arg("bench-http")
        .arg("--url")
        .arg(format!("http://{addr}"))
        .args(["--target-index", INDEX, "--queries"])
        .arg(&queries)
        .args(["-c", CONNECTIONS, "--threads", CLIENT_THREADS])
        .arg("-d")
        .arg(format!("{duration}s"))
        .arg("--warmup")
        .arg(format!("{warmup}s"))
        .arg("--json");
    if let Some(r) = rate {
        cmd.arg("--rate").arg(format!("{r:.0}"));
    }
    println!("==> {}", show(&cmd));
    // Room for the run, the 30 s request timeout and start-up.
    let limit = Duration::from_secs(duration + warmup + 60);
    let load = parse_load(&capture_bounded(&mut cmd, limit)?)?;
    println!(
        "bench-http: {:.0} req/s ({} ok, {} shed, {} errors, {} failures, {} timeouts); \
         p50 {} µs, p99 {} µs, max {} µs; /readyz p99 {}",
        load.qps,
        load.ok,
        load.shed,
        load.errors,
        load.failures,
        load.timeouts,
        load.p50_us,
        load.p99_us,
        load.max_us,
        load.probe_p99_us.map_or("—".into(), |p| format!("{p} µs"))
    );
    Ok(load)
}

/// The in-process baseline: Criterion's `search/plain_tantivy_top10` from this run, in QPS.
struct Baseline {
    median_ns: f64,
    queries: f64,
    /// Per-query latency percentiles, one query at a time on one thread (from the notes).
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    /// Other processes took a good share of the CPU while it ran.
    noisy: Option<String>,
}

impl Baseline {
    fn qps(&self) -> f64 {
        self.queries / (self.median_ns / 1e9)
    }
}

fn run_baseline(data: &Path, quick: bool, report_dir: &Path) -> Result<Baseline> {
    let criterion_home = target_dir().join("criterion");
    let notes = report_dir.join("http-notes.json");
    let _ = std::fs::remove_file(&notes);
    let mut cmd = cargo([
        "bench",
        "-p",
        "ironsift",
        "--bench",
        "core",
        "--",
        "search/plain_tantivy_top10$",
    ]);
    cmd.env("IRONSIFT_BENCH_DATA", data)
        .env("IRONSIFT_BENCH_NOTES", &notes)
        .env("CRITERION_HOME", &criterion_home);
    if quick {
        cmd.env("IRONSIFT_BENCH_QUICK", "1");
    } else {
        cmd.env_remove("IRONSIFT_BENCH_QUICK");
    }
    println!("==> {}", show(&cmd));
    let since = SystemTime::now();
    run_status(&mut cmd)?;
    let m = report::read_measured(&criterion_home, "search", "plain_tantivy_top10", since)?;
    let notes = std::fs::read_to_string(&notes)
        .ok()
        .and_then(|t| json::parse(&t).ok());
    let num = |key: &str| notes.as_ref()?.get(key)?.as_f64();
    if let Some(declared) = num("search.queries")
        && (m.per_iteration - declared).abs() > 0.5
    {
        return Err(format!(
            "search/plain_tantivy_top10: results on disk are from another run ({} queries \
                 per iteration, this run declared {declared})",
            m.per_iteration
        ));
    }
    if let Some(n) = num("search.failures_during_timing").filter(|n| *n > 0.0) {
        return Err(format!("{n} plain Tantivy searches failed while timed"));
    }
    // Same rule as the main report: a fifth of a core taken by others skews a 2-core machine.
    let noisy = match (num("search.foreign_cpu_s"), num("search.wall_s")) {
        (Some(foreign), Some(wall)) if wall > 0.0 && foreign / wall > 0.2 => Some(format!(
            "other processes used {foreign:.1} CPU-s during the {wall:.0} s of the baseline"
        )),
        _ => None,
    };
    Ok(Baseline {
        median_ns: m.median_ns,
        queries: m.per_iteration,
        p50_us: num("search.plain_tantivy_top10_p50_us"),
        p99_us: num("search.plain_tantivy_top10_p99_us"),
        noisy,
    })
}

/// One line of the table.
struct Check {
    name: String,
    measured: String,
    target: &'static str,
    /// `None`: could not be measured (reason in `measured`).
    pass: Option<bool>,
    value: Option<f64>,
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

pub(crate) struct Outcome {
    mode: &'static str,
    baseline: Result<Baseline>,
    closed: Load,
    open: Load,
    rate: f64,
    exit: Result<Option<ExitStatus>>,
    checks: Vec<Check>,
}

fn exit_text(exit: &Result<Option<ExitStatus>>) -> (String, Option<i32>) {
    use std::os::unix::process::ExitStatusExt as _;
    match exit {
        Err(e) => (format!("unknown ({e})"), None),
        Ok(None) => ("none: killed with SIGKILL after 40 s".into(), None),
        Ok(Some(s)) => match (s.code(), s.signal()) {
            (Some(c), _) => (c.to_string(), Some(c)),
            (None, Some(sig)) => (format!("killed by signal {sig}"), None),
            _ => (s.to_string(), None),
        },
    }
}

fn checks(
    baseline: &Result<Baseline>,
    closed: &Load,
    open: &Load,
    rate: f64,
    exit: &Result<Option<ExitStatus>>,
) -> Vec<Check> {
    let mut rows = Vec::new();
    rows.push(match baseline {
        Ok(b) => {
            let ratio = closed.qps / b.qps();
            Check {
                name: format!(
                    "QPS: HTTP closed loop ({CONNECTIONS} connections) vs plain Tantivy in-process"
                ),
                measured: format!("{:.0} vs {:.0} → ratio {ratio:.2}", closed.qps, b.qps()),
                target: "ratio ≥ 0.60",
                pass: Some(ratio >= MIN_QPS_RATIO),
                value: Some(ratio),
            }
        }
        Err(why) => Check {
            name: "QPS: HTTP closed loop vs plain Tantivy in-process".into(),
            measured: format!("{:.0} vs — ({why})", closed.qps),
            target: "ratio ≥ 0.60",
            pass: None,
            value: None,
        },
    });
    rows.push(Check {
        name: format!("p99 latency, open loop at {rate:.0}/s (half the closed-loop QPS)"),
        measured: ms(open.p99_us),
        target: "< 5 ms",
        pass: Some(open.p99_us < MAX_P99_US),
        value: Some(open.p99_us),
    });
    rows.push(match open.probe_p99_us {
        Some(p) => Check {
            name: "/readyz p99 at half load".into(),
            measured: ms(p),
            target: "< 1 ms",
            pass: Some(p < MAX_PROBE_P99_US),
            value: Some(p),
        },
        None => Check {
            name: "/readyz p99 at half load".into(),
            measured: "— (no probe figures in the load report)".into(),
            target: "< 1 ms",
            pass: None,
            value: None,
        },
    });
    let failures = closed.failures + open.failures;
    let timeouts = closed.timeouts + open.timeouts;
    rows.push(Check {
        name: "client failures / timeouts (both runs)".into(),
        measured: format!("{failures} / {timeouts}"),
        target: "0 / 0",
        pass: Some(failures == 0.0 && timeouts == 0.0),
        value: Some(failures),
    });
    let (text, code) = exit_text(exit);
    rows.push(Check {
        name: "server exit code after SIGTERM".into(),
        measured: text,
        target: "0",
        pass: Some(code == Some(0)),
        value: code.map(f64::from),
    });
    rows
}

impl Outcome {
    fn all_pass(&self) -> bool {
        self.checks.iter().all(|c| c.pass == Some(true))
    }

    fn markdown(&self) -> String {
        format!(
            "# ironsift HTTP service vs plain Tantivy ({} run)\n\n{}",
            self.mode,
            self.body()
        )
    }

    /// The report without its title (also the part's details in the combined report).
    fn body(&self) -> String {
        let mut md = String::new();
        md.push_str("| check | measured | target | result |\n|---|---:|---:|---|\n");
        for c in &self.checks {
            let result = match c.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "MISSING",
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {result} |",
                c.name, c.measured, c.target
            );
        }
        let verdict = if self.all_pass() {
            "all targets met"
        } else {
            "some targets missed"
        };
        let _ = writeln!(md, "\nOverall: **{verdict}**.\n");
        for (name, l) in [("closed loop", &self.closed), ("open loop", &self.open)] {
            let _ = writeln!(
                md,
                "- {name}: {:.0} responses/s ({} ok, {} shed, {} errors, {} failures, {} \
                 timeouts); latency p50 {}, p99 {}, max {}; /readyz p99 {}",
                l.qps,
                l.ok,
                l.shed,
                l.errors,
                l.failures,
                l.timeouts,
                ms(l.p50_us),
                ms(l.p99_us),
                ms(l.max_us),
                l.probe_p99_us.map_or("—".into(), ms)
            );
        }
        if let Ok(b) = &self.baseline {
            let _ = writeln!(
                md,
                "- plain Tantivy: Criterion median {:.1} ms for {} queries on 2 threads \
                 (`search/plain_tantivy_top10`, same corpus, same run); per query, one at a time \
                 on one thread: p50 {}, p99 {}",
                b.median_ns / 1e6,
                b.queries,
                b.p50_us.map_or("—".into(), ms),
                b.p99_us.map_or("—".into(), ms)
            );
            if let Some(why) = &b.noisy {
                let _ = writeln!(
                    md,
                    "\n**Noisy:** {why}; rerun on a quiet machine before trusting the ratio."
                );
            }
        }
        md.push_str(
            "\nNotes: `errors` are 4xx answers to web queries that are not valid query syntax \
             (the query file is raw web queries); they are not failures, but like `shed` they \
             count in the HTTP responses/s. The plain Tantivy baseline runs only the queries \
             that parse, on both cores; the HTTP figures share the same cores between the \
             server and the load generator.\n",
        );
        md
    }

    fn to_json(&self) -> Json {
        let num = |x: Option<f64>| x.map_or(Json::Null, Json::Num);
        let checks = self
            .checks
            .iter()
            .map(|c| {
                Json::Obj(vec![
                    ("check".into(), Json::Str(c.name.clone())),
                    ("measured".into(), Json::Str(c.measured.clone())),
                    ("value".into(), num(c.value)),
                    ("target".into(), Json::Str(c.target.into())),
                    (
                        "result".into(),
                        Json::Str(
                            match c.pass {
                                Some(true) => "pass",
                                Some(false) => "miss",
                                None => "missing",
                            }
                            .into(),
                        ),
                    ),
                ])
            })
            .collect();
        let baseline = match &self.baseline {
            Ok(b) => Json::Obj(vec![
                ("median_ns".into(), Json::Num(b.median_ns)),
                ("queries_per_iteration".into(), Json::Num(b.queries)),
                ("qps".into(), Json::Num(b.qps())),
                ("p50_us".into(), num(b.p50_us)),
                ("p99_us".into(), num(b.p99_us)),
                (
                    "noisy".into(),
                    b.noisy.clone().map_or(Json::Null, Json::Str),
                ),
            ]),
            Err(why) => Json::Obj(vec![("error".into(), Json::Str(why.clone()))]),
        };
        let (exit_desc, code) = exit_text(&self.exit);
        Json::Obj(vec![
            ("mode".into(), Json::Str(self.mode.into())),
            ("all_targets_met".into(), Json::Bool(self.all_pass())),
            ("checks".into(), Json::Arr(checks)),
            ("plain_tantivy".into(), baseline),
            ("closed_loop".into(), self.closed.raw.clone()),
            ("open_loop_rate".into(), Json::Num(self.rate)),
            ("open_loop".into(), self.open.raw.clone()),
            ("server_exit_code".into(), num(code.map(f64::from))),
            ("server_exit".into(), Json::Str(exit_desc)),
        ])
    }

    fn json(&self) -> String {
        let mut out = String::new();
        self.to_json().write(&mut out);
        out.push('\n');
        out
    }

    /// The comparisons for the combined report's summary.
    fn summary_rows(&self) -> Vec<summary::Row> {
        let pt = "plain Tantivy";
        let base = self.baseline.as_ref().ok();
        let noisy = base.and_then(|b| b.noisy.clone());
        let mut qps = summary::Row::new(
            format!(
                "HTTP search QPS, closed loop ({CONNECTIONS} connections), vs plain Tantivy \
                 in-process (2 threads)"
            ),
            Unit::QueriesPerSec,
            Some(self.closed.qps),
            base.map(Baseline::qps),
            pt,
            Some(Target::RatioAtLeast(MIN_QPS_RATIO)),
        );
        if let Err(why) = &self.baseline {
            qps.verdict = summary::Verdict::Missing(format!("no plain Tantivy baseline: {why}"));
        }
        qps.noisy = noisy.clone();
        let mut rows = vec![qps];
        for (label, http_us, plain_us, target) in [
            ("p50", self.open.p50_us, base.and_then(|b| b.p50_us), None),
            (
                "p99",
                self.open.p99_us,
                base.and_then(|b| b.p99_us),
                Some(Target::Below(MAX_P99_US / 1000.0)),
            ),
        ] {
            let mut row = summary::Row::new(
                format!(
                    "HTTP search latency {label}, open loop at {:.0}/s (half the closed-loop QPS), \
                     vs plain Tantivy in-process, one query at a time",
                    self.rate
                ),
                Unit::Millis,
                Some(http_us / 1000.0),
                plain_us.map(|us| us / 1000.0),
                pt,
                target,
            );
            row.noisy = noisy.clone();
            rows.push(row);
        }
        rows.push(summary::Row::new(
            "/readyz p99 during the open-loop load",
            Unit::Millis,
            self.open.probe_p99_us.map(|us| us / 1000.0),
            None,
            pt,
            Some(Target::Below(MAX_PROBE_P99_US / 1000.0)),
        ));
        rows.push(summary::Row::new(
            "HTTP client failures + timeouts (both loads)",
            Unit::Count,
            Some(
                self.closed.failures
                    + self.open.failures
                    + self.closed.timeouts
                    + self.open.timeouts,
            ),
            None,
            pt,
            Some(Target::Equals(0.0)),
        ));
        let (text, code) = exit_text(&self.exit);
        let mut exit = summary::Row::new(
            "server exit code after SIGTERM",
            Unit::Count,
            code.map(f64::from),
            None,
            pt,
            Some(Target::Equals(0.0)),
        );
        if code.is_none() {
            exit.verdict = summary::Verdict::Missing(text);
        }
        rows.push(exit);
        rows
    }
}

/// Indexes the corpus, measures the baseline, serves and loads: every step of the benchmark.
/// `corpus` holds `linux-docs.jsonl`; `bin` is the release binary.
fn measure(bin: &Path, corpus: &Path, quick: bool, report_dir: &Path) -> Result<Outcome> {
    let mode = if quick { "quick" } else { "full" };
    let jsonl = corpus.join("linux-docs.jsonl");
    let data = target_dir().join("bench-http-data");
    build_index(bin, &data, &jsonl, report_dir)?;

    let baseline = run_baseline(corpus, quick, report_dir);
    if let Err(why) = &baseline {
        eprintln!("bench-http: no plain Tantivy baseline: {why}");
    }

    let (mut server, addr) = start_server(bin, &data)?;
    let closed = run_load(bin, addr, quick, None)?;
    let rate = (closed.qps / 2.0).max(1.0);
    let open = run_load(bin, addr, quick, Some(rate))?;
    println!("==> kill -s TERM {}", server.child.id());
    let exit = server.terminate(Duration::from_secs(40));
    drop(server);

    let checks = checks(&baseline, &closed, &open, rate, &exit);
    Ok(Outcome {
        mode,
        baseline,
        closed,
        open,
        rate,
        exit,
        checks,
    })
}

/// The `http` part of `cargo xtask bench` (the caller prepared the corpus and the binary and
/// holds the run lock). A missing baseline fails the part but keeps the load figures.
pub(crate) fn part(
    bin: &Path,
    corpus: &Path,
    quick: bool,
    report_dir: &Path,
) -> Result<summary::Part> {
    let outcome = measure(bin, corpus, quick, report_dir)?;
    Ok(summary::Part {
        name: "http",
        title: bench::PartKind::Http.title(),
        took: Duration::ZERO,
        rows: outcome.summary_rows(),
        details: outcome.body(),
        json: outcome.to_json(),
        failure: outcome
            .baseline
            .as_ref()
            .err()
            .map(|why| format!("no plain Tantivy baseline: {why}")),
    })
}

/// Fresh data folder with the explicit-schema index holding `linux-docs.jsonl`.
fn build_index(bin: &Path, data: &Path, jsonl: &Path, report_dir: &Path) -> Result<()> {
    if data.exists() {
        std::fs::remove_dir_all(data)
            .map_err(|e| format!("cannot remove {}: {e}", data.display()))?;
    }
    let schema = report_dir.join("http-schema.json");
    std::fs::write(&schema, SCHEMA)
        .map_err(|e| format!("cannot write {}: {e}", schema.display()))?;
    let mut create = Command::new(bin);
    create
        .arg("--data")
        .arg(data)
        .args(["create-index", INDEX, "--schema"])
        .arg(&schema);
    println!("==> {}", show(&create));
    run_status(&mut create)?;
    let mut add = Command::new(bin);
    add.arg("--data")
        .arg(data)
        .args(["-i", INDEX, "add"])
        .arg(jsonl);
    println!("==> {}", show(&add));
    let t = Instant::now();
    run_status(&mut add)?;
    println!("bench-http: indexed in {}", fmt_duration(t.elapsed()));
    Ok(())
}

pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let opts = bench::parse_args(args)?;
    if opts.check || opts.only.is_some() || !opts.criterion_args.is_empty() {
        return Err("bench-http takes only --quick and --data DIR".into());
    }
    let started = Instant::now();
    corpus::ensure(&opts.data)?;

    let report_dir = target_dir().join("bench-report");
    std::fs::create_dir_all(&report_dir)
        .map_err(|e| format!("cannot create {}: {e}", report_dir.display()))?;
    // Shares Criterion's folder and the machine with `cargo xtask bench`.
    let _lock = bench::RunLock::acquire(&report_dir.join(".lock"))?;
    let bin = bench::release_binary()?;
    let outcome = measure(&bin, &opts.data, opts.quick, &report_dir)?;

    let md_path = report_dir.join("http.md");
    let json_path = report_dir.join("http.json");
    let md = outcome.markdown();
    std::fs::write(&md_path, &md)
        .map_err(|e| format!("cannot write {}: {e}", md_path.display()))?;
    std::fs::write(&json_path, outcome.json())
        .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    println!("\n{md}");
    println!(
        "report: {} and {} (total {})",
        md_path.display(),
        json_path.display(),
        fmt_duration(started.elapsed())
    );
    Ok(ExitCode::SUCCESS)
}
