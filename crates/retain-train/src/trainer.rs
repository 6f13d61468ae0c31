//! The training loop ([`run`]): tasks, epochs and batches, the method's hooks in the order
//! documented in [`method`](crate::method), and an evaluation before training and after
//! each task; in an online run (`[training] online`) also one every `eval_every` steps.

use std::collections::BTreeMap;
use std::time::Instant;

use retain_config::{Experiment, Precision, Readout, TrainingConfig};
use retain_stream::TaskStream;
use tch::{Kind, Tensor};

use crate::evaluate::check_readouts;
use crate::report::record_evaluation;
use crate::resume::{self, Boundary, Progress, WithinTask};
use crate::{
    AnytimeEvaluation, CountMatrix, EpochReport, Method, Network, Observer, RunOutcome,
    StepContext, TaskContext, TaskReport, TrainError, TrainOptimizer, divergence, evaluate_with,
    graph_step, schedule,
};

/// Trains `method` on every task of `stream` in turn, evaluating every task in every read-out
/// before training and after each task.
///
/// An online run (`[training] online`, one epoch) evaluates every task in every read-out
/// also after every `eval_every` optimiser steps, counted over the whole run: after run
/// steps `eval_every`, `2·eval_every`, …, so `⌊S / eval_every⌋` times in a run of `S` steps
/// (an evaluation due at a task's last step comes before the task's `after_task` and its
/// own evaluation). Each is recorded in [`RunOutcome::anytime`] with its run step and the
/// task being trained, and handed to [`Observer::anytime_evaluated`]; it runs between two
/// steps and reads its counts to the host once, as the per-task evaluation does. For the
/// read-outs that depend on how many tasks are done (`ncm`, the task-inference ones) it
/// counts the tasks finished before the one training.
pub fn run(
    experiment: &Experiment,
    stream: &TaskStream,
    network: &Network,
    method: &mut dyn Method,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, TrainError> {
    run_resumable(
        experiment,
        stream,
        network,
        method,
        observer,
        Resumable::default(),
    )
}

/// Where a run starts and what it does at each task boundary ([`run_resumable`]).
#[derive(Default)]
pub struct Resumable<'a> {
    /// The boundary to continue from ([`resume::read_checkpoint`], which has loaded the
    /// network and the method already); `None`: from the start.
    pub from: Option<Boundary>,
    /// Called after each task's training and evaluation (the last task's included) with
    /// the boundary's state, to write a resume checkpoint; an error stops the run
    /// ([`TrainError::Stopped`]: stopped on request, after the checkpoint).
    pub at_boundary: Option<BoundaryHook<'a>>,
}

/// [`Resumable::at_boundary`]: gets the network, the method and the boundary.
pub type BoundaryHook<'a> =
    &'a mut dyn FnMut(&Network, &dyn Method, &Boundary) -> Result<(), TrainError>;

/// [`run`], continuing from a task boundary and reporting each boundary as `resumable` says.
/// A run continued from a boundary trains and evaluates exactly as the run that wrote it
/// would have gone on (bit for bit on the same device); it does not evaluate the untrained
/// model again (row 0 comes from the checkpoint) and the observer hears only what follows.
pub fn run_resumable(
    experiment: &Experiment,
    stream: &TaskStream,
    network: &Network,
    method: &mut dyn Method,
    observer: &mut dyn Observer,
    resumable: Resumable<'_>,
) -> Result<RunOutcome, TrainError> {
    let started = Instant::now();
    let Resumable {
        from,
        mut at_boundary,
    } = resumable;
    let training = &experiment.training;
    let readouts = &experiment.stream.readouts;
    let tasks = stream.tasks.len();
    check_readouts(readouts, Some(&*method))?;
    check_training(training)?;
    network.set_memory_format(training.memory_format);
    let mut optimizer = TrainOptimizer::new(training, &network.vars)?;
    let config_hash = resume::config_hash(experiment);
    // A checkpoint written inside a task: where in it the run continues, and its variables.
    let mut resume_within: Option<WithinTask> = None;
    let mut resume_variables = BTreeMap::new();
    let anytime_every = training.anytime_every();
    let mut anytime: Vec<AnytimeEvaluation> = Vec::new();
    let (mut counts, initial_eval_seconds, mut reports, mut watch, mut run_steps, done, before) =
        match from {
            Some(boundary) => {
                let p = boundary.progress;
                if p.tasks_done > tasks || p.reports.len() != p.tasks_done {
                    return Err(TrainError::Resume {
                        message: format!(
                            "the checkpoint has {} tasks done of a {tasks}-task stream",
                            p.tasks_done
                        ),
                    });
                }
                if let Some(within) = &p.within_task {
                    check_within_task(within, &p, tasks, training, &*method)?;
                }
                resume_within = p.within_task.clone();
                anytime = p.anytime.clone();
                resume_variables = boundary.variables;
                if let (Some(state), TrainOptimizer::Flat(flat)) =
                    (boundary.optimizer, &mut optimizer)
                {
                    flat.load_state(state)?;
                }
                (
                    p.counts_for(readouts)?,
                    p.initial_eval_seconds,
                    p.reports,
                    divergence::Watch::resumed(training.divergence_factor, p.first_loss),
                    p.run_steps,
                    p.tasks_done,
                    Some((p.elapsed_seconds, p.graphed_steps, p.eager_steps)),
                )
            }
            None => {
                let mut counts: BTreeMap<Readout, CountMatrix> = readouts
                    .iter()
                    .map(|&r| (r, CountMatrix::new(tasks)))
                    .collect();
                let clock = Instant::now();
                record_evaluation(
                    &mut counts,
                    0,
                    evaluate_with(
                        network,
                        stream,
                        readouts,
                        training.eval_batch_size,
                        0,
                        method,
                    )?,
                );
                let initial_eval_seconds = clock.elapsed().as_secs_f64();
                observer.evaluated(0, 0, &counts);
                (
                    counts,
                    initial_eval_seconds,
                    Vec::with_capacity(tasks),
                    divergence::Watch::new(training.divergence_factor),
                    0,
                    0,
                    None,
                )
            }
        };
    let elapsed_before = before.map_or(0.0, |b| b.0);
    let mut execution = graph_step::StepExecution {
        eager_reason: graph_step::eager_reason(training, stream.device, &*method),
        graphed_steps: before.map_or(0, |b| b.1),
        eager_steps: before.map_or(0, |b| b.2),
    };
    for task in &stream.tasks[done..] {
        let task_ctx = TaskContext {
            network,
            stream,
            task,
            device: stream.device,
            seed: experiment.seed,
            loss: training.loss,
        };
        let resuming_within = resume_within.is_some();
        if task.index > 0 && method.fresh_optimizer_each_task() && !resuming_within {
            // Per-task parameters start afresh: no moment estimates from the previous task's.
            optimizer = TrainOptimizer::new(training, &network.vars)?;
        }
        method.before_task(&task_ctx)?;
        if resuming_within {
            // What the method created again at the task's start (adapters, a fresh head)
            // takes the values it had when the checkpoint was written.
            restore_variables(network, &std::mem::take(&mut resume_variables));
        }
        let indices = method.training_indices(&task_ctx);
        let batch_size = training.batch_size;
        let steps_per_epoch = schedule::steps_per_epoch(indices.len(), batch_size);
        observer.task_started(task.index, steps_per_epoch * training.epochs);

        let clock = Instant::now();
        // From the task's start, or from the epoch a checkpoint inside it was written after.
        let (first_epoch, mut step, mut epoch_losses, train_before) = match resume_within.take() {
            Some(w) => (w.epochs_done, w.steps, w.epoch_losses, w.train_seconds),
            None => (0, 0, Vec::with_capacity(training.epochs.min(1024)), 0.0),
        };
        // A new graph per task: what the step reads (anchors, teachers, the trainable set) may
        // have changed at the boundary.
        let mut graphed = match (&execution.eager_reason, &mut optimizer) {
            (None, TrainOptimizer::Flat(flat)) if !indices.is_empty() => {
                match graph_step::GraphedStep::new(stream.device, batch_size) {
                    Ok(g) => {
                        flat.prepare_capture();
                        Some(g)
                    }
                    Err(e) => {
                        execution.eager_reason = Some(e.to_string());
                        None
                    }
                }
            }
            _ => None,
        };
        // A method may train nothing on a task (`joint-offline` before the last one).
        let epochs = if indices.is_empty() {
            0
        } else {
            training.epochs
        };
        // The augmentation key of an eager step's batch, on the device (`StepContext::key`).
        let mut eager_key = Tensor::zeros([], (Kind::Int64, stream.device));
        for epoch in first_epoch..epochs {
            let order = stream.epoch_order(&indices, experiment.seed, task.index, epoch);
            let mut own_loss_sum = Tensor::zeros([], (Kind::Float, stream.device));
            if let Some(g) = graphed.as_mut() {
                let _ = g.loss_sum.zero_();
            }
            for start in (0..indices.len()).step_by(batch_size) {
                let len = batch_size.min(indices.len() - start);
                let batch_indices = order.narrow(0, start as i64, len as i64);
                let draw = TaskStream::draw(task.index, step);
                let key = stream.augment_key(draw);
                if let Some(g) = graphed.as_mut().filter(|g| g.batch() == len) {
                    let mut method_failure = None;
                    let outcome = g.step(
                        &batch_indices,
                        key,
                        method.capture_ready(),
                        |indices, key, loss_sum| {
                            let batch = stream.training_batch_keyed(indices, key);
                            let ctx = StepContext {
                                network,
                                stream,
                                task,
                                device: stream.device,
                                step,
                                epoch,
                                key,
                                indices,
                                loss: training.loss,
                            };
                            match train_step(
                                method,
                                &ctx,
                                &batch,
                                &mut optimizer,
                                training.precision,
                            ) {
                                Ok(loss) => {
                                    let _ = loss_sum.shallow_clone().g_add_(&loss.detach());
                                }
                                Err(e) => method_failure = Some(e),
                            }
                        },
                    );
                    // A method's failure ends the run, however the step ran.
                    if let Some(e) = method_failure.take() {
                        return Err(e);
                    }
                    match outcome {
                        Ok(ran) => {
                            if ran == graph_step::Ran::Replayed
                                && let TrainOptimizer::Flat(flat) = &mut optimizer
                            {
                                flat.count_replayed_step();
                            }
                            if ran == graph_step::Ran::WarmUp {
                                execution.eager_steps += 1;
                            } else {
                                execution.graphed_steps += 1;
                            }
                            watch.after_step(&g.loss_sum);
                            step += 1;
                            observer.step();
                            if let Some(every) = anytime_every {
                                evaluate_anytime(
                                    every,
                                    run_steps + step,
                                    task.index,
                                    network,
                                    stream,
                                    readouts,
                                    training.eval_batch_size,
                                    method,
                                    observer,
                                    &mut anytime,
                                )?;
                            }
                            continue;
                        }
                        Err(e) => {
                            // The step did not run: it runs eagerly below, and so does the
                            // rest of the run.
                            execution.eager_reason =
                                Some(format!("capture failed on task {}: {e}", task.index + 1));
                            own_loss_sum.copy_(&g.loss_sum);
                            graphed = None;
                        }
                    }
                }
                let batch = stream.training_batch(&batch_indices, draw);
                let _ = eager_key.fill_(i64::from(key));
                let ctx = StepContext {
                    network,
                    stream,
                    task,
                    device: stream.device,
                    step,
                    epoch,
                    key: &eager_key,
                    indices: &batch_indices,
                    loss: training.loss,
                };
                let loss = train_step(method, &ctx, &batch, &mut optimizer, training.precision)?;
                // In place, on the device: no host synchronisation per step.
                let loss_sum = graphed.as_ref().map_or(&own_loss_sum, |g| &g.loss_sum);
                let _ = loss_sum.shallow_clone().g_add_(&loss.detach());
                watch.after_step(loss_sum);
                execution.eager_steps += 1;
                step += 1;
                observer.step();
                if let Some(every) = anytime_every {
                    evaluate_anytime(
                        every,
                        run_steps + step,
                        task.index,
                        network,
                        stream,
                        readouts,
                        training.eval_batch_size,
                        method,
                        observer,
                        &mut anytime,
                    )?;
                }
            }
            // The one host read of the epoch.
            let loss_sum = graphed.as_ref().map_or(&own_loss_sum, |g| &g.loss_sum);
            let (mean_loss, verdict) = watch.epoch_mean(loss_sum, steps_per_epoch);
            observer.epoch_finished(&EpochReport {
                task: task.index,
                epoch,
                run_steps: run_steps + step,
                mean_loss,
            });
            if let Err(reason) = verdict {
                return Err(TrainError::Diverged {
                    task: task.index,
                    epoch,
                    loss: mean_loss,
                    reason,
                });
            }
            epoch_losses.push(mean_loss);
            let every = training.checkpoint_every_epochs;
            let checkpoint_here = every > 0 && (epoch + 1) % every == 0 && epoch + 1 < epochs;
            if let Some(hook) = at_boundary.as_mut().filter(|_| checkpoint_here)
                && method.resumes_within_task()
            {
                let boundary = Boundary {
                    progress: Progress {
                        config_hash: config_hash.clone(),
                        tasks_done: task.index,
                        run_steps,
                        graphed_steps: execution.graphed_steps,
                        eager_steps: execution.eager_steps,
                        first_loss: watch.first(),
                        initial_eval_seconds,
                        elapsed_seconds: elapsed_before + started.elapsed().as_secs_f64(),
                        counts: named_counts(&counts),
                        reports: reports.clone(),
                        anytime: anytime.clone(),
                        within_task: Some(WithinTask {
                            epochs_done: epoch + 1,
                            steps: step,
                            epoch_losses: epoch_losses.clone(),
                            train_seconds: train_before + clock.elapsed().as_secs_f64(),
                        }),
                    },
                    optimizer: match &optimizer {
                        TrainOptimizer::Flat(flat) => Some(flat.state()),
                        TrainOptimizer::PerTensor(_) => None,
                    },
                    variables: BTreeMap::new(),
                };
                hook(network, &*method, &boundary)?;
            }
        }
        let train_seconds = train_before + clock.elapsed().as_secs_f64();

        method.after_task(&task_ctx)?;
        let clock = Instant::now();
        record_evaluation(
            &mut counts,
            task.index + 1,
            evaluate_with(
                network,
                stream,
                readouts,
                training.eval_batch_size,
                task.index + 1,
                method,
            )?,
        );
        run_steps += step;
        observer.evaluated(task.index + 1, run_steps, &counts);
        let report = TaskReport {
            task: task.index,
            steps: step,
            samples: indices.len(),
            epoch_losses,
            train_seconds,
            eval_seconds: clock.elapsed().as_secs_f64(),
        };
        observer.task_finished(task.index, &report);
        reports.push(report);
        if let Some(hook) = at_boundary.as_mut() {
            // The next task's optimiser state, unless it starts a fresh one.
            let fresh_next = task.index + 1 < tasks && method.fresh_optimizer_each_task();
            let optimizer_state = match &optimizer {
                TrainOptimizer::Flat(flat) if !fresh_next => Some(flat.state()),
                _ => None,
            };
            let boundary = Boundary {
                progress: Progress {
                    config_hash: config_hash.clone(),
                    tasks_done: task.index + 1,
                    run_steps,
                    graphed_steps: execution.graphed_steps,
                    eager_steps: execution.eager_steps,
                    first_loss: watch.first(),
                    initial_eval_seconds,
                    elapsed_seconds: elapsed_before + started.elapsed().as_secs_f64(),
                    counts: named_counts(&counts),
                    reports: reports.clone(),
                    within_task: None,
                    anytime: anytime.clone(),
                },
                optimizer: optimizer_state,
                variables: BTreeMap::new(),
            };
            hook(network, &*method, &boundary)?;
        }
    }
    Ok(RunOutcome {
        counts,
        tasks: reports,
        execution,
        initial_eval_seconds,
        total_seconds: elapsed_before + started.elapsed().as_secs_f64(),
        anytime,
    })
}

/// An online run's evaluation after `run_step` steps of the run, when it is a multiple of
/// `every`: every task in every read-out, while task `task` trains (see [`run`]).
#[allow(clippy::too_many_arguments)]
fn evaluate_anytime(
    every: usize,
    run_step: usize,
    task: usize,
    network: &Network,
    stream: &TaskStream,
    readouts: &[Readout],
    eval_batch_size: usize,
    method: &mut dyn Method,
    observer: &mut dyn Observer,
    anytime: &mut Vec<AnytimeEvaluation>,
) -> Result<(), TrainError> {
    if !run_step.is_multiple_of(every) {
        return Ok(());
    }
    let counts = evaluate_with(network, stream, readouts, eval_batch_size, task, method)?;
    let evaluation = AnytimeEvaluation {
        run_step,
        task,
        counts,
    };
    observer.anytime_evaluated(&evaluation);
    anytime.push(evaluation);
    Ok(())
}

/// Copies `saved` into the network's variables of the same names.
fn restore_variables(network: &Network, saved: &BTreeMap<String, Tensor>) {
    tch::no_grad(|| {
        for (name, variable) in network.vars.variables() {
            if let Some(value) = saved.get(&name) {
                let mut target = variable.shallow_clone();
                target.copy_(value);
            }
        }
    });
}

/// The counts by read-out name, as a checkpoint's progress holds them.
fn named_counts(counts: &BTreeMap<Readout, CountMatrix>) -> BTreeMap<String, CountMatrix> {
    counts
        .iter()
        .map(|(r, c)| (r.as_str().to_owned(), c.clone()))
        .collect()
}

/// Refuses a checkpoint written inside a task that this run cannot continue: a method that
/// cannot resume a task from its middle, or an epoch count the task does not have.
fn check_within_task(
    within: &WithinTask,
    progress: &Progress,
    tasks: usize,
    training: &TrainingConfig,
    method: &dyn Method,
) -> Result<(), TrainError> {
    let refuse = |message: String| Err(TrainError::Resume { message });
    if !method.resumes_within_task() {
        return refuse(format!(
            "the checkpoint was written inside task {}, and method `{}` cannot continue a task from its middle",
            progress.tasks_done + 1,
            method.name()
        ));
    }
    if progress.tasks_done >= tasks
        || within.epochs_done >= training.epochs
        || within.epoch_losses.len() != within.epochs_done
    {
        return refuse(format!(
            "the checkpoint was written after {} epochs of task {}, which this {}-task run of {} epochs per task does not have",
            within.epochs_done,
            progress.tasks_done + 1,
            tasks,
            training.epochs
        ));
    }
    Ok(())
}

/// One optimisation step of `method` on `batch`: its loss, `zero_grad`, `backward`, its
/// `after_backward`, the optimiser's `step` (the order documented in
/// [`method`](crate::method)). Returns the loss, still on the device: nothing here reads a
/// tensor back to the host; or the method's error, where its hook failed. Under `precision = bf16` the loss (the method's forward passes)
/// runs in a bf16 autocast region; `backward`, `after_backward` (gradient surgery wants
/// float32) and the update do not.
pub fn train_step(
    method: &mut dyn Method,
    ctx: &StepContext<'_>,
    batch: &retain_stream::Batch,
    optimizer: &mut TrainOptimizer,
    precision: Precision,
) -> Result<Tensor, TrainError> {
    let loss = match precision {
        Precision::Fp32 => method.loss(ctx, batch)?,
        Precision::Bf16 => retain_graph::with_bf16_autocast(ctx.device, || method.loss(ctx, batch))
            .expect("bf16 autocast is available (check_training runs before training)")?,
    };
    optimizer.zero_grad();
    loss.backward();
    method.after_backward(ctx)?;
    optimizer.step();
    Ok(loss)
}

/// Fails when `[training]` asks for what this build cannot do (bf16 autocast without its
/// shim). The CLI calls it before any data loads, the trainer again before training.
pub fn check_training(training: &TrainingConfig) -> Result<(), TrainError> {
    if training.precision == Precision::Bf16 {
        retain_graph::autocast_availability().map_err(|e| TrainError::Unavailable {
            key: "precision",
            value: training.precision.as_str(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}
