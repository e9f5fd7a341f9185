//! Point-in-time copies of an index, and restoring or repairing from them.
//!
//! A snapshot lives in `DATA/<name>/snapshots/<id>/`: the files of one commit (`meta.json`
//! and the segment files it names) plus `snapshot.json` (when, which log position the commit
//! covers, the files and their sizes). Taking one does not stop writes: the writer lock is
//! held only while the commit's files are hard-linked into a staging folder (a few
//! milliseconds), which pins them against Tantivy's garbage collection.
//!
//! **Copies, not links to the live files.** A hard link shares the inode with the live
//! index, so damage *in place* (a flipped byte, a bad sector) would reach every snapshot at
//! once. A segment file is therefore *copied* the first time a snapshot includes it, and
//! later snapshots that include the same (immutable) file hard-link to the previous
//! snapshot's copy. Each segment is copied once in its life, like an incremental backup.
//! Each new snapshot is checked (every checksum) before it is published.
//!
//! **The log is kept back to the oldest snapshot.** Commits drop only log segments that
//! every retained snapshot also covers, so restoring any retained snapshot and replaying the
//! log brings back every acknowledged write.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tantivy::Index;

use crate::catalog::{TANTIVY_DIR, sync_dir};
use crate::error::{CoreError, Result};
use crate::integrity::committed_files;

/// Name of the snapshots folder inside an index folder.
pub(crate) const SNAPSHOT_DIR: &str = "snapshots";
const SNAPSHOT_FILE: &str = "snapshot.json";

/// One file of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotFile {
    /// File name (relative to the Tantivy folder).
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// A snapshot's description (`snapshot.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Identifier, sortable by age: `<created unix ms>-<log position>`.
    pub id: String,
    /// When it was taken (Unix milliseconds).
    pub created_unix_ms: u64,
    /// The last write-ahead log record its commit covers.
    pub wal_seq: u64,
    /// Documents in it.
    pub docs: u64,
    /// Its files.
    pub files: Vec<SnapshotFile>,
    /// Total bytes of its files.
    pub bytes: u64,
    /// Bytes copied when it was taken (the rest was linked from the previous snapshot).
    pub copied_bytes: u64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The snapshots of the index in `index_dir`, oldest first. Unreadable ones are skipped with
/// a warning (they cannot be restored anyway).
pub fn list_snapshots(index_dir: &Path) -> Result<Vec<SnapshotInfo>> {
    let dir = index_dir.join(SNAPSHOT_DIR);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CoreError::io(&dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| CoreError::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path().join(SNAPSHOT_FILE);
        match fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<SnapshotInfo>(&b).map_err(|e| e.to_string()))
        {
            Ok(info) if info.id == name => out.push(info),
            Ok(_) => {
                tracing::warn!(snapshot = %path.display(), "snapshot id does not match its folder; ignored")
            }
            Err(e) => {
                tracing::warn!(snapshot = %path.display(), error = %e, "unreadable snapshot ignored")
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Deletes all but the newest `keep` snapshots, and leftovers of snapshots interrupted by a
/// crash. Returns how many snapshots were deleted.
pub(crate) fn prune_snapshots(index_dir: &Path, keep: usize) -> Result<usize> {
    let dir = index_dir.join(SNAPSHOT_DIR);
    if !dir.exists() {
        return Ok(0);
    }
    let snaps = list_snapshots(index_dir)?;
    let mut removed = 0;
    let excess = snaps.len().saturating_sub(keep.max(1));
    for s in &snaps[..excess] {
        let p = dir.join(&s.id);
        fs::remove_dir_all(&p).map_err(|e| CoreError::io(&p, e))?;
        removed += 1;
    }
    for entry in fs::read_dir(&dir).map_err(|e| CoreError::io(&dir, e))? {
        let entry = entry.map_err(|e| CoreError::io(&dir, e))?;
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    Ok(removed)
}

/// The oldest log position any retained snapshot needs (`None`: no snapshots).
pub(crate) fn wal_floor(index_dir: &Path) -> Option<u64> {
    list_snapshots(index_dir)
        .ok()?
        .iter()
        .map(|s| s.wal_seq)
        .min()
}

/// Builds a snapshot from files already pinned (hard-linked) in `staging`: copies what the
/// previous snapshot lacks, links the rest from it, checks the result, publishes it.
pub(crate) fn materialize(
    index_dir: &Path,
    staging: &Path,
    files: &[String],
    wal_seq: u64,
    docs: u64,
) -> Result<SnapshotInfo> {
    let root = index_dir.join(SNAPSHOT_DIR);
    let previous = list_snapshots(index_dir)?.pop();
    let created = now_ms();
    let id = format!("{created:013}-{wal_seq:012}");
    let build = root.join(format!(".tmp-build-{id}"));
    let io = |p: &Path, e: std::io::Error| CoreError::io(p, e);
    fs::create_dir_all(&build).map_err(|e| io(&build, e))?;
    let mut info = SnapshotInfo {
        id: id.clone(),
        created_unix_ms: created,
        wal_seq,
        docs,
        files: Vec::new(),
        bytes: 0,
        copied_bytes: 0,
    };
    let mut linked_names = Vec::new();
    for name in files {
        let src = staging.join(name);
        let dst = build.join(name);
        let len = fs::metadata(&src).map_err(|e| io(&src, e))?.len();
        let reused = previous.as_ref().and_then(|p| {
            p.files
                .iter()
                .any(|f| &f.name == name && f.bytes == len && name != "meta.json")
                .then(|| root.join(&p.id).join(name))
        });
        let linked = reused.is_some_and(|prev| fs::hard_link(prev, &dst).is_ok());
        if linked {
            linked_names.push(name.clone());
        } else {
            fs::copy(&src, &dst).map_err(|e| io(&dst, e))?;
            fs::File::open(&dst)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&dst, e))?;
            info.copied_bytes += len;
        }
        info.bytes += len;
        info.files.push(SnapshotFile {
            name: name.clone(),
            bytes: len,
        });
    }
    // Check what we built before anyone relies on it.
    let index =
        Index::open_in_dir(&build).map_err(|e| CoreError::tantivy("snapshot", "open", e))?;
    let mut bad = Vec::new();
    for name in files.iter().filter(|n| *n != "meta.json") {
        let mut ok = crate::integrity::checksum_ok(&index, Path::new(name));
        if !matches!(ok, Ok(true)) && linked_names.contains(name) {
            // The previous snapshot's copy went bad: do not carry the damage forward, copy
            // the live file instead (it gets its own inode).
            tracing::warn!(file = %name, "a file of the previous snapshot is damaged; copying it again");
            let dst = build.join(name);
            let copied = fs::remove_file(&dst)
                .and_then(|()| fs::copy(staging.join(name), &dst))
                .and_then(|len| {
                    info.copied_bytes += len;
                    fs::File::open(&dst).and_then(|f| f.sync_all())
                });
            if copied.is_ok() {
                ok = crate::integrity::checksum_ok(&index, Path::new(name));
            }
        }
        match ok {
            Ok(true) => {}
            Ok(false) => bad.push(name.clone()),
            Err(e) => bad.push(format!("{name} ({e})")),
        }
    }
    if !bad.is_empty() {
        let _ = fs::remove_dir_all(&build);
        return Err(CoreError::SnapshotDamaged {
            detail: format!(
                "the index's files failed their checksums while being copied: {}",
                bad.join(", ")
            ),
        });
    }
    drop(index);
    let meta_path = build.join(SNAPSHOT_FILE);
    let text = serde_json::to_vec_pretty(&info).expect("snapshot info serializes");
    fs::write(&meta_path, text).map_err(|e| io(&meta_path, e))?;
    fs::File::open(&meta_path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(&meta_path, e))?;
    sync_dir(&build)?;
    let final_dir = root.join(&id);
    fs::rename(&build, &final_dir).map_err(|e| io(&final_dir, e))?;
    sync_dir(&root)?;
    Ok(info)
}

/// Whether the snapshot's files are all present and pass their checksums.
pub(crate) fn snapshot_is_sound(
    index_dir: &Path,
    info: &SnapshotInfo,
) -> std::result::Result<(), String> {
    let dir = index_dir.join(SNAPSHOT_DIR).join(&info.id);
    for f in &info.files {
        let p = dir.join(&f.name);
        match fs::metadata(&p) {
            Ok(m) if m.len() == f.bytes => {}
            Ok(m) => {
                return Err(format!(
                    "{} has {} bytes, expected {}",
                    p.display(),
                    m.len(),
                    f.bytes
                ));
            }
            Err(e) => return Err(format!("{}: {e}", p.display())),
        }
    }
    let index = Index::open_in_dir(&dir).map_err(|e| e.to_string())?;
    let files = committed_files(&index).map_err(|e| e.to_string())?;
    for f in files {
        if !dir.join(&f).exists() {
            return Err(format!("{} is missing", dir.join(f).display()));
        }
    }
    for f in info.files.iter().filter(|f| f.name != "meta.json") {
        if !crate::integrity::checksum_ok(&index, Path::new(&f.name))? {
            return Err(format!("checksum mismatch in {}", f.name));
        }
    }
    Ok(())
}

/// Repairs the files of snapshot `info` from the live index. Snapshots share their files with
/// each other (hard links inside the snapshot folder) but hold their own copies, apart from the
/// live index: one damaged file of an older segment damages every snapshot that has it, while
/// the live index may still hold a sound copy (segment files are immutable and uniquely
/// named). Each file that fails its checksum (or its recorded size) is replaced by the live
/// file of the same name when that one has the recorded size and passes the checksum, checked
/// in place before it replaces anything (a new inode for this snapshot only). Returns the
/// names repaired; best effort (a snapshot whose metadata cannot be read is left as it is).
pub(crate) fn heal_from_live(index_dir: &Path, info: &SnapshotInfo) -> Vec<String> {
    let live = index_dir.join(TANTIVY_DIR);
    let dir = index_dir.join(SNAPSHOT_DIR).join(&info.id);
    let mut healed = Vec::new();
    let Ok(index) = Index::open_in_dir(&dir) else {
        return healed;
    };
    for f in info.files.iter().filter(|f| f.name != "meta.json") {
        let p = dir.join(&f.name);
        let sound = fs::metadata(&p).is_ok_and(|m| m.len() == f.bytes)
            && crate::integrity::checksum_ok(&index, Path::new(&f.name)).unwrap_or(false);
        if sound {
            continue;
        }
        let source = live.join(&f.name);
        if !fs::metadata(&source).is_ok_and(|m| m.len() == f.bytes) {
            continue;
        }
        let candidate = format!(".heal-{}", f.name);
        let tmp = dir.join(&candidate);
        let copied =
            fs::copy(&source, &tmp).and_then(|_| fs::File::open(&tmp).and_then(|h| h.sync_all()));
        let good = copied.is_ok()
            && crate::integrity::checksum_ok(&index, Path::new(&candidate)).unwrap_or(false);
        if good && fs::rename(&tmp, &p).is_ok() {
            let _ = sync_dir(&dir);
            tracing::warn!(snapshot = %info.id, file = %f.name, "repaired a damaged snapshot file from the live index's sound copy");
            healed.push(format!("{}/{}", info.id, f.name));
        } else {
            let _ = fs::remove_file(&tmp);
        }
    }
    healed
}

/// Replaces `index_dir/index` by a copy of the snapshot's files, moving the current Tantivy
/// folder to `index_dir/damaged-<ms>/` (never deleted). Returns where it was moved.
pub(crate) fn install_snapshot(index_dir: &Path, info: &SnapshotInfo) -> Result<PathBuf> {
    let io = |p: &Path, e: std::io::Error| CoreError::io(p, e);
    let src = index_dir.join(SNAPSHOT_DIR).join(&info.id);
    let fresh = index_dir.join(format!(".restore-{}", info.id));
    if fresh.exists() {
        fs::remove_dir_all(&fresh).map_err(|e| io(&fresh, e))?;
    }
    fs::create_dir_all(&fresh).map_err(|e| io(&fresh, e))?;
    for f in &info.files {
        let dst = fresh.join(&f.name);
        fs::copy(src.join(&f.name), &dst).map_err(|e| io(&dst, e))?;
        fs::File::open(&dst)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(&dst, e))?;
    }
    // Tantivy garbage-collects only the files listed in `.managed.json`: list the restored
    // segment files so that merges can retire them later.
    let managed: Vec<&str> = info
        .files
        .iter()
        .map(|f| f.name.as_str())
        .filter(|n| *n != "meta.json")
        .collect();
    let managed_path = fresh.join(".managed.json");
    let mut text = serde_json::to_vec(&managed).expect("names serialize");
    text.push(b'\n');
    fs::write(&managed_path, text).map_err(|e| io(&managed_path, e))?;
    sync_dir(&fresh)?;
    let kept = move_aside(index_dir)?;
    let live = index_dir.join(TANTIVY_DIR);
    fs::rename(&fresh, &live).map_err(|e| io(&live, e))?;
    sync_dir(index_dir)?;
    Ok(kept)
}

/// Moves `index_dir/index` to `index_dir/damaged-<ms>/index` and returns the new folder.
pub(crate) fn move_aside(index_dir: &Path) -> Result<PathBuf> {
    let live = index_dir.join(TANTIVY_DIR);
    let kept = index_dir.join(format!("damaged-{}", now_ms()));
    fs::create_dir_all(&kept).map_err(|e| CoreError::io(&kept, e))?;
    if live.exists() {
        fs::rename(&live, kept.join(TANTIVY_DIR)).map_err(|e| CoreError::io(&live, e))?;
    }
    sync_dir(index_dir)?;
    Ok(kept)
}
