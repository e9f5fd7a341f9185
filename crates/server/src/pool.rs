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
                    // Whatever thread created the pool, searches may use every CPU.
                    use_every_cpu();
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

/// Name prefixes of Tantivy's indexing threads: index workers, merge and segment-updater
/// threads, doc-store compressors.
const INDEXING_THREADS: [&str; 4] = [
    "thrd-tantivy-in",
    "merge_thread_",
    "segment_update",
    "docstore-compre",
];

/// This process's indexing threads. Tantivy names its threads but offers no hook, so they are
/// found by name in `/proc/self/task` (one directory listing). Linux only; empty elsewhere.
fn indexing_threads() -> Vec<rustix::process::Pid> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| INDEXING_THREADS.iter().any(|p| comm.starts_with(p)))
        })
        .filter_map(|task| {
            task.file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw)
        })
        .collect()
}

/// Lowers the priority of this process's indexing threads so a large ingest cannot starve
/// searches (the kernel gives searches the CPU first), and places them per recent searches
/// (see [`Placement`]). Best effort, errors ignored; called every second by a background job.
pub(crate) fn lower_indexing_priority() {
    let mask = indexing_mask();
    for tid in indexing_threads() {
        if rustix::process::getpriority_process(Some(tid)).is_ok_and(|p| p < INDEXING_NICE) {
            let _ = rustix::process::setpriority_process(Some(tid), INDEXING_NICE);
        }
        if let Some(mask) = &mask {
            let _ = rustix::thread::sched_setaffinity(Some(tid), mask);
        }
    }
}

/// CPU placement of indexing work. While searches are being served (one in the last
/// [`SEARCH_RECENT`]), indexing threads run on every allowed CPU but the first, which stays
/// free for searches and sockets: nice values share the CPU but a search woken behind an
/// indexing thread still waits for its time slice. With no searches, indexing uses them all.
/// Linux only, best effort; on a single CPU nothing changes.
struct Placement {
    all: rustix::thread::CpuSet,
    spare_one: rustix::thread::CpuSet,
    /// Milliseconds since `start` of the last search (0: none yet).
    last_search: std::sync::atomic::AtomicU64,
    start: std::time::Instant,
    confined: std::sync::atomic::AtomicBool,
}

const SEARCH_RECENT: std::time::Duration = std::time::Duration::from_secs(5);

static PLACEMENT: std::sync::OnceLock<Option<Placement>> = std::sync::OnceLock::new();

/// Records the CPUs this process may use; call from an unconfined thread at start.
pub(crate) fn init_placement() {
    PLACEMENT.get_or_init(|| {
        let all = rustix::thread::sched_getaffinity(None).ok()?;
        if all.count() < 2 {
            return None;
        }
        let first = (0..rustix::thread::CpuSet::MAX_CPU).find(|&c| all.is_set(c))?;
        let mut spare_one = all;
        spare_one.unset(first);
        Some(Placement {
            all,
            spare_one,
            last_search: std::sync::atomic::AtomicU64::new(0),
            start: std::time::Instant::now(),
            confined: std::sync::atomic::AtomicBool::new(false),
        })
    });
}

/// The mask indexing threads get now, per recent searches (`None`: placement is off).
fn indexing_mask() -> Option<rustix::thread::CpuSet> {
    let p = PLACEMENT.get()?.as_ref()?;
    let last = p.last_search.load(std::sync::atomic::Ordering::Relaxed);
    let recent =
        last > 0 && p.start.elapsed().as_millis() as u64 <= last + SEARCH_RECENT.as_millis() as u64;
    p.confined
        .store(recent, std::sync::atomic::Ordering::Relaxed);
    Some(if recent { p.spare_one } else { p.all })
}

/// Lets the calling thread run on every CPU the process may use (threads inherit the mask of
/// the thread that created them).
fn use_every_cpu() {
    if let Some(Some(p)) = PLACEMENT.get() {
        let _ = rustix::thread::sched_setaffinity(None, &p.all);
    }
}

/// Notes a search; the first after a quiet spell moves indexing off the spare CPU at once.
pub(crate) fn note_search() {
    let Some(Some(p)) = PLACEMENT.get() else {
        return;
    };
    let now = (p.start.elapsed().as_millis() as u64).max(1);
    p.last_search
        .store(now, std::sync::atomic::Ordering::Relaxed);
    if !p.confined.load(std::sync::atomic::Ordering::Relaxed) {
        place_indexing_threads();
    }
}

/// Applies the current placement to the indexing threads at once.
fn place_indexing_threads() {
    let Some(mask) = indexing_mask() else {
        return;
    };
    for tid in indexing_threads() {
        let _ = rustix::thread::sched_setaffinity(Some(tid), &mask);
    }
}

/// Runs `f` at indexing priority on the calling (blocking-pool) thread. The thread keeps that
/// priority: tokio's blocking threads only run background and write work in this server.
pub(crate) fn at_indexing_priority<T>(f: impl FnOnce() -> T) -> T {
    if rustix::process::getpriority_process(None).is_ok_and(|p| p < INDEXING_NICE) {
        let _ = rustix::process::setpriority_process(None, INDEXING_NICE);
    }
    if let Some(mask) = indexing_mask() {
        let _ = rustix::thread::sched_setaffinity(None, &mask);
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

#[cfg(all(test, target_os = "linux"))]
mod placement_tests {
    use super::*;

    /// A search moves indexing threads (and write work on the calling thread) off the first
    /// allowed CPU; searches themselves keep every CPU.
    #[test]
    fn searches_keep_a_cpu_free_of_indexing() {
        init_placement();
        let Some(Some(p)) = PLACEMENT.get() else {
            eprintln!("one CPU: nothing to place");
            return;
        };
        let (all, spare_one) = (p.all, p.spare_one);
        assert_eq!(spare_one.count() + 1, all.count());
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let indexer = std::thread::Builder::new()
            .name("thrd-tantivy-in-test".into())
            .spawn(move || {
                tx.send(()).unwrap();
                let _ = done_rx.recv();
                rustix::thread::sched_getaffinity(None).unwrap()
            })
            .unwrap();
        rx.recv().unwrap();
        note_search();
        let writer_mask = at_indexing_priority(|| rustix::thread::sched_getaffinity(None).unwrap());
        done_tx.send(()).unwrap();
        let indexer_mask = indexer.join().unwrap();
        assert_eq!(indexer_mask, spare_one);
        assert_eq!(writer_mask, spare_one);
        // The search pool's threads are never confined.
        let pool = Pool::new("placement-test", 1, 1).unwrap();
        let (mtx, mrx) = std::sync::mpsc::channel();
        pool.tx
            .send(Box::new(move || {
                mtx.send(rustix::thread::sched_getaffinity(None).unwrap())
                    .unwrap()
            }))
            .unwrap();
        assert_eq!(mrx.recv().unwrap(), all);
    }
}
