//! What a run will do before it does it: per task, the samples the method trains on, the
//! optimiser steps they give and the samples every evaluation reads. [`run`](crate::run)
//! takes its step counts from here, so `retain plan` and the trainer cannot disagree.

use retain_config::Experiment;
use retain_stream::{SplitKind, TaskStream};

use crate::{Method, Network, TaskContext};

/// One task of a [`schedule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSchedule {
    pub task: usize,
    /// The task's classes, in the stream's class order.
    pub classes: Vec<i64>,
    /// Training samples of one epoch: what the method's `training_indices` returns (the
    /// task's own, or more for joint training).
    pub samples: usize,
    /// Optimiser steps over all epochs; the last batch of an epoch may be partial.
    pub steps: usize,
    /// Samples the evaluation after any task reads from this task (test or validation).
    pub eval_samples: usize,
}

/// Optimiser steps of one epoch over `samples` at `batch_size`, the partial batch kept.
pub fn steps_per_epoch(samples: usize, batch_size: usize) -> usize {
    samples.div_ceil(batch_size)
}

/// The schedule of `method` on `stream` under `experiment`'s training settings. Asks the
/// method for its training indices, which reads but never changes its state.
pub fn schedule(
    experiment: &Experiment,
    stream: &TaskStream,
    network: &Network,
    method: &mut dyn Method,
) -> Vec<TaskSchedule> {
    let training = &experiment.training;
    stream
        .tasks
        .iter()
        .map(|task| {
            let ctx = TaskContext {
                network,
                stream,
                task,
                device: stream.device,
                seed: experiment.seed,
                loss: training.loss,
            };
            let samples = method.training_indices(&ctx).len();
            let epochs = if samples == 0 { 0 } else { training.epochs };
            TaskSchedule {
                task: task.index,
                classes: task.classes.clone(),
                samples,
                steps: steps_per_epoch(samples, training.batch_size) * epochs,
                eval_samples: match stream.eval_split {
                    SplitKind::Test => task.test_len,
                    SplitKind::Train => task.validation_len,
                },
            }
        })
        .collect()
}
