//! Split streams with tasks of unequal class counts, end to end.

use crate::common::{accuracy_cells, assert_success, data_root, reduced_split_mnist_run, retain};

/// B5-Inc1 on MNIST: a first task of five digits, then one digit per task. The run trains
/// six tasks and evaluates every one of them after every task, in both read-outs.
#[test]
fn a_stream_with_a_large_first_task_runs_and_evaluates_every_task() {
    let out_dir = tempfile::tempdir().unwrap();
    let run = reduced_split_mnist_run(
        out_dir.path(),
        "b5-inc1",
        &[
            "stream.tasks=6",
            "stream.classes_per_task=[5, 1, 1, 1, 1, 1]",
        ],
    );
    let cells = accuracy_cells(&run);
    // Two read-outs × 7 rows (untrained + 6 tasks) × 6 evaluated tasks, each capped at 100
    // test samples (the first task has about 5000, the others about 1000).
    assert_eq!(cells.len(), 2 * 7 * 6, "{cells:?}");
    for scenario in ["class_il", "task_il"] {
        for trained in 0..=6 {
            let row: Vec<_> = cells
                .iter()
                .filter(|c| c.0 == scenario && c.1 == trained)
                .collect();
            let tasks: Vec<u32> = row.iter().map(|c| c.2).collect();
            assert_eq!(tasks, (0..6).collect::<Vec<u32>>(), "{scenario} {trained}");
            for (_, _, task, correct, samples, bits) in row {
                assert_eq!(*samples, 100, "{scenario} R[{trained},{task}]");
                assert_eq!(f64::from_bits(*bits), *correct as f64 / *samples as f64);
            }
        }
    }
    // A one-class task read out with its task given is always right; the five-class first
    // task is learned well above its chance of 1/5 right after training on it.
    let accuracy = |scenario: &str, trained: u32, task: u32| {
        let c = cells
            .iter()
            .find(|c| c.0 == scenario && c.1 == trained && c.2 == task)
            .unwrap();
        f64::from_bits(c.5)
    };
    for task in 1..6 {
        assert_eq!(accuracy("task_il", 6, task), 1.0, "task {task}");
    }
    assert!(accuracy("task_il", 1, 0) > 0.5, "{cells:?}");
    assert!(accuracy("class_il", 1, 0) > 0.5, "{cells:?}");
    // The resolved configuration keeps the list.
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("classes_per_task = ["), "{config}");
}

/// A list with another number of entries than `stream.tasks` is a configuration error
/// (exit status 2) naming both keys, before any data is looked for or anything written.
#[test]
fn a_class_count_list_of_the_wrong_length_is_refused_before_data_loads() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    let no_data = dir.path().join("no-data");
    let out = retain(&[
        "run",
        "experiments/split-mnist.toml",
        "--device",
        "cpu",
        "--output",
        output.to_str().unwrap(),
        "--data-root",
        no_data.to_str().unwrap(),
        "--quiet",
        "--set",
        "stream.classes_per_task=[5, 1, 1, 1, 1, 1]",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value for `stream.classes_per_task`"),
        "{stderr}"
    );
    assert!(stderr.contains("`stream.tasks` = 5"), "{stderr}");
    assert!(
        !stderr.contains("missing"),
        "no data was looked for: {stderr}"
    );
    assert!(!output.exists() && !no_data.exists());
}

/// `retain plan` shows each task's classes and sizes, and its warm-up (the first two tasks)
/// keeps the first two entries of the list.
#[test]
fn the_plan_lists_the_unequal_tasks_and_warms_up_on_the_first_two() {
    let data = data_root();
    let out_dir = tempfile::tempdir().unwrap();
    let plan = retain(&[
        "plan",
        "experiments/split-mnist.toml",
        "--device",
        "cpu",
        "--output",
        out_dir.path().to_str().unwrap(),
        "--data-root",
        data.to_str().unwrap(),
        "--warmup-steps",
        "1",
        "--set",
        "stream.tasks=3",
        "--set",
        "stream.classes_per_task=[5, 3, 2]",
        "--set",
        "stream.train_samples_per_task=200",
    ]);
    assert_success(&plan);
    let stdout = String::from_utf8_lossy(&plan.stdout);
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("task "))
        .skip(2)
        .take_while(|l| !l.trim_start().starts_with("all"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let classes: Vec<String> = rows.iter().map(|r| r[1..r.len() - 3].join(" ")).collect();
    assert_eq!(classes, ["0 1 2 3 4", "5 6 7", "8 9"], "{stdout}");
    assert!(rows.iter().all(|r| r[r.len() - 3] == "200"), "{stdout}");
    assert!(
        stdout.contains("3 tasks, 10 classes in the head"),
        "{stdout}"
    );
    assert!(stdout.contains("estimate from a warm-up"), "{stdout}");
}
