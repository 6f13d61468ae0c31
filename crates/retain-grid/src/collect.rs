//! `grid collect`'s aggregation: every cell's status and costs, the complete cells' results
//! with intransigence against their joint partner, and the plots of the grid grouped by
//! configuration (the cell id without the seed).
//!
//! The files of a cell are read by the caller's reader (Parquet lives in `retain-results`;
//! this crate stays free of polars) and the charts drawn by the caller ([`Plot`] describes
//! one; plotters lives in `retain-plot`). [`collect`] reads the cells in parallel, since each
//! is independent and reading Parquet dominates, and passes the reader's rows through
//! untouched. Everything comes out in cell order whatever order the threads finish in, and an
//! error is the first cell's in that order, so collecting twice gives identical files.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;
use retain_manifest::Manifest;
use retain_metrics::{AccuracyMatrix, MeanStd, mean_matrix};

use crate::{Cell, CellStatus, GridError, GridSpec, cell_manifest, display_value};

/// What the caller's reader returns for one complete cell.
#[derive(Debug, Clone, PartialEq)]
pub struct CellResults<A, M> {
    /// Accuracy rows, passed through to [`Collection::accuracy`].
    pub accuracy: Vec<A>,
    /// One entry per metrics row.
    pub readouts: Vec<Readout<M>>,
}

/// A metrics row of a cell with what the aggregation needs of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Readout<M> {
    /// The read-out (`class_il`, …): the row's scenario.
    pub scenario: String,
    /// The row's ACC.
    pub acc: f64,
    /// The accuracy matrix the row was computed from.
    pub matrix: AccuracyMatrix,
    /// The row itself, passed through to [`CellMetrics::row`].
    pub row: M,
}

/// One cell's line of `runs.parquet`: axis values, status and, for complete cells only,
/// what the run cost.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub cell: String,
    /// `(axis key, value)`, values as [`display_value`] writes them.
    pub axes: Vec<(String, String)>,
    pub method: String,
    pub seed: u64,
    pub status: CellStatus,
    /// Where it ran; `None` for an unfinished cell.
    pub device: Option<String>,
    pub wall_seconds: Option<f64>,
    pub seconds_per_step: Option<f64>,
    pub steps: Option<u64>,
    pub trainable_parameters: Option<u64>,
    pub method_state_bytes: Option<u64>,
    pub state_bytes_per_task: Option<f64>,
    pub frozen_base_bytes: Option<u64>,
    pub peak_host_memory_bytes: Option<u64>,
    pub peak_device_memory_bytes: Option<u64>,
}

/// A metrics row of a complete cell with its intransigence.
#[derive(Debug, Clone, PartialEq)]
pub struct CellMetrics<M> {
    pub cell: String,
    pub row: M,
    /// Against the diagonal of the complete joint partner ([`GridSpec::joint_partner`]) in the
    /// same read-out, averaged over tasks; `None` without one.
    pub intransigence: Option<f64>,
    /// The same at the last task.
    pub final_intransigence: Option<f64>,
}

/// A collected grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Collection<A, M> {
    /// Every cell, in cell order.
    pub runs: Vec<RunRow>,
    /// The accuracy rows of the complete cells with their cell ids, in cell order.
    pub accuracy: Vec<(String, A)>,
    /// The metrics rows of the complete cells, in cell order.
    pub metrics: Vec<CellMetrics<M>>,
    /// The charts to draw, each in every one of [`PLOT_FORMATS`]; none without a complete cell.
    pub plots: Vec<Plot>,
}

impl<A, M> Collection<A, M> {
    /// How many cells are complete.
    pub fn complete(&self) -> usize {
        self.runs
            .iter()
            .filter(|r| r.status == CellStatus::Complete)
            .count()
    }
}

/// Every plot is written in these formats, as `plots/<name>.<format>`.
pub const PLOT_FORMATS: [&str; 2] = ["png", "svg"];

/// One chart of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    /// The file name without its extension.
    pub name: String,
    pub title: String,
    pub chart: Chart,
}

/// What a [`Plot`] shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Chart {
    /// Each task's accuracy over the stream: the mean matrix of a configuration's seeds.
    TaskLines(AccuracyMatrix),
    /// ACC per configuration, mean ± std over seeds.
    Bars(Vec<Bar>),
    /// ACC (mean over seeds) against trainable parameters, one series per read-out.
    Scatter(Vec<Series>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub mean: f64,
    /// 0 for a single seed.
    pub std: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub label: String,
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<Point>,
}

/// A failed collection: the grid's own error, or the reader's for a cell.
#[derive(Debug, thiserror::Error)]
pub enum CollectError<E> {
    #[error(transparent)]
    Grid(#[from] GridError),
    /// The reader's error (which names the file) for cell `cell`.
    #[error("{source}")]
    Read {
        cell: String,
        #[source]
        source: E,
    },
}

/// Collects the grid: the status of every cell from its manifest, and through `read` the
/// results of every complete cell (`read` gets the cell and its folder). `extra` are the
/// overrides every cell's experiment gets (as `grid run` applies them).
pub fn collect<A, M, E, R>(
    spec: &GridSpec,
    extra: &[String],
    read: R,
) -> Result<Collection<A, M>, CollectError<E>>
where
    A: Send,
    M: Send,
    E: Send,
    R: Fn(&Cell, &Path) -> Result<CellResults<A, M>, E> + Sync,
{
    let gathered: Vec<Result<Gathered<A, M>, CollectError<E>>> = spec
        .cells
        .par_iter()
        .map(|cell| gather(spec, extra, cell, &read))
        .collect();
    let gathered = gathered.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(aggregate(spec, gathered))
}

/// One cell, read.
struct Gathered<A, M> {
    run: RunRow,
    /// Complete cells only.
    results: Option<CellResults<A, M>>,
}

fn gather<A, M, E>(
    spec: &GridSpec,
    extra: &[String],
    cell: &Cell,
    read: &impl Fn(&Cell, &Path) -> Result<CellResults<A, M>, E>,
) -> Result<Gathered<A, M>, CollectError<E>> {
    let dir = spec.cell_dir(cell);
    let manifest = cell_manifest(&dir).map_err(GridError::from)?;
    let status = CellStatus::from_manifest(manifest.as_ref());
    let experiment = spec.experiment(cell, extra)?;
    let complete = status == CellStatus::Complete;
    let run = run_row(
        cell,
        experiment.method.name,
        experiment.seed,
        status,
        manifest,
    );
    let results = if complete {
        Some(read(cell, &dir).map_err(|source| CollectError::Read {
            cell: cell.id.clone(),
            source,
        })?)
    } else {
        None
    };
    Ok(Gathered { run, results })
}

/// Costs and timings count only for a complete run; where an unfinished one ran is unknown.
fn run_row(
    cell: &Cell,
    method: String,
    seed: u64,
    status: CellStatus,
    manifest: Option<Manifest>,
) -> RunRow {
    let complete = status == CellStatus::Complete;
    let finished = status != CellStatus::Unfinished;
    let manifest = manifest.filter(|_| finished);
    let m = manifest.as_ref().filter(|_| complete);
    let timings = m.and_then(|m| m.timings.as_ref());
    let costs = m.and_then(|m| m.costs);
    RunRow {
        cell: cell.id.clone(),
        axes: cell
            .assignments
            .iter()
            .map(|(k, v)| (k.clone(), display_value(v)))
            .collect(),
        method,
        seed,
        device: manifest.as_ref().and_then(|m| m.device.clone()),
        wall_seconds: m.and_then(|m| m.wall_seconds),
        seconds_per_step: timings.map(|t| t.seconds_per_step),
        steps: timings.map(|t| t.steps),
        trainable_parameters: m.and_then(|m| m.trainable_parameters),
        method_state_bytes: costs.map(|c| c.method_state_bytes),
        state_bytes_per_task: costs.map(|c| c.state_bytes_per_task),
        frozen_base_bytes: costs.map(|c| c.frozen_base_bytes),
        peak_host_memory_bytes: m.and_then(|m| m.peak_host_memory_bytes),
        peak_device_memory_bytes: m.and_then(|m| m.peak_device_memory_bytes),
        status,
    }
}

/// A metrics row's place in the grid, for pairing and plots.
struct Entry {
    cell: String,
    scenario: String,
    acc: f64,
}

fn aggregate<A, M>(spec: &GridSpec, gathered: Vec<Gathered<A, M>>) -> Collection<A, M> {
    let mut runs = Vec::with_capacity(gathered.len());
    let mut accuracy = Vec::new();
    // cell id → (scenario → matrix) of the complete cells; the last row of a scenario wins.
    let mut matrices: BTreeMap<String, BTreeMap<String, AccuracyMatrix>> = BTreeMap::new();
    let mut rows = Vec::new();
    for Gathered { run, results } in gathered {
        if let Some(results) = results {
            let by_scenario = matrices.entry(run.cell.clone()).or_default();
            for readout in results.readouts {
                by_scenario.insert(readout.scenario.clone(), readout.matrix);
                let entry = Entry {
                    cell: run.cell.clone(),
                    scenario: readout.scenario,
                    acc: readout.acc,
                };
                rows.push((entry, readout.row));
            }
            accuracy.extend(results.accuracy.into_iter().map(|a| (run.cell.clone(), a)));
        }
        runs.push(run);
    }

    let (entries, metrics): (Vec<Entry>, Vec<CellMetrics<M>>) = rows
        .into_iter()
        .map(|(entry, row)| {
            let cell = spec.cell(&entry.cell).expect("collected from the spec");
            let joint = spec
                .joint_partner(cell)
                .and_then(|joint| Some(matrices.get(&joint.id)?.get(&entry.scenario)?.diagonal()));
            let own = &matrices[&entry.cell][&entry.scenario];
            let metrics = CellMetrics {
                cell: entry.cell.clone(),
                row,
                intransigence: joint.as_ref().and_then(|a| own.intransigence(a)),
                final_intransigence: joint.as_ref().and_then(|a| own.final_intransigence(a)),
            };
            (entry, metrics)
        })
        .unzip();
    let plots = plots(spec, &runs, &entries, &matrices);
    Collection {
        runs,
        accuracy,
        metrics,
        plots,
    }
}

/// Per read-out: per-task accuracy lines of each configuration's mean matrix
/// (`tasks-<read-out>-<config>`) and ACC bars, mean ± std over seeds (`acc-<read-out>`); then
/// one chart of ACC (mean over seeds) against trainable parameters with a series per read-out
/// (`accuracy-vs-parameters`). Configurations in cell order.
fn plots(
    spec: &GridSpec,
    runs: &[RunRow],
    entries: &[Entry],
    matrices: &BTreeMap<String, BTreeMap<String, AccuracyMatrix>>,
) -> Vec<Plot> {
    if entries.is_empty() {
        return Vec::new();
    }
    let mut scenarios: Vec<&str> = entries.iter().map(|e| e.scenario.as_str()).collect();
    scenarios.sort_unstable();
    scenarios.dedup();
    let label_of: BTreeMap<&str, String> = spec
        .cells
        .iter()
        .map(|c| (c.id.as_str(), c.config_label(&spec.axes)))
        .collect();
    // Configuration labels of the complete cells, in cell order.
    let mut labels: Vec<&str> = Vec::new();
    for cell in &spec.cells {
        let label = label_of[cell.id.as_str()].as_str();
        if matrices.contains_key(&cell.id) && !labels.contains(&label) {
            labels.push(label);
        }
    }
    let params: BTreeMap<&str, u64> = runs
        .iter()
        .filter_map(|r| Some((r.cell.as_str(), r.trainable_parameters?)))
        .collect();
    let name = &spec.base.name;
    let mut plots = Vec::new();
    let mut series = Vec::new();
    for scenario in scenarios {
        let mut bars = Vec::new();
        let mut points = Vec::new();
        for &label in &labels {
            let group: Vec<&Entry> = entries
                .iter()
                .filter(|e| e.scenario == scenario && label_of[e.cell.as_str()] == label)
                .collect();
            let accs: Vec<f64> = group.iter().map(|e| e.acc).collect();
            let Some(stats) = MeanStd::of(&accs) else {
                continue;
            };
            bars.push(Bar {
                label: label.to_owned(),
                mean: stats.mean,
                std: stats.std.unwrap_or(0.0),
            });
            let cell_params: Vec<f64> = group
                .iter()
                .filter_map(|e| params.get(e.cell.as_str()).map(|&p| p as f64))
                .collect();
            if let Some(p) = MeanStd::of(&cell_params) {
                points.push(Point {
                    // `method=lora+rank-8` reads `lora+rank-8`: the method is what the
                    // scatter compares.
                    label: label.strip_prefix("method=").unwrap_or(label).to_owned(),
                    x: p.mean,
                    y: stats.mean,
                });
            }
            let seeds: Vec<AccuracyMatrix> = group
                .iter()
                .filter_map(|e| matrices.get(&e.cell)?.get(scenario).cloned())
                .collect();
            if let Some(mean) = mean_matrix(&seeds) {
                plots.push(Plot {
                    name: format!("tasks-{scenario}-{label}"),
                    title: format!(
                        "{name} / {label} ({scenario}, mean of {} seed(s))",
                        seeds.len()
                    ),
                    chart: Chart::TaskLines(mean),
                });
            }
        }
        plots.push(Plot {
            name: format!("acc-{scenario}"),
            title: format!("{name}: ACC ({scenario}), mean ± std over seeds"),
            chart: Chart::Bars(bars),
        });
        if !points.is_empty() {
            series.push(Series {
                label: scenario.to_owned(),
                points,
            });
        }
    }
    if !series.is_empty() {
        plots.push(Plot {
            name: "accuracy-vs-parameters".into(),
            title: format!("{name}: ACC against trainable parameters, mean over seeds"),
            chart: Chart::Scatter(series),
        });
    }
    plots
}

#[cfg(test)]
mod tests;
