//! `ironsift bench-http`: load any ironsift deployment with search queries and report
//! throughput, latency percentiles and health-probe latency (JSON with `--json`); with
//! `--scenario`, run one of the stress scenarios of issue #7 and write a JSON and an HTML
//! report with the scenario's pass/fail bars.
//!
//! Scenarios (each with `--quick`, a short form for CI that takes seconds):
//! - `concurrency`: 1,000 users × 10 queries, closed loop: ≥ 99.9 % non-error responses
//!   (429/503 count as handled) and 0 timeouts;
//! - `sustained`: a fixed arrival rate (open loop, latency from the intended send time) for a
//!   duration: error rate ≤ 0.1 % and p99 stable (last minute within 1.5× the first; the last
//!   vs the first 20 % for runs under three minutes);
//! - `memory-pressure`: 150 KB queries and multi-MiB document batches (into a scratch index,
//!   deleted afterwards) beside normal searches: 0 errors, 0 timeouts, ready afterwards;
//! - `exhaustion`: 2,000 concurrent requests at once: 0 timeouts;
//! - `scale`: 10 → 500 → 1,000 → 100 → 10 users with ramps: no errors at transitions, and
//!   memory back near its baseline afterwards when `--pid` names the local server;
//! - `chaos`: sustained load while faults are injected, and with `--kill-cmd` a SIGKILL (and
//!   restart, by whoever supervises the server) mid-run: 0 timeouts, recovery within a bound,
//!   errors outside the restart window ≤ 0.1 %, and, when the server's metrics show injected
//!   errors, the circuit breaker opened and closed again.
//!
//! Every scenario polls the server's `/metrics` (`--metrics`) once a second for its circuit
//! breaker transitions and state, charted in the report; a server without them, or with
//! protected metrics and no admin key, is reported with a note instead.
//!
//! Exit status: 0 when every bar passed, 4 when one failed, 1 on errors.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use testkit::corpus::{self, CorpusConfig, Generator};
use testkit::load::{
    self, Hook, LoadConfig, MetricsPoll, Mode, Phase, Plan, Request, RunData, Workload,
};
use testkit::report::{self, Bar, Finding, Report, fmt_us, thousands};

use crate::serve::parse_duration;

/// Exit status when the run completed but a bar failed.
const EXIT_BAR_FAILED: u8 = 4;

/// Scratch index the memory-pressure scenario writes its batches to.
const SCRATCH_INDEX: &str = "ironsift-bench-scratch";

/// The query file shipped with the repository, used when it is found from the current folder.
const WEB_QUERIES: &str = "benches/data/queries-web-50k.txt";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// 1,000 users × 10 queries, closed loop.
    Concurrency,
    /// A fixed arrival rate for a duration (open loop).
    Sustained,
    /// 150 KB queries and large document batches beside normal searches.
    MemoryPressure,
    /// 2,000 concurrent requests at once.
    Exhaustion,
    /// 10 → 500 → 1,000 → 100 → 10 users with ramps.
    Scale,
    /// Sustained load with faults / a SIGKILL and restart mid-run.
    Chaos,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Concurrency => "concurrency",
            Scenario::Sustained => "sustained",
            Scenario::MemoryPressure => "memory-pressure",
            Scenario::Exhaustion => "exhaustion",
            Scenario::Scale => "scale",
            Scenario::Chaos => "chaos",
        }
    }
}

#[derive(Args)]
#[command(after_help = "\
Scenarios (--scenario): concurrency, sustained, memory-pressure, exhaustion, scale, chaos; \
--quick runs the short CI form of each. A scenario writes report.json and report.html into \
--report-dir and exits with status 4 when one of its bars fails.")]
pub(crate) struct BenchHttpArgs {
    /// Base URL of the server (http only), e.g. http://127.0.0.1:7600.
    #[arg(long, default_value = "http://127.0.0.1:7600")]
    url: String,
    /// Index to search [default: default, or --index].
    #[arg(long = "target-index")]
    target_index: Option<String>,
    /// Query file: one query per line, optional `N:` prefix [default: benches/data/
    /// queries-web-50k.txt when present, else generated queries; without --scenario a few
    /// built-in queries].
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Run a stress scenario and write a report (see below).
    #[arg(long, value_enum)]
    scenario: Option<Scenario>,
    /// The short form of the scenario (seconds), for CI.
    #[arg(long)]
    quick: bool,
    /// Concurrent connections [default: 64] (open-loop scenarios: the bound on requests in
    /// flight).
    #[arg(long, short = 'c')]
    connections: Option<usize>,
    /// Measured duration [default: 10s; sustained 5m, chaos 60s, memory-pressure 60s; scale:
    /// the hold of each step, 30s].
    #[arg(long, short = 'd', value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Warm-up before measuring [default: 2s; sustained 10s].
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// Open loop at this many requests per second (default: closed loop, as fast as possible;
    /// sustained and chaos: 100).
    #[arg(long)]
    rate: Option<f64>,
    /// Users (concurrency: 1,000; exhaustion: 2,000 concurrent requests).
    #[arg(long)]
    users: Option<usize>,
    /// Requests per user (concurrency: 10; exhaustion: 1).
    #[arg(long)]
    requests_per_user: Option<u64>,
    /// Scale steps, users per step.
    #[arg(long, value_delimiter = ',', default_value = "10,500,1000,100,10")]
    steps: Vec<usize>,
    /// Ramp between scale steps [default: 10s; quick 1s].
    #[arg(long, value_parser = parse_duration)]
    ramp: Option<Duration>,
    /// Client timeout per request: a request without an answer by then counts as a timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// API key sent as `Authorization: Bearer KEY` (memory-pressure needs an admin key when
    /// the server has keys).
    #[arg(long, env = "IRONSIFT_BENCH_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Folder for report.json and report.html [default: ./ironsift-reports/SCENARIO-TIME/].
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// Process id of the server when it runs on this machine: its memory is sampled from
    /// /proc (the scale scenario then checks it returns to its baseline).
    #[arg(long)]
    pid: Option<u32>,
    /// Growth of the server's anonymous memory allowed after the scale scenario, MiB.
    #[arg(long, default_value_t = 64)]
    rss_bound_mb: u64,
    /// chaos: shell command that kills the server (its supervisor restarts it), run with
    /// `sh -c` at --kill-at, e.g. "kill -KILL $(pidof ironsift)".
    #[arg(long)]
    kill_cmd: Option<String>,
    /// chaos: when to run --kill-cmd [default: a third into the run].
    #[arg(long, value_parser = parse_duration)]
    kill_at: Option<Duration>,
    /// chaos: the server must answer cleanly again within this long after the kill.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    recovery_bound: Duration,
    /// memory-pressure: size of one document batch, MiB.
    #[arg(long, default_value_t = 4)]
    batch_mb: usize,
    /// memory-pressure: size of one large query, KiB.
    #[arg(long, default_value_t = 150)]
    query_kb: usize,
    /// memory-pressure: keep the scratch index instead of deleting it.
    #[arg(long)]
    keep_index: bool,
    /// Write a generated corpus of --docs documents as JSON lines to this file and exit
    /// (vocabulary from --queries, or the shipped web queries, when present).
    #[arg(long, value_name = "FILE")]
    write_corpus: Option<PathBuf>,
    /// Documents for --write-corpus.
    #[arg(long, default_value_t = 20_000)]
    docs: usize,
    /// Hits per search.
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// Poll this path on its own connection meanwhile ("" for none).
    #[arg(long, default_value = "/readyz")]
    probe: String,
    /// Scenarios: read the server's Prometheus metrics here once a second, for its circuit
    /// breaker transitions and injected faults ("" for none; skipped with a note when absent
    /// or protected and --key is not an admin key).
    #[arg(long, default_value = "/metrics")]
    metrics: String,
    /// Client threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

const BUILT_IN: &[&str] = &[
    "error",
    "memory allocation",
    "\"device driver\"",
    "lock -spin",
    "net*",
];

fn resolve(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    hostport
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} resolves to no address"))
}

fn read_query_file(p: &Path) -> Result<Vec<String>> {
    let queries = load::read_queries(
        &std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
    );
    if queries.is_empty() {
        bail!("the query file {} holds no queries", p.display());
    }
    Ok(queries)
}

pub(crate) fn run(index: &str, args: &BenchHttpArgs) -> Result<ExitCode> {
    if let Some(out) = &args.write_corpus {
        return write_corpus(args, out);
    }
    if args.connections == Some(0) || args.threads == 0 {
        bail!("--connections and --threads must be at least 1");
    }
    if let Some(r) = args.rate
        && !(r > 0.0 && r.is_finite())
    {
        bail!("--rate must be a positive number");
    }
    let addr = resolve(&args.url)?;
    let index = args.target_index.as_deref().unwrap_or(index);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match args.scenario {
        Some(s) => run_scenario(s, addr, index, args, &runtime),
        None => run_simple(addr, index, args, &runtime),
    }
}

/// The original single run: closed or open loop for a duration, printed.
fn run_simple(
    addr: SocketAddr,
    index: &str,
    args: &BenchHttpArgs,
    runtime: &tokio::runtime::Runtime,
) -> Result<ExitCode> {
    let queries = match &args.queries {
        Some(p) => read_query_file(p)?,
        None => BUILT_IN.iter().map(|s| s.to_string()).collect(),
    };
    let connections = args.connections.unwrap_or(64);
    let paths: Vec<String> = queries
        .iter()
        .map(|q| search_path(index, q, args.limit))
        .collect();
    let cfg = LoadConfig {
        addr,
        paths: Arc::new(paths),
        connections,
        duration: args.duration.unwrap_or(Duration::from_secs(10)),
        warmup: args.warmup.unwrap_or(Duration::from_secs(2)),
        rate: args.rate,
        probe: (!args.probe.is_empty()).then(|| args.probe.clone()),
        probe_interval: Duration::from_millis(10),
        request_timeout: Duration::from_secs(30),
    };
    let report = runtime
        .block_on(load::run(cfg))
        .context("load run failed")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let l = &report.latency;
        println!(
            "{:.0} req/s over {:.1} s ({} connections{}): {} ok, {} shed, {} errors, {} failed ({} timeouts)",
            report.qps,
            report.seconds,
            connections,
            args.rate
                .map(|r| format!(", open loop at {r}/s"))
                .unwrap_or_default(),
            report.ok,
            report.shed,
            report.errors,
            report.failures,
            report.timeouts
        );
        println!(
            "latency µs: p50 {} p90 {} p99 {} p99.9 {} max {}",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
        );
        if let Some(p) = &report.probe {
            println!(
                "probe {}: p50 {} p99 {} max {} µs ({} samples)",
                args.probe, p.p50_us, p.p99_us, p.max_us, p.count
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn search_path(index: &str, q: &str, limit: usize) -> String {
    format!(
        "/v1/indexes/{index}/search?q={}&limit={limit}",
        load::encode_query_value(q)
    )
}

/// The queries of a scenario: --queries, else the shipped web queries, else generated ones.
fn scenario_queries(args: &BenchHttpArgs) -> Result<(Vec<String>, String)> {
    if let Some(p) = &args.queries {
        return Ok((read_query_file(p)?, p.display().to_string()));
    }
    let shipped = Path::new(WEB_QUERIES);
    if shipped.is_file() {
        return Ok((read_query_file(shipped)?, WEB_QUERIES.to_string()));
    }
    let mut g = Generator::new(CorpusConfig::default());
    Ok((g.queries(10_000), "generated (testkit::corpus)".to_string()))
}

fn write_corpus(args: &BenchHttpArgs, out: &Path) -> Result<ExitCode> {
    let queries = match &args.queries {
        Some(p) => Some(read_query_file(p)?),
        None if Path::new(WEB_QUERIES).is_file() => Some(read_query_file(Path::new(WEB_QUERIES))?),
        None => None,
    };
    let cfg = CorpusConfig::default();
    let mut g = match &queries {
        Some(q) => Generator::from_queries(cfg, q),
        None => Generator::new(cfg),
    };
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let mut bytes = 0usize;
    for _ in 0..args.docs {
        let doc = g.document();
        bytes += doc.len() + 1;
        std::io::Write::write_all(&mut w, doc.as_bytes())?;
        std::io::Write::write_all(&mut w, b"\n")?;
    }
    std::io::Write::flush(&mut w)?;
    println!(
        "wrote {} documents ({:.1} MB, vocabulary of {} words) to {}",
        args.docs,
        bytes as f64 / 1e6,
        g.vocabulary().len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The soft limit on open files, from /proc/self/limits.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Everything a scenario needs to build its plan.
struct Ctx<'a> {
    addr: SocketAddr,
    host: String,
    index: &'a str,
    args: &'a BenchHttpArgs,
    quick: bool,
    queries: Vec<String>,
}

impl Ctx<'_> {
    fn headers(&self) -> Vec<(&str, String)> {
        self.args
            .key
            .as_ref()
            .map(|k| vec![("Authorization", format!("Bearer {k}"))])
            .unwrap_or_default()
    }

    fn request(&self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Request {
        let h = self.headers();
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Request::new(method, &self.host, path, &h, body)
    }

    fn searches(&self) -> Arc<Vec<Request>> {
        Arc::new(
            self.queries
                .iter()
                .map(|q| {
                    // Raw query files (web queries) hold some invalid syntax: the server's
                    // 400 is the right answer to those, counted as `rejected`, not an error.
                    self.request("GET", &search_path(self.index, q, self.args.limit), None)
                        .expecting_rejection()
                })
                .collect(),
        )
    }

    /// Searches over the first `n` queries only: a workload that repeats itself, as real
    /// traffic does, so cached answers exist (the chaos drill shows them served degraded).
    fn repeated_searches(&self, n: usize) -> Arc<Vec<Request>> {
        let all = self.searches();
        Arc::new(all.iter().take(n.max(1)).cloned().collect())
    }

    fn pick(&self, full: Duration, quick: Duration) -> Duration {
        if self.quick { quick } else { full }
    }

    /// One blocking request for set-up and checks (not measured).
    fn call(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<testkit::HttpResponse> {
        let h = self.headers();
        let mut h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if !body.is_empty() {
            h.push(("Content-Type", "application/json"));
        }
        testkit::http::request(self.addr, method, path, &h, body, Duration::from_secs(30))
    }
}

/// What a scenario builds: the plan, its settings, and how to judge the run.
struct Built {
    description: String,
    plan: Plan,
    settings: Vec<(String, String)>,
    notes: Vec<String>,
}

fn closed(name: &str, users: usize, per_user: Option<u64>, duration: Duration) -> Phase {
    Phase {
        name: name.into(),
        mode: Mode::Closed {
            from: users,
            users,
            ramp: Duration::ZERO,
            per_user,
        },
        duration,
        warmup: Duration::ZERO,
    }
}

/// A short unmeasured phase: caches warm, connections open, JIT-less but still useful.
fn warm_phase(ctx: &Ctx<'_>) -> Phase {
    Phase {
        warmup: ctx.pick(Duration::from_secs(2), Duration::from_millis(500)),
        ..closed(
            "warm-up",
            16,
            None,
            ctx.pick(Duration::from_secs(2), Duration::from_millis(500)),
        )
    }
}

fn base_plan(ctx: &Ctx<'_>, workloads: Vec<Workload>) -> Plan {
    Plan {
        addr: ctx.addr,
        workloads,
        timeout: ctx.args.timeout,
        probe: (!ctx.args.probe.is_empty()).then(|| Request::get(&ctx.host, &ctx.args.probe, &[])),
        probe_interval: Duration::from_millis(100),
        rss_pid: ctx.args.pid,
        hooks: Vec::new(),
        metrics: (!ctx.args.metrics.is_empty()).then(|| MetricsPoll {
            path: ctx.args.metrics.clone(),
            headers: ctx
                .headers()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            interval: Duration::from_secs(1),
        }),
    }
}

fn build(scenario: Scenario, ctx: &Ctx<'_>) -> Result<Built> {
    let a = ctx.args;
    let mut settings: Vec<(String, String)> = Vec::new();
    let mut notes = Vec::new();
    let mut set = |k: &str, v: String| settings.push((k.to_string(), v));
    let built = match scenario {
        Scenario::Concurrency => {
            let users = a.users.unwrap_or(if ctx.quick { 250 } else { 1_000 });
            let per_user = a
                .requests_per_user
                .unwrap_or(if ctx.quick { 4 } else { 10 });
            let cap = a
                .duration
                .unwrap_or(ctx.pick(Duration::from_secs(180), Duration::from_secs(45)));
            set("users", thousands(users as u64));
            set("queries per user", per_user.to_string());
            set("time cap", format!("{cap:?}"));
            Built {
                description: format!(
                    "{} users arrive at once and each sends {per_user} searches back to back (closed loop) on its own connection.",
                    thousands(users as u64)
                ),
                plan: base_plan(
                    ctx,
                    vec![Workload {
                        name: "search".into(),
                        requests: ctx.searches(),
                        phases: vec![warm_phase(ctx), closed("burst", users, Some(per_user), cap)],
                    }],
                ),
                settings: Vec::new(),
                notes: Vec::new(),
            }
        }
        Scenario::Sustained | Scenario::Chaos => {
            let chaos = scenario == Scenario::Chaos;
            let rate = a.rate.unwrap_or(100.0);
            let duration = a.duration.unwrap_or(match (chaos, ctx.quick) {
                (false, false) => Duration::from_secs(300),
                (true, false) => Duration::from_secs(60),
                (false, true) => Duration::from_secs(10),
                (true, true) => Duration::from_secs(12),
            });
            let warmup = a
                .warmup
                .unwrap_or(ctx.pick(Duration::from_secs(10), Duration::from_secs(1)));
            let connections = a.connections.unwrap_or(64);
            set("rate", format!("{rate} req/s"));
            set("duration", format!("{duration:?} (+ {warmup:?} warm-up)"));
            set("connections (max in flight)", connections.to_string());
            let mut plan = base_plan(
                ctx,
                vec![Workload {
                    name: "search".into(),
                    requests: if chaos {
                        ctx.repeated_searches(200)
                    } else {
                        ctx.searches()
                    },
                    phases: vec![Phase {
                        name: if chaos { "chaos" } else { "steady" }.into(),
                        mode: Mode::Open { rate, connections },
                        duration: warmup + duration,
                        warmup,
                    }],
                }],
            );
            let description = if chaos {
                "Sustained open-loop load while faults are injected; with --kill-cmd the server is killed (SIGKILL) mid-run and its supervisor restarts it."
            } else {
                "A fixed arrival rate (open loop); latency counts from each request's intended send time, so stalls cannot hide (coordinated omission)."
            };
            if chaos {
                // Writes keep the index changing, as in production: cached answers then go
                // stale, and while the breaker is open they are served flagged `degraded`.
                let marker = ctx.request(
                    "POST",
                    &format!("/v1/indexes/{}/documents?refresh=wait_for", ctx.index),
                    Some((
                        "application/json",
                        br#"{"id":"ironsift-chaos-marker","text":"chaos drill marker document"}"#,
                    )),
                );
                plan.workloads.push(Workload {
                    name: "writes".into(),
                    requests: Arc::new(vec![marker]),
                    phases: vec![Phase {
                        name: "writes".into(),
                        mode: Mode::Open {
                            rate: 2.0,
                            connections: 2,
                        },
                        duration: warmup + duration,
                        warmup,
                    }],
                });
                set(
                    "writes",
                    "2/s upserts of the document ironsift-chaos-marker (left in the index)".into(),
                );
                match &a.kill_cmd {
                    Some(cmd) => {
                        let at = a.kill_at.unwrap_or(warmup + duration / 3);
                        set("kill command", cmd.clone());
                        set("kill at", format!("{at:?}"));
                        let cmd = cmd.clone();
                        plan.hooks.push(Hook {
                            at,
                            name: "SIGKILL".into(),
                            action: Box::new(move || run_shell(&cmd)),
                        });
                    }
                    None => notes.push(
                        "No --kill-cmd: the run measured the server under whatever faults it was configured to inject, without a restart.".into(),
                    ),
                }
            }
            Built {
                description: description.into(),
                plan,
                settings: Vec::new(),
                notes: Vec::new(),
            }
        }
        Scenario::MemoryPressure => {
            let duration = a
                .duration
                .unwrap_or(ctx.pick(Duration::from_secs(60), Duration::from_secs(6)));
            let mut g = Generator::from_queries(CorpusConfig::default(), &ctx.queries);
            let big: Vec<Request> = (0..8)
                .map(|_| {
                    let q = g.long_query(a.query_kb * 1024);
                    let mut body = String::from("{\"query\":");
                    corpus::push_json_str(&mut body, &q);
                    body.push_str(",\"limit\":10}");
                    ctx.request(
                        "POST",
                        &format!("/v1/indexes/{}/search", ctx.index),
                        Some(("application/json", body.as_bytes())),
                    )
                    .expecting_rejection()
                })
                .collect();
            let batches: Vec<Request> = (0..if ctx.quick { 2 } else { 4 })
                .map(|_| {
                    let body = g.jsonl_bytes(a.batch_mb.max(1) << 20);
                    ctx.request(
                        "POST",
                        &format!("/v1/indexes/{SCRATCH_INDEX}/documents"),
                        Some(("application/x-ndjson", body.as_bytes())),
                    )
                })
                .collect();
            set("duration", format!("{duration:?}"));
            set("large query", format!("{} KiB (POST search)", a.query_kb));
            set(
                "document batch",
                format!("{} MiB NDJSON into {SCRATCH_INDEX}", a.batch_mb),
            );
            notes.push(format!(
                "Queries over the server's length limit are expected to be refused with a 4xx: those count as 'rejected' (handled), not as errors. Batches go to the scratch index {SCRATCH_INDEX}, deleted afterwards unless --keep-index."
            ));
            let phase = |name: &str, users: usize| Phase {
                warmup: Duration::ZERO,
                ..closed(name, users, None, duration)
            };
            Built {
                description: format!(
                    "Normal searches (16 users) beside {} KiB queries (4 users) and {} MiB document batches (2 users), all closed loop.",
                    a.query_kb, a.batch_mb
                ),
                plan: base_plan(
                    ctx,
                    vec![
                        Workload {
                            name: "search".into(),
                            requests: ctx.searches(),
                            phases: vec![phase("searches", 16)],
                        },
                        Workload {
                            name: "large queries".into(),
                            requests: Arc::new(big),
                            phases: vec![phase("large queries", 4)],
                        },
                        Workload {
                            name: "batches".into(),
                            requests: Arc::new(batches),
                            phases: vec![phase("batches", 2)],
                        },
                    ],
                ),
                settings: Vec::new(),
                notes: Vec::new(),
            }
        }
        Scenario::Exhaustion => {
            let users = a.users.unwrap_or(2_000);
            let per_user = a.requests_per_user.unwrap_or(if ctx.quick { 1 } else { 5 });
            set("concurrent requests", thousands(users as u64));
            set("requests per connection", per_user.to_string());
            Built {
                description: format!(
                    "{} connections each send {per_user} search(es) at the same instant: far more than any sane concurrency limit; the server must answer or shed, never leave a request hanging.",
                    thousands(users as u64)
                ),
                plan: base_plan(
                    ctx,
                    vec![Workload {
                        name: "search".into(),
                        requests: ctx.searches(),
                        phases: vec![
                            warm_phase(ctx),
                            closed(
                                "flood",
                                users,
                                Some(per_user),
                                a.duration.unwrap_or(
                                    ctx.pick(Duration::from_secs(120), Duration::from_secs(45)),
                                ),
                            ),
                        ],
                    }],
                ),
                settings: Vec::new(),
                notes: Vec::new(),
            }
        }
        Scenario::Scale => {
            if a.steps.len() < 2 || a.steps.contains(&0) {
                bail!("--steps needs at least two user counts, none 0");
            }
            let hold = a
                .duration
                .unwrap_or(ctx.pick(Duration::from_secs(30), Duration::from_secs(3)));
            let ramp = a
                .ramp
                .unwrap_or(ctx.pick(Duration::from_secs(10), Duration::from_secs(1)));
            let mut phases = Vec::new();
            let mut prev = a.steps[0];
            for (i, &users) in a.steps.iter().enumerate() {
                let last = i + 1 == a.steps.len();
                let r = if i == 0 { Duration::ZERO } else { ramp };
                phases.push(Phase {
                    name: format!("{users} users"),
                    mode: Mode::Closed {
                        from: prev,
                        users,
                        ramp: r,
                        per_user: None,
                    },
                    // The first step warms up; the last holds longer so memory can settle.
                    duration: r + if last { hold * 2 } else { hold },
                    warmup: if i == 0 { hold / 3 } else { Duration::ZERO },
                });
                prev = users;
            }
            let steps: Vec<String> = a.steps.iter().map(|s| thousands(*s as u64)).collect();
            set("steps", steps.join(" → "));
            set("hold per step", format!("{hold:?}"));
            set("ramp", format!("{ramp:?}"));
            Built {
                description: format!(
                    "Closed-loop users scale {} with linear ramps; errors around each transition and the server's memory afterwards are checked.",
                    steps.join(" → ")
                ),
                plan: base_plan(
                    ctx,
                    vec![Workload {
                        name: "search".into(),
                        requests: ctx.searches(),
                        phases,
                    }],
                ),
                settings: Vec::new(),
                notes: Vec::new(),
            }
        }
    };
    Ok(Built {
        settings,
        notes,
        ..built
    })
}

fn run_shell(cmd: &str) -> std::result::Result<String, String> {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map_err(|e| format!("cannot run sh -c {cmd:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(format!("`{cmd}` ran ({})", text.trim()))
    } else {
        Err(format!("`{cmd}` failed ({}): {}", out.status, text.trim()))
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// What the scenario concludes from the run.
struct Verdict {
    bars: Vec<Bar>,
    findings: Vec<Finding>,
    notes: Vec<String>,
}

fn bar(name: &str, target: &str, measured: String, pass: bool) -> Bar {
    Bar {
        name: name.into(),
        target: target.into(),
        measured,
        pass,
    }
}

fn finding(name: &str, value: String) -> Finding {
    Finding {
        name: name.into(),
        value,
    }
}

fn timeouts_bar(d: &RunData) -> Bar {
    bar(
        "client timeouts",
        "0",
        thousands(d.totals.timeouts),
        d.totals.timeouts == 0,
    )
}

fn shed_finding(d: &RunData) -> Finding {
    let t = &d.totals;
    finding(
        "shed (429/503)",
        format!(
            "{} ({:.2} %), {} with Retry-After, {} without",
            thousands(t.shed),
            pct(t.shed, t.requests),
            thousands(t.shed_with_retry_after),
            thousands(t.shed - t.shed_with_retry_after)
        ),
    )
}

fn probe_finding(d: &RunData) -> Option<Finding> {
    d.probe.as_ref().map(|p| {
        finding(
            "health probe",
            format!(
                "p50 {} · p99 {} · max {} · {} failed polls",
                fmt_us(p.latency.p50_us),
                fmt_us(p.latency.p99_us),
                fmt_us(p.latency.max_us),
                p.failures
            ),
        )
    })
}

/// The index of the first and last series row with measured data (after warm-ups).
fn measured_rows(d: &RunData) -> (usize, usize) {
    let from = d
        .phases
        .iter()
        .filter(|p| p.mode != "pause" && p.name != "warm-up")
        .map(|p| p.measured_from_s)
        .fold(f64::MAX, f64::min);
    let from = if from == f64::MAX { 0.0 } else { from };
    (from.ceil() as usize, d.series.len())
}

fn judge(scenario: Scenario, ctx: &Ctx<'_>, d: &RunData) -> Verdict {
    let a = ctx.args;
    let t = &d.totals;
    let mut bars = Vec::new();
    let mut findings = vec![finding(
        "throughput",
        format!(
            "{:.0} req/s ({} requests in {:.1} s measured)",
            d.rps,
            thousands(t.requests),
            d.measured_seconds
        ),
    )];
    let mut notes = Vec::new();
    match scenario {
        Scenario::Concurrency => {
            let handled = pct(t.handled(), t.requests);
            bars.push(bar(
                "non-error responses (shed counts as handled)",
                "≥ 99.9 %",
                format!(
                    "{handled:.3} % ({} errors of {})",
                    thousands(t.errors),
                    thousands(t.requests)
                ),
                t.requests > 0 && handled >= 99.9,
            ));
            bars.push(timeouts_bar(d));
            findings.push(finding(
                "ok (2xx)",
                format!("{:.2} %", pct(t.ok, t.requests)),
            ));
            findings.push(shed_finding(d));
        }
        Scenario::Sustained => {
            let bad = t.errors + t.timeouts;
            let rate = pct(bad, t.requests);
            bars.push(bar(
                "error rate (errors + timeouts)",
                "≤ 0.1 %",
                format!(
                    "{rate:.3} % ({} of {})",
                    thousands(bad),
                    thousands(t.requests)
                ),
                t.requests > 0 && rate <= 0.1,
            ));
            let (from, to) = measured_rows(d);
            let span = to.saturating_sub(from);
            let window = if span >= 180 { 60 } else { (span / 5).max(1) };
            let first = d.ok_latency_between(from, from + window);
            let last = d.ok_latency_between(to.saturating_sub(window), to);
            // Sub-millisecond p99s jitter by more than 1.5× on a shared machine without
            // meaning anything: the base is taken as at least 1 ms. A p99 of fewer than
            // 1,000 samples rests on a handful of requests: such windows (short runs) get
            // 5 ms of slack on top, and the target says so.
            let base = first.p99_us.max(1_000);
            let few = first.count.min(last.count) < 1_000;
            let slack = if few { 5_000 } else { 0 };
            let ratio = last.p99_us as f64 / base as f64;
            bars.push(bar(
                &format!("p99 stable: last {window} s vs first {window} s"),
                if few {
                    "≤ 1.5× + 5 ms (first taken as ≥ 1 ms; < 1,000 samples per window)"
                } else {
                    "≤ 1.5× (first taken as ≥ 1 ms)"
                },
                format!(
                    "{} vs {} → {ratio:.2}× ({} and {} samples)",
                    fmt_us(last.p99_us),
                    fmt_us(first.p99_us),
                    thousands(last.count),
                    thousands(first.count)
                ),
                first.count > 0
                    && last.count > 0
                    && last.p99_us as f64 <= 1.5 * base as f64 + slack as f64,
            ));
            let want = a.rate.unwrap_or(100.0);
            findings.push(finding(
                "achieved rate",
                format!("{:.1} req/s of {want} asked", d.rps),
            ));
            findings.push(shed_finding(d));
        }
        Scenario::MemoryPressure => {
            bars.push(bar(
                "errors (unexpected statuses, failed connections)",
                "0",
                thousands(t.errors),
                t.errors == 0,
            ));
            bars.push(timeouts_bar(d));
            let ready = ready_after(ctx);
            bars.push(bar(
                "server ready afterwards (GET /readyz)",
                "200 within 10 s",
                ready.clone().unwrap_or_else(|e| e),
                ready.is_ok(),
            ));
            for w in &d.workloads {
                let statuses: Vec<String> = w
                    .statuses
                    .iter()
                    .map(|(s, n)| format!("{s} × {}", thousands(*n)))
                    .collect();
                findings.push(finding(
                    &w.name,
                    format!(
                        "{} requests: {}",
                        thousands(w.counts.requests),
                        if statuses.is_empty() {
                            "no answers".into()
                        } else {
                            statuses.join(", ")
                        }
                    ),
                ));
            }
        }
        Scenario::Exhaustion => {
            bars.push(timeouts_bar(d));
            findings.push(finding(
                "answers",
                format!(
                    "{} ok, {} shed, {} errors ({} without a response)",
                    thousands(t.ok),
                    thousands(t.shed),
                    thousands(t.errors),
                    thousands(t.conn_errors)
                ),
            ));
            findings.push(shed_finding(d));
        }
        Scenario::Scale => {
            let mut total_bad = 0;
            let mut parts = Vec::new();
            for p in d.phases.iter().skip(1) {
                // A transition: from a second before the step starts to a second after its
                // ramp ends.
                let ramp = a
                    .ramp
                    .unwrap_or(ctx.pick(Duration::from_secs(10), Duration::from_secs(1)));
                let from = (p.start_s - 1.0).max(0.0).floor() as usize;
                let to = (p.start_s + ramp.as_secs_f64() + 1.0).ceil() as usize;
                let s = d.seconds_between(from, to);
                let bad = s.errors + s.timeouts;
                total_bad += bad;
                parts.push(format!("{}: {bad}", p.name));
            }
            bars.push(bar(
                "errors + timeouts at transitions (±1 s around each ramp)",
                "0",
                format!("{total_bad} ({})", parts.join(", ")),
                total_bad == 0,
            ));
            findings.push(finding(
                "errors overall",
                format!(
                    "{} errors, {} timeouts",
                    thousands(t.errors),
                    thousands(t.timeouts)
                ),
            ));
            match memory_check(d, a.rss_bound_mb) {
                Some((pass, measured)) => bars.push(bar(
                    "server anonymous memory after scale-down",
                    &format!("≤ baseline + {} MiB", a.rss_bound_mb),
                    measured,
                    pass,
                )),
                None => notes.push(
                    "Memory was not checked: pass --pid with the server's process id when it runs on this machine.".into(),
                ),
            }
        }
        Scenario::Chaos => {
            bars.push(timeouts_bar(d));
            let kill = d.events.first();
            match kill {
                Some(e) if e.ok => {
                    let kill_s = e.at_s.floor() as usize;
                    // Recovery: the first second after the kill with answers and no errors.
                    let recovered = d
                        .series
                        .iter()
                        .skip(kill_s + 1)
                        .find(|s| s.ok > 0 && s.errors == 0 && s.timeouts == 0)
                        .map(|s| s.t as usize);
                    let (from, to) = measured_rows(d);
                    match recovered {
                        Some(r) => {
                            let secs = r as f64 + 1.0 - e.at_s;
                            bars.push(bar(
                                "recovered after the SIGKILL (first clean second)",
                                &format!("within {:?}", a.recovery_bound),
                                format!("{secs:.1} s"),
                                secs <= a.recovery_bound.as_secs_f64(),
                            ));
                            let window = d.seconds_between(kill_s, r + 1);
                            findings.push(finding(
                                "around the restart",
                                format!(
                                    "{} errors ({}), {} timeouts, {} ok between {kill_s} s and {} s",
                                    thousands(window.errors),
                                    d.failure_kinds
                                        .iter()
                                        .map(|(k, n)| format!("{k} × {n}"))
                                        .collect::<Vec<_>>()
                                        .join(", "),
                                    thousands(window.timeouts),
                                    thousands(window.ok),
                                    r + 1
                                ),
                            ));
                            let before = d.seconds_between(from, kill_s);
                            let after = d.seconds_between(r + 1, to);
                            let outside =
                                before.errors + before.timeouts + after.errors + after.timeouts;
                            let n = before.total() + after.total();
                            bars.push(bar(
                                "error rate outside the restart window",
                                "≤ 0.1 %",
                                format!("{:.3} % ({outside} of {})", pct(outside, n), thousands(n)),
                                n > 0 && pct(outside, n) <= 0.1,
                            ));
                        }
                        None => bars.push(bar(
                            "recovered after the SIGKILL (first clean second)",
                            &format!("within {:?}", a.recovery_bound),
                            "never: no clean second after the kill".into(),
                            false,
                        )),
                    }
                }
                Some(e) => bars.push(bar("kill command", "runs", e.detail.clone(), false)),
                None => {}
            }
            findings.push(finding(
                "errors overall",
                format!(
                    "{} ({:.2} %): {} error statuses, {} without a response",
                    thousands(t.errors),
                    pct(t.errors, t.requests),
                    thousands(t.http_errors),
                    thousands(t.conn_errors)
                ),
            ));
            findings.push(finding(
                "degraded answers",
                format!(
                    "{} ({:.2} % of 2xx)",
                    thousands(t.degraded),
                    pct(t.degraded, t.ok)
                ),
            ));
            findings.push(shed_finding(d));
            breaker_check(d, &mut bars, &mut notes);
        }
    }
    match &d.breaker {
        Some(b) if b.exported => findings.push(finding(
            "circuit breaker",
            report::breaker_summary(b, d.injected_faults.as_ref()),
        )),
        Some(b) => notes.push(format!(
            "No circuit breaker figures in this report: {}.",
            b.note
                .as_deref()
                .unwrap_or("the server exports no breaker metrics")
        )),
        None => {}
    }
    if let Some(f) = probe_finding(d) {
        findings.push(f);
    }
    findings.push(finding(
        "latency of 2xx",
        format!(
            "p50 {} · p90 {} · p99 {} · p99.9 {} · max {}",
            fmt_us(d.latency.ok.p50_us),
            fmt_us(d.latency.ok.p90_us),
            fmt_us(d.latency.ok.p99_us),
            fmt_us(d.latency.ok.p999_us),
            fmt_us(d.latency.ok.max_us)
        ),
    ));
    if t.rejected > 0 && scenario != Scenario::MemoryPressure {
        notes.push(format!(
            "{} queries were refused as invalid input (400): raw query files such as the web queries hold some invalid syntax; they count as 'rejected' (handled), not as errors.",
            thousands(t.rejected)
        ));
    }
    if d.failure_kinds.keys().any(|k| k.contains("open files")) {
        notes.push("Some connections failed with 'too many open files': raise the open-files limit (ulimit -n) of the load generator or the server.".into());
    }
    Verdict {
        bars,
        findings,
        notes,
    }
}

/// chaos: with faults injected, the breaker must have opened and closed again during the run
/// (as the server's metrics counted it). Skipped with a note when the server's metrics do not
/// tell (not polled, protected, or without breaker or chaos-layer counters).
fn breaker_check(d: &RunData, bars: &mut Vec<Bar>, notes: &mut Vec<String>) {
    let Some(b) = &d.breaker else {
        notes.push(
            "The breaker check was skipped: the server's metrics were not polled (--metrics \"\")."
                .into(),
        );
        return;
    };
    if !b.exported {
        notes.push("The breaker check was skipped for lack of breaker figures.".into());
        return;
    }
    match &d.injected_faults {
        Some(f) if f.errors + f.panics > 0 => bars.push(bar(
            "breaker opened and closed during the faults",
            "opened ≥ 1 and closed ≥ 1",
            format!(
                "opened {}, closed {} ({} errors injected)",
                thousands(b.opened_total),
                thousands(b.closed_total),
                thousands(f.errors + f.panics)
            ),
            b.opened_total > 0 && b.closed_total > 0,
        )),
        Some(_) => notes.push(
            "The chaos layer injected no errors during the run: the breaker check does not apply.".into(),
        ),
        None => notes.push(format!(
            "The server exports no chaos-layer counters ({}): whether faults were injected is unknown, so the breaker check was skipped.",
            load::CHAOS_INJECTED
        )),
    }
}

/// Anonymous memory at the end of the first step (baseline) vs the end of the run.
fn memory_check(d: &RunData, bound_mb: u64) -> Option<(bool, String)> {
    let first = d.phases.first()?;
    let samples = |from: f64, to: f64| -> Vec<u64> {
        d.series
            .iter()
            .filter(|s| (s.t as f64) >= from && (s.t as f64 + 1.0) <= to + 1.0)
            .filter_map(|s| s.rss_anon_kib)
            .collect()
    };
    let base = samples(first.measured_from_s, first.end_s);
    let last = d.phases.last()?;
    let end = samples(last.end_s - (last.end_s - last.start_s) / 3.0, last.end_s);
    let peak = d.series.iter().filter_map(|s| s.rss_anon_kib).max()?;
    let baseline = *base.iter().max()?;
    let after = *end.iter().min()?;
    let allowed = baseline + bound_mb * 1024;
    Some((
        after <= allowed,
        format!(
            "baseline {:.1} MiB → peak {:.1} MiB → after {:.1} MiB",
            baseline as f64 / 1024.0,
            peak as f64 / 1024.0,
            after as f64 / 1024.0
        ),
    ))
}

fn ready_after(ctx: &Ctx<'_>) -> std::result::Result<String, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        match testkit::http::get(ctx.addr, "/readyz", Duration::from_secs(2)) {
            Ok(r) if r.status == 200 => return Ok("200".into()),
            Ok(r) => last = format!("{}", r.status),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("not ready: {last}"))
}

/// Creates the scratch index for batches (an existing one is reused).
fn prepare_scratch(ctx: &Ctx<'_>) -> Result<()> {
    let body = format!("{{\"name\":\"{SCRATCH_INDEX}\"}}");
    let r = ctx
        .call("POST", "/v1/indexes", body.as_bytes())
        .context("cannot create the scratch index")?;
    match r.status {
        200 | 201 | 409 => Ok(()),
        401 | 403 => bail!(
            "memory-pressure writes document batches into {SCRATCH_INDEX}: give an admin key with --key (the server answered {}: {})",
            r.status,
            r.text().trim()
        ),
        s => bail!(
            "cannot create the scratch index {SCRATCH_INDEX}: {s} {}",
            r.text().trim()
        ),
    }
}

fn run_scenario(
    scenario: Scenario,
    addr: SocketAddr,
    index: &str,
    args: &BenchHttpArgs,
    runtime: &tokio::runtime::Runtime,
) -> Result<ExitCode> {
    let (queries, source) = scenario_queries(args)?;
    let ctx = Ctx {
        addr,
        host: args
            .url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("")
            .to_string(),
        index,
        args,
        quick: args.quick,
        queries,
    };
    // Fail fast, before minutes of load, when the target is not there at all.
    let r = ctx
        .call("GET", &search_path(index, "a", 1), &[])
        .with_context(|| format!("cannot reach {}", args.url))?;
    if r.status == 401 || r.status == 403 {
        bail!(
            "{} answered {} to a search: give a key with --key",
            args.url,
            r.status
        );
    }
    if r.status == 404 {
        bail!(
            "{} has no index {index:?} (choose one with --target-index): {}",
            args.url,
            r.text().trim()
        );
    }
    if scenario == Scenario::MemoryPressure {
        prepare_scratch(&ctx)?;
    }
    let mut built = build(scenario, &ctx)?;
    let most_users = built
        .plan
        .workloads
        .iter()
        .flat_map(|w| &w.phases)
        .map(|p| match p.mode {
            Mode::Closed { from, users, .. } => from.max(users),
            Mode::Open { connections, .. } => connections,
            Mode::Pause => 0,
        })
        .max()
        .unwrap_or(0);
    if let Some(limit) = open_files_limit()
        && limit < most_users as u64 + 64
    {
        eprintln!(
            "bench-http: warning: the open-files limit ({limit}) is below the {most_users} connections this scenario opens; raise it with `ulimit -n`"
        );
    }
    built.settings.insert(
        0,
        (
            "queries".into(),
            format!("{source} ({})", thousands(ctx.queries.len() as u64)),
        ),
    );
    built
        .settings
        .push(("client timeout".into(), format!("{:?}", args.timeout)));
    if let Some(pid) = args.pid {
        built
            .settings
            .push(("server pid (memory sampled)".into(), pid.to_string()));
    }
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    eprintln!(
        "bench-http: {}{} against {} (index {index}): {}",
        scenario.name(),
        if args.quick { " (quick)" } else { "" },
        args.url,
        built.description
    );
    let plan = std::mem::replace(&mut built.plan, base_plan(&ctx, Vec::new()));
    let data = runtime
        .block_on(load::run_plan(plan))
        .context("load run failed")?;
    if scenario == Scenario::MemoryPressure && !args.keep_index {
        match ctx.call("DELETE", &format!("/v1/indexes/{SCRATCH_INDEX}"), &[]) {
            Ok(r) if r.status < 300 || r.status == 404 => {}
            Ok(r) => eprintln!(
                "bench-http: could not delete {SCRATCH_INDEX}: {} {}",
                r.status,
                r.text().trim()
            ),
            Err(e) => eprintln!("bench-http: could not delete {SCRATCH_INDEX}: {e}"),
        }
    }
    let verdict = judge(scenario, &ctx, &data);
    let mut notes = built.notes;
    notes.extend(verdict.notes);
    let pass = verdict.bars.iter().all(|b| b.pass);
    let rep = Report {
        schema: report::SCHEMA,
        scenario: scenario.name().into(),
        description: built.description,
        quick: args.quick,
        url: args.url.clone(),
        index: index.into(),
        started_unix_s: started,
        started_at: report::iso8601(started),
        settings: built.settings,
        pass,
        bars: verdict.bars,
        findings: verdict.findings,
        notes,
        run: data,
    };
    let dir = args.report_dir.clone().unwrap_or_else(|| {
        PathBuf::from("ironsift-reports").join(format!(
            "{}-{}",
            scenario.name(),
            report::iso8601(started)
                .replace([':', '-'], "")
                .trim_end_matches('Z')
        ))
    });
    let json = serde_json::to_string_pretty(&rep)?;
    let (json_path, html_path) = report::write(&dir, &rep, &json)
        .with_context(|| format!("cannot write the report into {}", dir.display()))?;
    if args.json {
        println!("{json}");
    }
    print_summary(&rep);
    eprintln!("report: {}", html_path.display());
    eprintln!("report: {}", json_path.display());
    Ok(if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_BAR_FAILED)
    })
}

/// The human summary, on stderr when the JSON goes to stdout.
fn print_summary(r: &Report) {
    let t = &r.run.totals;
    let l = &r.run.latency.ok;
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "{}{}: {:.0} req/s over {:.1} s · {} requests: {} ok, {} shed ({} with Retry-After), {} rejected, {} errors, {} timeouts · 2xx p50 {} p99 {} max {}",
        r.scenario,
        if r.quick { " (quick)" } else { "" },
        r.run.rps,
        r.run.measured_seconds,
        thousands(t.requests),
        thousands(t.ok),
        thousands(t.shed),
        thousands(t.shed_with_retry_after),
        thousands(t.rejected),
        thousands(t.errors),
        thousands(t.timeouts),
        fmt_us(l.p50_us),
        fmt_us(l.p99_us),
        fmt_us(l.max_us)
    );
    for f in &r.findings {
        let _ = writeln!(out, "  {}: {}", f.name, f.value);
    }
    for b in &r.bars {
        let _ = writeln!(
            out,
            "  [{}] {}: {} (target {})",
            if b.pass { "PASS" } else { "FAIL" },
            b.name,
            b.measured,
            b.target
        );
    }
    let _ = writeln!(
        out,
        "{}: {}",
        r.scenario,
        if r.pass { "PASS" } else { "FAIL" }
    );
    if r.run.totals.requests == 0 {
        let _ = writeln!(out, "  (no requests completed)");
    }
    eprint!("{out}");
}
