//! Criterion benchmarks: ironsift's search-core against plain Tantivy doing the same work.
//!
//! Every group pits ironsift against a plain Tantivy baseline measured in the same run, so the
//! ratio is meaningful even though absolute figures depend on the machine. `cargo xtask bench`
//! runs this file and turns Criterion's results into a PASS/FAIL report; the group and function
//! names below are part of that contract, keep them stable:
//!
//! | group         | functions                                                          | throughput |
//! |---------------|--------------------------------------------------------------------|------------|
//! | `index_files` | `plain_tantivy`, `ironsift`                                        | bytes      |
//! | `index_json`  | `plain_tantivy`, `ironsift_explicit`, `ironsift_schemaless`        | bytes      |
//! | `search`      | `plain_tantivy_top10`, `ironsift_top10`, `plain_tantivy_top10_count`, `ironsift_top10_count` | queries |
//!
//! Environment:
//! - `IRONSIFT_BENCH_DATA`: folder with `linux/` (Linux 6.1 source tree) and `linux-docs.jsonl`
//!   (made by `cargo xtask bench`). Whatever is missing is replaced by a small corpus generated
//!   deterministically in-process, so the benchmarks build and run on a fresh machine.
//! - `IRONSIFT_BENCH_QUICK=1`: index only `linux/Documentation` and run 2,000 queries.
//! - `IRONSIFT_BENCH_NOTES`: file to write side facts to as JSON (corpus sizes, query counts,
//!   top-10 agreement, per-query latency percentiles `search.<function>_p50_us`/`_p99_us` of
//!   `plain_tantivy_top10` and `ironsift_top10`), for the report.
//!
//! Outside `cargo bench` (`cargo test --benches`, `--list`) the quick subset is used: Criterion
//! runs each function once there, as a smoke test.

use std::collections::HashSet;
use std::fs;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use testkit::rng::Rng;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use search_core::{Catalog, IndexDirOptions, IndexKind, SchemaSpec, SearchIndex, SearchRequest};
use serde_json::{Map, Value};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::QueryParser;
use tantivy::schema::{Field, STORED, STRING, Schema, TEXT, Value as _};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument};

/// Writer heap for every index built here: ironsift's default, so both sides get the same.
const HEAP_BYTES: usize = 256 << 20;
/// Plain Tantivy's file filter mirrors ironsift's defaults: files above 10 MiB are skipped...
const MAX_FILE_BYTES: u64 = 10 << 20;
/// ...and so are files with a NUL byte in their first 8 KiB (binary).
const SNIFF_BYTES: usize = 8192;
/// Queries whose top 10 are compared between the two engines before timing.
const AGREEMENT_QUERIES: usize = 1000;

// ---------------------------------------------------------------------------------------------
// Settings and data

struct Settings {
    data: Option<PathBuf>,
    quick: bool,
    mode: &'static str,
}

fn settings() -> &'static Settings {
    static S: OnceLock<Settings> = OnceLock::new();
    S.get_or_init(|| {
        let args: Vec<String> = std::env::args().collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        // Criterion benchmarks only with `--bench` and without `--test`/`--list`; otherwise each
        // function runs once (or not at all), so the small subset is enough and keeps tests fast.
        let benchmarking = has("--bench") && !has("--test") && !has("--list");
        let quick_env = std::env::var("IRONSIFT_BENCH_QUICK")
            .map(|v| !v.is_empty() && v != "0")
            .unwrap_or(false);
        let quick = quick_env || !benchmarking;
        let data = std::env::var_os("IRONSIFT_BENCH_DATA")
            .map(PathBuf::from)
            .filter(|p| p.is_dir());
        let mode = match (benchmarking, quick) {
            (false, _) => "smoke",
            (true, true) => "quick",
            (true, false) => "full",
        };
        note("mode", mode);
        note(
            "data",
            data.as_deref()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| "generated".into()),
        );
        Settings { data, quick, mode }
    })
}

/// Side facts for the report, rewritten to `IRONSIFT_BENCH_NOTES` after every change so that a
/// run cut short still leaves what it learned.
fn note(key: &str, value: impl Into<Value>) {
    static NOTES: Mutex<Option<Map<String, Value>>> = Mutex::new(None);
    let value = value.into();
    let mut guard = NOTES.lock().unwrap_or_else(|p| p.into_inner());
    let notes = guard.get_or_insert_with(Map::new);
    if notes.get(key) == Some(&value) {
        // Per-iteration facts repeat; say them once.
        return;
    }
    eprintln!("note: {key} = {value}");
    notes.insert(key.to_string(), value);
    if let Some(path) = std::env::var_os("IRONSIFT_BENCH_NOTES") {
        let text = serde_json::to_string_pretty(&*notes).expect("notes serialize");
        if let Err(e) = fs::write(&path, text) {
            eprintln!("warning: cannot write {}: {e}", Path::new(&path).display());
        }
    }
}

/// A corpus made up in-process when the real data is absent: files of words drawn with a fixed
/// seed, and the same files as JSON lines. Small on purpose (a few MB).
struct Generated {
    _dir: tempfile::TempDir,
    files: PathBuf,
    jsonl: PathBuf,
}

fn generated() -> &'static Generated {
    static G: OnceLock<Generated> = OnceLock::new();
    G.get_or_init(|| {
        eprintln!("note: generating a small synthetic corpus (real data not found)");
        // Words of the query file make the queries actually match; fall back to made-up words.
        let mut vocab: Vec<String> = raw_queries()
            .iter()
            .take(5000)
            .flat_map(|q| {
                q.split_whitespace()
                    .map(str::to_lowercase)
                    .collect::<Vec<_>>()
            })
            .filter(|w| w.chars().all(char::is_alphanumeric))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        vocab.sort();
        if vocab.len() < 100 {
            let mut rng = Rng(7);
            vocab = (0..3000)
                .map(|_| {
                    let len = 3 + rng.below(7);
                    (0..len)
                        .map(|_| (b'a' + rng.below(26) as u8) as char)
                        .collect()
                })
                .collect();
        }
        let dir = tempfile::Builder::new()
            .prefix("ironsift-bench-corpus-")
            .tempdir()
            .expect("create a temp dir for the generated corpus");
        let files = dir.path().join("files");
        let jsonl = dir.path().join("docs.jsonl");
        let mut lines = String::new();
        let mut rng = Rng(0x1234_5678_9ABC_DEF1);
        for i in 0..600 {
            let rel = format!("dir{:02}/doc{i:04}.txt", i % 12);
            let mut text = String::new();
            for _ in 0..(20 + rng.below(180)) {
                for w in 0..(4 + rng.below(12)) {
                    if w > 0 {
                        text.push(' ');
                    }
                    text.push_str(&vocab[rng.below(vocab.len())]);
                }
                text.push('\n');
            }
            let path = files.join(&rel);
            fs::create_dir_all(path.parent().expect("has a parent")).expect("create corpus dir");
            fs::write(&path, &text).expect("write corpus file");
            let title = text.lines().next().unwrap_or_default();
            let line = serde_json::json!({"_id": rel, "title": title, "text": text});
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        fs::write(&jsonl, lines).expect("write generated jsonl");
        Generated {
            _dir: dir,
            files,
            jsonl,
        }
    })
}

/// The folder `index_files` indexes.
fn files_dir() -> PathBuf {
    let s = settings();
    if let Some(linux) = s
        .data
        .as_ref()
        .map(|d| d.join("linux"))
        .filter(|d| d.is_dir())
    {
        return if s.quick {
            linux.join("Documentation")
        } else {
            linux
        };
    }
    generated().files.clone()
}

/// The JSON-lines file `index_json` and `search` use.
fn jsonl_file() -> PathBuf {
    let s = settings();
    match s.data.as_ref().map(|d| d.join("linux-docs.jsonl")) {
        Some(p) if p.is_file() => p,
        _ => generated().jsonl.clone(),
    }
}

/// Every query of the committed query file, `N:` prefix stripped; made-up ones if it is absent.
fn raw_queries() -> &'static [String] {
    static Q: OnceLock<Vec<String>> = OnceLock::new();
    Q.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/queries-web-50k.txt");
        match fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .map(|l| match l.split_once(':') {
                    Some((n, q)) if n.bytes().all(|b| b.is_ascii_digit()) => q.to_string(),
                    _ => l.to_string(),
                })
                .collect(),
            Err(e) => {
                eprintln!("note: {}: {e}; using made-up queries", path.display());
                let mut rng = Rng(99);
                (0..10_000)
                    .map(|_| {
                        (0..1 + rng.below(3))
                            .map(|_| format!("w{}", rng.below(500)))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect()
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Plain Tantivy: the baseline, written the way a user of Tantivy alone would write it.

/// Visits regular files under `dir` depth-first in name order, skipping symlinks (like ironsift's
/// default of not following links).
fn visit_files(dir: &Path, f: &mut dyn FnMut(&Path, u64)) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<fs::DirEntry> = rd.filter_map(Result::ok).collect();
    entries.sort_by_key(fs::DirEntry::file_name);
    for e in entries {
        let Ok(ft) = e.file_type() else { continue };
        let path = e.path();
        if ft.is_dir() {
            visit_files(&path, f);
        } else if ft.is_file() {
            let len = e.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            f(&path, len);
        }
    }
}

/// Reads a file into `buf` if it passes the filter (size limit, no NUL in the first 8 KiB).
fn read_text_file(path: &Path, len: u64, buf: &mut Vec<u8>) -> bool {
    if len > MAX_FILE_BYTES {
        return false;
    }
    buf.clear();
    let Ok(mut file) = fs::File::open(path) else {
        return false;
    };
    if file.read_to_end(buf).is_err() {
        return false;
    }
    !buf[..buf.len().min(SNIFF_BYTES)].contains(&0)
}

/// Files and bytes that pass the filter: the throughput of `index_files`.
fn measure_files(root: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    let mut buf = Vec::new();
    visit_files(root, &mut |p, len| {
        if read_text_file(p, len, &mut buf) {
            files += 1;
            bytes += buf.len() as u64;
        }
    });
    (files, bytes)
}

/// One document per file (`path`, `content`), committed. Returns the writer so the caller can
/// wait for its merges outside the timed region.
fn plain_index_files(root: &Path, dest: &Path) -> tantivy::Result<IndexWriter> {
    let mut sb = Schema::builder();
    let path_f = sb.add_text_field("path", TEXT | STORED);
    let content_f = sb.add_text_field("content", TEXT | STORED);
    let index = Index::create_in_dir(dest, sb.build())?;
    let mut writer: IndexWriter = index.writer(HEAP_BYTES)?;
    let mut buf = Vec::new();
    let mut failed = None;
    visit_files(root, &mut |p, len| {
        if failed.is_some() || !read_text_file(p, len, &mut buf) {
            return;
        }
        let rel = p.strip_prefix(root).unwrap_or(p).to_string_lossy();
        let mut doc = TantivyDocument::default();
        doc.add_text(path_f, &rel);
        doc.add_text(content_f, String::from_utf8_lossy(&buf));
        if let Err(e) = writer.add_document(doc) {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    writer.commit()?;
    Ok(writer)
}

struct JsonSchema {
    schema: Schema,
    id: Field,
    title: Field,
    text: Field,
}

fn plain_json_schema() -> JsonSchema {
    let mut sb = Schema::builder();
    let id = sb.add_text_field("_id", STRING | STORED);
    let title = sb.add_text_field("title", TEXT | STORED);
    let text = sb.add_text_field("text", TEXT | STORED);
    JsonSchema {
        schema: sb.build(),
        id,
        title,
        text,
    }
}

/// Parses each line with serde_json and adds `_id`, `title`, `text`; commits. Returns the index
/// and its writer (merges still running) and the number of documents.
fn plain_index_json(jsonl: &Path, dest: &Path) -> tantivy::Result<(Index, IndexWriter, u64)> {
    plain_index_json_with(jsonl, dest, None)
}

/// [`plain_index_json`] with a fixed number of writer threads (`None`: Tantivy's default).
fn plain_index_json_with(
    jsonl: &Path,
    dest: &Path,
    threads: Option<usize>,
) -> tantivy::Result<(Index, IndexWriter, u64)> {
    let s = plain_json_schema();
    let index = Index::create_in_dir(dest, s.schema.clone())?;
    let mut writer: IndexWriter = match threads {
        Some(n) => index.writer_with_num_threads(n, HEAP_BYTES)?,
        None => index.writer(HEAP_BYTES)?,
    };
    let mut input = BufReader::new(fs::File::open(jsonl)?);
    let mut line = String::new();
    let mut docs = 0;
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            break;
        }
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let mut doc = TantivyDocument::default();
        for (key, field) in [("_id", s.id), ("title", s.title), ("text", s.text)] {
            if let Some(t) = v.get(key).and_then(Value::as_str) {
                doc.add_text(field, t);
            }
        }
        writer.add_document(doc)?;
        docs += 1;
    }
    writer.commit()?;
    Ok((index, writer, docs))
}

// ---------------------------------------------------------------------------------------------
// ironsift

/// `title` and `text` as text fields: the same fields plain Tantivy gets. Built from JSON so
/// that new optional `FieldSpec` members do not break the benchmark.
fn explicit_spec() -> SchemaSpec {
    serde_json::from_value(serde_json::json!({
        "fields": [{"name": "title", "type": "text"}, {"name": "text", "type": "text"}]
    }))
    .expect("valid schema spec")
}

fn ironsift_index_json(
    jsonl: &Path,
    dest: &Path,
    spec: Option<SchemaSpec>,
) -> Result<(SearchIndex, search_core::IngestReport), Box<dyn std::error::Error>> {
    ironsift_index_json_with(jsonl, dest, spec, search_core::IndexConfig::default())
}

fn ironsift_index_json_with(
    jsonl: &Path,
    dest: &Path,
    spec: Option<SchemaSpec>,
    config: search_core::IndexConfig,
) -> Result<(SearchIndex, search_core::IngestReport), Box<dyn std::error::Error>> {
    let index = Catalog::with_config(dest, config)?.create("b", IndexKind::Documents, spec)?;
    let input = BufReader::new(fs::File::open(jsonl)?);
    let report = index.ingest_ndjson(input)?;
    index.commit()?;
    Ok((index, report))
}

// ---------------------------------------------------------------------------------------------
// Groups

/// CPU ticks (1/100 s on Linux) used by the whole machine and by this process, to tell how much
/// other programs ran during a group: a busy neighbour (say, a parallel `cargo build` on a
/// 2-core machine) skews a comparison more than anything in the code. `None` off Linux.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: everything but idle and iowait is busy.
    let busy = cpu
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .take(6)
        .map(|(_, v)| v)
        .sum();
    let me = fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = me.rsplit_once(')')?.1;
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    Some((busy, f.iter().sum()))
}

/// Records the CPU seconds other processes used while `f` ran, as `<group>.foreign_cpu_s`.
fn watch_neighbours(group: &str, f: impl FnOnce()) {
    let before = cpu_ticks();
    let start = Instant::now();
    f();
    let wall = start.elapsed().as_secs_f64();
    note(&format!("{group}.wall_s"), (wall * 10.0).round() / 10.0);
    if let (Some((b0, m0)), Some((b1, m1))) = (before, cpu_ticks()) {
        let foreign = b1.saturating_sub(b0).saturating_sub(m1.saturating_sub(m0)) as f64 / 100.0;
        note(
            &format!("{group}.foreign_cpu_s"),
            (foreign * 10.0).round() / 10.0,
        );
        if wall > 0.0 && foreign / wall > 0.2 {
            eprintln!(
                "warning: other processes used {foreign:.1} CPU-s during {group} ({wall:.0} s): \
                 figures may be skewed"
            );
        }
    }
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ironsift-bench-")
        .tempdir()
        .expect("create a scratch dir")
}

/// Heavy groups: one iteration per sample (flat sampling, one warm-up run), else Criterion's
/// linear sampling would run an 8-second indexing pass 55 times. Criterion then warns that it
/// "cannot complete 10 samples in 1.0s": expected, the samples simply take as long as they take.
fn heavy(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
}

fn index_files(c: &mut Criterion) {
    let dir = files_dir();
    let (files, bytes) = measure_files(&dir);
    note("index_files.dir", dir.display().to_string());
    note("index_files.files", files);
    note("index_files.bytes", bytes);

    let mut group = c.benchmark_group("index_files");
    heavy(&mut group);
    // Same figure for both functions (the folder's text bytes under plain's filter), so the
    // ratio of throughputs is the ratio of wall times for indexing the same folder.
    group.throughput(Throughput::BytesDecimal(bytes));

    group.bench_function("plain_tantivy", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let tmp = scratch();
                let start = Instant::now();
                let writer = plain_index_files(&dir, tmp.path()).expect("plain Tantivy indexes");
                total += start.elapsed();
                // Background merges would otherwise steal CPU from the next iteration.
                writer.wait_merging_threads().expect("merges finish");
            }
            total
        })
    });

    // The same files as plain Tantivy: hidden files included and ignore files not honoured.
    // With the defaults ironsift indexes *nothing* of Debian's linux-source tree: Debian's
    // packaging appends `/*` ("ignore everything at the top level") to linux/.gitignore, and
    // ironsift applies .gitignore even outside a git checkout. Quick mode happened to work only
    // because a walk rooted at Documentation/ never matches the parent's `/*` against itself.
    let opts = IndexDirOptions {
        hidden: true,
        respect_ignore_files: false,
        ..IndexDirOptions::default()
    };
    let mut noted = false;
    group.bench_function("ironsift", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let tmp = scratch();
                let start = Instant::now();
                let index = Catalog::open(tmp.path())
                    .and_then(|c| c.create("b", IndexKind::Files, None))
                    .expect("create a files index");
                let report = index
                    .index_dir(&dir, &opts, &mut |_| {})
                    .expect("ironsift indexes");
                total += start.elapsed();
                index.close_writer();
                if !noted {
                    // The report checks these against plain's files and bytes: a throughput
                    // figure for indexing different data would mean nothing.
                    noted = true;
                    note("index_files.ironsift_files_indexed", report.files_indexed);
                    note("index_files.ironsift_bytes_indexed", report.bytes_indexed);
                    note("index_files.ironsift_chunks", report.chunks);
                    note(
                        "index_files.ironsift_files_skipped",
                        report.files_skipped_binary + report.files_skipped_large,
                    );
                }
            }
            total
        })
    });
    group.finish();
}

fn index_json(c: &mut Criterion) {
    let jsonl = jsonl_file();
    let bytes = fs::metadata(&jsonl).map(|m| m.len()).unwrap_or(0);
    note("index_json.file", jsonl.display().to_string());
    note("index_json.bytes", bytes);

    let mut group = c.benchmark_group("index_json");
    heavy(&mut group);
    group.throughput(Throughput::BytesDecimal(bytes));

    group.bench_function("plain_tantivy", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let tmp = scratch();
                let start = Instant::now();
                let (_, writer, docs) =
                    plain_index_json(&jsonl, tmp.path()).expect("plain indexes");
                total += start.elapsed();
                writer.wait_merging_threads().expect("merges finish");
                note("index_json.docs", docs);
            }
            total
        })
    });

    for (name, spec) in [
        ("ironsift_explicit", Some(explicit_spec())),
        ("ironsift_schemaless", None),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let tmp = scratch();
                    let start = Instant::now();
                    let (index, report) = ironsift_index_json(&jsonl, tmp.path(), spec.clone())
                        .expect("ironsift ingests");
                    total += start.elapsed();
                    index.close_writer();
                    note(&format!("index_json.{name}_indexed"), report.indexed);
                    note(&format!("index_json.{name}_failed"), report.failed);
                }
                total
            })
        });
    }
    group.finish();
}

struct PlainSearch {
    reader: IndexReader,
    parser: QueryParser,
    id: Field,
}

impl PlainSearch {
    fn top10(&self, q: &str) -> tantivy::Result<Vec<TantivyDocument>> {
        let searcher = self.reader.searcher();
        let query = self.parser.parse_query(q)?;
        let top = searcher.search(&query, &TopDocs::with_limit(10).order_by_score())?;
        top.into_iter()
            .map(|(_, addr)| searcher.doc(addr))
            .collect()
    }

    fn top10_count(&self, q: &str) -> tantivy::Result<(Vec<TantivyDocument>, usize)> {
        let searcher = self.reader.searcher();
        let query = self.parser.parse_query(q)?;
        let (top, count) =
            searcher.search(&query, &(TopDocs::with_limit(10).order_by_score(), Count))?;
        let docs = top
            .into_iter()
            .map(|(_, addr)| searcher.doc(addr))
            .collect::<tantivy::Result<_>>()?;
        Ok((docs, count))
    }
}

/// Both indexes of the JSON corpus, built once, outside any measurement.
struct SearchSetup {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    plain: PlainSearch,
    iron: SearchIndex,
}

fn build_search_setup(jsonl: &Path) -> SearchSetup {
    let (plain_dir, iron_dir) = (scratch(), scratch());
    // One writer thread on both sides: the same documents then land in the same segment and
    // order, so equal scores tie-break the same way and the top-10 ids can be compared exactly.
    let (index, writer, _) =
        plain_index_json_with(jsonl, plain_dir.path(), Some(1)).expect("plain indexes");
    writer.wait_merging_threads().expect("merges finish");
    let reader: IndexReader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
        .expect("plain reader");
    let s = plain_json_schema();
    let parser = QueryParser::for_index(&index, vec![s.title, s.text]);
    let one_thread = search_core::IndexConfig {
        writer_threads: Some(1),
        ..search_core::IndexConfig::default()
    };
    let (iron, _) =
        ironsift_index_json_with(jsonl, iron_dir.path(), Some(explicit_spec()), one_thread)
            .expect("ironsift ingests");
    // Let merges finish and become visible, as on the plain side, so both search the same
    // settled segments.
    iron.close_writer();
    iron.reload().expect("reload");
    note(
        "search.plain_segments",
        reader.searcher().segment_readers().len(),
    );
    note(
        "search.ironsift_segments",
        iron.stats().map(|s| s.segments).unwrap_or(0),
    );
    SearchSetup {
        _dirs: (plain_dir, iron_dir),
        plain: PlainSearch {
            reader,
            parser,
            id: s.id,
        },
        iron,
    }
}

/// The first `n` web queries, minus those plain Tantivy's parser rejects (and blank ones). The
/// parser depends on the schema only, so an empty in-memory index is enough to decide.
fn valid_queries(n: usize) -> Vec<String> {
    let s = plain_json_schema();
    let index = Index::create_in_ram(s.schema);
    let parser = QueryParser::for_index(&index, vec![s.title, s.text]);
    let taken = &raw_queries()[..n.min(raw_queries().len())];
    let valid: Vec<String> = taken
        .iter()
        .filter(|q| !q.trim().is_empty() && parser.parse_query(q).is_ok())
        .cloned()
        .collect();
    note("search.queries_taken", taken.len());
    note("search.queries_rejected", taken.len() - valid.len());
    note("search.queries", valid.len());
    valid
}

/// Top-10 ids of both engines for the first queries: they run the same BM25 over the same
/// documents, so they should agree up to the order of equal scores. Comparing the score lists
/// too tells a tie broken differently (same scores, other ids) from a real difference.
fn check_agreement(setup: &SearchSetup, queries: &[String]) {
    let sample = &queries[..queries.len().min(AGREEMENT_QUERIES)];
    let (mut ordered, mut same_set, mut same_scores, mut errors) = (0usize, 0usize, 0usize, 0usize);
    let searcher = setup.plain.reader.searcher();
    for q in sample {
        let plain: tantivy::Result<Vec<(f32, String)>> = (|| {
            let query = setup.plain.parser.parse_query(q)?;
            let top = searcher.search(&query, &TopDocs::with_limit(10).order_by_score())?;
            top.into_iter()
                .map(|(score, addr)| {
                    let doc: TantivyDocument = searcher.doc(addr)?;
                    let id = doc.get_first(setup.plain.id).and_then(|v| v.as_str());
                    Ok((score, id.unwrap_or_default().to_string()))
                })
                .collect()
        })();
        let iron = setup
            .iron
            .search(&SearchRequest::new(q.as_str()).count(false));
        let (plain, iron) = match (plain, iron) {
            (Ok(p), Ok(i)) => (p, i.hits),
            (p, i) => {
                if errors < 5 {
                    eprintln!(
                        "note: query {q:?} failed: plain {:?}, ironsift {:?}",
                        p.err(),
                        i.err()
                    );
                }
                errors += 1;
                continue;
            }
        };
        let plain_ids: Vec<&str> = plain.iter().map(|(_, id)| id.as_str()).collect();
        let iron_ids: Vec<&str> = iron.iter().map(|h| h.id.as_str()).collect();
        if plain_ids == iron_ids {
            ordered += 1;
        }
        if plain_ids.iter().collect::<HashSet<_>>() == iron_ids.iter().collect::<HashSet<_>>() {
            same_set += 1;
        }
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * a.abs().max(b.abs()).max(1.0);
        if plain.len() == iron.len()
            && plain
                .iter()
                .zip(&iron)
                .all(|((s, _), h)| close(*s, h.score))
        {
            same_scores += 1;
        }
    }
    let pct = |n: usize| {
        if sample.is_empty() {
            100.0
        } else {
            (n as f64 * 1000.0 / sample.len() as f64).round() / 10.0
        }
    };
    println!(
        "top-10 agreement on {} queries: {}% identical, {}% same set, {}% same scores, {} errors",
        sample.len(),
        pct(ordered),
        pct(same_set),
        pct(same_scores),
        errors
    );
    note("search.agreement_queries", sample.len());
    note("search.agreement_ordered_pct", pct(ordered));
    note("search.agreement_set_pct", pct(same_set));
    note("search.agreement_scores_pct", pct(same_scores));
    note("search.agreement_errors", errors);
}

/// Per-query latency of both engines, every query timed alone on this thread, outside
/// Criterion (whose figures are throughput on two threads): the baseline for the HTTP
/// service's p50/p99. The engines alternate query by query, so a busy moment on the machine
/// hits both alike.
fn note_latencies(setup: &SearchSetup, queries: &[String]) {
    if queries.is_empty() {
        return;
    }
    let (mut plain, mut iron) = (Vec::new(), Vec::new());
    for q in queries {
        let t = Instant::now();
        black_box(setup.plain.top10(q).is_ok());
        plain.push(t.elapsed());
        let t = Instant::now();
        black_box(
            setup
                .iron
                .search(&SearchRequest::new(q.as_str()).count(false))
                .is_ok(),
        );
        iron.push(t.elapsed());
    }
    for (name, mut times) in [("plain_tantivy_top10", plain), ("ironsift_top10", iron)] {
        times.sort_unstable();
        // Nearest rank: the smallest time at least this share of the queries took.
        let pct =
            |p: f64| times[((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
        for (label, p) in [("p50", 0.50), ("p99", 0.99)] {
            let us = pct(p).as_secs_f64() * 1e6;
            note(
                &format!("search.{name}_{label}_us"),
                (us * 10.0).round() / 10.0,
            );
        }
    }
}

/// Runs the queries on two threads (one half each) and returns the wall time.
fn two_threads(queries: &[String], run: &(dyn Fn(&str) + Sync)) -> Duration {
    let (a, b) = queries.split_at(queries.len() / 2);
    let start = Instant::now();
    std::thread::scope(|s| {
        let other = s.spawn(|| a.iter().for_each(|q| run(q)));
        b.iter().for_each(|q| run(q));
        other.join().expect("search thread");
    });
    start.elapsed()
}

fn search(c: &mut Criterion) {
    let n = if settings().quick { 2_000 } else { 10_000 };
    let queries = valid_queries(n);
    let jsonl = jsonl_file();
    // Built on first use so that filtering the group out (`cargo bench -- index`) skips it.
    let setup: OnceLock<SearchSetup> = OnceLock::new();
    let get = || {
        setup.get_or_init(|| {
            let s = build_search_setup(&jsonl);
            check_agreement(&s, &queries);
            // One untimed pass of every query on both engines, so that neither pays for first
            // touches of freshly written index pages inside the timed runs (whichever function
            // ran first would otherwise be handicapped).
            for q in &queries {
                black_box(s.plain.top10_count(q).is_ok());
                black_box(s.iron.search(&SearchRequest::new(q.as_str())).is_ok());
            }
            note_latencies(&s, &queries);
            s
        })
    };
    // Errors are counted, not unwrapped: a failing query must not abort the whole run, and the
    // agreement check above already reports them.
    let failures = AtomicU64::new(0);
    let fail = |ok: bool| {
        if !ok {
            failures.fetch_add(1, Ordering::Relaxed);
        }
    };

    let mut group = c.benchmark_group("search");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(queries.len() as u64));

    type Run<'a> = Box<dyn Fn(&SearchSetup, &str) -> bool + Sync + 'a>;
    let functions: [(&str, Run<'_>); 4] = [
        (
            "plain_tantivy_top10",
            Box::new(|s: &SearchSetup, q: &str| black_box(s.plain.top10(q)).is_ok()),
        ),
        (
            "ironsift_top10",
            Box::new(|s: &SearchSetup, q: &str| {
                black_box(s.iron.search(&SearchRequest::new(q).count(false))).is_ok()
            }),
        ),
        (
            "plain_tantivy_top10_count",
            Box::new(|s: &SearchSetup, q: &str| black_box(s.plain.top10_count(q)).is_ok()),
        ),
        (
            "ironsift_top10_count",
            Box::new(|s: &SearchSetup, q: &str| {
                black_box(s.iron.search(&SearchRequest::new(q))).is_ok()
            }),
        ),
    ];
    for (name, run) in &functions {
        group.bench_function(*name, |b| {
            let s = get();
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| two_threads(&queries, &|q| fail(run(s, q))))
                    .sum()
            })
        });
    }
    group.finish();
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        eprintln!("warning: {failed} searches failed during timing");
    }
    note("search.failures_during_timing", failed);
}

fn config() -> Criterion {
    // Resolve settings first so the mode and data notes are written even if a group is filtered.
    let s = settings();
    eprintln!(
        "ironsift benches: mode {}, data {}",
        s.mode,
        s.data
            .as_deref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "generated".into())
    );
    Criterion::default().sample_size(10)
}

fn index_files_watched(c: &mut Criterion) {
    watch_neighbours("index_files", || index_files(c));
}

fn index_json_watched(c: &mut Criterion) {
    watch_neighbours("index_json", || index_json(c));
}

fn search_watched(c: &mut Criterion) {
    watch_neighbours("search", || search(c));
}

criterion_group! {
    name = benches;
    config = config();
    targets = index_files_watched, index_json_watched, search_watched
}
criterion_main!(benches);
