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

/// Progress as lines on stdout for a parent process (`retain grid cell --progress-lines`):
///
/// ```text
/// @progress task 2 5 600     task 2 of 5 started, 600 steps
/// @progress step 120         steps done in the current task (at most ~10 lines a second)
/// @progress task-done 2
/// ```
///
/// Lines start with `@progress ` so a reader can tell them from anything else on stdout.
pub struct ProgressLines {
    tasks: usize,
    steps: u64,
    last: std::time::Instant,
}

/// The prefix of every progress line.
pub const LINE_PREFIX: &str = "@progress ";

impl ProgressLines {
    pub fn new(tasks: usize) -> Self {
        Self {
            tasks,
            steps: 0,
            last: std::time::Instant::now(),
        }
    }

    fn emit(&self, line: std::fmt::Arguments<'_>) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // A parent that went away is not this run's problem; the run carries on.
        let _ = writeln!(out, "{LINE_PREFIX}{line}");
        let _ = out.flush();
    }
}

impl Observer for ProgressLines {
    fn task_started(&mut self, task: usize, steps: usize) {
        self.steps = 0;
        self.last = std::time::Instant::now();
        self.emit(format_args!("task {} {} {steps}", task + 1, self.tasks));
    }

    fn step(&mut self) {
        self.steps += 1;
        if self.last.elapsed() >= std::time::Duration::from_millis(100) {
            self.last = std::time::Instant::now();
            self.emit(format_args!("step {}", self.steps));
        }
    }

    fn task_finished(&mut self, task: usize, _report: &TaskReport) {
        self.emit(format_args!("task-done {}", task + 1));
    }
}

/// One parsed progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressEvent {
    TaskStarted {
        task: usize,
        tasks: usize,
        steps: u64,
    },
    Steps(u64),
    TaskDone(usize),
}

impl ProgressEvent {
    /// Parses a line written by [`ProgressLines`]; `None` for any other line.
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.strip_prefix(LINE_PREFIX)?.split_whitespace();
        match words.next()? {
            "task" => Some(Self::TaskStarted {
                task: words.next()?.parse().ok()?,
                tasks: words.next()?.parse().ok()?,
                steps: words.next()?.parse().ok()?,
            }),
            "step" => Some(Self::Steps(words.next()?.parse().ok()?)),
            "task-done" => Some(Self::TaskDone(words.next()?.parse().ok()?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_parse_and_other_lines_are_ignored() {
        assert_eq!(
            ProgressEvent::parse("@progress task 2 5 600"),
            Some(ProgressEvent::TaskStarted {
                task: 2,
                tasks: 5,
                steps: 600
            })
        );
        assert_eq!(
            ProgressEvent::parse("@progress step 120"),
            Some(ProgressEvent::Steps(120))
        );
        assert_eq!(
            ProgressEvent::parse("@progress task-done 2"),
            Some(ProgressEvent::TaskDone(2))
        );
        for other in [
            "accuracy (%), class_il read-out",
            "@progress step",
            "@progress step many",
            "@progress jump 3",
            "progress step 3",
        ] {
            assert_eq!(ProgressEvent::parse(other), None, "{other}");
        }
    }
}
