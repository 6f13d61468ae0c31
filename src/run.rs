//! `retain run`: one experiment file → one run folder of results. A grid cell
//! (`retain grid cell`) is the same run with the cell's overrides and folder: [`run_plan`].
//!
//! Layout of `<output>/<experiment>/<run>/`:
//!
//! | file | content |
//! |---|---|
//! | `accuracy.parquet` | long-form accuracy matrix: one row per read-out × trained tasks × evaluated task |
//! | `metrics.parquet` | ACC, BWT, FWT, forgetting, average incremental accuracy per read-out, and the run's costs |
//! | `config.toml` | the experiment as run, defaults and overrides resolved |
//! | `manifest.json` | versions, seed, device, git revision, timings, wall time, trainable parameters, peak host memory, `costs` (trainable parameters, method state bytes in all and per task, frozen base bytes, seconds per step), status |
//! | `heatmap-<readout>.png` | the accuracy matrix of each read-out |
//! | (`manifest.json` `pretrain`) | with a `[pretrain]` stage: its cached checkpoint under `<output>/<experiment>/stages/`, whether it was reused, its accuracy and seconds (see `stage.rs`) |
//! | `model.safetensors`, `method-state.safetensors` | with `--save-checkpoint` only: the trained model's variables by name (a `[model] checkpoint` for another run) and the method's state |
//!
//! Every file is written atomically, and `manifest.json` last: a folder whose manifest says
//! `"complete"` holds a whole run. A run that fails (a diverging loss, say) writes a manifest
//! with status `"failed"` and the reason, and touches nothing else.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use retain_config::{DeviceSpec, Experiment, Readout};
use retain_metrics::AccuracyMatrix;
use retain_results::{AccuracyRecord, MetricsRecord};
use retain_stream::TaskStream;
use retain_train::{Network, RunOutcome};
use serde::Serialize;
use tch::Device;

use crate::cli::RunArgs;
use crate::device_memory::DeviceMemoryProbe;
use crate::progress::{Progress, ProgressLines};
use crate::{UsageError, registry, report, stage};

/// Everything `run` needs, resolved from the file and the command line.
pub struct Plan {
    pub experiment: Experiment,
    pub run_name: String,
    pub run_dir: PathBuf,
    pub device: Device,
    /// Write `model.safetensors` and `method-state.safetensors` after training.
    pub save_checkpoint: bool,
}

pub fn plan(args: &RunArgs) -> Result<Plan> {
    let mut overrides = args.overrides.clone();
    if let Some(device) = &args.device {
        overrides.push(format!("device=\"{device}\""));
    }
    if let Some(seed) = args.seed {
        overrides.push(format!("seed={seed}"));
    }
    if let Some(output) = &args.output {
        overrides.push(format!("output={}", toml_string(output)));
    }
    if let Some(root) = &args.data_root {
        overrides.push(format!("data_root={}", toml_string(root)));
    }
    let experiment = Experiment::load(&args.experiment, &overrides).map_err(UsageError::from)?;
    check_method(&experiment, &args.experiment.display().to_string())?;
    let device = resolve_device(experiment.device)?;
    let run_name = args
        .run_name
        .clone()
        .unwrap_or_else(|| format!("{}-seed{}", experiment.method.name, experiment.seed));
    let run_dir = experiment.output.join(&experiment.name).join(&run_name);
    Ok(Plan {
        experiment,
        run_name,
        run_dir,
        device,
        save_checkpoint: args.save_checkpoint,
    })
}

fn toml_string(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

/// Maps the configured device onto what this machine has.
pub fn resolve_device(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto => Ok(Device::cuda_if_available()),
        DeviceSpec::Cuda(n) => {
            let count = tch::Cuda::device_count() as usize;
            if n >= count {
                return Err(UsageError::new(format!(
                    "device cuda:{n} requested but {count} CUDA device(s) are visible (run `retain doctor`)"
                ))
                .into());
            }
            Ok(Device::Cuda(n))
        }
    }
}

pub fn execute(args: &RunArgs) -> Result<()> {
    let plan = plan(args)?;
    let display = if args.quiet {
        Display::Quiet
    } else {
        Display::Interactive
    };
    run_plan(&plan, display)
}

/// How a run shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Bars, tables and a summary on the terminal.
    Interactive,
    /// Errors only.
    Quiet,
    /// Machine-readable progress lines on stdout for a parent process (`retain grid run`);
    /// see [`crate::progress::ProgressLines`].
    Lines,
}

/// Checks that the method exists, accepts its hyper-parameters and provides every requested
/// read-out, and that this build can train as `[training]` asks, before any data loads.
pub fn check_method(experiment: &Experiment, origin: &str) -> Result<()> {
    let Some(factory) = registry::factory(&experiment.method.name) else {
        return Err(UsageError::new(format!(
            "{origin}: unknown method `{}` (known: {})",
            experiment.method.name,
            registry::names().join(", ")
        ))
        .into());
    };
    let method = factory(&experiment.method.params)
        .map_err(|e| UsageError::new(format!("{origin}: {e}")))?;
    retain_train::check_readouts(&experiment.stream.readouts, Some(method.as_ref()))
        .map_err(|e| UsageError::new(format!("{origin}: stream.readouts: {e}")))?;
    retain_train::check_training(&experiment.training)
        .map_err(|e| UsageError::new(format!("{origin}: {e}")))?;
    Ok(())
}

/// Runs a resolved plan: loads the data, trains, writes every result file and the manifest.
/// A grid cell is exactly this, with the cell's overrides and folder.
pub fn run_plan(plan: &Plan, display: Display) -> Result<()> {
    let experiment = &plan.experiment;
    let wall = std::time::Instant::now();
    let started_at = unix_seconds();

    let load_clock = std::time::Instant::now();
    let dataset = retain_data::load(experiment.stream.dataset.as_str(), &experiment.data_root)?;
    let stream = TaskStream::build(&dataset, &experiment.stream, experiment.seed, plan.device)
        .context("building the task stream")?;
    drop(dataset);
    let load_seconds = load_clock.elapsed().as_secs_f64();

    let factory = registry::factory(&experiment.method.name).expect("checked by plan");
    let mut method =
        factory(&experiment.method.params).map_err(|e| UsageError::new(e.to_string()))?;
    let network = build_network(
        experiment,
        stream.image_shape,
        stream.num_classes,
        plan.device,
    )?;
    std::fs::create_dir_all(&plan.run_dir)
        .with_context(|| format!("cannot create the run folder {}", plan.run_dir.display()))?;
    let mut say = |line: String| {
        if display != Display::Quiet {
            eprintln!("{line}");
        }
    };
    let pretrain = match stage::apply(experiment, &network, plan.device, &mut say) {
        Ok(summary) => summary,
        Err(error) => {
            let costs = Costs {
                wall_seconds: wall.elapsed().as_secs_f64(),
                trainable_parameters: 0,
                method: None,
                peak_host_memory_bytes: peak_host_memory_bytes(),
                peak_device_memory_bytes: None,
            };
            let manifest = Manifest::new(
                plan,
                started_at,
                load_seconds,
                None,
                &costs,
                None,
                Some(format!("{error:#}")),
            );
            write_manifest(&plan.run_dir, &manifest)?;
            return Err(error.context(format!(
                "the pretrain stage of run {} failed (recorded in {})",
                plan.run_name,
                plan.run_dir.join("manifest.json").display()
            )));
        }
    };

    if display == Display::Interactive {
        eprintln!(
            "{} / {}: {} tasks of {} on {}, results in {}",
            experiment.name,
            plan.run_name,
            stream.tasks.len(),
            stream.dataset,
            device_name(plan.device),
            plan.run_dir.display()
        );
    }
    let device_memory = DeviceMemoryProbe::start(plan.device.is_cuda());
    let outcome = match display {
        Display::Lines => {
            let mut lines = ProgressLines::new(stream.tasks.len());
            retain_train::run(experiment, &stream, &network, method.as_mut(), &mut lines)
        }
        _ => {
            let mut progress = Progress::new(stream.tasks.len(), display == Display::Quiet);
            let outcome = retain_train::run(
                experiment,
                &stream,
                &network,
                method.as_mut(),
                &mut progress,
            );
            progress.finish();
            outcome
        }
    };
    let method_costs = outcome.as_ref().ok().map(|o| {
        retain_train::Costs::measure(
            &network,
            method.as_ref(),
            stream.tasks.len(),
            o.seconds_per_step(),
        )
    });
    let costs = Costs {
        wall_seconds: 0.0,
        trainable_parameters: network
            .parameters()
            .iter()
            .map(|(_, t)| t.numel() as u64)
            .sum(),
        method: method_costs,
        peak_host_memory_bytes: peak_host_memory_bytes(),
        peak_device_memory_bytes: device_memory.finish(),
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            let costs = Costs {
                wall_seconds: wall.elapsed().as_secs_f64(),
                ..costs
            };
            let manifest = Manifest::new(
                plan,
                started_at,
                load_seconds,
                None,
                &costs,
                pretrain.clone(),
                Some(error.to_string()),
            );
            write_manifest(&plan.run_dir, &manifest)?;
            return Err(error).context(format!(
                "run {} failed (recorded in {})",
                plan.run_name,
                plan.run_dir.join("manifest.json").display()
            ));
        }
    };

    let matrices = write_results(plan, &outcome, method_costs)?;
    if plan.save_checkpoint {
        network.save(&plan.run_dir.join("model.safetensors"))?;
        retain_train::save_method_state(
            method.as_ref(),
            &plan.run_dir.join("method-state.safetensors"),
        )?;
    }
    let costs = Costs {
        wall_seconds: wall.elapsed().as_secs_f64(),
        ..costs
    };
    let manifest = Manifest::new(
        plan,
        started_at,
        load_seconds,
        Some(&outcome),
        &costs,
        pretrain,
        None,
    );
    write_manifest(&plan.run_dir, &manifest)?;
    if display == Display::Interactive {
        report::print_run(&matrices, &outcome);
        println!("\nresults: {}", plan.run_dir.display());
    }
    Ok(())
}

/// The experiment's network for images of `image_shape` and `outputs` classes on `device`,
/// loaded from `[model] checkpoint` when one is given.
pub fn build_network(
    experiment: &Experiment,
    image_shape: [usize; 3],
    outputs: usize,
    device: Device,
) -> Result<Network> {
    let network = Network::for_shape(experiment, image_shape, outputs, device);
    if let Some(checkpoint) = experiment.model.checkpoint() {
        network
            .load(checkpoint)
            .map_err(|e| UsageError::new(format!("model.checkpoint: {e}")))?;
    }
    Ok(network)
}

/// What a run cost, beyond the trainer's timings.
struct Costs {
    wall_seconds: f64,
    trainable_parameters: u64,
    /// Measured at the end of a run that finished training.
    method: Option<retain_train::Costs>,
    peak_host_memory_bytes: Option<u64>,
    peak_device_memory_bytes: Option<u64>,
}

/// Peak resident memory of this process (`VmHWM` in `/proc/self/status`), Linux only. The GPU
/// counterpart is sampled from the driver (`device_memory`).
fn peak_host_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Writes Parquet files, the resolved config and heat-maps; returns the matrices per read-out.
fn write_results(
    plan: &Plan,
    outcome: &RunOutcome,
    costs: Option<retain_train::Costs>,
) -> Result<Vec<(Readout, AccuracyMatrix)>> {
    let experiment = &plan.experiment;
    let dir = &plan.run_dir;
    let mut accuracy = Vec::new();
    let mut metrics = Vec::new();
    let mut matrices = Vec::new();
    for (&readout, counts) in &outcome.counts {
        for trained in 0..=counts.tasks {
            for task in 0..counts.tasks {
                let (correct, samples) = counts.cell(trained, task);
                accuracy.push(AccuracyRecord {
                    run: plan.run_name.clone(),
                    method: experiment.method.name.clone(),
                    seed: experiment.seed,
                    scenario: readout.as_str().to_owned(),
                    trained_tasks: trained as u32,
                    eval_task: task as u32,
                    correct,
                    samples,
                    accuracy: correct as f64 / samples.max(1) as f64,
                });
            }
        }
        let matrix = counts.accuracy()?;
        let summary = matrix.summary();
        metrics.push(MetricsRecord {
            run: plan.run_name.clone(),
            method: experiment.method.name.clone(),
            seed: experiment.seed,
            scenario: readout.as_str().to_owned(),
            tasks: counts.tasks as u32,
            acc: summary.acc,
            bwt: summary.bwt,
            fwt: summary.fwt,
            forgetting: summary.forgetting,
            average_incremental_accuracy: summary.average_incremental_accuracy,
            costs: costs.map(|c| retain_results::RunCosts {
                trainable_parameters: c.trainable_parameters,
                method_state_bytes: c.method_state_bytes,
                state_bytes_per_task: c.state_bytes_per_task,
                frozen_base_bytes: c.frozen_base_bytes,
                seconds_per_step: c.seconds_per_step,
            }),
            training_loss: Some(experiment.training.loss.as_str().to_owned()),
        });
        let title = format!(
            "{} / {} ({})",
            experiment.name,
            plan.run_name,
            readout.as_str()
        );
        retain_plot::accuracy_heatmap(
            &dir.join(format!("heatmap-{}.png", readout.as_str())),
            &matrix,
            &title,
        )?;
        matrices.push((readout, matrix));
    }
    retain_results::write_accuracy(&dir.join("accuracy.parquet"), &accuracy)?;
    retain_results::write_metrics(&dir.join("metrics.parquet"), &metrics)?;
    write_atomically(
        &dir.join("config.toml"),
        experiment.to_resolved_toml().as_bytes(),
    )?;
    Ok(matrices)
}

/// The run's provenance record.
#[derive(Debug, Serialize)]
struct Manifest {
    status: &'static str,
    error: Option<String>,
    experiment: String,
    run: String,
    method: String,
    seed: u64,
    /// `[training] loss`: `class_il` or `task_il`.
    training_loss: &'static str,
    /// `[model] init`: how the initial weights were drawn.
    init: &'static str,
    device: String,
    retain_version: &'static str,
    tch_version: &'static str,
    libtorch_version: String,
    git_revision: String,
    started_at_unix: u64,
    finished_at_unix: u64,
    /// Wall time of the whole run, loading and writing included.
    wall_seconds: f64,
    /// Σ numel of the variables that require gradients at the end of the run (a method that
    /// freezes part of the model trains fewer).
    trainable_parameters: u64,
    /// Peak resident memory of the process (Linux).
    peak_host_memory_bytes: Option<u64>,
    /// Peak GPU memory the process held, sampled from the driver (see `device_memory.rs`);
    /// null on the CPU.
    peak_device_memory_bytes: Option<u64>,
    timings: Option<Timings>,
    /// What the method costs next to what it retains (trainable parameters, bytes of its
    /// state in all and per task, bytes of the frozen base, seconds per step); absent when
    /// training did not finish.
    #[serde(skip_serializing_if = "Option::is_none")]
    costs: Option<retain_train::Costs>,
    /// The `[pretrain]` stage the stream started from; absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pretrain: Option<stage::StageSummary>,
}

#[derive(Debug, Serialize)]
struct Timings {
    load_seconds: f64,
    initial_eval_seconds: f64,
    total_seconds: f64,
    train_seconds: f64,
    eval_seconds: f64,
    steps: usize,
    seconds_per_step: f64,
    /// Steps replayed from CUDA graphs and run eagerly, and why eagerly.
    step_execution: retain_train::graph_step::StepExecution,
    per_task: Vec<retain_train::TaskReport>,
}

impl Manifest {
    fn new(
        plan: &Plan,
        started_at: u64,
        load_seconds: f64,
        outcome: Option<&RunOutcome>,
        costs: &Costs,
        pretrain: Option<stage::StageSummary>,
        error: Option<String>,
    ) -> Self {
        let experiment = &plan.experiment;
        let libtorch_version = crate::doctor::loaded_libtorch()
            .and_then(|p| crate::doctor::libtorch_version(&p))
            .unwrap_or_else(|| "unknown".into());
        Self {
            status: if error.is_some() {
                "failed"
            } else {
                "complete"
            },
            error,
            experiment: experiment.name.clone(),
            run: plan.run_name.clone(),
            method: experiment.method.name.clone(),
            seed: experiment.seed,
            training_loss: experiment.training.loss.as_str(),
            init: experiment.model.init().as_str(),
            device: device_name(plan.device),
            retain_version: env!("CARGO_PKG_VERSION"),
            tch_version: "0.24.0",
            libtorch_version,
            git_revision: git_revision(),
            started_at_unix: started_at,
            finished_at_unix: unix_seconds(),
            wall_seconds: costs.wall_seconds,
            trainable_parameters: costs.trainable_parameters,
            peak_host_memory_bytes: costs.peak_host_memory_bytes,
            peak_device_memory_bytes: costs.peak_device_memory_bytes,
            timings: outcome.map(|o| Timings {
                load_seconds,
                initial_eval_seconds: o.initial_eval_seconds,
                total_seconds: o.total_seconds,
                train_seconds: o.tasks.iter().map(|t| t.train_seconds).sum(),
                eval_seconds: o.tasks.iter().map(|t| t.eval_seconds).sum::<f64>()
                    + o.initial_eval_seconds,
                steps: o.steps(),
                seconds_per_step: o.seconds_per_step(),
                step_execution: o.execution.clone(),
                per_task: o.tasks.clone(),
            }),
            costs: costs.method,
            pretrain,
        }
    }
}

pub fn write_manifest_json(dir: &Path, value: &serde_json::Value) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(value)?;
    write_atomically(&dir.join("manifest.json"), json.as_bytes())
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(manifest)?;
    write_atomically(&dir.join("manifest.json"), json.as_bytes())
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place, so a reader
/// never sees a half-written file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp{}",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} into place", path.display()))
}

pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn git_revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(rev) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(status) if !status.is_empty() => format!("{rev}-dirty"),
            _ => rev,
        },
        None => "unknown".into(),
    }
}

pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
