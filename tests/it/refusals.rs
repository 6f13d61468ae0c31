//! Bad inputs that `retain run` refuses with exit status 2 before any data loads or training
//! starts, naming the file and the full key.

use std::path::Path;
use std::process::Output;

use crate::common::{repo, retain};

/// `retain run` of the shipped Split-MNIST experiment into `output`, with `extra` arguments.
fn run_split_mnist(output: &Path, extra: &[&str]) -> Output {
    run_file(&repo().join("experiments/split-mnist.toml"), output, extra)
}

/// `retain run` of `experiment` on the CPU into `output`, with `extra` arguments.
fn run_file(experiment: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        experiment.to_str().unwrap(),
        "--device",
        "cpu",
        "--quiet",
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    retain(&args)
}

/// The run exited with status 2, its message names `file` and `key`, and nothing was written
/// under `output` (no run folder, no manifest).
fn assert_refused(out: &Output, output: &Path, file: &str, key: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(file), "the file is not named: {stderr}");
    assert!(stderr.contains(key), "`{key}` is not named: {stderr}");
    let written: Vec<_> = walk(output);
    assert!(written.is_empty(), "training started: {written:?}");
    stderr
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flat_map(|e| {
            let path = e.unwrap().path();
            let mut below = walk(&path);
            below.push(path);
            below
        })
        .collect()
}

/// The shipped Split-MNIST experiment with `from` replaced by `to`, written into `dir`.
fn edited_split_mnist(dir: &Path, replacements: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(repo().join("experiments/split-mnist.toml")).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "`{from}` is not in split-mnist.toml");
        text = text.replace(from, to);
    }
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn tasks_times_classes_per_task_overflow_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    let exp = edited_split_mnist(
        dir.path(),
        &[
            ("tasks = 5", "tasks = 4611686018427387904"),
            ("classes_per_task = 2", "classes_per_task = 4"),
        ],
    );
    let out = run_file(&exp, &output, &[]);
    let stderr = assert_refused(&out, &output, "exp.toml", "stream.tasks");
    assert!(stderr.contains("stream.classes_per_task"), "{stderr}");
}

#[test]
fn a_readout_listed_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_split_mnist(
        dir.path(),
        &["--set", r#"stream.readouts=["class_il", "class_il"]"#],
    );
    let stderr = assert_refused(&out, dir.path(), "split-mnist.toml", "stream.readouts");
    assert!(stderr.contains("`class_il` is listed twice"), "{stderr}");
}

/// Each of these well-typed but huge sizes is refused with its key, its value and the memory
/// (or steps) it would need, before anything is allocated.
#[test]
fn huge_sizes_are_refused_with_the_memory_they_need() {
    let dir = tempfile::tempdir().unwrap();
    for (sets, key, needs) in [
        (
            &["model.hidden=[1000000000000]"][..],
            "model.hidden",
            "more than this host's",
        ),
        (
            &["method.name=\"replay\"", "method.buffer_size=1000000000000"][..],
            "method.buffer_size",
            "more than this host's",
        ),
        (
            &["method.name=\"der\"", "method.buffer_size=1000000000000"][..],
            "method.buffer_size",
            "more than this host's",
        ),
        (
            &["method.name=\"lora\"", "method.rank=1000000000000"][..],
            "method.rank",
            "more than this host's",
        ),
        (
            &["method.name=\"adapter\"", "method.width=1000000000000"][..],
            "method.width",
            "more than this host's",
        ),
        (
            &["training.epochs=1000000000000"][..],
            "training.epochs",
            "more than the cap of 1000000000",
        ),
    ] {
        let mut args = Vec::new();
        for set in sets {
            args.extend(["--set", set]);
        }
        let out = run_split_mnist(dir.path(), &args);
        let stderr = assert_refused(&out, dir.path(), "split-mnist.toml", key);
        assert!(
            stderr.contains(&format!("`{key}` = ")) && stderr.contains("1000000000000"),
            "{stderr}"
        );
        assert!(stderr.contains(needs), "{stderr}");
    }
}

#[test]
fn a_run_name_that_leaves_the_output_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("a/b");
    let out = run_split_mnist(&output, &["--run-name", "../../x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--run-name `../../x`"), "{stderr}");
    // Nothing anywhere around the output folder: no run folder, no manifest.
    assert_eq!(walk(dir.path()), Vec::<std::path::PathBuf>::new());
}

/// Seeds above `i64::MAX` (valid u64s, which TOML integers cannot hold) are accepted on the
/// command line, recorded exactly, and the run folder's resolved config reads back.
#[test]
fn a_seed_above_the_largest_toml_integer_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_split_mnist(
        dir.path(),
        &[
            "--seed",
            "18446744073709551615",
            "--run-name",
            "big-seed",
            "--set",
            "stream.tasks=2",
            "--set",
            "stream.train_samples_per_task=50",
            "--set",
            "stream.test_samples_per_task=50",
        ],
    );
    crate::common::assert_success(&out);
    let run = dir.path().join("split-mnist/big-seed");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
    let text = manifest.to_string();
    assert!(text.contains("18446744073709551615"), "{text}");
    let resolved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        resolved.contains("seed = \"18446744073709551615\""),
        "{resolved}"
    );
}

#[test]
fn an_angle_range_of_three_numbers_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_file(
        &repo().join("experiments/rot-mnist.toml"),
        dir.path(),
        &["--set", "stream.angle_range=[0, 90, 180]"],
    );
    let stderr = assert_refused(&out, dir.path(), "rot-mnist.toml", "stream.angle_range");
    assert!(stderr.contains("exactly two numbers"), "{stderr}");
}

/// `retain run … | head -1`: the reader closes the pipe before the run prints its tables;
/// the run still completes (exit 0, manifest `complete`) and nothing panics.
#[test]
fn a_closed_stdout_and_stderr_never_abort_a_run() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_retain"))
        .args([
            "run",
            "experiments/split-mnist.toml",
            "--device",
            "cpu",
            "--output",
            dir.path().to_str().unwrap(),
            "--run-name",
            "piped",
            "--set",
            "stream.tasks=2",
            "--set",
            "stream.train_samples_per_task=50",
            "--set",
            "stream.test_samples_per_task=50",
        ])
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close both read ends at once: every write the run makes meets a closed pipe.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
    let manifest = std::fs::read_to_string(dir.path().join("split-mnist/piped/manifest.json"))
        .expect("the run finished and wrote its manifest");
    assert!(manifest.contains("\"complete\""), "{manifest}");
}

#[test]
fn a_type_error_names_the_full_key_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    let exp = edited_split_mnist(dir.path(), &[("epochs = 1", "epochs = \"five\"")]);
    let line = 1 + std::fs::read_to_string(&exp)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("epochs"))
        .unwrap();
    let out = run_file(&exp, &output, &[]);
    let stderr = assert_refused(&out, &output, "exp.toml", "training.epochs");
    assert!(
        stderr.contains(&format!(
            "exp.toml:{line}: training.epochs: invalid type: string \"five\", expected usize"
        )),
        "{stderr}"
    );
}

/// A safetensors file holding only `head.weight` of shape [3, 4]: a checkpoint of no
/// shipped model.
fn mismatched_checkpoint(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("wrong.safetensors");
    let weight = tch::Tensor::zeros([3, 4], (tch::Kind::Float, tch::Device::Cpu));
    tch::Tensor::write_safetensors(&[("head.weight", weight)], &path).unwrap();
    path
}

/// Methods that cannot train the configured model are refused before any data loads, with
/// the method's reason and the key to change.
#[test]
fn a_method_that_does_not_fit_the_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let vit_prefix = repo().join("experiments/split-mnist-vit-prefix.toml");
    let split_mnist = repo().join("experiments/split-mnist.toml");
    for (experiment, sets, key, reason) in [
        (
            &split_mnist,
            &["method.name=\"prompt\""][..],
            "model.kind",
            "prompt tuning needs a transformer",
        ),
        (
            &split_mnist,
            &["method.name=\"prefix\""][..],
            "model.kind",
            "prefix tuning needs a transformer",
        ),
        (
            &vit_prefix,
            &["method.blocks=[0, 7]"][..],
            "method.blocks",
            "names block 7, but the model has 4 (0 to 3)",
        ),
        (
            &split_mnist,
            &["method.name=\"lora\"", "method.target=[\"conv*\"]"][..],
            "method.target",
            "pattern `conv*` matches no adaptable layer (the model has: head, hidden.0, hidden.1)",
        ),
        (
            &split_mnist,
            &["method.name=\"peft\"", "method.trainable=[\"layer4.*\"]"][..],
            "method.trainable",
            "pattern `layer4.*` matches no trainable variable",
        ),
        (
            &split_mnist,
            &[
                "method.name=\"unfreeze\"",
                "method.groups=[\"head.*\", \"hidden.7.*\"]",
            ][..],
            "method.groups",
            "pattern `hidden.7.*` matches no trainable variable",
        ),
    ] {
        let output = dir.path().join("out");
        let mut args = Vec::new();
        for set in sets {
            args.extend(["--set", set]);
        }
        let out = run_file(experiment, &output, &args);
        let file = experiment.file_name().unwrap().to_str().unwrap();
        let stderr = assert_refused(&out, &output, file, key);
        assert!(stderr.contains(reason), "{sets:?}: {stderr}");
    }
}

/// A `[model] checkpoint` that is missing, or whose tensors do not fit the model, is refused
/// before any data loads, naming the key and every difference.
#[test]
fn a_missing_or_mismatched_model_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    let missing = dir.path().join("missing.safetensors");
    let set = format!("model.checkpoint={}", crate::common::toml_str(&missing));
    let out = run_split_mnist(&output, &["--set", &set]);
    let stderr = assert_refused(&out, &output, "split-mnist.toml", "model.checkpoint");
    assert!(stderr.contains("missing.safetensors"), "{stderr}");

    let wrong = mismatched_checkpoint(dir.path());
    let set = format!("model.checkpoint={}", crate::common::toml_str(&wrong));
    let out = run_split_mnist(&output, &["--set", &set]);
    let stderr = assert_refused(&out, &output, "split-mnist.toml", "model.checkpoint");
    assert!(
        stderr.contains(
            "missing [head.bias, hidden.0.bias, hidden.0.weight, hidden.1.bias, hidden.1.weight]"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("shape of head.weight: expected [10, 100], file has [3, 4]"),
        "{stderr}"
    );
}

/// The same for the `[pretrain.teacher]` checkpoint of a distillation stage.
#[test]
fn a_missing_or_mismatched_teacher_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    let experiment = repo().join("experiments/pretrain-distill-mnist.toml");
    let missing = dir.path().join("missing.safetensors");
    let set = format!(
        "pretrain.teacher.checkpoint={}",
        crate::common::toml_str(&missing)
    );
    let out = run_file(&experiment, &output, &["--set", &set]);
    let key = "pretrain.teacher.checkpoint";
    let stderr = assert_refused(&out, &output, "pretrain-distill-mnist.toml", key);
    assert!(stderr.contains("missing.safetensors"), "{stderr}");

    let wrong = mismatched_checkpoint(dir.path());
    let set = format!(
        "pretrain.teacher.checkpoint={}",
        crate::common::toml_str(&wrong)
    );
    let out = run_file(&experiment, &output, &["--set", &set]);
    let stderr = assert_refused(&out, &output, "pretrain-distill-mnist.toml", key);
    assert!(
        stderr.contains("shape of head.weight: expected [10, 400], file has [3, 4]"),
        "{stderr}"
    );
}

#[test]
fn a_checkpoint_whose_sha256_differs_from_the_pinned_one_is_refused_before_data_loads() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    let weights = repo().join("crates/retain-models/fixtures/mlp_reference.safetensors");
    let pinned = "0".repeat(64);
    let model = format!(
        "hidden = [100, 100]\ncheckpoint = \"{}\"\ncheckpoint_sha256 = \"{pinned}\"",
        weights.display()
    );
    let exp = edited_split_mnist(dir.path(), &[("hidden = [100, 100]", &model)]);
    let out = run_file(&exp, &output, &[]);
    let stderr = assert_refused(&out, &output, "exp.toml", "model.checkpoint_sha256");
    let actual = {
        use sha2::{Digest, Sha256};
        format!("{:x}", Sha256::digest(std::fs::read(&weights).unwrap()))
    };
    assert!(
        stderr.contains(&pinned) && stderr.contains(&actual),
        "{stderr}"
    );
}
