//! What a run leaves in its folder: the result files and the manifest.

use std::path::Path;

use anyhow::{Context, Result};
use retain_config::Readout;
use retain_manifest::{Manifest, RunStatus};
use retain_metrics::AccuracyMatrix;
use retain_results::{AccuracyRecord, AnytimeRecord, MetricsRecord};
use retain_train::RunOutcome;

use super::plan::Plan;
use super::stage::StageSummary;
use crate::provenance::{self, TCH_VERSION};

/// What a run cost, beyond the trainer's timings.
pub struct RunCosts {
    pub wall_seconds: f64,
    pub trainable_parameters: u64,
    /// Measured at the end of a run that finished training.
    pub method: Option<retain_train::Costs>,
    pub peak_host_memory_bytes: Option<u64>,
    pub peak_device_memory_bytes: Option<u64>,
}

/// The files a run writes into its folder beside `manifest.json` and `heatmap-<readout>.png`.
const RESULT_FILES: [&str; 6] = [
    "accuracy.parquet",
    "anytime.parquet",
    "metrics.parquet",
    "config.toml",
    "model.safetensors",
    "method-state.safetensors",
];

/// Whether `name` is a result file a run writes into its folder (or a temporary one of those
/// a crash left behind).
fn is_result_file(name: &str) -> bool {
    name == "manifest.json"
        || RESULT_FILES.contains(&name)
        || (name.starts_with("heatmap-") && name.ends_with(".png"))
        || retain_fs::is_temporary(name)
}

/// The run folder's resume checkpoint (see [`retain_train::resume`]).
pub fn resume_checkpoint(dir: &Path) -> std::path::PathBuf {
    dir.join(RESUME_DIR).join("checkpoint.safetensors")
}

/// The folder of a run's resume checkpoint.
const RESUME_DIR: &str = "resume";

/// Removes the run folder's resume checkpoint (and a temporary file of one a crash left),
/// and the folder itself when nothing else is in it.
pub fn clear_resume(dir: &Path) -> Result<()> {
    let resume = dir.join(RESUME_DIR);
    clear(&resume, |name| {
        name == "checkpoint.safetensors" || retain_fs::is_temporary(name)
    })?;
    // Left in place when it holds something else.
    let _ = std::fs::remove_dir(&resume);
    Ok(())
}

/// Removes every result file and live log (`events.jsonl`, TensorBoard event files) an
/// earlier run left in `dir` (`manifest.json` first, so that no manifest ever describes files
/// it did not write), so that nothing stale lies beside what this run writes; anything else
/// in the folder (a grid cell's `cell.log`) stays, and so does a folder under a result file's
/// name (the write that meets it fails, naming it). A `dir` that does not exist holds nothing.
/// The resume checkpoint goes too ([`clear_resume`]).
pub fn clear_results(dir: &Path) -> Result<()> {
    clear(dir, |name| {
        is_result_file(name) || retain_events::is_log_file(name)
    })?;
    clear_resume(dir)
}

/// Removes the result files of this run after writing them failed, so that its failed
/// manifest stands alone; its live logs stay, to show how the run went.
pub fn clear_partial_results(dir: &Path) -> Result<()> {
    clear(dir, is_result_file)
}

fn clear(dir: &Path, clears: impl Fn(&str) -> bool) -> Result<()> {
    let remove = |path: &Path| match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    };
    let manifest = dir.join("manifest.json");
    if std::fs::symlink_metadata(&manifest).is_ok_and(|m| !m.is_dir()) {
        remove(&manifest)?;
    }
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        entries => entries.with_context(|| format!("cannot list {}", dir.display()))?,
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir && entry.file_name().to_str().is_some_and(&clears) {
            remove(&entry.path())?;
        }
    }
    Ok(())
}

/// Writes Parquet files, the resolved config and heat-maps; returns the matrices per read-out.
pub fn write_results(
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
        let beta = experiment.training.lca_beta();
        let online = !outcome.anytime.is_empty();
        let (anytime_accuracy, lca) = outcome.anytime_metrics(readout, beta);
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
            anytime_accuracy,
            lca,
            lca_beta: online.then_some(beta as u64),
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
    if experiment.training.online {
        let mut anytime = Vec::new();
        for evaluation in &outcome.anytime {
            for (&readout, per_task) in &evaluation.counts {
                for (task, &(correct, samples)) in per_task.iter().enumerate() {
                    anytime.push(AnytimeRecord {
                        run: plan.run_name.clone(),
                        method: experiment.method.name.clone(),
                        seed: experiment.seed,
                        scenario: readout.as_str().to_owned(),
                        run_step: evaluation.run_step as u64,
                        training_task: evaluation.task as u32,
                        eval_task: task as u32,
                        correct,
                        samples,
                        accuracy: correct as f64 / samples.max(1) as f64,
                    });
                }
            }
        }
        retain_results::write_anytime(&dir.join("anytime.parquet"), &anytime)?;
    }
    retain_fs::write_atomically(
        &dir.join("config.toml"),
        experiment.to_resolved_toml().as_bytes(),
    )?;
    Ok(matrices)
}

/// The run's manifest: complete with `outcome`, failed with `error`.
pub fn manifest(
    plan: &Plan,
    started_at: u64,
    load_seconds: f64,
    outcome: Option<&RunOutcome>,
    costs: &RunCosts,
    pretrain: Option<StageSummary>,
    error: Option<String>,
) -> Manifest {
    let experiment = &plan.experiment;
    let libtorch_version = provenance::loaded_libtorch()
        .and_then(|p| provenance::libtorch_version(&p))
        .unwrap_or_else(|| "unknown".into());
    let status = if error.is_some() {
        RunStatus::Failed
    } else {
        RunStatus::Complete
    };
    Manifest {
        error,
        experiment: Some(experiment.name.clone()),
        run: Some(plan.run_name.clone()),
        method: Some(experiment.method.name.clone()),
        seed: Some(experiment.seed),
        training_loss: Some(experiment.training.loss.as_str().to_owned()),
        init: Some(experiment.model.init().as_str().to_owned()),
        device: Some(provenance::device_name(plan.device)),
        retain_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        tch_version: Some(TCH_VERSION.to_owned()),
        libtorch_version: Some(libtorch_version),
        git_revision: Some(provenance::git_revision()),
        started_at_unix: Some(started_at),
        finished_at_unix: Some(provenance::unix_seconds()),
        wall_seconds: Some(costs.wall_seconds),
        trainable_parameters: Some(costs.trainable_parameters),
        peak_host_memory_bytes: costs.peak_host_memory_bytes,
        peak_device_memory_bytes: costs.peak_device_memory_bytes,
        timings: outcome.map(|o| timings(o, load_seconds)),
        costs: costs.method.map(|c| retain_manifest::Costs {
            trainable_parameters: c.trainable_parameters,
            method_state_bytes: c.method_state_bytes,
            state_bytes_per_task: c.state_bytes_per_task,
            frozen_base_bytes: c.frozen_base_bytes,
            seconds_per_step: c.seconds_per_step,
        }),
        pretrain,
        model_checkpoint_sha256: experiment
            .model
            .checkpoint()
            .and_then(|path| crate::run::plan::checkpoint_sha256(path).ok()),
        ..Manifest::new(status)
    }
}

fn timings(outcome: &RunOutcome, load_seconds: f64) -> retain_manifest::Timings {
    let execution = &outcome.execution;
    retain_manifest::Timings {
        load_seconds,
        initial_eval_seconds: outcome.initial_eval_seconds,
        total_seconds: outcome.total_seconds,
        train_seconds: outcome.tasks.iter().map(|t| t.train_seconds).sum(),
        eval_seconds: outcome.tasks.iter().map(|t| t.eval_seconds).sum::<f64>()
            + outcome.initial_eval_seconds,
        steps: outcome.steps() as u64,
        seconds_per_step: outcome.seconds_per_step(),
        step_execution: retain_manifest::StepExecution {
            graphed_steps: execution.graphed_steps as u64,
            eager_steps: execution.eager_steps as u64,
            eager_reason: execution.eager_reason.clone(),
        },
        per_task: outcome
            .tasks
            .iter()
            .map(|t| retain_manifest::TaskTimings {
                task: t.task as u64,
                steps: t.steps as u64,
                samples: t.samples as u64,
                epoch_losses: t.epoch_losses.clone(),
                train_seconds: t.train_seconds,
                eval_seconds: t.eval_seconds,
            })
            .collect(),
    }
}
