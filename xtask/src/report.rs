//! Turns Criterion's results into the ironsift-vs-Tantivy report (`report.md`, `report.json`).
//!
//! Each comparison divides ironsift's throughput by plain Tantivy's from the same run, so the
//! machine's speed cancels out; the target says how much overhead ironsift may add.
//! Throughput is derived from Criterion's median time per iteration and the throughput the
//! benchmark declared (bytes for indexing, queries for search), both read from its files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::Result;
use crate::json::{self, Json};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    MegabytesPerSec,
    QueriesPerSec,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Unit::MegabytesPerSec => "MB/s",
            Unit::QueriesPerSec => "QPS",
        }
    }
}

struct Comparison {
    group: &'static str,
    plain: &'static str,
    ironsift: &'static str,
    unit: Unit,
    /// Least acceptable ironsift/plain ratio; `None` for figures shown for information.
    target: Option<f64>,
}

/// The contract with `benches/core.rs`: group and function names.
const COMPARISONS: &[Comparison] = &[
    Comparison {
        group: "index_files",
        plain: "plain_tantivy",
        ironsift: "ironsift",
        unit: Unit::MegabytesPerSec,
        target: Some(0.90),
    },
    // Same fields as plain Tantivy, so the indexing target applies.
    Comparison {
        group: "index_json",
        plain: "plain_tantivy",
        ironsift: "ironsift_explicit",
        unit: Unit::MegabytesPerSec,
        target: Some(0.90),
    },
    // Indexes every string twice (`_all` and the `_source` JSON field) by design: shown, no target.
    Comparison {
        group: "index_json",
        plain: "plain_tantivy",
        ironsift: "ironsift_schemaless",
        unit: Unit::MegabytesPerSec,
        target: None,
    },
    Comparison {
        group: "search",
        plain: "plain_tantivy_top10",
        ironsift: "ironsift_top10",
        unit: Unit::QueriesPerSec,
        target: Some(0.95),
    },
    Comparison {
        group: "search",
        plain: "plain_tantivy_top10_count",
        ironsift: "ironsift_top10_count",
        unit: Unit::QueriesPerSec,
        target: Some(0.95),
    },
];

/// One function's result.
pub(crate) struct Measured {
    pub(crate) median_ns: f64,
    /// Bytes or queries per iteration, as declared to Criterion.
    pub(crate) per_iteration: f64,
}

impl Measured {
    fn rate(&self, unit: Unit) -> f64 {
        let secs = self.median_ns / 1e9;
        match unit {
            Unit::MegabytesPerSec => self.per_iteration / 1e6 / secs,
            Unit::QueriesPerSec => self.per_iteration / secs,
        }
    }
}

enum Verdict {
    Pass,
    Fail,
    Info,
    Missing(String),
    /// Measured, but not the comparison it claims to be (e.g. ironsift indexed other data).
    Invalid(String),
}

struct Row {
    cmp: &'static Comparison,
    plain: Option<Measured>,
    ironsift: Option<Measured>,
    verdict: Verdict,
    /// Other processes took a good share of the CPU while this group ran.
    noisy: Option<String>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        let (p, i) = (self.plain.as_ref()?, self.ironsift.as_ref()?);
        Some(i.rate(self.cmp.unit) / p.rate(self.cmp.unit))
    }
}

/// The report of one `cargo xtask bench` run.
pub(crate) struct Report {
    mode: &'static str,
    bench_time: Duration,
    rows: Vec<Row>,
    notes: Option<Json>,
}

/// Reads `<home>/<group>/<function>/new/{estimates,benchmark}.json`, if written after `since`.
pub(crate) fn read_measured(
    home: &Path,
    group: &str,
    function: &str,
    since: SystemTime,
) -> Result<Measured> {
    let dir = home.join(group).join(function).join("new");
    let estimates = dir.join("estimates.json");
    let modified = std::fs::metadata(&estimates)
        .and_then(|m| m.modified())
        .map_err(|_| format!("no {}", estimates.display()))?;
    if modified < since {
        return Err(format!("{group}/{function} did not run in this session"));
    }
    let load = |path: PathBuf| -> Result<Json> {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        json::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    };
    let est = load(estimates)?;
    let median_ns = est
        .get("median")
        .and_then(|m| m.get("point_estimate"))
        .and_then(Json::as_f64)
        .filter(|ns| *ns > 0.0)
        .ok_or_else(|| format!("{group}/{function}: no median in estimates.json"))?;
    let bench = load(dir.join("benchmark.json"))?;
    let per_iteration = match bench.get("throughput") {
        Some(Json::Obj(members)) => members.first().and_then(|(_, v)| v.as_f64()),
        _ => None,
    }
    .ok_or_else(|| format!("{group}/{function}: no throughput in benchmark.json"))?;
    Ok(Measured {
        median_ns,
        per_iteration,
    })
}

/// Why a measured comparison does not compare like with like, from the bench notes (absent
/// notes are not held against it: the notes are advisory, Criterion's files are the data).
fn invalid(cmp: &Comparison, num: &dyn Fn(&str) -> Option<f64>) -> Option<String> {
    match cmp.group {
        "index_files" => {
            let (plain, iron) = (
                num("index_files.bytes")?,
                num("index_files.ironsift_bytes_indexed")?,
            );
            // Both walk the same folder with the same filters; a gap means ignore rules or a
            // walk bug made ironsift index other data, and its MB/s would be fiction.
            ((iron - plain).abs() > 0.01 * plain)
                .then(|| format!("ironsift indexed {iron:.0} bytes, plain Tantivy {plain:.0}"))
        }
        "index_json" => {
            let docs = num("index_json.docs")?;
            let indexed = num(&format!("index_json.{}_indexed", cmp.ironsift))?;
            let failed = num(&format!("index_json.{}_failed", cmp.ironsift)).unwrap_or(0.0);
            (indexed != docs || failed > 0.0).then(|| {
                format!("ironsift indexed {indexed} of {docs} documents ({failed} rejected)")
            })
        }
        "search" => {
            if let Some(n) = num("search.failures_during_timing").filter(|n| *n > 0.0) {
                return Some(format!("{n} searches failed while timed"));
            }
            // Same BM25 over the same documents: the top-10 scores must match, or the two
            // engines are not answering the same queries.
            let scores = num("search.agreement_scores_pct")?;
            (scores < 95.0).then(|| format!("top-10 scores agree on only {scores}% of queries"))
        }
        _ => None,
    }
}

/// Collects the results; anything missing or stale becomes a `Missing` row rather than an
/// error, so a partial run still reports what it measured.
pub(crate) fn build(
    criterion_home: &Path,
    notes: &Path,
    since: SystemTime,
    mode: &'static str,
    bench_time: Duration,
) -> Report {
    let notes = std::fs::read_to_string(notes)
        .ok()
        .and_then(|t| json::parse(&t).ok());
    let num = |key: &str| notes.as_ref()?.get(key)?.as_f64();
    let rows = COMPARISONS
        .iter()
        .map(|cmp| {
            // What this run declared per iteration; Criterion's files hold the throughput of
            // whichever run wrote them last, and another run (quick vs full, or someone
            // else's `cargo bench`) may have finished in between.
            let declared = match cmp.group {
                "search" => num("search.queries"),
                group => num(&format!("{group}.bytes")),
            };
            let check = |m: Result<Measured>| {
                let m = m?;
                match declared {
                    Some(d) if (m.per_iteration - d).abs() > 0.5 => Err(format!(
                        "{}: results on disk are from another run ({} per iteration, this run \
                         declared {d})",
                        cmp.group, m.per_iteration
                    )),
                    _ => Ok(m),
                }
            };
            let plain = check(read_measured(criterion_home, cmp.group, cmp.plain, since));
            let ironsift = check(read_measured(
                criterion_home,
                cmp.group,
                cmp.ironsift,
                since,
            ));
            let problem = [&plain, &ironsift]
                .into_iter()
                .find_map(|r| r.as_ref().err().cloned());
            let mut row = Row {
                cmp,
                plain: plain.ok(),
                ironsift: ironsift.ok(),
                verdict: Verdict::Info,
                noisy: None,
            };
            row.verdict = match (problem, row.ratio(), invalid(cmp, &num), cmp.target) {
                (Some(why), ..) => Verdict::Missing(why),
                (None, None, ..) => Verdict::Missing("no ratio".into()),
                (None, Some(_), Some(why), _) => Verdict::Invalid(why),
                (None, Some(_), None, None) => Verdict::Info,
                (None, Some(r), None, Some(t)) if r >= t => Verdict::Pass,
                (None, Some(_), None, Some(_)) => Verdict::Fail,
            };
            if let (Some(foreign), Some(wall)) = (
                num(&format!("{}.foreign_cpu_s", cmp.group)),
                num(&format!("{}.wall_s", cmp.group)),
            ) {
                // A fifth of a core taken by others already moves ratios by several percent on
                // a 2-core machine.
                if wall > 0.0 && foreign / wall > 0.2 {
                    row.noisy = Some(format!(
                        "other processes used {foreign:.1} CPU-s during the {:.0} s of `{}`",
                        wall, cmp.group
                    ));
                }
            }
            row
        })
        .collect();
    Report {
        mode,
        bench_time,
        rows,
        notes,
    }
}

fn fmt_rate(m: Option<&Measured>, unit: Unit) -> String {
    match m {
        None => "—".into(),
        Some(m) => {
            let v = m.rate(unit);
            if v >= 1000.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        }
    }
}

fn note_text(v: &Json) -> String {
    match v {
        Json::Str(s) => s.clone(),
        other => {
            let mut s = String::new();
            other.write(&mut s);
            s
        }
    }
}

impl Report {
    /// True when every comparison with a target was measured and met it.
    pub(crate) fn all_targets_met(&self) -> bool {
        self.rows.iter().all(|r| match r.verdict {
            Verdict::Pass | Verdict::Info => true,
            Verdict::Fail | Verdict::Invalid(_) => false,
            Verdict::Missing(_) => r.cmp.target.is_none(),
        })
    }

    fn note(&self, key: &str) -> Option<String> {
        self.notes.as_ref()?.get(key).map(note_text)
    }

    /// The report as Markdown (also printed to stdout).
    pub(crate) fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# ironsift vs plain Tantivy ({} run)\n", self.mode);
        md.push_str(
            "| comparison | unit | plain Tantivy | ironsift | ratio | target | result |\n\
             |---|---|---:|---:|---:|---:|---|\n",
        );
        for r in &self.rows {
            let unit = r.cmp.unit;
            let ratio = r.ratio().map_or("—".into(), |x| format!("{x:.2}"));
            let target = r.cmp.target.map_or("—".into(), |t| format!("≥ {t:.2}"));
            let mut result = match &r.verdict {
                Verdict::Pass => "PASS".to_string(),
                Verdict::Fail => "FAIL".to_string(),
                Verdict::Info => "info".to_string(),
                Verdict::Missing(why) => format!("MISSING ({why})"),
                Verdict::Invalid(why) => format!("INVALID ({why})"),
            };
            if r.noisy.is_some() {
                result.push_str(" (noisy)");
            }
            let _ = writeln!(
                md,
                "| {}: {} vs {} | {} | {} | {} | {} | {} | {} |",
                r.cmp.group,
                r.cmp.ironsift,
                r.cmp.plain,
                unit.label(),
                fmt_rate(r.plain.as_ref(), unit),
                fmt_rate(r.ironsift.as_ref(), unit),
                ratio,
                target,
                result
            );
        }
        let verdict = if self.all_targets_met() {
            "all targets met"
        } else {
            "some targets missed"
        };
        let took = if self.bench_time.is_zero() {
            String::new()
        } else {
            format!(" Benchmarks took {}.", crate::fmt_duration(self.bench_time))
        };
        let _ = writeln!(
            md,
            "\nOverall: **{verdict}**. Figures are Criterion medians (10 samples); ratio = \
             ironsift / plain Tantivy, same run, same machine.{took}"
        );
        let mut noisy: Vec<&str> = self
            .rows
            .iter()
            .filter_map(|r| r.noisy.as_deref())
            .collect();
        noisy.dedup();
        for why in noisy {
            let _ = writeln!(
                md,
                "\n**Noisy:** {why}; rerun on a quiet machine before trusting it."
            );
        }
        if let (Some(o), Some(s), Some(n)) = (
            self.note("search.agreement_ordered_pct"),
            self.note("search.agreement_set_pct"),
            self.note("search.agreement_queries"),
        ) {
            let scores = self
                .note("search.agreement_scores_pct")
                .map_or(String::new(), |p| format!(", {p}% same top-10 scores"));
            let _ = writeln!(
                md,
                "\nTop-10 agreement (ironsift `id` vs plain `_id`, first {n} queries): \
                 {o}% identical order, {s}% same set{scores}."
            );
        }
        if let Some(Json::Obj(members)) = &self.notes {
            md.push_str("\n## Run notes\n\n");
            for (k, v) in members {
                let _ = writeln!(md, "- `{k}`: {}", note_text(v));
            }
        }
        md
    }

    /// The report as JSON: one object per comparison plus the run notes.
    pub(crate) fn json(&self) -> String {
        let num = |x: Option<f64>| x.map_or(Json::Null, Json::Num);
        let rows = self
            .rows
            .iter()
            .map(|r| {
                let unit = r.cmp.unit;
                let (verdict, why) = match &r.verdict {
                    Verdict::Pass => ("pass", None),
                    Verdict::Fail => ("fail", None),
                    Verdict::Info => ("info", None),
                    Verdict::Missing(w) => ("missing", Some(w.clone())),
                    Verdict::Invalid(w) => ("invalid", Some(w.clone())),
                };
                Json::Obj(vec![
                    ("group".into(), Json::Str(r.cmp.group.into())),
                    ("ironsift".into(), Json::Str(r.cmp.ironsift.into())),
                    ("plain".into(), Json::Str(r.cmp.plain.into())),
                    ("unit".into(), Json::Str(unit.label().into())),
                    (
                        "plain_value".into(),
                        num(r.plain.as_ref().map(|m| m.rate(unit))),
                    ),
                    (
                        "ironsift_value".into(),
                        num(r.ironsift.as_ref().map(|m| m.rate(unit))),
                    ),
                    ("ratio".into(), num(r.ratio())),
                    ("target".into(), num(r.cmp.target)),
                    ("result".into(), Json::Str(verdict.into())),
                    ("reason".into(), why.map_or(Json::Null, Json::Str)),
                    (
                        "noisy".into(),
                        r.noisy.clone().map_or(Json::Null, Json::Str),
                    ),
                    (
                        "plain_median_ns".into(),
                        num(r.plain.as_ref().map(|m| m.median_ns)),
                    ),
                    (
                        "ironsift_median_ns".into(),
                        num(r.ironsift.as_ref().map(|m| m.median_ns)),
                    ),
                    (
                        "per_iteration".into(),
                        num(r.plain.as_ref().map(|m| m.per_iteration)),
                    ),
                ])
            })
            .collect();
        let doc = Json::Obj(vec![
            ("mode".into(), Json::Str(self.mode.into())),
            (
                "bench_seconds".into(),
                Json::Num(self.bench_time.as_secs_f64()),
            ),
            ("all_targets_met".into(), Json::Bool(self.all_targets_met())),
            ("comparisons".into(), Json::Arr(rows)),
            (
                "notes".into(),
                self.notes.clone().unwrap_or(Json::Obj(Vec::new())),
            ),
        ]);
        let mut out = String::new();
        doc.write(&mut out);
        out.push('\n');
        out
    }
}

/// Writes `report.md` and `report.json` into `dir`.
pub(crate) fn write(rep: &Report, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let md = dir.join("report.md");
    let js = dir.join("report.json");
    std::fs::write(&md, rep.markdown())
        .map_err(|e| format!("cannot write {}: {e}", md.display()))?;
    std::fs::write(&js, rep.json()).map_err(|e| format!("cannot write {}: {e}", js.display()))?;
    Ok((md, js))
}
