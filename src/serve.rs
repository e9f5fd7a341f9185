//! `ironsift serve`: configuration (flags > IRONSIFT_* env > TOML file > defaults), optional
//! folder indexing, then the HTTP service until SIGTERM/SIGINT.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use ironsift::{Catalog, IndexConfig, IndexDirOptions, IndexKind};
use observability::logging::LogFormat;
use serde::Deserialize;
use server::{AppState, ServerConfig};

use crate::{Cli, parse_size};

/// Default listen address.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:7600";

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Folder to index into --index before serving (incremental; progress bar on a terminal).
    folder: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7600; port 0 picks a free one].
    #[arg(long, env = "IRONSIFT_LISTEN")]
    listen: Option<SocketAddr>,
    /// TOML configuration file (keys as the long flags, with '_' for '-').
    #[arg(long, env = "IRONSIFT_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: human or json.
    #[arg(long, env = "IRONSIFT_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Log level/filter (RUST_LOG wins when set) [default: info].
    #[arg(long, env = "IRONSIFT_LOG_LEVEL")]
    log_level: Option<String>,
    /// Admin API key (writes, index management, admin routes). Repeat or comma-separate.
    #[arg(
        long = "admin-key",
        env = "IRONSIFT_ADMIN_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    admin_keys: Vec<String>,
    /// Search API key (search and document reads). Repeat or comma-separate.
    #[arg(
        long = "search-key",
        env = "IRONSIFT_SEARCH_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    search_keys: Vec<String>,
    /// Require an admin key for /metrics too.
    #[arg(long, env = "IRONSIFT_PROTECT_METRICS", num_args = 0..=1, default_missing_value = "true")]
    protect_metrics: Option<bool>,
    /// How long in-flight requests may run after SIGTERM [default: 30s].
    #[arg(long, env = "IRONSIFT_SHUTDOWN_TIMEOUT", value_parser = parse_duration)]
    shutdown_timeout: Option<Duration>,
    /// Largest request body [default: 16MiB].
    #[arg(long, env = "IRONSIFT_BODY_LIMIT", value_parser = parse_size)]
    body_limit: Option<u64>,
    /// After SIGTERM, keep serving this long (answering with `Connection: close`, so clients
    /// leave keep-alive connections) before the listener closes [default: 500ms].
    #[arg(long, env = "IRONSIFT_DRAIN_DELAY", value_parser = parse_duration)]
    drain_delay: Option<Duration>,
    /// How often pending writes are committed [default: 1s].
    #[arg(long, env = "IRONSIFT_REFRESH_INTERVAL", value_parser = parse_duration)]
    refresh_interval: Option<Duration>,
    /// When writes are acknowledged: `request` (after their write-ahead log record is fsynced;
    /// concurrent writes share fsyncs) or `async` (at once; the log is fsynced at each commit,
    /// so a machine crash can lose the last refresh interval) [default: request].
    #[arg(long, env = "IRONSIFT_DURABILITY")]
    durability: Option<ironsift::Durability>,
    /// Check every index's files before serving it [default: true].
    #[arg(long, env = "IRONSIFT_VERIFY_ON_START")]
    verify_on_start: Option<bool>,
    /// How often every index is checked again in the background; 0 disables [default: 1h].
    #[arg(long, env = "IRONSIFT_SCRUB_INTERVAL", value_parser = parse_duration)]
    scrub_interval: Option<Duration>,
    /// How often documents indexes are snapshotted (repair rolls back to one and replays the
    /// write-ahead log); 0 disables [default: 1h].
    #[arg(long, env = "IRONSIFT_SNAPSHOT_INTERVAL", value_parser = parse_duration)]
    snapshot_interval: Option<Duration>,
    /// Snapshots kept per index [default: 3].
    #[arg(long, env = "IRONSIFT_SNAPSHOT_KEEP")]
    snapshot_keep: Option<usize>,
    /// Memory budget (e.g. 2GiB) [default: the cgroup limit, else 80% of RAM]. Above 70%:
    /// cached answers dropped, pending writes flushed; above 85%: writes refused (503), searches
    /// no longer queue, /readyz fails; back to normal 5 points below each level.
    #[arg(long, env = "IRONSIFT_MEMORY_LIMIT", value_parser = parse_size)]
    memory_limit: Option<u64>,
    /// Searches running at once [default: cores + 1].
    #[arg(long, env = "IRONSIFT_SEARCH_CONCURRENCY")]
    search_concurrency: Option<usize>,
    /// Searches that may wait for a slot; more (or a wait beyond the deadline) get 503 +
    /// Retry-After at once [default: 64].
    #[arg(long, env = "IRONSIFT_SEARCH_QUEUE")]
    search_queue: Option<usize>,
    /// Writes running at once [default: 4].
    #[arg(long, env = "IRONSIFT_INDEX_CONCURRENCY")]
    index_concurrency: Option<usize>,
    /// Writes that may wait for a slot [default: 256].
    #[arg(long, env = "IRONSIFT_INDEX_QUEUE")]
    index_queue: Option<usize>,
    /// Requests per second per client (API key, else IP); beyond: 429 + Retry-After.
    /// 0 disables [default: 0].
    #[arg(long, env = "IRONSIFT_RATE_LIMIT")]
    rate_limit: Option<u32>,
    /// Requests a client may burst above its rate [default: twice the rate].
    #[arg(long, env = "IRONSIFT_RATE_BURST")]
    rate_burst: Option<u32>,
    /// Memory for cached search answers in MiB (also served, flagged degraded, when an index
    /// is failing or the server overloaded); 0 disables [default: 64, or 1/16 of the memory
    /// budget when that is smaller].
    #[arg(long, env = "IRONSIFT_CACHE_MB")]
    cache_mb: Option<usize>,
    /// Memory in MiB for stored documents rendered as JSON once and reused by later searches
    /// (saves reading and serializing a popular document again); 0 disables [default: 64, or
    /// 1/16 of the memory budget when that is smaller].
    #[arg(long, env = "IRONSIFT_DOC_CACHE_MB")]
    doc_cache_mb: Option<usize>,
    /// Open an index's search breaker when this percentage of its recent searches failed
    /// (cached answers are then served, flagged degraded) [default: 50].
    #[arg(long, env = "IRONSIFT_BREAKER_FAILURE_RATE")]
    breaker_failure_rate: Option<f64>,
    /// Searches the breaker looks back on [default: 50].
    #[arg(long, env = "IRONSIFT_BREAKER_WINDOW")]
    breaker_window: Option<u32>,
    /// How long a breaker stays open at first (doubling on re-opening, up to 60s) [default: 5s].
    #[arg(long, env = "IRONSIFT_BREAKER_OPEN", value_parser = parse_duration)]
    breaker_open: Option<Duration>,
    /// Inject faults into searches for chaos drills: fraction of searches failing (0-1)
    /// [default: 0]. Also settable at PUT /v1/admin/chaos.
    #[arg(long, env = "IRONSIFT_CHAOS_ERROR_RATE")]
    chaos_error_rate: Option<f64>,
    /// Inject latency into every search for chaos drills [default: 0].
    #[arg(long, env = "IRONSIFT_CHAOS_LATENCY", value_parser = parse_duration)]
    chaos_latency: Option<Duration>,
    /// Deadline of a search that gives no timeout_ms [default: 2s].
    #[arg(long, env = "IRONSIFT_SEARCH_TIMEOUT", value_parser = parse_duration)]
    search_timeout: Option<Duration>,
    /// Largest timeout_ms accepted [default: 30s].
    #[arg(long, env = "IRONSIFT_MAX_SEARCH_TIMEOUT", value_parser = parse_duration)]
    max_search_timeout: Option<Duration>,
}

/// The TOML file: every key optional, unknown keys rejected (typos must not pass silently).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    index: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    admin_keys: Option<Vec<String>>,
    search_keys: Option<Vec<String>>,
    protect_metrics: Option<bool>,
    shutdown_timeout: Option<String>,
    body_limit: Option<String>,
    refresh_interval: Option<String>,
    drain_delay: Option<String>,
    heap_mb: Option<usize>,
    durability: Option<String>,
    verify_on_start: Option<bool>,
    scrub_interval: Option<String>,
    snapshot_interval: Option<String>,
    snapshot_keep: Option<usize>,
    memory_limit: Option<String>,
    search_concurrency: Option<usize>,
    search_queue: Option<usize>,
    index_concurrency: Option<usize>,
    index_queue: Option<usize>,
    rate_limit: Option<u32>,
    rate_burst: Option<u32>,
    cache_mb: Option<usize>,
    doc_cache_mb: Option<usize>,
    search_timeout: Option<String>,
    max_search_timeout: Option<String>,
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 30s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn load_file(path: Option<&Path>) -> Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e.message()))
}

/// Binds with a deep accept queue: a burst of connections (a thousand clients arriving at
/// once) must wait in the kernel's queue, not have their SYNs dropped, which costs each of
/// them a one-second retransmission (the kernel caps it at `net.core.somaxconn`).
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

pub(crate) fn run(cli: &Cli, args: &ServeArgs) -> Result<ExitCode> {
    let file = load_file(args.config.as_deref())?;
    let from_file = |what: &str, v: &Option<String>, parse: fn(&str) -> Result<u64, String>| {
        v.as_deref()
            .map(parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("config file: {what}: {e}"))
    };
    let log_format = match (args.log_format, &file.log_format) {
        (Some(f), _) => f,
        (None, Some(s)) => s
            .parse()
            .map_err(|e| anyhow::anyhow!("config file: log_format: {e}"))?,
        (None, None) => LogFormat::Human,
    };
    let log_level = args.log_level.clone().or(file.log_level.clone());
    observability::logging::init(log_format, log_level.as_deref()).map_err(anyhow::Error::msg)?;

    let data = cli
        .data
        .clone()
        .or(file.data.clone())
        .unwrap_or_else(|| PathBuf::from(ironsift::DEFAULT_DATA_DIR));
    let index_name = cli
        .index
        .clone()
        .or(file.index.clone())
        .unwrap_or_else(|| ironsift::DEFAULT_INDEX.to_string());
    let listen = match (args.listen, file.listen) {
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => DEFAULT_LISTEN.parse().expect("valid default address"),
    };
    fn parse_ms(s: &str) -> Result<u64, String> {
        parse_duration(s).map(|d| d.as_millis() as u64)
    }
    let shutdown_timeout = match args.shutdown_timeout {
        Some(d) => d,
        None => Duration::from_millis(
            from_file("shutdown_timeout", &file.shutdown_timeout, parse_ms)?.unwrap_or(30_000),
        ),
    };
    let refresh_interval = match args.refresh_interval {
        Some(d) => d,
        None => Duration::from_millis(
            from_file("refresh_interval", &file.refresh_interval, parse_ms)?.unwrap_or(1_000),
        ),
    }
    .max(Duration::from_millis(10));
    let drain_delay = match args.drain_delay {
        Some(d) => d,
        None => Duration::from_millis(
            from_file("drain_delay", &file.drain_delay, parse_ms)?.unwrap_or(500),
        ),
    };
    let body_limit = match args.body_limit {
        Some(b) => b,
        None => from_file("body_limit", &file.body_limit, parse_size)?.unwrap_or(16 << 20),
    };
    let admin_keys = if args.admin_keys.is_empty() {
        file.admin_keys.clone().unwrap_or_default()
    } else {
        args.admin_keys.clone()
    };
    let search_keys = if args.search_keys.is_empty() {
        file.search_keys.clone().unwrap_or_default()
    } else {
        args.search_keys.clone()
    };
    let heap_mb = cli
        .heap_mb
        .or(file.heap_mb)
        .unwrap_or(crate::DEFAULT_HEAP_MB);
    let durability = match (args.durability, &file.durability) {
        (Some(d), _) => d,
        (None, Some(s)) => s
            .parse()
            .map_err(|e| anyhow::anyhow!("config file: durability: {e}"))?,
        (None, None) => ironsift::Durability::default(),
    };
    let every =
        |flag: Option<Duration>, key: &str, v: &Option<String>| -> Result<Option<Duration>> {
            let d = match flag {
                Some(d) => d,
                None => Duration::from_millis(from_file(key, v, parse_ms)?.unwrap_or(3_600_000)),
            };
            Ok((!d.is_zero()).then_some(d))
        };
    let scrub_interval = every(args.scrub_interval, "scrub_interval", &file.scrub_interval)?;
    let snapshot_interval = every(
        args.snapshot_interval,
        "snapshot_interval",
        &file.snapshot_interval,
    )?;
    let defaults = server::AdmissionConfig::default();
    let memory_limit = match args.memory_limit {
        Some(b) => Some(b),
        None => from_file("memory_limit", &file.memory_limit, parse_size)?,
    };
    // Each cache's default: 64 MiB, or 1/16 of the memory budget when smaller (a 512 MiB
    // container keeps 32 MiB per cache, not a quarter of its memory for both).
    let default_cache_bytes =
        resource_mgmt::MemoryBudget::detect(memory_limit).map_or(64 << 20, |b| {
            usize::try_from(b.limit_bytes / 16)
                .unwrap_or(usize::MAX)
                .min(64 << 20)
        });
    let admission = server::AdmissionConfig {
        search_concurrency: args
            .search_concurrency
            .or(file.search_concurrency)
            .unwrap_or(defaults.search_concurrency)
            .max(1),
        search_queue: args
            .search_queue
            .or(file.search_queue)
            .unwrap_or(defaults.search_queue),
        index_concurrency: args
            .index_concurrency
            .or(file.index_concurrency)
            .unwrap_or(defaults.index_concurrency)
            .max(1),
        index_queue: args
            .index_queue
            .or(file.index_queue)
            .unwrap_or(defaults.index_queue),
        rate_limit: args.rate_limit.or(file.rate_limit).unwrap_or(0),
        rate_burst: args.rate_burst.or(file.rate_burst).unwrap_or(0),
        cache_bytes: args
            .cache_mb
            .or(file.cache_mb)
            .map_or(default_cache_bytes, |mb| mb << 20),
        breaker_failure_rate: args
            .breaker_failure_rate
            .unwrap_or(defaults.breaker_failure_rate),
        breaker_window: args.breaker_window.unwrap_or(defaults.breaker_window),
        breaker_open: args.breaker_open.unwrap_or(defaults.breaker_open),
        chaos: server::ChaosConfig {
            search_error_rate: args.chaos_error_rate.unwrap_or(0.0),
            search_latency_ms: args.chaos_latency.map_or(0, |d| d.as_millis() as u64),
            search_panic_rate: 0.0,
        },
        ..defaults
    };
    let search_timeout = match args.search_timeout {
        Some(d) => d,
        None => Duration::from_millis(
            from_file("search_timeout", &file.search_timeout, parse_ms)?.unwrap_or(2_000),
        ),
    };
    let max_search_timeout = match args.max_search_timeout {
        Some(d) => d,
        None => Duration::from_millis(
            from_file("max_search_timeout", &file.max_search_timeout, parse_ms)?.unwrap_or(30_000),
        ),
    };
    if search_timeout.is_zero() || search_timeout > max_search_timeout {
        anyhow::bail!(
            "--search-timeout ({search_timeout:?}) must be above 0 and at most --max-search-timeout ({max_search_timeout:?})"
        );
    }
    let config = ServerConfig {
        memory_limit,
        admission,
        search_timeout,
        max_search_timeout,
        verify_on_start: args
            .verify_on_start
            .or(file.verify_on_start)
            .unwrap_or(true),
        scrub_interval,
        snapshot_interval,
        snapshot_keep: args
            .snapshot_keep
            .or(file.snapshot_keep)
            .unwrap_or(3)
            .max(1),
        body_limit: usize::try_from(body_limit).unwrap_or(usize::MAX),
        admin_keys: admin_keys.into_iter().filter(|k| !k.is_empty()).collect(),
        search_keys: search_keys.into_iter().filter(|k| !k.is_empty()).collect(),
        protect_metrics: args
            .protect_metrics
            .or(file.protect_metrics)
            .unwrap_or(false),
        refresh_interval,
        drain_delay,
        ..ServerConfig::default()
    };
    if config.admin_keys.is_empty() && config.search_keys.is_empty() && !listen.ip().is_loopback() {
        tracing::warn!(%listen, "listening beyond loopback without API keys: anyone who can reach it can write and delete");
    }

    let catalog = Catalog::with_config(
        &data,
        IndexConfig {
            writer_heap_bytes: heap_mb.max(15) << 20,
            durability,
            doc_cache: Some(std::sync::Arc::new(ironsift::DocCache::new(
                args.doc_cache_mb
                    .or(file.doc_cache_mb)
                    .map_or(default_cache_bytes, |mb| mb << 20),
            ))),
            ..IndexConfig::default()
        },
    )?;
    if let Some(folder) = &args.folder {
        let index = catalog.open_or_create(&index_name, IndexKind::Files)?;
        crate::index_dir(&index, folder, &IndexDirOptions::default(), false, false)?;
        // Release the writer lock: the service opens its own handle.
        index.close_writer();
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ironsift")
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime.block_on(async move {
        let state = AppState::open(catalog, config).map_err(anyhow::Error::msg)?;
        let listener = bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, data = %data.display(), "listening");
        // Scripts and the test harness read the bound address (port 0 picks one) from stdout.
        let mut out = std::io::stdout().lock();
        writeln!(out, "ironsift: listening on http://{addr}")?;
        out.flush()?;
        drop(out);

        let (tx, rx) = server::shutdown_channel();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                tracing::info!(signal = name, "signal received");
                tx.send_modify(|n| *n += 1);
            }
        });
        server::run(listener, state, rx, shutdown_timeout).await?;
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    });
    // Work still on the blocking pool was never acknowledged (the indexes are closed for
    // writing); do not let it hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    outcome
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
