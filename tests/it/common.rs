//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use polars::prelude::*;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The datasets folder, which must hold MNIST (`just test` fetches it).
pub fn data_root() -> PathBuf {
    let root = repo().join("datasets");
    assert!(
        root.join("mnist/train-images-idx3-ubyte").exists(),
        "MNIST is missing: run `just test` (it fetches it) or `retain data fetch mnist`"
    );
    root
}

/// Runs the `retain` binary from the repository root.
pub fn retain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retain"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("the retain binary runs")
}

/// `retain run experiments/split-mnist.toml` on the CPU, reduced to 200 training and 100 test
/// samples per task, into `output` as run `name` with the `KEY=VALUE` overrides `sets`;
/// asserts that it succeeds and returns the run's folder.
pub fn reduced_split_mnist_run(output: &Path, name: &str, sets: &[&str]) -> PathBuf {
    let data = data_root();
    let mut args = vec![
        "run",
        "experiments/split-mnist.toml",
        "--device",
        "cpu",
        "--output",
        output.to_str().unwrap(),
        "--data-root",
        data.to_str().unwrap(),
        "--run-name",
        name,
        "--quiet",
    ];
    for set in sets.iter().chain(&[
        "stream.train_samples_per_task=200",
        "stream.test_samples_per_task=100",
    ]) {
        args.extend(["--set", set]);
    }
    assert_success(&retain(&args));
    output.join("split-mnist").join(name)
}

pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "retain failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn read_parquet(path: &Path) -> DataFrame {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetReader::new(file).finish().unwrap()
}

/// `(scenario, trained_tasks, eval_task, correct, samples, accuracy bits)` of a run folder's
/// accuracy matrix, sorted: equal only when bit-for-bit equal.
pub fn accuracy_cells(dir: &Path) -> Vec<(String, u32, u32, u64, u64, u64)> {
    let frame = read_parquet(&dir.join("accuracy.parquet"));
    let col = |name: &str| frame.column(name).unwrap().clone();
    let (scenario, trained, task, correct, samples, accuracy) = (
        col("scenario"),
        col("trained_tasks"),
        col("eval_task"),
        col("correct"),
        col("samples"),
        col("accuracy"),
    );
    let mut rows: Vec<_> = (0..frame.height())
        .map(|i| {
            (
                scenario.str().unwrap().get(i).unwrap().to_owned(),
                trained.u32().unwrap().get(i).unwrap(),
                task.u32().unwrap().get(i).unwrap(),
                correct.u64().unwrap().get(i).unwrap(),
                samples.u64().unwrap().get(i).unwrap(),
                accuracy.f64().unwrap().get(i).unwrap().to_bits(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// The live log of a run folder: how many TensorBoard files (one per process that trained
/// into it) and the `(kind, task)` of every line of `events.jsonl`.
pub fn live_log(dir: &Path) -> (usize, Vec<(String, u64)>) {
    let tensorboard = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .count();
    let lines = std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let event: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                event["kind"].as_str().unwrap().to_owned(),
                event["task"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    (tensorboard, lines)
}

/// A path as a TOML string literal.
pub fn toml_str(path: &Path) -> String {
    format!("{:?}", path.to_str().unwrap())
}

/// Whether a test's optional dependency is here. When it is missing the test skips (this
/// returns `false` after saying why), unless the environment variable `var` is set (CI sets
/// `RETAIN_REQUIRE_<X>=1`): then a missing dependency fails the test, naming `var`.
pub fn dependency_present(var: &str, present: bool, missing: &str) -> bool {
    gate(std::env::var_os(var).is_some(), var, present, missing)
}

/// [`dependency_present`] with the variable's state given.
fn gate(required: bool, var: &str, present: bool, missing: &str) -> bool {
    if present {
        return true;
    }
    assert!(!required, "{var} is set, but {missing}");
    eprintln!("skipped: {missing} (set {var}=1 to make this a failure)");
    false
}

/// Whether the project's Python (`.venv/bin/python`, from ./setup.sh) imports `module`.
pub fn venv_has(module: &str) -> bool {
    Command::new(repo().join(".venv/bin/python"))
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_required_dependency_that_is_missing_fails_naming_its_variable() {
    assert!(gate(true, "RETAIN_REQUIRE_X", true, "x is missing"));
    assert!(gate(false, "RETAIN_REQUIRE_X", true, "x is missing"));
    assert!(!gate(false, "RETAIN_REQUIRE_X", false, "x is missing"));
    let panic = std::panic::catch_unwind(|| gate(true, "RETAIN_REQUIRE_X", false, "x is missing"))
        .expect_err("a required, missing dependency fails");
    let message = panic.downcast_ref::<String>().expect("a formatted message");
    assert_eq!(message, "RETAIN_REQUIRE_X is set, but x is missing");
}
