//! Resume checkpoints: what a run writes at every task boundary (and, with
//! `training.checkpoint_every_epochs`, every so many epochs within a task) so that a run
//! stopped there (killed, crashed, preempted) continues exactly as if it had not stopped.
//!
//! One safetensors file holds all of it, so that it is written atomically as a whole (through
//! the workspace's atomic writer): the network's variables (`model.<name>`), the method's
//! [`Method::state`] (`method.<name>`), the flat optimiser's moments and step counts
//! (`optimizer.<name>`, absent for a method that starts a fresh optimiser every task) and the
//! trainer's progress ([`Progress`], TOML bytes in `progress`): the tasks trained, the
//! accuracy counts so far, the task reports (epoch losses, timings), the step counters and
//! the first step's loss the divergence check measures against. Data order and augmentation
//! draws derive from the seed, the task and the step within the task, so nothing else
//! decides what follows. The progress names a hash of the resolved configuration
//! ([`config_hash`]): a checkpoint of another configuration is refused.

use std::collections::BTreeMap;
use std::path::Path;

use retain_config::{Experiment, Readout};
use tch::{Device, Kind, Tensor};

use crate::{CountMatrix, Method, Network, TaskReport, TrainError};

/// The trainer's progress at a task boundary.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// [`config_hash`] of the run's configuration.
    pub config_hash: String,
    /// Tasks trained and evaluated.
    pub tasks_done: usize,
    /// Optimiser steps of those tasks.
    pub run_steps: usize,
    pub graphed_steps: usize,
    pub eager_steps: usize,
    /// The run's first step's loss (the divergence bound's base), once read.
    pub first_loss: Option<f64>,
    pub initial_eval_seconds: f64,
    /// Wall time of the run so far.
    pub elapsed_seconds: f64,
    /// Counts per read-out (by name): rows `0..=tasks_done` are filled.
    pub counts: BTreeMap<String, CountMatrix>,
    pub reports: Vec<TaskReport>,
    /// Within task `tasks_done` (0-based), when the checkpoint was written in its middle
    /// (`training.checkpoint_every_epochs`); `None` at a task boundary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_task: Option<WithinTask>,
    /// An online run's evaluations between steps so far (`[training] online`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anytime: Vec<crate::AnytimeEvaluation>,
}

/// How far a checkpoint written inside a task got: whole epochs only.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WithinTask {
    /// Epochs of the task completed.
    pub epochs_done: usize,
    /// Optimiser steps of the task so far.
    pub steps: usize,
    /// The mean loss of each completed epoch.
    pub epoch_losses: Vec<f64>,
    /// Training time of the task so far.
    pub train_seconds: f64,
}

/// A checkpoint's state beside the network and method (at a task boundary or, with
/// [`Progress::within_task`], inside a task): the progress and the optimiser's state (`None`
/// when the next task starts a fresh optimiser anyway).
#[derive(Debug)]
pub struct Boundary {
    pub progress: Progress,
    pub optimizer: Option<Vec<(String, Tensor)>>,
    /// Read from a checkpoint written inside a task: every model variable it holds, so that
    /// the variables a method creates at the task's start (adapters, prompts) take their
    /// checkpointed values once the method has created them again. Empty otherwise, and when
    /// writing.
    pub variables: BTreeMap<String, Tensor>,
}

/// A stable hash (FNV-1a, 64 bits, hex) of the experiment's resolved configuration, less
/// `training.checkpoint_every_epochs` (when checkpoints are written, not what is computed).
pub fn config_hash(experiment: &Experiment) -> String {
    let mut hashed = experiment.clone();
    hashed.training.checkpoint_every_epochs = 0;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in hashed.to_resolved_toml().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

impl Progress {
    /// The counts by read-out, for the trainer.
    pub(crate) fn counts_for(
        &self,
        readouts: &[Readout],
    ) -> Result<BTreeMap<Readout, CountMatrix>, TrainError> {
        readouts
            .iter()
            .map(|&r| {
                let counts =
                    self.counts
                        .get(r.as_str())
                        .cloned()
                        .ok_or_else(|| TrainError::Resume {
                            message: format!(
                                "the checkpoint has no counts for read-out `{}`",
                                r.as_str()
                            ),
                        })?;
                Ok((r, counts))
            })
            .collect()
    }
}

/// Writes a resume checkpoint of `network`, `method` and `boundary` to `path`, atomically.
pub fn write_checkpoint(
    path: &Path,
    network: &Network,
    method: &dyn Method,
    boundary: &Boundary,
) -> Result<(), TrainError> {
    let progress = toml::to_string(&boundary.progress).map_err(|e| TrainError::Resume {
        message: format!("cannot encode the progress: {e}"),
    })?;
    let mut tensors: Vec<(String, Tensor)> = vec![(
        "progress".to_owned(),
        Tensor::from_slice(progress.as_bytes()),
    )];
    let mut model: Vec<(String, Tensor)> = network.vars.variables().into_iter().collect();
    model.sort_by(|a, b| a.0.cmp(&b.0));
    tensors.extend(model.into_iter().map(|(n, t)| (format!("model.{n}"), t)));
    tensors.extend(
        method
            .state()
            .into_iter()
            .map(|(n, t)| (format!("method.{n}"), t)),
    );
    if let Some(optimizer) = &boundary.optimizer {
        tensors.extend(
            optimizer
                .iter()
                .map(|(n, t)| (format!("optimizer.{n}"), t.shallow_clone())),
        );
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::Resume {
            message: format!("cannot create {}: {e}", dir.display()),
        })?;
    }
    retain_models::checkpoint::write(&tensors, path)?;
    Ok(())
}

/// Reads the resume checkpoint `path` of a run of `experiment`: refuses one of another
/// configuration, loads the network's variables into `network` (every variable it has must be
/// there by name and shape; variables a method creates during training, absent from a fresh
/// network, are created again by the method) and the method's state into `method` (a fresh
/// one), and returns the boundary to continue from.
pub fn read_checkpoint(
    path: &Path,
    experiment: &Experiment,
    network: &Network,
    method: &mut dyn Method,
    device: Device,
) -> Result<Boundary, TrainError> {
    let refuse = |message: String| TrainError::Resume {
        message: format!("{}: {message}", path.display()),
    };
    let mut progress = None;
    let mut model = BTreeMap::new();
    let mut method_state = Vec::new();
    let mut optimizer = Vec::new();
    for (name, tensor) in retain_models::checkpoint::read(path)? {
        if name == "progress" {
            let bytes = Vec::<u8>::try_from(&tensor.to_kind(Kind::Uint8))
                .map_err(|e| refuse(format!("unreadable progress: {e}")))?;
            let text = String::from_utf8(bytes).map_err(|e| refuse(format!("{e}")))?;
            progress = Some(
                toml::from_str::<Progress>(&text)
                    .map_err(|e| refuse(format!("malformed progress: {e}")))?,
            );
        } else if let Some(n) = name.strip_prefix("model.") {
            model.insert(n.to_owned(), tensor);
        } else if let Some(n) = name.strip_prefix("method.") {
            method_state.push((n.to_owned(), tensor.to_device(device)));
        } else if let Some(n) = name.strip_prefix("optimizer.") {
            optimizer.push((n.to_owned(), tensor.to_device(device)));
        } else {
            return Err(refuse(format!("unexpected tensor `{name}`")));
        }
    }
    let progress = progress.ok_or_else(|| refuse("no progress record".into()))?;
    let expected = config_hash(experiment);
    if progress.config_hash != expected {
        return Err(refuse(format!(
            "the checkpoint is of another configuration (hash {}, this run's {expected}); \
             run without --resume to start afresh",
            progress.config_hash
        )));
    }
    let variables = network.vars.variables();
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort();
    for name in &names {
        let Some(saved) = model.get(*name) else {
            return Err(refuse(format!("the model variable `{name}` is missing")));
        };
        if saved.size() != variables[*name].size() {
            return Err(refuse(format!(
                "the model variable `{name}` has shape {:?}, the model {:?}",
                saved.size(),
                variables[*name].size()
            )));
        }
    }
    tch::no_grad(|| {
        for name in names {
            let mut target = variables[name].shallow_clone();
            target.copy_(&model[name]);
        }
    });
    method.load_state(method_state)?;
    let variables = match progress.within_task {
        Some(_) => model
            .into_iter()
            .map(|(n, t)| (n, t.to_device(device)))
            .collect(),
        None => BTreeMap::new(),
    };
    Ok(Boundary {
        progress,
        optimizer: (!optimizer.is_empty()).then_some(optimizer),
        variables,
    })
}
