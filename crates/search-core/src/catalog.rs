//! The data directory: a set of named indexes, each in its own folder.
//!
//! Layout of `DATA/`:
//! ```text
//! DATA/<name>/ironsift.json   ironsift's metadata for the index (kind, schema, source folder)
//! DATA/<name>/index/          the Tantivy index
//! ```
//! An index appears atomically: it is built in a hidden staging folder and renamed into place,
//! so a crash during creation never leaves a half-made index under a real name. Deletion renames
//! the folder away first for the same reason.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::index::{IndexConfig, SearchIndex};
use crate::schema::{IndexKind, SchemaSpec};

/// What a repair or restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    /// The index.
    pub index: String,
    /// What was done, in words.
    pub action: String,
    /// Where the replaced (damaged) files were moved.
    pub damaged_kept_at: Option<PathBuf>,
    /// Log records replayed over the snapshot.
    pub replayed: u64,
    /// The check before.
    pub before: crate::integrity::VerifyReport,
    /// The check after.
    pub after: crate::integrity::VerifyReport,
}

/// Name of the index used when none is given.
pub const DEFAULT_INDEX: &str = "default";
pub(crate) const META_FILE: &str = "ironsift.json";
pub(crate) const TANTIVY_DIR: &str = "index";
const META_FORMAT: u32 = 1;

/// ironsift's own metadata for one index, kept next to the Tantivy files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexMeta {
    /// Format version of this file.
    pub format: u32,
    /// What the index holds.
    pub kind: IndexKind,
    /// The explicit schema, if the index has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaSpec>,
    /// For files indexes: the folder last indexed into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
}

impl IndexMeta {
    pub(crate) fn read(dir: &Path) -> Result<IndexMeta> {
        let path = dir.join(META_FILE);
        let bytes = fs::read(&path).map_err(|e| CoreError::io(&path, e))?;
        let meta: IndexMeta =
            serde_json::from_slice(&bytes).map_err(|e| CoreError::BadMetadata {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        if meta.format != META_FORMAT {
            return Err(CoreError::BadMetadata {
                path,
                detail: format!(
                    "format {} is not supported by this version (expects {META_FORMAT})",
                    meta.format
                ),
            });
        }
        Ok(meta)
    }

    /// Writes the file atomically: temp file, fsync, rename, fsync of the folder.
    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(META_FILE);
        let tmp = dir.join(format!("{META_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).expect("metadata serializes");
        let mut f = fs::File::create(&tmp).map_err(|e| CoreError::io(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| CoreError::io(&tmp, e))?;
        f.sync_all().map_err(|e| CoreError::io(&tmp, e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| CoreError::io(&path, e))?;
        sync_dir(dir)
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CoreError::io(dir, e))
}

/// Checks that `name` is usable as an index name: 1–64 bytes of `[A-Za-z0-9_-]`, starting with
/// a letter or digit (so it can never be `.`/`..` or a hidden staging folder).
pub fn validate_index_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(CoreError::InvalidIndexName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("must be 1 to 64 characters long");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("must start with a letter or a digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return bad("may only contain ASCII letters, digits, '_' and '-'");
    }
    Ok(())
}

/// The data directory holding every index.
#[derive(Debug, Clone)]
pub struct Catalog {
    root: PathBuf,
    config: IndexConfig,
}

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

impl Catalog {
    /// Opens (creating if needed) the data directory with default settings.
    pub fn open(root: impl Into<PathBuf>) -> Result<Catalog> {
        Catalog::with_config(root, IndexConfig::default())
    }

    /// Opens (creating if needed) the data directory; `config` applies to every index opened.
    pub fn with_config(root: impl Into<PathBuf>, config: IndexConfig) -> Result<Catalog> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| CoreError::io(&root, e))?;
        remove_leftovers(&root);
        Ok(Catalog { root, config })
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Settings applied to indexes opened through this catalog.
    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    fn index_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Whether an index of this name exists.
    pub fn exists(&self, name: &str) -> bool {
        validate_index_name(name).is_ok() && self.index_dir(name).join(META_FILE).is_file()
    }

    /// Names of every index, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let rd = fs::read_dir(&self.root).map_err(|e| CoreError::io(&self.root, e))?;
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| CoreError::io(&self.root, e))?;
            if let Some(name) = entry.file_name().to_str()
                && self.exists(name)
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Creates a new, empty index.
    pub fn create(
        &self,
        name: &str,
        kind: IndexKind,
        schema: Option<SchemaSpec>,
    ) -> Result<SearchIndex> {
        validate_index_name(name)?;
        if let Some(spec) = &schema {
            spec.validate()?;
        }
        let dir = self.index_dir(name);
        if dir.exists() {
            return Err(CoreError::IndexExists {
                name: name.to_string(),
            });
        }
        let staging = self.root.join(format!(
            ".staging-{name}-{}-{}",
            std::process::id(),
            STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            fs::create_dir_all(staging.join(TANTIVY_DIR))
                .map_err(|e| CoreError::io(&staging, e))?;
            let meta = IndexMeta {
                format: META_FORMAT,
                kind,
                schema,
                source: None,
            };
            SearchIndex::create_in(name, &staging, &meta)?;
            meta.write(&staging)?;
            // rename(2) fails if `dir` was created meanwhile by another process: no clobbering.
            match fs::rename(&staging, &dir) {
                Ok(()) => {}
                Err(_) if dir.exists() => {
                    return Err(CoreError::IndexExists {
                        name: name.to_string(),
                    });
                }
                Err(e) => return Err(CoreError::io(&dir, e)),
            }
            sync_dir(&self.root)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result?;
        // Opening can still fail (e.g. no file descriptors left): then the index, empty and
        // never used, goes again, so the error leaves nothing behind and a retry can succeed.
        self.open_index(name).inspect_err(|_| {
            let _ = self.delete(name);
        })
    }

    /// Opens an existing index.
    pub fn open_index(&self, name: &str) -> Result<SearchIndex> {
        validate_index_name(name)?;
        let dir = self.index_dir(name);
        if !dir.join(META_FILE).is_file() {
            return Err(CoreError::IndexNotFound {
                name: name.to_string(),
                root: self.root.clone(),
            });
        }
        SearchIndex::open_in(name, &dir, &self.config)
    }

    /// Opens the index, creating it with `kind` (and no explicit schema) if it does not exist.
    pub fn open_or_create(&self, name: &str, kind: IndexKind) -> Result<SearchIndex> {
        match self.open_index(name) {
            Err(CoreError::IndexNotFound { .. }) => match self.create(name, kind, None) {
                Err(CoreError::IndexExists { .. }) => self.open_index(name),
                other => other,
            },
            other => other,
        }
    }

    /// Checks an index's files without opening it for use (see [`crate::verify_index_dir`]).
    pub fn verify(&self, name: &str) -> Result<crate::integrity::VerifyReport> {
        validate_index_name(name)?;
        let dir = self.index_dir(name);
        if !dir.is_dir() {
            return Err(CoreError::IndexNotFound {
                name: name.to_string(),
                root: self.root.clone(),
            });
        }
        Ok(crate::integrity::verify_index_dir(name, &dir))
    }

    /// Repairs a damaged index, which must not be open (in this or another process). A
    /// documents index is rolled back to its newest sound snapshot and the write-ahead log
    /// replayed over it, which brings back every acknowledged write; a files index is
    /// rebuilt from its source folder. The damaged files are moved to
    /// `DATA/<name>/damaged-<ms>/`, never deleted. A sound index is left alone.
    pub fn repair(&self, name: &str) -> Result<RepairReport> {
        let before = self.verify(name)?;
        if before.is_sound() {
            return Ok(RepairReport {
                index: name.to_string(),
                action: "nothing to do: the index is sound".into(),
                damaged_kept_at: None,
                replayed: 0,
                before: before.clone(),
                after: before,
            });
        }
        self.ensure_not_in_use(name)?;
        let dir = self.index_dir(name);
        let impossible = |reason: String| CoreError::RepairImpossible {
            index: name.to_string(),
            reason,
        };
        let meta = IndexMeta::read(&dir).map_err(|e| {
            impossible(format!(
                "its metadata is unreadable ({e}); restore {} from a backup",
                dir.join(META_FILE).display()
            ))
        })?;
        if before
            .damaged
            .iter()
            .any(|d| d.file.starts_with(dir.join(crate::wal::WAL_DIR)))
        {
            return Err(impossible(format!(
                "its write-ahead log is damaged ({}); acknowledged writes after the damage \
                 cannot be recovered automatically",
                before.summary()
            )));
        }
        match meta.kind {
            IndexKind::Documents => {
                let snaps = crate::snapshot::list_snapshots(&dir)?;
                let mut rejected = Vec::new();
                let mut healed = Vec::new();
                // Sound (or made sound from the live index's copies of its files), and the log
                // still holds every record after it: rolling back to a snapshot the log does
                // not reach from would drop acknowledged writes.
                let good = snaps.iter().rev().find(|s| {
                    let mut sound = crate::snapshot::snapshot_is_sound(&dir, s);
                    if sound.is_err() {
                        let repaired = crate::snapshot::heal_from_live(&dir, s);
                        if !repaired.is_empty() {
                            healed.extend(repaired);
                            sound = crate::snapshot::snapshot_is_sound(&dir, s);
                        }
                    }
                    let usable = sound.and_then(|()| log_reaches_from(&dir, s));
                    match usable {
                        Ok(()) => true,
                        Err(why) => {
                            rejected.push(format!("{}: {why}", s.id));
                            false
                        }
                    }
                });
                let Some(good) = good else {
                    return Err(impossible(if snaps.is_empty() {
                        "it has no snapshot to roll back to (take them with `ironsift \
                         snapshot` or the server's periodic snapshots)"
                            .into()
                    } else {
                        format!(
                            "no snapshot can be rolled back to without losing acknowledged \
                             writes ({}); nothing was changed",
                            rejected.join("; ")
                        )
                    }));
                };
                let kept = crate::snapshot::install_snapshot(&dir, good)?;
                let index = self.open_index(name)?;
                let stats = index.recover()?;
                index.close_writer();
                let after = self.verify(name)?;
                Ok(RepairReport {
                    index: name.to_string(),
                    action: format!(
                        "restored snapshot {} and replayed {} write-ahead log records{}",
                        good.id,
                        stats.replayed,
                        if healed.is_empty() {
                            String::new()
                        } else {
                            format!(
                                " (snapshot files repaired from the live index first: {})",
                                healed.join(", ")
                            )
                        }
                    ),
                    damaged_kept_at: Some(kept),
                    replayed: stats.replayed,
                    before,
                    after,
                })
            }
            IndexKind::Files => {
                let Some(source) = meta.source.clone() else {
                    return Err(impossible(
                        "it records no source folder to rebuild from".into(),
                    ));
                };
                if !source.is_dir() {
                    return Err(impossible(format!(
                        "its source folder {} is gone",
                        source.display()
                    )));
                }
                let kept = crate::snapshot::move_aside(&dir)?;
                let tdir = dir.join(TANTIVY_DIR);
                fs::create_dir_all(&tdir).map_err(|e| CoreError::io(&tdir, e))?;
                SearchIndex::create_in(name, &dir, &meta)?;
                let index = self.open_index(name)?;
                index.index_dir(
                    &source,
                    &crate::files::IndexDirOptions::default(),
                    &mut |_| {},
                )?;
                index.commit()?;
                index.close_writer();
                let after = self.verify(name)?;
                Ok(RepairReport {
                    index: name.to_string(),
                    action: format!("rebuilt from {}", source.display()),
                    damaged_kept_at: Some(kept),
                    replayed: 0,
                    before,
                    after,
                })
            }
        }
    }

    /// Rolls a documents index back to one of its snapshots (the newest when `id` is `None`)
    /// and replays the write-ahead log over it. The index must not be open. The replaced
    /// files are moved to `DATA/<name>/damaged-<ms>/`.
    pub fn restore(&self, name: &str, id: Option<&str>) -> Result<RepairReport> {
        let before = self.verify(name)?;
        self.ensure_not_in_use(name)?;
        let dir = self.index_dir(name);
        let snaps = crate::snapshot::list_snapshots(&dir)?;
        let chosen = match id {
            Some(id) => snaps.iter().find(|s| s.id == id),
            None => snaps.last(),
        }
        .ok_or_else(|| CoreError::SnapshotNotFound {
            index: name.to_string(),
            id: id.unwrap_or("(newest)").to_string(),
        })?;
        crate::snapshot::snapshot_is_sound(&dir, chosen).map_err(|why| {
            CoreError::SnapshotDamaged {
                detail: format!("snapshot {}: {why}", chosen.id),
            }
        })?;
        log_reaches_from(&dir, chosen).map_err(|why| CoreError::RepairImpossible {
            index: name.to_string(),
            reason: format!(
                "restoring snapshot {} would lose acknowledged writes: {why}; nothing was changed",
                chosen.id
            ),
        })?;
        let kept = crate::snapshot::install_snapshot(&dir, chosen)?;
        let index = self.open_index(name)?;
        let stats = index.recover()?;
        index.close_writer();
        let after = self.verify(name)?;
        Ok(RepairReport {
            index: name.to_string(),
            action: format!(
                "restored snapshot {} and replayed {} write-ahead log records",
                chosen.id, stats.replayed
            ),
            damaged_kept_at: Some(kept),
            replayed: stats.replayed,
            before,
            after,
        })
    }

    /// Fails with [`CoreError::WriterLocked`] when a writer (a running server, another
    /// command) holds the index: its files must not be swapped under it.
    fn ensure_not_in_use(&self, name: &str) -> Result<()> {
        self.hold_writer_lock(name).map(drop)
    }

    /// Takes the index's writer lock (Tantivy's `.tantivy-writer.lock`, an advisory file
    /// lock) for as long as the returned file is held; `None` when there is no lock file
    /// (nobody ever wrote, or the folder is gone). [`CoreError::WriterLocked`] when a writer
    /// holds it.
    fn hold_writer_lock(&self, name: &str) -> Result<Option<fs::File>> {
        let lock = self
            .index_dir(name)
            .join(TANTIVY_DIR)
            .join(".tantivy-writer.lock");
        let Ok(file) = fs::File::open(&lock) else {
            return Ok(None);
        };
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Err(CoreError::WriterLocked {
                name: name.to_string(),
                lock,
            }),
            Err(fs::TryLockError::Error(e)) => Err(CoreError::io(&lock, e)),
        }
    }

    /// Deletes an index and its files. The folder is first renamed away, so the index
    /// disappears atomically even if removing the files is interrupted. Fails with
    /// [`CoreError::WriterLocked`] while a writer (a running server, another command) holds
    /// the index; the lock is held until the folder is renamed away.
    pub fn delete(&self, name: &str) -> Result<()> {
        validate_index_name(name)?;
        let dir = self.index_dir(name);
        if !dir.join(META_FILE).is_file() {
            return Err(CoreError::IndexNotFound {
                name: name.to_string(),
                root: self.root.clone(),
            });
        }
        let _held = self.hold_writer_lock(name)?;
        let trash = self.root.join(format!(
            ".deleted-{name}-{}-{}",
            std::process::id(),
            STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::rename(&dir, &trash).map_err(|e| CoreError::io(&dir, e))?;
        sync_dir(&self.root)?;
        fs::remove_dir_all(&trash).map_err(|e| CoreError::io(&trash, e))
    }
}

/// Removes what a process killed while creating (`.staging-NAME-PID-N`) or deleting
/// (`.deleted-NAME-PID-N`) an index left in `root`, once that process is gone: the index was
/// never published, or was already unpublished by its rename. Best effort.
fn remove_leftovers(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(".staging-") || name.starts_with(".deleted-")) {
            continue;
        }
        let mut parts = name.rsplitn(3, '-');
        let (_seq, pid) = (parts.next(), parts.next());
        let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && fs::remove_dir_all(e.path()).is_ok() {
            tracing::info!(folder = %e.path().display(), "removed what an interrupted index creation or deletion left");
        }
    }
}

/// Whether the write-ahead log holds every record after `snap`'s position, in order and
/// readable, up to what the index's current commit covers (when its `meta.json` still says):
/// replaying it over the snapshot then brings back every acknowledged write.
fn log_reaches_from(
    dir: &Path,
    snap: &crate::snapshot::SnapshotInfo,
) -> std::result::Result<(), String> {
    let stats = crate::wal::Wal::check(&dir.join(crate::wal::WAL_DIR), snap.wal_seq)
        .map_err(|e| format!("the write-ahead log does not reach back to it ({e})"))?;
    let committed = fs::read(dir.join(TANTIVY_DIR).join("meta.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|m| crate::index::payload_wal_seq(m.get("payload")?.as_str()));
    match committed {
        Some(c) if c > snap.wal_seq && stats.last_seq < c => Err(format!(
            "the index's last commit covers records up to {c}, but the write-ahead log ends at \
             {}: records {}..={c} would be lost",
            stats.last_seq,
            stats.last_seq.max(snap.wal_seq) + 1
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for ok in ["default", "a", "my-index_2", "X9"] {
            validate_index_name(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "-x",
            "_x",
            "a/b",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(validate_index_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn create_list_open_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let cat = Catalog::open(tmp.path()).unwrap();
        assert!(cat.list().unwrap().is_empty());
        cat.create("b", IndexKind::Documents, None).unwrap();
        cat.create("a", IndexKind::Files, None).unwrap();
        assert_eq!(cat.list().unwrap(), ["a", "b"]);
        let e = cat.create("a", IndexKind::Files, None).unwrap_err();
        assert!(matches!(e, CoreError::IndexExists { .. }));
        assert_eq!(cat.open_index("a").unwrap().kind(), IndexKind::Files);
        cat.delete("a").unwrap();
        assert_eq!(cat.list().unwrap(), ["b"]);
        assert!(matches!(
            cat.open_index("a").unwrap_err(),
            CoreError::IndexNotFound { .. }
        ));
        assert!(matches!(
            cat.delete("a").unwrap_err(),
            CoreError::IndexNotFound { .. }
        ));
        // No staging or trash folders are left behind.
        let leftovers: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn leftovers_of_dead_processes_are_removed_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        // pid 2^22 + 1 is above Linux's pid_max: never a live process.
        for name in [".staging-a-b-4194305-0", ".deleted-x-4194305-3"] {
            fs::create_dir_all(tmp.path().join(name).join("index")).unwrap();
        }
        let live = format!(".staging-c-{}-0", std::process::id());
        fs::create_dir_all(tmp.path().join(&live)).unwrap();
        Catalog::open(tmp.path()).unwrap();
        let left: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, [live]);
    }
}
