//! The core part of `cargo xtask bench`: Criterion's results of `benches/core.rs` as
//! ironsift-vs-Tantivy comparisons (summary rows and details for the combined report).
//!
//! Each comparison divides ironsift's throughput by plain Tantivy's from the same run, so the
//! machine's speed cancels out; the target says how much overhead ironsift may add.
//! Throughput is derived from Criterion's median time per iteration and the throughput the
//! benchmark declared (bytes for indexing, queries for search), both read from its files.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::Result;
use crate::json::{self, Json};
use crate::summary::{self, Target, Unit, Verdict};

struct Comparison {
    /// What is compared, for a human.
    what: &'static str,
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
        what: "indexing a folder in-process",
        group: "index_files",
        plain: "plain_tantivy",
        ironsift: "ironsift",
        unit: Unit::MegabytesPerSec,
        target: Some(0.90),
    },
    // Same fields as plain Tantivy, so the indexing target applies.
    Comparison {
        what: "indexing JSON lines in-process, explicit schema",
        group: "index_json",
        plain: "plain_tantivy",
        ironsift: "ironsift_explicit",
        unit: Unit::MegabytesPerSec,
        target: Some(0.90),
    },
    // Indexes every string twice (`_all` and the `_source` JSON field) by design: shown, no target.
    Comparison {
        what: "indexing JSON lines in-process, schemaless",
        group: "index_json",
        plain: "plain_tantivy",
        ironsift: "ironsift_schemaless",
        unit: Unit::MegabytesPerSec,
        target: None,
    },
    Comparison {
        what: "in-process search, top 10",
        group: "search",
        plain: "plain_tantivy_top10",
        ironsift: "ironsift_top10",
        unit: Unit::QueriesPerSec,
        target: Some(0.95),
    },
    Comparison {
        what: "in-process search, top 10 + count",
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
            _ => self.per_iteration / secs,
        }
    }
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

fn load(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    json::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Criterion's median time per iteration (ns) of benchmark `id` (`group/function`, or the
/// function's name alone outside a group), from `<home>/<id>/new/estimates.json`, if written
/// after `since`.
pub(crate) fn read_median_ns(home: &Path, id: &str, since: SystemTime) -> Result<f64> {
    let estimates = home.join(id).join("new/estimates.json");
    let modified = std::fs::metadata(&estimates)
        .and_then(|m| m.modified())
        .map_err(|_| format!("no {}", estimates.display()))?;
    if modified < since {
        return Err(format!("{id} did not run in this session"));
    }
    load(&estimates)?
        .get("median")
        .and_then(|m| m.get("point_estimate"))
        .and_then(Json::as_f64)
        .filter(|ns| *ns > 0.0)
        .ok_or_else(|| format!("{id}: no median in estimates.json"))
}

/// Reads `<home>/<group>/<function>/new/{estimates,benchmark}.json`, if written after `since`.
pub(crate) fn read_measured(
    home: &Path,
    group: &str,
    function: &str,
    since: SystemTime,
) -> Result<Measured> {
    let median_ns = read_median_ns(home, &format!("{group}/{function}"), since)?;
    let bench = load(&home.join(group).join(function).join("new/benchmark.json"))?;
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
                (None, Some(_), None, Some(_)) => Verdict::Miss,
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

/// Per-query latency percentiles of the search functions, one query at a time on one thread
/// (noted by `benches/core.rs` as `search.<function>_p50_us`, `_p99_us`).
const LATENCIES: &[(&str, &str)] = &[("p50", "p50_us"), ("p99", "p99_us")];

impl Report {
    fn note(&self, key: &str) -> Option<String> {
        self.notes.as_ref()?.get(key).map(note_text)
    }

    fn num(&self, key: &str) -> Option<f64> {
        self.notes.as_ref()?.get(key)?.as_f64()
    }

    /// The comparisons as summary rows, then the in-process latency percentiles.
    pub(crate) fn summary_rows(&self) -> Vec<summary::Row> {
        let mut rows: Vec<summary::Row> = self
            .rows
            .iter()
            .map(|r| {
                let unit = r.cmp.unit;
                summary::Row {
                    what: format!(
                        "{} (`{}/{}` vs `{}`)",
                        r.cmp.what, r.cmp.group, r.cmp.ironsift, r.cmp.plain
                    ),
                    unit,
                    ironsift: r.ironsift.as_ref().map(|m| m.rate(unit)),
                    baseline: r.plain.as_ref().map(|m| m.rate(unit)),
                    baseline_name: "plain Tantivy",
                    target: r.cmp.target.map(Target::RatioAtLeast),
                    verdict: r.verdict.clone(),
                    noisy: r.noisy.clone(),
                }
            })
            .collect();
        let search_noisy = self
            .rows
            .iter()
            .find(|r| r.cmp.group == "search")
            .and_then(|r| r.noisy.clone());
        for (label, suffix) in LATENCIES {
            let us = |function: &str| self.num(&format!("search.{function}_{suffix}"));
            let mut row = summary::Row::new(
                format!(
                    "in-process search latency {label}, one query at a time (`ironsift_top10` vs \
                     `plain_tantivy_top10`)"
                ),
                Unit::Millis,
                us("ironsift_top10").map(|v| v / 1000.0),
                us("plain_tantivy_top10").map(|v| v / 1000.0),
                "plain Tantivy",
                None,
            );
            if row.ironsift.is_none() && self.rows.iter().any(|r| r.cmp.group == "search") {
                row.verdict = Verdict::Missing("no latency notes from benches/core.rs".into());
            }
            row.noisy = search_noisy.clone();
            rows.push(row);
        }
        rows
    }

    /// The part's details: Criterion's figures per comparison, agreement and run notes.
    pub(crate) fn details(&self) -> String {
        let mut md = String::new();
        md.push_str(
            "| comparison | unit | plain Tantivy | ironsift | ratio | target | result |\n\
             |---|---|---:|---:|---:|---:|---|\n",
        );
        for r in &self.rows {
            let unit = r.cmp.unit;
            let ratio = r
                .ratio()
                .map_or("—".into(), |x| summary::fmt_ratio(x, r.cmp.target));
            let target = r.cmp.target.map_or("—".into(), |t| format!("≥ {t:.2}"));
            let mut result = match &r.verdict {
                Verdict::Pass => "PASS".to_string(),
                Verdict::Miss => "MISS".to_string(),
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
        let took = if self.bench_time.is_zero() {
            String::new()
        } else {
            format!(
                " `cargo bench --bench core` took {}.",
                crate::fmt_duration(self.bench_time)
            )
        };
        let _ = writeln!(
            md,
            "\nFigures are Criterion medians (10 samples), {} mode; ratio = ironsift / plain \
             Tantivy, same run, same machine. Search runs its queries on two threads.{took}",
            self.mode
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
        let lat = |f: &str, s: &str| self.note(&format!("search.{f}_{s}"));
        if let (Some(p50), Some(p99), Some(i50), Some(i99)) = (
            lat("plain_tantivy_top10", "p50_us"),
            lat("plain_tantivy_top10", "p99_us"),
            lat("ironsift_top10", "p50_us"),
            lat("ironsift_top10", "p99_us"),
        ) {
            let _ = writeln!(
                md,
                "\nPer-query latency, every query timed alone on one thread (not part of the \
                 Criterion timing): plain Tantivy p50 {p50} µs, p99 {p99} µs; ironsift p50 \
                 {i50} µs, p99 {i99} µs."
            );
        }
        if let Some(Json::Obj(members)) = &self.notes {
            md.push_str("\n### Run notes\n\n");
            for (k, v) in members {
                let _ = writeln!(md, "- `{k}`: {}", note_text(v));
            }
        }
        md
    }

    /// The details as JSON: one object per comparison plus the run notes.
    pub(crate) fn to_json(&self) -> Json {
        let num = |x: Option<f64>| x.map_or(Json::Null, Json::Num);
        let rows = self
            .rows
            .iter()
            .map(|r| {
                let unit = r.cmp.unit;
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
        Json::Obj(vec![
            ("mode".into(), Json::Str(self.mode.into())),
            (
                "bench_seconds".into(),
                Json::Num(self.bench_time.as_secs_f64()),
            ),
            ("comparisons".into(), Json::Arr(rows)),
            (
                "notes".into(),
                self.notes.clone().unwrap_or(Json::Obj(Vec::new())),
            ),
        ])
    }

    /// The core part of the combined report; `failure` is why `cargo bench` did not finish.
    pub(crate) fn part(&self, failure: Option<String>) -> summary::Part {
        summary::Part {
            name: "core",
            title: crate::bench::PartKind::Core.title(),
            took: self.bench_time,
            rows: self.summary_rows(),
            details: self.details(),
            json: self.to_json(),
            failure,
        }
    }
}
