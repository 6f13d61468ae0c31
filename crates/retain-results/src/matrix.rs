//! Between accuracy matrices and records: long rows from a run's counts, its metrics row, and
//! the matrix rebuilt from long rows.

use retain_metrics::AccuracyMatrix;

use crate::validate::{check_counts, check_scenario, to_u32};
use crate::{AccuracyRecord, MetricsRecord, ResultsError};

/// Identity of one run in one scenario, shared by all rows the functions below produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunKey {
    pub run: String,
    pub method: String,
    pub seed: u64,
    /// One of [`SCENARIOS`](crate::SCENARIOS).
    pub scenario: String,
}

/// Test-set counts of one evaluated task at one training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalCount {
    pub correct: u64,
    pub samples: u64,
}

/// Long rows of one matrix from its correct/sample counts (the function the CLI uses).
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
    let tasks = check_counts(counts)?;
    let mut rows = Vec::with_capacity(counts.len() * tasks);
    for (trained, row) in counts.iter().enumerate() {
        for (task, count) in row.iter().enumerate() {
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
        anytime_accuracy: None,
        lca: None,
        lca_beta: None,
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
