use std::fs;

use super::*;

/// A manifest with every field set, as a complete run with a `[pretrain]` stage writes it.
fn full() -> Manifest {
    Manifest {
        error: None,
        experiment: Some("split-mnist".into()),
        run: Some("ewc-seed3".into()),
        method: Some("ewc".into()),
        seed: Some(3),
        training_loss: Some("class_il".into()),
        init: Some("reference".into()),
        device: Some("cuda:1".into()),
        retain_version: Some("0.1.0".into()),
        tch_version: Some("0.24.0".into()),
        libtorch_version: Some("2.11.0+cu130".into()),
        git_revision: Some("50822c5-dirty".into()),
        started_at_unix: Some(1_796_423_694),
        finished_at_unix: Some(1_796_423_696),
        wall_seconds: Some(2.406285893),
        trainable_parameters: Some(89_610),
        peak_host_memory_bytes: Some(493_998_080),
        peak_device_memory_bytes: Some(1_017_118_720),
        timings: Some(Timings {
            load_seconds: 1.640958354,
            initial_eval_seconds: 0.005655739,
            total_seconds: 0.085411324,
            train_seconds: 0.045419412000000006,
            eval_seconds: 0.011612225,
            steps: 30,
            seconds_per_step: 0.0015139804000000002,
            step_execution: StepExecution {
                graphed_steps: 28,
                eager_steps: 2,
                eager_reason: Some("warm-up".into()),
            },
            per_task: (0..3)
                .map(|task| TaskTimings {
                    task,
                    steps: 10,
                    samples: 100,
                    epoch_losses: vec![1.185999870300293, 1.2873102753844429e17],
                    train_seconds: 0.017040552,
                    eval_seconds: 0.003676937,
                })
                .collect(),
        }),
        costs: Some(Costs {
            trainable_parameters: 89_610,
            method_state_bytes: 2_150_640,
            state_bytes_per_task: 716_880.0,
            frozen_base_bytes: 12,
            seconds_per_step: 0.0015139804000000002,
        }),
        pretrain: Some(Pretrain {
            checkpoint: "results/split-mnist/stages/pretrain-0123456789abcdef/model.safetensors"
                .into(),
            reused: true,
            hash: "0123456789abcdef".into(),
            accuracy: 0.9712,
            teacher_accuracy: Some(0.98),
            seconds: 12.5,
        }),
        model_checkpoint_sha256: Some(
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        ),
        ..Manifest::new(RunStatus::Complete)
    }
}

#[test]
fn a_written_manifest_reads_back_equal_in_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("results/split-mnist/ewc-seed3");
    let manifest = full();
    manifest.write(&run).unwrap();
    let read = Manifest::read(&run).unwrap().unwrap();
    assert_eq!(read, manifest);
    assert_eq!(read.schema_version, SCHEMA_VERSION);

    // A failure record, with what a failed run leaves null or out.
    let failed = Manifest {
        error: Some("training diverged: mean loss NaN in task 2, epoch 1".into()),
        experiment: Some("split-mnist".into()),
        run: Some("bad".into()),
        ..Manifest::new(RunStatus::Failed)
    };
    failed.write(&run).unwrap();
    assert_eq!(Manifest::read(&run).unwrap().unwrap(), failed);
    let names: Vec<_> = fs::read_dir(&run).unwrap().map(|e| e.unwrap()).collect();
    assert_eq!(names.len(), 1, "only the manifest, no temporary left");
}

#[test]
fn the_file_names_its_schema_version_first_and_statuses_as_words() {
    let text = full().to_json();
    assert!(
        text.starts_with("{\n  \"schema_version\": 1,\n  \"status\": \"complete\",\n"),
        "{text}"
    );
    let failed = Manifest::new(RunStatus::Failed).to_json();
    assert!(failed.contains("\"status\": \"failed\""), "{failed}");
    assert_eq!(RunStatus::Complete.as_str(), "complete");
    assert_eq!(RunStatus::Failed.as_str(), "failed");
}

/// A manifest exactly as the writer before schema versions wrote it (a real file of a reduced
/// EWC run) reads as version 0, and writing it back changes nothing but the added version.
#[test]
fn an_unversioned_manifest_of_the_previous_writer_reads_as_version_0() {
    let original = include_str!("tests/unversioned-complete.json");
    let path = Path::new("cells/method=ewc,seed=0/manifest.json");
    let manifest = Manifest::from_json(original, path).unwrap();
    assert_eq!(manifest.schema_version, 0);
    assert_eq!(manifest.status, RunStatus::Complete);
    assert_eq!(manifest.error, None);
    assert_eq!(manifest.method.as_deref(), Some("ewc"));
    assert_eq!(manifest.device.as_deref(), Some("cpu"));
    assert_eq!(manifest.peak_device_memory_bytes, None);
    let timings = manifest.timings.as_ref().unwrap();
    assert_eq!(timings.steps, 30);
    assert_eq!(timings.per_task.len(), 3);
    assert_eq!(
        timings.step_execution.eager_reason.as_deref(),
        Some("Cpu is not a CUDA device")
    );
    assert_eq!(manifest.costs.unwrap().method_state_bytes, 2_150_640);
    assert_eq!(manifest.pretrain, None);
    // Written before the checkpoint's hash was recorded: it reads as absent.
    assert_eq!(manifest.model_checkpoint_sha256, None);
    let rewritten = manifest.to_json();
    assert_eq!(
        rewritten.replacen("\n  \"schema_version\": 0,", "", 1),
        original,
        "the layout is the previous writer's, field for field"
    );
}

/// The grid runner's record for a cell whose process died (before schema versions, written
/// from a JSON object, so its keys are sorted) and a hand-written partial manifest read too.
#[test]
fn partial_manifests_read_with_what_they_have() {
    let runner = Manifest::from_json(
        include_str!("tests/unversioned-runner-failed.json"),
        Path::new("m.json"),
    )
    .unwrap();
    assert_eq!(runner.status, RunStatus::Failed);
    assert!(runner.error.unwrap().contains("not ready"));
    assert_eq!(runner.run.as_deref(), Some("method=naive,seed=0"));
    assert_eq!(runner.finished_at_unix, Some(1_796_423_700));
    assert_eq!((runner.method, runner.timings), (None, None));

    let partial = Manifest::from_json(
        r#"{"status": "complete", "seed": 0, "trainable_parameters": 1000,
            "timings": {"steps": 100, "seconds_per_step": 0.001}}"#,
        Path::new("m.json"),
    )
    .unwrap();
    let timings = partial.timings.unwrap();
    assert_eq!((timings.steps, timings.seconds_per_step), (100, 0.001));
    assert_eq!(timings.load_seconds, 0.0);
    assert_eq!(partial.experiment, None);
}

#[test]
fn a_newer_schema_is_refused_naming_the_file_and_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(FILE_NAME),
        r#"{"schema_version": 2, "status": "complete", "wall_seconds": "renamed"}"#,
    )
    .unwrap();
    let err = Manifest::read(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            ManifestError::NewerSchema {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("manifest.json"), "{message}");
    assert!(message.contains("schema version 2"), "{message}");
}

#[test]
fn missing_truncated_and_unknown_manifests_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Manifest::read(dir.path()).unwrap().is_none());
    let path = dir.path().join(FILE_NAME);
    for text in [
        "{\"status\": \"comp",
        r#"{"status": "running"}"#,
        r#"{"error": "no status"}"#,
        r#"{"schema_version": "one", "status": "complete"}"#,
    ] {
        fs::write(&path, text).unwrap();
        let err = Manifest::read(dir.path()).unwrap_err();
        assert!(matches!(err, ManifestError::Parse { .. }), "{text}: {err}");
        assert!(err.to_string().contains("manifest.json"), "{err}");
    }
}

/// The child half of the crash test: stages a complete manifest over a failed one and aborts
/// before the rename, as a process killed between the write and the commit would.
const CRASH_CHILD: &str = "RETAIN_MANIFEST_CRASH_CHILD_DIR";

#[test]
fn crash_child_stages_a_complete_manifest_then_aborts() {
    let Some(dir) = std::env::var_os(CRASH_CHILD) else {
        return; // Only meaningful in the child process the crash test starts.
    };
    let staged = retain_fs::Staged::new(&Manifest::path(Path::new(&dir))).unwrap();
    fs::write(staged.temporary(), full().to_json()).unwrap();
    std::process::abort();
}

#[test]
fn a_crash_before_the_rename_never_leaves_a_complete_looking_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let previous = Manifest {
        error: Some("training diverged".into()),
        ..Manifest::new(RunStatus::Failed)
    };
    previous.write(dir.path()).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::crash_child_stages_a_complete_manifest_then_aborts",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must have crashed");
    let read = Manifest::read(dir.path()).unwrap().unwrap();
    assert_eq!(read.status, RunStatus::Failed);
    assert_eq!(read, previous);
    // The complete manifest exists only as a temporary, which readers skip.
    let left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != FILE_NAME)
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(retain_fs::is_temporary(&left[0]), "{left:?}");
    let staged = fs::read_to_string(dir.path().join(&left[0])).unwrap();
    assert!(staged.contains("\"status\": \"complete\""), "{staged}");
}
