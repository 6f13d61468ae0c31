//! `[pretrain]` stages end to end: trained once and cached, the stream starting from them,
//! `retain pretrain`, distillation from a teacher checkpoint, and the errors of bad stages.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{assert_success, data_root, read_parquet, retain, toml_str};

/// A Split-MNIST experiment of two tasks, classes (0, 1) then (2, 3), with 50 training and
/// 300 test samples per task, so that the stream alone barely learns; `pretrain` is appended
/// as the file's last tables.
fn experiment(dir: &Path, file: &str, model_hidden: &str, pretrain: &str) -> PathBuf {
    let text = format!(
        r#"
name = "pretrain-test"
seed = 0
device = "cpu"

[stream]
kind = "split"
dataset = "mnist"
tasks = 2
classes_per_task = 2
train_samples_per_task = 50
test_samples_per_task = 300

[model]
kind = "mlp"
hidden = {model_hidden}

[training]
epochs = 1
batch_size = 10

[training.optimizer]
kind = "sgd"
lr = 0.01

[method]
name = "naive"

{pretrain}
"#
    );
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

const STAGE: &str = r#"
[pretrain]
classes = [0, 1]
batch_size = 128

[pretrain.optimizer]
kind = "adam"
lr = 0.001
"#;

fn run(experiment: &Path, output: &Path, run_name: &str, extra: &[&str]) -> Output {
    let data = data_root();
    let mut args = vec![
        "run",
        experiment.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--data-root",
        data.to_str().unwrap(),
        "--run-name",
        run_name,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    retain(&args)
}

fn manifest(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap()).unwrap()
}

/// `R[trained][task]` of one read-out.
fn accuracy(run_dir: &Path, scenario: &str, trained: u32, task: u32) -> f64 {
    let frame = read_parquet(&run_dir.join("accuracy.parquet"));
    let scenarios = frame.column("scenario").unwrap().str().unwrap().clone();
    let rows = frame
        .column("trained_tasks")
        .unwrap()
        .u32()
        .unwrap()
        .clone();
    let tasks = frame.column("eval_task").unwrap().u32().unwrap().clone();
    let values = frame.column("accuracy").unwrap().f64().unwrap().clone();
    (0..frame.height())
        .find(|&i| {
            scenarios.get(i) == Some(scenario)
                && rows.get(i) == Some(trained)
                && tasks.get(i) == Some(task)
        })
        .and_then(|i| values.get(i))
        .unwrap_or_else(|| {
            panic!(
                "no {scenario} R[{trained}][{task}] in {}",
                run_dir.display()
            )
        })
}

#[test]
fn a_pretrain_stage_is_trained_once_and_the_stream_starts_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let with = experiment(dir.path(), "with.toml", "[100]", STAGE);
    let without = experiment(dir.path(), "without.toml", "[100]", "");

    assert_success(&run(&with, &out, "first", &[]));
    let first = out.join("pretrain-test/first");
    let m = manifest(&first);
    let stage = &m["pretrain"];
    assert_eq!(stage["reused"], false, "{m}");
    assert!(stage["accuracy"].as_f64().unwrap() > 0.95, "{stage}");
    let checkpoint = PathBuf::from(stage["checkpoint"].as_str().unwrap());
    let stage_dir = checkpoint.parent().unwrap().to_owned();
    assert!(checkpoint.exists());
    assert_eq!(
        stage_dir.parent().unwrap(),
        out.join("pretrain-test/stages")
    );
    assert!(
        stage_dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("pretrain-")
    );
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stage_dir.join("stage.json")).unwrap())
            .unwrap();
    assert_eq!(
        record["student_parameters"],
        784 * 100 + 100 + 100 * 10 + 10
    );
    assert_eq!(record["teacher_parameters"], serde_json::Value::Null);
    assert_eq!(record["key"]["stage"]["classes"], serde_json::json!([0, 1]));
    assert_eq!(record["key"]["seed"], 0);

    // The stream starts from the stage: before any task, task 1 (classes 0 and 1) is already
    // known; after 5 steps on it, better than from scratch.
    assert_success(&run(&without, &out, "scratch", &[]));
    let scratch = out.join("pretrain-test/scratch");
    for (scenario, trained) in [("class_il", 0), ("class_il", 1), ("task_il", 1)] {
        let pre = accuracy(&first, scenario, trained, 0);
        let raw = accuracy(&scratch, scenario, trained, 0);
        assert!(pre > 0.95, "{scenario} R[{trained}][1]: pretrained {pre}");
        assert!(
            pre > raw,
            "{scenario} R[{trained}][1]: {pre} vs scratch {raw}"
        );
    }
    assert!(accuracy(&scratch, "class_il", 0, 0) < 0.7);

    // A second run reuses the stage: same files, untouched, and the same results.
    let stamp = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let (model_time, record_time) = (stamp(&checkpoint), stamp(&stage_dir.join("stage.json")));
    let record_bytes = std::fs::read(stage_dir.join("stage.json")).unwrap();
    assert_success(&run(&with, &out, "second", &[]));
    let second = out.join("pretrain-test/second");
    let m2 = manifest(&second);
    assert_eq!(m2["pretrain"]["reused"], true, "{m2}");
    assert_eq!(m2["pretrain"]["checkpoint"], stage["checkpoint"]);
    assert_eq!(m2["pretrain"]["accuracy"], stage["accuracy"]);
    assert_eq!(stamp(&checkpoint), model_time);
    assert_eq!(stamp(&stage_dir.join("stage.json")), record_time);
    assert_eq!(
        std::fs::read(stage_dir.join("stage.json")).unwrap(),
        record_bytes
    );
    // The whole matrix is bit-identical whether the stage was trained in the run's own
    // process (first) or loaded from the cache (second): no draw of the run depends on what
    // the process did before it.
    for scenario in ["class_il", "task_il"] {
        for trained in 0..=2 {
            for task in 0..2 {
                assert_eq!(
                    accuracy(&first, scenario, trained, task).to_bits(),
                    accuracy(&second, scenario, trained, task).to_bits(),
                    "{scenario} R[{trained}][{task}]"
                );
            }
        }
    }

    // The same with a method that draws (replay samples its memory every step): trained
    // stage and cached stage give the same matrix.
    let fresh = dir.path().join("fresh");
    let replay = [
        "--set",
        "method.name=replay",
        "--set",
        "method.buffer_size=50",
    ];
    assert_success(&run(&with, &fresh, "trained", &replay));
    assert_success(&run(&with, &fresh, "cached", &replay));
    let (trained_dir, cached_dir) = (
        fresh.join("pretrain-test/trained"),
        fresh.join("pretrain-test/cached"),
    );
    assert_eq!(manifest(&trained_dir)["pretrain"]["reused"], false);
    assert_eq!(manifest(&cached_dir)["pretrain"]["reused"], true);
    for scenario in ["class_il", "task_il"] {
        for trained in 0..=2 {
            for task in 0..2 {
                assert_eq!(
                    accuracy(&trained_dir, scenario, trained, task).to_bits(),
                    accuracy(&cached_dir, scenario, trained, task).to_bits(),
                    "replay {scenario} R[{trained}][{task}]"
                );
            }
        }
    }

    // Anything that changes the weights changes the stage.
    assert_success(&run(&with, &out, "third", &["--set", "pretrain.epochs=2"]));
    let m3 = manifest(&out.join("pretrain-test/third"));
    assert_eq!(m3["pretrain"]["reused"], false);
    assert_ne!(m3["pretrain"]["hash"], stage["hash"]);
}

#[test]
fn retain_pretrain_writes_a_checkpoint_that_starts_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let with = experiment(dir.path(), "with.toml", "[64]", STAGE);
    let file = dir.path().join("weights/pretrained.safetensors");
    let data = data_root();
    let pretrain = retain(&[
        "pretrain",
        with.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--data-root",
        data.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_success(&pretrain);
    assert_eq!(
        String::from_utf8_lossy(&pretrain.stdout).trim(),
        file.display().to_string()
    );
    assert!(String::from_utf8_lossy(&pretrain.stderr).contains("pretrain: trained"));
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("weights/stage.json")).unwrap(),
    )
    .unwrap();
    assert!(record["accuracy"].as_f64().unwrap() > 0.95);

    // `[model] checkpoint` at the file: the same starting weights as the stage gives a run.
    let from_file = experiment(
        dir.path(),
        "from-file.toml",
        &format!("[64]\ncheckpoint = {}", toml_str(&file)),
        "",
    );
    assert_success(&run(&from_file, &out, "from-file", &[]));
    assert_success(&run(&with, &out, "staged", &[]));
    let staged = out.join("pretrain-test/staged");
    assert_eq!(manifest(&staged)["pretrain"]["reused"], true);
    for trained in 0..=2 {
        assert_eq!(
            accuracy(&out.join("pretrain-test/from-file"), "class_il", trained, 0),
            accuracy(&staged, "class_il", trained, 0)
        );
    }

    // Without a stage there is nothing to run.
    let none = experiment(dir.path(), "none.toml", "[64]", "");
    let err = retain(&["pretrain", none.to_str().unwrap()]);
    assert_eq!(err.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&err.stderr).contains("no `[pretrain]` table"));
}

#[test]
fn a_student_is_distilled_from_a_teacher_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let teacher_exp = experiment(dir.path(), "teacher.toml", "[200]", STAGE);
    let teacher = dir.path().join("teacher/model.safetensors");
    let data = data_root();
    assert_success(&retain(&[
        "pretrain",
        teacher_exp.to_str().unwrap(),
        "--out",
        teacher.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--data-root",
        data.to_str().unwrap(),
        "--quiet",
    ]));
    let distill = format!(
        "[pretrain]\nclasses = [0, 1]\nbatch_size = 128\ntemperature = 4.0\n\n\
         [pretrain.optimizer]\nkind = \"adam\"\nlr = 0.001\n\n\
         [pretrain.teacher]\nkind = \"mlp\"\nhidden = [200]\ncheckpoint = {}\n",
        toml_str(&teacher)
    );
    let student = experiment(dir.path(), "student.toml", "[16]", &distill);
    assert_success(&run(&student, &out, "student", &[]));
    let m = manifest(&out.join("pretrain-test/student"));
    let stage = &m["pretrain"];
    let (acc, teacher_acc) = (
        stage["accuracy"].as_f64().unwrap(),
        stage["teacher_accuracy"].as_f64().unwrap(),
    );
    assert!(teacher_acc > 0.95, "{stage}");
    assert!(acc > teacher_acc - 0.03, "{stage}");
    let checkpoint = PathBuf::from(stage["checkpoint"].as_str().unwrap());
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(checkpoint.with_file_name("stage.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["teacher_parameters"],
        784 * 200 + 200 + 200 * 10 + 10
    );
    assert_eq!(record["student_parameters"], 784 * 16 + 16 + 16 * 10 + 10);
    assert_eq!(record["key"]["stage"]["distillation"]["temperature"], 4.0);
}

#[test]
fn bad_stages_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let cases = [
        (
            "[pretrain]\n[pretrain.teacher]\nkind = \"mlp\"\nhidden = [8]\n",
            "pretrain.teacher.checkpoint",
        ),
        ("[pretrain]\nclasses = [0, 10]\n", "pretrain.classes"),
        ("[pretrain]\ndataset = \"cifar10\"\n", "pretrain.dataset"),
        (
            "[pretrain]\ntemperature = 0.0\n[pretrain.teacher]\nkind = \"mlp\"\nhidden = [8]\ncheckpoint = \"t.safetensors\"\n",
            "pretrain.temperature",
        ),
    ];
    for (i, (stage, key)) in cases.iter().enumerate() {
        let path = experiment(dir.path(), &format!("bad{i}.toml"), "[8]", stage);
        let output = run(&path, &out, "bad", &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
        assert!(stderr.contains(&format!("bad{i}.toml:")), "{stderr}");
    }
    // A teacher checkpoint that is not there is named before anything trains.
    let stage = format!(
        "[pretrain]\n[pretrain.teacher]\nkind = \"mlp\"\nhidden = [8]\ncheckpoint = {}\n",
        toml_str(&dir.path().join("missing.safetensors"))
    );
    let path = experiment(dir.path(), "missing.toml", "[8]", &stage);
    let output = run(&path, &out, "missing", &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("pretrain.teacher.checkpoint") && stderr.contains("missing.safetensors"),
        "{stderr}"
    );
}
