//! Averaged GEM (A-GEM; Chaudhry, Ranzato, Rohrbach & Elhoseiny, ICLR 2019, "Efficient
//! Lifelong Learning with A-GEM").
//!
//! A-GEM relaxes GEM's one constraint per task to a single one on the **average** memory loss:
//! at each step a batch is drawn from the episodic memory, its gradient `g_ref` computed, and
//! when the current gradient conflicts with it the conflicting component is removed:
//!
//! ```text
//! g̃ = g − (⟨g, g_ref⟩ / ⟨g_ref, g_ref⟩) · g_ref     if ⟨g, g_ref⟩ < 0,   else g̃ = g
//! ```
//!
//! The condition is evaluated on the device, never on the host: the coefficient is
//! `min(⟨g, g_ref⟩, 0) / ⟨g_ref, g_ref⟩`, which is exactly zero when there is no conflict, so
//! the step has no synchronisation ([`project`]).
//!
//! The memory is class-balanced ([`retain_memory::ClassBalanced`]): at each task's end its
//! samples enter and every class seen gets an equal share of `memory_size`, like A-GEM's
//! per-class episodic memory.
//!
//! Hyper-parameters:
//!
//! * `memory_size` (default 500): samples in the episodic memory.
//! * `memory_batch_size` (default 256, the paper's): samples drawn per step for `g_ref`.
//!
//! ```toml
//! [method]
//! name = "agem"
//! memory_size = 500
//! memory_batch_size = 256
//! ```
//!
//! # Peer conventions
//!
//! Sources: Avalanche 0.6.0 (`ContinualAI/avalanche`, `avalanche/training/plugins/agem.py`,
//! `AGEMPlugin` and the `AGEM` strategy, reference batches from
//! `GroupBalancedInfiniteDataLoader` in `avalanche/benchmarks/utils/data_loader.py`); Mammoth
//! (`aimagelab/mammoth` at `e75a491`, `models/agem.py`). Both project as here
//! (`g − (⟨g, g_ref⟩ / ⟨g_ref, g_ref⟩) · g_ref` when `⟨g, g_ref⟩ < 0`), with `g_ref` the
//! gradient of the mean cross-entropy of one memory batch in training mode at the step's
//! weights. What differs is the memory and the reference batch. retain augments replayed
//! samples with the stream's training augmentation (as Mammoth); the memory batch here is
//! gathered as replayed samples, so it gets a fresh draw of it at every step.
//!
//! * **Avalanche**: the memory is **per experience**, `patterns_per_exp` random samples of
//!   each finished experience, so it grows to `k × patterns_per_exp` after `k` experiences;
//!   `memory_size` here is the **total**, shared equally by the classes seen so far, so each
//!   class's share shrinks as classes arrive. The reference batch takes `sample_size // k`
//!   samples from each of the `k` experience memories (balanced over experiences,
//!   `sample_size` rounded down to a multiple of `k`); here `memory_batch_size` samples are
//!   drawn uniformly from the class-balanced memory. Default `sample_size = 64`, where the
//!   default here is 256 (the paper's). Memory samples go through the experience dataset's
//!   training transforms at every draw, so they are augmented too. Translation:
//!   `memory_size = T × patterns_per_exp` for `T` tasks (the same memory after the last task;
//!   Avalanche's is smaller before), `memory_batch_size = sample_size`.
//! * **Mammoth**: `--buffer_size` is a reservoir, but at each task's end only **one training
//!   batch** enters it (`next(iter(loader))`: the first `batch_size` non-augmented samples of
//!   a shuffled pass; the `samples_per_task = buffer_size // N_TASKS` it computes is never
//!   used), so every task keeps `batch_size` samples, whatever their classes, as long as
//!   `buffer_size ≥ T × batch_size`. The reference batch is `minibatch_size` distinct buffer
//!   samples (default the batch size; 128 on seq-MNIST and 32 on seq-CIFAR-10 in
//!   `utils/best_args.py`), re-augmented with the training transform. Translation:
//!   `memory_batch_size = minibatch_size`; `memory_size = T × batch_size` matches the memory's
//!   size, not its content (here class-balanced, chosen from the whole task).

use retain_memory::gradients::{flat_grad, flat_grad_of, flat_grad_view, write_grad};
use retain_memory::{ClassBalanced, ClassBalancedState, StateReader};
use retain_stream::seed::derive;
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Method, StepContext, TaskContext, TrainError};
use serde::Deserialize;
use tch::Tensor;

/// The registry entry of `agem`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "agem",
    family: Family::Rehearsal,
    summary: "Averaged GEM: one gradient constraint on the average loss of a memory batch",
    paper: "Chaudhry, Ranzato, Rohrbach & Elhoseiny, \"Efficient Lifelong Learning with A-GEM\", ICLR 2019",
    params: &[
        Param {
            name: "memory_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("500"),
            doc: "samples in the episodic memory",
        },
        Param {
            name: "memory_batch_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("256"),
            doc: "samples drawn per step for the reference gradient",
        },
    ],
    example: "memory_size = 500\nmemory_batch_size = 256",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: true,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// The hyper-parameters of [`AGem`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub memory_size: usize,
    pub memory_batch_size: usize,
}

impl Default for Params {
    /// The schema's defaults ([`DESCRIPTOR`]).
    fn default() -> Self {
        DESCRIPTOR
            .parse(&toml::Table::new())
            .expect("the schema's defaults parse")
    }
}

/// A-GEM's projection of the flat gradient `g` against `g_ref`, on the device with no host
/// read: `g − (min(⟨g, g_ref⟩, 0) / ⟨g_ref, g_ref⟩) · g_ref`. A non-conflicting `g` is
/// returned unchanged (its coefficient is exactly zero); a zero `g_ref` changes nothing.
pub fn project(g: &Tensor, g_ref: &Tensor) -> Tensor {
    let conflict = g.dot(g_ref).clamp_max(0.0);
    let norm = g_ref.dot(g_ref).clamp_min(1e-30);
    g - g_ref * (conflict / norm)
}

/// The prefix of the memory's tensors in the method's state.
const STATE_PREFIX: &str = "memory.";

/// A-GEM. The memory is created on the first task, on the training device.
///
/// Its state ([`Method::state`]) is the memory's: `memory.classes`, `memory.class_counts`
/// and `memory.indices` (the kept dataset indices, class by class), `memory.rng` (the
/// generator that rebalances) and `memory.draws` (memory batches drawn so far). A fresh
/// `AGem` with the same hyper-parameters and seed given that state projects and stores
/// exactly as the original would have.
pub struct AGem {
    params: Params,
    memory: Option<ClassBalanced>,
    /// A loaded state, rebuilt into the memory at the next `before_task`.
    restored: Option<ClassBalancedState>,
    parameters: Vec<Tensor>,
}

impl std::fmt::Debug for AGem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AGem")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> TrainError {
    TrainError::MethodParams {
        method: "agem".into(),
        message: message.into(),
    }
}

fn memory_error(error: retain_memory::MemoryError) -> TrainError {
    TrainError::Method {
        method: "agem".into(),
        message: error.to_string(),
    }
}

impl AGem {
    pub fn new(params: Params) -> Result<Self, TrainError> {
        if params.memory_size == 0 {
            return Err(invalid("`memory_size` must be at least 1"));
        }
        if params.memory_batch_size == 0 {
            return Err(invalid("`memory_batch_size` must be at least 1"));
        }
        Ok(Self {
            params,
            memory: None,
            restored: None,
            parameters: Vec::new(),
        })
    }

    /// The episodic memory (after the first `before_task`).
    pub fn memory(&self) -> Option<&ClassBalanced> {
        self.memory.as_ref()
    }
}

/// Registry factory.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(AGem::new(DESCRIPTOR.parse(params)?)?))
}

impl Method for AGem {
    fn name(&self) -> &str {
        "agem"
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if self.memory.is_none() {
            let seed = derive(ctx.seed, "agem/memory");
            let size = self.params.memory_size;
            let memory = match self.restored.take() {
                None => ClassBalanced::new(size, seed, ctx.device),
                Some(state) => ClassBalanced::restore(size, seed, ctx.device, &state),
            };
            self.memory = Some(memory.map_err(memory_error)?);
        }
        self.parameters = ctx.vars().trainable_variables();
        Ok(())
    }

    /// The memory is fixed within a task (it grows at `after_task`) and `before_task` only
    /// rebuilds it from a loaded state and binds the parameters.
    fn resumes_within_task(&self) -> bool {
        true
    }

    /// The memory is fixed within a task and sampled on the device; the projection reads
    /// nothing back.
    fn capturable(&self) -> bool {
        true
    }

    fn after_backward(&mut self, ctx: &StepContext<'_>) -> Result<(), TrainError> {
        let Some(memory) = &mut self.memory else {
            return Ok(());
        };
        let Some(replay) = memory.sample(self.params.memory_batch_size) else {
            return Ok(());
        };
        let old = ctx.replay_batch(&replay.indices, 0);
        let loss = ctx.training_loss(&ctx.model().forward_t(&old.inputs, true), &old.labels);
        let g_ref = flat_grad_of(&loss, &self.parameters);
        // A view of the flat optimiser's gradient buffer where it can be: no copy.
        let g = flat_grad_view(&self.parameters).unwrap_or_else(|| flat_grad(&self.parameters));
        write_grad(&self.parameters, &project(&g, &g_ref));
        Ok(())
    }

    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if let Some(memory) = &mut self.memory {
            memory
                .add_task(&ctx.task.train_indices, &ctx.stream.train_index_labels())
                .map_err(memory_error)?;
        }
        Ok(())
    }

    /// The memory's tensors (see [`AGem`]); none before the first task.
    fn state(&self) -> Vec<(String, Tensor)> {
        match (&self.memory, &self.restored) {
            (Some(memory), _) => memory.snapshot().tensors(STATE_PREFIX),
            (None, Some(state)) => state.tensors(STATE_PREFIX),
            (None, None) => Vec::new(),
        }
    }

    /// Checks the state against `memory_size`; the memory is rebuilt from it at the next
    /// `before_task`. An empty state is a method before its first task.
    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        self.memory = None;
        self.restored = None;
        let size = self.params.memory_size;
        self.restored = StateReader::read_whole(state, |reader| {
            ClassBalancedState::read(reader, STATE_PREFIX, size)
        })
        .map_err(memory_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
