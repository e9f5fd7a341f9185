//! Tracing setup: one line per event, human-readable or JSON, to stderr.

use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00Z  INFO request{id=...}: message key=value`
    #[default]
    Human,
    /// One JSON object per line, with the span fields (request id) included.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "human" | "text" | "pretty" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (use human or json)")),
        }
    }
}

/// Installs the global subscriber. The filter comes from `RUST_LOG` when set, else from
/// `level` (e.g. `info`, `debug,tantivy=warn`), else `info`. A second call is a no-op, so tests
/// and embedders that installed their own subscriber keep it.
pub fn init(format: LogFormat, level: Option<&str>) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(level.unwrap_or("info")),
    }
    .map_err(|e| format!("invalid log filter: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("human".parse::<LogFormat>().unwrap(), LogFormat::Human);
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn bad_filters_are_reported() {
        // Only meaningful when RUST_LOG is not set by the environment running the tests.
        if std::env::var_os("RUST_LOG").is_none() {
            assert!(init(LogFormat::Human, Some("info,[[[")).is_err());
        }
    }
}
