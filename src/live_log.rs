//! The live logs of a run (`events.jsonl` and a TensorBoard event file in the run folder,
//! written by `retain-events`): an [`Observer`] that writes each epoch's mean loss and each
//! evaluation as it is reported, and passes every call on to the progress display.
//!
//! It writes only what the trainer has already read to the host (one loss per epoch, the
//! counts of an evaluation), so it adds no device synchronisation. A log that cannot be
//! written does not stop the run: the first failure is reported on stderr and the log stops
//! there; the result files are the run's record.

use std::collections::BTreeMap;

use retain_events::{Event, EventKind, RunLog, unix_now};
use retain_train::{AnytimeEvaluation, CountMatrix, EpochReport, Observer, Readout, TaskReport};

/// The tag of an epoch's mean training loss.
pub const LOSS_TAG: &str = "loss/train";

/// The tag of the accuracy on task `task` (0-based) in `readout`.
pub fn accuracy_tag(readout: Readout, task: usize) -> String {
    format!("accuracy/{}/task{task}", readout.as_str())
}

/// The tag of an online run's anytime accuracy on task `task` (0-based) in `readout`.
pub fn anytime_tag(readout: Readout, task: usize) -> String {
    format!("anytime/{}/task{task}", readout.as_str())
}

pub struct LiveLog<'a> {
    log: Option<RunLog>,
    inner: &'a mut dyn Observer,
}

impl<'a> LiveLog<'a> {
    /// Writes into `log` and passes every call on to `inner`.
    pub fn new(log: RunLog, inner: &'a mut dyn Observer) -> Self {
        LiveLog {
            log: Some(log),
            inner,
        }
    }

    fn write(&mut self, event: Event) {
        if let Some(log) = self.log.as_mut()
            && let Err(error) = log.write(&event)
        {
            eprintln!("warning: {error}; the run goes on without its live log");
            self.log = None;
        }
    }
}

impl Observer for LiveLog<'_> {
    fn task_started(&mut self, task: usize, steps: usize) {
        self.inner.task_started(task, steps);
    }

    fn step(&mut self) {
        self.inner.step();
    }

    fn epoch_finished(&mut self, epoch: &EpochReport) {
        self.inner.epoch_finished(epoch);
        self.write(Event {
            wall_time: unix_now(),
            kind: EventKind::Loss,
            task: Some(epoch.task),
            epoch: Some(epoch.epoch),
            step: epoch.run_steps as u64,
            values: BTreeMap::from([(LOSS_TAG.to_owned(), epoch.mean_loss)]),
        });
    }

    fn evaluated(
        &mut self,
        trained_tasks: usize,
        run_steps: usize,
        counts: &BTreeMap<Readout, CountMatrix>,
    ) {
        self.inner.evaluated(trained_tasks, run_steps, counts);
        let mut values = BTreeMap::new();
        for (&readout, matrix) in counts {
            for task in 0..matrix.tasks {
                let (correct, samples) = matrix.cell(trained_tasks, task);
                values.insert(
                    accuracy_tag(readout, task),
                    correct as f64 / samples.max(1) as f64,
                );
            }
        }
        self.write(Event {
            wall_time: unix_now(),
            kind: EventKind::Evaluation,
            task: trained_tasks.checked_sub(1),
            epoch: None,
            step: run_steps as u64,
            values,
        });
    }

    fn task_finished(&mut self, task: usize, report: &TaskReport) {
        self.inner.task_finished(task, report);
    }

    fn anytime_evaluated(&mut self, evaluation: &AnytimeEvaluation) {
        self.inner.anytime_evaluated(evaluation);
        let values = evaluation
            .counts
            .iter()
            .flat_map(|(&readout, per_task)| {
                per_task.iter().enumerate().map(move |(task, &(c, n))| {
                    (anytime_tag(readout, task), c as f64 / n.max(1) as f64)
                })
            })
            .collect();
        self.write(Event {
            wall_time: unix_now(),
            kind: EventKind::Evaluation,
            task: Some(evaluation.task),
            epoch: None,
            step: evaluation.run_step as u64,
            values,
        });
    }
}
