//! `cargo xtask stress <scenario|all> [--quick]`: the stress scenarios of `ironsift
//! bench-http` against a local server started here.
//!
//! Steps: build the release binary; generate a deterministic corpus (`ironsift bench-http
//! --write-corpus`, vocabulary from the shipped web queries) and index it into a fresh data
//! folder; for each scenario start `ironsift serve` on a fixed loopback port, run
//! `ironsift bench-http --scenario S --pid PID`, then stop the server with SIGTERM and check it
//! exits 0. For `chaos`, bench-http kills the server (`kill -KILL` of the pid in a pid file) and
//! this supervisor restarts it on the same port and data, as systemd would; other scenarios
//! never restart a server that died (that is a failure to report, not to hide). For
//! `exhaustion`, the server gets a small search concurrency limit when it has one
//! (`--search-concurrency`, `--search-queue`).

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{Result, cargo, fmt_duration, run_status, show, target_dir, workspace_root};

const SCENARIOS: [&str; 6] = [
    "concurrency",
    "sustained",
    "memory-pressure",
    "exhaustion",
    "scale",
    "chaos",
];
const QUERIES: &str = "benches/data/queries-web-50k.txt";

struct Opts {
    scenarios: Vec<&'static str>,
    quick: bool,
    docs: usize,
    extra: Vec<String>,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut scenarios = Vec::new();
    let mut quick = false;
    let mut docs = None;
    let mut extra = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--docs" => {
                let v = it.next().ok_or("--docs needs a number")?;
                docs = Some(
                    v.parse()
                        .map_err(|_| format!("--docs {v:?}: not a number"))?,
                );
            }
            "--" => {
                extra.extend(it.by_ref().cloned());
            }
            "all" => scenarios.extend(SCENARIOS),
            s => match SCENARIOS.iter().find(|x| **x == s) {
                Some(x) => scenarios.push(*x),
                None => {
                    return Err(format!(
                        "unknown scenario or option {s:?} (scenarios: {}, all)",
                        SCENARIOS.join(", ")
                    ));
                }
            },
        }
    }
    if scenarios.is_empty() {
        return Err(format!("name a scenario: {}, or all", SCENARIOS.join(", ")));
    }
    Ok(Opts {
        scenarios,
        quick,
        docs: docs.unwrap_or(if quick { 5_000 } else { 20_000 }),
        extra,
    })
}

/// The server child, killed and reaped on drop so no error path leaves it running.
struct Server {
    bin: PathBuf,
    data: PathBuf,
    addr: SocketAddr,
    extra_args: Vec<String>,
    log: PathBuf,
    pid_file: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
    starts: u32,
}

impl Server {
    fn start(
        bin: &Path,
        data: &Path,
        addr: SocketAddr,
        extra_args: Vec<String>,
        log: &Path,
        pid_file: &Path,
    ) -> Result<Server> {
        let child = spawn(bin, data, addr, &extra_args, log)?;
        let mut s = Server {
            bin: bin.into(),
            data: data.into(),
            addr,
            extra_args,
            log: log.into(),
            pid_file: pid_file.into(),
            child,
            exited: None,
            starts: 1,
        };
        s.wait_ready()?;
        Ok(s)
    }

    fn alive(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited.is_none()
    }

    fn wait_ready(&mut self) -> Result<()> {
        std::fs::write(&self.pid_file, self.child.id().to_string())
            .map_err(|e| format!("cannot write {}: {e}", self.pid_file.display()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if !self.alive() {
                return Err(format!(
                    "the server exited before it was ready ({:?}); log: {}",
                    self.exited,
                    self.log.display()
                ));
            }
            if http_status(self.addr, "/readyz").ok() == Some(200) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "http://{}/readyz did not answer 200 within 60 s; log: {}",
                    self.addr,
                    self.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again on the same port and data (after it died).
    fn restart(&mut self) -> Result<()> {
        let _ = self.child.wait();
        self.child = spawn(
            &self.bin,
            &self.data,
            self.addr,
            &self.extra_args,
            &self.log,
        )?;
        self.exited = None;
        self.starts += 1;
        self.wait_ready()
    }

    /// SIGTERM, then up to `limit` for it to exit; `None` if it had to be killed.
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
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
        Ok(None)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn(bin: &Path, data: &Path, addr: SocketAddr, extra: &[String], log: &Path) -> Result<Child> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg("--data")
        .arg(data)
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--log-level",
            "warn",
        ])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(log_file);
    println!("==> {}", show(&cmd));
    let (child, _) = crate::server::spawn_listening(&mut cmd, Duration::from_secs(60), Some(log))?;
    Ok(child)
}

fn http_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
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

/// `GET path` and the whole body as text (`Connection: close`).
fn http_text(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut s, &mut raw)?;
    Ok(raw
        .split_once("\r\n\r\n")
        .map_or(raw.clone(), |(_, b)| b.to_string()))
}

/// A free loopback port (bound, then released for the server to take).
fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind loopback: {e}"))?;
    l.local_addr().map_err(|e| e.to_string())
}

fn stamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs}")
}

/// The flags of `ironsift serve --help` among `wanted`.
fn serve_flags(bin: &Path, wanted: &[&str]) -> Vec<String> {
    let Ok(out) = Command::new(bin).args(["serve", "--help"]).output() else {
        return Vec::new();
    };
    let help = String::from_utf8_lossy(&out.stdout);
    wanted
        .iter()
        .filter(|f| help.contains(*f))
        .map(|f| f.to_string())
        .collect()
}

fn prepare_data(bin: &Path, dir: &Path, docs: usize) -> Result<PathBuf> {
    let corpus = target_dir().join(format!("stress-corpus/docs-{docs}.jsonl"));
    if !corpus.is_file() {
        std::fs::create_dir_all(corpus.parent().expect("has a parent"))
            .map_err(|e| format!("cannot create {}: {e}", corpus.display()))?;
        let tmp = corpus.with_extension("tmp");
        let mut gen_cmd = Command::new(bin);
        gen_cmd
            .arg("bench-http")
            .arg("--write-corpus")
            .arg(&tmp)
            .arg("--docs")
            .arg(docs.to_string())
            .arg("--queries")
            .arg(workspace_root().join(QUERIES));
        println!("==> {}", show(&gen_cmd));
        run_status(&mut gen_cmd)?;
        std::fs::rename(&tmp, &corpus)
            .map_err(|e| format!("cannot rename {}: {e}", tmp.display()))?;
    }
    let data = dir.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data)
            .map_err(|e| format!("cannot remove {}: {e}", data.display()))?;
    }
    let mut add = Command::new(bin);
    add.arg("--data").arg(&data).arg("add").arg(&corpus);
    println!("==> {}", show(&add));
    let t = Instant::now();
    run_status(&mut add)?;
    println!(
        "stress: indexed {docs} documents in {}",
        fmt_duration(t.elapsed())
    );
    Ok(data)
}

/// One scenario against a fresh server process on `data`; the path of its HTML report and
/// whether it passed.
fn run_one(
    bin: &Path,
    data: &Path,
    dir: &Path,
    scenario: &str,
    opts: &Opts,
) -> Result<(bool, PathBuf, String)> {
    let addr = free_addr()?;
    let extra = if scenario == "exhaustion" {
        // "2,000 concurrent requests over a small limit": give the server one when it can
        // take it (the flags arrive with the resilience work).
        let flags = serve_flags(bin, &["--search-concurrency", "--search-queue"]);
        let mut a = Vec::new();
        if flags.iter().any(|f| f == "--search-concurrency") {
            a.extend(["--search-concurrency".to_string(), "4".to_string()]);
        }
        if flags.iter().any(|f| f == "--search-queue") {
            a.extend(["--search-queue".to_string(), "32".to_string()]);
        }
        a
    } else if scenario == "chaos" {
        // Issue #7's drill: 10 % of searches fail and each takes 100 ms more, with a breaker
        // sensitive enough to open on that and short open periods so it also closes again.
        let flags = serve_flags(
            bin,
            &[
                "--chaos-error-rate",
                "--chaos-latency",
                "--breaker-failure-rate",
                "--breaker-open",
            ],
        );
        let mut a = Vec::new();
        for (flag, value) in [
            ("--chaos-error-rate", "0.1"),
            ("--chaos-latency", "100ms"),
            ("--breaker-failure-rate", "5"),
            ("--breaker-open", "1s"),
        ] {
            if flags.iter().any(|f| f == flag) {
                a.extend([flag.to_string(), value.to_string()]);
            }
        }
        a
    } else {
        Vec::new()
    };
    let log = dir.join(format!("server-{scenario}.log"));
    let pid_file = dir.join(format!("server-{scenario}.pid"));
    let mut server = Server::start(bin, data, addr, extra, &log, &pid_file)?;
    println!(
        "stress: server ready on http://{addr} (pid {})",
        server.child.id()
    );
    let report_dir = target_dir()
        .join("stress-reports")
        .join(format!("{scenario}-{}", stamp()));
    let mut cmd = Command::new(bin);
    cmd.arg("bench-http")
        .arg("--url")
        .arg(format!("http://{addr}"))
        .args(["--scenario", scenario])
        .arg("--queries")
        .arg(workspace_root().join(QUERIES))
        .arg("--report-dir")
        .arg(&report_dir)
        .arg("--pid")
        .arg(server.child.id().to_string());
    if opts.quick {
        cmd.arg("--quick");
    }
    if scenario == "chaos" {
        cmd.arg("--kill-cmd")
            .arg(format!("kill -KILL $(cat '{}')", pid_file.display()));
    }
    cmd.args(&opts.extra).stdin(Stdio::null());
    println!("==> {}", show(&cmd));
    let mut bench = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", show(&cmd)))?;
    // Supervise: restart the server when chaos killed it; notice when anything else did.
    let limit = Duration::from_secs(if opts.quick { 300 } else { 1800 });
    let deadline = Instant::now() + limit;
    let mut died = None;
    let status = loop {
        if let Some(s) = bench
            .try_wait()
            .map_err(|e| format!("cannot wait for bench-http: {e}"))?
        {
            break s;
        }
        if !server.alive() {
            if scenario == "chaos" {
                println!("stress: server died ({:?}); restarting it", server.exited);
                server.restart()?;
                println!("stress: server back (pid {})", server.child.id());
            } else if died.is_none() {
                died = server.exited;
                eprintln!("stress: the server died during {scenario}: {died:?}");
            }
        }
        if Instant::now() >= deadline {
            let _ = bench.kill();
            let _ = bench.wait();
            return Err(format!(
                "bench-http did not finish within {}",
                fmt_duration(limit)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if scenario == "chaos" {
        // The breaker's transitions and the degraded answers, as the server counted them since
        // its last start (the report sums them over the whole run, restart included).
        match http_text(addr, "/metrics") {
            Ok(text) => {
                println!("stress: server counters since its last start:");
                for line in text.lines().filter(|l| {
                    l.starts_with("ironsift_breaker_transitions_total")
                        || l.starts_with("ironsift_degraded_answers_total")
                }) {
                    println!("stress: {line}");
                }
            }
            Err(e) => eprintln!("stress: cannot read /metrics: {e}"),
        }
    }
    let exit = server.terminate(Duration::from_secs(30))?;
    let clean_exit = exit.is_some_and(|s| s.success());
    let code = status.code();
    let html = report_dir.join("report.html");
    if code != Some(0) && code != Some(4) {
        return Err(format!("`{}` failed ({status})", show(&cmd)));
    }
    let mut verdict = String::new();
    if let Some(d) = died {
        verdict.push_str(&format!("; the server died ({d})"));
    }
    if !clean_exit {
        verdict.push_str(&format!("; server exit after SIGTERM: {exit:?}"));
    }
    if server.starts > 1 {
        verdict.push_str(&format!("; server started {} times", server.starts));
    }
    Ok((
        code == Some(0) && died.is_none() && clean_exit,
        html,
        verdict,
    ))
}

pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let opts = parse(args)?;
    let started = Instant::now();
    let mut build = cargo(["build", "--release", "--bin", "ironsift"]);
    println!("==> {}", show(&build));
    run_status(&mut build)?;
    let bin = target_dir().join("release/ironsift");
    let dir = target_dir().join(format!("stress/{}", stamp()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let data = prepare_data(&bin, &dir, opts.docs)?;
    let mut results = Vec::new();
    for scenario in &opts.scenarios {
        println!(
            "\n==> stress {scenario}{}",
            if opts.quick { " (quick)" } else { "" }
        );
        let t = Instant::now();
        let r = run_one(&bin, &data, &dir, scenario, &opts);
        results.push((*scenario, t.elapsed(), r));
    }
    println!("\nstress summary:");
    let mut all_pass = true;
    for (scenario, took, r) in &results {
        match r {
            Ok((pass, html, extra)) => {
                all_pass &= *pass;
                println!(
                    "  {scenario:<16} {} {:>9}  {}{extra}",
                    if *pass { "PASS  " } else { "FAIL  " },
                    fmt_duration(*took),
                    html.display()
                );
            }
            Err(e) => {
                all_pass = false;
                println!("  {scenario:<16} ERROR  {:>9}  {e}", fmt_duration(*took));
            }
        }
    }
    // The data folder is scratch; logs stay next to it for a look after a failure.
    let _ = std::fs::remove_dir_all(&data);
    println!(
        "stress {} in {} (server logs in {})",
        if all_pass { "passed" } else { "FAILED" },
        fmt_duration(started.elapsed()),
        dir.display()
    );
    Ok(if all_pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
