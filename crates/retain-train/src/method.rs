//! The method plugin API.
//!
//! A continual-learning method is a [`Method`]: a set of hooks the trainer calls at fixed
//! points. Every hook has a default that does what naive fine-tuning does, so a method
//! implements only the hooks it changes.
//!
//! # Call order
//!
//! For each task `t` of the stream, the trainer calls:
//!
//! 1. [`Method::before_task`] once (preceded, from the second task on, by a fresh optimiser
//!    when [`Method::fresh_optimizer_each_task`]);
//! 2. [`Method::training_indices`] once, for the samples to train on (default: task `t`'s);
//! 3. for every epoch, for every batch of those samples:
//!    1. [`Method::loss`] (default: cross-entropy of the model on the batch),
//!    2. the optimiser's `zero_grad`, then `backward` on that loss,
//!    3. [`Method::after_backward`] (gradient surgery: read and rewrite `p.grad()`),
//!    4. the optimiser's `step`;
//! 4. [`Method::after_task`] once (consolidation, buffer updates);
//! 5. evaluation of every task of the stream, in every read-out. For a method whose
//!    [`Method::uses_task_id`] is true, evaluation calls [`Method::select`] before computing
//!    outputs, for each task `j` of the stream in turn:
//!    1. [`Selection::Latest`], for the read-outs without a task id (class-IL, domain-IL,
//!       and task-inferred while no task is trained); under this selection it also calls
//!       [`Method::infer_task`] on every batch when a task-inferred or task-inference
//!       read-out is requested and a task is trained;
//!    2. [`Selection::Task`]`(j)` for the task-incremental read-out (the true task id is known
//!       there);
//!    3. [`Selection::Merged`] for the merged read-out;
//!    4. [`Selection::Task`]`(k)` for every trained task `k` in turn, for the task-inferred
//!       read-out (each sample keeps the prediction made under its inferred task);
//!
//!    skipping the steps no requested read-out needs, and [`Selection::Latest`] once more
//!    when evaluation ends, before training goes on. (The evaluation of the untrained model,
//!    before step 1 of the first task, calls it too.)
//!
//! Before any of this (and before that first evaluation) the trainer checks
//! [`Method::supports_readout`] for every requested read-out. Earlier still, before any data
//! loads, `retain run` and a grid's checks give a freshly built method a network built from
//! the configuration alone ([`Method::check_network`]): what the method cannot train is refused
//! there as a configuration error.
//!
//! Every hook that can fail returns a `Result`; the trainer stops the run at the first error,
//! where it happened (a step's `loss` or `after_backward` included), and reports it.
//!
//! After the last evaluation, `retain run --save-checkpoint` reads [`Method::state`] into
//! `method-state.safetensors`; [`crate::load_method_state`] gives such a file to a freshly
//! built method's [`Method::load_state`], once, before any other hook. A run's resume
//! checkpoint at every task boundary ([`crate::resume`]) holds the same state, restored the
//! same way before the next task's `before_task`: the method must continue from it exactly
//! as it would have gone on.
//!
//! Helpers for what methods commonly need: [`crate::Network::frozen_copy`] (an independent,
//! frozen copy of the model, e.g. the model after the previous task), and on a
//! [`TaskContext`] the named parameters, seeded samples of the task's training data and
//! [`gradients`] of a loss without touching `p.grad()` (per-sample gradients for a Fisher
//! matrix in `after_task`).
//!
//! Hooks get what they need through context structs, never long argument lists, so adding a
//! field to a context is not a breaking change for existing methods. Hooks must not read
//! tensors back to the host inside the step: the trainer keeps the step free of
//! synchronisation, and a method that reads a loss value per batch would undo that.
//!
//! # Captured steps
//!
//! On CUDA the trainer captures the step (3.1–3.4) of a [`Method::capturable`] method in a
//! CUDA graph once per task and replays it: after capture, `loss` and `after_backward` no
//! longer run on the host, only the kernels they launched do. Whatever such a step changes
//! from one step to the next must therefore live on the device and change there (a memory's
//! fill count and draw counter, an optimiser's step count), derive from the step's static
//! inputs (`ctx.indices`, `ctx.key`), or be fixed for the task. Host-side mirrors of device
//! state fall behind during replays; refresh them at a task boundary. Shapes must not change
//! once [`Method::capture_ready`] says the step may be captured.

use retain_config::{Readout, TrainingLoss};
use retain_models::Backbone;
use retain_stream::seed::{self, SplitMix64};
use retain_stream::{Batch, SplitKind, Task, TaskStream};
use tch::{Device, Tensor, nn};

use crate::{Network, TrainError};

mod descriptor;
pub use descriptor::{
    Capabilities, Factory, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
    check_param_memory, check_replay_sizes,
};

/// What a method sees around a task boundary.
pub struct TaskContext<'a> {
    /// The network being trained: its model ([`Self::model`]) and variables
    /// ([`Self::vars`]).
    pub network: &'a Network,
    pub stream: &'a TaskStream,
    /// The task about to be trained (`before_task`, `training_indices`) or just trained
    /// (`after_task`).
    pub task: &'a Task,
    pub device: Device,
    /// The experiment's master seed; derive purpose-specific seeds from it with
    /// [`retain_stream::seed::derive`].
    pub seed: u64,
    /// The training loss's label space (`[training] loss`).
    pub loss: TrainingLoss,
}

impl<'a> TaskContext<'a> {
    /// The network's model.
    pub fn model(&self) -> &'a dyn Backbone {
        self.network.model.as_ref()
    }

    /// The network's variables.
    pub fn vars(&self) -> &'a nn::VarStore {
        &self.network.vars
    }

    /// The trainable parameters with their names, sorted by name (see
    /// [`Network::parameters`]).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.network.parameters()
    }

    /// Up to `n` of this task's training indices, drawn without replacement by a generator
    /// seeded from the experiment seed and `purpose` (e.g. `"ewc/fisher"`) and this task, in
    /// ascending order; all of them when the task has at most `n`.
    pub fn sample_train_indices(&self, n: usize, purpose: &str) -> Vec<i64> {
        let mut indices = self.task.train_indices.clone();
        if n < indices.len() {
            let purpose = format!("{purpose}/task{}", self.task.index);
            SplitMix64::new(seed::derive(self.seed, &purpose)).shuffle(&mut indices);
            indices.truncate(n);
            indices.sort_unstable();
        }
        indices
    }

    /// The training samples at `indices` (host indices into the training split), as one
    /// batch on the device.
    pub fn train_batch(&self, indices: &[i64]) -> Batch {
        let indices = Tensor::from_slice(indices).to_device(self.device);
        self.stream.batch(SplitKind::Train, &indices)
    }

    /// The run's training cross-entropy of `logits` at `labels` (see [`training_loss`]).
    pub fn training_loss(&self, logits: &Tensor, labels: &Tensor) -> Tensor {
        training_loss(self.loss, self.stream, logits, labels)
    }
}

/// What a method sees inside a training step.
pub struct StepContext<'a> {
    /// The network being trained: its model ([`Self::model`]) and variables
    /// ([`Self::vars`]).
    pub network: &'a Network,
    pub stream: &'a TaskStream,
    pub task: &'a Task,
    pub device: Device,
    /// Steps taken so far in this task (over all its epochs).
    pub step: usize,
    /// Epochs of this task completed so far: 0 during the first.
    pub epoch: usize,
    /// The augmentation key of the step's batch (`[]` int64 on the device; see
    /// [`TaskStream::augment_key`]): replayed batches derive theirs from it
    /// ([`StepContext::replay_batch`]), which keeps them the same in a captured step.
    pub key: &'a Tensor,
    /// The batch's indices into the training split, on the device: lets a rehearsal method
    /// remember which samples it saw (and gather them again with
    /// [`StepContext::replay_batch`]) without copying inputs or reading anything back to the
    /// host.
    pub indices: &'a Tensor,
    /// The training loss's label space (`[training] loss`).
    pub loss: TrainingLoss,
}

impl<'a> StepContext<'a> {
    /// The network's model.
    pub fn model(&self) -> &'a dyn Backbone {
        self.network.model.as_ref()
    }

    /// The network's variables.
    pub fn vars(&self) -> &'a nn::VarStore {
        &self.network.vars
    }

    /// The run's training loss of the model (in training mode) on `batch`: cross-entropy over
    /// every output, or over the batch's own task's outputs under `loss = "task_il"` (see
    /// [`training_loss`]).
    pub fn cross_entropy(&self, batch: &Batch) -> Tensor {
        self.training_loss(&self.model().forward_t(&batch.inputs, true), &batch.labels)
    }

    /// The run's training cross-entropy of `logits` at `labels` (see [`training_loss`]): what
    /// a method uses for every classification term it adds, replayed samples included.
    pub fn training_loss(&self, logits: &Tensor, labels: &Tensor) -> Tensor {
        training_loss(self.loss, self.stream, logits, labels)
    }

    /// The model's training-mode outputs for each of `inputs` (batches of one input shape):
    /// one forward pass over their concatenation, split back, where the model's samples are
    /// independent ([`Backbone::samples_independent`]); one pass per batch otherwise, as the
    /// reference code of methods with several forward passes per step runs them (batch
    /// statistics then stay per batch). The outputs are the same either way, to float
    /// rounding; the single pass launches a third of the kernels for three batches.
    pub fn forward_batches(&self, inputs: &[&Tensor]) -> Vec<Tensor> {
        if inputs.len() < 2 || !self.model().samples_independent() {
            return inputs
                .iter()
                .map(|x| self.model().forward_t(x, true))
                .collect();
        }
        let sizes: Vec<i64> = inputs.iter().map(|x| x.size()[0]).collect();
        self.model()
            .forward_t(&Tensor::cat(inputs, 0), true)
            .split_with_sizes(&sizes, 0)
    }

    /// Replayed training samples at `indices` (stream indices into the training split, on the
    /// device) as a batch that went through the stream's training augmentation with a draw of
    /// its own ([`TaskStream::replay_key`] of the step's key; `replay` numbers the replays of
    /// one step: 0, 1, …). Mammoth's buffers likewise keep un-augmented samples and augment
    /// them each time they are replayed (`Buffer.get_data(…, transform=self.transform)`).
    pub fn replay_batch(&self, indices: &Tensor, replay: usize) -> Batch {
        if !self.stream.augments() {
            // The same batch without deriving a key nobody reads (kernels a captured step
            // would replay for nothing).
            return self.stream.batch(SplitKind::Train, indices);
        }
        self.stream
            .training_batch_keyed(indices, &TaskStream::replay_key(self.key, replay))
    }
}

/// The training cross-entropy of `logits` (`[B, C]`) at `labels` (`[B]`) under `loss`:
/// over every output for [`TrainingLoss::ClassIl`]; for [`TrainingLoss::TaskIl`] over the
/// outputs of each sample's own task only (the others are set to −∞ before the softmax, so
/// they get neither probability nor gradient): the multi-head task-incremental loss with
/// one output layer whose rows per task are the heads.
pub fn training_loss(
    loss: TrainingLoss,
    stream: &TaskStream,
    logits: &Tensor,
    labels: &Tensor,
) -> Tensor {
    match loss {
        TrainingLoss::ClassIl => logits.cross_entropy_for_logits(labels),
        TrainingLoss::TaskIl => logits
            .masked_fill(
                &stream.own_task_classes(labels).logical_not(),
                f64::NEG_INFINITY,
            )
            .cross_entropy_for_logits(labels),
    }
}

/// Which of a method's weights evaluation asks for, through [`Method::select`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// The weights training continues from (the most recent task's): the read-outs without
    /// a task id.
    Latest,
    /// Those of task `j` (0-based), known or inferred; a method with no weights stored for
    /// `j` (a task not trained yet) uses the latest ones.
    Task(usize),
    /// Every trained task's weights merged into one network, for the merged read-out.
    Merged,
}

/// A continual-learning method. See the module docs for the call order.
pub trait Method {
    /// The registry name, e.g. `"naive"`.
    fn name(&self) -> &str;

    /// Called once before training on a task.
    fn before_task(&mut self, _ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        Ok(())
    }

    /// Indices into the training split to train on for this task (host side; shuffled per
    /// epoch by the trainer). Default: the task's own samples.
    fn training_indices(&mut self, ctx: &TaskContext<'_>) -> Vec<i64> {
        ctx.task.train_indices.clone()
    }

    /// The loss to minimise for one batch. Default: cross-entropy on the batch. An error
    /// stops the run there, with the method's message (see [`TrainError::Method`]).
    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        Ok(ctx.cross_entropy(batch))
    }

    /// Called after `backward`, before the optimiser step: gradients are in `p.grad()`. An
    /// error stops the run there.
    fn after_backward(&mut self, _ctx: &StepContext<'_>) -> Result<(), TrainError> {
        Ok(())
    }

    /// Called once after training on a task, before evaluation.
    fn after_task(&mut self, _ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        Ok(())
    }

    /// Whether the trainer builds a fresh optimiser (no momentum or moment estimates) before
    /// each task after the first, before [`Method::before_task`]. Methods that train a new
    /// set of parameters per task (per-task adapters, prompts) want it, so that a task's
    /// fresh parameters do not inherit the previous task's optimiser state. Default: false
    /// (one optimiser for the whole run).
    fn fresh_optimizer_each_task(&self) -> bool {
        false
    }

    /// Whether a run can continue a task of this method from its middle: from a checkpoint
    /// written after some epochs of the task (`training.checkpoint_every_epochs`), a fresh
    /// method given that checkpoint's [`Method::state`] and then the task's
    /// [`Method::before_task`] again (and [`Method::training_indices`], which must return the
    /// same indices) continues the task exactly as the method that wrote it. That holds where
    /// the state is complete at any step, not only between tasks, and `before_task` neither
    /// replaces nor adds to what the state restored (a teacher copied from the network at the
    /// task's start, a memory filled from the task's samples would be). Default: false
    /// (checkpoints at task boundaries only).
    fn resumes_within_task(&self) -> bool {
        false
    }

    /// Whether this method's training step can be captured in a CUDA graph and replayed for
    /// the rest of a task: `loss` and `after_backward` launch the same kernels on the same
    /// tensors at every step of a task, read nothing from the host, and depend on neither
    /// `ctx.step` nor `ctx.epoch` nor any host-side state that changes within a task (see
    /// `graph_step.rs`). Default: false (every step eager).
    fn capturable(&self) -> bool {
        false
    }

    /// Whether the next step may be captured, for a [`Method::capturable`] method whose step
    /// still changes shape early in a task (a replay batch that grows while its memory
    /// fills): its steps run eagerly until this turns true, and it must stay true for the
    /// rest of the task. Default: true.
    fn capture_ready(&self) -> bool {
        true
    }

    /// Refuses a network this method cannot train, before any data loads: `network` is the
    /// experiment's model built from the configuration alone (the stream dataset's image shape
    /// and classes, `[model] checkpoint` loaded), a throwaway copy the method must not keep.
    /// A method that needs a kind of model (a transformer) or names parts of it (layer
    /// patterns, block numbers) checks here what its first [`Method::before_task`] would
    /// refuse, with the same message, naming the key (`method.target`, `model.kind`). Called
    /// on a method that has run no other hook. Default: accepts every network.
    fn check_network(&self, _network: &Network) -> Result<(), TrainError> {
        Ok(())
    }

    /// Whether the model's weights depend on the task being evaluated (per-task adapters or
    /// heads chosen by the task id); if so, evaluation calls [`Method::select`]. Default:
    /// false.
    fn uses_task_id(&self) -> bool {
        false
    }

    /// Whether the method can provide `readout`. Default: the read-outs every method has
    /// (class-IL, task-IL, domain-IL); a method that implements [`Method::infer_task`] or
    /// merges its per-task weights under [`Selection::Merged`] says so here. The trainer
    /// refuses a run that asks for a read-out its method does not support, before training.
    fn supports_readout(&self, readout: Readout) -> bool {
        matches!(
            readout,
            Readout::ClassIl | Readout::TaskIl | Readout::DomainIl
        )
    }

    /// Sets the network up for evaluating with the weights `selection` names (see
    /// [`Selection`]); [`Selection::Latest`] is also called when evaluation ends, to restore
    /// the weights training continues from. Called under `no_grad`, only when
    /// [`Method::uses_task_id`]. Default: nothing.
    fn select(&mut self, _network: &Network, _selection: Selection) -> Result<(), TrainError> {
        Ok(())
    }

    /// The task each sample of `inputs` (an evaluation batch `[B, …]`) belongs to, as
    /// `[B]` `int64` task indices on the device, inferred from the inputs alone (no labels,
    /// no task id); `None` when the method cannot infer them now. Called under `no_grad`
    /// and under [`Selection::Latest`], only after at least one task is trained; the
    /// inference should choose among the tasks trained so far (an index outside them counts
    /// as a wrong inference and a wrong prediction). Must not read tensors back to the host.
    /// Default: `None`.
    fn infer_task(&mut self, _network: &Network, _inputs: &Tensor) -> Option<Tensor> {
        None
    }

    /// The method's own scores for an evaluation batch `inputs` (`[B, …]`), `[B, classes]`
    /// on the device, in place of the network's outputs wherever evaluation reads the
    /// network out (class-IL, domain-IL, task-IL — masked to the task's classes —, merged
    /// and task-inferred): the arg-max of a row is the prediction. For methods whose
    /// classifier is more than the network's forward pass: a bias correction of the newest
    /// classes' logits (BiC), a cosine-normalised head (LUCIR), a model trained on the
    /// memory alone (GDumb). Called under `no_grad`, after any [`Method::select`], also
    /// before the first task (row 0 of the matrices). Must not read tensors back to the
    /// host. Default: `None`, the network's outputs.
    fn eval_logits(&mut self, _network: &Network, _inputs: &Tensor) -> Option<Tensor> {
        None
    }

    /// Scores of the nearest-mean-of-exemplars read-out ([`Readout::Ncm`]) for an
    /// evaluation batch `inputs`: `[B, classes]` on the device, higher for nearer class means
    /// (e.g. the negative distance), and `-inf` (or any score below every real one) for
    /// classes without exemplars; the arg-max of a row is the prediction. Called under
    /// `no_grad` and [`Selection::Latest`], only after at least one task is trained (before
    /// that the read-out is the arg-max of the scores class-IL reads out), by a method that supports `ncm`
    /// ([`Method::supports_readout`]); `None` then fails the evaluation. Must not read
    /// tensors back to the host. Default: `None`.
    fn ncm_scores(&mut self, _network: &Network, _inputs: &Tensor) -> Option<Tensor> {
        None
    }

    /// The method's own state between tasks, as named tensors (e.g. a Fisher matrix and its
    /// anchor parameters), for checkpoints: together with the network's variables it must be
    /// enough to continue the run with [`Method::load_state`]. Names are stable strings the
    /// method chooses. Default: no state. Anything a method can rebuild from the network and
    /// stream (the previous model, when that is the checkpointed model itself) need not be
    /// included.
    fn state(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Restores what [`Method::state`] returned. Default: accepts an empty state and rejects
    /// any other, naming the unexpected tensors.
    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        if state.is_empty() {
            return Ok(());
        }
        Err(TrainError::Method {
            method: self.name().to_owned(),
            message: format!(
                "keeps no state but the checkpoint holds {}",
                state
                    .iter()
                    .map(|(n, _)| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}

/// Gradients of the scalar `loss` with respect to each of `params`, computed without reading
/// or writing any `p.grad()` (so they do not mix with the optimiser's gradients). A
/// parameter the loss does not depend on gets zeros of its shape. The graph is freed. Fails
/// when a parameter does not require gradients (a frozen copy's, say).
pub fn gradients(loss: &Tensor, params: &[Tensor]) -> Result<Vec<Tensor>, TrainError> {
    Ok(Tensor::f_run_backward(&[loss], params, false, false)?
        .into_iter()
        .zip(params)
        .map(|(g, p)| if g.defined() { g } else { p.zeros_like() })
        .collect())
}

/// Deserialises a method's hyper-parameters (the `[method]` table without `name`), rejecting
/// unknown keys with an error that names them.
pub fn parse_params<T: serde::de::DeserializeOwned>(
    method: &str,
    params: &toml::Table,
) -> Result<T, TrainError> {
    T::deserialize(params.clone()).map_err(|e| TrainError::MethodParams {
        method: method.to_owned(),
        message: e.to_string(),
    })
}
