//! `retain grid submit --slurm` and `retain grid status`: grids on a Slurm cluster.
//!
//! A grid becomes one job array: array task `i` runs cell `i` of a cells file with
//! `retain grid cell`, exactly as the local runner's children do, writing into the shared results
//! folder. Nothing Slurm-specific is stored in the results: a cell's `manifest.json` says whether
//! it is complete or failed, so `grid collect` and `grid status` work the same for local and
//! cluster runs. Each submission keeps, under `<results>/slurm/`:
//!
//! | file | content |
//! |---|---|
//! | `submit-<stamp>.sbatch` | the script, readable and resubmittable by hand |
//! | `cells-<stamp>.txt` | the cell ids of the array, line `i + 1` for array task `i` |
//! | `jobs.tsv` | one line per submission: job id, cells file |
//! | `logs/<job>_<task>.out` | each array task's output |
//!
//! Every check that can fail (sbatch on `PATH`, the partition, a writable results folder, the
//! grid itself, the methods and datasets) runs before anything is submitted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow};
use retain_fs::write_atomically;
use retain_grid::CellStatus;

use super::setup::{self, Loaded};
use crate::cli::{GridArgs, GridSubmitArgs};
use crate::provenance::unix_seconds;
use crate::usage::UsageError;

/// Submits the grid's cells (all, or with `--resume` only the missing and failed ones).
pub fn submit(args: &GridSubmitArgs) -> Result<()> {
    if !args.slurm {
        return Err(UsageError::new(
            "grid submit needs a scheduler: pass --slurm (the only one supported)",
        )
        .into());
    }
    let loaded = setup::load(&args.grid)?;
    setup::check_methods(&loaded)?;
    setup::check_datasets(&loaded)?;
    let sbatch = if args.dry_run {
        None
    } else {
        Some(find_on_path("sbatch")?)
    };
    if let (Some(partition), false) = (&args.partition, args.dry_run) {
        check_partition(partition)?;
    }
    let results = absolute(&loaded.spec.results_dir())?;
    let slurm_dir = results.join("slurm");
    ensure_writable(&slurm_dir.join("logs"))?;

    let mut cells: Vec<&str> = Vec::new();
    for cell in &loaded.spec.cells {
        if !args.resume || CellStatus::of(&loaded.spec.cell_dir(cell))? != CellStatus::Complete {
            cells.push(cell.id.as_str());
        }
    }
    if cells.is_empty() {
        println!("every cell is complete; nothing to submit");
        return Ok(());
    }

    let stamp = unique_stamp(&slurm_dir);
    let cells_file = slurm_dir.join(format!("cells-{stamp}.txt"));
    let script_file = slurm_dir.join(format!("submit-{stamp}.sbatch"));
    write_atomically(&cells_file, (cells.join("\n") + "\n").as_bytes())?;
    let script = sbatch_script(&loaded, args, &cells, &cells_file, &slurm_dir)?;
    write_atomically(&script_file, script.as_bytes())?;
    println!("wrote {} ({} cells)", script_file.display(), cells.len());

    let Some(sbatch) = sbatch else {
        println!(
            "dry run: not submitted; submit with `sbatch {}`",
            script_file.display()
        );
        return Ok(());
    };
    let output = Command::new(&sbatch)
        .arg("--parsable")
        .arg(&script_file)
        .output()
        .with_context(|| format!("cannot run {}", sbatch.display()))?;
    if !output.status.success() {
        return Err(anyhow!(
            "sbatch rejected {}: {}",
            script_file.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let job = String::from_utf8_lossy(&output.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut jobs = std::fs::read_to_string(slurm_dir.join("jobs.tsv")).unwrap_or_default();
    writeln!(jobs, "{job}\t{}", cells_file.display())?;
    write_atomically(&slurm_dir.join("jobs.tsv"), jobs.as_bytes())?;
    println!("submitted job {job}");
    Ok(())
}

/// How long before the time limit Slurm sends the job script SIGTERM (`--signal=B:TERM@…`),
/// time for the cell to finish its task and checkpoint.
const TERM_BEFORE_LIMIT_SECONDS: u32 = 300;

/// The sbatch script: one array task per cell, each running that cell alone; SIGTERM makes
/// the cell stop at a task boundary (status 75), and the task then requeues itself.
fn sbatch_script(
    loaded: &Loaded,
    args: &GridSubmitArgs,
    cells: &[&str],
    cells_file: &Path,
    slurm_dir: &Path,
) -> Result<String> {
    let binary = std::env::current_exe().context("cannot locate the retain binary")?;
    let workdir = std::env::current_dir()?;
    let grid_file = absolute(&loaded.path)?;
    let name = format!("retain-{}", loaded.spec.base.name);
    let last = cells.len() - 1;
    let array = match args.array_parallelism {
        Some(k) => format!("0-{last}%{k}"),
        None => format!("0-{last}"),
    };
    let mut s = String::new();
    writeln!(s, "#!/usr/bin/env bash")?;
    writeln!(
        s,
        "# Grid {} ({} cells) as a Slurm job array.",
        grid_file.display(),
        cells.len()
    )?;
    writeln!(
        s,
        "# Array task i runs line i+1 of {}.",
        cells_file.display()
    )?;
    writeln!(s, "#SBATCH --job-name={name}")?;
    writeln!(s, "#SBATCH --array={array}")?;
    if let Some(partition) = &args.partition {
        writeln!(s, "#SBATCH --partition={partition}")?;
    }
    if let Some(gpus) = args.gpus_per_task {
        writeln!(s, "#SBATCH --gpus-per-task={gpus}")?;
    }
    writeln!(s, "#SBATCH --cpus-per-task={}", args.cpus_per_task)?;
    if let Some(time) = &args.time {
        writeln!(s, "#SBATCH --time={time}")?;
    }
    writeln!(s, "#SBATCH --output={}/logs/%A_%a.out", slurm_dir.display())?;
    writeln!(s, "#SBATCH --requeue")?;
    writeln!(s, "#SBATCH --signal=B:TERM@{TERM_BEFORE_LIMIT_SECONDS}")?;
    writeln!(s, "set -euo pipefail")?;
    writeln!(s, "cd {}", shell_quote(&workdir.display().to_string()))?;
    writeln!(
        s,
        "cell=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {})",
        shell_quote(&cells_file.display().to_string())
    )?;
    let device = if args.gpus_per_task.is_some_and(|g| g > 0) {
        "cuda"
    } else {
        "cpu"
    };
    let mut command = vec![
        shell_quote(&binary.display().to_string()),
        "grid".into(),
        "cell".into(),
        shell_quote(&grid_file.display().to_string()),
        "\"$cell\"".into(),
        "--device".into(),
        device.into(),
        "--threads".into(),
        args.cpus_per_task.to_string(),
        "--retry-failed".into(),
        "--quiet".into(),
    ];
    for (flag, path) in [
        ("--output", &loaded.args_output),
        ("--data-root", &loaded.args_data_root),
    ] {
        if let Some(path) = path {
            command.push(flag.into());
            command.push(shell_quote(&absolute(path)?.display().to_string()));
        }
    }
    // SIGTERM to this shell goes on to the cell, which stops at its next task boundary,
    // checkpointed, with status 75; the array task is then requeued and continues there.
    writeln!(
        s,
        "# SIGTERM (preemption, scancel --signal=TERM, the time limit) stops the cell at its next"
    )?;
    writeln!(
        s,
        "# task boundary with status 75, checkpointed; the array task is then requeued."
    )?;
    writeln!(s, "trap 'kill -TERM \"$child\" 2>/dev/null || true' TERM")?;
    writeln!(s, "{} &", command.join(" "))?;
    writeln!(s, "child=$!")?;
    writeln!(s, "while :; do")?;
    writeln!(s, "  status=0")?;
    writeln!(s, "  wait \"$child\" || status=$?")?;
    writeln!(s, "  kill -0 \"$child\" 2>/dev/null || break")?;
    writeln!(s, "done")?;
    writeln!(
        s,
        "if [ \"$status\" -eq {} ]; then",
        crate::run::EXIT_STOPPED_CODE
    )?;
    writeln!(
        s,
        "  scontrol requeue \"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\""
    )?;
    writeln!(s, "fi")?;
    writeln!(s, "exit \"$status\"")?;
    Ok(s)
}

/// Cells by state: complete and failed from their manifests, running or pending from `squeue`,
/// the rest missing.
pub fn status(args: &GridArgs) -> Result<()> {
    let loaded = setup::load(args)?;
    let slurm_dir = loaded.spec.results_dir().join("slurm");
    let queued = queued_cells(&slurm_dir);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut lines = Vec::new();
    for cell in &loaded.spec.cells {
        let (state, detail) = match CellStatus::of(&loaded.spec.cell_dir(cell))? {
            CellStatus::Complete => ("done", String::new()),
            CellStatus::Failed { error } => ("failed", error),
            CellStatus::Unfinished => match queued.get(&cell.id) {
                Some(state) if state == "RUNNING" => ("running", String::new()),
                Some(state) => ("queued", state.to_lowercase()),
                None => ("missing", String::new()),
            },
        };
        *counts.entry(state).or_default() += 1;
        lines.push(format!("{}\t{state}\t{detail}", cell.id));
    }
    for line in lines {
        println!("{}", line.trim_end());
    }
    let summary: Vec<String> = ["done", "running", "queued", "failed", "missing"]
        .iter()
        .map(|s| format!("{} {s}", counts.get(s).copied().unwrap_or(0)))
        .collect();
    println!("{} cells: {}", loaded.spec.cells.len(), summary.join(", "));
    Ok(())
}

/// Cell id → Slurm state of every array task still known to `squeue`, over every submission.
/// An unreachable `squeue` yields nothing: cells then show as missing, never as running.
fn queued_cells(slurm_dir: &Path) -> BTreeMap<String, String> {
    let mut queued = BTreeMap::new();
    let Ok(jobs) = std::fs::read_to_string(slurm_dir.join("jobs.tsv")) else {
        return queued;
    };
    for line in jobs.lines() {
        let Some((job, cells_file)) = line.split_once('\t') else {
            continue;
        };
        let Ok(cells) = std::fs::read_to_string(cells_file) else {
            continue;
        };
        let cells: Vec<&str> = cells.lines().collect();
        let Ok(output) = Command::new("squeue")
            .args(["-h", "-r", "-j", job, "-o", "%K %T"])
            .output()
        else {
            continue;
        };
        for entry in String::from_utf8_lossy(&output.stdout).lines() {
            let Some((task, state)) = entry.split_once(' ') else {
                continue;
            };
            if let Some(cell) = task.parse::<usize>().ok().and_then(|t| cells.get(t)) {
                queued.insert((*cell).to_owned(), state.trim().to_owned());
            }
        }
    }
    queued
}

fn find_on_path(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            UsageError::new(format!(
                "`{program}` is not on PATH: run this on a Slurm login node, or use --dry-run to \
                 only write the script"
            ))
            .into()
        })
}

fn check_partition(partition: &str) -> Result<()> {
    let output = Command::new("sinfo")
        .args(["-h", "-o", "%R"])
        .output()
        .context("cannot run sinfo to check the partition")?;
    let known: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .collect();
    if !known.iter().any(|p| p == partition) {
        return Err(UsageError::new(format!(
            "unknown partition `{partition}` (this cluster has: {})",
            known.join(", ")
        ))
        .into());
    }
    Ok(())
}

fn ensure_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(".write-test");
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            UsageError::new(format!(
                "results folder {} is not writable ({e}); every array task writes there",
                dir.display()
            ))
        })?;
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()?.join(path)
    })
}

fn unique_stamp(dir: &Path) -> String {
    let seconds = unix_seconds();
    (0..)
        .map(|n| {
            if n == 0 {
                seconds.to_string()
            } else {
                format!("{seconds}-{n}")
            }
        })
        .find(|stamp| !dir.join(format!("submit-{stamp}.sbatch")).exists())
        .expect("an unused stamp exists")
}

fn shell_quote(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+".contains(c))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}
