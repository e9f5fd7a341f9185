//! The `ironsift` binary as a user runs it: real processes, real folders, exit codes and output.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ironsift");

fn ironsift(data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("IRONSIFT_INDEX")
        .env_remove("IRONSIFT_DATA")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `dir/docs.jsonl` with `n` documents `{"id":i,"text":"word<i> common"}`.
fn jsonl(dir: &Path, n: usize) -> std::path::PathBuf {
    let file = dir.join("docs.jsonl");
    let lines: String = (0..n)
        .map(|i| format!("{{\"id\":{i},\"text\":\"word{i} common\"}}\n"))
        .collect();
    fs::write(&file, lines).unwrap();
    file
}

/// Asserts a failed run printed exactly one readable line on stderr mentioning `needle`.
fn assert_one_line_error(o: &Output, needle: &str) {
    assert!(
        !o.status.success(),
        "expected failure, got {:?}: {}",
        o.status,
        stdout(o)
    );
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "stderr: {err}");
    assert!(err.starts_with("ironsift: error: "), "stderr: {err}");
    assert!(err.contains(needle), "stderr {err:?} lacks {needle:?}");
}

#[test]
fn index_then_search_a_folder() {
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    fs::write(
        src.path().join("a.txt"),
        "first line\nsecond line\nthe walrus sings\n",
    )
    .unwrap();
    fs::create_dir(src.path().join("lib")).unwrap();
    fs::write(src.path().join("lib/b.rs"), "fn walrus() {}\n").unwrap();
    fs::write(src.path().join("blob"), b"\0\0walrus").unwrap();

    let o = ironsift(data.path(), &["index", src.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("indexed 2 files"), "{out}");
    assert!(out.contains("1 skipped (1 binary"), "{out}");

    let o = ironsift(data.path(), &["search", "walrus sings"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let first = out.lines().next().unwrap();
    assert!(first.starts_with("a.txt:3  ("), "{out}");
    assert!(out.contains("the **walrus** **sings**"), "{out}");
    assert!(out.contains("hits 1-2 of 2"), "{out}");

    let o = ironsift(data.path(), &["search", "walrus", "--json", "-n", "1"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["total"], 2);
    assert_eq!(v["hits"].as_array().unwrap().len(), 1);
    assert!(v["took_ms"].as_f64().is_some());

    // Unchanged folder: nothing re-read.
    let o = ironsift(data.path(), &["index", src.path().to_str().unwrap()]);
    assert!(stdout(&o).contains("indexed 0 files"), "{}", stdout(&o));
    assert!(stdout(&o).contains("2 unchanged"), "{}", stdout(&o));

    let o = ironsift(data.path(), &["stats", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["name"], "default");
    assert_eq!(v[0]["kind"], "files");
    assert_eq!(v[0]["docs"], 2);
    let o = ironsift(data.path(), &["stats"]);
    assert!(stdout(&o).contains("default"), "{}", stdout(&o));
}

#[test]
fn add_json_lines_get_and_delete() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("in.jsonl");
    fs::write(
        &file,
        "{\"id\":\"k1\",\"title\":\"kernel scheduler\"}\nnot json\n{\"id\":\"k2\",\"title\":\"memory allocator\"}\n",
    )
    .unwrap();
    let o = ironsift(
        data.path(),
        &["--index", "docs", "add", file.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(3), "partial batch exit code");
    assert!(
        stderr(&o).starts_with("line 2: invalid document: malformed JSON"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("added 2 documents"), "{}", stdout(&o));

    // stdin
    let mut child = Command::new(BIN)
        .args([
            "--data",
            data.path().to_str().unwrap(),
            "-i",
            "docs",
            "add",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"id\":\"k3\",\"title\":\"scheduler latency\"}\n")
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());

    let o = ironsift(
        data.path(),
        &["-i", "docs", "search", "scheduler", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["total"], 2);

    let o = ironsift(data.path(), &["-i", "docs", "get", "k2"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["title"], "memory allocator");

    let o = ironsift(data.path(), &["-i", "docs", "delete", "k2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_one_line_error(
        &ironsift(data.path(), &["-i", "docs", "get", "k2"]),
        "not found",
    );
    assert_one_line_error(
        &ironsift(data.path(), &["-i", "docs", "delete", "k2"]),
        "not found",
    );

    // Explicit schema from a file.
    let schema = data.path().join("schema.json");
    fs::write(
        &schema,
        r#"{"fields":[{"name":"title","type":"text"},{"name":"year","type":"u64"}]}"#,
    )
    .unwrap();
    let o = ironsift(
        data.path(),
        &[
            "create-index",
            "typed",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ironsift(data.path(), &["delete-index", "typed"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn errors_are_one_readable_line() {
    let data = tempfile::tempdir().unwrap();
    assert_one_line_error(
        &ironsift(data.path(), &["search", "x"]),
        "index \"default\" not found",
    );
    assert_one_line_error(
        &ironsift(data.path(), &["index", "/no/such/folder"]),
        "/no/such/folder",
    );
    assert_one_line_error(
        &ironsift(data.path(), &["-i", "../etc", "stats"]),
        "invalid index name",
    );
    assert_one_line_error(
        &ironsift(data.path(), &["delete-index", "nope"]),
        "not found",
    );
    assert_one_line_error(
        &ironsift(data.path(), &["add", "/no/such.jsonl"]),
        "cannot open /no/such.jsonl",
    );
    let bad_schema = data.path().join("s.json");
    fs::write(&bad_schema, r#"{"fields":[{"name":"id","type":"text"}]}"#).unwrap();
    assert_one_line_error(
        &ironsift(
            data.path(),
            &[
                "create-index",
                "x",
                "--schema",
                bad_schema.to_str().unwrap(),
            ],
        ),
        "reserved",
    );

    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("a.txt"), "hello").unwrap();
    assert!(
        ironsift(data.path(), &["index", src.path().to_str().unwrap()])
            .status
            .success()
    );
    assert_one_line_error(
        &ironsift(data.path(), &["search", "hello \"world"]),
        "at byte",
    );
    assert_one_line_error(
        &ironsift(data.path(), &["search", "x", "-n", "5000"]),
        "limit",
    );
    assert_one_line_error(&ironsift(data.path(), &["add", "-"]), "files index");
    let o = ironsift(data.path(), &["search", "-hello"]);
    assert!(
        o.status.success(),
        "a negative query is a query: {}",
        stderr(&o)
    );

    let o = Command::new(BIN).arg("--help").output().unwrap();
    assert!(o.status.success());
    let o = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_second_writer_process_fails_fast_naming_the_lock() {
    let data = tempfile::tempdir().unwrap();
    let engine = ironsift::Engine::builder()
        .data_dir(data.path())
        .build()
        .unwrap();
    let idx = engine
        .open_or_create("default", ironsift::IndexKind::Documents)
        .unwrap();
    idx.upsert(serde_json::json!({"id": "held"})).unwrap(); // opens and holds the writer
    let file = data.path().join("one.jsonl");
    fs::write(&file, "{\"id\":\"x\"}\n").unwrap();
    let started = std::time::Instant::now();
    let o = ironsift(data.path(), &["add", file.to_str().unwrap()]);
    assert!(started.elapsed().as_secs() < 10, "the second writer waited");
    assert_one_line_error(&o, ".tantivy-writer.lock");
    // Reading works meanwhile.
    assert!(ironsift(data.path(), &["search", ""]).status.success());
    // Deleting the index is refused too: it would pull the files from under the writer.
    let o = ironsift(data.path(), &["delete-index", "default"]);
    assert_one_line_error(&o, ".tantivy-writer.lock");
    assert!(data.path().join("default").is_dir());
    drop(idx);
    drop(engine);
    assert!(
        ironsift(data.path(), &["delete-index", "default"])
            .status
            .success()
    );
}

/// Commands check an index before using it: a damaged one is refused with exit 4 and one
/// line naming the file, never a panic or a wrong answer; `stats` still lists the others.
#[test]
fn commands_refuse_a_damaged_index_and_stats_lists_the_rest() {
    let data = tempfile::tempdir().unwrap();
    let file = jsonl(data.path(), 500);
    for name in ["bad", "good"] {
        let o = ironsift(data.path(), &["-i", name, "add", file.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let seg = fs::read_dir(data.path().join("bad/index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "idx"))
        .unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&seg, bytes).unwrap();
    for args in [
        &["-i", "bad", "search", "common"][..],
        &["-i", "bad", "get", "7"],
        &["-i", "bad", "delete", "7"],
        &["-i", "bad", "add", file.to_str().unwrap()],
        &["-i", "bad", "stats"],
    ] {
        let o = ironsift(data.path(), args);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {}", stderr(&o));
        assert_one_line_error(&o, "ironsift repair --index bad");
        assert!(stderr(&o).contains(".idx"), "{}", stderr(&o));
    }
    let o = ironsift(data.path(), &["stats"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("good") && out.contains("500"), "{out}");
    assert!(out.contains("bad") && out.contains("damaged"), "{out}");
    // The healthy index is untouched by all of it.
    let o = ironsift(data.path(), &["-i", "good", "search", "common", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Output to a reader that went away ends quietly; a full disk is one error line.
#[test]
fn closed_pipes_and_full_disks_are_not_panics() {
    let data = tempfile::tempdir().unwrap();
    let file = jsonl(data.path(), 2000);
    assert!(
        ironsift(data.path(), &["add", file.to_str().unwrap()])
            .status
            .success()
    );
    for args in [
        &["search", "common", "-n", "1000", "--json"][..],
        &["search", "common", "-n", "1000"],
        &["stats", "--json"],
    ] {
        let mut child = Command::new(BIN)
            .arg("--data")
            .arg(data.path())
            .args(args)
            .env_remove("IRONSIFT_INDEX")
            .env_remove("IRONSIFT_DATA")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away at once
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
    if Path::new("/dev/full").exists() {
        let o = Command::new(BIN)
            .arg("--data")
            .arg(data.path())
            .args(["get", "5"])
            .env_remove("IRONSIFT_INDEX")
            .env_remove("IRONSIFT_DATA")
            .stdout(fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        assert_one_line_error(&o, "cannot write the output");
    }
}

/// The data folder inside the indexed tree is not indexed (`cd project; ironsift index .`).
#[test]
fn the_data_folder_is_not_indexed() {
    let tree = tempfile::tempdir().unwrap();
    fs::write(tree.path().join("a.txt"), "project words\n").unwrap();
    let data = tree.path().join("ironsift-data");
    for _ in 0..2 {
        let o = ironsift(&data, &["index", tree.path().to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = ironsift(&data, &["index", tree.path().to_str().unwrap()]);
    assert!(stdout(&o).contains("indexed 0 files"), "{}", stdout(&o));
    let o = ironsift(&data, &["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(stats[0]["docs"], 1, "{stats}");
}

fn euid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn unreadable_files_are_warnings_and_the_rest_is_indexed() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("open.txt"), "visible heron").unwrap();
    fs::write(src.path().join("secret.txt"), "hidden heron").unwrap();
    fs::set_permissions(
        src.path().join("secret.txt"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    fs::create_dir(src.path().join("locked")).unwrap();
    fs::write(src.path().join("locked/inner.txt"), "inner heron").unwrap();
    for d in [data.path(), src.path()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
    }
    // Permission bits do not bind root, so run the indexer as `nobody` when we are root.
    // The checkout may sit under a folder `nobody` cannot enter (e.g. /root), so the binary is
    // copied somewhere it can.
    let bin_dir = tempfile::tempdir().unwrap();
    let index = || {
        let mut cmd = if euid() == 0 {
            fs::set_permissions(bin_dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
            let bin = bin_dir.path().join("ironsift");
            if !bin.exists() {
                fs::copy(BIN, &bin).unwrap();
            }
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(bin);
            c
        } else {
            Command::new(BIN)
        };
        cmd.args([
            "--data",
            data.path().to_str().unwrap(),
            "index",
            src.path().to_str().unwrap(),
        ])
        .output()
        .unwrap()
    };
    let o = index();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(stdout(&o).contains("indexed 2 files"), "{}", stdout(&o));
    assert!(stdout(&o).contains("1 failed"), "{}", stdout(&o));
    assert!(
        err.contains("secret.txt: could not read: Permission denied"),
        "{err}"
    );
    // The folder becomes unreadable: its files stay in the index (a transient error must not
    // delete them), and the folder is named.
    fs::set_permissions(src.path().join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    let o = index();
    let err = stderr(&o);
    fs::set_permissions(src.path().join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("locked"), "{err}");
    assert!(stdout(&o).contains("0 removed"), "{}", stdout(&o));
    let found = ironsift(data.path(), &["search", "inner", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(v["total"], 1, "{v}");
}

/// A data folder on a read-only file system (a mounted backup): `verify` checks it and finds
/// it sound (it does not call a lock it cannot take damage), other commands say why they
/// cannot open it in one line. Needs root to mount a tmpfs; skipped otherwise.
#[test]
fn a_read_only_data_folder_is_not_called_damaged() {
    if euid() != 0 {
        eprintln!("skipped: needs root to mount a read-only tmpfs");
        return;
    }
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().to_str().unwrap();
    let ok = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .status()
            .unwrap()
            .success()
    };
    if !ok(&["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", m]) {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    let data = mnt.path().join("d");
    let file = mnt.path().join("docs.jsonl");
    fs::write(&file, "{\"id\":1,\"text\":\"hello\"}\n").unwrap();
    let added = ironsift(&data, &["add", file.to_str().unwrap()]);
    let remounted = ok(&["mount", "-o", "remount,ro", m]);
    let verify = ironsift(&data, &["verify"]);
    let search = ironsift(&data, &["search", "hello"]);
    assert!(ok(&["umount", m]));
    assert!(added.status.success(), "{}", stderr(&added));
    assert!(remounted);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}{}",
        stdout(&verify),
        stderr(&verify)
    );
    assert_one_line_error(&search, "read-only");
}
