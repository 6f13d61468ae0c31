//! Split streams with blurry task boundaries, end to end.

use crate::common::{accuracy_cells, reduced_split_mnist_run, retain};

/// Split-MNIST with 10 % of every class's training samples in the other tasks, reduced:
/// the run trains five tasks and evaluates each on its own (unblurred) test set.
#[test]
fn a_blurry_split_mnist_run_trains_and_evaluates_every_task() {
    let out_dir = tempfile::tempdir().unwrap();
    let run = reduced_split_mnist_run(out_dir.path(), "blurry", &["stream.blurry=10"]);
    let resolved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(resolved.contains("blurry = 10"), "{resolved}");
    let cells = accuracy_cells(&run);
    // Two read-outs × 6 rows (untrained + 5 tasks) × 5 evaluated tasks of 100 samples.
    assert_eq!(cells.len(), 2 * 6 * 5, "{cells:?}");
    for (scenario, trained, task, correct, samples, bits) in &cells {
        assert_eq!(*samples, 100, "{scenario} R[{trained},{task}]");
        assert_eq!(f64::from_bits(*bits), *correct as f64 / *samples as f64);
    }
    // Each task's two digits are told apart above chance (1/2, task-IL) right after its 20
    // steps of training.
    for task in 0..5u32 {
        let c = cells
            .iter()
            .find(|c| c.0 == "task_il" && c.1 == task + 1 && c.2 == task)
            .unwrap();
        assert!(
            f64::from_bits(c.5) >= 0.6,
            "task-IL R[{},{task}] = {c:?}",
            task + 1
        );
    }
}

/// A blurry percentage outside [0, 100], or on a permuted stream, is refused naming the key
/// before any data is read (the data root here is empty).
#[test]
fn bad_blurry_settings_are_refused_before_data_loads() {
    let empty = tempfile::tempdir().unwrap();
    for (config, set) in [
        ("experiments/split-mnist.toml", "stream.blurry=150"),
        ("experiments/perm-mnist.toml", "stream.blurry=10"),
    ] {
        let out = retain(&[
            "run",
            config,
            "--device",
            "cpu",
            "--output",
            empty.path().to_str().unwrap(),
            "--data-root",
            empty.path().to_str().unwrap(),
            "--set",
            set,
        ]);
        assert!(!out.status.success(), "{set} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("stream.blurry"), "{set}: {stderr}");
    }
}
