//! Plain-text tables for the terminal.

use retain_config::Readout;
use retain_metrics::AccuracyMatrix;
use retain_train::RunOutcome;

/// Prints each read-out's accuracy matrix and a metrics table.
pub fn print_run(matrices: &[(Readout, AccuracyMatrix)], outcome: &RunOutcome) {
    for (readout, matrix) in matrices {
        println!(
            "\naccuracy (%), {} read-out: rows = after training task, columns = evaluated task",
            readout.as_str()
        );
        let mut rows = vec![
            std::iter::once(String::new())
                .chain((1..=matrix.tasks()).map(|j| format!("T{j}")))
                .collect::<Vec<_>>(),
        ];
        for i in 0..=matrix.tasks() {
            let label = if i == 0 {
                "init".to_owned()
            } else {
                format!("after T{i}")
            };
            rows.push(
                std::iter::once(label)
                    .chain(matrix.row(i).iter().map(|a| format!("{:.1}", a * 100.0)))
                    .collect(),
            );
        }
        print_table(&rows);
    }
    println!("\nmetrics (%; BWT/FWT divided by T-1, forgetting = max over earlier rows)");
    let mut rows = vec![
        [
            "read-out",
            "ACC",
            "BWT",
            "FWT",
            "forgetting",
            "avg inc. ACC",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect::<Vec<_>>(),
    ];
    let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:+.2}", v * 100.0));
    for (readout, matrix) in matrices {
        let s = matrix.summary();
        rows.push(vec![
            readout.as_str().to_owned(),
            format!("{:.2}", s.acc * 100.0),
            pct(s.bwt),
            pct(s.fwt),
            pct(s.forgetting),
            format!("{:.2}", s.average_incremental_accuracy * 100.0),
        ]);
    }
    print_table(&rows);
    println!(
        "\n{} steps, {:.1} µs/step, {:.2}s total",
        outcome.steps(),
        outcome.seconds_per_step() * 1e6,
        outcome.total_seconds
    );
}

/// Numbers right-aligned, text (and the first column) left-aligned, header underlined.
pub fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let numeric = |s: &str| {
        s.is_empty()
            || s == "-"
            || s.split('/')
                .all(|p| p.trim_start_matches('+').parse::<f64>().is_ok())
    };
    let text_column: Vec<bool> = (0..columns)
        .map(|c| {
            c == 0
                || rows
                    .iter()
                    .skip(1)
                    .filter_map(|r| r.get(c))
                    .any(|s| !numeric(s))
        })
        .collect();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (n, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if text_column[c] {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        println!("  {}", line.join("  "));
        if n == 0 {
            println!(
                "  {}",
                widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
        }
    }
}

/// A collected grid folder, as `retain report` and `retain check` read it.
struct Collected {
    spec: Option<retain_grid::GridSpec>,
    runs: Vec<retain_results::RunRecord>,
    metrics: Vec<retain_results::CellMetricsRecord>,
}

impl Collected {
    fn load(dir: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let runs_path = dir.join("runs.parquet");
        if !runs_path.exists() {
            return Err(crate::UsageError::new(format!(
                "{} is not a collected grid folder (no runs.parquet; `retain grid collect \
                 GRID.toml` writes it)",
                dir.display()
            ))
            .into());
        }
        let runs = retain_results::read_runs(&runs_path)?;
        let metrics = retain_results::read_cell_metrics(&dir.join("metrics.parquet"))?;
        let grid = dir.join("grid.toml");
        let spec = if grid.exists() {
            Some(
                retain_grid::GridSpec::load(&grid)
                    .with_context(|| format!("reading the grid file kept in {}", dir.display()))?,
            )
        } else {
            None
        };
        Ok(Self {
            spec,
            runs,
            metrics,
        })
    }

    /// The configuration a cell belongs to: its id without the seed (the method name when
    /// the grid file is not at hand).
    fn label(&self, cell: &str, method: &str) -> String {
        self.spec
            .as_ref()
            .and_then(|s| Some(s.cell(cell).ok()?.config_label(&s.axes)))
            .unwrap_or_else(|| method.to_owned())
    }

    /// The cost columns of a configuration, means over its complete cells: trainable
    /// parameters, method state bytes per task, frozen base bytes, milliseconds per step.
    fn costs(&self, label: &str) -> [String; 4] {
        let runs: Vec<&retain_results::RunRecord> = self
            .runs
            .iter()
            .filter(|r| r.status == "complete" && self.label(&r.cell, &r.method) == label)
            .collect();
        let mean = |f: &dyn Fn(&retain_results::RunRecord) -> Option<f64>| {
            retain_metrics::MeanStd::of(&runs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
                .map(|s| s.mean)
        };
        [
            mean(&|r| r.trainable_parameters.map(|p| p as f64))
                .map_or("-".into(), |p| format!("{p:.0}")),
            mean(&|r| r.state_bytes_per_task).map_or("-".into(), format_bytes),
            mean(&|r| r.frozen_base_bytes.map(|b| b as f64)).map_or("-".into(), format_bytes),
            mean(&|r| r.seconds_per_step).map_or("-".into(), |s| format!("{:.3}", s * 1e3)),
        ]
    }

    /// Metrics rows grouped by (configuration, read-out), in cell order.
    fn groups(&self) -> Vec<Group<'_>> {
        let mut groups: Vec<Group<'_>> = Vec::new();
        for m in &self.metrics {
            let label = self.label(&m.cell, &m.metrics.method);
            let scenario = m.metrics.scenario.clone();
            match groups
                .iter_mut()
                .find(|g| g.label == label && g.scenario == scenario)
            {
                Some(g) => g.rows.push(m),
                None => groups.push(Group {
                    cells: self
                        .runs
                        .iter()
                        .filter(|r| self.label(&r.cell, &r.method) == label)
                        .count(),
                    label,
                    method: m.metrics.method.clone(),
                    scenario,
                    rows: vec![m],
                }),
            }
        }
        groups
    }
}

/// One configuration in one read-out, over its seeds.
struct Group<'a> {
    label: String,
    method: String,
    scenario: String,
    /// Cells of this configuration, complete or not.
    cells: usize,
    rows: Vec<&'a retain_results::CellMetricsRecord>,
}

impl Group<'_> {
    fn stats(&self, metric: &str) -> Option<retain_metrics::MeanStd> {
        let values: Vec<f64> = self
            .rows
            .iter()
            .filter_map(|m| metric_value(m, metric))
            .collect();
        retain_metrics::MeanStd::of(&values)
    }
}

/// A metric of a metrics row by its column name.
fn metric_value(m: &retain_results::CellMetricsRecord, metric: &str) -> Option<f64> {
    let r = &m.metrics;
    match metric {
        "acc" => Some(r.acc),
        "bwt" => r.bwt,
        "fwt" => r.fwt,
        "forgetting" => r.forgetting,
        "average_incremental_accuracy" => Some(r.average_incremental_accuracy),
        "intransigence" => m.intransigence,
        _ => None,
    }
}

/// Bytes in binary units: `0 B`, `812 B`, `3.1 KiB`, `2.40 MiB`.
fn format_bytes(bytes: f64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024.0 {
        return format!("{bytes:.0} B");
    }
    let mut value = bytes / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// `mean ± std` in percent; the bare mean for one seed.
fn format_stats(stats: Option<retain_metrics::MeanStd>) -> String {
    match stats {
        None => "-".to_owned(),
        Some(s) => match s.std {
            Some(std) => format!("{:.2} ± {:.2}", s.mean * 100.0, std * 100.0),
            None => format!("{:.2}", s.mean * 100.0),
        },
    }
}

/// `retain report`: mean ± std over seeds of ACC, BWT and forgetting (and intransigence
/// when the grid has joint cells) per configuration and read-out, with published numbers, and
/// next to them what the configuration costs (trainable parameters, method state per task,
/// frozen base, step time; means over its complete cells).
pub fn execute(args: &crate::cli::ReportArgs) -> anyhow::Result<()> {
    let collected = Collected::load(&args.results)?;
    let groups = collected.groups();
    let published = collected
        .spec
        .as_ref()
        .map(|s| s.published.clone())
        .unwrap_or_default();
    let with_intransigence = collected.metrics.iter().any(|m| m.intransigence.is_some());
    let with_costs = collected
        .runs
        .iter()
        .any(|r| r.method_state_bytes.is_some());
    let with_published = !published.values.is_empty();

    let mut header = vec![
        "config",
        "method",
        "read-out",
        "seeds",
        "ACC",
        "BWT",
        "forgetting",
    ];
    if with_intransigence {
        header.push("intransigence");
    }
    if with_costs {
        header.extend(["params", "state/task", "frozen", "ms/step"]);
    }
    if with_published {
        header.push("published");
    }
    let mut rows = vec![header.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()];
    for g in &groups {
        let mut row = vec![
            g.label.clone(),
            g.method.clone(),
            g.scenario.clone(),
            format!("{}/{}", g.rows.len(), g.cells),
            format_stats(g.stats("acc")),
            format_stats(g.stats("bwt")),
            format_stats(g.stats("forgetting")),
        ];
        if with_intransigence {
            row.push(format_stats(g.stats("intransigence")));
        }
        if with_costs {
            row.extend(collected.costs(&g.label));
        }
        if with_published {
            let cited: Vec<String> = retain_grid::METRICS
                .iter()
                .filter_map(|metric| {
                    let v = published.get(&g.method, &g.scenario, metric)?;
                    Some(format!("{} {v:.2}", metric_title(metric)))
                })
                .collect();
            row.push(if cited.is_empty() {
                "-".to_owned()
            } else {
                cited.join(", ")
            });
        }
        rows.push(row);
    }
    let failed = collected
        .runs
        .iter()
        .filter(|r| r.status != "complete")
        .count();
    match args.format {
        crate::cli::ReportFormat::Text => {
            println!(
                "{}: mean ± std over seeds, percent (BWT divided by T-1, forgetting max-based)\n",
                args.results.display()
            );
            print_table(&rows);
        }
        crate::cli::ReportFormat::Markdown => {
            println!(
                "Mean ± std over seeds, in percent (BWT divided by T−1, forgetting max-based).\n"
            );
            print_markdown(&rows);
        }
    }
    if let Some(citation) = published.citation.as_deref().filter(|_| with_published) {
        println!("\npublished: {citation}");
    }
    if failed > 0 {
        println!(
            "\n{failed} of {} cells are not complete (see runs.parquet)",
            collected.runs.len()
        );
    }
    Ok(())
}

fn metric_title(metric: &str) -> &str {
    match metric {
        "acc" => "ACC",
        "bwt" => "BWT",
        "fwt" => "FWT",
        "average_incremental_accuracy" => "avg inc. ACC",
        other => other,
    }
}

fn print_markdown(rows: &[Vec<String>]) {
    for (n, row) in rows.iter().enumerate() {
        println!("| {} |", row.join(" | "));
        if n == 0 {
            println!("|{}", "---|".repeat(row.len()));
        }
    }
}

/// `retain check`: every baseline metric within its tolerance, or exit status 1 with what
/// moved and by how much.
pub fn check(args: &crate::cli::CheckArgs) -> anyhow::Result<()> {
    let collected = Collected::load(&args.results)?;
    let origin = args.baseline.display().to_string();
    let text = std::fs::read_to_string(&args.baseline)
        .map_err(|e| crate::UsageError::new(format!("cannot read baseline {origin}: {e}")))?;
    let entries = retain_grid::parse_baseline(&text, &origin)
        .map_err(|e| crate::UsageError::new(e.to_string()))?;
    let comparisons = retain_grid::compare(&entries, |metric, method, scenario| {
        let values: Vec<f64> = collected
            .metrics
            .iter()
            .filter(|m| m.metrics.method == method && m.metrics.scenario == scenario)
            .filter_map(|m| metric_value(m, metric))
            .collect();
        retain_metrics::MeanStd::of(&values).map(|s| s.mean * 100.0)
    });
    let mut rows = vec![
        [
            "metric",
            "method",
            "read-out",
            "baseline",
            "tolerance",
            "observed",
            "change",
            "",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect::<Vec<_>>(),
    ];
    for c in &comparisons {
        let e = &c.entry;
        rows.push(vec![
            e.metric.clone(),
            e.method.clone(),
            e.scenario.clone(),
            format!("{:.2}", e.value),
            format!("±{:.2}", e.tolerance),
            c.observed
                .map_or("missing".to_owned(), |o| format!("{o:.2}")),
            c.delta().map_or("-".to_owned(), |d| format!("{d:+.2}")),
            if c.passed() { "ok" } else { "MOVED" }.to_owned(),
        ]);
    }
    println!("{} against {origin} (percent)\n", args.results.display());
    print_table(&rows);
    let moved: Vec<&retain_grid::Comparison> = comparisons.iter().filter(|c| !c.passed()).collect();
    if moved.is_empty() {
        println!("\nall {} metrics within tolerance", comparisons.len());
        return Ok(());
    }
    for c in &moved {
        let e = &c.entry;
        match c.delta() {
            Some(d) => println!(
                "moved: {} {} {} by {d:+.2} points ({:.2} → {:.2}, tolerance ±{:.2})",
                e.metric,
                e.method,
                e.scenario,
                e.value,
                e.value + d,
                e.tolerance
            ),
            None => println!(
                "missing: {} {} {} is not in the results",
                e.metric, e.method, e.scenario
            ),
        }
    }
    Err(anyhow::anyhow!(
        "{} of {} baseline metrics moved beyond their tolerance",
        moved.len(),
        comparisons.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::format_bytes;

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(format_bytes(0.0), "0 B");
        assert_eq!(format_bytes(812.0), "812 B");
        assert_eq!(format_bytes(3.0 * 1024.0), "3.00 KiB");
        assert_eq!(format_bytes(2.5 * 1024.0 * 1024.0), "2.50 MiB");
    }
}
