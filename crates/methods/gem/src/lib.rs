//! Gradient Episodic Memory (GEM; Lopez-Paz & Ranzato, NeurIPS 2017, "Gradient Episodic
//! Memory for Continual Learning").
//!
//! GEM keeps `memories_per_task` samples of every finished task and, at each step, computes
//! the gradient `g_k` of the loss on each task's memory. When the current gradient `g`
//! conflicts with any of them (`⟨g, g_k⟩ < 0`: the step would increase that task's loss to
//! first order), `g` is replaced by the closest vector `g̃` satisfying every constraint, found
//! from the dual QP
//!
//! ```text
//! min_v ½ vᵀ (G Gᵀ) v + (G g)ᵀ v   subject to v ≥ margin,      g̃ = g + Gᵀ v
//! ```
//!
//! solved **exactly** by [`retain_qp::gem_correction`] (Lawson–Hanson active set, finite
//! termination). The margin is the dual lower bound of GEM's published code
//! (`project2cone2`'s `h`), which moves `g` by `margin · Σ_k g_k` before projecting; a ridge of
//! `1e-3` on `G Gᵀ` as in that code keeps the QP strictly convex.
//!
//! # Cost and the one synchronisation
//!
//! Each step needs the gradient of every earlier task's memory loss. The memories of all `t`
//! tasks are gathered as one batch; when the model can compute per-group gradients in one
//! pass (`retain_models::Backbone::per_group_gradients`, which the
//! MLP — the paper's MNIST model — implements while no adapter is attached), all `t`
//! gradients come from **one** forward and **one** backward over the `t·m` memories: the
//! backward stops at each layer's pre-activations, whose rows are the samples' own gradients
//! (the samples are independent), and each task's weight gradient is `δᵀ a` over its rows (a
//! batched matrix product). Other models (ResNet, whose batch norm couples the samples, or an
//! MLP with adapters) get one forward/backward per task, as in the paper. Either way
//! everything stays on the device: `[g_1 … g_t, g]` are stacked and their `(t+1) × (t+1)`
//! Gram matrix formed there. Only that matrix crosses to the host (`(t+1)²` numbers) — GEM's
//! inherent synchronisation point: whether and how to project depends on its values — and
//! only the `t` dual weights come back; the `p`-dimensional gradients never leave the device.
//!
//! The memory gradients dominate: with 20 finished tasks of 256 memories, a step processes
//! 5120 memory samples besides the batch. The batched pass does the same arithmetic as the
//! per-task passes; what it saves is the `t` separate forward/backward launches, which is what
//! costs on a GPU (not measured yet). On a CPU it does not help: on the MNIST MLP at batch 10
//! (`crates/retain-bench/benches/rehearsal_step.rs`, one intra-op thread, inputs of noise,
//! on a shared 2-core machine, 2026-11-28) a naive step took 0.13 ms, GEM with the per-task
//! passes about 28 ms and GEM with the batched pass about 33–34 ms (its larger working set:
//! one 5120-row activation per layer instead of 256-row ones).
//!
//! Hyper-parameters:
//!
//! * `memories_per_task` (default 256, the paper's): samples kept per finished task.
//! * `margin` (default 0.5, the paper's γ for MNIST): dual lower bound, ≥ 0.
//!
//! ```toml
//! [method]
//! name = "gem"
//! memories_per_task = 256
//! margin = 0.5
//! ```
//!
//! # Peer conventions
//!
//! Sources: GEM's code (`facebookresearch/GradientEpisodicMemory` at `34c6b8e`,
//! `model/gem.py`, `run_experiments.sh`); Avalanche 0.6.0 (`ContinualAI/avalanche`,
//! `avalanche/training/plugins/gem.py`, `GEMPlugin` and the `GEM` strategy); Mammoth
//! (`aimagelab/mammoth` at `e75a491`, `models/gem.py`, memory from `fill_buffer` in
//! `utils/buffer.py`). All three solve the same dual QP as here (`project2cone2`: margin as
//! the lower bound `h` of the dual variables, ridge `1e-3`, symmetrised Gram matrix) and
//! project only when some `⟨g, g_k⟩ < 0`; the margin translates unchanged. retain augments
//! replayed samples with the stream's training augmentation (as Mammoth); the memories here
//! are gathered as replayed samples, so each step's memory batch gets a fresh draw of it.
//!
//! * **GEM's code**: `n_memories` per task = `memories_per_task`, `memory_strength` =
//!   `margin`; `run_experiments.sh` uses `n_memories = 256, memory_strength = 0.5` (the
//!   defaults here), batch 10, lr 0.1, one epoch. Its memory is a ring buffer filled from the
//!   task's incoming batches while it trains, so a task keeps about the last `n_memories`
//!   samples it streamed (inputs as given, no augmentation in its setup); here a task keeps a
//!   seeded uniform subset of its training samples, chosen at its end. On CIFAR-100
//!   (task-incremental) each memory's loss covers only its own task's outputs and the current
//!   loss only the current task's; here both are the run's training loss.
//! * **Avalanche `GEMPlugin`**: `patterns_per_exp` = `memories_per_task`, `memory_strength`
//!   (default 0.5) = `margin`, one constraint per experience. Its memory is the first
//!   `patterns_per_exp` samples of a shuffled pass over the experience, stored as tensors
//!   after the training transforms: one augmented view per sample, frozen for the rest of the
//!   run, where the memory here is re-augmented at every step. The memory gradients come from
//!   a separate forward/backward per experience in training mode before the step, at the same
//!   weights as here.
//! * **Mammoth `gem`**: one buffer of `buffer_size` samples balanced over **classes**, not
//!   tasks: at each task's end every class seen gets `buffer_size // n_seen_classes` random
//!   samples (older classes are cut down to that), so a task's memory shrinks as tasks
//!   accumulate instead of staying at `memories_per_task`. Memories are stored non-augmented;
//!   at every step the whole buffer is drawn, re-augmented with the training transform and
//!   split by task label for the per-task gradients. `--gamma` (default 0.5) = `margin`.
//!   Nearest setting here: `memories_per_task = buffer_size / T` for `T` tasks, which equals
//!   Mammoth's memory only after the last task (Mammoth's earlier memories are larger).

use retain_memory::gradients::{flat_grad, flat_grad_of, write_grad};
use retain_memory::{EpisodicMemory, EpisodicState, MemoryError, StateReader};
use retain_qp::gem_correction;
use retain_stream::seed::derive;
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Method, StepContext, TaskContext, TrainError, TrainingLoss};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

/// Ridge added to the memory Gram matrix, as GEM's code does (`eps = 1e-3`).
pub const RIDGE: f64 = 1e-3;

/// The registry entry of `gem`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "gem",
    family: Family::Rehearsal,
    summary: "Gradient Episodic Memory: projects the gradient so no finished task's memory loss rises",
    paper: "Lopez-Paz & Ranzato, \"Gradient Episodic Memory for Continual Learning\", NeurIPS 2017",
    params: &[
        Param {
            name: "memories_per_task",
            kind: ParamKind::Count,
            default: ParamDefault::Value("256"),
            doc: "samples kept per finished task",
        },
        Param {
            name: "margin",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.5"),
            doc: "the dual QP's lower bound γ (≥ 0)",
        },
    ],
    example: "memories_per_task = 256\nmargin = 0.5",
    capabilities: Capabilities {
        capturable: false,
        keeps_samples: true,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// The hyper-parameters of [`Gem`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub memories_per_task: usize,
    pub margin: f64,
}

impl Default for Params {
    /// The schema's defaults ([`DESCRIPTOR`]).
    fn default() -> Self {
        DESCRIPTOR
            .parse(&toml::Table::new())
            .expect("the schema's defaults parse")
    }
}

/// The prefix of the memories' tensors in the method's state.
const STATE_PREFIX: &str = "memory.";

/// GEM. Memories are created on the first task, on the training device.
///
/// Its state ([`Method::state`]) is the memories': `memory.task<N>` (the dataset indices
/// kept of finished task `N`, from 0) and `memory.rng` (the generator that chooses the next
/// task's subset). A fresh `Gem` with the same hyper-parameters and seed given that state
/// projects and stores exactly as the original would have.
pub struct Gem {
    params: Params,
    memory: Option<EpisodicMemory>,
    /// A loaded state, rebuilt into the memories at the next `before_task`.
    restored: Option<EpisodicState>,
    /// Trainable parameters in creation order (the flat-vector layout).
    parameters: Vec<Tensor>,
    /// Steps whose gradient was projected, for diagnostics.
    projected: usize,
}

impl std::fmt::Debug for Gem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gem")
            .field("params", &self.params)
            .field("projected", &self.projected)
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> TrainError {
    TrainError::MethodParams {
        method: "gem".into(),
        message: message.into(),
    }
}

impl Gem {
    pub fn new(params: Params) -> Result<Self, TrainError> {
        if params.memories_per_task == 0 {
            return Err(invalid("`memories_per_task` must be at least 1"));
        }
        if !(params.margin.is_finite() && params.margin >= 0.0) {
            return Err(invalid(format!(
                "`margin` must be a finite number ≥ 0 (got {})",
                params.margin
            )));
        }
        Ok(Self {
            params,
            memory: None,
            restored: None,
            parameters: Vec::new(),
            projected: 0,
        })
    }

    /// Steps so far whose gradient violated a constraint and was projected.
    pub fn projected_steps(&self) -> usize {
        self.projected
    }

    /// The per-task memories (after the first `before_task`).
    pub fn memory(&self) -> Option<&EpisodicMemory> {
        self.memory.as_ref()
    }
}

fn memory_error(error: MemoryError) -> TrainError {
    TrainError::Method {
        method: "gem".into(),
        message: error.to_string(),
    }
}

/// Registry factory.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Gem::new(DESCRIPTOR.parse(params)?)?))
}

/// The gradient of every earlier task's memory loss, `[t, P]` in the flat layout of
/// `parameters`: from one batched pass over all memories where the model supports it
/// (`Backbone::per_group_gradients`), else one forward/backward per task.
fn memory_gradients(
    ctx: &StepContext<'_>,
    memory: &EpisodicMemory,
    parameters: &[Tensor],
) -> Tensor {
    let sizes: Vec<i64> = memory.host().iter().map(|h| h.len() as i64).collect();
    let old = ctx.replay_batch(&Tensor::cat(memory.tasks(), 0), 0);
    let allowed =
        (ctx.loss == TrainingLoss::TaskIl).then(|| ctx.stream.own_task_classes(&old.labels));
    if let Some(rows) = ctx.model().per_group_gradients(
        &old.inputs,
        &old.labels,
        &sizes,
        parameters,
        allowed.as_ref(),
    ) {
        return rows;
    }
    let mut start = 0;
    let rows: Vec<Tensor> = sizes
        .iter()
        .map(|&m| {
            let logits = ctx.model().forward_t(&old.inputs.narrow(0, start, m), true);
            let loss = ctx.training_loss(&logits, &old.labels.narrow(0, start, m));
            start += m;
            flat_grad_of(&loss, parameters)
        })
        .collect();
    Tensor::stack(&rows, 0)
}

impl Method for Gem {
    fn name(&self) -> &str {
        "gem"
    }

    /// The episodic memory grows only at `after_task`; `before_task` rebuilds it from a
    /// loaded state and binds the parameters.
    fn resumes_within_task(&self) -> bool {
        true
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if self.memory.is_none() {
            let seed = derive(ctx.seed, "gem/memory");
            let per_task = self.params.memories_per_task;
            let memory = match self.restored.take() {
                None => EpisodicMemory::new(per_task, seed, ctx.device),
                Some(state) => EpisodicMemory::restore(per_task, seed, ctx.device, &state),
            };
            self.memory = Some(memory.map_err(memory_error)?);
        }
        self.parameters = ctx.vars().trainable_variables();
        Ok(())
    }

    /// Projects the gradient; a failing QP stops the run at this step, with the task and
    /// the solver's reason.
    fn after_backward(&mut self, ctx: &StepContext<'_>) -> Result<(), TrainError> {
        let Some(memory) = self.memory.as_ref().filter(|m| !m.is_empty()) else {
            return Ok(());
        };
        let tasks = memory.len();
        let rows = memory_gradients(ctx, memory, &self.parameters);
        let g = flat_grad(&self.parameters);
        let stacked = Tensor::cat(&[rows, g.unsqueeze(0)], 0);
        // The step's one device→host copy: the (t+1)² Gram matrix.
        let gram = stacked
            .matmul(&stacked.tr())
            .to_kind(Kind::Double)
            .to_device(Device::Cpu)
            .flatten(0, -1);
        let gram = Vec::<f64>::try_from(&gram).expect("a double tensor converts to Vec<f64>");
        let correction = gem_correction(&gram, tasks, self.params.margin, RIDGE).map_err(|e| {
            TrainError::Method {
                method: "gem".into(),
                message: format!(
                    "projection QP failed in task {}, step {}: {e}",
                    ctx.task.index, ctx.step
                ),
            }
        })?;
        if let Some(weights) = correction {
            let weights = Tensor::from_slice(&weights)
                .to_kind(stacked.kind())
                .to_device(ctx.device);
            let corrected = g + weights.matmul(&stacked.narrow(0, 0, tasks as i64));
            write_grad(&self.parameters, &corrected);
            self.projected += 1;
        }
        Ok(())
    }

    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if let Some(memory) = &mut self.memory {
            memory.add_task(&ctx.task.train_indices);
        }
        Ok(())
    }

    /// The memories' tensors (see [`Gem`]); none before the first task.
    fn state(&self) -> Vec<(String, Tensor)> {
        match (&self.memory, &self.restored) {
            (Some(memory), _) => memory.snapshot().tensors(STATE_PREFIX),
            (None, Some(state)) => state.tensors(STATE_PREFIX),
            (None, None) => Vec::new(),
        }
    }

    /// Checks the state against `memories_per_task`; the memories are rebuilt from it at the
    /// next `before_task`. An empty state is a method before its first task.
    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        self.memory = None;
        self.restored = None;
        let per_task = self.params.memories_per_task;
        self.restored = StateReader::read_whole(state, |reader| {
            EpisodicState::read(reader, STATE_PREFIX, per_task)
        })
        .map_err(memory_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
