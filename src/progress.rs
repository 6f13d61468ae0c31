//! Progress display: one bar per task while training, one summary line per finished task.
//!
//! The bar only counts steps on the host; it never reads a tensor, so it adds no device
//! synchronisation to the step.

use indicatif::{ProgressBar, ProgressStyle};
use retain_train::{Observer, TaskReport};

pub struct Progress {
    tasks: usize,
    quiet: bool,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(tasks: usize, quiet: bool) -> Self {
        Self {
            tasks,
            quiet,
            bar: None,
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Progress {
    fn task_started(&mut self, task: usize, steps: usize) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} steps {per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("task {}/{}", task + 1, self.tasks));
        self.bar = Some(bar);
    }

    fn step(&mut self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    fn task_finished(&mut self, task: usize, report: &TaskReport) {
        self.finish();
        if self.quiet {
            return;
        }
        let loss = report.epoch_losses.last().copied().unwrap_or(f64::NAN);
        eprintln!(
            "task {}/{}: {} steps on {} samples, loss {loss:.4}, train {:.2}s, eval {:.2}s",
            task + 1,
            self.tasks,
            report.steps,
            report.samples,
            report.train_seconds,
            report.eval_seconds
        );
    }
}
