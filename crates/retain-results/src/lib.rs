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
//! The five before the last are the run's costs ([`RunCosts`]), the same on each of its rows;
//! null when unknown. Files written before they existed read back with `costs: None`, and
//! without a `training_loss` column with `training_loss: None`.
//!
//! ## Grid files
//!
//! A grid (`retain grid collect`) merges its cells into `runs.parquet` (one row per cell:
//! axis values, status, error, costs) and into `accuracy.parquet` / `metrics.parquet` with a
//! leading `cell` column (and `intransigence` in the metrics). Their schemas are in [`grid`].
//!
//! # Atomic writes
//!
//! Writers serialise into a temporary file in the destination's directory and rename it over
//! the destination, so a crash or an interrupted run leaves either the old file or the new
//! one, never a truncated Parquet file that would poison a later aggregation.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use retain_metrics::{AccuracyMatrix, MetricsError};

/// The read-out scenarios a record may name, as stored in the `scenario` column.
pub const SCENARIOS: [&str; 6] = [
    "class_il",
    "task_il",
    "domain_il",
    "task_inferred",
    "task_inference",
    "merged",
];

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

/// One row of the long-form accuracy matrix: one run × scenario × training step × evaluated task.
#[derive(Debug, Clone, PartialEq)]
pub struct AccuracyRecord {
    pub run: String,
    pub method: String,
    pub seed: u64,
    /// One of [`SCENARIOS`] (`"class_il"`, `"task_il"`, …).
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
    /// What the run cost; `None` when not recorded.
    pub costs: Option<RunCosts>,
    /// The training loss's label space (`class_il`, `task_il`); `None` when not recorded
    /// (files written before the column existed).
    pub training_loss: Option<String>,
}

/// What a run's method costs next to what it retains (measured by `retain_train::Costs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunCosts {
    pub trainable_parameters: u64,
    pub method_state_bytes: u64,
    pub state_bytes_per_task: f64,
    pub frozen_base_bytes: u64,
    pub seconds_per_step: f64,
}

/// The cost columns, in file order.
const COST_COLUMNS: [&str; 5] = [
    "trainable_parameters",
    "method_state_bytes",
    "state_bytes_per_task",
    "frozen_base_bytes",
    "seconds_per_step",
];

/// Identity of one run in one scenario, shared by all rows the helpers below produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunKey {
    pub run: String,
    pub method: String,
    pub seed: u64,
    /// One of [`SCENARIOS`].
    pub scenario: String,
}

/// Test-set counts of one evaluated task at one training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalCount {
    pub correct: u64,
    pub samples: u64,
}

/// Long rows of one matrix from its correct/sample counts (the helper the CLI uses).
///
/// `counts[i][j]` holds the counts on task `j` (0-based) after training `i` tasks, so `counts`
/// has `T + 1` rows of `T` entries, row 0 being the untrained model. Accuracies are computed
/// here so every producer rounds the same way. Errors on a ragged or wrongly sized matrix, on
/// `samples == 0` (accuracy undefined), on `correct > samples`, and on an unknown scenario.
pub fn accuracy_records(
    key: &RunKey,
    counts: &[Vec<EvalCount>],
) -> Result<Vec<AccuracyRecord>, ResultsError> {
    check_scenario(&key.scenario)?;
    let tasks = counts.first().map_or(0, Vec::len);
    if tasks == 0 {
        return Err(ResultsError::InvalidCounts(
            "the count matrix needs at least one task".into(),
        ));
    }
    if counts.len() != tasks + 1 {
        return Err(ResultsError::InvalidCounts(format!(
            "{} rows for {tasks} tasks, expected {} (untrained + one per task)",
            counts.len(),
            tasks + 1
        )));
    }
    let mut rows = Vec::with_capacity(counts.len() * tasks);
    for (trained, row) in counts.iter().enumerate() {
        if row.len() != tasks {
            return Err(ResultsError::InvalidCounts(format!(
                "row {trained} has {} entries, expected {tasks}",
                row.len()
            )));
        }
        for (task, count) in row.iter().enumerate() {
            if count.samples == 0 || count.correct > count.samples {
                return Err(ResultsError::InvalidCounts(format!(
                    "trained_tasks {trained}, eval_task {task}: {} correct of {} samples",
                    count.correct, count.samples
                )));
            }
            rows.push(AccuracyRecord {
                run: key.run.clone(),
                method: key.method.clone(),
                seed: key.seed,
                scenario: key.scenario.clone(),
                trained_tasks: to_u32(trained)?,
                eval_task: to_u32(task)?,
                correct: count.correct,
                samples: count.samples,
                accuracy: count.correct as f64 / count.samples as f64,
            });
        }
    }
    Ok(rows)
}

/// The metrics row of one matrix under the default conventions of `retain-metrics`.
pub fn metrics_record(
    key: &RunKey,
    matrix: &AccuracyMatrix,
) -> Result<MetricsRecord, ResultsError> {
    check_scenario(&key.scenario)?;
    let summary = matrix.summary();
    Ok(MetricsRecord {
        run: key.run.clone(),
        method: key.method.clone(),
        seed: key.seed,
        scenario: key.scenario.clone(),
        tasks: to_u32(matrix.tasks())?,
        acc: summary.acc,
        bwt: summary.bwt,
        fwt: summary.fwt,
        forgetting: summary.forgetting,
        average_incremental_accuracy: summary.average_incremental_accuracy,
        costs: None,
        training_loss: None,
    })
}

/// Rebuild the AccuracyMatrix of one run and scenario from long rows (errors if rows are missing/duplicated).
///
/// Rows of other runs and scenarios are skipped, so a whole file (or several concatenated) can
/// be passed. `T` is taken as the largest task index seen, and every cell of the
/// `(T + 1) × T` grid must appear exactly once: a gap would silently bias every metric.
pub fn matrix_from_records(
    rows: &[AccuracyRecord],
    run: &str,
    scenario: &str,
) -> Result<AccuracyMatrix, ResultsError> {
    let selected: Vec<&AccuracyRecord> = rows
        .iter()
        .filter(|r| r.run == run && r.scenario == scenario)
        .collect();
    let tasks = selected
        .iter()
        .map(|r| (r.eval_task as usize + 1).max(r.trained_tasks as usize))
        .max()
        .ok_or_else(|| ResultsError::NoRows {
            run: run.into(),
            scenario: scenario.into(),
        })?;
    let mut grid: Vec<Option<f64>> = vec![None; (tasks + 1) * tasks];
    for r in &selected {
        let cell = &mut grid[r.trained_tasks as usize * tasks + r.eval_task as usize];
        if cell.is_some() {
            return Err(ResultsError::DuplicateCell {
                run: run.into(),
                scenario: scenario.into(),
                trained_tasks: r.trained_tasks,
                eval_task: r.eval_task,
            });
        }
        *cell = Some(r.accuracy);
    }
    let mut matrix_rows = Vec::with_capacity(tasks + 1);
    for trained in 0..=tasks {
        let mut row = Vec::with_capacity(tasks);
        for task in 0..tasks {
            let value = grid[trained * tasks + task].ok_or_else(|| ResultsError::MissingCell {
                run: run.into(),
                scenario: scenario.into(),
                trained_tasks: trained as u32,
                eval_task: task as u32,
            })?;
            row.push(value);
        }
        matrix_rows.push(row);
    }
    AccuracyMatrix::from_rows(&matrix_rows).map_err(|source| ResultsError::Matrix {
        run: run.into(),
        scenario: scenario.into(),
        source,
    })
}

/// Writes the long-form accuracy rows to `path` atomically (see the crate docs for the schema).
pub fn write_accuracy(path: &Path, rows: &[AccuracyRecord]) -> Result<(), ResultsError> {
    write_frame(path, rows.len(), accuracy_columns(rows)?)
}

fn accuracy_columns(rows: &[AccuracyRecord]) -> Result<Vec<Column>, ResultsError> {
    for r in rows {
        check_scenario(&r.scenario)?;
    }
    Ok(vec![
        Column::new("run".into(), strings(rows, |r| &r.run)),
        Column::new("method".into(), strings(rows, |r| &r.method)),
        Column::new(
            "seed".into(),
            rows.iter().map(|r| r.seed).collect::<Vec<_>>(),
        ),
        Column::new("scenario".into(), strings(rows, |r| &r.scenario)),
        Column::new(
            "trained_tasks".into(),
            rows.iter().map(|r| r.trained_tasks).collect::<Vec<_>>(),
        ),
        Column::new(
            "eval_task".into(),
            rows.iter().map(|r| r.eval_task).collect::<Vec<_>>(),
        ),
        Column::new(
            "correct".into(),
            rows.iter().map(|r| r.correct).collect::<Vec<_>>(),
        ),
        Column::new(
            "samples".into(),
            rows.iter().map(|r| r.samples).collect::<Vec<_>>(),
        ),
        Column::new(
            "accuracy".into(),
            rows.iter().map(|r| r.accuracy).collect::<Vec<_>>(),
        ),
    ])
}

/// Reads the long-form accuracy rows from `path`, checking the schema first.
pub fn read_accuracy(path: &Path) -> Result<Vec<AccuracyRecord>, ResultsError> {
    let df = read_frame(path)?;
    accuracy_from(&Reader { df: &df, path })
}

fn accuracy_from(c: &Reader<'_>) -> Result<Vec<AccuracyRecord>, ResultsError> {
    let df = c.df;
    let run = c.strings("run")?;
    let method = c.strings("method")?;
    let seed = c.u64s("seed")?;
    let scenario = c.strings("scenario")?;
    let trained_tasks = c.u32s("trained_tasks")?;
    let eval_task = c.u32s("eval_task")?;
    let correct = c.u64s("correct")?;
    let samples = c.u64s("samples")?;
    let accuracy = c.required(c.f64s("accuracy")?, "accuracy")?;
    Ok((0..df.height())
        .map(|i| AccuracyRecord {
            run: run[i].clone(),
            method: method[i].clone(),
            seed: seed[i],
            scenario: scenario[i].clone(),
            trained_tasks: trained_tasks[i],
            eval_task: eval_task[i],
            correct: correct[i],
            samples: samples[i],
            accuracy: accuracy[i],
        })
        .collect())
}

/// Writes the metrics rows to `path` atomically (see the crate docs for the schema).
pub fn write_metrics(path: &Path, rows: &[MetricsRecord]) -> Result<(), ResultsError> {
    write_frame(path, rows.len(), metrics_columns(rows)?)
}

fn metrics_columns(rows: &[MetricsRecord]) -> Result<Vec<Column>, ResultsError> {
    for r in rows {
        check_scenario(&r.scenario)?;
    }
    Ok(vec![
        Column::new("run".into(), strings(rows, |r| &r.run)),
        Column::new("method".into(), strings(rows, |r| &r.method)),
        Column::new(
            "seed".into(),
            rows.iter().map(|r| r.seed).collect::<Vec<_>>(),
        ),
        Column::new("scenario".into(), strings(rows, |r| &r.scenario)),
        Column::new(
            "tasks".into(),
            rows.iter().map(|r| r.tasks).collect::<Vec<_>>(),
        ),
        Column::new("acc".into(), rows.iter().map(|r| r.acc).collect::<Vec<_>>()),
        Column::new("bwt".into(), rows.iter().map(|r| r.bwt).collect::<Vec<_>>()),
        Column::new("fwt".into(), rows.iter().map(|r| r.fwt).collect::<Vec<_>>()),
        Column::new(
            "forgetting".into(),
            rows.iter().map(|r| r.forgetting).collect::<Vec<_>>(),
        ),
        Column::new(
            "average_incremental_accuracy".into(),
            rows.iter()
                .map(|r| r.average_incremental_accuracy)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            COST_COLUMNS[0].into(),
            cost(rows, |c| c.trainable_parameters),
        ),
        Column::new(COST_COLUMNS[1].into(), cost(rows, |c| c.method_state_bytes)),
        Column::new(
            COST_COLUMNS[2].into(),
            cost(rows, |c| c.state_bytes_per_task),
        ),
        Column::new(COST_COLUMNS[3].into(), cost(rows, |c| c.frozen_base_bytes)),
        Column::new(COST_COLUMNS[4].into(), cost(rows, |c| c.seconds_per_step)),
        Column::new(
            "training_loss".into(),
            rows.iter()
                .map(|r| r.training_loss.as_deref())
                .collect::<Vec<_>>(),
        ),
    ])
}

fn cost<T>(rows: &[MetricsRecord], field: fn(&RunCosts) -> T) -> Vec<Option<T>> {
    rows.iter().map(|r| r.costs.as_ref().map(field)).collect()
}

/// Reads the metrics rows from `path`, checking the schema first.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRecord>, ResultsError> {
    let df = read_frame(path)?;
    metrics_from(&Reader { df: &df, path })
}

fn metrics_from(c: &Reader<'_>) -> Result<Vec<MetricsRecord>, ResultsError> {
    let df = c.df;
    let run = c.strings("run")?;
    let method = c.strings("method")?;
    let seed = c.u64s("seed")?;
    let scenario = c.strings("scenario")?;
    let tasks = c.u32s("tasks")?;
    let acc = c.required(c.f64s("acc")?, "acc")?;
    let bwt = c.f64s("bwt")?;
    let fwt = c.f64s("fwt")?;
    let forgetting = c.f64s("forgetting")?;
    let aia = c.required(
        c.f64s("average_incremental_accuracy")?,
        "average_incremental_accuracy",
    )?;
    let costs = costs_from(c)?;
    let training_loss = c.strings_if_present("training_loss")?;
    Ok((0..df.height())
        .map(|i| MetricsRecord {
            run: run[i].clone(),
            method: method[i].clone(),
            seed: seed[i],
            scenario: scenario[i].clone(),
            tasks: tasks[i],
            acc: acc[i],
            bwt: bwt[i],
            fwt: fwt[i],
            forgetting: forgetting[i],
            average_incremental_accuracy: aia[i],
            costs: costs[i],
            training_loss: training_loss[i].clone(),
        })
        .collect())
}

/// The cost columns of a metrics file, per row; all `None` for a file written before they
/// existed (no `method_state_bytes` column).
fn costs_from(c: &Reader<'_>) -> Result<Vec<Option<RunCosts>>, ResultsError> {
    let height = c.df.height();
    if c.df.column(COST_COLUMNS[1]).is_err() {
        return Ok(vec![None; height]);
    }
    let u64s = |name: &'static str| -> Result<Vec<Option<u64>>, ResultsError> {
        let values = c.column(name, DataType::UInt64, "UInt64")?;
        Ok(values.u64().map_err(|e| c.polars(e))?.iter().collect())
    };
    let params = u64s(COST_COLUMNS[0])?;
    let state = u64s(COST_COLUMNS[1])?;
    let per_task = c.f64s(COST_COLUMNS[2])?;
    let frozen = u64s(COST_COLUMNS[3])?;
    let step = c.f64s(COST_COLUMNS[4])?;
    Ok((0..height)
        .map(|i| {
            Some(RunCosts {
                trainable_parameters: params[i]?,
                method_state_bytes: state[i]?,
                state_bytes_per_task: per_task[i]?,
                frozen_base_bytes: frozen[i]?,
                seconds_per_step: step[i]?,
            })
        })
        .collect())
}

pub mod grid;
pub use grid::{
    CellAccuracyRecord, CellMetricsRecord, RunRecord, read_cell_accuracy, read_cell_metrics,
    read_runs, write_cell_accuracy, write_cell_metrics, write_runs,
};

fn check_scenario(scenario: &str) -> Result<(), ResultsError> {
    if SCENARIOS.contains(&scenario) {
        Ok(())
    } else {
        Err(ResultsError::UnknownScenario {
            scenario: scenario.into(),
        })
    }
}

fn to_u32(value: usize) -> Result<u32, ResultsError> {
    u32::try_from(value)
        .map_err(|_| ResultsError::InvalidCounts(format!("task index {value} exceeds u32")))
}

fn strings<'a, T>(rows: &'a [T], field: impl Fn(&'a T) -> &'a String) -> Vec<&'a str> {
    rows.iter().map(|r| field(r).as_str()).collect()
}

/// Serialises the frame into a temporary sibling of `path`, then renames it into place.
fn write_frame(path: &Path, height: usize, columns: Vec<Column>) -> Result<(), ResultsError> {
    let parquet_err = |source| ResultsError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let mut df = DataFrame::new(height, columns).map_err(parquet_err)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let io_err = |source| ResultsError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Dropping `tmp` on any early return deletes the partial file.
    let mut tmp = temp_builder().tempfile_in(dir).map_err(io_err)?;
    ParquetWriter::new(tmp.as_file_mut())
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut df)
        .map_err(parquet_err)?;
    tmp.as_file_mut().flush().map_err(io_err)?;
    tmp.as_file().sync_all().map_err(io_err)?;
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    // Make the rename itself durable; not every platform can open a directory, so best effort.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A temporary-file builder whose files get the ordinary mode (`0o666` less the umask)
/// instead of tempfile's private `0o600`, because the file is renamed into place and kept.
fn temp_builder() -> tempfile::Builder<'static, 'static> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".retain-results-").suffix(".parquet.tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder
}

fn read_frame(path: &Path) -> Result<DataFrame, ResultsError> {
    let file = File::open(path).map_err(|source| ResultsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetReader::new(file)
        .finish()
        .map_err(|source| ResultsError::Parquet {
            path: path.to_path_buf(),
            source,
        })
}

/// Typed, schema-checked column access with errors that name the file and the column.
struct Reader<'a> {
    df: &'a DataFrame,
    path: &'a Path,
}

impl Reader<'_> {
    fn column(
        &self,
        name: &'static str,
        dtype: DataType,
        expected: &'static str,
    ) -> Result<&Column, ResultsError> {
        let column = self
            .df
            .column(name)
            .map_err(|_| ResultsError::MissingColumn {
                path: self.path.to_path_buf(),
                column: name,
                expected,
            })?;
        if column.dtype() != &dtype {
            return Err(ResultsError::WrongColumnType {
                path: self.path.to_path_buf(),
                column: name,
                expected,
                found: column.dtype().to_string(),
            });
        }
        Ok(column)
    }

    fn polars(&self, source: PolarsError) -> ResultsError {
        ResultsError::Parquet {
            path: self.path.to_path_buf(),
            source,
        }
    }

    fn required<T>(
        &self,
        values: Vec<Option<T>>,
        name: &'static str,
    ) -> Result<Vec<T>, ResultsError> {
        values
            .into_iter()
            .enumerate()
            .map(|(row, v)| {
                v.ok_or_else(|| ResultsError::UnexpectedNull {
                    path: self.path.to_path_buf(),
                    column: name,
                    row,
                })
            })
            .collect()
    }

    fn strings(&self, name: &'static str) -> Result<Vec<String>, ResultsError> {
        let values = self.column(name, DataType::String, "String")?;
        let values = values.str().map_err(|e| self.polars(e))?;
        self.required(values.iter().map(|v| v.map(str::to_owned)).collect(), name)
    }

    /// A nullable string column; all `None` when the file has no such column (it predates
    /// it).
    fn strings_if_present(&self, name: &'static str) -> Result<Vec<Option<String>>, ResultsError> {
        if self.df.column(name).is_err() {
            return Ok(vec![None; self.df.height()]);
        }
        self.optional_strings(name)
    }

    /// A nullable string column.
    fn optional_strings(&self, name: &'static str) -> Result<Vec<Option<String>>, ResultsError> {
        let values = self.column(name, DataType::String, "String")?;
        let values = values.str().map_err(|e| self.polars(e))?;
        Ok(values.iter().map(|v| v.map(str::to_owned)).collect())
    }

    fn u64s(&self, name: &'static str) -> Result<Vec<u64>, ResultsError> {
        let values = self.column(name, DataType::UInt64, "UInt64")?;
        let values = values.u64().map_err(|e| self.polars(e))?;
        self.required(values.iter().collect(), name)
    }

    fn u32s(&self, name: &'static str) -> Result<Vec<u32>, ResultsError> {
        let values = self.column(name, DataType::UInt32, "UInt32")?;
        let values = values.u32().map_err(|e| self.polars(e))?;
        self.required(values.iter().collect(), name)
    }

    /// Float64 values with nulls kept; callers wrap non-nullable columns in [`Self::required`].
    fn f64s(&self, name: &'static str) -> Result<Vec<Option<f64>>, ResultsError> {
        let values = self.column(name, DataType::Float64, "Float64")?;
        let values = values.f64().map_err(|e| self.polars(e))?;
        Ok(values.iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(run: &str, scenario: &str) -> RunKey {
        RunKey {
            run: run.into(),
            method: "naive".into(),
            seed: 7,
            scenario: scenario.into(),
        }
    }

    /// Counts of a 2-task run with 100 test samples per task.
    fn counts() -> Vec<Vec<EvalCount>> {
        let c = |correct| EvalCount {
            correct,
            samples: 100,
        };
        vec![vec![c(10), c(20)], vec![c(90), c(40)], vec![c(60), c(80)]]
    }

    fn accuracy_rows() -> Vec<AccuracyRecord> {
        let mut rows = accuracy_records(&key("r1", "class_il"), &counts()).unwrap();
        rows.extend(accuracy_records(&key("r1", "task_il"), &counts()).unwrap());
        rows
    }

    fn metrics_rows() -> Vec<MetricsRecord> {
        let two =
            AccuracyMatrix::from_rows(&[vec![0.1, 0.2], vec![0.9, 0.4], vec![0.6, 0.8]]).unwrap();
        let one = AccuracyMatrix::from_rows(&[vec![0.1], vec![0.9]]).unwrap();
        let single = metrics_record(&key("r2", "domain_il"), &one).unwrap();
        assert_eq!(single.bwt, None, "one task must give null transfer metrics");
        let mut costly = metrics_record(&key("r1", "class_il"), &two).unwrap();
        costly.costs = Some(RunCosts {
            trainable_parameters: 89_610,
            method_state_bytes: 4_000,
            state_bytes_per_task: 2_000.0,
            frozen_base_bytes: 0,
            seconds_per_step: 0.001,
        });
        costly.training_loss = Some("task_il".into());
        vec![costly, single]
    }

    /// A metrics file from before the cost columns reads back with `costs: None`.
    #[test]
    fn metrics_without_cost_columns_read_as_unknown_costs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.parquet");
        write_metrics(&path, &metrics_rows()).unwrap();
        let mut df = ParquetReader::new(File::open(&path).unwrap())
            .finish()
            .unwrap();
        for name in COST_COLUMNS {
            df = df.drop(name).unwrap();
        }
        let old = dir.path().join("old.parquet");
        write_raw(&old, df);
        let rows = read_metrics(&old).unwrap();
        assert!(rows.iter().all(|r| r.costs.is_none()));
        assert_eq!(read_metrics(&path).unwrap(), metrics_rows());
    }

    fn schema_of(path: &Path) -> Vec<(String, DataType)> {
        let df = ParquetReader::new(File::open(path).unwrap())
            .finish()
            .unwrap();
        df.columns()
            .iter()
            .map(|c| (c.name().to_string(), c.dtype().clone()))
            .collect()
    }

    fn tmp_names(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn accuracy_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accuracy.parquet");
        let rows = accuracy_rows();
        write_accuracy(&path, &rows).unwrap();
        assert_eq!(read_accuracy(&path).unwrap(), rows);
    }

    #[test]
    fn metrics_round_trip_keeps_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.parquet");
        let rows = metrics_rows();
        write_metrics(&path, &rows).unwrap();
        let back = read_metrics(&path).unwrap();
        assert_eq!(back, rows);
        assert_eq!(back[1].fwt, None);
        assert!(back[0].bwt.is_some());
    }

    #[test]
    fn empty_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.parquet");
        write_accuracy(&path, &[]).unwrap();
        assert!(read_accuracy(&path).unwrap().is_empty());
        write_metrics(&path, &[]).unwrap();
        assert!(read_metrics(&path).unwrap().is_empty());
    }

    #[test]
    fn written_schema_is_exactly_the_documented_one() {
        let dir = tempfile::tempdir().unwrap();
        let acc = dir.path().join("accuracy.parquet");
        write_accuracy(&acc, &accuracy_rows()).unwrap();
        let s = |n: &str, t: DataType| (n.to_string(), t);
        assert_eq!(
            schema_of(&acc),
            vec![
                s("run", DataType::String),
                s("method", DataType::String),
                s("seed", DataType::UInt64),
                s("scenario", DataType::String),
                s("trained_tasks", DataType::UInt32),
                s("eval_task", DataType::UInt32),
                s("correct", DataType::UInt64),
                s("samples", DataType::UInt64),
                s("accuracy", DataType::Float64),
            ]
        );
        let met = dir.path().join("metrics.parquet");
        write_metrics(&met, &metrics_rows()).unwrap();
        assert_eq!(
            schema_of(&met),
            vec![
                s("run", DataType::String),
                s("method", DataType::String),
                s("seed", DataType::UInt64),
                s("scenario", DataType::String),
                s("tasks", DataType::UInt32),
                s("acc", DataType::Float64),
                s("bwt", DataType::Float64),
                s("fwt", DataType::Float64),
                s("forgetting", DataType::Float64),
                s("average_incremental_accuracy", DataType::Float64),
                s("trainable_parameters", DataType::UInt64),
                s("method_state_bytes", DataType::UInt64),
                s("state_bytes_per_task", DataType::Float64),
                s("frozen_base_bytes", DataType::UInt64),
                s("seconds_per_step", DataType::Float64),
                s("training_loss", DataType::String),
            ]
        );
    }

    /// Writes `df` as a Parquet file, bypassing the crate's writers, to feed the readers bad input.
    fn write_raw(path: &Path, mut df: DataFrame) {
        ParquetWriter::new(File::create(path).unwrap())
            .finish(&mut df)
            .unwrap();
    }

    #[test]
    fn missing_column_names_file_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accuracy.parquet");
        write_accuracy(&path, &accuracy_rows()).unwrap();
        let df = ParquetReader::new(File::open(&path).unwrap())
            .finish()
            .unwrap()
            .drop("samples")
            .unwrap();
        write_raw(&path, df);
        let err = read_accuracy(&path).unwrap_err();
        assert!(
            matches!(&err, ResultsError::MissingColumn { column: "samples", path: p, .. } if p == &path),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("accuracy.parquet") && message.contains("`samples`"),
            "{message}"
        );
    }

    #[test]
    fn mistyped_column_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.parquet");
        let n = 2;
        let df = DataFrame::new(
            n,
            vec![
                Column::new("run".into(), ["a", "b"]),
                Column::new("method".into(), ["m", "m"]),
                // Signed seeds, as a careless pandas export would write them.
                Column::new("seed".into(), [1i64, 2]),
                Column::new("scenario".into(), ["class_il", "class_il"]),
            ],
        )
        .unwrap();
        write_raw(&path, df);
        let err = read_metrics(&path).unwrap_err();
        assert!(
            matches!(
                &err,
                ResultsError::WrongColumnType {
                    column: "seed",
                    expected: "UInt64",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("metrics.parquet"), "{err}");
    }

    #[test]
    fn null_in_required_column_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.parquet");
        write_metrics(&path, &metrics_rows()).unwrap();
        let mut df = ParquetReader::new(File::open(&path).unwrap())
            .finish()
            .unwrap();
        df.replace("acc", Column::new("acc".into(), [Some(0.5), None]))
            .unwrap();
        write_raw(&path, df);
        let err = read_metrics(&path).unwrap_err();
        assert!(
            matches!(
                &err,
                ResultsError::UnexpectedNull {
                    column: "acc",
                    row: 1,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn matrix_from_records_rebuilds_the_matrix() {
        let rows = accuracy_rows();
        let expected =
            AccuracyMatrix::from_rows(&[vec![0.1, 0.2], vec![0.9, 0.4], vec![0.6, 0.8]]).unwrap();
        assert_eq!(
            matrix_from_records(&rows, "r1", "class_il").unwrap(),
            expected
        );
        // Order of rows must not matter.
        let mut reversed = rows.clone();
        reversed.reverse();
        assert_eq!(
            matrix_from_records(&reversed, "r1", "task_il").unwrap(),
            expected
        );
    }

    #[test]
    fn matrix_from_records_rejects_gaps_and_duplicates() {
        let rows: Vec<_> = accuracy_rows()
            .into_iter()
            .filter(|r| r.scenario == "class_il")
            .collect();

        let missing: Vec<_> = rows
            .iter()
            .filter(|r| !(r.trained_tasks == 1 && r.eval_task == 1))
            .cloned()
            .collect();
        assert!(matches!(
            matrix_from_records(&missing, "r1", "class_il"),
            Err(ResultsError::MissingCell {
                trained_tasks: 1,
                eval_task: 1,
                ..
            })
        ));

        // Losing the whole last row must not shrink the matrix silently.
        let last_row_gone: Vec<_> = rows
            .iter()
            .filter(|r| r.trained_tasks < 2)
            .cloned()
            .collect();
        assert!(matches!(
            matrix_from_records(&last_row_gone, "r1", "class_il"),
            Err(ResultsError::MissingCell {
                trained_tasks: 2,
                eval_task: 0,
                ..
            })
        ));

        let mut duplicated = rows.clone();
        duplicated.push(rows[3].clone());
        assert!(matches!(
            matrix_from_records(&duplicated, "r1", "class_il"),
            Err(ResultsError::DuplicateCell { .. })
        ));

        assert!(matches!(
            matrix_from_records(&rows, "r1", "domain_il"),
            Err(ResultsError::NoRows { .. })
        ));
    }

    #[test]
    fn counts_are_validated() {
        let k = key("r", "class_il");
        let mut bad = counts();
        bad[1][0].correct = 101;
        assert!(matches!(
            accuracy_records(&k, &bad),
            Err(ResultsError::InvalidCounts(_))
        ));
        let mut ragged = counts();
        ragged[2].pop();
        assert!(matches!(
            accuracy_records(&k, &ragged),
            Err(ResultsError::InvalidCounts(_))
        ));
        assert!(matches!(
            accuracy_records(&key("r", "class-il"), &counts()),
            Err(ResultsError::UnknownScenario { .. })
        ));
    }

    #[test]
    fn atomic_write_leaves_only_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accuracy.parquet");
        write_accuracy(&path, &accuracy_rows()).unwrap();
        // Overwriting replaces the file in place.
        let first_only = accuracy_rows()[..3].to_vec();
        write_accuracy(&path, &first_only).unwrap();
        write_metrics(&dir.path().join("metrics.parquet"), &metrics_rows()).unwrap();
        let mut names = tmp_names(dir.path());
        names.sort();
        assert_eq!(names, ["accuracy.parquet", "metrics.parquet"]);
        assert_eq!(read_accuracy(&path).unwrap(), first_only);
        #[cfg(unix)]
        {
            // Results get the same mode as any file the user creates, not tempfile's 0600.
            use std::os::unix::fs::PermissionsExt;
            let reference = dir.path().join("reference");
            std::fs::write(&reference, b"").unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), mode(&reference));
        }
    }

    #[test]
    fn failed_write_keeps_old_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accuracy.parquet");
        let rows = accuracy_rows();
        write_accuracy(&path, &rows).unwrap();
        let mut bad = rows.clone();
        bad[0].scenario = "nonsense".into();
        assert!(write_accuracy(&path, &bad).is_err());
        assert_eq!(tmp_names(dir.path()), ["accuracy.parquet"]);
        assert_eq!(read_accuracy(&path).unwrap(), rows);
        // A destination in a missing directory fails with the path in the message.
        let err = write_accuracy(&dir.path().join("no/such/dir/a.parquet"), &rows).unwrap_err();
        assert!(err.to_string().contains("no/such/dir"), "{err}");
    }
}
