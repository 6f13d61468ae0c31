//! `retain grid collect` (and the end of `grid run`): the cells' results merged into the grid's
//! Parquet files and plots. The aggregation is [`retain_grid::collect()`]; this module reads a
//! cell's Parquet files for it, writes what it returns and draws its plots.

use std::path::Path;

use anyhow::{Context, Result};
use rayon::prelude::*;
use retain_grid::collect::{Chart, PLOT_FORMATS, Plot};
use retain_grid::{Cell, CellResults, CellStatus, Readout};
use retain_results::{
    AccuracyRecord, CellAccuracyRecord, CellMetricsRecord, MetricsRecord, ResultsError, RunRecord,
};

use super::setup::Loaded;

/// Merges every cell's outputs into the grid's Parquet files and plots. Rewrites everything
/// from the cells, in cell order, so running it twice gives identical files.
pub fn collect(loaded: &Loaded, quiet: bool) -> Result<()> {
    let spec = &loaded.spec;
    let results = spec.results_dir();
    std::fs::create_dir_all(&results)
        .with_context(|| format!("cannot create {}", results.display()))?;
    retain_fs::write_atomically(&results.join("grid.toml"), loaded.source.as_bytes())?;

    let collection = retain_grid::collect(spec, &loaded.extra, read_cell)?;
    let complete = collection.complete();
    let runs: Vec<RunRecord> = collection.runs.iter().map(run_record).collect();
    let accuracy: Vec<CellAccuracyRecord> = collection
        .accuracy
        .into_iter()
        .map(|(cell, record)| CellAccuracyRecord { cell, record })
        .collect();
    let metrics: Vec<CellMetricsRecord> = collection
        .metrics
        .into_iter()
        .map(|m| CellMetricsRecord {
            cell: m.cell,
            metrics: m.row,
            intransigence: m.intransigence,
            final_intransigence: m.final_intransigence,
        })
        .collect();
    retain_results::write_runs(&results.join("runs.parquet"), &runs)?;
    retain_results::write_cell_accuracy(&results.join("accuracy.parquet"), &accuracy)?;
    retain_results::write_cell_metrics(&results.join("metrics.parquet"), &metrics)?;
    let plots = draw(&collection.plots, &results.join("plots"))?;
    if !quiet {
        eprintln!(
            "collected {} cells ({} complete) into {} ({plots} plots)",
            runs.len(),
            complete,
            results.display()
        );
    }
    Ok(())
}

/// A complete cell's accuracy rows, and each metrics row with the matrix it came from.
fn read_cell(
    _cell: &Cell,
    dir: &Path,
) -> Result<CellResults<AccuracyRecord, MetricsRecord>, ResultsError> {
    let accuracy = retain_results::read_accuracy(&dir.join("accuracy.parquet"))?;
    let readouts = retain_results::read_metrics(&dir.join("metrics.parquet"))?
        .into_iter()
        .map(|row| {
            Ok(Readout {
                matrix: retain_results::matrix_from_records(&accuracy, &row.run, &row.scenario)?,
                scenario: row.scenario.clone(),
                acc: row.acc,
                row,
            })
        })
        .collect::<Result<_, ResultsError>>()?;
    Ok(CellResults { accuracy, readouts })
}

fn run_record(run: &retain_grid::collect::RunRow) -> RunRecord {
    RunRecord {
        cell: run.cell.clone(),
        axes: run.axes.clone(),
        method: run.method.clone(),
        seed: run.seed,
        status: run.status.as_str().to_owned(),
        error: match &run.status {
            CellStatus::Failed { error } => Some(error.clone()),
            _ => None,
        },
        device: run.device.clone(),
        wall_seconds: run.wall_seconds,
        seconds_per_step: run.seconds_per_step,
        steps: run.steps,
        trainable_parameters: run.trainable_parameters,
        method_state_bytes: run.method_state_bytes,
        state_bytes_per_task: run.state_bytes_per_task,
        frozen_base_bytes: run.frozen_base_bytes,
        peak_host_memory_bytes: run.peak_host_memory_bytes,
        peak_device_memory_bytes: run.peak_device_memory_bytes,
    }
}

/// Draws every plot in every format into `dir`, in parallel: each file is an independent call
/// into `retain-plot`, and drawing dominates the collection's time. Returns how many files;
/// an error is the first file's in plot order.
fn draw(plots: &[Plot], dir: &Path) -> Result<usize> {
    if plots.is_empty() {
        return Ok(0);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let files: Vec<(&Plot, &str)> = plots
        .iter()
        .flat_map(|plot| PLOT_FORMATS.iter().map(move |ext| (plot, *ext)))
        .collect();
    let drawn: Vec<Result<(), retain_plot::PlotError>> = files
        .par_iter()
        .map(|&(plot, ext)| draw_one(plot, &dir.join(format!("{}.{ext}", plot.name))))
        .collect();
    for result in drawn {
        result?;
    }
    Ok(files.len())
}

fn draw_one(plot: &Plot, path: &Path) -> Result<(), retain_plot::PlotError> {
    match &plot.chart {
        Chart::TaskLines(matrix) => retain_plot::task_accuracy_lines(path, matrix, &plot.title),
        Chart::Bars(bars) => {
            let bars: Vec<retain_plot::Bar> = bars
                .iter()
                .map(|b| retain_plot::Bar {
                    label: b.label.clone(),
                    mean: b.mean,
                    std: b.std,
                })
                .collect();
            retain_plot::comparison_bars(path, &bars, &plot.title)
        }
        Chart::Scatter(series) => {
            let series: Vec<retain_plot::Series> = series
                .iter()
                .map(|s| retain_plot::Series {
                    label: s.label.clone(),
                    points: s
                        .points
                        .iter()
                        .map(|p| retain_plot::Point {
                            label: p.label.clone(),
                            x: p.x,
                            y: p.y,
                        })
                        .collect(),
                })
                .collect();
            retain_plot::accuracy_vs_parameters(path, &series, &plot.title)
        }
    }
}
