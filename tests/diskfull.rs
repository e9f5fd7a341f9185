//! Disk full: the real binary with its data folder on a small tmpfs, most of it taken by a
//! filler file so the index hits ENOSPC within seconds. Clients write until the disk is full:
//! every write is acknowledged (200) or refused with 507 (`storage_full`) or 503 with a
//! message, never a 500 or a hang; searches keep answering 200; `/readyz` reports the disk.
//! Then the filler is deleted: writes resume by themselves (no restart), and every
//! acknowledged write is there, after a SIGKILL and restart and after a clean SIGTERM and
//! restart. Loopback only, bounded.
//!
//! Needs root to mount the tmpfs (CI runs as root); elsewhere the test says why and returns.

use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::http::request;
use testkit::rng::Rng;
use testkit::{ServerProcess, Signal};

const BIN: &str = env!("CARGO_BIN_EXE_ironsift");
/// Size of the tmpfs, in MiB.
const TMPFS_MB: u64 = 64;
/// Space left free next to the filler: the index fills it within seconds.
const HEADROOM: u64 = 8 << 20;
const CLIENTS: u64 = 3;
const DOCS_PER_WRITE: u64 = 20;
/// A request that takes longer than this is a hang.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on each phase (filling, recovering).
const PHASE: Duration = Duration::from_secs(90);

/// A tmpfs mounted on a fresh folder; unmounted (and the folder removed) when dropped, also
/// when the test fails.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size_mb: u64) -> Result<Tmpfs, String> {
        let dir = std::env::temp_dir().join(format!(
            "ironsift-diskfull-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Ok(Tmpfs { dir }),
            Ok(o) => {
                let _ = fs::remove_dir(&dir);
                Err(format!(
                    "`mount -t tmpfs` failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                Err(format!("cannot run mount: {e}"))
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file there (a process not yet reaped): detach it.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Fills the file system holding `path` with a file there, then gives back `headroom` bytes.
fn fill(path: &Path, headroom: u64) -> u64 {
    let mut f = fs::File::create(path).unwrap();
    let block = vec![0x5au8; 1 << 20];
    let mut written = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let len = written.saturating_sub(headroom);
    f.set_len(len).unwrap();
    len
}

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

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Ids of acknowledged documents.
    acked: Vec<String>,
    ok: u64,
    full_507: u64,
    unavailable_503: u64,
    /// Anything else (a 500, another status, a timeout): the test fails listing them.
    bad: Vec<String>,
    /// When the last refusal was seen and when the first write after the space came back was
    /// acknowledged.
    last_refused: Option<Instant>,
}

struct Shared {
    tally: Mutex<Tally>,
    stop: AtomicBool,
    searches_ok: AtomicU64,
    searches_bad: Mutex<Vec<String>>,
}

const WORDS: &[&str] = &[
    "disk", "full", "space", "write", "ahead", "log", "segment", "commit", "tantivy", "index",
    "search", "words", "kernel", "memory", "block", "device", "storage", "quota", "retry", "sync",
];

fn doc(rng: &mut Rng, id: &str) -> Value {
    // About 1.5 KB of text drawn from a small vocabulary with random numbers mixed in, so the
    // index grows roughly like the log does.
    let mut text = String::with_capacity(1600);
    while text.len() < 1500 {
        text.push_str(WORDS[rng.zipf(WORDS.len())]);
        text.push(' ');
        if rng.below(4) == 0 {
            text.push_str(&rng.below(100_000).to_string());
            text.push(' ');
        }
    }
    json!({"id": id, "title": format!("doc {id}"), "text": text})
}

fn writer(addr: SocketAddr, me: u64, shared: Arc<Shared>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (me + 1));
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let ids: Vec<String> = (0..DOCS_PER_WRITE)
            .map(|i| format!("w{me}-{}", n + i))
            .collect();
        n += DOCS_PER_WRITE;
        let docs: Vec<Value> = ids.iter().map(|id| doc(&mut rng, id)).collect();
        let body = serde_json::to_vec(&docs).unwrap();
        let outcome = send(addr, "POST", "/v1/indexes/x/documents", &body);
        let mut t = shared.tally.lock().unwrap();
        let acked = match outcome {
            Ok((200, b)) if b["indexed"] == DOCS_PER_WRITE && b["failed"] == 0 => {
                t.ok += 1;
                t.acked.extend(ids);
                true
            }
            Ok((507, b)) if b["error"]["code"] == "storage_full" => {
                t.full_507 += 1;
                t.last_refused = Some(Instant::now());
                false
            }
            Ok((503, b)) if b["error"]["message"].as_str().is_some_and(|m| m.len() > 10) => {
                t.unavailable_503 += 1;
                t.last_refused = Some(Instant::now());
                false
            }
            Ok((status, b)) => {
                t.bad.push(format!("write answered {status}: {b}"));
                false
            }
            Err(e) => {
                t.bad.push(format!("write failed (hang or crash?): {e}"));
                false
            }
        };
        drop(t);
        if !acked {
            // Refused: do not hammer a full disk.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn searcher(addr: SocketAddr, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match send(
            addr,
            "GET",
            "/v1/indexes/x/search?q=disk%20space&limit=5",
            &[],
        ) {
            Ok((200, _)) => {
                shared.searches_ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, b)) => shared
                .searches_bad
                .lock()
                .unwrap()
                .push(format!("search answered {status}: {b}")),
            Err(e) => shared
                .searches_bad
                .lock()
                .unwrap()
                .push(format!("search failed: {e}")),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `/readyz` body: (ready, status of the named check, its detail).
fn readyz_check(addr: SocketAddr, check: &str) -> (u16, String, String) {
    let (status, body) = send(addr, "GET", "/readyz", &[]).expect("/readyz answers");
    let c = body["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == check))
        .cloned()
        .unwrap_or(Value::Null);
    (
        status,
        c["status"].as_str().unwrap_or("?").to_string(),
        c["detail"].as_str().unwrap_or("").to_string(),
    )
}

/// Every acknowledged id is there (GET by id).
fn verify(addr: SocketAddr, acked: &[String], when: &str) {
    let mut missing = Vec::new();
    for id in acked {
        let (status, body) = send(addr, "GET", &format!("/v1/indexes/x/documents/{id}"), &[])
            .unwrap_or_else(|e| panic!("{when}: GET {id}: {e}"));
        match status {
            200 if body["id"] == id.as_str() || body["_id"] == id.as_str() => {}
            200 => panic!("{when}: GET {id} returned another document: {body}"),
            404 => missing.push(id.clone()),
            other => panic!("{when}: GET {id}: {other} {body}"),
        }
    }
    assert!(
        missing.is_empty(),
        "{when}: {} of {} acknowledged documents lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    let (status, body) = send(addr, "GET", "/v1/indexes/x", &[]).unwrap();
    assert_eq!(status, 200, "{body}");
    let docs = body["docs"].as_u64().unwrap_or(0);
    assert!(
        docs >= acked.len() as u64,
        "{when}: the index counts {docs} documents, fewer than the {} acknowledged: {body}",
        acked.len()
    );
}

#[test]
fn disk_full_refuses_writes_cleanly_and_recovers_when_space_is_back() {
    let tmpfs = match Tmpfs::mount(TMPFS_MB) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("disk-full test skipped: cannot mount a tmpfs ({why}); it needs root");
            return;
        }
    };
    let data = tmpfs.dir.join("data");
    let filler = tmpfs.dir.join("filler");
    let mut server = ServerProcess::builder(BIN)
        .data_dir(&data)
        .args([
            "--refresh-interval",
            "200ms",
            "--heap-mb",
            "16",
            "--drain-delay",
            "0s",
        ])
        .start()
        .unwrap_or_else(|e| panic!("server did not start: {e}"));
    let addr = server.addr();
    let (status, body) = send(addr, "POST", "/v1/indexes", br#"{"name":"x"}"#).unwrap();
    assert_eq!(status, 201, "{body}");

    let filled = fill(&filler, HEADROOM);
    eprintln!(
        "disk-full test: tmpfs of {TMPFS_MB} MiB, filler of {} MiB, {} MiB left",
        filled >> 20,
        HEADROOM >> 20
    );

    // Phase 1: write until the disk is full and stays full for a while.
    let shared = Arc::new(Shared {
        tally: Mutex::new(Tally::default()),
        stop: AtomicBool::new(false),
        searches_ok: AtomicU64::new(0),
        searches_bad: Mutex::new(Vec::new()),
    });
    let mut threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let s = shared.clone();
            std::thread::spawn(move || writer(addr, c, s))
        })
        .collect();
    {
        let s = shared.clone();
        threads.push(std::thread::spawn(move || searcher(addr, s)));
    }
    let started = Instant::now();
    let mut disk_check_failed = None;
    let mut refused_since: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let refused = {
            let t = shared.tally.lock().unwrap();
            assert!(t.bad.is_empty(), "while filling: {:?}", t.bad);
            t.full_507 + t.unavailable_503
        };
        if refused > 0 && refused_since.is_none() {
            refused_since = Some(Instant::now());
        }
        if refused > 0 && disk_check_failed.is_none() {
            let (status, check, detail) = readyz_check(addr, "disk");
            if status == 503 && check == "fail" {
                disk_check_failed = Some(detail);
            }
        }
        // Full for 5 s (writes keep being refused, commits keep failing) and /readyz said so.
        if refused_since.is_some_and(|t| t.elapsed() > Duration::from_secs(5))
            && disk_check_failed.is_some()
        {
            break;
        }
        assert!(
            started.elapsed() < PHASE,
            "the disk never filled up (or /readyz never reported it: {disk_check_failed:?}) \
             within {PHASE:?}"
        );
    }
    let (ok_full, e507, e503, acked_full) = {
        let t = shared.tally.lock().unwrap();
        (t.ok, t.full_507, t.unavailable_503, t.acked.len())
    };
    let (_, writers_check, writers_detail) = readyz_check(addr, "writers");
    eprintln!(
        "disk-full test: full after {:.1}s: {ok_full} writes acknowledged ({acked_full} docs), \
         {e507} refused with 507, {e503} with 503; /readyz disk check: {}; writers check: \
         {writers_check} ({writers_detail})",
        refused_since.unwrap().duration_since(started).as_secs_f64(),
        disk_check_failed.as_deref().unwrap_or("-"),
    );

    // Phase 2: space comes back; writes must resume without a restart.
    fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let ok_before = shared.tally.lock().unwrap().ok;
    let resumed = loop {
        std::thread::sleep(Duration::from_millis(50));
        let t = shared.tally.lock().unwrap();
        assert!(t.bad.is_empty(), "after freeing space: {:?}", t.bad);
        let fresh_ok = t.ok > ok_before && t.last_refused.is_none_or(|r| r < freed);
        if fresh_ok || t.ok >= ok_before + 5 {
            break freed.elapsed();
        }
        assert!(
            freed.elapsed() < PHASE,
            "writes did not resume within {PHASE:?} of freeing space"
        );
    };
    // Keep writing a little, then wait for /readyz to be all green again (the commit that
    // failed while the disk was full has gone through).
    std::thread::sleep(Duration::from_secs(1));
    let ready_again = loop {
        let (status, _) = send(addr, "GET", "/readyz", &[]).unwrap();
        if status == 200 {
            break freed.elapsed();
        }
        let (_, w, wd) = readyz_check(addr, "writers");
        assert!(
            freed.elapsed() < PHASE,
            "/readyz still 503 {PHASE:?} after freeing space (writers: {w} {wd})"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client thread");
    }
    let tally = std::mem::take(&mut *shared.tally.lock().unwrap());
    assert!(tally.bad.is_empty(), "{:?}", tally.bad);
    let bad_searches = shared.searches_bad.lock().unwrap().clone();
    assert!(
        bad_searches.is_empty(),
        "searches must keep answering while the disk is full: {:?}",
        &bad_searches[..bad_searches.len().min(5)]
    );
    let searches = shared.searches_ok.load(Ordering::Relaxed);
    assert!(searches > 0);

    // Every acknowledged write is there: live, after SIGKILL, after SIGTERM.
    let (status, body) = send(addr, "POST", "/v1/indexes/x/commit", &[]).unwrap();
    assert_eq!(status, 200, "{body}");
    verify(addr, &tally.acked, "live, after space came back");
    server.signal(Signal::Kill).unwrap();
    server.wait_exit(TIMEOUT).expect("SIGKILL ends the process");
    server
        .restart()
        .unwrap_or_else(|e| panic!("restart after SIGKILL: {e}"));
    verify(server.addr(), &tally.acked, "after SIGKILL and restart");
    let stderr = server.stderr_text();
    assert!(
        !stderr.contains("torn final record"),
        "the log held a garbage tail after the disk-full episode:\n{stderr}"
    );
    server.signal(Signal::Term).unwrap();
    let exit = server.wait_exit(TIMEOUT).expect("SIGTERM ends the process");
    assert!(exit.success(), "clean exit after SIGTERM: {exit:?}");
    server
        .restart()
        .unwrap_or_else(|e| panic!("restart after SIGTERM: {e}"));
    verify(server.addr(), &tally.acked, "after SIGTERM and restart");
    server.signal(Signal::Term).unwrap();
    server.wait_exit(TIMEOUT).expect("clean exit");
    drop(server);

    eprintln!(
        "disk-full test: {} writes acknowledged ({} docs), {} refused with 507, {} with 503, \
         0 with 500, 0 hung; {searches} searches all 200; writes resumed {:.1}s after space \
         came back, /readyz 200 after {:.1}s; every acknowledged document present live, after \
         SIGKILL and after SIGTERM",
        tally.ok,
        tally.acked.len(),
        tally.full_507,
        tally.unavailable_503,
        resumed.as_secs_f64(),
        ready_again.as_secs_f64()
    );
    drop(tmpfs);
}
