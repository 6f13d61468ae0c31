//! Online runs (`[training] online`): one pass over the stream, evaluations every
//! `eval_every` steps written to `anytime.parquet`, the online metrics in `metrics.parquet`.

use crate::common::{read_parquet, reduced_split_mnist_run, retain};

/// A reduced online split-MNIST run: 5 tasks of 200 samples in batches of 10 are 100 steps,
/// evaluated after run steps 50 (task 3 training) and 100 (task 5), each evaluation every
/// task in both read-outs.
#[test]
fn an_online_run_writes_its_evaluations_along_the_steps() {
    let out_dir = tempfile::tempdir().unwrap();
    let run = reduced_split_mnist_run(
        out_dir.path(),
        "online",
        &["training.online=true", "training.eval_every=50"],
    );
    assert!(run.join("accuracy.parquet").is_file());
    let df = read_parquet(&run.join("anytime.parquet"));
    let columns: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        columns,
        [
            "run",
            "method",
            "seed",
            "scenario",
            "run_step",
            "training_task",
            "eval_task",
            "correct",
            "samples",
            "accuracy"
        ]
    );
    let rows = retain_results::read_anytime(&run.join("anytime.parquet")).unwrap();
    let mut cells: Vec<(String, u64, u32, u32)> = rows
        .iter()
        .map(|r| (r.scenario.clone(), r.run_step, r.training_task, r.eval_task))
        .collect();
    cells.sort();
    let mut expected = Vec::new();
    for scenario in ["class_il", "task_il"] {
        for (run_step, training_task) in [(50, 2), (100, 4)] {
            for eval_task in 0..5 {
                expected.push((scenario.to_owned(), run_step, training_task, eval_task));
            }
        }
    }
    assert_eq!(cells, expected);
    for r in &rows {
        assert_eq!((r.run.as_str(), r.method.as_str()), ("online", "naive"));
        assert_eq!(r.samples, 100);
        assert_eq!(r.accuracy, r.correct as f64 / 100.0);
    }

    let metrics = retain_results::read_metrics(&run.join("metrics.parquet")).unwrap();
    assert_eq!(metrics.len(), 2);
    for m in &metrics {
        // The mean over the two points of the mean accuracy on tasks 0..=2 and 0..=4.
        let seen = |run_step: u64, tasks: u32| {
            let a: Vec<f64> = rows
                .iter()
                .filter(|r| r.scenario == m.scenario && r.run_step == run_step)
                .filter(|r| r.eval_task < tasks)
                .map(|r| r.accuracy)
                .collect();
            a.iter().sum::<f64>() / a.len() as f64
        };
        let aaa = (seen(50, 3) + seen(100, 5)) / 2.0;
        let got = m.anytime_accuracy.unwrap();
        assert!((got - aaa).abs() < 1e-12, "{} {got} {aaa}", m.scenario);
        assert_eq!(m.lca_beta, Some(10));
        assert!(m.lca.is_some_and(|l| (0.0..=1.0).contains(&l)));
    }
}

/// The online keys are refused, naming the key, before any data loads (the data root does
/// not exist).
#[test]
fn online_refusals_name_the_key_before_data_loads() {
    let out_dir = tempfile::tempdir().unwrap();
    let run = |sets: &[&str]| {
        let mut args = vec![
            "run",
            "experiments/split-mnist.toml",
            "--device",
            "cpu",
            "--output",
            out_dir.path().to_str().unwrap(),
            "--data-root",
            "/nonexistent/retain-data",
            "--quiet",
        ];
        for set in sets {
            args.extend(["--set", set]);
        }
        let out = retain(&args);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["training.online=true"]);
    assert!(err.contains("training.eval_every"), "{err}");
    let err = run(&[
        "training.online=true",
        "training.eval_every=50",
        "training.epochs=2",
    ]);
    assert!(err.contains("training.epochs"), "{err}");
    assert!(err.contains("exactly once"), "{err}");
    let err = run(&["training.eval_every=50"]);
    assert!(err.contains("training.eval_every"), "{err}");
    assert!(
        err.contains("invalid value for `training.eval_every`"),
        "{err}"
    );
}
