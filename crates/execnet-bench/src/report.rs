//! From raw samples to the table's rows: medians, ratios, targets and verdicts.

use serde::{Deserialize, Serialize};

use crate::plan::{self, Better, Scenario, Target};
use crate::runner::median;
use crate::scenarios::{Params, SideRun};

/// Everything measured for one scenario row, as stored in the JSON file.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub id: String,
    pub kind: String,
    pub what: String,
    pub spec: String,
    pub params: Params,
    pub reps: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// One entry per repetition (process run), in run order.
    pub rs: Vec<SideRun>,
    pub py: Vec<SideRun>,
    /// Which side ran first in each repetition.
    pub order: Vec<String>,
    /// A plain reference measured in the same repetitions (bare python, dd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// Repetitions of a side that failed (timed out, crashed), with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// Load average when the scenario started, and the CPU that other programs used
    /// while it ran (seconds, and percent of the whole machine).
    pub loadavg_at_start: String,
    pub others_cpu_seconds: f64,
    pub others_cpu_percent: f64,
    #[serde(skip)]
    pub scenario: Option<Scenario>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub what: String,
    pub unit: String,
    pub samples: Vec<f64>,
}

/// One line of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub id: String,
    pub label: String,
    pub unit: String,
    pub better: Better,
    /// Medians, in `unit`.
    pub rs: Option<f64>,
    pub py: Option<f64>,
    /// execnet-rs / execnet.
    pub ratio: Option<f64>,
    pub target: Option<Target>,
    pub target_text: String,
    pub met: Option<bool>,
    /// "yes", or by how much it is missed.
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl Row {
    /// How many times better execnet-rs is than execnet (above 1: better), if both ran.
    pub fn advantage(&self) -> Option<f64> {
        let r = self.ratio?;
        Some(match self.better {
            Better::Higher => r,
            Better::Lower => 1.0 / r,
        })
    }

    /// The same for the target, when the target is a ratio.
    pub fn target_advantage(&self) -> Option<f64> {
        match self.target? {
            Target::RatioAtLeast(t) => Some(t),
            Target::RatioAtMost(t) => Some(1.0 / t),
            _ => None,
        }
    }
}

fn all_samples(runs: &[SideRun]) -> Vec<f64> {
    runs.iter().flat_map(|r| r.samples.iter().copied()).collect()
}

fn all_extra(runs: &[SideRun], key: &str) -> Vec<f64> {
    runs.iter().filter_map(|r| r.extra.get(key).and_then(|v| v.as_f64())).collect()
}

fn opt(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Numbers as the table shows them: about three significant digits, no exponent.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.1 || a == 0.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn target_text(t: Target, unit: &str) -> String {
    match t {
        Target::RatioAtMost(v) => format!("ratio <= {}", num(v)),
        Target::RatioAtLeast(v) => format!("ratio >= {}", num(v)),
        Target::DiffAtMost(v) => format!("<= +{} {unit}", num(v)),
        Target::FractionAtLeast(v) => format!(">= {:.0}% of it", v * 100.0),
        Target::Below(v) => format!("< {} {unit}", num(v)),
        Target::AtMost(v) => format!("<= {} {unit}", num(v)),
    }
}

/// The target column for a row that may have no target.
fn target_text_of(t: Option<Target>, unit: &str) -> String {
    t.map(|t| target_text(t, unit)).unwrap_or_else(|| "-".into())
}

/// (met, verdict) for `value` (the ratio, difference, fraction or plain figure the
/// target speaks of).
fn judge(t: Target, value: f64, unit: &str) -> (Option<bool>, String) {
    if !value.is_finite() {
        return (None, "no figure".into());
    }
    let (met, miss) = match t {
        Target::RatioAtMost(v) => (
            value <= v,
            format!("no: {} > {}; execnet-rs needs {:.0}% less time", num(value), num(v), (1.0 - v / value) * 100.0),
        ),
        Target::RatioAtLeast(v) => (
            value >= v,
            format!("no: {} < {}; execnet-rs needs {}x its rate", num(value), num(v), num(v / value)),
        ),
        Target::DiffAtMost(v) => (
            value <= v,
            format!("no: +{} {unit}, {} {unit} over", num(value), num(value - v)),
        ),
        Target::FractionAtLeast(v) => (
            value >= v,
            format!("no: {:.0}% < {:.0}%; needs {}x its rate", value * 100.0, v * 100.0, num(v / value)),
        ),
        Target::Below(v) => (value < v, format!("no: {} {unit}, {} over", num(value), num(value - v))),
        Target::AtMost(v) => (value <= v, format!("no: {} {unit}, {} over", num(value), num(value - v))),
    };
    (Some(met), if met { "yes".into() } else { miss })
}

/// The rows for one scenario result: its main row, and rows for its extra targets.
pub fn rows(res: &ScenarioResult) -> Vec<Row> {
    let sc = res.scenario.as_ref().expect("scenario");
    let m = sc.metric;
    if let Some(why) = &res.skipped {
        return vec![Row {
            id: res.id.clone(),
            label: res.id.clone(),
            unit: m.unit.into(),
            better: m.better,
            rs: None,
            py: None,
            ratio: None,
            target: sc.target,
            target_text: target_text_of(sc.target, m.unit),
            met: None,
            verdict: format!("skipped: {why}"),
            skipped: Some(why.clone()),
        }];
    }
    if res.rs.is_empty() || res.py.is_empty() {
        let why = format!("failed: {}", res.failures.join("; "));
        return vec![Row {
            id: res.id.clone(),
            label: res.id.clone(),
            unit: m.unit.into(),
            better: m.better,
            rs: opt(median(&all_samples(&res.rs)) * m.display_scale),
            py: opt(median(&all_samples(&res.py)) * m.display_scale),
            ratio: None,
            target: sc.target,
            target_text: target_text_of(sc.target, m.unit),
            met: None,
            verdict: why,
            skipped: None,
        }];
    }
    let rs = median(&all_samples(&res.rs)) * m.display_scale;
    let py = median(&all_samples(&res.py)) * m.display_scale;
    let ratio = rs / py;
    let (met, mut verdict) = match sc.target {
        Some(t @ (Target::RatioAtMost(_) | Target::RatioAtLeast(_))) => judge(t, ratio, m.unit),
        Some(t) => judge(t, rs, m.unit),
        None => (None, "-".to_string()),
    };
    if !res.failures.is_empty() {
        verdict.push_str(&format!(" ({} failed run(s): see the JSON)", res.failures.len()));
    }
    let label = if sc.kind == "scale" { format!("{} (host RSS)", res.id) } else { res.id.clone() };
    let mut out = vec![Row {
        id: res.id.clone(),
        label,
        unit: m.unit.into(),
        better: m.better,
        rs: opt(rs),
        py: opt(py),
        ratio: opt(ratio),
        target: sc.target,
        target_text: target_text_of(sc.target, m.unit),
        met,
        verdict,
        skipped: None,
    }];
    let base = res.baseline.as_ref().map(|b| median(&b.samples));
    match (sc.kind, base) {
        ("startup", Some(bare)) => {
            let bare_ms = bare * 1e3;
            let t = Target::DiffAtMost(plan::STARTUP_OVER_BARE_PYTHON_MS);
            let (met, verdict) = judge(t, rs - bare_ms, "ms");
            out.push(Row {
                id: format!("{}-vs-bare-python", res.id),
                label: format!("{} - bare `python -c pass` ({} ms)", res.id, num(bare_ms)),
                unit: "ms".into(),
                better: Better::Lower,
                rs: opt(rs - bare_ms),
                py: opt(py - bare_ms),
                ratio: None,
                target: Some(t),
                target_text: target_text(t, "ms"),
                met,
                verdict,
                skipped: None,
            });
        }
        ("fanout", Some(floor)) => {
            let label = format!(
                "{} / {} bare pythons started together ({} ms)",
                res.id,
                sc.params.gateways.unwrap_or(0),
                num(floor * 1e3)
            );
            out.push(reference_row(format!("{}-vs-bare-python", res.id), label, rs, py, floor * 1e3));
        }
        ("rsync", Some(reference)) if reference.is_finite() => {
            let label = format!(
                "{} / {} x `rsync -a` started together ({} ms)",
                res.id,
                sc.params.gateways.unwrap_or(0),
                num(reference * 1e3)
            );
            out.push(reference_row(format!("{}-vs-rsync", res.id), label, rs, py, reference * 1e3));
        }
        ("bulk", Some(dd)) => {
            let t = Target::FractionAtLeast(plan::BULK_FRACTION_OF_DD);
            let (met, verdict) = judge(t, rs / dd, "");
            out.push(Row {
                id: format!("{}-vs-dd", res.id),
                label: format!("{} / dd through a pipe ({} MB/s)", res.id, num(dd)),
                unit: "% of dd".into(),
                better: Better::Higher,
                rs: opt(rs / dd * 100.0),
                py: opt(py / dd * 100.0),
                ratio: None,
                target: Some(t),
                target_text: target_text(t, ""),
                met,
                verdict,
                skipped: None,
            });
        }
        _ => {}
    }
    if sc.kind == "scale" {
        let rs_t = median(&all_extra(&res.rs, "threads_per_gateway"));
        let py_t = median(&all_extra(&res.py, "threads_per_gateway"));
        let t = Target::AtMost(plan::THREADS_PER_GATEWAY);
        let (met, verdict) = judge(t, rs_t, "threads/gateway");
        out.push(Row {
            id: format!("{}-threads", res.id),
            label: format!("{} (host threads)", res.id),
            unit: "threads/gateway".into(),
            better: Better::Lower,
            rs: opt(rs_t),
            py: opt(py_t),
            ratio: opt(rs_t / py_t),
            target: Some(t),
            target_text: target_text(t, "threads/gateway"),
            met,
            verdict,
            skipped: None,
        });
    }
    out
}

/// The table, as Markdown (so that it can go into the README as it is).
pub fn table(rows: &[Row]) -> String {
    let header = ["scenario", "unit", "execnet-rs", "execnet", "rs/execnet", "target", "met"];
    let body: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.label.clone(),
                r.unit.clone(),
                r.rs.map(num).unwrap_or_else(|| "-".into()),
                r.py.map(num).unwrap_or_else(|| "-".into()),
                r.ratio.map(num).unwrap_or_else(|| "-".into()),
                r.target_text.clone(),
                r.verdict.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for line in &body {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let fmt_line = |cells: &[String]| {
        let mut s = String::from("|");
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            // numbers right-aligned, text left-aligned
            if (2..=4).contains(&i) {
                s.push_str(&format!(" {}{} |", " ".repeat(pad), cell));
            } else {
                s.push_str(&format!(" {}{} |", cell, " ".repeat(pad)));
            }
        }
        s.push('\n');
        s
    };
    let mut out = fmt_line(&header.map(String::from));
    out.push('|');
    for (i, w) in widths.iter().enumerate() {
        if (2..=4).contains(&i) {
            out.push_str(&format!("{}:|", "-".repeat(w + 1)));
        } else {
            out.push_str(&format!("{}|", "-".repeat(w + 2)));
        }
    }
    out.push('\n');
    for line in &body {
        out.push_str(&fmt_line(line));
    }
    out
}

/// A row of both sides' figures as multiples of a reference (no target).
fn reference_row(id: String, label: String, rs: f64, py: f64, reference: f64) -> Row {
    Row {
        id,
        label,
        unit: "x that".into(),
        better: Better::Lower,
        rs: opt(rs / reference),
        py: opt(py / reference),
        ratio: None,
        target: None,
        target_text: "(reference)".into(),
        met: None,
        verdict: "-".into(),
        skipped: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_say_by_how_much() {
        assert_eq!(judge(Target::RatioAtLeast(2.0), 2.5, "").1, "yes");
        let (met, v) = judge(Target::RatioAtLeast(2.5), 2.0, "");
        assert_eq!(met, Some(false));
        assert!(v.contains("1.25x"), "{v}");
        let (met, v) = judge(Target::RatioAtMost(0.5), 0.625, "");
        assert_eq!(met, Some(false));
        assert!(v.contains("20% less time"), "{v}");
        assert_eq!(judge(Target::Below(1024.0), 1024.0, "KiB").0, Some(false));
        assert_eq!(judge(Target::AtMost(2.0), 2.0, "").0, Some(true));
    }

    #[test]
    fn table_is_markdown() {
        let row = Row {
            id: "x".into(),
            label: "x".into(),
            unit: "ms".into(),
            better: Better::Lower,
            rs: Some(1.0),
            py: Some(2.0),
            ratio: Some(0.5),
            target: Some(Target::RatioAtMost(0.5)),
            target_text: "ratio <= 0.50".into(),
            met: Some(true),
            verdict: "yes".into(),
            skipped: None,
        };
        let t = table(&[row]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("|--"));
        assert!(lines[2].contains(" 0.50 |"), "{t}");
    }
}
