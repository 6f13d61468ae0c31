//! eXtended Dark Experience Replay (X-DER; Boschini, Bonicelli, Buzzega, Porrello & Calderara,
//! "Class-Incremental Continual Learning into the eXtended DER-verse", TPAMI 2022).
//!
//! X-DER is DER++ (`retain-method-der`) with three changes that address what DER's frozen
//! logits get wrong in class-incremental learning:
//!
//! 1. **Updating the stored logits of the past.** A sample stored during task `k` carries
//!    logits for the classes of tasks after `k` ("future heads") that meant nothing when
//!    they were recorded. When task `t > k` has been trained, the sample's stored logits for
//!    the classes of tasks `t, t+1, …` are replaced by the current model's (at the end of
//!    task `t` for every such sample, and during task `t` for replayed samples, each with
//!    probability `1 / n` at its `n`-th replay of the task), scaled down where needed so that
//!    they stay below the logit of the sample's true class:
//!
//!    ```text
//!    g = z[y]                       stored logit of the true class
//!    M = max_{c ∈ R} f(x)[c]        the new logits' maximum over the replaced classes R
//!    z[R] ← f(x)[R] · (γ · g / M   if M > g,  else 1)
//!    ```
//!
//!    Samples entering the memory at the end of task `t` get the same treatment of their
//!    *past* heads (`R` = the classes of tasks `< t`, `g` = their own logit of `y`), so no old
//!    class out-scores the true one in what is stored.
//! 2. **A constraint on future heads.** While a task is not the last, the logits of the
//!    classes not seen yet are kept at least `m` below the best logit of the sample's own
//!    task, on the current batch and on the replayed samples.
//! 3. **A class-balanced memory filled at task ends** instead of a reservoir (see below).
//!
//! # Loss
//!
//! For task `t`, with `P` the present task's classes, `S_<t` the classes of earlier tasks,
//! `F` those of later tasks, `T(y)` the classes of `y`'s task, batch `(x, y)`, two independent
//! draws `(x', y', z')` and `(x'', y'')` of `replay_batch_size` samples from the memory:
//!
//! ```text
//! L = CE(f(x)|_P, y)                                   stream: present head only
//!   + α · MSE(f(x'), z')                               DER: every logit, mean
//!   + β · CE(f(x'')|_{S_<t}, y'')                      DER++: past heads only
//!   + η · mean_{i : v_i > 0} v_i,                      future constraint (t not last)
//!     v_i = max_{c ∈ F} f(x_i)[c] + m − max_{c ∈ T(y_i)} f(x_i)[c]
//! ```
//!
//! `f(x)|_A` is the model's output with the classes outside `A` set to −∞ (the reference
//! slices them off; the cross-entropy is the same); CE is the run's training loss
//! (`[training] loss`), which under `task_il` further keeps each sample's own task. The
//! constraint's rows are the current batch and the replayed samples of both draws, a sample
//! drawn twice counted once; its mean is over the rows where `v_i > 0` (zero when there are
//! none). On the first task the memory is empty: only the first and last terms.
//!
//! # Memory
//!
//! The memory (`buffer_size` slots) holds dataset indices, labels, logits and the task at
//! which each sample's logits were last updated, all on the training device. It changes only
//! at the end of a task `t`:
//!
//! 1. (from the second task) **reduce**: each class keeps its first `⌊buffer_size / n⌋`
//!    samples, `n` the number of classes seen so far (classes in ascending order, samples in
//!    memory order);
//! 2. **fill**: the free slots are split evenly over the task's classes (the remainder goes
//!    one each to classes drawn at random); the task's samples are visited in a seeded random
//!    order and taken while their class has room. Their logits are the model's on an
//!    augmented view, past heads damped as in 1. above;
//! 3. **update the past**: the stored logits of every sample of an earlier task are updated
//!    for the classes of tasks `≥ t` from the model's output on an augmented view.
//!
//! Inside a step nothing is read back to the host: the replay draws are device permutations
//! keyed by a device counter ([`retain_memory::sample_slots`], [`retain_memory::DeviceDraws`]),
//! the `1 / n` coin of the online update is a device hash of a third key, and the stored
//! logits are overwritten in place, so the step is capturable. The memory's size is fixed
//! within a task.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `buffer_size` | 500 | memory slots |
//! | `replay_batch_size` | 10 | samples per replay draw (Mammoth's `minibatch_size`) |
//! | `alpha` | 0.3 | weight of the logit-matching term |
//! | `beta` | 0.8 | weight of the replayed cross-entropy on past heads |
//! | `gamma` | 0.85 | the scaling `γ` of updated logits (below the true class's) |
//! | `m` | 0.3 | margin of the future-heads constraint |
//! | `eta` | 0.01 | weight of the future-heads constraint; 0 turns it off |
//!
//! `alpha` and `beta` are Mammoth's best arguments for X-DER on Split CIFAR-100 with a 500
//! buffer (its `utils/best_args.py`: `alpha = 0.3, beta = 0.8, gamma = 0.85, m = 0.7,
//! eta = 0.001`, lr 0.03; at 2000: `alpha = 0.6, beta = 0.9, m = 0.2, eta = 0.01`);
//! `gamma`, `m` and `eta` are the argument defaults of Mammoth's `xder_ce` (`--gamma 0.85`,
//! `--constr_margin 0.3`, `--constr_eta 0.01`; its `models/config/xder_ce.yaml` for
//! Split CIFAR-100 at 500 has `alpha = 0.1, beta = 0.5, constr_margin = 0.1,
//! constr_eta = 0.005`).
//!
//! ```toml
//! [method]
//! name = "xder"
//! buffer_size = 500
//! replay_batch_size = 10
//! alpha = 0.3
//! beta = 0.8
//! gamma = 0.85
//! m = 0.3
//! eta = 0.01
//! ```
//!
//! # Peer conventions
//!
//! Source: Mammoth (`aimagelab/mammoth` at `e75a491`): `models/xder.py`, `models/xder_ce.py`,
//! `models/xder_rpc.py`, buffer in `utils/buffer.py`.
//!
//! * **This is Mammoth's `xder_ce`**, X-DER without the SimCLR consistency term: the same
//!   `end_task` (reduce, fill, update of the future past), the same `update_logits`, and a
//!   step of present-head cross-entropy, `alpha · mse.mean()`, `beta ·` cross-entropy of the
//!   past heads, the de-duplicated online update with the `1 / update_counter` coin (the
//!   counter reset at each task end) and the future constraint
//!   `constr_eta · loss_constr[loss_constr > 0].mean()`. Translation: `alpha`, `beta`, `gamma`,
//!   `buffer_size` carry over; `m = constr_margin`, `eta = constr_eta`,
//!   `replay_batch_size = minibatch_size`.
//! * **Dropped from `models/xder.py`**: the SimCLR consistency loss on future heads (`lambd`,
//!   `simclr_temp`, `simclr_batch_size`, `simclr_num_aug`, with its strong GPU augmentation),
//!   the distance-preserving SPKD loss (`dp_weight`, default 0) and the past constraint
//!   (`past_constraint`, off by default there). `xder.py` and `xder_ce.py` agree on
//!   everything else. `xder_rpc.py` is `xder_ce` with a fixed regular-polytope classifier
//!   (`dsimplex`) on top of the network; not this.
//! * **Batch-norm alignment** (`align_bn`): Mammoth appends current samples to the first
//!   replay draw and freezes running statistics on some passes. Here the step's batches go
//!   through [`retain_train::StepContext::forward_batches`] (one pass for models whose samples
//!   are independent, the MLP and the ViT), and the end-of-task forwards run the model in
//!   evaluation mode (Mammoth: training mode with running statistics frozen). The same for
//!   models without batch norm or dropout.
//! * **Class layout**: Mammoth slices heads as contiguous blocks of `cpt` classes
//!   (`labels // cpt`); here a class's task is read from the stream's tasks, which is the same
//!   for Mammoth's layout and also right for a shuffled class order. A stream whose tasks
//!   share classes (domain-incremental) has no future heads and is refused.
//! * The fill visits the task's samples in a seeded random order (Mammoth: its shuffled
//!   training loader, on the augmented view, whose logits it stores); replayed samples are
//!   augmented afresh with the stream's training augmentation, as Mammoth's
//!   `get_data(…, transform=self.transform)`.

use retain_memory::{DeviceDraws, MemoryError, StateReader, sample_slots};
use retain_stream::seed::{SplitMix64, derive};
use retain_stream::{Batch, SplitKind, hash::hash32_xor_tensor};
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Method, StepContext, TaskContext, TrainError};
use serde::Deserialize;
use tch::{Device, Kind, Reduction, Tensor};

/// The registry entry of `xder`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "xder",
    family: Family::Rehearsal,
    summary: "eXtended DER: DER++ with stored logits of past samples updated on new heads, a class-balanced memory and a future-heads margin",
    paper: "Boschini et al., \"Class-Incremental Continual Learning into the eXtended DER-verse\", TPAMI 2022",
    params: &[
        Param {
            name: "buffer_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("500"),
            doc: "memory slots (class-balanced, filled at task ends)",
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
            default: ParamDefault::Value("0.8"),
            doc: "weight of the replayed cross-entropy on past heads",
        },
        Param {
            name: "gamma",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.85"),
            doc: "scaling of updated logits below the true class's logit (0 < gamma ≤ 1)",
        },
        Param {
            name: "m",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.3"),
            doc: "margin of the future-heads constraint",
        },
        Param {
            name: "eta",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.01"),
            doc: "weight of the future-heads constraint; 0 turns it off",
        },
    ],
    example: "buffer_size = 200\nalpha = 0.3\nbeta = 0.8",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: true,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// The hyper-parameters of [`Xder`] (see the crate docs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub buffer_size: usize,
    pub replay_batch_size: usize,
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    pub m: f64,
    pub eta: f64,
}

impl Default for Params {
    /// The schema's defaults ([`DESCRIPTOR`]).
    fn default() -> Self {
        DESCRIPTOR
            .parse(&toml::Table::new())
            .expect("the schema's defaults parse")
    }
}

/// Mammoth's `update_logits`: `old` (`[n, C]` stored logits) with the classes of `region`
/// (`[C]` bool) replaced by `new`'s (`[n, C]`), each row scaled by `γ · g / M` where its
/// maximum `M` over `region` exceeds `g`, the row's `old` logit of its label (`labels`, `[n]`).
pub fn update_logits(
    old: &Tensor,
    new: &Tensor,
    labels: &Tensor,
    region: &Tensor,
    gamma: f64,
) -> Tensor {
    let truth = old.gather(1, &labels.unsqueeze(1), false).squeeze_dim(1);
    let top = new
        .masked_fill(&region.logical_not().unsqueeze(0), f64::NEG_INFINITY)
        .amax([1].as_slice(), false);
    let coeff = (&truth * gamma) / &top;
    let scale = coeff.where_self(&top.gt_tensor(&truth), &coeff.ones_like());
    (new * scale.unsqueeze(1)).where_self(&region.unsqueeze(0), old)
}

/// The future-heads constraint: `η · mean(v_i over the rows with v_i > 0 and weights_i)`
/// (0 when there are none), `v_i = max_{future} logits_i + m − max_{own} logits_i`, for
/// `logits` `[n, C]`, `future` `[C]` and `own` `[n, C]` bool masks, `weights` `[n]` bool (the
/// rows that count). Computed without a data-dependent shape.
pub fn future_constraint(
    logits: &Tensor,
    future: &Tensor,
    own: &Tensor,
    weights: &Tensor,
    m: f64,
    eta: f64,
) -> Tensor {
    let bad = logits
        .masked_fill(&future.logical_not().unsqueeze(0), f64::NEG_INFINITY)
        .amax([1].as_slice(), false);
    let good = logits
        .masked_fill(&own.logical_not(), f64::NEG_INFINITY)
        .amax([1].as_slice(), false);
    let v = bad + m - good;
    let counted = v.gt(0.0).logical_and(weights);
    let total = v.where_self(&counted, &v.zeros_like()).sum(Kind::Float);
    let count = counted.sum(Kind::Float).clamp_min(1.0);
    total / count * eta
}

/// How many of `free` slots each of `classes` classes gets: `⌊free / classes⌋` each, and one
/// more for `free mod classes` of them drawn by `rng` (Mammoth's `ce`).
pub fn class_quota(free: usize, classes: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut quota = vec![free / classes; classes];
    let mut order: Vec<usize> = (0..classes).collect();
    rng.shuffle(&mut order);
    for &k in &order[..free % classes] {
        quota[k] += 1;
    }
    quota
}

/// The slots kept when the memory is reduced: for each class in ascending order, its first
/// `per_class` slots in memory order (`labels` by slot).
pub fn reduced_slots(labels: &[i64], per_class: usize) -> Vec<i64> {
    let mut classes: Vec<i64> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    classes
        .into_iter()
        .flat_map(|class| {
            labels
                .iter()
                .enumerate()
                .filter(move |&(_, &l)| l == class)
                .take(per_class)
                .map(|(slot, _)| slot as i64)
        })
        .collect()
}

/// The memory's tensors, on the training device. `logits`, `updated` and `counter` have one
/// row more than there are samples: a scratch row that in-step writes of rows that change
/// nothing are sent to, so every write has the same shape.
struct Memory {
    /// `[len]` int64 dataset indices.
    indices: Tensor,
    /// `[len]` int64 labels.
    labels: Tensor,
    /// `[len + 1, C]` float32 stored logits.
    logits: Tensor,
    /// `[len + 1]` int64: the task whose head last updated the sample's logits.
    updated: Tensor,
    /// `[len + 1]` float32: online updates offered to each sample during this task.
    counter: Tensor,
    draws: DeviceDraws,
}

impl Memory {
    fn len(&self) -> usize {
        self.indices.size()[0] as usize
    }

    fn build(
        indices: Tensor,
        labels: Tensor,
        logits: Tensor,
        updated: Tensor,
        draws: DeviceDraws,
    ) -> Self {
        let device = indices.device();
        let width = logits.size()[1];
        let len = indices.size()[0];
        Self {
            logits: Tensor::cat(
                &[logits, Tensor::zeros([1, width], (Kind::Float, device))],
                0,
            ),
            updated: Tensor::cat(&[updated, Tensor::zeros([1], (Kind::Int64, device))], 0),
            counter: Tensor::zeros([len + 1], (Kind::Float, device)),
            indices,
            labels,
            draws,
        }
    }

    /// The rows of the samples (without the scratch row).
    fn stored_logits(&self) -> Tensor {
        self.logits.narrow(0, 0, self.len() as i64)
    }

    fn stored_updated(&self) -> Tensor {
        self.updated.narrow(0, 0, self.len() as i64)
    }
}

/// A checked state, rebuilt into the memory at the next `before_task`.
struct Restored {
    indices: Tensor,
    labels: Tensor,
    logits: Tensor,
    updated: Tensor,
    draws: u64,
}

/// Per-task class masks, on the device.
struct Heads {
    /// `[C]` int64: the task of each class.
    class_task: Tensor,
    /// `[C]` bool: the present task's classes.
    present: Tensor,
    /// `[C]` bool: classes of earlier tasks.
    past: Tensor,
    /// `[C]` bool: classes of later tasks.
    future: Tensor,
    /// `[C]` bool: classes of this and later tasks (what the online update replaces).
    onward: Tensor,
    /// Whether a later task exists.
    has_future: bool,
}

/// X-DER (Mammoth's `xder_ce`; see the crate docs). The memory is created on the first task.
///
/// Its state ([`Method::state`]) is `memory.indices`, `memory.labels` (`[len]` int64),
/// `memory.logits` (`[len, classes]` float32), `memory.updated` (`[len]` int64, the task
/// each sample's logits were last updated at) and `memory.draws` (`[]` int64, replay keys
/// drawn so far). The online update counters are reset at every task end and are not part of
/// it.
pub struct Xder {
    params: Params,
    memory: Option<Memory>,
    restored: Option<Restored>,
    heads: Option<Heads>,
}

impl std::fmt::Debug for Xder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xder")
            .field("params", &self.params)
            .field("len", &self.memory.as_ref().map(Memory::len))
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> TrainError {
    TrainError::MethodParams {
        method: "xder".into(),
        message: message.into(),
    }
}

fn failed(message: impl Into<String>) -> TrainError {
    TrainError::Method {
        method: "xder".into(),
        message: message.into(),
    }
}

fn memory_error(error: MemoryError) -> TrainError {
    failed(error.to_string())
}

/// The prefix of the memory's tensors in the method's state.
const STATE_PREFIX: &str = "memory.";

/// Rows per forward pass at task ends.
const CHUNK: usize = 256;

impl Xder {
    pub fn new(params: Params) -> Result<Self, TrainError> {
        retain_train::method::check_replay_sizes(
            "xder",
            params.buffer_size,
            params.replay_batch_size,
            36,
            "at least 36 bytes per slot: its dataset index, label, task, counter and one logit",
        )?;
        for (name, value) in [
            ("alpha", params.alpha),
            ("beta", params.beta),
            ("m", params.m),
            ("eta", params.eta),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(invalid(format!(
                    "`{name}` must be a finite number ≥ 0 (got {value})"
                )));
            }
        }
        if !(params.gamma.is_finite() && params.gamma > 0.0 && params.gamma <= 1.0) {
            return Err(invalid(format!(
                "`gamma` must be in (0, 1] (got {})",
                params.gamma
            )));
        }
        Ok(Self {
            params,
            memory: None,
            restored: None,
            heads: None,
        })
    }

    /// Samples in the memory (0 before the first task ends).
    pub fn len(&self) -> usize {
        self.memory.as_ref().map_or(0, Memory::len)
    }

    /// Whether the memory is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored dataset indices, labels, logits (`[len, C]`) and update tasks, copied.
    pub fn contents(&self) -> Option<(Tensor, Tensor, Tensor, Tensor)> {
        self.memory.as_ref().map(|m| {
            (
                m.indices.copy(),
                m.labels.copy(),
                m.stored_logits().copy(),
                m.stored_updated().copy(),
            )
        })
    }

    fn heads(ctx: &TaskContext<'_>) -> Result<Heads, TrainError> {
        let stream = ctx.stream;
        let mut class_task = vec![-1i64; stream.num_classes];
        for task in &stream.tasks {
            for &class in &task.classes {
                let slot = &mut class_task[class as usize];
                if *slot >= 0 {
                    return Err(failed(format!(
                        "class {class} belongs to tasks {} and {}: X-DER needs a class-incremental \
                         stream (every class in one task)",
                        *slot, task.index
                    )));
                }
                *slot = task.index as i64;
            }
        }
        let t = ctx.task.index as i64;
        let class_task = Tensor::from_slice(&class_task).to_device(ctx.device);
        Ok(Heads {
            present: class_task.eq(t),
            past: class_task.lt(t),
            future: class_task.gt(t),
            onward: class_task.ge(t),
            class_task,
            has_future: ctx.task.index + 1 < stream.tasks.len(),
        })
    }

    /// The model's outputs (evaluation mode, no gradient) on an augmented view of the
    /// training samples `indices` (host), in chunks; the augmentation drawn for `purpose`.
    fn outputs(ctx: &TaskContext<'_>, indices: &[i64], purpose: &str) -> Tensor {
        let _no_grad = tch::no_grad_guard();
        let key = (derive(ctx.seed, purpose) & 0xffff_ffff) as i64;
        let chunks: Vec<Tensor> = indices
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, chunk)| {
                let ids = Tensor::from_slice(chunk).to_device(ctx.device);
                let batch = if ctx.stream.augments() {
                    let key = Tensor::from(key ^ (i as i64)).to_device(ctx.device);
                    ctx.stream.training_batch_keyed(&ids, &key)
                } else {
                    ctx.stream.batch(SplitKind::Train, &ids)
                };
                ctx.model()
                    .forward_t(&batch.inputs, false)
                    .to_kind(Kind::Float)
            })
            .collect();
        Tensor::cat(&chunks, 0)
    }

    /// The end of task `t`: reduce, fill, update the past (see the crate docs).
    fn update_memory(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let t = ctx.task.index;
        let heads = Self::heads(ctx)?;
        let device = ctx.device;
        let capacity = self.params.buffer_size;
        let gamma = self.params.gamma;
        let memory = self
            .memory
            .take()
            .ok_or_else(|| failed("`after_task` ran before `before_task` created the memory"))?;
        let width = ctx.stream.num_classes as i64;
        // 1. Reduce.
        let (mut indices, mut labels, mut logits, mut updated) = (
            memory.indices.shallow_clone(),
            memory.labels.shallow_clone(),
            memory.stored_logits().copy(),
            memory.stored_updated().copy(),
        );
        if memory.len() > 0 {
            let seen: usize = ctx.stream.tasks[..=t].iter().map(|k| k.classes.len()).sum();
            let host_labels =
                Vec::<i64>::try_from(&labels.to_device(Device::Cpu)).expect("int64 labels convert");
            let kept = reduced_slots(&host_labels, capacity / seen.max(1));
            let kept = Tensor::from_slice(&kept).to_device(device);
            indices = indices.index_select(0, &kept);
            labels = labels.index_select(0, &kept);
            logits = logits.index_select(0, &kept);
            updated = updated.index_select(0, &kept);
        }
        // 2. Fill the free slots from the task, class-balanced.
        let free = capacity.saturating_sub(indices.size()[0] as usize);
        let classes = &ctx.task.classes;
        if free > 0 && !classes.is_empty() {
            let mut rng = SplitMix64::new(derive(ctx.seed, &format!("xder/quota/task{t}")));
            let mut quota = class_quota(free, classes.len(), &mut rng);
            let mut order = ctx.task.train_indices.clone();
            SplitMix64::new(derive(ctx.seed, &format!("xder/fill/task{t}"))).shuffle(&mut order);
            let mut chosen = Vec::new();
            let mut chosen_labels = Vec::new();
            for index in order {
                if quota.iter().all(|&q| q == 0) {
                    break;
                }
                let label = i64::from(ctx.stream.label(SplitKind::Train, index));
                if let Some(k) = classes.iter().position(|&c| c == label)
                    && quota[k] > 0
                {
                    quota[k] -= 1;
                    chosen.push(index);
                    chosen_labels.push(label);
                }
            }
            if !chosen.is_empty() {
                let new_labels = Tensor::from_slice(&chosen_labels).to_device(device);
                let mut new_logits =
                    Self::outputs(ctx, &chosen, &format!("xder/fill-view/task{t}"));
                if t > 0 {
                    new_logits =
                        update_logits(&new_logits, &new_logits, &new_labels, &heads.past, gamma);
                }
                let n = chosen.len() as i64;
                indices = Tensor::cat(&[indices, Tensor::from_slice(&chosen).to_device(device)], 0);
                labels = Tensor::cat(&[labels, new_labels], 0);
                logits = Tensor::cat(&[logits, new_logits], 0);
                updated = Tensor::cat(
                    &[updated, Tensor::full([n], t as i64, (Kind::Int64, device))],
                    0,
                );
            }
        }
        // 3. Update the future past: samples of earlier tasks, the heads of tasks ≥ t.
        let earlier = heads.class_task.index_select(0, &labels).lt(t as i64);
        let host_earlier =
            Vec::<bool>::try_from(&earlier.to_device(Device::Cpu)).expect("bool mask converts");
        let rows: Vec<i64> = (0..host_earlier.len() as i64)
            .filter(|&i| host_earlier[i as usize])
            .collect();
        if !rows.is_empty() {
            let rows_t = Tensor::from_slice(&rows).to_device(device);
            let host_indices =
                Vec::<i64>::try_from(&indices.index_select(0, &rows_t).to_device(Device::Cpu))
                    .expect("int64 indices convert");
            let outputs = Self::outputs(ctx, &host_indices, &format!("xder/past-view/task{t}"));
            let refreshed = update_logits(
                &logits.index_select(0, &rows_t),
                &outputs,
                &labels.index_select(0, &rows_t),
                &heads.onward,
                gamma,
            );
            let _ = logits.index_copy_(0, &rows_t, &refreshed);
            let _ = updated.index_fill_(0, &rows_t, t as i64);
        }
        debug_assert_eq!(logits.size()[1], width);
        self.memory = Some(Memory::build(
            indices,
            labels,
            logits,
            updated,
            memory.draws,
        ));
        Ok(())
    }
}

/// Registry factory.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Xder::new(DESCRIPTOR.parse(params)?)?))
}

impl Method for Xder {
    fn name(&self) -> &str {
        "xder"
    }

    /// Draws, coins and logit updates run on the device from device counters; the memory's
    /// size changes only at task ends.
    fn capturable(&self) -> bool {
        true
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.heads = Some(Self::heads(ctx)?);
        let width = ctx.stream.num_classes as i64;
        let seed = derive(ctx.seed, "xder/draws");
        if self.memory.is_none() {
            let device = ctx.device;
            self.memory = Some(match self.restored.take() {
                None => Memory::build(
                    Tensor::zeros([0], (Kind::Int64, device)),
                    Tensor::zeros([0], (Kind::Int64, device)),
                    Tensor::zeros([0, width], (Kind::Float, device)),
                    Tensor::zeros([0], (Kind::Int64, device)),
                    DeviceDraws::new(seed, device),
                ),
                Some(state) => {
                    if state.logits.size()[1] != width {
                        return Err(memory_error(MemoryError::State {
                            message: format!(
                                "`memory.logits` is {} wide, the stream has {width} classes",
                                state.logits.size()[1]
                            ),
                        }));
                    }
                    let (len, train) = (
                        state.indices.size()[0],
                        ctx.stream.index_len(SplitKind::Train) as i64,
                    );
                    let bad = Vec::<i64>::try_from(&state.indices)
                        .expect("int64 indices convert")
                        .into_iter()
                        .chain(Vec::<i64>::try_from(&state.labels).expect("int64 labels convert"))
                        .enumerate()
                        .find(|&(i, v)| v < 0 || v >= if (i as i64) < len { train } else { width });
                    if let Some((i, v)) = bad {
                        let what = if (i as i64) < len { "index" } else { "label" };
                        return Err(memory_error(MemoryError::State {
                            message: format!("stored {what} {v} is out of range"),
                        }));
                    }
                    Memory::build(
                        state.indices.to_device(device),
                        state.labels.to_device(device),
                        state.logits.to_device(device),
                        state.updated.to_device(device),
                        DeviceDraws::restore(seed, device, state.draws),
                    )
                }
            });
        }
        if let Some(memory) = &mut self.memory {
            let _ = memory.counter.zero_();
        }
        Ok(())
    }

    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        let p = &self.params;
        let heads = self
            .heads
            .as_ref()
            .ok_or_else(|| failed("a step ran before `before_task`"))?;
        let memory = self
            .memory
            .as_mut()
            .ok_or_else(|| failed("a step ran before `before_task` created the memory"))?;
        let len = memory.len() as i64;
        let t = ctx.task.index as i64;
        let replay = if len > 0 {
            let take = (p.replay_batch_size as i64).min(len);
            let first = sample_slots(len, None, take, &memory.draws.next_key());
            let second = sample_slots(len, None, take, &memory.draws.next_key());
            let coin = memory.draws.next_key();
            let one = ctx.replay_batch(&memory.indices.index_select(0, &first), 0);
            let two = ctx.replay_batch(&memory.indices.index_select(0, &second), 1);
            Some((first, second, coin, one, two))
        } else {
            None
        };
        let mut inputs = vec![&batch.inputs];
        if let Some((_, _, _, one, two)) = &replay {
            inputs.extend([&one.inputs, &two.inputs]);
        }
        let outputs = ctx.forward_batches(&inputs);
        let logits = &outputs[0];
        let off = |mask: &Tensor| mask.logical_not().unsqueeze(0);
        let mut terms = vec![ctx.training_loss(
            &logits.masked_fill(&off(&heads.present), f64::NEG_INFINITY),
            &batch.labels,
        )];
        let rows = batch.labels.size()[0];
        let mut constraint_rows = logits.shallow_clone();
        let mut own = heads.present.unsqueeze(0).expand([rows, -1], false);
        let mut weights = Tensor::ones([rows], (Kind::Bool, logits.device()));
        if let Some((first, second, coin, one, two)) = &replay {
            let (out1, out2) = (&outputs[1], &outputs[2]);
            let stored = memory.logits.index_select(0, first);
            terms.push(out1.mse_loss(&stored, Reduction::Mean) * p.alpha);
            terms.push(
                ctx.training_loss(
                    &out2.masked_fill(&off(&heads.past), f64::NEG_INFINITY),
                    &two.labels,
                ) * p.beta,
            );
            // Both draws, a slot drawn twice counted once (its first occurrence).
            let slots = Tensor::cat(&[first, second], 0);
            let n = slots.size()[0];
            let unique = slots
                .unsqueeze(1)
                .eq_tensor(&slots.unsqueeze(0))
                .tril(-1)
                .any_dim(1, false)
                .logical_not();
            let labels = Tensor::cat(&[&one.labels, &two.labels], 0);
            let out = Tensor::cat(&[out1, out2], 0);
            let sample_task = heads.class_task.index_select(0, &labels);
            {
                let _no_grad = tch::no_grad_guard();
                let scratch = Tensor::full([n], len, (Kind::Int64, slots.device()));
                let offered = unique.logical_and(&sample_task.lt(t));
                let _ = memory.counter.index_add_(
                    0,
                    &slots.where_self(&offered, &scratch),
                    &Tensor::ones([n], (Kind::Float, slots.device())),
                );
                let counts = memory.counter.index_select(0, &slots);
                let draw =
                    hash32_xor_tensor(&Tensor::arange(n, (Kind::Int64, slots.device())), coin)
                        .to_kind(Kind::Double)
                        / 4_294_967_296.0;
                let chosen = offered.logical_and(&(draw * counts).lt(1.0));
                let old = memory.logits.index_select(0, &slots);
                let new = update_logits(
                    &old,
                    &out.detach().to_kind(Kind::Float),
                    &labels,
                    &heads.onward,
                    p.gamma,
                );
                let target = slots.where_self(&chosen, &scratch);
                let _ = memory.logits.index_copy_(0, &target, &new);
                let _ = memory.updated.index_copy_(
                    0,
                    &target,
                    &Tensor::full([n], t, (Kind::Int64, slots.device())),
                );
            }
            constraint_rows = Tensor::cat(&[logits, &out], 0);
            let own_replay = sample_task
                .unsqueeze(1)
                .eq_tensor(&heads.class_task.unsqueeze(0));
            own = Tensor::cat(&[own, own_replay], 0);
            weights = Tensor::cat(&[weights, unique], 0);
        }
        if heads.has_future && p.eta > 0.0 {
            terms.push(future_constraint(
                &constraint_rows,
                &heads.future,
                &own,
                &weights,
                p.m,
                p.eta,
            ));
        }
        let mut terms = terms.into_iter();
        let first = terms.next().expect("the stream term");
        Ok(terms.fold(first, |loss, term| loss + term))
    }

    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.update_memory(ctx)
    }

    /// The memory's tensors (see [`Xder`]); none before the first task.
    fn state(&self) -> Vec<(String, Tensor)> {
        let named = |part: &str, t: Tensor| (format!("{STATE_PREFIX}{part}"), t);
        match (&self.memory, &self.restored) {
            (Some(m), _) => vec![
                named("indices", m.indices.copy()),
                named("labels", m.labels.copy()),
                named("logits", m.stored_logits().copy()),
                named("updated", m.stored_updated().copy()),
                named("draws", Tensor::from(m.draws.count() as i64)),
            ],
            (None, Some(r)) => vec![
                named("indices", r.indices.copy()),
                named("labels", r.labels.copy()),
                named("logits", r.logits.copy()),
                named("updated", r.updated.copy()),
                named("draws", Tensor::from(r.draws as i64)),
            ],
            (None, None) => Vec::new(),
        }
    }

    /// Checks names, kinds and shapes against `buffer_size` (the logits' width and the
    /// stored indices and labels against the stream at the next `before_task`, which rebuilds
    /// the memory from it). An empty state is a method before its first task.
    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        self.memory = None;
        self.restored = None;
        let capacity = self.params.buffer_size as i64;
        self.restored = StateReader::read_whole(state, |reader| {
            let name = |part: &str| format!("{STATE_PREFIX}{part}");
            let cpu = |t: Tensor| t.to_device(Device::Cpu);
            let indices = cpu(reader.take(&name("indices"), Kind::Int64, 1)?);
            let labels = cpu(reader.take(&name("labels"), Kind::Int64, 1)?);
            let logits = cpu(reader.take(&name("logits"), Kind::Float, 2)?);
            let updated = cpu(reader.take(&name("updated"), Kind::Int64, 1)?);
            let draws = reader.take_count(&name("draws"))?;
            let len = indices.size()[0];
            let malformed = |message: String| MemoryError::State { message };
            if len > capacity {
                return Err(malformed(format!(
                    "`memory.indices` holds {len} samples for {capacity} slots"
                )));
            }
            for (part, rows) in [
                ("labels", labels.size()[0]),
                ("logits", logits.size()[0]),
                ("updated", updated.size()[0]),
            ] {
                if rows != len {
                    return Err(malformed(format!(
                        "`memory.{part}` has {rows} rows for {len} stored samples"
                    )));
                }
            }
            Ok(Restored {
                indices,
                labels,
                logits,
                updated,
                draws,
            })
        })
        .map_err(memory_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
