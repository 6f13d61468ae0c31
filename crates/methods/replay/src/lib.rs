//! Experience replay (ER): rehearse stored samples alongside the current batch.
//!
//! Every step trains on the current batch concatenated with a batch drawn uniformly from a
//! memory of earlier samples, the simplest and one of the strongest rehearsal baselines
//! (Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual Learning"; Rolnick et al.
//! 2019). The memory holds dataset indices on the device ([`retain_memory`]); a replay batch
//! is an index gather, with no host synchronisation in the step.
//!
//! Hyper-parameters:
//!
//! * `buffer_size` (default 500): samples the memory holds.
//! * `replay_batch_size` (default 10): samples replayed per step (fewer while the memory
//!   holds fewer).
//! * `buffer`: `"reservoir"` (default; Vitter's algorithm R over every sample seen, updated
//!   every step, boundary-free) or `"class_balanced"` (updated at task ends, every class seen
//!   gets an equal share).
//!
//! The memory keeps un-augmented samples (their indices); a replayed batch goes through the
//! stream's training augmentation with a draw of its own, as the current batch does
//! (Mammoth's `Buffer.get_data(…, transform=self.transform)`). The replay draw is seeded from
//! the experiment seed (`replay/memory`). One cross-entropy covers the current and the
//! replayed samples together, each under the run's training loss (`[training] loss`: with
//! `"task_il"` each sample over its own task's classes).
//!
//! ```toml
//! [method]
//! name = "replay"
//! buffer_size = 500
//! replay_batch_size = 10
//! buffer = "reservoir"
//! ```
//!
//! # Peer conventions
//!
//! Sources: Mammoth (`aimagelab/mammoth` at `e75a491`, `models/er.py`, buffer in
//! `utils/buffer.py`); Avalanche 0.6.0 (`ContinualAI/avalanche`,
//! `avalanche/training/plugins/replay.py`, `ReplayPlugin` and the `Replay` strategy, storage
//! in `avalanche/training/storage_policy.py`, batches from `ReplayDataLoader` in
//! `avalanche/benchmarks/utils/data_loader.py`). retain augments replayed samples with the
//! stream's training augmentation (as Mammoth).
//!
//! * **Mammoth `er`** is `buffer = "reservoir"` here. Algorithm R over every sample seen,
//!   offered after the step, so the replay batch is drawn before the current batch enters, as
//!   here; replay starts as soon as the buffer holds anything, within the first task;
//!   `minibatch_size` distinct buffer samples per step (`np.random.choice` without
//!   replacement), fewer while the buffer holds fewer; one cross-entropy averaged over the
//!   concatenated current and replayed samples. The buffer keeps the non-augmented image and
//!   applies the training transform anew at each draw. Translation:
//!   `buffer_size = buffer_size`, `replay_batch_size = minibatch_size`. Mammoth's
//!   `minibatch_size` defaults to the batch size (its `main.py` sets it to `--batch_size`
//!   whenever that is given), where the default here is 10; its `utils/best_args.py` uses 10
//!   on seq-MNIST and 32 on seq-CIFAR-10, equal to the batch size.
//! * **Avalanche `ReplayPlugin`** by default stores an `ExperienceBalancedBuffer` of
//!   `mem_size` (default 200) samples, updated only at each experience's end: after `k`
//!   experiences each holds `mem_size / k` slots, a uniformly random subset of its samples, so
//!   replay starts with the second experience. The memory batch has `batch_size_mem` samples
//!   (default: the strategy's `train_mb_size`, the current batch's size), taken by a loader
//!   that walks shuffled passes over the memory alongside the current data (the current data
//!   sets the epoch's length), not an independent draw per step; memory samples go through the
//!   dataset's training transforms, so they are augmented too. One cross-entropy averaged over
//!   the concatenated batch, as here. Nearest setting here: `buffer = "class_balanced"`
//!   (balanced over classes, not experiences: the same shares when every task has as many
//!   classes, each as large), `buffer_size = mem_size`, `replay_batch_size = batch_size_mem`
//!   (set it to the training batch size to match Avalanche's default). Avalanche's
//!   `storage_policy = ClassBalancedBuffer(mem_size)` is the counterpart of
//!   `"class_balanced"`; `task_balanced_dataloader = True` has none here.

use retain_memory::{
    ClassBalanced, ClassBalancedState, MemoryError, Reservoir, ReservoirState, StateReader,
};
use retain_stream::seed::derive;
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Method, StepContext, TaskContext, TrainError};
use serde::Deserialize;
use tch::{Device, Tensor};

/// Which memory replay draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    Reservoir,
    ClassBalanced,
}

/// The registry entry of `replay`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "replay",
    family: Family::Rehearsal,
    summary: "Experience replay: the current batch with a batch drawn from a memory of past samples",
    paper: "Chaudhry et al., \"On Tiny Episodic Memories in Continual Learning\", 2019; Rolnick et al., \"Experience Replay for Continual Learning\", NeurIPS 2019",
    params: &[
        Param {
            name: "buffer_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("500"),
            doc: "samples the memory holds",
        },
        Param {
            name: "replay_batch_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("10"),
            doc: "samples replayed per step (fewer while the memory holds fewer)",
        },
        Param {
            name: "buffer",
            kind: ParamKind::Choice(&["reservoir", "class_balanced"]),
            default: ParamDefault::Value("\"reservoir\""),
            doc: "reservoir sampling over every sample seen, or a class-balanced memory",
        },
    ],
    example: "buffer_size = 500\nreplay_batch_size = 10",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: true,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// The hyper-parameters of [`Replay`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub buffer_size: usize,
    pub replay_batch_size: usize,
    pub buffer: BufferKind,
}

impl Default for Params {
    /// The schema's defaults ([`DESCRIPTOR`]).
    fn default() -> Self {
        DESCRIPTOR
            .parse(&toml::Table::new())
            .expect("the schema's defaults parse")
    }
}

enum Memory {
    Reservoir(Reservoir),
    ClassBalanced(ClassBalanced),
}

/// A memory's checked state from [`Method::load_state`], rebuilt on the device at the next
/// `before_task` (which knows the device and the seed).
enum Restored {
    Reservoir(ReservoirState),
    ClassBalanced(ClassBalancedState),
}

/// The prefix of the memory's tensors in the method's state.
const STATE_PREFIX: &str = "memory.";

/// Experience replay. The memory is created on the first task, on the training device.
///
/// Its state ([`Method::state`]) is the memory's: for the reservoir `memory.indices` (the
/// stored dataset indices), `memory.offered` (samples offered so far) and `memory.draws`
/// (replay draws so far); for the class-balanced memory `memory.classes`,
/// `memory.class_counts`, `memory.indices`, `memory.rng` (its generator) and
/// `memory.draws`. A fresh `Replay` with the same hyper-parameters and seed given that state
/// replays, stores and replaces exactly what the original would have.
pub struct Replay {
    params: Params,
    memory: Option<Memory>,
    restored: Option<Restored>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

fn memory_error(error: MemoryError) -> TrainError {
    TrainError::Method {
        method: "replay".into(),
        message: error.to_string(),
    }
}

impl Replay {
    pub fn new(params: Params) -> Result<Self, TrainError> {
        retain_train::method::check_replay_sizes(
            "replay",
            params.buffer_size,
            params.replay_batch_size,
            8,
            "8 bytes per slot for its dataset index",
        )?;
        Ok(Self {
            params,
            memory: None,
            restored: None,
        })
    }

    /// Samples the memory holds now.
    pub fn memory_len(&self) -> usize {
        match &self.memory {
            Some(Memory::Reservoir(r)) => r.len(),
            Some(Memory::ClassBalanced(b)) => b.len(),
            None => 0,
        }
    }

    /// The memory, empty or as a loaded state says.
    fn create_memory(&mut self, seed: u64, device: Device) -> Result<Memory, MemoryError> {
        let seed = derive(seed, "replay/memory");
        let size = self.params.buffer_size;
        Ok(match (self.params.buffer, self.restored.take()) {
            (BufferKind::Reservoir, None) => {
                Memory::Reservoir(Reservoir::new(size, None, seed, device)?)
            }
            (BufferKind::Reservoir, Some(Restored::Reservoir(state))) => {
                Memory::Reservoir(Reservoir::restore(size, None, seed, device, &state)?)
            }
            (BufferKind::ClassBalanced, None) => {
                Memory::ClassBalanced(ClassBalanced::new(size, seed, device)?)
            }
            (BufferKind::ClassBalanced, Some(Restored::ClassBalanced(state))) => {
                Memory::ClassBalanced(ClassBalanced::restore(size, seed, device, &state)?)
            }
            (_, Some(_)) => unreachable!("load_state reads the state of the configured buffer"),
        })
    }
}

/// Registry factory.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Replay::new(DESCRIPTOR.parse(params)?)?))
}

impl Method for Replay {
    fn name(&self) -> &str {
        "replay"
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        match &mut self.memory {
            None => {
                self.memory = Some(
                    self.create_memory(ctx.seed, ctx.device)
                        .map_err(memory_error)?,
                )
            }
            // Replayed graph steps advanced only the device's count.
            Some(Memory::Reservoir(r)) => r.sync(),
            Some(Memory::ClassBalanced(_)) => {}
        }
        Ok(())
    }

    /// The memory's state (indices, counters on the device) is complete at any step, and
    /// `before_task` only rebuilds the memory from a loaded state or syncs its host count.
    fn resumes_within_task(&self) -> bool {
        true
    }

    /// Sampling and adding run on the device from device counters (see `retain-memory`).
    fn capturable(&self) -> bool {
        true
    }

    /// Once the memory holds a full replay batch (or, class-balanced, is fixed for the
    /// task): the replay batch no longer changes size.
    fn capture_ready(&self) -> bool {
        match &self.memory {
            Some(Memory::Reservoir(r)) => {
                r.len() >= self.params.replay_batch_size.min(r.capacity())
            }
            Some(Memory::ClassBalanced(_)) | None => true,
        }
    }

    fn loss(
        &mut self,
        ctx: &StepContext<'_>,
        batch: &retain_stream::Batch,
    ) -> Result<Tensor, TrainError> {
        let memory = self
            .memory
            .as_mut()
            .expect("before_task creates the memory before any step");
        let replay = match memory {
            Memory::Reservoir(r) => r.sample(self.params.replay_batch_size),
            Memory::ClassBalanced(b) => b.sample(self.params.replay_batch_size),
        };
        let loss = match replay {
            None => ctx.cross_entropy(batch),
            Some(replay) => {
                let old = ctx.replay_batch(&replay.indices, 0);
                let inputs = Tensor::cat(&[&batch.inputs, &old.inputs], 0);
                let labels = Tensor::cat(&[&batch.labels, &old.labels], 0);
                ctx.training_loss(&ctx.model().forward_t(&inputs, true), &labels)
            }
        };
        // The replay batch was drawn before this batch entered the memory.
        if let Memory::Reservoir(r) = memory {
            r.add(ctx.indices, None).map_err(|e| TrainError::Method {
                method: "replay".into(),
                message: format!("cannot store the batch in the reservoir: {e}"),
            })?;
        }
        Ok(loss)
    }

    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if let Some(Memory::ClassBalanced(b)) = &mut self.memory {
            b.add_task(&ctx.task.train_indices, &ctx.stream.train_index_labels())
                .map_err(memory_error)?;
        }
        Ok(())
    }

    /// The memory's tensors (see [`Replay`]); none before the first task.
    fn state(&self) -> Vec<(String, Tensor)> {
        match (&self.memory, &self.restored) {
            (Some(Memory::Reservoir(r)), _) => r.snapshot().tensors(STATE_PREFIX),
            (Some(Memory::ClassBalanced(b)), _) => b.snapshot().tensors(STATE_PREFIX),
            (None, Some(Restored::Reservoir(state))) => state.tensors(STATE_PREFIX),
            (None, Some(Restored::ClassBalanced(state))) => state.tensors(STATE_PREFIX),
            (None, None) => Vec::new(),
        }
    }

    /// Checks the state against the configured buffer and its size; the memory is rebuilt
    /// from it at the next `before_task`. An empty state is a method before its first task.
    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        self.memory = None;
        self.restored = None;
        let (size, buffer) = (self.params.buffer_size, self.params.buffer);
        self.restored = StateReader::read_whole(state, |reader| {
            Ok(match buffer {
                BufferKind::Reservoir => {
                    Restored::Reservoir(ReservoirState::read(reader, STATE_PREFIX, size, false)?)
                }
                BufferKind::ClassBalanced => {
                    Restored::ClassBalanced(ClassBalancedState::read(reader, STATE_PREFIX, size)?)
                }
            })
        })
        .map_err(memory_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
