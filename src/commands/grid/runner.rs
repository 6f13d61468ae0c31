//! `retain grid run`: every unfinished cell as a child process (`retain grid cell`) over the
//! grid's device slots, then `grid collect`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use retain_grid::{CellStatus, DeviceList};
use retain_manifest::{Manifest, RunStatus};

use super::collect::collect;
use super::setup::{Loaded, check_datasets, check_methods, load};
use crate::cli::GridRunArgs;
use crate::progress::ProgressEvent;
use crate::provenance::unix_seconds;
use crate::usage::UsageError;

/// The devices of the grid's slots, as `--device` strings.
fn resolve_devices(list: &DeviceList) -> Result<Vec<String>> {
    let count = tch::Cuda::device_count().max(0) as usize;
    Ok(match list {
        DeviceList::Auto if count > 0 => (0..count).map(|n| format!("cuda:{n}")).collect(),
        DeviceList::Auto | DeviceList::Cpu => vec!["cpu".to_owned()],
        DeviceList::List(specs) => specs
            .iter()
            .map(|spec| match spec {
                retain_config::DeviceSpec::Cuda(n) if *n >= count => Err(UsageError::new(format!(
                    "grid device cuda:{n} requested but {count} CUDA device(s) are visible"
                ))),
                other => Ok(other.to_string()),
            })
            .collect::<Result<_, _>>()?,
    })
}

/// What happened to one cell this time.
struct Finished {
    id: String,
    status: CellStatus,
}

/// Runs every unfinished cell (failed ones too with `--retry-failed`), then collects.
pub fn execute(args: &GridRunArgs) -> Result<()> {
    let loaded = load(&args.grid)?;
    check_methods(&loaded)?;
    check_datasets(&loaded)?;
    let spec = &loaded.spec;
    let devices_list = match &args.devices {
        Some(text) => text
            .parse::<DeviceList>()
            .map_err(|e| UsageError::new(format!("--devices: {e}")))?,
        None => spec.settings.devices.clone(),
    };
    let devices = resolve_devices(&devices_list)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut per_device = args
        .runs_per_device
        .unwrap_or(spec.settings.runs_per_device)
        .max(1);
    let on_cpu = devices.iter().any(|d| d == "cpu");
    if on_cpu {
        // More concurrent CPU runs than cores only adds contention.
        per_device = per_device.min(cores);
    }
    let threads = on_cpu.then(|| (cores / per_device).max(1));
    let slots = retain_grid::slots(&devices, per_device);

    let mut queue = VecDeque::new();
    let mut complete = 0;
    let mut skipped_failed = Vec::new();
    for cell in &spec.cells {
        match CellStatus::of(&spec.cell_dir(cell))? {
            CellStatus::Complete => complete += 1,
            CellStatus::Failed { error } if !args.retry_failed => {
                skipped_failed.push((cell.id.clone(), error));
            }
            _ => queue.push_back(cell.id.clone()),
        }
    }
    let total = spec.cells.len();
    let to_run = queue.len();
    eprintln!(
        "grid {}: {total} cells: {complete} complete, {} failed earlier{}, {to_run} to run on {} \
         slot(s) [{}]",
        spec.base.name,
        skipped_failed.len(),
        if skipped_failed.is_empty() {
            ""
        } else {
            " (skipped; --retry-failed reruns them)"
        },
        slots.len(),
        slots.join(", ")
    );

    let started = Instant::now();
    let finished = run_cells(&loaded, queue, &slots, threads, complete, args.quiet)?;
    let seconds = started.elapsed().as_secs_f64();

    let done = finished
        .iter()
        .filter(|f| f.status == CellStatus::Complete)
        .count();
    let failed: Vec<(String, String)> = finished
        .iter()
        .filter_map(|f| match &f.status {
            CellStatus::Failed { error } => Some((f.id.clone(), error.clone())),
            _ => None,
        })
        .collect();
    let stopped: Vec<&str> = finished
        .iter()
        .filter(|f| f.status == CellStatus::Unfinished)
        .map(|f| f.id.as_str())
        .collect();
    println!(
        "{} cell(s) ran in {seconds:.1}s: {done} complete, {} failed, {} stopped; {:.0} runs/hour",
        finished.len(),
        failed.len(),
        stopped.len(),
        if seconds > 0.0 {
            finished.len() as f64 * 3600.0 / seconds
        } else {
            0.0
        }
    );
    for (id, error) in &failed {
        println!("  failed  {id}: {error}");
    }
    for (id, error) in &skipped_failed {
        println!("  failed earlier (skipped)  {id}: {error}");
    }
    for id in &stopped {
        println!("  stopped  {id}: unfinished; the next grid run continues it");
    }
    collect(&loaded, args.quiet)?;
    let failures = failed.len() + skipped_failed.len();
    if failures == 0 && !stopped.is_empty() {
        return Err(anyhow!(
            "{} of {total} cells stopped unfinished; running the grid again continues them",
            stopped.len()
        ));
    }
    if failures > 0 {
        return Err(anyhow!(
            "{failures} of {total} cells failed (status and reasons in {})",
            spec.results_dir().join("runs.parquet").display()
        ));
    }
    Ok(())
}

/// Runs the queued cells over the slots, one worker thread per slot, each driving one child
/// process at a time.
fn run_cells(
    loaded: &Loaded,
    queue: VecDeque<String>,
    slots: &[String],
    threads: Option<usize>,
    already_complete: usize,
    quiet: bool,
) -> Result<Vec<Finished>> {
    let spec = &loaded.spec;
    let interactive = !quiet && std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if interactive {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let overall = multi.add(ProgressBar::new(spec.cells.len() as u64));
    overall.set_style(
        ProgressStyle::with_template("cells [{bar:40}] {pos}/{len} done, elapsed {elapsed}")
            .expect("static template")
            .progress_chars("=> "),
    );
    overall.set_position(already_complete as u64);
    let say = |line: String| {
        if interactive {
            multi.suspend(|| eprintln!("{line}"));
        } else if !quiet {
            eprintln!("{line}");
        }
    };

    let exe = std::env::current_exe().context("cannot find the retain binary")?;
    let queue = Arc::new(Mutex::new(queue));
    let finished = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for device in slots {
            let queue = Arc::clone(&queue);
            let bar = multi.add(ProgressBar::new(1));
            bar.set_style(
                ProgressStyle::with_template("  {prefix} {msg} [{bar:30}] {pos}/{len}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(device.clone());
            let (exe, finished, overall, say) = (&exe, &finished, &overall, &say);
            scope.spawn(move || {
                loop {
                    let Some(id) = queue.lock().expect("queue lock").pop_front() else {
                        break;
                    };
                    bar.set_message(id.clone());
                    bar.set_position(0);
                    let started = Instant::now();
                    let status =
                        run_child(exe, loaded, &id, device, threads, &bar).unwrap_or_else(|e| {
                            CellStatus::Failed {
                                error: format!("{e:#}"),
                            }
                        });
                    overall.inc(1);
                    let line = match &status {
                        CellStatus::Complete => format!(
                            "done    {id} on {device} in {:.1}s",
                            started.elapsed().as_secs_f64()
                        ),
                        CellStatus::Failed { error } => format!("FAILED  {id}: {error}"),
                        CellStatus::Unfinished => format!("STOPPED {id}"),
                    };
                    say(line);
                    finished
                        .lock()
                        .expect("results lock")
                        .push(Finished { id, status });
                }
                bar.finish_and_clear();
            });
        }
    });
    overall.finish_and_clear();
    Ok(finished.into_inner().expect("results lock"))
}

/// Runs one cell as a child process and returns its status from its manifest. A child that
/// dies before writing a manifest (a crash, a bad dataset) gets a failed one written here,
/// with its exit status and the error lines of its log; one that exits with
/// [`crate::run::EXIT_STOPPED_CODE`] (stopped at a task boundary, checkpointed) stays
/// unfinished.
fn run_child(
    exe: &Path,
    loaded: &Loaded,
    id: &str,
    device: &str,
    threads: Option<usize>,
    bar: &ProgressBar,
) -> Result<CellStatus> {
    let spec = &loaded.spec;
    let cell = spec.cell(id)?;
    let dir = spec.cell_dir(cell);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log_path = dir.join("cell.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut command = Command::new(exe);
    command
        .arg("grid")
        .arg("cell")
        .arg(&loaded.path)
        .arg(id)
        .args([
            "--device",
            device,
            "--force",
            "--progress-lines",
            "--watch-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log);
    if let Some(output) = &loaded.args_output {
        command.arg("--output").arg(output);
    }
    if let Some(root) = &loaded.args_data_root {
        command.arg("--data-root").arg(root);
    }
    if device == "cpu"
        && let Some(threads) = threads
    {
        command.arg("--threads").arg(threads.to_string());
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    // Held until the child exits: dropping it closes the child's stdin, which the child takes
    // as the parent's death.
    let stdin = child.stdin.take();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match ProgressEvent::parse(&line) {
                Some(ProgressEvent::TaskStarted { task, tasks, steps }) => {
                    bar.set_message(format!("{id} task {task}/{tasks}"));
                    bar.set_length(steps.max(1));
                    bar.set_position(0);
                }
                Some(ProgressEvent::Steps(done)) => bar.set_position(done),
                Some(ProgressEvent::TaskDone(_)) => bar.set_position(bar.length().unwrap_or(0)),
                None => {}
            }
        }
    }
    let exit = child.wait().context("waiting for a cell")?;
    drop(stdin);
    let status = CellStatus::of(&dir)?;
    // Stopped on SIGTERM at a task boundary: unfinished, not failed; it continues from its
    // checkpoint on the next grid run.
    if status == CellStatus::Unfinished && exit.code() == Some(crate::run::EXIT_STOPPED_CODE) {
        return Ok(CellStatus::Unfinished);
    }
    if status == CellStatus::Unfinished {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let mut reason: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("error:") || l.trim_start().starts_with("caused by:"))
            .map(str::trim)
            .collect();
        if reason.is_empty() {
            reason.extend(log.lines().rev().find(|l| !l.trim().is_empty()));
        }
        let error = format!("cell process exited with {exit}: {}", reason.join(" "));
        let manifest = Manifest {
            error: Some(error.clone()),
            experiment: Some(spec.base.name.clone()),
            run: Some(id.to_owned()),
            device: Some(device.to_owned()),
            finished_at_unix: Some(unix_seconds()),
            ..Manifest::new(RunStatus::Failed)
        };
        manifest.write(&dir)?;
        return Ok(CellStatus::Failed { error });
    }
    // Give the bar a moment to show completion before the next cell resets it.
    std::thread::sleep(Duration::from_millis(10));
    Ok(status)
}
