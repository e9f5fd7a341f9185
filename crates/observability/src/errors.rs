//! The error reporter: what went wrong, how often, since when, with a sample message.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use search_error::{ErrorCode, Severity};
use serde::Serialize;

/// Aggregated occurrences of one error code at one severity.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorStat {
    /// The error code.
    pub code: ErrorCode,
    /// Its severity.
    pub severity: Severity,
    /// Occurrences since start.
    pub count: u64,
    /// First occurrence, milliseconds since the Unix epoch.
    pub first_seen_ms: u64,
    /// Last occurrence, milliseconds since the Unix epoch.
    pub last_seen_ms: u64,
    /// The most recent message (truncated to 512 bytes).
    pub sample: String,
}

/// Counts errors by code and severity; also increments the `ironsift_errors_total` metric.
#[derive(Debug, Default)]
pub struct ErrorReporter {
    stats: Mutex<BTreeMap<(ErrorCode, Severity), ErrorStat>>,
}

const SAMPLE_BYTES: usize = 512;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn truncate(s: &str) -> String {
    if s.len() <= SAMPLE_BYTES {
        return s.to_string();
    }
    let mut end = SAMPLE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl ErrorReporter {
    /// An empty reporter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one occurrence.
    pub fn record(&self, code: ErrorCode, severity: Severity, message: &str) {
        metrics::counter!(crate::metrics::ERRORS, "code" => code.as_str(), "severity" => severity.as_str())
            .increment(1);
        let now = now_ms();
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let entry = stats.entry((code, severity)).or_insert_with(|| ErrorStat {
            code,
            severity,
            count: 0,
            first_seen_ms: now,
            last_seen_ms: now,
            sample: String::new(),
        });
        entry.count += 1;
        entry.last_seen_ms = now;
        entry.sample = truncate(message);
    }

    /// Every aggregate, most severe first, then by code.
    pub fn snapshot(&self) -> Vec<ErrorStat> {
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<ErrorStat> = stats.values().cloned().collect();
        v.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.code.cmp(&b.code)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_by_code_and_severity() {
        let r = ErrorReporter::new();
        r.record(ErrorCode::NotFound, Severity::Low, "no index a");
        r.record(ErrorCode::NotFound, Severity::Low, "no index b");
        r.record(
            ErrorCode::DataCorruption,
            Severity::Critical,
            &"x".repeat(2000),
        );
        let s = r.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].code, ErrorCode::DataCorruption);
        assert!(s[0].sample.len() <= SAMPLE_BYTES + 3);
        assert_eq!(s[1].count, 2);
        assert_eq!(s[1].sample, "no index b");
        assert!(s[1].first_seen_ms <= s[1].last_seen_ms);
    }
}
