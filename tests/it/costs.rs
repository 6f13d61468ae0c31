//! What methods cost next to what they retain: `costs` in the manifest, columns of the run's
//! `metrics.parquet` and the grid's `runs.parquet`, `retain report`, and the accuracy against
//! parameters chart.

use std::path::Path;

use crate::common::{assert_success, data_root, read_parquet, retain, toml_str};

/// A grid of naive, BitFit and LoRA on a 784-8-10 MLP: 2 Split-MNIST tasks, 200 training and
/// 100 test samples per task.
fn grid(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"name = "costs"
seed = 0
device = "cpu"
output = {output}
data_root = {data}

[stream]
kind = "split"
dataset = "mnist"
tasks = 2
classes_per_task = 2
train_samples_per_task = 200
test_samples_per_task = 100

[model]
kind = "mlp"
hidden = [8]

[training.optimizer]
kind = "sgd"
lr = 0.05

[method]
name = "naive"

[grid]
devices = "cpu"
"method.name" = ["naive", "bitfit", "lora"]
"#,
        output = toml_str(&dir.join("results")),
        data = toml_str(&data_root()),
    );
    let path = dir.join("costs.toml");
    std::fs::write(&path, text).unwrap();
    path
}

// Sizes of the 784-8-10 MLP, in float32 elements.
const HIDDEN_WEIGHT: u64 = 784 * 8;
const HIDDEN_BIAS: u64 = 8;
const HEAD: u64 = 8 * 10 + 10;

#[test]
fn costs_are_measured_per_method_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let grid = grid(dir.path());
    assert_success(&retain(&["grid", "run", grid.to_str().unwrap(), "--quiet"]));
    let results = dir.path().join("results/costs");
    let costs = |method: &str| -> serde_json::Value {
        let path = results.join(format!("cells/method={method}/manifest.json"));
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(
            manifest["costs"]["trainable_parameters"],
            manifest["trainable_parameters"]
        );
        assert_eq!(
            manifest["costs"]["seconds_per_step"],
            manifest["timings"]["seconds_per_step"]
        );
        manifest["costs"].clone()
    };

    // Naive: everything trains, nothing is frozen or kept aside.
    let naive = costs("naive");
    assert_eq!(
        naive["trainable_parameters"],
        HIDDEN_WEIGHT + HIDDEN_BIAS + HEAD
    );
    assert_eq!(naive["frozen_base_bytes"], 0);
    assert_eq!(naive["method_state_bytes"], 0);
    assert_eq!(naive["state_bytes_per_task"], 0.0);
    assert!(naive["seconds_per_step"].as_f64().unwrap() > 0.0);

    // BitFit: the hidden weight matrix is frozen; biases and the head train.
    let bitfit = costs("bitfit");
    assert_eq!(bitfit["trainable_parameters"], HIDDEN_BIAS + HEAD);
    assert_eq!(bitfit["frozen_base_bytes"], HIDDEN_WEIGHT * 4);
    assert_eq!(bitfit["method_state_bytes"], 0);

    // LoRA (rank 8 on `hidden.0`): the backbone layer is frozen; each task keeps its adapter
    // (A: 8×784, B: 8×8) and head in float32, and for task inference its 2 classes (int64)
    // and their prototypes (2 × 8 features, float32).
    let lora = costs("lora");
    let adapter = 8 * 784 + 8 * 8;
    let per_task = (adapter + HEAD) * 4 + 2 * 8 + 2 * 8 * 4;
    assert_eq!(lora["trainable_parameters"], adapter + HEAD);
    assert_eq!(lora["frozen_base_bytes"], (HIDDEN_WEIGHT + HIDDEN_BIAS) * 4);
    assert_eq!(lora["state_bytes_per_task"], per_task as f64);
    assert_eq!(lora["method_state_bytes"], 2 * per_task);

    // The run's metrics file carries the costs on each read-out's row.
    let metrics = read_parquet(&results.join("cells/method=lora/metrics.parquet"));
    let state = metrics.column("method_state_bytes").unwrap().u64().unwrap();
    assert!(state.into_iter().all(|s| s == Some(2 * per_task)));
    let frozen = metrics.column("frozen_base_bytes").unwrap().u64().unwrap();
    assert!(
        frozen
            .into_iter()
            .all(|f| f == Some((HIDDEN_WEIGHT + HIDDEN_BIAS) * 4))
    );

    // The grid's runs table, in cell order (naive, bitfit, lora).
    let runs = read_parquet(&results.join("runs.parquet"));
    let per_task_column = runs.column("state_bytes_per_task").unwrap().f64().unwrap();
    assert_eq!(
        per_task_column.into_iter().collect::<Vec<_>>(),
        [Some(0.0), Some(0.0), Some(per_task as f64)]
    );
    let frozen = runs.column("frozen_base_bytes").unwrap().u64().unwrap();
    assert_eq!(
        frozen.into_iter().collect::<Vec<_>>(),
        [
            Some(0),
            Some(HIDDEN_WEIGHT * 4),
            Some((HIDDEN_WEIGHT + HIDDEN_BIAS) * 4)
        ]
    );

    // The report shows them next to the metrics.
    let out = retain(&["report", results.to_str().unwrap()]);
    assert_success(&out);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("params") && report.contains("state/task") && report.contains("frozen"),
        "{report}"
    );
    let lora_row = report
        .lines()
        .find(|l| l.contains("method=lora") && l.contains("class_il"))
        .unwrap_or_else(|| panic!("{report}"));
    // 25 784 bytes per task = 25.18 KiB; 25 120 frozen bytes = 24.53 KiB.
    assert!(
        lora_row.contains(&(adapter + HEAD).to_string())
            && lora_row.contains("25.18 KiB")
            && lora_row.contains("24.53 KiB"),
        "{lora_row}"
    );

    // ACC against trainable parameters: one chart, PNG and SVG.
    let png = std::fs::read(results.join("plots/accuracy-vs-parameters.png")).unwrap();
    assert!(png.len() > 5_000, "{} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(results.join("plots/accuracy-vs-parameters.svg")).unwrap();
    // Points are labelled by method (the axis name left out), series by read-out.
    for label in ["naive", "bitfit", "lora", "class_il", "task_il"] {
        let text = format!("\n{label}\n</text>");
        assert!(svg.contains(&text), "{label} missing from the chart");
    }
}

/// Experience replay keeps its reservoir beside the model: `--save-checkpoint` writes it to
/// `method-state.safetensors`, and its bytes are the run's `method_state_bytes` in the
/// manifest and in `metrics.parquet`.
#[test]
fn replay_saves_its_memory_and_counts_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().to_str().unwrap();
    let data = data_root();
    let out = retain(&[
        "run",
        "experiments/split-mnist.toml",
        "--device",
        "cpu",
        "--output",
        output,
        "--data-root",
        data.to_str().unwrap(),
        "--run-name",
        "replay",
        "--quiet",
        "--save-checkpoint",
        "--set",
        "stream.tasks=2",
        "--set",
        "stream.train_samples_per_task=100",
        "--set",
        "stream.test_samples_per_task=50",
        "--set",
        "method.name=replay",
        "--set",
        "method.buffer_size=30",
    ]);
    assert_success(&out);
    let run = dir.path().join("split-mnist/replay");
    let state = tch::Tensor::read_safetensors(run.join("method-state.safetensors")).unwrap();
    let mut names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["memory.draws", "memory.indices", "memory.offered"]);
    let tensor = |name: &str| &state.iter().find(|(n, _)| n == name).unwrap().1;
    assert_eq!(tensor("memory.offered").int64_value(&[]), 200);
    assert_eq!(tensor("memory.indices").size(), [30]);
    // 30 int64 indices and two int64 counts.
    let bytes = 30 * 8 + 2 * 8;
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["costs"]["method_state_bytes"], bytes);
    assert_eq!(
        manifest["costs"]["state_bytes_per_task"],
        bytes as f64 / 2.0
    );
    let metrics = read_parquet(&run.join("metrics.parquet"));
    let column = metrics.column("method_state_bytes").unwrap().u64().unwrap();
    assert!(!column.is_empty());
    assert!(column.into_iter().all(|s| s == Some(bytes)));
}
