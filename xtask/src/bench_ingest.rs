//! `cargo xtask bench-ingest`: bulk NDJSON ingest over HTTP against plain Tantivy's in-process
//! indexing measured in the same run, and the time to ready after a crash with a full log.
//!
//! 1. Plain Tantivy: Criterion's `index_json/plain_tantivy` from `benches/core.rs` on
//!    `linux-docs.jsonl` (serde_json per line, `_id` STRING|STORED and `title`, `text`
//!    TEXT|STORED, Tantivy's default threads, 256 MiB heap, one commit; merges not waited for;
//!    one warm-up iteration, then 10 samples in the same process).
//! 2. ironsift: a fresh data folder, `ironsift serve` in release with `--durability request`,
//!    then `async`; an index with the explicit schema holding the same fields (`title`, `text`
//!    as text; `_id` is the id, as plain Tantivy's STRING field); the file is POSTed as
//!    `application/x-ndjson` in bodies of about 4 MiB by 3 concurrent clients, then one
//!    `POST /v1/indexes/<index>/commit`. MB/s is the file's size over the time from the first
//!    byte sent to the commit's answer. As Criterion warms plain Tantivy up, each server first
//!    ingests the file once into an index that is then deleted (reported as the cold figure,
//!    not judged), then once into a fresh index (measured).
//! 3. The two are interleaved in rounds, because this machine's speed drifts by 10-15 % over
//!    a minute (other tenants): plain Tantivy, then per round one `request` and one `async`
//!    server followed by plain Tantivy again. Each server run is compared with the mean of the
//!    plain medians just before and after it; the ratio judged is the median of the runs over
//!    the median of those paired baselines.
//! 4. Restart: a default (schemaless) documents index, `--refresh-interval 1h` so nothing is
//!    committed, N generated documents of about 1.5 KB (default 100,000) POSTed the same way,
//!    SIGKILL, then the time from starting the binary again to `/readyz` answering 200 (the
//!    log replayed and committed), and the document count checked. Each run restarts a copy
//!    of the same killed data folder.
//!
//! Loopback only; every child is killed if a step fails or outlasts its bound.
//! `cargo xtask bench` runs the same steps as its `ingest` part ([`part`]); `--quick` makes one
//! round and one restart with 25,000 documents.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::http::request as http;
use crate::json::{self, Json};
use crate::summary::{self, Target, Unit};
use crate::{Result, bench, cargo, corpus, fmt_duration, report, run_status, show, target_dir};

const INDEX: &str = "x";
/// The index of a server's first (warm-up) ingest, deleted before the measured one.
const WARMUP_INDEX: &str = "warmup";
/// The fields plain Tantivy indexes (the id is ironsift's `_id`, a STRING field as there).
const SCHEMA: &str = r#"{"fields":[{"name":"title","type":"text"},{"name":"text","type":"text"}]}"#;
/// Request bodies are cut at the first line end past this size.
const BATCH_BYTES: usize = 4 << 20;
const CLIENTS: usize = 3;
/// Targets (issue #5).
const MIN_RATIO_REQUEST: f64 = 0.70;
const MIN_RATIO_ASYNC: f64 = 0.85;
const MAX_READY_SECS: f64 = 10.0;
/// Bound on one HTTP request (a 4 MiB batch with an fsync is far below it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How much to measure.
pub(crate) struct Settings {
    /// Rounds (one HTTP ingest server per durability each), and restarts.
    pub(crate) runs: usize,
    /// Un-committed documents in the log at the kill.
    pub(crate) restart_docs: usize,
}

impl Settings {
    /// The full form (3 rounds, 2 restarts of 100,000 documents) or the quick one (1, 1 of
    /// 25,000).
    pub(crate) fn new(quick: bool) -> Settings {
        if quick {
            Settings {
                runs: 1,
                restart_docs: 25_000,
            }
        } else {
            Settings {
                runs: 3,
                restart_docs: 100_000,
            }
        }
    }
}

fn parse_args(args: &[String]) -> Result<(PathBuf, Settings)> {
    let mut rest = Vec::new();
    let mut runs = None;
    let mut restart_docs = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<usize> {
            let v = it.next().ok_or_else(|| format!("{name} needs a number"))?;
            v.replace(['_', ','], "")
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} must be a positive integer, not {v:?}"))
        };
        match arg.as_str() {
            "--runs" => runs = Some(number("--runs")?),
            "--restart-docs" => restart_docs = Some(number("--restart-docs")?),
            _ => rest.push(arg.clone()),
        }
    }
    let opts = bench::parse_args(&rest)?;
    if opts.check || opts.only.is_some() || !opts.criterion_args.is_empty() {
        return Err("bench-ingest takes --quick, --data DIR, --runs N and --restart-docs N".into());
    }
    let mut settings = Settings::new(opts.quick);
    settings.runs = runs.unwrap_or(settings.runs);
    settings.restart_docs = restart_docs.unwrap_or(settings.restart_docs);
    Ok((opts.data, settings))
}

fn number_in(body: &str, key: &str) -> Option<f64> {
    json::parse(body).ok()?.get(key)?.as_f64()
}

// ---------------------------------------------------------------------------------------------
// The server child.

struct Server {
    child: Child,
    addr: SocketAddr,
    started: Instant,
}

impl Server {
    /// Starts `ironsift --data DATA serve ARGS` on a free loopback port; returns once it prints
    /// its address (not waiting for readiness). Its stderr goes to `DATA/../NAME.log`.
    fn spawn(bin: &Path, data: &Path, args: &[&str]) -> Result<Server> {
        let log = data.with_extension("log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--data")
            .arg(data)
            .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn"])
            .args(args)
            .stderr(stderr);
        let started = Instant::now();
        let (child, addr) =
            crate::server::spawn_listening(&mut cmd, Duration::from_secs(60), Some(&log))?;
        Ok(Server {
            child,
            addr,
            started,
        })
    }

    /// Polls `/readyz` every 10 ms until 200; the time since the process was started.
    fn wait_ready(&mut self, limit: Duration) -> Result<Duration> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the server exited before it was ready ({status})"));
            }
            if let Ok((200, _)) = http(self.addr, "GET", "/readyz", "text/plain", b"", limit) {
                return Ok(self.started.elapsed());
            }
            if self.started.elapsed() > limit {
                return Err(format!(
                    "{}/readyz did not answer 200 within {}",
                    self.addr,
                    fmt_duration(limit)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls `/readyz` every 10 ms until the write-ahead log is replayed and committed (its
    /// `recovery` and `writers` checks pass), then until it answers 200. Returns both times
    /// since the process was started; the second is `Err(detail)` when only checks unrelated
    /// to recovery (e.g. a shared disk above its threshold) keep it unready after `grace`.
    fn wait_recovered(
        &mut self,
        limit: Duration,
        grace: Duration,
    ) -> Result<(Duration, std::result::Result<Duration, String>)> {
        let mut recovered = None;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the server exited before it was ready ({status})"));
            }
            if let Ok((status, body)) = http(self.addr, "GET", "/readyz", "text/plain", b"", limit)
            {
                let at = self.started.elapsed();
                if status == 200 {
                    return Ok((recovered.unwrap_or(at), Ok(at)));
                }
                let checks = match json::parse(&body)
                    .ok()
                    .and_then(|j| j.get("checks").cloned())
                {
                    Some(Json::Arr(cs)) => cs,
                    _ => Vec::new(),
                };
                let passes = |name: &str| {
                    checks.iter().any(|c| {
                        matches!(c.get("name"), Some(Json::Str(n)) if n == name)
                            && matches!(c.get("status"), Some(Json::Str(s)) if s == "pass")
                    })
                };
                if recovered.is_none() && passes("recovery") && passes("writers") {
                    recovered = Some(at);
                }
                if let Some(r) = recovered
                    && at > r + grace
                {
                    let failing: Vec<String> = checks
                        .iter()
                        .filter(|c| !matches!(c.get("status"), Some(Json::Str(s)) if s != "fail"))
                        .map(|c| {
                            let field = |k: &str| match c.get(k) {
                                Some(Json::Str(s)) => s.clone(),
                                _ => "?".into(),
                            };
                            format!("{}: {}", field("name"), field("detail"))
                        })
                        .collect();
                    return Ok((r, Err(failing.join("; "))));
                }
            }
            if self.started.elapsed() > limit {
                return Err(format!(
                    "{}: the log was not replayed within {}",
                    self.addr,
                    fmt_duration(limit)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&mut self, name: &str) -> Result<()> {
        run_status(Command::new("kill").args(["-s", name, &self.child.id().to_string()]))
    }

    /// SIGTERM and wait (bounded); SIGKILL if it does not exit.
    fn stop(mut self) -> Result<()> {
        self.signal("TERM")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("the server exited with {status} after SIGTERM"))
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("the server did not exit within 60 s of SIGTERM".into())
    }

    fn crash(mut self) -> Result<()> {
        self.child
            .kill()
            .map_err(|e| format!("cannot SIGKILL the server: {e}"))?;
        self.child
            .wait()
            .map_err(|e| format!("cannot reap the server: {e}"))?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ingest.

/// `bytes` cut into request bodies of about [`BATCH_BYTES`] at line ends; with the number of
/// non-blank lines.
fn batches(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        let mut end = (start + BATCH_BYTES).min(bytes.len());
        while end < bytes.len() && bytes[end - 1] != b'\n' {
            end += 1;
        }
        out.push(&bytes[start..end]);
        start = end;
    }
    let lines = bytes
        .split(|b| *b == b'\n')
        .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
        .count();
    (out, lines)
}

/// POSTs every batch to `index` with [`CLIENTS`] concurrent clients; the documents indexed.
fn post_all(addr: SocketAddr, index: &str, batches: &[&[u8]]) -> Result<u64> {
    let next = AtomicUsize::new(0);
    let indexed = Mutex::new(0u64);
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = batches.get(i) else { break };
                    let path = format!("/v1/indexes/{index}/documents");
                    let r = http(
                        addr,
                        "POST",
                        &path,
                        "application/x-ndjson",
                        body,
                        REQUEST_TIMEOUT,
                    );
                    match r {
                        Ok((200, text)) if number_in(&text, "failed") == Some(0.0) => {
                            *indexed.lock().unwrap() +=
                                number_in(&text, "indexed").unwrap_or(0.0) as u64;
                        }
                        Ok((status, text)) => errors.lock().unwrap().push(format!(
                            "batch {i}: {status} {}",
                            text.chars().take(300).collect::<String>()
                        )),
                        Err(e) => errors.lock().unwrap().push(format!("batch {i}: {e}")),
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap();
    if !errors.is_empty() {
        return Err(format!(
            "{} ingest request(s) failed, e.g. {}",
            errors.len(),
            errors[0]
        ));
    }
    Ok(indexed.into_inner().unwrap())
}

fn create_index(addr: SocketAddr, index: &str, schema: bool) -> Result<()> {
    let body = if schema {
        format!(r#"{{"name":"{index}","schema":{SCHEMA}}}"#)
    } else {
        format!(r#"{{"name":"{index}"}}"#)
    };
    match http(
        addr,
        "POST",
        "/v1/indexes",
        "application/json",
        body.as_bytes(),
        REQUEST_TIMEOUT,
    ) {
        Ok((201, _)) => Ok(()),
        Ok((status, text)) => Err(format!("creating the index: {status} {text}")),
        Err(e) => Err(format!("creating the index: {e}")),
    }
}

/// Committed documents of `index` (`GET /v1/indexes/{index}`).
fn committed_docs(addr: SocketAddr, index: &str) -> Result<u64> {
    let (status, text) = http(
        addr,
        "GET",
        &format!("/v1/indexes/{index}"),
        "application/json",
        b"",
        REQUEST_TIMEOUT,
    )
    .map_err(|e| format!("GET /v1/indexes/{index}: {e}"))?;
    match (status, number_in(&text, "docs")) {
        (200, Some(n)) => Ok(n as u64),
        _ => Err(format!("GET /v1/indexes/{index}: {status} {text}")),
    }
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let _ = std::fs::remove_file(dir.with_extension("log"));
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// One server's figures: its first ingest (cold process) and the measured one after it.
#[derive(Debug, Clone, Copy)]
struct HttpRun {
    cold_mbs: f64,
    mbs: f64,
}

/// Creates `index`, POSTs the file into it and commits: MB/s (decimal) of the file, from the
/// first byte sent to the commit answered.
fn ingest_once(
    server: &Server,
    index: &str,
    file_bytes: usize,
    batches: &[&[u8]],
    lines: usize,
) -> Result<(f64, Duration)> {
    create_index(server.addr, index, true)?;
    let t = Instant::now();
    let indexed = post_all(server.addr, index, batches)?;
    let (status, text) = http(
        server.addr,
        "POST",
        &format!("/v1/indexes/{index}/commit"),
        "application/json",
        b"",
        REQUEST_TIMEOUT,
    )
    .map_err(|e| format!("commit: {e}"))?;
    let took = t.elapsed();
    if status != 200 {
        return Err(format!("commit: {status} {text}"));
    }
    if indexed != lines as u64 {
        return Err(format!(
            "{indexed} documents indexed, the file has {lines} lines"
        ));
    }
    let docs = committed_docs(server.addr, index)?;
    if docs != lines as u64 {
        return Err(format!(
            "{docs} documents committed, the file has {lines} lines"
        ));
    }
    Ok((file_bytes as f64 / 1e6 / took.as_secs_f64(), took))
}

/// One server: a warm-up ingest into an index deleted afterwards, then the measured one.
fn ingest_run(
    bin: &Path,
    work: &Path,
    durability: &str,
    round: usize,
    file_bytes: usize,
    batches: &[&[u8]],
    lines: usize,
) -> Result<HttpRun> {
    let data = work.join(format!("ingest-{durability}-{round}"));
    fresh_dir(&data)?;
    let mut server = Server::spawn(bin, &data, &["--durability", durability])?;
    server.wait_ready(Duration::from_secs(60))?;
    let (cold_mbs, _) = ingest_once(&server, WARMUP_INDEX, file_bytes, batches, lines)?;
    match http(
        server.addr,
        "DELETE",
        &format!("/v1/indexes/{WARMUP_INDEX}"),
        "application/json",
        b"",
        REQUEST_TIMEOUT,
    ) {
        Ok((200 | 204, _)) => {}
        Ok((status, text)) => return Err(format!("deleting the warm-up index: {status} {text}")),
        Err(e) => return Err(format!("deleting the warm-up index: {e}")),
    }
    let load = load_average();
    let (mbs, took) = ingest_once(&server, INDEX, file_bytes, batches, lines)?;
    server.stop()?;
    let _ = std::fs::remove_dir_all(&data);
    println!(
        "bench-ingest: durability={durability} round {round}: {lines} docs, {:.1} MB in {} → \
         {mbs:.1} MB/s (the server's first ingest: {cold_mbs:.1} MB/s; load average before: \
         {load})",
        file_bytes as f64 / 1e6,
        fmt_duration(took)
    );
    Ok(HttpRun { cold_mbs, mbs })
}

// ---------------------------------------------------------------------------------------------
// Plain Tantivy baseline.

struct Baseline {
    /// MB/s of each Criterion sample.
    samples: Vec<f64>,
    noisy: Option<String>,
}

fn run_baseline(data: &Path, report_dir: &Path) -> Result<Baseline> {
    let criterion_home = target_dir().join("criterion");
    let notes = report_dir.join("ingest-notes.json");
    let _ = std::fs::remove_file(&notes);
    let mut cmd = cargo([
        "bench",
        "-p",
        "ironsift",
        "--bench",
        "core",
        "--",
        "index_json/plain_tantivy$",
    ]);
    cmd.env("IRONSIFT_BENCH_DATA", data)
        .env("IRONSIFT_BENCH_NOTES", &notes)
        .env("CRITERION_HOME", &criterion_home)
        .env_remove("IRONSIFT_BENCH_QUICK");
    println!("==> {}", show(&cmd));
    let since = SystemTime::now();
    run_status(&mut cmd)?;
    let m = report::read_measured(&criterion_home, "index_json", "plain_tantivy", since)?;
    let dir = criterion_home.join("index_json/plain_tantivy/new");
    let sample = std::fs::read_to_string(dir.join("sample.json"))
        .map_err(|e| format!("cannot read {}: {e}", dir.join("sample.json").display()))?;
    let sample = json::parse(&sample).map_err(|e| format!("sample.json: {e}"))?;
    let list = |key: &str| -> Vec<f64> {
        match sample.get(key) {
            Some(Json::Arr(items)) => items.iter().filter_map(Json::as_f64).collect(),
            _ => Vec::new(),
        }
    };
    let (iters, times) = (list("iters"), list("times"));
    let samples: Vec<f64> = iters
        .iter()
        .zip(&times)
        .filter(|(i, t)| **i > 0.0 && **t > 0.0)
        .map(|(i, t)| m.per_iteration / 1e6 / (t / i / 1e9))
        .collect();
    if samples.is_empty() {
        return Err("index_json/plain_tantivy: no samples".into());
    }
    let notes = std::fs::read_to_string(&notes)
        .ok()
        .and_then(|t| json::parse(&t).ok());
    let num = |key: &str| notes.as_ref()?.get(key)?.as_f64();
    let noisy = match (num("index_json.foreign_cpu_s"), num("index_json.wall_s")) {
        (Some(foreign), Some(wall)) if wall > 0.0 && foreign / wall > 0.2 => Some(format!(
            "other processes used {foreign:.1} CPU-s during the {wall:.0} s of the baseline"
        )),
        _ => None,
    };
    Ok(Baseline { samples, noisy })
}

// ---------------------------------------------------------------------------------------------
// Restart with a full log.

/// Deterministic documents of about 1.5 KB: a title and a text of words drawn Zipf-like from a
/// made-up vocabulary, as NDJSON.
fn generated_docs(n: usize) -> Vec<u8> {
    const SYLLABLES: [&str; 24] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pha", "dri", "gon", "ble", "stu",
        "xen", "qua", "mor", "tel", "vin", "das", "bro", "kel", "nu", "rho",
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let vocab: Vec<String> = (0..20_000)
        .map(|i: usize| {
            let mut w = String::new();
            let mut k = i + 1;
            while k > 0 {
                w.push_str(SYLLABLES[k % SYLLABLES.len()]);
                k /= SYLLABLES.len();
            }
            w
        })
        .collect();
    let word = |rank_bits: u64| {
        let u = (rank_bits >> 11) as f64 / (1u64 << 53) as f64;
        let rank = (((vocab.len() as f64 + 1.0).powf(u) - 1.0) as usize).min(vocab.len() - 1);
        vocab[rank].clone()
    };
    let mut out = Vec::with_capacity(n * 1600);
    for i in 0..n {
        let title: Vec<String> = (0..6).map(|_| word(next())).collect();
        let mut text = String::with_capacity(1500);
        while text.len() < 1400 {
            text.push_str(&word(next()));
            text.push(if next() % 12 == 0 { '.' } else { ' ' });
        }
        out.extend_from_slice(
            format!(
                "{{\"id\":\"g{i}\",\"title\":\"{}\",\"text\":\"{}\"}}\n",
                title.join(" "),
                text.trim_end()
            )
            .as_bytes(),
        );
    }
    out
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

struct Restart {
    docs: usize,
    wal_mb: f64,
    ingest: Duration,
    /// Start → log replayed and committed (`recovery` and `writers` checks pass), per run.
    recovered: Vec<Duration>,
    /// Start → `/readyz` 200, per run, or why it stayed 503 once recovered.
    ready: Vec<std::result::Result<Duration, String>>,
}

fn restart_bench(bin: &Path, work: &Path, n: usize, runs: usize) -> Result<Restart> {
    let args = ["--refresh-interval", "1h", "--durability", "request"];
    let killed = work.join("restart-killed");
    fresh_dir(&killed)?;
    let ndjson = generated_docs(n);
    let (batches, lines) = batches(&ndjson);
    println!(
        "bench-ingest: restart: {lines} generated documents ({:.1} MB, about {} bytes each), \
         schemaless index, --refresh-interval 1h",
        ndjson.len() as f64 / 1e6,
        ndjson.len() / lines.max(1)
    );
    let mut server = Server::spawn(bin, &killed, &args)?;
    server.wait_ready(Duration::from_secs(60))?;
    create_index(server.addr, INDEX, false)?;
    let t = Instant::now();
    let indexed = post_all(server.addr, INDEX, &batches)?;
    let ingest = t.elapsed();
    if indexed != n as u64 {
        return Err(format!("{indexed} of {n} documents indexed"));
    }
    let committed = committed_docs(server.addr, INDEX)?;
    if committed != 0 {
        return Err(format!(
            "{committed} documents were committed before the kill; the log would not hold them all"
        ));
    }
    server.crash()?;
    let wal_mb = dir_bytes(&killed.join(INDEX).join("wal")) as f64 / 1e6;
    println!(
        "bench-ingest: restart: {n} documents acknowledged in {} (none committed), log {wal_mb:.1} \
         MB; SIGKILL",
        fmt_duration(ingest)
    );
    let mut ready = Vec::new();
    let mut recovered = Vec::new();
    for run in 1..=runs {
        let data = work.join(format!("restart-{run}"));
        fresh_dir(&data)?;
        run_status(Command::new("cp").arg("-a").arg(&killed).arg(&data))?;
        let load = load_average();
        let mut server = Server::spawn(bin, &data, &args)?;
        let (rec, took) =
            server.wait_recovered(Duration::from_secs(300), Duration::from_secs(5))?;
        let docs = committed_docs(server.addr, INDEX)?;
        server.stop()?;
        let _ = std::fs::remove_dir_all(&data);
        if docs != n as u64 {
            return Err(format!(
                "after the restart the index holds {docs} documents, not {n}"
            ));
        }
        println!(
            "bench-ingest: restart run {run}: log replayed and committed after {}, /readyz 200 \
             {}, all {docs} documents there (load average before: {load})",
            fmt_duration(rec),
            match &took {
                Ok(t) => format!("after {}", fmt_duration(*t)),
                Err(why) => format!("never (still failing: {why})"),
            }
        );
        recovered.push(rec);
        ready.push(took);
    }
    let _ = std::fs::remove_dir_all(&killed);
    Ok(Restart {
        docs: n,
        wal_mb,
        ingest,
        recovered,
        ready,
    })
}

// ---------------------------------------------------------------------------------------------
// Report.

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn max(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::NAN, f64::max)
}

fn min(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::NAN, f64::min)
}

fn list(xs: &[f64]) -> String {
    let v: Vec<String> = xs.iter().map(|x| format!("{x:.1}")).collect();
    v.join(", ")
}

struct Row {
    check: String,
    measured: String,
    target: String,
    pass: bool,
    value: f64,
}

/// Everything one ingest benchmark measured.
pub(crate) struct Ingest {
    /// Plain Tantivy, before the first round and after each round.
    baselines: Vec<Baseline>,
    /// Per durability, one run per round.
    http: Vec<(&'static str, Vec<HttpRun>)>,
    runs: usize,
    restart_docs: usize,
    restart: Result<Restart>,
}

/// The bulk ingest rounds and the restart (the caller built `bin` and holds the run lock).
fn measure(bin: &Path, corpus: &Path, settings: &Settings, report_dir: &Path) -> Result<Ingest> {
    let jsonl = corpus.join("linux-docs.jsonl");
    let work = target_dir().join("bench-ingest");

    let bytes =
        std::fs::read(&jsonl).map_err(|e| format!("cannot read {}: {e}", jsonl.display()))?;
    let (parts, lines) = batches(&bytes);
    println!(
        "bench-ingest: {} ({:.1} MB, {lines} documents) in {} bodies of about {} MiB, {CLIENTS} \
         clients; {} round(s), plain Tantivy before and after each",
        jsonl.display(),
        bytes.len() as f64 / 1e6,
        parts.len(),
        BATCH_BYTES >> 20,
        settings.runs
    );
    let baseline = |at: &str| -> Result<Baseline> {
        let b = run_baseline(corpus, report_dir)?;
        println!(
            "bench-ingest: plain Tantivy in-process ({at}): {} MB/s per sample (median {:.1})",
            list(&b.samples),
            median(&b.samples)
        );
        Ok(b)
    };
    let mut baselines = vec![baseline("before round 1")?];
    let mut http: Vec<(&'static str, Vec<HttpRun>)> =
        vec![("request", Vec::new()), ("async", Vec::new())];
    for round in 1..=settings.runs {
        for (durability, runs) in &mut http {
            runs.push(ingest_run(
                bin,
                &work,
                durability,
                round,
                bytes.len(),
                &parts,
                lines,
            )?);
        }
        baselines.push(baseline(&format!("after round {round}"))?);
    }
    drop(bytes);

    // The ingest figures stand even if the restart cannot be measured.
    let restart = restart_bench(bin, &work, settings.restart_docs, settings.runs.min(2));
    if let Err(why) = &restart {
        eprintln!("bench-ingest: restart: {why}");
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(Ingest {
        baselines,
        http,
        runs: settings.runs,
        restart_docs: settings.restart_docs,
        restart,
    })
}

/// Figures of one durability against plain Tantivy measured around each run.
struct Paired {
    /// MB/s of the measured ingests, one per round.
    runs: Vec<f64>,
    /// The mean of the plain medians just before and just after each run.
    baselines: Vec<f64>,
    /// The servers' first ingests (cold process), not judged.
    cold: Vec<f64>,
}

impl Paired {
    fn ratio(&self) -> f64 {
        median(&self.runs) / median(&self.baselines)
    }

    fn per_round(&self) -> String {
        self.runs
            .iter()
            .zip(&self.baselines)
            .map(|(r, b)| format!("{r:.1}/{b:.1} = {:.2}", r / b))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn secs_list(xs: &[f64]) -> String {
    xs.iter()
        .map(|s| format!("{s:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn min_ratio(durability: &str) -> f64 {
    if durability == "request" {
        MIN_RATIO_REQUEST
    } else {
        MIN_RATIO_ASYNC
    }
}

impl Restart {
    fn recovered_s(&self) -> Vec<f64> {
        self.recovered.iter().map(Duration::as_secs_f64).collect()
    }

    fn ready_s(&self) -> Vec<f64> {
        self.ready
            .iter()
            .filter_map(|r| r.as_ref().ok().map(Duration::as_secs_f64))
            .collect()
    }

    /// Why runs stayed 503 once recovered.
    fn blocked(&self) -> Vec<&String> {
        self.ready.iter().filter_map(|r| r.as_ref().err()).collect()
    }
}

impl Ingest {
    fn restart_check(&self) -> String {
        format!(
            "restart with {} un-committed documents in the log: start → log replayed and \
             committed",
            self.restart_docs
        )
    }

    /// Plain Tantivy's median per invocation, in order.
    fn baseline_medians(&self) -> Vec<f64> {
        self.baselines.iter().map(|b| median(&b.samples)).collect()
    }

    fn paired(&self, runs: &[HttpRun]) -> Paired {
        let medians = self.baseline_medians();
        Paired {
            runs: runs.iter().map(|r| r.mbs).collect(),
            baselines: (0..runs.len())
                .map(|i| match (medians.get(i), medians.get(i + 1)) {
                    (Some(a), Some(b)) => (a + b) / 2.0,
                    (Some(a), None) => *a,
                    _ => f64::NAN,
                })
                .collect(),
            cold: runs.iter().map(|r| r.cold_mbs).collect(),
        }
    }

    /// Why the baseline may be off: other processes during it, or the machine's speed moving
    /// by more than 10 % between invocations.
    fn noisy(&self) -> Option<String> {
        let mut why: Vec<String> = self
            .baselines
            .iter()
            .filter_map(|b| b.noisy.clone())
            .collect();
        let medians = self.baseline_medians();
        let (lo, hi) = (min(&medians), max(&medians));
        if lo > 0.0 && hi / lo > 1.10 {
            why.push(format!(
                "plain Tantivy's medians moved from {lo:.1} to {hi:.1} MB/s between invocations \
                 ({})",
                list(&medians)
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }

    fn checks(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (durability, runs) in &self.http {
            let p = self.paired(runs);
            let ratio = p.ratio();
            let min_ratio = min_ratio(durability);
            rows.push(Row {
                check: format!(
                    "bulk NDJSON ingest over HTTP, durability={durability}, vs plain Tantivy \
                     in-process"
                ),
                measured: format!(
                    "median {:.1} vs {:.1} MB/s → ratio {ratio:.2} (per round, run/plain around \
                     it: {}; each server's first ingest, not judged: {} MB/s)",
                    median(&p.runs),
                    median(&p.baselines),
                    p.per_round(),
                    list(&p.cold)
                ),
                target: format!("ratio ≥ {min_ratio:.2}"),
                pass: ratio >= min_ratio,
                value: ratio,
            });
        }
        let restart = match &self.restart {
            Ok(r) => r,
            Err(why) => {
                rows.push(Row {
                    check: self.restart_check(),
                    measured: format!("not measured: {why}"),
                    target: format!("< {MAX_READY_SECS:.0} s"),
                    pass: false,
                    value: f64::NAN,
                });
                return rows;
            }
        };
        let (recovered_s, ready_s, blocked) =
            (restart.recovered_s(), restart.ready_s(), restart.blocked());
        rows.push(Row {
            check: self.restart_check(),
            measured: format!(
                "median {:.2} s (min {:.2} s; runs {}), log {:.0} MB",
                median(&recovered_s),
                min(&recovered_s),
                secs_list(&recovered_s),
                restart.wal_mb
            ),
            target: format!("< {MAX_READY_SECS:.0} s"),
            pass: median(&recovered_s) < MAX_READY_SECS,
            value: median(&recovered_s),
        });
        rows.push(Row {
            check: "the same: start → /readyz 200".into(),
            measured: if blocked.is_empty() {
                format!(
                    "median {:.2} s (min {:.2} s; runs {})",
                    median(&ready_s),
                    min(&ready_s),
                    secs_list(&ready_s)
                )
            } else {
                format!(
                    "{} of {} runs stayed 503 after recovery because of: {}",
                    blocked.len(),
                    restart.ready.len(),
                    blocked[0]
                )
            },
            target: format!("< {MAX_READY_SECS:.0} s"),
            pass: blocked.is_empty() && median(&ready_s) < MAX_READY_SECS,
            value: if blocked.is_empty() {
                median(&ready_s)
            } else {
                f64::NAN
            },
        });
        rows
    }

    /// The report without its title (also the part's details in the combined report).
    fn body(&self) -> String {
        let rows = self.checks();
        let mut md = String::from("| check | measured | target | result |\n|---|---|---|---|\n");
        for r in &rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                r.check,
                r.measured,
                r.target,
                if r.pass { "PASS" } else { "MISS" }
            );
        }
        let all = rows.iter().all(|r| r.pass);
        let _ = writeln!(
            md,
            "\nOverall: **{}**.\n",
            if all {
                "all targets met"
            } else {
                "some targets missed"
            }
        );
        let _ = writeln!(
            md,
            "- plain Tantivy: Criterion `index_json/plain_tantivy` (benches/core.rs): serde_json \
             per line, `_id` STRING|STORED, `title` and `text` TEXT|STORED, default writer \
             threads, 256 MiB heap, one commit; one warm-up iteration, 10 samples; run before \
             the first round and after each (medians {} MB/s)",
            list(&self.baseline_medians())
        );
        let _ = writeln!(
            md,
            "- ironsift: release `ironsift serve`, explicit schema with the same fields, {CLIENTS} \
             clients POSTing ~{} MiB NDJSON bodies, then one commit; time from the first byte \
             sent to the commit's answer; {} round(s), one server per durability in each: a \
             warm-up ingest into an index deleted afterwards (the cold figure), then the \
             measured one into a fresh index; each measured run is paired with the mean of the \
             plain medians before and after it",
            BATCH_BYTES >> 20,
            self.runs
        );
        if let Ok(restart) = &self.restart {
            let _ = writeln!(
                md,
                "- restart: schemaless index, {} generated documents of about 1.5 KB \
                 acknowledged with durability=request in {} and never committed \
                 (--refresh-interval 1h), SIGKILL, then each run starts a copy of that data \
                 folder; ready = log replayed and committed, document count checked",
                restart.docs,
                fmt_duration(restart.ingest)
            );
        }
        if let Some(why) = self.noisy() {
            let _ = writeln!(md, "\n**Noisy:** {why}.");
        }
        md.push_str(
            "\nBoth sides share the machine's cores: the HTTP figures include the server, the \
             clients and the kernel's loopback; the plain figure is one process.\n",
        );
        md
    }

    fn markdown(&self) -> String {
        format!(
            "# Bulk ingest over HTTP vs plain Tantivy, and restart time\n\n{}",
            self.body()
        )
    }

    fn to_json(&self) -> Json {
        let rows = self.checks();
        let nums = |xs: &[f64]| Json::Arr(xs.iter().map(|x| Json::Num(*x)).collect());
        let (recovered_s, ready_s) = match &self.restart {
            Ok(r) => (r.recovered_s(), r.ready_s()),
            Err(_) => (Vec::new(), Vec::new()),
        };
        Json::Obj(vec![
            (
                "all_targets_met".into(),
                Json::Bool(rows.iter().all(|r| r.pass)),
            ),
            (
                "checks".into(),
                Json::Arr(
                    rows.iter()
                        .map(|r| {
                            Json::Obj(vec![
                                ("check".into(), Json::Str(r.check.clone())),
                                ("measured".into(), Json::Str(r.measured.clone())),
                                ("value".into(), Json::Num(r.value)),
                                ("target".into(), Json::Str(r.target.clone())),
                                ("pass".into(), Json::Bool(r.pass)),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "plain_tantivy_mb_s".into(),
                Json::Arr(self.baselines.iter().map(|b| nums(&b.samples)).collect()),
            ),
            (
                "http_mb_s".into(),
                Json::Obj(
                    self.http
                        .iter()
                        .map(|(d, runs)| {
                            let p = self.paired(runs);
                            (
                                d.to_string(),
                                Json::Obj(vec![
                                    ("runs".into(), nums(&p.runs)),
                                    ("paired_plain".into(), nums(&p.baselines)),
                                    ("first_ingest".into(), nums(&p.cold)),
                                    ("ratio".into(), Json::Num(p.ratio())),
                                ]),
                            )
                        })
                        .collect(),
                ),
            ),
            ("restart_docs".into(), Json::Num(self.restart_docs as f64)),
            (
                "restart_error".into(),
                self.restart
                    .as_ref()
                    .err()
                    .map_or(Json::Null, |e| Json::Str(e.clone())),
            ),
            ("restart_recovered_s".into(), nums(&recovered_s)),
            ("restart_ready_s".into(), nums(&ready_s)),
        ])
    }

    /// The comparisons for the combined report's summary: medians of the runs.
    fn summary_rows(&self) -> Vec<summary::Row> {
        let pt = "plain Tantivy";
        let mut rows = Vec::new();
        for (durability, runs) in &self.http {
            let p = self.paired(runs);
            let mut row = summary::Row::new(
                format!(
                    "bulk NDJSON ingest over HTTP, durability={durability} (median of {} run(s), \
                     each after a warm-up ingest), vs plain Tantivy in-process indexing \
                     (`index_json/plain_tantivy`, run before and after each)",
                    runs.len()
                ),
                Unit::MegabytesPerSec,
                Some(median(&p.runs)),
                Some(median(&p.baselines)),
                pt,
                Some(Target::RatioAtLeast(min_ratio(durability))),
            );
            row.noisy = self.noisy();
            rows.push(row);
        }
        let target = Some(Target::Below(MAX_READY_SECS));
        let what_recovered = format!(
            "restart with {} un-committed documents in the log: start → log replayed and \
             committed",
            self.restart_docs
        );
        let what_ready = format!(
            "restart with {} un-committed documents in the log: start → /readyz 200",
            self.restart_docs
        );
        match &self.restart {
            Ok(r) => {
                let (recovered_s, ready_s, blocked) = (r.recovered_s(), r.ready_s(), r.blocked());
                rows.push(summary::Row::new(
                    what_recovered,
                    Unit::Secs,
                    Some(median(&recovered_s)),
                    None,
                    pt,
                    target,
                ));
                let mut ready = summary::Row::new(
                    what_ready,
                    Unit::Secs,
                    (!ready_s.is_empty()).then(|| median(&ready_s)),
                    None,
                    pt,
                    target,
                );
                if let Some(why) = blocked.first() {
                    ready.verdict = summary::Verdict::Missing(format!(
                        "{} of {} runs stayed 503 after recovery: {why}",
                        blocked.len(),
                        r.ready.len()
                    ));
                }
                rows.push(ready);
            }
            Err(why) => {
                for what in [what_recovered, what_ready] {
                    let mut row = summary::Row::new(what, Unit::Secs, None, None, pt, target);
                    row.verdict = summary::Verdict::Missing(why.clone());
                    rows.push(row);
                }
            }
        }
        rows
    }
}

/// The `ingest` part of `cargo xtask bench` (the caller prepared the corpus and the binary and
/// holds the run lock). A failed restart measurement fails the part but keeps the ingest figures.
pub(crate) fn part(
    bin: &Path,
    corpus: &Path,
    settings: &Settings,
    report_dir: &Path,
) -> Result<summary::Part> {
    let ingest = measure(bin, corpus, settings, report_dir)?;
    Ok(summary::Part {
        name: "ingest",
        title: bench::PartKind::Ingest.title(),
        took: Duration::ZERO,
        rows: ingest.summary_rows(),
        details: ingest.body(),
        json: ingest.to_json(),
        failure: ingest
            .restart
            .as_ref()
            .err()
            .map(|why| format!("restart: {why}")),
    })
}

pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let (data, settings) = parse_args(args)?;
    let started = Instant::now();
    corpus::ensure(&data)?;
    let report_dir = target_dir().join("bench-report");
    std::fs::create_dir_all(&report_dir)
        .map_err(|e| format!("cannot create {}: {e}", report_dir.display()))?;
    // Shares Criterion's folder and the machine with the other benchmarks.
    let _lock = bench::RunLock::acquire(&report_dir.join(".lock"))?;
    let bin = bench::release_binary()?;
    let ingest = measure(&bin, &data, &settings, &report_dir)?;

    let md = ingest.markdown();
    let mut json_text = String::new();
    ingest.to_json().write(&mut json_text);
    json_text.push('\n');
    let md_path = report_dir.join("ingest.md");
    let json_path = report_dir.join("ingest.json");
    std::fs::write(&md_path, &md)
        .map_err(|e| format!("cannot write {}: {e}", md_path.display()))?;
    std::fs::write(&json_path, json_text)
        .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    println!("\n{md}");
    println!(
        "report: {} and {} (total {})",
        md_path.display(),
        json_path.display(),
        fmt_duration(started.elapsed())
    );
    match &ingest.restart {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(why) => Err(format!("restart: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cut_at_line_ends_and_count_documents() {
        let line = b"{\"id\":\"a\",\"text\":\"xxxxxxxxxx\"}\n";
        let bytes: Vec<u8> = line
            .iter()
            .copied()
            .cycle()
            .take(line.len() * 300_000)
            .collect();
        let (parts, lines) = batches(&bytes);
        assert_eq!(lines, 300_000);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.ends_with(b"\n")));
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), bytes.len());
    }

    #[test]
    fn generated_documents_are_json_lines_of_about_1_5_kb() {
        let docs = generated_docs(100);
        let text = String::from_utf8(docs).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 100);
        for l in &lines {
            assert!(json::parse(l).is_ok(), "{l}");
            assert!((1300..1800).contains(&l.len()), "{}", l.len());
        }
        assert!(lines[7].starts_with("{\"id\":\"g7\""));
    }
}
