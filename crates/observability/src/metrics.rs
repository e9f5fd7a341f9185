//! The process-wide metrics recorder (Prometheus text format) and the names we export.
//!
//! Metric names are constants here so every crate records under the same names and the
//! exporter can describe them and give histograms sensible buckets.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests served, by `route`, `method` and `status`.
pub const HTTP_REQUESTS: &str = "ironsift_http_requests_total";
/// Request latency in seconds, by `route`, `method` and `status`.
pub const HTTP_DURATION: &str = "ironsift_http_request_duration_seconds";
/// Requests being served now.
pub const HTTP_IN_FLIGHT: &str = "ironsift_http_requests_in_flight";
/// Errors by `code` and `severity`.
pub const ERRORS: &str = "ironsift_errors_total";
/// Searchable documents per `index`.
pub const INDEX_DOCS: &str = "ironsift_index_docs";
/// Segments per `index`.
pub const INDEX_SEGMENTS: &str = "ironsift_index_segments";
/// Bytes on disk per `index`.
pub const INDEX_BYTES: &str = "ironsift_index_bytes";
/// Search answers served from the cache because the index's breaker was open or the service
/// was overloaded (flagged `degraded`).
pub const DEGRADED_ANSWERS: &str = "ironsift_degraded_answers_total";
/// Operations stopped by their deadline, by `operation` (partial answers and 504s).
pub const TIMEOUTS: &str = "ironsift_timeouts_total";
/// Always 1, labelled with `version`.
pub const BUILD_INFO: &str = "ironsift_build_info";

const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Handle to the installed recorder.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

impl Metrics {
    /// Installs the Prometheus recorder as the global `metrics` recorder (once per process;
    /// later calls return the same handle) and describes ironsift's metrics.
    pub fn install(version: &str) -> Result<Metrics, String> {
        let handle = HANDLE
            .get_or_init(|| {
                let recorder = PrometheusBuilder::new()
                    .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                    .map_err(|e| e.to_string())?
                    .build_recorder();
                let handle = recorder.handle();
                metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
                describe();
                Ok(handle)
            })
            .clone()?;
        metrics::gauge!(BUILD_INFO, "version" => version.to_string()).set(1.0);
        Ok(Metrics { handle })
    }

    /// The current metrics in Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests served, by route, method and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency, by route, method and status."
    );
    describe_gauge!(HTTP_IN_FLIGHT, "HTTP requests being served.");
    describe_counter!(ERRORS, "Errors by code and severity.");
    describe_counter!(
        TIMEOUTS,
        "Operations stopped by their deadline (partial answers and 504s), by operation."
    );
    describe_counter!(
        DEGRADED_ANSWERS,
        "Search answers served from the cache (degraded) while the index breaker was open or the service overloaded."
    );
    describe_gauge!(INDEX_DOCS, "Searchable documents per index.");
    describe_gauge!(INDEX_SEGMENTS, "Committed segments per index.");
    describe_gauge!(INDEX_BYTES, Unit::Bytes, "Bytes on disk per index.");
    describe_gauge!(BUILD_INFO, "Build information; always 1.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_idempotent_and_renders() {
        let a = Metrics::install("test").unwrap();
        let b = Metrics::install("test").unwrap();
        metrics::counter!(HTTP_REQUESTS, "route" => "/x", "method" => "GET", "status" => "200")
            .increment(1);
        metrics::histogram!(HTTP_DURATION, "route" => "/x", "method" => "GET", "status" => "200")
            .record(0.002);
        let text = b.render();
        assert!(
            text.contains("ironsift_build_info{version=\"test\"} 1"),
            "{text}"
        );
        assert!(text.contains("ironsift_http_requests_total{"), "{text}");
        assert!(
            text.contains("ironsift_http_request_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(!a.render().is_empty());
    }
}
