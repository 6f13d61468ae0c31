//! What a run reports: progress to an [`Observer`] while it trains, counts and timings
//! ([`RunOutcome`]) when it ends.

use std::collections::BTreeMap;

use retain_config::Readout;
use retain_metrics::{AccuracyMatrix, MetricsError};

use crate::evaluate::Evaluation;
use crate::graph_step;

/// Receives progress from [`run`](crate::run). Every method is called on the training thread
/// and must be cheap: `step` is called once per batch. The order:
///
/// 1. `evaluated(0, 0, counts)`: the untrained model;
/// 2. for each task: `task_started`; for each epoch, `step` after each batch (in an online
///    run followed, every `eval_every` steps of the run, by `anytime_evaluated`) and
///    `epoch_finished` once the epoch's mean loss is read (also for an epoch that diverged,
///    just before the run stops); `evaluated(task + 1, ..)`; `task_finished`.
///
/// Nothing here reads a tensor: the losses and counts handed over are the ones the trainer
/// has already brought to the host.
pub trait Observer {
    fn task_started(&mut self, _task: usize, _steps: usize) {}
    fn step(&mut self) {}
    fn epoch_finished(&mut self, _epoch: &EpochReport) {}
    /// An evaluation after `trained_tasks` tasks (0 = untrained), `run_steps` optimiser steps
    /// into the run; its counts are row `trained_tasks` of each read-out's matrix.
    fn evaluated(
        &mut self,
        _trained_tasks: usize,
        _run_steps: usize,
        _counts: &BTreeMap<Readout, CountMatrix>,
    ) {
    }
    fn task_finished(&mut self, _task: usize, _report: &TaskReport) {}
    /// An online run's evaluation between two steps (`[training] eval_every`).
    fn anytime_evaluated(&mut self, _evaluation: &AnytimeEvaluation) {}
}

/// One evaluation of an online run between two training steps (`[training] online`): every
/// task in every read-out, after `run_step` optimiser steps of the run (a multiple of
/// `eval_every`), while task `task` (0-based) trains.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AnytimeEvaluation {
    pub run_step: usize,
    pub task: usize,
    /// Per read-out, per task of the stream: (correct, samples).
    pub counts: BTreeMap<Readout, Vec<(u64, u64)>>,
}

impl AnytimeEvaluation {
    /// The evaluation's accuracies in `readout` as a metrics point; `None` when the read-out
    /// was not evaluated.
    pub fn point(&self, readout: Readout) -> Option<retain_metrics::AnytimePoint> {
        let counts = self.counts.get(&readout)?;
        Some(retain_metrics::AnytimePoint {
            run_step: self.run_step,
            training_task: self.task,
            accuracies: counts
                .iter()
                .map(|&(correct, samples)| correct as f64 / samples.max(1) as f64)
                .collect(),
        })
    }
}

/// One finished epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochReport {
    /// The task (0-based) and the epoch within it (0-based).
    pub task: usize,
    pub epoch: usize,
    /// Optimiser steps of the run so far, this epoch's included.
    pub run_steps: usize,
    /// The epoch's mean training loss.
    pub mean_loss: f64,
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Silent;
impl Observer for Silent {}

/// Correct and total counts of one read-out: rows `0..=T` (0 = untrained), columns = tasks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CountMatrix {
    pub tasks: usize,
    pub correct: Vec<u64>,
    pub samples: Vec<u64>,
}

impl CountMatrix {
    pub(crate) fn new(tasks: usize) -> Self {
        Self {
            tasks,
            correct: vec![0; (tasks + 1) * tasks],
            samples: vec![0; (tasks + 1) * tasks],
        }
    }

    /// Counts after `trained` tasks (0 = untrained) on task `task` (0-based).
    pub fn cell(&self, trained: usize, task: usize) -> (u64, u64) {
        let i = trained * self.tasks + task;
        (self.correct[i], self.samples[i])
    }

    /// The accuracy matrix these counts define.
    pub fn accuracy(&self) -> Result<AccuracyMatrix, MetricsError> {
        let rows: Vec<Vec<f64>> = (0..=self.tasks)
            .map(|row| {
                (0..self.tasks)
                    .map(|task| {
                        let (correct, samples) = self.cell(row, task);
                        correct as f64 / samples.max(1) as f64
                    })
                    .collect()
            })
            .collect();
        AccuracyMatrix::from_rows(&rows)
    }
}

/// Writes `evaluation` (made after `row` tasks) into row `row` of each read-out's matrix.
pub(crate) fn record_evaluation(
    counts: &mut BTreeMap<Readout, CountMatrix>,
    row: usize,
    evaluation: Evaluation,
) {
    for (readout, per_task) in evaluation {
        let matrix = counts
            .get_mut(&readout)
            .expect("every read-out has a matrix");
        for (task, (correct, samples)) in per_task.into_iter().enumerate() {
            let i = row * matrix.tasks + task;
            matrix.correct[i] = correct;
            matrix.samples[i] = samples;
        }
    }
}

/// What happened while training one task.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskReport {
    pub task: usize,
    pub steps: usize,
    pub samples: usize,
    /// Mean training loss of each epoch.
    pub epoch_losses: Vec<f64>,
    pub train_seconds: f64,
    pub eval_seconds: f64,
}

/// The outcome of a run: counts per read-out and timings.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub counts: BTreeMap<Readout, CountMatrix>,
    pub tasks: Vec<TaskReport>,
    /// How the training steps ran: replayed from CUDA graphs or eagerly, and why.
    pub execution: graph_step::StepExecution,
    /// Evaluation of the untrained model (row 0), in seconds.
    pub initial_eval_seconds: f64,
    pub total_seconds: f64,
    /// An online run's evaluations between steps, in run order; empty offline.
    pub anytime: Vec<AnytimeEvaluation>,
}

impl RunOutcome {
    /// Total optimiser steps over the run.
    pub fn steps(&self) -> usize {
        self.tasks.iter().map(|t| t.steps).sum()
    }

    /// Mean wall time of one training step (data, forward, backward, update), in seconds.
    pub fn seconds_per_step(&self) -> f64 {
        let train: f64 = self.tasks.iter().map(|t| t.train_seconds).sum();
        train / self.steps().max(1) as f64
    }

    /// The online metrics of `readout`: the average anytime accuracy and `LCA_β` (`β` in
    /// steps), see `retain_metrics::average_anytime_accuracy` and
    /// `retain_metrics::learning_curve_area`; `(None, None)` without anytime evaluations.
    pub fn anytime_metrics(&self, readout: Readout, beta: usize) -> (Option<f64>, Option<f64>) {
        if self.anytime.is_empty() {
            return (None, None);
        }
        let points: Option<Vec<_>> = self.anytime.iter().map(|e| e.point(readout)).collect();
        let Some(points) = points else {
            return (None, None);
        };
        let aaa = retain_metrics::average_anytime_accuracy(&points);
        let steps: Vec<usize> = self.tasks.iter().map(|t| t.steps).collect();
        let lca = self
            .counts
            .get(&readout)
            .and_then(|c| c.accuracy().ok())
            .and_then(|m| retain_metrics::task_curves(&m, &steps, &points))
            .and_then(|curves| retain_metrics::learning_curve_area(&curves, beta));
        (aaa, lca)
    }
}
