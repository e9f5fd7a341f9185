//! The real `ironsift serve` process as a test fixture.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::http::{self, HttpResponse};

/// The line prefix `ironsift serve` prints on stdout once it accepts connections.
pub const LISTENING_PREFIX: &str = "ironsift: listening on http://";

/// Default bound on start-up (address printed and `/readyz` answering 200).
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of the server's stderr shown in start errors and when a test panics.
const TAIL_LINES: usize = 40;

/// Timeout of one readiness probe (and of [`ServerProcess::get`]).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A POSIX signal the harness can send, by name, with `kill -s NAME PID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// SIGTERM: graceful shutdown.
    Term,
    /// SIGINT: graceful shutdown, as Ctrl-C.
    Int,
    /// SIGKILL: immediate death, no cleanup (crash tests).
    Kill,
    /// SIGSTOP: freeze the process (it keeps its sockets but answers nothing).
    Stop,
    /// SIGCONT: resume after [`Signal::Stop`].
    Cont,
}

impl Signal {
    /// The name `kill -s` takes (`TERM`, `INT`, `KILL`, `STOP`, `CONT`).
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Int => "INT",
            Signal::Kill => "KILL",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
        }
    }

    /// The signal number on Linux (what `ExitStatusExt::signal` reports for a killed process).
    pub fn number(self) -> i32 {
        match self {
            Signal::Term => 15,
            Signal::Int => 2,
            Signal::Kill => 9,
            Signal::Stop => 19,
            Signal::Cont => 18,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}

/// Why a server could not be started: the reason, how it ended (if it did) and its stderr.
#[derive(Debug)]
pub struct StartError {
    /// What went wrong (spawn failure, exit before listening, timeout, ...).
    pub reason: String,
    /// The exit status, when the process ended before becoming ready.
    pub exit_status: Option<ExitStatus>,
    /// Everything the process wrote on stderr.
    pub stderr: String,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)?;
        if let Some(status) = self.exit_status {
            write!(f, " (exited: {status})")?;
        }
        write!(
            f,
            "\n--- server stderr (last {TAIL_LINES} lines) ---\n{}",
            tail(&self.stderr, TAIL_LINES)
        )
    }
}

impl std::error::Error for StartError {}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> &str {
    let trimmed = text.trim_end_matches('\n');
    match trimmed.rmatch_indices('\n').nth(n.saturating_sub(1)) {
        Some((i, _)) if n > 0 => &trimmed[i + 1..],
        _ if n == 0 => "",
        _ => trimmed,
    }
}

/// Parses the address out of the `ironsift: listening on http://ADDR` line.
pub(crate) fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    line.trim_end()
        .strip_prefix(LISTENING_PREFIX)?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// Everything needed to (re)start the process.
#[derive(Debug, Clone)]
struct Config {
    bin: PathBuf,
    wrapper: Vec<OsString>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    listen: String,
    startup_timeout: Duration,
    wait_ready: bool,
}

/// Configures and starts a [`ServerProcess`]; see [`ServerProcess::builder`].
#[derive(Debug, Clone)]
#[must_use = "call .start() to run the server"]
pub struct ServerBuilder {
    config: Config,
    data_dir: Option<PathBuf>,
}

impl ServerBuilder {
    /// Uses `dir` as the data directory (kept after the process ends; e.g. a previous
    /// server's [`ServerProcess::data_dir`]). By default a fresh temporary directory is used
    /// and deleted with the [`ServerProcess`].
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Adds one argument after `serve` (a flag such as `--shutdown-timeout`, its value, the
    /// folder to index, or a global flag such as `--index`).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.config.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments after `serve`; see [`ServerBuilder::arg`].
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.config
            .args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the process. The inherited `IRONSIFT_*` variables and
    /// `RUST_LOG` are removed so the caller's environment cannot change what a test runs;
    /// set them here when a test needs them.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.config
            .env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Runs the binary through a wrapper command, e.g. `["setpriv", "--reuid=65534", "--"]` or
    /// `["taskset", "-c", "0"]`: the process started is `WRAPPER... BIN --data DIR serve ...`.
    /// The wrapper must `exec` the binary so that signals reach it.
    pub fn wrapper<I, S>(mut self, wrapper: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.config.wrapper = wrapper.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// The `--listen` address (default `127.0.0.1:0`, a free loopback port).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.config.listen = addr.into();
        self
    }

    /// Bounds the wait for the listening line and for readiness (default 30 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.config.startup_timeout = timeout;
        self
    }

    /// Whether [`ServerBuilder::start`] waits for `GET /readyz` to answer 200 (default true).
    /// Turn it off to start a server that is expected to be unready (e.g. on a broken index);
    /// it still waits for the listening line.
    pub fn wait_ready(mut self, wait: bool) -> Self {
        self.config.wait_ready = wait;
        self
    }

    /// Starts the process and waits until it listens (and is ready, unless turned off).
    pub fn start(self) -> Result<ServerProcess, StartError> {
        let scratch = tempfile::Builder::new()
            .prefix("ironsift-test-")
            .tempdir()
            .map_err(|e| StartError {
                reason: format!("cannot create a temporary directory: {e}"),
                exit_status: None,
                stderr: String::new(),
            })?;
        let (data_dir, owned) = match self.data_dir {
            Some(d) => (d, false),
            None => (scratch.path().join("data"), true),
        };
        let run = spawn(&self.config, &data_dir, scratch.path(), 1)?;
        Ok(ServerProcess {
            config: self.config,
            scratch,
            data_dir,
            owns_data: owned,
            run,
            runs: 1,
            exited: None,
        })
    }
}

/// One started process.
struct Running {
    child: Child,
    addr: SocketAddr,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr_path: PathBuf,
}

/// A running `ironsift serve` child process on a loopback port.
///
/// The command line is `BIN --data DIR serve [ARGS...] --listen 127.0.0.1:0`. Start-up reads
/// the bound address from the `ironsift: listening on http://ADDR` stdout line, then polls
/// `GET /readyz` until it answers 200, all within a bound (30 s by default). Stderr goes to a
/// file ([`ServerProcess::stderr_text`]) and its tail is printed when a test panics while the
/// process is alive. Dropping the value kills the process (SIGKILL) and reaps it, so no server
/// outlives its test; the temporary data directory, when the harness made one, goes with it.
///
/// ```no_run
/// use std::time::Duration;
/// use testkit::{ServerProcess, Signal};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut server = ServerProcess::builder("target/debug/ironsift")
///     .args(["--shutdown-timeout", "10s"])
///     .start()?;
/// assert_eq!(server.get("/livez")?.status, 200);
/// server.signal(Signal::Term)?;
/// let status = server.wait_exit(Duration::from_secs(10)).expect("exits");
/// assert!(status.success());
/// server.restart()?; // same data directory, new port
/// # Ok(()) }
/// ```
pub struct ServerProcess {
    config: Config,
    /// Holds the logs and, unless the caller gave one, the data directory.
    scratch: TempDir,
    data_dir: PathBuf,
    owns_data: bool,
    run: Running,
    runs: u32,
    /// Set once the current process has been reaped.
    exited: Option<ExitStatus>,
}

impl fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerProcess")
            .field("pid", &self.pid())
            .field("addr", &self.run.addr)
            .field("data_dir", &self.data_dir)
            .field("runs", &self.runs)
            .field("exited", &self.exited)
            .finish_non_exhaustive()
    }
}

impl ServerProcess {
    /// A builder for the binary at `bin` (integration tests of the root package pass
    /// `env!("CARGO_BIN_EXE_ironsift")`).
    pub fn builder(bin: impl Into<PathBuf>) -> ServerBuilder {
        ServerBuilder {
            config: Config {
                bin: bin.into(),
                wrapper: Vec::new(),
                args: Vec::new(),
                env: Vec::new(),
                listen: "127.0.0.1:0".to_string(),
                startup_timeout: DEFAULT_STARTUP_TIMEOUT,
                wait_ready: true,
            },
            data_dir: None,
        }
    }

    /// Starts `bin` with `args` after `serve`, on a fresh temporary data directory, and waits
    /// until it is ready. Shorthand for `builder(bin).args(args).start()`.
    pub fn start<I, S>(bin: impl Into<PathBuf>, args: I) -> Result<ServerProcess, StartError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::builder(bin).args(args).start()
    }

    /// The address the current process listens on.
    pub fn addr(&self) -> SocketAddr {
        self.run.addr
    }

    /// `http://ADDR` followed by `path` (a `/` is inserted when `path` lacks one).
    pub fn url(&self, path: &str) -> String {
        let sep = if path.starts_with('/') || path.is_empty() {
            ""
        } else {
            "/"
        };
        format!("http://{}{sep}{path}", self.run.addr)
    }

    /// The process id of the current process.
    pub fn pid(&self) -> u32 {
        self.run.child.id()
    }

    /// The data directory (the same across restarts).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether the data directory is a temporary one deleted with this value.
    pub fn owns_data_dir(&self) -> bool {
        self.owns_data
    }

    /// How many processes have been started (1, then +1 per restart).
    pub fn runs(&self) -> u32 {
        self.runs
    }

    /// Sends `signal` to the current process with `kill -s NAME PID`. Fails once the process
    /// has been reaped by [`ServerProcess::wait_exit`] (its pid may belong to someone else).
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        if let Some(status) = self.exited {
            return Err(io::Error::other(format!(
                "cannot send {signal}: process {} already exited ({status})",
                self.pid()
            )));
        }
        let out = Command::new("kill")
            .arg("-s")
            .arg(signal.name())
            .arg(self.pid().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run `kill`: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "kill -s {} {} failed ({}): {}",
                signal.name(),
                self.pid(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Waits up to `timeout` for the current process to exit; its status, or `None` if it is
    /// still running. Returns the same status again once exited.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            thread::sleep((deadline - now).min(Duration::from_millis(10)));
        }
    }

    /// Whether the current process is still running (not yet exited).
    pub fn is_running(&mut self) -> bool {
        self.try_exit_status().is_none()
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            // An error here means the child was already reaped, which only we do.
            if let Ok(Some(status)) = self.run.child.try_wait() {
                self.exited = Some(status);
            }
        }
        self.exited
    }

    /// Kills the current process with SIGKILL (a crash) and reaps it; its status.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        self.run.child.kill()?;
        let status = self.run.child.wait()?;
        self.exited = Some(status);
        Ok(status)
    }

    /// Starts the binary again on the same data directory with the same arguments (on a new
    /// port when listening on port 0) and waits as [`ServerBuilder::start`] did. A process
    /// still running is killed first (SIGKILL): for a graceful restart, send
    /// [`Signal::Term`] and [`ServerProcess::wait_exit`] before.
    pub fn restart(&mut self) -> Result<(), StartError> {
        let _ = self.kill();
        let run = spawn(
            &self.config,
            &self.data_dir,
            self.scratch.path(),
            self.runs + 1,
        )?;
        self.run = run;
        self.runs += 1;
        self.exited = None;
        Ok(())
    }

    /// Like [`ServerProcess::restart`], with `args` (after `serve`) replacing the previous
    /// ones for this and later restarts.
    pub fn restart_with_args<I, S>(&mut self, args: I) -> Result<(), StartError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.config.args = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self.restart()
    }

    /// Polls `GET /readyz` until it answers 200, for at most `timeout`. Fails early if the
    /// process exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), StartError> {
        let result = wait_ready(&mut self.run, timeout);
        if let Err(e) = &result
            && e.exit_status.is_some()
        {
            self.exited = e.exit_status;
        }
        result
    }

    /// A blocking `GET path` on the server (see [`crate::http`]); enough for quick checks
    /// from synchronous code.
    pub fn get(&self, path: &str) -> io::Result<HttpResponse> {
        http::get(self.run.addr, path, PROBE_TIMEOUT)
    }

    /// What the current process wrote on stderr so far (its logs).
    pub fn stderr_text(&self) -> String {
        read_lossy(&self.run.stderr_path)
    }

    /// The file holding the current process's stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.run.stderr_path
    }

    /// What the current process wrote on stdout so far.
    pub fn stdout_text(&self) -> String {
        let buf = self.run.stdout.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let was_running = self.exited.is_none();
        let _ = self.kill();
        if thread::panicking() {
            eprintln!(
                "--- ironsift (pid {}, run {}, {}) stderr, last {TAIL_LINES} lines ---\n{}\n--- end of ironsift stderr ---",
                self.pid(),
                self.runs,
                if was_running {
                    "killed by the harness"
                } else {
                    "had exited"
                },
                tail(&self.stderr_text(), TAIL_LINES)
            );
        }
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Spawns run number `run_no` and waits for its address (and readiness when configured).
fn spawn(
    config: &Config,
    data_dir: &Path,
    scratch: &Path,
    run_no: u32,
) -> Result<Running, StartError> {
    let stderr_path = scratch.join(format!("stderr.{run_no}.log"));
    let fail = |reason: String| StartError {
        reason,
        exit_status: None,
        stderr: String::new(),
    };
    let stderr_file = File::create(&stderr_path)
        .map_err(|e| fail(format!("cannot create {}: {e}", stderr_path.display())))?;

    let mut cmd = match config.wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&config.bin);
            c
        }
        None => Command::new(&config.bin),
    };
    cmd.arg("--data")
        .arg(data_dir)
        .arg("serve")
        .args(&config.args);
    let listen_given = config.args.iter().any(|a| {
        let a = a.to_string_lossy();
        a == "--listen" || a.starts_with("--listen=")
    });
    if !listen_given {
        cmd.arg("--listen").arg(&config.listen);
    }
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("IRONSIFT_") || k == "RUST_LOG" {
            cmd.env_remove(&key);
        }
    }
    for (k, v) in &config.env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr_file));

    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", config.bin.display())))?;
    let stdout_pipe = child.stdout.take().expect("stdout is piped");
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let addr_rx = read_stdout(stdout_pipe, Arc::clone(&stdout));

    let started = Instant::now();
    let mut run = Running {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        stdout,
        stderr_path,
    };
    let result = wait_listening(&mut run, &addr_rx, config.startup_timeout).and_then(|addr| {
        run.addr = addr;
        if config.wait_ready {
            let left = config.startup_timeout.saturating_sub(started.elapsed());
            wait_ready(&mut run, left)
        } else {
            Ok(())
        }
    });
    match result {
        Ok(()) => Ok(run),
        Err(mut e) => {
            // Never leave a half-started process behind.
            // (Its status after our SIGKILL says nothing about the server: not reported.)
            let _ = run.child.kill();
            let _ = run.child.wait();
            e.stderr = read_lossy(&run.stderr_path);
            Err(e)
        }
    }
}

/// Reads stdout lines on a thread (keeping them, so the child never blocks on a full pipe) and
/// sends the address of the first listening line.
fn read_stdout(pipe: ChildStdout, buf: Arc<Mutex<Vec<u8>>>) -> mpsc::Receiver<SocketAddr> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("ironsift-stdout".into())
        .spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            let mut sent = false;
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                buf.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&line);
                if !sent && let Some(addr) = parse_listening_line(&String::from_utf8_lossy(&line)) {
                    sent = tx.send(addr).is_ok();
                }
            }
        })
        .expect("cannot spawn the stdout reader thread");
    rx
}

fn wait_listening(
    run: &mut Running,
    rx: &mpsc::Receiver<SocketAddr>,
    timeout: Duration,
) -> Result<SocketAddr, StartError> {
    let deadline = Instant::now() + timeout;
    let err = |reason: String, exit_status: Option<ExitStatus>| StartError {
        reason,
        exit_status,
        stderr: String::new(),
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(addr) => return Ok(addr),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Stdout closed without the line: the process is (nearly) gone.
                let status = wait_child(&mut run.child, Duration::from_secs(5));
                return Err(err(
                    "the server closed stdout without printing its listening line".into(),
                    status,
                ));
            }
        }
        if let Ok(Some(status)) = run.child.try_wait() {
            return Err(err(
                "the server exited before printing its listening line".into(),
                Some(status),
            ));
        }
        if Instant::now() >= deadline {
            return Err(err(
                format!("no listening line on stdout within {timeout:?}"),
                None,
            ));
        }
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn wait_ready(run: &mut Running, timeout: Duration) -> Result<(), StartError> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    loop {
        if let Ok(Some(status)) = run.child.try_wait() {
            return Err(StartError {
                reason: format!(
                    "the server exited while waiting for readiness (last /readyz: {last})"
                ),
                exit_status: Some(status),
                stderr: read_lossy(&run.stderr_path),
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match http::get(
            run.addr,
            "/readyz",
            PROBE_TIMEOUT.min(left).max(Duration::from_millis(100)),
        ) {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => last = format!("{} {}", r.status, r.text()),
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(StartError {
                reason: format!(
                    "GET /readyz on {} did not answer 200 within {timeout:?} (last: {last})",
                    run.addr
                ),
                exit_status: None,
                stderr: read_lossy(&run.stderr_path),
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::os::unix::process::ExitStatusExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn listening_line_is_parsed() {
        assert_eq!(
            parse_listening_line("ironsift: listening on http://127.0.0.1:4321\n"),
            Some("127.0.0.1:4321".parse().unwrap())
        );
        assert_eq!(
            parse_listening_line("ironsift: listening on http://[::1]:80/"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_listening_line("indexed 3 files"), None);
        assert_eq!(
            parse_listening_line("ironsift: listening on http://nowhere"),
            None
        );
    }

    #[test]
    fn tails() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a\nb\nc", 5), "a\nb\nc");
        assert_eq!(tail("a\nb", 0), "");
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn signals_have_kill_names() {
        assert_eq!(Signal::Term.name(), "TERM");
        assert_eq!(Signal::Kill.to_string(), "SIGKILL");
        assert_eq!(Signal::Int.number(), 2);
    }

    /// A stand-in for `/readyz`: answers 503 to the first `unready` requests, then 200.
    fn fake_http(unready: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hits);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                let mut buf = [0u8; 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let n = h.fetch_add(1, Ordering::SeqCst);
                let status = if n < unready {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\n{{}}");
            }
        });
        (addr, hits)
    }

    /// A builder whose "binary" is a shell script (run with `sh -c`, so no executable file is
    /// written: that would race with concurrent forks, ETXTBSY).
    fn fake(script: &str) -> ServerBuilder {
        ServerProcess::builder("fake-ironsift").wrapper(["sh", "-c", script])
    }

    fn proc_state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The state follows the parenthesised command name.
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    fn wait_state(pid: u32, want: char) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if proc_state(pid) == Some(want) {
                return true;
            }
            thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn lifecycle_with_a_fake_server() {
        let (addr, hits) = fake_http(2);
        let script = r#"echo "argv: $*" >&2; echo "flag: ${FAKE_FLAG-unset} ${IRONSIFT_DATA-clean}" >&2
echo "some other output"
echo "ironsift: listening on http://$FAKE_ADDR"
exec sleep 30"#;
        let mut server = fake(script)
            .env("FAKE_ADDR", addr.to_string())
            .env("FAKE_FLAG", "on")
            .args(["--shutdown-timeout", "5s"])
            .start()
            .unwrap();
        assert_eq!(server.addr(), addr);
        assert!(hits.load(Ordering::SeqCst) >= 3, "waited past two 503s");
        assert_eq!(server.url("/livez"), format!("http://{addr}/livez"));
        assert_eq!(server.url("readyz"), format!("http://{addr}/readyz"));
        assert!(server.owns_data_dir());
        let data = server.data_dir().to_path_buf();
        let err = server.stderr_text();
        assert!(
            err.contains(&format!(
                "argv: --data {} serve --shutdown-timeout 5s --listen 127.0.0.1:0",
                data.display()
            )),
            "{err}"
        );
        assert!(err.contains("flag: on clean"), "{err}");
        assert!(server.stdout_text().contains("some other output"));
        assert_eq!(server.get("/anything").unwrap().status, 200);

        let pid = server.pid();
        server.signal(Signal::Stop).unwrap();
        assert!(wait_state(pid, 'T'), "stopped: {:?}", proc_state(pid));
        assert_eq!(server.wait_exit(Duration::from_millis(50)), None);
        server.signal(Signal::Cont).unwrap();
        assert!(wait_state(pid, 'S'), "resumed: {:?}", proc_state(pid));
        server.signal(Signal::Term).unwrap();
        let status = server.wait_exit(Duration::from_secs(5)).expect("exits");
        assert_eq!(status.signal(), Some(Signal::Term.number()));
        assert!(!server.is_running());
        assert!(server.signal(Signal::Term).is_err(), "reaped: no signals");

        server.restart().unwrap();
        assert_eq!(server.runs(), 2);
        assert_ne!(server.pid(), pid);
        assert_eq!(server.data_dir(), data);
        let pid2 = server.pid();
        assert!(server.is_running());
        drop(server);
        assert_eq!(proc_state(pid2), None, "killed and reaped on drop");
    }

    #[test]
    fn start_reports_an_early_exit_with_its_stderr() {
        let e = fake("echo 'boom: cannot open index' >&2; exit 3")
            .start()
            .unwrap_err();
        assert_eq!(e.exit_status.and_then(|s| s.code()), Some(3), "{e}");
        assert!(e.stderr.contains("boom"), "{e}");
        assert!(e.to_string().contains("boom: cannot open index"), "{e}");
    }

    #[test]
    fn start_is_bounded_and_kills_what_it_started() {
        let started = Instant::now();
        let e = fake("echo \"pid $$\" >&2; exec sleep 30")
            .startup_timeout(Duration::from_millis(300))
            .start()
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(e.reason.contains("no listening line"), "{e}");
        let pid: u32 = e
            .stderr
            .trim()
            .strip_prefix("pid ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{e}"));
        assert_eq!(proc_state(pid), None, "the child was killed and reaped");
    }

    #[test]
    fn readiness_timeout_names_the_last_answer() {
        let (addr, _) = fake_http(usize::MAX);
        let e = fake("echo \"ironsift: listening on http://$FAKE_ADDR\"; exec sleep 30")
            .env("FAKE_ADDR", addr.to_string())
            .startup_timeout(Duration::from_millis(300))
            .start()
            .unwrap_err();
        assert!(e.reason.contains("did not answer 200"), "{e}");
        assert!(e.reason.contains("503"), "{e}");
    }

    #[test]
    fn unready_servers_can_be_started_on_a_given_dir() {
        let (addr, _) = fake_http(usize::MAX);
        let dir = tempfile::tempdir().unwrap();
        let mut server = fake("echo \"ironsift: listening on http://$FAKE_ADDR\"; exec sleep 30")
            .env("FAKE_ADDR", addr.to_string())
            .data_dir(dir.path())
            .wait_ready(false)
            .start()
            .unwrap();
        assert_eq!(server.data_dir(), dir.path());
        assert!(!server.owns_data_dir());
        assert!(server.wait_ready(Duration::from_millis(100)).is_err());
        let status = server.kill().unwrap();
        assert_eq!(status.signal(), Some(9));
        assert!(dir.path().exists());
    }
}
