//! The records of a run's two files (`accuracy.parquet`, `metrics.parquet`), each declared
//! once with its columns, and their writers and readers.

use std::path::Path;

use crate::columns::{AddedLater, Group, record};
use crate::validate::each_scenario;
use crate::{ResultsError, parquet};

record! {
    /// One row of the long-form accuracy matrix: one run × scenario × training step × evaluated task.
    #[derive(Debug, Clone, PartialEq)]
    pub struct AccuracyRecord {
        pub run: String,
        pub method: String,
        pub seed: u64,
        /// One of [`SCENARIOS`](crate::SCENARIOS) (`"class_il"`, `"task_il"`, …).
        pub scenario: String,
        /// `0` = untrained model, `i` = after training task `i` (1-based, like `R[i,·]`).
        pub trained_tasks: u32,
        /// 0-based task index (`R[·,j]` has `eval_task = j − 1`).
        pub eval_task: u32,
        pub correct: u64,
        pub samples: u64,
        /// `correct / samples`, kept explicitly so readers need no arithmetic.
        pub accuracy: f64,
    }
    check = |rows| each_scenario(rows, |r| r.scenario.as_str());
}

record! {
    /// One row per run × scenario of derived metrics (paper conventions, see retain-metrics).
    #[derive(Debug, Clone, PartialEq)]
    pub struct MetricsRecord {
        pub run: String,
        pub method: String,
        pub seed: u64,
        pub scenario: String,
        pub tasks: u32,
        pub acc: f64,
        /// `None` for a single task: there is no earlier task to transfer to.
        pub bwt: Option<f64>,
        pub fwt: Option<f64>,
        pub forgetting: Option<f64>,
        pub average_incremental_accuracy: f64,
        /// What the run cost; `None` when not recorded. Its five columns are nullable; files
        /// written before them (no `method_state_bytes` column) read as `None`.
        pub costs: Option<RunCosts> => Group { present_if: "method_state_bytes" },
        /// The training loss's label space (`class_il`, `task_il`); `None` when not recorded
        /// (files written before the column existed).
        pub training_loss: Option<String> => AddedLater,
        /// An online run's average anytime accuracy (`retain_metrics::average_anytime_accuracy`);
        /// `None` offline and in files written before the column existed.
        pub anytime_accuracy: Option<f64> => AddedLater,
        /// An online run's learning curve area `LCA_β` (`retain_metrics::learning_curve_area`);
        /// `None` offline.
        pub lca: Option<f64> => AddedLater,
        /// `β` of `lca`, in optimiser steps; `None` offline.
        pub lca_beta: Option<u64> => AddedLater,
    }
    check = |rows| each_scenario(rows, |r| r.scenario.as_str());
}

record! {
    /// One row of an online run's evaluations along its steps (`anytime.parquet`): one run ×
    /// scenario × anytime evaluation × evaluated task.
    #[derive(Debug, Clone, PartialEq)]
    pub struct AnytimeRecord {
        pub run: String,
        pub method: String,
        pub seed: u64,
        pub scenario: String,
        /// Optimiser steps of the run before the evaluation (a multiple of `eval_every`).
        pub run_step: u64,
        /// The task (0-based) training when it was made.
        pub training_task: u32,
        /// 0-based.
        pub eval_task: u32,
        pub correct: u64,
        pub samples: u64,
        /// `correct / samples`.
        pub accuracy: f64,
    }
    check = |rows| each_scenario(rows, |r| r.scenario.as_str());
}

record! {
    /// What a run's method costs next to what it retains (measured by `retain_train::Costs`).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct RunCosts {
        pub trainable_parameters: u64,
        pub method_state_bytes: u64,
        pub state_bytes_per_task: f64,
        pub frozen_base_bytes: u64,
        pub seconds_per_step: f64,
    }
}

/// Writes the long-form accuracy rows to `path` atomically (see the crate docs for the schema).
pub fn write_accuracy(path: &Path, rows: &[AccuracyRecord]) -> Result<(), ResultsError> {
    parquet::write(path, rows)
}

/// Reads the long-form accuracy rows from `path`, checking the schema first.
pub fn read_accuracy(path: &Path) -> Result<Vec<AccuracyRecord>, ResultsError> {
    parquet::read(path)
}

/// Writes the metrics rows to `path` atomically (see the crate docs for the schema).
pub fn write_metrics(path: &Path, rows: &[MetricsRecord]) -> Result<(), ResultsError> {
    parquet::write(path, rows)
}

/// Reads the metrics rows from `path`, checking the schema first.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRecord>, ResultsError> {
    parquet::read(path)
}

/// Writes an online run's evaluations along its steps to `path` atomically (see the crate
/// docs for the schema).
pub fn write_anytime(path: &Path, rows: &[AnytimeRecord]) -> Result<(), ResultsError> {
    parquet::write(path, rows)
}

/// Reads an online run's evaluations along its steps from `path`, checking the schema first.
pub fn read_anytime(path: &Path) -> Result<Vec<AnytimeRecord>, ResultsError> {
    parquet::read(path)
}
