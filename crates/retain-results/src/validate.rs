//! Validation of what goes into a file: scenario names, count matrices, a grid's axes.

use crate::matrix::EvalCount;
use crate::{ResultsError, RunRecord};

/// The read-out scenarios a record may name, as stored in the `scenario` column.
pub const SCENARIOS: [&str; 7] = [
    "class_il",
    "task_il",
    "domain_il",
    "task_inferred",
    "task_inference",
    "merged",
    "ncm",
];

pub(crate) fn check_scenario(scenario: &str) -> Result<(), ResultsError> {
    if SCENARIOS.contains(&scenario) {
        Ok(())
    } else {
        Err(ResultsError::UnknownScenario {
            scenario: scenario.into(),
        })
    }
}

/// Every row's scenario is one of [`SCENARIOS`]; the first that is not is the error.
pub(crate) fn each_scenario<R>(
    rows: &[&R],
    scenario: impl Fn(&R) -> &str,
) -> Result<(), ResultsError> {
    rows.iter().try_for_each(|r| check_scenario(scenario(r)))
}

/// The number of tasks `T` of a count matrix, which must have `T + 1` rows of `T` entries,
/// each with `0 < samples` and `correct <= samples`. Rows are checked in order, each one's
/// length before its entries.
pub(crate) fn check_counts(counts: &[Vec<EvalCount>]) -> Result<usize, ResultsError> {
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
        }
    }
    Ok(tasks)
}

/// Every row of `runs.parquet` lists the first row's axes, in its order: they become columns.
pub(crate) fn check_axes(rows: &[&RunRecord]) -> Result<(), ResultsError> {
    let keys: Vec<&str> = rows
        .first()
        .map(|r| r.axes.iter().map(|(k, _)| k.as_str()).collect())
        .unwrap_or_default();
    for r in rows {
        if !r
            .axes
            .iter()
            .map(|(k, _)| k.as_str())
            .eq(keys.iter().copied())
        {
            return Err(ResultsError::InvalidCounts(format!(
                "cell `{}` has axes {:?}, expected {keys:?}",
                r.cell,
                r.axes.iter().map(|(k, _)| k).collect::<Vec<_>>()
            )));
        }
    }
    Ok(())
}

pub(crate) fn to_u32(value: usize) -> Result<u32, ResultsError> {
    u32::try_from(value)
        .map_err(|_| ResultsError::InvalidCounts(format!("task index {value} exceeds u32")))
}
