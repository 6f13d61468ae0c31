//! Dark Experience Replay (DER) and DER++ (Buzzega et al., NeurIPS 2020, "Dark Experience
//! for General Continual Learning: a Strong, Simple Baseline").
//!
//! DER keeps, in a reservoir, each sample together with the **logits** the network produced
//! when it was seen, and regularises towards them: besides the cross-entropy of the current
//! batch, the loss adds
//!
//! ```text
//! α · MSE(f(x'), z')          (x', z') drawn from the memory
//! β · CE(f(x''), y'')         (x'', y'') another draw, DER++ only
//! ```
//!
//! where MSE is the mean over samples and logits, as in the authors' code, and CE is the
//! run's training loss (`[training] loss`). Matching logits
//! rather than labels carries the old model's whole output distribution ("dark knowledge");
//! DER++ adds the labels back, which helps when the stored logits are from early, poor
//! models. β = 0 is DER. The reservoir stores dataset indices and logits on the device
//! ([`retain_memory::Reservoir`]); the logits are those of the training forward pass of the
//! step the sample was offered in — the augmented view of the sample, whose un-augmented
//! index is stored — so no extra forward is needed. That is what the reference code stores
//! (Mammoth `models/der.py`, `models/derpp.py`: `buffer.add_data(examples=not_aug_inputs,
//! logits=outputs.data)` with `outputs = net(inputs)` on the augmented batch). Each replay
//! draw goes through the stream's training augmentation anew, with its own draw
//! (`Buffer.get_data(…, transform=self.transform)` there), and the two draws of DER++ are
//! independent samples of the reservoir, as there.
//!
//! Hyper-parameters:
//!
//! * `buffer_size` (default 500): reservoir capacity.
//! * `replay_batch_size` (default 10): samples per replay draw.
//! * `alpha` (default 0.3): weight of the logit-matching term.
//! * `beta` (default 0): weight of the replayed cross-entropy; > 0 is DER++.
//!
//! The paper grid-searches α and β per dataset and buffer size (e.g. Seq-MNIST at lr 0.03,
//! buffer 200: DER α = 0.2, DER++ α = 0.2, β = 1.0; buffer 500: DER α = 1.0, DER++ α = 1.0,
//! β = 0.5; Mammoth's `utils/best_args.py`, see below).
//!
//! ```toml
//! [method]
//! name = "der"
//! buffer_size = 500
//! replay_batch_size = 10
//! alpha = 0.2
//! beta = 1.0      # DER++; 0 for DER
//! ```
//!
//! # Peer conventions
//!
//! Sources: Mammoth (`aimagelab/mammoth` at `e75a491`, `models/der.py`, `models/derpp.py`,
//! buffer in `utils/buffer.py`); Avalanche 0.6.0 (`ContinualAI/avalanche`,
//! `avalanche/training/supervised/der.py`, the `DER` strategy). retain augments replayed
//! samples with the stream's training augmentation (as Mammoth).
//!
//! * **Mammoth `der` / `derpp`** compute the same loss. Verified in the code: the reservoir
//!   (algorithm R, from the first step) stores `examples=not_aug_inputs` with
//!   `logits=outputs.data`, where `outputs = self.net(inputs)` is the step's forward pass on
//!   the **augmented** batch, before the update; a replayed sample is augmented afresh
//!   (`get_data(…, transform=self.transform)`), so its stored logits belong to another view of
//!   it. Here likewise the logits of the training forward pass on the augmented batch are
//!   stored with the sample's index. The logit term is
//!   `alpha · F.mse_loss(buf_outputs, buf_logits)` with PyTorch's default mean over samples
//!   *and* logits (all outputs), as here; DER++ draws a second, independent batch for
//!   `beta · CE`, as here; each of the current batch and the draws has its own forward pass
//!   there. Here too where the model has batch statistics (batch norm); where every sample's
//!   output depends on it alone (the MLP, the ViT) the three batches share one forward pass
//!   ([`retain_train::StepContext::forward_batches`]), the same outputs in a third of the
//!   kernels.
//!   Translation: `alpha`, `beta`, `buffer_size` carry over unchanged;
//!   `replay_batch_size = minibatch_size` (which defaults to the batch size); `name = "der"`
//!   with `beta > 0` is `derpp`. Mammoth requires `alpha` (and `beta` for `derpp`); its
//!   `utils/best_args.py` has, on seq-MNIST (batch 10, lr 0.03): buffer 200, DER `alpha = 0.2`
//!   (minibatch 10) and DER++ `alpha = 0.2, beta = 1.0` (minibatch 128); buffer 500, DER
//!   `alpha = 1.0` (minibatch 128) and DER++ `alpha = 1.0, beta = 0.5` (minibatch 10); on
//!   seq-CIFAR-10 (batch and minibatch 32, lr 0.03): DER `alpha = 0.3`, DER++
//!   `alpha = 0.1, beta = 0.5` (buffer 200) and `alpha = 0.2, beta = 0.5` (buffer 500).
//! * **Avalanche `DER`** differs in what it stores and how it replays; its own comments list
//!   the first three points: (1) one joint forward pass over `[replay; current]`, so batch
//!   norm normalises both together; (2) a single replay batch serves both the MSE and the
//!   `beta` cross-entropy; (3) the logits are recorded at the end of each experience by the
//!   model trained on it, in evaluation mode, on the **non-augmented** samples
//!   (`compute_dataset_logits(new_data.eval(), …)`); (4) the buffer is class-balanced
//!   (`ClassBalancedBufferWithLogits`, `mem_size`, default 200) and filled only at experience
//!   ends, so replay starts with the second experience, and only once the memory holds
//!   `batch_size_mem` samples (default `train_mb_size`; batches from a shuffled, cycled loader
//!   with `drop_last`). Replayed samples do go through the training transforms. The MSE is the
//!   same mean over samples and logits. Defaults `alpha = 0.1, beta = 0.5`. `alpha`, `beta`,
//!   `mem_size` → `buffer_size` and `batch_size_mem` → `replay_batch_size` mean the same
//!   things, but no setting here reproduces (1)–(4).

use retain_memory::{MemoryError, Reservoir, ReservoirState, StateReader};
use retain_stream::seed::derive;
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Method, StepContext, TaskContext, TrainError};
use serde::Deserialize;
use tch::{Reduction, Tensor};

/// The registry entry of `der`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "der",
    family: Family::Rehearsal,
    summary: "Dark Experience Replay: a reservoir of samples with their logits, matched by MSE (DER++ with beta > 0)",
    paper: "Buzzega et al., \"Dark Experience for General Continual Learning: a Strong, Simple Baseline\", NeurIPS 2020",
    params: &[
        Param {
            name: "buffer_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("500"),
            doc: "reservoir capacity",
        },
        Param {
            name: "replay_batch_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("10"),
            doc: "samples per replay draw",
        },
        Param {
            name: "alpha",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.3"),
            doc: "weight of the logit-matching term",
        },
        Param {
            name: "beta",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.0"),
            doc: "weight of the replayed cross-entropy; > 0 is DER++",
        },
    ],
    example: "buffer_size = 500\nalpha = 0.3\nbeta = 0.5",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: true,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// The hyper-parameters of [`Der`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub buffer_size: usize,
    pub replay_batch_size: usize,
    pub alpha: f64,
    pub beta: f64,
}

impl Default for Params {
    /// The schema's defaults ([`DESCRIPTOR`]).
    fn default() -> Self {
        DESCRIPTOR
            .parse(&toml::Table::new())
            .expect("the schema's defaults parse")
    }
}

/// `α · MSE(logits, stored)`, the mean over every sample and logit.
pub fn logit_term(alpha: f64, logits: &Tensor, stored: &Tensor) -> Tensor {
    logits.mse_loss(stored, Reduction::Mean) * alpha
}

/// The prefix of the reservoir's tensors in the method's state.
const STATE_PREFIX: &str = "memory.";

/// DER / DER++. The reservoir is created on the first task, on the training device.
///
/// Its state ([`Method::state`]) is the reservoir's: `memory.indices` (the stored dataset
/// indices), `memory.logits` (the logits recorded with them, `[len, classes]`),
/// `memory.offered` (samples offered so far) and `memory.draws` (replay draws so far). A
/// fresh `Der` with the same hyper-parameters and seed given that state replays, stores and
/// replaces exactly what the original would have.
pub struct Der {
    params: Params,
    reservoir: Option<Reservoir>,
    /// A loaded state, rebuilt into the reservoir at the next `before_task`.
    restored: Option<ReservoirState>,
}

impl std::fmt::Debug for Der {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Der")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> TrainError {
    TrainError::MethodParams {
        method: "der".into(),
        message: message.into(),
    }
}

impl Der {
    pub fn new(params: Params) -> Result<Self, TrainError> {
        retain_train::method::check_replay_sizes(
            "der",
            params.buffer_size,
            params.replay_batch_size,
            12,
            "at least 12 bytes per slot: its dataset index and one stored logit",
        )?;
        for (name, value) in [("alpha", params.alpha), ("beta", params.beta)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(invalid(format!(
                    "`{name}` must be a finite number ≥ 0 (got {value})"
                )));
            }
        }
        Ok(Self {
            params,
            reservoir: None,
            restored: None,
        })
    }

    /// The reservoir (after the first `before_task`).
    pub fn reservoir(&self) -> Option<&Reservoir> {
        self.reservoir.as_ref()
    }
}

fn memory_error(error: MemoryError) -> TrainError {
    TrainError::Method {
        method: "der".into(),
        message: error.to_string(),
    }
}

/// Registry factory.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Der::new(DESCRIPTOR.parse(params)?)?))
}

impl Method for Der {
    fn name(&self) -> &str {
        "der"
    }

    /// The reservoir's state (indices, logits, counters on the device) is complete at any
    /// step, and `before_task` only rebuilds it from a loaded state or syncs its host count.
    fn resumes_within_task(&self) -> bool {
        true
    }

    /// Sampling and adding run on the device from device counters (see `retain-memory`).
    fn capturable(&self) -> bool {
        true
    }

    /// Once the reservoir holds a full replay batch: the replay batches no longer change
    /// size.
    fn capture_ready(&self) -> bool {
        self.reservoir
            .as_ref()
            .is_some_and(|r| r.len() >= self.params.replay_batch_size.min(r.capacity()))
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if let Some(reservoir) = &mut self.reservoir {
            // Replayed graph steps advanced only the device's count.
            reservoir.sync();
        }
        if self.reservoir.is_none() {
            let seed = derive(ctx.seed, "der/reservoir");
            let width = Some(ctx.stream.num_classes);
            let size = self.params.buffer_size;
            let reservoir = match self.restored.take() {
                None => Reservoir::new(size, width, seed, ctx.device),
                Some(state) => Reservoir::restore(size, width, seed, ctx.device, &state),
            };
            self.reservoir = Some(reservoir.map_err(memory_error)?);
        }
        Ok(())
    }

    fn loss(
        &mut self,
        ctx: &StepContext<'_>,
        batch: &retain_stream::Batch,
    ) -> Result<Tensor, TrainError> {
        let failed = |message: String| TrainError::Method {
            method: "der".into(),
            message,
        };
        let reservoir = self.reservoir.as_mut().ok_or_else(|| {
            failed("a step ran before `before_task` created the reservoir".into())
        })?;
        let draws = if self.params.beta > 0.0 { 2 } else { 1 };
        let mut replays = Vec::with_capacity(draws);
        for draw in 0..draws {
            let Some(replay) = reservoir.sample(self.params.replay_batch_size) else {
                break;
            };
            let old = ctx.replay_batch(&replay.indices, draw);
            replays.push((replay, old));
        }
        let mut inputs = vec![&batch.inputs];
        inputs.extend(replays.iter().map(|(_, old)| &old.inputs));
        let outputs = ctx.forward_batches(&inputs);
        let logits = &outputs[0];
        let mut loss = ctx.training_loss(logits, &batch.labels);
        for (draw, ((replay, old), outputs)) in replays.iter().zip(&outputs[1..]).enumerate() {
            loss = if draw == 0 {
                let stored = replay.logits.as_ref().ok_or_else(|| {
                    failed("the reservoir returned samples without logits".into())
                })?;
                loss + logit_term(self.params.alpha, outputs, stored)
            } else {
                loss + ctx.training_loss(outputs, &old.labels) * self.params.beta
            };
        }
        reservoir
            .add(ctx.indices, Some(logits))
            .map_err(|e| failed(format!("cannot store the batch and its logits: {e}")))?;
        Ok(loss)
    }

    /// The reservoir's tensors (see [`Der`]); none before the first task.
    fn state(&self) -> Vec<(String, Tensor)> {
        match (&self.reservoir, &self.restored) {
            (Some(reservoir), _) => reservoir.snapshot().tensors(STATE_PREFIX),
            (None, Some(state)) => state.tensors(STATE_PREFIX),
            (None, None) => Vec::new(),
        }
    }

    /// Checks the state against the reservoir's size (the logits' width against the
    /// stream's classes at the next `before_task`, which rebuilds the reservoir from it). An
    /// empty state is a method before its first task.
    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        self.reservoir = None;
        self.restored = None;
        let size = self.params.buffer_size;
        self.restored = StateReader::read_whole(state, |reader| {
            ReservoirState::read(reader, STATE_PREFIX, size, true)
        })
        .map_err(memory_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
