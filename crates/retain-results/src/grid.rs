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

use polars::prelude::*;

use crate::{
    AccuracyRecord, MetricsRecord, Reader, ResultsError, accuracy_columns, accuracy_from,
    metrics_columns, metrics_from, read_frame, strings, write_frame,
};

/// Prefix of the per-axis columns of `runs.parquet`.
const AXIS_PREFIX: &str = "axis.";

/// One row of `runs.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub cell: String,
    /// `(axis key, value as text)`, in the grid's axis order; the same keys in every row.
    pub axes: Vec<(String, String)>,
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
    pub method_state_bytes: Option<u64>,
    pub state_bytes_per_task: Option<f64>,
    pub frozen_base_bytes: Option<u64>,
    pub peak_host_memory_bytes: Option<u64>,
    pub peak_device_memory_bytes: Option<u64>,
}

/// One row of a grid's `accuracy.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct CellAccuracyRecord {
    pub cell: String,
    pub record: AccuracyRecord,
}

/// One row of a grid's `metrics.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct CellMetricsRecord {
    pub cell: String,
    pub metrics: MetricsRecord,
    /// Mean over tasks of `I_k` against the matching joint cell; `None` without one.
    pub intransigence: Option<f64>,
    /// `I_T` against the matching joint cell; `None` without one.
    pub final_intransigence: Option<f64>,
}

/// Writes `runs.parquet` atomically. Every row must list the same axes in the same order.
pub fn write_runs(path: &Path, rows: &[RunRecord]) -> Result<(), ResultsError> {
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
    let mut columns = vec![Column::new("cell".into(), strings(rows, |r| &r.cell))];
    for (i, key) in keys.iter().enumerate() {
        columns.push(Column::new(
            format!("{AXIS_PREFIX}{key}").into(),
            rows.iter()
                .map(|r| r.axes[i].1.as_str())
                .collect::<Vec<_>>(),
        ));
    }
    let opt_str = |f: fn(&RunRecord) -> &Option<String>| {
        rows.iter().map(|r| f(r).as_deref()).collect::<Vec<_>>()
    };
    columns.extend([
        Column::new("method".into(), strings(rows, |r| &r.method)),
        Column::new(
            "seed".into(),
            rows.iter().map(|r| r.seed).collect::<Vec<_>>(),
        ),
        Column::new("status".into(), strings(rows, |r| &r.status)),
        Column::new("error".into(), opt_str(|r| &r.error)),
        Column::new("device".into(), opt_str(|r| &r.device)),
        Column::new(
            "wall_seconds".into(),
            rows.iter().map(|r| r.wall_seconds).collect::<Vec<_>>(),
        ),
        Column::new(
            "seconds_per_step".into(),
            rows.iter().map(|r| r.seconds_per_step).collect::<Vec<_>>(),
        ),
        Column::new(
            "steps".into(),
            rows.iter().map(|r| r.steps).collect::<Vec<_>>(),
        ),
        Column::new(
            "trainable_parameters".into(),
            rows.iter()
                .map(|r| r.trainable_parameters)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "method_state_bytes".into(),
            rows.iter()
                .map(|r| r.method_state_bytes)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "state_bytes_per_task".into(),
            rows.iter()
                .map(|r| r.state_bytes_per_task)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "frozen_base_bytes".into(),
            rows.iter().map(|r| r.frozen_base_bytes).collect::<Vec<_>>(),
        ),
        Column::new(
            "peak_host_memory_bytes".into(),
            rows.iter()
                .map(|r| r.peak_host_memory_bytes)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "peak_device_memory_bytes".into(),
            rows.iter()
                .map(|r| r.peak_device_memory_bytes)
                .collect::<Vec<_>>(),
        ),
    ]);
    write_frame(path, rows.len(), columns)
}

/// Reads `runs.parquet`, checking the schema.
pub fn read_runs(path: &Path) -> Result<Vec<RunRecord>, ResultsError> {
    let df = read_frame(path)?;
    let c = Reader { df: &df, path };
    let cell = c.strings("cell")?;
    let mut axes: Vec<(String, Vec<String>)> = Vec::new();
    for column in df.columns() {
        if let Some(key) = column.name().strip_prefix(AXIS_PREFIX) {
            let values = column.str().map_err(|e| c.polars(e))?;
            let values = values
                .iter()
                .map(|v| v.unwrap_or_default().to_owned())
                .collect();
            axes.push((key.to_owned(), values));
        }
    }
    let method = c.strings("method")?;
    let seed = c.u64s("seed")?;
    let status = c.strings("status")?;
    let error = c.optional_strings("error")?;
    let device = c.optional_strings("device")?;
    let wall = c.f64s("wall_seconds")?;
    let step = c.f64s("seconds_per_step")?;
    let steps = c.optional_u64s("steps")?;
    let params = c.optional_u64s("trainable_parameters")?;
    // Cost columns added later: a file collected before them reads as unknown costs.
    let later = |name: &'static str| df.column(name).is_ok();
    let state = if later("method_state_bytes") {
        c.optional_u64s("method_state_bytes")?
    } else {
        vec![None; df.height()]
    };
    let per_task = if later("state_bytes_per_task") {
        c.f64s("state_bytes_per_task")?
    } else {
        vec![None; df.height()]
    };
    let frozen = if later("frozen_base_bytes") {
        c.optional_u64s("frozen_base_bytes")?
    } else {
        vec![None; df.height()]
    };
    let host = c.optional_u64s("peak_host_memory_bytes")?;
    let device_memory = c.optional_u64s("peak_device_memory_bytes")?;
    Ok((0..df.height())
        .map(|i| RunRecord {
            cell: cell[i].clone(),
            axes: axes
                .iter()
                .map(|(k, v)| (k.clone(), v[i].clone()))
                .collect(),
            method: method[i].clone(),
            seed: seed[i],
            status: status[i].clone(),
            error: error[i].clone(),
            device: device[i].clone(),
            wall_seconds: wall[i],
            seconds_per_step: step[i],
            steps: steps[i],
            trainable_parameters: params[i],
            method_state_bytes: state[i],
            state_bytes_per_task: per_task[i],
            frozen_base_bytes: frozen[i],
            peak_host_memory_bytes: host[i],
            peak_device_memory_bytes: device_memory[i],
        })
        .collect())
}

/// Writes a grid's `accuracy.parquet` atomically: `cell`, then the run columns.
pub fn write_cell_accuracy(path: &Path, rows: &[CellAccuracyRecord]) -> Result<(), ResultsError> {
    let records: Vec<AccuracyRecord> = rows.iter().map(|r| r.record.clone()).collect();
    let mut columns = vec![Column::new("cell".into(), strings(rows, |r| &r.cell))];
    columns.extend(accuracy_columns(&records)?);
    write_frame(path, rows.len(), columns)
}

/// Reads a grid's `accuracy.parquet`.
pub fn read_cell_accuracy(path: &Path) -> Result<Vec<CellAccuracyRecord>, ResultsError> {
    let df = read_frame(path)?;
    let c = Reader { df: &df, path };
    let cells = c.strings("cell")?;
    Ok(cells
        .into_iter()
        .zip(accuracy_from(&c)?)
        .map(|(cell, record)| CellAccuracyRecord { cell, record })
        .collect())
}

/// Writes a grid's `metrics.parquet` atomically: `cell`, the run columns, `intransigence`.
pub fn write_cell_metrics(path: &Path, rows: &[CellMetricsRecord]) -> Result<(), ResultsError> {
    let records: Vec<MetricsRecord> = rows.iter().map(|r| r.metrics.clone()).collect();
    let mut columns = vec![Column::new("cell".into(), strings(rows, |r| &r.cell))];
    columns.extend(metrics_columns(&records)?);
    columns.push(Column::new(
        "intransigence".into(),
        rows.iter().map(|r| r.intransigence).collect::<Vec<_>>(),
    ));
    columns.push(Column::new(
        "final_intransigence".into(),
        rows.iter()
            .map(|r| r.final_intransigence)
            .collect::<Vec<_>>(),
    ));
    write_frame(path, rows.len(), columns)
}

/// Reads a grid's `metrics.parquet`.
pub fn read_cell_metrics(path: &Path) -> Result<Vec<CellMetricsRecord>, ResultsError> {
    let df = read_frame(path)?;
    let c = Reader { df: &df, path };
    let cells = c.strings("cell")?;
    let intransigence = c.f64s("intransigence")?;
    let final_intransigence = if df.column("final_intransigence").is_ok() {
        c.f64s("final_intransigence")?
    } else {
        vec![None; df.height()]
    };
    Ok(cells
        .into_iter()
        .zip(metrics_from(&c)?)
        .zip(intransigence.into_iter().zip(final_intransigence))
        .map(
            |((cell, metrics), (intransigence, final_intransigence))| CellMetricsRecord {
                cell,
                metrics,
                intransigence,
                final_intransigence,
            },
        )
        .collect())
}

impl Reader<'_> {
    fn optional_u64s(&self, name: &'static str) -> Result<Vec<Option<u64>>, ResultsError> {
        let values = self.column(name, DataType::UInt64, "UInt64")?;
        let values = values.u64().map_err(|e| self.polars(e))?;
        Ok(values.iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cell: &str, seed: u64, status: &str) -> RunRecord {
        RunRecord {
            cell: cell.into(),
            axes: vec![
                ("method.name".into(), "naive".into()),
                ("seed".into(), seed.to_string()),
            ],
            method: "naive".into(),
            seed,
            status: status.into(),
            error: (status == "failed").then(|| "training diverged".into()),
            device: (status != "unfinished").then(|| "cpu".into()),
            wall_seconds: (status == "complete").then_some(1.25),
            seconds_per_step: (status == "complete").then_some(0.001),
            steps: (status == "complete").then_some(150),
            trainable_parameters: (status == "complete").then_some(89_610),
            method_state_bytes: (status == "complete").then_some(0),
            state_bytes_per_task: (status == "complete").then_some(0.0),
            frozen_base_bytes: (status == "complete").then_some(0),
            peak_host_memory_bytes: Some(1 << 30),
            peak_device_memory_bytes: None,
        }
    }

    fn accuracy(run: &str) -> AccuracyRecord {
        AccuracyRecord {
            run: run.into(),
            method: "naive".into(),
            seed: 0,
            scenario: "class_il".into(),
            trained_tasks: 1,
            eval_task: 0,
            correct: 9,
            samples: 10,
            accuracy: 0.9,
        }
    }

    #[test]
    fn runs_round_trip_with_axis_columns_and_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        let rows = vec![
            run("method=naive,seed=0", 0, "complete"),
            run("method=naive,seed=1", 1, "failed"),
            run("method=naive,seed=2", 2, "unfinished"),
        ];
        write_runs(&path, &rows).unwrap();
        assert_eq!(read_runs(&path).unwrap(), rows);
        let df = read_frame(&path).unwrap();
        let names: Vec<&str> = df.get_column_names().iter().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "cell",
                "axis.method.name",
                "axis.seed",
                "method",
                "seed",
                "status",
                "error",
                "device",
                "wall_seconds",
                "seconds_per_step",
                "steps",
                "trainable_parameters",
                "method_state_bytes",
                "state_bytes_per_task",
                "frozen_base_bytes",
                "peak_host_memory_bytes",
                "peak_device_memory_bytes"
            ]
        );
        assert_eq!(df.column("error").unwrap().null_count(), 2);
        assert_eq!(
            df.column("peak_device_memory_bytes").unwrap().null_count(),
            3
        );

        let mut ragged = rows.clone();
        ragged[1].axes.pop();
        let err = write_runs(&path, &ragged).unwrap_err().to_string();
        assert!(err.contains("method=naive,seed=1"), "{err}");
    }

    #[test]
    fn cell_files_round_trip_and_are_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accuracy.parquet");
        let rows = vec![
            CellAccuracyRecord {
                cell: "seed=0".into(),
                record: accuracy("seed=0"),
            },
            CellAccuracyRecord {
                cell: "seed=1".into(),
                record: accuracy("seed=1"),
            },
        ];
        write_cell_accuracy(&path, &rows).unwrap();
        let first = std::fs::read(&path).unwrap();
        assert_eq!(read_cell_accuracy(&path).unwrap(), rows);
        write_cell_accuracy(&path, &rows).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            first,
            "same rows, same bytes"
        );
        // A plain run file has no `cell` column: the grid reader says so.
        write_accuracy_plain(&path);
        let err = read_cell_accuracy(&path).unwrap_err();
        assert!(
            matches!(err, ResultsError::MissingColumn { column: "cell", .. }),
            "{err}"
        );

        let path = dir.path().join("metrics.parquet");
        let metrics = MetricsRecord {
            run: "seed=0".into(),
            method: "naive".into(),
            seed: 0,
            scenario: "class_il".into(),
            tasks: 2,
            acc: 0.5,
            bwt: Some(-0.4),
            fwt: None,
            forgetting: Some(0.4),
            average_incremental_accuracy: 0.7,
            costs: None,
            training_loss: Some("task_il".into()),
        };
        let rows = vec![
            CellMetricsRecord {
                cell: "seed=0".into(),
                metrics: metrics.clone(),
                intransigence: Some(0.05),
                final_intransigence: Some(0.02),
            },
            CellMetricsRecord {
                cell: "seed=1".into(),
                metrics,
                intransigence: None,
                final_intransigence: None,
            },
        ];
        write_cell_metrics(&path, &rows).unwrap();
        assert_eq!(read_cell_metrics(&path).unwrap(), rows);
    }

    fn write_accuracy_plain(path: &Path) {
        crate::write_accuracy(path, &[accuracy("r")]).unwrap();
    }
}
