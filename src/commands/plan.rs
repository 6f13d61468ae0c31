//! `retain plan`: what a run would do and roughly how long it would take, before it starts.
//!
//! The tasks and step counts come from the same code the run uses (`TaskStream::build` and
//! `retain_train::schedule`), on the real files when they are here and on a stand-in with the
//! dataset's published class counts when they are not, so the plan of an experiment whose
//! data is still to be fetched is exact too. The time estimate comes from a short warm-up of
//! the real trainer (two tasks of a few steps each, on the device the run would use) scaled to
//! the full schedule. Nothing is written.

use std::time::Instant;

use anyhow::{Context, Result};
use retain_config::Experiment;
use retain_data::{DatasetSpec, ImageDataset};
use retain_stream::TaskStream;
use retain_train::{Network, RunOutcome, TaskSchedule};
use tch::Device;

use crate::cli::{PlanArgs, RunArgs};
use crate::provenance::device_name;
use crate::run::plan::build_method;
use crate::run::{Plan, stage};
use crate::tables::print_table;

pub fn execute(args: &PlanArgs) -> Result<()> {
    let run_args = RunArgs {
        experiment: args.experiment.clone(),
        overrides: args.overrides.clone(),
        device: args.device.clone(),
        seed: args.seed,
        run_name: None,
        output: args.output.clone(),
        data_root: args.data_root.clone(),
        quiet: true,
        save_checkpoint: false,
        resume: false,
    };
    let plan = Plan::from_args(&run_args)?;
    let experiment = &plan.experiment;

    println!("# {} resolved\n", args.experiment.display());
    println!("{}", experiment.to_resolved_toml().trim_end());
    println!();

    let clock = Instant::now();
    let (dataset, data_note) = stream_dataset(experiment)?;
    let stream = TaskStream::build(&dataset, &experiment.stream, experiment.seed, plan.device)
        .context("building the task stream")?;
    drop(dataset);
    let load_seconds = clock.elapsed().as_secs_f64();
    let network = Network::for_shape(
        experiment,
        stream.image_shape,
        stream.num_classes,
        plan.device,
    );
    let mut method = build_method(experiment)?;
    let schedule = retain_train::schedule(experiment, &stream, &network, method.as_mut());

    let parameters: usize = network.parameters().iter().map(|(_, t)| t.numel()).sum();
    println!("# plan\n");
    let facts = [
        ("method", experiment.method.name.clone()),
        (
            "model",
            format!(
                "{}, {} initialisation, {} trainable parameters",
                model_kind(experiment),
                experiment.model.init().as_str(),
                group_thousands(parameters)
            ),
        ),
        (
            "stream",
            format!(
                "{} {}, {} tasks, {} classes in the head",
                experiment.stream.kind.as_str(),
                stream.dataset,
                stream.tasks.len(),
                stream.num_classes
            ),
        ),
        (
            "training",
            format!(
                "{} epoch(s) per task, batch {}, {} loss",
                experiment.training.epochs,
                experiment.training.batch_size,
                experiment.training.loss.as_str()
            ),
        ),
        ("device", device_name(plan.device)),
        ("data", data_note),
        ("pretrain", pretrain_note(experiment)),
        ("results", plan.run_dir.display().to_string()),
    ];
    for (what, value) in facts {
        println!("{what:<9} {value}");
    }
    println!();

    let mut rows = vec![
        [
            "task",
            "classes",
            "training samples",
            "steps",
            "eval samples",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for task in &schedule {
        rows.push(vec![
            (task.task + 1).to_string(),
            class_list(&task.classes),
            task.samples.to_string(),
            task.steps.to_string(),
            task.eval_samples.to_string(),
        ]);
    }
    let total_steps: usize = schedule.iter().map(|t| t.steps).sum();
    rows.push(vec![
        "all".into(),
        String::new(),
        schedule
            .iter()
            .map(|t| t.samples)
            .sum::<usize>()
            .to_string(),
        total_steps.to_string(),
        String::new(),
    ]);
    print_table(&rows);
    let eval_samples: usize = schedule.iter().map(|t| t.eval_samples).sum();
    println!(
        "\n{} evaluations (untrained, then after each task), {} samples each, read-outs {}",
        schedule.len() + 1,
        eval_samples,
        experiment
            .stream
            .readouts
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    if args.warmup_steps == 0 {
        println!("\nno time estimate (--warmup-steps 0)");
        return Ok(());
    }
    let warmup = warm_up(args, &run_args, plan.device)?;
    let estimate = Estimate::scale(&warmup, &schedule, load_seconds);
    println!(
        "\nestimate from a warm-up of {} step(s) on {}: {:.3} ms per step, {:.3} ms per evaluated sample",
        warmup.steps(),
        device_name(plan.device),
        estimate.seconds_per_step * 1e3,
        estimate.seconds_per_eval_sample * 1e3
    );
    println!(
        "  training {}, evaluation {}, method's per-task work {}, data {}: about {} in all",
        duration(estimate.training),
        duration(estimate.evaluation),
        duration(estimate.method_work),
        duration(load_seconds),
        duration(estimate.total())
    );
    if experiment.pretrain.is_some() {
        println!("  (a [pretrain] stage to train is not included)");
    }
    Ok(())
}

/// The stream's dataset: the verified files when they are here, else a stand-in with the
/// published class counts; and a line saying which, and how to fetch what is missing.
fn stream_dataset(experiment: &Experiment) -> Result<(ImageDataset, String)> {
    let name = experiment.stream.dataset.as_str();
    let root = &experiment.data_root;
    let spec = DatasetSpec::by_name(name)?;
    let files = retain_data::status(name, root)?;
    let missing = files.iter().filter(|f| !f.present).count();
    let fetch = retain_data::fetch_command(name, root);
    let stand_in = |why: String| -> Result<(ImageDataset, String)> {
        let dataset = ImageDataset::stand_in(spec).with_context(|| {
            format!("{name} publishes no class counts, and its files cannot be read: {why}")
        })?;
        Ok((
            dataset,
            format!("{name}: {why}; counts from its published class sizes"),
        ))
    };
    if missing > 0 {
        return stand_in(format!(
            "{missing} of {} file(s) missing (`{fetch}`)",
            files.len()
        ));
    }
    match retain_data::load(name, root) {
        Ok(dataset) => {
            let verified = if files.iter().all(|f| f.verified) {
                "present and verified"
            } else {
                "present, structural checks only (no checksum manifest)"
            };
            Ok((dataset, format!("{name}: {verified} in {}", root.display())))
        }
        Err(error) => stand_in(format!("present but not usable ({error})")),
    }
}

/// Whether a `[pretrain]` stage would train or reuse its cached checkpoint.
fn pretrain_note(experiment: &Experiment) -> String {
    let Some(stage_plan) = experiment.pretrain_plan() else {
        return "none".into();
    };
    let what = format!(
        "{} epoch(s) on {} ({} classes)",
        stage_plan.epochs,
        stage_plan.dataset.as_str(),
        stage_plan.classes.len()
    );
    match stage::key(experiment, &stage_plan) {
        Ok((_, hash)) => {
            let dir = stage::cache_dir(experiment, &hash);
            if dir.join("model.safetensors").is_file() {
                format!("{what}: cached in {}, reused", dir.display())
            } else {
                format!("{what}: not cached, trained first")
            }
        }
        Err(error) => format!("{what}: {error:#}"),
    }
}

/// Runs the real trainer on a short version of the experiment: its first two tasks (one for a
/// one-task stream), `--warmup-steps` batches each, one epoch, a small evaluation, on a
/// stand-in of the dataset (zero images, the same shapes) on `device`.
fn warm_up(args: &PlanArgs, run_args: &RunArgs, device: Device) -> Result<RunOutcome> {
    let base = Plan::from_args(run_args)?.experiment;
    let training = &base.training;
    let tasks = base.stream.tasks.min(2);
    let mut overrides = run_args.overrides.clone();
    // A list of class counts has one entry per task: keep those of the tasks warmed up.
    if let Some(retain_config::ClassesPerTask::PerTask(counts)) = &base.stream.classes_per_task {
        overrides.push(format!(
            "stream.classes_per_task={:?}",
            &counts[..tasks.min(counts.len())]
        ));
    }
    overrides.extend([
        format!("stream.tasks={tasks}"),
        format!(
            "stream.train_samples_per_task={}",
            training.batch_size * args.warmup_steps
        ),
        format!(
            "stream.test_samples_per_task={}",
            training.eval_batch_size.min(training.batch_size)
        ),
        "training.epochs=1".into(),
    ]);
    let short = Plan::from_args(&RunArgs {
        overrides,
        ..run_args.clone()
    })
    .context("the warm-up's shortened experiment")?
    .experiment;
    let spec = DatasetSpec::by_name(short.stream.dataset.as_str())?;
    let dataset = match ImageDataset::stand_in(spec) {
        Some(dataset) => dataset,
        None => retain_data::load(spec.name, &short.data_root)?,
    };
    let stream = TaskStream::build(&dataset, &short.stream, short.seed, device)
        .context("building the warm-up stream")?;
    drop(dataset);
    let network = Network::for_shape(&short, stream.image_shape, stream.num_classes, device);
    let mut method = build_method(&short)?;
    retain_train::run(
        &short,
        &stream,
        &network,
        method.as_mut(),
        &mut retain_train::Silent,
    )
    .context("the warm-up run")
}

/// A warm-up's rates scaled to a full schedule.
#[derive(Debug)]
struct Estimate {
    seconds_per_step: f64,
    seconds_per_eval_sample: f64,
    training: f64,
    evaluation: f64,
    method_work: f64,
    load: f64,
}

impl Estimate {
    /// The step time is the last warm-up task's (the first task pays one-time costs, and from
    /// the second on a method's per-step extra work is active); evaluation and the method's
    /// per-task work (before and after each task: a Fisher pass, a memory update) are scaled
    /// per sample.
    fn scale(warmup: &RunOutcome, schedule: &[TaskSchedule], load: f64) -> Self {
        let last = warmup
            .tasks
            .last()
            .expect("a warm-up trains at least one task");
        let seconds_per_step = last.train_seconds / last.steps.max(1) as f64;
        let warm_eval_samples: u64 = warmup
            .counts
            .values()
            .next()
            .map(|m| m.samples.iter().sum())
            .unwrap_or(0);
        let warm_eval_seconds =
            warmup.initial_eval_seconds + warmup.tasks.iter().map(|t| t.eval_seconds).sum::<f64>();
        let seconds_per_eval_sample = warm_eval_seconds / warm_eval_samples.max(1) as f64;
        let warm_train: f64 = warmup.tasks.iter().map(|t| t.train_seconds).sum();
        let warm_samples: usize = warmup.tasks.iter().map(|t| t.samples).sum();
        let per_task_work = (warmup.total_seconds - warm_train - warm_eval_seconds).max(0.0)
            / warm_samples.max(1) as f64;
        let steps: usize = schedule.iter().map(|t| t.steps).sum();
        let samples: usize = schedule.iter().map(|t| t.samples).sum();
        let eval_per_round: usize = schedule.iter().map(|t| t.eval_samples).sum();
        Estimate {
            seconds_per_step,
            seconds_per_eval_sample,
            training: steps as f64 * seconds_per_step,
            evaluation: ((schedule.len() + 1) * eval_per_round) as f64 * seconds_per_eval_sample,
            method_work: samples as f64 * per_task_work,
            load,
        }
    }

    fn total(&self) -> f64 {
        self.training + self.evaluation + self.method_work + self.load
    }
}

/// The `[model] kind` as written in experiment files.
fn model_kind(experiment: &Experiment) -> String {
    serde_json::to_value(&experiment.model)
        .ok()
        .and_then(|v| v.get("kind")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "model".into())
}

/// `1 234 567`: parameter counts readable at a glance.
fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Classes as written in a table cell: all of them up to 12, else the first and a count.
fn class_list(classes: &[i64]) -> String {
    if classes.len() <= 12 {
        classes
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        format!("{} … ({} classes)", classes[0], classes.len())
    }
}

/// Seconds as `4.2 s`, `12 min 5 s` or `3 h 20 min`.
fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else if seconds < 3600.0 {
        format!(
            "{} min {} s",
            (seconds / 60.0) as u64,
            (seconds % 60.0) as u64
        )
    } else {
        format!(
            "{} h {} min",
            (seconds / 3600.0) as u64,
            ((seconds % 3600.0) / 60.0) as u64
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_counts_read_at_a_glance() {
        assert_eq!(duration(4.25), "4.2 s");
        assert_eq!(duration(725.0), "12 min 5 s");
        assert_eq!(duration(12_000.0), "3 h 20 min");
        assert_eq!(group_thousands(11_173_962), "11 173 962");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(class_list(&[0, 1]), "0 1");
        assert_eq!(class_list(&(0..20).collect::<Vec<_>>()), "0 … (20 classes)");
    }
}
