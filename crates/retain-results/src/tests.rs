//! Tests of a run's files: round trips, the exact schema, schema checks on bad input,
//! count validation, matrix rebuilding, atomic writes and file modes.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;
use retain_metrics::AccuracyMatrix;

use super::*;

/// The cost columns of a metrics file, in file order.
const COST_COLUMNS: [&str; 5] = [
    "trainable_parameters",
    "method_state_bytes",
    "state_bytes_per_task",
    "frozen_base_bytes",
    "seconds_per_step",
];

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
    let two = AccuracyMatrix::from_rows(&[vec![0.1, 0.2], vec![0.9, 0.4], vec![0.6, 0.8]]).unwrap();
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
    costly.anytime_accuracy = Some(0.55);
    costly.lca = Some(0.25);
    costly.lca_beta = Some(10);
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

/// Every name in `dir`: after a write, only destinations, no temporary file.
fn file_names(dir: &Path) -> Vec<String> {
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
            s("anytime_accuracy", DataType::Float64),
            s("lca", DataType::Float64),
            s("lca_beta", DataType::UInt64),
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
    let mut names = file_names(dir.path());
    names.sort();
    assert_eq!(names, ["accuracy.parquet", "metrics.parquet"]);
    assert_eq!(read_accuracy(&path).unwrap(), first_only);
    #[cfg(unix)]
    {
        // Results get the same mode as any file the user creates, not a private 0600.
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
    assert_eq!(file_names(dir.path()), ["accuracy.parquet"]);
    assert_eq!(read_accuracy(&path).unwrap(), rows);
    // A destination in a missing directory fails with the path in the message.
    let err = write_accuracy(&dir.path().join("no/such/dir/a.parquet"), &rows).unwrap_err();
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

/// The anytime file round-trips with its documented columns, and a metrics file without the
/// online columns reads them as `None`.
#[test]
fn anytime_rows_round_trip_and_old_metrics_lack_the_online_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anytime.parquet");
    let rows: Vec<AnytimeRecord> = (0..2u32)
        .map(|eval_task| AnytimeRecord {
            run: "r1".into(),
            method: "naive".into(),
            seed: 0,
            scenario: "class_il".into(),
            run_step: 50,
            training_task: 0,
            eval_task,
            correct: 30 + u64::from(eval_task),
            samples: 100,
            accuracy: (30 + eval_task) as f64 / 100.0,
        })
        .collect();
    write_anytime(&path, &rows).unwrap();
    assert_eq!(read_anytime(&path).unwrap(), rows);
    let s = |n: &str, t: DataType| (n.to_string(), t);
    assert_eq!(
        schema_of(&path),
        vec![
            s("run", DataType::String),
            s("method", DataType::String),
            s("seed", DataType::UInt64),
            s("scenario", DataType::String),
            s("run_step", DataType::UInt64),
            s("training_task", DataType::UInt32),
            s("eval_task", DataType::UInt32),
            s("correct", DataType::UInt64),
            s("samples", DataType::UInt64),
            s("accuracy", DataType::Float64),
        ]
    );

    let met = dir.path().join("metrics.parquet");
    write_metrics(&met, &metrics_rows()).unwrap();
    let mut df = ParquetReader::new(File::open(&met).unwrap())
        .finish()
        .unwrap();
    for column in ["anytime_accuracy", "lca", "lca_beta"] {
        df = df.drop(column).unwrap();
    }
    write_raw(&met, df);
    let back = read_metrics(&met).unwrap();
    assert!(
        back.iter()
            .all(|r| r.anytime_accuracy.is_none() && r.lca.is_none() && r.lca_beta.is_none())
    );
    assert_eq!(back[0].acc, metrics_rows()[0].acc);
}
