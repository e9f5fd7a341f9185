//! Overload is shed fast with a clear answer: the real binary with a search concurrency of 4
//! and a short queue, 1,000 concurrent connections searching. Every response is 200, 429 or
//! 503 (with `Retry-After`), no client times out (clients back off 10–50 ms when shed, far
//! less than the hint, so the offered load stays several times the capacity), the 200s stay fast, and `/livez` and
//! `/readyz` (which bypass admission) keep answering quickly throughout. Loopback, bounded.
//!
//! The latencies are printed, not asserted (shared, noisy machines): the outcome rules are.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_ironsift");
const CONNECTIONS: usize = 1_000;
/// How long the connections keep searching (each also stops after `MAX_REQUESTS_PER_CONNECTION`).
const RUN_FOR: Duration = Duration::from_secs(3);
const MAX_REQUESTS_PER_CONNECTION: usize = 400;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
enum Outcome {
    Status {
        code: u16,
        retry_after: bool,
        latency: Duration,
    },
    Timeout,
    Error(String),
}

/// One HTTP/1.1 keep-alive request on `stream`; reads one response (Content-Length bodies).
async fn exchange(stream: &mut TcpStream, path: &str) -> std::io::Result<(u16, bool, bool)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "closed mid-body",
                    ));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let code: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let retry_after = head.contains("\nretry-after:");
            let close = head.contains("\nconnection: close");
            return Ok((code, retry_after, close));
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_are_served_or_shed_fast() {
    let server = ServerProcess::builder(BIN)
        .args([
            "--search-concurrency",
            "4",
            "--search-queue",
            "8",
            "--cache-mb",
            "0",
        ])
        .start()
        .unwrap();
    let addr = server.addr();
    // An index with enough text that searches do real work.
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = c
        .post(server.url("/v1/indexes"))
        .json(&json!({"name": "o"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let words = [
        "alpha", "beta", "gamma", "delta", "omega", "search", "index", "rust", "query", "shard",
    ];
    let docs: Vec<Value> = (0..5_000)
        .map(|i| {
            let text: Vec<&str> = (0..40)
                .map(|j| words[(i * 7 + j * 13 + j * j) % words.len()])
                .collect();
            json!({"id": i, "text": text.join(" ")})
        })
        .collect();
    let r = c
        .post(server.url("/v1/indexes/o/documents?refresh=wait_for"))
        .json(&docs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Health probes on their own thread and connections, every 20 ms, for the whole run (a
    // thread of their own, so the load generator's tasks do not delay them). One probe pair
    // first, before the load starts: a cold thread's first connection is not the server's
    // latency.
    let (warm_tx, warm_rx) = std::sync::mpsc::channel();
    let probe = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let probe = |path: &str| {
                let t = Instant::now();
                let r = testkit::http::get(addr, path, CLIENT_TIMEOUT).expect("probe failed");
                // Readiness may be red for reasons of this machine (a nearly full disk):
                // what matters here is that it answers, and fast.
                let ok = r.status == 200 || (path == "/readyz" && r.status == 503);
                assert!(ok, "{path} during overload: {} {}", r.status, r.text());
                t.elapsed()
            };
            for path in ["/livez", "/readyz"] {
                probe(path);
            }
            let _ = warm_tx.send(());
            let mut all = Vec::new();
            let mut slow = Vec::new();
            let begun = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for path in ["/livez", "/readyz"] {
                    let at = begun.elapsed();
                    let took = probe(path);
                    if took > Duration::from_millis(5) {
                        slow.push((path, at.as_millis(), took));
                    }
                    all.push(took);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            all.sort();
            if !slow.is_empty() {
                eprintln!("probes over 5 ms (path, started at ms, took): {slow:?}");
            }
            (
                *all.last().unwrap_or(&Duration::ZERO),
                percentile(&all, 0.99),
                all.len(),
            )
        })
    };
    warm_rx
        .recv_timeout(CLIENT_TIMEOUT)
        .expect("the first probes did not answer");

    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            tokio::spawn(async move {
                let mut out = Vec::new();
                let mut stream = match TcpStream::connect(addr).await {
                    Ok(s) => s,
                    Err(e) => return vec![Outcome::Error(format!("connect: {e}"))],
                };
                let _ = stream.set_nodelay(true);
                for k in 0..MAX_REQUESTS_PER_CONNECTION {
                    if started.elapsed() > RUN_FOR {
                        break;
                    }
                    let q = words[(i + k) % words.len()];
                    let path = format!("/v1/indexes/o/search?q={q}&limit=10");
                    let t = Instant::now();
                    match tokio::time::timeout(CLIENT_TIMEOUT, exchange(&mut stream, &path)).await {
                        Err(_) => {
                            out.push(Outcome::Timeout);
                            return out;
                        }
                        Ok(Err(e)) => {
                            out.push(Outcome::Error(e.to_string()));
                            return out;
                        }
                        Ok(Ok((code, retry_after, close))) => {
                            out.push(Outcome::Status {
                                code,
                                retry_after,
                                latency: t.elapsed(),
                            });
                            if close {
                                return out;
                            }
                            // A polite client backs off a little when shed (not the full
                            // Retry-After, so the server stays overloaded for the whole run).
                            if code != 200 {
                                let pause = 10 + (i * 31 + k * 17) % 40;
                                tokio::time::sleep(Duration::from_millis(pause as u64)).await;
                            }
                        }
                    }
                }
                out
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (probe_worst, probe_p99, probes) = probe.join().unwrap();

    let mut ok = Vec::new();
    let (mut shed, mut shed_without_hint, mut timeouts, mut errors) = (0, 0, 0, Vec::new());
    for o in &outcomes {
        match o {
            Outcome::Status {
                code: 200, latency, ..
            } => ok.push(*latency),
            Outcome::Status {
                code: 429 | 503,
                retry_after,
                ..
            } => {
                shed += 1;
                if !retry_after {
                    shed_without_hint += 1;
                }
            }
            Outcome::Status { code, .. } => errors.push(format!("status {code}")),
            Outcome::Timeout => timeouts += 1,
            Outcome::Error(e) => errors.push(e.clone()),
        }
    }
    ok.sort();
    let p99 = percentile(&ok, 0.99);
    eprintln!(
        "overload: {} responses in {:.1}s: {} ok (p50 {:?}, p99 {:?}), {shed} shed, {timeouts} timeouts, {} errors; \
         probes: {probes}, p99 {probe_p99:?}, worst {probe_worst:?}",
        outcomes.len(),
        elapsed.as_secs_f64(),
        ok.len(),
        percentile(&ok, 0.5),
        p99,
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "unexpected outcomes: {:?}",
        &errors[..errors.len().min(10)]
    );
    assert_eq!(timeouts, 0, "client timeouts");
    assert_eq!(shed_without_hint, 0, "shed responses without Retry-After");
    assert!(!ok.is_empty(), "nothing was served");
    // Latency bars (p99 of the 200s < 50 ms, probes < 10 ms) are measured on a quiet machine
    // and reported, not asserted: this machine is shared and its timing noisy.
    let _ = (p99, probe_p99);
}

/// Search latency while a large NDJSON batch is being indexed, against idle: the index bulkhead
/// and the writer's own threads must not starve searches (issue #4: p99 within 3× idle).
/// The result cache is off (idle searches would be cache hits, searches during indexing misses),
/// the queries are warmed up first, and the busy phase lasts until the batch is committed
/// (`refresh=wait_for`), so it covers the background indexing too.
/// Printed, not asserted: timing on shared machines is noisy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_stay_fast_while_a_large_batch_is_indexed() {
    let server = ServerProcess::builder(BIN)
        .args(["--cache-mb", "0"])
        .start()
        .unwrap();
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    assert_eq!(
        c.post(server.url("/v1/indexes"))
            .json(&json!({"name": "w"}))
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let mut rng = testkit::rng::Rng(7);
    let words: Vec<String> = (0..2_000).map(|i| format!("w{i}")).collect();
    let mut batch = String::new();
    let mut n = 0;
    while batch.len() < 12 << 20 {
        let text: Vec<&str> = (0..60)
            .map(|_| words[rng.zipf(words.len())].as_str())
            .collect();
        batch.push_str(&json!({"id": n, "text": text.join(" ")}).to_string());
        batch.push('\n');
        n += 1;
    }
    // A first, committed part so searches have something to find.
    let first: String = batch.lines().take(5_000).collect::<Vec<_>>().join("\n");
    let r = c
        .post(server.url("/v1/indexes/w/documents?refresh=wait_for"))
        .header("content-type", "application/x-ndjson")
        .body(first)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let url = server.url("/v1/indexes/w/search");
    let search = |i: usize| {
        let c = c.clone();
        let url = url.clone();
        let q = words[i % 50].clone();
        async move {
            let t = Instant::now();
            let r = c
                .get(&url)
                .query(&[("q", q.as_str()), ("limit", "10")])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let _ = r.bytes().await.unwrap();
            t.elapsed()
        }
    };
    for i in 0..100 {
        search(i).await;
    }
    let before_idle = search_histogram(&c, &server).await;
    let mut idle = Vec::new();
    for i in 0..1_000 {
        idle.push(search(i).await);
    }
    let before_busy = search_histogram(&c, &server).await;
    let body = batch.clone();
    let url = server.url("/v1/indexes/w/documents?refresh=wait_for");
    let c2 = c.clone();
    let writer = tokio::spawn(async move {
        let t = Instant::now();
        let r = c2
            .post(url)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        t.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut busy = Vec::new();
    while !writer.is_finished() || busy.len() < 300 {
        busy.push(search(busy.len()).await);
    }
    let took = writer.await.unwrap();
    let after_busy = search_histogram(&c, &server).await;
    let server_idle = bucket_of(&before_idle, &before_busy, 0.99);
    let server_busy = bucket_of(&before_busy, &after_busy, 0.99);
    eprintln!(
        "server-side search p99 (histogram bucket): idle <= {server_idle} s, while indexing <= {server_busy} s"
    );
    idle.sort();
    busy.sort();
    let (idle99, busy99) = (percentile(&idle, 0.99), percentile(&busy, 0.99));
    eprintln!(
        "search p99 idle {idle99:?} (p50 {:?}), while indexing {} MiB ({n} docs, committed in {took:?}): \
         {busy99:?} (p50 {:?}, {} searches): {:.2}x",
        percentile(&idle, 0.5),
        batch.len() >> 20,
        percentile(&busy, 0.5),
        busy.len(),
        busy99.as_secs_f64() / idle99.as_secs_f64().max(1e-9)
    );
}

/// The server's search-latency histogram (`le` bound, cumulative count) from `/metrics`.
async fn search_histogram(c: &reqwest::Client, server: &ServerProcess) -> Vec<(f64, u64)> {
    let text = c
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("ironsift_http_request_duration_seconds_bucket{")
                && l.contains("route=\"/v1/indexes/{name}/search\"")
                && l.contains("status=\"200\"")
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let n = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, n))
        })
        .collect()
}

/// The upper bound of the histogram bucket holding quantile `q` of what was recorded between
/// two scrapes.
fn bucket_of(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> f64 {
    let count = |h: &[(f64, u64)], le: f64| {
        h.iter()
            .find(|(b, _)| *b == le)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    let total = count(after, f64::INFINITY) - count(before, f64::INFINITY);
    for (le, n) in after {
        if (n - count(before, *le)) as f64 >= q * total as f64 {
            return *le;
        }
    }
    f64::INFINITY
}
