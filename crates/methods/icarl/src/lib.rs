//! iCaRL: Incremental Classifier and Representation Learning (Rebuffi, Kolesnikov, Sperl &
//! Lampert, CVPR 2017).
//!
//! A class-incremental rehearsal method with three parts: a memory of exemplars of every class
//! seen, chosen by *herding* under a fixed total budget; a representation trained with a
//! binary cross-entropy that distils the previous model's outputs on the old classes; and a
//! *nearest-mean-of-exemplars* classifier on the normalised features (the `ncm` read-out),
//! beside the network's own outputs (`class_il`).
//!
//! # Training
//!
//! Each task trains on its own samples **concatenated with every exemplar** kept so far
//! ([`Method::training_indices`]): the trainer shuffles the union and draws the batches from
//! it, as PyCIL (`appendent=self._get_memory()`) and Mammoth (`icarl_replay`, which merges
//! the buffer into the task's training set at `begin_task`) do. For a batch `x` with labels
//! `y`, current logits `z = f_θ(x)`, the previous model's logits `z° = f_θ°(x)` (a frozen copy
//! taken at the end of the previous task, run in evaluation mode, no gradient), `S` the classes
//! seen so far (every class of the tasks up to the current one), `N` the current task's
//! classes and `O = S \ N` the older ones:
//!
//! ```text
//! target_{b,c} = σ(z°_{b,c})     for c ∈ O      (distillation)
//!              = [y_b = c]        for c ∈ N      (one-hot)
//! loss = 1/(B·|S|) Σ_b Σ_{c∈S} −( target_{b,c} · log σ(z_{b,c}) + (1 − target_{b,c}) · log(1 − σ(z_{b,c})) )
//! ```
//!
//! the paper's loss (Algorithm 3), averaged over samples and outputs as
//! `F.binary_cross_entropy_with_logits` does in both references. Outputs of classes not seen
//! yet take no part. Current samples and exemplars are treated alike: an exemplar's target
//! on its own (old) class is the teacher's output too. On the first task `O` is empty and the
//! loss is the plain one-hot BCE. The loss is iCaRL's own and ignores `[training] loss`:
//! every output is an independent sigmoid, so there is no softmax for `"task_il"` to mask,
//! and restricting each sample to its own task's outputs would drop the distillation of the
//! old classes on the new data, which is the method.
//!
//! # Exemplars
//!
//! The memory holds at most `K = memory_size` exemplars. After task `t`, with `s` classes
//! seen, each class keeps `m = ⌊K / s⌋` (all of its samples when it has fewer):
//!
//! * **Reduction** (Algorithm 5): an old class keeps the first `m` of its exemplars. Herding
//!   orders them by priority, so a prefix is the best smaller set.
//! * **Construction by herding** (Algorithm 4): for a new class with samples `x_1…x_n`,
//!   `φ_i = φ(x_i)/‖φ(x_i)‖` (the model's features, [`retain_models::Backbone::features`],
//!   in evaluation mode on the un-augmented images), `μ = (1/n) Σ_i φ_i`; the `k`-th exemplar
//!   is `p_k = argmin_{i ∉ {p_1…p_{k−1}}} ‖μ − (φ_i + Σ_{j<k} φ_{p_j}) / k‖`, the lowest index
//!   among ties. Exemplars are stored as dataset indices of the training split, in herding
//!   order ([`herding`]).
//!
//! A class that already has exemplars (a domain-incremental stream, whose every task holds
//! every class) keeps its set and is only reduced. `m = 0` (more classes seen than `K`) is an
//! error naming `memory_size`.
//!
//! # Nearest-mean-of-exemplars read-out
//!
//! At the end of each task, after the memory is updated, every class `y` with exemplars gets
//! the mean `μ_y` of its exemplars' normalised features under the model just trained,
//! re-normalised to unit length (the authors' code and PyCIL both normalise the mean). The
//! `ncm` read-out scores ([`Method::ncm_scores`]) are
//!
//! ```text
//! score_y(x) = −‖ φ(x)/‖φ(x)‖ − μ_y ‖      (−∞ for a class without exemplars)
//! ```
//!
//! and the prediction is their arg-max, the nearest mean. The authors' code (and PyCIL on
//! CIFAR) also averages the features of each exemplar with those of its horizontally flipped
//! image; here the means use the images alone, on every dataset: a flipped digit is not the
//! same digit, so on MNIST-like data flipping would mix classes. The network's own outputs
//! stay available as the `class_il` (and `task_il`) read-outs.
//!
//! Herding and the class means read features back to the host at the task's end, outside the
//! step. The step itself reads nothing back and has fixed shapes (the seen and old classes are
//! fixed for the task, the teacher is fixed): it is captured in a CUDA graph on CUDA. The
//! method draws nothing at random (herding breaks ties by index).
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `memory_size` | `2000` | total exemplars `K` kept over all classes (≥ 1; the paper's and PyCIL's 2000 on CIFAR-100) |
//!
//! iCaRL has no distillation weight or temperature: the old classes' targets are the
//! teacher's sigmoid outputs at temperature 1, weighed like every other output.
//!
//! # Example
//!
//! ```toml
//! [stream]
//! readouts = ["class_il", "task_il", "ncm"]
//!
//! [method]
//! name = "icarl"
//! memory_size = 2000
//! ```
//!
//! # Peer conventions
//!
//! Sources: PyCIL (`G-U-N/PyCIL` at `04d2e8a`, `models/icarl.py`); Mammoth
//! (`aimagelab/mammoth` at `e2d9727`, `models/icarl.py`, with `icarl_replay` in
//! `utils/buffer.py`); the authors' code (`srebuffi/iCaRL`). What translates and what does
//! not:
//!
//! * **PyCIL `icarl`** is this method: training set = task data plus memory, BCE with logits
//!   over the classes seen with the old columns replaced by the teacher's sigmoid, herding on
//!   normalised features, reduction to a prefix, `m = memory_size // classes seen`, NCM with
//!   re-normalised exemplar means. `memory_size = memory_size` (PyCIL's default 2000). PyCIL's
//!   head grows with the classes (`update_fc`), where here it is the model's fixed head with
//!   the unseen outputs left out of the loss: the same outputs enter the loss. PyCIL computes
//!   the means of old classes right after reduction and those of new classes from the new
//!   exemplars, both with the model just trained, as here. Its schedule (70 epochs, SGD lr 2.0)
//!   is `[training]`'s business.
//! * **Mammoth `icarl`**: the same loss (`binary_cross_entropy_with_logits` on
//!   `outputs[:, :seen]` with `logits[:, :past]` from the teacher's sigmoid) and the same
//!   merged training set; `buffer_size` is `memory_size`. Mammoth herds on the raw
//!   (un-normalised) features and its class means are the plain means of the raw features of
//!   the exemplars (averaged batch by batch), with squared Euclidean distance on raw features
//!   for the prediction: the read-out differs from the paper's normalised one used here, and
//!   so may the exemplars chosen. Mammoth's teacher targets are computed on the same
//!   augmented batch as the student's, as here.
//! * **The authors' code** averages the features with flipped images (see above), which is
//!   not done here, and trains with its own schedule (SGD lr 2.0, weight decay 1e-5).
//! * **Avalanche `ICaRL`** (`avalanche/training/strategies`, with `ICaRLLossPlugin` and an
//!   `NCMClassifier` for evaluation): `memory_size` is `memory_size`; its `fixed_memory = True`
//!   is the fixed total budget here, while `fixed_memory = False` (a fixed number per class)
//!   has no counterpart; its `buffer_transform` (e.g. flips) for the exemplar means is not
//!   applied here. Avalanche evaluates through the NCM classifier only; here both read-outs
//!   are reported.
//!
//! Rebuffi, Kolesnikov, Sperl & Lampert, "iCaRL: Incremental Classifier and Representation
//! Learning", CVPR 2017.

use std::collections::BTreeMap;

use retain_memory::{MemoryError, StateReader};
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Batch, Method, Network, Readout, StepContext, TaskContext, TrainError};
use serde::Deserialize;
use tch::{Device, Kind, Reduction, Tensor};

/// The registry entry of `icarl`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "icarl",
    family: Family::Rehearsal,
    summary: "iCaRL: herding exemplars under a fixed memory, BCE with distillation of the previous model, nearest-mean-of-exemplars read-out (ncm)",
    paper: "Rebuffi, Kolesnikov, Sperl & Lampert, \"iCaRL: Incremental Classifier and Representation Learning\", CVPR 2017",
    params: &[Param {
        name: "memory_size",
        kind: ParamKind::Count,
        default: ParamDefault::Value("2000"),
        doc: "total exemplars K over all classes; each of the s classes seen keeps ⌊K/s⌋",
    }],
    example: "memory_size = 200",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: true,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// The hyper-parameters of [`Icarl`] (see the crate docs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub memory_size: usize,
}

impl Default for Params {
    /// The schema's defaults ([`DESCRIPTOR`]).
    fn default() -> Self {
        DESCRIPTOR
            .parse(&toml::Table::new())
            .expect("the schema's defaults parse")
    }
}

/// Names of the state's tensors.
const CLASSES: &str = "exemplars.classes";
const COUNTS: &str = "exemplars.counts";
const INDICES: &str = "exemplars.indices";
const MEANS: &str = "class_means";
const TEACHER: &str = "teacher.";

/// Feature extraction batch size at task ends.
const FEATURE_BATCH: usize = 512;

/// What a step needs, fixed for the task (on the device).
struct TaskTensors {
    /// `[C, C]` identity: one-hot rows by label.
    eye: Tensor,
    /// The classes seen so far, this task's included.
    seen: Tensor,
    /// The seen classes not in this task (distilled); `None` when there are none.
    old: Option<Tensor>,
}

/// iCaRL (see the crate docs).
///
/// Its state ([`Method::state`]), from the end of the first task on: `exemplars.classes`
/// (`[n]` int64, the classes with exemplars, ascending), `exemplars.counts` (`[n]` int64, the
/// size of each class's set), `exemplars.indices` (int64, every set's dataset indices in
/// herding order, concatenated in class order), `class_means` (`[classes, F]` float, the
/// normalised exemplar means, zero rows for classes without exemplars) and `teacher.<name>`
/// for every variable of the frozen copy of the model taken at the end of the last task.
pub struct Icarl {
    params: Params,
    /// Each class's exemplars (training-split indices, herding order), on the host.
    exemplars: BTreeMap<i64, Vec<i64>>,
    /// Every exemplar's index, in class order, on the device.
    memory: Option<Tensor>,
    /// `[classes, F]` class means and the `[classes]` mask of classes without exemplars.
    means: Option<(Tensor, Tensor)>,
    /// The model after the previous task.
    teacher: Option<Network>,
    /// A loaded teacher's variables by name, put into a frozen copy at the next `before_task`.
    restored_teacher: Option<Vec<(String, Tensor)>>,
    step: Option<TaskTensors>,
}

impl std::fmt::Debug for Icarl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Icarl")
            .field("params", &self.params)
            .field("exemplars", &self.exemplar_counts())
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> TrainError {
    TrainError::MethodParams {
        method: "icarl".into(),
        message: message.into(),
    }
}

fn method_error(message: impl Into<String>) -> TrainError {
    TrainError::Method {
        method: "icarl".into(),
        message: message.into(),
    }
}

fn state_error(message: impl std::fmt::Display) -> TrainError {
    method_error(format!("malformed state: {message}"))
}

/// Registry factory.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Icarl::new(DESCRIPTOR.parse(params)?)?))
}

/// Rows of `x` (`[n, F]`) scaled to unit L2 norm (a zero row stays zero).
pub fn normalize_rows(x: &Tensor) -> Tensor {
    x / x
        .norm_scalaropt_dim(2, [1].as_slice(), true)
        .clamp_min(1e-12)
}

/// iCaRL's herding (Algorithm 4): the positions (rows of `features`, `[n, F]`) of the first
/// `min(m, n)` exemplars in selection order. Rows are L2-normalised first; the `k`-th choice
/// is the unchosen row `i` minimising `‖μ − (φ_i + Σ_{j<k} φ_{p_j}) / k‖`, `μ` the mean of
/// the normalised rows, the lowest position among ties. Reads one index back per choice.
pub fn herding(features: &Tensor, m: usize) -> Vec<i64> {
    let _no_grad = tch::no_grad_guard();
    let phi = normalize_rows(&features.to_kind(Kind::Float));
    let n = phi.size()[0];
    let mu = phi.mean_dim([0].as_slice(), true, Kind::Float);
    let mut sum = mu.zeros_like();
    let taken = Tensor::zeros([n], (Kind::Bool, phi.device()));
    let mut order = Vec::new();
    for k in 1..=m.min(n as usize) {
        let cost = (&mu - (&phi + &sum) / k as f64)
            .square()
            .sum_dim_intlist([1].as_slice(), false, Kind::Float)
            .masked_fill(&taken, f64::INFINITY);
        // `argmin` returns the first minimum.
        let i = cost.argmin(0, false).int64_value(&[]);
        sum += phi.get(i).unsqueeze(0);
        let _ = taken.get(i).fill_(1);
        order.push(i);
    }
    order
}

/// The per-class budget `⌊memory_size / classes⌋`, or an error naming `memory_size` when it
/// is zero.
pub fn per_class(memory_size: usize, classes: usize) -> Result<usize, TrainError> {
    let m = memory_size / classes.max(1);
    if m == 0 {
        return Err(method_error(format!(
            "`memory_size` = {memory_size} leaves no exemplar for each of the {classes} classes seen"
        )));
    }
    Ok(m)
}

/// iCaRL's loss (see the crate docs): BCE with logits over the `seen` classes' columns of
/// `logits` (`[B, C]`), with one-hot targets from `labels` (`[B]`) and, on the `old` classes'
/// columns, the teacher's sigmoid outputs `σ(teacher)` (`teacher`: `[B, C]` logits), averaged
/// over the batch and the seen classes. `eye` is the `[C, C]` identity.
pub fn bce_distillation(
    logits: &Tensor,
    labels: &Tensor,
    eye: &Tensor,
    seen: &Tensor,
    distill: Option<(&Tensor, &Tensor)>,
) -> Tensor {
    let mut targets = eye.index_select(0, labels);
    if let Some((teacher, old)) = distill {
        let soft = teacher.index_select(1, old).sigmoid().detach();
        targets = targets.index_copy(1, old, &soft);
    }
    logits
        .index_select(1, seen)
        .binary_cross_entropy_with_logits::<Tensor>(
            &targets.index_select(1, seen),
            None,
            None,
            Reduction::Mean,
        )
}

/// The nearest-mean scores `−‖φ(x)/‖φ(x)‖ − μ_y‖` of `features` (`[B, F]`) against `means`
/// (`[C, F]`), `−∞` where `absent` (`[C]` bool) is true.
pub fn ncm_scores(features: &Tensor, means: &Tensor, absent: &Tensor) -> Tensor {
    let phi = normalize_rows(&features.to_kind(Kind::Float));
    let distance = (phi.unsqueeze(1) - means.unsqueeze(0))
        .square()
        .sum_dim_intlist([2].as_slice(), false, Kind::Float)
        .sqrt();
    (-distance).masked_fill(absent, f64::NEG_INFINITY)
}

/// The model's features (evaluation mode, un-augmented images) of the training samples at
/// `indices`, `[n, F]`.
fn features_of(ctx: &TaskContext<'_>, indices: &[i64]) -> Tensor {
    let _no_grad = tch::no_grad_guard();
    let parts: Vec<Tensor> = indices
        .chunks(FEATURE_BATCH)
        .map(|chunk| {
            let batch = ctx.train_batch(chunk);
            ctx.model().features(&batch.inputs, false)
        })
        .collect();
    Tensor::cat(&parts, 0)
}

/// A frozen copy of `network` holding the teacher's `variables`, which must be exactly the
/// network's names and shapes.
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

impl Icarl {
    pub fn new(params: Params) -> Result<Self, TrainError> {
        if params.memory_size == 0 {
            return Err(invalid("`memory_size` must be at least 1"));
        }
        retain_train::method::check_param_memory(
            "icarl",
            "memory_size",
            params.memory_size,
            8,
            "8 bytes per exemplar for its dataset index",
        )?;
        Ok(Self {
            params,
            exemplars: BTreeMap::new(),
            memory: None,
            means: None,
            teacher: None,
            restored_teacher: None,
            step: None,
        })
    }

    /// Each class with exemplars and the size of its set.
    pub fn exemplar_counts(&self) -> Vec<(i64, usize)> {
        self.exemplars.iter().map(|(&c, v)| (c, v.len())).collect()
    }

    /// The exemplars of `class` (training-split indices, herding order).
    pub fn exemplars(&self, class: i64) -> &[i64] {
        self.exemplars.get(&class).map_or(&[], Vec::as_slice)
    }

    /// The class means (`[classes, F]`) and the mask of classes without exemplars, once a
    /// task has ended.
    pub fn class_means(&self) -> Option<(&Tensor, &Tensor)> {
        self.means.as_ref().map(|(m, a)| (m, a))
    }

    /// The frozen copy of the model after the previous task.
    pub fn teacher(&self) -> Option<&Network> {
        self.teacher.as_ref()
    }

    /// Reduces every set to `m` and herds `m` exemplars for each of `new_classes` from the
    /// task's samples, using the network's current features.
    fn update_memory(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let new_classes: Vec<i64> = ctx
            .task
            .classes
            .iter()
            .copied()
            .filter(|c| !self.exemplars.contains_key(c))
            .collect();
        let m = per_class(
            self.params.memory_size,
            self.exemplars.len() + new_classes.len(),
        )?;
        for set in self.exemplars.values_mut() {
            set.truncate(m);
        }
        if new_classes.is_empty() {
            return Ok(());
        }
        let labels = ctx.stream.train_index_labels();
        for class in new_classes {
            let samples: Vec<i64> = ctx
                .task
                .train_indices
                .iter()
                .copied()
                .filter(|&i| i64::from(labels[i as usize]) == class)
                .collect();
            if samples.is_empty() {
                continue;
            }
            let chosen = herding(&features_of(ctx, &samples), m)
                .into_iter()
                .map(|p| samples[p as usize])
                .collect();
            self.exemplars.insert(class, chosen);
        }
        Ok(())
    }

    /// Recomputes every class's normalised exemplar mean with the network's current features.
    fn update_means(&mut self, ctx: &TaskContext<'_>) {
        let classes = ctx.model().outputs() as i64;
        let _no_grad = tch::no_grad_guard();
        let mut rows = Vec::new();
        for (&class, set) in &self.exemplars {
            let phi = normalize_rows(&features_of(ctx, set).to_kind(Kind::Float));
            let mean = phi.mean_dim([0].as_slice(), true, Kind::Float);
            rows.push((class, normalize_rows(&mean)));
        }
        let Some((_, first)) = rows.first() else {
            self.means = None;
            return;
        };
        let width = first.size()[1];
        let means = Tensor::zeros([classes, width], (Kind::Float, ctx.device));
        let absent = Tensor::ones([classes], (Kind::Bool, ctx.device));
        for (class, mean) in &rows {
            means.get(*class).copy_(&mean.squeeze_dim(0));
            let _ = absent.get(*class).fill_(0);
        }
        self.means = Some((means, absent));
    }

    fn sync_memory(&mut self, device: Device) {
        let all: Vec<i64> = self.exemplars.values().flatten().copied().collect();
        self.memory = Some(Tensor::from_slice(&all).to_device(device));
    }
}

impl Method for Icarl {
    fn name(&self) -> &str {
        "icarl"
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if let Some(variables) = self.restored_teacher.take() {
            self.teacher = Some(restore_teacher(ctx.network, &variables)?);
        }
        if let Some((means, absent)) = &mut self.means {
            *means = means.to_device(ctx.device);
            *absent = absent.to_device(ctx.device);
        }
        let index = ctx.task.index;
        let current = &ctx.task.classes;
        let mut seen: Vec<i64> = ctx.stream.tasks[..=index]
            .iter()
            .flat_map(|t| t.classes.iter().copied())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        let old: Vec<i64> = seen
            .iter()
            .copied()
            .filter(|c| !current.contains(c))
            .collect();
        let classes = ctx.model().outputs() as i64;
        let device = ctx.device;
        let to_device = |v: &[i64]| Tensor::from_slice(v).to_device(device);
        self.step = Some(TaskTensors {
            eye: Tensor::eye(classes, (Kind::Float, device)),
            seen: to_device(&seen),
            old: (!old.is_empty() && self.teacher.is_some()).then(|| to_device(&old)),
        });
        self.sync_memory(device);
        Ok(())
    }

    /// The task's samples and every exemplar (PyCIL's and Mammoth's merged training set).
    fn training_indices(&mut self, ctx: &TaskContext<'_>) -> Vec<i64> {
        let mut indices = ctx.task.train_indices.clone();
        indices.extend(self.exemplars.values().flatten().copied());
        indices
    }

    /// The step reads only device tensors fixed for the task.
    fn capturable(&self) -> bool {
        true
    }

    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        let step = self
            .step
            .as_ref()
            .ok_or_else(|| method_error("a step ran before `before_task`"))?;
        let logits = ctx.model().forward_t(&batch.inputs, true);
        let teacher = match (&self.teacher, &step.old) {
            (Some(teacher), Some(old)) => {
                let _no_grad = tch::no_grad_guard();
                Some((teacher.model.forward_t(&batch.inputs, false), old))
            }
            _ => None,
        };
        Ok(bce_distillation(
            &logits,
            &batch.labels,
            &step.eye,
            &step.seen,
            teacher.as_ref().map(|(t, old)| (t, *old)),
        ))
    }

    /// Reduces and extends the memory by herding, recomputes the class means and keeps a
    /// frozen copy of the model as the next task's teacher.
    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.update_memory(ctx)?;
        self.sync_memory(ctx.device);
        self.update_means(ctx);
        self.teacher = Some(ctx.network.frozen_copy()?);
        Ok(())
    }

    fn supports_readout(&self, readout: Readout) -> bool {
        matches!(
            readout,
            Readout::ClassIl | Readout::TaskIl | Readout::DomainIl | Readout::Ncm
        )
    }

    fn ncm_scores(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
        let (means, absent) = self.means.as_ref()?;
        let features = network.model.features(inputs, false);
        let device = features.device();
        Some(ncm_scores(
            &features,
            &means.to_device(device),
            &absent.to_device(device),
        ))
    }

    /// The exemplars, class means and teacher (see [`Icarl`]); none before the first task ends.
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut state = Vec::new();
        if self.exemplars.is_empty() && self.means.is_none() {
            return state;
        }
        let classes: Vec<i64> = self.exemplars.keys().copied().collect();
        let counts: Vec<i64> = self.exemplars.values().map(|v| v.len() as i64).collect();
        let indices: Vec<i64> = self.exemplars.values().flatten().copied().collect();
        state.push((CLASSES.to_owned(), Tensor::from_slice(&classes)));
        state.push((COUNTS.to_owned(), Tensor::from_slice(&counts)));
        state.push((INDICES.to_owned(), Tensor::from_slice(&indices)));
        if let Some((means, _)) = &self.means {
            state.push((MEANS.to_owned(), means.shallow_clone()));
        }
        let teacher: Vec<(String, Tensor)> = match (&self.teacher, &self.restored_teacher) {
            (Some(t), _) => retain_models::checkpoint::named_variables(&t.vars),
            (None, Some(v)) => v
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

    /// Checks the exemplar sets (distinct ascending classes, counts that add up to the
    /// indices, each set within `memory_size`), the class means (`[classes, F]` float with a
    /// row for every class with exemplars) and the teacher's variables (at the next
    /// `before_task`, against the network). An empty state is a method before its first task
    /// ends.
    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        self.exemplars.clear();
        self.memory = None;
        self.means = None;
        self.teacher = None;
        self.restored_teacher = None;
        self.step = None;
        let (teacher, rest): (Vec<_>, Vec<_>) =
            state.into_iter().partition(|(n, _)| n.starts_with(TEACHER));
        if rest.is_empty() && teacher.is_empty() {
            return Ok(());
        }
        let read = |reader: &mut StateReader| -> Result<_, MemoryError> {
            let classes = reader.take_indices(CLASSES)?;
            let counts = reader.take_indices(COUNTS)?;
            let indices = reader.take_indices(INDICES)?;
            let means = reader.take(MEANS, Kind::Float, 2)?;
            Ok((classes, counts, indices, means))
        };
        let (classes, counts, indices, means) = StateReader::read_whole(rest, read)
            .map_err(|e| method_error(e.to_string()))?
            .ok_or_else(|| state_error(format!("teacher variables without `{CLASSES}`")))?;
        if classes.len() != counts.len() {
            return Err(state_error(format!(
                "`{CLASSES}` has {} entries but `{COUNTS}` {}",
                classes.len(),
                counts.len()
            )));
        }
        if classes.windows(2).any(|w| w[0] >= w[1]) || classes.first().is_some_and(|&c| c < 0) {
            return Err(state_error(format!(
                "`{CLASSES}` must be distinct, ascending and ≥ 0"
            )));
        }
        let total: i64 = counts.iter().sum();
        if counts
            .iter()
            .any(|&c| c < 0 || c as usize > self.params.memory_size)
            || total as usize != indices.len()
            || total as usize > self.params.memory_size
            || indices.iter().any(|&i| i < 0)
        {
            return Err(state_error(format!(
                "`{COUNTS}` ({counts:?}) does not describe {} exemplar indices within `memory_size` = {}",
                indices.len(),
                self.params.memory_size
            )));
        }
        let rows = means.size()[0];
        if classes.last().is_some_and(|&c| c >= rows) {
            return Err(state_error(format!(
                "`{MEANS}` has {rows} rows, fewer than the classes with exemplars need"
            )));
        }
        if teacher.is_empty() {
            return Err(state_error(format!(
                "no teacher variables (`{TEACHER}<name>`)"
            )));
        }
        let mut offset = 0;
        for (&class, &count) in classes.iter().zip(&counts) {
            let count = count as usize;
            self.exemplars
                .insert(class, indices[offset..offset + count].to_vec());
            offset += count;
        }
        let absent = Tensor::ones([rows], (Kind::Bool, means.device()));
        for &class in &classes {
            let _ = absent.get(class).fill_(0);
        }
        self.means = Some((means, absent));
        let mut teacher: Vec<(String, Tensor)> = teacher
            .into_iter()
            .map(|(n, t)| (n[TEACHER.len()..].to_owned(), t))
            .collect();
        teacher.sort_by(|a, b| a.0.cmp(&b.0));
        self.restored_teacher = Some(teacher);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
