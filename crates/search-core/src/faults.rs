//! Fault injection: the named fail points of `search-core` and of Tantivy, for tests and drills.
//!
//! Fail points exist only when the crate is built with its `failpoints` feature (which also
//! turns on Tantivy's own `failpoints` feature); without it every check below compiles to
//! nothing and indexes are opened on a plain `MmapDirectory`. They are driven by the
//! [`fail`](https://docs.rs/fail) crate: `fail::cfg(name, actions)` in the process, or the
//! `FAILPOINTS` environment variable where `fail::FailScenario::setup()` is called (tests; the
//! `ironsift` binary does not call it). Fail-point state is process-global: tests that use
//! them live in their own test binary (`tests/failpoints.rs`) and hold a `FailScenario`.
//!
//! | name | where | `return(N)` gives |
//! |---|---|---|
//! | `wal-append` | before a batch of records is written to the write-ahead log | I/O error, errno `N` (default 5, EIO) |
//! | `wal-fsync` | before the log's fsync (group commit) | I/O error, errno `N` |
//! | `commit-before` | before Tantivy's `prepare_commit` (which flushes the new segments), on every commit including the one after a log replay | I/O error, errno `N` |
//! | `commit-prepared` | between `prepare_commit` and `PreparedCommit::commit` (segments written, `meta.json` not yet) | I/O error, errno `N` |
//! | `dir-write` | every write through the index's directory: opening a file for writing, each buffered write, the final flush+fsync of a file, atomic writes (`meta.json`, `.managed.json`); not the writer lock | I/O error, errno `N` |
//! | `merge` | on Tantivy's merge threads (`merge_thread_*`), each write of the merged segment's files (opening, buffered writes, final flush+fsync) | I/O error, errno `N` |
//! | `search-execute` | in [`SearchIndex::search`](crate::SearchIndex::search), after parsing, before the collectors run | `TantivyError::InternalError` (code `internal`) |
//!
//! Every point also takes the other `fail` actions: `panic`, `sleep(ms)`, `delay(ms)`, `pause`,
//! probabilities (`10%return`) and counts (`2*off->return`, fail from the third evaluation).
//! A caveat for `panic` at `dir-write`: Tantivy writes `.managed.json` (its list of files)
//! while holding a lock of its `ManagedDirectory`, and writes `meta.json` on its segment-updater
//! thread, a rayon pool without a panic handler. A panic in the first poisons that lock, and the
//! segment updater's next garbage collection then panics; a panic on that thread makes rayon
//! abort the process. So `dir-write` takes I/O errors anywhere, but a panic only where the
//! writing thread can die (Tantivy's indexing threads; `merge` for merge threads, whose panics
//! Tantivy catches, and which never fires in `.managed.json`). The tests panic in segment
//! serialization (`FieldSerializer::close_term`) and in merges instead.
//!
//! Tantivy's own fail points (active with the same feature; they share `fail`'s registry):
//!
//! | name | where | notes |
//! |---|---|---|
//! | `save_metas` | before every `meta.json` write: commits, the end of each merge, index creation | `return(msg)` fails it with an I/O error; `meta.json` is left untouched |
//! | `FieldSerializer::close_term` | as each term's postings are closed while a segment is serialized: new segments at commit, and merges | `return(msg)` gives an I/O error |
//! | `SegmentReader::open#middle` | while a segment is opened (reader reloads, merges, opening an index) | no return value: only `panic`, `sleep`... (`return` panics) |
//!
//! Tantivy has no fail point of its own in the merge path, hence `merge` above: the directory
//! wrapper recognizes merge threads by the name Tantivy gives them.

use std::io;
use std::path::Path;

use tantivy::{Index, TantivyError};

/// Before a batch of records is written to the write-ahead log.
pub const WAL_APPEND: &str = "wal-append";
/// Before the write-ahead log's fsync.
pub const WAL_FSYNC: &str = "wal-fsync";
/// Before Tantivy's `prepare_commit`.
pub const COMMIT_BEFORE: &str = "commit-before";
/// Between `prepare_commit` and the commit itself.
pub const COMMIT_PREPARED: &str = "commit-prepared";
/// Every write through an index's Tantivy directory.
pub const DIR_WRITE: &str = "dir-write";
/// Writes through an index's Tantivy directory from Tantivy's merge threads.
pub const MERGE: &str = "merge";
/// Before a search's collectors run.
pub const SEARCH_EXECUTE: &str = "search-execute";

/// Every fail point of this crate.
pub const ALL: [&str; 7] = [
    WAL_APPEND,
    WAL_FSYNC,
    COMMIT_BEFORE,
    COMMIT_PREPARED,
    DIR_WRITE,
    MERGE,
    SEARCH_EXECUTE,
];

/// Tantivy's own fail points (with the `failpoints` feature).
pub const TANTIVY: [&str; 3] = [
    "save_metas",
    "FieldSerializer::close_term",
    "SegmentReader::open#middle",
];

/// Evaluates fail point `name`: `return(N)` gives an I/O error with errno `N` (default EIO),
/// as a real disk would.
#[cfg(feature = "failpoints")]
pub(crate) fn io_point(name: &str) -> io::Result<()> {
    fail::fail_point!(name, |msg: Option<String>| {
        Err(io::Error::from_raw_os_error(
            msg.and_then(|m| m.trim().parse().ok()).unwrap_or(5), // EIO
        ))
    });
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn io_point(_name: &str) -> io::Result<()> {
    Ok(())
}

/// Evaluates fail point `name`: `return(msg)` gives `TantivyError::InternalError` naming the
/// fail point (classified `internal`).
#[cfg(feature = "failpoints")]
pub(crate) fn internal_point(name: &str) -> Result<(), TantivyError> {
    fail::fail_point!(name, |msg: Option<String>| {
        Err(TantivyError::InternalError(format!(
            "injected by fail point {name}{}",
            msg.map(|m| format!(": {m}")).unwrap_or_default()
        )))
    });
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn internal_point(_name: &str) -> Result<(), TantivyError> {
    Ok(())
}

/// Opens the Tantivy index in `dir`: on an `MmapDirectory`, wrapped in a directory that
/// evaluates `merge` and `dir-write` on every write when fail points are compiled in.
pub(crate) fn open_index(dir: &Path) -> tantivy::Result<Index> {
    #[cfg(feature = "failpoints")]
    {
        Index::open(directory::FaultyDirectory::open(dir)?)
    }
    #[cfg(not(feature = "failpoints"))]
    {
        Index::open_in_dir(dir)
    }
}

#[cfg(feature = "failpoints")]
mod directory {
    use std::io::{self, BufWriter, Write};
    use std::path::Path;
    use std::sync::Arc;

    use tantivy::directory::error::{
        DeleteError, LockError, OpenDirectoryError, OpenReadError, OpenWriteError,
    };
    use tantivy::directory::{
        AntiCallToken, Directory, DirectoryLock, FileHandle, Lock, MmapDirectory, TerminatingWrite,
        WatchCallback, WatchHandle, WritePtr,
    };

    use super::{DIR_WRITE, MERGE, io_point};

    /// An `MmapDirectory` whose writes pass the `merge` (on merge threads) and `dir-write`
    /// fail points first. Reads, deletes, locks and watches go straight to the inner directory.
    #[derive(Debug, Clone)]
    pub(crate) struct FaultyDirectory {
        inner: MmapDirectory,
    }

    impl FaultyDirectory {
        /// Opens the folder `dir` (which must exist).
        pub(crate) fn open(dir: &Path) -> Result<FaultyDirectory, OpenDirectoryError> {
            Ok(FaultyDirectory {
                inner: MmapDirectory::open(dir)?,
            })
        }
    }

    /// Tantivy names the threads of its merge pool `merge_thread_<i>`.
    fn on_merge_thread() -> bool {
        std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("merge_thread_"))
    }

    fn write_point() -> io::Result<()> {
        if on_merge_thread() {
            io_point(MERGE)?;
        }
        io_point(DIR_WRITE)
    }

    impl Directory for FaultyDirectory {
        fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
            self.inner.get_file_handle(path)
        }

        fn delete(&self, path: &Path) -> Result<(), DeleteError> {
            self.inner.delete(path)
        }

        fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
            self.inner.exists(path)
        }

        fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
            let wrap = |e| OpenWriteError::wrap_io_error(e, path.to_path_buf());
            write_point().map_err(wrap)?;
            // Unwrap the inner buffer (empty: nothing was written) so data is buffered once.
            let inner = self
                .inner
                .open_write(path)?
                .into_inner()
                .map_err(|e| wrap(e.into_error()))?;
            Ok(BufWriter::new(Box::new(FaultyWriter { inner })))
        }

        fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
            self.inner.atomic_read(path)
        }

        fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
            // Not `merge`: a merge's atomic write is `.managed.json`, written under the lock of
            // Tantivy's `ManagedDirectory`, which a panic there would poison for good.
            io_point(DIR_WRITE)?;
            self.inner.atomic_write(path, data)
        }

        fn sync_directory(&self) -> io::Result<()> {
            self.inner.sync_directory()
        }

        fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
            self.inner.acquire_lock(lock)
        }

        fn watch(&self, watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
            self.inner.watch(watch_callback)
        }
    }

    /// A file being written: each write and the final flush+fsync pass the fail points.
    struct FaultyWriter {
        inner: Box<dyn TerminatingWrite + Send + Sync>,
    }

    impl Write for FaultyWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            write_point()?;
            self.inner.write(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    impl TerminatingWrite for FaultyWriter {
        fn terminate_ref(&mut self, token: AntiCallToken) -> io::Result<()> {
            write_point()?;
            self.inner.terminate_ref(token)
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every fail point is in the tables of this module's docs and of ARCHITECTURE.md.
    #[test]
    fn every_fail_point_is_listed_in_the_docs() {
        let here = include_str!("faults.rs");
        let arch = include_str!("../../../ARCHITECTURE.md");
        for name in super::ALL.iter().chain(&super::TANTIVY) {
            assert!(
                here.contains(&format!("//! | `{name}` |")),
                "{name} is missing from the faults module docs"
            );
            assert!(
                arch.contains(&format!("| `{name}`")),
                "{name} is missing from ARCHITECTURE.md"
            );
        }
    }
}
