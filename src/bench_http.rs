//! `ironsift bench-http`: load any ironsift deployment with search queries and report
//! throughput, latency percentiles and health-probe latency (JSON with `--json`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use testkit::load::{self, LoadConfig};

use crate::serve::parse_duration;

#[derive(Args)]
pub(crate) struct BenchHttpArgs {
    /// Base URL of the server (http only), e.g. http://127.0.0.1:7600.
    #[arg(long, default_value = "http://127.0.0.1:7600")]
    url: String,
    /// Index to search [default: default, or --index].
    #[arg(long = "target-index")]
    target_index: Option<String>,
    /// Query file: one query per line, optional `N:` prefix. Without it, a few built-in
    /// queries are used.
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// Measured duration.
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up before measuring.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Open loop at this many requests per second (default: closed loop, as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Hits per search.
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// Poll this path on its own connection meanwhile ("" for none).
    #[arg(long, default_value = "/readyz")]
    probe: String,
    /// Client threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

const BUILT_IN: &[&str] = &[
    "error",
    "memory allocation",
    "\"device driver\"",
    "lock -spin",
    "net*",
];

fn resolve(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    hostport
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} resolves to no address"))
}

pub(crate) fn run(index: &str, args: &BenchHttpArgs) -> Result<ExitCode> {
    let addr = resolve(&args.url)?;
    let index = args.target_index.as_deref().unwrap_or(index);
    let queries = match &args.queries {
        Some(p) => load::read_queries(
            &std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        None => BUILT_IN.iter().map(|s| s.to_string()).collect(),
    };
    if queries.is_empty() {
        bail!("the query file holds no queries");
    }
    if args.connections == 0 || args.threads == 0 {
        bail!("--connections and --threads must be at least 1");
    }
    if let Some(r) = args.rate
        && !(r > 0.0 && r.is_finite())
    {
        bail!("--rate must be a positive number");
    }
    let paths: Vec<String> = queries
        .iter()
        .map(|q| {
            format!(
                "/v1/indexes/{index}/search?q={}&limit={}",
                load::encode_query_value(q),
                args.limit
            )
        })
        .collect();
    let cfg = LoadConfig {
        addr,
        paths: Arc::new(paths),
        connections: args.connections,
        duration: args.duration,
        warmup: args.warmup,
        rate: args.rate,
        probe: (!args.probe.is_empty()).then(|| args.probe.clone()),
        probe_interval: Duration::from_millis(10),
        request_timeout: Duration::from_secs(30),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime
        .block_on(load::run(cfg))
        .context("load run failed")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let l = &report.latency;
        println!(
            "{:.0} req/s over {:.1} s ({} connections{}): {} ok, {} shed, {} errors, {} failed ({} timeouts)",
            report.qps,
            report.seconds,
            args.connections,
            args.rate
                .map(|r| format!(", open loop at {r}/s"))
                .unwrap_or_default(),
            report.ok,
            report.shed,
            report.errors,
            report.failures,
            report.timeouts
        );
        println!(
            "latency µs: p50 {} p90 {} p99 {} p99.9 {} max {}",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
        );
        if let Some(p) = &report.probe {
            println!(
                "probe {}: p50 {} p99 {} max {} µs ({} samples)",
                args.probe, p.p50_us, p.p99_us, p.max_us, p.count
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
