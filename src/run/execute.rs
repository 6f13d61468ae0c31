//! The run itself: load, train, write every result file and the manifest.

use anyhow::{Context, Result};
use retain_stream::TaskStream;

use super::plan::{Plan, build_method, build_network};
use super::record::{self, RunCosts};
use super::{stage, summary};
use crate::device_memory::DeviceMemoryProbe;
use crate::live_log::LiveLog;
use crate::progress::{Progress, ProgressLines};
use crate::provenance::{device_name, peak_host_memory_bytes, unix_seconds};

/// For testing crash recovery: with this variable set to N, a run exits (status
/// [`EXIT_AFTER_CHECKPOINT_CODE`]) right after writing its resume checkpoint for N tasks
/// trained, as if it had been killed there; set to N:E, right after the checkpoint written
/// inside task N + 1 after E of its epochs (`training.checkpoint_every_epochs`).
pub const EXIT_AFTER_CHECKPOINT: &str = "RETAIN_EXIT_AFTER_CHECKPOINT";

/// The exit status of a run stopped by [`EXIT_AFTER_CHECKPOINT`].
pub const EXIT_AFTER_CHECKPOINT_CODE: i32 = EXIT_STOPPED_CODE;

/// The exit status of a run stopped unfinished, its resume checkpoint in place and no
/// manifest written: 75 (`EX_TEMPFAIL`, "try again"), which the Slurm job script requeues on
/// and `grid run` records as unfinished, not failed.
pub const EXIT_STOPPED_CODE: i32 = 75;

/// The error of a run stopped by SIGTERM at a task boundary ([`crate::signals`]): the run is
/// unfinished, not failed; `--resume` continues it. `main` exits with [`EXIT_STOPPED_CODE`].
#[derive(Debug)]
pub struct Stopped {
    pub run: String,
    pub tasks_done: usize,
    /// Epochs of task `tasks_done + 1` trained (a checkpoint inside it), else 0.
    pub epochs_done: usize,
    pub tasks: usize,
    pub checkpoint: Option<std::path::PathBuf>,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} stopped on SIGTERM after task {} of {}",
            self.run, self.tasks_done, self.tasks
        )?;
        if self.epochs_done > 0 {
            write!(
                f,
                " and {} epochs of task {}",
                self.epochs_done,
                self.tasks_done + 1
            )?;
        }
        match &self.checkpoint {
            Some(path) => write!(f, "; --resume continues it from {}", path.display()),
            None => write!(
                f,
                "; it wrote no resume checkpoint (flat_optimizer = false), so it starts again"
            ),
        }
    }
}

impl std::error::Error for Stopped {}

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

    let mut method = build_method(experiment)?;
    let network = build_network(
        experiment,
        stream.image_shape,
        stream.num_classes,
        plan.device,
    )?;
    std::fs::create_dir_all(&plan.run_dir)
        .with_context(|| format!("cannot create the run folder {}", plan.run_dir.display()))?;
    let checkpoint = record::resume_checkpoint(&plan.run_dir);
    let resuming = plan.resume && checkpoint.is_file();
    if plan.resume && !resuming && display == Display::Interactive {
        eprintln!(
            "note: no resume checkpoint in {}; starting from the first task",
            plan.run_dir.display()
        );
    }
    // An earlier run into this folder must leave nothing beside what this one writes; a
    // resumed run keeps the checkpoint and the live logs it continues.
    let cleared = if resuming {
        record::clear_partial_results(&plan.run_dir)
    } else {
        record::clear_results(&plan.run_dir)
    };
    cleared.with_context(|| {
        format!(
            "cannot clear the results of the earlier run in {}",
            plan.run_dir.display()
        )
    })?;
    let log = retain_events::RunLog::create(&plan.run_dir)?;
    let mut say = |line: String| {
        if display != Display::Quiet {
            eprintln!("{line}");
        }
    };
    let pretrain = match stage::apply(experiment, &network, plan.device, &mut say) {
        Ok(summary) => summary,
        Err(error) => {
            let costs = RunCosts {
                wall_seconds: wall.elapsed().as_secs_f64(),
                trainable_parameters: 0,
                method: None,
                peak_host_memory_bytes: peak_host_memory_bytes(),
                peak_device_memory_bytes: None,
            };
            let manifest = record::manifest(
                plan,
                started_at,
                load_seconds,
                None,
                &costs,
                None,
                Some(format!("{error:#}")),
            );
            manifest.write(&plan.run_dir)?;
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
    let from = if resuming {
        let boundary = retain_train::resume::read_checkpoint(
            &checkpoint,
            experiment,
            &network,
            method.as_mut(),
            plan.device,
        )?;
        if display == Display::Interactive {
            match &boundary.progress.within_task {
                None => eprintln!(
                    "resuming after task {} of {}",
                    boundary.progress.tasks_done,
                    stream.tasks.len()
                ),
                Some(within) => eprintln!(
                    "resuming task {} of {} after epoch {}",
                    boundary.progress.tasks_done + 1,
                    stream.tasks.len(),
                    within.epochs_done
                ),
            }
        }
        Some(boundary)
    } else {
        None
    };
    // `N` or `N:E`: (tasks done, epochs of the next).
    let exit_after = std::env::var(EXIT_AFTER_CHECKPOINT).ok().and_then(|v| {
        let (tasks, epochs) = v.split_once(':').unwrap_or((&v, "0"));
        Some((tasks.parse::<usize>().ok()?, epochs.parse::<usize>().ok()?))
    });
    let tasks = stream.tasks.len();
    // libtorch's per-tensor optimiser cannot give its state: no resume checkpoints.
    let checkpoints = experiment.training.flat_optimizer;
    let mut at_each_boundary =
        |network: &retain_train::Network,
         method: &dyn retain_train::Method,
         boundary: &retain_train::resume::Boundary| {
            let tasks_done = boundary.progress.tasks_done;
            let epochs_done = boundary
                .progress
                .within_task
                .as_ref()
                .map_or(0, |w| w.epochs_done);
            if checkpoints {
                retain_train::resume::write_checkpoint(&checkpoint, network, method, boundary)?;
                if exit_after == Some((tasks_done, epochs_done)) {
                    std::process::exit(EXIT_AFTER_CHECKPOINT_CODE);
                }
            }
            // SIGTERM: stop at this checkpoint, once written; a request that comes after the
            // last task lets the run finish.
            if tasks_done < tasks && crate::signals::termination_requested() {
                return Err(retain_train::TrainError::Stopped {
                    tasks_done,
                    epochs_done,
                });
            }
            Ok(())
        };
    let at_boundary: Option<retain_train::BoundaryHook<'_>> = Some(&mut at_each_boundary);
    let resumable = retain_train::Resumable { from, at_boundary };
    let device_memory = DeviceMemoryProbe::start(plan.device.is_cuda());
    let outcome = match display {
        Display::Lines => {
            let mut lines = ProgressLines::new(stream.tasks.len());
            let mut observer = LiveLog::new(log, &mut lines);
            retain_train::run_resumable(
                experiment,
                &stream,
                &network,
                method.as_mut(),
                &mut observer,
                resumable,
            )
        }
        _ => {
            let mut progress = Progress::new(stream.tasks.len(), display == Display::Quiet);
            let outcome = retain_train::run_resumable(
                experiment,
                &stream,
                &network,
                method.as_mut(),
                &mut LiveLog::new(log, &mut progress),
                resumable,
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
    let costs = RunCosts {
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
        // Unfinished, not failed: no manifest, the checkpoint stays.
        Err(retain_train::TrainError::Stopped {
            tasks_done,
            epochs_done,
        }) => {
            return Err(Stopped {
                run: plan.run_name.clone(),
                tasks_done,
                epochs_done,
                tasks,
                checkpoint: checkpoints.then(|| checkpoint.clone()),
            }
            .into());
        }
        Err(error) => {
            let costs = RunCosts {
                wall_seconds: wall.elapsed().as_secs_f64(),
                ..costs
            };
            let manifest = record::manifest(
                plan,
                started_at,
                load_seconds,
                None,
                &costs,
                pretrain.clone(),
                Some(error.to_string()),
            );
            manifest.write(&plan.run_dir)?;
            return Err(error).context(format!(
                "run {} failed (recorded in {})",
                plan.run_name,
                plan.run_dir.join("manifest.json").display()
            ));
        }
    };

    let written = record::write_results(plan, &outcome, method_costs).and_then(|matrices| {
        if plan.save_checkpoint {
            network.save(&plan.run_dir.join("model.safetensors"))?;
            retain_train::save_method_state(
                method.as_ref(),
                &plan.run_dir.join("method-state.safetensors"),
            )?;
        }
        Ok(matrices)
    });
    let costs = RunCosts {
        wall_seconds: wall.elapsed().as_secs_f64(),
        ..costs
    };
    let matrices = match written {
        Ok(matrices) => matrices,
        Err(error) => {
            // What was written is part of a run that failed: a failed manifest stands alone.
            let cleared = record::clear_partial_results(&plan.run_dir);
            let manifest = record::manifest(
                plan,
                started_at,
                load_seconds,
                Some(&outcome),
                &costs,
                pretrain,
                Some(format!("writing the results failed: {error:#}")),
            );
            let recorded = manifest.write(&plan.run_dir);
            let mut context = match recorded {
                Ok(()) => format!(
                    "run {} trained, but writing its results failed (recorded in {})",
                    plan.run_name,
                    plan.run_dir.join("manifest.json").display()
                ),
                Err(e) => format!(
                    "run {} trained, but writing its results failed, and so did recording the failure: {e}",
                    plan.run_name
                ),
            };
            if let Err(e) = cleared {
                context.push_str(&format!("; its partial results stay: {e:#}"));
            }
            return Err(error.context(context));
        }
    };
    let manifest = record::manifest(
        plan,
        started_at,
        load_seconds,
        Some(&outcome),
        &costs,
        pretrain,
        None,
    );
    manifest.write(&plan.run_dir)?;
    // The run is whole: nothing to resume.
    record::clear_resume(&plan.run_dir)?;
    if display == Display::Interactive {
        summary::print_run(&matrices, &outcome);
        println!("\nresults: {}", plan.run_dir.display());
    }
    Ok(())
}
