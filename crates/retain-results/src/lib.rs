//! Parquet output of accuracy matrices and metrics (the only crate that depends on polars).
//!
//! Every run stores its accuracy matrix in *long form*, one row per evaluated cell, because a
//! long table concatenates across runs, methods and seeds with a plain `UNION`/`pd.concat` and
//! every analysis tool (DuckDB, pandas, polars) groups it without reshaping. The derived
//! metrics are stored next to it for convenience, but the matrix stays the source of truth:
//! [`matrix_from_records`] rebuilds it so any metric can be recomputed under another
//! convention (see `retain-metrics`).
//!
//! Polars is confined to this crate so the heavy dependency is compiled once and the rest of
//! the workspace deals only in plain Rust structs.
//!
//! # Files
//!
//! Both files are Parquet with zstd compression (read by pyarrow, DuckDB, polars and Spark).
//! Columns appear in the order below. Readers check that every listed column is present with
//! exactly this type and reject nulls in non-nullable columns; extra columns are ignored, so
//! later versions may add columns without breaking older readers.
//!
//! ## Accuracy file (`accuracy.parquet`) — [`AccuracyRecord`]
//!
//! One row per run × scenario × training step × evaluated task.
//!
//! | column          | type    | nullable | meaning                                                                  |
//! |-----------------|---------|----------|--------------------------------------------------------------------------|
//! | `run`           | String  | no       | run identifier (unique per method × seed × configuration)                |
//! | `method`        | String  | no       | continual-learning method name, e.g. `naive`                             |
//! | `seed`          | UInt64  | no       | random seed of the run                                                   |
//! | `scenario`      | String  | no       | read-out scenario, one of [`SCENARIOS`] (`class_il`, `task_il`, …)        |
//! | `trained_tasks` | UInt32  | no       | tasks trained so far: `0` = untrained model, `i` = after training task `i` |
//! | `eval_task`     | UInt32  | no       | evaluated task, 0-based (`0..T`)                                         |
//! | `correct`       | UInt64  | no       | correctly classified test samples of `eval_task` (`task_inference`: samples whose task was inferred correctly) |
//! | `samples`       | UInt64  | no       | test samples of `eval_task`                                              |
//! | `accuracy`      | Float64 | no       | `correct / samples`, in `[0, 1]`                                         |
//!
//! In the paper notation `R[i,j]` (1-based) is the row with `trained_tasks = i` and
//! `eval_task = j − 1`; `b_j` is the row with `trained_tasks = 0` and `eval_task = j − 1`.
//!
//! ## Metrics file (`metrics.parquet`) — [`MetricsRecord`]
//!
//! One row per run × scenario, derived from the matrix under the default (paper) conventions
//! of `retain-metrics`. All accuracies and metrics are fractions, not percentages.
//!
//! | column                         | type    | nullable | meaning                                                         |
//! |--------------------------------|---------|----------|-----------------------------------------------------------------|
//! | `run`                          | String  | no       | run identifier                                                  |
//! | `method`                       | String  | no       | method name                                                     |
//! | `seed`                         | UInt64  | no       | random seed                                                     |
//! | `scenario`                     | String  | no       | one of [`SCENARIOS`]                                            |
//! | `tasks`                        | UInt32  | no       | number of tasks `T`                                             |
//! | `acc`                          | Float64 | no       | ACC: mean final accuracy `(1/T) Σ_j R[T,j]`                     |
//! | `bwt`                          | Float64 | yes      | backward transfer, divided by `T − 1`; null when `T = 1`        |
//! | `fwt`                          | Float64 | yes      | forward transfer against the untrained model; null when `T = 1` |
//! | `forgetting`                   | Float64 | yes      | final average forgetting (max over earlier rows); null when `T = 1` |
//! | `average_incremental_accuracy` | Float64 | no       | `(1/T) Σ_t mean_{j≤t} R[t,j]`                                    |
//! | `trainable_parameters`         | UInt64  | yes      | Σ numel of the variables that require gradients at the end       |
//! | `method_state_bytes`           | UInt64  | yes      | bytes of the method's own state at the end (stored adapters, Fisher matrices, buffers) |
//! | `state_bytes_per_task`         | Float64 | yes      | `method_state_bytes / T`                                        |
//! | `frozen_base_bytes`            | UInt64  | yes      | bytes of the model's variables that do not train, plus quantised weights |
//! | `seconds_per_step`             | Float64 | yes      | mean training step time                                         |
//! | `training_loss`                | String  | yes      | `[training] loss` of the run: `class_il` or `task_il`           |
//!
//! | `anytime_accuracy`             | Float64 | yes      | online runs: average anytime accuracy, `(1/|P|) Σ_p mean_{j≤t_p} a_p[j]` |
//! | `lca`                          | Float64 | yes      | online runs: learning curve area `LCA_β` (Chaudhry et al. 2019)  |
//! | `lca_beta`                     | UInt64  | yes      | online runs: `β` of `lca`, in optimiser steps into each task     |
//!
//! The last three are null for an offline run (and read as `None` from files without them);
//! see `retain_metrics::average_anytime_accuracy` and `retain_metrics::learning_curve_area`
//! for the definitions and how `eval_every` discretises LCA.
//!
//! The five before `training_loss` are the run's costs ([`RunCosts`]), the same on each of its rows;
//! null when unknown. Files written before they existed read back with `costs: None`, and
//! without a `training_loss` column with `training_loss: None`.
//!
//! ## Anytime file (`anytime.parquet`) — [`AnytimeRecord`]
//!
//! Written by online runs only (`[training] online`): the evaluations every `eval_every`
//! optimiser steps of the run, one row per run × scenario × evaluation × evaluated task. The
//! evaluations before training and after each task stay in `accuracy.parquet`.
//!
//! | column          | type    | nullable | meaning                                                    |
//! |-----------------|---------|----------|------------------------------------------------------------|
//! | `run`           | String  | no       | run identifier                                             |
//! | `method`        | String  | no       | method name                                                |
//! | `seed`          | UInt64  | no       | random seed                                                |
//! | `scenario`      | String  | no       | one of [`SCENARIOS`]                                       |
//! | `run_step`      | UInt64  | no       | optimiser steps of the run before the evaluation           |
//! | `training_task` | UInt32  | no       | the task (0-based) training at the evaluation              |
//! | `eval_task`     | UInt32  | no       | evaluated task, 0-based                                    |
//! | `correct`       | UInt64  | no       | correctly classified test samples of `eval_task`           |
//! | `samples`       | UInt64  | no       | test samples of `eval_task`                                |
//! | `accuracy`      | Float64 | no       | `correct / samples`                                        |
//!
//! ## Grid files
//!
//! A grid (`retain grid collect`) merges its cells into `runs.parquet` (one row per cell:
//! axis values, status, error, costs) and into `accuracy.parquet` / `metrics.parquet` with a
//! leading `cell` column (and `intransigence` in the metrics). Their schemas are in [`grid`].
//!
//! # Atomic writes
//!
//! Writers go through `retain-fs`, the workspace's one atomic writer: they serialise into a
//! hidden temporary sibling of the destination, flush it, rename it over the destination and
//! flush the directory, so a crash or an interrupted run leaves either the old file or the new
//! one, never a truncated Parquet file that would poison a later aggregation. Files get the
//! user's ordinary mode (0o666 less the umask).
//!
//! # Layout
//!
//! Each record type is declared once (`records`, [`grid`]) and its columns are derived from
//! its fields (`columns`); `parquet` writes and reads any such record, `validate` holds the
//! checks rows must pass, and `matrix` converts between matrices, counts and rows.

mod columns;
mod error;
pub mod grid;
mod matrix;
mod parquet;
mod records;
mod validate;

pub use error::ResultsError;
pub use grid::{
    CellAccuracyRecord, CellMetricsRecord, RunRecord, read_cell_accuracy, read_cell_metrics,
    read_runs, write_cell_accuracy, write_cell_metrics, write_runs,
};
pub use matrix::{EvalCount, RunKey, accuracy_records, matrix_from_records, metrics_record};
pub use records::{
    AccuracyRecord, AnytimeRecord, MetricsRecord, RunCosts, read_accuracy, read_anytime,
    read_metrics, write_accuracy, write_anytime, write_metrics,
};
pub use validate::SCENARIOS;

#[cfg(test)]
mod tests;
