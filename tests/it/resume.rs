//! Resuming a run from its task-boundary checkpoint: a run stopped after a task and resumed
//! with `--resume` ends with exactly the results of the run that was never stopped (every
//! count and accuracy equal, and every epoch's loss), for each method family.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{accuracy_cells, assert_success, data_root, live_log, repo};

/// The exit status of a run stopped by `RETAIN_EXIT_AFTER_CHECKPOINT`.
const STOPPED: i32 = 75;

/// `retain run` of a tiny Split-MNIST (3 tasks, 200 training and 100 test samples per task,
/// SGD with momentum, so that the optimiser has state) into `output`/split-mnist/`run`.
fn tiny_run(output: &Path, run: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_retain"));
    command
        .current_dir(repo())
        .args(["run", "experiments/split-mnist.toml", "--device", "cpu"])
        .arg("--output")
        .arg(output)
        .arg("--data-root")
        .arg(data_root())
        .args(["--run-name", run, "--quiet"])
        .args([
            "--set",
            "stream.tasks=3",
            "--set",
            "stream.train_samples_per_task=200",
            "--set",
            "stream.test_samples_per_task=100",
            "--set",
            "training.optimizer.lr=0.05",
            "--set",
            "training.optimizer.momentum=0.9",
        ])
        .args(extra);
    command
}

fn output_of(mut command: Command) -> Output {
    command.output().expect("the retain binary runs")
}

/// Every task's epoch losses, from the manifest.
fn epoch_losses(dir: &Path) -> Vec<serde_json::Value> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    manifest["timings"]["per_task"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["epoch_losses"].clone())
        .collect()
}

/// Asserts that `resumed` continued from a checkpoint rather than starting again: two
/// processes wrote its live log, which holds each event of `whole`'s exactly once (no task
/// trained or evaluated twice).
fn assert_continued(resumed: &Path, whole: &Path) {
    let (files, events) = live_log(resumed);
    let (whole_files, whole_events) = live_log(whole);
    assert_eq!(
        (files, whole_files),
        (2, 1),
        "one TensorBoard file per process"
    );
    assert_eq!(events, whole_events);
}

/// Runs `method` (its `--set` overrides) uninterrupted and stopped after task 1 then
/// resumed; asserts that the two runs' results are identical and that the resumed run's
/// folder keeps no checkpoint.
fn resumed_equals_uninterrupted(method: &[&str]) {
    stopped_at_equals_uninterrupted(method, &[], "1");
}

/// Every method that continues a task from its middle, stopped after 2 of its 3 epochs of
/// task 2 (checkpoints every epoch) and resumed, ends as the run written without those
/// checkpoints: they change when a run can stop, not what it computes.
fn resumed_inside_a_task_equals_uninterrupted(method: &[&str]) {
    let epochs = ["training.epochs=3"];
    let method: Vec<&str> = method.iter().chain(&epochs).copied().collect();
    stopped_at_equals_uninterrupted(&method, &["training.checkpoint_every_epochs=1"], "1:2");
}

/// The progress record (TOML) of the resume checkpoint in `run`: safetensors stores the
/// record's bytes verbatim, between the header and the next tensor's data.
fn checkpoint_progress(run: &Path) -> String {
    let bytes = std::fs::read(run.join("resume/checkpoint.safetensors")).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let start = text.find("config_hash = ").expect("a progress record");
    let end = text[start..].find('\0').map_or(text.len(), |n| start + n);
    text[start..end].to_owned()
}

/// Runs `method` (its `--set` overrides) uninterrupted, and with `checkpoints` (more
/// overrides) stopped at `exit_after` (`RETAIN_EXIT_AFTER_CHECKPOINT`) then resumed; asserts
/// that the two runs' results are identical and that the resumed run's folder keeps no
/// checkpoint.
fn stopped_at_equals_uninterrupted(method: &[&str], checkpoints: &[&str], exit_after: &str) {
    let dir = tempfile::tempdir().unwrap();
    let whole_sets: Vec<&str> = method.iter().flat_map(|m| ["--set", m]).collect();
    let sets: Vec<&str> = method
        .iter()
        .chain(checkpoints)
        .flat_map(|m| ["--set", m])
        .collect();
    assert_success(&output_of(tiny_run(dir.path(), "whole", &whole_sets)));
    let whole = dir.path().join("split-mnist/whole");
    assert!(
        !whole.join("resume").exists(),
        "a finished run keeps no checkpoint"
    );

    let mut stopped = tiny_run(dir.path(), "resumed", &sets);
    stopped.env("RETAIN_EXIT_AFTER_CHECKPOINT", exit_after);
    let out = output_of(stopped);
    assert_eq!(
        out.status.code(),
        Some(STOPPED),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed = dir.path().join("split-mnist/resumed");
    let progress = checkpoint_progress(&resumed);
    match exit_after.split_once(':') {
        Some((tasks, epochs)) => {
            assert!(
                progress.contains(&format!("tasks_done = {tasks}\n")),
                "{progress}"
            );
            assert!(
                progress.contains(&format!("epochs_done = {epochs}\n")),
                "{progress}"
            );
        }
        None => assert!(!progress.contains("within_task"), "{progress}"),
    }
    assert!(!resumed.join("accuracy.parquet").exists());

    let mut resume = tiny_run(dir.path(), "resumed", &sets);
    resume.arg("--resume");
    assert_success(&output_of(resume));
    assert_eq!(
        accuracy_cells(&resumed),
        accuracy_cells(&whole),
        "{method:?}"
    );
    assert_eq!(epoch_losses(&resumed), epoch_losses(&whole), "{method:?}");
    assert_continued(&resumed, &whole);
    assert!(
        !resumed.join("resume").exists(),
        "a finished run keeps no checkpoint"
    );
}

#[test]
fn naive_resumes_exactly() {
    resumed_equals_uninterrupted(&["method.name=\"naive\""]);
}

#[test]
fn naive_under_adam_resumes_exactly() {
    resumed_equals_uninterrupted(&[
        "training.optimizer={kind=\"adam\", lr=0.001}",
        "method.name=\"naive\"",
    ]);
}

#[test]
fn ewc_resumes_exactly() {
    resumed_equals_uninterrupted(&["method.name=\"ewc\"", "method.lambda=1.0"]);
}

#[test]
fn replay_resumes_exactly() {
    resumed_equals_uninterrupted(&[
        "method.name=\"replay\"",
        "method.buffer_size=100",
        "method.replay_batch_size=10",
    ]);
}

#[test]
fn der_plus_plus_resumes_exactly() {
    resumed_equals_uninterrupted(&[
        "method.name=\"der\"",
        "method.buffer_size=100",
        "method.replay_batch_size=10",
        "method.alpha=0.2",
        "method.beta=1.0",
    ]);
}

#[test]
fn gem_resumes_exactly() {
    resumed_equals_uninterrupted(&["method.name=\"gem\"", "method.memories_per_task=32"]);
}

#[test]
fn lora_resumes_exactly() {
    resumed_equals_uninterrupted(&[
        "method.name=\"lora\"",
        "method.rank=4",
        "stream.readouts=[\"class_il\", \"task_il\", \"task_inferred\", \"merged\"]",
    ]);
}

#[test]
fn bitfit_resumes_exactly() {
    resumed_equals_uninterrupted(&["method.name=\"bitfit\""]);
}

#[test]
fn naive_resumes_exactly_inside_a_task() {
    resumed_inside_a_task_equals_uninterrupted(&["method.name=\"naive\""]);
}

#[test]
fn ewc_resumes_exactly_inside_a_task() {
    resumed_inside_a_task_equals_uninterrupted(&["method.name=\"ewc\"", "method.lambda=1.0"]);
}

#[test]
fn replay_resumes_exactly_inside_a_task() {
    resumed_inside_a_task_equals_uninterrupted(&[
        "method.name=\"replay\"",
        "method.buffer_size=100",
        "method.replay_batch_size=10",
    ]);
}

#[test]
fn der_plus_plus_resumes_exactly_inside_a_task() {
    resumed_inside_a_task_equals_uninterrupted(&[
        "method.name=\"der\"",
        "method.buffer_size=100",
        "method.alpha=0.2",
        "method.beta=1.0",
    ]);
}

#[test]
fn agem_resumes_exactly_inside_a_task() {
    resumed_inside_a_task_equals_uninterrupted(&["method.name=\"agem\"", "method.memory_size=64"]);
}

#[test]
fn gem_resumes_exactly_inside_a_task() {
    resumed_inside_a_task_equals_uninterrupted(&[
        "method.name=\"gem\"",
        "method.memories_per_task=32",
        // Three epochs at the tiny run's 0.05 with momentum diverge.
        "training.optimizer.lr=0.01",
    ]);
}

/// LoRA draws its live adapters at each task's start: continued inside a task, they (and the
/// head) take their checkpointed values, and the per-task optimiser its moments.
#[test]
fn lora_resumes_exactly_inside_a_task() {
    resumed_inside_a_task_equals_uninterrupted(&[
        "method.name=\"lora\"",
        "method.rank=4",
        "stream.readouts=[\"class_il\", \"task_il\", \"task_inferred\", \"merged\"]",
        "training.optimizer.lr=0.01",
    ]);
}

#[test]
fn bitfit_resumes_exactly_inside_a_task() {
    resumed_inside_a_task_equals_uninterrupted(&["method.name=\"bitfit\""]);
}

/// A method whose state holds only between tasks (LwF's teacher is the network at the task's
/// start) writes no checkpoint inside a task: the run that would stop at one finishes.
#[test]
fn a_method_that_cannot_resume_inside_a_task_checkpoints_at_boundaries_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = tiny_run(
        dir.path(),
        "lwf",
        &[
            "--set",
            "method.name=\"lwf\"",
            "--set",
            "training.epochs=2",
            "--set",
            "training.checkpoint_every_epochs=1",
            "--set",
            "training.optimizer.lr=0.01",
        ],
    );
    run.env("RETAIN_EXIT_AFTER_CHECKPOINT", "0:1");
    assert_success(&output_of(run));
    assert!(dir.path().join("split-mnist/lwf/manifest.json").is_file());
}

/// A run killed (SIGKILL) as soon as its first checkpoint exists, then resumed: after task 1.
#[test]
fn a_killed_replay_run_resumes_exactly() {
    killed_at_first_checkpoint_equals_uninterrupted(&[], None);
}

/// The same with checkpoints every epoch: the kill lands inside task 1, after its first of
/// three epochs.
#[test]
fn a_replay_run_killed_inside_a_task_resumes_exactly() {
    killed_at_first_checkpoint_equals_uninterrupted(
        &["--set", "training.checkpoint_every_epochs=1"],
        Some(1),
    );
}

/// A replay run (3 epochs a task) killed as soon as its first resume checkpoint exists, with
/// `checkpoints` added to its overrides, then resumed, against the run never stopped;
/// `inside`: the epochs of task 1 the checkpoint was written after, `None` at its end.
fn killed_at_first_checkpoint_equals_uninterrupted(checkpoints: &[&str], inside: Option<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let whole_sets = [
        "--set",
        "method.name=\"replay\"",
        "--set",
        "method.buffer_size=100",
        // More tasks so that the kill lands before the run ends.
        "--set",
        "stream.tasks=5",
        "--set",
        "training.epochs=3",
    ];
    let sets: Vec<&str> = whole_sets.iter().chain(checkpoints).copied().collect();
    assert_success(&output_of(tiny_run(dir.path(), "whole", &whole_sets)));
    let whole = dir.path().join("split-mnist/whole");

    let mut child = tiny_run(dir.path(), "killed", &sets)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let killed = dir.path().join("split-mnist/killed");
    let checkpoint = killed.join("resume/checkpoint.safetensors");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !checkpoint.is_file() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its checkpoint"
        );
        assert!(Instant::now() < deadline, "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the run was killed, not finished: {status}"
    );
    assert!(!killed.join("manifest.json").exists());
    let progress = checkpoint_progress(&killed);
    match inside {
        Some(epochs) => {
            assert!(progress.contains("tasks_done = 0\n"), "{progress}");
            assert!(
                progress.contains(&format!("epochs_done = {epochs}\n")),
                "{progress}"
            );
        }
        None => assert!(progress.contains("tasks_done = 1\n"), "{progress}"),
    }

    let mut resume = tiny_run(dir.path(), "killed", &sets);
    resume.arg("--resume");
    assert_success(&output_of(resume));
    assert_eq!(accuracy_cells(&killed), accuracy_cells(&whole));
    assert_eq!(epoch_losses(&killed), epoch_losses(&whole));
    assert_continued(&killed, &whole);
}

#[test]
fn a_checkpoint_of_another_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut stopped = tiny_run(dir.path(), "run", &[]);
    stopped.env("RETAIN_EXIT_AFTER_CHECKPOINT", "1");
    assert_eq!(output_of(stopped).status.code(), Some(STOPPED));

    let mut other = tiny_run(dir.path(), "run", &["--set", "training.optimizer.lr=0.07"]);
    other.arg("--resume");
    let out = output_of(other);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot resume") && stderr.contains("another configuration"),
        "{stderr}"
    );
    // The checkpoint stays for the run it belongs to.
    let run = dir.path().join("split-mnist/run");
    assert!(run.join("resume/checkpoint.safetensors").is_file());
}

#[test]
fn resume_without_a_checkpoint_starts_from_the_start_and_a_fresh_run_clears_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = tiny_run(dir.path(), "run", &[]);
    first.arg("--resume");
    let out = output_of(first);
    assert_success(&out);
    let run = dir.path().join("split-mnist/run");
    let whole = accuracy_cells(&run);

    let mut stopped = tiny_run(dir.path(), "run", &[]);
    stopped.env("RETAIN_EXIT_AFTER_CHECKPOINT", "2");
    assert_eq!(output_of(stopped).status.code(), Some(STOPPED));
    assert!(run.join("resume/checkpoint.safetensors").is_file());
    // A rerun without --resume starts afresh: the checkpoint goes with the other results.
    let mut fresh = tiny_run(dir.path(), "run", &[]);
    fresh.env("RETAIN_EXIT_AFTER_CHECKPOINT", "9");
    assert_success(&output_of(fresh));
    assert!(!run.join("resume").exists());
    assert_eq!(accuracy_cells(&run), whole);
}

/// A grid cell stopped after its first task (status 75: recorded as stopped, not failed)
/// continues from its checkpoint when the grid runs again, without `--retry-failed`, and ends
/// as the cell of a grid that was never stopped.
#[test]
fn an_unfinished_grid_cell_continues_from_its_checkpoint() {
    let grid = |dir: &Path| crate::grid::grid_file(dir, "resume-grid", "\"seed\" = [0]", "");
    let run_grid = |path: &Path, stop_after: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_retain"));
        command
            .current_dir(repo())
            .args(["grid", "run"])
            .arg(path)
            .arg("--quiet");
        if let Some(n) = stop_after {
            command.env("RETAIN_EXIT_AFTER_CHECKPOINT", n);
        }
        output_of(command)
    };
    let whole_dir = tempfile::tempdir().unwrap();
    assert_success(&run_grid(&grid(whole_dir.path()), None));
    let whole = whole_dir.path().join("results/resume-grid/cells/seed=0");

    let stopped_dir = tempfile::tempdir().unwrap();
    let path = grid(stopped_dir.path());
    let out = run_grid(&path, Some("1"));
    assert!(!out.status.success(), "the stopped cell did not finish");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("0 failed, 1 stopped") && stdout.contains("stopped  seed=0"),
        "{stdout}"
    );
    let cell = stopped_dir.path().join("results/resume-grid/cells/seed=0");
    assert!(cell.join("resume/checkpoint.safetensors").is_file());
    assert!(!cell.join("manifest.json").exists(), "stopped, not failed");
    assert_success(&run_grid(&path, None));
    assert_eq!(accuracy_cells(&cell), accuracy_cells(&whole));
    assert_eq!(epoch_losses(&cell), epoch_losses(&whole));
    assert_continued(&cell, &whole);
    assert!(!cell.join("resume").exists());
}

/// SIGTERM while the run trains its second task: the run finishes that task, writes its
/// checkpoint, exits with status 75 and no manifest; `--resume` then ends with the results
/// of the run that was never stopped.
#[test]
fn a_run_stopped_by_sigterm_checkpoints_after_its_task_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // Tasks long enough that the signal lands while task 1 trains.
    let sets = [
        "--set",
        "stream.tasks=4",
        "--set",
        "stream.train_samples_per_task=1000",
        "--set",
        "training.optimizer.lr=0.01",
    ];
    assert_success(&output_of(tiny_run(dir.path(), "whole", &sets)));
    let whole = dir.path().join("split-mnist/whole");

    let mut child = tiny_run(dir.path(), "stopped", &sets)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stopped = dir.path().join("split-mnist/stopped");
    let checkpoint = stopped.join("resume/checkpoint.safetensors");
    let deadline = Instant::now() + Duration::from_secs(300);
    // The checkpoint after task 0: the run now trains task 1.
    while !checkpoint.is_file() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(Instant::now() < deadline, "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(STOPPED), "{stderr}");
    assert!(
        stderr.contains("stopped on SIGTERM after task 2 of 4"),
        "{stderr}"
    );
    assert!(checkpoint.is_file(), "the checkpoint stays");
    assert!(
        !stopped.join("manifest.json").exists(),
        "unfinished, not failed"
    );
    assert!(!stopped.join("accuracy.parquet").exists());
    // Task 1 was finished and evaluated, no later task started: two evaluations short of
    // the whole run's.
    let evaluations = |dir: &Path| {
        live_log(dir)
            .1
            .iter()
            .filter(|(kind, _)| kind == "evaluation")
            .count()
    };
    assert_eq!(evaluations(&stopped) + 2, evaluations(&whole));

    let mut resume = tiny_run(dir.path(), "stopped", &sets);
    resume.arg("--resume");
    assert_success(&output_of(resume));
    assert_eq!(accuracy_cells(&stopped), accuracy_cells(&whole));
    assert_eq!(epoch_losses(&stopped), epoch_losses(&whole));
    assert_continued(&stopped, &whole);
    assert!(!stopped.join("resume").exists());
}
