//! The crate's error type and how it maps onto the shared [`ErrorCode`]s.

use std::{io, path::PathBuf, sync::Arc};

use search_error::{Classify, ErrorCode};

/// What went wrong while measuring, scheduling or configuring.
///
/// Pool acquisition has its own generic error, [`crate::pool::PoolError`], because it carries the
/// manager's error type.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `/proc` or cgroup file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The operating system's error (in an `Arc` so the error stays `Clone`).
        #[source]
        source: Arc<io::Error>,
    },
    /// A `/proc` file was readable but did not contain what the kernel documents.
    #[error("unexpected contents in {}: {what}", path.display())]
    Parse {
        /// The file that was read.
        path: PathBuf,
        /// What was missing or malformed.
        what: &'static str,
    },
    /// A cron expression could not be parsed.
    #[error("invalid cron expression {expr:?}: {reason}")]
    InvalidCron {
        /// The expression as given.
        expr: String,
        /// Which field or token is wrong.
        reason: String,
    },
    /// A job's schedule is unusable (zero interval, cron that never fires).
    #[error("invalid schedule for job {job:?}: {reason}")]
    InvalidSchedule {
        /// The job's name.
        job: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A job with this name is already scheduled.
    #[error("a job named {0:?} is already scheduled")]
    DuplicateJob(String),
    /// No job has this name.
    #[error("no job named {0:?}")]
    UnknownJob(String),
    /// The scheduler was shut down; it accepts no more jobs or triggers.
    #[error("the scheduler is shut down")]
    ShutDown,
    /// A configuration value is out of range (ratios, sizes).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

impl Error {
    pub(crate) fn read(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Read {
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

impl Classify for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::Read { .. } | Error::Parse { .. } => ErrorCode::Io,
            Error::InvalidCron { .. } | Error::InvalidSchedule { .. } | Error::InvalidConfig(_) => {
                ErrorCode::InvalidInput
            }
            Error::DuplicateJob(_) => ErrorCode::AlreadyExists,
            Error::UnknownJob(_) => ErrorCode::NotFound,
            Error::ShutDown => ErrorCode::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let read = Error::read("/proc/self/statm", io::Error::other("boom"));
        assert_eq!(read.code(), ErrorCode::Io);
        assert!(read.to_string().contains("/proc/self/statm"));
        assert_eq!(Error::ShutDown.code(), ErrorCode::Unavailable);
        assert_eq!(
            Error::DuplicateJob("x".into()).code(),
            ErrorCode::AlreadyExists
        );
        assert_eq!(Error::UnknownJob("x".into()).code(), ErrorCode::NotFound);
        let cron = Error::InvalidCron {
            expr: "x".into(),
            reason: "y".into(),
        };
        assert_eq!(cron.code(), ErrorCode::InvalidInput);
        assert!(!cron.is_retryable());
    }
}
