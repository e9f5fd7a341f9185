//! HTTP load generation against any ironsift deployment (loopback in our tests).
//!
//! Two modes:
//! - **closed loop**: `connections` clients, each sending its next request as soon as the last
//!   answer arrived; measures the throughput the server sustains;
//! - **open loop**: requests are due at a fixed `rate`; request *k* is due at `start + k/rate`
//!   and its latency is measured from that due time, not from when a client got around to
//!   sending it, so a stalled server cannot hide its stall by slowing the clients down
//!   (coordinated omission).
//!
//! [`run`] is the simple form (one mode, one duration). [`run_plan`] is the scenario engine
//! behind `ironsift bench-http --scenario`: several [`Workload`]s side by side, each a
//! sequence of [`Phase`]s (closed loop with user ramps and per-user quotas, open loop, pauses),
//! [`Hook`]s at given moments (e.g. a SIGKILL), memory sampling of a local server, and a
//! [`RunData`] with every outcome [`Class`] counted, HDR latency per class, and a per-second
//! time series (throughput, 2xx p50/p99, shed and error counts, probe latency, users, memory).
//!
//! A probe can poll a second path (e.g. `/readyz`) on its own connection meanwhile, to show that
//! health answers stay fast under load. The server's Prometheus metrics can be polled too
//! ([`MetricsPoll`]), once a second on a thread of their own: its circuit breaker transitions
//! and state go into [`RunData::breaker`], summed across server restarts ([`CounterDeltas`]). The HTTP/1.1 client is minimal on purpose (keep-alive,
//! `Content-Length` or chunked bodies): the load generator shares the machine with the server
//! and must cost as little CPU as it can.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::{Counter, Histogram};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Server address.
    pub addr: SocketAddr,
    /// Request paths (with query strings), used round-robin.
    pub paths: Arc<Vec<String>>,
    /// Concurrent connections.
    pub connections: usize,
    /// Measured duration (after warm-up).
    pub duration: Duration,
    /// Warm-up before measuring.
    pub warmup: Duration,
    /// Open loop at this many requests per second; `None` for closed loop.
    pub rate: Option<f64>,
    /// Path polled on its own connection during the run (e.g. `/readyz`).
    pub probe: Option<String>,
    /// Time between probe requests.
    pub probe_interval: Duration,
    /// Give up on one response after this long (counted as a timeout).
    pub request_timeout: Duration,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl Latency {
    fn of<T: Counter>(h: &Histogram<T>) -> Latency {
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LoadReport {
    /// Responses received in the measured window.
    pub responses: u64,
    /// Of which 2xx.
    pub ok: u64,
    /// Of which shed (429 or 503): handled, not errors.
    pub shed: u64,
    /// Of which other statuses (4xx other than 429, 5xx other than 503).
    pub errors: u64,
    /// Requests that got no response (connection failures, timeouts).
    pub failures: u64,
    /// Of the failures, those that timed out.
    pub timeouts: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Responses per second.
    pub qps: f64,
    /// Latency of responses (from the due time in open loop).
    pub latency: Latency,
    /// Latency of the probe, if any.
    pub probe: Option<Latency>,
    /// Open-loop rate asked for, if any.
    pub rate: Option<f64>,
}

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

/// A response, reduced to what the load generator counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    status: u16,
    /// A `Retry-After` header was present.
    retry_after: bool,
    /// A 2xx body ends with `"degraded":true` (an answer from a fallback such as a cache).
    degraded: bool,
    /// A 2xx body ends with `"timed_out":true` (partial hits: the deadline stopped the query).
    partial: bool,
}

/// What one request came to.
#[derive(Debug)]
enum Sent {
    Answer(Answer),
    /// No (complete) response: refused, reset, closed early, malformed.
    Failed(io::Error),
    /// No response within the client timeout.
    TimedOut,
}

/// Bytes of a body's end searched for the `degraded`/`timed_out` flags (the search answer
/// ends with them).
const FLAG_TAIL: usize = 160;

impl Conn {
    fn new(addr: SocketAddr) -> Self {
        Conn {
            addr,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    fn close(&mut self) {
        self.stream = None;
    }

    async fn send(&mut self, request: &[u8], timeout: Duration) -> Sent {
        match tokio::time::timeout(timeout, self.send_inner(request)).await {
            Ok(Ok(answer)) => Sent::Answer(answer),
            Ok(Err(e)) => {
                self.stream = None;
                Sent::Failed(e)
            }
            Err(_) => {
                self.stream = None;
                Sent::TimedOut
            }
        }
    }

    async fn send_inner(&mut self, request: &[u8]) -> io::Result<Answer> {
        let reused = self.stream.is_some();
        match self.exchange(request).await {
            // A kept-alive connection the server closed while idle: retry once on a fresh
            // one, as every HTTP client does (the request never reached the application).
            Err(e) if reused && is_stale(&e) && self.buf.is_empty() => {
                self.stream = None;
                self.exchange(request).await
            }
            other => other,
        }
    }

    async fn exchange(&mut self, request: &[u8]) -> io::Result<Answer> {
        self.buf.clear();
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(request).await?;
        // Read until the end of the headers.
        let header_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            read_more(stream, &mut self.buf).await?;
        };
        let head = std::str::from_utf8(&self.buf[..header_end])
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 headers"))?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
        let mut length = None;
        let mut close = false;
        let mut chunked = false;
        let mut retry_after = false;
        for line in head.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                    close = true;
                } else if k.eq_ignore_ascii_case("transfer-encoding")
                    && v.to_ascii_lowercase().contains("chunked")
                {
                    chunked = true;
                } else if k.eq_ignore_ascii_case("retry-after") {
                    retry_after = true;
                }
            }
        }
        let body_end = if chunked {
            read_chunked(stream, &mut self.buf, header_end).await?
        } else if let Some(length) = length {
            while self.buf.len() < header_end + length {
                read_more(stream, &mut self.buf).await?;
            }
            header_end + length
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            header_end
        } else {
            // No length: the body runs to the end of the connection.
            loop {
                match read_more(stream, &mut self.buf).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
            }
            close = true;
            self.buf.len()
        };
        if close {
            self.stream = None;
        }
        let (mut degraded, mut partial) = (false, false);
        if (200..300).contains(&status) {
            let tail = &self.buf[body_end.saturating_sub(FLAG_TAIL).max(header_end)..body_end];
            degraded = find(tail, b"\"degraded\":true").is_some();
            partial = find(tail, b"\"timed_out\":true").is_some();
        }
        // Reads of the next exchange start from an empty buffer; keep the capacity modest
        // so a thousand idle users do not each hold their largest answer.
        if self.buf.capacity() > 256 * 1024 {
            self.buf = Vec::with_capacity(16 * 1024);
        } else {
            self.buf.clear();
        }
        Ok(Answer {
            status,
            retry_after,
            degraded,
            partial,
        })
    }
}

/// Whether `e` is what writing to or reading from a connection the server already closed
/// gives.
fn is_stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// Reads a chunked body that starts at `from` in `buf`; the offset where it ends (the
/// chunk framing stays in the buffer, which only the flag search looks at).
async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>, from: usize) -> io::Result<usize> {
    let mut at = from;
    loop {
        let line_end = loop {
            if let Some(i) = find(&buf[at..], b"\r\n") {
                break at + i;
            }
            read_more(stream, buf).await?;
        };
        let size_text = std::str::from_utf8(&buf[at..line_end])
            .ok()
            .and_then(|s| s.split(';').next())
            .map(str::trim)
            .unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                if let Some(i) = find(&buf[at..], b"\r\n") {
                    let empty = i == 0;
                    at += i + 2;
                    if empty {
                        return Ok(at);
                    }
                } else {
                    read_more(stream, buf).await?;
                }
            }
        }
        while buf.len() < at + size + 2 {
            read_more(stream, buf).await?;
        }
        at += size + 2;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Latency histograms: 1 µs to 2 min, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// Per-second histograms: coarser (2 digits, 32-bit counts), as a run keeps one per second.
fn second_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, 120_000_000, 2).expect("valid histogram bounds")
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Runs the load and reports. Stops by itself after `warmup + duration`.
///
/// The simple form behind `ironsift bench-http` without a scenario: one workload, closed or
/// open loop, on the scenario engine ([`run_plan`]).
pub async fn run(cfg: LoadConfig) -> io::Result<LoadReport> {
    if cfg.paths.is_empty() || cfg.connections == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no paths or no connections",
        ));
    }
    let host = cfg.addr.to_string();
    let requests: Vec<Request> = cfg
        .paths
        .iter()
        .map(|p| Request::get(&host, p, &[]))
        .collect();
    let mode = match cfg.rate {
        Some(rate) => Mode::Open {
            rate,
            connections: cfg.connections,
        },
        None => Mode::Closed {
            from: cfg.connections,
            users: cfg.connections,
            ramp: Duration::ZERO,
            per_user: None,
        },
    };
    let plan = Plan {
        addr: cfg.addr,
        workloads: vec![Workload {
            name: "load".into(),
            requests: Arc::new(requests),
            phases: vec![Phase {
                name: "load".into(),
                mode,
                duration: cfg.warmup + cfg.duration,
                warmup: cfg.warmup,
            }],
        }],
        timeout: cfg.request_timeout,
        probe: cfg.probe.as_ref().map(|p| Request::get(&host, p, &[])),
        probe_interval: cfg.probe_interval,
        rss_pid: None,
        hooks: Vec::new(),
        metrics: None,
    };
    let data = run_plan(plan).await?;
    let t = &data.totals;
    let seconds = cfg.duration.as_secs_f64();
    let responses = t.ok + t.shed + t.rejected + t.http_errors;
    Ok(LoadReport {
        responses,
        ok: t.ok,
        shed: t.shed,
        errors: t.http_errors + t.rejected,
        failures: t.conn_errors + t.timeouts,
        timeouts: t.timeouts,
        seconds,
        qps: responses as f64 / seconds,
        latency: data.latency.responses.clone(),
        probe: data.probe.as_ref().map(|p| p.latency.clone()),
        rate: cfg.rate,
    })
}

// ---------------------------------------------------------------------------------------
// The scenario engine: workloads of phases, outcome classes, time series.
// ---------------------------------------------------------------------------------------

/// How a response (or its absence) counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// 2xx.
    Ok,
    /// 429 or 503: the server refused the work to protect itself; handled, not an error.
    Shed,
    /// The input refused (400, 413, 414 or 431) for a request marked as possibly invalid
    /// ([`Request::expecting_rejection`]: a query over the server's length limit, a raw web
    /// query that is not valid syntax): handled, not an error. Other 4xx (401, 403, 404, ...)
    /// stay errors.
    Rejected,
    /// Any other status, or no response (refused, reset, malformed).
    Error,
    /// No response within the client timeout.
    Timeout,
}

impl Class {
    /// Every class, in report order.
    pub const ALL: [Class; 5] = [
        Class::Ok,
        Class::Shed,
        Class::Rejected,
        Class::Error,
        Class::Timeout,
    ];

    /// The snake_case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Shed => "shed",
            Class::Rejected => "rejected",
            Class::Error => "error",
            Class::Timeout => "timeout",
        }
    }

    fn of(sent: &Sent, expect_rejection: bool) -> Class {
        match sent {
            Sent::Answer(a) => match a.status {
                200..=299 => Class::Ok,
                429 | 503 => Class::Shed,
                400 | 413 | 414 | 431 if expect_rejection => Class::Rejected,
                _ => Class::Error,
            },
            Sent::Failed(_) => Class::Error,
            Sent::TimedOut => Class::Timeout,
        }
    }
}

/// One prepared HTTP/1.1 request (the bytes sent as they are).
#[derive(Debug, Clone)]
pub struct Request {
    bytes: Arc<[u8]>,
    expect_rejection: bool,
}

impl Request {
    /// A request with `headers` (e.g. `("Authorization", "Bearer K")`) and an optional body
    /// with its content type. `Host` and `Content-Length` are added.
    pub fn new(
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Request {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (k, v) in headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        let mut bytes = head.into_bytes();
        if let Some((content_type, body)) = body {
            bytes.extend_from_slice(
                format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            bytes.extend_from_slice(body);
        } else {
            bytes.extend_from_slice(b"\r\n");
        }
        Request {
            bytes: bytes.into(),
            expect_rejection: false,
        }
    }

    /// `GET path`; see [`Request::new`].
    pub fn get(host: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        Request::new("GET", host, path, headers, None)
    }

    /// Marks the request as one the server may refuse as invalid input (a 400, 413, 414 or 431
    /// then counts as [`Class::Rejected`], not as an error).
    pub fn expecting_rejection(mut self) -> Request {
        self.expect_rejection = true;
        self
    }

    /// Size on the wire, in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a request has at least its request line.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// How a phase sends.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `users` clients, each with its own keep-alive connection, sending the next request as
    /// soon as the last answer arrived. The number of active users ramps linearly from
    /// `from` to `users` over `ramp`; users leaving close their connection. With `per_user`,
    /// each user sends that many requests and leaves; the phase ends when all have, or when
    /// its duration runs out. Users carry over into a following closed phase.
    Closed {
        /// Active users when the phase starts.
        from: usize,
        /// Active users after the ramp.
        users: usize,
        /// Length of the linear ramp.
        ramp: Duration,
        /// Requests per user, then the user leaves.
        per_user: Option<u64>,
    },
    /// Requests due at `rate` per second, request *k* at `start + k/rate`, its latency
    /// measured from that due time (so a stalled server cannot hide its stall by slowing the
    /// client: coordinated omission). At most `connections` are in flight; requests that
    /// cannot go out on time wait, and their wait counts in their latency.
    Open {
        /// Requests per second.
        rate: f64,
        /// Connections (the bound on requests in flight).
        connections: usize,
    },
    /// Nothing sent (e.g. to watch memory settle after load).
    Pause,
}

/// One step of a workload.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Shown in reports.
    pub name: String,
    /// How requests are sent.
    pub mode: Mode,
    /// Length (the upper bound for phases with `per_user` quotas).
    pub duration: Duration,
    /// Requests sent in the phase's first `warmup` appear in the time series but not in the
    /// totals and percentiles.
    pub warmup: Duration,
}

/// Phases run one after the other over the same requests (used round-robin).
#[derive(Debug, Clone)]
pub struct Workload {
    /// Shown in reports (e.g. `search`, `batches`).
    pub name: String,
    /// The requests, sent round-robin.
    pub requests: Arc<Vec<Request>>,
    /// Run in order.
    pub phases: Vec<Phase>,
}

/// An action run at a moment of the run (on its own thread), e.g. killing the server.
pub struct Hook {
    /// When, from the start of the run.
    pub at: Duration,
    /// Shown in reports.
    pub name: String,
    /// What to do; its message (or error) is recorded with the event.
    pub action: Box<dyn FnOnce() -> Result<String, String> + Send>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("at", &self.at)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A whole run: workloads running side by side, a health probe, memory sampling, hooks.
#[derive(Debug)]
pub struct Plan {
    /// Server address.
    pub addr: SocketAddr,
    /// Run concurrently, each through its phases.
    pub workloads: Vec<Workload>,
    /// Client timeout per request (a request past it counts as [`Class::Timeout`]).
    pub timeout: Duration,
    /// Request polled on its own connection and thread throughout (e.g. `GET /readyz`).
    pub probe: Option<Request>,
    /// Time between probe requests.
    pub probe_interval: Duration,
    /// Sample this local process's memory (`/proc/PID/status`) every second.
    pub rss_pid: Option<u32>,
    /// Actions at given moments.
    pub hooks: Vec<Hook>,
    /// Poll the server's Prometheus metrics throughout, for its circuit breakers and injected
    /// faults ([`RunData::breaker`], [`RunData::injected_faults`]).
    pub metrics: Option<MetricsPoll>,
}

/// Counts of outcomes.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counts {
    /// Requests that completed (any outcome).
    pub requests: u64,
    /// 2xx.
    pub ok: u64,
    /// 429/503.
    pub shed: u64,
    /// Of the shed, those with a `Retry-After` header.
    pub shed_with_retry_after: u64,
    /// Expected 4xx refusals ([`Class::Rejected`]).
    pub rejected: u64,
    /// Errors: `http_errors + conn_errors`.
    pub errors: u64,
    /// Error statuses (4xx other than 429, 5xx other than 503).
    pub http_errors: u64,
    /// No response: refused, reset, closed early, malformed.
    pub conn_errors: u64,
    /// No response within the client timeout.
    pub timeouts: u64,
    /// 2xx answers flagged `"degraded":true`.
    pub degraded: u64,
    /// 2xx answers flagged `"timed_out":true` (partial hits).
    pub partial: u64,
}

impl Counts {
    fn add(&mut self, class: Class, sent: &Sent) {
        self.requests += 1;
        match class {
            Class::Ok => self.ok += 1,
            Class::Shed => self.shed += 1,
            Class::Rejected => self.rejected += 1,
            Class::Error => self.errors += 1,
            Class::Timeout => self.timeouts += 1,
        }
        match sent {
            Sent::Answer(a) => {
                if class == Class::Shed && a.retry_after {
                    self.shed_with_retry_after += 1;
                }
                if class == Class::Error {
                    self.http_errors += 1;
                }
                self.degraded += u64::from(class == Class::Ok && a.degraded);
                self.partial += u64::from(class == Class::Ok && a.partial);
            }
            Sent::Failed(_) => self.conn_errors += 1,
            Sent::TimedOut => {}
        }
    }

    /// Requests answered as intended: ok, shed or rejected (everything but errors and
    /// timeouts).
    pub fn handled(&self) -> u64 {
        self.ok + self.shed + self.rejected
    }

    /// `part` as a percentage of the requests (0 when there were none).
    pub fn percent(&self, part: u64) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            part as f64 * 100.0 / self.requests as f64
        }
    }
}

/// Latency of each outcome class.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ClassLatency {
    /// Every response (not the requests without one).
    pub responses: Latency,
    /// 2xx.
    pub ok: Latency,
    /// 429/503.
    pub shed: Latency,
    /// Expected refusals.
    pub rejected: Latency,
    /// Errors (time until the error status or the failure).
    pub error: Latency,
    /// Timeouts (about the client timeout).
    pub timeout: Latency,
}

/// Totals of one workload.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadTotals {
    /// The workload's name.
    pub name: String,
    /// Its outcomes (measured part).
    pub counts: Counts,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Latency of its 2xx answers.
    pub ok_latency: Latency,
}

/// One second of the run (by completion time), warm-up included.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Second {
    /// Seconds since the start of the run.
    pub t: u32,
    /// 2xx completed in this second.
    pub ok: u64,
    /// Shed.
    pub shed: u64,
    /// Expected refusals.
    pub rejected: u64,
    /// Errors (statuses and failures).
    pub errors: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// Degraded 2xx.
    pub degraded: u64,
    /// Median latency of the 2xx answers (µs; 0 without any).
    pub ok_p50_us: u64,
    /// 99th percentile of the 2xx answers (µs).
    pub ok_p99_us: u64,
    /// Slowest 2xx (µs).
    pub ok_max_us: u64,
    /// Slowest probe answer in this second (µs).
    pub probe_max_us: Option<u64>,
    /// Probe failures (no answer or not 200).
    pub probe_failures: u64,
    /// Active closed-loop users (sampled).
    pub users: u64,
    /// Requests in flight (sampled).
    pub in_flight: u64,
    /// Open-loop target rate (sampled).
    pub rate: f64,
    /// Resident memory of `rss_pid`, KiB (sampled).
    pub rss_kib: Option<u64>,
    /// Its anonymous part (heap; excludes mapped index files), KiB.
    pub rss_anon_kib: Option<u64>,
}

impl Second {
    /// All outcomes completed in this second.
    pub fn total(&self) -> u64 {
        self.ok + self.shed + self.rejected + self.errors + self.timeouts
    }
}

/// When a phase ran.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSpan {
    /// The workload it belongs to.
    pub workload: String,
    /// The phase name.
    pub name: String,
    /// `closed`, `open` or `pause`.
    pub mode: &'static str,
    /// Start, seconds since the start of the run.
    pub start_s: f64,
    /// End of the warm-up.
    pub measured_from_s: f64,
    /// End.
    pub end_s: f64,
    /// Users (closed: `from → users`), rate (open), or empty.
    pub load: String,
}

/// Something that happened during the run (a hook).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The hook's name.
    pub name: String,
    /// When it started, seconds since the start of the run.
    pub at_s: f64,
    /// How long the action took.
    pub took_s: f64,
    /// Whether it succeeded.
    pub ok: bool,
    /// Its message or error.
    pub detail: String,
}

/// The health probe's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeStats {
    /// Latency of its answers.
    pub latency: Latency,
    /// Polls that got no 200.
    pub failures: u64,
}

/// Everything a run measured (`Default`: an empty run, for tests of what renders it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunData {
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// From the first measured send to the last measured completion, seconds.
    pub measured_seconds: f64,
    /// Measured requests completed per second.
    pub rps: f64,
    /// Measured outcomes, all workloads.
    pub totals: Counts,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Failures without a response, by kind (e.g. `connection refused`).
    pub failure_kinds: BTreeMap<String, u64>,
    /// Latency by outcome class (measured part).
    pub latency: ClassLatency,
    /// Per workload.
    pub workloads: Vec<WorkloadTotals>,
    /// One row per second, warm-up included.
    pub series: Vec<Second>,
    /// When each phase ran.
    pub phases: Vec<PhaseSpan>,
    /// Hooks that ran.
    pub events: Vec<Event>,
    /// Health probe.
    pub probe: Option<ProbeStats>,
    /// The server's circuit breakers, from its metrics (`None` when the plan polled none).
    pub breaker: Option<BreakerData>,
    /// Faults the server's chaos layer injected during the run, from its metrics (`None` when
    /// not polled or not exported).
    pub injected_faults: Option<InjectedFaults>,
    #[serde(skip)]
    ok_seconds: SecondHistograms,
}

/// The 2xx latency of every second (kept for windowed percentiles; not serialized).
#[derive(Clone, Default)]
struct SecondHistograms(Vec<Histogram<u32>>);

impl std::fmt::Debug for SecondHistograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} per-second histograms]", self.0.len())
    }
}

impl RunData {
    /// Percentiles of the 2xx answers completed in seconds `from..to` of the run.
    pub fn ok_latency_between(&self, from: usize, to: usize) -> Latency {
        let mut h = second_histogram();
        for s in self.ok_seconds.0.iter().take(to).skip(from) {
            let _ = h.add(s);
        }
        Latency::of(&h)
    }

    /// The sum of the series rows `from..to`.
    pub fn seconds_between(&self, from: usize, to: usize) -> Second {
        let mut sum = Second::default();
        for s in self.series.iter().take(to).skip(from) {
            sum.ok += s.ok;
            sum.shed += s.shed;
            sum.rejected += s.rejected;
            sum.errors += s.errors;
            sum.timeouts += s.timeouts;
            sum.degraded += s.degraded;
            sum.probe_failures += s.probe_failures;
        }
        sum
    }
}

struct SecondAcc {
    row: Second,
    ok: Option<Histogram<u32>>,
}

struct WorkloadAcc {
    counts: Counts,
    statuses: BTreeMap<u16, u64>,
    ok: Histogram<u64>,
}

struct Inner {
    totals: Counts,
    statuses: BTreeMap<u16, u64>,
    failure_kinds: BTreeMap<String, u64>,
    classes: [Histogram<u64>; 5],
    responses: Histogram<u64>,
    workloads: Vec<WorkloadAcc>,
    seconds: Vec<SecondAcc>,
    first_measured: Option<Instant>,
    last_measured: Option<Instant>,
    phases: Vec<PhaseSpan>,
    events: Vec<Event>,
    probe: Histogram<u64>,
    probe_failures: u64,
}

/// Where every outcome goes: one lock, taken once per completed request (a few hundred
/// nanoseconds, against the milliseconds a request takes).
struct Recorder {
    start: Instant,
    inner: Mutex<Inner>,
    /// Active closed-loop users, requests in flight, open-loop rate in milli-requests/s.
    users: AtomicU64,
    in_flight: AtomicU64,
    rate_milli: AtomicU64,
}

impl Recorder {
    fn new(start: Instant, workloads: &[Workload]) -> Recorder {
        Recorder {
            start,
            inner: Mutex::new(Inner {
                totals: Counts::default(),
                statuses: BTreeMap::new(),
                failure_kinds: BTreeMap::new(),
                classes: std::array::from_fn(|_| histogram()),
                responses: histogram(),
                workloads: workloads
                    .iter()
                    .map(|_| WorkloadAcc {
                        counts: Counts::default(),
                        statuses: BTreeMap::new(),
                        ok: histogram(),
                    })
                    .collect(),
                seconds: Vec::new(),
                first_measured: None,
                last_measured: None,
                phases: Vec::new(),
                events: Vec::new(),
                probe: histogram(),
                probe_failures: 0,
            }),
            users: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            rate_milli: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn second(&self, inner: &mut Inner, at: Instant) -> usize {
        let i = at.saturating_duration_since(self.start).as_secs() as usize;
        while inner.seconds.len() <= i {
            let t = inner.seconds.len() as u32;
            inner.seconds.push(SecondAcc {
                row: Second {
                    t,
                    ..Second::default()
                },
                ok: None,
            });
        }
        i
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        workload: usize,
        req: &Request,
        sent: &Sent,
        from: Instant,
        sent_at: Instant,
        done: Instant,
        measured: bool,
    ) {
        let class = Class::of(sent, req.expect_rejection);
        let lat = us(done.saturating_duration_since(from));
        let mut g = self.lock();
        let inner = &mut *g;
        let i = self.second(inner, done);
        let sec = &mut inner.seconds[i];
        match class {
            Class::Ok => {
                sec.row.ok += 1;
                let _ = sec.ok.get_or_insert_with(second_histogram).record(lat);
                if let Sent::Answer(a) = sent {
                    sec.row.degraded += u64::from(a.degraded);
                }
            }
            Class::Shed => sec.row.shed += 1,
            Class::Rejected => sec.row.rejected += 1,
            Class::Error => sec.row.errors += 1,
            Class::Timeout => sec.row.timeouts += 1,
        }
        if !measured {
            return;
        }
        inner.first_measured = Some(inner.first_measured.map_or(sent_at, |f| f.min(sent_at)));
        inner.last_measured = Some(inner.last_measured.map_or(done, |l| l.max(done)));
        inner.totals.add(class, sent);
        let w = &mut inner.workloads[workload];
        w.counts.add(class, sent);
        let idx = Class::ALL.iter().position(|c| *c == class).unwrap_or(3);
        let _ = inner.classes[idx].record(lat);
        match sent {
            Sent::Answer(a) => {
                *inner.statuses.entry(a.status).or_default() += 1;
                *w.statuses.entry(a.status).or_default() += 1;
                let _ = inner.responses.record(lat);
                if class == Class::Ok {
                    let _ = w.ok.record(lat);
                }
            }
            Sent::Failed(e) => {
                *inner.failure_kinds.entry(e.kind().to_string()).or_default() += 1;
            }
            Sent::TimedOut => {}
        }
    }

    fn probe(&self, sent: Instant, done: Instant, ok: bool) {
        let lat = us(done.saturating_duration_since(sent));
        let mut g = self.lock();
        let inner = &mut *g;
        let i = self.second(inner, done);
        let row = &mut inner.seconds[i].row;
        if ok {
            row.probe_max_us = Some(row.probe_max_us.unwrap_or(0).max(lat));
            let _ = inner.probe.record(lat);
        } else {
            row.probe_failures += 1;
            inner.probe_failures += 1;
        }
    }

    fn sample(&self, at: Instant, rss: Option<(u64, u64)>) {
        let mut g = self.lock();
        let inner = &mut *g;
        let i = self.second(inner, at);
        let row = &mut inner.seconds[i].row;
        row.users = self.users.load(Ordering::Relaxed);
        row.in_flight = self.in_flight.load(Ordering::Relaxed);
        row.rate = self.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0;
        if let Some((rss, anon)) = rss {
            row.rss_kib = Some(rss);
            row.rss_anon_kib = Some(anon);
        }
    }

    fn secs(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64()
    }
}

/// `VmRSS` and `RssAnon` of a process, in KiB, from `/proc/PID/status`.
pub fn read_rss(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("RssAnon:").unwrap_or(0)))
}

/// Closed-loop users shared by consecutive closed phases of one workload.
struct Users {
    active: AtomicUsize,
    /// What the current phase asks of its users, read as one snapshot per request so that a
    /// request belongs to exactly one phase.
    phase: Mutex<UserPhase>,
    /// Users done with their quota in this generation.
    done: AtomicUsize,
    stop: AtomicBool,
    wake: Notify,
}

#[derive(Clone, Copy)]
struct UserPhase {
    /// Bumped at each phase start: users reset their quota count.
    generation: u64,
    quota: u64,
    /// Requests sent before this instant (µs since the run start) are not measured...
    measured_from_us: u64,
    /// ... nor those sent from the phase's end on (a phase stops at its next 50 ms tick).
    measured_until_us: u64,
}

struct Shared {
    addr: SocketAddr,
    timeout: Duration,
    recorder: Arc<Recorder>,
}

#[allow(clippy::too_many_arguments)]
async fn user(
    index: usize,
    workload: usize,
    requests: Arc<Vec<Request>>,
    next: Arc<AtomicU64>,
    users: Arc<Users>,
    shared: Arc<Shared>,
) {
    let rec = &shared.recorder;
    let mut conn = Conn::new(shared.addr);
    let mut generation = u64::MAX;
    let mut sent_in_generation = 0u64;
    loop {
        let woken = users.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if users.stop.load(Ordering::Acquire) {
            return;
        }
        let phase = *users.phase.lock().unwrap_or_else(|p| p.into_inner());
        if phase.generation != generation {
            generation = phase.generation;
            sent_in_generation = 0;
        }
        let quota = phase.quota;
        if index >= users.active.load(Ordering::Acquire) || sent_in_generation >= quota {
            // Leaving (or waiting to join): a real user would not hold a connection open.
            conn.close();
            woken.await;
            continue;
        }
        let k = next.fetch_add(1, Ordering::Relaxed);
        let req = &requests[(k % requests.len() as u64) as usize];
        let start = Instant::now();
        let at = us(start.saturating_duration_since(rec.start));
        let measured = (phase.measured_from_us..phase.measured_until_us).contains(&at);
        rec.in_flight.fetch_add(1, Ordering::Relaxed);
        let sent = conn.send(&req.bytes, shared.timeout).await;
        rec.in_flight.fetch_sub(1, Ordering::Relaxed);
        rec.record(workload, req, &sent, start, start, Instant::now(), measured);
        sent_in_generation += 1;
        if sent_in_generation == quota {
            users.done.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Runs one workload's phases in order.
async fn run_workload(workload: usize, w: Workload, shared: Arc<Shared>) {
    let rec = shared.recorder.clone();
    let next = Arc::new(AtomicU64::new(0));
    let users = Arc::new(Users {
        active: AtomicUsize::new(0),
        phase: Mutex::new(UserPhase {
            generation: 0,
            quota: u64::MAX,
            measured_from_us: u64::MAX,
            measured_until_us: 0,
        }),
        done: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        wake: Notify::new(),
    });
    let mut user_tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut shown_users = 0usize;
    for phase in &w.phases {
        let start = Instant::now();
        let measured_from = start + phase.warmup;
        let end = start + phase.duration;
        let (mode, load) = match &phase.mode {
            Mode::Closed {
                from,
                users: n,
                per_user,
                ..
            } => (
                "closed",
                match (from == n, per_user) {
                    (true, Some(q)) => format!("{n} users × {q} requests"),
                    (true, None) => format!("{n} users"),
                    (false, Some(q)) => format!("{from} → {n} users × {q} requests"),
                    (false, None) => format!("{from} → {n} users"),
                },
            ),
            Mode::Open { rate, connections } => {
                ("open", format!("{rate} req/s (≤ {connections} in flight)"))
            }
            Mode::Pause => ("pause", String::new()),
        };
        match &phase.mode {
            Mode::Closed {
                from,
                users: target,
                ramp,
                per_user,
            } => {
                let most = (*from).max(*target);
                while user_tasks.len() < most {
                    user_tasks.push(tokio::spawn(user(
                        user_tasks.len(),
                        workload,
                        w.requests.clone(),
                        next.clone(),
                        users.clone(),
                        shared.clone(),
                    )));
                }
                users.done.store(0, Ordering::Release);
                {
                    let mut p = users.phase.lock().unwrap_or_else(|p| p.into_inner());
                    *p = UserPhase {
                        generation: p.generation + 1,
                        quota: per_user.unwrap_or(u64::MAX),
                        measured_from_us: us(measured_from - rec.start),
                        measured_until_us: us(end - rec.start),
                    };
                }
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    let elapsed = now - start;
                    let active = if elapsed < *ramp {
                        let f = elapsed.as_secs_f64() / ramp.as_secs_f64();
                        (*from as f64 + (*target as f64 - *from as f64) * f).round() as usize
                    } else {
                        *target
                    };
                    let before = users.active.swap(active, Ordering::AcqRel);
                    rec.users.fetch_add(active as u64, Ordering::Relaxed);
                    rec.users.fetch_sub(shown_users as u64, Ordering::Relaxed);
                    shown_users = active;
                    if active > before || before == 0 {
                        users.wake.notify_waiters();
                    }
                    if per_user.is_some() && users.done.load(Ordering::Acquire) >= *target {
                        break;
                    }
                    tick.tick().await;
                }
                // Until the next phase says otherwise, nothing more is measured: requests
                // sent between two phases belong to neither.
                users
                    .phase
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .measured_from_us = u64::MAX;
            }
            Mode::Open { rate, connections } => {
                users.active.store(0, Ordering::Release);
                rec.users.fetch_sub(shown_users as u64, Ordering::Relaxed);
                shown_users = 0;
                let milli = (rate * 1000.0) as u64;
                rec.rate_milli.fetch_add(milli, Ordering::Relaxed);
                let k = Arc::new(AtomicU64::new(0));
                let mut tasks = Vec::with_capacity(*connections);
                for _ in 0..(*connections).max(1) {
                    let (k, shared, requests, next, rate) = (
                        k.clone(),
                        shared.clone(),
                        w.requests.clone(),
                        next.clone(),
                        *rate,
                    );
                    tasks.push(tokio::spawn(async move {
                        let rec = &shared.recorder;
                        let mut conn = Conn::new(shared.addr);
                        loop {
                            let i = k.fetch_add(1, Ordering::Relaxed);
                            let due = start + Duration::from_secs_f64(i as f64 / rate);
                            if due >= end {
                                break;
                            }
                            tokio::time::sleep_until(due).await;
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            let req = &requests[(n % requests.len() as u64) as usize];
                            let sent_at = Instant::now();
                            rec.in_flight.fetch_add(1, Ordering::Relaxed);
                            let sent = conn.send(&req.bytes, shared.timeout).await;
                            rec.in_flight.fetch_sub(1, Ordering::Relaxed);
                            rec.record(
                                workload,
                                req,
                                &sent,
                                due,
                                sent_at,
                                Instant::now(),
                                due >= measured_from,
                            );
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
                rec.rate_milli.fetch_sub(milli, Ordering::Relaxed);
            }
            Mode::Pause => {
                users.active.store(0, Ordering::Release);
                rec.users.fetch_sub(shown_users as u64, Ordering::Relaxed);
                shown_users = 0;
                tokio::time::sleep_until(end).await;
            }
        }
        let ended = Instant::now();
        rec.lock().phases.push(PhaseSpan {
            workload: w.name.clone(),
            name: phase.name.clone(),
            mode,
            start_s: rec.secs(start),
            measured_from_s: rec.secs(measured_from.min(ended)),
            end_s: rec.secs(ended),
            load,
        });
    }
    users.active.store(0, Ordering::Release);
    rec.users.fetch_sub(shown_users as u64, Ordering::Relaxed);
    users.stop.store(true, Ordering::Release);
    users.wake.notify_waiters();
    for t in user_tasks {
        let _ = t.await;
    }
}

/// Runs `plan` to the end and returns what it measured. Bounded: every phase has a
/// duration, and a request in flight at the end finishes within the client timeout.
pub async fn run_plan(plan: Plan) -> io::Result<RunData> {
    if plan.workloads.is_empty()
        || plan
            .workloads
            .iter()
            .any(|w| w.requests.is_empty() || w.phases.is_empty())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "every workload needs requests and phases",
        ));
    }
    let start = Instant::now();
    let names: Vec<String> = plan.workloads.iter().map(|w| w.name.clone()).collect();
    let rec = Arc::new(Recorder::new(start, &plan.workloads));
    let shared = Arc::new(Shared {
        addr: plan.addr,
        timeout: plan.timeout,
        recorder: rec.clone(),
    });
    let finished = Arc::new(AtomicBool::new(false));

    // Probe: own thread and runtime, like a health checker in another process, so its
    // latency is the server's and not the time it waited behind our own load tasks.
    let probe = plan.probe.clone().map(|req| {
        let (rec, finished, addr, timeout, interval) = (
            rec.clone(),
            finished.clone(),
            plan.addr,
            plan.timeout,
            plan.probe_interval,
        );
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let mut conn = Conn::new(addr);
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !finished.load(Ordering::Acquire) {
                    tick.tick().await;
                    let sent = Instant::now();
                    let outcome = conn.send(&req.bytes, timeout).await;
                    let ok = matches!(outcome, Sent::Answer(Answer { status: 200, .. }));
                    rec.probe(sent, Instant::now(), ok);
                }
            });
        })
    });

    // Sampler: users, requests in flight, rate and memory, once a second.
    let sampler = {
        let (rec, finished, pid) = (rec.clone(), finished.clone(), plan.rss_pid);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let now = Instant::now();
                rec.sample(now, pid.and_then(read_rss));
                if finished.load(Ordering::Acquire) {
                    break;
                }
            }
        })
    };

    // Server metrics: own thread and a blocking client, once a second, like the probe off
    // the load's path (a poll costs the server one render of its metrics).
    let poller = plan.metrics.clone().map(|m| {
        let (finished, addr) = (finished.clone(), plan.addr);
        let timeout = plan.timeout.min(METRICS_POLL_TIMEOUT);
        std::thread::spawn(move || poll_metrics(&m, addr, timeout, start, &finished))
    });

    let hooks: Vec<_> = plan
        .hooks
        .into_iter()
        .map(|h| {
            let rec = rec.clone();
            std::thread::spawn(move || {
                let at = rec.start + h.at;
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                let began = Instant::now();
                let result = (h.action)();
                let ended = Instant::now();
                let (ok, detail) = match result {
                    Ok(d) => (true, d),
                    Err(d) => (false, d),
                };
                rec.lock().events.push(Event {
                    name: h.name,
                    at_s: rec.secs(began),
                    took_s: (ended - began).as_secs_f64(),
                    ok,
                    detail,
                });
            })
        })
        .collect();

    let tasks: Vec<_> = plan
        .workloads
        .into_iter()
        .enumerate()
        .map(|(i, w)| tokio::spawn(run_workload(i, w, shared.clone())))
        .collect();
    for t in tasks {
        t.await.map_err(io::Error::other)?;
    }
    let end = Instant::now();
    finished.store(true, Ordering::Release);
    let _ = sampler.await;
    if let Some(p) = probe {
        let _ = tokio::task::spawn_blocking(move || p.join()).await;
    }
    let polled = match poller {
        Some(p) => tokio::task::spawn_blocking(move || p.join())
            .await
            .ok()
            .and_then(Result::ok),
        None => None,
    };
    let (breaker, injected_faults) = match polled {
        Some((b, f)) => (Some(b), f),
        None => (None, None),
    };
    for h in hooks {
        // A hook scheduled after the end still runs (e.g. a restart must not be left
        // half done); its thread is joined so its event is in the report.
        let _ = tokio::task::spawn_blocking(move || h.join()).await;
    }

    let mut inner = rec.lock();
    let inner = &mut *inner;
    let measured_seconds = match (inner.first_measured, inner.last_measured) {
        (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let mut ok_seconds = Vec::with_capacity(inner.seconds.len());
    let mut series = Vec::with_capacity(inner.seconds.len());
    for s in inner.seconds.drain(..) {
        let mut row = s.row;
        let h = s.ok.unwrap_or_else(second_histogram);
        if !h.is_empty() {
            row.ok_p50_us = h.value_at_quantile(0.5);
            row.ok_p99_us = h.value_at_quantile(0.99);
            row.ok_max_us = h.max();
        }
        ok_seconds.push(h);
        series.push(row);
    }
    let [ok, shed, rejected, error, timeout] = &inner.classes;
    let mut phases = std::mem::take(&mut inner.phases);
    phases.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    let mut events = std::mem::take(&mut inner.events);
    events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    Ok(RunData {
        seconds: (end - start).as_secs_f64(),
        measured_seconds,
        rps: if measured_seconds > 0.0 {
            inner.totals.requests as f64 / measured_seconds
        } else {
            0.0
        },
        totals: inner.totals.clone(),
        statuses: inner.statuses.clone(),
        failure_kinds: inner.failure_kinds.clone(),
        latency: ClassLatency {
            responses: Latency::of(&inner.responses),
            ok: Latency::of(ok),
            shed: Latency::of(shed),
            rejected: Latency::of(rejected),
            error: Latency::of(error),
            timeout: Latency::of(timeout),
        },
        workloads: inner
            .workloads
            .iter()
            .zip(&names)
            .map(|(w, name)| WorkloadTotals {
                name: name.clone(),
                counts: w.counts.clone(),
                statuses: w.statuses.clone(),
                ok_latency: Latency::of(&w.ok),
            })
            .collect(),
        series,
        phases,
        events,
        probe: plan.probe.map(|_| ProbeStats {
            latency: Latency::of(&inner.probe),
            failures: inner.probe_failures,
        }),
        breaker,
        injected_faults,
        ok_seconds: SecondHistograms(ok_seconds),
    })
}

// ---------------------------------------------------------------------------------------
// Server metrics during a run: circuit breakers and injected faults, from `/metrics`.
// ---------------------------------------------------------------------------------------

/// Circuit breaker state changes, by `breaker`, `from` and `to` (a counter).
pub const BREAKER_TRANSITIONS: &str = "ironsift_breaker_transitions_total";
/// Circuit breaker state, by `breaker`: 0 closed, 1 open, 2 half-open (a gauge).
pub const BREAKER_STATE: &str = "ironsift_breaker_state";
/// Faults injected by the chaos layer, by `chaos` and `kind` (`delay`, `error`, `panic`).
pub const CHAOS_INJECTED: &str = "ironsift_chaos_injected_total";

/// Bound on one metrics poll: a slow poll is a gap, not a stall of the sampler.
const METRICS_POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how often to read the server's Prometheus metrics during a run.
#[derive(Debug, Clone)]
pub struct MetricsPoll {
    /// Path of the text exposition endpoint, e.g. `/metrics`.
    pub path: String,
    /// Extra headers (e.g. `Authorization` for a protected endpoint).
    pub headers: Vec<(String, String)>,
    /// Time between polls.
    pub interval: Duration,
}

/// The server's circuit breakers during a run, summed over every breaker it has.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BreakerData {
    /// Whether the server exported breaker metrics in at least one poll.
    pub exported: bool,
    /// Why figures are missing (e.g. the endpoint is protected), for the reader.
    pub note: Option<String>,
    /// Polls answered with 200.
    pub polls: u64,
    /// Polls without a usable answer (server down, timeout, other status): gaps.
    pub failed_polls: u64,
    /// Times the counters started again from zero between two polls (a server restart).
    pub restarts: u64,
    /// Transitions to open.
    pub opened_total: u64,
    /// Transitions to half-open.
    pub half_open_total: u64,
    /// Transitions to closed.
    pub closed_total: u64,
    /// One row per second with a successful poll (a second without one is a gap).
    pub timeline: Vec<BreakerSecond>,
}

/// The transitions a poll found since the previous successful one, and the state it saw.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BreakerSecond {
    /// Second of the run the poll was sent in.
    pub t: u32,
    /// Transitions to open.
    pub opened: u64,
    /// Transitions to half-open.
    pub half_open: u64,
    /// Transitions to closed.
    pub closed: u64,
    /// The worst current state over the breakers (`open`, `half_open`, `closed`) when the
    /// server exports the state gauge. Sampled: a breaker open for less than a second may
    /// show only in the transitions.
    pub state: Option<&'static str>,
}

/// Faults the server's chaos layer injected during the run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct InjectedFaults {
    /// Injected errors.
    pub errors: u64,
    /// Injected panics.
    pub panics: u64,
    /// Injected delays.
    pub delays: u64,
}

/// One sample of the Prometheus text exposition format.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSample {
    /// Metric name.
    pub name: String,
    /// Labels, in the order given.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

impl PromSample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the Prometheus text exposition format: comments and blank lines skipped, label
/// values unescaped (`\\`, `\"`, `\n`), a timestamp ignored. A malformed line is skipped:
/// any deployment's endpoint may be polled, and one odd line must not hide the others.
pub fn parse_prometheus(text: &str) -> Vec<PromSample> {
    text.lines().filter_map(parse_prometheus_line).collect()
}

fn parse_prometheus_line(line: &str) -> Option<PromSample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim();
            if key.is_empty() {
                return None;
            }
            rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.to_string(), value));
            rest = &rest[end + 1..];
        }
    }
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(PromSample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// A counter series: metric name and labels (sorted by name).
pub type SeriesKey = (String, Vec<(String, String)>);

/// Successive readings of monotonic counters turned into increases, across restarts of the
/// process that exports them.
///
/// A counter never goes down and never disappears while its process runs, so a reading in
/// which one did either comes from a new process: every counter then started again from
/// zero, and its increase is its whole new value. (A restart after which every counter
/// already exceeds its old value cannot be told from a busy interval; polling once a second
/// makes that unlikely.) The first reading is the baseline: what was counted before the run
/// is not the run's.
#[derive(Debug, Default)]
pub struct CounterDeltas {
    last: Option<BTreeMap<SeriesKey, f64>>,
}

/// What [`CounterDeltas::update`] found.
#[derive(Debug, Default, PartialEq)]
pub struct Increase {
    /// The series that grew, by how much.
    pub by_series: BTreeMap<SeriesKey, f64>,
    /// The counters started again from zero since the previous reading.
    pub reset: bool,
}

impl CounterDeltas {
    /// Takes a reading (series → value); what grew since the previous one.
    pub fn update(&mut self, reading: BTreeMap<SeriesKey, f64>) -> Increase {
        let Some(last) = self.last.replace(reading) else {
            return Increase::default();
        };
        let now = self.last.as_ref().expect("set just above");
        let reset = last
            .iter()
            .any(|(k, old)| now.get(k).is_none_or(|v| v < old));
        let by_series = now
            .iter()
            .filter_map(|(k, v)| {
                let grew = if reset {
                    *v
                } else {
                    v - last.get(k).copied().unwrap_or(0.0)
                };
                (grew > 0.0).then(|| (k.clone(), grew))
            })
            .collect();
        Increase { by_series, reset }
    }
}

/// Sums breaker and chaos figures over the polls of a run.
#[derive(Debug, Default)]
struct MetricsAcc {
    breaker: BreakerData,
    faults: Option<InjectedFaults>,
    deltas: CounterDeltas,
}

impl MetricsAcc {
    /// One successful poll, sent in second `t` of the run.
    fn poll(&mut self, t: u32, samples: &[PromSample]) {
        let b = &mut self.breaker;
        b.polls += 1;
        let mut reading = BTreeMap::new();
        let mut states = Vec::new();
        for s in samples {
            match s.name.as_str() {
                BREAKER_TRANSITIONS | CHAOS_INJECTED => {
                    let mut labels = s.labels.clone();
                    labels.sort();
                    *reading.entry((s.name.clone(), labels)).or_insert(0.0) += s.value;
                }
                BREAKER_STATE => states.push(s.value),
                _ => {}
            }
        }
        if !states.is_empty() || samples.iter().any(|s| s.name == BREAKER_TRANSITIONS) {
            b.exported = true;
        }
        if samples.iter().any(|s| s.name == CHAOS_INJECTED) {
            self.faults.get_or_insert_default();
        }
        let increase = self.deltas.update(reading);
        b.restarts += u64::from(increase.reset);
        let mut row = BreakerSecond {
            t,
            state: if states.contains(&1.0) {
                Some("open")
            } else if states.contains(&2.0) {
                Some("half_open")
            } else if states.is_empty() {
                None
            } else {
                Some("closed")
            },
            ..BreakerSecond::default()
        };
        for ((name, labels), grew) in &increase.by_series {
            let n = grew.round() as u64;
            let label = |k: &str| labels.iter().find(|(l, _)| l == k).map(|(_, v)| v.as_str());
            if name == BREAKER_TRANSITIONS {
                match label("to") {
                    Some("open") => row.opened += n,
                    Some("half_open") => row.half_open += n,
                    Some("closed") => row.closed += n,
                    _ => {}
                }
            } else if let Some(f) = self.faults.as_mut() {
                match label("kind") {
                    Some("error") => f.errors += n,
                    Some("panic") => f.panics += n,
                    Some("delay") => f.delays += n,
                    _ => {}
                }
            }
        }
        b.opened_total += row.opened;
        b.half_open_total += row.half_open;
        b.closed_total += row.closed;
        if !b.exported {
            return;
        }
        match b.timeline.last_mut() {
            // Two polls in one second (one delayed, the next on time): one row.
            Some(last) if last.t == row.t => {
                last.opened += row.opened;
                last.half_open += row.half_open;
                last.closed += row.closed;
                last.state = row.state.or(last.state);
            }
            _ => b.timeline.push(row),
        }
    }
}

/// Polls `m.path` every `m.interval` until `finished`, then once more (so the last partial
/// second counts). 401/403/404 before any successful poll end the polling with a note: a
/// protected or missing endpoint stays so.
fn poll_metrics(
    m: &MetricsPoll,
    addr: SocketAddr,
    timeout: Duration,
    start: Instant,
    finished: &AtomicBool,
) -> (BreakerData, Option<InjectedFaults>) {
    let headers: Vec<(&str, &str)> = m
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut acc = MetricsAcc::default();
    let mut last_failure = String::new();
    let mut next = Instant::now();
    loop {
        let last = finished.load(Ordering::Acquire);
        let sent = Instant::now();
        let t = u32::try_from(sent.saturating_duration_since(start).as_secs()).unwrap_or(u32::MAX);
        match crate::http::request(addr, "GET", &m.path, &headers, &[], timeout) {
            Ok(r) if r.status == 200 => acc.poll(t, &parse_prometheus(&r.text())),
            Ok(r) if acc.breaker.polls == 0 && matches!(r.status, 401 | 403 | 404) => {
                acc.breaker.failed_polls += 1;
                acc.breaker.note = Some(if r.status == 404 {
                    format!("{} answered 404: no metrics endpoint there", m.path)
                } else {
                    format!(
                        "{} answered {}: the metrics are protected (an admin key samples them)",
                        m.path, r.status
                    )
                });
                break;
            }
            Ok(r) => {
                acc.breaker.failed_polls += 1;
                last_failure = format!("status {}", r.status);
            }
            Err(e) => {
                acc.breaker.failed_polls += 1;
                last_failure = e.to_string();
            }
        }
        if last {
            break;
        }
        next = (next + m.interval).max(Instant::now());
        while !finished.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= next {
                break;
            }
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
        }
    }
    let b = &mut acc.breaker;
    if !b.exported && b.note.is_none() {
        b.note = Some(if b.polls == 0 {
            format!("no poll of {} succeeded ({last_failure})", m.path)
        } else {
            format!(
                "{} shows no {BREAKER_TRANSITIONS} or {BREAKER_STATE} series: the server exports no breaker metrics",
                m.path
            )
        });
    }
    (acc.breaker, acc.faults)
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters pass through).
pub fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a query file: one query per line, an optional `N:` prefix (as in the TREC web
/// queries) stripped, blank lines skipped.
pub fn read_queries(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| match l.split_once(':') {
            Some((n, q)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => q,
            _ => l,
        })
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_files_and_encoding() {
        assert_eq!(
            read_queries("1:foo bar\n\n2: baz\nplain:x\n"),
            ["foo bar", "baz", "plain:x"]
        );
        assert_eq!(encode_query_value("a b&c/é"), "a%20b%26c%2F%C3%A9");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_and_open_loop_against_a_tiny_server() {
        // A minimal keep-alive HTTP server: answers 200 to everything, 503 to /shed.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while find(&buf, b"\r\n\r\n").is_none() {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = find(&buf, b"\r\n\r\n").unwrap() + 4;
                        let shed = buf.starts_with(b"GET /shed");
                        buf.drain(..end);
                        let resp: &[u8] = if shed {
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
                        } else {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                        };
                        if s.write_all(resp).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let base = LoadConfig {
            addr,
            paths: Arc::new(vec!["/a".into(), "/shed".into()]),
            connections: 4,
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(50),
            rate: None,
            probe: Some("/readyz".into()),
            probe_interval: Duration::from_millis(10),
            request_timeout: Duration::from_secs(2),
        };
        let closed = run(base.clone()).await.unwrap();
        assert!(closed.responses > 100, "{closed:?}");
        assert_eq!(closed.failures, 0);
        assert!(closed.shed > 0 && closed.ok > 0);
        assert!(closed.probe.as_ref().unwrap().count > 10, "{closed:?}");
        let open = run(LoadConfig {
            rate: Some(500.0),
            ..base
        })
        .await
        .unwrap();
        // 500/s for 0.3 s: about 150 responses, never far more than the schedule allows.
        assert!((100..=160).contains(&open.responses), "{open:?}");
    }

    /// A keep-alive server answering by path: `/shed` 503 with Retry-After, `/limit` 429
    /// without, `/bad` 400, `/slow` after 2 s, `/chunked` a chunked degraded 200, `/metrics`
    /// breaker and chaos counters that grow by one per poll, `/protected` 401, else 200.
    async fn scripted_server() -> SocketAddr {
        static METRICS_POLLS: AtomicU64 = AtomicU64::new(0);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while find(&buf, b"\r\n\r\n").is_none() {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = find(&buf, b"\r\n\r\n").unwrap() + 4;
                        let line = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end);
                        let path = line.split(' ').nth(1).unwrap_or("").to_string();
                        let close = line.contains("Connection: close");
                        let metrics;
                        let resp: &[u8] = match path.as_str() {
                            "/shed" => b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
                            "/limit" => b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n",
                            "/bad" => b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\n{}",
                            "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n12\r\n1,\"degraded\":true}\r\n0\r\n\r\n",
                            "/slow" => {
                                tokio::time::sleep(Duration::from_secs(2)).await;
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                            }
                            "/metrics" => {
                                let n = METRICS_POLLS.fetch_add(1, Ordering::Relaxed) + 1;
                                let body = format!(
                                    "# TYPE {BREAKER_TRANSITIONS} counter\n\
                                     {BREAKER_TRANSITIONS}{{breaker=\"search:x\",from=\"closed\",to=\"open\"}} {n}\n\
                                     {BREAKER_TRANSITIONS}{{breaker=\"search:x\",from=\"half_open\",to=\"closed\"}} {n}\n\
                                     {BREAKER_STATE}{{breaker=\"search:x\"}} {}\n\
                                     {CHAOS_INJECTED}{{chaos=\"search\",kind=\"error\"}} {}\n",
                                    n % 2,
                                    2 * n
                                );
                                metrics = format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                    body.len()
                                );
                                metrics.as_bytes()
                            }
                            "/protected" => b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
                            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                        };
                        if s.write_all(resp).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plans_count_every_outcome_class() {
        let addr = scripted_server().await;
        let host = addr.to_string();
        let get = |p: &str| Request::get(&host, p, &[("Authorization", "Bearer k")]);
        let mixed = vec![
            get("/a"),
            get("/shed"),
            get("/limit"),
            get("/bad"),
            get("/bad").expecting_rejection(),
            get("/chunked"),
        ];
        let plan = Plan {
            addr,
            workloads: vec![
                Workload {
                    name: "mixed".into(),
                    requests: Arc::new(mixed),
                    phases: vec![
                        Phase {
                            name: "quota".into(),
                            mode: Mode::Closed {
                                from: 12,
                                users: 12,
                                ramp: Duration::ZERO,
                                per_user: Some(6),
                            },
                            duration: Duration::from_secs(10),
                            warmup: Duration::ZERO,
                        },
                        Phase {
                            name: "ramp".into(),
                            mode: Mode::Closed {
                                from: 1,
                                users: 4,
                                ramp: Duration::from_millis(200),
                                per_user: None,
                            },
                            duration: Duration::from_millis(300),
                            warmup: Duration::ZERO,
                        },
                    ],
                },
                Workload {
                    name: "slow".into(),
                    requests: Arc::new(vec![get("/slow")]),
                    phases: vec![Phase {
                        name: "open".into(),
                        mode: Mode::Open {
                            rate: 10.0,
                            connections: 4,
                        },
                        duration: Duration::from_millis(250),
                        warmup: Duration::from_millis(50),
                    }],
                },
            ],
            timeout: Duration::from_millis(500),
            probe: Some(get("/readyz")),
            probe_interval: Duration::from_millis(20),
            rss_pid: Some(std::process::id()),
            hooks: vec![Hook {
                at: Duration::from_millis(100),
                name: "mark".into(),
                action: Box::new(|| Ok("done".into())),
            }],
            metrics: Some(MetricsPoll {
                path: "/metrics".into(),
                headers: Vec::new(),
                interval: Duration::from_millis(100),
            }),
        };
        let data = run_plan(plan).await.unwrap();
        let mixed = &data.workloads[0].counts;
        // The quota phase alone sends 72 requests, 12 of each path.
        assert!(mixed.requests >= 72, "{mixed:?}");
        assert_eq!(mixed.conn_errors, 0, "{data:?}");
        // Users cycle through the paths; the open-ended ramp phase can stop any user mid-cycle,
        // so the halves may differ by one per user.
        assert!(
            mixed.shed >= 24 && (mixed.shed_with_retry_after * 2).abs_diff(mixed.shed) <= 8,
            "{mixed:?}"
        );
        assert!(mixed.rejected >= 12 && mixed.http_errors >= 12, "{mixed:?}");
        assert!(mixed.degraded >= 12 && mixed.ok >= 24, "{mixed:?}");
        assert_eq!(mixed.timeouts, 0);
        assert!(
            (data.workloads[0].statuses[&429] * 2).abs_diff(mixed.shed) <= 8,
            "{mixed:?}"
        );
        let slow = &data.workloads[1].counts;
        // 10/s for 0.25 s with the first 0.05 s unmeasured: 2 measured, all timing out.
        assert_eq!((slow.requests, slow.timeouts), (2, 2), "{slow:?}");
        assert!(data.latency.timeout.p50_us >= 500_000);
        assert_eq!(data.phases.len(), 3);
        assert_eq!(data.events.len(), 1);
        assert_eq!(data.events[0].detail, "done");
        assert!(data.probe.as_ref().unwrap().latency.count > 5);
        assert!(data.series.iter().any(|s| s.rss_kib.is_some()));
        let sum = data.seconds_between(0, data.series.len());
        assert!(sum.total() >= data.totals.requests);
        assert!(data.ok_latency_between(0, data.series.len()).count >= data.totals.ok);
        // Every poll after the first (the baseline) adds one opening and one closing, and
        // two injected errors.
        let b = data.breaker.as_ref().unwrap();
        assert!(b.exported && b.note.is_none() && b.polls >= 3, "{b:?}");
        assert_eq!(b.failed_polls, 0, "{b:?}");
        assert_eq!(b.opened_total, b.polls - 1, "{b:?}");
        assert_eq!(b.closed_total, b.polls - 1, "{b:?}");
        assert_eq!(b.half_open_total, 0);
        assert_eq!(
            data.injected_faults.as_ref().unwrap().errors,
            2 * (b.polls - 1)
        );
        let rows: u64 = b.timeline.iter().map(|r| r.opened).sum();
        assert_eq!(rows, b.opened_total);
        assert!(b.timeline.windows(2).all(|w| w[0].t < w[1].t), "{b:?}");
        assert!(b.timeline.iter().all(|r| r.state.is_some()), "{b:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn protected_or_missing_metrics_are_a_note_not_a_failure() {
        let addr = scripted_server().await;
        let host = addr.to_string();
        for (path, expect) in [
            ("/protected", "answered 401"),
            ("/a", "no ironsift_breaker"),
        ] {
            let plan = Plan {
                addr,
                workloads: vec![Workload {
                    name: "w".into(),
                    requests: Arc::new(vec![Request::get(&host, "/a", &[])]),
                    phases: vec![closed_phase(Duration::from_millis(300))],
                }],
                timeout: Duration::from_secs(1),
                probe: None,
                probe_interval: Duration::from_millis(100),
                rss_pid: None,
                hooks: Vec::new(),
                metrics: Some(MetricsPoll {
                    path: path.into(),
                    headers: vec![("Authorization".into(), "Bearer k".into())],
                    interval: Duration::from_millis(100),
                }),
            };
            let data = run_plan(plan).await.unwrap();
            assert!(data.totals.ok > 0);
            let b = data.breaker.unwrap();
            assert!(!b.exported && b.timeline.is_empty(), "{b:?}");
            assert!(b.note.as_deref().unwrap().contains(expect), "{b:?}");
            assert_eq!(data.injected_faults, None);
        }
    }

    fn closed_phase(duration: Duration) -> Phase {
        Phase {
            name: "p".into(),
            mode: Mode::Closed {
                from: 2,
                users: 2,
                ramp: Duration::ZERO,
                per_user: None,
            },
            duration,
            warmup: Duration::ZERO,
        }
    }

    #[test]
    fn prometheus_text_parses() {
        let text = r#"
# HELP ironsift_breaker_transitions_total Circuit breaker state changes.
# TYPE ironsift_breaker_transitions_total counter
ironsift_breaker_transitions_total{breaker="search:default",from="closed",to="open"} 3
ironsift_breaker_transitions_total{breaker="search:a \"b\" \\ c,d}\nx",from="open",to="half_open"} 2 1700000000000
ironsift_breaker_state{breaker="search:default"} 1
ironsift_uptime_seconds 12.5
ironsift_search_seconds_bucket{le="+Inf"} +Inf
odd{breaker="unterminated} 1
{to="open"} 1
no_value{a="b"}
label_without_quotes{a=b} 1
"#;
        let s = parse_prometheus(text);
        assert_eq!(s.len(), 5, "{s:?}");
        assert_eq!(s[0].name, BREAKER_TRANSITIONS);
        assert_eq!(s[0].label("to"), Some("open"));
        assert_eq!(s[0].label("breaker"), Some("search:default"));
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].label("breaker"), Some("search:a \"b\" \\ c,d}\nx"));
        assert_eq!(s[1].label("to"), Some("half_open"));
        assert_eq!(s[1].value, 2.0);
        assert_eq!((s[2].name.as_str(), s[2].value), (BREAKER_STATE, 1.0));
        assert_eq!((s[3].labels.len(), s[3].value), (0, 12.5));
        assert_eq!(s[4].value, f64::INFINITY);
        assert_eq!(s[4].label("missing"), None);
    }

    fn reading(pairs: &[(&str, f64)]) -> BTreeMap<SeriesKey, f64> {
        pairs
            .iter()
            .map(|(to, v)| {
                (
                    (
                        BREAKER_TRANSITIONS.to_string(),
                        vec![("to".to_string(), to.to_string())],
                    ),
                    *v,
                )
            })
            .collect()
    }

    fn grew(i: &Increase, to: &str) -> f64 {
        i.by_series
            .iter()
            .find(|((_, l), _)| l[0].1 == to)
            .map_or(0.0, |(_, v)| *v)
    }

    #[test]
    fn counter_increases_survive_restarts() {
        let mut d = CounterDeltas::default();
        // The first reading is the baseline: counted before the run, not by it.
        assert_eq!(d.update(reading(&[("open", 5.0)])), Increase::default());
        let i = d.update(reading(&[("open", 7.0), ("closed", 1.0)]));
        assert!(!i.reset);
        assert_eq!((grew(&i, "open"), grew(&i, "closed")), (2.0, 1.0));
        // Unchanged: nothing grew.
        let i = d.update(reading(&[("open", 7.0), ("closed", 1.0)]));
        assert!(!i.reset && i.by_series.is_empty());
        // A decrease: the server restarted, every counter counts from zero again.
        let i = d.update(reading(&[("open", 2.0), ("closed", 3.0)]));
        assert!(i.reset);
        assert_eq!((grew(&i, "open"), grew(&i, "closed")), (2.0, 3.0));
        // A vanished series is a restart too, even when the others went up.
        let i = d.update(reading(&[("open", 4.0)]));
        assert!(i.reset);
        assert_eq!((grew(&i, "open"), grew(&i, "closed")), (4.0, 0.0));
        // A new series in the same process counts from zero.
        let i = d.update(reading(&[("open", 4.0), ("half_open", 2.0)]));
        assert!(!i.reset);
        assert_eq!((grew(&i, "open"), grew(&i, "half_open")), (0.0, 2.0));
    }

    #[test]
    fn polls_sum_transitions_by_target_state() {
        let text = |open: u32, half: u32, closed: u32, state: u32, errors: u32| {
            format!(
                "{BREAKER_TRANSITIONS}{{breaker=\"a\",from=\"closed\",to=\"open\"}} {open}\n\
                 {BREAKER_TRANSITIONS}{{breaker=\"a\",from=\"half_open\",to=\"open\"}} {open}\n\
                 {BREAKER_TRANSITIONS}{{breaker=\"a\",from=\"open\",to=\"half_open\"}} {half}\n\
                 {BREAKER_TRANSITIONS}{{breaker=\"a\",from=\"half_open\",to=\"closed\"}} {closed}\n\
                 {BREAKER_STATE}{{breaker=\"a\"}} {state}\n\
                 {BREAKER_STATE}{{breaker=\"b\"}} 0\n\
                 {CHAOS_INJECTED}{{chaos=\"s\",kind=\"error\"}} {errors}\n\
                 {CHAOS_INJECTED}{{chaos=\"s\",kind=\"delay\"}} {}\n",
                errors * 10
            )
        };
        let mut acc = MetricsAcc::default();
        acc.poll(0, &parse_prometheus(&text(1, 0, 0, 1, 5)));
        acc.poll(1, &parse_prometheus(&text(3, 2, 1, 2, 9)));
        // A second poll in the same second merges into its row.
        acc.poll(1, &parse_prometheus(&text(3, 2, 2, 0, 10)));
        // The server restarted (counters lower) and its breaker opened once since.
        acc.poll(4, &parse_prometheus(&text(1, 0, 0, 1, 2)));
        // A poll without any breaker series (before the first search after a restart) is
        // still a row: the server exports breaker metrics, it just has none yet.
        acc.poll(5, &parse_prometheus("ironsift_up 1\n"));
        let b = &acc.breaker;
        assert!(b.exported);
        assert_eq!((b.polls, b.restarts), (5, 2));
        // to="open" counts both from= series: (3+3)-(1+1) = 4, then 1+1 after the restart.
        assert_eq!(
            (b.opened_total, b.half_open_total, b.closed_total),
            (6, 2, 2)
        );
        let t: Vec<_> = b
            .timeline
            .iter()
            .map(|r| (r.t, r.opened, r.half_open, r.closed, r.state))
            .collect();
        assert_eq!(
            t,
            [
                (0, 0, 0, 0, Some("open")),
                (1, 4, 2, 2, Some("closed")),
                (4, 2, 0, 0, Some("open")),
                (5, 0, 0, 0, None),
            ]
        );
        let f = acc.faults.as_ref().unwrap();
        assert_eq!((f.errors, f.delays, f.panics), (5 + 2, 50 + 20, 0));
    }
}
