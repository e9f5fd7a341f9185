//! The `ironsift` command line: index folders and JSON documents, search them, manage indexes.
//!
//! Errors print one readable line on stderr and exit non-zero; results go to stdout, as text
//! for people or as JSON with `--json` for scripts.

use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

mod bench_http;
mod serve;

/// jemalloc, whose decay hands freed pages back to the system; with glibc's per-thread arenas
/// the process kept far more memory after large ingests (measurements in tests/memory.rs).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's `stats.allocated` / `stats.resident` for the memory monitor.
#[cfg(feature = "jemalloc")]
struct JemallocStats;

#[cfg(feature = "jemalloc")]
impl resource_mgmt::AllocatorStats for JemallocStats {
    fn read(&self) -> Option<resource_mgmt::AllocatorReading> {
        use tikv_jemalloc_ctl::{epoch, stats};
        // The statistics are cached; advancing the epoch refreshes them.
        epoch::advance().ok()?;
        Some(resource_mgmt::AllocatorReading {
            allocated_bytes: stats::allocated::read().ok()? as u64,
            resident_bytes: stats::resident::read().ok()? as u64,
        })
    }
}

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use ironsift::{
    Engine, Highlight, Hit, IndexDirOptions, IndexKind, SchemaSpec, SearchIndex, SearchRequest,
};

/// Writer memory when neither a flag nor a config file sets it.
pub(crate) const DEFAULT_HEAP_MB: usize = 256;

/// Exit code when a batch was applied but some input lines were rejected.
const EXIT_PARTIAL: u8 = 3;

/// Standard output could not be written (a closed pipe, a full disk).
#[derive(Debug)]
struct Output(io::Error);

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write the output: {}", self.0)
    }
}

impl std::error::Error for Output {}

/// A command refused an index that fails its checks (exit code 4).
#[derive(Debug)]
struct Damaged(String);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damaged {}

/// `println!` that returns [`Output`] instead of panicking when stdout is gone.
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(io::stdout().lock(), $($arg)*).map_err(Output)?
    };
}

/// Fails with [`Damaged`] when index `name` exists and fails its checks (checksums, segments,
/// log): commands never read from or write to a damaged index, as the server does not.
fn ensure_sound(engine: &Engine, name: &str) -> Result<()> {
    let report = match engine.catalog().verify(name) {
        Ok(r) => r,
        Err(_) => return Ok(()), // missing or unnamed: the command itself says so
    };
    if report.is_sound() {
        return Ok(());
    }
    Err(Damaged(format!(
        "{}; nothing was read or written: repair it with `ironsift repair --index {name}`",
        report.summary()
    ))
    .into())
}

#[derive(Parser)]
#[command(
    name = "ironsift",
    version,
    about = "Full-text search on Tantivy that stays up and loses nothing",
    long_about = "Full-text search on Tantivy that stays up and loses nothing.\n\n\
        Index a folder of text/code (`ironsift index DIR`) or JSON lines (`ironsift add FILE`), \
        then search them (`ironsift search QUERY`). Exit codes: 0 success, 1 error, \
        2 bad usage, 3 some input lines were rejected (the rest was kept), 4 an index is \
        damaged (found by `verify`, left damaged by `repair`, or refused by another command)."
)]
struct Cli {
    /// Data directory holding the indexes [default: ./ironsift-data].
    #[arg(long, global = true, env = "IRONSIFT_DATA")]
    data: Option<PathBuf>,
    /// Index to work on [default: default].
    #[arg(long, short = 'i', global = true, env = "IRONSIFT_INDEX")]
    index: Option<String>,
    /// Writer memory in MiB, split among writer threads (at least 15 MiB each) [default: 256].
    #[arg(long, global = true, value_name = "MIB")]
    heap_mb: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve search over HTTP (indexing FOLDER first, when given). Settings come from flags,
    /// then IRONSIFT_* environment variables, then the --config TOML file.
    Serve(serve::ServeArgs),
    /// Load a running server with search queries; report req/s, latency percentiles and
    /// /readyz latency under that load.
    BenchHttp(bench_http::BenchHttpArgs),
    /// Index the text files of a folder; re-running only reads what changed.
    Index {
        /// Folder to index.
        dir: PathBuf,
        /// Skip files larger than this (e.g. 10MiB, 500K, 1048576).
        #[arg(long, default_value = "10MiB", value_parser = parse_size)]
        max_file_size: u64,
        /// Lines per chunk; hits name the chunk's line range.
        #[arg(long, default_value_t = 500)]
        chunk_lines: usize,
        /// Include hidden files and folders.
        #[arg(long)]
        hidden: bool,
        /// Do not honour .gitignore/.ignore files.
        #[arg(long)]
        no_ignore: bool,
        /// Follow symbolic links (loops are detected and reported).
        #[arg(long)]
        follow_links: bool,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add or replace JSON documents from a JSON-lines file ('-' for stdin), upserting by "id".
    Add {
        /// JSON-lines file, or '-' for standard input.
        file: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Search an index (Tantivy query syntax: terms, "phrases", +must, -not, AND/OR, field:value, prefix*).
    Search {
        /// The query; empty matches everything.
        #[arg(allow_hyphen_values = true)]
        query: String,
        /// Hits to show (at most 1000).
        #[arg(long, short = 'n', default_value_t = 10)]
        limit: usize,
        /// Hits to skip.
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// Print the response as JSON.
        #[arg(long)]
        json: bool,
        /// Do not compute highlighted snippets.
        #[arg(long)]
        no_highlight: bool,
    },
    /// Print a document by id as JSON.
    Get {
        /// Document id.
        id: String,
    },
    /// Delete a document by id.
    Delete {
        /// Document id.
        id: String,
    },
    /// Show documents, segments and size of every index (or of --index when given explicitly).
    Stats {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create an index (documents by default), optionally with an explicit schema file.
    CreateIndex {
        /// Index name: letters, digits, '_' and '-'.
        name: String,
        /// What the index holds.
        #[arg(long, value_enum, default_value_t = Kind::Documents)]
        kind: Kind,
        /// JSON schema file: {"fields":[{"name":"title","type":"text"}, ...]}.
        #[arg(long)]
        schema: Option<PathBuf>,
    },
    /// Delete an index and all its files.
    DeleteIndex {
        /// Index name (required: never defaults).
        name: String,
    },
    /// Check every index (or --index): the files of the last commit are present and pass
    /// their checksums, segments open, the write-ahead log reads cleanly. Exit 0 when all
    /// are sound, 4 when damage was found (listed, one line per damaged file).
    Verify {
        /// Print the reports as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take a snapshot of a documents index (--index; commits pending writes first), keeping
    /// the newest --keep.
    Snapshot {
        /// Snapshots to keep.
        #[arg(long, default_value_t = 3)]
        keep: usize,
        /// List the snapshots instead of taking one.
        #[arg(long)]
        list: bool,
    },
    /// Roll a documents index (--index) back to a snapshot (the newest by default) and replay
    /// the write-ahead log over it. Replaced files are kept in DATA/<index>/damaged-<ms>/.
    Restore {
        /// Snapshot id (see `ironsift snapshot --list`).
        #[arg(long)]
        snapshot: Option<String>,
    },
    /// Repair a damaged index (--index): roll back to its newest sound snapshot and replay
    /// the write-ahead log (files indexes: rebuild from the source folder). Damaged files
    /// are moved aside, never deleted. Stop the server first, or use its repair endpoint.
    Repair,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Documents,
    Files,
}

pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 10MiB, 500K, 1048576)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use K, M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn main() -> ExitCode {
    #[cfg(feature = "jemalloc")]
    {
        // Background threads purge freed pages on time even while the process is idle.
        let _ = tikv_jemalloc_ctl::background_thread::write(true);
        server::AppState::install_allocator_stats(JemallocStats);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(Output(io)) = e.downcast_ref::<Output>()
                && io.kind() == io::ErrorKind::BrokenPipe
            {
                // The reader went away (`| head`): nothing more to say, as other tools do.
                return ExitCode::SUCCESS;
            }
            // One readable line: the outermost context and the root cause, unless the
            // message already ends with it.
            let mut msg = e.to_string();
            if let Some(cause) = e.chain().nth(1) {
                let cause = cause.to_string();
                if !msg.ends_with(&cause) {
                    msg = format!("{msg}: {cause}");
                }
            }
            let _ = writeln!(io::stderr(), "ironsift: error: {msg}");
            if e.downcast_ref::<Damaged>().is_some() {
                return ExitCode::from(4);
            }
            ExitCode::FAILURE
        }
    }
}

fn data_dir(cli: &Cli) -> PathBuf {
    cli.data
        .clone()
        .unwrap_or_else(|| PathBuf::from(ironsift::DEFAULT_DATA_DIR))
}

fn engine(cli: &Cli) -> Result<Engine> {
    Ok(Engine::builder()
        .data_dir(data_dir(cli))
        .writer_heap_bytes(cli.heap_mb.unwrap_or(DEFAULT_HEAP_MB).max(15) << 20)
        .build()?)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Serve(args) => return serve::run(&cli, args),
        Command::BenchHttp(args) => {
            return bench_http::run(
                cli.index.as_deref().unwrap_or(ironsift::DEFAULT_INDEX),
                args,
            );
        }
        _ => {}
    }
    let engine = engine(&cli)?;
    let index_name = cli.index.as_deref().unwrap_or(ironsift::DEFAULT_INDEX);
    match &cli.command {
        Command::Index {
            dir,
            max_file_size,
            chunk_lines,
            hidden,
            no_ignore,
            follow_links,
            quiet,
            json,
        } => {
            ensure_sound(&engine, index_name)?;
            let index = engine.open_or_create(index_name, IndexKind::Files)?;
            let opts = IndexDirOptions {
                max_file_bytes: *max_file_size,
                chunk_lines: *chunk_lines,
                hidden: *hidden,
                respect_ignore_files: !no_ignore,
                follow_links: *follow_links,
            };
            index_dir(&index, dir, &opts, *quiet, *json)
        }
        Command::Add { file, json } => {
            ensure_sound(&engine, index_name)?;
            add(
                &engine.open_or_create(index_name, IndexKind::Documents)?,
                file,
                *json,
            )
        }
        Command::Search {
            query,
            limit,
            offset,
            json,
            no_highlight,
        } => {
            ensure_sound(&engine, index_name)?;
            let index = engine.index(index_name)?;
            let req = SearchRequest::new(query.clone())
                .limit(*limit)
                .offset(*offset)
                .highlight(!no_highlight);
            search(&index, &req, *json)
        }
        Command::Get { id } => {
            ensure_sound(&engine, index_name)?;
            let index = engine.index(index_name)?;
            match index.get(id)? {
                Some(doc) => {
                    say!("{}", serde_json::to_string_pretty(&doc)?);
                    Ok(ExitCode::SUCCESS)
                }
                None => bail!("document {id:?} not found in index {:?}", index_name),
            }
        }
        Command::Delete { id } => {
            ensure_sound(&engine, index_name)?;
            let index = engine.index(index_name)?;
            let existed = index.delete(id)?;
            index.commit()?;
            if !existed {
                bail!("document {id:?} not found in index {:?}", index_name);
            }
            say!("deleted {id:?} from {:?}", index_name);
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats { json } => {
            let names = match &cli.index {
                Some(name) => vec![name.clone()],
                None => engine.catalog().list()?,
            };
            // One index that cannot be read does not hide the others: it is listed with
            // its problem, and the exit code says something was wrong.
            let mut all = Vec::new();
            let mut failed = Vec::new();
            for name in names {
                let stats =
                    ensure_sound(&engine, &name).and_then(|()| Ok(engine.index(&name)?.stats()?));
                match stats {
                    Ok(s) => all.push(s),
                    // Asked for by name: its error is the command's.
                    Err(e) if cli.index.is_some() => return Err(e),
                    Err(e) => failed.push((name, e)),
                }
            }
            if *json {
                let mut v = serde_json::to_value(&all)?;
                if let Some(list) = v.as_array_mut() {
                    for (name, e) in &failed {
                        list.push(serde_json::json!({"name": name, "error": e.to_string()}));
                    }
                }
                say!("{}", serde_json::to_string_pretty(&v)?);
            } else if all.is_empty() && failed.is_empty() {
                say!("no indexes in {}", data_dir(&cli).display());
            } else {
                say!(
                    "{:<24} {:<10} {:>10} {:>9} {:>9} {:>10}",
                    "INDEX",
                    "KIND",
                    "DOCS",
                    "DELETED",
                    "SEGMENTS",
                    "SIZE"
                );
                for s in all {
                    say!(
                        "{:<24} {:<10} {:>10} {:>9} {:>9} {:>10}",
                        s.name,
                        s.kind.as_str(),
                        s.docs,
                        s.deleted_docs,
                        s.segments,
                        human_bytes(s.bytes_on_disk)
                    );
                }
                for (name, e) in &failed {
                    say!("{name:<24} unreadable: {e}");
                }
            }
            if failed
                .iter()
                .any(|(_, e)| e.downcast_ref::<Damaged>().is_some())
            {
                return Ok(ExitCode::from(4));
            }
            if !failed.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CreateIndex { name, kind, schema } => {
            let spec: Option<SchemaSpec> = match schema {
                Some(p) => {
                    let f = File::open(p)
                        .with_context(|| format!("cannot open schema file {}", p.display()))?;
                    Some(serde_json::from_reader(BufReader::new(f)).with_context(|| {
                        format!("schema file {} is not a valid schema", p.display())
                    })?)
                }
                None => None,
            };
            let kind = match kind {
                Kind::Documents => IndexKind::Documents,
                Kind::Files => IndexKind::Files,
            };
            engine.catalog().create(name, kind, spec)?;
            say!(
                "created {} index {name:?} in {}",
                kind.as_str(),
                data_dir(&cli).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(_) | Command::BenchHttp(_) => unreachable!("handled above"),
        Command::Verify { json } => {
            let names = match &cli.index {
                Some(name) => vec![name.clone()],
                None => engine.catalog().list()?,
            };
            let mut reports = Vec::new();
            for name in names {
                reports.push(engine.catalog().verify(&name)?);
            }
            let damaged = reports.iter().filter(|r| !r.is_sound()).count();
            if *json {
                say!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                for r in &reports {
                    if r.is_sound() {
                        say!(
                            "ok       {:<24} {} files, {} checked in {} ms",
                            r.index,
                            r.files_checked,
                            human_bytes(r.bytes_checked),
                            r.took_ms
                        );
                        if r.wal_covered_damage > 0 {
                            say!(
                                "note     {:<24} the write-ahead log has damage only in records \
                                 the last commit holds ({}); nothing is lost, they are skipped",
                                r.index,
                                r.wal_covered_damage
                            );
                        }
                    } else {
                        for d in &r.damaged {
                            say!(
                                "DAMAGED  {:<24} {}: {}",
                                r.index,
                                d.file.display(),
                                d.detail
                            );
                        }
                    }
                }
            }
            if damaged > 0 {
                eprintln!(
                    "ironsift: {damaged} of {} index(es) damaged; repair with `ironsift repair --index NAME`",
                    reports.len()
                );
                return Ok(ExitCode::from(4));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot { keep, list } => {
            let index = engine.index(index_name)?;
            if *list {
                for s in index.snapshots()? {
                    say!(
                        "{}  {} docs  {}  (log position {})",
                        s.id,
                        s.docs,
                        human_bytes(s.bytes),
                        s.wal_seq
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            index.require_documents()?;
            let s = index.snapshot()?;
            let pruned = index.prune_snapshots(*keep)?;
            index.close_writer();
            say!(
                "snapshot {} of {index_name:?}: {} docs, {} ({} copied){}",
                s.id,
                s.docs,
                human_bytes(s.bytes),
                human_bytes(s.copied_bytes),
                if pruned > 0 {
                    format!("; {pruned} old snapshot(s) pruned")
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { snapshot } => {
            let r = engine.catalog().restore(index_name, snapshot.as_deref())?;
            print_repair(&r)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Repair => {
            let r = engine.catalog().repair(index_name)?;
            print_repair(&r)?;
            Ok(if r.after.is_sound() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(4)
            })
        }
        Command::DeleteIndex { name } => {
            engine.catalog().delete(name)?;
            say!("deleted index {name:?}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_repair(r: &ironsift::RepairReport) -> Result<()> {
    say!("{}: {}", r.index, r.action);
    if let Some(p) = &r.damaged_kept_at {
        say!("replaced files kept in {}", p.display());
    }
    if r.action != r.after.summary() && !r.action.starts_with("nothing to do") {
        say!("{}", r.after.summary());
    }
    Ok(())
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub(crate) fn index_dir(
    index: &SearchIndex,
    dir: &std::path::Path,
    opts: &IndexDirOptions,
    quiet: bool,
    json: bool,
) -> Result<ExitCode> {
    let bar = if quiet || json || !io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed}] {msg}").expect("valid template"),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        b
    };
    let started = Instant::now();
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    let report = index.index_dir(dir, opts, &mut |p| {
        if last_draw.elapsed() >= Duration::from_millis(100) {
            last_draw = Instant::now();
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!(
                "{} files seen, {} indexed, {} unchanged, {} skipped · {:.1} MB · {:.1} MB/s",
                p.files_seen,
                p.files_indexed,
                p.files_unchanged,
                p.files_skipped,
                p.bytes_indexed as f64 / 1e6,
                p.bytes_indexed as f64 / 1e6 / secs
            ));
        }
    });
    bar.finish_and_clear();
    let report = report?;
    if json {
        say!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    const SHOWN: usize = 20;
    for w in report.warnings.iter().take(SHOWN) {
        match &w.path {
            Some(p) => eprintln!("warning: {}: {}", p.display(), w.message),
            None => eprintln!("warning: {}", w.message),
        }
    }
    if report.warnings.len() > SHOWN {
        eprintln!("warning: ... and {} more", report.warnings.len() - SHOWN);
    }
    say!(
        "indexed {} files ({:.1} MB, {} chunks) in {:.2} s, {:.1} MB/s; {} unchanged, {} skipped ({} binary, {} too large), {} failed, {} removed",
        report.files_indexed,
        report.bytes_indexed as f64 / 1e6,
        report.chunks,
        report.elapsed.as_secs_f64(),
        report.mb_per_sec(),
        report.files_unchanged,
        report.files_skipped_binary + report.files_skipped_large,
        report.files_skipped_binary,
        report.files_skipped_large,
        report.files_failed,
        report.files_removed,
    );
    Ok(ExitCode::SUCCESS)
}

fn add(index: &SearchIndex, file: &str, json: bool) -> Result<ExitCode> {
    let started = Instant::now();
    let report = if file == "-" {
        index.ingest_ndjson(io::stdin().lock())?
    } else {
        let f = File::open(file).with_context(|| format!("cannot open {file}"))?;
        index.ingest_ndjson(BufReader::with_capacity(1 << 20, f))?
    };
    index.commit()?;
    if json {
        say!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        const SHOWN: usize = 20;
        for e in report.errors.iter().take(SHOWN) {
            eprintln!("line {}: {}", e.line, e.reason);
        }
        if report.failed > SHOWN as u64 {
            eprintln!(
                "... and {} more rejected lines",
                report.failed - SHOWN as u64
            );
        }
        say!(
            "added {} documents to {:?} in {:.2} s; {} lines rejected",
            report.indexed,
            index.name(),
            started.elapsed().as_secs_f64(),
            report.failed
        );
    }
    Ok(if report.failed > 0 {
        ExitCode::from(EXIT_PARTIAL)
    } else {
        ExitCode::SUCCESS
    })
}

fn search(index: &SearchIndex, req: &SearchRequest, json: bool) -> Result<ExitCode> {
    let started = Instant::now();
    let resp = index.search(req)?;
    let took = started.elapsed();
    if json {
        let mut v = serde_json::to_value(&resp)?;
        v["took_ms"] = serde_json::json!(took.as_secs_f64() * 1e3);
        say!("{}", serde_json::to_string(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let color = io::stdout().is_terminal();
    let (on, off) = if color {
        ("\x1b[1;31m", "\x1b[0m")
    } else {
        ("**", "**")
    };
    let (bold, plain) = if color {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("", "")
    };
    let mut out = io::stdout().lock();
    for hit in &resp.hits {
        writeln!(
            out,
            "{bold}{}{plain}  ({:.2})",
            hit_title(index, hit),
            hit.score
        )
        .map_err(Output)?;
        for (field, hl) in &hit.highlights {
            let text = one_line(&hl.marked(on, off));
            if index.kind() == IndexKind::Files {
                writeln!(out, "    {text}").map_err(Output)?;
            } else {
                writeln!(out, "    {field}: {text}").map_err(Output)?;
            }
        }
        if hit.highlights.is_empty()
            && let Some(text) = preview(hit)
        {
            writeln!(out, "    {text}").map_err(Output)?;
        }
    }
    let shown = resp.hits.len();
    let total = resp
        .total
        .map(|t| t.to_string())
        .unwrap_or_else(|| "?".into());
    if shown == 0 {
        writeln!(
            out,
            "no hits ({total} matching) in {:.1} ms",
            took.as_secs_f64() * 1e3
        )
        .map_err(Output)?;
    } else {
        writeln!(
            out,
            "hits {}-{} of {total} in {:.1} ms",
            req.offset + 1,
            req.offset + shown,
            took.as_secs_f64() * 1e3
        )
        .map_err(Output)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `path:line` for file chunks, the id otherwise.
fn hit_title(index: &SearchIndex, hit: &Hit) -> String {
    if index.kind() != IndexKind::Files {
        return hit.id.clone();
    }
    let path = hit
        .doc
        .get("path")
        .and_then(|v| v.as_str())
        .unwrap_or(&hit.id);
    let line = hit
        .highlights
        .get("content")
        .and_then(|h: &Highlight| h.line)
        .or_else(|| hit.doc.get("line_start").and_then(|v| v.as_u64()))
        .unwrap_or(1);
    format!("{path}:{line}")
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn preview(hit: &Hit) -> Option<String> {
    let text = hit.doc.as_json().values().find_map(|v| v.as_str())?;
    let line = one_line(text);
    Some(match line.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_size("500K").unwrap(), 500 << 10);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
