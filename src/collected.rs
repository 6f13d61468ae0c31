//! A collected grid folder (`results/<grid>/`, written by `grid collect`) as `retain report`
//! and `retain check` read it: its runs and metrics, grouped by configuration and read-out.

use std::path::Path;

use anyhow::{Context, Result};
use retain_grid::GridSpec;
use retain_metrics::MeanStd;
use retain_results::{CellMetricsRecord, RunRecord};

use crate::usage::UsageError;

pub struct Collected {
    /// The grid file kept beside the results (`grid.toml`), when it is there.
    pub spec: Option<GridSpec>,
    pub runs: Vec<RunRecord>,
    pub metrics: Vec<CellMetricsRecord>,
}

/// Means over a configuration's complete cells of what it costs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CostMeans {
    pub trainable_parameters: Option<f64>,
    pub state_bytes_per_task: Option<f64>,
    pub frozen_base_bytes: Option<f64>,
    pub seconds_per_step: Option<f64>,
}

impl Collected {
    pub fn load(dir: &Path) -> Result<Self> {
        let runs_path = dir.join("runs.parquet");
        if !runs_path.exists() {
            return Err(UsageError::new(format!(
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
                GridSpec::load(&grid)
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
    pub fn label(&self, cell: &str, method: &str) -> String {
        self.spec
            .as_ref()
            .and_then(|s| Some(s.cell(cell).ok()?.config_label(&s.axes)))
            .unwrap_or_else(|| method.to_owned())
    }

    /// What a configuration costs: means over its complete cells.
    pub fn costs(&self, label: &str) -> CostMeans {
        let runs: Vec<&RunRecord> = self
            .runs
            .iter()
            .filter(|r| r.status == "complete" && self.label(&r.cell, &r.method) == label)
            .collect();
        let mean = |f: &dyn Fn(&RunRecord) -> Option<f64>| {
            MeanStd::of(&runs.iter().filter_map(|r| f(r)).collect::<Vec<_>>()).map(|s| s.mean)
        };
        CostMeans {
            trainable_parameters: mean(&|r| r.trainable_parameters.map(|p| p as f64)),
            state_bytes_per_task: mean(&|r| r.state_bytes_per_task),
            frozen_base_bytes: mean(&|r| r.frozen_base_bytes.map(|b| b as f64)),
            seconds_per_step: mean(&|r| r.seconds_per_step),
        }
    }

    /// Metrics rows grouped by (configuration, read-out), in cell order.
    pub fn groups(&self) -> Vec<Group<'_>> {
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

    /// Mean over the cells of `method` of a metric in a read-out (fractions, not percent).
    pub fn method_mean(&self, metric: &str, method: &str, scenario: &str) -> Option<f64> {
        let values: Vec<f64> = self
            .metrics
            .iter()
            .filter(|m| m.metrics.method == method && m.metrics.scenario == scenario)
            .filter_map(|m| metric_value(m, metric))
            .collect();
        MeanStd::of(&values).map(|s| s.mean)
    }
}

/// One configuration in one read-out, over its seeds.
pub struct Group<'a> {
    pub label: String,
    pub method: String,
    pub scenario: String,
    /// Cells of this configuration, complete or not.
    pub cells: usize,
    pub rows: Vec<&'a CellMetricsRecord>,
}

impl Group<'_> {
    pub fn stats(&self, metric: &str) -> Option<MeanStd> {
        let values: Vec<f64> = self
            .rows
            .iter()
            .filter_map(|m| metric_value(m, metric))
            .collect();
        MeanStd::of(&values)
    }
}

/// A metric of a metrics row by its column name.
fn metric_value(m: &CellMetricsRecord, metric: &str) -> Option<f64> {
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

#[cfg(test)]
mod tests {
    use retain_results::MetricsRecord;

    use super::*;

    fn run(cell: &str, method: &str, status: &str, params: Option<u64>) -> RunRecord {
        RunRecord {
            cell: cell.into(),
            axes: Vec::new(),
            method: method.into(),
            seed: 0,
            status: status.into(),
            error: None,
            device: None,
            wall_seconds: None,
            seconds_per_step: params.map(|_| 0.002),
            steps: None,
            trainable_parameters: params,
            method_state_bytes: None,
            state_bytes_per_task: None,
            frozen_base_bytes: None,
            peak_host_memory_bytes: None,
            peak_device_memory_bytes: None,
        }
    }

    fn metrics(cell: &str, method: &str, scenario: &str, acc: f64) -> CellMetricsRecord {
        CellMetricsRecord {
            cell: cell.into(),
            metrics: MetricsRecord {
                run: cell.into(),
                method: method.into(),
                seed: 0,
                scenario: scenario.into(),
                tasks: 2,
                acc,
                bwt: Some(-acc),
                fwt: None,
                forgetting: None,
                average_incremental_accuracy: acc,
                costs: None,
                training_loss: None,
                anytime_accuracy: None,
                lca: None,
                lca_beta: None,
            },
            intransigence: None,
            final_intransigence: None,
        }
    }

    /// Without the grid file every cell is labelled by its method.
    fn collected() -> Collected {
        Collected {
            spec: None,
            runs: vec![
                run("a0", "naive", "complete", Some(100)),
                run("b0", "ewc", "complete", Some(300)),
                run("a1", "naive", "complete", Some(200)),
                run("a2", "naive", "failed", None),
            ],
            metrics: vec![
                metrics("a0", "naive", "class_il", 0.2),
                metrics("b0", "ewc", "class_il", 0.5),
                metrics("a0", "naive", "task_il", 0.9),
                metrics("a1", "naive", "class_il", 0.4),
            ],
        }
    }

    #[test]
    fn groups_follow_cell_order_and_count_every_cell_of_their_configuration() {
        let c = collected();
        let groups = c.groups();
        let keys: Vec<(&str, &str, usize, usize)> = groups
            .iter()
            .map(|g| (g.label.as_str(), g.scenario.as_str(), g.rows.len(), g.cells))
            .collect();
        assert_eq!(
            keys,
            [
                ("naive", "class_il", 2, 3),
                ("ewc", "class_il", 1, 1),
                ("naive", "task_il", 1, 3)
            ]
        );
        let acc = groups[0].stats("acc").unwrap();
        assert!((acc.mean - 0.3).abs() < 1e-12);
        assert!((groups[0].stats("bwt").unwrap().mean + 0.3).abs() < 1e-12);
        assert_eq!(groups[0].stats("fwt"), None);
        assert_eq!(groups[0].stats("no-such-metric"), None);
    }

    #[test]
    fn costs_and_means_count_complete_cells_only() {
        let c = collected();
        let costs = c.costs("naive");
        assert_eq!(costs.trainable_parameters, Some(150.0));
        assert_eq!(costs.seconds_per_step, Some(0.002));
        assert_eq!(costs.frozen_base_bytes, None);
        assert_eq!(c.costs("lwf"), CostMeans::default());
        assert!((c.method_mean("acc", "naive", "class_il").unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(c.method_mean("acc", "naive", "domain_il"), None);
    }
}
