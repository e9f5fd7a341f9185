//! A fixed pool of threads for search work.
//!
//! `spawn_blocking` grows tokio's blocking pool up to hundreds of threads under load; with many
//! concurrent searches on a 2-core machine the kernel then spends its time switching between
//! them. Searches are CPU-bound, so a pool as wide as the cores does the same work with far
//! fewer switches, and its bounded queue gives an honest "overloaded" answer instead of an
//! ever-growing backlog.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crossbeam_channel::{Sender, TrySendError, bounded};
use search_error::ErrorCode;
use tokio::sync::oneshot;

use crate::error::ApiError;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// How much lower than the rest of the process the search threads run.
const NICE: i32 = 5;

/// Threads running submitted closures; the queue holds at most `queue` waiting jobs.
pub(crate) struct Pool {
    tx: Sender<Job>,
}

impl Pool {
    pub(crate) fn new(name: &str, threads: usize, queue: usize) -> std::io::Result<Pool> {
        let threads = threads.max(1);
        // A multi-consumer channel: idle threads wait on it together, and a job wakes one of
        // them directly (a `Mutex<mpsc::Receiver>` makes every job pass the lock along too).
        let (tx, rx) = bounded::<Job>(queue.max(1));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    // Searches yield the CPU to the async threads (health probes, accepting,
                    // socket I/O): on Linux `nice` applies to the calling thread only. Failing
                    // to lower our own priority is harmless.
                    let _ = rustix::process::nice(NICE);
                    // Ends when every sender is dropped: the pool is gone.
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                })?;
        }
        Ok(Pool { tx })
    }

    /// Runs `f` on the pool, in the caller's tracing span. A full queue is an immediate
    /// `Overloaded` error; a panic in `f` becomes an `Internal` error.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            let _enter = span.enter();
            let out = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                metrics::counter!("ironsift_panics_caught_total").increment(1);
                tracing::error!(panic = %what, "search task panicked; the thread and the index carry on");
                Err(ApiError::new(
                    ErrorCode::Internal,
                    "internal error: the operation panicked; the index is unaffected",
                ))
            });
            let _ = tx.send(out);
        });
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(ApiError::new(
                    ErrorCode::Overloaded,
                    "too many searches waiting; retry shortly",
                )
                .retry_after(1));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(ApiError::new(ErrorCode::Unavailable, "search pool stopped"));
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(ApiError::new(ErrorCode::Internal, "search task vanished")))
    }
}

/// Nice value of indexing work: below searches (nice 5), which are below the async threads.
pub(crate) const INDEXING_NICE: i32 = 10;

/// Lowers the priority of this process's indexing threads (Tantivy's index workers, merge and
/// segment-updater threads, doc-store compressors) so a large ingest cannot starve searches:
/// the kernel then gives searches the CPU first. Tantivy names its threads but offers no hook,
/// so they are found by name in `/proc/self/task`. Best effort: Linux only, errors ignored.
/// Cheap (one directory listing), called every second by a background job.
pub(crate) fn lower_indexing_priority() {
    const PREFIXES: [&str; 4] = [
        "thrd-tantivy-in",
        "merge_thread_",
        "segment_update",
        "docstore-compre",
    ];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        if !PREFIXES.iter().any(|p| comm.starts_with(p)) {
            continue;
        }
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
        else {
            continue;
        };
        if rustix::process::getpriority_process(Some(tid)).is_ok_and(|p| p < INDEXING_NICE) {
            let _ = rustix::process::setpriority_process(Some(tid), INDEXING_NICE);
        }
    }
}

/// Runs `f` at indexing priority on the calling (blocking-pool) thread. The thread keeps that
/// priority: tokio's blocking threads only run background and write work in this server.
pub(crate) fn at_indexing_priority<T>(f: impl FnOnce() -> T) -> T {
    if rustix::process::getpriority_process(None).is_ok_and(|p| p < INDEXING_NICE) {
        let _ = rustix::process::setpriority_process(None, INDEXING_NICE);
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, mpsc};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_jobs_sheds_when_full_and_survives_panics() {
        let pool = Arc::new(Pool::new("t", 1, 1).unwrap());
        assert_eq!(pool.run(|| Ok(41 + 1)).await.unwrap(), 42);

        let e = pool
            .run(|| -> Result<(), ApiError> { panic!("boom") })
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);

        // Block the only thread, fill the one queue slot, then the next job is refused.
        let (release, wait) = mpsc::channel::<()>();
        let (started_tx, started) = mpsc::channel::<()>();
        let p = pool.clone();
        let busy = tokio::spawn(async move {
            p.run(move || {
                started_tx.send(()).unwrap();
                wait.recv().unwrap();
                Ok(())
            })
            .await
        });
        started.recv_timeout(Duration::from_secs(5)).unwrap();
        let p = pool.clone();
        let queued = tokio::spawn(async move { p.run(|| Ok(7)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let e = pool.run(|| Ok(0)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Overloaded);
        assert_eq!(e.retry_after, Some(1));
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        assert_eq!(queued.await.unwrap().unwrap(), 7);
    }
}
