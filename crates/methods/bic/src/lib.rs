//! BiC, bias correction (Wu, Chen, Wang, Ye, Liu, Guo & Fu, "Large Scale Incremental
//! Learning", CVPR 2019).
//!
//! A class-incremental rehearsal method. A memory of `memory_size` exemplars, balanced over
//! the classes seen so far, is split per class into a **training part**, which joins the
//! current task's samples, and a **held-out part** (`val_fraction` of each class's share),
//! which the network never trains on. After a task the network's newest classes out-score
//! the old ones (they had far more samples); BiC fits, on the held-out part alone, a
//! two-parameter affine correction of the newest classes' logits that undoes this bias.
//!
//! # Stage 1: training the network
//!
//! Task `t` brings `n_new` classes after `n_old` earlier ones. Its training samples are the
//! task's own, less the ones held out for its classes, plus the memory's training part. Let
//! `o = c(f_θ(x))` be the network's logits through the bias correction `c` of the earlier
//! tasks (below; the identity on task `t`'s own classes), `ô = c(f_θ°(x))` those of the
//! frozen model after task `t − 1` through the same correction, and `O` the old classes:
//!
//! ```text
//! λ   = n_old / (n_old + n_new)
//! L_c = CE(o, y)                                               (the run's training loss)
//! L_d = −(1/B) Σ_b Σ_{k∈O} softmax(ô_b,O / T)_k · log softmax(o_b,O / T)_k
//! L   = λ · L_d + (1 − λ) · L_c
//! ```
//!
//! On the first task `λ = 0` and `L = L_c`. The distillation is the cross-entropy of the
//! softened old-class distributions, without a `T²` factor, as the paper's Eq. 1–3 and the
//! reference code.
//!
//! # Stage 2: bias correction
//!
//! After each task from the second on, with the network frozen (evaluation mode), a pair
//! `(α_t, β_t)` (initialised `(1, 0)`) corrects task `t`'s classes:
//!
//! ```text
//! q_k = α_t · o_k + β_t      k a class of task t
//! q_k = o_k                  otherwise (earlier tasks' pairs already applied in o)
//! L_b = CE(q_S, y) + beta_penalty · β_t² / 2
//! ```
//!
//! over the held-out exemplars of every class seen (`S`, the classes of tasks `0..=t`), by
//! SGD (momentum 0.9) for `bias_epochs` epochs of `bias_batch_size` samples at `bias_lr`.
//! Earlier tasks' pairs stay fixed: every task's classes keep their own pair (the reference's
//! list of bias layers), and every output reads out through all of them ([`Method::eval_logits`]:
//! class-IL, task-IL and every other read-out see the corrected logits). The first task's
//! pair stays `(1, 0)`.
//!
//! # The memory
//!
//! With `s` classes seen after task `t`, each class keeps `m = ⌊memory_size / s⌋`
//! exemplars: `v = ⌈val_fraction · m⌉` held out and `m − v` for training. A new class's
//! held-out exemplars are drawn (seeded, `bic/held_out`) before its task trains and removed
//! from that task's training samples; its training exemplars are drawn after the task
//! (`bic/exemplars`) from the rest. Old classes shrink to the new shares by dropping their
//! last exemplars. The memory holds dataset indices; the network sees memory samples through
//! the stream's training augmentation like any other training sample, and stage 2 sees the
//! held-out samples un-augmented.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `memory_size` | `2000` | exemplars in memory over all classes, held-out part included (the paper's CIFAR-100 setting) |
//! | `val_fraction` | `0.1` | fraction of each class's exemplars held out for stage 2 (the paper's 9:1 split), in `(0, 1)` |
//! | `temperature` | `2.0` | distillation temperature `T` (> 0) |
//! | `bias_epochs` | `200` | epochs of stage 2 over the held-out exemplars; `0` turns bias correction off |
//! | `bias_lr` | `0.1` | SGD learning rate of stage 2 (> 0) |
//! | `bias_batch_size` | `128` | held-out samples per stage-2 step |
//! | `beta_penalty` | `0.1` | weight of the `β²/2` penalty of stage 2 (≥ 0) |
//!
//! # Example
//!
//! ```toml
//! [method]
//! name = "bic"
//! memory_size = 200
//! val_fraction = 0.1
//! temperature = 2.0
//! bias_epochs = 200
//! bias_lr = 0.1
//! ```
//!
//! # `[training] loss`
//!
//! `L_c` is the run's training loss: with `loss = "task_il"` each sample's cross-entropy
//! covers its own task's (corrected) logits only. The distillation and stage 2 are unchanged:
//! stage 2 always uses the cross-entropy over every class seen, since what it corrects is the
//! scale of one task's logits against the others'. With `α > 0` (what stage 2 learns in
//! practice) the correction keeps the order of a task's logits, so the task-IL read-out is the
//! uncorrected network's; a negative `α` would reverse it.
//!
//! # Peer conventions
//!
//! Sources: FACIL (`mmasana/FACIL`, `src/approach/bic.py`), which this crate follows;
//! PyCIL (`G-U-N/PyCIL`, `models/bic.py`); the authors' code
//! (`wuyuebupt/LargeScaleIncrementalLearning`, TensorFlow).
//!
//! * **FACIL `bic`**: the same stage 1 (`λ = n_old / n_seen` with `--lamb -1`, the
//!   distillation as a cross-entropy of the old classes' softened distributions at `--T 2`,
//!   no `T²`; both the student's and the teacher's outputs pass through every bias layer), the
//!   same held-out split (`--val-exemplar-percentage 0.1`, `⌈0.1 · ⌊total / classes⌋⌉` per
//!   class, the new classes' held-out samples taken before stage 1 and removed from its
//!   training data) and the same stage 2 (one `(α, β)` per task, earlier ones fixed,
//!   `--num-bias-epochs 200`, SGD momentum 0.9 at the main learning rate, default 0.1, plus
//!   `0.1 · β²/2` from the authors' code, over the classes seen). Translation:
//!   `--num-exemplars` → `memory_size`, `--val-exemplar-percentage` → `val_fraction`,
//!   `--T` → `temperature`, `--num-bias-epochs` → `bias_epochs`, `--lr` → `bias_lr`,
//!   `--batch-size` → `bias_batch_size`. Differences: FACIL adds `1e-5` smoothing to the
//!   student's probabilities in the distillation (none here); its head grows with the tasks,
//!   so `L_c` covers the classes seen, where here it is the run's training loss over the
//!   fixed head's every output; FACIL's exemplars are chosen by its `--exemplar-selection`
//!   (herding in the paper); here they are a seeded random draw; FACIL's stage 2 reads
//!   augmented held-out samples in evaluation mode, here un-augmented ones; a fixed `λ` (its
//!   `--lamb ≥ 0`, which also drops the `(1 − λ)` factor) has no counterpart.
//! * **PyCIL `bic`**: the same `λ`, `T = 2` and distillation (no `T²`), old outputs through
//!   the bias layers; its held-out part is `int(0.1 · memory_size / n_old)` per class, taken
//!   from the memory and from the new task's data; stage 2 reuses the stage-1 schedule
//!   (`epochs = 250`, SGD at `0.1` with its milestones and weight decay) and applies
//!   `F.cross_entropy` to `softmax(logits)` (a softmax too many), without the `β` penalty.
//!   Translation: `memory_size`, `temperature = T`; `bias_epochs = epochs`, `bias_lr = lrate`,
//!   `beta_penalty = 0` come closest, the double softmax has no counterpart.

use std::collections::BTreeMap;

use retain_stream::Batch;
use retain_stream::seed::{SplitMix64, derive};
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind, check_param_memory,
};
use retain_train::{Method, Network, StepContext, TaskContext, TrainError};
use serde::Deserialize;
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor, nn};

/// The registry entry of `bic`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "bic",
    family: Family::Rehearsal,
    summary: "BiC: class-balanced rehearsal with distillation, then a per-task (α, β) correction of the newest classes' logits fitted on held-out exemplars",
    paper: "Wu et al., \"Large Scale Incremental Learning\", CVPR 2019",
    params: &[
        Param {
            name: "memory_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("2000"),
            doc: "exemplars in memory over all classes, held-out part included",
        },
        Param {
            name: "val_fraction",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.1"),
            doc: "fraction of each class's exemplars held out for the bias correction, in (0, 1)",
        },
        Param {
            name: "temperature",
            kind: ParamKind::Float,
            default: ParamDefault::Value("2.0"),
            doc: "distillation temperature T (> 0)",
        },
        Param {
            name: "bias_epochs",
            kind: ParamKind::Count,
            default: ParamDefault::Value("200"),
            doc: "epochs of the bias correction over the held-out exemplars; 0 turns it off",
        },
        Param {
            name: "bias_lr",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.1"),
            doc: "SGD (momentum 0.9) learning rate of the bias correction (> 0)",
        },
        Param {
            name: "bias_batch_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("128"),
            doc: "held-out samples per bias-correction step",
        },
        Param {
            name: "beta_penalty",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.1"),
            doc: "weight of the β²/2 penalty of the bias correction (≥ 0)",
        },
    ],
    example: "memory_size = 200\nbias_epochs = 200",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: true,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// BiC's hyper-parameters (see the crate docs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub memory_size: usize,
    pub val_fraction: f64,
    pub temperature: f64,
    pub bias_epochs: usize,
    pub bias_lr: f64,
    pub bias_batch_size: usize,
    pub beta_penalty: f64,
}

impl Default for Params {
    /// The schema's defaults ([`DESCRIPTOR`]).
    fn default() -> Self {
        DESCRIPTOR
            .parse(&toml::Table::new())
            .expect("the schema's defaults parse")
    }
}

/// Registry factory.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Bic::new(DESCRIPTOR.parse(params)?)?))
}

/// One class's exemplars: dataset indices into the training split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassExemplars {
    /// Trained on with the next tasks' samples.
    pub train: Vec<i64>,
    /// Never trained on by the network; the bias correction's data.
    pub held_out: Vec<i64>,
}

/// One task's bias-correction pair, applied to its classes.
#[derive(Debug, Clone, PartialEq)]
pub struct BiasPair {
    pub classes: Vec<i64>,
    pub alpha: f64,
    pub beta: f64,
}

/// The teacher of stage 1: the model after the previous task, the old classes (on the
/// device) and `λ`.
struct Teacher {
    network: Network,
    old_classes: Tensor,
    lambda: f64,
}

/// BiC (see the crate docs).
///
/// Its state ([`Method::state`]): `memory.train` and `memory.held_out` (`[n, 2]` int64 rows
/// `(class, dataset index)`), `bias.pairs` (`[tasks, 2]` float64 rows `(α, β)`, one per task
/// trained), `bias.classes` (`[n, 2]` int64 rows `(task, class)`) and, from the second task
/// on, `teacher.<name>` for every variable of the model after the previous task. A fresh
/// `Bic` given that state continues exactly as the original would have.
pub struct Bic {
    params: Params,
    /// Exemplars by class.
    memory: BTreeMap<i64, ClassExemplars>,
    /// One pair per task trained (or being trained).
    pairs: Vec<BiasPair>,
    /// `(scale, shift)` over every output, on the device: the pairs spread over their
    /// classes, built from `pairs` where missing.
    correction: Option<(Tensor, Tensor)>,
    teacher: Option<Teacher>,
    /// A loaded teacher's variables, put into a frozen copy of the network at the next step
    /// (a task boundary rebuilds the teacher instead).
    restored_teacher: Option<Vec<(String, Tensor)>>,
}

impl std::fmt::Debug for Bic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bic")
            .field("params", &self.params)
            .field("memory", &self.memory)
            .field("pairs", &self.pairs)
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> TrainError {
    TrainError::MethodParams {
        method: "bic".into(),
        message: message.into(),
    }
}

fn failed(message: impl Into<String>) -> TrainError {
    TrainError::Method {
        method: "bic".into(),
        message: message.into(),
    }
}

fn state_error(message: impl std::fmt::Display) -> TrainError {
    failed(format!("malformed state: {message}"))
}

/// `λ = n_old / (n_old + n_new)`.
pub fn distillation_weight(old_classes: usize, new_classes: usize) -> f64 {
    if old_classes + new_classes == 0 {
        0.0
    } else {
        old_classes as f64 / (old_classes + new_classes) as f64
    }
}

/// `−(1/B) Σ_b Σ_k softmax(old_b / T)_k · log softmax(new_b / T)_k` over `[B, K]` logits.
pub fn distillation_loss(new: &Tensor, old: &Tensor, temperature: f64) -> Tensor {
    let p = (old / temperature).softmax(-1, Kind::Float);
    let log_q = (new / temperature).log_softmax(-1, Kind::Float);
    -(p * log_q)
        .sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float)
}

/// Stage 1's loss `λ · L_d + (1 − λ) · L_c` (`L_d` absent when `distilled` is `None`).
pub fn stage1_loss(ce: Tensor, distilled: Option<Tensor>, lambda: f64) -> Tensor {
    match distilled {
        None => ce,
        Some(d) => d * lambda + ce * (1.0 - lambda),
    }
}

/// `logits · scale + shift` with `(scale, shift)` built from `pairs` over `classes` outputs:
/// `α` and `β` of each pair on its classes, `(1, 0)` elsewhere.
pub fn correction_vectors(pairs: &[BiasPair], classes: i64, device: Device) -> (Tensor, Tensor) {
    let mut scale = vec![1f32; classes as usize];
    let mut shift = vec![0f32; classes as usize];
    for pair in pairs {
        for &c in &pair.classes {
            if let Some(slot) = usize::try_from(c).ok().filter(|&c| c < scale.len()) {
                scale[slot] = pair.alpha as f32;
                shift[slot] = pair.beta as f32;
            }
        }
    }
    (
        Tensor::from_slice(&scale).to_device(device),
        Tensor::from_slice(&shift).to_device(device),
    )
}

/// The bias layer: `α · logits + β` on the columns where `mask` (`[C]` bool or 0/1) is set,
/// `logits` elsewhere; `alpha`, `beta` are `[1]` or `[]` tensors (gradients flow into them).
pub fn bias_layer(logits: &Tensor, mask: &Tensor, alpha: &Tensor, beta: &Tensor) -> Tensor {
    let corrected = logits * alpha + beta;
    corrected.where_self(&mask.to_kind(Kind::Bool), logits)
}

/// What stage 2 fitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BiasFit {
    pub alpha: f64,
    pub beta: f64,
}

/// Stage 2 on precomputed logits: fits `(α, β)` on the columns `mask` of `logits`
/// (`[N, S]`, no gradient) for the targets `labels` (`[N]` int64 positions among the `S`
/// columns), by SGD with momentum 0.9 for `epochs` epochs of `batch_size` samples (order
/// shuffled each epoch by a generator seeded with `seed`), with the penalty
/// `beta_penalty · β²/2`.
#[allow(clippy::too_many_arguments)]
pub fn fit_bias(
    logits: &Tensor,
    labels: &Tensor,
    mask: &Tensor,
    epochs: usize,
    lr: f64,
    batch_size: usize,
    beta_penalty: f64,
    seed: u64,
) -> Result<BiasFit, TrainError> {
    let device = logits.device();
    let vars = nn::VarStore::new(device);
    let alpha = vars.root().var("alpha", &[1], nn::Init::Const(1.0));
    let beta = vars.root().var("beta", &[1], nn::Init::Const(0.0));
    let mut optimizer = nn::Sgd {
        momentum: 0.9,
        ..Default::default()
    }
    .build(&vars, lr)?;
    let n = logits.size()[0];
    let mut order: Vec<i64> = (0..n).collect();
    let mut rng = SplitMix64::new(seed);
    for _ in 0..epochs {
        rng.shuffle(&mut order);
        for chunk in order.chunks(batch_size.max(1)) {
            let at = Tensor::from_slice(chunk).to_device(device);
            let q = bias_layer(&logits.index_select(0, &at), mask, &alpha, &beta);
            let loss = q.cross_entropy_for_logits(&labels.index_select(0, &at))
                + beta.square().sum(Kind::Float) * (beta_penalty / 2.0);
            optimizer.backward_step(&loss);
        }
    }
    Ok(BiasFit {
        alpha: alpha.double_value(&[0]),
        beta: beta.double_value(&[0]),
    })
}

/// A frozen copy of `network` holding the teacher's `variables` (names and shapes checked).
fn restore_teacher(
    network: &Network,
    variables: &[(String, Tensor)],
) -> Result<Network, TrainError> {
    network.frozen_copy_holding(variables, |differences| {
        state_error(format!(
            "the teacher does not match the network: {differences}"
        ))
    })
}

const MEMORY_TRAIN: &str = "memory.train";
const MEMORY_HELD_OUT: &str = "memory.held_out";
const BIAS_PAIRS: &str = "bias.pairs";
const BIAS_CLASSES: &str = "bias.classes";
const TEACHER: &str = "teacher.";

/// `[n, 2]` int64 rows from pairs.
fn rows(pairs: impl Iterator<Item = (i64, i64)>) -> Tensor {
    let flat: Vec<i64> = pairs.flat_map(|(a, b)| [a, b]).collect();
    Tensor::from_slice(&flat).view([-1, 2])
}

/// The rows of an `[n, 2]` int64 tensor.
fn read_rows(name: &str, tensor: &Tensor) -> Result<Vec<(i64, i64)>, TrainError> {
    if tensor.kind() != Kind::Int64 || tensor.size().len() != 2 || tensor.size()[1] != 2 {
        return Err(state_error(format!(
            "`{name}` must be Int64 of shape [n, 2], found {:?} of shape {:?}",
            tensor.kind(),
            tensor.size()
        )));
    }
    let flat = Vec::<i64>::try_from(tensor.to_device(Device::Cpu).flatten(0, -1))
        .map_err(|e| state_error(e.to_string()))?;
    Ok(flat.chunks(2).map(|r| (r[0], r[1])).collect())
}

impl Bic {
    pub fn new(params: Params) -> Result<Self, TrainError> {
        if params.memory_size == 0 {
            return Err(invalid("`memory_size` must be at least 1"));
        }
        check_param_memory(
            "bic",
            "memory_size",
            params.memory_size,
            16,
            "at least 16 bytes per exemplar: its class and dataset index",
        )?;
        if !(params.val_fraction > 0.0 && params.val_fraction < 1.0) {
            return Err(invalid(format!(
                "`val_fraction` must be in (0, 1), got {}",
                params.val_fraction
            )));
        }
        if !(params.temperature.is_finite() && params.temperature > 0.0) {
            return Err(invalid(format!(
                "`temperature` must be finite and > 0, got {}",
                params.temperature
            )));
        }
        if !(params.bias_lr.is_finite() && params.bias_lr > 0.0) {
            return Err(invalid(format!(
                "`bias_lr` must be finite and > 0, got {}",
                params.bias_lr
            )));
        }
        if params.bias_batch_size == 0 {
            return Err(invalid("`bias_batch_size` must be at least 1"));
        }
        if !(params.beta_penalty.is_finite() && params.beta_penalty >= 0.0) {
            return Err(invalid(format!(
                "`beta_penalty` must be finite and ≥ 0, got {}",
                params.beta_penalty
            )));
        }
        Ok(Self {
            params,
            memory: BTreeMap::new(),
            pairs: Vec::new(),
            correction: None,
            teacher: None,
            restored_teacher: None,
        })
    }

    /// The exemplars by class.
    pub fn memory(&self) -> &BTreeMap<i64, ClassExemplars> {
        &self.memory
    }

    /// The bias pairs, one per task trained.
    pub fn pairs(&self) -> &[BiasPair] {
        &self.pairs
    }

    /// The distillation weight `λ` of the current task (0 without a teacher).
    pub fn lambda(&self) -> f64 {
        self.teacher.as_ref().map_or(0.0, |t| t.lambda)
    }

    /// The teacher network, from the second task on.
    pub fn teacher(&self) -> Option<&Network> {
        self.teacher.as_ref().map(|t| &t.network)
    }

    /// `(per class, held out per class)` with `seen` classes.
    fn shares(&self, seen: usize) -> Result<(usize, usize), TrainError> {
        let per_class = self.params.memory_size / seen.max(1);
        if per_class < 2 {
            return Err(failed(format!(
                "`memory_size` = {} leaves fewer than 2 exemplars for each of {seen} classes \
                 (one held out, one to train on)",
                self.params.memory_size
            )));
        }
        let held =
            ((self.params.val_fraction * per_class as f64).ceil() as usize).min(per_class - 1);
        Ok((per_class, held))
    }

    /// The correction vectors, built for `classes` outputs on `device` where missing.
    fn correction(&mut self, classes: i64, device: Device) -> &(Tensor, Tensor) {
        let stale = self
            .correction
            .as_ref()
            .is_none_or(|(s, _)| s.size()[0] != classes || s.device() != device);
        if stale {
            self.correction = Some(correction_vectors(&self.pairs, classes, device));
        }
        self.correction.as_ref().expect("just built")
    }

    /// Corrected outputs of `model` on `inputs`.
    fn corrected(&mut self, logits: Tensor) -> Tensor {
        let (scale, shift) = self.correction(logits.size()[1], logits.device());
        logits * scale + shift
    }

    fn teacher_for(
        network: Network,
        ctx_classes: &[Vec<i64>],
        task: usize,
        device: Device,
    ) -> Teacher {
        let old: Vec<i64> = ctx_classes[..task].iter().flatten().copied().collect();
        let lambda = distillation_weight(old.len(), ctx_classes[task].len());
        Teacher {
            network,
            old_classes: Tensor::from_slice(&old).to_device(device),
            lambda,
        }
    }

    /// Stage 2 for task `t` (see the crate docs); the pair's `(α, β)`.
    fn stage2(&mut self, ctx: &TaskContext<'_>) -> Result<(f64, f64), TrainError> {
        let t = ctx.task.index;
        if t == 0 || self.params.bias_epochs == 0 {
            return Ok((1.0, 0.0));
        }
        let seen: Vec<i64> = ctx.stream.tasks[..=t]
            .iter()
            .flat_map(|task| task.classes.iter().copied())
            .collect();
        let mut indices = Vec::new();
        let mut positions = Vec::new();
        for (position, class) in seen.iter().enumerate() {
            if let Some(exemplars) = self.memory.get(class) {
                indices.extend_from_slice(&exemplars.held_out);
                positions.extend(std::iter::repeat_n(
                    position as i64,
                    exemplars.held_out.len(),
                ));
            }
        }
        if indices.is_empty() {
            return Ok((1.0, 0.0));
        }
        let device = ctx.device;
        let seen_at = Tensor::from_slice(&seen).to_device(device);
        let logits = {
            let _no_grad = tch::no_grad_guard();
            let parts: Vec<Tensor> = indices
                .chunks(1024)
                .map(|chunk| {
                    let batch = ctx.train_batch(chunk);
                    let raw = ctx.model().forward_t(&batch.inputs, false);
                    self.corrected(raw).index_select(1, &seen_at)
                })
                .collect();
            Tensor::cat(&parts, 0).detach()
        };
        let new: Vec<bool> = seen.iter().map(|c| ctx.task.classes.contains(c)).collect();
        let mask = Tensor::from_slice(&new).to_device(device);
        let labels = Tensor::from_slice(&positions).to_device(device);
        let fit = fit_bias(
            &logits,
            &labels,
            &mask,
            self.params.bias_epochs,
            self.params.bias_lr,
            self.params.bias_batch_size,
            self.params.beta_penalty,
            derive(ctx.seed, &format!("bic/bias/task{t}")),
        )?;
        Ok((fit.alpha, fit.beta))
    }
}

impl Method for Bic {
    fn name(&self) -> &str {
        "bic"
    }

    /// The step reads only device tensors fixed for the task (the correction, the teacher,
    /// the old classes) and has static shapes; stage 2 runs in `after_task`.
    fn capturable(&self) -> bool {
        true
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.restored_teacher = None;
        let t = ctx.task.index;
        let classes: Vec<Vec<i64>> = ctx.stream.tasks.iter().map(|x| x.classes.clone()).collect();
        self.teacher = if t == 0 {
            None
        } else {
            Some(Self::teacher_for(
                ctx.network.frozen_copy()?,
                &classes,
                t,
                ctx.device,
            ))
        };
        // This task's pair starts as the identity (stage 1 trains under the earlier pairs).
        self.pairs.truncate(t);
        if self.pairs.len() < t {
            return Err(failed(format!(
                "task {t} begins with bias pairs for {} tasks only",
                self.pairs.len()
            )));
        }
        self.pairs.push(BiasPair {
            classes: ctx.task.classes.clone(),
            alpha: 1.0,
            beta: 0.0,
        });
        self.correction = None;
        self.correction(ctx.stream.num_classes as i64, ctx.device);
        // Held-out exemplars of the new classes, drawn before the task trains.
        let seen = classes[..=t].iter().map(Vec::len).sum();
        let (_, held) = self.shares(seen)?;
        for exemplars in self.memory.values_mut() {
            exemplars.held_out.truncate(held);
        }
        let labels = ctx.stream.train_index_labels();
        let mut pool = ctx.task.train_indices.clone();
        SplitMix64::new(derive(ctx.seed, &format!("bic/held_out/task{t}"))).shuffle(&mut pool);
        for &class in &ctx.task.classes {
            let held_out: Vec<i64> = pool
                .iter()
                .copied()
                .filter(|&i| i64::from(labels[i as usize]) == class)
                .take(held)
                .collect();
            self.memory.insert(
                class,
                ClassExemplars {
                    train: Vec::new(),
                    held_out,
                },
            );
        }
        Ok(())
    }

    /// The task's samples less the held-out ones, and the memory's training part.
    fn training_indices(&mut self, ctx: &TaskContext<'_>) -> Vec<i64> {
        let held: std::collections::BTreeSet<i64> = self
            .memory
            .values()
            .flat_map(|e| e.held_out.iter().copied())
            .collect();
        let mut indices: Vec<i64> = ctx
            .task
            .train_indices
            .iter()
            .copied()
            .filter(|i| !held.contains(i))
            .collect();
        for (class, exemplars) in &self.memory {
            if !ctx.task.classes.contains(class) {
                indices.extend(exemplars.train.iter().filter(|i| !held.contains(i)));
            }
        }
        indices
    }

    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        if self.teacher.is_none()
            && let Some(variables) = self.restored_teacher.take()
        {
            let classes: Vec<Vec<i64>> =
                ctx.stream.tasks.iter().map(|x| x.classes.clone()).collect();
            let network = restore_teacher(ctx.network, &variables)?;
            self.teacher = Some(Self::teacher_for(
                network,
                &classes,
                ctx.task.index,
                ctx.device,
            ));
        }
        let logits = self.corrected(ctx.model().forward_t(&batch.inputs, true));
        let ce = ctx.training_loss(&logits, &batch.labels);
        let (raw_old, old_classes, lambda) = match &self.teacher {
            None => return Ok(ce),
            Some(teacher) => {
                let _no_grad = tch::no_grad_guard();
                (
                    teacher.network.model.forward_t(&batch.inputs, false),
                    teacher.old_classes.shallow_clone(),
                    teacher.lambda,
                )
            }
        };
        let old = {
            let _no_grad = tch::no_grad_guard();
            self.corrected(raw_old).index_select(1, &old_classes)
        };
        let new = logits.index_select(1, &old_classes);
        let distilled = distillation_loss(&new, &old, self.params.temperature);
        Ok(stage1_loss(ce, Some(distilled), lambda))
    }

    /// Stage 2 (from the second task on), then the memory's update.
    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let t = ctx.task.index;
        let (alpha, beta) = self.stage2(ctx)?;
        if let Some(pair) = self.pairs.get_mut(t) {
            pair.alpha = alpha;
            pair.beta = beta;
        }
        self.correction = None;
        self.correction(ctx.stream.num_classes as i64, ctx.device);
        let seen = ctx.stream.tasks[..=t].iter().map(|x| x.classes.len()).sum();
        let (per_class, held) = self.shares(seen)?;
        let keep = per_class - held;
        for exemplars in self.memory.values_mut() {
            exemplars.train.truncate(keep);
        }
        let labels = ctx.stream.train_index_labels();
        let mut pool = ctx.task.train_indices.clone();
        SplitMix64::new(derive(ctx.seed, &format!("bic/exemplars/task{t}"))).shuffle(&mut pool);
        for &class in &ctx.task.classes {
            let exemplars = self.memory.entry(class).or_default();
            let held_out = exemplars.held_out.clone();
            exemplars.train = pool
                .iter()
                .copied()
                .filter(|&i| i64::from(labels[i as usize]) == class && !held_out.contains(&i))
                .take(keep)
                .collect();
        }
        Ok(())
    }

    /// The network's outputs through every task's `(α, β)`.
    fn eval_logits(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
        let logits = network.model.forward_t(inputs, false);
        Some(self.corrected(logits))
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut state = vec![
            (
                MEMORY_TRAIN.to_owned(),
                rows(
                    self.memory
                        .iter()
                        .flat_map(|(&c, e)| e.train.iter().map(move |&i| (c, i))),
                ),
            ),
            (
                MEMORY_HELD_OUT.to_owned(),
                rows(
                    self.memory
                        .iter()
                        .flat_map(|(&c, e)| e.held_out.iter().map(move |&i| (c, i))),
                ),
            ),
            (
                BIAS_PAIRS.to_owned(),
                Tensor::from_slice(
                    &self
                        .pairs
                        .iter()
                        .flat_map(|p| [p.alpha, p.beta])
                        .collect::<Vec<f64>>(),
                )
                .view([-1, 2]),
            ),
            (
                BIAS_CLASSES.to_owned(),
                rows(
                    self.pairs
                        .iter()
                        .enumerate()
                        .flat_map(|(t, p)| p.classes.iter().map(move |&c| (t as i64, c))),
                ),
            ),
        ];
        let teacher = match (&self.teacher, &self.restored_teacher) {
            (Some(teacher), _) => retain_models::checkpoint::named_variables(&teacher.network.vars),
            (None, Some(variables)) => variables
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
            (None, None) => Vec::new(),
        };
        state.extend(
            teacher
                .into_iter()
                .map(|(name, t)| (format!("{TEACHER}{name}"), t)),
        );
        state
    }

    /// Checks the state's names, kinds and shapes (the teacher's against the network at the
    /// next step). An empty state is a method before its first task.
    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        self.memory.clear();
        self.pairs.clear();
        self.correction = None;
        self.teacher = None;
        self.restored_teacher = None;
        if state.is_empty() {
            return Ok(());
        }
        let mut named: BTreeMap<String, Tensor> = BTreeMap::new();
        let mut teacher = Vec::new();
        for (name, tensor) in state {
            if let Some(variable) = name.strip_prefix(TEACHER) {
                teacher.push((variable.to_owned(), tensor));
            } else if [MEMORY_TRAIN, MEMORY_HELD_OUT, BIAS_PAIRS, BIAS_CLASSES]
                .contains(&name.as_str())
            {
                named.insert(name, tensor);
            } else {
                return Err(state_error(format!("unexpected tensor `{name}`")));
            }
        }
        let mut take = |name: &str| {
            named
                .remove(name)
                .ok_or_else(|| state_error(format!("no tensor `{name}`")))
        };
        let train = read_rows(MEMORY_TRAIN, &take(MEMORY_TRAIN)?)?;
        let held_out = read_rows(MEMORY_HELD_OUT, &take(MEMORY_HELD_OUT)?)?;
        let pairs = take(BIAS_PAIRS)?;
        let classes = read_rows(BIAS_CLASSES, &take(BIAS_CLASSES)?)?;
        if pairs.kind() != Kind::Double || pairs.size().len() != 2 || pairs.size()[1] != 2 {
            return Err(state_error(format!(
                "`{BIAS_PAIRS}` must be Double of shape [tasks, 2], found {:?} of shape {:?}",
                pairs.kind(),
                pairs.size()
            )));
        }
        let values = Vec::<f64>::try_from(pairs.to_device(Device::Cpu).flatten(0, -1))
            .map_err(|e| state_error(e.to_string()))?;
        let mut memory: BTreeMap<i64, ClassExemplars> = BTreeMap::new();
        for (class, index) in train {
            memory.entry(class).or_default().train.push(index);
        }
        for (class, index) in held_out {
            memory.entry(class).or_default().held_out.push(index);
        }
        let mut restored: Vec<BiasPair> = values
            .chunks(2)
            .map(|p| BiasPair {
                classes: Vec::new(),
                alpha: p[0],
                beta: p[1],
            })
            .collect();
        for (task, class) in classes {
            let pair = usize::try_from(task)
                .ok()
                .and_then(|t| restored.get_mut(t))
                .ok_or_else(|| {
                    state_error(format!("`{BIAS_CLASSES}` names task {task} without a pair"))
                })?;
            pair.classes.push(class);
        }
        self.memory = memory;
        self.pairs = restored;
        if !teacher.is_empty() {
            teacher.sort_by(|a, b| a.0.cmp(&b.0));
            self.restored_teacher = Some(teacher);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
