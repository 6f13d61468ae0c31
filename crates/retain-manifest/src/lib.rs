//! The run manifest: `manifest.json`, a run's provenance record and the one file that says
//! whether a run folder holds a whole run.
//!
//! # Writers
//!
//! - A run (`retain run`, `retain grid cell`) writes it last, once the run is complete or has
//!   failed, with every field.
//! - The grid runner writes one for a cell whose process died before writing its own (a crash,
//!   a dataset that would not load): status `failed`, the error, experiment, run, device and
//!   finishing time; the rest is absent or null.
//!
//! Both write through [`Manifest::write`], i.e. [`retain_fs::write_atomically`]: a reader sees
//! the previous manifest or the new one, never part of one, so a manifest that says
//! `complete` always describes a run whose other files are in place.
//!
//! # Schema versions
//!
//! `schema_version` names the layout, and [`Manifest::read`] checks it before anything else:
//!
//! | version | layout |
//! |---|---|
//! | 0 | no `schema_version` field: written before the field existed. The fields are those of version 1, so it is read with the same struct and keeps `schema_version = 0` |
//! | 1 | [`Manifest`] as it is now ([`SCHEMA_VERSION`]) |
//!
//! A file of a version newer than [`SCHEMA_VERSION`] was written by a newer retain whose fields
//! may mean something else; reading it is [`ManifestError::NewerSchema`], never a guess.
//!
//! Every field but `status` may be missing when reading (the grid runner's record lacks most,
//! and hand-written manifests in tests lack more): optional fields read as `None`, numbers
//! inside `timings` and `costs` as 0. The writer always writes every field it has.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The layout this crate writes, and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The manifest's file name in a run folder.
pub const FILE_NAME: &str = "manifest.json";

/// How a run ended, as stored in `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Every result file is in place.
    Complete,
    /// The run stopped; `error` says why, and no result file was touched.
    Failed,
}

impl RunStatus {
    /// `complete` or `failed`, as in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Failed => "failed",
        }
    }
}

/// `manifest.json`. Field order is the file's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The layout of the file (see the crate docs); 0 when the file has no such field.
    #[serde(default)]
    pub schema_version: u32,
    pub status: RunStatus,
    /// Why the run failed; null when it did not.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// The run folder's name (a grid cell's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `[training] loss`: `class_il` or `task_il`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_loss: Option<String>,
    /// `[model] init`: how the initial weights were drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// `cpu`, `cuda:N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tch_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libtorch_version: Option<String>,
    /// `git rev-parse HEAD` of the working directory, `-dirty` when tracked files changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_unix: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_unix: Option<u64>,
    /// Wall time of the whole run, loading and writing included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_seconds: Option<f64>,
    /// Σ numel of the variables that require gradients at the end of the run (a method that
    /// freezes part of the model trains fewer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainable_parameters: Option<u64>,
    /// Peak resident memory of the process (Linux); null where unknown.
    #[serde(default)]
    pub peak_host_memory_bytes: Option<u64>,
    /// Peak GPU memory the process held, sampled from the driver; null on the CPU.
    #[serde(default)]
    pub peak_device_memory_bytes: Option<u64>,
    /// Null when training did not finish.
    #[serde(default)]
    pub timings: Option<Timings>,
    /// What the method costs next to what it retains; absent when training did not finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub costs: Option<Costs>,
    /// The `[pretrain]` stage the stream started from; absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrain: Option<Pretrain>,
    /// The sha256 of the `[model] checkpoint` file the run started from, whether or not the
    /// experiment pinned it (`checkpoint_sha256`); absent without a checkpoint, and in files
    /// written before the field existed (read as `None`, same schema version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_checkpoint_sha256: Option<String>,
}

/// Where a run's time went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timings {
    pub load_seconds: f64,
    pub initial_eval_seconds: f64,
    pub total_seconds: f64,
    pub train_seconds: f64,
    pub eval_seconds: f64,
    pub steps: u64,
    pub seconds_per_step: f64,
    pub step_execution: StepExecution,
    pub per_task: Vec<TaskTimings>,
}

/// Steps replayed from CUDA graphs and run eagerly, and why eagerly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepExecution {
    pub graphed_steps: u64,
    pub eager_steps: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eager_reason: Option<String>,
}

/// One task of the stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskTimings {
    pub task: u64,
    pub steps: u64,
    pub samples: u64,
    /// Mean training loss of each epoch.
    pub epoch_losses: Vec<f64>,
    pub train_seconds: f64,
    pub eval_seconds: f64,
}

/// What the method costs beside what it retains, measured at the end of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Costs {
    pub trainable_parameters: u64,
    /// Bytes of the method's state (stored adapters, Fisher matrices, replay indices).
    pub method_state_bytes: u64,
    pub state_bytes_per_task: f64,
    /// Bytes of the model that do not train (a frozen backbone, a quantised base).
    pub frozen_base_bytes: u64,
    pub seconds_per_step: f64,
}

/// The `[pretrain]` stage a run started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pretrain {
    /// The stage's `model.safetensors`.
    pub checkpoint: PathBuf,
    /// True when an earlier run's stage was loaded instead of training.
    pub reused: bool,
    pub hash: String,
    pub accuracy: f64,
    pub teacher_accuracy: Option<f64>,
    /// Training time of the stage (when reused, that of the run that trained it).
    pub seconds: f64,
}

/// A manifest that cannot be read or written; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a run manifest: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{} has schema version {found}, newer than the newest this build reads ({supported}); \
         read it with a newer retain",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("cannot create the run folder {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] retain_fs::WriteError),
}

/// Only the version, read first so that a newer layout is refused before its fields are
/// interpreted.
#[derive(Deserialize)]
struct Version {
    #[serde(default)]
    schema_version: u32,
}

impl Manifest {
    /// A manifest of the current schema with `status` and nothing else.
    pub fn new(status: RunStatus) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            status,
            error: None,
            experiment: None,
            run: None,
            method: None,
            seed: None,
            training_loss: None,
            init: None,
            device: None,
            retain_version: None,
            tch_version: None,
            libtorch_version: None,
            git_revision: None,
            started_at_unix: None,
            finished_at_unix: None,
            wall_seconds: None,
            trainable_parameters: None,
            peak_host_memory_bytes: None,
            peak_device_memory_bytes: None,
            timings: None,
            costs: None,
            pretrain: None,
            model_checkpoint_sha256: None,
        }
    }

    /// `dir/manifest.json`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }

    /// The manifest of the run folder `dir`; `None` when it has none.
    pub fn read(dir: &Path) -> Result<Option<Self>, ManifestError> {
        let path = Self::path(dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_json(&text, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ManifestError::Read { path, source }),
        }
    }

    /// Parses a manifest's text; `path` names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, ManifestError> {
        let parse_error = |source| ManifestError::Parse {
            path: path.to_owned(),
            source,
        };
        let version: Version = serde_json::from_str(text).map_err(parse_error)?;
        if version.schema_version > SCHEMA_VERSION {
            return Err(ManifestError::NewerSchema {
                path: path.to_owned(),
                found: version.schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        serde_json::from_str(text).map_err(parse_error)
    }

    /// The file's text: pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Plain structs with string keys: serialisation cannot fail.
        serde_json::to_string_pretty(self).expect("a manifest serialises to JSON")
    }

    /// Writes `dir/manifest.json` atomically and durably, creating `dir` if needed.
    pub fn write(&self, dir: &Path) -> Result<(), ManifestError> {
        std::fs::create_dir_all(dir).map_err(|source| ManifestError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        retain_fs::write_atomically(&Self::path(dir), self.to_json().as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
