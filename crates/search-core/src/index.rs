//! One open index: its Tantivy handles, the lazily opened writer, stats and document operations.

use std::borrow::Cow;
use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde_json::{Map, Value};
use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::TermQuery;
use tantivy::schema::{IndexRecordOption, OwnedValue, Value as _};
use tantivy::{
    Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, TantivyDocument, TantivyError,
    Term,
};

use crate::catalog::{IndexMeta, TANTIVY_DIR};
use crate::error::{CoreError, Result};
use crate::query::{QueryBuilder, QueryLimits};
use crate::schema::{FieldType, IndexKind, Layout, SchemaSpec, build_schema};
use crate::wal::{Durability, ReplayStats, WAL_DIR, Wal, WalOp, WalRecord};

/// Settings for opening indexes.
#[derive(Debug, Clone)]
pub struct IndexConfig {
    /// Memory for the Tantivy writer's in-memory segments, split among its threads
    /// (Tantivy needs at least 15 MB per thread).
    pub writer_heap_bytes: usize,
    /// Writer threads; `None` lets Tantivy choose (one per core, up to 8).
    pub writer_threads: Option<usize>,
    /// Limits applied to every query.
    pub query_limits: QueryLimits,
    /// Decompressed document-store blocks kept per segment (Tantivy's default is 100). Hits
    /// fetch their stored fields from 16 KiB compressed blocks; a larger cache saves
    /// decompressing the same block again for popular documents, at up to ~16 KiB of memory
    /// per block per segment.
    pub doc_cache_blocks: usize,
    /// When writes to documents indexes are acknowledged (see [`Durability`]).
    pub durability: Durability,
    /// Stored documents rendered as JSON once and reused by later searches (see
    /// [`crate::DocCache`]); share one among the indexes of a catalog. `None`: every hit is
    /// fetched from the document store and serialized again.
    pub doc_cache: Option<std::sync::Arc<crate::DocCache>>,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            writer_heap_bytes: 256 << 20,
            writer_threads: None,
            query_limits: QueryLimits::default(),
            doc_cache_blocks: 512,
            durability: Durability::Request,
            doc_cache: None,
        }
    }
}

/// Size and shape of an index.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IndexStats {
    /// Index name.
    pub name: String,
    /// What the index holds.
    pub kind: IndexKind,
    /// Searchable (committed, not deleted) documents; for files indexes, chunks.
    pub docs: u64,
    /// Deleted documents not yet merged away.
    pub deleted_docs: u64,
    /// Committed segments.
    pub segments: usize,
    /// Bytes of every file in the index folder.
    pub bytes_on_disk: u64,
}

/// Outcome of ingesting a batch of JSON documents.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct IngestReport {
    /// Documents accepted (inserted or replaced).
    pub indexed: u64,
    /// Lines or elements rejected.
    pub failed: u64,
    /// Why each rejected line failed (1-based line or element number): the first
    /// [`MAX_LINE_ERRORS`]; `failed` counts them all.
    pub errors: Vec<LineError>,
}

/// Rejected lines listed in an [`IngestReport`] (a body of a million bad lines would
/// otherwise be answered with a list far larger than itself).
pub const MAX_LINE_ERRORS: usize = 1000;

/// A rejected input line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number (NDJSON) or element number (JSON array).
    pub line: u64,
    /// What was wrong with it.
    pub reason: String,
}

/// An open index. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct SearchIndex {
    pub(crate) name: String,
    dir: PathBuf,
    kind: IndexKind,
    schema_spec: Option<SchemaSpec>,
    pub(crate) source: Mutex<Option<PathBuf>>,
    pub(crate) index: Index,
    pub(crate) reader: IndexReader,
    pub(crate) layout: Layout,
    pub(crate) queries: QueryBuilder,
    pub(crate) config: IndexConfig,
    writer: Mutex<WriterSlot>,
    /// What the last opening of the write-ahead log replayed.
    replay: Mutex<Option<ReplayStats>>,
    /// The oldest log position a retained snapshot needs: commits keep the log from there.
    wal_floor: AtomicU64,
    /// One snapshot at a time per handle.
    snapshotting: Mutex<()>,
    /// Set while the disk is full after a failed reopen of the writer.
    reopen: Mutex<ReopenBackoff>,
    /// Writes were handed to the writer since its last successful commit (set under the
    /// writer lock before they are, cleared by the commit): Tantivy's arena holds them.
    uncommitted: std::sync::atomic::AtomicBool,
}

/// Reopening a writer replays the log since the last commit, then commits. While the disk is
/// full that commit fails again; retrying it on every write would replay the same records
/// over and over (seconds each after a bulk load), so for a while writes are refused at once
/// with the same answer. The wait doubles from [`ReopenBackoff::FIRST`] up to
/// [`ReopenBackoff::MAX`] and is forgotten once a reopen succeeds: writes resume within
/// seconds of space coming back.
#[derive(Debug, Default)]
struct ReopenBackoff {
    until: Option<std::time::Instant>,
    wait: std::time::Duration,
    why: String,
}

impl ReopenBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(250);
    const MAX: std::time::Duration = std::time::Duration::from_secs(2);
}

/// The writer of an index and, for documents indexes, its write-ahead log: both held by
/// whoever holds the writer lock.
struct OpenWriter {
    writer: IndexWriter,
    wal: Option<Arc<Wal>>,
    /// A Tantivy call failed (e.g. ENOSPC while writing a segment). The writer is not to be
    /// trusted after that: a failed `prepare_commit` leaves it without its indexing threads,
    /// and documents added afterwards are silently dropped by the next commit. It is thrown
    /// away at its next use and a fresh one replays the log from the last commit.
    failed: bool,
}

/// One write, converted and ready to log and apply.
enum Prepared<'a> {
    Upsert {
        id: String,
        /// The object as JSON text, for the write-ahead log: borrowed from the request body
        /// when it came as an NDJSON line.
        json: Cow<'a, [u8]>,
        doc: TantivyDocument,
    },
    Delete {
        id: String,
    },
}

/// The writer of an index handle: opened on first write, closed for good at shutdown.
enum WriterSlot {
    Idle,
    Open(Box<OpenWriter>),
    /// [`SearchIndex::close_writer`] or [`SearchIndex::commit_and_close`] ran: writes through
    /// this handle fail with [`CoreError::IndexClosed`] instead of quietly reopening a writer
    /// whose documents nobody would commit.
    Closed,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of our locks leaves plain data behind, never a broken invariant
    // spanning several fields, so recovering the guard is sound.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SearchIndex {
    pub(crate) fn create_in(name: &str, dir: &Path, meta: &IndexMeta) -> Result<()> {
        let (schema, _) = build_schema(meta.kind, meta.schema.as_ref())?;
        let tdir = dir.join(TANTIVY_DIR);
        let mmap = MmapDirectory::open(&tdir)
            .map_err(|e| CoreError::tantivy(name, "create", TantivyError::from(e)))?;
        Index::create(mmap, schema, IndexSettings::default())
            .map_err(|e| CoreError::tantivy(name, "create", e))?;
        Ok(())
    }

    pub(crate) fn open_in(name: &str, dir: &Path, config: &IndexConfig) -> Result<SearchIndex> {
        let meta = IndexMeta::read(dir)?;
        let (expected, layout) = build_schema(meta.kind, meta.schema.as_ref())?;
        let tdir = dir.join(TANTIVY_DIR);
        let index =
            crate::faults::open_index(&tdir).map_err(|e| CoreError::tantivy(name, "open", e))?;
        if index.schema() != expected {
            return Err(CoreError::BadMetadata {
                path: dir.join(crate::catalog::META_FILE),
                detail: "the Tantivy schema on disk does not match the index metadata".into(),
            });
        }
        // Tantivy can panic on a malformed segment file (an overflow in its composite-file
        // parser): report it as damage instead of taking the process down.
        let reader = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            index
                .reader_builder()
                .reload_policy(ReloadPolicy::OnCommitWithDelay)
                .doc_store_cache_num_blocks(config.doc_cache_blocks)
                .try_into()
        }))
        .unwrap_or_else(|_| {
            Err(TantivyError::DataCorruption(
                tantivy::error::DataCorruption::comment_only(
                    "opening the index's segments panicked: a file is malformed",
                ),
            ))
        })
        .map_err(|e| match e {
            // Tantivy's reader creates a lock file next to the index.
            TantivyError::LockFailure(tantivy::directory::error::LockError::IoError(io), _)
                if io.raw_os_error() == Some(30) =>
            {
                CoreError::io(
                    &tdir,
                    std::io::Error::new(
                        io.kind(),
                        "the index folder is read-only, and opening an index needs to create a \
                         lock file in it",
                    ),
                )
            }
            e => CoreError::tantivy(name, "open reader", e),
        })?;
        let queries = QueryBuilder::new(&index, layout.default_fields());
        Ok(SearchIndex {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            kind: meta.kind,
            schema_spec: meta.schema,
            source: Mutex::new(meta.source),
            index,
            reader,
            layout,
            queries,
            config: config.clone(),
            writer: Mutex::new(WriterSlot::Idle),
            replay: Mutex::new(None),
            wal_floor: AtomicU64::new(crate::snapshot::wal_floor(dir).unwrap_or(u64::MAX)),
            snapshotting: Mutex::new(()),
            reopen: Mutex::new(ReopenBackoff::default()),
            uncommitted: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The generation of the searcher now served: it changes with every commit that becomes
    /// visible, so cached answers can be keyed by it.
    pub fn generation(&self) -> u64 {
        self.reader.searcher().generation().generation_id()
    }

    /// Deletes files no commit or merge needs any more (e.g. left by a crash). Only while the
    /// writer is open (it owns the lock that makes this safe); returns the files removed.
    pub fn garbage_collect(&self) -> Result<usize> {
        let guard = lock(&self.writer);
        let WriterSlot::Open(ow) = &*guard else {
            return Ok(0);
        };
        let gc = ow.writer.garbage_collect_files();
        drop(guard);
        let result = gc
            .wait()
            .map_err(|e| CoreError::tantivy(&self.name, "collect garbage", e))?;
        Ok(result.deleted_files.len())
    }

    /// Whether the writer is open (holding its memory arena and the index's lock).
    pub fn writer_is_open(&self) -> bool {
        matches!(&*lock(&self.writer), WriterSlot::Open(_))
    }

    /// The writer memory this index may use while its writer is open: Tantivy's arena, which
    /// can reach about twice its setting while a segment is being flushed.
    pub fn writer_memory_bound(&self) -> u64 {
        2 * self.config.writer_heap_bytes as u64
    }

    /// Index name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the index holds.
    pub fn kind(&self) -> IndexKind {
        self.kind
    }

    /// The index folder (metadata + Tantivy files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The explicit schema, if any.
    pub fn schema_spec(&self) -> Option<&SchemaSpec> {
        self.schema_spec.as_ref()
    }

    /// The underlying Tantivy index (for tools that need raw access, e.g. verification).
    pub fn tantivy_index(&self) -> &Index {
        &self.index
    }

    /// Fails with [`CoreError::WrongKind`] unless this is a documents index.
    pub fn require_documents(&self) -> Result<()> {
        self.require_kind(IndexKind::Documents)
    }

    pub(crate) fn require_kind(&self, expected: IndexKind) -> Result<()> {
        if self.kind == expected {
            Ok(())
        } else {
            Err(CoreError::WrongKind {
                name: self.name.clone(),
                actual: self.kind.as_str(),
                expected: expected.as_str(),
            })
        }
    }

    /// Runs `f` with the writer, opening it on first use. Opening fails fast with
    /// [`CoreError::WriterLocked`] when another writer holds the index.
    pub(crate) fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut IndexWriter) -> Result<T>,
    ) -> Result<T> {
        self.with_open(|ow| {
            self.uncommitted.store(true, Ordering::SeqCst);
            f(&mut ow.writer)
        })
    }

    /// Whether writes were handed to the writer since its last successful commit (the memory
    /// they hold in Tantivy's arena is released by the commit).
    pub fn has_uncommitted_writes(&self) -> bool {
        self.uncommitted.load(Ordering::SeqCst)
    }

    /// Runs `f` with the writer and the log, opening both (and replaying the log) on first use.
    fn with_open<T>(&self, f: impl FnOnce(&mut OpenWriter) -> Result<T>) -> Result<T> {
        let mut guard = self.writer_slot();
        if matches!(*guard, WriterSlot::Idle) {
            *guard = WriterSlot::Open(Box::new(self.reopen()?));
        }
        let result = match &mut *guard {
            WriterSlot::Open(w) => f(w),
            _ => Err(CoreError::IndexClosed {
                name: self.name.clone(),
            }),
        };
        // A panic in one of Tantivy's indexing threads kills the writer for good: mark it
        // failed, so the next use drops it (retiring its log) and opens a fresh one, replaying
        // the log, instead of every write failing until a restart.
        if let Err(CoreError::Tantivy {
            source: TantivyError::ErrorInThread(_) | TantivyError::Poisoned,
            ..
        }) = &result
            && let WriterSlot::Open(w) = &mut *guard
        {
            tracing::error!(index = %self.name, "the index writer died; it is reopened on the next write");
            w.failed = true;
        }
        result
    }

    /// The writer slot, a writer marked failed dropped first (which releases its lock): the
    /// next use opens a fresh one, replaying the log, so nothing acknowledged is lost.
    fn writer_slot(&self) -> MutexGuard<'_, WriterSlot> {
        let mut guard = lock(&self.writer);
        if matches!(&*guard, WriterSlot::Open(w) if w.failed) {
            tracing::warn!(index = %self.name, "dropping the index writer after a failed write or commit; the next write reopens it and replays the write-ahead log");
            if let WriterSlot::Open(w) = std::mem::replace(&mut *guard, WriterSlot::Idle)
                && let Some(wal) = &w.wal
            {
                wal.retire();
            }
        }
        guard
    }

    /// [`SearchIndex::open_slot`], unless the disk was full at the last attempt and its wait
    /// (see [`ReopenBackoff`]) is not over: then the same error at once.
    fn reopen(&self) -> Result<OpenWriter> {
        let now = std::time::Instant::now();
        {
            let b = lock(&self.reopen);
            if let Some(until) = b.until.filter(|u| *u > now) {
                return Err(CoreError::io(
                    self.dir.join(WAL_DIR),
                    std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        format!(
                            "{} (writes are refused for {} ms more, then the log is replayed \
                             again)",
                            b.why,
                            (until - now).as_millis().max(1)
                        ),
                    ),
                ));
            }
        }
        let opened = self.open_slot();
        let mut b = lock(&self.reopen);
        match &opened {
            Ok(_) => *b = ReopenBackoff::default(),
            Err(e) if search_error::Classify::code(e) == search_error::ErrorCode::StorageFull => {
                b.wait = (b.wait * 2).clamp(ReopenBackoff::FIRST, ReopenBackoff::MAX);
                b.until = Some(std::time::Instant::now() + b.wait);
                b.why = e.to_string();
                tracing::warn!(index = %self.name, error = %e, wait_ms = b.wait.as_millis() as u64, "the disk is full: the writer is not reopened (nor the log replayed) before the wait is over");
            }
            Err(_) => {}
        }
        opened
    }

    /// Opens the writer; for documents indexes also the log, applying again every record the
    /// last commit does not cover, and committing them.
    fn open_slot(&self) -> Result<OpenWriter> {
        let mut writer = self.open_writer()?;
        if self.kind != IndexKind::Documents {
            return Ok(OpenWriter {
                writer,
                wal: None,
                failed: false,
            });
        }
        // A process killed in the middle of a commit leaves that commit's files behind (e.g.
        // `SEGMENT.OPSTAMP.del`). The replay below hands out the same opstamps again and
        // Tantivy refuses to overwrite a file, so recovery would fail for good: delete what
        // the last commit does not use first. Best effort: a failure (a full disk) only means
        // the collision may still happen.
        if let Err(e) = writer.garbage_collect_files().wait() {
            tracing::warn!(index = %self.name, error = %e, "could not delete files left by an unfinished commit");
        }
        let committed = self.committed_wal_seq()?;
        tracing::debug!(index = %self.name, opstamp = writer.commit_opstamp(), wal_seq = committed, "writer opened");
        let started = std::time::Instant::now();
        let (wal, stats) = Wal::open(&self.dir.join(WAL_DIR), committed, |seq, record| {
            match record {
                WalRecord::Upsert { id, json } => {
                    let value: Value =
                        serde_json::from_slice(&json).map_err(|e| CoreError::WalCorrupt {
                            path: self.dir.join(WAL_DIR),
                            offset: 0,
                            detail: format!("record {seq} holds invalid JSON: {e}"),
                        })?;
                    let (_, doc) = self.json_to_doc(value, Some(id.clone())).map_err(|e| {
                        CoreError::WalCorrupt {
                            path: self.dir.join(WAL_DIR),
                            offset: 0,
                            detail: format!("record {seq} no longer fits the index: {e}"),
                        }
                    })?;
                    writer.delete_term(self.id_term(&id));
                    writer.add_document(doc).map_err(|e| {
                        CoreError::tantivy(&self.name, "replay", dead_writer_cause(&mut writer, e))
                    })?;
                }
                WalRecord::Delete { id } => {
                    writer.delete_term(self.id_term(&id));
                }
            }
            tracing::trace!(index = %self.name, seq, opstamp_after = writer.commit_opstamp(), "replayed");
            if seq % 10_000 == 0 {
                tracing::info!(index = %self.name, record = seq, "replaying the write-ahead log");
            }
            Ok(())
        })?;
        if stats.replayed > 0 {
            let covered = wal.written_seq();
            commit_with_payload(&mut writer, Some(covered))
                .map_err(|e| CoreError::tantivy(&self.name, "commit replayed writes", e))?;
            wal.truncate_through(covered.min(self.wal_floor.load(Ordering::SeqCst)))?;
            self.reload()?;
            tracing::info!(
                index = %self.name,
                replayed = stats.replayed,
                torn_bytes = stats.torn_bytes,
                covered_damage = stats.covered_damage,
                took_ms = started.elapsed().as_millis() as u64,
                "write-ahead log replayed and committed"
            );
        }
        *lock(&self.replay) = Some(stats);
        Ok(OpenWriter {
            writer,
            wal: Some(Arc::new(wal)),
            failed: false,
        })
    }

    /// The last log record the committed index covers (0: none).
    fn committed_wal_seq(&self) -> Result<u64> {
        let metas = self
            .index
            .load_metas()
            .map_err(|e| CoreError::tantivy(&self.name, "read commit metadata", e))?;
        Ok(payload_wal_seq(metas.payload.as_deref()).unwrap_or(0))
    }

    /// Documents in the last commit (which the reader may not show yet).
    fn committed_docs(&self) -> Result<u64> {
        let metas = self
            .index
            .load_metas()
            .map_err(|e| CoreError::tantivy(&self.name, "read commit metadata", e))?;
        Ok(metas.segments.iter().map(|s| u64::from(s.num_docs())).sum())
    }

    /// Opens the writer now (for documents indexes: replays the write-ahead log and commits
    /// what it held) instead of on the first write. Returns what the replay did.
    pub fn recover(&self) -> Result<ReplayStats> {
        self.with_open(|_| Ok(()))?;
        Ok(lock(&self.replay).clone().unwrap_or_default())
    }

    /// Takes a snapshot of the last commit (after committing pending writes, so it holds
    /// every acknowledged write), without stopping writes for longer than it takes to
    /// hard-link the commit's files. See the `snapshot` module docs.
    pub fn snapshot(&self) -> Result<crate::snapshot::SnapshotInfo> {
        let _one = lock(&self.snapshotting);
        let root = self.dir.join(crate::snapshot::SNAPSHOT_DIR);
        let io = |p: &Path, e: std::io::Error| CoreError::io(p, e);
        fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
        let staging = root.join(format!(".tmp-pin-{}", crate::snapshot::now_ms()));
        let tdir = self.dir.join(TANTIVY_DIR);
        let mut attempt = 0;
        let (files, wal_seq, docs) = loop {
            attempt += 1;
            let _ = fs::remove_dir_all(&staging);
            fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
            // Holding the writer lock keeps commits out; a merge finishing meanwhile can still
            // delete a merged-away segment's files, which shows as NotFound: try again.
            let mut guard = self.writer_slot();
            if let WriterSlot::Open(ow) = &mut *guard {
                self.commit_open(ow)?;
            }
            let listed = crate::integrity::committed_files(&self.index)
                .map_err(|e| CoreError::tantivy(&self.name, "snapshot", e))?;
            let mut pinned = Vec::new();
            let mut vanished = None;
            for f in &listed {
                let name = f.to_string_lossy().into_owned();
                match fs::hard_link(tdir.join(f), staging.join(f)) {
                    Ok(()) => pinned.push(name),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        vanished = Some(name);
                        break;
                    }
                    Err(e) => return Err(io(&tdir.join(f), e)),
                }
            }
            drop(guard);
            match vanished {
                None => break (pinned, self.committed_wal_seq()?, self.committed_docs()?),
                Some(name) if attempt >= 5 => {
                    let _ = fs::remove_dir_all(&staging);
                    return Err(CoreError::SnapshotDamaged {
                        detail: format!("{name} vanished while pinning the commit's files"),
                    });
                }
                Some(_) => continue,
            }
        };
        let result = crate::snapshot::materialize(&self.dir, &staging, &files, wal_seq, docs);
        let _ = fs::remove_dir_all(&staging);
        let info = result?;
        self.refresh_wal_floor();
        Ok(info)
    }

    /// Deletes all but the newest `keep` snapshots; the log is then kept only back to the
    /// oldest remaining one. Returns how many were deleted.
    pub fn prune_snapshots(&self, keep: usize) -> Result<usize> {
        let _one = lock(&self.snapshotting);
        let removed = crate::snapshot::prune_snapshots(&self.dir, keep)?;
        self.refresh_wal_floor();
        Ok(removed)
    }

    /// The retained snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<crate::snapshot::SnapshotInfo>> {
        crate::snapshot::list_snapshots(&self.dir)
    }

    fn refresh_wal_floor(&self) {
        let floor = crate::snapshot::wal_floor(&self.dir).unwrap_or(u64::MAX);
        self.wal_floor.store(floor, Ordering::SeqCst);
    }

    /// Checks every file of the last commit and the log (see [`crate::verify_index_dir`]).
    pub fn verify(&self) -> crate::integrity::VerifyReport {
        crate::integrity::verify_index_dir(&self.name, &self.dir)
    }

    /// Bytes held by the write-ahead log (0 until the writer is open).
    pub fn wal_bytes(&self) -> u64 {
        match &*lock(&self.writer) {
            WriterSlot::Open(ow) => ow.wal.as_ref().map_or(0, |w| w.bytes()),
            _ => 0,
        }
    }

    /// Logs `ops` (one write, not yet durable: see [`SearchIndex::settle`]) and hands them to
    /// the writer, in the same order under the writer lock. Returns the log position to wait
    /// for before acknowledging them.
    fn apply(&self, ops: Vec<Prepared<'_>>) -> Result<Logged> {
        if ops.is_empty() {
            return Ok(None);
        }
        self.with_open(|ow| {
            self.uncommitted.store(true, Ordering::SeqCst);
            let ticket = match &ow.wal {
                Some(wal) => {
                    let logged: Vec<WalOp<'_>> = ops
                        .iter()
                        .map(|op| match op {
                            Prepared::Upsert { id, json, .. } => WalOp::Upsert {
                                id,
                                json: &json[..],
                            },
                            Prepared::Delete { id } => WalOp::Delete { id },
                        })
                        .collect();
                    wal.append(&logged)?.map(|t| (wal.clone(), t))
                }
                None => None,
            };
            for op in ops {
                match op {
                    Prepared::Upsert { id, doc, .. } => {
                        ow.writer.delete_term(self.id_term(&id));
                        if let Err(e) = ow.writer.add_document(doc) {
                            ow.failed = true;
                            let e = dead_writer_cause(&mut ow.writer, e);
                            return Err(CoreError::tantivy(&self.name, "add document", e));
                        }
                    }
                    Prepared::Delete { id } => {
                        ow.writer.delete_term(self.id_term(&id));
                    }
                }
            }
            Ok(ticket)
        })
    }

    /// Waits until what [`SearchIndex::apply`] logged is on disk when writes are acknowledged
    /// per request (with `async` durability the log is synced at commits). A sync covers every
    /// earlier record too, so a batch applied in parts settles its last part only.
    fn settle(&self, logged: Logged) -> Result<()> {
        if let (Some((wal, ticket)), Durability::Request) = (logged, self.config.durability) {
            wal.sync_to(ticket)?;
        }
        Ok(())
    }

    /// Converts a JSON object for logging and indexing. `raw` is its text when the caller has
    /// it (an NDJSON line), saving a serialization.
    fn prepare_upsert<'a>(&self, doc: Value, raw: Option<Cow<'a, [u8]>>) -> Result<Prepared<'a>> {
        let json = match raw {
            Some(r) => r,
            None => Cow::Owned(
                serde_json::to_vec(&doc).map_err(|e| CoreError::invalid_doc(e.to_string()))?,
            ),
        };
        let (id, doc) = self.json_to_doc(doc, None)?;
        Ok(Prepared::Upsert { id, json, doc })
    }

    fn open_writer(&self) -> Result<IndexWriter> {
        let heap = self.config.writer_heap_bytes;
        let opened = match self.config.writer_threads {
            Some(n) => self.index.writer_with_num_threads(n, heap),
            None => self.index.writer(heap),
        };
        let writer = opened.map_err(|e| match e {
            TantivyError::LockFailure(tantivy::directory::error::LockError::LockBusy, _) => {
                CoreError::WriterLocked {
                    name: self.name.clone(),
                    lock: self.dir.join(TANTIVY_DIR).join(".tantivy-writer.lock"),
                }
            }
            other => CoreError::tantivy(&self.name, "open writer", other),
        })?;
        burn_reused_opstamp(&writer, self.layout.id());
        Ok(writer)
    }

    /// Makes every write so far durable in the index and visible to searches.
    /// Returns Tantivy's opstamp of the commit.
    pub fn commit(&self) -> Result<u64> {
        let opstamp = self.with_open(|ow| self.commit_open(ow))?;
        self.reload()?;
        Ok(opstamp)
    }

    /// Syncs the log, commits with the log position the commit covers, then drops the log
    /// segments the commit made unnecessary.
    fn commit_open(&self, ow: &mut OpenWriter) -> Result<u64> {
        let covered = match &ow.wal {
            Some(wal) => Some(wal.sync_all()?),
            None => None,
        };
        let opstamp = commit_with_payload(&mut ow.writer, covered).map_err(|e| {
            ow.failed = true;
            CoreError::tantivy(&self.name, "commit", e)
        })?;
        // Under the writer lock: no write was handed over since the commit started.
        self.uncommitted.store(false, Ordering::SeqCst);
        tracing::debug!(index = %self.name, opstamp, wal_seq = ?covered, "committed");
        let keep_from = self.wal_floor.load(Ordering::SeqCst);
        if let (Some(wal), Some(seq)) = (&ow.wal, covered)
            && let Err(e) = wal.truncate_through(seq.min(keep_from))
        {
            // Harmless: covered records are skipped on replay; the next commit retries.
            tracing::warn!(index = %self.name, error = %e, "could not drop committed log segments");
        }
        Ok(opstamp)
    }

    /// Releases the writer (and its lock) after waiting for its threads, and closes this handle
    /// for writing. Uncommitted writes are discarded: use [`SearchIndex::commit_and_close`] to
    /// keep them.
    pub fn close_writer(&self) {
        let mut guard = lock(&self.writer);
        if let WriterSlot::Open(w) = std::mem::replace(&mut *guard, WriterSlot::Closed) {
            let _ = w.writer.wait_merging_threads();
        }
    }

    /// Commits pending writes and closes the handle for writing, atomically with respect to
    /// other writes through this handle: a write either lands before the commit (and is kept)
    /// or fails with [`CoreError::IndexClosed`] (and was never acknowledged). On a commit
    /// error the writer stays open, so the caller can retry.
    pub fn commit_and_close(&self) -> Result<()> {
        let mut guard = self.writer_slot();
        if let WriterSlot::Open(w) = &mut *guard {
            self.commit_open(w)?;
        }
        if let WriterSlot::Open(w) = std::mem::replace(&mut *guard, WriterSlot::Closed) {
            let _ = w.writer.wait_merging_threads();
        }
        drop(guard);
        self.reload()
    }

    /// Makes the latest commit (ours or another process's) visible to searches now.
    pub fn reload(&self) -> Result<()> {
        self.reader
            .reload()
            .map_err(|e| CoreError::tantivy(&self.name, "reload", e))
    }

    /// Document counts, segments and size on disk.
    pub fn stats(&self) -> Result<IndexStats> {
        let searcher = self.reader.searcher();
        let deleted = searcher
            .segment_readers()
            .iter()
            .map(|s| u64::from(s.num_deleted_docs()))
            .sum();
        Ok(IndexStats {
            name: self.name.clone(),
            kind: self.kind,
            docs: searcher.num_docs(),
            deleted_docs: deleted,
            segments: searcher.segment_readers().len(),
            bytes_on_disk: dir_size(&self.dir)?,
        })
    }

    fn id_term(&self, id: &str) -> Term {
        Term::from_field_text(self.layout.id(), id)
    }

    /// Inserts a JSON object, replacing any document with the same id. The id is taken from
    /// `id` (else `_id`), a string or integer; one is generated when absent. Returns the id.
    /// Visible to searches after the next [`SearchIndex::commit`].
    pub fn upsert(&self, doc: Value) -> Result<String> {
        self.require_kind(IndexKind::Documents)?;
        let op = self.prepare_upsert(doc, None)?;
        let Prepared::Upsert { id, .. } = &op else {
            unreachable!("prepare_upsert returns an upsert")
        };
        let id = id.clone();
        let logged = self.apply(vec![op])?;
        self.settle(logged)?;
        Ok(id)
    }

    /// Upserts each element (a JSON object) of a batch: invalid ones are reported with their
    /// 1-based number and the rest are written, logged together with one shared fsync.
    pub fn upsert_many(&self, docs: Vec<Value>) -> Result<IngestReport> {
        self.require_kind(IndexKind::Documents)?;
        let mut batch = Batch::new(self);
        for (i, doc) in docs.into_iter().enumerate() {
            let op = self.prepare_upsert(doc, None);
            batch.push(i as u64 + 1, op)?;
        }
        batch.finish()
    }

    /// Reads JSON lines, upserting each object. A bad line is recorded with its number and
    /// reason and the rest go on; blank lines are ignored. I/O errors on the reader stop the
    /// batch (what was read before stays added). Writes are logged and handed to the index in
    /// parts of about a megabyte as they are read, with one fsync at the end.
    pub fn ingest_ndjson(&self, input: impl BufRead) -> Result<IngestReport> {
        self.require_kind(IndexKind::Documents)?;
        let mut batch = Batch::new(self);
        for (i, line) in input.split(b'\n').enumerate() {
            let line = line.map_err(|e| CoreError::io("<input>", e))?;
            batch.line(i as u64 + 1, Cow::Owned(line))?;
        }
        batch.finish()
    }

    /// [`SearchIndex::ingest_ndjson`] over text already in memory (e.g. a request body): the
    /// lines are logged from where they are, without a copy per line.
    pub fn ingest_ndjson_bytes(&self, input: &[u8]) -> Result<IngestReport> {
        self.ingest_ndjson_chunks([input])
    }

    /// [`SearchIndex::ingest_ndjson_bytes`] over text in consecutive pieces (e.g. a request
    /// body as it arrived): only lines that straddle two pieces are copied.
    pub fn ingest_ndjson_chunks<'a>(
        &self,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<IngestReport> {
        self.require_kind(IndexKind::Documents)?;
        let mut batch = Batch::new(self);
        // The start of a line begun in an earlier piece.
        let mut carry: Vec<u8> = Vec::new();
        let mut line_no = 0;
        for chunk in chunks {
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', chunk) {
                line_no += 1;
                let line = if carry.is_empty() {
                    Cow::Borrowed(&chunk[start..end])
                } else {
                    carry.extend_from_slice(&chunk[start..end]);
                    Cow::Owned(std::mem::take(&mut carry))
                };
                batch.line(line_no, line)?;
                start = end + 1;
            }
            carry.extend_from_slice(&chunk[start..]);
        }
        // The last line (empty when the text ends with a line end).
        batch.line(line_no + 1, Cow::Owned(carry))?;
        batch.finish()
    }

    /// Deletes the document with this id. Returns whether it existed in the committed view.
    pub fn delete(&self, id: &str) -> Result<bool> {
        self.require_kind(IndexKind::Documents)?;
        let existed = self.get(id)?.is_some();
        let logged = self.apply(vec![Prepared::Delete { id: id.to_string() }])?;
        self.settle(logged)?;
        Ok(existed)
    }

    /// The committed document with this id, as JSON.
    /// For files indexes the id is `path#Lstart`, as returned with hits.
    pub fn get(&self, id: &str) -> Result<Option<Value>> {
        let searcher = self.reader.searcher();
        let err = |e| CoreError::tantivy(&self.name, "get", e);
        let candidates = match &self.layout {
            Layout::Files(f) => {
                // Chunks carry no `_id` term: find the file's chunks by path, then the line.
                let Some((path, _)) = id.rsplit_once("#L") else {
                    return Ok(None);
                };
                let query = TermQuery::new(
                    Term::from_field_text(f.path_key, path),
                    IndexRecordOption::Basic,
                );
                searcher
                    .search(
                        &query,
                        &TopDocs::with_limit(MAX_CHUNKS_PER_GET).order_by_score(),
                    )
                    .map_err(err)?
            }
            _ => {
                let query = TermQuery::new(self.id_term(id), IndexRecordOption::Basic);
                searcher
                    .search(&query, &TopDocs::with_limit(1).order_by_score())
                    .map_err(err)?
            }
        };
        for (_, addr) in candidates {
            let doc: TantivyDocument = searcher
                .doc(addr)
                .map_err(|e| CoreError::tantivy(&self.name, "read document", e))?;
            let (doc_id, doc) = self.stored_document(doc);
            if doc_id == id {
                return Ok(Some(Value::Object(doc.into_json())));
            }
        }
        Ok(None)
    }

    /// Turns a JSON object into a Tantivy document for this index's layout.
    /// `id`: the id decided when the document was first accepted (replay), else taken from
    /// the document or generated.
    fn json_to_doc(&self, doc: Value, id: Option<String>) -> Result<(String, TantivyDocument)> {
        let Value::Object(mut obj) = doc else {
            return Err(CoreError::invalid_doc(format!(
                "expected a JSON object, found {}",
                json_type(&doc)
            )));
        };
        let id = match id {
            Some(id) => id,
            None => extract_id(&obj)?,
        };
        let mut tdoc = TantivyDocument::default();
        tdoc.add_text(self.layout.id(), &id);
        match &self.layout {
            Layout::Schemaless(f) => {
                let mut texts = Vec::new();
                obj.values().for_each(|v| collect_strings(v, &mut texts));
                for t in texts {
                    tdoc.add_text(f.all, t);
                }
                let owned: std::collections::BTreeMap<String, OwnedValue> = obj
                    .into_iter()
                    .map(|(k, v)| (k, OwnedValue::from(v)))
                    .collect();
                tdoc.add_object(f.source, owned);
            }
            Layout::Explicit(f) => {
                obj.remove("id");
                obj.remove("_id");
                for (key, value) in obj {
                    let Some((spec, field)) = f.fields.iter().find(|(s, _)| s.name == key) else {
                        return Err(CoreError::invalid_doc(format!(
                            "field {key:?} is not in the index schema"
                        )));
                    };
                    let values = match value {
                        Value::Array(items) => items,
                        other => vec![other],
                    };
                    for v in values {
                        add_typed(&mut tdoc, *field, spec.field_type, &key, v)?;
                    }
                }
            }
            Layout::Files(_) => unreachable!("require_kind(Documents) was checked by callers"),
        }
        Ok((id, tdoc))
    }

    /// Wraps a stored document for a hit: `(id, document)`, without converting its fields.
    pub(crate) fn stored_document(
        &self,
        doc: TantivyDocument,
    ) -> (String, crate::document::Document) {
        let id = match &self.layout {
            Layout::Files(f) => crate::files::chunk_id(
                doc.get_first(f.path)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default(),
                doc.get_first(f.line_start)
                    .and_then(|v| v.as_u64())
                    .unwrap_or(1),
            ),
            _ => doc
                .get_first(self.layout.id())
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
        };
        let source = match &self.layout {
            Layout::Schemaless(f) => Some(f.source),
            _ => None,
        };
        let doc =
            crate::document::Document::stored(doc, self.index.schema(), self.layout.id(), source);
        (id, doc)
    }
}

/// A stored value as JSON, copying each string once (no intermediate `OwnedValue`).
pub(crate) fn to_json<'a, V: tantivy::schema::Value<'a>>(v: V) -> Value {
    use tantivy::schema::document::{ReferenceValue, ReferenceValueLeaf as Leaf};
    match v.as_value() {
        ReferenceValue::Leaf(leaf) => match leaf {
            Leaf::Null => Value::Null,
            Leaf::Str(s) | Leaf::Facet(s) => Value::String(s.to_string()),
            Leaf::U64(n) => Value::from(n),
            Leaf::I64(n) => Value::from(n),
            Leaf::F64(n) => serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
            Leaf::Bool(b) => Value::Bool(b),
            Leaf::Date(d) => Value::from(d.into_timestamp_nanos()),
            Leaf::IpAddr(ip) => Value::String(ip.to_string()),
            Leaf::PreTokStr(p) => Value::String(p.text.clone()),
            Leaf::Bytes(_) | Leaf::Custom(_) => Value::Null,
        },
        ReferenceValue::Array(items) => Value::Array(items.map(to_json).collect()),
        ReferenceValue::Object(entries) => {
            Value::Object(entries.map(|(k, v)| (k.to_string(), to_json(v))).collect())
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A batch is logged and handed to the writer in parts of at most this many documents or
/// bytes, as it is read: the indexing threads start on the first part while the rest is parsed.
const BATCH_DOCS: usize = 1_000;
const BATCH_BYTES: usize = 1 << 20;

/// A position in the write-ahead log to sync before acknowledging (`None`: nothing logged).
type Logged = Option<(Arc<Wal>, crate::wal::Ticket)>;

/// A batch of upserts being read: bad documents are reported, good ones logged and applied in
/// parts ([`BATCH_DOCS`], [`BATCH_BYTES`]), and the log synced once at the end.
struct Batch<'i, 'a> {
    index: &'i SearchIndex,
    report: IngestReport,
    ops: Vec<Prepared<'a>>,
    bytes: usize,
    /// Where the first and the last part went in the log.
    first: Logged,
    logged: Logged,
}

impl<'i, 'a> Batch<'i, 'a> {
    fn new(index: &'i SearchIndex) -> Self {
        Batch {
            index,
            report: IngestReport::default(),
            ops: Vec::new(),
            bytes: 0,
            first: None,
            logged: None,
        }
    }

    /// One NDJSON line (its number is 1-based); blank lines are skipped. The line is parsed as
    /// bytes: serde_json checks the UTF-8 of its strings, so no separate pass is needed.
    fn line(&mut self, line_no: u64, line: Cow<'a, [u8]>) -> Result<()> {
        let mut text = line.trim_ascii();
        if line_no == 1 {
            // A byte-order mark some editors put at the start of a UTF-8 file.
            text = text
                .strip_prefix(b"\xEF\xBB\xBF")
                .unwrap_or(text)
                .trim_ascii();
        }
        if text.is_empty() {
            return Ok(());
        }
        let range = {
            let start = text.as_ptr() as usize - line.as_ptr() as usize;
            start..start + text.len()
        };
        let parsed: Result<Value> = serde_json::from_slice(text).map_err(|e| {
            CoreError::invalid_doc(format!("malformed JSON at column {}: {e}", e.column()))
        });
        let raw = match line {
            Cow::Borrowed(l) => Cow::Borrowed(&l[range]),
            Cow::Owned(mut l) if range.start == 0 => {
                l.truncate(range.end);
                Cow::Owned(l)
            }
            Cow::Owned(l) => Cow::Owned(l[range].to_vec()),
        };
        let op = parsed.and_then(|v| self.index.prepare_upsert(v, Some(raw)));
        self.push(line_no, op)
    }

    /// Adds a prepared write, or records why it was refused; a full part is applied.
    fn push(&mut self, item: u64, op: Result<Prepared<'a>>) -> Result<()> {
        match op {
            Ok(op) => {
                if let Prepared::Upsert { json, .. } = &op {
                    self.bytes += json.len();
                }
                self.ops.push(op);
                if self.ops.len() >= BATCH_DOCS || self.bytes >= BATCH_BYTES {
                    self.flush()?;
                }
                Ok(())
            }
            Err(e @ (CoreError::InvalidDocument { .. } | CoreError::InvalidParameter { .. })) => {
                self.report.failed += 1;
                if self.report.errors.len() < MAX_LINE_ERRORS {
                    self.report.errors.push(LineError {
                        line: item,
                        reason: e.to_string(),
                    });
                }
                Ok(())
            }
            Err(other) => Err(other),
        }
    }

    fn flush(&mut self) -> Result<()> {
        let ops = std::mem::take(&mut self.ops);
        let n = ops.len() as u64;
        if let Some(logged) = self.index.apply(ops)? {
            if self.first.is_none() {
                self.first = Some(logged.clone());
            }
            self.logged = Some(logged);
        }
        self.report.indexed += n;
        self.bytes = 0;
        Ok(())
    }

    /// Applies the rest and waits for the log (per the index's durability).
    fn finish(mut self) -> Result<IngestReport> {
        self.flush()?;
        self.index.settle(self.logged.take())?;
        // Syncing the last part covers the earlier ones, unless a failed fsync in between cut
        // them out of the log (a new epoch) or the log was replaced: then the first part's
        // own check fails and the batch is not acknowledged.
        self.index.settle(self.first.take())?;
        Ok(self.report)
    }
}

/// Tantivy answers "the index writer was killed" once an indexing thread died (e.g. ENOSPC while
/// writing a segment); joining the threads, as a commit does, gives the real cause. The commit
/// prepared for that is never committed: the writer is dropped anyway.
fn dead_writer_cause(writer: &mut IndexWriter, e: TantivyError) -> TantivyError {
    match e {
        TantivyError::ErrorInThread(_) => writer.prepare_commit().err().unwrap_or(e),
        other => other,
    }
}

/// Works around a Tantivy 0.27 bug that loses deletes after a restart.
///
/// A new `IndexWriter` hands out, as its first opstamp, the opstamp of the last commit (the
/// stamper restarts at the committed value, not one past it). Segments that took deletes in
/// that commit are marked "deletes applied up to opstamp P", and `advance_deletes` skips a
/// segment whose delete opstamp equals its target as already up to date. So when a merge of
/// committed segments starts (target: the last commit's opstamp P) after the first delete of
/// the new writer (opstamp P, too), that segment skips the delete while the merge's other
/// segments step over it, and the merged segment inherits a cursor already past it: the
/// deleted (or upserted-over) document comes back, for good. Found by the crash test (an
/// upsert replayed from the log right after a restart left two versions of a document);
/// `tests::first_delete_after_reopen_survives_a_merge` reproduces it deterministically.
///
/// The fix: spend opstamp P on a delete that matches nothing (no document has an empty id:
/// [`extract_id`] refuses one, and files chunks carry no id term at all), so every real
/// operation gets an opstamp above every segment's delete opstamp.
fn burn_reused_opstamp(writer: &IndexWriter, id_field: tantivy::schema::Field) {
    writer.delete_term(Term::from_field_text(id_field, ""));
}

/// Commits, recording in Tantivy's commit payload the last log record the commit covers.
/// The log position a commit payload written by [`commit_with_payload`] records.
pub(crate) fn payload_wal_seq(payload: Option<&str>) -> Option<u64> {
    serde_json::from_str::<Value>(payload?)
        .ok()?
        .get("wal_seq")?
        .as_u64()
}

fn commit_with_payload(writer: &mut IndexWriter, wal_seq: Option<u64>) -> tantivy::Result<u64> {
    crate::faults::io_point(crate::faults::COMMIT_BEFORE)?;
    let mut prepared = writer.prepare_commit()?;
    if let Some(seq) = wal_seq {
        prepared.set_payload(&format!("{{\"wal_seq\":{seq}}}"));
    }
    crate::faults::io_point(crate::faults::COMMIT_PREPARED)?;
    prepared.commit()
}

/// Chunks of one file looked at by a get on a files index (a 10 MiB file of 200-line chunks
/// has far fewer).
const MAX_CHUNKS_PER_GET: usize = 10_000;

/// Longest id accepted, in bytes (Tantivy terms must stay well under 64 KiB).
pub const MAX_ID_BYTES: usize = 512;

fn extract_id(obj: &Map<String, Value>) -> Result<String> {
    let (key, raw) = match (obj.get("id"), obj.get("_id")) {
        (Some(v), _) => ("id", v),
        (None, Some(v)) => ("_id", v),
        (None, None) => return Ok(uuid::Uuid::new_v4().to_string()),
    };
    let id = match raw {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        other => {
            return Err(CoreError::invalid_doc(format!(
                "\"{key}\" must be a string or an integer, found {}",
                json_type(other)
            )));
        }
    };
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(CoreError::invalid_doc(format!(
            "\"{key}\" must be 1 to {MAX_ID_BYTES} bytes long"
        )));
    }
    Ok(id)
}

fn collect_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(m) => m.values().for_each(|i| collect_strings(i, out)),
        _ => {}
    }
}

fn add_typed(
    doc: &mut TantivyDocument,
    field: tantivy::schema::Field,
    ty: FieldType,
    key: &str,
    v: Value,
) -> Result<()> {
    let mismatch = |expected: &str, v: &Value| {
        CoreError::invalid_doc(format!(
            "field {key:?} expects {expected}, found {}",
            json_type(v)
        ))
    };
    match (ty, &v) {
        (_, Value::Null) => {}
        (FieldType::Text | FieldType::String, Value::String(s)) => doc.add_text(field, s),
        (FieldType::Text | FieldType::String, _) => return Err(mismatch("a string", &v)),
        (FieldType::I64, Value::Number(n)) => doc.add_i64(
            field,
            n.as_i64()
                .ok_or_else(|| mismatch("a 64-bit signed integer", &v))?,
        ),
        (FieldType::U64, Value::Number(n)) => doc.add_u64(
            field,
            n.as_u64()
                .ok_or_else(|| mismatch("a non-negative integer", &v))?,
        ),
        (FieldType::F64, Value::Number(n)) => {
            doc.add_f64(field, n.as_f64().ok_or_else(|| mismatch("a number", &v))?)
        }
        (FieldType::Bool, Value::Bool(b)) => doc.add_bool(field, *b),
        (FieldType::I64 | FieldType::U64, _) => return Err(mismatch("an integer", &v)),
        (FieldType::F64, _) => return Err(mismatch("a number", &v)),
        (FieldType::Bool, _) => return Err(mismatch("a boolean", &v)),
    }
    Ok(())
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(CoreError::io(dir, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| CoreError::io(dir, e))?;
        let ft = entry
            .file_type()
            .map_err(|e| CoreError::io(entry.path(), e))?;
        if ft.is_dir() {
            total += dir_size(&entry.path())?;
        } else if ft.is_file() {
            // A file can vanish between listing and stat (segment merged away): not an error.
            total += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tantivy::indexer::NoMergePolicy;

    use super::IndexConfig;
    use crate::{Catalog, IndexKind};

    /// The Tantivy bug [`super::burn_reused_opstamp`] works around, step by step: a segment
    /// takes deletes in the last commit (its delete opstamp is that commit's opstamp P), the
    /// process stops, a new writer deletes a document of that segment as its first operation
    /// (opstamp P without the workaround), then a merge of the committed segments runs with
    /// another segment first, then a commit. The document must stay deleted.
    #[test]
    fn first_delete_after_reopen_survives_a_merge() {
        let dir = tempfile::tempdir().unwrap();
        // One indexing thread, so `x` and `w` share a segment.
        let config = IndexConfig {
            writer_heap_bytes: 20 << 20,
            writer_threads: Some(1),
            ..IndexConfig::default()
        };
        let catalog = Catalog::with_config(dir.path(), config).unwrap();
        {
            let index = catalog.open_or_create("d", IndexKind::Documents).unwrap();
            index
                .with_writer(|w| {
                    w.set_merge_policy(Box::new(NoMergePolicy));
                    Ok(())
                })
                .unwrap();
            index.upsert(json!({"id": "other"})).unwrap();
            index.commit().unwrap();
            index.upsert(json!({"id": "x", "v": 1})).unwrap();
            index.upsert(json!({"id": "w"})).unwrap();
            index.commit().unwrap();
            index.delete("w").unwrap();
            index.commit_and_close().unwrap();
        }
        let index = catalog.open_index("d").unwrap();
        index.recover().unwrap();
        index
            .with_writer(|w| {
                w.set_merge_policy(Box::new(NoMergePolicy));
                Ok(())
            })
            .unwrap();
        index.upsert(json!({"id": "x", "v": 2})).unwrap();
        // Merge every committed segment, the one without deletes first: its delete cursor
        // steps over the new delete and the merged segment inherits that cursor.
        let metas = index.index.searchable_segment_metas().unwrap();
        let mut ids: Vec<_> = metas
            .iter()
            .map(|m| (m.delete_opstamp().is_some(), m.id()))
            .collect();
        ids.sort();
        let ids: Vec<_> = ids.into_iter().map(|(_, id)| id).collect();
        assert_eq!(ids.len(), 2, "{metas:?}");
        index
            .with_writer(|w| {
                w.merge(&ids)
                    .wait()
                    .map_err(|e| crate::CoreError::tantivy("d", "merge", e))
            })
            .unwrap();
        index.commit().unwrap();
        let searcher = index.reader.searcher();
        let x = tantivy::query::TermQuery::new(
            index.id_term("x"),
            tantivy::schema::IndexRecordOption::Basic,
        );
        let copies = searcher.search(&x, &tantivy::collector::Count).unwrap();
        assert_eq!(
            copies, 1,
            "the upsert's delete was lost: both versions of x are live"
        );
        assert_eq!(index.get("x").unwrap().unwrap()["v"], 2);
    }
}
