use std::path::Path;
use std::process::{Command, Output};

use polars::prelude::*;

use crate::common::{
    accuracy_cells, assert_success, data_root, dependency_present, read_parquet,
    reduced_split_mnist_run, repo, retain, venv_has,
};

/// A reduced Split-MNIST: 3 tasks, 500 training and 300 test samples per task, on the CPU.
fn reduced_run(output: &Path, run_name: &str, extra: &[&str]) -> Output {
    let output = output.to_str().unwrap();
    let data = data_root();
    let mut args = vec![
        "run",
        "experiments/split-mnist.toml",
        "--device",
        "cpu",
        "--output",
        output,
        "--data-root",
        data.to_str().unwrap(),
        "--run-name",
        run_name,
        "--quiet",
        "--set",
        "stream.tasks=3",
        "--set",
        "stream.train_samples_per_task=500",
        "--set",
        "stream.test_samples_per_task=300",
        "--set",
        "training.optimizer.lr=0.05",
    ];
    args.extend_from_slice(extra);
    retain(&args)
}

/// `matrix[trained][task]` of one scenario, read from the long table.
fn matrix(frame: &DataFrame, scenario: &str) -> Vec<Vec<f64>> {
    let scenarios = frame.column("scenario").unwrap().str().unwrap().clone();
    let trained = frame
        .column("trained_tasks")
        .unwrap()
        .u32()
        .unwrap()
        .clone();
    let task = frame.column("eval_task").unwrap().u32().unwrap().clone();
    let accuracy = frame.column("accuracy").unwrap().f64().unwrap().clone();
    let mut m = vec![vec![f64::NAN; 3]; 4];
    for i in 0..frame.height() {
        if scenarios.get(i) == Some(scenario) {
            m[trained.get(i).unwrap() as usize][task.get(i).unwrap() as usize] =
                accuracy.get(i).unwrap();
        }
    }
    assert!(
        m.iter().flatten().all(|v| v.is_finite()),
        "missing cells: {m:?}"
    );
    m
}

#[test]
fn reduced_split_mnist_learns_forgets_and_is_reproducible() {
    let out_dir = tempfile::tempdir().unwrap();
    let first = reduced_run(out_dir.path(), "a", &[]);
    assert_success(&first);
    let run_dir = out_dir.path().join("split-mnist/a");

    // The long-form schema, exactly.
    let accuracy = read_parquet(&run_dir.join("accuracy.parquet"));
    let schema: Vec<(String, DataType)> = accuracy
        .schema()
        .iter()
        .map(|(name, dtype)| (name.to_string(), dtype.clone()))
        .collect();
    assert_eq!(
        schema,
        vec![
            ("run".into(), DataType::String),
            ("method".into(), DataType::String),
            ("seed".into(), DataType::UInt64),
            ("scenario".into(), DataType::String),
            ("trained_tasks".into(), DataType::UInt32),
            ("eval_task".into(), DataType::UInt32),
            ("correct".into(), DataType::UInt64),
            ("samples".into(), DataType::UInt64),
            ("accuracy".into(), DataType::Float64),
        ]
    );
    // 2 read-outs × 4 rows (untrained + 3 tasks) × 3 evaluated tasks.
    assert_eq!(accuracy.height(), 2 * 4 * 3);
    let samples = accuracy.column("samples").unwrap().u64().unwrap().clone();
    assert!(samples.into_iter().all(|s| s == Some(300)));

    let class_il = matrix(&accuracy, "class_il");
    let task_il = matrix(&accuracy, "task_il");
    for t in 1..=3 {
        // The task just trained is learned: far above chance (0.1 class-IL, 0.5 task-IL).
        assert!(
            class_il[t][t - 1] > 0.85,
            "R[{t},{t}] = {} in {class_il:?}",
            class_il[t][t - 1]
        );
        assert!(task_il[t][t - 1] > 0.9, "{task_il:?}");
    }
    // Naive fine-tuning forgets in class-IL read-out: clearly negative BWT.
    let bwt = (0..2)
        .map(|j| class_il[3][j] - class_il[j + 1][j])
        .sum::<f64>()
        / 2.0;
    assert!(bwt < -0.5, "class-IL BWT {bwt} in {class_il:?}");
    // Knowing the task recovers much of it: task-IL beats class-IL on every old task.
    for j in 0..2 {
        assert!(
            task_il[3][j] > class_il[3][j] + 0.2,
            "task {j}: {task_il:?} vs {class_il:?}"
        );
    }

    // The metrics table agrees with the matrix.
    let metrics = read_parquet(&run_dir.join("metrics.parquet"));
    let scenario = metrics.column("scenario").unwrap().str().unwrap().clone();
    let row = (0..metrics.height())
        .find(|&i| scenario.get(i) == Some("class_il"))
        .unwrap();
    let stored_bwt = metrics
        .column("bwt")
        .unwrap()
        .f64()
        .unwrap()
        .get(row)
        .unwrap();
    assert!((stored_bwt - bwt).abs() < 1e-12);

    // Provenance and plots.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["status"], "complete");
    assert_eq!(manifest["device"], "cpu");
    assert_eq!(manifest["timings"]["steps"], 150);
    let config = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    assert!(config.contains("tasks = 3"), "{config}");
    for readout in ["class_il", "task_il"] {
        let png = std::fs::metadata(run_dir.join(format!("heatmap-{readout}.png"))).unwrap();
        assert!(png.len() > 5_000, "heat-map suspiciously small");
    }

    // Same seed, same device: the identical matrix, count for count.
    let second = reduced_run(out_dir.path(), "b", &[]);
    assert_success(&second);
    let again = read_parquet(&out_dir.path().join("split-mnist/b/accuracy.parquet"));
    for column in [
        "scenario",
        "trained_tasks",
        "eval_task",
        "correct",
        "samples",
        "accuracy",
    ] {
        assert!(
            accuracy
                .column(column)
                .unwrap()
                .equals(again.column(column).unwrap()),
            "column {column} differs between two runs with the same seed"
        );
    }
    // A different seed gives a different run.
    let third = reduced_run(out_dir.path(), "c", &["--seed", "1"]);
    assert_success(&third);
    let other = read_parquet(&out_dir.path().join("split-mnist/c/accuracy.parquet"));
    assert!(
        !accuracy
            .column("correct")
            .unwrap()
            .equals(other.column("correct").unwrap())
    );
}

#[test]
fn parquet_is_readable_by_pyarrow() {
    let python = repo().join(".venv/bin/python");
    if !dependency_present(
        "RETAIN_REQUIRE_PYARROW",
        venv_has("pyarrow"),
        "the project's .venv has no pyarrow (./setup.sh installs it)",
    ) {
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    assert_success(&reduced_run(
        out_dir.path(),
        "py",
        &["--set", "stream.tasks=2"],
    ));
    let script = r#"
import sys, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
print(",".join(f"{f.name}:{f.type}" for f in t.schema))
print(t.num_rows)
"#;
    let path = out_dir.path().join("split-mnist/py/accuracy.parquet");
    let out = Command::new(&python)
        .args(["-c", script, path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "run:string_view,method:string_view,seed:uint64,scenario:string_view,trained_tasks:uint32,\
         eval_task:uint32,correct:uint64,samples:uint64,accuracy:double"
    );
    assert_eq!(lines.next().unwrap(), "12");
}

#[test]
fn config_errors_exit_2_and_name_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("experiments/split-mnist.toml")).unwrap();
    let bad = text.replace("epochs = 1\n", "epochs = 1\nbatch_sise = 5\n");
    let line = 1 + bad
        .lines()
        .position(|l| l.starts_with("batch_sise"))
        .unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let out = retain(&["run", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("batch_sise"), "{stderr}");
    assert!(stderr.contains(&format!("bad.toml:{line}")), "{stderr}");

    let unknown = text.replace("name = \"naive\"", "name = \"naiive\"");
    std::fs::write(&path, unknown).unwrap();
    let out = retain(&["run", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown method `naiive` (known: naive"));

    // A read-out the method cannot provide is refused before any data loads.
    let out = retain(&[
        "run",
        "experiments/split-mnist.toml",
        "--set",
        r#"stream.readouts=["class_il", "merged"]"#,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "stream.readouts: read-out `merged` is not available with method `naive`: it needs a method with per-task weights that it can merge"
        ),
        "{stderr}"
    );

    let out = retain(&["run", "experiments/split-mnist.toml", "--device", "cuda:99"]);
    assert_eq!(out.status.code(), Some(2));
    let out = retain(&["run", "no/such/file.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/file.toml"));
}

#[test]
fn a_checkpoint_of_another_architecture_exits_2_listing_the_differences() {
    let dir = tempfile::tempdir().unwrap();
    let weights = repo().join("crates/retain-models/fixtures/mlp_reference.safetensors");
    let set = format!("model.checkpoint={}", weights.display());
    let out = reduced_run(dir.path(), "ckpt", &["--set", &set]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("model.checkpoint: checkpoint"), "{stderr}");
    assert!(
        stderr.contains("mlp_reference.safetensors does not match"),
        "{stderr}"
    );
    assert!(
        stderr.contains("shape of head.weight: expected [10, 100], file has [3, 4]"),
        "{stderr}"
    );
}

/// A model trained on the first task, saved with `--save-checkpoint`, is the frozen backbone
/// of a LoRA run on three tasks: the run starts from exactly those weights, and LoRA's
/// task-IL accuracy on finished tasks never drops.
#[test]
fn a_saved_model_starts_a_lora_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = reduced_run(
        dir.path(),
        "pretrain",
        &["--set", "stream.tasks=1", "--save-checkpoint"],
    );
    assert_success(&out);
    let run_dir = dir.path().join("split-mnist/pretrain");
    let weights = run_dir.join("model.safetensors");
    assert!(weights.exists());
    assert!(run_dir.join("method-state.safetensors").exists());

    let set = format!("model.checkpoint={}", weights.display());
    let out = reduced_run(
        dir.path(),
        "lora",
        &[
            "--set",
            &set,
            "--set",
            "method.name=lora",
            "--set",
            "method.rank=4",
            // Low-rank updates on a frozen MLP with PyTorch's initialisation take larger steps.
            "--set",
            "training.optimizer.lr=0.2",
            "--set",
            r#"stream.readouts=["class_il", "task_il", "task_inferred", "task_inference", "merged"]"#,
        ],
    );
    assert_success(&out);
    let lora_dir = dir.path().join("split-mnist/lora");
    let frame = read_parquet(&lora_dir.join("accuracy.parquet"));
    let task_il = matrix(&frame, "task_il");
    let class_il = matrix(&frame, "class_il");
    // The opt-in read-outs are written like the others: a matrix, metrics and a heat-map.
    let inferred = matrix(&frame, "task_inferred");
    for row in 1..=3 {
        for task in 0..3 {
            assert!(inferred[row][task] <= task_il[row][task], "{inferred:?}");
        }
    }
    let inference = matrix(&frame, "task_inference");
    assert_eq!(inference[1][0], 1.0, "one trained task is always inferred");
    assert_eq!(matrix(&frame, "merged").len(), 4);
    let metrics = read_parquet(&lora_dir.join("metrics.parquet"));
    assert_eq!(metrics.height(), 5);
    for readout in ["task_inferred", "task_inference", "merged"] {
        assert!(lora_dir.join(format!("heatmap-{readout}.png")).exists());
    }
    // Row 0 (before training) is the pretrained model: its accuracy on task 1 as it ended.
    let pretrained = read_parquet(&run_dir.join("accuracy.parquet"));
    let (scenarios, trained, accuracy) = (
        pretrained
            .column("scenario")
            .unwrap()
            .str()
            .unwrap()
            .clone(),
        pretrained
            .column("trained_tasks")
            .unwrap()
            .u32()
            .unwrap()
            .clone(),
        pretrained
            .column("accuracy")
            .unwrap()
            .f64()
            .unwrap()
            .clone(),
    );
    let after_task_1 = (0..pretrained.height())
        .find(|&i| scenarios.get(i) == Some("class_il") && trained.get(i) == Some(1))
        .map(|i| accuracy.get(i).unwrap())
        .unwrap();
    assert_eq!(class_il[0][0], after_task_1);
    for task in 0..3 {
        for row in task + 2..=3 {
            assert_eq!(task_il[row][task], task_il[task + 1][task], "{task_il:?}");
        }
        assert!(task_il[task + 1][task] > 0.9, "{task_il:?}");
    }
    // The manifest counts only what LoRA trains: rank-4 adapters on 784-100-100 and the head.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lora_dir.join("manifest.json")).unwrap())
            .unwrap();
    let adapters = 4 * (784 + 100) + 4 * (100 + 100);
    assert_eq!(
        manifest["trainable_parameters"].as_u64(),
        Some((adapters + 100 * 10 + 10) as u64),
        "{manifest}"
    );
}

#[test]
fn missing_dataset_prints_the_fetch_command() {
    let empty = tempfile::tempdir().unwrap();
    let root = empty.path().to_str().unwrap();
    let out = retain(&[
        "run",
        "experiments/split-mnist.toml",
        "--device",
        "cpu",
        "--data-root",
        root,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("retain data fetch mnist --root {root}")),
        "{stderr}"
    );
}

#[test]
fn a_diverging_run_is_recorded_as_failed_and_keeps_earlier_results() {
    let out_dir = tempfile::tempdir().unwrap();
    assert_success(&reduced_run(
        out_dir.path(),
        "good",
        &["--set", "stream.tasks=2"],
    ));
    let good = out_dir.path().join("split-mnist/good/accuracy.parquet");
    let before = std::fs::read(&good).unwrap();

    let out = reduced_run(
        out_dir.path(),
        "bad",
        &["--set", "training.optimizer.lr=1e30"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("diverged"), "{stderr}");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.path().join("split-mnist/bad/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["status"], "failed");
    assert!(manifest["error"].as_str().unwrap().contains("diverged"));
    assert!(
        !out_dir
            .path()
            .join("split-mnist/bad/accuracy.parquet")
            .exists()
    );
    assert_eq!(
        std::fs::read(&good).unwrap(),
        before,
        "earlier results changed"
    );
}

#[test]
fn an_exploding_finite_loss_is_recorded_as_failed_and_keeps_earlier_results() {
    let out_dir = tempfile::tempdir().unwrap();
    assert_success(&reduced_run(
        out_dir.path(),
        "good",
        &["--set", "stream.tasks=2"],
    ));
    let good = out_dir.path().join("split-mnist/good/accuracy.parquet");
    let before = std::fs::read(&good).unwrap();

    // Adam at lr 1e6 reaches finite mean losses around 1e23, which no NaN check catches.
    let out = reduced_run(
        out_dir.path(),
        "bad",
        &[
            "--set",
            "stream.tasks=2",
            "--set",
            "training.optimizer={ kind = \"adam\", lr = 1e6 }",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = "times the first step's loss";
    assert!(stderr.contains("training diverged"), "{stderr}");
    assert!(stderr.contains(reason), "{stderr}");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.path().join("split-mnist/bad/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["status"], "failed");
    let error = manifest["error"].as_str().unwrap();
    assert!(error.contains("training diverged"), "{error}");
    assert!(
        error.contains("above training.divergence_factor = 1000000 times"),
        "{error}"
    );
    assert!(
        !out_dir
            .path()
            .join("split-mnist/bad/accuracy.parquet")
            .exists()
    );
    assert_eq!(
        std::fs::read(&good).unwrap(),
        before,
        "earlier results changed"
    );
}

/// The names of the files in `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// `manifest.json` of `dir`.
fn manifest_of(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn a_failed_rerun_into_a_finished_runs_folder_leaves_none_of_its_results() {
    let out_dir = tempfile::tempdir().unwrap();
    let run = out_dir.path().join("split-mnist/again");
    assert_success(&reduced_run(
        out_dir.path(),
        "again",
        &["--set", "stream.tasks=2", "--save-checkpoint"],
    ));
    assert!(run.join("accuracy.parquet").exists());
    assert!(run.join("model.safetensors").exists());
    std::fs::write(run.join("notes.txt"), "mine").unwrap();

    let out = reduced_run(
        out_dir.path(),
        "again",
        &["--set", "training.optimizer.lr=1e30"],
    );
    assert_eq!(out.status.code(), Some(1));
    let manifest = manifest_of(&run);
    assert_eq!(manifest["status"], "failed");
    assert!(
        manifest["error"].as_str().unwrap().contains("diverged"),
        "{manifest}"
    );
    // Only the failed manifest, this run's live logs, and the file that is not a result.
    let names = file_names(&run);
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(names[0], "events.jsonl");
    assert!(names[1].starts_with("events.out.tfevents."), "{names:?}");
    assert_eq!(names[2..], ["manifest.json", "notes.txt"]);
    // The log is this run's alone: the untrained evaluation, then the loss that diverged.
    let log = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    let kinds: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].to_string())
        .collect();
    assert_eq!(kinds, ["\"evaluation\"", "\"loss\""], "{log}");
}

#[test]
fn a_result_file_that_cannot_be_written_fails_the_run_in_its_manifest() {
    let out_dir = tempfile::tempdir().unwrap();
    let run = out_dir.path().join("split-mnist/blocked");
    // A folder where metrics.parquet goes: the rename into place fails.
    std::fs::create_dir_all(run.join("metrics.parquet")).unwrap();
    std::fs::write(run.join("metrics.parquet/keep"), "").unwrap();

    let out = reduced_run(out_dir.path(), "blocked", &["--set", "stream.tasks=2"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("writing its results failed"), "{stderr}");
    assert!(stderr.contains("metrics.parquet"), "{stderr}");
    let manifest = manifest_of(&run);
    assert_eq!(manifest["status"], "failed");
    let error = manifest["error"].as_str().unwrap();
    assert!(error.starts_with("writing the results failed"), "{error}");
    assert!(error.contains("metrics.parquet"), "{error}");
    // The files written before the failure are gone: the failed manifest stands alone, with
    // the live logs of the training that went well and the resume checkpoint after its last
    // task (`--resume` writes the results again without training).
    let names = file_names(&run);
    assert_eq!(names.len(), 5, "{names:?}");
    assert_eq!(names[0], "events.jsonl");
    assert!(names[1].starts_with("events.out.tfevents."), "{names:?}");
    assert_eq!(names[2..], ["manifest.json", "metrics.parquet", "resume"]);
}

#[test]
fn doctor_reports_libtorch() {
    let out = retain(&["doctor"]);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let version = stdout
        .lines()
        .find(|l| l.starts_with("libtorch version"))
        .unwrap();
    assert!(
        version.trim_end().ends_with("2.11.0") || version.contains("2.11.0+"),
        "{stdout}"
    );
    assert!(stdout.contains("CUDA available"), "{stdout}");
}

/// `matrix[trained][task]` of a run with `tasks` tasks.
fn matrix_of(frame: &DataFrame, scenario: &str, tasks: usize) -> Vec<Vec<f64>> {
    let column = |name: &str| frame.column(name).unwrap().clone();
    let scenarios = column("scenario");
    let trained = column("trained_tasks");
    let task = column("eval_task");
    let accuracy = column("accuracy");
    let (scenarios, trained, task, accuracy) = (
        scenarios.str().unwrap(),
        trained.u32().unwrap(),
        task.u32().unwrap(),
        accuracy.f64().unwrap(),
    );
    let mut m = vec![vec![f64::NAN; tasks]; tasks + 1];
    for i in 0..frame.height() {
        assert_eq!(scenarios.get(i), Some(scenario), "unexpected read-out");
        m[trained.get(i).unwrap() as usize][task.get(i).unwrap() as usize] =
            accuracy.get(i).unwrap();
    }
    assert!(m.iter().flatten().all(|v| v.is_finite()), "{m:?}");
    m
}

/// A reduced Permuted-MNIST on real MNIST (3 of GEM's tasks of 1000 samples): each task is learned in
/// the domain-IL read-out, and the permutations make the tasks really different.
#[test]
fn reduced_permuted_mnist_learns_each_task_in_domain_il() {
    let out_dir = tempfile::tempdir().unwrap();
    let data = data_root();
    let out = retain(&[
        "run",
        "experiments/perm-mnist.toml",
        "--device",
        "cpu",
        "--output",
        out_dir.path().to_str().unwrap(),
        "--data-root",
        data.to_str().unwrap(),
        "--quiet",
        "--set",
        "stream.tasks=3",
        "--set",
        "stream.train_samples_per_task=1000",
        "--set",
        "stream.test_samples_per_task=500",
    ]);
    assert_success(&out);
    let run_dir = out_dir.path().join("perm-mnist/naive-seed0");
    let accuracy = read_parquet(&run_dir.join("accuracy.parquet"));
    assert_eq!(accuracy.height(), 4 * 3);
    let m = matrix_of(&accuracy, "domain_il", 3);
    for t in 1..=3 {
        // The task just trained: far above chance (0.1) after 100 steps (≈ 0.76 measured),
        // and far above the same task before its training.
        assert!(m[t][t - 1] > 0.7, "R[{t},{t}] in {m:?}");
        assert!(m[t][t - 1] > m[t - 1][t - 1] + 0.4, "R[{t},{t}] in {m:?}");
        // A task not yet trained, under a permutation never seen: near chance.
        if t < 3 {
            assert!(m[t][2] < 0.35, "task 3 after {t} tasks in {m:?}");
        }
    }
    for j in 0..3 {
        assert!(m[0][j] < 0.3, "untrained model in {m:?}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["timings"]["steps"], 300);
    assert!(run_dir.join("heatmap-domain_il.png").exists());
}

/// Split-CIFAR-10 without the data stops before training, naming the dataset, and — once
/// retain-data knows CIFAR-10 — the command that fetches it.
#[test]
fn split_cifar_without_data_stops_before_training() {
    let empty = tempfile::tempdir().unwrap();
    let root = empty.path().join("datasets");
    let output = empty.path().join("results");
    let out = retain(&[
        "run",
        "experiments/split-cifar.toml",
        "--device",
        "cpu",
        "--data-root",
        root.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"cifar10\""), "{stderr}");
    assert!(!output.exists(), "a run folder was created: {stderr}");
    if retain_data::DATASETS.iter().any(|d| d.name == "cifar10") {
        let command = format!("retain data fetch cifar10 --root {}", root.display());
        assert!(stderr.contains(&command), "{stderr}");
    }
}

/// Every read-out a run can write is a scenario the results files accept (they check it when
/// writing and reading): adding a read-out without teaching `retain-results` fails here.
#[test]
fn every_readout_is_a_results_scenario() {
    let names = retain_config::Readout::ALL.map(|r| r.as_str());
    assert_eq!(names, retain_results::SCENARIOS);
}

#[test]
fn split_mnist_labelled_within_tasks_is_read_out_domain_incrementally() {
    // The shipped file lists class_il and task_il: with within-task labels they no longer
    // apply, and the run is refused before any data loads, naming both keys.
    let out = retain(&[
        "run",
        "experiments/split-mnist.toml",
        "--set",
        r#"stream.labels="within_task""#,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`stream.readouts`: `class_il` does not apply")
            && stderr.contains("`stream.labels = \"within_task\"`"),
        "{stderr}"
    );

    let out_dir = tempfile::tempdir().unwrap();
    let run = reduced_split_mnist_run(
        out_dir.path(),
        "domain",
        &[r#"stream.labels="within_task""#, "stream.readouts=[]"],
    );
    let cells = accuracy_cells(&run);
    // One read-out, domain-IL: 6 rows (untrained + 5 tasks) × 5 evaluated tasks of 100.
    assert_eq!(cells.len(), 6 * 5);
    assert!(
        cells
            .iter()
            .all(|(scenario, _, _, _, samples, _)| scenario == "domain_il" && *samples == 100),
        "{cells:?}"
    );
    let accuracy = |trained: u32, task: u32| {
        let (_, _, _, correct, samples, bits) = cells
            .iter()
            .find(|c| c.1 == trained && c.2 == task)
            .unwrap();
        let value = f64::from_bits(*bits);
        assert_eq!(value, *correct as f64 / *samples as f64);
        value
    };
    // Two outputs: an untrained network is near chance (0.5), not near 0.1.
    for task in 0..5 {
        let untrained = accuracy(0, task);
        assert!((0.2..0.8).contains(&untrained), "R[0,{task}] = {untrained}");
    }
    // Naive fine-tuning learns each task in the shared label space (well above chance)
    // without being perfect, and the final network still answers on the last task.
    for task in 0..5 {
        let just_trained = accuracy(task + 1, task);
        assert!(
            just_trained > 0.7 && just_trained < 1.0,
            "R[{},{task}] = {just_trained} in {cells:?}",
            task + 1
        );
    }
    let last = accuracy(5, 4);
    assert!(last > 0.7 && last < 1.0, "final last-task accuracy {last}");
    let mean: f64 = (0..5).map(|task| accuracy(5, task)).sum::<f64>() / 5.0;
    assert!(
        mean > 0.5 && mean < 1.0,
        "final mean domain-IL accuracy {mean}"
    );

    // The head has two outputs: the resolved file names the label space and read-out.
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("labels = \"within_task\""), "{config}");
    assert!(config.contains("readouts = [\"domain_il\"]"), "{config}");
}
