use std::sync::Mutex;

use retain_manifest::{Costs, Manifest, RunStatus, Timings};

use super::*;

const SPLIT_MNIST: &str = include_str!("../../../../experiments/split-mnist.toml");

/// naive × joint × seeds 0..3 under `output`: naive seed 2 failed, joint seed 1 never ran, the
/// rest complete (naive with 1000 trainable parameters, joint with 2000).
fn grid(output: &Path) -> GridSpec {
    let text = format!(
        "{SPLIT_MNIST}\n[grid]\n\"method.name\" = [\"naive\", \"joint\"]\n\"seed\" = [0, 1, 2]\n"
    );
    let mut spec = GridSpec::from_source(&text, "g.toml").unwrap();
    spec.base.output = output.to_owned();
    for cell in &spec.cells {
        let naive = spec.method_of(cell) == "naive";
        let manifest = match cell.id.as_str() {
            "method=naive,seed=2" => Manifest {
                error: Some("training diverged".into()),
                device: Some("cuda:0".into()),
                wall_seconds: Some(3.0),
                ..Manifest::new(RunStatus::Failed)
            },
            "method=joint,seed=1" => continue,
            _ => Manifest {
                device: Some("cpu".into()),
                wall_seconds: Some(2.0),
                trainable_parameters: Some(if naive { 1000 } else { 2000 }),
                peak_host_memory_bytes: Some(1 << 20),
                timings: Some(Timings {
                    steps: 30,
                    seconds_per_step: 0.001,
                    ..Timings::default()
                }),
                costs: Some(Costs {
                    method_state_bytes: 64,
                    state_bytes_per_task: 32.0,
                    ..Costs::default()
                }),
                ..Manifest::new(RunStatus::Complete)
            },
        };
        manifest.write(&spec.cell_dir(cell)).unwrap();
    }
    spec
}

/// A 2-task matrix with diagonal `(d1, d2)`.
fn matrix(d1: f64, d2: f64) -> AccuracyMatrix {
    AccuracyMatrix::from_rows(&[vec![0.1, 0.1], vec![d1, 0.0], vec![0.5, d2]]).unwrap()
}

/// The synthetic results of each complete cell: a class-IL matrix per cell, and a task-IL one
/// for naive seed 0 only. Accuracy rows are `"<cell>/<n>"`, metrics rows `"<cell>/<read-out>"`.
fn results(cell: &Cell) -> CellResults<String, String> {
    let diagonal = match cell.id.as_str() {
        "method=naive,seed=0" => (0.90, 0.95),
        "method=naive,seed=1" => (0.80, 0.85),
        "method=joint,seed=0" => (0.95, 0.92),
        "method=joint,seed=2" => (0.90, 0.90),
        other => panic!("{other} is not complete and must not be read"),
    };
    let mut scenarios = vec![("class_il", matrix(diagonal.0, diagonal.1))];
    if cell.id == "method=naive,seed=0" {
        scenarios.push(("task_il", matrix(1.0, 1.0)));
    }
    CellResults {
        accuracy: (0..2).map(|n| format!("{}/{n}", cell.id)).collect(),
        readouts: scenarios
            .into_iter()
            .map(|(scenario, matrix)| Readout {
                scenario: scenario.into(),
                acc: matrix.acc(),
                row: format!("{}/{scenario}", cell.id),
                matrix,
            })
            .collect(),
    }
}

fn collected(spec: &GridSpec) -> Collection<String, String> {
    collect(spec, &[], |cell, _| Ok::<_, std::io::Error>(results(cell))).unwrap()
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-12)
}

#[test]
fn runs_list_every_cell_with_costs_only_where_complete() {
    let dir = tempfile::tempdir().unwrap();
    let spec = grid(dir.path());
    let c = collected(&spec);
    let summary: Vec<(&str, &str, Option<&str>)> = c
        .runs
        .iter()
        .map(|r| (r.cell.as_str(), r.status.as_str(), r.device.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            ("method=naive,seed=0", "complete", Some("cpu")),
            ("method=naive,seed=1", "complete", Some("cpu")),
            ("method=naive,seed=2", "failed", Some("cuda:0")),
            ("method=joint,seed=0", "complete", Some("cpu")),
            ("method=joint,seed=1", "unfinished", None),
            ("method=joint,seed=2", "complete", Some("cpu")),
        ]
    );
    assert_eq!(c.complete(), 4);
    let naive = &c.runs[0];
    assert_eq!((naive.method.as_str(), naive.seed), ("naive", 0));
    assert_eq!(
        naive.axes,
        [
            ("method.name".to_owned(), "naive".to_owned()),
            ("seed".to_owned(), "0".to_owned())
        ]
    );
    assert_eq!(naive.wall_seconds, Some(2.0));
    assert_eq!(
        (naive.steps, naive.seconds_per_step),
        (Some(30), Some(0.001))
    );
    assert_eq!(naive.trainable_parameters, Some(1000));
    assert_eq!(naive.method_state_bytes, Some(64));
    assert_eq!(naive.state_bytes_per_task, Some(32.0));
    assert_eq!(naive.peak_host_memory_bytes, Some(1 << 20));
    assert_eq!(naive.peak_device_memory_bytes, None);
    let failed = &c.runs[2];
    assert_eq!(
        failed.status,
        CellStatus::Failed {
            error: "training diverged".into()
        }
    );
    assert_eq!(
        (failed.wall_seconds, failed.steps, failed.method_state_bytes),
        (None, None, None),
        "a failed run's costs are not a run's costs"
    );
}

#[test]
fn rows_pass_through_in_cell_order_and_only_complete_cells_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let spec = grid(dir.path());
    let read = Mutex::new(Vec::new());
    let c = collect(&spec, &[], |cell, cell_dir| {
        assert_eq!(cell_dir, spec.cell_dir(cell));
        read.lock().unwrap().push(cell.id.clone());
        Ok::<_, std::io::Error>(results(cell))
    })
    .unwrap();
    let mut read = read.into_inner().unwrap();
    read.sort();
    assert_eq!(
        read,
        [
            "method=joint,seed=0",
            "method=joint,seed=2",
            "method=naive,seed=0",
            "method=naive,seed=1"
        ]
    );
    let accuracy: Vec<&str> = c.accuracy.iter().map(|(_, row)| row.as_str()).collect();
    assert_eq!(
        accuracy,
        [
            "method=naive,seed=0/0",
            "method=naive,seed=0/1",
            "method=naive,seed=1/0",
            "method=naive,seed=1/1",
            "method=joint,seed=0/0",
            "method=joint,seed=0/1",
            "method=joint,seed=2/0",
            "method=joint,seed=2/1",
        ]
    );
    assert!(c.accuracy.iter().all(|(cell, row)| row.starts_with(cell)));
    let metrics: Vec<&str> = c.metrics.iter().map(|m| m.row.as_str()).collect();
    assert_eq!(
        metrics,
        [
            "method=naive,seed=0/class_il",
            "method=naive,seed=0/task_il",
            "method=naive,seed=1/class_il",
            "method=joint,seed=0/class_il",
            "method=joint,seed=2/class_il",
        ]
    );
    assert_eq!(c, collected(&spec), "collecting again gives the same");
}

#[test]
fn intransigence_pairs_each_cell_with_its_complete_joint_partner_in_the_same_readout() {
    let dir = tempfile::tempdir().unwrap();
    let c = collected(&grid(dir.path()));
    let by_row = |row: &str| c.metrics.iter().find(|m| m.row == row).unwrap();
    // Against joint seed 0's diagonal (0.95, 0.92): mean(0.95 − 0.90, 0.92 − 0.95), and the
    // last task alone.
    let naive = by_row("method=naive,seed=0/class_il");
    assert!(
        close(naive.intransigence, 0.01),
        "{:?}",
        naive.intransigence
    );
    assert!(close(naive.final_intransigence, -0.03));
    // No task-IL joint matrix, a joint partner that never ran, joint cells themselves.
    for row in [
        "method=naive,seed=0/task_il",
        "method=naive,seed=1/class_il",
        "method=joint,seed=0/class_il",
    ] {
        let m = by_row(row);
        assert_eq!(
            (m.intransigence, m.final_intransigence),
            (None, None),
            "{row}"
        );
    }
}

#[test]
fn plots_group_seeds_by_configuration_per_readout() {
    let dir = tempfile::tempdir().unwrap();
    let c = collected(&grid(dir.path()));
    let names: Vec<&str> = c.plots.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "tasks-class_il-method=naive",
            "tasks-class_il-method=joint",
            "acc-class_il",
            "tasks-task_il-method=naive",
            "acc-task_il",
            "accuracy-vs-parameters",
        ]
    );
    let naive_lines = &c.plots[0];
    assert_eq!(
        naive_lines.title,
        "split-mnist / method=naive (class_il, mean of 2 seed(s))"
    );
    assert_eq!(
        naive_lines.chart,
        Chart::TaskLines(mean_matrix(&[matrix(0.90, 0.95), matrix(0.80, 0.85)]).unwrap())
    );
    let Chart::Bars(bars) = &c.plots[2].chart else {
        panic!("{:?}", c.plots[2]);
    };
    assert_eq!(
        c.plots[2].title,
        "split-mnist: ACC (class_il), mean ± std over seeds"
    );
    // ACC of naive seeds 0 and 1: (0.5 + 0.95) / 2 and (0.5 + 0.85) / 2.
    let labels: Vec<&str> = bars.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels, ["method=naive", "method=joint"]);
    assert!((bars[0].mean - 0.7).abs() < 1e-12, "{bars:?}");
    assert!((bars[0].std - 0.05 / 2f64.sqrt()).abs() < 1e-12, "{bars:?}");
    let Chart::Bars(task_bars) = &c.plots[4].chart else {
        panic!("{:?}", c.plots[4]);
    };
    assert_eq!(task_bars.len(), 1, "joint has no task-IL rows");
    assert_eq!(task_bars[0].std, 0.0, "one seed has no spread");
    let Chart::Scatter(series) = &c.plots[5].chart else {
        panic!("{:?}", c.plots[5]);
    };
    let points: Vec<(&str, &str, f64)> = series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .map(|p| (s.label.as_str(), p.label.as_str(), p.x))
        })
        .collect();
    assert_eq!(
        points,
        [
            ("class_il", "naive", 1000.0),
            ("class_il", "joint", 2000.0),
            ("task_il", "naive", 1000.0)
        ]
    );
}

#[test]
fn a_grid_without_complete_cells_has_rows_but_no_plots() {
    let dir = tempfile::tempdir().unwrap();
    let spec = grid(dir.path());
    std::fs::remove_dir_all(spec.results_dir()).unwrap();
    let c = collected(&spec);
    assert_eq!(c.runs.len(), 6);
    assert!(c.runs.iter().all(|r| r.status == CellStatus::Unfinished));
    assert!(c.accuracy.is_empty() && c.metrics.is_empty() && c.plots.is_empty());
}

#[test]
fn the_first_failing_cell_in_cell_order_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let spec = grid(dir.path());
    let err = collect(&spec, &[], |cell, _| match cell.id.as_str() {
        "method=naive,seed=1" | "method=joint,seed=2" => {
            Err(std::io::Error::other(format!("cannot read {}", cell.id)))
        }
        _ => Ok(results(cell)),
    })
    .unwrap_err();
    let CollectError::Read { cell, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(cell, "method=naive,seed=1");
    assert_eq!(err.to_string(), "cannot read method=naive,seed=1");

    // A manifest of a newer schema stops the collection instead of reading as unfinished.
    let newer = spec.cell_dir(&spec.cells[4]).join("manifest.json");
    std::fs::create_dir_all(newer.parent().unwrap()).unwrap();
    std::fs::write(&newer, r#"{"schema_version": 7, "status": "complete"}"#).unwrap();
    let err = collect(&spec, &[], |cell, _| Ok::<_, std::io::Error>(results(cell))).unwrap_err();
    assert!(
        matches!(err, CollectError::Grid(GridError::Manifest(_))),
        "{err}"
    );
}
