//! Grids end to end: resume after a kill, failed cells, collected Parquet read by pyarrow,
//! plots, `report` and `check`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use polars::prelude::*;

use crate::common::{assert_success, data_root, read_parquet, repo, retain, toml_str};

/// A reduced Split-MNIST grid file (3 tasks, 500/300 samples per task, CPU) writing under
/// `dir`, with `grid` as the body of its `[grid]` table and `extra` appended.
pub fn grid_file(dir: &Path, name: &str, grid: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"name = "{name}"
seed = 0
device = "cpu"
output = {output}
data_root = {data}

[stream]
kind = "split"
dataset = "mnist"
tasks = 3
classes_per_task = 2
train_samples_per_task = 500
test_samples_per_task = 300

[model]
kind = "mlp"
hidden = [100, 100]

[training]
eval_batch_size = 1000

[training.optimizer]
kind = "sgd"
lr = 0.05

[method]
name = "naive"

[grid]
devices = "cpu"
{grid}
{extra}
"#,
        output = toml_str(&dir.join("results")),
        data = toml_str(&data_root()),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn status_of(cell_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(cell_dir.join("manifest.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
    manifest["status"].as_str().map(str::to_owned)
}

/// Cell id → manifest text of every cell whose manifest says `complete`.
fn complete_manifests(cells: &Path) -> std::collections::BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(cells) else {
        return Default::default();
    };
    entries
        .filter_map(|e| {
            let dir = e.ok()?.path();
            (status_of(&dir)? == "complete").then(|| {
                (
                    dir.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(dir.join("manifest.json")).unwrap(),
                )
            })
        })
        .collect()
}

/// Processes whose command line mentions `needle` (Linux `/proc`).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(needle)
                .then_some(pid)
        })
        .collect()
}

fn strings(frame: &DataFrame, column: &str) -> Vec<String> {
    frame
        .column(column)
        .unwrap()
        .str()
        .unwrap()
        .into_iter()
        .map(|v| v.unwrap_or("").to_owned())
        .collect()
}

#[test]
fn an_interrupted_grid_resumes_without_rerunning_complete_cells() {
    let dir = tempfile::tempdir().unwrap();
    let grid = grid_file(
        dir.path(),
        "resume",
        "runs_per_device = 1\n\"seed\" = [0, 1, 2]",
        "",
    );
    let cells = dir.path().join("results/resume/cells");

    let mut runner = Command::new(env!("CARGO_BIN_EXE_retain"))
        .args(["grid", "run", grid.to_str().unwrap(), "--quiet"])
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    while complete_manifests(&cells).is_empty() {
        assert!(Instant::now() < deadline, "no cell completed in time");
        assert!(
            runner.try_wait().unwrap().is_none(),
            "the grid ended before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL to the runner alone: its cell process must notice and stop by itself.
    runner.kill().unwrap();
    runner.wait().unwrap();
    let needle = dir.path().to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes_mentioning(needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "cell processes outlived the runner: {:?}",
            processes_mentioning(needle)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = complete_manifests(&cells);
    assert!(
        !before.is_empty() && before.len() < 3,
        "interrupted mid-grid: {before:?}"
    );

    let out = retain(&["grid", "run", grid.to_str().unwrap(), "--quiet"]);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("runs/hour"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{} complete", before.len())),
        "{stderr}"
    );

    let after = complete_manifests(&cells);
    assert_eq!(after.len(), 3);
    for (id, manifest) in &before {
        assert_eq!(&after[id], manifest, "complete cell {id} was run again");
    }

    let results = dir.path().join("results/resume");
    let runs = read_parquet(&results.join("runs.parquet"));
    assert_eq!(strings(&runs, "cell"), ["seed=0", "seed=1", "seed=2"]);
    assert!(strings(&runs, "status").iter().all(|s| s == "complete"));
    assert_eq!(strings(&runs, "axis.seed"), ["0", "1", "2"]);
    let params = runs.column("trainable_parameters").unwrap().u64().unwrap();
    // 784·100 + 100 + 100·100 + 100 + 100·10 + 10.
    assert!(params.into_iter().all(|p| p == Some(89_610)));

    // Every (cell, read-out, row, task) exactly once: 3 cells × 2 read-outs × 4 rows × 3 tasks.
    let accuracy = read_parquet(&results.join("accuracy.parquet"));
    assert_eq!(accuracy.height(), 3 * 2 * 4 * 3);
    let cell = strings(&accuracy, "cell");
    let scenario = strings(&accuracy, "scenario");
    let trained = accuracy.column("trained_tasks").unwrap().u32().unwrap();
    let task = accuracy.column("eval_task").unwrap().u32().unwrap();
    let keys: BTreeSet<_> = (0..accuracy.height())
        .map(|i| {
            (
                cell[i].clone(),
                scenario[i].clone(),
                trained.get(i).unwrap(),
                task.get(i).unwrap(),
            )
        })
        .collect();
    assert_eq!(keys.len(), accuracy.height(), "duplicated rows");
    assert_eq!(
        read_parquet(&results.join("metrics.parquet")).height(),
        3 * 2
    );

    // The report aggregates the three seeds of the one configuration.
    let out = retain(&["report", results.to_str().unwrap()]);
    assert_success(&out);
    let report = String::from_utf8_lossy(&out.stdout);
    let class_il = report
        .lines()
        .find(|l| l.contains("class_il"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        class_il.contains("3/3") && class_il.contains(" ± "),
        "{report}"
    );
}

#[test]
fn a_diverging_cell_fails_alone_and_is_retried_only_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let grid = grid_file(
        dir.path(),
        "nan",
        "runs_per_device = 2\n\"training.optimizer.lr\" = [0.05, 1e30]",
        "[published]\ncitation = \"Example et al. 2020, Table 1\"\n\"naive.class_il.acc\" = 19.62\n",
    );
    let out = retain(&["grid", "run", grid.to_str().unwrap(), "--quiet"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed cell makes the grid fail"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 complete, 1 failed"), "{stdout}");
    assert!(
        stdout.contains("failed  lr=1e30: training diverged"),
        "{stdout}"
    );

    let results = dir.path().join("results/nan");
    let runs = read_parquet(&results.join("runs.parquet"));
    assert_eq!(strings(&runs, "cell"), ["lr=0.05", "lr=1e30"]);
    assert_eq!(strings(&runs, "status"), ["complete", "failed"]);
    assert_eq!(
        strings(&runs, "axis.training.optimizer.lr"),
        ["0.05", "1e30"]
    );
    let error = runs.column("error").unwrap().str().unwrap().clone();
    assert_eq!(error.get(0), None);
    assert!(error.get(1).unwrap().contains("diverged"), "{error:?}");
    let wall = runs.column("wall_seconds").unwrap().f64().unwrap().clone();
    assert!(wall.get(0).unwrap() > 0.0 && wall.get(1).is_none());
    // No device memory figure is claimed.
    assert_eq!(
        runs.column("peak_device_memory_bytes")
            .unwrap()
            .null_count(),
        2
    );
    let metrics = read_parquet(&results.join("metrics.parquet"));
    assert_eq!(strings(&metrics, "cell"), ["lr=0.05", "lr=0.05"]);

    // Collecting again rewrites identical files.
    let files = ["runs.parquet", "accuracy.parquet", "metrics.parquet"];
    let first: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(results.join(f)).unwrap())
        .collect();
    assert_success(&retain(&["grid", "collect", grid.to_str().unwrap()]));
    for (f, bytes) in files.iter().zip(&first) {
        assert_eq!(
            &std::fs::read(results.join(f)).unwrap(),
            bytes,
            "{f} changed"
        );
    }

    // Plots of every kind, in both formats, with real content.
    for name in [
        "acc-class_il",
        "acc-task_il",
        "accuracy-vs-parameters",
        "tasks-class_il-lr=0.05",
        "tasks-task_il-lr=0.05",
    ] {
        for ext in ["png", "svg"] {
            let path = results.join(format!("plots/{name}.{ext}"));
            let size = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .len();
            assert!(size > 5_000, "{} is {size} bytes", path.display());
            if ext == "png" {
                let bytes = std::fs::read(&path).unwrap();
                assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
            }
        }
    }

    // The report shows the published number and its source.
    let out = retain(&["report", results.to_str().unwrap(), "--format", "markdown"]);
    assert_success(&out);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("| lr=0.05 | naive | class_il | 1/1 |"),
        "{report}"
    );
    assert!(report.contains("ACC 19.62"), "{report}");
    assert!(report.contains("Example et al. 2020, Table 1"), "{report}");
    assert!(report.contains("1 of 2 cells are not complete"), "{report}");

    // A failed cell is reported and skipped on a rerun...
    let failed_log = results.join("cells/lr=1e30/cell.log");
    std::fs::remove_file(&failed_log).unwrap();
    let out = retain(&["grid", "run", grid.to_str().unwrap(), "--quiet"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed earlier (skipped)  lr=1e30"));
    assert!(!failed_log.exists(), "the failed cell ran again");
    // ...and retried when asked (it diverges again).
    let out = retain(&[
        "grid",
        "run",
        grid.to_str().unwrap(),
        "--quiet",
        "--retry-failed",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(failed_log.exists(), "--retry-failed did not rerun the cell");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 cell(s) ran"));
}

#[test]
fn collected_parquet_reads_in_pyarrow_with_the_documented_schema() {
    let dir = tempfile::tempdir().unwrap();
    let grid = grid_file(dir.path(), "py", "\"seed\" = [0]", "");
    assert_success(&retain(&["grid", "run", grid.to_str().unwrap(), "--quiet"]));
    let results = dir.path().join("results/py");
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .args(["-c", "import pyarrow"])
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect("a Python with pyarrow on PATH (scripts/torch-env.sh puts the project's first)");
    let script = r#"
import sys, pyarrow.parquet as pq
for name in ["runs", "accuracy", "metrics"]:
    t = pq.read_table(f"{sys.argv[1]}/{name}.parquet")
    print(name, t.num_rows, ",".join(f"{f.name}:{f.type}" for f in t.schema))
"#;
    let out = Command::new(python)
        .args(["-c", script, results.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Polars writes strings as Arrow string views.
    assert_eq!(
        lines[0],
        "runs 1 cell:string_view,axis.seed:string_view,method:string_view,seed:uint64,\
         status:string_view,error:string_view,device:string_view,wall_seconds:double,\
         seconds_per_step:double,steps:uint64,trainable_parameters:uint64,\
         method_state_bytes:uint64,state_bytes_per_task:double,frozen_base_bytes:uint64,\
         peak_host_memory_bytes:uint64,peak_device_memory_bytes:uint64"
    );
    assert_eq!(
        lines[1],
        "accuracy 24 cell:string_view,run:string_view,method:string_view,seed:uint64,\
         scenario:string_view,trained_tasks:uint32,eval_task:uint32,correct:uint64,\
         samples:uint64,accuracy:double"
    );
    assert_eq!(
        lines[2],
        "metrics 2 cell:string_view,run:string_view,method:string_view,seed:uint64,\
         scenario:string_view,tasks:uint32,acc:double,bwt:double,fwt:double,forgetting:double,\
         average_incremental_accuracy:double,trainable_parameters:uint64,\
         method_state_bytes:uint64,state_bytes_per_task:double,frozen_base_bytes:uint64,\
         seconds_per_step:double,training_loss:string_view,anytime_accuracy:double,\
         lca:double,lca_beta:uint64,intransigence:double,final_intransigence:double"
    );

    // A cell runs alone too (a cluster job): skipped when complete, rerun with --force,
    // reporting progress as lines for a parent to read.
    let cell = ["grid", "cell", grid.to_str().unwrap(), "seed=0"];
    let out = retain(&cell);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cell seed=0 is complete"));
    let out = retain(&[&cell[..], &["--force", "--progress-lines"]].concat());
    assert_success(&out);
    let progress: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("@progress task"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        progress,
        [
            "@progress task 1 3 50",
            "@progress task-done 1",
            "@progress task 2 3 50",
            "@progress task-done 2",
            "@progress task 3 3 50",
            "@progress task-done 3"
        ]
    );
    let out = retain(&["grid", "cell", grid.to_str().unwrap(), "seed=7"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cell `seed=7`"));
}

#[test]
fn check_passes_on_the_baseline_and_fails_on_an_injected_regression() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("results");
    let out = retain(&[
        "grid",
        "run",
        "experiments/check-split-mnist.toml",
        "--output",
        output.to_str().unwrap(),
        "--data-root",
        data_root().to_str().unwrap(),
        "--quiet",
    ]);
    assert_success(&out);
    let results = output.join("check-split-mnist");
    let baseline = repo().join("results/baselines/check-split-mnist.toml");
    let out = retain(&[
        "check",
        results.to_str().unwrap(),
        "--baseline",
        baseline.to_str().unwrap(),
    ]);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("all 7 metrics within tolerance"));

    // Class-IL ACC is about 31.9; a baseline of 41.9 ± 2 must fail, saying by how much.
    let text = std::fs::read_to_string(&baseline).unwrap();
    let injected = text.replacen("value = 31.89", "value = 41.89", 1);
    assert_ne!(injected, text);
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, injected).unwrap();
    let out = retain(&[
        "check",
        results.to_str().unwrap(),
        "--baseline",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("moved: acc naive class_il by -10.00 points (41.89 → 31.89"),
        "{stdout}"
    );

    // The same baseline as CSV, and a metric the results lack.
    let csv = dir.path().join("b.csv");
    std::fs::write(
        &csv,
        "metric,method,scenario,value,tolerance\nacc,naive,class_il,31.89,2\n\
         acc,ewc,class_il,50,2\n",
    )
    .unwrap();
    let out = retain(&[
        "check",
        results.to_str().unwrap(),
        "--baseline",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("missing: acc ewc class_il is not in the results")
    );
    // Not a collected grid: a usage error.
    let out = retain(&[
        "check",
        dir.path().to_str().unwrap(),
        "--baseline",
        baseline.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn invalid_grid_keys_are_rejected_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let grid = grid_file(
        dir.path(),
        "bad",
        "\"seed\" = [0, 1]\n\"training.optimizer.lrr\" = [0.1]",
        "",
    );
    let out = retain(&["grid", "run", grid.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("grid axis `training.optimizer.lrr`"),
        "{stderr}"
    );
    assert!(!dir.path().join("results").exists(), "something ran");

    // A method the registry does not know, named with its cell.
    let grid = grid_file(
        dir.path(),
        "bad2",
        "\"method.name\" = [\"naive\", \"naiive\"]",
        "",
    );
    let out = retain(&["grid", "run", grid.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cell `method=naiive`: unknown method `naiive`"),
        "{stderr}"
    );
    assert!(!dir.path().join("results").exists(), "something ran");

    // A missing dataset: one error with the fetch command, no cell started.
    let grid = grid_file(dir.path(), "nodata", "\"seed\" = [0, 1]", "");
    let empty = dir.path().join("empty");
    let out = retain(&[
        "grid",
        "run",
        grid.to_str().unwrap(),
        "--data-root",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "retain data fetch mnist --root {}",
            empty.display()
        )),
        "{stderr}"
    );
    assert!(!dir.path().join("results").exists(), "something ran");
}

/// Writes a complete cell folder by hand: a 2-task class-IL matrix given as correct counts
/// out of 100 per cell, its metrics row and a manifest.
fn fake_cell(dir: &Path, id: &str, method: &str, correct: [[u64; 2]; 3]) {
    std::fs::create_dir_all(dir).unwrap();
    let rows: Vec<(u32, u32, u64)> = (0..3u32)
        .flat_map(|i| (0..2u32).map(move |j| (i, j, correct[i as usize][j as usize])))
        .collect();
    let n = rows.len();
    let mut accuracy = DataFrame::new(
        n,
        vec![
            Column::new("run".into(), vec![id; n]),
            Column::new("method".into(), vec![method; n]),
            Column::new("seed".into(), vec![0u64; n]),
            Column::new("scenario".into(), vec!["class_il"; n]),
            Column::new(
                "trained_tasks".into(),
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            ),
            Column::new(
                "eval_task".into(),
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            ),
            Column::new(
                "correct".into(),
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            ),
            Column::new("samples".into(), vec![100u64; n]),
            Column::new(
                "accuracy".into(),
                rows.iter().map(|r| r.2 as f64 / 100.0).collect::<Vec<_>>(),
            ),
        ],
    )
    .unwrap();
    let write = |name: &str, df: &mut DataFrame| {
        ParquetWriter::new(std::fs::File::create(dir.join(name)).unwrap())
            .finish(df)
            .unwrap();
    };
    write("accuracy.parquet", &mut accuracy);
    let last = correct[2];
    let mut metrics = DataFrame::new(
        1,
        vec![
            Column::new("run".into(), [id]),
            Column::new("method".into(), [method]),
            Column::new("seed".into(), [0u64]),
            Column::new("scenario".into(), ["class_il"]),
            Column::new("tasks".into(), [2u32]),
            Column::new("acc".into(), [(last[0] + last[1]) as f64 / 200.0]),
            Column::new("bwt".into(), [Some(0.0)]),
            Column::new("fwt".into(), [Some(0.0)]),
            Column::new("forgetting".into(), [Some(0.0)]),
            Column::new("average_incremental_accuracy".into(), [0.5]),
        ],
    )
    .unwrap();
    write("metrics.parquet", &mut metrics);
    std::fs::write(
        dir.join("manifest.json"),
        format!(
            r#"{{"status": "complete", "method": "{method}", "seed": 0, "device": "cpu",
                "wall_seconds": 2.0, "trainable_parameters": 1000,
                "timings": {{"steps": 100, "seconds_per_step": 0.001}}}}"#
        ),
    )
    .unwrap();
}

#[test]
fn collect_computes_intransigence_against_the_matching_joint_cell() {
    let dir = tempfile::tempdir().unwrap();
    let grid = grid_file(
        dir.path(),
        "joint",
        "\"method.name\" = [\"naive\", \"joint\"]\n\"seed\" = [0]",
        "",
    );
    let cells = dir.path().join("results/joint/cells");
    // R[k,k]: naive (0.90, 0.95), joint (0.95, 0.92).
    fake_cell(
        &cells.join("method=naive,seed=0"),
        "method=naive,seed=0",
        "naive",
        [[10, 10], [90, 0], [0, 95]],
    );
    fake_cell(
        &cells.join("method=joint,seed=0"),
        "method=joint,seed=0",
        "joint",
        [[10, 10], [95, 0], [90, 92]],
    );
    assert_success(&retain(&["grid", "collect", grid.to_str().unwrap()]));
    let metrics = read_parquet(&dir.path().join("results/joint/metrics.parquet"));
    assert_eq!(
        strings(&metrics, "cell"),
        ["method=naive,seed=0", "method=joint,seed=0"]
    );
    let intransigence = metrics.column("intransigence").unwrap().f64().unwrap();
    // ((0.95 − 0.90) + (0.92 − 0.95)) / 2 = 0.01; none for the joint cell itself.
    assert!((intransigence.get(0).unwrap() - 0.01).abs() < 1e-12);
    assert_eq!(intransigence.get(1), None);

    let out = retain(&["report", dir.path().join("results/joint").to_str().unwrap()]);
    assert_success(&out);
    let report = String::from_utf8_lossy(&out.stdout);
    let naive = report
        .lines()
        .find(|l| l.contains("method=naive"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(report.contains("intransigence"), "{report}");
    assert!(naive.trim_end().ends_with("1.00"), "{report}");
}

/// A cell whose method cannot train the grid's model (prompt tuning on an MLP) is refused,
/// naming the cell and the key, before any cell runs: the valid cells beside it do not start.
#[test]
fn a_cell_whose_method_does_not_fit_the_model_is_refused_before_any_cell_runs() {
    let dir = tempfile::tempdir().unwrap();
    let grid = grid_file(
        dir.path(),
        "misfit",
        "\"method.name\" = [\"naive\", \"replay\", \"prompt\"]",
        "",
    );
    let out = retain(&["grid", "run", grid.to_str().unwrap(), "--quiet"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cell `method=prompt`"), "{stderr}");
    assert!(stderr.contains("model.kind"), "{stderr}");
    assert!(!dir.path().join("results").exists(), "a cell ran");
}
