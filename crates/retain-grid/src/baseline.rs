//! Regression checks against a stored baseline.
//!
//! A baseline lists `(metric, method, scenario, value, tolerance)` rows, values and tolerances
//! in percent (as tables print them). The observed value is the mean over the seeds of every
//! complete cell of that method. A row passes when `|observed − value| ≤ tolerance`; the check
//! is two-sided, because an unexplained jump up is as suspicious in a fixed, seeded grid as a
//! drop (a changed data split, a broken evaluation). A row whose metric cannot be observed
//! fails too.
//!
//! Two formats, picked by the file extension:
//!
//! ```toml
//! [[metric]]
//! metric = "acc"          # acc | bwt | fwt | forgetting | average_incremental_accuracy | intransigence
//! method = "naive"
//! scenario = "class_il"
//! value = 33.1
//! tolerance = 3.0
//! ```
//!
//! ```text
//! metric,method,scenario,value,tolerance
//! acc,naive,class_il,33.1,3.0
//! ```

use serde::Deserialize;

use crate::GridError;

/// Metric names a baseline or `[published]` may use: the columns of `metrics.parquet`.
pub const METRICS: [&str; 6] = [
    "acc",
    "bwt",
    "fwt",
    "forgetting",
    "average_incremental_accuracy",
    "intransigence",
];

/// One expected value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineEntry {
    pub metric: String,
    pub method: String,
    pub scenario: String,
    /// Percent.
    pub value: f64,
    /// Percentage points.
    pub tolerance: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineFile {
    metric: Vec<BaselineEntry>,
}

/// Parses a baseline; `origin` is the file name, whose extension (`.toml` or `.csv`) picks
/// the format.
pub fn parse_baseline(text: &str, origin: &str) -> Result<Vec<BaselineEntry>, GridError> {
    let fail = |message: String| GridError::Baseline {
        origin: origin.to_owned(),
        message,
    };
    let entries = if origin.to_ascii_lowercase().ends_with(".csv") {
        parse_csv(text).map_err(fail)?
    } else if origin.to_ascii_lowercase().ends_with(".toml") {
        toml::from_str::<BaselineFile>(text)
            .map_err(|e| fail(e.message().to_owned()))?
            .metric
    } else {
        return Err(fail("a baseline is a .toml or .csv file".into()));
    };
    for (n, e) in entries.iter().enumerate() {
        let what = format!("entry {} ({} {} {})", n + 1, e.metric, e.method, e.scenario);
        if !METRICS.contains(&e.metric.as_str()) {
            return Err(fail(format!(
                "{what}: unknown metric `{}` (known: {})",
                e.metric,
                METRICS.join(", ")
            )));
        }
        if !(e.tolerance.is_finite() && e.tolerance >= 0.0 && e.value.is_finite()) {
            return Err(fail(format!(
                "{what}: value and tolerance must be finite, the tolerance ≥ 0"
            )));
        }
    }
    if entries.is_empty() {
        return Err(fail("lists no metric".into()));
    }
    Ok(entries)
}

fn parse_csv(text: &str) -> Result<Vec<BaselineEntry>, String> {
    const HEADER: [&str; 5] = ["metric", "method", "scenario", "value", "tolerance"];
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let (_, header) = lines.next().ok_or("empty file")?;
    let header: Vec<&str> = header.split(',').map(str::trim).collect();
    if header != HEADER {
        return Err(format!(
            "line 1: header must be `{}`, found `{}`",
            HEADER.join(","),
            header.join(",")
        ));
    }
    lines
        .map(|(n, line)| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != HEADER.len() {
                return Err(format!(
                    "line {}: {} fields, expected {}",
                    n + 1,
                    fields.len(),
                    HEADER.len()
                ));
            }
            let number = |i: usize| {
                fields[i].parse::<f64>().map_err(|_| {
                    format!(
                        "line {}: `{}` is not a number ({})",
                        n + 1,
                        fields[i],
                        HEADER[i]
                    )
                })
            };
            Ok(BaselineEntry {
                metric: fields[0].to_owned(),
                method: fields[1].to_owned(),
                scenario: fields[2].to_owned(),
                value: number(3)?,
                tolerance: number(4)?,
            })
        })
        .collect()
}

/// The outcome of one baseline row.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub entry: BaselineEntry,
    /// Percent; `None` when the results hold no such metric.
    pub observed: Option<f64>,
}

impl Comparison {
    /// `observed − value`, in percentage points.
    pub fn delta(&self) -> Option<f64> {
        self.observed.map(|o| o - self.entry.value)
    }

    /// Within tolerance (a small epsilon absorbs decimal round-off at the boundary).
    pub fn passed(&self) -> bool {
        self.delta()
            .is_some_and(|d| d.abs() <= self.entry.tolerance + 1e-9)
    }
}

/// Compares every entry with `observed(metric, method, scenario)` (percent).
pub fn compare(
    entries: &[BaselineEntry],
    observed: impl Fn(&str, &str, &str) -> Option<f64>,
) -> Vec<Comparison> {
    entries
        .iter()
        .map(|e| Comparison {
            observed: observed(&e.metric, &e.method, &e.scenario),
            entry: e.clone(),
        })
        .collect()
}
