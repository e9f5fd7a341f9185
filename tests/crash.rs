//! Acknowledged writes survive `kill -9`: the real binary, clients streaming upserts, batch
//! upserts and deletes, SIGKILL at a random moment (commits run every few tens of
//! milliseconds, so kills land before, during and after commits and merges), restart on the
//! same data, and every acknowledged operation must be reflected. Loopback only, bounded.
//!
//! Rounds: `IRONSIFT_CRASH_ROUNDS` (default 30; `cargo xtask crash --rounds 300` runs more).
//! Seed: `IRONSIFT_CRASH_SEED` (default: from the clock, printed so a failure can be replayed).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::http::request;
use testkit::rng::Rng;
use testkit::{ServerProcess, Signal};

const BIN: &str = env!("CARGO_BIN_EXE_ironsift");
const CLIENTS: u64 = 4;
const IDS_PER_CLIENT: u64 = 150;
const TIMEOUT: Duration = Duration::from_secs(20);

/// What a document should be: present with this version, or absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Present(u64),
    Absent,
}

#[derive(Debug, Default)]
struct Expect {
    /// The result of the last acknowledged operation.
    acked: Option<State>,
    /// The result of an operation in flight when the server died (may or may not have landed).
    pending: Option<State>,
}

type Model = Arc<Mutex<HashMap<String, Expect>>>;

fn send(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Value)> {
    let r = request(
        addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        body,
        TIMEOUT,
    )?;
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    Ok((r.status, v))
}

/// One client: owns its ids, so its operations on an id never race each other. Stops at the
/// first failed request (the server is gone), leaving that operation pending.
fn client(
    addr: SocketAddr,
    me: u64,
    seed: u64,
    model: Model,
    version: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) {
    let mut rng = Rng(seed);
    let id = |n: u64| format!("c{me}-{n}");
    while !stop.load(Ordering::Relaxed) {
        let roll = rng.below(10);
        let (method, path, body, effects): (&str, String, Vec<u8>, Vec<(String, State)>) =
            if roll < 5 {
                let n = rng.below(IDS_PER_CLIENT as usize) as u64;
                let v = version.fetch_add(1, Ordering::Relaxed);
                let doc = json!({"id": id(n), "v": v, "text": format!("crash round words {v}")});
                (
                    "POST",
                    "/v1/indexes/c/documents".into(),
                    serde_json::to_vec(&doc).unwrap(),
                    vec![(id(n), State::Present(v))],
                )
            } else if roll < 8 {
                let mut docs = Vec::new();
                let mut effects = Vec::new();
                for _ in 0..1 + rng.below(20) {
                    let n = rng.below(IDS_PER_CLIENT as usize) as u64;
                    let v = version.fetch_add(1, Ordering::Relaxed);
                    docs.push(json!({"id": id(n), "v": v, "text": format!("batch words {v}")}));
                    effects.push((id(n), State::Present(v)));
                }
                (
                    "POST",
                    "/v1/indexes/c/documents".into(),
                    serde_json::to_vec(&docs).unwrap(),
                    effects,
                )
            } else {
                let n = rng.below(IDS_PER_CLIENT as usize) as u64;
                (
                    "DELETE",
                    format!("/v1/indexes/c/documents/{}", id(n)),
                    Vec::new(),
                    vec![(id(n), State::Absent)],
                )
            };
        // Within a batch the last write of an id wins.
        let mut last: HashMap<String, State> = HashMap::new();
        for (k, s) in effects {
            last.insert(k, s);
        }
        {
            let mut m = model.lock().unwrap();
            for (k, s) in &last {
                m.entry(k.clone()).or_default().pending = Some(*s);
            }
        }
        let ok = match send(addr, method, &path, &body) {
            Ok((200, body)) if method == "POST" => {
                assert_eq!(body["failed"], 0, "{body}");
                true
            }
            Ok((200 | 404, _)) if method == "DELETE" => true,
            Ok((status, body)) if status >= 500 => {
                // Refused (e.g. shutting down): not acknowledged, may or may not have applied.
                eprintln!("refused with {status}: {body}");
                false
            }
            Ok((status, body)) => panic!("{method} {path}: unexpected {status}: {body}"),
            Err(_) => false, // the server died: this operation stays pending
        };
        if !ok {
            return;
        }
        let mut m = model.lock().unwrap();
        for (k, s) in last {
            let e = m.entry(k).or_default();
            e.acked = Some(s);
            e.pending = None;
        }
        acked.fetch_add(1, Ordering::Relaxed);
    }
}

/// Checks every id against the model; folds landed pending operations into it.
fn verify(addr: SocketAddr, model: &Model, round: u32) -> (u64, u64) {
    let mut m = model.lock().unwrap();
    let mut checked = 0;
    let mut pending_landed = 0;
    for (id, e) in m.iter_mut() {
        let (status, body) = send(addr, "GET", &format!("/v1/indexes/c/documents/{id}"), &[])
            .unwrap_or_else(|err| panic!("GET {id}: {err}"));
        let actual = match status {
            200 => State::Present(body["v"].as_u64().unwrap_or_else(|| panic!("{id}: {body}"))),
            404 => State::Absent,
            other => panic!("GET {id}: {other} {body}"),
        };
        let acked = e.acked.unwrap_or(State::Absent);
        if actual == acked {
            e.pending = None;
        } else if Some(actual) == e.pending {
            pending_landed += 1;
            e.acked = Some(actual);
            e.pending = None;
        } else {
            panic!(
                "round {round}: document {id} is {actual:?}, but the last acknowledged write made it {acked:?} (in flight: {:?})",
                e.pending
            );
        }
        checked += 1;
    }
    (checked, pending_landed)
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let rounds: u32 = std::env::var("IRONSIFT_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("IRONSIFT_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test: {rounds} rounds, IRONSIFT_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let data = tempfile::tempdir().unwrap();
    // Keep the data after a failure for inspection: IRONSIFT_CRASH_KEEP=DIR copies nothing,
    // it makes DIR the data directory and leaves it in place.
    let keep = std::env::var_os("IRONSIFT_CRASH_KEEP").map(std::path::PathBuf::from);
    let data_dir = keep.clone().unwrap_or_else(|| data.path().join("d"));
    let model: Model = Arc::new(Mutex::new(HashMap::new()));
    let version = Arc::new(AtomicU64::new(1));
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut landed_total = 0;
    let mut server: Option<ServerProcess> = None;
    for round in 0..rounds {
        let refresh = ["20ms", "50ms", "200ms", "1s"][rng.below(4)];
        let mut args = vec![
            "--refresh-interval",
            refresh,
            "--heap-mb",
            "16",
            "--drain-delay",
            "0s",
        ];
        if keep.is_some() {
            args.extend(["--log-level", "info,search_core=debug,tantivy=debug"]);
        }
        let srv = match server.as_mut() {
            None => {
                let s = ServerProcess::builder(BIN)
                    .data_dir(data_dir.clone())
                    .args(args)
                    .start()
                    .unwrap_or_else(|e| panic!("server did not start: {e}"));
                let (status, body) =
                    send(s.addr(), "POST", "/v1/indexes", br#"{"name":"c"}"#).unwrap();
                assert_eq!(status, 201, "{body}");
                server = Some(s);
                server.as_mut().unwrap()
            }
            Some(s) => {
                s.restart_with_args(args).unwrap_or_else(|e| {
                    panic!("round {round}: the server did not come back after SIGKILL: {e}")
                });
                s
            }
        };
        let addr = srv.addr();
        let (_, landed) = verify(addr, &model, round);
        landed_total += landed;

        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (model, version, stop, acked) =
                    (model.clone(), version.clone(), stop.clone(), acked.clone());
                let seed = rng.next_u64() | 1;
                std::thread::spawn(move || client(addr, c, seed, model, version, stop, acked))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30 + rng.below(700) as u64));
        srv.signal(Signal::Kill).unwrap();
        srv.wait_exit(TIMEOUT).expect("SIGKILL ends the process");
        if let Some(dir) = &keep {
            let log = dir.with_extension(format!("round-{round}.log"));
            let _ = std::fs::write(log, srv.stderr_text());
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("client thread");
        }
    }
    // A last restart and check, then a clean stop.
    let srv = server.as_mut().unwrap();
    srv.restart().expect("final restart");
    let (checked, landed) = verify(srv.addr(), &model, rounds);
    landed_total += landed;
    let (status, body) = send(
        srv.addr(),
        "GET",
        "/v1/indexes/c/search?q=words&limit=1",
        &[],
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    srv.signal(Signal::Term).unwrap();
    let exit = srv.wait_exit(TIMEOUT).expect("clean exit");
    assert!(exit.success(), "{exit:?}");
    eprintln!(
        "crash test: {rounds} rounds in {:.1}s, {} operations acknowledged, {checked} documents checked, \
         0 acknowledged operations lost, {landed_total} unacknowledged in-flight operations found applied",
        started.elapsed().as_secs_f64(),
        acked.load(Ordering::Relaxed)
    );
}
