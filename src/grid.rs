//! `retain grid`: run, resume and collect a grid of experiments.
//!
//! Layout of `<output>/<name>/`:
//!
//! | path | content |
//! |---|---|
//! | `grid.toml` | the grid file as last collected (the report reads `[published]` from it) |
//! | `cells/<cell-id>/` | one run folder per cell: exactly what `retain run` writes, plus `cell.log` (the cell's stderr) |
//! | `runs.parquet` | one row per cell: axis values, status, error, costs |
//! | `accuracy.parquet`, `metrics.parquet` | every complete cell's rows with a leading `cell` column |
//! | `plots/` | per-task accuracy lines, method comparison bars, accuracy against parameters |
//!
//! `grid run` starts each cell as a child process (`retain grid cell`), so a crashing or
//! diverging cell cannot take the grid down, a cell is exactly a run, and a cluster scheduler
//! can run the same cells as separate jobs. Children report progress as lines on stdout and
//! exit when their stdin closes, i.e. when the parent dies, so killing the runner leaves no
//! orphaned training. Re-running resumes: a cell's `manifest.json` (written last, atomically)
//! decides whether it is complete.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use retain_grid::{CellStatus, DeviceList, GridSpec, read_manifest};
use retain_metrics::{AccuracyMatrix, MeanStd, mean_matrix};
use retain_results::{CellAccuracyRecord, CellMetricsRecord, RunRecord};

use crate::UsageError;
use crate::cli::{GridArgs, GridCellArgs, GridCommand, GridRunArgs};
use crate::progress::ProgressEvent;
use crate::run::{self, Display, Plan};

pub fn execute(command: &GridCommand) -> Result<()> {
    match command {
        GridCommand::Run(args) => run_grid(args),
        GridCommand::Cell(args) => run_cell(args),
        GridCommand::Collect(args) => {
            let loaded = load(args)?;
            collect(&loaded, false)
        }
        GridCommand::Submit(args) => crate::slurm::submit(args),
        GridCommand::Status(args) => crate::slurm::status(args),
        GridCommand::List(args) => {
            let loaded = load(args)?;
            for cell in &loaded.spec.cells {
                let status = CellStatus::of(&loaded.spec.cell_dir(cell));
                println!("{}\t{}", cell.id, status.as_str());
            }
            Ok(())
        }
    }
}

/// A grid file with the command line's folders applied.
pub struct Loaded {
    pub spec: GridSpec,
    /// Overrides that carry `--output`/`--data-root` into every cell's experiment.
    pub extra: Vec<String>,
    /// The file's text, copied next to the results.
    pub source: String,
    pub args_output: Option<PathBuf>,
    pub args_data_root: Option<PathBuf>,
    pub path: PathBuf,
}

pub fn load(args: &GridArgs) -> Result<Loaded> {
    let source = std::fs::read_to_string(&args.grid).map_err(|e| {
        UsageError::new(format!(
            "cannot read grid file {}: {e}",
            args.grid.display()
        ))
    })?;
    let mut spec = GridSpec::from_source(&source, &args.grid.display().to_string())
        .map_err(|e| UsageError::new(e.to_string()))?;
    let mut extra = Vec::new();
    if let Some(output) = &args.output {
        spec.base.output = output.clone();
        extra.push(format!("output={}", toml_path(output)));
    }
    if let Some(root) = &args.data_root {
        spec.base.data_root = root.clone();
        extra.push(format!("data_root={}", toml_path(root)));
    }
    Ok(Loaded {
        spec,
        extra,
        source,
        args_output: args.output.clone(),
        args_data_root: args.data_root.clone(),
        path: args.grid.clone(),
    })
}

fn toml_path(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

/// Every cell's method must exist and accept its hyper-parameters: checked before anything
/// runs, so a typo fails in a second, not after the first hour of a grid.
pub fn check_methods(loaded: &Loaded) -> Result<()> {
    let spec = &loaded.spec;
    for cell in &spec.cells {
        let experiment = spec
            .experiment(cell, &loaded.extra)
            .map_err(|e| UsageError::new(e.to_string()))?;
        run::check_method(&experiment, &format!("{}: cell `{}`", spec.origin, cell.id))?;
    }
    Ok(())
}

/// Every dataset the cells read must be present and intact: checked once, before any cell
/// starts, so a missing dataset is one message with the fetch command, not a grid of failures.
pub fn check_datasets(loaded: &Loaded) -> Result<()> {
    let mut seen = Vec::new();
    for cell in &loaded.spec.cells {
        let experiment = loaded.spec.experiment(cell, &loaded.extra)?;
        let key = (
            experiment.stream.dataset.as_str(),
            experiment.data_root.clone(),
        );
        if seen.contains(&key) {
            continue;
        }
        let files = retain_data::status(key.0, &key.1)?;
        if let Some(bad) = files.iter().find(|f| !f.verified) {
            return Err(anyhow!(
                "dataset {} is not ready under {}: {} {}; run `{}`",
                key.0,
                key.1.display(),
                bad.path.display(),
                bad.problem.as_deref().unwrap_or("is missing"),
                retain_data::fetch_command(key.0, &key.1)
            ));
        }
        seen.push(key);
    }
    Ok(())
}

fn run_cell(args: &GridCellArgs) -> Result<()> {
    if args.watch_stdin {
        // The parent holds our stdin open; EOF means it is gone, so stop training at once.
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(130);
        });
    }
    if let Some(threads) = args.threads {
        tch::set_num_threads(threads.max(1) as i32);
    }
    let loaded = load(&args.grid)?;
    let spec = &loaded.spec;
    let cell = spec
        .cell(&args.cell)
        .map_err(|e| UsageError::new(e.to_string()))?;
    let dir = spec.cell_dir(cell);
    match CellStatus::of(&dir) {
        CellStatus::Complete if !args.force => {
            eprintln!(
                "cell {} is complete ({}); --force reruns it",
                cell.id,
                dir.display()
            );
            return Ok(());
        }
        CellStatus::Failed { error } if !(args.force || args.retry_failed) => {
            return Err(anyhow!(
                "cell {} failed earlier: {error} (--retry-failed reruns it)",
                cell.id
            ));
        }
        _ => {}
    }
    let mut extra = loaded.extra.clone();
    if let Some(device) = &args.device {
        extra.push(format!("device=\"{device}\""));
    }
    let experiment = spec
        .experiment(cell, &extra)
        .map_err(|e| UsageError::new(e.to_string()))?;
    run::check_method(&experiment, &format!("{}: cell `{}`", spec.origin, cell.id))?;
    let device = run::resolve_device(experiment.device)?;
    // A stale manifest would make an interrupted rerun look finished.
    match std::fs::remove_file(dir.join("manifest.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).context(format!("cannot reset {}", dir.display()));
        }
        _ => {}
    }
    let plan = Plan {
        experiment,
        run_name: cell.id.clone(),
        run_dir: dir,
        device,
        save_checkpoint: false,
    };
    let display = if args.progress_lines {
        Display::Lines
    } else if args.quiet {
        Display::Quiet
    } else {
        Display::Interactive
    };
    run::run_plan(&plan, display)
}

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

fn run_grid(args: &GridRunArgs) -> Result<()> {
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
        match CellStatus::of(&spec.cell_dir(cell)) {
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
            CellStatus::Unfinished => Some((f.id.clone(), "did not finish".into())),
            CellStatus::Complete => None,
        })
        .collect();
    println!(
        "{} cell(s) ran in {seconds:.1}s: {done} complete, {} failed; {:.0} runs/hour",
        finished.len(),
        failed.len(),
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
    collect(&loaded, args.quiet)?;
    let failures = failed.len() + skipped_failed.len();
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
/// with its exit status and the error lines of its log.
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
    let status = CellStatus::of(&dir);
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
        let manifest = serde_json::json!({
            "status": "failed",
            "error": error,
            "experiment": spec.base.name,
            "run": id,
            "device": device,
            "finished_at_unix": run::unix_seconds(),
        });
        run::write_manifest_json(&dir, &manifest)?;
        return Ok(CellStatus::Failed { error });
    }
    // Give the bar a moment to show completion before the next cell resets it.
    std::thread::sleep(Duration::from_millis(10));
    Ok(status)
}

/// Merges every cell's outputs into the grid's Parquet files and plots. Rewrites everything
/// from the cells, in cell order, so running it twice gives identical files.
pub fn collect(loaded: &Loaded, quiet: bool) -> Result<()> {
    let spec = &loaded.spec;
    let results = spec.results_dir();
    std::fs::create_dir_all(&results)
        .with_context(|| format!("cannot create {}", results.display()))?;
    run::write_atomically(&results.join("grid.toml"), loaded.source.as_bytes())?;

    let mut runs = Vec::new();
    let mut accuracy = Vec::new();
    // cell id → (scenario → matrix), metrics rows of complete cells.
    let mut matrices: BTreeMap<String, BTreeMap<String, AccuracyMatrix>> = BTreeMap::new();
    let mut metrics = Vec::new();
    for cell in &spec.cells {
        let dir = spec.cell_dir(cell);
        let status = CellStatus::of(&dir);
        let manifest = read_manifest(&dir).unwrap_or_default();
        let experiment = spec.experiment(cell, &loaded.extra)?;
        let timings = manifest.timings.clone().unwrap_or_default();
        let costs = manifest.costs.clone().unwrap_or_default();
        let complete = status == CellStatus::Complete;
        runs.push(RunRecord {
            cell: cell.id.clone(),
            axes: cell
                .assignments
                .iter()
                .map(|(k, v)| (k.clone(), retain_grid::display_value(v)))
                .collect(),
            method: experiment.method.name.clone(),
            seed: experiment.seed,
            status: status.as_str().to_owned(),
            error: match &status {
                CellStatus::Failed { error } => Some(error.clone()),
                _ => None,
            },
            device: manifest
                .device
                .clone()
                .filter(|_| status != CellStatus::Unfinished),
            wall_seconds: manifest.wall_seconds.filter(|_| complete),
            seconds_per_step: timings.seconds_per_step.filter(|_| complete),
            steps: timings.steps.filter(|_| complete),
            trainable_parameters: manifest.trainable_parameters.filter(|_| complete),
            method_state_bytes: costs.method_state_bytes.filter(|_| complete),
            state_bytes_per_task: costs.state_bytes_per_task.filter(|_| complete),
            frozen_base_bytes: costs.frozen_base_bytes.filter(|_| complete),
            peak_host_memory_bytes: manifest.peak_host_memory_bytes.filter(|_| complete),
            peak_device_memory_bytes: manifest.peak_device_memory_bytes.filter(|_| complete),
        });
        if !complete {
            continue;
        }
        let rows = retain_results::read_accuracy(&dir.join("accuracy.parquet"))?;
        let cell_metrics = retain_results::read_metrics(&dir.join("metrics.parquet"))?;
        let by_scenario = matrices.entry(cell.id.clone()).or_default();
        for m in &cell_metrics {
            let matrix = retain_results::matrix_from_records(&rows, &m.run, &m.scenario)?;
            by_scenario.insert(m.scenario.clone(), matrix);
        }
        accuracy.extend(rows.into_iter().map(|record| CellAccuracyRecord {
            cell: cell.id.clone(),
            record,
        }));
        metrics.extend(cell_metrics.into_iter().map(|m| (cell.id.clone(), m)));
    }

    let metrics: Vec<CellMetricsRecord> = metrics
        .into_iter()
        .map(|(id, m)| {
            let cell = spec.cell(&id).expect("collected from the spec");
            let joint = spec
                .joint_partner(cell)
                .and_then(|joint| Some(matrices.get(&joint.id)?.get(&m.scenario)?.diagonal()));
            let own = &matrices[&id][&m.scenario];
            let intransigence = joint.as_ref().and_then(|a| own.intransigence(a));
            let final_intransigence = joint.as_ref().and_then(|a| own.final_intransigence(a));
            CellMetricsRecord {
                cell: id,
                metrics: m,
                intransigence,
                final_intransigence,
            }
        })
        .collect();

    retain_results::write_runs(&results.join("runs.parquet"), &runs)?;
    retain_results::write_cell_accuracy(&results.join("accuracy.parquet"), &accuracy)?;
    retain_results::write_cell_metrics(&results.join("metrics.parquet"), &metrics)?;
    let plots = write_plots(spec, &runs, &metrics, &matrices, &results.join("plots"))?;
    if !quiet {
        eprintln!(
            "collected {} cells ({} complete) into {} ({plots} plots)",
            runs.len(),
            matrices.len(),
            results.display()
        );
    }
    Ok(())
}

/// Plots of the collected grid, grouped by configuration (the cell id without the seed):
/// per-task accuracy lines of the mean matrix and ACC bars (mean ± std over seeds), each per
/// read-out, and one chart of ACC (mean over seeds) against trainable parameters on a log axis
/// with a colour per read-out (`accuracy-vs-parameters`), as PNG and SVG. Returns how many
/// files.
fn write_plots(
    spec: &GridSpec,
    runs: &[RunRecord],
    metrics: &[CellMetricsRecord],
    matrices: &BTreeMap<String, BTreeMap<String, AccuracyMatrix>>,
    dir: &Path,
) -> Result<usize> {
    if metrics.is_empty() {
        return Ok(0);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut scenarios: Vec<&str> = metrics
        .iter()
        .map(|m| m.metrics.scenario.as_str())
        .collect();
    scenarios.sort_unstable();
    scenarios.dedup();
    // Configuration labels in cell order.
    let mut labels: Vec<String> = Vec::new();
    for cell in &spec.cells {
        let label = cell.config_label(&spec.axes);
        if matrices.contains_key(&cell.id) && !labels.contains(&label) {
            labels.push(label);
        }
    }
    let label_of = |id: &str| {
        spec.cell(id)
            .map(|c| c.config_label(&spec.axes))
            .unwrap_or_default()
    };
    let params: BTreeMap<&str, u64> = runs
        .iter()
        .filter_map(|r| Some((r.cell.as_str(), r.trainable_parameters?)))
        .collect();
    let name = &spec.base.name;
    let mut written = 0;
    let mut series = Vec::new();
    for scenario in scenarios {
        let mut bars = Vec::new();
        let mut points = Vec::new();
        for label in &labels {
            let cells: Vec<&CellMetricsRecord> = metrics
                .iter()
                .filter(|m| m.metrics.scenario == scenario && label_of(&m.cell) == *label)
                .collect();
            let accs: Vec<f64> = cells.iter().map(|m| m.metrics.acc).collect();
            let Some(stats) = MeanStd::of(&accs) else {
                continue;
            };
            bars.push(retain_plot::Bar {
                label: label.clone(),
                mean: stats.mean,
                std: stats.std.unwrap_or(0.0),
            });
            let cell_params: Vec<f64> = cells
                .iter()
                .filter_map(|m| params.get(m.cell.as_str()).map(|&p| p as f64))
                .collect();
            if let Some(p) = MeanStd::of(&cell_params) {
                points.push(retain_plot::Point {
                    // `method=lora+rank-8` reads `lora+rank-8`: the method is what the
                    // scatter compares.
                    label: label.strip_prefix("method=").unwrap_or(label).to_owned(),
                    x: p.mean,
                    y: stats.mean,
                });
            }
            let group: Vec<AccuracyMatrix> = cells
                .iter()
                .filter_map(|m| matrices.get(&m.cell)?.get(scenario).cloned())
                .collect();
            if let Some(mean) = mean_matrix(&group) {
                for ext in ["png", "svg"] {
                    retain_plot::task_accuracy_lines(
                        &dir.join(format!("tasks-{scenario}-{label}.{ext}")),
                        &mean,
                        &format!(
                            "{name} / {label} ({scenario}, mean of {} seed(s))",
                            group.len()
                        ),
                    )?;
                    written += 1;
                }
            }
        }
        for ext in ["png", "svg"] {
            retain_plot::comparison_bars(
                &dir.join(format!("acc-{scenario}.{ext}")),
                &bars,
                &format!("{name}: ACC ({scenario}), mean ± std over seeds"),
            )?;
            written += 1;
        }
        if !points.is_empty() {
            series.push(retain_plot::Series {
                label: scenario.to_owned(),
                points,
            });
        }
    }
    if !series.is_empty() {
        for ext in ["png", "svg"] {
            retain_plot::accuracy_vs_parameters(
                &dir.join(format!("accuracy-vs-parameters.{ext}")),
                &series,
                &format!("{name}: ACC against trainable parameters, mean over seeds"),
            )?;
            written += 1;
        }
    }
    Ok(written)
}
