//! The ironsift HTTP service.
//!
//! This is the only crate that knows HTTP: the axum router ([`app`], callable without a socket),
//! the one mapping from `ErrorCode` to HTTP status ([`status_of`]), request ids, authentication,
//! body limits, panic isolation, and the serve loop with graceful shutdown ([`run`]).
//!
//! **Invariant:** index work never runs on the async threads: handlers hand it to the blocking
//! pool, and `/livez`, `/readyz` and `/metrics` are answered by a front door on a thread of its
//! own, so probes stay fast while searches and writes run and even while the async workers are
//! flooded with requests being shed.
#![warn(missing_docs, unreachable_pub)]

mod admission;
mod conn_guard;
mod context;
mod error;
mod listener;
mod middleware;
mod openapi;
mod pool;
mod routes;
mod state;

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use admission::{AdmissionConfig, ChaosConfig};
pub use context::current_request_id;
pub use error::{ApiError, status_of};
pub use middleware::REQUEST_ID_HEADER;
pub use openapi::spec as openapi_spec;
pub use routes::{app, app_with};
pub use state::{AppState, ServerConfig};

/// Counts shutdown requests (signals): the first starts a graceful shutdown, the second
/// forces a fast one. Create with [`shutdown_channel`].
pub type ShutdownSender = watch::Sender<u32>;

/// A pair for requesting shutdown: `send_modify(|n| *n += 1)` per signal.
pub fn shutdown_channel() -> (ShutdownSender, watch::Receiver<u32>) {
    watch::channel(0)
}

async fn at_least(rx: &mut watch::Receiver<u32>, n: u32) {
    // An error means every sender is gone: treat it as "no more signals will come".
    if rx.wait_for(|v| *v >= n).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Serves `state` on `listener` until shutdown is requested, then: `/readyz` turns 503 at once
/// and responses carry `Connection: close`; after the configured drain delay the listener
/// accepts what is already queued and closes; in-flight requests finish (up to
/// `shutdown_timeout`, or until a second request forces it); pending writes are committed and
/// the indexes closed for writing.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    mut shutdown: watch::Receiver<u32>,
    shutdown_timeout: Duration,
) -> std::io::Result<()> {
    // CPU placement was set up by `AppState::open`, which made `state`.
    let app = routes::app(state.clone());
    let committer = tokio::spawn(commit_loop(state.clone(), shutdown.clone()));
    start_maintenance(&state);

    let (close_tx, close_rx) = watch::channel(false);
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let listener = listener::start(listener, app.clone(), close_rx, closed_tx)?;
    let mut signals = shutdown.clone();
    let st = state.clone();
    let drain_delay = state.0.config.drain_delay;
    tokio::spawn(async move {
        at_least(&mut signals, 1).await;
        st.begin_shutdown();
        tracing::info!("shutdown requested: no longer ready");
        tokio::select! {
            _ = tokio::time::sleep(drain_delay) => {}
            _ = at_least(&mut signals, 2) => {}
        }
        let _ = close_tx.send(true);
    });
    let graceful = async move {
        let _ = closed_rx.await;
        tracing::info!("listener closed; draining in-flight requests");
    };
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<listener::ClientAddr>(),
    )
    .with_graceful_shutdown(graceful);
    let mut forced = shutdown.clone();
    let force = async move {
        at_least(&mut forced, 1).await;
        tokio::select! {
            _ = tokio::time::sleep(shutdown_timeout) => tracing::warn!("shutdown timeout reached; closing remaining connections"),
            _ = at_least(&mut forced, 2) => tracing::warn!("second signal: closing remaining connections"),
        }
    };
    tokio::select! {
        r = server => r?,
        _ = force => {}
    }
    at_least(&mut shutdown, 1).await;
    committer.abort();
    let report = state.0.tasks.shutdown(Duration::from_secs(5)).await;
    if !report.abandoned.is_empty() {
        tracing::warn!(tasks = ?report.abandoned, "background tasks still running at shutdown were abandoned");
    }
    let st = state.clone();
    let failures = tokio::task::spawn_blocking(move || st.commit_and_close_all())
        .await
        .unwrap_or_default();
    for (name, e) in &failures {
        tracing::error!(index = %name, error = %e, "final commit failed");
    }
    if failures.is_empty() {
        tracing::info!("pending writes committed; bye");
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "final commit failed for {} index(es)",
            failures.len()
        )))
    }
}

/// Registers the background jobs: the periodic scrub (checksums of every index) and
/// snapshots. A failing or panicking job is recorded in its stats and runs again next time.
fn start_maintenance(state: &AppState) {
    let cfg = &state.0.config;
    let tasks = &state.0.tasks;
    *state
        .0
        .memory_task
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(state.0.memory.spawn(Duration::from_secs(1)));
    let st = state.clone();
    let spec = resource_mgmt::JobSpec::every("writer-accounting", Duration::from_secs(1));
    if let Err(e) = tasks.add_blocking(spec, move || {
        st.account_writers();
        pool::lower_indexing_priority();
        Ok(())
    }) {
        tracing::error!(error = %e, "cannot schedule writer accounting");
    }
    let st = state.clone();
    let spec = resource_mgmt::JobSpec::every("garbage-collection", Duration::from_secs(600))
        .with_jitter(Duration::from_secs(60));
    if let Err(e) = tasks.add_blocking(spec, move || {
        let mut failures = Vec::new();
        for (name, e) in st.entries() {
            match e.index.garbage_collect() {
                Ok(0) => {}
                Ok(n) => tracing::info!(index = %name, files = n, "removed files no commit needs"),
                Err(err) => failures.push(format!("{name}: {err}")),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; ").into())
        }
    }) {
        tracing::error!(error = %e, "cannot schedule garbage collection");
    }
    if let Some(every) = cfg.scrub_interval {
        let st = state.clone();
        let spec = resource_mgmt::JobSpec::every("scrub", every).with_jitter(every / 10);
        let added = tasks.add_blocking(spec, move || {
            let damaged: Vec<String> = st
                .verify_all()
                .into_iter()
                .filter(|r| !r.is_sound())
                .map(|r| r.summary())
                .collect();
            if damaged.is_empty() {
                Ok(())
            } else {
                Err(damaged.join("; ").into())
            }
        });
        if let Err(e) = added {
            tracing::error!(error = %e, "cannot schedule the scrub");
        }
    }
    if let Some(every) = cfg.snapshot_interval {
        let st = state.clone();
        let spec = resource_mgmt::JobSpec::every("snapshot", every).with_jitter(every / 10);
        let added = tasks.add_blocking(spec, move || {
            let failures = st.snapshot_all();
            if failures.is_empty() {
                Ok(())
            } else {
                let text: Vec<String> = failures.iter().map(|(n, e)| format!("{n}: {e}")).collect();
                Err(text.join("; ").into())
            }
        });
        if let Err(e) = added {
            tracing::error!(error = %e, "cannot schedule snapshots");
        }
    }
}

/// Commits pending writes every `refresh_interval` until shutdown begins.
async fn commit_loop(state: AppState, mut shutdown: watch::Receiver<u32>) {
    let mut tick = tokio::time::interval(state.0.config.refresh_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = at_least(&mut shutdown, 1) => return,
        }
        let st = state.clone();
        let failures = tokio::task::spawn_blocking(move || st.commit_all())
            .await
            .unwrap_or_default();
        for (name, e) in failures {
            tracing::error!(index = %name, error = %e, "background commit failed; will retry");
        }
    }
}
