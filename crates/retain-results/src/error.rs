//! The crate's one error type: what failed, and on which file, column, run or scenario.

use std::path::PathBuf;

use polars::prelude::PolarsError;
use retain_metrics::MetricsError;

/// Errors from writing, reading or interpreting results files.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Parquet error on {}: {source}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: PolarsError,
    },
    #[error("{}: missing column `{column}` (expected type {expected})", path.display())]
    MissingColumn {
        path: PathBuf,
        column: &'static str,
        expected: &'static str,
    },
    #[error("{}: column `{column}` has type {found}, expected {expected}", path.display())]
    WrongColumnType {
        path: PathBuf,
        column: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("{}: column `{column}` is null at row {row} but is not nullable", path.display())]
    UnexpectedNull {
        path: PathBuf,
        column: &'static str,
        row: usize,
    },
    #[error(
        "unknown scenario `{scenario}` (expected one of class_il, task_il, domain_il, task_inferred, task_inference, merged)"
    )]
    UnknownScenario { scenario: String },
    #[error("no accuracy rows for run `{run}`, scenario `{scenario}`")]
    NoRows { run: String, scenario: String },
    #[error(
        "run `{run}`, scenario `{scenario}`: no accuracy for eval_task {eval_task} \
         at trained_tasks {trained_tasks}"
    )]
    MissingCell {
        run: String,
        scenario: String,
        trained_tasks: u32,
        eval_task: u32,
    },
    #[error(
        "run `{run}`, scenario `{scenario}`: more than one accuracy for eval_task {eval_task} \
         at trained_tasks {trained_tasks}"
    )]
    DuplicateCell {
        run: String,
        scenario: String,
        trained_tasks: u32,
        eval_task: u32,
    },
    #[error("invalid evaluation counts: {0}")]
    InvalidCounts(String),
    #[error("run `{run}`, scenario `{scenario}`: {source}")]
    Matrix {
        run: String,
        scenario: String,
        #[source]
        source: MetricsError,
    },
}
