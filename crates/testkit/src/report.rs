//! Load-run reports: the model serialized as JSON, and a self-contained HTML page.
//!
//! The HTML has no external scripts, styles or fonts: charts are inline SVG (throughput by
//! outcome, 2xx latency percentiles on a log scale, error, shed and degraded rates, the
//! server's circuit breaker transitions, users/in-flight and memory over time, with phases
//! shaded and events such as a SIGKILL marked), so the file can be mailed, attached to CI runs
//! or opened offline. Hovering a second shows its figures (SVG
//! `<title>` tooltips, no JavaScript).

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::load::{BreakerData, BreakerSecond, InjectedFaults, Latency, RunData, Second};

/// Identifies the JSON layout; bumped when a field changes meaning.
pub const SCHEMA: &str = "ironsift-load-report/1";

/// One pass/fail bar a scenario checks.
#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    /// What is checked, e.g. "non-error responses".
    pub name: String,
    /// The target, e.g. "≥ 99.9 %".
    pub target: String,
    /// What was measured, e.g. "100.000 % (0 errors of 10,000)".
    pub measured: String,
    /// Whether the target was met.
    pub pass: bool,
}

/// A named figure shown with the summary (e.g. the recovery time after a restart).
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Label.
    pub name: String,
    /// Value, formatted.
    pub value: String,
}

/// A whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// Scenario name, e.g. `concurrency`.
    pub scenario: String,
    /// One sentence on what the scenario does.
    pub description: String,
    /// Whether this was the short CI form.
    pub quick: bool,
    /// Base URL of the server.
    pub url: String,
    /// Index searched.
    pub index: String,
    /// Start, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// Start, ISO 8601 UTC.
    pub started_at: String,
    /// Knobs of the run (name, value).
    pub settings: Vec<(String, String)>,
    /// Whether every bar passed.
    pub pass: bool,
    /// The bars.
    pub bars: Vec<Bar>,
    /// Scenario-specific figures.
    pub findings: Vec<Finding>,
    /// Remarks for the reader.
    pub notes: Vec<String>,
    /// Everything measured.
    #[serde(flatten)]
    pub run: RunData,
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (UTC, proleptic Gregorian).
pub fn iso8601(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Writes `report.json` (the given text: the caller serializes [`Report`]) and
/// `report.html` into `dir` (created if needed); their paths.
pub fn write(dir: &Path, report: &Report, json: &str) -> io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let json_path = dir.join("report.json");
    let html_path = dir.join("report.html");
    std::fs::write(&json_path, json)?;
    std::fs::write(&html_path, html(report))?;
    Ok((json_path, html_path))
}

// ------------------------------------------------------------------------------------------
// Formatting helpers
// ------------------------------------------------------------------------------------------

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency in µs for people: `850 µs`, `12.3 ms`, `1.25 s`.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 10_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A "nice" upper bound ≥ `v` (1, 2, 2.5, 5 × 10^k).
fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag * 1.000_001 {
            return m * mag;
        }
    }
    10.0 * mag
}

/// An axis for values up to `raw`: its maximum and a round tick step (at most 5 ticks).
fn axis(raw: f64) -> (f64, f64) {
    let step = nice_ceil(raw.max(1e-9) / 5.0);
    let ticks = (raw / step).ceil().max(1.0);
    (ticks * step, step)
}

fn fmt_num(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v.fract().abs() < 1e-9 || v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

// ------------------------------------------------------------------------------------------
// Colours (one palette for charts, cards and tables)
// ------------------------------------------------------------------------------------------

const C_OK: &str = "#22a06b";
const C_SHED: &str = "#e2a60f";
const C_REJECTED: &str = "#8993a4";
const C_ERROR: &str = "#e34935";
const C_TIMEOUT: &str = "#8f5bd6";
const C_P50: &str = "#2f7de1";
const C_P99: &str = "#d6336c";
const C_MAX: &str = "#f08c3a";
const C_PROBE: &str = "#14b8a6";
const C_USERS: &str = "#2f7de1";
const C_FLIGHT: &str = "#8f5bd6";
const C_RATE: &str = "#22a06b";
const C_RSS: &str = "#e2a60f";
const C_ANON: &str = "#d6336c";
const C_OPENED: &str = "#e34935";
const C_CLOSED: &str = "#22a06b";
const C_OPEN_STATE: &str = "#f4b8b0";
const C_OPENED_SUM: &str = "#a61e4d";
const C_CLOSED_SUM: &str = "#1f845a";

// ------------------------------------------------------------------------------------------
// SVG charts
// ------------------------------------------------------------------------------------------

const W: f64 = 1000.0;
const H: f64 = 240.0;
const ML: f64 = 64.0;
const MR: f64 = 64.0;
const MT: f64 = 16.0;
const MB: f64 = 30.0;

enum Kind {
    /// Stacked with the areas before it.
    Area,
    Line,
    Dots,
    /// A full-height shade over each second with a value above zero (e.g. a state).
    Band,
    /// A bar per second, side by side with the other column series (small counts).
    Columns,
}

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    kind: Kind,
    /// One value per second (`None` = no point).
    values: Vec<Option<f64>>,
    /// Drawn against the right axis.
    right: bool,
}

struct Chart<'a> {
    series: Vec<Series<'a>>,
    /// Left axis: log scale of µs.
    log_us: bool,
    left_label: &'a str,
    right_label: &'a str,
    /// Fixed left maximum (e.g. 100 for percentages).
    left_max: Option<f64>,
}

struct Frame<'a> {
    seconds: usize,
    report: &'a Report,
}

impl Frame<'_> {
    fn x(&self, t: f64) -> f64 {
        ML + (W - ML - MR) * t / self.seconds.max(1) as f64
    }
}

fn log_y(v: f64, lo: f64, hi: f64) -> f64 {
    let v = v.max(lo);
    let f = (v.log10() - lo.log10()) / (hi.log10() - lo.log10());
    MT + (H - MT - MB) * (1.0 - f.clamp(0.0, 1.0))
}

fn lin_y(v: f64, max: f64) -> f64 {
    MT + (H - MT - MB) * (1.0 - (v / max).clamp(0.0, 1.0))
}

fn x_step(seconds: usize) -> usize {
    for s in [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600] {
        if seconds / s <= 12 {
            return s;
        }
    }
    7200
}

fn fmt_t(t: usize) -> String {
    if t >= 120 && t.is_multiple_of(60) {
        format!("{}m", t / 60)
    } else {
        format!("{t}s")
    }
}

fn render_chart(svg: &mut String, frame: &Frame<'_>, chart: &Chart<'_>, tips: &[String]) {
    let n = frame.seconds;
    let _ = write!(
        svg,
        r#"<svg viewBox="0 0 {W} {H}" class="chart" role="img" xmlns="http://www.w3.org/2000/svg">"#
    );
    // Phase bands (alternating shade), warm-up hatched lighter, labels on top.
    for (i, p) in frame.report.run.phases.iter().enumerate() {
        let (x0, x1) = (frame.x(p.start_s), frame.x(p.end_s));
        let shade = if i % 2 == 0 { "band-a" } else { "band-b" };
        let _ = write!(
            svg,
            r#"<rect class="{shade}" x="{x0:.1}" y="{MT}" width="{:.1}" height="{:.1}"><title>{}: {} ({:.1}–{:.1} s)</title></rect>"#,
            (x1 - x0).max(0.5),
            H - MT - MB,
            esc(&p.name),
            esc(&p.load),
            p.start_s,
            p.end_s
        );
        if p.measured_from_s > p.start_s + 0.05 {
            let xw = frame.x(p.measured_from_s);
            let _ = write!(
                svg,
                r#"<rect class="warmup" x="{x0:.1}" y="{MT}" width="{:.1}" height="{:.1}"><title>warm-up (not in the totals)</title></rect>"#,
                (xw - x0).max(0.5),
                H - MT - MB
            );
        }
        if x1 - x0 > 40.0 {
            let _ = write!(
                svg,
                r#"<text class="band-label" x="{:.1}" y="{:.1}">{}</text>"#,
                x0 + 4.0,
                MT + 11.0,
                esc(&p.name)
            );
        }
    }
    // Scales.
    let max_of = |right: bool| {
        chart
            .series
            .iter()
            .filter(|s| s.right == right)
            .map(|s| match s.kind {
                Kind::Area | Kind::Band => 0.0,
                _ => s.values.iter().flatten().copied().fold(0.0, f64::max),
            })
            .fold(0.0, f64::max)
    };
    let stacked_max = (0..n)
        .map(|i| {
            chart
                .series
                .iter()
                .filter(|s| matches!(s.kind, Kind::Area))
                .map(|s| s.values.get(i).copied().flatten().unwrap_or(0.0))
                .sum::<f64>()
        })
        .fold(0.0, f64::max);
    let (left_max, left_step) = axis(chart.left_max.unwrap_or(max_of(false).max(stacked_max)));
    let (right_max, right_step) = axis(max_of(true));
    let (lo, hi) = if chart.log_us {
        let vals = chart
            .series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied())
            .filter(|v| *v > 0.0);
        let (mn, mx) = vals.fold((f64::MAX, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
        if mx <= 0.0 {
            (100.0, 1_000_000.0)
        } else {
            (
                10f64.powf(mn.log10().floor()).max(1.0),
                10f64.powf(mx.log10().ceil()).max(10.0),
            )
        }
    } else {
        (0.0, 0.0)
    };
    let yl = |v: f64| {
        if chart.log_us {
            log_y(v, lo, hi)
        } else {
            lin_y(v, left_max)
        }
    };
    let yr = |v: f64| lin_y(v, right_max);
    // Grid and axes.
    if chart.log_us {
        let mut v = lo;
        while v <= hi * 1.0001 {
            let y = yl(v);
            let _ = write!(
                svg,
                r#"<line class="grid" x1="{ML}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                W - MR,
                ML - 6.0,
                y + 4.0,
                fmt_us(v as u64)
            );
            v *= 10.0;
        }
    } else {
        for i in 0..=(left_max / left_step).round() as u32 {
            let v = left_step * f64::from(i);
            let y = yl(v);
            let _ = write!(
                svg,
                r#"<line class="grid" x1="{ML}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                W - MR,
                ML - 6.0,
                y + 4.0,
                fmt_num(v)
            );
        }
    }
    if chart.series.iter().any(|s| s.right) {
        for i in 0..=(right_max / right_step).round() as u32 {
            let v = right_step * f64::from(i);
            let _ = write!(
                svg,
                r#"<text class="tick" x="{:.1}" y="{:.1}">{}</text>"#,
                W - MR + 6.0,
                yr(v) + 4.0,
                fmt_num(v)
            );
        }
        let _ = write!(
            svg,
            r#"<text class="axis-label" transform="translate({:.1},{:.1}) rotate(90)" text-anchor="middle">{}</text>"#,
            W - 10.0,
            (H - MB + MT) / 2.0,
            esc(chart.right_label)
        );
    }
    let _ = write!(
        svg,
        r#"<text class="axis-label" transform="translate(14,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (H - MB + MT) / 2.0,
        esc(chart.left_label)
    );
    let step = x_step(n);
    let mut t = 0;
    while t <= n {
        let x = frame.x(t as f64);
        let _ = write!(
            svg,
            r#"<line class="xtick" x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}"/><text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            H - MB,
            H - MB + 4.0,
            H - MB + 16.0,
            fmt_t(t)
        );
        t += step;
    }
    // Bands, behind everything drawn on them.
    for s in chart.series.iter().filter(|s| matches!(s.kind, Kind::Band)) {
        for (i, v) in s.values.iter().enumerate().take(n) {
            if v.is_some_and(|v| v > 0.0) {
                let x0 = frame.x(i as f64);
                let _ = write!(
                    svg,
                    r#"<rect x="{x0:.1}" y="{MT}" width="{:.2}" height="{:.1}" fill="{}" fill-opacity="0.45"/>"#,
                    frame.x(i as f64 + 1.0) - x0,
                    H - MT - MB,
                    s.color
                );
            }
        }
    }
    // Columns: the second's width shared by the column series.
    let columns: Vec<&Series<'_>> = chart
        .series
        .iter()
        .filter(|s| matches!(s.kind, Kind::Columns))
        .collect();
    for (j, s) in columns.iter().enumerate() {
        let y = |v: f64| if s.right { yr(v) } else { yl(v) };
        for (i, v) in s.values.iter().enumerate().take(n) {
            if let Some(v) = v.filter(|v| *v > 0.0) {
                let (x0, x1) = (frame.x(i as f64), frame.x(i as f64 + 1.0));
                let w = (x1 - x0) * 0.8 / columns.len() as f64;
                let _ = write!(
                    svg,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{}"/>"#,
                    x0 + (x1 - x0) * 0.1 + w * j as f64,
                    y(v),
                    w,
                    (H - MB - y(v)).max(0.0),
                    s.color
                );
            }
        }
    }
    // Stacked areas: each point is the middle of its second.
    let mut base = vec![0.0f64; n];
    for s in chart.series.iter().filter(|s| matches!(s.kind, Kind::Area)) {
        let top: Vec<f64> = (0..n)
            .map(|i| base[i] + s.values.get(i).copied().flatten().unwrap_or(0.0))
            .collect();
        if top.iter().zip(&base).all(|(a, b)| a == b) {
            continue;
        }
        let mut d = String::new();
        for (i, v) in top.iter().enumerate() {
            let cmd = if i == 0 { 'M' } else { 'L' };
            let _ = write!(d, "{cmd}{:.1},{:.1} ", frame.x(i as f64 + 0.5), yl(*v));
        }
        for i in (0..n).rev() {
            let _ = write!(d, "L{:.1},{:.1} ", frame.x(i as f64 + 0.5), yl(base[i]));
        }
        let _ = write!(
            svg,
            r#"<path d="{d}Z" fill="{}" fill-opacity="0.78" stroke="{}" stroke-width="0.8"/>"#,
            s.color, s.color
        );
        base = top;
    }
    // Lines and dots.
    for s in &chart.series {
        let y = |v: f64| if s.right { yr(v) } else { yl(v) };
        match s.kind {
            Kind::Area | Kind::Band | Kind::Columns => {}
            Kind::Line => {
                let mut d = String::new();
                let mut pen = false;
                for (i, v) in s.values.iter().enumerate() {
                    match v {
                        Some(v) if !chart.log_us || *v > 0.0 || s.right => {
                            let cmd = if pen { 'L' } else { 'M' };
                            let _ = write!(d, "{cmd}{:.1},{:.1} ", frame.x(i as f64 + 0.5), y(*v));
                            pen = true;
                        }
                        _ => pen = false,
                    }
                }
                if !d.is_empty() {
                    let _ = write!(
                        svg,
                        r#"<path d="{d}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"/>"#,
                        s.color
                    );
                }
            }
            Kind::Dots => {
                for (i, v) in s.values.iter().enumerate() {
                    if let Some(v) = v.filter(|v| *v > 0.0) {
                        let _ = write!(
                            svg,
                            r#"<circle cx="{:.1}" cy="{:.1}" r="2.2" fill="{}"/>"#,
                            frame.x(i as f64 + 0.5),
                            y(v),
                            s.color
                        );
                    }
                }
            }
        }
    }
    // Events.
    for e in &frame.report.run.events {
        let x = frame.x(e.at_s);
        let _ = write!(
            svg,
            r#"<line class="event" x1="{x:.1}" x2="{x:.1}" y1="{MT}" y2="{:.1}"/><text class="event-label" x="{:.1}" y="{:.1}">⚡ {}</text>"#,
            H - MB,
            x + 4.0,
            H - MB - 6.0,
            esc(&e.name)
        );
    }
    // Hover targets, one per second.
    for (i, tip) in tips.iter().enumerate().take(n) {
        let x0 = frame.x(i as f64);
        let _ = write!(
            svg,
            r#"<rect class="hover" x="{x0:.1}" y="{MT}" width="{:.2}" height="{:.1}"><title>{}</title></rect>"#,
            frame.x(i as f64 + 1.0) - x0,
            H - MT - MB,
            esc(tip)
        );
    }
    svg.push_str("</svg>");
    // Legend.
    svg.push_str(r#"<div class="legend">"#);
    for s in &chart.series {
        if s.values.iter().flatten().all(|v| *v == 0.0) {
            continue;
        }
        let swatch = match s.kind {
            Kind::Area | Kind::Band | Kind::Columns => "sw-area",
            Kind::Line => "sw-line",
            Kind::Dots => "sw-dot",
        };
        let _ = write!(
            svg,
            r#"<span><i class="{swatch}" style="background:{}"></i>{}</span>"#,
            s.color,
            esc(s.name)
        );
    }
    svg.push_str("</div>");
}

fn tip(s: &Second) -> String {
    let total = s.total();
    let mut t = format!(
        "{}–{} s · {} done · ok {} · shed {} · errors {} · timeouts {}",
        s.t,
        s.t + 1,
        thousands(total),
        thousands(s.ok),
        thousands(s.shed),
        thousands(s.errors),
        thousands(s.timeouts)
    );
    if s.rejected > 0 {
        let _ = write!(t, " · rejected {}", thousands(s.rejected));
    }
    if s.ok > 0 {
        let _ = write!(
            t,
            "\n2xx p50 {} · p99 {} · max {}",
            fmt_us(s.ok_p50_us),
            fmt_us(s.ok_p99_us),
            fmt_us(s.ok_max_us)
        );
    }
    if let Some(p) = s.probe_max_us {
        let _ = write!(t, "\nprobe max {}", fmt_us(p));
    }
    if s.users > 0 || s.in_flight > 0 {
        let _ = write!(t, "\nusers {} · in flight {}", s.users, s.in_flight);
    }
    if let Some(r) = s.rss_kib {
        let _ = write!(t, "\nRSS {:.1} MiB", r as f64 / 1024.0);
    }
    t
}

// ------------------------------------------------------------------------------------------
// The page
// ------------------------------------------------------------------------------------------

const CSS: &str = r#"
:root{--bg:#f5f7fb;--card:#fff;--ink:#172b4d;--muted:#6b778c;--line:#e4e8f0;--ok:#22a06b;--bad:#e34935}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Ubuntu,sans-serif}
main{max-width:1080px;margin:0 auto;padding:28px 20px 60px}
header{display:flex;align-items:center;gap:20px;margin-bottom:18px}
header h1{font-size:26px;margin:0;letter-spacing:-.3px}header h1 small{color:var(--muted);font-weight:500}
header p{margin:4px 0 0;color:var(--muted)}
.verdict{margin-left:auto;padding:10px 22px;border-radius:999px;font-weight:800;font-size:20px;letter-spacing:1px;color:#fff}
.verdict.pass{background:linear-gradient(135deg,#22a06b,#1f845a)}.verdict.fail{background:linear-gradient(135deg,#e34935,#c9372c)}
.tag{display:inline-block;padding:1px 8px;border-radius:6px;background:#e9f2ff;color:#0c66e4;font-size:12px;font-weight:600;margin-left:6px;vertical-align:middle}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:12px;margin:16px 0 22px}
.card{background:var(--card);border-radius:12px;padding:14px 16px;box-shadow:0 1px 2px rgba(9,30,66,.08),0 0 0 1px rgba(9,30,66,.04)}
.card b{display:block;font-size:22px;letter-spacing:-.3px}.card .sub{display:block;font-size:11.5px;font-weight:500;color:var(--muted);letter-spacing:0}.card span{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.6px}
.card .bar{height:6px;border-radius:3px;background:var(--line);margin-top:8px;overflow:hidden;display:flex}.card .bar i{display:block;height:100%}
section{background:var(--card);border-radius:12px;padding:18px 20px;margin:16px 0;box-shadow:0 1px 2px rgba(9,30,66,.08),0 0 0 1px rgba(9,30,66,.04)}
section h2{font-size:15px;margin:0 0 12px;text-transform:uppercase;letter-spacing:.8px;color:var(--muted)}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:7px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.5px}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr:last-child td{border-bottom:none}
.pill{display:inline-block;min-width:54px;text-align:center;padding:2px 10px;border-radius:999px;font-weight:700;font-size:12px;color:#fff}
.pill.pass{background:var(--ok)}.pill.fail{background:var(--bad)}
.chart{width:100%;height:auto;display:block}
.grid{stroke:#eef1f6;stroke-width:1}.xtick{stroke:#c1c7d0}.tick{fill:#8590a2;font-size:11px}.axis-label{fill:#6b778c;font-size:11px}
.band-a{fill:#f7f9fc}.band-b{fill:#eef3fb}.warmup{fill:#e4e7ee;opacity:.7}.band-label{fill:#8590a2;font-size:11px;font-weight:600}
.event{stroke:#c9372c;stroke-width:1.6;stroke-dasharray:5 4}.event-label{fill:#c9372c;font-size:11px;font-weight:700}
.hover{fill:transparent}.hover:hover{fill:rgba(23,43,77,.07)}
.legend{display:flex;flex-wrap:wrap;gap:14px;margin:6px 0 0 64px;color:var(--muted);font-size:12px}
.legend i{display:inline-block;vertical-align:middle;margin-right:6px;border-radius:2px}
.sw-area{width:14px;height:10px}.sw-line{width:16px;height:3px}.sw-dot{width:7px;height:7px;border-radius:50%!important}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:6px;vertical-align:middle}
.summary{margin:0 0 10px}.muted{color:var(--muted)}ul.notes{margin:0;padding-left:18px}ul.notes li{margin:4px 0}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:16px}.cols section{margin:0}
code{background:#f1f2f4;border-radius:4px;padding:1px 5px;font-size:12.5px}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:26px}
@media (max-width:760px){.cols{grid-template-columns:1fr}header{flex-wrap:wrap}}
"#;

fn card(out: &mut String, label: &str, value: &str, bar: Option<&[(f64, &str)]>) {
    let _ = write!(
        out,
        r#"<div class="card"><span>{}</span><b>{}</b>"#,
        esc(label),
        value
    );
    if let Some(parts) = bar {
        out.push_str(r#"<div class="bar">"#);
        for (f, color) in parts {
            if *f > 0.0 {
                let _ = write!(
                    out,
                    r#"<i style="width:{:.3}%;background:{color}"></i>"#,
                    f * 100.0
                );
            }
        }
        out.push_str("</div>");
    }
    out.push_str("</div>");
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "—".into()
    } else {
        let p = part as f64 * 100.0 / whole as f64;
        if p > 0.0 && p < 0.01 {
            "< 0.01 %".into()
        } else {
            format!("{p:.2} %")
        }
    }
}

fn latency_row(out: &mut String, name: &str, color: &str, l: &Latency) {
    if l.count == 0 {
        return;
    }
    let _ = write!(
        out,
        r#"<tr><td><i class="dot" style="background:{color}"></i>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
        esc(name),
        thousands(l.count),
        fmt_us(l.p50_us),
        fmt_us(l.p90_us),
        fmt_us(l.p99_us),
        fmt_us(l.p999_us),
        fmt_us(l.max_us)
    );
}

/// One line on the server's circuit breakers during the run, e.g. "breaker opened 12 times,
/// closed 11 times (half-open 14 times) · 61 polls of the server's metrics, 3 failed (gaps)".
pub fn breaker_summary(b: &BreakerData, faults: Option<&InjectedFaults>) -> String {
    if !b.exported {
        return format!(
            "no breaker figures: {}",
            b.note
                .as_deref()
                .unwrap_or("the server exports no breaker metrics")
        );
    }
    let mut line = format!(
        "breaker opened {} times, closed {} times (half-open {} times) · {} polls of the server's metrics",
        thousands(b.opened_total),
        thousands(b.closed_total),
        thousands(b.half_open_total),
        thousands(b.polls)
    );
    if b.failed_polls > 0 {
        let _ = write!(line, ", {} failed (gaps)", thousands(b.failed_polls));
    }
    if b.restarts > 0 {
        let _ = write!(line, " · counters restarted {} time(s)", b.restarts);
    }
    if let Some(f) = faults {
        let _ = write!(
            line,
            " · chaos layer injected {} errors, {} delays",
            thousands(f.errors),
            thousands(f.delays)
        );
        if f.panics > 0 {
            let _ = write!(line, ", {} panics", thousands(f.panics));
        }
    }
    line
}

/// The circuit breaker section: the summary line and, when the server exported its breaker
/// metrics, the transitions per second polled from them, with the sampled state shaded.
fn breaker_section(
    o: &mut String,
    frame: &Frame<'_>,
    b: &BreakerData,
    faults: Option<&InjectedFaults>,
    tips: &[String],
) {
    o.push_str(
        r#"<section><h2>Circuit breaker (transitions per second, from the server's metrics)</h2>"#,
    );
    let _ = write!(
        o,
        r#"<p class="summary">{}</p>"#,
        esc(&breaker_summary(b, faults))
    );
    let n = frame.seconds;
    if !b.exported || n == 0 {
        o.push_str("</section>");
        return;
    }
    // A second without a successful poll stays `None`: a gap in the lines. The final poll
    // comes after the last second of the series; it is drawn in that second.
    let mut rows: Vec<Option<BreakerSecond>> = vec![None; n];
    for r in &b.timeline {
        let i = (r.t as usize).min(n - 1);
        let row = rows[i].get_or_insert_with(BreakerSecond::default);
        row.opened += r.opened;
        row.half_open += r.half_open;
        row.closed += r.closed;
        row.state = r.state.or(row.state);
    }
    let values = |f: &dyn Fn(&BreakerSecond) -> f64| -> Vec<Option<f64>> {
        rows.iter().map(|r| r.as_ref().map(f)).collect()
    };
    // Running totals, carried over the gaps.
    let running = |f: &dyn Fn(&BreakerSecond) -> u64| -> Vec<Option<f64>> {
        let mut sum = 0;
        rows.iter()
            .map(|r| {
                sum += r.as_ref().map_or(0, f);
                Some(sum as f64)
            })
            .collect()
    };
    let tips: Vec<String> = tips
        .iter()
        .zip(&rows)
        .map(|(tip, r)| match r {
            Some(r) => format!(
                "{tip}\nbreaker: opened {} · half-open {} · closed {}{}",
                r.opened,
                r.half_open,
                r.closed,
                r.state.map(|s| format!(" · state {s}")).unwrap_or_default()
            ),
            None => format!("{tip}\nbreaker: no poll this second"),
        })
        .collect();
    render_chart(
        o,
        frame,
        &Chart {
            series: vec![
                Series {
                    name: "open (sampled state)",
                    color: C_OPEN_STATE,
                    kind: Kind::Band,
                    values: values(&|r| f64::from(u8::from(r.state == Some("open")))),
                    right: false,
                },
                Series {
                    name: "opened",
                    color: C_OPENED,
                    kind: Kind::Columns,
                    values: values(&|r| r.opened as f64),
                    right: false,
                },
                Series {
                    name: "closed",
                    color: C_CLOSED,
                    kind: Kind::Columns,
                    values: values(&|r| r.closed as f64),
                    right: false,
                },
                Series {
                    name: "opened so far (right)",
                    color: C_OPENED_SUM,
                    kind: Kind::Line,
                    values: running(&|r| r.opened),
                    right: true,
                },
                Series {
                    name: "closed so far (right)",
                    color: C_CLOSED_SUM,
                    kind: Kind::Line,
                    values: running(&|r| r.closed),
                    right: true,
                },
            ],
            log_us: false,
            left_label: "transitions / s",
            right_label: "since the start",
            left_max: None,
        },
        &tips,
    );
    o.push_str("</section>");
}

/// The report as one self-contained HTML page.
pub fn html(r: &Report) -> String {
    let run = &r.run;
    let t = &run.totals;
    let mut o = String::with_capacity(256 * 1024);
    let verdict = if r.pass { "pass" } else { "fail" };
    let _ = write!(
        o,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>ironsift {} — {}</title><style>{CSS}</style></head><body><main>"#,
        esc(&r.scenario),
        verdict.to_uppercase()
    );
    let _ = write!(
        o,
        r#"<header><div><h1>ironsift · {} <small>load report</small>{}</h1><p>{}</p><p><code>{}</code> · index <code>{}</code> · {} · {:.1} s</p></div><div class="verdict {verdict}">{}</div></header>"#,
        esc(&r.scenario),
        if r.quick {
            r#"<span class="tag">quick</span>"#
        } else {
            ""
        },
        esc(&r.description),
        esc(&r.url),
        esc(&r.index),
        esc(&r.started_at),
        run.seconds,
        verdict.to_uppercase()
    );

    // Cards.
    o.push_str(r#"<div class="cards">"#);
    let whole = t.requests.max(1) as f64;
    card(
        &mut o,
        "requests",
        &thousands(t.requests),
        Some(&[
            (t.ok as f64 / whole, C_OK),
            (t.shed as f64 / whole, C_SHED),
            (t.rejected as f64 / whole, C_REJECTED),
            (t.errors as f64 / whole, C_ERROR),
            (t.timeouts as f64 / whole, C_TIMEOUT),
        ]),
    );
    card(&mut o, "throughput", &format!("{:.0}/s", run.rps), None);
    card(&mut o, "ok (2xx)", &pct(t.ok, t.requests), None);
    card(
        &mut o,
        "shed 429/503",
        &format!(
            r#"{}<small class="sub">{} with Retry-After</small>"#,
            thousands(t.shed),
            thousands(t.shed_with_retry_after)
        ),
        None,
    );
    card(&mut o, "errors", &thousands(t.errors), None);
    card(&mut o, "timeouts", &thousands(t.timeouts), None);
    if let Some(b) = run.breaker.as_ref().filter(|b| b.exported) {
        card(
            &mut o,
            "breaker",
            &format!(
                r#"{} / {}<small class="sub">opened / closed</small>"#,
                thousands(b.opened_total),
                thousands(b.closed_total)
            ),
            None,
        );
    }
    card(&mut o, "p50 (2xx)", &fmt_us(run.latency.ok.p50_us), None);
    card(&mut o, "p99 (2xx)", &fmt_us(run.latency.ok.p99_us), None);
    o.push_str("</div>");

    // Bars.
    o.push_str(r#"<section><h2>Bars</h2><table><tr><th>check</th><th>target</th><th>measured</th><th>result</th></tr>"#);
    for b in &r.bars {
        let cls = if b.pass { "pass" } else { "fail" };
        let _ = write!(
            o,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td><span class="pill {cls}">{}</span></td></tr>"#,
            esc(&b.name),
            esc(&b.target),
            esc(&b.measured),
            cls.to_uppercase()
        );
    }
    if r.bars.is_empty() {
        o.push_str(r#"<tr><td colspan="4" class="muted">no bars for this scenario</td></tr>"#);
    }
    o.push_str("</table>");
    if !r.findings.is_empty() {
        o.push_str(r#"<table style="margin-top:10px">"#);
        for f in &r.findings {
            let _ = write!(
                o,
                r#"<tr><td class="muted" style="width:40%">{}</td><td>{}</td></tr>"#,
                esc(&f.name),
                esc(&f.value)
            );
        }
        o.push_str("</table>");
    }
    o.push_str("</section>");

    // Charts.
    let n = run.series.len();
    let frame = Frame {
        seconds: n,
        report: r,
    };
    let tips: Vec<String> = run.series.iter().map(tip).collect();
    let col = |f: &dyn Fn(&Second) -> f64| -> Vec<Option<f64>> {
        run.series.iter().map(|s| Some(f(s))).collect()
    };
    let nonzero = |f: &dyn Fn(&Second) -> u64| -> Vec<Option<f64>> {
        run.series
            .iter()
            .map(|s| Some(f(s)).filter(|v| *v > 0).map(|v| v as f64))
            .collect()
    };
    o.push_str(r#"<section><h2>Throughput by outcome (per second)</h2>"#);
    render_chart(
        &mut o,
        &frame,
        &Chart {
            series: vec![
                Series {
                    name: "ok",
                    color: C_OK,
                    kind: Kind::Area,
                    values: col(&|s| s.ok as f64),
                    right: false,
                },
                Series {
                    name: "rejected (invalid input)",
                    color: C_REJECTED,
                    kind: Kind::Area,
                    values: col(&|s| s.rejected as f64),
                    right: false,
                },
                Series {
                    name: "shed (429/503)",
                    color: C_SHED,
                    kind: Kind::Area,
                    values: col(&|s| s.shed as f64),
                    right: false,
                },
                Series {
                    name: "errors",
                    color: C_ERROR,
                    kind: Kind::Area,
                    values: col(&|s| s.errors as f64),
                    right: false,
                },
                Series {
                    name: "timeouts",
                    color: C_TIMEOUT,
                    kind: Kind::Area,
                    values: col(&|s| s.timeouts as f64),
                    right: false,
                },
            ],
            log_us: false,
            left_label: "responses / s",
            right_label: "",
            left_max: None,
        },
        &tips,
    );
    o.push_str("</section>");

    o.push_str(r#"<section><h2>Latency of 2xx answers (log scale)</h2>"#);
    render_chart(
        &mut o,
        &frame,
        &Chart {
            series: vec![
                Series {
                    name: "max",
                    color: C_MAX,
                    kind: Kind::Dots,
                    values: nonzero(&|s| s.ok_max_us),
                    right: false,
                },
                Series {
                    name: "p99",
                    color: C_P99,
                    kind: Kind::Line,
                    values: nonzero(&|s| s.ok_p99_us),
                    right: false,
                },
                Series {
                    name: "p50",
                    color: C_P50,
                    kind: Kind::Line,
                    values: nonzero(&|s| s.ok_p50_us),
                    right: false,
                },
                Series {
                    name: "health probe (slowest)",
                    color: C_PROBE,
                    kind: Kind::Dots,
                    values: run
                        .series
                        .iter()
                        .map(|s| s.probe_max_us.map(|v| v as f64))
                        .collect(),
                    right: false,
                },
            ],
            log_us: true,
            left_label: "latency",
            right_label: "",
            left_max: None,
        },
        &tips,
    );
    o.push_str("</section>");

    o.push_str(r#"<section><h2>Error and shed rates (% of completions per second)</h2>"#);
    let rate = |f: &dyn Fn(&Second) -> u64| -> Vec<Option<f64>> {
        run.series
            .iter()
            .map(|s| {
                let total = s.total();
                (total > 0).then(|| f(s) as f64 * 100.0 / total as f64)
            })
            .collect()
    };
    let worst_rate = run
        .series
        .iter()
        .filter(|s| s.total() > 0)
        .map(|s| (s.shed + s.errors + s.timeouts) as f64 * 100.0 / s.total() as f64)
        .fold(0.0, f64::max);
    render_chart(
        &mut o,
        &frame,
        &Chart {
            series: vec![
                Series {
                    name: "shed %",
                    color: C_SHED,
                    kind: Kind::Line,
                    values: rate(&|s| s.shed),
                    right: false,
                },
                Series {
                    name: "errors %",
                    color: C_ERROR,
                    kind: Kind::Line,
                    values: rate(&|s| s.errors),
                    right: false,
                },
                Series {
                    name: "timeouts %",
                    color: C_TIMEOUT,
                    kind: Kind::Line,
                    values: rate(&|s| s.timeouts),
                    right: false,
                },
                Series {
                    name: "degraded %",
                    color: C_REJECTED,
                    kind: Kind::Line,
                    values: rate(&|s| s.degraded),
                    right: false,
                },
            ],
            log_us: false,
            left_label: "%",
            right_label: "",
            left_max: Some(if worst_rate <= 0.0 {
                1.0
            } else {
                nice_ceil(worst_rate).min(100.0)
            }),
        },
        &tips,
    );
    o.push_str("</section>");

    if let Some(b) = &run.breaker {
        breaker_section(&mut o, &frame, b, run.injected_faults.as_ref(), &tips);
    }

    let has_rss = run.series.iter().any(|s| s.rss_kib.is_some());
    o.push_str(if has_rss {
        r#"<section><h2>Load applied and server memory</h2>"#
    } else {
        r#"<section><h2>Load applied</h2>"#
    });
    let mut load_series = vec![
        Series {
            name: "active users",
            color: C_USERS,
            kind: Kind::Line,
            values: col(&|s| s.users as f64),
            right: false,
        },
        Series {
            name: "in flight",
            color: C_FLIGHT,
            kind: Kind::Line,
            values: col(&|s| s.in_flight as f64),
            right: false,
        },
        Series {
            name: "target rate (req/s)",
            color: C_RATE,
            kind: Kind::Line,
            values: col(&|s| s.rate),
            right: false,
        },
    ];
    if has_rss {
        load_series.push(Series {
            name: "RSS (MiB, right)",
            color: C_RSS,
            kind: Kind::Line,
            values: run
                .series
                .iter()
                .map(|s| s.rss_kib.map(|v| v as f64 / 1024.0))
                .collect(),
            right: true,
        });
        load_series.push(Series {
            name: "anonymous RSS (MiB, right)",
            color: C_ANON,
            kind: Kind::Line,
            values: run
                .series
                .iter()
                .map(|s| s.rss_anon_kib.map(|v| v as f64 / 1024.0))
                .collect(),
            right: true,
        });
    }
    render_chart(
        &mut o,
        &frame,
        &Chart {
            series: load_series,
            log_us: false,
            left_label: "users · requests · req/s",
            right_label: "MiB",
            left_max: None,
        },
        &tips,
    );
    o.push_str("</section>");

    // Latency table and outcomes.
    o.push_str(r#"<section><h2>Latency by outcome</h2><table><tr><th>outcome</th><th class="num">count</th><th class="num">p50</th><th class="num">p90</th><th class="num">p99</th><th class="num">p99.9</th><th class="num">max</th></tr>"#);
    let l = &run.latency;
    latency_row(&mut o, "all responses", "#44546f", &l.responses);
    latency_row(&mut o, "ok (2xx)", C_OK, &l.ok);
    latency_row(&mut o, "shed (429/503)", C_SHED, &l.shed);
    latency_row(&mut o, "rejected (invalid input)", C_REJECTED, &l.rejected);
    latency_row(&mut o, "errors", C_ERROR, &l.error);
    latency_row(&mut o, "timeouts", C_TIMEOUT, &l.timeout);
    if let Some(p) = &run.probe {
        latency_row(&mut o, "health probe", C_PROBE, &p.latency);
    }
    o.push_str("</table></section>");

    o.push_str(r#"<div class="cols"><section><h2>Outcomes</h2><table>"#);
    for (name, color, v) in [
        ("ok (2xx)", C_OK, t.ok),
        ("  of which degraded", C_REJECTED, t.degraded),
        ("  of which partial (timed out)", C_REJECTED, t.partial),
        ("shed (429/503)", C_SHED, t.shed),
        ("  with Retry-After", C_SHED, t.shed_with_retry_after),
        (
            "  without Retry-After",
            C_SHED,
            t.shed - t.shed_with_retry_after,
        ),
        ("rejected (invalid input)", C_REJECTED, t.rejected),
        ("errors: other statuses", C_ERROR, t.http_errors),
        ("errors: no response", C_ERROR, t.conn_errors),
        ("timeouts", C_TIMEOUT, t.timeouts),
    ] {
        let indent = name.starts_with("  ");
        let _ = write!(
            o,
            r#"<tr><td{}><i class="dot" style="background:{color}"></i>{}</td><td class="num">{}</td><td class="num muted">{}</td></tr>"#,
            if indent {
                r#" style="padding-left:28px" class="muted""#
            } else {
                ""
            },
            esc(name.trim()),
            thousands(v),
            pct(v, t.requests)
        );
    }
    o.push_str("</table></section><section><h2>Status codes and failures</h2><table>");
    for (status, n) in &run.statuses {
        let _ = write!(
            o,
            r#"<tr><td><code>{status}</code></td><td class="num">{}</td></tr>"#,
            thousands(*n)
        );
    }
    for (kind, n) in &run.failure_kinds {
        let _ = write!(
            o,
            r#"<tr><td>no response: {}</td><td class="num">{}</td></tr>"#,
            esc(kind),
            thousands(*n)
        );
    }
    o.push_str("</table></section></div>");

    if run.workloads.len() > 1 {
        o.push_str(r#"<section><h2>Workloads</h2><table><tr><th>workload</th><th class="num">requests</th><th class="num">ok</th><th class="num">shed</th><th class="num">rejected</th><th class="num">errors</th><th class="num">timeouts</th><th class="num">2xx p99</th><th>statuses</th></tr>"#);
        for w in &run.workloads {
            let c = &w.counts;
            let statuses: Vec<String> = w
                .statuses
                .iter()
                .map(|(s, n)| format!("{s}×{}", thousands(*n)))
                .collect();
            let _ = write!(
                o,
                r#"<tr><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{}</td></tr>"#,
                esc(&w.name),
                thousands(c.requests),
                thousands(c.ok),
                thousands(c.shed),
                thousands(c.rejected),
                thousands(c.errors),
                thousands(c.timeouts),
                if w.ok_latency.count > 0 {
                    fmt_us(w.ok_latency.p99_us)
                } else {
                    "—".into()
                },
                esc(&statuses.join(" "))
            );
        }
        o.push_str("</table></section>");
    }

    o.push_str(r#"<div class="cols"><section><h2>Phases and events</h2><table>"#);
    for p in &run.phases {
        let _ = write!(
            o,
            r#"<tr><td>{}{}</td><td>{}</td><td class="num">{:.1}–{:.1} s</td></tr>"#,
            esc(&p.name),
            if run.workloads.len() > 1 {
                format!(r#" <span class="muted">({})</span>"#, esc(&p.workload))
            } else {
                String::new()
            },
            esc(&p.load),
            p.start_s,
            p.end_s
        );
    }
    for e in &run.events {
        let _ = write!(
            o,
            r#"<tr><td>⚡ {}</td><td>{}{}</td><td class="num">{:.1} s (+{:.2} s)</td></tr>"#,
            esc(&e.name),
            if e.ok { "" } else { "FAILED: " },
            esc(&e.detail),
            e.at_s,
            e.took_s
        );
    }
    o.push_str("</table></section><section><h2>Settings</h2><table>");
    for (k, v) in &r.settings {
        let _ = write!(
            o,
            r#"<tr><td class="muted">{}</td><td>{}</td></tr>"#,
            esc(k),
            esc(v)
        );
    }
    o.push_str("</table></section></div>");

    if !r.notes.is_empty() {
        o.push_str(r#"<section><h2>Notes</h2><ul class="notes">"#);
        for n in &r.notes {
            let _ = write!(o, "<li>{}</li>", esc(n));
        }
        o.push_str("</ul></section>");
    }
    let _ = write!(
        o,
        r#"<footer>ironsift bench-http · {} · outcome classes: ok = 2xx; shed = 429/503 (handled); rejected = 400/413/414/431 refusals of invalid or oversized input (handled); errors = other statuses and failed connections; timeouts = no answer within the client timeout. Latency in open loop counts from the intended send time.</footer></main></body></html>"#,
        SCHEMA
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(fmt_us(850), "850 µs");
        assert_eq!(fmt_us(12_345), "12.3 ms");
        assert_eq!(fmt_us(1_250_000), "1.25 s");
        assert_eq!(nice_ceil(730.0), 1000.0);
        assert_eq!(nice_ceil(180.0), 200.0);
        assert_eq!(nice_ceil(2.2), 2.5);
        assert_eq!(axis(4_400.0), (5_000.0, 1_000.0));
        assert_eq!(axis(50.0), (50.0, 10.0));
        assert_eq!(axis(0.0).0, axis(0.0).1);
        assert_eq!(esc("<a&\"b\">"), "&lt;a&amp;&quot;b&quot;&gt;");
    }

    fn report(run: RunData) -> Report {
        Report {
            schema: SCHEMA,
            scenario: "chaos".into(),
            description: String::new(),
            quick: true,
            url: "http://127.0.0.1:1".into(),
            index: "default".into(),
            started_unix_s: 0,
            started_at: iso8601(0),
            settings: Vec::new(),
            pass: true,
            bars: Vec::new(),
            findings: Vec::new(),
            notes: Vec::new(),
            run,
        }
    }

    #[test]
    fn breaker_chart_and_summary() {
        let series: Vec<Second> = (0..4)
            .map(|t| Second {
                t,
                ok: 10,
                ..Second::default()
            })
            .collect();
        let breaker = BreakerData {
            exported: true,
            polls: 4,
            failed_polls: 1,
            restarts: 1,
            opened_total: 3,
            half_open_total: 2,
            closed_total: 2,
            timeline: vec![
                BreakerSecond {
                    t: 0,
                    state: Some("closed"),
                    ..BreakerSecond::default()
                },
                BreakerSecond {
                    t: 1,
                    opened: 2,
                    half_open: 2,
                    closed: 2,
                    state: Some("open"),
                },
                // The final poll, after the last second of the series.
                BreakerSecond {
                    t: 4,
                    opened: 1,
                    state: Some("open"),
                    ..BreakerSecond::default()
                },
            ],
            ..BreakerData::default()
        };
        let faults = InjectedFaults {
            errors: 40,
            panics: 0,
            delays: 400,
        };
        assert_eq!(
            breaker_summary(&breaker, Some(&faults)),
            "breaker opened 3 times, closed 2 times (half-open 2 times) · 4 polls of the server's metrics, 1 failed (gaps) · counters restarted 1 time(s) · chaos layer injected 40 errors, 400 delays"
        );
        let mut run = RunData::default();
        run.series = series.clone();
        run.breaker = Some(breaker);
        run.injected_faults = Some(faults);
        let page = html(&report(run));
        assert!(page.contains("Circuit breaker (transitions per second"));
        assert!(page.contains("breaker opened 3 times, closed 2 times"));
        assert!(page.contains("breaker: opened 2 · half-open 2 · closed 2 · state open"));
        // The final poll lands in the last second; second 2 had no poll.
        assert!(page.contains("breaker: opened 1 · half-open 0 · closed 0 · state open"));
        assert!(page.contains("breaker: no poll this second"));
        assert!(page.contains("open (sampled state)"));
        assert!(page.contains(C_OPEN_STATE));
        let mut run = RunData::default();
        run.breaker = Some(BreakerData::default());
        let json = serde_json::to_value(report(run)).unwrap();
        assert_eq!(json["breaker"]["opened_total"], 0);
        assert!(json["breaker"]["timeline"].is_array());

        // A server without breaker metrics: a line saying so, no chart.
        let mut run = RunData::default();
        run.series = series;
        run.breaker = Some(BreakerData {
            note: Some("/metrics answered 401: the metrics are protected".into()),
            failed_polls: 1,
            ..BreakerData::default()
        });
        let page = html(&report(run));
        assert!(page.contains("no breaker figures: /metrics answered 401"));
        assert!(!page.contains("open (sampled state)"));
    }
}
