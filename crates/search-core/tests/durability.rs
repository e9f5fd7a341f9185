//! Damage is detected and repaired: 50 random mutations of a committed index (flipped bytes,
//! truncated files, deleted segment files, garbled `meta.json`), each on a fresh copy: the
//! check finds every one, repair brings back every acknowledged write (snapshot + log), and
//! the log refuses mid-log damage. Real Tantivy files in temp folders.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use search_core::{Catalog, IndexKind};
use serde_json::{Value, json};
use testkit::rng::Rng;

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// Builds a documents index with several commits, deletes, a snapshot in the middle and
/// acknowledged writes after it (only in the log and later commits). Returns the expected
/// documents (id → version).
fn build(root: &Path) -> BTreeMap<String, u64> {
    let cat = Catalog::open(root).unwrap();
    let idx = cat.create("d", IndexKind::Documents, None).unwrap();
    let mut expect = BTreeMap::new();
    let mut v = 0;
    for round in 0..6 {
        for i in 0..40 {
            v += 1;
            let id = format!("doc{}", (i * 7 + round * 3) % 90);
            idx.upsert(json!({"id": id, "v": v, "text": format!("round {round} words {i}")}))
                .unwrap();
            expect.insert(id, v);
        }
        for i in 0..3 {
            let id = format!("doc{}", (round * 11 + i) % 90);
            idx.delete(&id).unwrap();
            expect.remove(&id);
        }
        idx.commit().unwrap();
        if round == 2 {
            idx.snapshot().unwrap();
        }
    }
    // Acknowledged but not committed: only in the log.
    for i in 0..5 {
        v += 1;
        let id = format!("late{i}");
        idx.upsert(json!({"id": id, "v": v, "text": "late words"}))
            .unwrap();
        expect.insert(id, v);
    }
    drop(idx);
    expect
}

fn check_all(root: &Path, expect: &BTreeMap<String, u64>) {
    let cat = Catalog::open(root).unwrap();
    let idx = cat.open_index("d").unwrap();
    idx.recover().unwrap();
    for (id, v) in expect {
        let doc = idx.get(id).unwrap().unwrap_or_else(|| panic!("{id} lost"));
        assert_eq!(doc["v"], json!(v), "{id}: {doc}");
    }
    assert_eq!(idx.stats().unwrap().docs, expect.len() as u64);
}

/// The files of the segments the last commit names (files of merged-away segments that
/// Tantivy has not collected yet are not part of the index).
fn segment_files(tdir: &Path) -> Vec<PathBuf> {
    let meta = fs::read_to_string(tdir.join("meta.json"))
        .unwrap()
        .replace('-', "");
    let mut v: Vec<PathBuf> = fs::read_dir(tdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            !n.starts_with('.')
                && n != "meta.json"
                && !n.ends_with(".lock")
                && meta.contains(n.split('.').next().unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_mutation_is_detected_and_repaired() {
    let base = tempfile::tempdir().unwrap();
    let expect = build(base.path());
    let report = Catalog::open(base.path()).unwrap().verify("d").unwrap();
    assert!(
        report.is_sound(),
        "a sound index must verify clean: {report:?}"
    );
    assert!(report.files_checked > 6);

    let seed = std::env::var("IRONSIFT_MUTATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let mut rng = Rng(seed);
    let mut detected = 0;
    let mut repaired = 0;
    let mut undetected_harmless = 0;
    let mut kinds = BTreeMap::new();
    for round in 0..50 {
        let work = tempfile::tempdir().unwrap();
        copy_dir(base.path(), work.path());
        let tdir = work.path().join("d").join("index");
        let files = segment_files(&tdir);
        let kind = ["flip", "truncate", "delete", "garble-meta"][round % 4];
        let what = match kind {
            "flip" => {
                let f = &files[rng.below(files.len())];
                let mut bytes = fs::read(f).unwrap();
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 << rng.below(8);
                fs::write(f, bytes).unwrap();
                format!("flipped a bit at byte {at} of {}", f.display())
            }
            "truncate" => {
                let f = &files[rng.below(files.len())];
                let len = fs::metadata(f).unwrap().len() as usize;
                let to = rng.below(len);
                fs::OpenOptions::new()
                    .write(true)
                    .open(f)
                    .unwrap()
                    .set_len(to as u64)
                    .unwrap();
                format!("truncated {} from {len} to {to} bytes", f.display())
            }
            "delete" => {
                let f = &files[rng.below(files.len())];
                fs::remove_file(f).unwrap();
                format!("deleted {}", f.display())
            }
            _ => {
                let meta = tdir.join("meta.json");
                let mut bytes = fs::read(&meta).unwrap();
                let n = bytes.len();
                match rng.below(3) {
                    0 => bytes.truncate(rng.below(n)),
                    1 => bytes[rng.below(n)] = b'\x00',
                    _ => bytes = b"{\"garbage\": true}".to_vec(),
                }
                fs::write(&meta, bytes).unwrap();
                "garbled meta.json".to_string()
            }
        };
        let cat = Catalog::open(work.path()).unwrap();
        let report = cat.verify("d").unwrap();
        if report.is_sound() {
            // A NUL written over a byte that already was NUL changes nothing: not a mutation.
            let unchanged = kind == "garble-meta"
                && fs::read(tdir.join("meta.json")).unwrap()
                    == fs::read(base.path().join("d/index/meta.json")).unwrap();
            if !unchanged {
                // Tantivy's checksum does not cover the version text in each file's footer:
                // a flip there goes unseen. It must then be harmless: every answer intact.
                check_all(work.path(), &expect);
                eprintln!(
                    "round {round}: {what}: not detected, and harmless (every document intact)"
                );
                undetected_harmless += 1;
            }
            continue;
        }
        detected += 1;
        *kinds.entry(kind).or_insert(0) += 1;
        let fixed = cat
            .repair("d")
            .unwrap_or_else(|e| panic!("round {round}: {what}: repair failed: {e}"));
        assert!(
            fixed.after.is_sound(),
            "round {round}: {what}: {:?}",
            fixed.after
        );
        assert!(
            fixed
                .damaged_kept_at
                .as_ref()
                .unwrap()
                .join("index")
                .exists(),
            "damaged files are kept"
        );
        check_all(work.path(), &expect);
        repaired += 1;
    }
    eprintln!(
        "mutations: 50, detected {detected}, repaired {repaired} ({kinds:?}); \
         {undetected_harmless} undetected but harmless"
    );
    assert_eq!(detected, repaired);
    assert!(detected >= 45, "too few mutations were real damage");
}

#[test]
fn a_damaged_log_record_before_good_ones_is_refused_not_skipped() {
    let base = tempfile::tempdir().unwrap();
    let cat = Catalog::open(base.path()).unwrap();
    let idx = cat.create("d", IndexKind::Documents, None).unwrap();
    for i in 0..20 {
        idx.upsert(json!({"id": i, "text": "x"})).unwrap();
    }
    drop(idx);
    let wal = base.path().join("d/wal");
    let seg = fs::read_dir(&wal).unwrap().next().unwrap().unwrap().path();
    let mut bytes = fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&seg, bytes).unwrap();
    let report = cat.verify("d").unwrap();
    assert!(!report.is_sound());
    assert!(
        report.summary().contains("write-ahead log"),
        "{}",
        report.summary()
    );
    let idx = cat.open_index("d").unwrap();
    let err = idx.upsert(json!({"id": "new"})).unwrap_err();
    assert_eq!(
        search_error::Classify::code(&err),
        search_error::ErrorCode::DataCorruption,
        "{err}"
    );
    // Repair refuses rather than dropping acknowledged writes.
    drop(idx);
    let err = cat.repair("d").unwrap_err();
    assert!(err.to_string().contains("write-ahead log"), "{err}");
}

#[test]
fn snapshots_are_independent_copies_and_restore_replays_the_log() {
    let base = tempfile::tempdir().unwrap();
    let cat = Catalog::open(base.path()).unwrap();
    let idx = cat.create("d", IndexKind::Documents, None).unwrap();
    idx.upsert(json!({"id": "a", "v": 1})).unwrap();
    let s1 = idx.snapshot().unwrap();
    assert_eq!(s1.docs, 1);
    assert!(s1.copied_bytes > 0);
    idx.upsert(json!({"id": "b", "v": 2})).unwrap();
    let s2 = idx.snapshot().unwrap();
    assert_eq!(s2.docs, 2);
    // The second snapshot copied only the new segment (plus meta.json).
    assert!(s2.copied_bytes < s2.bytes, "{s2:?}");
    idx.upsert(json!({"id": "c", "v": 3})).unwrap(); // in the log only
    // Snapshot files do not share inodes with the live index.
    use std::os::unix::fs::MetadataExt;
    for f in &s2.files {
        let live = base.path().join("d/index").join(&f.name);
        let snap = base.path().join("d/snapshots").join(&s2.id).join(&f.name);
        if live.exists() && f.name != "meta.json" {
            assert_ne!(
                fs::metadata(live).unwrap().ino(),
                fs::metadata(snap).unwrap().ino()
            );
        }
    }
    let listed: Vec<String> = idx.snapshots().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(listed, [s1.id.clone(), s2.id.clone()]);
    assert_eq!(idx.prune_snapshots(1).unwrap(), 1);
    assert_eq!(idx.snapshots().unwrap().len(), 1);
    drop(idx);
    let report = cat.restore("d", None).unwrap();
    assert_eq!(report.replayed, 1, "{report:?}");
    let idx = cat.open_index("d").unwrap();
    for (id, v) in [("a", 1), ("b", 2), ("c", 3)] {
        assert_eq!(idx.get(id).unwrap().unwrap()["v"], Value::from(v));
    }
}

/// Repair and restore check that the log reaches from the snapshot to the last commit before
/// they touch anything: a log that lost records (deleted by hand) makes them refuse, and the
/// index is left exactly as it was (still damaged, every file in place), not rolled back.
#[test]
fn a_rollback_that_would_lose_writes_is_refused_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let cat = Catalog::open(root.path()).unwrap();
    let idx = cat.create("d", IndexKind::Documents, None).unwrap();
    for i in 0..100 {
        idx.upsert(json!({"id": format!("a{i}"), "text": "first"}))
            .unwrap();
    }
    idx.commit().unwrap();
    idx.snapshot().unwrap();
    for i in 0..50 {
        idx.upsert(json!({"id": format!("b{i}"), "text": "second"}))
            .unwrap();
    }
    idx.commit().unwrap();
    drop(idx);
    // The log after the snapshot is lost (all of it was committed: nothing is missing yet).
    for e in fs::read_dir(root.path().join("d/wal")).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    let cat = Catalog::open(root.path()).unwrap();
    assert!(cat.verify("d").unwrap().is_sound());
    let idx = cat.open_index("d").unwrap();
    idx.upsert(json!({"id": "c", "text": "third"})).unwrap();
    idx.commit().unwrap();
    drop(idx);
    // Now a segment file is damaged: rolling back to the snapshot would drop the 50 b's.
    let tdir = root.path().join("d/index");
    let f = segment_files(&tdir)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "idx"))
        .unwrap();
    let mut bytes = fs::read(&f).unwrap();
    bytes[10] ^= 0xff;
    fs::write(&f, &bytes).unwrap();
    let listing = |dir: &Path| -> Vec<(String, u64)> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = (
        listing(root.path()),
        listing(&root.path().join("d")),
        listing(&tdir),
    );
    let cat = Catalog::open(root.path()).unwrap();
    assert!(!cat.verify("d").unwrap().is_sound());
    let e = cat.repair("d").unwrap_err();
    assert!(
        matches!(e, search_core::CoreError::RepairImpossible { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("nothing was changed"), "{e}");
    let e = cat.restore("d", None).unwrap_err();
    assert!(
        e.to_string().contains("would lose acknowledged writes"),
        "{e}"
    );
    let after = (
        listing(root.path()),
        listing(&root.path().join("d")),
        listing(&tdir),
    );
    assert_eq!(before, after, "a refused repair must not move files");
    assert_eq!(fs::read(&f).unwrap(), bytes);
}

/// Snapshots share files with each other (hard links) but not with the live index. A damaged
/// file shared by every snapshot is repaired from the live index's sound copy when a repair
/// needs a snapshot, and a new snapshot does not link the damaged copy forward.
#[test]
fn a_damaged_file_shared_by_snapshots_is_healed_from_the_live_index() {
    use std::os::unix::fs::MetadataExt;
    for take_new_snapshot in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let cat = Catalog::open(root.path()).unwrap();
        let idx = cat.create("d", IndexKind::Documents, None).unwrap();
        let mut expect = BTreeMap::new();
        for round in 0..3u64 {
            for i in 0..40u64 {
                let id = format!("r{round}-{i}");
                idx.upsert(json!({"id": id, "v": round, "text": "words"}))
                    .unwrap();
                expect.insert(id, round);
            }
            idx.commit().unwrap();
            if round < 2 {
                idx.snapshot().unwrap();
            }
        }
        let snaps = idx.snapshots().unwrap();
        assert_eq!(snaps.len(), 2);
        let snap_dir = |id: &str| root.path().join("d/snapshots").join(id);
        // A segment file both snapshots hold (one inode).
        let shared = snaps[0]
            .files
            .iter()
            .map(|f| f.name.clone())
            .find(|n| {
                n.ends_with(".idx")
                    && fs::metadata(snap_dir(&snaps[1].id).join(n)).is_ok_and(|m| {
                        m.ino() == fs::metadata(snap_dir(&snaps[0].id).join(n)).unwrap().ino()
                    })
            })
            .expect("the snapshots share a segment file");
        let p = snap_dir(&snaps[0].id).join(&shared);
        let mut bytes = fs::read(&p).unwrap();
        let at = bytes.len() / 3;
        bytes[at] ^= 0x40;
        fs::write(&p, &bytes).unwrap(); // same inode: both snapshots damaged
        if take_new_snapshot {
            let s = idx.snapshot().unwrap();
            let fresh = snap_dir(&s.id).join(&shared);
            assert_ne!(
                fs::metadata(&fresh).unwrap().ino(),
                fs::metadata(&p).unwrap().ino(),
                "the damaged copy was linked forward"
            );
        }
        drop(idx);
        // Now a live file of another segment is damaged too: a repair needs a snapshot.
        let tdir = root.path().join("d/index");
        let other = segment_files(&tdir)
            .into_iter()
            .find(|f| {
                let n = f.file_name().unwrap().to_string_lossy().into_owned();
                n.ends_with(".store") && n.split('.').next() != shared.split('.').next()
            })
            .unwrap();
        let mut b = fs::read(&other).unwrap();
        let at = b.len() / 2;
        b[at] ^= 0x40;
        fs::write(&other, &b).unwrap();
        let cat = Catalog::open(root.path()).unwrap();
        assert!(!cat.verify("d").unwrap().is_sound());
        let r = cat
            .repair("d")
            .unwrap_or_else(|e| panic!("new snapshot: {take_new_snapshot}: {e}"));
        assert!(r.after.is_sound(), "{:?}", r.after);
        if !take_new_snapshot {
            assert!(
                r.action.contains("repaired from the live index"),
                "{}",
                r.action
            );
        }
        check_all(root.path(), &expect);
    }
}
