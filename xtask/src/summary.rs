//! The one report of `cargo xtask bench`: a summary table with one row per comparison
//! (ironsift's figure, its baseline's figure from the same run, the ratio, the target, the
//! result), then each part's details, as `report.md` and `report.json`.
//!
//! Parts are measured by their own modules (`report.rs` for the Criterion benches of
//! `benches/core.rs`, `bench_ingest.rs`, `bench_http.rs`, `bench_overhead.rs`); each hands back a
//! [`Part`]. A part that could not run is kept with its reason, so one broken part never hides
//! the others' figures.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::Result;
use crate::json::Json;

/// The unit of a row's figures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Unit {
    MegabytesPerSec,
    QueriesPerSec,
    Millis,
    Nanos,
    Secs,
    /// A plain number (a count, an exit code).
    Count,
}

impl Unit {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Unit::MegabytesPerSec => "MB/s",
            Unit::QueriesPerSec => "QPS",
            Unit::Millis => "ms",
            Unit::Nanos => "ns",
            Unit::Secs => "s",
            Unit::Count => "",
        }
    }

    /// `v` with the precision that suits the unit, without the unit.
    pub(crate) fn number(self, v: f64) -> String {
        match self {
            Unit::MegabytesPerSec | Unit::Nanos => format!("{v:.1}"),
            Unit::QueriesPerSec if v >= 1000.0 => format!("{v:.0}"),
            Unit::QueriesPerSec => format!("{v:.1}"),
            Unit::Millis => format!("{v:.2}"),
            Unit::Secs => format!("{v:.2}"),
            Unit::Count => format!("{v}"),
        }
    }

    /// `v` with its unit, for a table cell.
    pub(crate) fn show(self, v: f64) -> String {
        match self {
            Unit::Count => self.number(v),
            u => format!("{} {}", u.number(v), u.label()),
        }
    }
}

/// What a row must achieve.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Target {
    /// ironsift / baseline at least this.
    RatioAtLeast(f64),
    /// ironsift's figure strictly below this (in the row's unit).
    Below(f64),
    /// ironsift's figure minus the baseline's strictly below this (in the row's unit).
    OverheadBelow(f64),
    /// ironsift's figure exactly this.
    Equals(f64),
}

impl Target {
    fn text(self, unit: Unit) -> String {
        // A target is a round number: "< 5 ms", not "< 5.00 ms".
        let limit = |v: f64| {
            let n = format!("{v}");
            match unit {
                Unit::Count => n,
                u => format!("{n} {}", u.label()),
            }
        };
        match self {
            Target::RatioAtLeast(r) => format!("ratio ≥ {r:.2}"),
            Target::Below(v) => format!("< {}", limit(v)),
            Target::OverheadBelow(v) => format!("overhead < {}", limit(v)),
            Target::Equals(v) => format!("= {}", limit(v)),
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Target::RatioAtLeast(_) => "ratio_at_least",
            Target::Below(_) => "below",
            Target::OverheadBelow(_) => "overhead_below",
            Target::Equals(_) => "equals",
        }
    }

    fn value(self) -> f64 {
        match self {
            Target::RatioAtLeast(v)
            | Target::Below(v)
            | Target::OverheadBelow(v)
            | Target::Equals(v) => v,
        }
    }

    /// Whether the figures meet the target; `None` when a figure it needs is missing.
    fn met(self, ironsift: Option<f64>, baseline: Option<f64>) -> Option<bool> {
        let i = ironsift.filter(|v| v.is_finite())?;
        match self {
            Target::RatioAtLeast(r) => {
                let b = baseline.filter(|b| b.is_finite() && *b > 0.0)?;
                Some(i / b >= r)
            }
            Target::Below(v) => Some(i < v),
            Target::OverheadBelow(v) => Some(i - baseline.filter(|b| b.is_finite())? < v),
            Target::Equals(v) => Some(i == v),
        }
    }
}

/// A row's result.
#[derive(Clone, PartialEq, Debug)]
pub(crate) enum Verdict {
    Pass,
    Miss,
    /// Shown for information: no target.
    Info,
    /// Not measured in this run.
    Missing(String),
    /// Measured, but not the comparison it claims to be (e.g. the two sides did other work).
    Invalid(String),
}

impl Verdict {
    fn label(&self) -> String {
        match self {
            Verdict::Pass => "PASS".into(),
            Verdict::Miss => "MISS".into(),
            Verdict::Info => "info".into(),
            Verdict::Missing(why) => format!("MISSING ({why})"),
            Verdict::Invalid(why) => format!("INVALID ({why})"),
        }
    }

    fn key(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Miss => "miss",
            Verdict::Info => "info",
            Verdict::Missing(_) => "missing",
            Verdict::Invalid(_) => "invalid",
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Missing(why) | Verdict::Invalid(why) => Some(why),
            _ => None,
        }
    }
}

/// One comparison of the summary table.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) what: String,
    pub(crate) unit: Unit,
    pub(crate) ironsift: Option<f64>,
    pub(crate) baseline: Option<f64>,
    /// What the baseline is: "plain Tantivy", "bare call".
    pub(crate) baseline_name: &'static str,
    pub(crate) target: Option<Target>,
    pub(crate) verdict: Verdict,
    /// Other processes took a good share of the CPU while it was measured.
    pub(crate) noisy: Option<String>,
}

impl Row {
    /// A row judged from its figures: PASS/MISS against the target, `info` without one,
    /// MISSING when a figure the target needs was not measured.
    pub(crate) fn new(
        what: impl Into<String>,
        unit: Unit,
        ironsift: Option<f64>,
        baseline: Option<f64>,
        baseline_name: &'static str,
        target: Option<Target>,
    ) -> Row {
        let verdict = match target {
            None if ironsift.is_some() => Verdict::Info,
            None => Verdict::Missing("not measured".into()),
            Some(t) => match t.met(ironsift, baseline) {
                Some(true) => Verdict::Pass,
                Some(false) => Verdict::Miss,
                None if ironsift.is_none() => Verdict::Missing("not measured".into()),
                None => Verdict::Missing(format!("no {baseline_name} figure")),
            },
        };
        Row {
            what: what.into(),
            unit,
            ironsift,
            baseline,
            baseline_name,
            target,
            verdict,
            noisy: None,
        }
    }

    /// ironsift / baseline: the share of the limit reached for rates (MB/s, QPS), how many
    /// times slower for times (ms, ns).
    pub(crate) fn ratio(&self) -> Option<f64> {
        let (i, b) = (self.ironsift?, self.baseline?);
        (b > 0.0 && i.is_finite() && b.is_finite()).then(|| i / b)
    }

    /// True when the row has a target and did not meet it (or could not be judged).
    fn misses(&self) -> bool {
        self.target.is_some() && self.verdict != Verdict::Pass
    }

    fn ratio_text(&self) -> String {
        let Some(r) = self.ratio() else {
            return "—".into();
        };
        let ratio = match self.target {
            Some(Target::RatioAtLeast(t)) => fmt_ratio(r, Some(t)),
            _ => fmt_ratio(r, None),
        };
        match (self.unit, self.ironsift, self.baseline) {
            // For nanosecond figures the absolute overhead is what matters.
            (Unit::Nanos, Some(i), Some(b)) => format!("{ratio} (+{:.1} ns)", i - b),
            _ => ratio,
        }
    }

    fn to_json(&self, part: &str) -> Json {
        let num = |x: Option<f64>| x.map_or(Json::Null, Json::Num);
        let target = self.target.map_or(Json::Null, |t| {
            Json::Obj(vec![
                ("kind".into(), Json::Str(t.kind().into())),
                ("value".into(), Json::Num(t.value())),
                ("text".into(), Json::Str(t.text(self.unit))),
            ])
        });
        Json::Obj(vec![
            ("part".into(), Json::Str(part.into())),
            ("what".into(), Json::Str(self.what.clone())),
            ("unit".into(), Json::Str(self.unit.label().into())),
            ("ironsift".into(), num(self.ironsift)),
            ("baseline".into(), num(self.baseline)),
            ("baseline_name".into(), Json::Str(self.baseline_name.into())),
            ("ratio".into(), num(self.ratio())),
            ("target".into(), target),
            ("result".into(), Json::Str(self.verdict.key().into())),
            (
                "reason".into(),
                self.verdict
                    .reason()
                    .map_or(Json::Null, |r| Json::Str(r.into())),
            ),
            (
                "noisy".into(),
                self.noisy.clone().map_or(Json::Null, Json::Str),
            ),
        ])
    }
}

/// A ratio with two decimals (one from 10 on), or three when two would round it onto its
/// `target` and hide which side it is on (0.897 against ≥ 0.90).
pub(crate) fn fmt_ratio(r: f64, target: Option<f64>) -> String {
    let two = format!("{r:.2}");
    match target {
        Some(t) if two == format!("{t:.2}") && r != t => format!("{r:.3}"),
        _ if r >= 10.0 => format!("{r:.1}"),
        _ => two,
    }
}

/// What one part of the run produced.
pub(crate) struct Part {
    /// As given to `--only`.
    pub(crate) name: &'static str,
    pub(crate) title: &'static str,
    pub(crate) took: Duration,
    pub(crate) rows: Vec<Row>,
    /// Markdown without a top heading (sub-headings at level 3).
    pub(crate) details: String,
    pub(crate) json: Json,
    /// Why the part failed; it may still have measured some rows.
    pub(crate) failure: Option<String>,
}

impl Part {
    /// A part that measured nothing.
    pub(crate) fn failed(name: &'static str, title: &'static str, why: String) -> Part {
        Part {
            name,
            title,
            took: Duration::ZERO,
            rows: Vec::new(),
            details: String::new(),
            json: Json::Null,
            failure: Some(why),
        }
    }
}

/// The whole run.
pub(crate) struct Combined {
    /// "quick", "full", or "latest" for a report rebuilt from results on disk.
    pub(crate) mode: &'static str,
    pub(crate) parts: Vec<Part>,
    pub(crate) took: Duration,
    /// Cores and load averages, to judge how noisy the figures may be.
    pub(crate) machine: String,
}

fn escape_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

impl Combined {
    pub(crate) fn failed_parts(&self) -> Vec<&Part> {
        self.parts.iter().filter(|p| p.failure.is_some()).collect()
    }

    /// True when every row with a target was measured and met it.
    pub(crate) fn all_targets_met(&self) -> bool {
        self.parts.iter().flat_map(|p| &p.rows).all(|r| !r.misses())
    }

    /// 1 when a part failed, else 2 when `check` and a target was missed, else 0.
    pub(crate) fn exit_code(&self, check: bool) -> ExitCode {
        if !self.failed_parts().is_empty() {
            ExitCode::FAILURE
        } else if check && !self.all_targets_met() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        }
    }

    /// The summary table alone (also printed at the end of a run).
    pub(crate) fn summary_table(&self) -> String {
        let mut md = String::from(
            "| part | comparison | ironsift | baseline (same run) | ratio | target | result |\n\
             |---|---|---:|---:|---:|---|---|\n",
        );
        for p in &self.parts {
            for r in &p.rows {
                let ironsift = r.ironsift.map_or("—".into(), |v| r.unit.show(v));
                let baseline = r.baseline.map_or("—".into(), |v| {
                    if r.baseline_name == "plain Tantivy" {
                        r.unit.show(v)
                    } else {
                        format!("{} ({})", r.unit.show(v), r.baseline_name)
                    }
                });
                let target = r.target.map_or("—".into(), |t| t.text(r.unit));
                let mut result = r.verdict.label();
                if r.noisy.is_some() {
                    result.push_str(" (noisy)");
                }
                let _ = writeln!(
                    md,
                    "| {} | {} | {ironsift} | {baseline} | {} | {target} | {} |",
                    p.name,
                    escape_cell(&r.what),
                    r.ratio_text(),
                    escape_cell(&result)
                );
            }
            if let Some(why) = &p.failure {
                let _ = writeln!(
                    md,
                    "| {} | part failed | — | — | — | — | FAILED ({}) |",
                    p.name,
                    escape_cell(why)
                );
            }
        }
        md
    }

    pub(crate) fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# ironsift vs plain Tantivy: how far from the limit ({} run)\n",
            self.mode
        );
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|p| match &p.failure {
                None => format!("{} ({})", p.name, crate::fmt_duration(p.took)),
                Some(_) => format!("{} (FAILED after {})", p.name, crate::fmt_duration(p.took)),
            })
            .collect();
        let _ = writeln!(
            md,
            "Parts: {}; total {}. {}\n",
            parts.join(", "),
            crate::fmt_duration(self.took),
            self.machine
        );
        md.push_str(&self.summary_table());
        let failed = self.failed_parts();
        let verdict = match (failed.is_empty(), self.all_targets_met()) {
            (false, _) => format!(
                "{} part(s) failed ({})",
                failed.len(),
                failed.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
            ),
            (true, true) => "all targets met".into(),
            (true, false) => "some targets missed".into(),
        };
        let _ = writeln!(
            md,
            "\nOverall: **{verdict}**. Ratio = ironsift / baseline, both measured in this run on \
             this machine: for MB/s and QPS the share of the plain-Tantivy limit reached (1.00 = \
             at the limit), for ms and ns how many times slower. Rows without a baseline have an \
             absolute target."
        );
        for p in &self.parts {
            let _ = writeln!(md, "\n## {}: {}\n", p.name, p.title);
            match &p.failure {
                Some(why) => {
                    let _ = writeln!(
                        md,
                        "**FAILED** after {}: {why}\n",
                        crate::fmt_duration(p.took)
                    );
                }
                None => {
                    let _ = writeln!(md, "Took {}.\n", crate::fmt_duration(p.took));
                }
            }
            if !p.details.is_empty() {
                md.push_str(p.details.trim_end());
                md.push('\n');
            }
        }
        md
    }

    pub(crate) fn json(&self) -> String {
        let summary = self
            .parts
            .iter()
            .flat_map(|p| p.rows.iter().map(|r| r.to_json(p.name)))
            .collect();
        let parts = self
            .parts
            .iter()
            .map(|p| {
                (
                    p.name.to_string(),
                    Json::Obj(vec![
                        ("title".into(), Json::Str(p.title.into())),
                        (
                            "status".into(),
                            Json::Str(if p.failure.is_some() { "failed" } else { "ok" }.into()),
                        ),
                        (
                            "error".into(),
                            p.failure.clone().map_or(Json::Null, Json::Str),
                        ),
                        ("seconds".into(), Json::Num(p.took.as_secs_f64())),
                        ("details".into(), p.json.clone()),
                    ]),
                )
            })
            .collect();
        let doc = Json::Obj(vec![
            ("mode".into(), Json::Str(self.mode.into())),
            ("seconds".into(), Json::Num(self.took.as_secs_f64())),
            ("machine".into(), Json::Str(self.machine.clone())),
            ("all_targets_met".into(), Json::Bool(self.all_targets_met())),
            (
                "failed_parts".into(),
                Json::Arr(
                    self.failed_parts()
                        .iter()
                        .map(|p| Json::Str(p.name.into()))
                        .collect(),
                ),
            ),
            ("summary".into(), Json::Arr(summary)),
            ("parts".into(), Json::Obj(parts)),
        ]);
        let mut out = String::new();
        doc.write(&mut out);
        out.push('\n');
        out
    }

    /// Writes `report.md` and `report.json` into `dir`.
    pub(crate) fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let md = dir.join("report.md");
        let js = dir.join("report.json");
        std::fs::write(&md, self.markdown())
            .map_err(|e| format!("cannot write {}: {e}", md.display()))?;
        std::fs::write(&js, self.json())
            .map_err(|e| format!("cannot write {}: {e}", js.display()))?;
        Ok((md, js))
    }
}

/// The machine as the figures saw it: cores and the load average.
pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into());
    format!("{cores} cores, load average {load}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;

    fn part(name: &'static str, rows: Vec<Row>, failure: Option<&str>) -> Part {
        Part {
            name,
            title: "t",
            took: Duration::from_secs(1),
            rows,
            details: String::new(),
            json: Json::Null,
            failure: failure.map(str::to_string),
        }
    }

    #[test]
    fn rows_are_judged_against_their_target() {
        let pt = "plain Tantivy";
        let r = Row::new("a", Unit::QueriesPerSec, Some(95.0), Some(100.0), pt, None);
        assert_eq!(r.verdict, Verdict::Info);
        let t = Some(Target::RatioAtLeast(0.9));
        let r = Row::new("a", Unit::QueriesPerSec, Some(95.0), Some(100.0), pt, t);
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.ratio(), Some(0.95));
        let r = Row::new("a", Unit::QueriesPerSec, Some(85.0), Some(100.0), pt, t);
        assert_eq!(r.verdict, Verdict::Miss);
        let r = Row::new("a", Unit::QueriesPerSec, Some(89.7), Some(100.0), pt, t);
        assert_eq!(
            (r.verdict.clone(), r.ratio_text()),
            (Verdict::Miss, "0.897".into())
        );
        let r = Row::new("a", Unit::QueriesPerSec, Some(85.0), None, pt, t);
        assert!(matches!(r.verdict, Verdict::Missing(_)));
        let o = Some(Target::OverheadBelow(50.0));
        let r = Row::new("b", Unit::Nanos, Some(40.0), Some(2.0), "bare call", o);
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.ratio_text(), "20.0 (+38.0 ns)");
        assert_eq!(
            Target::OverheadBelow(50.0).text(Unit::Nanos),
            "overhead < 50 ns"
        );
        let r = Row::new("b", Unit::Nanos, Some(60.0), Some(2.0), "bare call", o);
        assert_eq!(r.verdict, Verdict::Miss);
        let b = Some(Target::Below(5.0));
        let r = Row::new("c", Unit::Millis, Some(4.0), None, pt, b);
        assert_eq!(r.verdict, Verdict::Pass);
        let e = Some(Target::Equals(0.0));
        let r = Row::new("d", Unit::Count, Some(1.0), None, pt, e);
        assert_eq!(r.verdict, Verdict::Miss);
    }

    #[test]
    fn a_failed_part_is_in_the_table_and_sets_the_exit_code() {
        let ok = Row::new(
            "q",
            Unit::QueriesPerSec,
            Some(100.0),
            Some(100.0),
            "plain Tantivy",
            Some(Target::RatioAtLeast(0.9)),
        );
        let run = Combined {
            mode: "quick",
            parts: vec![
                part("core", vec![ok.clone()], None),
                part("http", Vec::new(), Some("server did not start | at all")),
            ],
            took: Duration::from_secs(2),
            machine: "2 cores".into(),
        };
        let md = run.markdown();
        assert!(md.contains("| http | part failed |"), "{md}");
        assert!(
            md.contains("FAILED (server did not start \\| at all)"),
            "{md}"
        );
        assert!(md.contains("| core | q | 100.0 QPS | 100.0 QPS | 1.00 | ratio ≥ 0.90 | PASS |"));
        assert_eq!(run.exit_code(true), ExitCode::FAILURE);
        let js = json::parse(run.json().trim()).unwrap();
        assert_eq!(
            js.get("failed_parts"),
            Some(&Json::Arr(vec![Json::Str("http".into())]))
        );
        let summary = js.get("summary").unwrap();
        let Json::Arr(rows) = summary else {
            panic!("summary is not an array")
        };
        assert_eq!(rows[0].get("ratio").and_then(Json::as_f64), Some(1.0));

        let missed = Row::new(
            "q",
            Unit::QueriesPerSec,
            Some(50.0),
            Some(100.0),
            "plain Tantivy",
            Some(Target::RatioAtLeast(0.9)),
        );
        let run = Combined {
            mode: "quick",
            parts: vec![part("core", vec![ok, missed], None)],
            took: Duration::from_secs(2),
            machine: String::new(),
        };
        assert_eq!(run.exit_code(true), ExitCode::from(2));
        assert_eq!(run.exit_code(false), ExitCode::SUCCESS);
    }
}
