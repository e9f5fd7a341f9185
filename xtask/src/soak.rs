//! `cargo xtask soak --minutes N`: leak detection over time. Builds the release binary, starts
//! `ironsift serve` on loopback with a temporary data folder, and drives a fixed, moderate mixed
//! load for N minutes: searches (the queries of `benches/data/queries-web-50k.txt`), upserts
//! over a bounded id space, deletes, commits, snapshots, and index create/delete cycles.
//!
//! Every few seconds it samples the server from outside: resident memory (`VmRSS` and
//! `RssAnon` of `/proc/PID/status`), open descriptors (`/proc/PID/fd`), the resource registry
//! and memory monitor (`GET /v1/admin/resources`) and the index (`GET /v1/indexes/x`: documents,
//! segments). The samples go to `target/soak/soak.csv` and a summary to `target/soak/soak.json`.
//!
//! The load is steady and the id space bounded: the index is loaded to its full size and the
//! result cache filled (20,000 distinct queries) before the run, so after a warm-up (the first
//! 20 % of the run: the allocator's pools and the writer's arena grown) nothing should keep
//! growing. The run fails (exit 1) when, between the warm-up and the end, anonymous memory
//! grows by more than max(15 %, 64 MiB) or descriptors by more than 16. Both figures are
//! compared as medians over a window (the warm-up window and the last 10 % of the run) so one
//! sample taken while a writer's arena is full or a merge holds its files does not decide.
//! Why those bounds: between commits the writer's arena legitimately holds up to its heap
//! (64 MiB here), and jemalloc returns freed pages on a 10 s decay, so two samples of a healthy
//! process can differ by that much; a leak of even a few hundred bytes per request (~100
//! requests/s) exceeds it within the run. Descriptors: up to six load connections, a merge's
//! segment files and the write-ahead log can be open at a sampling instant; 16 leaves room for
//! those and fails on a descriptor leaked per cycle or per snapshot.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::json::{self, Json};
use crate::{Result, cargo, fmt_duration, run_status, show, target_dir, workspace_root};

const INDEX: &str = "x";
const QUERIES: &str = "benches/data/queries-web-50k.txt";
/// Documents are upserted over this many ids, all loaded before the run: the index starts at
/// its steady size.
const ID_SPACE: u64 = 20_000;
/// Distinct queries run before the load to fill the result cache.
const CACHE_FILL_QUERIES: usize = 20_000;
/// Fraction of the run treated as warm-up.
const WARMUP: f64 = 0.20;
const MAX_ANON_GROWTH_RATIO: f64 = 0.15;
const MAX_ANON_GROWTH_BYTES: u64 = 64 << 20;
const MAX_FD_GROWTH: i64 = 16;
const TIMEOUT: Duration = Duration::from_secs(30);

struct Options {
    minutes: f64,
    sample_every: Duration,
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut opts = Options {
        minutes: 10.0,
        sample_every: Duration::from_secs(5),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minutes" => {
                opts.minutes = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|m: &f64| *m > 0.0)
                    .ok_or("--minutes needs a positive number")?;
            }
            "--sample-secs" => {
                let s: u64 = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|s| *s > 0)
                    .ok_or("--sample-secs needs a positive whole number")?;
                opts.sample_every = Duration::from_secs(s);
            }
            other => return Err(format!("soak: unknown option {other:?}")),
        }
    }
    Ok(opts)
}

/// One request with this command's timeout (see [`crate::http::request`]).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    crate::http::request(addr, method, path, content_type, body, TIMEOUT)
}

/// Percent-encodes a query-string value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The server child.

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn spawn(bin: &Path, data: &Path, log: &Path) -> Result<Server> {
        let stderr = std::fs::File::create(log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--data")
            .arg(data)
            .args(["--heap-mb", "64", "serve", "--listen", "127.0.0.1:0"])
            .args(["--log-level", "warn"])
            .stderr(stderr);
        let (child, addr) =
            crate::server::spawn_listening(&mut cmd, Duration::from_secs(60), Some(log))?;
        let server = Server { child, addr };
        let started = Instant::now();
        while !matches!(
            http(addr, "GET", "/readyz", "text/plain", b""),
            Ok((200, _))
        ) {
            if started.elapsed() > Duration::from_secs(60) {
                return Err("the server was not ready within 60 s".into());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then a bounded wait; SIGKILL if it does not exit.
    fn stop(mut self) -> Result<()> {
        run_status(Command::new("kill").args(["-s", "TERM", &self.pid().to_string()]))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("the server exited with {status} after SIGTERM"))
                };
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err("the server did not exit within 60 s of SIGTERM".into())
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
// Load.

/// A small deterministic PRNG (xorshift64*), so xtask needs no crate for it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One document as a JSON line, its words drawn from the queries (so searches hit).
fn document(rng: &mut Rng, words: &[&str], id: u64, version: u64) -> String {
    let mut body = String::new();
    for i in 0..20 + rng.below(180) {
        if i > 0 {
            body.push(' ');
        }
        // Squaring skews the draw towards the first (most frequent) words.
        let r = rng.below(1 << 16);
        body.push_str(words[((u128::from(r * r) * words.len() as u128) >> 32) as usize]);
    }
    let mut line = format!("{{\"id\":\"d{id}\",\"v\":{version},\"body\":");
    json::write_str(&body, &mut line);
    line.push_str("}\n");
    line
}

/// Counts of what the load did, by kind and outcome.
#[derive(Default)]
struct Counters {
    ok: [AtomicU64; 7],
    failed: [AtomicU64; 7],
}

const KINDS: [&str; 7] = [
    "search", "upsert", "delete", "commit", "snapshot", "cycle", "sample",
];

impl Counters {
    fn record(&self, kind: usize, ok: bool) {
        let slot = if ok {
            &self.ok[kind]
        } else {
            &self.failed[kind]
        };
        slot.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `step` every `every` until `stop`, at a fixed rate (a late step does not bunch up the
/// next ones).
fn every(stop: &AtomicBool, every: Duration, mut step: impl FnMut()) {
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        step();
        next += every;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

/// Whether a status is an expected answer under this load (overload answers are not failures
/// of the service, but are counted apart so a run shows them).
fn fine(status: u16) -> bool {
    (200..300).contains(&status) || status == 404
}

fn start_load(
    addr: SocketAddr,
    queries: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    errors: Arc<Mutex<Vec<String>>>,
) -> Vec<thread::JoinHandle<()>> {
    let note = move |errors: &Mutex<Vec<String>>, what: String| {
        let mut e = errors.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() < 20 {
            e.push(what);
        }
    };
    let mut handles = Vec::new();
    // Searches: two threads, 25/s each.
    for t in 0..2u64 {
        let (q, stop, c, errors) = (
            queries.clone(),
            stop.clone(),
            counters.clone(),
            errors.clone(),
        );
        handles.push(thread::spawn(move || {
            let mut i = t as usize * 7919;
            every(&stop, Duration::from_millis(40), || {
                let query = &q[i % q.len()];
                i += 1;
                let path = format!("/v1/indexes/{INDEX}/search?q={}&limit=10", encode(query));
                match http(addr, "GET", &path, "text/plain", b"") {
                    Ok((s, _)) if fine(s) || s == 400 => c.record(0, true),
                    Ok((s, b)) => {
                        c.record(0, false);
                        note(&errors, format!("search {query:?}: {s} {b}"));
                    }
                    Err(e) => {
                        c.record(0, false);
                        note(&errors, format!("search: {e}"));
                    }
                }
            });
        }));
    }
    // Upserts: 10 batches/s of 20 documents; deletes: 5/s. One thread each.
    {
        let (q, stop, c, errors) = (
            queries.clone(),
            stop.clone(),
            counters.clone(),
            errors.clone(),
        );
        handles.push(thread::spawn(move || {
            let words: Vec<&str> = q.iter().flat_map(|l| l.split_whitespace()).collect();
            let mut rng = Rng(0x50a4);
            let mut version = 0;
            every(&stop, Duration::from_millis(100), || {
                let mut body = String::new();
                for _ in 0..20 {
                    version += 1;
                    let id = rng.below(ID_SPACE);
                    body.push_str(&document(&mut rng, &words, id, version));
                }
                let path = format!("/v1/indexes/{INDEX}/documents");
                match http(addr, "POST", &path, "application/x-ndjson", body.as_bytes()) {
                    Ok((s, _)) if fine(s) => c.record(1, true),
                    Ok((s, b)) => {
                        c.record(1, false);
                        note(&errors, format!("upsert: {s} {b}"));
                    }
                    Err(e) => {
                        c.record(1, false);
                        note(&errors, format!("upsert: {e}"));
                    }
                }
            });
        }));
    }
    {
        let (stop, c, errors) = (stop.clone(), counters.clone(), errors.clone());
        handles.push(thread::spawn(move || {
            let mut rng = Rng(0xde1e);
            every(&stop, Duration::from_millis(200), || {
                let path = format!("/v1/indexes/{INDEX}/documents/d{}", rng.below(ID_SPACE));
                match http(addr, "DELETE", &path, "text/plain", b"") {
                    Ok((s, _)) if fine(s) => c.record(2, true),
                    Ok((s, b)) => {
                        c.record(2, false);
                        note(&errors, format!("delete: {s} {b}"));
                    }
                    Err(e) => {
                        c.record(2, false);
                        note(&errors, format!("delete: {e}"));
                    }
                }
            });
        }));
    }
    // Commits every 5 s, snapshots every 60 s, an index create/fill/search/delete cycle every
    // 20 s: one thread, in turn.
    {
        let (q, stop, c, errors) = (queries, stop, counters, errors);
        handles.push(thread::spawn(move || {
            let words: Vec<&str> = q.iter().flat_map(|l| l.split_whitespace()).collect();
            let mut rng = Rng(0xc1c1e);
            let mut tick = 0u64;
            every(&stop, Duration::from_secs(5), || {
                tick += 1;
                let path = format!("/v1/indexes/{INDEX}/commit");
                let r = http(addr, "POST", &path, "application/json", b"");
                c.record(3, matches!(r, Ok((s, _)) if fine(s)));
                if let Ok((s, b)) = &r
                    && !fine(*s)
                {
                    note(&errors, format!("commit: {s} {b}"));
                }
                if tick.is_multiple_of(12) {
                    let path = format!("/v1/indexes/{INDEX}/snapshots");
                    let r = http(addr, "POST", &path, "application/json", b"");
                    c.record(4, matches!(r, Ok((s, _)) if fine(s)));
                    if let Ok((s, b)) = &r
                        && !fine(*s)
                    {
                        note(&errors, format!("snapshot: {s} {b}"));
                    }
                }
                if tick.is_multiple_of(4) {
                    let ok = cycle(addr, tick, &mut rng, &words);
                    if let Err(e) = &ok {
                        note(&errors, format!("index cycle: {e}"));
                    }
                    c.record(5, ok.is_ok());
                }
            });
        }));
    }
    handles
}

/// Loads every id of the id space once, in bodies of about 4 MiB, and commits; then fills the
/// result cache.
fn preload(addr: SocketAddr, queries: &[String]) -> Result<()> {
    let started = Instant::now();
    let words: Vec<&str> = queries.iter().flat_map(|l| l.split_whitespace()).collect();
    let mut rng = Rng(0x9e37);
    let mut body = String::new();
    let path = format!("/v1/indexes/{INDEX}/documents");
    for id in 0..ID_SPACE {
        body.push_str(&document(&mut rng, &words, id, 0));
        if body.len() >= 4 << 20 || id + 1 == ID_SPACE {
            match http(addr, "POST", &path, "application/x-ndjson", body.as_bytes()) {
                Ok((200, _)) => body.clear(),
                other => return Err(format!("preload: {other:?}")),
            }
        }
    }
    match http(
        addr,
        "POST",
        &format!("/v1/indexes/{INDEX}/commit"),
        "application/json",
        b"",
    ) {
        Ok((200, _)) => {}
        other => return Err(format!("preload commit: {other:?}")),
    }
    println!(
        "soak: preloaded {ID_SPACE} documents in {}",
        fmt_duration(started.elapsed())
    );
    // Fill the result cache (64 MiB of answers, ~150 MiB of heap): at the soak's search rate
    // it would otherwise take ~5 minutes to fill, and its growth would read as a leak.
    let started = Instant::now();
    let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    thread::scope(|s| {
        for t in 0..4 {
            let (ok, failed) = (&ok, &failed);
            s.spawn(move || {
                for q in queries.iter().take(CACHE_FILL_QUERIES).skip(t).step_by(4) {
                    let path = format!("/v1/indexes/{INDEX}/search?q={}&limit=10", encode(q));
                    match http(addr, "GET", &path, "text/plain", b"") {
                        Ok((s, _)) if fine(s) || s == 400 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
    });
    println!(
        "soak: {} searches to fill the result cache in {} ({} failed)",
        ok.load(Ordering::Relaxed),
        fmt_duration(started.elapsed()),
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Creates an index, fills and commits it, searches it, deletes it.
fn cycle(addr: SocketAddr, n: u64, rng: &mut Rng, words: &[&str]) -> Result<()> {
    let name = format!("cycle-{n}");
    let step = |method: &str, path: String, ctype: &str, body: &[u8], want: u16| -> Result<()> {
        match http(addr, method, &path, ctype, body) {
            Ok((s, _)) if s == want => Ok(()),
            Ok((s, b)) => Err(format!("{method} {path}: {s} {b}")),
            Err(e) => Err(format!("{method} {path}: {e}")),
        }
    };
    let create = format!("{{\"name\":\"{name}\"}}");
    step(
        "POST",
        "/v1/indexes".into(),
        "application/json",
        create.as_bytes(),
        201,
    )?;
    let mut body = String::new();
    for i in 0..100 {
        body.push_str(&document(rng, words, i, 1));
    }
    let docs = format!("/v1/indexes/{name}/documents?refresh=wait_for");
    let filled = step("POST", docs, "application/x-ndjson", body.as_bytes(), 200).and_then(|()| {
        let q = format!("/v1/indexes/{name}/search?q={}", encode(words[0]));
        step("GET", q, "text/plain", b"", 200)
    });
    let deleted = step(
        "DELETE",
        format!("/v1/indexes/{name}"),
        "text/plain",
        b"",
        200,
    );
    filled.and(deleted)
}

// ---------------------------------------------------------------------------------------------
// Samples.

#[derive(Debug, Clone, Default)]
struct Sample {
    secs: f64,
    vm_rss: u64,
    anon: u64,
    fds: i64,
    threads: u64,
    used_bytes: u64,
    level: String,
    /// Live resources in the registry, all kinds together.
    live: u64,
    docs: u64,
    segments: u64,
}

fn proc_status(pid: u32) -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((
        field("VmRSS:")? * 1024,
        field("RssAnon:")? * 1024,
        field("Threads:")?,
    ))
}

fn fd_count(pid: u32) -> i64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(-1, |d| d.count() as i64)
}

fn sample(addr: SocketAddr, pid: u32, secs: f64) -> Result<Sample> {
    let (vm_rss, anon, threads) =
        proc_status(pid).ok_or_else(|| format!("cannot read /proc/{pid}/status"))?;
    let fds = fd_count(pid);
    let mut s = Sample {
        secs,
        vm_rss,
        anon,
        fds,
        threads,
        ..Sample::default()
    };
    if let Ok((200, body)) = http(addr, "GET", "/v1/admin/resources", "text/plain", b"")
        && let Ok(v) = json::parse(&body)
    {
        let memory = v.get("memory");
        s.used_bytes = memory
            .and_then(|m| m.get("used_bytes"))
            .and_then(Json::as_f64)
            .unwrap_or(0.0) as u64;
        if let Some(Json::Str(level)) = memory.and_then(|m| m.get("level")) {
            s.level = level.clone();
        }
        if let Some(Json::Obj(kinds)) = v.get("registry").and_then(|r| r.get("kinds")) {
            s.live = kinds
                .iter()
                .filter_map(|(_, k)| k.get("live")?.as_f64())
                .sum::<f64>() as u64;
        }
    }
    if let Ok((200, body)) = http(
        addr,
        "GET",
        &format!("/v1/indexes/{INDEX}"),
        "text/plain",
        b"",
    ) && let Ok(v) = json::parse(&body)
    {
        s.docs = v.get("docs").and_then(Json::as_f64).unwrap_or(0.0) as u64;
        s.segments = v.get("segments").and_then(Json::as_f64).unwrap_or(0.0) as u64;
    }
    Ok(s)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
}

fn median_of<T: Copy + PartialOrd>(mut xs: Vec<T>) -> Option<T> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    Some(xs[xs.len() / 2])
}

fn write_reports(dir: &Path, samples: &[Sample], summary: &str) -> Result<(PathBuf, PathBuf)> {
    let mut csv = String::from(
        "secs,vm_rss_bytes,rss_anon_bytes,fds,threads,used_bytes,level,registry_live,docs,segments\n",
    );
    for s in samples {
        let _ = writeln!(
            csv,
            "{:.1},{},{},{},{},{},{},{},{},{}",
            s.secs,
            s.vm_rss,
            s.anon,
            s.fds,
            s.threads,
            s.used_bytes,
            s.level,
            s.live,
            s.docs,
            s.segments
        );
    }
    let csv_path = dir.join("soak.csv");
    let json_path = dir.join("soak.json");
    std::fs::write(&csv_path, csv)
        .map_err(|e| format!("cannot write {}: {e}", csv_path.display()))?;
    std::fs::write(&json_path, summary)
        .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    Ok((csv_path, json_path))
}

pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let opts = parse_args(args)?;
    let duration = Duration::from_secs_f64(opts.minutes * 60.0);
    let mut build = cargo(["build", "--release", "--bin", "ironsift"]);
    println!("==> {}", show(&build));
    run_status(&mut build)?;
    let bin = target_dir().join("release/ironsift");
    let out = target_dir().join("soak");
    let data = out.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data)
            .map_err(|e| format!("cannot remove {}: {e}", data.display()))?;
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let queries_path = workspace_root().join(QUERIES);
    let queries: Vec<String> = std::fs::read_to_string(&queries_path)
        .map_err(|e| format!("cannot read {}: {e}", queries_path.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if queries.is_empty() {
        return Err(format!("{} holds no queries", queries_path.display()));
    }

    let log = out.join("server.log");
    let server = Server::spawn(&bin, &data, &log)?;
    let (addr, pid) = (server.addr, server.pid());
    println!(
        "soak: ironsift serve (pid {pid}) on {addr}, data {}, for {}; log {}",
        data.display(),
        fmt_duration(duration),
        log.display()
    );
    let create = format!("{{\"name\":\"{INDEX}\"}}");
    match http(
        addr,
        "POST",
        "/v1/indexes",
        "application/json",
        create.as_bytes(),
    ) {
        Ok((201, _)) => {}
        other => return Err(format!("cannot create the index: {other:?}")),
    }

    preload(addr, &queries)?;

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let errors = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let load = start_load(
        addr,
        Arc::new(queries),
        stop.clone(),
        counters.clone(),
        errors.clone(),
    );

    let mut samples: Vec<Sample> = Vec::new();
    let mut next = started;
    let mut warm_printed = false;
    let mut failure: Option<String> = None;
    while started.elapsed() < duration {
        let secs = started.elapsed().as_secs_f64();
        match sample(addr, pid, secs) {
            Ok(s) => {
                counters.record(6, true);
                let label = if samples.is_empty() {
                    Some("start")
                } else if !warm_printed && secs >= duration.as_secs_f64() * WARMUP {
                    warm_printed = true;
                    Some("warm-up")
                } else {
                    None
                };
                if let Some(label) = label {
                    println!(
                        "soak: {label:>7} at {:>6.1} s: VmRSS {}, RssAnon {}, fds {}, threads {}, \
                         used {} ({}), registry live {}, docs {}, segments {}",
                        s.secs,
                        mib(s.vm_rss),
                        mib(s.anon),
                        s.fds,
                        s.threads,
                        mib(s.used_bytes),
                        s.level,
                        s.live,
                        s.docs,
                        s.segments
                    );
                }
                samples.push(s);
            }
            Err(e) => {
                failure = Some(format!("the server stopped answering or exited: {e}"));
                break;
            }
        }
        next += opts.sample_every;
        let now = Instant::now();
        if next > now {
            thread::sleep((next - now).min(duration.saturating_sub(started.elapsed())));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in load {
        let _ = h.join();
    }
    if let Ok(last) = sample(addr, pid, started.elapsed().as_secs_f64()) {
        samples.push(last);
    }
    let stopped = server.stop();

    let Some(end) = samples.last().cloned() else {
        return Err(failure.unwrap_or_else(|| "no sample taken".into()));
    };
    println!(
        "soak: {:>7} at {:>6.1} s: VmRSS {}, RssAnon {}, fds {}, threads {}, used {} ({}), \
         registry live {}, docs {}, segments {}",
        "end",
        end.secs,
        mib(end.vm_rss),
        mib(end.anon),
        end.fds,
        end.threads,
        mib(end.used_bytes),
        end.level,
        end.live,
        end.docs,
        end.segments
    );

    // Windows: warm-up = samples between 15 % and 25 % of the run; end = the last 10 %.
    let total = duration.as_secs_f64();
    let window = |lo: f64, hi: f64| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|s| s.secs >= lo * total && s.secs <= hi * total + 1.0)
            .collect()
    };
    let warm = window(WARMUP - 0.05, WARMUP + 0.05);
    let tail = window(0.90, 1.0);
    let med_anon = |w: &[&Sample]| median_of(w.iter().map(|s| s.anon).collect());
    let med_rss = |w: &[&Sample]| median_of(w.iter().map(|s| s.vm_rss).collect());
    let med_fds = |w: &[&Sample]| median_of(w.iter().map(|s| s.fds).collect());
    let (Some(warm_anon), Some(end_anon), Some(warm_fds), Some(end_fds)) = (
        med_anon(&warm),
        med_anon(&tail),
        med_fds(&warm),
        med_fds(&tail),
    ) else {
        return Err(
            failure.unwrap_or_else(|| "too few samples for the warm-up and end windows".into())
        );
    };
    let warm_rss = med_rss(&warm).unwrap_or(0);
    let end_rss = med_rss(&tail).unwrap_or(0);
    let allowed = ((warm_anon as f64 * MAX_ANON_GROWTH_RATIO) as u64).max(MAX_ANON_GROWTH_BYTES);
    let anon_growth = end_anon as i64 - warm_anon as i64;
    let fd_growth = end_fds - warm_fds;
    let max_segments = samples.iter().map(|s| s.segments).max().unwrap_or(0);
    let seg_after_warm = samples
        .iter()
        .filter(|s| s.secs >= WARMUP * total)
        .map(|s| s.segments)
        .max()
        .unwrap_or(0);
    println!(
        "soak: medians warm-up window -> end window: RssAnon {} -> {} ({:+.1} MiB, allowed \
         +{}), VmRSS {} -> {}, fds {warm_fds} -> {end_fds} ({fd_growth:+}, allowed \
         +{MAX_FD_GROWTH})",
        mib(warm_anon),
        mib(end_anon),
        anon_growth as f64 / f64::from(1 << 20),
        mib(allowed),
        mib(warm_rss),
        mib(end_rss),
    );
    println!(
        "soak: segments of index {INDEX}: max {max_segments} (after warm-up {seg_after_warm}), \
         final {}; documents final {}",
        end.segments, end.docs
    );
    let mut ops = String::new();
    for (i, kind) in KINDS.iter().enumerate() {
        let _ = write!(
            ops,
            "{}{kind} {}/{}",
            if i == 0 { "" } else { ", " },
            counters.ok[i].load(Ordering::Relaxed),
            counters.ok[i].load(Ordering::Relaxed) + counters.failed[i].load(Ordering::Relaxed),
        );
    }
    println!("soak: operations ok/total: {ops}");
    let errors = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for e in errors.iter().take(5) {
        println!("soak:   e.g. {e}");
    }

    let mut problems = Vec::new();
    if let Some(f) = failure {
        problems.push(f);
    }
    if anon_growth > allowed as i64 {
        problems.push(format!(
            "anonymous memory grew by {} after warm-up (allowed {})",
            mib(anon_growth as u64),
            mib(allowed)
        ));
    }
    if fd_growth > MAX_FD_GROWTH {
        problems.push(format!(
            "open descriptors grew by {fd_growth} after warm-up (allowed {MAX_FD_GROWTH})"
        ));
    }
    let failed_ops: u64 = counters
        .failed
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum();
    if failed_ops > 0 {
        problems.push(format!(
            "{failed_ops} operations failed (see the examples above)"
        ));
    }
    if let Err(e) = stopped {
        problems.push(format!("shutdown: {e}"));
    }

    let mut summary = String::from("{");
    let _ = write!(
        summary,
        "\"minutes\":{},\"samples\":{},\"warmup_anon_bytes\":{warm_anon},\"end_anon_bytes\":\
         {end_anon},\"warmup_vm_rss_bytes\":{warm_rss},\"end_vm_rss_bytes\":{end_rss},\
         \"allowed_anon_growth_bytes\":{allowed},\"warmup_fds\":{warm_fds},\"end_fds\":{end_fds},\
         \"max_segments\":{max_segments},\"final_segments\":{},\"final_docs\":{},\"passed\":{},\
         \"problems\":[",
        opts.minutes,
        samples.len(),
        end.segments,
        end.docs,
        problems.is_empty()
    );
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            summary.push(',');
        }
        json::write_str(p, &mut summary);
    }
    summary.push_str("]}\n");
    let (csv, json_path) = write_reports(&out, &samples, &summary)?;
    println!(
        "soak: samples in {}, summary in {}",
        csv.display(),
        json_path.display()
    );
    let _ = std::fs::remove_dir_all(&data);

    if problems.is_empty() {
        println!("soak: passed");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            println!("soak: FAILED: {p}");
        }
        Ok(ExitCode::FAILURE)
    }
}
