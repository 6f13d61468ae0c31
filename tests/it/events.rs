//! The live logs of a run: `events.jsonl` read back line by line, and the TensorBoard event
//! file read back by TensorBoard's own reader (the Python `tensorboard` package in `.venv`;
//! without it that half skips, unless `RETAIN_REQUIRE_TENSORBOARD` is set, as in CI).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::{
    assert_success, dependency_present, read_parquet, reduced_split_mnist_run, repo, venv_has,
};

/// One line of `events.jsonl`, as the test reads it.
#[derive(Debug)]
struct Line {
    wall_time: f64,
    kind: String,
    task: Option<u64>,
    epoch: Option<u64>,
    step: u64,
    values: BTreeMap<String, f64>,
}

fn read_lines(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'), "the last line is not whole");
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let object = v.as_object().unwrap();
            let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(
                keys,
                ["epoch", "kind", "step", "task", "values", "wall_time"],
                "{line}"
            );
            Line {
                wall_time: v["wall_time"].as_f64().unwrap(),
                kind: v["kind"].as_str().unwrap().to_owned(),
                task: v["task"].as_u64(),
                epoch: v["epoch"].as_u64(),
                step: v["step"].as_u64().unwrap(),
                values: v["values"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, x)| {
                        let x = x
                            .as_f64()
                            .unwrap_or_else(|| panic!("{k} is not a number: {line}"));
                        (k.clone(), x)
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Every scalar of the event files in `dir` as TensorBoard reads them: tag →
/// `[(wall_time, step, value)]` in file order.
fn tensorboard_scalars(dir: &Path) -> BTreeMap<String, Vec<(f64, u64, f64)>> {
    let script = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
print(json.dumps({t: [[e.wall_time, e.step, e.value] for e in acc.Scalars(t)]
                  for t in acc.Tags()["scalars"]}))
"#;
    let out = Command::new(repo().join(".venv/bin/python"))
        .args(["-c", script, dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&out);
    let scalars: BTreeMap<String, Vec<(f64, u64, f64)>> =
        serde_json::from_slice(&out.stdout).unwrap();
    scalars
}

/// A 3-task Split-MNIST run of 2 epochs per task logs, in order, the untrained evaluation,
/// then per task each epoch's mean loss and the evaluation after it: every task in every
/// read-out, the accuracies of `accuracy.parquet`, the losses and steps of the manifest.
/// TensorBoard reads the same scalars, tags, steps and wall times from the event file.
#[test]
fn a_run_logs_its_losses_and_evaluations_live_for_tensorboard() {
    let out_dir = tempfile::tempdir().unwrap();
    let run = reduced_split_mnist_run(
        out_dir.path(),
        "logged",
        &["stream.tasks=3", "training.epochs=2"],
    );
    let lines = read_lines(&run.join("events.jsonl"));

    let shape: Vec<(&str, Option<u64>, Option<u64>)> = lines
        .iter()
        .map(|l| (l.kind.as_str(), l.task, l.epoch))
        .collect();
    let mut expected = vec![("evaluation", None, None)];
    for task in 0..3 {
        expected.extend([
            ("loss", Some(task), Some(0)),
            ("loss", Some(task), Some(1)),
            ("evaluation", Some(task), None),
        ]);
    }
    assert_eq!(shape, expected);
    for pair in lines.windows(2) {
        assert!(pair[0].wall_time <= pair[1].wall_time, "{pair:?}");
        assert!(pair[0].step <= pair[1].step, "{pair:?}");
    }

    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
    let per_task = manifest["timings"]["per_task"].as_array().unwrap();
    let mut run_steps = 0;
    for (task, timings) in per_task.iter().enumerate() {
        let steps = timings["steps"].as_u64().unwrap();
        let losses = timings["epoch_losses"].as_array().unwrap();
        let logged: Vec<&Line> = lines
            .iter()
            .filter(|l| l.kind == "loss" && l.task == Some(task as u64))
            .collect();
        assert_eq!(logged.len(), losses.len());
        for (epoch, (line, loss)) in logged.iter().zip(losses).enumerate() {
            let loss = loss.as_f64().unwrap();
            let value = line.values["loss/train"];
            assert_eq!(line.values.len(), 1, "{line:?}");
            assert!(value.is_finite() && value > 0.0, "{line:?}");
            assert!((value - loss).abs() <= 1e-12 * loss, "{value} vs {loss}");
            // Two epochs of equal length.
            assert_eq!(line.step, run_steps + steps / 2 * (epoch as u64 + 1));
        }
        run_steps += steps;
        let evaluation = lines
            .iter()
            .find(|l| l.kind == "evaluation" && l.task == Some(task as u64))
            .unwrap();
        assert_eq!(evaluation.step, run_steps);
    }
    assert_eq!(lines[0].step, 0);

    // Every read-out × task of every evaluation, with the accuracy the Parquet file holds.
    let frame = read_parquet(&run.join("accuracy.parquet"));
    let column = |name: &str| frame.column(name).unwrap().clone();
    let (scenario, trained, task, accuracy) = (
        column("scenario"),
        column("trained_tasks"),
        column("eval_task"),
        column("accuracy"),
    );
    let mut stored: BTreeMap<(u32, String), f64> = BTreeMap::new();
    for i in 0..frame.height() {
        let tag = format!(
            "accuracy/{}/task{}",
            scenario.str().unwrap().get(i).unwrap(),
            task.u32().unwrap().get(i).unwrap()
        );
        stored.insert(
            (trained.u32().unwrap().get(i).unwrap(), tag),
            accuracy.f64().unwrap().get(i).unwrap(),
        );
    }
    assert_eq!(stored.len(), 4 * 2 * 3, "4 rows, 2 read-outs, 3 tasks");
    let mut logged: BTreeMap<(u32, String), f64> = BTreeMap::new();
    for line in lines.iter().filter(|l| l.kind == "evaluation") {
        let row = line.task.map_or(0, |t| t as u32 + 1);
        assert_eq!(line.values.len(), 2 * 3, "{line:?}");
        for (tag, &value) in &line.values {
            logged.insert((row, tag.clone()), value);
        }
    }
    assert_eq!(
        logged.keys().collect::<Vec<_>>(),
        stored.keys().collect::<Vec<_>>()
    );
    for (key, value) in &logged {
        assert!((value - stored[key]).abs() <= 1e-12, "{key:?}: {value}");
    }

    // TensorBoard's reader finds the event file in the run folder and reads the same scalars.
    let tensorboard = dependency_present(
        "RETAIN_REQUIRE_TENSORBOARD",
        venv_has("tensorboard"),
        "the project's .venv has no tensorboard package (./setup.sh installs it)",
    );
    if !tensorboard {
        return;
    }
    let read = tensorboard_scalars(&run);
    let mut expected: BTreeMap<String, Vec<(f64, u64, f64)>> = BTreeMap::new();
    for line in &lines {
        for (tag, &value) in &line.values {
            expected
                .entry(tag.clone())
                .or_default()
                .push((line.wall_time, line.step, value));
        }
    }
    assert_eq!(
        read.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (tag, points) in &expected {
        let got = &read[tag];
        assert_eq!(got.len(), points.len(), "{tag}");
        for (&(wall, step, value), &(tb_wall, tb_step, tb_value)) in points.iter().zip(got) {
            assert_eq!(tb_step, step, "{tag}");
            assert!((tb_wall - wall).abs() < 1e-6, "{tag}: {tb_wall} vs {wall}");
            // TensorBoard stores scalars as f32.
            assert_eq!(tb_value as f32, value as f32, "{tag} at {step}");
        }
    }
}
