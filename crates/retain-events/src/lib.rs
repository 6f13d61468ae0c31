//! Live logs of a run, written while it trains: every line of `events.jsonl` and every
//! record of a TensorBoard event file is flushed as soon as it is written, so
//! `tail -f events.jsonl` and `tensorboard --logdir results/` follow a run (and every grid
//! cell) as it goes.
//!
//! One [`Event`] is one line of `events.jsonl` and one TensorBoard event of its
//! [`values`](Event::values) as scalars: each value's name is its TensorBoard tag, at the
//! event's [`step`](Event::step) and wall time. Nothing here knows about training: the
//! binary turns the trainer's reports into events.
//!
//! `events.jsonl` is append-only: each line one JSON object,
//!
//! ```json
//! {"wall_time":1765152000.25,"kind":"loss","task":0,"epoch":1,"step":240,"values":{"loss/train":0.31}}
//! ```
//!
//! A value that is not a finite number (a diverging loss) is `null` in JSON, and NaN or
//! infinite in TensorBoard. Writes are flushed to the operating system, not synced to the
//! disk: a log is for watching, the result files are the record.

mod crc32c;
pub mod tfevents;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::crc32c::{crc32c, masked_crc32c};
pub use crate::tfevents::EventFile;

/// The JSON-lines log's file name in a run folder.
pub const JSONL_FILE: &str = "events.jsonl";

/// Whether `name` (a file name in a run folder) is one of the live logs this crate writes.
pub fn is_log_file(name: &str) -> bool {
    name == JSONL_FILE || name.starts_with(tfevents::FILE_PREFIX)
}

/// A log file that could not be created or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} the live log {path}: {source}")]
pub struct EventsError {
    pub path: PathBuf,
    pub action: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// What an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Training losses (an epoch's mean).
    Loss,
    /// Accuracies of an evaluation of every task.
    Evaluation,
}

/// One event of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
    pub kind: EventKind,
    /// The task (0-based) in training, or just trained; `None` before any training.
    pub task: Option<usize>,
    /// The epoch (0-based) within the task, where the event belongs to one.
    pub epoch: Option<usize>,
    /// Optimiser steps of the run so far: the x axis of every TensorBoard scalar.
    pub step: u64,
    /// Values by name; each name is the value's TensorBoard tag.
    pub values: BTreeMap<String, f64>,
}

/// The current time as seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The live logs of one run folder: `events.jsonl` and one TensorBoard event file.
#[derive(Debug)]
pub struct RunLog {
    jsonl_path: PathBuf,
    jsonl: File,
    tensorboard: EventFile,
}

impl RunLog {
    /// Opens `<dir>/events.jsonl` for appending (creating it) and creates a new TensorBoard
    /// event file in `dir`, which must exist.
    pub fn create(dir: &Path) -> Result<Self, EventsError> {
        let jsonl_path = dir.join(JSONL_FILE);
        let jsonl = File::options()
            .create(true)
            .append(true)
            .open(&jsonl_path)
            .map_err(|source| EventsError {
                path: jsonl_path.clone(),
                action: "open",
                source,
            })?;
        let tensorboard = EventFile::create(dir, unix_now())?;
        Ok(RunLog {
            jsonl_path,
            jsonl,
            tensorboard,
        })
    }

    /// The TensorBoard event file's path.
    pub fn tensorboard_path(&self) -> &Path {
        self.tensorboard.path()
    }

    /// Appends `event` to both logs and flushes them.
    pub fn write(&mut self, event: &Event) -> Result<(), EventsError> {
        let mut line = serde_json::to_vec(event).expect("an event serialises");
        line.push(b'\n');
        self.jsonl
            .write_all(&line)
            .and_then(|()| self.jsonl.flush())
            .map_err(|source| EventsError {
                path: self.jsonl_path.clone(),
                action: "write",
                source,
            })?;
        let scalars: Vec<(&str, f32)> = event
            .values
            .iter()
            .map(|(tag, &value)| (tag.as_str(), value as f32))
            .collect();
        self.tensorboard
            .scalars(event.wall_time, event.step, &scalars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, step: u64, values: &[(&str, f64)]) -> Event {
        Event {
            wall_time: 1_765_152_000.25,
            kind,
            task: Some(1),
            epoch: (kind == EventKind::Loss).then_some(2),
            step,
            values: values.iter().map(|&(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    /// Each event is one line, in order, that reads back as written; a non-finite value is
    /// `null`; the event file holds the version record and one record per event.
    #[test]
    fn events_append_as_lines_and_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RunLog::create(dir.path()).unwrap();
        let loss = event(EventKind::Loss, 240, &[("loss/train", 0.31)]);
        let evaluation = event(
            EventKind::Evaluation,
            300,
            &[
                ("accuracy/class_il/task0", 0.5),
                ("accuracy/class_il/task1", 1.0),
            ],
        );
        log.write(&loss).unwrap();
        log.write(&evaluation).unwrap();
        let diverged = event(EventKind::Loss, 360, &[("loss/train", f64::NAN)]);
        log.write(&diverged).unwrap();

        let text = std::fs::read_to_string(dir.path().join(JSONL_FILE)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(serde_json::from_str::<Event>(lines[0]).unwrap(), loss);
        assert_eq!(serde_json::from_str::<Event>(lines[1]).unwrap(), evaluation);
        assert!(lines[0].starts_with(
            r#"{"wall_time":1765152000.25,"kind":"loss","task":1,"epoch":2,"step":240,"#
        ));
        assert!(
            lines[2].ends_with(r#""values":{"loss/train":null}}"#),
            "{}",
            lines[2]
        );

        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().all(|n| is_log_file(n)), "{names:?}");
        // The version record (of a fixed length: its wall time is the creation time), then
        // one record per event.
        let records = std::fs::read(log.tensorboard_path()).unwrap();
        let version = tfevents::frame(&tfevents::file_version_event(0.0)).len();
        let mut expected = Vec::new();
        for e in [&loss, &evaluation, &diverged] {
            let scalars: Vec<(&str, f32)> = e
                .values
                .iter()
                .map(|(t, &v)| (t.as_str(), v as f32))
                .collect();
            expected.extend(tfevents::frame(&tfevents::scalars_event(
                e.wall_time,
                e.step,
                &scalars,
            )));
        }
        assert_eq!(&records[version..], &expected[..]);
    }

    #[test]
    fn log_files_are_recognised_by_name() {
        assert!(is_log_file("events.jsonl"));
        assert!(is_log_file("events.out.tfevents.1765152000.retain"));
        assert!(!is_log_file("events.json"));
        assert!(!is_log_file("accuracy.parquet"));
    }
}
