//! GDumb: a greedy class-balanced memory and a model trained from scratch on it alone.
//!
//! Prabhu, Torr & Dokania, "GDumb: A Simple Approach that Questions Our Progress in Continual
//! Learning", ECCV 2020. A rehearsal baseline with no continual learner at all: a *greedy
//! sampler* keeps a class-balanced memory of `memory_size` samples from the stream, and a
//! *dumb learner* trains a network from scratch on that memory alone whenever it is
//! evaluated. Nothing learnt on one task is carried into the next except through the memory.
//!
//! # The sampler
//!
//! The task's training samples are offered one by one, in the order the stream presents them
//! in a task's first epoch (`TaskStream::epoch_order` for epoch 0: the order naive
//! fine-tuning sees them in, seeded from the experiment seed). With `Y` the classes seen so
//! far and `k_c = memory_size / |Y|` (integer division, `|Y|` counted before the sample), a
//! sample of class `y` is stored when `y` is new or the memory holds fewer than `k_c` of its
//! class; when the memory is full at that point, one sample drawn uniformly from the largest
//! class (the earliest seen among equally large ones) is evicted first. Any other sample is
//! refused — also when the memory is not full: a class at its share `k_c` takes no more. This
//! is the paper's Algorithm 1, as the greedy sampler of Mai et al.'s `online-continual-learning`
//! code implements it (`Gdumb.greedy_balancing_update`, with Python's `max` picking the
//! first largest class in insertion order, as here). The authors' released code
//! (`drimpossible/GDumb`, `src/dataloader.py`) trains once after the whole stream and takes
//! the first `memory_size / classes` samples of every class, which is what the rule leaves
//! once every class is seen (up to which samples the evictions removed). Evictions draw from
//! a generator seeded `gdumb/evict/task<t>` ([`retain_stream::seed::derive`]).
//!
//! The sampler runs on the host, at the task boundary (in `before_task`): it keeps the
//! memory's dataset indices and labels in host vectors, nothing of it is on the device, and no
//! training step reads it.
//!
//! # The learner
//!
//! In `before_task` of every task the network's variables (trainable and buffers alike) are
//! restored to the *initial weights*, those the network had at the first `before_task` (its
//! seeded initialisation, or `[model] checkpoint` / the `[pretrain]` stage's result); the
//! sampler then takes the task's samples, and `training_indices` returns the memory's indices
//! instead of the task's, so the trainer trains the reset network on the memory alone for
//! `[training] epochs` epochs, with a fresh optimiser ([`Method::fresh_optimizer_each_task`]:
//! no momentum or moments carried over). The evaluation after the task reads that network.
//!
//! Every re-training starts from the same initial weights rather than a new random draw: the
//! network after task `t` is then a function of the memory at `t`, the configuration and the
//! seed alone (the trainer's epoch orders derive from the seed and the task), so a run is
//! reproducible bit for bit, and a run resumed from a checkpoint (whose state holds the initial
//! weights and the memory) trains exactly what the uninterrupted run trains. Mammoth instead
//! builds a new backbone from torch's global generator, a draw that depends on everything
//! drawn before it.
//!
//! `[training] epochs` and the optimiser are GDumb's fitting schedule. The reference fits
//! with SGD (momentum 0.9, weight decay 1e-6, batch 16, learning rate 0.05) for many passes
//! (128 on MNIST, 256 on CIFAR-10), a first warm-up pass at a tenth of the learning rate,
//! then cosine annealing with warm restarts (`T_0 = 1`, `T_mult = 2`, down to 0.0005),
//! gradient-norm clipping at 10, and CutMix (α = 1, on half the batches) on the larger image
//! datasets (not MNIST). retain reproduces the optimiser and the number of passes but not the
//! warm-up, the cosine schedule with restarts, the clipping or CutMix: `[training]` has a
//! constant learning rate and no mixing augmentation.
//!
//! # Masking at inference
//!
//! The paper's learner predicts only among the classes seen so far (class-IL) or the
//! classes of the task (task-IL). The task-IL read-out masks to the task's classes already;
//! with `mask_unseen` the method's read-out ([`Method::eval_logits`]) also puts every class
//! never offered to the sampler below every seen one, so a class-IL prediction is always a
//! seen class. The unseen classes' logits are lowered by the row's range plus one rather than
//! set to −∞: their order among themselves is kept, so the task-IL accuracy of a task not
//! trained yet (a forward-transfer entry) is still the network's. Before the first task the
//! read-out is the network's own outputs. The authors' code trains and evaluates only once,
//! after every class is seen, where the mask changes nothing.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `memory_size` | `500` | samples the memory holds (`K`; the paper's MNIST setting) |
//! | `mask_unseen` | `true` | predict only among the classes seen so far |
//!
//! # Example
//!
//! ```toml
//! [training]
//! epochs = 128            # GDumb's passes over the memory before each evaluation
//! batch_size = 16
//!
//! [training.optimizer]
//! kind = "sgd"
//! lr = 0.05
//! momentum = 0.9
//! weight_decay = 1e-6
//!
//! [method]
//! name = "gdumb"
//! memory_size = 500
//! mask_unseen = true
//! ```
//!
//! # State
//!
//! [`Method::state`] holds `memory.classes` (the seen classes, in the order first seen),
//! `memory.class_counts` (samples stored per class), `memory.indices` (the stored dataset
//! indices, class by class) and `initial.<variable>` for every variable of the network. A
//! fresh `Gdumb` given it continues the run exactly.
//!
//! # Peer conventions
//!
//! Sources: the authors' code (`drimpossible/GDumb`, `src/main.py`, `src/dataloader.py`,
//! `src/opts.py`, `scripts/replicate.sh`); Mammoth (`aimagelab/mammoth`, `models/gdumb.py`);
//! Mai et al.'s `RaptorMai/online-continual-learning` (`agents/gdumb.py`).
//!
//! * **Authors' code**: one training after the last task on the first `memory_size /
//!   classes` samples of each class, from the network's initialisation; class-IL accuracy
//!   is the arg-max over every output (all classes are seen by then), task-IL accuracy the
//!   arg-max over the task's classes, the best accuracy over the passes reported. MNIST runs:
//!   MLP of width 100 or 400, `memory_size` 300, 500 or 4400, 128 passes, no CutMix.
//!   Translation: `memory_size = memory_size`, `[training] epochs = num_passes`, `batch_size
//!   = 16`, SGD as in the example; the last row of the accuracy matrix is theirs (retain
//!   reports the final network, not the best pass). Its fp16 model is not reproduced.
//! * **Mammoth `gdumb`**: its memory is Mammoth's reservoir `Buffer` (not class-balanced),
//!   filled during training without any learning step, and the network is rebuilt and fitted
//!   only at the end of the *last* task (`fitting_epochs` 256, `maxlr` 0.05, `minlr` 5e-4,
//!   CutMix with `cutmix_alpha` 1.0 on every batch), so its earlier rows are those of an
//!   untrained network. Translation: `memory_size = buffer_size`, `[training] epochs =
//!   fitting_epochs`, `lr = maxlr`; the sampler here is the paper's, and every task's
//!   evaluation gets its own fitted network.
//! * **online-continual-learning `gdumb`**: the same greedy rule over the task's samples in
//!   its loader's shuffled order, then after every task a network built anew (a fresh random
//!   initialisation) trained on the memory for `mem_epoch` epochs with gradient clipping and
//!   a constant learning rate. Translation: `memory_size = mem_size`, `[training] epochs =
//!   mem_epoch`; retain clips no gradients.

mod sampler;

use std::collections::BTreeMap;

use retain_memory::{MemoryError, StateReader};
use retain_stream::SplitKind;
use retain_stream::seed::{SplitMix64, derive};
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Method, Network, TaskContext, TrainError};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

pub use sampler::{GreedySampler, Offer};

/// The registry entry of `gdumb`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "gdumb",
    family: Family::Rehearsal,
    summary: "GDumb: a greedy class-balanced memory, and before each evaluation a network trained from its initial weights on that memory alone",
    paper: "Prabhu, Torr & Dokania, \"GDumb: A Simple Approach that Questions Our Progress in Continual Learning\", ECCV 2020",
    params: &[
        Param {
            name: "memory_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("500"),
            doc: "samples the greedy class-balanced memory holds (≥ 1)",
        },
        Param {
            name: "mask_unseen",
            kind: ParamKind::Bool,
            default: ParamDefault::Value("true"),
            doc: "predict only among the classes seen so far",
        },
    ],
    example: "memory_size = 500\nmask_unseen = true",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: true,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// The hyper-parameters: the `[method]` table without `name`, defaults filled in from
/// [`DESCRIPTOR`]. Unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub memory_size: usize,
    pub mask_unseen: bool,
}

impl Default for Params {
    /// The schema's defaults ([`DESCRIPTOR`]).
    fn default() -> Self {
        DESCRIPTOR
            .parse(&toml::Table::new())
            .expect("the schema's defaults parse")
    }
}

/// The prefix of the initial weights in the method's state.
const INITIAL_PREFIX: &str = "initial.";
/// The prefix of the memory's tensors in the method's state.
const MEMORY_PREFIX: &str = "memory.";

/// GDumb (see the crate docs): the greedy memory, the initial weights every task's training
/// starts from, and the mask of the classes seen so far.
pub struct Gdumb {
    params: Params,
    sampler: GreedySampler,
    /// Every variable of the network at the first `before_task`, by name.
    initial: Option<BTreeMap<String, Tensor>>,
    /// `[1, classes]` bool on the device: the classes the sampler has seen.
    seen: Option<Tensor>,
}

impl std::fmt::Debug for Gdumb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gdumb")
            .field("params", &self.params)
            .field("counts", &self.sampler.counts())
            .finish_non_exhaustive()
    }
}

fn failure(message: impl Into<String>) -> TrainError {
    TrainError::Method {
        method: "gdumb".into(),
        message: message.into(),
    }
}

fn memory_error(error: MemoryError) -> TrainError {
    failure(error.to_string())
}

impl Gdumb {
    pub fn new(params: Params) -> Result<Self, TrainError> {
        if params.memory_size == 0 {
            return Err(TrainError::MethodParams {
                method: "gdumb".into(),
                message: "`memory_size` must be at least 1".into(),
            });
        }
        retain_train::method::check_param_memory(
            "gdumb",
            "memory_size",
            params.memory_size,
            16,
            "16 bytes per slot for its dataset index and label",
        )?;
        Ok(Self {
            sampler: GreedySampler::new(params.memory_size),
            params,
            initial: None,
            seen: None,
        })
    }

    /// The memory.
    pub fn sampler(&self) -> &GreedySampler {
        &self.sampler
    }

    /// The initial weights every task's training starts from, once recorded.
    pub fn initial_weights(&self) -> Option<&BTreeMap<String, Tensor>> {
        self.initial.as_ref()
    }

    /// Records the network's variables as the initial weights, or restores them.
    fn reset_network(&mut self, network: &Network) -> Result<(), TrainError> {
        let _no_grad = tch::no_grad_guard();
        let variables = network.vars.variables();
        let Some(initial) = &self.initial else {
            self.initial = Some(
                variables
                    .into_iter()
                    .map(|(name, t)| (name, t.detach().copy()))
                    .collect(),
            );
            return Ok(());
        };
        let mut names: Vec<&String> = variables.keys().collect();
        names.sort();
        if names.len() != initial.len() || names.iter().any(|n| !initial.contains_key(*n)) {
            return Err(failure(format!(
                "the initial weights hold {} variable(s) but the network has {}, or other names",
                initial.len(),
                names.len()
            )));
        }
        for (name, variable) in &variables {
            let value = &initial[name];
            if value.size() != variable.size() {
                return Err(failure(format!(
                    "initial weight `{name}` has shape {:?}, the network's {:?}",
                    value.size(),
                    variable.size()
                )));
            }
            variable.shallow_clone().copy_(value);
        }
        Ok(())
    }

    /// Offers the task's samples to the sampler in the stream's first-epoch order.
    fn fill_memory(&mut self, ctx: &TaskContext<'_>) {
        let order = ctx
            .stream
            .epoch_order(&ctx.task.train_indices, ctx.seed, ctx.task.index, 0);
        let order = Vec::<i64>::try_from(&order.to_device(Device::Cpu))
            .expect("an int64 vector converts to Vec<i64>");
        let purpose = format!("gdumb/evict/task{}", ctx.task.index);
        let mut rng = SplitMix64::new(derive(ctx.seed, &purpose));
        for index in order {
            let label = i64::from(ctx.stream.label(SplitKind::Train, index));
            self.sampler.offer(index, label, &mut rng);
        }
    }

    /// The mask of the seen classes, `[1, classes]` bool on `device`.
    fn seen_mask(&self, classes: usize, device: Device) -> Tensor {
        let mut seen = vec![0u8; classes];
        for (class, _) in self.sampler.classes() {
            if let Some(slot) = usize::try_from(*class).ok().and_then(|c| seen.get_mut(c)) {
                *slot = 1;
            }
        }
        Tensor::from_slice(&seen)
            .to_kind(Kind::Bool)
            .view([1, classes as i64])
            .to_device(device)
    }
}

/// Registry factory.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Gdumb::new(DESCRIPTOR.parse(params)?)?))
}

/// `logits` (`[B, C]`) with every class outside `seen` (`[1, C]` bool) moved below every
/// seen class's logit of its row, by the row's range plus one: seen classes win the arg-max,
/// the unseen keep their order among themselves.
pub fn mask_unseen(logits: &Tensor, seen: &Tensor) -> Tensor {
    let span = logits.amax([-1], true) - logits.amin([-1], true) + 1.0;
    logits.where_self(seen, &(logits - span))
}

impl Method for Gdumb {
    fn name(&self) -> &str {
        "gdumb"
    }

    /// Restores the initial weights (recording them at the first task), then offers the
    /// task's samples to the sampler.
    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.reset_network(ctx.network)?;
        self.fill_memory(ctx);
        self.seen = Some(self.seen_mask(ctx.stream.num_classes, ctx.device));
        Ok(())
    }

    /// The memory alone.
    fn training_indices(&mut self, _ctx: &TaskContext<'_>) -> Vec<i64> {
        self.sampler.indices()
    }

    /// Every task trains the reset network with an optimiser of its own.
    fn fresh_optimizer_each_task(&self) -> bool {
        true
    }

    /// The step is plain cross-entropy on memory samples.
    fn capturable(&self) -> bool {
        true
    }

    fn eval_logits(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
        if !self.params.mask_unseen {
            return None;
        }
        let seen = self.seen.as_ref()?;
        Some(mask_unseen(&network.model.forward_t(inputs, false), seen))
    }

    /// The memory and the initial weights (see the crate docs); none before the first task.
    fn state(&self) -> Vec<(String, Tensor)> {
        let Some(initial) = &self.initial else {
            return Vec::new();
        };
        let classes = self.sampler.classes();
        let labels: Vec<i64> = classes.iter().map(|(c, _)| *c).collect();
        let counts: Vec<i64> = classes.iter().map(|(_, s)| s.len() as i64).collect();
        let mut state = vec![
            (
                format!("{MEMORY_PREFIX}classes"),
                Tensor::from_slice(&labels),
            ),
            (
                format!("{MEMORY_PREFIX}class_counts"),
                Tensor::from_slice(&counts),
            ),
            (
                format!("{MEMORY_PREFIX}indices"),
                Tensor::from_slice(&self.sampler.indices()),
            ),
        ];
        state.extend(
            initial
                .iter()
                .map(|(name, t)| (format!("{INITIAL_PREFIX}{name}"), t.shallow_clone())),
        );
        state
    }

    /// Checks the memory against `memory_size`; the initial weights are checked against the
    /// network at the next `before_task`. An empty state is a method before its first task.
    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        let (initial, memory): (Vec<_>, Vec<_>) = state
            .into_iter()
            .partition(|(name, _)| name.starts_with(INITIAL_PREFIX));
        let capacity = self.params.memory_size;
        let sampler = StateReader::read_whole(memory, |reader| {
            let labels = reader.take_indices(&format!("{MEMORY_PREFIX}classes"))?;
            let counts = reader.take_indices(&format!("{MEMORY_PREFIX}class_counts"))?;
            let indices = reader.take_indices(&format!("{MEMORY_PREFIX}indices"))?;
            let malformed = |message: String| MemoryError::State { message };
            if labels.len() != counts.len() {
                return Err(malformed(format!(
                    "{} classes but {} class counts",
                    labels.len(),
                    counts.len()
                )));
            }
            let total: i64 = counts.iter().sum();
            if counts.iter().any(|&c| c < 0) || total != indices.len() as i64 {
                return Err(malformed(format!(
                    "class counts {counts:?} do not add up to the {} stored indices",
                    indices.len()
                )));
            }
            let mut rest = indices.as_slice();
            let classes = labels
                .iter()
                .zip(&counts)
                .map(|(&label, &count)| {
                    let (own, next) = rest.split_at(count as usize);
                    rest = next;
                    (label, own.to_vec())
                })
                .collect();
            GreedySampler::from_classes(capacity, classes).ok_or_else(|| {
                malformed(format!(
                    "{} stored indices exceed `memory_size` {capacity}, or a class repeats",
                    indices.len()
                ))
            })
        })
        .map_err(memory_error)?;
        match (sampler, initial.is_empty()) {
            (None, true) => {
                self.sampler = GreedySampler::new(capacity);
                self.initial = None;
            }
            (Some(sampler), false) => {
                self.sampler = sampler;
                self.initial = Some(
                    initial
                        .into_iter()
                        .map(|(name, t)| (name[INITIAL_PREFIX.len()..].to_owned(), t))
                        .collect(),
                );
            }
            (Some(_), true) => {
                return Err(failure("the state has a memory but no initial weights"));
            }
            (None, false) => return Err(failure("the state has initial weights but no memory")),
        }
        self.seen = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
