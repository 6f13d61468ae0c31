//! `retain plan`: the schedule it prints is the one the run then takes, it works before the
//! data is fetched, and it refuses a bad configuration with exit status 2.

use crate::common::{assert_success, data_root, retain};

/// `(training samples, steps, eval samples)` of each task row of a plan's table.
fn task_rows(stdout: &str) -> Vec<(usize, usize, usize)> {
    stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("task "))
        .skip(2)
        .take_while(|l| !l.trim_start().starts_with("all"))
        .map(|line| {
            let fields: Vec<usize> = line
                .split_whitespace()
                .rev()
                .take(3)
                .map(|f| f.parse().unwrap_or_else(|_| panic!("{line:?}")))
                .collect();
            (fields[2], fields[1], fields[0])
        })
        .collect()
}

/// Joint training (each task trains on every task so far) over a reduced Split-MNIST with
/// batch 32 and 2 epochs: the plan's steps per task are exactly the run's, partial batches
/// kept, and the estimate is printed.
#[test]
fn plan_prints_the_steps_the_run_takes() {
    let data = data_root();
    let out = tempfile::tempdir().unwrap();
    let common = [
        "--device",
        "cpu",
        "--data-root",
        data.to_str().unwrap(),
        "--output",
        out.path().to_str().unwrap(),
        "--set",
        "stream.tasks=3",
        "--set",
        "stream.train_samples_per_task=250",
        "--set",
        "stream.test_samples_per_task=120",
        "--set",
        "training.batch_size=32",
        "--set",
        "training.epochs=2",
        "--set",
        "method.name=\"joint-cumulative\"",
    ];
    let mut plan_args = vec!["plan", "experiments/split-mnist.toml"];
    plan_args.extend_from_slice(&common);
    let plan = retain(&plan_args);
    assert_success(&plan);
    let stdout = String::from_utf8_lossy(&plan.stdout);
    let rows = task_rows(&stdout);
    // 250, 500, 750 samples: ⌈n/32⌉ × 2 epochs = 16, 32, 48 steps.
    assert_eq!(
        rows,
        vec![(250, 16, 120), (500, 32, 120), (750, 48, 120)],
        "{stdout}"
    );
    assert!(
        stdout.contains("data      mnist: present and verified"),
        "{stdout}"
    );
    assert!(stdout.contains("ms per step"), "{stdout}");
    assert!(stdout.contains("4 evaluations (untrained, then after each task), 360 samples each"));
    // The plan wrote nothing.
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);

    let mut run_args = vec![
        "run",
        "experiments/split-mnist.toml",
        "--quiet",
        "--run-name",
        "r",
    ];
    run_args.extend_from_slice(&common);
    assert_success(&retain(&run_args));
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("split-mnist/r/manifest.json")).unwrap(),
    )
    .unwrap();
    let per_task = manifest["timings"]["per_task"].as_array().unwrap();
    let ran: Vec<(usize, usize)> = per_task
        .iter()
        .map(|t| {
            (
                t["samples"].as_u64().unwrap() as usize,
                t["steps"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    let planned: Vec<(usize, usize)> = rows.iter().map(|&(n, s, _)| (n, s)).collect();
    assert_eq!(ran, planned);
}

/// Split-CIFAR-10 with no data here: the plan comes from the published class counts (5 tasks
/// of 10 000 training samples, 5 × 50 × ⌈10 000 / 32⌉ = 78 250 steps) and still estimates.
#[test]
fn plan_of_split_cifar_without_its_data() {
    let empty = tempfile::tempdir().unwrap();
    let plan = retain(&[
        "plan",
        "experiments/split-cifar.toml",
        "--device",
        "cpu",
        "--data-root",
        empty.path().to_str().unwrap(),
        "--warmup-steps",
        "2",
    ]);
    assert_success(&plan);
    let stdout = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(
        task_rows(&stdout),
        vec![(10_000, 15_650, 2000); 5],
        "{stdout}"
    );
    let total = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("all"))
        .unwrap();
    assert_eq!(
        total.split_whitespace().collect::<Vec<_>>(),
        ["all", "50000", "78250"]
    );
    assert!(stdout.contains("6 of 6 file(s) missing"), "{stdout}");
    assert!(stdout.contains("retain data fetch cifar10"), "{stdout}");
    assert!(stdout.contains("in all"), "{stdout}");
    assert!(!empty.path().join("cifar10").exists());
}

#[test]
fn plan_refuses_a_bad_configuration_with_exit_2() {
    let bad = retain(&[
        "plan",
        "experiments/split-mnist.toml",
        "--set",
        "training.batch_size=0",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let unknown = retain(&[
        "plan",
        "experiments/split-mnist.toml",
        "--set",
        "method.name=\"nope\"",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown method `nope`"));
}
