//! `retain report`: the table of a collected grid.

use anyhow::Result;
use retain_metrics::MeanStd;

use crate::cli::{ReportArgs, ReportFormat};
use crate::collected::{Collected, CostMeans};
use crate::tables::{print_markdown, print_table};

/// `retain report`: mean ± std over seeds of ACC, BWT and forgetting (and intransigence
/// when the grid has joint cells) per configuration and read-out, with published numbers, and
/// next to them what the configuration costs (trainable parameters, method state per task,
/// frozen base, step time; means over its complete cells).
pub fn execute(args: &ReportArgs) -> Result<()> {
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
            row.extend(cost_columns(collected.costs(&g.label)));
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
        ReportFormat::Text => {
            println!(
                "{}: mean ± std over seeds, percent (BWT divided by T-1, forgetting max-based)\n",
                args.results.display()
            );
            print_table(&rows);
        }
        ReportFormat::Markdown => {
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

/// The cost columns: trainable parameters, method state bytes per task, frozen base bytes,
/// milliseconds per step.
fn cost_columns(costs: CostMeans) -> [String; 4] {
    [
        costs
            .trainable_parameters
            .map_or("-".into(), |p| format!("{p:.0}")),
        costs.state_bytes_per_task.map_or("-".into(), format_bytes),
        costs.frozen_base_bytes.map_or("-".into(), format_bytes),
        costs
            .seconds_per_step
            .map_or("-".into(), |s| format!("{:.3}", s * 1e3)),
    ]
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
fn format_stats(stats: Option<MeanStd>) -> String {
    match stats {
        None => "-".to_owned(),
        Some(s) => match s.std {
            Some(std) => format!("{:.2} ± {:.2}", s.mean * 100.0, std * 100.0),
            None => format!("{:.2}", s.mean * 100.0),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(format_bytes(0.0), "0 B");
        assert_eq!(format_bytes(812.0), "812 B");
        assert_eq!(format_bytes(3.0 * 1024.0), "3.00 KiB");
        assert_eq!(format_bytes(2.5 * 1024.0 * 1024.0), "2.50 MiB");
    }

    #[test]
    fn stats_and_costs_read_as_in_the_table() {
        let two = MeanStd::of(&[0.2, 0.4]);
        assert_eq!(format_stats(two), "30.00 ± 14.14");
        assert_eq!(format_stats(MeanStd::of(&[0.5])), "50.00");
        assert_eq!(format_stats(None), "-");
        let costs = CostMeans {
            trainable_parameters: Some(89_610.0),
            state_bytes_per_task: Some(716_880.0),
            frozen_base_bytes: None,
            seconds_per_step: Some(0.0015),
        };
        assert_eq!(
            cost_columns(costs),
            ["89610", "700.08 KiB", "-", "1.500"].map(str::to_owned)
        );
    }
}
