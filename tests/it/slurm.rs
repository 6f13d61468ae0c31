//! Grids on a real single-node Slurm cluster started by the test (`scripts/slurm-local.sh`):
//! submission as a job array, status, collect, `scancel`, `--resume` and the requeue of a cell
//! stopped by SIGTERM, and the checks that run
//! before anything is submitted. CI installs Slurm and sets `RETAIN_REQUIRE_SLURM=1`, which
//! makes a machine that cannot start the cluster a failure; elsewhere the cluster tests say
//! why they cannot run and return.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::common::{
    accuracy_cells, assert_success, dependency_present, live_log, read_parquet, repo,
};
use crate::grid::grid_file;

/// A running cluster; stopped (daemons and munged) when dropped, also when a test panics.
/// Slurm's daemons listen on fixed ports, so tests take turns through `CLUSTER_LOCK`.
struct Cluster {
    dir: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

static CLUSTER_LOCK: Mutex<()> = Mutex::new(());

impl Cluster {
    /// Starts one, or explains why this machine cannot (no Slurm installed, not root): a
    /// failure under `RETAIN_REQUIRE_SLURM`.
    fn start() -> Option<Self> {
        let installed = ["slurmctld", "slurmd", "sbatch", "munged"]
            .iter()
            .all(|p| on_path(p) || Path::new("/usr/sbin").join(p).exists());
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        let missing = match (installed, root) {
            (false, _) => "Slurm is not installed (`scripts/slurm-local.sh install`, as CI does)",
            (true, false) => "the Slurm cluster needs root",
            (true, true) => "",
        };
        if !dependency_present("RETAIN_REQUIRE_SLURM", installed && root, missing) {
            return None;
        }
        let turn = CLUSTER_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(repo().join("scripts/slurm-local.sh"))
            .arg("start")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Self { dir, _turn: turn })
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", self.conf()).current_dir(repo());
        command
    }

    fn retain(&self, args: &[&str]) -> Output {
        self.command(env!("CARGO_BIN_EXE_retain"))
            .args(args)
            .output()
            .unwrap()
    }

    /// Polls `squeue` until the job has left the queue (capped).
    fn wait(&self, job: &str) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(240) {
            let out = self
                .command("squeue")
                .args(["-h", "-j", job])
                .output()
                .unwrap();
            if out.status.success() && out.stdout.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("job {job} still queued after 240 s");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("scripts/slurm-local.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

fn on_path(program: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join(program).is_file())
}

fn job_id(out: &Output) -> String {
    assert_success(out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("submitted job "))
        .unwrap_or_else(|| panic!("no job id in: {stdout}"))
        .trim()
        .to_owned()
}

/// `(cell, scenario, trained_tasks, eval_task, correct)` rows of a collected grid, sorted.
fn accuracy_rows(results: &Path) -> Vec<(String, String, u32, u32, u64)> {
    let frame = read_parquet(&results.join("accuracy.parquet"));
    let col = |name: &str| frame.column(name).unwrap().clone();
    let (cell, scenario, trained, task, correct) = (
        col("cell"),
        col("scenario"),
        col("trained_tasks"),
        col("eval_task"),
        col("correct"),
    );
    let mut rows: Vec<_> = (0..frame.height())
        .map(|i| {
            (
                cell.str().unwrap().get(i).unwrap().to_owned(),
                scenario.str().unwrap().get(i).unwrap().to_owned(),
                trained.u32().unwrap().get(i).unwrap(),
                task.u32().unwrap().get(i).unwrap(),
                correct.u64().unwrap().get(i).unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn status_lines(cluster: &Cluster, grid: &str, output: &str) -> Vec<(String, String)> {
    let out = cluster.retain(&["grid", "status", grid, "--output", output]);
    assert_success(&out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split('\t');
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

#[test]
fn a_grid_on_slurm_matches_the_same_grid_run_locally() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let grid = grid_file(dir.path(), "slurm-grid", "\"seed\" = [0, 1]", "");
    let grid = grid.to_str().unwrap();
    let slurm_out = dir.path().join("slurm");
    let local_out = dir.path().join("local");
    let (slurm_s, local_s) = (slurm_out.to_str().unwrap(), local_out.to_str().unwrap());

    let job = job_id(&cluster.retain(&[
        "grid",
        "submit",
        grid,
        "--slurm",
        "--partition",
        "debug",
        "--output",
        slurm_s,
    ]));
    let script = std::fs::read_dir(slurm_out.join("slurm-grid/slurm"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "sbatch"))
        .expect("the sbatch script is kept");
    let text = std::fs::read_to_string(script).unwrap();
    assert!(
        text.contains("#SBATCH --array=0-1") && text.contains("#SBATCH --partition=debug"),
        "{text}"
    );
    cluster.wait(&job);

    let statuses = status_lines(&cluster, grid, slurm_s);
    assert_eq!(statuses.len(), 2);
    assert!(statuses.iter().all(|(_, s)| s == "done"), "{statuses:?}");
    assert_success(&cluster.retain(&["grid", "collect", grid, "--output", slurm_s]));
    assert_success(&cluster.retain(&["grid", "run", grid, "--output", local_s, "--quiet"]));

    let on_slurm = accuracy_rows(&slurm_out.join("slurm-grid"));
    let locally = accuracy_rows(&local_out.join("slurm-grid"));
    assert_eq!(on_slurm.len(), 2 * 2 * 4 * 3);
    assert_eq!(
        on_slurm, locally,
        "the cluster's matrices differ from the local run's"
    );
}

#[test]
fn a_cancelled_cell_is_missing_and_the_only_one_resubmitted() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let grid = grid_file(dir.path(), "cancel-grid", "\"seed\" = [0, 1, 2]", "");
    let grid = grid.to_str().unwrap();
    let out = dir.path().join("results");
    let out_s = out.to_str().unwrap();

    // One task at a time, so the last one is still pending when it is cancelled.
    let job = job_id(&cluster.retain(&[
        "grid",
        "submit",
        grid,
        "--slurm",
        "--array-parallelism",
        "1",
        "--output",
        out_s,
    ]));
    let cancel = cluster
        .command("scancel")
        .arg(format!("{job}_2"))
        .output()
        .unwrap();
    assert!(
        cancel.status.success(),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    cluster.wait(&job);

    let statuses = status_lines(&cluster, grid, out_s);
    let missing: Vec<&String> = statuses
        .iter()
        .filter(|(_, s)| s == "missing")
        .map(|(c, _)| c)
        .collect();
    let done = statuses.iter().filter(|(_, s)| s == "done").count();
    assert_eq!((missing.len(), done), (1, 2), "{statuses:?}");
    assert!(missing[0].contains("seed=2"), "{statuses:?}");

    let resumed = cluster.retain(&[
        "grid", "submit", grid, "--slurm", "--resume", "--output", out_s,
    ]);
    let job = job_id(&resumed);
    let slurm_dir = out.join("cancel-grid/slurm");
    let mut cell_files: Vec<PathBuf> = std::fs::read_dir(&slurm_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("cells-")
        })
        .collect();
    cell_files.sort();
    let resubmitted = std::fs::read_to_string(cell_files.last().unwrap()).unwrap();
    assert_eq!(
        resubmitted.lines().collect::<Vec<_>>(),
        vec![missing[0].as_str()]
    );
    cluster.wait(&job);
    assert!(
        status_lines(&cluster, grid, out_s)
            .iter()
            .all(|(_, s)| s == "done")
    );
}

#[test]
fn bad_submissions_fail_before_anything_is_submitted() {
    let dir = tempfile::tempdir().unwrap();
    let grid = grid_file(dir.path(), "bad-grid", "\"seed\" = [0]", "");
    let grid = grid.to_str().unwrap();
    let out_s = dir.path().join("results");
    let out_s = out_s.to_str().unwrap();

    // No sbatch on PATH.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_retain"))
        .args(["grid", "submit", grid, "--slurm", "--output", out_s])
        .env("PATH", empty.path())
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`sbatch` is not on PATH"));

    // A results folder that cannot be written (a file stands where the folder should be).
    let blocker = dir.path().join("blocked");
    std::fs::write(&blocker, b"").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_retain"))
        .args([
            "grid",
            "submit",
            grid,
            "--slurm",
            "--dry-run",
            "--output",
            blocker.to_str().unwrap(),
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not writable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A dry run writes a readable script and submits nothing.
    let out = Command::new(env!("CARGO_BIN_EXE_retain"))
        .args([
            "grid",
            "submit",
            grid,
            "--slurm",
            "--dry-run",
            "--output",
            out_s,
            "--time",
            "01:00:00",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("dry run: not submitted"));

    // An unknown partition, checked against the running cluster.
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let out = cluster.retain(&[
        "grid",
        "submit",
        grid,
        "--slurm",
        "--partition",
        "nosuch",
        "--output",
        out_s,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown partition `nosuch`") && stderr.contains("debug"),
        "{stderr}"
    );
    assert!(
        !Path::new(out_s).join("bad-grid/slurm/jobs.tsv").exists(),
        "nothing may be submitted"
    );
}

/// The job script's requeue branch, without a cluster: the generated script with its retain
/// command replaced by a stub that exits with `status`, and a stub `scontrol` that records
/// its arguments. Returns the script's exit status and the recorded `scontrol` call.
fn run_job_script_with_stub(status: i32) -> (Option<i32>, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_retain"))
        .current_dir(crate::common::repo())
        .args([
            "grid",
            "submit",
            "experiments/split-mnist-grid.toml",
            "--slurm",
        ])
        .arg("--dry-run")
        .arg("--output")
        .arg(dir.path())
        .arg("--data-root")
        .arg(crate::common::data_root())
        .output()
        .unwrap();
    crate::common::assert_success(&out);
    let slurm = dir.path().join("split-mnist-grid/slurm");
    let script = std::fs::read_dir(&slurm)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "sbatch"))
        .unwrap();
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("#SBATCH --requeue"), "{text}");
    assert!(text.contains("#SBATCH --signal=B:TERM@"), "{text}");
    let command = text
        .lines()
        .find(|l| l.contains(" grid cell ") && l.ends_with(" &"))
        .unwrap_or_else(|| panic!("no background cell command in {text}"));
    let stubbed = text.replace(command, &format!("sh -c 'exit {status}' &"));
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let record = dir.path().join("scontrol.args");
    let scontrol = bin.join("scontrol");
    std::fs::write(
        &scontrol,
        format!("#!/bin/sh\necho \"$@\" > '{}'\n", record.display()),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&scontrol)
        .status()
        .unwrap();
    let stub = dir.path().join("stub.sh");
    std::fs::write(&stub, stubbed).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ran = Command::new("bash")
        .arg(&stub)
        .env("PATH", path)
        .env("SLURM_ARRAY_JOB_ID", "7")
        .env("SLURM_ARRAY_TASK_ID", "1")
        .output()
        .unwrap();
    let call = std::fs::read_to_string(&record)
        .ok()
        .map(|s| s.trim().to_owned());
    (ran.status.code(), call)
}

/// A cell stopped by SIGTERM (status 75) requeues its own array task; one that completes or
/// fails does not.
#[test]
fn the_job_script_requeues_a_stopped_cell_only() {
    assert_eq!(
        run_job_script_with_stub(75),
        (Some(75), Some("requeue 7_1".to_owned()))
    );
    assert_eq!(run_job_script_with_stub(0), (Some(0), None));
    assert_eq!(run_job_script_with_stub(1), (Some(1), None));
}

/// SIGTERM to a running array task's batch shell (as at preemption or the time limit): the
/// script forwards it to the cell, which stops checkpointed after its task with status 75;
/// the script requeues its own array task, which runs again, continues from the checkpoint
/// and completes with the matrix of the same cell run uninterrupted.
#[test]
fn a_cell_stopped_by_sigterm_on_slurm_is_requeued_and_completes_exactly() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let grid = grid_file(dir.path(), "requeue-grid", "\"seed\" = [0]", "");
    // Tasks long enough that the signal lands while a later task trains.
    let text = std::fs::read_to_string(&grid).unwrap();
    let text = text.replace("\ntasks = 3\n", "\ntasks = 4\n").replace(
        "train_samples_per_task = 500",
        "train_samples_per_task = 1000",
    );
    std::fs::write(&grid, text).unwrap();
    let grid = grid.to_str().unwrap();
    let slurm_out = dir.path().join("slurm");
    let local_out = dir.path().join("local");
    let (slurm_s, local_s) = (slurm_out.to_str().unwrap(), local_out.to_str().unwrap());

    let job = job_id(&cluster.retain(&[
        "grid",
        "submit",
        grid,
        "--slurm",
        "--partition",
        "debug",
        "--output",
        slurm_s,
    ]));
    let task = format!("{job}_0");
    let cell = slurm_out.join("requeue-grid/cells/seed=0");
    let checkpoint = cell.join("resume/checkpoint.safetensors");
    let deadline = Instant::now() + Duration::from_secs(300);
    // The checkpoint after task 0: the cell now trains task 1.
    while !checkpoint.is_file() {
        assert!(
            !cell.join("manifest.json").exists(),
            "the cell ended before it was signalled"
        );
        assert!(Instant::now() < deadline, "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let term = cluster
        .command("scancel")
        .args(["--signal=TERM", "--batch", &task])
        .output()
        .unwrap();
    assert!(
        term.status.success(),
        "{}",
        String::from_utf8_lossy(&term.stderr)
    );

    // Requeued, run again and left the queue, the cell complete.
    let deadline = Instant::now() + Duration::from_secs(400);
    loop {
        let queued = cluster
            .command("squeue")
            .args(["-h", "-j", &job])
            .output()
            .unwrap();
        if queued.status.success() && queued.stdout.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} still queued after 400 s: {}",
            String::from_utf8_lossy(&queued.stdout)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let shown = cluster
        .command("scontrol")
        .args(["show", "job", &task])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("Restarts=1 ") && shown.contains("JobState=COMPLETED"),
        "the array task ran twice and completed: {shown}"
    );
    let statuses = status_lines(&cluster, grid, slurm_s);
    assert_eq!(statuses, vec![("seed=0".to_owned(), "done".to_owned())]);
    assert!(
        !cell.join("resume").exists(),
        "a complete cell keeps no checkpoint"
    );

    assert_success(&cluster.retain(&["grid", "run", grid, "--output", local_s, "--quiet"]));
    let whole = local_out.join("requeue-grid/cells/seed=0");
    let (files, events) = live_log(&cell);
    let (whole_files, whole_events) = live_log(&whole);
    assert_eq!(
        (files, whole_files),
        (2, 1),
        "one TensorBoard file per process"
    );
    assert_eq!(events, whole_events, "each event exactly once");
    let evaluations = |events: &[(String, u64)]| {
        events
            .iter()
            .filter(|(kind, _)| kind == "evaluation")
            .count()
    };
    assert!(evaluations(&whole_events) >= 4, "{whole_events:?}");
    assert_eq!(evaluations(&events), evaluations(&whole_events));
    assert_eq!(accuracy_cells(&cell), accuracy_cells(&whole));
}
