//! Fault injection through the fail points (`search_core::faults`): each one fires in a real
//! index in a temp folder, and the test checks what the fault must not break — acknowledged
//! writes survive (also across a reopen), the index stays sound (`verify`), and the next
//! operation works once the fault is gone.
//!
//! Fail-point state is process-global, so these tests live in their own binary (built only
//! with `--features failpoints`, run by `cargo xtask verify`) and each holds a `FailScenario`,
//! which serializes them and clears every fail point when dropped.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use fail::FailScenario;
use search_core::faults::{
    COMMIT_BEFORE, COMMIT_PREPARED, DIR_WRITE, MERGE, SEARCH_EXECUTE, WAL_APPEND, WAL_FSYNC,
};
use search_core::{
    Catalog, CoreError, IndexConfig, IndexKind, SearchIndex, SearchRequest, tantivy,
};
use search_error::{Classify, ErrorCode};
use serde_json::json;

/// One writer thread, so each commit makes exactly one segment (merges are then predictable).
fn catalog(root: &Path) -> Catalog {
    let config = IndexConfig {
        writer_heap_bytes: 32 << 20,
        writer_threads: Some(1),
        ..IndexConfig::default()
    };
    Catalog::with_config(root, config).unwrap()
}

fn upsert(idx: &SearchIndex, id: &str) {
    idx.upsert(json!({"id": id, "text": format!("words of {id}")}))
        .unwrap_or_else(|e| panic!("upsert {id}: {e}"));
}

/// Every acknowledged id is found, nothing else is there, and the index checks clean.
fn assert_holds(idx: &SearchIndex, expect: &BTreeSet<String>) {
    for id in expect {
        assert!(idx.get(id).unwrap().is_some(), "{id} lost");
    }
    assert_eq!(idx.stats().unwrap().docs, expect.len() as u64);
    let report = idx.verify();
    assert!(report.is_sound(), "{:?}", report.damaged);
}

/// Opens the index again from disk (a restart), replays the log, and checks it.
fn reopen_and_check(root: &Path, expect: &BTreeSet<String>) {
    let idx = catalog(root).open_index("d").unwrap();
    idx.recover().unwrap();
    assert_holds(&idx, expect);
}

fn ids(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("doc{i}")).collect()
}

#[test]
fn a_failed_log_append_is_not_acknowledged_and_later_writes_work() {
    let _fp = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let idx = catalog(dir.path())
        .create("d", IndexKind::Documents, None)
        .unwrap();
    let expect = ids(0..3);
    for id in &expect {
        upsert(&idx, id);
    }
    fail::cfg(WAL_APPEND, "return(28)").unwrap();
    let err = idx
        .upsert(json!({"id": "lost", "text": "never"}))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageFull, "{err}");
    fail::remove(WAL_APPEND);
    let mut expect = expect;
    upsert(&idx, "after");
    expect.insert("after".into());
    idx.commit().unwrap();
    // Nothing of the refused write reached the log or the index.
    assert!(idx.get("lost").unwrap().is_none());
    assert_holds(&idx, &expect);
    drop(idx);
    reopen_and_check(dir.path(), &expect);
}

#[test]
fn a_failed_log_fsync_fails_the_write_and_later_writes_work() {
    let _fp = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let idx = catalog(dir.path())
        .create("d", IndexKind::Documents, None)
        .unwrap();
    let mut expect = ids(0..3);
    for id in &expect {
        upsert(&idx, id);
    }
    fail::cfg(WAL_FSYNC, "1*return").unwrap();
    let err = idx
        .upsert(json!({"id": "unsynced", "text": "maybe"}))
        .unwrap_err();
    assert!(
        matches!(err, CoreError::WalSync { errno: Some(5), .. }),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert!(err.is_retryable());
    // `1*`: the fault fired once; the retry goes through.
    upsert(&idx, "unsynced");
    expect.insert("unsynced".into());
    idx.commit().unwrap();
    assert_holds(&idx, &expect);
    drop(idx);
    reopen_and_check(dir.path(), &expect);
}

/// A commit failing before or after Tantivy's `prepare_commit`, by error or panic: the commit
/// reports it, the writer is reopened from the log on next use, and every acknowledged write
/// is there — after the next commit, and after a restart without one.
#[test]
fn a_failed_commit_loses_no_acknowledged_write() {
    for (point, action) in [
        (COMMIT_BEFORE, "return"),
        (COMMIT_PREPARED, "return"),
        (COMMIT_PREPARED, "panic(injected)"),
        // Tantivy's own fail points: writing `meta.json`, and serializing the new segment
        // (on the indexing thread: a panic there kills the writer, which is reopened).
        ("save_metas", "return(injected by Tantivy's fail point)"),
        ("FieldSerializer::close_term", "return"),
        (
            "FieldSerializer::close_term",
            "panic(injected serializer panic)",
        ),
    ] {
        let _fp = FailScenario::setup();
        let dir = tempfile::tempdir().unwrap();
        let idx = catalog(dir.path())
            .create("d", IndexKind::Documents, None)
            .unwrap();
        let mut expect = ids(0..5);
        for id in &expect {
            upsert(&idx, id);
        }
        idx.commit().unwrap();
        for id in ids(5..12) {
            upsert(&idx, &id);
            expect.insert(id);
        }
        fail::cfg(point, action).unwrap();
        match catch_unwind(AssertUnwindSafe(|| idx.commit())) {
            Ok(Err(e)) => assert!(
                matches!(e.code(), ErrorCode::Io | ErrorCode::Internal),
                "{point}={action}: {e}"
            ),
            Ok(Ok(_)) => panic!("{point}={action}: the commit succeeded"),
            Err(_) => assert!(action.starts_with("panic"), "{point}={action} panicked"),
        }
        // The failed commit is not visible; the last good one still serves.
        assert_eq!(idx.stats().unwrap().docs, 5, "{point}={action}");
        fail::remove(point);

        // A restart straight after the failure: the log brings every write back.
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        reopen_and_check(copy.path(), &expect);

        // The same handle carries on: the next write and commit work.
        upsert(&idx, "after");
        expect.insert("after".into());
        idx.commit()
            .unwrap_or_else(|e| panic!("{point}={action}: commit after the fault: {e}"));
        assert_holds(&idx, &expect);
        drop(idx);
        reopen_and_check(dir.path(), &expect);
    }
}

/// Disk errors while Tantivy writes a new segment's files (inside the commit), `.managed.json`
/// or `meta.json`.
#[test]
fn a_failed_directory_write_fails_the_commit_and_loses_nothing() {
    // The first write of the commit, or a later one (which one depends on when the indexing
    // thread opened the segment's files). Errors only: a panic in `.managed.json`'s write or on
    // Tantivy's segment-updater thread would take the process down (see `faults`).
    for action in ["return(28)", "3*off->return(5)", "7*off->return(5)"] {
        let _fp = FailScenario::setup();
        let dir = tempfile::tempdir().unwrap();
        let idx = catalog(dir.path())
            .create("d", IndexKind::Documents, None)
            .unwrap();
        let mut expect = BTreeSet::new();
        for id in ids(0..20) {
            upsert(&idx, &id);
            expect.insert(id);
        }
        fail::cfg(DIR_WRITE, action).unwrap();
        match catch_unwind(AssertUnwindSafe(|| idx.commit())) {
            Ok(Err(e)) => {
                if action == "return(28)" {
                    assert_eq!(e.code(), ErrorCode::StorageFull, "{e}");
                }
                assert!(!e.code().is_client_error(), "{action}: {e}");
            }
            Ok(Ok(_)) => panic!("{action}: the commit succeeded"),
            Err(_) => panic!("{action}: the commit panicked"),
        }
        fail::remove(DIR_WRITE);
        upsert(&idx, "after");
        expect.insert("after".into());
        idx.commit()
            .unwrap_or_else(|e| panic!("{action}: commit after the fault: {e}"));
        assert_holds(&idx, &expect);
        drop(idx);
        reopen_and_check(dir.path(), &expect);
    }
}

/// The disk stays full after a failed commit: reopening the writer replays the log and
/// commits, which fails again. The next writes are then refused at once (same code, no new
/// replay) for a short, growing wait; once space is back a write after the wait reopens the
/// writer and nothing acknowledged is lost.
#[test]
fn a_full_disk_is_not_retried_on_every_write() {
    let _fp = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let idx = catalog(dir.path())
        .create("d", IndexKind::Documents, None)
        .unwrap();
    let mut expect = BTreeSet::new();
    for id in ids(0..50) {
        upsert(&idx, &id);
        expect.insert(id);
    }
    fail::cfg(DIR_WRITE, "return(28)").unwrap();
    let e = idx.commit().unwrap_err();
    assert_eq!(e.code(), ErrorCode::StorageFull, "{e}");
    // This write reopens the writer: the replay's commit fails on the full disk.
    let e = idx
        .upsert(json!({"id": "refused-1", "text": "x"}))
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::StorageFull, "{e}");
    assert!(!e.to_string().contains("refused for"), "{e}");
    // The next ones are refused without replaying again.
    let started = std::time::Instant::now();
    for i in 2..20 {
        let e = idx
            .upsert(json!({"id": format!("refused-{i}"), "text": "x"}))
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::StorageFull, "{e}");
        if started.elapsed() < std::time::Duration::from_millis(200) {
            assert!(e.to_string().contains("refused for"), "{e}");
        }
    }
    fail::remove(DIR_WRITE);
    // Space is back: within the longest wait, writes are accepted again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match idx.upsert(json!({"id": "after", "text": "x"})) {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::StorageFull, "{e}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "writes did not resume: {e}"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    expect.insert("after".into());
    idx.commit().unwrap();
    assert_holds(&idx, &expect);
    drop(idx);
    reopen_and_check(dir.path(), &expect);
}

/// Merges failing (an I/O error or a panic on the merge thread while the merged segment is
/// written): Tantivy abandons the merge, the segments stay as they were, and the index is
/// sound with every document; once the fault is gone the next commit merges them.
#[test]
fn a_failed_merge_leaves_the_index_sound_and_complete() {
    for action in ["return", "panic(injected merge panic)"] {
        let _fp = FailScenario::setup();
        let dir = tempfile::tempdir().unwrap();
        let cat = catalog(dir.path());
        let idx = cat.create("d", IndexKind::Documents, None).unwrap();
        let mut expect = BTreeSet::new();
        fail::cfg(MERGE, action).unwrap();
        // One segment per commit; Tantivy's default merge policy merges 8 small segments, so
        // merges start (on the merge threads, where the fault fires) from the 8th commit on.
        let commits = 12;
        for i in 0..commits {
            let id = format!("doc{i}");
            upsert(&idx, &id);
            idx.commit().unwrap();
            expect.insert(id);
        }
        // Waits for the merges in flight (which all fail).
        idx.commit_and_close().unwrap();
        assert_eq!(
            idx.stats().unwrap().segments,
            commits,
            "{action}: a merge succeeded despite the fault"
        );
        assert_holds(&idx, &expect);
        drop(idx);
        reopen_and_check(dir.path(), &expect);
        fail::remove(MERGE);

        let idx = cat.open_index("d").unwrap();
        upsert(&idx, "after");
        expect.insert("after".into());
        idx.commit_and_close().unwrap();
        let merged = idx.stats().unwrap().segments;
        assert!(
            merged < commits,
            "{action}: still {merged} segments: the merge never ran"
        );
        assert_holds(&idx, &expect);
        drop(idx);
        reopen_and_check(dir.path(), &expect);
    }
}

#[test]
fn a_failed_search_is_an_internal_error_and_the_next_search_works() {
    let _fp = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let idx = catalog(dir.path())
        .create("d", IndexKind::Documents, None)
        .unwrap();
    for id in ids(0..10) {
        upsert(&idx, &id);
    }
    idx.commit().unwrap();
    let req = SearchRequest::new("words");
    let total = |idx: &SearchIndex| idx.search(&req).unwrap().total;
    assert_eq!(total(&idx), Some(10));

    fail::cfg(SEARCH_EXECUTE, "return(injected)").unwrap();
    let err = idx.search(&req).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal, "{err}");
    assert!(err.to_string().contains(SEARCH_EXECUTE), "{err}");
    assert!(matches!(
        err,
        CoreError::Tantivy {
            source: tantivy::TantivyError::InternalError(_),
            ..
        }
    ));
    // Bad input is still judged before execution: a syntax error stays a client error.
    let bad = idx.search(&SearchRequest::new("(unclosed")).unwrap_err();
    assert_eq!(bad.code(), ErrorCode::InvalidInput);

    // A panic inside the search reaches the caller (the server's search pool contains it);
    // nothing the index shares is left broken.
    fail::cfg(SEARCH_EXECUTE, "panic(injected search panic)").unwrap();
    assert!(catch_unwind(AssertUnwindSafe(|| idx.search(&req))).is_err());

    fail::remove(SEARCH_EXECUTE);
    assert_eq!(total(&idx), Some(10));
    upsert(&idx, "after");
    idx.commit().unwrap();
    assert_eq!(total(&idx), Some(11));
}

/// Copies a live index folder, as a crash would leave it. Tantivy's own threads may delete a
/// file between the listing and the copy (files of a failed commit, or no longer needed): such
/// a file is simply not in the copy, as it would not be on disk a moment later.
fn copy_dir(from: &Path, to: &Path) {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    std::fs::create_dir_all(to).unwrap();
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if gone(&e) => return,
        Err(e) => panic!("cannot list {}: {e}", from.display()),
    };
    for e in entries {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        match e.file_type() {
            Ok(t) if t.is_dir() => copy_dir(&e.path(), &dst),
            Ok(_) => match std::fs::copy(e.path(), &dst) {
                Ok(_) => {}
                Err(err) if gone(&err) => {}
                Err(err) => panic!("cannot copy {}: {err}", e.path().display()),
            },
            Err(err) if gone(&err) => {}
            Err(err) => panic!("cannot stat {}: {err}", e.path().display()),
        }
    }
}
