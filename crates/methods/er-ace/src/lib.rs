//! ER-ACE: experience replay with an asymmetric cross-entropy (Caccia, Aljundi, Asadi,
//! Tuytelaars, Pineau & Belilovsky, "New Insights on Reducing Abrupt Representation Change
//! in Online Continual Learning", ICLR 2022).
//!
//! Plain experience replay trains the incoming batch with a cross-entropy over every class:
//! when a new task starts, its samples push the logits of every old class down, and the
//! old classes' representations change abruptly to make room. ER-ACE keeps the replay but
//! makes the two losses asymmetric: the incoming batch is scored only against the classes
//! it contains (and the ones not seen yet), so it can no longer push old classes down; the
//! replayed batch, drawn from the memory, is scored against every class, which is where old
//! and new classes are told apart.
//!
//! # The loss
//!
//! With `C` the stream's classes (the network's outputs), `(x, y)` the current batch of `B`
//! samples and `(x', y')` a replayed batch of `B'` samples drawn uniformly from the memory,
//! from the second task on the step minimises
//!
//! ```text
//! L = CE(mask_K(f(x)), y) + CE(f(x'), y')
//!
//! K      = P ∪ F                              the classes the current term keeps
//! P      = { y_i : i < B }                    the classes present in the current batch
//! S      = S ∪ P (updated first, every step)  the classes seen so far
//! m      = max S
//! F      = { c : m ≤ c < C }   if m < C − 1,  else ∅
//! mask_K(z)_c = z_c for c ∈ K, −∞ otherwise
//! ```
//!
//! where each `CE` is the run's training loss ([`StepContext::training_loss`]), a mean over
//! its own batch: the two terms have weight 1 each and their sum is the loss (not their
//! mean). On the first task (task index 0) the step is the plain training loss of the
//! current batch, with neither mask nor replay. Note what `F` is: the classes from the
//! **largest class seen so far** (inclusive, even when it is absent from the batch) up to
//! the last, i.e. the not-yet-seen classes when classes arrive in increasing order, as in a
//! split stream; once the last class has been seen it is empty and `K = P`. Every sample
//! offered is stored: the memory is a reservoir (Vitter's algorithm R) over every sample of
//! the stream, from the first step, and the replay batch is drawn before the current batch
//! enters it.
//!
//! The masks are built on the device with static shapes (a `[C]` boolean of zeros filled at
//! the batch's labels, the seen classes a `[C]` boolean updated in place, `m` a device
//! scalar), so the step reads nothing back to the host and is capturable in a CUDA graph.
//!
//! # Under `[training] loss`
//!
//! * `"class_il"` (default): as above; the current term is a softmax over `K`, the replayed
//!   term over all `C` outputs.
//! * `"task_il"`: both terms also keep only each sample's own task's outputs (the multi-head
//!   task-incremental loss, [`retain_train::method::training_loss`]): the current term is a
//!   softmax over `K ∩ own task`, the replayed term over each replayed sample's own task. A
//!   current batch that holds every class of its task (the usual case on two-class tasks)
//!   then keeps its whole task and the step is exactly replay's under `task_il`; the mask
//!   only differs where a batch misses one of its task's classes that is below `m`.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `buffer_size` | `500` | samples the reservoir holds |
//! | `replay_batch_size` | `10` | samples replayed per step (fewer while the memory holds fewer) |
//!
//! The memory keeps un-augmented samples (their dataset indices, on the device); a replayed
//! batch goes through the stream's training augmentation with a draw of its own
//! ([`StepContext::replay_batch`]). Its draws and replacements are seeded from the
//! experiment seed (`er-ace/memory`).
//!
//! # Example
//!
//! ```toml
//! [method]
//! name = "er-ace"
//! buffer_size = 500
//! replay_batch_size = 10
//! ```
//!
//! # Peer conventions
//!
//! Sources: Mammoth (`aimagelab/mammoth`, `models/er_ace.py` at `0d727a7` and `361d4c0`,
//! buffer in `utils/buffer.py`); Avalanche (`ContinualAI/avalanche`,
//! `avalanche/training/supervised/er_ace.py`, the `ER_ACE` strategy, and `ACECriterion` in
//! `avalanche/training/regularization.py`); the authors' code (`pclucas14/AML`,
//! `methods/er_ace.py` on top of `methods/er.py`).
//!
//! * **Mammoth `er_ace`** is what this crate follows. Verified in the code: `present =
//!   labels.unique()`, `seen_so_far` updated with it first, then `mask[:, present] = 1` and,
//!   when `seen_so_far.max() < num_classes - 1`, `mask[:, seen_so_far.max():] = 1`; the
//!   logits are masked (`masked_fill(mask == 0, finfo.min)`, the same softmax as −∞ here)
//!   only when `self.task > 0`, the task counter advanced by `end_task`. Replay also starts
//!   at `self.task > 0`: `buffer.get_data(minibatch_size, transform=self.transform)` (distinct
//!   samples, fewer while the buffer holds fewer, augmented anew), its own forward pass, and
//!   `loss = CE(masked logits, labels) + CE(net(buf_inputs), buf_labels)`. The reservoir
//!   receives every batch's non-augmented samples after the step, from the first step.
//!   The same here, with two notes: `num_classes` there is the dataset's tasks × classes per
//!   task, here the stream's classes (the network's outputs); and where every sample's output
//!   depends on it alone (the MLP, the ViT) the current and replayed batches share one
//!   forward pass ([`StepContext::forward_batches`]), the same outputs in fewer kernels (with
//!   batch norm they get one each, as there). Translation: `buffer_size = buffer_size`,
//!   `replay_batch_size = minibatch_size` (Mammoth requires both; `minibatch_size` defaults to
//!   the batch size there).
//! * **Avalanche `ER_ACE`** differs in four ways: (1) its `ACECriterion` returns the
//!   **mean** `(loss_buffer + loss_current) / 2`, half of the loss here, which at a fixed
//!   SGD learning rate halves the step; (2) the current term is a cross-entropy over the present
//!   classes only (`out_in[:, current_classes]`), with no unmasking of unseen classes; (3) the
//!   memory is a `ClassBalancedBuffer(mem_size, adaptive_size=True)` (default `mem_size` 200)
//!   updated at the **start** of each experience with that experience's data; (4) replay (and
//!   the asymmetric loss) starts with the second experience, once the memory holds
//!   `batch_size_mem` samples (default 10), through a shuffled, cycled loader with
//!   `drop_last`; before that the loss is the plain criterion. `mem_size → buffer_size` and
//!   `batch_size_mem → replay_batch_size` mean the same things; no setting here reproduces
//!   (1)–(3). Avalanche's `OnlineER_ACE` is its online (task-free) variant.
//! * **The authors' code (`pclucas14/AML`)** forces the task-free setting: the mask (the
//!   same `present ∪ [max seen, C)`, without Mammoth's `< C − 1` condition, so once the last
//!   class is seen it still keeps class `C − 1`) applies from the very first step, and replay
//!   starts as soon as the buffer holds anything (`len(self.buffer) > 0`), within the first
//!   task; the loss is `inc_loss + re_loss`, as here; `buffer_batch_size` →
//!   `replay_batch_size`, `mem_size` → `buffer_size`. Here the first task is trained without
//!   mask and replay, as in Mammoth; from the second task on the two agree except on steps
//!   where the largest class seen is `C − 1` and absent from the batch.

use retain_memory::{MemoryError, Reservoir, ReservoirState, StateReader};
use retain_stream::Batch;
use retain_stream::seed::derive;
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Method, StepContext, TaskContext, TrainError};
use serde::Deserialize;
use tch::{Kind, Tensor};

/// The registry entry of `er-ace`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "er-ace",
    family: Family::Rehearsal,
    summary: "ER-ACE: reservoir replay; the current batch's cross-entropy over its own (and unseen) classes only, the replayed batch's over all",
    paper: "Caccia et al., \"New Insights on Reducing Abrupt Representation Change in Online Continual Learning\", ICLR 2022",
    params: &[
        Param {
            name: "buffer_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("500"),
            doc: "samples the reservoir holds",
        },
        Param {
            name: "replay_batch_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("10"),
            doc: "samples replayed per step (fewer while the memory holds fewer)",
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

/// The hyper-parameters of [`ErAce`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub buffer_size: usize,
    pub replay_batch_size: usize,
}

impl Default for Params {
    /// The schema's defaults ([`DESCRIPTOR`]).
    fn default() -> Self {
        DESCRIPTOR
            .parse(&toml::Table::new())
            .expect("the schema's defaults parse")
    }
}

/// `[classes]` bool on `labels`' device: true at each class among `labels` (`[B]` int64).
/// Zeros filled at the labels: a static shape, no host read.
pub fn present_classes(labels: &Tensor, classes: i64) -> Tensor {
    Tensor::zeros([classes], (Kind::Bool, labels.device())).index_fill(0, labels, 1i64)
}

/// `[C]` bool: the classes the current batch's term keeps, `K = P ∪ F` (see the crate docs):
/// `present` (`P`, `[C]` bool) and, when the largest class `m` of `seen` (`[C]` bool, which
/// already includes `present`) is below `C − 1`, every class from `m` on.
pub fn kept_classes(present: &Tensor, seen: &Tensor) -> Tensor {
    let classes = seen.size()[0];
    let ids = Tensor::arange(classes, (Kind::Int64, seen.device()));
    let max_seen = ids.masked_fill(&seen.logical_not(), -1).max();
    let unseen = ids
        .ge_tensor(&max_seen)
        .logical_and(&max_seen.lt(classes - 1));
    present.logical_or(&unseen)
}

/// `logits` (`[B, C]`) with every class outside `kept` (`[C]` bool) set to −∞: those
/// outputs get neither probability nor gradient in the softmax.
pub fn mask_logits(logits: &Tensor, kept: &Tensor) -> Tensor {
    logits.masked_fill(&kept.logical_not().unsqueeze(0), f64::NEG_INFINITY)
}

/// The memory and the seen classes, on the training device.
struct Memory {
    reservoir: Reservoir,
    /// `[C]` bool: the classes of every batch trained on so far, updated in place each step.
    seen: Tensor,
}

/// A checked state from [`Method::load_state`], rebuilt on the device at the next
/// `before_task` (which knows the device, the seed and the classes).
struct Restored {
    reservoir: ReservoirState,
    /// `[C]` int64, 0 or 1.
    seen: Tensor,
}

/// The prefix of the reservoir's tensors in the method's state.
const STATE_PREFIX: &str = "memory.";
/// The name of the seen classes in the method's state.
const SEEN: &str = "seen_classes";

/// ER-ACE. The memory is created on the first task, on the training device.
///
/// Its state ([`Method::state`]) is the reservoir's — `memory.indices` (the stored dataset
/// indices), `memory.offered` (samples offered so far), `memory.draws` (replay draws so far)
/// — and `seen_classes` (`[C]` int64, 1 for every class trained on so far). A fresh `ErAce`
/// with the same hyper-parameters and seed given that state masks, replays, stores and
/// replaces exactly what the original would have.
pub struct ErAce {
    params: Params,
    memory: Option<Memory>,
    restored: Option<Restored>,
    /// The index of the task being trained (set by `before_task`).
    task: usize,
}

impl std::fmt::Debug for ErAce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErAce")
            .field("params", &self.params)
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

fn failed(message: impl Into<String>) -> TrainError {
    TrainError::Method {
        method: "er-ace".into(),
        message: message.into(),
    }
}

fn memory_error(error: MemoryError) -> TrainError {
    failed(error.to_string())
}

impl ErAce {
    pub fn new(params: Params) -> Result<Self, TrainError> {
        retain_train::method::check_replay_sizes(
            "er-ace",
            params.buffer_size,
            params.replay_batch_size,
            8,
            "8 bytes per slot for its dataset index",
        )?;
        Ok(Self {
            params,
            memory: None,
            restored: None,
            task: 0,
        })
    }

    /// Samples the memory holds now (the host's count; exact at task boundaries).
    pub fn memory_len(&self) -> usize {
        self.memory.as_ref().map_or(0, |m| m.reservoir.len())
    }

    /// The classes trained on so far, ascending (a host read; empty before the first task).
    pub fn seen_classes(&self) -> Vec<i64> {
        self.memory.as_ref().map_or_else(Vec::new, |m| {
            Vec::<i64>::try_from(&m.seen.nonzero().flatten(0, -1).to_device(tch::Device::Cpu))
                .expect("an int64 vector converts to Vec<i64>")
        })
    }

    fn create_memory(&mut self, ctx: &TaskContext<'_>) -> Result<Memory, TrainError> {
        let seed = derive(ctx.seed, "er-ace/memory");
        let size = self.params.buffer_size;
        let classes = ctx.stream.num_classes as i64;
        Ok(match self.restored.take() {
            None => Memory {
                reservoir: Reservoir::new(size, None, seed, ctx.device).map_err(memory_error)?,
                seen: Tensor::zeros([classes], (Kind::Bool, ctx.device)),
            },
            Some(state) => {
                if state.seen.size() != [classes] {
                    return Err(failed(format!(
                        "malformed state: `{SEEN}` has {} classes, the stream {classes}",
                        state.seen.size()[0]
                    )));
                }
                Memory {
                    reservoir: Reservoir::restore(size, None, seed, ctx.device, &state.reservoir)
                        .map_err(memory_error)?,
                    seen: state.seen.to_device(ctx.device).gt(0),
                }
            }
        })
    }
}

/// Registry factory.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(ErAce::new(DESCRIPTOR.parse(params)?)?))
}

impl Method for ErAce {
    fn name(&self) -> &str {
        "er-ace"
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.task = ctx.task.index;
        match &mut self.memory {
            None => self.memory = Some(self.create_memory(ctx)?),
            // Replayed graph steps advanced only the device's count.
            Some(memory) => memory.reservoir.sync(),
        }
        Ok(())
    }

    /// Masks, sampling and adding run on the device with static shapes (see the crate docs
    /// and `retain-memory`); whether to mask and replay depends only on the task index.
    fn capturable(&self) -> bool {
        true
    }

    /// On the first task always (no replay: the step's shapes never change); later once the
    /// memory holds a full replay batch.
    fn capture_ready(&self) -> bool {
        match &self.memory {
            Some(memory) if self.task > 0 => {
                let reservoir = &memory.reservoir;
                reservoir.len() >= self.params.replay_batch_size.min(reservoir.capacity())
            }
            _ => true,
        }
    }

    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        let memory = self
            .memory
            .as_mut()
            .ok_or_else(|| failed("a step ran before `before_task` created the memory"))?;
        let later_task = ctx.task.index > 0;
        {
            let _no_grad = tch::no_grad_guard();
            let _ = memory.seen.index_fill_(0, &batch.labels, 1i64);
        }
        let replay = later_task
            .then(|| memory.reservoir.sample(self.params.replay_batch_size))
            .flatten()
            .map(|replay| ctx.replay_batch(&replay.indices, 0));
        let mut inputs = vec![&batch.inputs];
        inputs.extend(replay.iter().map(|old| &old.inputs));
        let outputs = ctx.forward_batches(&inputs);
        let current = if later_task {
            let present = present_classes(&batch.labels, memory.seen.size()[0]);
            let kept = kept_classes(&present, &memory.seen);
            ctx.training_loss(&mask_logits(&outputs[0], &kept), &batch.labels)
        } else {
            ctx.training_loss(&outputs[0], &batch.labels)
        };
        let loss = match &replay {
            Some(old) => current + ctx.training_loss(&outputs[1], &old.labels),
            None => current,
        };
        // The replay batch was drawn before this batch entered the memory.
        memory
            .reservoir
            .add(ctx.indices, None)
            .map_err(|e| failed(format!("cannot store the batch in the reservoir: {e}")))?;
        Ok(loss)
    }

    /// The reservoir's tensors and the seen classes (see [`ErAce`]); none before the first
    /// task.
    fn state(&self) -> Vec<(String, Tensor)> {
        let (mut tensors, seen) = match (&self.memory, &self.restored) {
            (Some(memory), _) => (
                memory.reservoir.snapshot().tensors(STATE_PREFIX),
                memory.seen.to_kind(Kind::Int64),
            ),
            (None, Some(state)) => (
                state.reservoir.tensors(STATE_PREFIX),
                state.seen.shallow_clone(),
            ),
            (None, None) => return Vec::new(),
        };
        tensors.push((SEEN.to_owned(), seen));
        tensors
    }

    /// Checks the state against the reservoir's size (the seen classes against the stream's
    /// classes at the next `before_task`, which rebuilds the memory from it). An empty state
    /// is a method before its first task.
    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        self.memory = None;
        self.restored = None;
        let size = self.params.buffer_size;
        self.restored = StateReader::read_whole(state, |reader| {
            let reservoir = ReservoirState::read(reader, STATE_PREFIX, size, false)?;
            let seen = reader.take(SEEN, Kind::Int64, 1)?;
            let not_binary = seen.lt(0).logical_or(&seen.gt(1)).any().int64_value(&[]) != 0;
            if not_binary {
                return Err(MemoryError::State {
                    message: format!("`{SEEN}` must hold only 0 and 1"),
                });
            }
            Ok(Restored { reservoir, seen })
        })
        .map_err(memory_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
