//! Finding damage: every file an index's last commit needs must exist, parse and pass its
//! checksum, and the write-ahead log must read cleanly.
//!
//! Tantivy checks the CRC in each file's footer only when asked
//! ([`tantivy::Index::validate_checksum`]), and that check skips files that are missing
//! altogether; [`verify_index_dir`] adds the rest: `meta.json` must parse, every segment file
//! it names must be present, each segment must open, and the log must have no damaged record
//! before good ones.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tantivy::Index;
use tantivy::index::SegmentComponent;

use crate::catalog::{IndexMeta, META_FILE, TANTIVY_DIR};
use crate::schema::IndexKind;
use crate::wal::{WAL_DIR, Wal};

/// One problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Damage {
    /// The damaged (or missing) file.
    pub file: PathBuf,
    /// What is wrong with it.
    pub detail: String,
}

/// The outcome of checking one index.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerifyReport {
    /// Index name.
    pub index: String,
    /// Everything found wrong; empty when the index is sound.
    pub damaged: Vec<Damage>,
    /// Segment files whose checksums were verified.
    pub files_checked: usize,
    /// Bytes read to verify them.
    pub bytes_checked: u64,
    /// Bytes of a torn final log record (a crash during an append; harmless, cut off on the
    /// next open).
    pub wal_torn_bytes: u64,
    /// Damaged log bytes (or missing records) holding only records the last commit covers:
    /// harmless, skipped when the log is opened (see [`crate::ReplayStats::covered_damage`]).
    pub wal_covered_damage: u64,
    /// Time the check took, in milliseconds.
    pub took_ms: u64,
}

impl VerifyReport {
    /// Whether nothing was found wrong.
    pub fn is_sound(&self) -> bool {
        self.damaged.is_empty()
    }

    /// The damage on one line, for logs and error messages.
    pub fn summary(&self) -> String {
        if self.is_sound() {
            return format!("index {:?} is sound", self.index);
        }
        let items: Vec<String> = self
            .damaged
            .iter()
            .map(|d| format!("{}: {}", d.file.display(), d.detail))
            .collect();
        format!("index {:?} is damaged: {}", self.index, items.join("; "))
    }
}

/// The component files every segment has (the delete bitset only when it has deletes).
const COMPONENTS: [SegmentComponent; 6] = [
    SegmentComponent::Postings,
    SegmentComponent::Positions,
    SegmentComponent::Terms,
    SegmentComponent::Store,
    SegmentComponent::FastFields,
    SegmentComponent::FieldNorms,
];

/// The files of the last commit of the Tantivy index in `tdir`, relative to it, including
/// `meta.json`.
pub(crate) fn committed_files(index: &Index) -> tantivy::Result<Vec<PathBuf>> {
    let metas = index.load_metas()?;
    let mut files = vec![PathBuf::from("meta.json")];
    for seg in &metas.segments {
        for c in COMPONENTS {
            files.push(seg.relative_path(c));
        }
        if seg.has_deletes() {
            files.push(seg.relative_path(SegmentComponent::Delete));
        }
    }
    Ok(files)
}

/// Checks the index folder `dir` (`DATA/<name>`) without changing anything. Safe to run while
/// the index is served: it only reads.
pub fn verify_index_dir(name: &str, dir: &Path) -> VerifyReport {
    let started = Instant::now();
    let mut report = VerifyReport {
        index: name.to_string(),
        damaged: Vec::new(),
        files_checked: 0,
        bytes_checked: 0,
        wal_torn_bytes: 0,
        wal_covered_damage: 0,
        took_ms: 0,
    };
    let meta = match IndexMeta::read(dir) {
        Ok(m) => Some(m),
        Err(e) => {
            report_push(&mut report.damaged, dir.join(META_FILE), e.to_string());
            None
        }
    };
    let tdir = dir.join(TANTIVY_DIR);
    let index = match Index::open_in_dir(&tdir) {
        Ok(i) => i,
        Err(e) => {
            report_push(
                &mut report.damaged,
                tdir.join("meta.json"),
                format!("cannot open the index: {e}"),
            );
            report.took_ms = started.elapsed().as_millis() as u64;
            return report;
        }
    };
    let files = match committed_files(&index) {
        Ok(f) => f,
        Err(e) => {
            report_push(
                &mut report.damaged,
                tdir.join("meta.json"),
                format!("does not parse: {e}"),
            );
            report.took_ms = started.elapsed().as_millis() as u64;
            return report;
        }
    };
    let mut missing = false;
    for f in &files {
        match std::fs::metadata(tdir.join(f)) {
            Ok(m) => report.bytes_checked += m.len(),
            Err(e) => {
                missing = true;
                report_push(
                    &mut report.damaged,
                    tdir.join(f),
                    format!("needed by the last commit but unreadable: {e}"),
                );
            }
        }
    }
    // Every file of the commit, not only those Tantivy lists in `.managed.json` (which
    // `Index::validate_checksum` limits itself to).
    for f in files.iter().filter(|f| f.as_os_str() != "meta.json") {
        if !tdir.join(f).exists() {
            continue;
        }
        match checksum_ok(&index, f) {
            Ok(true) => {}
            Ok(false) => report_push(
                &mut report.damaged,
                tdir.join(f),
                "checksum mismatch".into(),
            ),
            Err(e) => report_push(
                &mut report.damaged,
                tdir.join(f),
                format!("unreadable footer: {e}"),
            ),
        }
    }
    report.files_checked = files.len().saturating_sub(1);
    if report.damaged.is_empty() {
        // Every segment must also open: this parses each file's footer and header. Tantivy
        // can panic on a malformed file (an overflow in its composite-file parser): that is
        // damage too, never a crash of the caller.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            index
                .reader()
                .map(|r| r.searcher().segment_readers().len())
                .map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|_| Err("opening it panicked".into()));
        match opened {
            // Tantivy's reader takes a lock file next to the index: on a read-only file system
            // (a mounted backup) that fails although every file checked out. Not damage.
            Err(e) if e.contains("Failed to acquire Lockfile") => {
                tracing::warn!(index = %name, error = %e, "segments not opened (cannot take the reader's lock; a read-only folder?); their checksums passed");
            }
            Err(e) => {
                report_push(
                    &mut report.damaged,
                    tdir.clone(),
                    format!("a segment does not open: {e}"),
                );
            }
            Ok(_) => {}
        }
    }
    let _ = missing;
    if meta.map(|m| m.kind) != Some(IndexKind::Files) {
        let committed = index
            .load_metas()
            .ok()
            .and_then(|m| crate::index::payload_wal_seq(m.payload.as_deref()))
            .unwrap_or(0);
        match Wal::check(&dir.join(WAL_DIR), committed) {
            Ok(stats) => {
                report.wal_torn_bytes = stats.torn_bytes;
                report.wal_covered_damage = stats.covered_damage;
            }
            Err(e) => report_push(&mut report.damaged, dir.join(WAL_DIR), e.to_string()),
        }
    }
    report.took_ms = started.elapsed().as_millis() as u64;
    report
}

/// Whether `file` (relative to the index folder) passes its footer checksum. Tantivy panics on
/// a file shorter than its footer; that is reported as an error, never a crash.
pub(crate) fn checksum_ok(index: &Index, file: &Path) -> Result<bool, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        index
            .directory()
            .validate_checksum(file)
            .map_err(|e| e.to_string())
    }))
    .unwrap_or_else(|_| Err("the file is too short to hold its footer".into()))
}

fn report_push(list: &mut Vec<Damage>, file: PathBuf, detail: String) {
    if !list.iter().any(|d| d.file == file) {
        list.push(Damage { file, detail });
    }
}
