//! The error type of `search-core`, with context (index, path, position) and a [`Classify`] impl.

use std::io;
use std::path::PathBuf;

use search_error::{Classify, ErrorCode, Severity};
use tantivy::TantivyError;

/// Result alias used throughout `search-core`.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in `search-core`.
///
/// Variants carry what a caller needs to act on (which index, which file, where in the query);
/// the [`Classify`] impl gives the closed [`ErrorCode`] to branch on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// An index name that cannot be used as a directory name.
    #[error("invalid index name {name:?}: {reason}")]
    InvalidIndexName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// No index of that name exists in the data directory.
    #[error("index {name:?} not found in {}", root.display())]
    IndexNotFound {
        /// The index asked for.
        name: String,
        /// The data directory searched.
        root: PathBuf,
    },
    /// An index of that name exists already.
    #[error("index {name:?} already exists")]
    IndexExists {
        /// The index name.
        name: String,
    },
    /// The operation needs another kind of index (e.g. indexing a folder into a documents index).
    #[error("index {name:?} is a {actual} index; this operation needs a {expected} index")]
    WrongKind {
        /// The index name.
        name: String,
        /// What the index is.
        actual: &'static str,
        /// What the operation needs.
        expected: &'static str,
    },
    /// Another writer (in this or another process) holds the index's writer lock.
    #[error(
        "index {name:?} is locked for writing by another writer (lock file {}); \
         stop the other ironsift process or wait for it to finish",
        lock.display()
    )]
    WriterLocked {
        /// The index name.
        name: String,
        /// The lock file held.
        lock: PathBuf,
    },
    /// The index handle was closed for writing (the service is shutting down, or the index
    /// is being deleted).
    #[error(
        "index {name:?} is closed for writing (the server is shutting down or the index was deleted)"
    )]
    IndexClosed {
        /// The index name.
        name: String,
    },
    /// No document has this id.
    #[error("document {id:?} not found in index {index:?}")]
    DocumentNotFound {
        /// The index searched.
        index: String,
        /// The id asked for.
        id: String,
    },
    /// A document that cannot be indexed (not an object, bad id, wrong field type).
    #[error("invalid document: {reason}")]
    InvalidDocument {
        /// What is wrong with it, naming the field.
        reason: String,
    },
    /// A schema definition that cannot be used.
    #[error("invalid schema: {reason}")]
    InvalidSchema {
        /// What is wrong with it, naming the field.
        reason: String,
    },
    /// The query text could not be parsed.
    #[error("invalid query{}: {message}", position.map(|p| format!(" at byte {p}")).unwrap_or_default())]
    QuerySyntax {
        /// Byte offset in the query where parsing failed, when known.
        position: Option<usize>,
        /// What the parser expected or found.
        message: String,
    },
    /// The query violates a configured limit (length, clauses, nesting).
    #[error("query too large: {what} is {actual}, the limit is {max}")]
    QueryLimit {
        /// Which limit (e.g. "length in bytes").
        what: &'static str,
        /// The query's value.
        actual: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A search or ingest parameter out of range (e.g. `limit` above 1000).
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter {
        /// Parameter name as the caller spelled it.
        name: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// A filesystem operation on a path failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// ironsift's own metadata file for an index cannot be read.
    #[error("index metadata {} is damaged: {detail}", path.display())]
    BadMetadata {
        /// The metadata file.
        path: PathBuf,
        /// The decoding error.
        detail: String,
    },
    /// The write-ahead log holds a damaged record followed by acknowledged ones, or records are
    /// missing: replaying it would silently lose writes, so the index refuses to open for
    /// writing until it is repaired.
    #[error(
        "write-ahead log {} is damaged at byte {offset}: {detail}",
        path.display()
    )]
    WalCorrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the bad record in it.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// The write-ahead log could not be made durable (fsync failed): the write was not
    /// acknowledged and must be retried.
    #[error(
        "write-ahead log {} could not be synced to disk ({detail}); the write was not saved, retry it",
        path.display()
    )]
    WalSync {
        /// The segment file.
        path: PathBuf,
        /// The OS error.
        detail: String,
        /// Its errno, when the OS gave one (28 is ENOSPC: disk full).
        errno: Option<i32>,
    },
    /// A snapshot could not be taken because the files failed their checksums.
    #[error("snapshot refused: {detail}")]
    SnapshotDamaged {
        /// What failed.
        detail: String,
    },
    /// No snapshot of that id exists.
    #[error("snapshot {id:?} not found for index {index:?}")]
    SnapshotNotFound {
        /// The index.
        index: String,
        /// The id asked for.
        id: String,
    },
    /// The index cannot be repaired automatically; nothing was changed.
    #[error("index {index:?} cannot be repaired: {reason}")]
    RepairImpossible {
        /// The index.
        index: String,
        /// Why, and what the operator can do.
        reason: String,
    },
    /// A search reached its deadline and the request did not accept partial results.
    #[error(
        "index {index:?}: the search was stopped at its deadline after {elapsed_ms} ms; \
         allow more time, narrow the query, or accept partial results"
    )]
    DeadlineExceeded {
        /// The index searched.
        index: String,
        /// Time spent before stopping, in milliseconds.
        elapsed_ms: u64,
    },
    /// Tantivy reported an error while operating on an index.
    #[error("index {index:?}: {op} failed: {source}")]
    Tantivy {
        /// The index.
        index: String,
        /// What we were doing ("commit", "search", "open"...).
        op: &'static str,
        /// Tantivy's error.
        #[source]
        source: TantivyError,
    },
}

impl CoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        CoreError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn tantivy(index: &str, op: &'static str, source: TantivyError) -> Self {
        CoreError::Tantivy {
            index: index.to_string(),
            op,
            source,
        }
    }

    pub(crate) fn invalid_doc(reason: impl Into<String>) -> Self {
        CoreError::InvalidDocument {
            reason: reason.into(),
        }
    }
}

fn io_code(err: &io::Error) -> ErrorCode {
    // ENOSPC (28) and EDQUOT (122) mean "disk full" to a user, whatever the kind says.
    match err.raw_os_error() {
        Some(28) | Some(122) => return ErrorCode::StorageFull,
        Some(24) | Some(23) => return ErrorCode::ResourceExhausted, // EMFILE, ENFILE
        _ => {}
    }
    match err.kind() {
        io::ErrorKind::NotFound => ErrorCode::NotFound,
        io::ErrorKind::PermissionDenied => ErrorCode::Io,
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => ErrorCode::DataCorruption,
        io::ErrorKind::StorageFull => ErrorCode::StorageFull,
        io::ErrorKind::OutOfMemory => ErrorCode::ResourceExhausted,
        // Some of Tantivy's writers rebuild an io::Error from a message, losing the errno.
        _ if says_disk_full(&err.to_string()) => ErrorCode::StorageFull,
        _ => ErrorCode::Io,
    }
}

/// Whether a message Tantivy flattened from an `io::Error` (its store and fast-field writers
/// turn I/O errors into `InternalError(e.to_string())`) says the disk is full.
fn says_disk_full(msg: &str) -> bool {
    msg.contains("(os error 28)") || msg.contains("(os error 122)")
}

pub(crate) fn tantivy_code(err: &TantivyError) -> ErrorCode {
    use tantivy::directory::error::{LockError, OpenDirectoryError, OpenReadError, OpenWriteError};
    match err {
        TantivyError::DataCorruption(_) => ErrorCode::DataCorruption,
        TantivyError::IoError(e) => io_code(e),
        TantivyError::OpenReadError(OpenReadError::FileDoesNotExist(_)) => {
            ErrorCode::DataCorruption
        }
        TantivyError::OpenReadError(OpenReadError::IoError { io_error, .. }) => io_code(io_error),
        TantivyError::OpenReadError(_) => ErrorCode::Io,
        TantivyError::OpenWriteError(OpenWriteError::IoError { io_error, .. }) => io_code(io_error),
        TantivyError::OpenWriteError(_) => ErrorCode::Io,
        TantivyError::OpenDirectoryError(OpenDirectoryError::DoesNotExist(_)) => {
            ErrorCode::NotFound
        }
        TantivyError::OpenDirectoryError(_) => ErrorCode::Io,
        TantivyError::LockFailure(LockError::LockBusy, _) => ErrorCode::Conflict,
        TantivyError::LockFailure(LockError::IoError(e), _) => io_code(e),
        TantivyError::IndexAlreadyExists => ErrorCode::AlreadyExists,
        TantivyError::InternalError(msg) | TantivyError::ErrorInThread(msg)
            if says_disk_full(msg) =>
        {
            ErrorCode::StorageFull
        }
        // Out of file descriptors (EMFILE, ENFILE), flattened to a message the same way.
        TantivyError::InternalError(msg) | TantivyError::ErrorInThread(msg)
            if msg.contains("(os error 24)") || msg.contains("(os error 23)") =>
        {
            ErrorCode::ResourceExhausted
        }
        // An indexing thread died (an I/O error while writing a segment): the writer is
        // dropped and reopened from the write-ahead log on the next write, so retrying works.
        TantivyError::ErrorInThread(msg) if msg.contains("was killed") => ErrorCode::Unavailable,
        TantivyError::Poisoned | TantivyError::ErrorInThread(_) => ErrorCode::Internal,
        TantivyError::DeserializeError(_) => ErrorCode::DataCorruption,
        TantivyError::InvalidArgument(_)
        | TantivyError::SchemaError(_)
        | TantivyError::FieldNotFound(_)
        | TantivyError::AggregationError(_) => ErrorCode::InvalidInput,
        TantivyError::IncompatibleIndex(_) => ErrorCode::DataCorruption,
        _ => ErrorCode::Internal,
    }
}

impl Classify for CoreError {
    fn code(&self) -> ErrorCode {
        match self {
            CoreError::InvalidIndexName { .. }
            | CoreError::InvalidDocument { .. }
            | CoreError::InvalidSchema { .. }
            | CoreError::QuerySyntax { .. }
            | CoreError::QueryLimit { .. }
            | CoreError::InvalidParameter { .. }
            | CoreError::WrongKind { .. } => ErrorCode::InvalidInput,
            CoreError::IndexNotFound { .. } | CoreError::DocumentNotFound { .. } => {
                ErrorCode::NotFound
            }
            CoreError::IndexExists { .. } => ErrorCode::AlreadyExists,
            CoreError::WriterLocked { .. } => ErrorCode::Conflict,
            CoreError::IndexClosed { .. } => ErrorCode::Unavailable,
            CoreError::Io { source, .. } => io_code(source),
            CoreError::SnapshotNotFound { .. } => ErrorCode::NotFound,
            CoreError::RepairImpossible { .. } => ErrorCode::Conflict,
            CoreError::BadMetadata { .. }
            | CoreError::WalCorrupt { .. }
            | CoreError::SnapshotDamaged { .. } => ErrorCode::DataCorruption,
            CoreError::WalSync { errno, .. } => match errno {
                Some(28 | 122) => ErrorCode::StorageFull,
                _ => ErrorCode::Unavailable,
            },
            CoreError::DeadlineExceeded { .. } => ErrorCode::Timeout,
            CoreError::Tantivy { source, .. } => tantivy_code(source),
        }
    }

    fn severity(&self) -> Severity {
        match self {
            // A lock held by another process is an operator matter, not data at risk.
            CoreError::WriterLocked { .. } => Severity::Medium,
            other => other.code().default_severity(),
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            // Retrying the same repair cannot change its answer: an operator must act.
            CoreError::RepairImpossible { .. } => false,
            other => other.code().is_retryable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_is_classified_as_storage_full() {
        let flattened = io::Error::other("No space left on device (os error 28)");
        assert_eq!(
            CoreError::tantivy("i", "commit", TantivyError::from(flattened)).code(),
            ErrorCode::StorageFull
        );
        let e = CoreError::io("/x", io::Error::from_raw_os_error(28));
        assert_eq!(e.code(), ErrorCode::StorageFull);
        assert!(e.is_retryable());
        assert!(e.to_string().starts_with("/x: "), "{e}");
    }

    #[test]
    fn disk_full_inside_tantivy_is_storage_full_and_a_killed_writer_is_unavailable() {
        // What Tantivy's store writer makes of ENOSPC while a segment is written.
        let flat = TantivyError::InternalError(io::Error::from_raw_os_error(28).to_string());
        assert_eq!(tantivy_code(&flat), ErrorCode::StorageFull);
        let open =
            TantivyError::OpenWriteError(tantivy::directory::error::OpenWriteError::wrap_io_error(
                io::Error::from_raw_os_error(28),
                "x.idx".into(),
            ));
        assert_eq!(tantivy_code(&open), ErrorCode::StorageFull);
        let killed = TantivyError::ErrorInThread("An index writer was killed.".into());
        assert_eq!(tantivy_code(&killed), ErrorCode::Unavailable);
        let panic = TantivyError::ErrorInThread("Worker thread panicked.".into());
        assert_eq!(tantivy_code(&panic), ErrorCode::Internal);
    }

    #[test]
    fn no_file_descriptors_left_is_resource_exhausted_not_internal() {
        let flat = TantivyError::InternalError(io::Error::from_raw_os_error(24).to_string());
        assert_eq!(tantivy_code(&flat), ErrorCode::ResourceExhausted);
        let open =
            TantivyError::OpenWriteError(tantivy::directory::error::OpenWriteError::wrap_io_error(
                io::Error::from_raw_os_error(24),
                "x.idx".into(),
            ));
        assert_eq!(tantivy_code(&open), ErrorCode::ResourceExhausted);
        assert!(CoreError::tantivy("i", "commit", flat).is_retryable());
    }

    #[test]
    fn an_impossible_repair_is_not_retryable() {
        let e = CoreError::RepairImpossible {
            index: "i".into(),
            reason: "no snapshot".into(),
        };
        assert_eq!(e.code(), ErrorCode::Conflict);
        assert!(!e.is_retryable());
    }

    #[test]
    fn tantivy_corruption_is_critical() {
        let e = CoreError::tantivy(
            "i",
            "open",
            TantivyError::DataCorruption(tantivy::error::DataCorruption::comment_only("bad")),
        );
        assert_eq!(e.code(), ErrorCode::DataCorruption);
        assert_eq!(e.severity(), Severity::Critical);
    }

    #[test]
    fn query_syntax_message_names_the_position() {
        let e = CoreError::QuerySyntax {
            position: Some(7),
            message: "unbalanced quote".into(),
        };
        assert_eq!(e.to_string(), "invalid query at byte 7: unbalanced quote");
        assert_eq!(e.code(), ErrorCode::InvalidInput);
    }
}
