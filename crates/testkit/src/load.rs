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
//! A probe can poll a second path (e.g. `/readyz`) on its own connection meanwhile, to show that
//! health answers stay fast under load. The HTTP/1.1 client is minimal on purpose (keep-alive,
//! `Content-Length` bodies): the load generator shares the machine with the server and must
//! cost as little CPU as it can.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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
    fn of(h: &Histogram<u64>) -> Latency {
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

enum Outcome {
    Status(u16),
    Failed,
    TimedOut,
}

impl Conn {
    fn new(addr: SocketAddr) -> Self {
        Conn {
            addr,
            stream: None,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    async fn get(&mut self, path: &str, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.get_inner(path)).await {
            Ok(Ok(status)) => Outcome::Status(status),
            Ok(Err(_)) => {
                self.stream = None;
                Outcome::Failed
            }
            Err(_) => {
                self.stream = None;
                Outcome::TimedOut
            }
        }
    }

    async fn get_inner(&mut self, path: &str) -> io::Result<u16> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let stream = self.stream.as_mut().expect("connected above");
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        stream.write_all(req.as_bytes()).await?;
        self.buf.clear();
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
        for line in head.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("connection")
                    && v.trim().eq_ignore_ascii_case("close")
                {
                    close = true;
                }
            }
        }
        let length = length.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "response without Content-Length",
            )
        })?;
        while self.buf.len() < header_end + length {
            read_more(stream, &mut self.buf).await?;
        }
        if close {
            self.stream = None;
        }
        Ok(status)
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

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

#[derive(Default)]
struct Counts {
    responses: u64,
    ok: u64,
    shed: u64,
    errors: u64,
    failures: u64,
    timeouts: u64,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Runs the load and reports. Stops by itself after `warmup + duration`.
pub async fn run(cfg: LoadConfig) -> io::Result<LoadReport> {
    if cfg.paths.is_empty() || cfg.connections == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no paths or no connections",
        ));
    }
    let start = Instant::now();
    let measure_from = start + cfg.warmup;
    let end = measure_from + cfg.duration;
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(cfg.connections);
    for _ in 0..cfg.connections {
        let cfg = cfg.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::new(cfg.addr);
            let mut hist = histogram();
            let mut counts = Counts::default();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let due = match cfg.rate {
                    Some(rate) => start + Duration::from_secs_f64(k as f64 / rate),
                    None => Instant::now(),
                };
                if due >= end {
                    break;
                }
                if cfg.rate.is_some() {
                    tokio::time::sleep_until(due).await;
                }
                let path = &cfg.paths[(k % cfg.paths.len() as u64) as usize];
                let outcome = conn.get(path, cfg.request_timeout).await;
                let done = Instant::now();
                if due < measure_from {
                    continue;
                }
                match outcome {
                    Outcome::Status(s) => {
                        counts.responses += 1;
                        match s {
                            200..=299 => counts.ok += 1,
                            429 | 503 => counts.shed += 1,
                            _ => counts.errors += 1,
                        }
                        let _ = hist.record(us(done - due));
                    }
                    Outcome::Failed => counts.failures += 1,
                    Outcome::TimedOut => {
                        counts.failures += 1;
                        counts.timeouts += 1;
                    }
                }
            }
            (hist, counts)
        }));
    }
    // The probe runs on its own thread and runtime, like a health checker in another process:
    // its latency is then the server's, not the time it waited behind our own load workers.
    let probe = cfg.probe.clone().map(|path| {
        let cfg = cfg.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(_) => return,
            };
            let hist = rt.block_on(async move {
                let mut conn = Conn::new(cfg.addr);
                let mut hist = histogram();
                let mut tick = tokio::time::interval(cfg.probe_interval);
                loop {
                    tick.tick().await;
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let outcome = conn.get(&path, cfg.request_timeout).await;
                    if sent >= measure_from
                        && let Outcome::Status(_) = outcome {
                            let _ = hist.record(us(sent.elapsed()));
                        }
                }
                hist
            });
            let _ = tx.send(hist);
        });
        rx
    });

    let mut hist = histogram();
    let mut total = Counts::default();
    for w in workers {
        let (h, c) = w.await.map_err(io::Error::other)?;
        hist.add(&h).map_err(io::Error::other)?;
        total.responses += c.responses;
        total.ok += c.ok;
        total.shed += c.shed;
        total.errors += c.errors;
        total.failures += c.failures;
        total.timeouts += c.timeouts;
    }
    let probe = match probe {
        Some(p) => Some(Latency::of(&p.await.map_err(io::Error::other)?)),
        None => None,
    };
    let seconds = cfg.duration.as_secs_f64();
    Ok(LoadReport {
        responses: total.responses,
        ok: total.ok,
        shed: total.shed,
        errors: total.errors,
        failures: total.failures,
        timeouts: total.timeouts,
        seconds,
        qps: total.responses as f64 / seconds,
        latency: Latency::of(&hist),
        probe,
        rate: cfg.rate,
    })
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
}
