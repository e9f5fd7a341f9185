//! `ironsift bench-http --scenario` against a real `ironsift serve` child: the short forms of
//! `concurrency` and `exhaustion` run, pass their bars, and write both reports with the fields
//! tools read. Loopback only; every run is bounded (the scenarios cap themselves, and the
//! child is killed after a limit).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::ServerProcess;
use testkit::corpus::{CorpusConfig, Generator};

const BIN: &str = env!("CARGO_BIN_EXE_ironsift");

/// A server on a fresh data folder holding `docs` generated documents in the default index
/// (the folder goes with the returned `TempDir`).
fn server_with_corpus(docs: usize) -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let jsonl = dir.path().join("docs.jsonl");
    std::fs::write(
        &jsonl,
        Generator::new(CorpusConfig {
            max_words: 300,
            ..CorpusConfig::default()
        })
        .jsonl(docs),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--data")
        .arg(&data)
        .arg("add")
        .arg(&jsonl)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = ServerProcess::builder(BIN)
        .data_dir(&data)
        .args(["--log-level", "warn"])
        .start()
        .unwrap_or_else(|e| panic!("server did not start: {e}"));
    (dir, server)
}

/// Runs a quick scenario; its exit code, stderr and the parsed JSON report.
fn scenario(server: &ServerProcess, name: &str, reports: &Path) -> (Option<i32>, String, Value) {
    let dir = reports.join(name);
    let mut child = Command::new(BIN)
        .args([
            "bench-http",
            "--url",
            &server.url(""),
            "--scenario",
            name,
            "--quick",
        ])
        .arg("--report-dir")
        .arg(&dir)
        .arg("--pid")
        .arg(server.pid().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bench-http {name} ran for more than 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = reader.join().unwrap();
    let html = dir.join("report.html");
    let json = dir.join("report.json");
    assert!(
        html.is_file() && json.is_file(),
        "no reports in {}: {err}",
        dir.display()
    );
    assert!(
        err.contains(&html.display().to_string()),
        "paths printed: {err}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.starts_with("<!doctype html>") && page.contains("<svg"),
        "{name}: html"
    );
    assert!(
        !page.contains("<script") && !page.contains("http-equiv") && !page.contains("<link"),
        "self-contained"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (status.code(), err, report)
}

fn check_fields(r: &Value, name: &str) {
    assert_eq!(r["schema"], "ironsift-load-report/1");
    assert_eq!(r["scenario"], name);
    assert_eq!(r["quick"], true);
    for k in [
        "requests",
        "ok",
        "shed",
        "shed_with_retry_after",
        "errors",
        "timeouts",
    ] {
        assert!(r["totals"][k].is_u64(), "{name}: totals.{k} in {r}");
    }
    for class in ["responses", "ok", "shed", "error", "timeout"] {
        for p in ["count", "p50_us", "p99_us", "max_us"] {
            assert!(
                r["latency"][class][p].is_u64(),
                "{name}: latency.{class}.{p}"
            );
        }
    }
    assert!(r["rps"].as_f64().unwrap() > 0.0);
    let bars = r["bars"].as_array().unwrap();
    assert!(!bars.is_empty());
    for b in bars {
        assert!(b["name"].is_string() && b["target"].is_string() && b["pass"].is_boolean());
    }
    let series = r["series"].as_array().unwrap();
    assert!(!series.is_empty());
    for k in [
        "t",
        "ok",
        "shed",
        "errors",
        "timeouts",
        "ok_p50_us",
        "ok_p99_us",
        "users",
    ] {
        assert!(series[0][k].is_number(), "{name}: series[].{k}");
    }
    assert!(
        series.iter().any(|s| s["rss_kib"].is_u64()),
        "{name}: memory sampled with --pid"
    );
    assert!(
        r["phases"].as_array().unwrap().len() >= 2,
        "warm-up and load"
    );
    assert!(r["probe"]["latency"]["count"].as_u64().unwrap() > 0);
}

#[test]
fn quick_concurrency_and_exhaustion_pass_and_write_reports() {
    let (_data, server) = server_with_corpus(2_000);
    let reports = tempfile::tempdir().unwrap();

    let (code, err, r) = scenario(&server, "concurrency", reports.path());
    check_fields(&r, "concurrency");
    let t = &r["totals"];
    // 250 users × 4 queries, every one answered (ok or shed).
    assert_eq!(t["requests"], 1_000, "{err}");
    assert_eq!(t["timeouts"], 0, "{err}");
    assert_eq!(code, Some(0), "bars pass: {err}");
    assert_eq!(r["pass"], true);

    let (code, err, r) = scenario(&server, "exhaustion", reports.path());
    check_fields(&r, "exhaustion");
    let t = &r["totals"];
    assert_eq!(t["requests"], 2_000, "{err}");
    assert_eq!(t["timeouts"], 0, "{err}");
    assert_eq!(
        t["ok"].as_u64().unwrap() + t["shed"].as_u64().unwrap() + t["errors"].as_u64().unwrap(),
        2_000
    );
    assert_eq!(code, Some(0), "bars pass: {err}");
}
