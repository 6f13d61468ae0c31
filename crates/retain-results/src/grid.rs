//! The merged files of a grid (`results/<grid>/`): written by `retain grid collect`.
//!
//! Every file is rewritten whole from the cells' own outputs, in the grid's cell order, so
//! collecting twice gives byte-identical files.
//!
//! ## `runs.parquet` — [`RunRecord`]
//!
//! One row per cell, whatever its status.
//!
//! | column                      | type    | nullable | meaning                                                      |
//! |-----------------------------|---------|----------|--------------------------------------------------------------|
//! | `cell`                      | String  | no       | the cell id (`lr=0.01,method=naive,seed=0`)                  |
//! | `axis.<key>`                | String  | no       | one column per grid axis, the cell's value as text (`0.01`, `naive`, `[3, 1, 2]`), in the grid's axis order |
//! | `method`                    | String  | no       | method name                                                  |
//! | `seed`                      | UInt64  | no       | master seed                                                  |
//! | `status`                    | String  | no       | `complete`, `failed` or `unfinished`                         |
//! | `error`                     | String  | yes      | why a failed cell failed                                     |
//! | `device`                    | String  | yes      | where it ran (`cpu`, `cuda:0`)                               |
//! | `wall_seconds`              | Float64 | yes      | wall time of the cell's process from start to results, loading included |
//! | `seconds_per_step`          | Float64 | yes      | mean training step time                                      |
//! | `steps`                     | UInt64  | yes      | optimiser steps                                              |
//! | `trainable_parameters`      | UInt64  | yes      | Σ numel of the trainable variables at the end of the run     |
//! | `method_state_bytes`        | UInt64  | yes      | bytes of the method's own state at the end of the run        |
//! | `state_bytes_per_task`      | Float64 | yes      | `method_state_bytes` / tasks                                 |
//! | `frozen_base_bytes`         | UInt64  | yes      | bytes of the model's variables that do not train, plus quantised weights |
//! | `peak_host_memory_bytes`    | UInt64  | yes      | peak resident memory of the cell's process (Linux `VmHWM`); for CPU cells this is the device's memory |
//! | `peak_device_memory_bytes`  | UInt64  | yes      | peak GPU memory the cell's process held (context + allocator cache), sampled from the driver every 200 ms; null on the CPU or without `nvidia-smi` |
//!
//! ## `accuracy.parquet` — [`CellAccuracyRecord`]
//!
//! `cell` (String), then exactly the columns of a run's `accuracy.parquet` (see the crate
//! docs); one row per complete cell × read-out × trained tasks × evaluated task.
//!
//! ## `metrics.parquet` — [`CellMetricsRecord`]
//!
//! `cell` (String), then the columns of a run's `metrics.parquet`, then `intransigence`
//! (Float64, nullable): `(1/T) Σ_k (a*_k − R[k,k])`, the mean over tasks, with
//! `a*_k = R_joint[k,k]` of the grid's `joint` cell (joint training from scratch on tasks
//! `1..=k`) that agrees with this cell on every axis outside the method; null when the grid
//! has none (and for the joint cells themselves); then `final_intransigence` (Float64,
//! nullable): `I_T = a*_T − R[T,T]`, the value Chaudhry et al. 2018 report (null likewise,
//! and in files written before the column existed).

use std::path::Path;

use crate::columns::{AddedLater, Axes, Flatten, record};
use crate::validate::check_axes;
use crate::{AccuracyRecord, MetricsRecord, ResultsError, parquet};

record! {
    /// One row of `runs.parquet`.
    #[derive(Debug, Clone, PartialEq)]
    pub struct RunRecord {
        pub cell: String,
        /// `(axis key, value as text)`, in the grid's axis order; the same keys in every row.
        pub axes: Vec<(String, String)> => Axes { prefix: "axis." },
        pub method: String,
        pub seed: u64,
        /// `complete`, `failed` or `unfinished`.
        pub status: String,
        pub error: Option<String>,
        pub device: Option<String>,
        pub wall_seconds: Option<f64>,
        pub seconds_per_step: Option<f64>,
        pub steps: Option<u64>,
        pub trainable_parameters: Option<u64>,
        // Cost columns added later: a file collected before them reads as unknown costs.
        pub method_state_bytes: Option<u64> => AddedLater,
        pub state_bytes_per_task: Option<f64> => AddedLater,
        pub frozen_base_bytes: Option<u64> => AddedLater,
        pub peak_host_memory_bytes: Option<u64>,
        pub peak_device_memory_bytes: Option<u64>,
    }
    check = check_axes;
}

record! {
    /// One row of a grid's `accuracy.parquet`.
    #[derive(Debug, Clone, PartialEq)]
    pub struct CellAccuracyRecord {
        pub cell: String,
        pub record: AccuracyRecord => Flatten,
    }
}

record! {
    /// One row of a grid's `metrics.parquet`.
    #[derive(Debug, Clone, PartialEq)]
    pub struct CellMetricsRecord {
        pub cell: String,
        pub metrics: MetricsRecord => Flatten,
        /// Mean over tasks of `I_k` against the matching joint cell; `None` without one.
        pub intransigence: Option<f64>,
        /// `I_T` against the matching joint cell; `None` without one.
        pub final_intransigence: Option<f64> => AddedLater,
    }
}

/// Writes `runs.parquet` atomically. Every row must list the same axes in the same order.
pub fn write_runs(path: &Path, rows: &[RunRecord]) -> Result<(), ResultsError> {
    parquet::write(path, rows)
}

/// Reads `runs.parquet`, checking the schema.
pub fn read_runs(path: &Path) -> Result<Vec<RunRecord>, ResultsError> {
    parquet::read(path)
}

/// Writes a grid's `accuracy.parquet` atomically: `cell`, then the run columns.
pub fn write_cell_accuracy(path: &Path, rows: &[CellAccuracyRecord]) -> Result<(), ResultsError> {
    parquet::write(path, rows)
}

/// Reads a grid's `accuracy.parquet`.
pub fn read_cell_accuracy(path: &Path) -> Result<Vec<CellAccuracyRecord>, ResultsError> {
    parquet::read(path)
}

/// Writes a grid's `metrics.parquet` atomically: `cell`, the run columns, `intransigence`.
pub fn write_cell_metrics(path: &Path, rows: &[CellMetricsRecord]) -> Result<(), ResultsError> {
    parquet::write(path, rows)
}

/// Reads a grid's `metrics.parquet`.
pub fn read_cell_metrics(path: &Path) -> Result<Vec<CellMetricsRecord>, ResultsError> {
    parquet::read(path)
}

#[cfg(test)]
mod tests;
