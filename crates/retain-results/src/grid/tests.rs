//! Tests of a grid's files: axis columns, nulls, ragged axes, determinism.

use std::path::Path;

use super::*;
use crate::parquet::read_frame;

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
        anytime_accuracy: None,
        lca: None,
        lca_beta: None,
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
