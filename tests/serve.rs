//! `ironsift serve` as a real child process: graceful shutdown under load, the forced second
//! signal, readiness, metrics and request ids. Loopback only; every wait is bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::{ServerProcess, Signal};

const BIN: &str = env!("CARGO_BIN_EXE_ironsift");

fn start(args: &[&str]) -> ServerProcess {
    ServerProcess::start(BIN, args).unwrap_or_else(|e| panic!("server did not start: {e}"))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The error and its causes on one line (reqwest's Display hides the root cause).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn create_index(c: &reqwest::Client, server: &ServerProcess, name: &str) {
    let r = c
        .post(server.url("/v1/indexes"))
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

/// Upserts `docs` with `?refresh=wait_for`; panics unless all were indexed.
async fn add_and_wait(c: &reqwest::Client, server: &ServerProcess, index: &str, docs: &[Value]) {
    let r = c
        .post(server.url(&format!("/v1/indexes/{index}/documents?refresh=wait_for")))
        .json(&docs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["indexed"], docs.len(), "{body}");
}

/// Terminates `server` gracefully and returns its exit status (panics if it takes > 30 s).
fn stop(server: &mut ServerProcess) -> std::process::ExitStatus {
    server.signal(Signal::Term).unwrap();
    server
        .wait_exit(Duration::from_secs(30))
        .expect("the server exits within 30 s of SIGTERM")
}

/// Which ids of `ids` can be fetched from `index` (GET by id, 8 at a time).
async fn count_found(server: &ServerProcess, index: &str, ids: &[String]) -> (usize, Vec<String>) {
    let base = server.url(&format!("/v1/indexes/{index}/documents/"));
    let chunks: Vec<Vec<String>> = ids
        .chunks(ids.len().div_ceil(8).max(1))
        .map(|c| c.to_vec())
        .collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let c = client();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let mut missing = Vec::new();
            for id in &chunk {
                let r = c.get(format!("{base}{id}")).send().await.unwrap();
                match r.status().as_u16() {
                    200 => {
                        let doc: Value = r.json().await.unwrap();
                        assert_eq!(doc["id"], id.as_str(), "{doc}");
                    }
                    404 => missing.push(id.clone()),
                    s => panic!("GET {id}: {s} {}", r.text().await.unwrap_or_default()),
                }
            }
            (chunk.len() - missing.len(), missing)
        }));
    }
    let mut found = 0;
    let mut missing = Vec::new();
    for t in tasks {
        let (f, m) = t.await.unwrap();
        found += f;
        missing.extend(m);
    }
    (found, missing)
}

const WORDS: [&str; 12] = [
    "walrus", "harbour", "lantern", "copper", "meadow", "signal", "quartz", "ember", "falcon",
    "tundra", "violet", "saffron",
];

/// A small deterministic generator (xorshift), one per client.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn word(&mut self) -> &'static str {
        WORDS[self.below(WORDS.len())]
    }
}

/// A request that failed without an answer once shutdown had begun.
struct Dropped {
    what: &'static str,
    request_id: String,
    error: String,
    /// The document ids, for writes.
    ids: Vec<String>,
}

/// What one load client saw.
#[derive(Default)]
struct ClientReport {
    /// Requests answered 2xx.
    ok: u64,
    /// Ids of acknowledged writes (200 and counted as indexed).
    acked: Vec<String>,
    /// Requests that ended in a refused connection after shutdown began (the expected end).
    refused_after_shutdown: u64,
    /// Requests that failed mid-exchange after shutdown began; judged later from the log.
    dropped: Vec<Dropped>,
    /// Anything else: a non-2xx answer, a bad body, a transport error before shutdown.
    failures: Vec<String>,
}

/// One load client: a searcher (even `i`) or a writer (odd `i`); clients `i % 4 < 2` keep
/// their connection alive, the others open one per request, so both the idle keep-alive
/// connections and the accept queue meet the shutdown. Runs until a connection is refused
/// after shutdown began, or any other error.
async fn load_client(
    i: usize,
    base: String,
    shutting_down: Arc<AtomicBool>,
    started: Instant,
) -> ClientReport {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30));
    if i % 4 >= 2 {
        builder = builder.pool_max_idle_per_host(0);
    }
    let c = builder.build().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let writer = i % 2 == 1;
    let what = if writer { "write" } else { "search" };
    let mut report = ClientReport::default();
    let mut seq = 0u64;
    for n in 0u64.. {
        if started.elapsed() > Duration::from_secs(40) {
            report
                .failures
                .push("client still running after 40 s: the server never went away".into());
            break;
        }
        let request_id = format!("c{i}-r{n}");
        let mut ids = Vec::new();
        let request = if writer {
            let docs = 1 + rng.below(5);
            let mut body = String::new();
            for _ in 0..docs {
                seq += 1;
                let id = format!("c{i}-{seq}");
                let doc = json!({
                    "id": id,
                    "title": format!("{} {}", rng.word(), rng.word()),
                    "body": format!("{} {} {} client {i}", rng.word(), rng.word(), rng.word()),
                    "seq": seq,
                });
                body.push_str(&doc.to_string());
                body.push('\n');
                ids.push(id);
            }
            c.post(format!("{base}/v1/indexes/docs/documents"))
                .header("content-type", "application/x-ndjson")
                .body(body)
        } else {
            let q = format!("{} OR {}", rng.word(), rng.word());
            c.get(format!("{base}/v1/indexes/docs/search"))
                .query(&[("q", q.as_str()), ("limit", "10")])
        };
        let result = request.header("x-request-id", &request_id).send().await;
        // The flag is set before the signal is sent: an error seen while it is unset happened
        // before shutdown began.
        let after_shutdown = shutting_down.load(Ordering::SeqCst);
        match result {
            Ok(resp) => {
                let status = resp.status();
                match resp.text().await {
                    Ok(text) if status.is_success() => {
                        report.ok += 1;
                        if writer {
                            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                            if v["indexed"] == ids.len() && v["failed"] == 0 {
                                report.acked.extend(ids);
                            } else {
                                report.failures.push(format!("{what}: 200 but {text}"));
                            }
                        }
                    }
                    Ok(text) => report
                        .failures
                        .push(format!("{what} {request_id}: {status} {text}")),
                    Err(e) => report.failures.push(format!(
                        "{what} {request_id}: {status}, then the body failed: {}",
                        describe(&e)
                    )),
                }
            }
            Err(e) if e.is_connect() && after_shutdown => {
                report.refused_after_shutdown += 1;
                break;
            }
            Err(e) if after_shutdown => {
                report.dropped.push(Dropped {
                    what,
                    request_id,
                    error: describe(&e),
                    ids,
                });
                break;
            }
            Err(e) => {
                report.failures.push(format!(
                    "{what} {request_id} failed before shutdown: {}",
                    describe(&e)
                ));
                break;
            }
        }
    }
    report
}

/// The request ids the server finished (from its JSON log at debug level: one line per
/// request, with the request span's id).
fn served_request_ids(log: &str) -> std::collections::HashSet<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["span"]["id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_acknowledged() {
    const CLIENTS: usize = 50;
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
    // Debug logs of the server crate: one line per finished request, naming its id.
    let mut server = start(&[
        "--shutdown-timeout",
        "10s",
        "--refresh-interval",
        "500ms",
        "--log-format",
        "json",
        "--log-level",
        "info,server=debug",
    ]);
    let c = client();
    create_index(&c, &server, "docs").await;
    let seed: Vec<Value> = WORDS
        .iter()
        .enumerate()
        .map(|(n, w)| json!({"id": format!("seed-{n}"), "title": format!("{w} seed")}))
        .collect();
    add_and_wait(&c, &server, "docs", &seed).await;

    let shutting_down = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let base = server.url("");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(load_client(
                i,
                base.clone(),
                Arc::clone(&shutting_down),
                started,
            ))
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(2000)).await;
    shutting_down.store(true, Ordering::SeqCst);
    let signalled = Instant::now();
    server.signal(Signal::Term).unwrap();
    // Blocking here is fine: the clients run on the runtime's worker threads.
    let status = server.wait_exit(SHUTDOWN_TIMEOUT + Duration::from_secs(5));
    let exit_after = signalled.elapsed();
    let status = status.expect("the server exits after SIGTERM");

    let mut totals = ClientReport::default();
    for task in clients {
        let r = tokio::time::timeout(Duration::from_secs(45), task)
            .await
            .expect("load clients stop once the server is gone")
            .unwrap();
        totals.ok += r.ok;
        totals.acked.extend(r.acked);
        totals.refused_after_shutdown += r.refused_after_shutdown;
        totals.dropped.extend(r.dropped);
        totals.failures.extend(r.failures);
    }
    let load_secs = started.elapsed().as_secs_f64();

    // A request that failed after shutdown began is an in-flight request cut off if the
    // server finished it (its id is in the log): a failure. If the server never read it
    // (still in the accept queue, or unread on an idle keep-alive connection when the
    // listener and idle connections were closed), the client saw a reset instead of a
    // refusal: counted and reported, and failing only with SERVE_STRICT_SHUTDOWN=1.
    let served = served_request_ids(&server.stderr_text());
    let strict = std::env::var_os("SERVE_STRICT_SHUTDOWN").is_some();
    let mut unread = Vec::new();
    for d in &totals.dropped {
        if served.contains(&d.request_id) {
            totals.failures.push(format!(
                "{} {} was served but its answer never arrived: {}",
                d.what, d.request_id, d.error
            ));
        } else if strict {
            totals.failures.push(format!(
                "{} {} (never read by the server) failed: {}",
                d.what, d.request_id, d.error
            ));
        } else {
            unread.push(d);
        }
    }
    println!(
        "load: {CLIENTS} clients, {} requests answered 2xx in {load_secs:.1} s, {} writes \
         acknowledged (ids), {} clients ended on a refused connection, {} on a reset of a \
         request the server never read; SIGTERM at 2.0 s, {status} {:.0} ms later",
        totals.ok,
        totals.acked.len(),
        totals.refused_after_shutdown,
        unread.len(),
        exit_after.as_secs_f64() * 1e3
    );
    if let Some(d) = unread.first() {
        println!(
            "  e.g. {} {}: {} (SERVE_STRICT_SHUTDOWN=1 makes these fail)",
            d.what, d.request_id, d.error
        );
    }
    assert!(
        totals.failures.is_empty(),
        "{} failed requests (first 10): {:#?}",
        totals.failures.len(),
        &totals.failures[..totals.failures.len().min(10)]
    );
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        exit_after < SHUTDOWN_TIMEOUT,
        "exit took {exit_after:?}, over the shutdown timeout"
    );
    assert!(totals.ok > 0 && !totals.acked.is_empty(), "the load ran");
    assert!(
        served.len() as u64 >= totals.ok,
        "the debug log names every answered request ({} ids for {} answers)",
        served.len(),
        totals.ok
    );

    server
        .restart()
        .unwrap_or_else(|e| panic!("restart failed: {e}"));
    let (found, missing) = count_found(&server, "docs", &totals.acked).await;
    println!(
        "after restart: {found} of {} acknowledged ids verified by GET",
        totals.acked.len()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged ids lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // Writes the server never read were not applied either.
    let unread_ids: Vec<String> = unread.iter().flat_map(|d| d.ids.clone()).collect();
    let (applied, _) = count_found(&server, "docs", &unread_ids).await;
    assert_eq!(applied, 0, "unanswered writes were applied: {unread_ids:?}");
    let r: Value = c
        .get(server.url("/v1/indexes/docs/search"))
        .query(&[("q", ""), ("limit", "1")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let total = r["total"].as_u64().unwrap();
    assert!(total >= (totals.acked.len() + seed.len()) as u64, "{r}");
    println!("after restart: the index holds {total} documents");
}

/// Opens a raw connection and sends a documents request whose body is only half there: the
/// server holds it in flight, waiting for the rest.
fn half_sent_request(server: &ServerProcess) -> TcpStream {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let line = "{\"id\":\"slow\",\"title\":\"never finished\"}\n";
    let head = format!(
        "POST /v1/indexes/docs/documents HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        server.addr(),
        line.len() * 2
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    s.flush().unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_forces_exit_and_still_commits() {
    // A long refresh interval: the docs are still uncommitted when the signals come.
    let mut server = start(&["--shutdown-timeout", "60s", "--refresh-interval", "60s"]);
    let c = client();
    create_index(&c, &server, "docs").await;
    let mut ids = Vec::new();
    for batch in 0..4 {
        let mut body = String::new();
        for n in 0..25 {
            let id = format!("b{batch}-{n}");
            body.push_str(&json!({"id": id, "title": "pending until shutdown"}).to_string());
            body.push('\n');
            ids.push(id);
        }
        let r = c
            .post(server.url("/v1/indexes/docs/documents"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["indexed"], 25, "{v}");
    }
    // Not searchable yet: nothing was committed.
    let r: Value = c
        .get(server.url("/v1/indexes/docs/search?q=pending"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["total"], 0, "{r}");

    // In flight when the signals come: a request still sending its body, and a large batch
    // being ingested (about 2 s in a debug build).
    let mut slow = half_sent_request(&server);
    const BIG: usize = 30_000;
    let mut big = String::with_capacity(BIG * 80);
    for n in 0..BIG {
        big.push_str(
            &json!({"id": format!("big-{n}"), "title": "bulkbatch item", "n": n}).to_string(),
        );
        big.push('\n');
    }
    let big_batch = tokio::spawn(
        c.post(server.url("/v1/indexes/docs/documents"))
            .header("content-type", "application/x-ndjson")
            .body(big)
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal(Signal::Term).unwrap();
    assert_eq!(
        server.wait_exit(Duration::from_millis(300)),
        None,
        "the first SIGTERM waits for the in-flight requests"
    );
    let second = Instant::now();
    server.signal(Signal::Term).unwrap();
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("the second SIGTERM forces an exit");
    let took = second.elapsed();
    println!(
        "forced exit {:.0} ms after the second SIGTERM: {status}",
        took.as_secs_f64() * 1e3
    );
    assert_eq!(status.code(), Some(0), "{}", server.stderr_text());
    assert!(
        took < Duration::from_secs(15),
        "the forced exit took {took:?}"
    );
    let log = server.stderr_text();
    assert!(log.contains("second signal"), "{log}");

    // The half-sent request got no answer: its connection was closed.
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.starts_with("HTTP/1.1 2"),
        "the incomplete request was not acknowledged: {answer}"
    );
    // The large batch: acknowledged entirely, refused with a retryable 503 (the index closed
    // for writing under it), or unanswered.
    let big_acked = match big_batch.await.unwrap() {
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap();
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(v["error"]["code"], "unavailable", "{v}");
                assert_eq!(v["error"]["retryable"], true, "{v}");
                println!("large batch refused: {}", v["error"]["message"]);
                false
            } else {
                assert!(status.is_success(), "large batch: {status} {text}");
                assert_eq!(v["indexed"], BIG, "{v}");
                true
            }
        }
        Err(e) => {
            println!("large batch unanswered: {}", describe(&e));
            false
        }
    };

    server
        .restart()
        .unwrap_or_else(|e| panic!("restart failed: {e}"));
    let (found, missing) = count_found(&server, "docs", &ids).await;
    println!(
        "after restart: {found} of {} acknowledged ids present",
        ids.len()
    );
    assert!(missing.is_empty(), "lost: {missing:?}");
    let r = c
        .get(server.url("/v1/indexes/docs/documents/slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the half-sent document was never applied");
    let r: Value = c
        .get(server.url("/v1/indexes/docs/search?q=bulkbatch&limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let applied = r["total"].as_u64().unwrap();
    println!(
        "large batch of {BIG}: acknowledged {big_acked}, {applied} documents present after restart"
    );
    if big_acked {
        assert_eq!(applied, BIG as u64, "an acknowledged batch is kept whole");
    }
}

async fn readyz(c: &reqwest::Client, server: &ServerProcess) -> (u16, Value) {
    let r = c.get(server.url("/readyz")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_flips_when_an_index_becomes_unreadable() {
    let server = start(&[]);
    let c = client();
    create_index(&c, &server, "docs").await;
    add_and_wait(&c, &server, "docs", &[json!({"id": 1, "title": "hello"})]).await;
    let (status, report) = readyz(&c, &server).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ready"], true);
    assert_eq!(check(&report, "indexes")["status"], "pass", "{report}");

    let index_dir = server.data_dir().join("docs").join("index");
    let meta = index_dir.join("meta.json");
    let moved = index_dir.join("meta.json.away");

    // Renaming works for every user, root included (permission bits do not stop root).
    std::fs::rename(&meta, &moved).unwrap();
    let (status, report) = readyz(&c, &server).await;
    std::fs::rename(&moved, &meta).unwrap();
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["ready"], false);
    assert_eq!(report["status"], "unready");
    let indexes = check(&report, "indexes");
    assert_eq!(indexes["status"], "fail", "{report}");
    assert!(
        indexes["detail"].as_str().unwrap().contains("docs"),
        "{report}"
    );
    let (status, report) = readyz(&c, &server).await;
    assert_eq!(status, 200, "restored: {report}");

    if !running_as_root() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |m| std::fs::Permissions::from_mode(m);
        std::fs::set_permissions(&index_dir, mode(0o000)).unwrap();
        let (status, report) = readyz(&c, &server).await;
        std::fs::set_permissions(&index_dir, mode(0o755)).unwrap();
        assert_eq!(status, 503, "{report}");
        let indexes = check(&report, "indexes");
        assert_eq!(indexes["status"], "fail", "{report}");
        assert!(
            indexes["detail"].as_str().unwrap().contains("docs"),
            "{report}"
        );
        let (status, report) = readyz(&c, &server).await;
        assert_eq!(status, 200, "restored: {report}");
    }
}

fn running_as_root() -> bool {
    // The owner of /proc/self is the effective user.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool() {
    let server = start(&[]);
    let c = client();
    create_index(&c, &server, "docs").await;
    add_and_wait(&c, &server, "docs", &[json!({"id": 1, "title": "metrics"})]).await;
    let r = c
        .get(server.url("/v1/indexes/docs/search?q=metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(server.url("/v1/indexes/nope/search?q=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c.get(server.url("/no/such/route")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let r = c.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let text = r.text().await.unwrap();
    for name in [
        "ironsift_http_requests_total",
        "ironsift_http_request_duration_seconds_bucket",
        "ironsift_build_info",
        "ironsift_index_docs",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(text.contains("status=\"404\""), "{text}");
    assert!(
        text.contains("ironsift_index_docs{index=\"docs\"} 1"),
        "{text}"
    );

    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match promtool {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is required in CI (Debian/Ubuntu: apt-get install -y prometheus)"
            );
            eprintln!(
                "NOTICE: promtool not found; /metrics was not linted \
                 (install it: apt-get install -y prometheus)"
            );
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- metrics ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_and_logged() {
    let mut server = start(&["--log-format", "json"]);
    let c = client();

    let r = c
        .get(server.url("/v1/indexes/nope/documents/1"))
        .header("X-Request-Id", "test-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-request-id"], "test-123");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], "test-123", "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");

    let r = c
        .get(server.url("/v1/indexes/nope/documents/1"))
        .header("X-Request-Id", "bad id!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let echoed = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(echoed.len(), 32, "{echoed}");
    assert!(
        echoed.bytes().all(|b| b.is_ascii_hexdigit()),
        "a generated id: {echoed}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], echoed.as_str(), "{body}");

    // A success carries a generated id too.
    let r = c.get(server.url("/livez")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"].len(), 32);

    let status = stop(&mut server);
    assert!(status.success(), "{status}");
    let log = server.stderr_text();
    let json_lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    assert!(
        !json_lines.is_empty() && json_lines.len() == log.lines().count(),
        "every log line is JSON:\n{log}"
    );
    assert!(
        json_lines
            .iter()
            .any(|l| l.to_string().contains("\"test-123\"")),
        "a JSON log line names test-123:\n{log}"
    );
}

/// Connections that never finish a request (silent, or half a request line) do not hold the
/// server: on SIGTERM it exits within a second or two of closing its listener, not after its
/// shutdown timeout, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_do_not_hold_shutdown() {
    let mut server = start(&["--shutdown-timeout", "60s", "--drain-delay", "0s"]);
    let c = client();
    create_index(&c, &server, "docs").await;
    add_and_wait(
        &c,
        &server,
        "docs",
        &[json!({"id": "kept", "title": "acked"})],
    )
    .await;
    let silent = TcpStream::connect(server.addr()).unwrap();
    let mut partial = TcpStream::connect(server.addr()).unwrap();
    partial
        .write_all(b"GET /v1/indexes/docs/search?q=x HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut idle = TcpStream::connect(server.addr()).unwrap();
    idle.write_all(b"GET /v1/indexes HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap(); // answered; the connection then stays open, idle
    tokio::time::sleep(Duration::from_millis(1500)).await; // past the front door's peek
    let t = Instant::now();
    server.signal(Signal::Term).unwrap();
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("exits well before its 60 s shutdown timeout");
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    drop((silent, partial, idle));
    server.restart().unwrap();
    let (found, missing) = count_found(&server, "docs", &["kept".to_string()]).await;
    assert_eq!(found, 1, "{missing:?}");
}
