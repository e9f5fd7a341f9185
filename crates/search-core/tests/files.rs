//! Folder indexing against real temp folders: filters, odd files, chunking, incremental runs.

use std::fs;
use std::path::Path;

use search_core::{
    Catalog, IndexDirOptions, IndexDirReport, IndexKind, SearchIndex, SearchRequest,
};

fn setup() -> (tempfile::TempDir, tempfile::TempDir, SearchIndex) {
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let cat = Catalog::open(data.path()).unwrap();
    let idx = cat.create("files", IndexKind::Files, None).unwrap();
    (data, src, idx)
}

fn run(idx: &SearchIndex, dir: &Path) -> IndexDirReport {
    run_with(idx, dir, &IndexDirOptions::default())
}

fn run_with(idx: &SearchIndex, dir: &Path, opts: &IndexDirOptions) -> IndexDirReport {
    idx.index_dir(dir, opts, &mut |_| {}).unwrap()
}

fn paths(idx: &SearchIndex, q: &str) -> Vec<String> {
    let mut v: Vec<String> = idx
        .search(&SearchRequest::new(q).limit(1000))
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.doc["path"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn filters_odd_files_and_keeps_going() {
    let (_d, src, idx) = setup();
    let s = src.path();
    fs::write(s.join("empty.txt"), "").unwrap();
    fs::write(
        s.join("hello.rs"),
        "fn main() { println!(\"hello zebra\"); }\n",
    )
    .unwrap();
    let mut bin = b"zebra".to_vec();
    bin.extend_from_slice(&[0, 1, 2, 3]);
    fs::write(s.join("blob.bin"), &bin).unwrap();
    // Invalid UTF-8 in the middle of real words is decoded lossily, the words stay searchable.
    fs::write(s.join("latin1.txt"), b"caf\xe9 giraffe \xff\xfe okapi\n").unwrap();
    fs::write(s.join("cjk.md"), "東京タワー 🚀 rocket 検索エンジン\n").unwrap();
    fs::create_dir(s.join(".hidden")).unwrap();
    fs::write(s.join(".hidden/secret.txt"), "zebra hidden").unwrap();
    // .gitignore applies inside a git repository (as for git and ripgrep); .ignore everywhere.
    fs::create_dir(s.join(".git")).unwrap();
    fs::write(s.join(".gitignore"), "ignored/\n*.log\n").unwrap();
    fs::write(s.join(".ignore"), "scratch/\n").unwrap();
    fs::create_dir(s.join("scratch")).unwrap();
    fs::write(s.join("scratch/notes.txt"), "zebra scratch").unwrap();
    fs::create_dir(s.join("ignored")).unwrap();
    fs::write(s.join("ignored/x.txt"), "zebra ignored").unwrap();
    fs::write(s.join("debug.log"), "zebra log").unwrap();
    // A symlink loop must neither hang nor crash the walk.
    std::os::unix::fs::symlink(s, s.join("loop")).unwrap();

    let r = run(&idx, s);
    assert_eq!(r.files_skipped_binary, 1, "{r:?}");
    assert_eq!(r.files_indexed, 4, "{r:?}"); // empty, hello, latin1, cjk
    assert_eq!(paths(&idx, "zebra"), ["hello.rs"]);
    assert_eq!(paths(&idx, "giraffe okapi"), ["latin1.txt"]);
    assert_eq!(paths(&idx, "rocket"), ["cjk.md"]);
    // The default tokenizer keeps CJK runs whole; the run is findable as written.
    assert_eq!(paths(&idx, "東京タワー"), ["cjk.md"]);
    assert_eq!(paths(&idx, "path:empty"), ["empty.txt"]);
    assert_eq!(paths(&idx, "lang:rust"), ["hello.rs"]);

    // With hidden files, no ignore rules and symlinks followed: the loop is reported, not followed.
    let opts = IndexDirOptions {
        hidden: true,
        respect_ignore_files: false,
        follow_links: true,
        ..Default::default()
    };
    let r = run_with(&idx, s, &opts);
    assert!(
        r.warnings.iter().any(|w| w.message.contains("loop")),
        "{:?}",
        r.warnings
    );
    assert_eq!(
        paths(&idx, "zebra"),
        [
            ".hidden/secret.txt",
            "debug.log",
            "hello.rs",
            "ignored/x.txt",
            "scratch/notes.txt"
        ]
    );
}

#[test]
fn fifo_is_skipped_not_read() {
    let (_d, src, idx) = setup();
    let fifo = src.path().join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    fs::write(src.path().join("a.txt"), "alpha").unwrap();
    let r = run(&idx, src.path());
    assert_eq!(r.files_indexed, 1);
}

#[test]
fn unreadable_file_is_a_warning() {
    let (_d, src, idx) = setup();
    fs::write(src.path().join("ok.txt"), "readable walrus").unwrap();
    // A read that fails with EIO: /proc/self/mem at offset 0 is unmapped. Reached through a
    // symlink so the test works as root, for whom permission bits do not apply.
    std::os::unix::fs::symlink("/proc/self/mem", src.path().join("mem")).unwrap();
    let opts = IndexDirOptions {
        follow_links: true,
        ..Default::default()
    };
    let r = run_with(&idx, src.path(), &opts);
    assert_eq!(r.files_indexed, 1, "{r:?}");
    assert_eq!(r.files_failed, 1, "{r:?}");
    let w = &r.warnings[0];
    assert!(w.path.as_ref().unwrap().ends_with("mem"), "{w:?}");
    assert_eq!(paths(&idx, "walrus"), ["ok.txt"]);
}

#[test]
fn large_files_are_skipped_or_chunked() {
    let (_d, src, idx) = setup();
    // ~50 MB, one numbered line each; a rare word near the end.
    let mut text = String::with_capacity(51 << 20);
    let mut n = 0u64;
    while text.len() < 50_000_000 {
        n += 1;
        text.push_str(&format!(
            "line {n} lorem ipsum dolor sit amet consectetur adipiscing\n"
        ));
    }
    text.push_str("the needle quokka\n");
    fs::write(src.path().join("big.txt"), &text).unwrap();
    fs::write(src.path().join("small.txt"), "tiny quokka\n").unwrap();

    let r = run(&idx, src.path());
    assert_eq!((r.files_indexed, r.files_skipped_large), (1, 1), "{r:?}");
    assert_eq!(paths(&idx, "quokka"), ["small.txt"]);

    let opts = IndexDirOptions {
        max_file_bytes: 64 << 20,
        ..Default::default()
    };
    let r = run_with(&idx, src.path(), &opts);
    assert_eq!(r.files_indexed, 1, "{r:?}");
    assert_eq!(r.files_unchanged, 1, "{r:?}");
    let total_lines = n + 1;
    assert_eq!(r.chunks, total_lines.div_ceil(opts.chunk_lines as u64));
    let hits = idx
        .search(&SearchRequest::new("needle").highlight(true))
        .unwrap()
        .hits;
    assert_eq!(hits.len(), 1);
    let doc = &hits[0].doc;
    assert_eq!(doc["path"], "big.txt");
    assert_eq!(doc["line_end"].as_u64().unwrap(), total_lines);
    assert_eq!(hits[0].highlights["content"].line, Some(total_lines));
}

#[test]
fn chunks_name_their_lines() {
    let (_d, src, idx) = setup();
    let text: String = (1..=450)
        .map(|i| {
            if i == 321 {
                "the platypus line\n".to_string()
            } else {
                format!("filler {i}\n")
            }
        })
        .collect();
    fs::write(src.path().join("f.txt"), text).unwrap();
    let opts = IndexDirOptions {
        chunk_lines: 200,
        ..Default::default()
    };
    let r = run_with(&idx, src.path(), &opts);
    assert_eq!(r.chunks, 3);
    let hit = &idx
        .search(&SearchRequest::new("platypus").highlight(true))
        .unwrap()
        .hits[0];
    assert_eq!(hit.id, "f.txt#L201");
    let got = idx.get("f.txt#L201").unwrap().unwrap();
    assert_eq!(got["line_end"], 400);
    assert!(idx.get("f.txt#L202").unwrap().is_none());
    assert!(idx.get("nope.txt#L1").unwrap().is_none());
    assert!(idx.get("no-line-marker").unwrap().is_none());
    assert_eq!(hit.doc["line_start"], 201);
    assert_eq!(hit.doc["line_end"], 400);
    assert_eq!(hit.highlights["content"].line, Some(321));
    let hl = &hit.highlights["content"];
    let [s, e] = hl.ranges[0];
    assert_eq!(&hl.fragment[s..e], "platypus");
}

#[test]
fn incremental_reindex_follows_edits_and_deletions() {
    let (_d, src, idx) = setup();
    let s = src.path();
    fs::write(s.join("a.txt"), "alpha original").unwrap();
    fs::write(s.join("b.txt"), "beta").unwrap();
    fs::create_dir(s.join("sub")).unwrap();
    fs::write(s.join("sub/c.txt"), "gamma").unwrap();
    let r = run(&idx, s);
    assert_eq!(r.files_indexed, 3);

    let r = run(&idx, s);
    assert_eq!(
        (r.files_indexed, r.files_unchanged, r.files_removed),
        (0, 3, 0)
    );

    fs::write(s.join("a.txt"), "alpha edited version").unwrap();
    fs::remove_file(s.join("b.txt")).unwrap();
    fs::remove_dir_all(s.join("sub")).unwrap();
    fs::write(s.join("d.txt"), "delta").unwrap();
    let r = run(&idx, s);
    assert_eq!(
        (r.files_indexed, r.files_unchanged, r.files_removed),
        (2, 0, 2),
        "{r:?}"
    );
    assert_eq!(paths(&idx, "original"), Vec::<String>::new());
    assert_eq!(paths(&idx, "edited"), ["a.txt"]);
    assert_eq!(paths(&idx, "beta OR gamma"), Vec::<String>::new());
    assert_eq!(paths(&idx, "delta"), ["d.txt"]);
    // Exactly one chunk per file remains: the old version was replaced, not duplicated.
    assert_eq!(idx.stats().unwrap().docs, 2);

    // A file that turns binary is removed from the index.
    fs::write(s.join("d.txt"), b"delta\0\0").unwrap();
    let r = run(&idx, s);
    assert_eq!(r.files_skipped_binary, 1);
    assert_eq!(paths(&idx, "delta"), Vec::<String>::new());
}

#[test]
fn errors_name_the_path_and_the_index_kind() {
    let (data, _src, idx) = setup();
    let e = idx
        .index_dir(
            Path::new("/definitely/not/here"),
            &Default::default(),
            &mut |_| {},
        )
        .unwrap_err();
    assert!(e.to_string().contains("/definitely/not/here"), "{e}");
    let docs = Catalog::open(data.path())
        .unwrap()
        .create("docs", IndexKind::Documents, None)
        .unwrap();
    let e = docs
        .index_dir(data.path(), &Default::default(), &mut |_| {})
        .unwrap_err();
    assert!(e.to_string().contains("documents index"), "{e}");
    let e = idx.upsert(serde_json::json!({"a": 1})).unwrap_err();
    assert!(e.to_string().contains("files index"), "{e}");
}

/// File names that are not UTF-8 stay distinct (their odd bytes written `\xNN`): editing or
/// deleting one does not touch the other, and re-indexing settles.
#[cfg(unix)]
#[test]
fn names_that_are_not_utf8_stay_distinct() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let (_data, src, idx) = setup();
    let one = src.path().join(OsStr::from_bytes(b"\xff.txt"));
    let two = src.path().join(OsStr::from_bytes(b"\xfe.txt"));
    fs::write(&one, "collide_one\n").unwrap();
    fs::write(&two, "collide_two\n").unwrap();
    assert_eq!(run(&idx, src.path()).files_indexed, 2);
    assert_eq!(paths(&idx, "collide_one"), ["\\xff.txt"]);
    assert_eq!(paths(&idx, "collide_two"), ["\\xfe.txt"]);
    let id = idx.search(&SearchRequest::new("collide_one")).unwrap().hits[0]
        .id
        .clone();
    assert!(idx.get(&id).unwrap().is_some(), "{id}");
    fs::write(&two, "collide_two edited longer\n").unwrap();
    assert_eq!(run(&idx, src.path()).files_indexed, 1);
    assert_eq!(paths(&idx, "collide_one"), ["\\xff.txt"]);
    assert_eq!(
        run(&idx, src.path()).files_indexed,
        0,
        "re-indexing settles"
    );
    fs::remove_file(&one).unwrap();
    assert_eq!(run(&idx, src.path()).files_removed, 1);
    assert!(paths(&idx, "collide_one").is_empty());
    assert_eq!(paths(&idx, "edited"), ["\\xfe.txt"]);
}
