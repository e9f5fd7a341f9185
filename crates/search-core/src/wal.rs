//! The write-ahead log of a documents index: every accepted write is appended (and, with
//! [`Durability::Request`], fsynced) before it is acknowledged, and replayed on the next open
//! if the index's last commit does not cover it.
//!
//! # Why not mrecordlog
//! The brief suggests Quickwit's `mrecordlog`. Reading its 0.4 source decided against it:
//! on open it *skips* a corrupted record in the middle of the log with a warning and goes on
//! (`multi_record_log.rs`: "Detected corrupted record: some data may have been lost"), where we
//! must stop the index and say so; it keeps every untruncated record in memory (a WAL of
//! 100,000 un-committed documents would be held twice); its API is async while `search-core`
//! is synchronous; and its `&mut self` writer would need our own batching for group commit
//! anyway. What we need is small: length-prefixed, checksummed records in numbered segment
//! files, a shared fsync, and a strict reader.
//!
//! # Format
//! `DIR/wal/<first seq, 20 digits>.wal` segments, each a sequence of records:
//! `len: u32 LE | crc32: u32 LE | seq: u64 LE | payload (len bytes)`, the CRC covering
//! `len`, `seq` and the payload. Payload: `kind: u8` (1 upsert, 2 delete), `id_len: u32 LE`,
//! the id, then for upserts the document's JSON text. Sequence numbers are consecutive across
//! segments. Tantivy's commit payload records the last sequence number a commit covers
//! (`{"wal_seq":N}`); segments wholly covered are deleted after the commit.
//!
//! # Recovery rules
//! Records are read in order and must decode, check and follow each other. A bad record at the
//! end of the last segment with no valid record after it is a torn append (the process died in
//! the middle of writing it, so it was never acknowledged): it is cut off with a warning.
//! Damage that can only hold records the index's last commit covers (a bad stretch followed
//! by a good record numbered at most one past the commit, records missing between segments
//! below it) loses nothing: it is skipped with a warning and counted
//! ([`ReplayStats::covered_damage`]). Anything else — a bad record followed by good ones past
//! the commit, a gap above it, a record that does not decode — is corruption of acknowledged
//! data and fails the open with [`CoreError::WalCorrupt`]; nothing is skipped silently.
//!
//! # Failures while appending
//! A failed write is cut back to where the segment ended before it (nothing of it remains, and
//! nothing of it was applied to the index). A failed fsync cuts the segment back to its last
//! synced length and bumps the log's *epoch*: every writer waiting on that fsync learns its
//! write was not made durable (it gets the error, so it is never acknowledged), even if its
//! sequence number is reused later.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::faults;
use crate::index::lock;

/// Name of the log folder inside an index folder.
pub(crate) const WAL_DIR: &str = "wal";
const HEADER_LEN: usize = 16;
/// Largest record accepted when reading (a document is at most the HTTP body limit, 16 MiB by
/// default; this leaves room for raised limits while rejecting absurd lengths at once).
const MAX_RECORD_LEN: usize = 1 << 30;
/// A segment is closed and a new one started once it is this large.
const SEGMENT_MAX_BYTES: u64 = 64 << 20;
/// After a commit that covers the whole log, the segment is replaced by a fresh one once it
/// holds this much (smaller covered segments are simply skipped on replay).
const SEGMENT_RECYCLE_BYTES: u64 = 1 << 20;
const KIND_UPSERT: u8 = 1;
const KIND_DELETE: u8 = 2;

/// When an accepted write is acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// After its log record is fsynced (concurrent writers share one fsync). The default.
    #[default]
    Request,
    /// As soon as it is in the log file; the log is fsynced by the next commit. A crash of the
    /// machine (not of the process) can lose the writes of the last refresh interval. For bulk
    /// loads that can be replayed.
    Async,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "request" => Ok(Durability::Request),
            "async" => Ok(Durability::Async),
            other => Err(format!(
                "durability must be \"request\" or \"async\", not {other:?}"
            )),
        }
    }
}

/// One logged operation, borrowed for appending.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WalOp<'a> {
    Upsert { id: &'a str, json: &'a [u8] },
    Delete { id: &'a str },
}

/// One logged operation read back for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WalRecord {
    Upsert { id: String, json: Vec<u8> },
    Delete { id: String },
}

/// Proof of an append: wait on it with [`Wal::sync_to`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    seq: u64,
    epoch: u64,
}

/// What opening the log found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayStats {
    /// Records past the last commit, applied again.
    pub replayed: u64,
    /// Records already covered by the last commit.
    pub skipped: u64,
    /// Bytes of a torn final record cut off (a crash in the middle of an append).
    pub torn_bytes: u64,
    /// Damaged bytes, or records missing between segments, holding only records the last
    /// commit already covers: nothing acknowledged is lost, they are skipped (with a warning)
    /// and go with the segment once it is truncated.
    pub covered_damage: u64,
    /// The last record in the log (0: none).
    pub last_seq: u64,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    last_seq: u64,
    path: PathBuf,
}

#[derive(Debug)]
struct State {
    file: Arc<File>,
    path: PathBuf,
    /// Bytes written to the current segment.
    len: u64,
    /// Bytes of the current segment known to be on disk.
    synced_len: u64,
    /// Last sequence number written (0: none yet).
    written_seq: u64,
    /// Last sequence number known to be on disk.
    synced_seq: u64,
    /// Bumped whenever unsynced records are cut off after a failed fsync.
    epoch: u64,
    /// The error of the last failed fsync (message, errno), for the writers that waited on it.
    last_sync_error: Option<(String, Option<i32>)>,
    syncing: bool,
    /// A cut-back that failed: the segment tail may hold records that were never made durable,
    /// so no more appends until a cut-back succeeds.
    dirty_tail: Option<u64>,
    /// Superseded by another `Wal` opened on the same folder (the index writer was reopened
    /// after a failure): it only answers the writers still waiting on its fsyncs, and no
    /// longer cuts the file, whose tail the new log owns.
    retired: bool,
    closed: Vec<Segment>,
    /// Records are encoded here before their one write: kept between appends so a bulk load
    /// does not fault in a fresh buffer each time (shrunk after an unusually large append).
    buf: Vec<u8>,
}

/// The encoding buffer kept between appends is cut back to this capacity.
const KEEP_BUF_BYTES: usize = 4 << 20;

/// The log of one index. Appends are serialized by the index's writer lock; this type's own
/// lock coordinates fsyncs (one thread syncs for all waiting writers).
#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    state: Mutex<State>,
    synced: Condvar,
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn crc(len: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn encode_into(buf: &mut Vec<u8>, seq: u64, op: &WalOp<'_>) {
    let (kind, id, json): (u8, &str, &[u8]) = match *op {
        WalOp::Upsert { id, json } => (KIND_UPSERT, id, json),
        WalOp::Delete { id } => (KIND_DELETE, id, &[]),
    };
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    buf.push(kind);
    buf.extend_from_slice(&(id.len() as u32).to_le_bytes());
    buf.extend_from_slice(id.as_bytes());
    buf.extend_from_slice(json);
    let len = (buf.len() - start - HEADER_LEN) as u32;
    let sum = crc(len, seq, &buf[start + HEADER_LEN..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&sum.to_le_bytes());
    buf[start + 8..start + 16].copy_from_slice(&seq.to_le_bytes());
}

fn decode_payload(payload: &[u8]) -> Option<WalRecord> {
    let (&kind, rest) = payload.split_first()?;
    let id_len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let id = std::str::from_utf8(rest.get(4..4 + id_len)?)
        .ok()?
        .to_string();
    let body = &rest[4 + id_len..];
    match kind {
        KIND_UPSERT => Some(WalRecord::Upsert {
            id,
            json: body.to_vec(),
        }),
        KIND_DELETE if body.is_empty() => Some(WalRecord::Delete { id }),
        _ => None,
    }
}

/// Decodes the record at the start of `buf`: `Some((seq, payload, total_len))` when it is whole
/// and its checksum holds.
fn decode_at(buf: &[u8]) -> Option<(u64, &[u8], usize)> {
    let header = buf.get(..HEADER_LEN)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?);
    let sum = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if len == 0 || len as usize > MAX_RECORD_LEN {
        return None;
    }
    let payload = buf.get(HEADER_LEN..HEADER_LEN + len as usize)?;
    (crc(len, seq, payload) == sum).then_some((seq, payload, HEADER_LEN + len as usize))
}

/// Reads one record from a stream. `Ok(None)` at a clean end; `Err(offset_detail)` when the
/// bytes there are not a whole, checked record.
fn read_record(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
) -> io::Result<std::result::Result<Option<(u64, usize)>, &'static str>> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut header[got..])? {
            0 if got == 0 => return Ok(Ok(None)),
            0 => return Ok(Err("truncated record header")),
            n => got += n,
        }
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let sum = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if len == 0 || len as usize > MAX_RECORD_LEN {
        return Ok(Err("impossible record length"));
    }
    buf.clear();
    let read = r.take(u64::from(len)).read_to_end(buf)?;
    if read < len as usize {
        return Ok(Err("truncated record"));
    }
    if crc(len, seq, buf) != sum {
        return Ok(Err("checksum mismatch"));
    }
    Ok(Ok(Some((seq, HEADER_LEN + len as usize))))
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, checks every record, hands those after
    /// `committed_seq` to `replay` in order, and cuts off a torn final record.
    pub(crate) fn open(
        dir: &Path,
        committed_seq: u64,
        replay: impl FnMut(u64, WalRecord) -> Result<()>,
    ) -> Result<(Wal, ReplayStats)> {
        fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
        Self::scan(dir, committed_seq, replay, false).map(|(w, s)| (w.expect("opened"), s))
    }

    /// Reads and checks the whole log without changing anything (a torn final record is
    /// reported in the stats, not cut off). A missing folder is an empty log.
    pub(crate) fn check(dir: &Path, committed_seq: u64) -> Result<ReplayStats> {
        if !dir.exists() {
            return Ok(ReplayStats::default());
        }
        Self::scan(dir, committed_seq, |_, _| Ok(()), true).map(|(_, s)| s)
    }

    fn scan(
        dir: &Path,
        committed_seq: u64,
        mut replay: impl FnMut(u64, WalRecord) -> Result<()>,
        read_only: bool,
    ) -> Result<(Option<Wal>, ReplayStats)> {
        let mut segments = list_segments(dir)?;
        let mut stats = ReplayStats::default();
        let mut closed = Vec::new();
        let mut last_seq: Option<u64> = None;
        let corrupt = |path: &Path, offset: u64, detail: String| CoreError::WalCorrupt {
            path: path.to_path_buf(),
            offset,
            detail,
        };
        let count = segments.len();
        let firsts: Vec<u64> = segments.iter().map(|(f, _)| *f).collect();
        let mut current: Option<(PathBuf, u64, u64)> = None;
        for (i, (first_seq, path)) in segments.drain(..).enumerate() {
            let is_last = i + 1 == count;
            if let Some(last) = last_seq
                && first_seq != last + 1
            {
                if first_seq > last + 1 && first_seq - 1 <= committed_seq {
                    // E.g. a segment's covered tail was lost: the commit holds those records.
                    tracing::warn!(wal = %path.display(), missing_from = last + 1, missing_to = first_seq - 1, committed_seq, "write-ahead log records are missing, but the last commit covers them");
                    stats.covered_damage += first_seq - last - 1;
                } else {
                    return Err(corrupt(
                        &path,
                        0,
                        format!(
                            "segment starts at record {first_seq}, but the previous one ended \
                             at {last}: records are missing"
                        ),
                    ));
                }
            }
            if last_seq.is_none() && first_seq > committed_seq + 1 {
                return Err(corrupt(
                    &path,
                    0,
                    format!(
                        "the log starts at record {first_seq} but the index's last commit \
                         covers only up to {committed_seq}: records are missing"
                    ),
                ));
            }
            let file = File::open(&path).map_err(|e| CoreError::io(&path, e))?;
            let mut reader = BufReader::with_capacity(1 << 20, file);
            let mut offset = 0u64;
            let mut buf = Vec::new();
            let mut expected = first_seq;
            loop {
                let outcome =
                    read_record(&mut reader, &mut buf).map_err(|e| CoreError::io(&path, e))?;
                match outcome {
                    Ok(None) => break,
                    Ok(Some((seq, size))) => {
                        if seq != expected {
                            return Err(corrupt(
                                &path,
                                offset,
                                format!("record {seq} found where record {expected} belongs"),
                            ));
                        }
                        let record = decode_payload(&buf).ok_or_else(|| {
                            corrupt(&path, offset, format!("record {seq} does not decode"))
                        })?;
                        if seq > committed_seq {
                            replay(seq, record)?;
                            stats.replayed += 1;
                        } else {
                            stats.skipped += 1;
                        }
                        last_seq = Some(seq);
                        expected = seq + 1;
                        offset += size as u64;
                    }
                    Err(what) => {
                        let rest = read_from(&path, offset)?;
                        // Where the records go on after the bad bytes: a good record further
                        // in this segment, or the next segment.
                        let resume = match next_valid_record(&rest, expected) {
                            Some((at, seq)) => Some((Some(at), seq)),
                            None => firsts.get(i + 1).map(|n| (None, *n)),
                        };
                        if let Some((at, next)) = resume
                            && expected <= committed_seq
                            && next - 1 <= committed_seq
                        {
                            // Every record the bad bytes can hold is in the last commit.
                            let bytes = at.map_or(rest.len(), |a| a) as u64;
                            tracing::warn!(wal = %path.display(), offset, bytes, records_from = expected, records_to = next - 1, committed_seq, "skipping damaged write-ahead log records the last commit covers");
                            stats.covered_damage += bytes;
                            match at {
                                Some(at) => {
                                    offset += at as u64;
                                    io::Seek::seek(&mut reader, io::SeekFrom::Start(offset))
                                        .map_err(|e| CoreError::io(&path, e))?;
                                    expected = next;
                                    continue;
                                }
                                None => {
                                    offset += bytes;
                                    expected = next;
                                    last_seq = Some(next - 1);
                                    break;
                                }
                            }
                        }
                        drop(reader);
                        if !is_last || has_valid_record_after(&rest, expected) {
                            return Err(corrupt(
                                &path,
                                offset,
                                format!(
                                    "{what} at record {expected}, with acknowledged records \
                                     after it"
                                ),
                            ));
                        }
                        stats.torn_bytes = rest.len() as u64;
                        if read_only {
                            break;
                        }
                        tracing::warn!(
                            wal = %path.display(),
                            offset,
                            bytes = rest.len(),
                            "cutting off a torn final record (a crash during an append; it \
                             was never acknowledged)"
                        );
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(|e| CoreError::io(&path, e))?;
                        f.set_len(offset).map_err(|e| CoreError::io(&path, e))?;
                        f.sync_all().map_err(|e| CoreError::io(&path, e))?;
                        break;
                    }
                }
            }
            if is_last {
                current = Some((path, offset, expected));
            } else {
                closed.push(Segment {
                    first_seq,
                    last_seq: expected - 1,
                    path,
                });
            }
        }
        stats.last_seq = last_seq.unwrap_or(0);
        let written_seq = last_seq.unwrap_or(0).max(committed_seq);
        if read_only {
            return Ok((None, stats));
        }
        let (path, len) = match current {
            // Continue the last segment only if the next record belongs there: when the
            // index's commit is ahead of the log (a log deleted by hand), every segment is
            // covered and a fresh one starts after the commit.
            Some((path, len, next)) if next == written_seq + 1 => (path, len),
            stale => {
                if let Some((path, _, _)) = stale {
                    closed.push(Segment {
                        first_seq: first_seq_of(&path).unwrap_or(0),
                        last_seq: written_seq,
                        path,
                    });
                }
                let path = dir.join(segment_name(written_seq + 1));
                File::create(&path).map_err(|e| CoreError::io(&path, e))?;
                sync_dir(dir).map_err(|e| CoreError::io(dir, e))?;
                (path, 0)
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| CoreError::io(&path, e))?;
        let wal = Wal {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                file: Arc::new(file),
                path,
                len,
                synced_len: len,
                written_seq,
                synced_seq: written_seq,
                epoch: 0,
                last_sync_error: None,
                syncing: false,
                dirty_tail: None,
                retired: false,
                closed,
                buf: Vec::new(),
            }),
            synced: Condvar::new(),
        };
        Ok((Some(wal), stats))
    }

    /// Appends `ops` as consecutive records in one write. Nothing is appended on error.
    pub(crate) fn append(&self, ops: &[WalOp<'_>]) -> Result<Option<Ticket>> {
        if ops.is_empty() {
            return Ok(None);
        }
        let mut st = lock(&self.state);
        if st.retired {
            return Err(CoreError::io(
                &st.path,
                io::Error::other("write-ahead log closed (the index writer was reopened)"),
            ));
        }
        if let Some(at) = st.dirty_tail {
            // A previous cut-back failed; try again before writing after possible garbage.
            st.file
                .set_len(at)
                .map_err(|e| CoreError::io(&st.path, e))?;
            st.dirty_tail = None;
        }
        if st.len >= SEGMENT_MAX_BYTES {
            st = self.roll(st)?;
        }
        let first = st.written_seq + 1;
        let mut buf = std::mem::take(&mut st.buf);
        buf.clear();
        buf.reserve(
            ops.iter()
                .map(|op| match op {
                    WalOp::Upsert { id, json } => HEADER_LEN + 5 + id.len() + json.len(),
                    WalOp::Delete { id } => HEADER_LEN + 5 + id.len(),
                })
                .sum(),
        );
        for (i, op) in ops.iter().enumerate() {
            encode_into(&mut buf, first + i as u64, op);
        }
        let written =
            faults::io_point(faults::WAL_APPEND).and_then(|()| st.file.write_all_at(&buf, st.len));
        let encoded = buf.len() as u64;
        if buf.capacity() > KEEP_BUF_BYTES {
            buf = Vec::new();
        }
        st.buf = buf;
        if let Err(e) = written {
            let at = st.len;
            if st.file.set_len(at).is_err() {
                st.dirty_tail = Some(at);
            }
            return Err(CoreError::io(&st.path, e));
        }
        st.len += encoded;
        st.written_seq = first + ops.len() as u64 - 1;
        Ok(Some(Ticket {
            seq: st.written_seq,
            epoch: st.epoch,
        }))
    }

    /// Returns once the record of `ticket` is on disk; an error means it may not be (the
    /// write must not be acknowledged).
    pub(crate) fn sync_to(&self, ticket: Ticket) -> Result<()> {
        let mut st = lock(&self.state);
        loop {
            if st.epoch != ticket.epoch {
                return Err(self.sync_failed(&st));
            }
            if st.synced_seq >= ticket.seq {
                return Ok(());
            }
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st = self.sync_locked(st);
        }
    }

    /// Syncs everything written so far; returns the last sequence number now on disk.
    pub(crate) fn sync_all(&self) -> Result<u64> {
        let ticket = {
            let st = lock(&self.state);
            Ticket {
                seq: st.written_seq,
                epoch: st.epoch,
            }
        };
        self.sync_to(ticket)?;
        Ok(ticket.seq)
    }

    /// Hands the folder over to a log opened after this one (see [`State::retired`]): appends
    /// are refused from now on, and a failed fsync fails its waiters without cutting the file.
    pub(crate) fn retire(&self) {
        lock(&self.state).retired = true;
    }

    /// Last sequence number written.
    pub(crate) fn written_seq(&self) -> u64 {
        lock(&self.state).written_seq
    }

    /// Bytes held by the log's segments.
    pub(crate) fn bytes(&self) -> u64 {
        let st = lock(&self.state);
        let closed: u64 = st
            .closed
            .iter()
            .filter_map(|s| fs::metadata(&s.path).ok())
            .map(|m| m.len())
            .sum();
        closed + st.len
    }

    fn sync_failed(&self, st: &State) -> CoreError {
        let (detail, errno) = st
            .last_sync_error
            .clone()
            .unwrap_or_else(|| ("fsync failed".into(), None));
        CoreError::WalSync {
            path: st.path.clone(),
            detail,
            errno,
        }
    }

    /// One fsync on behalf of every writer waiting, with the lock released during the call.
    fn sync_locked<'a>(
        &'a self,
        mut st: std::sync::MutexGuard<'a, State>,
    ) -> std::sync::MutexGuard<'a, State> {
        st.syncing = true;
        let target_seq = st.written_seq;
        let target_len = st.len;
        let file = st.file.clone();
        drop(st);
        let result = faults::io_point(faults::WAL_FSYNC).and_then(|()| file.sync_data());
        let mut st = lock(&self.state);
        st.syncing = false;
        match result {
            Ok(()) => {
                st.synced_seq = st.synced_seq.max(target_seq);
                st.synced_len = st.synced_len.max(target_len);
            }
            Err(e) => {
                tracing::error!(wal = %st.path.display(), error = %e, "write-ahead log fsync failed; un-synced writes are refused");
                // The kernel may have dropped the dirty pages: what was not synced is gone
                // for us. Cut it off so the log never holds a hole, and fail its writers.
                let at = st.synced_len;
                if !st.retired && st.file.set_len(at).is_err() {
                    st.dirty_tail = Some(at);
                }
                st.len = at;
                st.written_seq = st.synced_seq;
                st.epoch += 1;
                st.last_sync_error = Some((e.to_string(), e.raw_os_error()));
            }
        }
        self.synced.notify_all();
        st
    }

    /// Closes the current segment (synced) and starts the next one.
    fn roll<'a>(
        &'a self,
        mut st: std::sync::MutexGuard<'a, State>,
    ) -> Result<std::sync::MutexGuard<'a, State>> {
        while st.syncing {
            st = self.synced.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.file
            .sync_data()
            .map_err(|e| CoreError::io(&st.path, e))?;
        st.synced_seq = st.written_seq;
        let next = st.written_seq + 1;
        let path = self.dir.join(segment_name(next));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| CoreError::io(&path, e))?;
        sync_dir(&self.dir).map_err(|e| CoreError::io(&self.dir, e))?;
        let old_path = std::mem::replace(&mut st.path, path);
        let old_first = first_seq_of(&old_path).unwrap_or(next);
        if st.len > 0 {
            let last_seq = st.written_seq;
            st.closed.push(Segment {
                first_seq: old_first,
                last_seq,
                path: old_path,
            });
        } else {
            let _ = fs::remove_file(&old_path);
        }
        st.file = Arc::new(file);
        st.len = 0;
        st.synced_len = 0;
        Ok(st)
    }

    /// Deletes what a commit covering `seq` made unnecessary: closed segments wholly at or
    /// before it, and the current segment too (replaced by a fresh one) when it is wholly
    /// covered and large enough to be worth it.
    pub(crate) fn truncate_through(&self, seq: u64) -> Result<()> {
        let mut st = lock(&self.state);
        let mut removed = false;
        let mut keep = Vec::new();
        for s in std::mem::take(&mut st.closed) {
            if s.last_seq <= seq {
                match fs::remove_file(&s.path) {
                    Ok(()) => removed = true,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        keep.push(s);
                        st.closed.extend(keep);
                        return Err(CoreError::io(self.dir.clone(), e));
                    }
                }
            } else {
                keep.push(s);
            }
        }
        st.closed = keep;
        debug_assert!(st.closed.iter().all(|s| s.first_seq > 0));
        if st.written_seq <= seq && st.len >= SEGMENT_RECYCLE_BYTES {
            st = self.roll(st)?;
            // `roll` closed the covered segment; it goes right away.
            if let Some(s) = st.closed.pop() {
                fs::remove_file(&s.path).map_err(|e| CoreError::io(&s.path, e))?;
                removed = true;
            }
        }
        drop(st);
        if removed {
            sync_dir(&self.dir).map_err(|e| CoreError::io(&self.dir, e))?;
        }
        Ok(())
    }
}

/// Decodes the records of a log segment held in memory, stopping at the first bad one;
/// returns how many decoded and where decoding stopped. Used by the fuzz target for the
/// record decoder (it must never panic, whatever the bytes).
#[doc(hidden)]
pub fn decode_wal_bytes(mut bytes: &[u8]) -> (usize, usize) {
    let total = bytes.len();
    let mut n = 0;
    while let Some((_, payload, size)) = decode_at(bytes) {
        if decode_payload(payload).is_none() {
            break;
        }
        n += 1;
        bytes = &bytes[size..];
    }
    let mut reader = io::Cursor::new(bytes);
    let mut buf = Vec::new();
    while let Ok(Ok(Some(_))) = read_record(&mut reader, &mut buf) {}
    (n, total - bytes.len())
}

fn first_seq_of(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_suffix(".wal")?
        .parse()
        .ok()
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| CoreError::io(dir, e))? {
        let entry = entry.map_err(|e| CoreError::io(dir, e))?;
        let path = entry.path();
        if let Some(first) = first_seq_of(&path) {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

fn read_from(path: &Path, offset: u64) -> Result<Vec<u8>> {
    let mut f = File::open(path).map_err(|e| CoreError::io(path, e))?;
    io::Seek::seek(&mut f, io::SeekFrom::Start(offset)).map_err(|e| CoreError::io(path, e))?;
    let mut rest = Vec::new();
    f.read_to_end(&mut rest)
        .map_err(|e| CoreError::io(path, e))?;
    Ok(rest)
}

/// Whether a whole, checked record numbered `expected` or later starts anywhere in `bytes`
/// (past its first byte): then the bad bytes before it are not a torn final append.
fn has_valid_record_after(bytes: &[u8], expected: u64) -> bool {
    next_valid_record(bytes, expected).is_some()
}

/// The first whole, checked record numbered `expected` or later that starts in `bytes` past
/// its first byte: `(offset, seq)`.
fn next_valid_record(bytes: &[u8], expected: u64) -> Option<(usize, u64)> {
    (1..bytes.len()).find_map(|at| {
        decode_at(&bytes[at..]).and_then(|(seq, payload, _)| {
            (seq >= expected && decode_payload(payload).is_some()).then_some((at, seq))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Opened = (Wal, Vec<(u64, WalRecord)>, ReplayStats);

    fn collect(dir: &Path, committed: u64) -> Result<Opened> {
        let mut got = Vec::new();
        let (wal, stats) = Wal::open(dir, committed, |seq, r| {
            got.push((seq, r));
            Ok(())
        })?;
        Ok((wal, got, stats))
    }

    fn up<'a>(id: &'a str, json: &'a str) -> WalOp<'a> {
        WalOp::Upsert {
            id,
            json: json.as_bytes(),
        }
    }

    #[test]
    fn appended_records_replay_in_order_after_the_committed_position() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, got, _) = collect(tmp.path(), 0).unwrap();
        assert!(got.is_empty());
        let t = wal
            .append(&[
                up("a", "{}"),
                WalOp::Delete { id: "b" },
                up("c", "{\"x\":1}"),
            ])
            .unwrap()
            .unwrap();
        wal.sync_to(t).unwrap();
        assert_eq!(t.seq, 3);
        drop(wal);
        let (wal, got, stats) = collect(tmp.path(), 1).unwrap();
        assert_eq!(stats.replayed, 2);
        assert_eq!(stats.skipped, 1);
        assert_eq!(got[0], (2, WalRecord::Delete { id: "b".into() }));
        assert_eq!(
            got[1],
            (
                3,
                WalRecord::Upsert {
                    id: "c".into(),
                    json: b"{\"x\":1}".to_vec()
                }
            )
        );
        let t = wal.append(&[up("d", "{}")]).unwrap().unwrap();
        assert_eq!(t.seq, 4, "numbering continues after reopening");
    }

    #[test]
    fn a_torn_final_record_is_cut_off_and_appends_continue_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, _, _) = collect(tmp.path(), 0).unwrap();
        wal.append(&[up("a", "{}"), up("b", "{}")]).unwrap();
        wal.sync_all().unwrap();
        let path = lock(&wal.state).path.clone();
        drop(wal);
        let full = fs::read(&path).unwrap();
        // Every possible torn length of a third record.
        let mut third = Vec::new();
        encode_into(&mut third, 3, &up("c", "{\"long\":\"value\"}"));
        for cut in 1..third.len() {
            let mut bytes = full.clone();
            bytes.extend_from_slice(&third[..cut]);
            fs::write(&path, &bytes).unwrap();
            let (wal, got, stats) = collect(tmp.path(), 0).unwrap();
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(stats.torn_bytes, cut as u64);
            assert_eq!(fs::metadata(&path).unwrap().len(), full.len() as u64);
            drop(wal);
        }
        let (wal, _, _) = collect(tmp.path(), 0).unwrap();
        wal.append(&[up("c", "{}")]).unwrap();
        wal.sync_all().unwrap();
        drop(wal);
        let (_, got, _) = collect(tmp.path(), 0).unwrap();
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn corruption_before_good_records_stops_the_open() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, _, _) = collect(tmp.path(), 0).unwrap();
        for i in 0..10 {
            wal.append(&[up(&format!("d{i}"), "{\"k\":\"v\"}")])
                .unwrap();
        }
        wal.sync_all().unwrap();
        let path = lock(&wal.state).path.clone();
        drop(wal);
        let good = fs::read(&path).unwrap();
        for at in [0, 5, 17, good.len() / 2, good.len() - 40] {
            let mut bytes = good.clone();
            bytes[at] ^= 0x5a;
            fs::write(&path, &bytes).unwrap();
            let err = collect(tmp.path(), 0).unwrap_err();
            assert!(
                matches!(err, CoreError::WalCorrupt { .. }),
                "flip at {at}: {err}"
            );
            assert_eq!(
                search_error::Classify::code(&err),
                search_error::ErrorCode::DataCorruption
            );
        }
        // A flipped byte in the very last record is indistinguishable from a torn append.
        let mut bytes = good.clone();
        let n = bytes.len();
        bytes[n - 2] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let (_, got, stats) = collect(tmp.path(), 0).unwrap();
        assert_eq!(got.len(), 9);
        assert!(stats.torn_bytes > 0);
    }

    #[test]
    fn damage_the_last_commit_covers_is_skipped_not_fatal() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, _, _) = collect(tmp.path(), 0).unwrap();
        for i in 1..=10 {
            wal.append(&[up(&format!("d{i}"), "{\"k\":\"value\"}")])
                .unwrap();
        }
        wal.sync_all().unwrap();
        let path = lock(&wal.state).path.clone();
        drop(wal);
        let good = fs::read(&path).unwrap();
        let rec = good.len() / 10;
        // A flipped byte inside record 4.
        let mut bytes = good.clone();
        bytes[3 * rec + rec / 2] ^= 0x5a;
        fs::write(&path, &bytes).unwrap();
        // The commit covers records 1-3 only: record 4 is acknowledged and lost. Refuse.
        assert!(matches!(
            collect(tmp.path(), 3).unwrap_err(),
            CoreError::WalCorrupt { .. }
        ));
        assert!(Wal::check(tmp.path(), 3).is_err());
        // The commit covers 1-6: nothing lost; 7-10 are replayed, the bad record skipped.
        let stats = Wal::check(tmp.path(), 6).unwrap();
        assert_eq!(stats.covered_damage, rec as u64);
        let (wal, got, stats) = collect(tmp.path(), 6).unwrap();
        assert_eq!(
            got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [7, 8, 9, 10]
        );
        assert_eq!(stats.covered_damage, rec as u64);
        // Appends go on after the last record and read back.
        wal.append(&[up("d11", "{}")]).unwrap();
        wal.sync_all().unwrap();
        drop(wal);
        let (_, got, _) = collect(tmp.path(), 10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 11);
    }

    #[test]
    fn a_lost_covered_tail_is_not_a_gap_in_acknowledged_records() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, _, _) = collect(tmp.path(), 0).unwrap();
        for i in 1..=5 {
            wal.append(&[up(&format!("d{i}"), "{}")]).unwrap();
        }
        wal.sync_all().unwrap();
        let path = lock(&wal.state).path.clone();
        drop(wal);
        // The last record (5, committed) loses its end: cut off as a torn append.
        let len = fs::metadata(&path).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let (wal, got, stats) = collect(tmp.path(), 5).unwrap();
        assert!(got.is_empty());
        assert!(stats.torn_bytes > 0);
        // The next record is numbered after the commit, in a new segment...
        let t = wal.append(&[up("d6", "{}")]).unwrap().unwrap();
        assert_eq!(t.seq, 6);
        wal.sync_all().unwrap();
        drop(wal);
        // ...and the gap below it (record 5, committed) does not stop the next open.
        let stats = Wal::check(tmp.path(), 5).unwrap();
        assert_eq!(stats.covered_damage, 1);
        let (_, got, _) = collect(tmp.path(), 5).unwrap();
        assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [6]);
        // Against an older commit the same gap is acknowledged records missing.
        assert!(collect(tmp.path(), 4).is_err());
    }

    #[test]
    fn commits_delete_covered_segments_and_missing_segments_are_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, _, _) = collect(tmp.path(), 0).unwrap();
        let big = "x".repeat(2 << 20);
        let json = format!("{{\"t\":\"{big}\"}}");
        wal.append(&[up("a", &json)]).unwrap();
        wal.sync_all().unwrap();
        wal.truncate_through(1).unwrap();
        // The covered 2 MiB segment was replaced by an empty one named after record 2.
        let segs = list_segments(tmp.path()).unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].0, 2);
        wal.append(&[up("b", "{}")]).unwrap();
        wal.sync_all().unwrap();
        drop(wal);
        let (_, got, _) = collect(tmp.path(), 1).unwrap();
        assert_eq!(got.len(), 1);
        // If the index's commit covered only record 0, record 1 is missing: refuse.
        let err = collect(tmp.path(), 0).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn concurrent_writers_share_fsyncs_and_all_land() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, _, _) = collect(tmp.path(), 0).unwrap();
        let wal = Arc::new(wal);
        let writer_lock = Arc::new(Mutex::new(()));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let wal = wal.clone();
                let writer_lock = writer_lock.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let id = format!("{t}-{i}");
                        let ticket = {
                            let _g = writer_lock.lock().unwrap();
                            wal.append(&[up(&id, "{}")]).unwrap().unwrap()
                        };
                        wal.sync_to(ticket).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(wal);
        let (_, got, _) = collect(tmp.path(), 0).unwrap();
        assert_eq!(got.len(), 400);
        assert!(got.windows(2).all(|w| w[1].0 == w[0].0 + 1));
    }
}
