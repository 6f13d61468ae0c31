//! LUCIR: learning a unified classifier incrementally via rebalancing (Hou, Pan, Loy, Wang &
//! Lin, CVPR 2019).
//!
//! A class-incremental rehearsal method with three parts that rebalance old and new classes:
//!
//! * **A cosine-normalised classifier.** The network's head is read as class embeddings
//!   `w_c` (the rows of its weight; its bias is not used and is frozen) and scored against
//!   the L2-normalised features `f̄(x)` of the backbone (`Backbone::features`):
//!   `z_c(x) = σ · ⟨f̄(x), w̄_c⟩`, with `σ` one learned scalar, the variable `lucir.sigma` the
//!   method creates in the network's `VarStore` (initialised to 1, trained by the run's
//!   optimiser with the rest). Training and evaluation ([`Method::eval_logits`]) both read these
//!   scores, so old and new class embeddings compete at equal norm.
//! * **The less-forget constraint**, from the second task on: with `f°` the features of the
//!   model after the previous task (a frozen copy, in evaluation mode) on the same batch,
//!   `L_dis = λ · (1/B) Σ_b (1 − cos(f(x_b), f°(x_b)))`, with the adaptive weight
//!   `λ = λ_base · sqrt(|C_old| / |C_new|)` (`|C_old|` classes of the earlier tasks, `|C_new|`
//!   of this one). The old classes' embeddings are kept fixed while a task trains (the
//!   reference trains them at learning rate 0): the step scores old classes with their
//!   embeddings as the task began.
//! * **The margin ranking loss** on the old classes' samples of a batch (the exemplars): with
//!   `s(x) = ⟨f̄(x), w̄⟩` the cosine scores before `σ`, `H` the samples of old classes and
//!   `N_K(x)` the `K` highest scores of `x` among the new task's classes,
//!   `L_mr = μ · (1 / (|H|·K)) Σ_{x∈H} Σ_{n∈N_K(x)} max(0, m − s_y(x) + s_n(x))`,
//!   zero when the batch holds no old sample (PyTorch's `MarginRankingLoss`, mean reduction,
//!   over the `|H|·K` pairs, as the reference). `K` is capped at the new task's class count.
//!
//! A step's loss is `CE(z, y) + L_dis + L_mr` (Eq. 9), the cross-entropy under the run's
//! training loss; on the first task it is the cross-entropy alone.
//!
//! # Memory and class-balanced fine-tuning
//!
//! After each task the method keeps `memory_per_class` exemplars of each of its classes,
//! chosen by herding (iCaRL's, as the reference: on L2-normalised features of the model just
//! trained, repeatedly picking the sample that brings the running sum closest to the class
//! mean). An old class keeps its exemplars for the rest of the run. The exemplars join the
//! next task's training indices (the reference concatenates them to the new data), so every
//! epoch goes over the new samples and the memory once.
//!
//! From the second task on, after training, class-balanced fine-tuning (CBF) trains the
//! class embeddings alone (old and new: the reference's `ft_flag = 2`, feature extractor and
//! `σ` fixed) on the memory, which now holds `memory_per_class` samples of every class seen:
//! `cbf_epochs` epochs of SGD (momentum 0.9, weight decay 5e-4, batches of
//! `cbf_batch_size`, reshuffled each epoch from the seed `lucir/cbf/task<t>`) at `cbf_lr`,
//! divided by 10 for the second half, on `CE + L_mr` (the less-forget term is constant with
//! the features fixed, so it is left out). Its loop runs in `after_task` on features
//! computed once.
//!
//! # Read-outs
//!
//! Class-IL, task-IL (the cosine scores masked to the task's classes) and domain-IL read the
//! cosine scores; `ncm` (nearest mean of exemplars, the paper's "NME") scores each class by
//! `−‖f̄(x) − μ̄_c‖²`, `μ̄_c` the normalised mean of its exemplars' normalised features,
//! computed after each task (`-inf` for classes without exemplars).
//!
//! # `[training] loss`
//!
//! Every cross-entropy (training and CBF) is the run's training loss: under `"task_il"` each
//! sample's over its own task's classes. The less-forget and margin ranking terms do not
//! depend on it (the margin ranking loss always ranks an old sample's class above the new
//! task's classes, as in class-incremental learning).
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `memory_per_class` | `20` | exemplars kept per class (the reference's `nb_protos`) |
//! | `lambda_base` | `5.0` | `λ_base` of the less-forget weight (5 on CIFAR-100 in the paper, 10 on ImageNet) |
//! | `margin` | `0.5` | margin `m` of the ranking loss |
//! | `k` | `2` | hard negatives `K` per old sample (≥ 1) |
//! | `margin_weight` | `1.0` | weight `μ` of the margin ranking loss (the reference's `lw_mr`) |
//! | `cbf_epochs` | `20` | epochs of class-balanced fine-tuning after each task from the second (0: none) |
//! | `cbf_lr` | `0.01` | its initial learning rate (> 0) |
//! | `cbf_batch_size` | `128` | its batch size (≥ 1) |
//!
//! # State
//!
//! [`Method::state`] holds `sigma` (the value of `lucir.sigma`, which a fresh network does
//! not have), the memory (`memory.indices` and `memory.classes`, int64, class by class in
//! herding order) and the class means of the `ncm` read-out (`means`, `[classes, F]`, and
//! `means.classes`). The previous model and the fixed old embeddings are rebuilt from the
//! network at the next `before_task`, as at any task boundary.
//!
//! # Example
//!
//! ```toml
//! [method]
//! name = "lucir"
//! memory_per_class = 20
//! lambda_base = 5.0
//! margin = 0.5
//! k = 2
//! cbf_epochs = 20
//! cbf_lr = 0.01
//! ```
//!
//! # Peer conventions
//!
//! Followed: the authors' code (`hshustc/CVPR19_Incremental_Learning`,
//! `cifar100-class-incremental/cbf_class_incremental_cosine_cifar100.py` run with
//! `--less_forget --adapt_lamda --mr_loss --cb_finetune`, losses in
//! `utils_incremental/incremental_train_and_eval_MR_LF.py`). Also read: FACIL
//! (`mmasana/FACIL` at `e0563c7`, `src/approach/lucir.py`).
//!
//! * **Translation** from the authors' arguments: `lamda` → `lambda_base`, `dist` → `margin`,
//!   `K` → `k`, `lw_mr` → `margin_weight`, `nb_protos` → `memory_per_class` (without
//!   `--fix_budget`), `ft_epochs` → `cbf_epochs`, `ft_base_lr` → `cbf_lr`; FACIL's `lamb`,
//!   `lamb_mr`, `dist`, `K` likewise, with the exemplar count from its
//!   `--num-exemplars-per-class`.
//! * **What differs.** The reference grows its head per task (`SplitCosineLinear`); here the
//!   head has every class from the start, so the cross-entropy also covers classes not seen
//!   yet (as every method of this framework), and "new classes" of the margin ranking loss
//!   are the current task's. The reference removes the last ReLU of its ResNet so that
//!   features can be negative; the backbone's features are used here as they are. Its CBF
//!   learning rate drops ×0.1 after epoch 10 of 20 (`ft_lr_strat = [10]`); here after half of
//!   `cbf_epochs`, the same at the default. Its NME means average each exemplar with its
//!   horizontal flip; here the exemplars alone. Its optimiser (SGD 0.1, 160 epochs) is the
//!   run's `[training]` here. The reference's `imprint_weights` option (new embeddings
//!   initialised from class means) is not implemented; FACIL omits it too. FACIL does not
//!   implement CBF (`cbf_epochs = 0` matches it). Herding picks among the samples not picked
//!   yet; the reference's loop may pick a sample again (it skips the repeat) and stops after
//!   1000 picks, which can leave a class with fewer exemplars.
//! * **Steps are eager** (`capturable = false`): the step itself reads nothing from the host,
//!   but it has not been checked under CUDA-graph capture.

use std::collections::BTreeMap;

use retain_stream::seed::{SplitMix64, derive};
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Batch, Method, Network, Readout, StepContext, TaskContext, TrainError};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

const NAME: &str = "lucir";
/// The `VarStore` name of `σ`.
pub const SIGMA: &str = "lucir.sigma";
/// Momentum and weight decay of class-balanced fine-tuning (the reference's).
const CBF_MOMENTUM: f64 = 0.9;
const CBF_WEIGHT_DECAY: f64 = 5e-4;
/// Samples per forward pass when computing features in `after_task`.
const FEATURE_CHUNK: usize = 512;

/// The registry entry of `lucir`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: NAME,
    family: Family::Rehearsal,
    summary: "LUCIR: cosine-normalised classifier, less-forget feature distillation, margin ranking on herded exemplars, class-balanced fine-tuning",
    paper: "Hou, Pan, Loy, Wang & Lin, \"Learning a Unified Classifier Incrementally via Rebalancing\", CVPR 2019",
    params: &[
        Param {
            name: "memory_per_class",
            kind: ParamKind::Count,
            default: ParamDefault::Value("20"),
            doc: "exemplars kept per class, chosen by herding (≥ 1)",
        },
        Param {
            name: "lambda_base",
            kind: ParamKind::Float,
            default: ParamDefault::Value("5.0"),
            doc: "λ_base of the less-forget weight λ = λ_base·sqrt(|C_old|/|C_new|) (≥ 0)",
        },
        Param {
            name: "margin",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.5"),
            doc: "margin m of the ranking loss on cosine scores (≥ 0)",
        },
        Param {
            name: "k",
            kind: ParamKind::Count,
            default: ParamDefault::Value("2"),
            doc: "hard negatives K (highest new-class scores) per old sample (≥ 1)",
        },
        Param {
            name: "margin_weight",
            kind: ParamKind::Float,
            default: ParamDefault::Value("1.0"),
            doc: "weight of the margin ranking loss (≥ 0)",
        },
        Param {
            name: "cbf_epochs",
            kind: ParamKind::Count,
            default: ParamDefault::Value("20"),
            doc: "epochs of class-balanced fine-tuning of the class embeddings after each task from the second (0: none)",
        },
        Param {
            name: "cbf_lr",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.01"),
            doc: "initial SGD learning rate of class-balanced fine-tuning, ×0.1 for its second half (> 0)",
        },
        Param {
            name: "cbf_batch_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("128"),
            doc: "batch size of class-balanced fine-tuning (≥ 1)",
        },
    ],
    example: "memory_per_class = 20\nlambda_base = 5.0\ncbf_epochs = 20",
    capabilities: Capabilities {
        capturable: false,
        keeps_samples: true,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// The hyper-parameters (see the crate docs; defaults in [`DESCRIPTOR`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub memory_per_class: usize,
    pub lambda_base: f64,
    pub margin: f64,
    pub k: usize,
    pub margin_weight: f64,
    pub cbf_epochs: usize,
    pub cbf_lr: f64,
    pub cbf_batch_size: usize,
}

impl Default for Params {
    /// The schema's defaults ([`DESCRIPTOR`]).
    fn default() -> Self {
        DESCRIPTOR
            .parse(&toml::Table::new())
            .expect("the schema's defaults parse")
    }
}

/// What a task after the first trains against, fixed at its `before_task`.
struct Previous {
    /// The model after the previous task, frozen.
    teacher: Network,
    /// `[C]` bool: the classes of the earlier tasks.
    old: Tensor,
    /// `[C]` bool: this task's classes.
    new: Tensor,
    /// `[C, F]`: the head's weight as the task began; its old rows are the fixed embeddings.
    embeddings: Tensor,
    /// `λ` of the less-forget constraint.
    lambda: f64,
    /// `K`, capped at this task's class count.
    k: i64,
}

/// LUCIR (see the crate docs).
pub struct Lucir {
    params: Params,
    /// `lucir.sigma` of the network being trained, once created.
    sigma: Option<Tensor>,
    /// A loaded value of `σ`, put into the variable when `before_task` creates it.
    restored_sigma: Option<Tensor>,
    /// Exemplars by class, in herding order (host dataset indices).
    memory: BTreeMap<i64, Vec<i64>>,
    /// Normalised class means of the exemplars' features `[C, F]` and which classes have one
    /// (`[C]` bool), on the device.
    means: Option<(Tensor, Tensor)>,
    previous: Option<Previous>,
}

impl std::fmt::Debug for Lucir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lucir")
            .field("params", &self.params)
            .field("memory", &self.memory_len())
            .finish_non_exhaustive()
    }
}

fn invalid(message: String) -> TrainError {
    TrainError::MethodParams {
        method: NAME.into(),
        message,
    }
}

fn error(message: String) -> TrainError {
    TrainError::Method {
        method: NAME.into(),
        message,
    }
}

/// Registry factory.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Lucir::new(DESCRIPTOR.parse(params)?)?))
}

/// Rows of `x` (`[N, F]`) divided by their L2 norms (at least `1e-12`, as PyTorch's
/// `F.normalize`).
pub fn normalize(x: &Tensor) -> Tensor {
    x / x
        .norm_scalaropt_dim(2, [1].as_slice(), true)
        .clamp_min(1e-12)
}

/// The cosine scores `⟨f̄, w̄_c⟩` of features `[B, F]` against class embeddings `[C, F]`:
/// `[B, C]`, before `σ`.
pub fn cosine_scores(features: &Tensor, embeddings: &Tensor) -> Tensor {
    normalize(features).matmul(&normalize(embeddings).transpose(0, 1))
}

/// `λ_base · sqrt(old / new)`: the less-forget weight for `old` classes seen before and `new`
/// classes of the task.
pub fn adaptive_lambda(lambda_base: f64, old: usize, new: usize) -> f64 {
    lambda_base * (old as f64 / new as f64).sqrt()
}

/// The less-forget constraint without its weight: `(1/B) Σ_b (1 − cos(f_b, f°_b))` of the
/// features `[B, F]` of the model and of the previous model.
pub fn less_forget_loss(features: &Tensor, previous: &Tensor) -> Tensor {
    let cosine = Tensor::cosine_similarity(features, previous, 1, 1e-8);
    (cosine.neg() + 1.0).mean(Kind::Float)
}

/// The margin ranking loss without its weight (see the crate docs): `scores` `[B, C]` cosine
/// scores, `labels` `[B]`, `old` and `new` `[C]` bool masks of the old and the new classes,
/// `k` hard negatives (at most the new class count). The mean hinge over the old samples'
/// `k` pairs; zero when the batch holds none. No host reads.
pub fn margin_ranking_loss(
    scores: &Tensor,
    labels: &Tensor,
    old: &Tensor,
    new: &Tensor,
    k: i64,
    margin: f64,
) -> Tensor {
    let truth = scores.gather(1, &labels.unsqueeze(1), false);
    let (negatives, _) = scores
        .masked_fill(&new.logical_not().unsqueeze(0), f64::NEG_INFINITY)
        .topk(k, 1, true, true);
    let hinge = (negatives - truth + margin).clamp_min(0.0);
    let hard = old.index_select(0, labels).to_kind(Kind::Float);
    let total = (hinge.sum_dim_intlist(1, false, Kind::Float) * &hard).sum(Kind::Float);
    total / (hard.sum(Kind::Float) * k as f64).clamp_min(1.0)
}

/// Iterative herding over the normalised features `[N, F]` of one class: up to `m` distinct
/// row positions in the order picked. Each pick maximises `⟨w, f_i⟩` among the rows not
/// picked yet, with `w` starting at the class mean `μ` and moving by `μ − f_pick` (the
/// reference's update; it lets a row be picked again, skips the repeat and stops after 1000
/// picks, which can leave fewer than `m`). Reads back to the host (task boundaries only).
pub fn herding(features: &Tensor, m: usize) -> Vec<usize> {
    let n = features.size()[0];
    let target = m.min(n as usize);
    let mean = features.mean_dim(0, false, Kind::Float);
    let mut w = mean.copy();
    let mut taken = Tensor::zeros([n], (Kind::Bool, features.device()));
    let mut picked = Vec::with_capacity(target);
    while picked.len() < target {
        let best = features
            .mv(&w)
            .masked_fill(&taken, f64::NEG_INFINITY)
            .argmax(0, false)
            .int64_value(&[]);
        let _ = taken.index_fill_(
            0,
            &Tensor::from_slice(&[best]).to_device(features.device()),
            1,
        );
        picked.push(best as usize);
        w = w + &mean - features.get(best);
    }
    picked
}

/// The head's weight `[C, F]` of `network`.
fn head_weight(network: &Network) -> Result<Tensor, TrainError> {
    let name = format!("{}.weight", network.model.head_name());
    let weight = network
        .vars
        .variables()
        .remove(&name)
        .ok_or_else(|| error(format!("the network has no head weight `{name}`")))?;
    if weight.dim() != 2 || weight.size()[0] != network.model.outputs() as i64 {
        return Err(error(format!(
            "the head weight `{name}` has shape {:?}, not [outputs, features]",
            weight.size()
        )));
    }
    Ok(weight)
}

/// Normalised features of the training samples at `indices`, evaluation mode, no gradient.
fn features_of(ctx: &TaskContext<'_>, indices: &[i64]) -> Tensor {
    let _no_grad = tch::no_grad_guard();
    let chunks: Vec<Tensor> = indices
        .chunks(FEATURE_CHUNK)
        .map(|chunk| normalize(&ctx.model().features(&ctx.train_batch(chunk).inputs, false)))
        .collect();
    Tensor::cat(&chunks, 0)
}

/// A `[classes]` bool mask of `classes` on `device`.
fn class_mask(classes: usize, of: impl IntoIterator<Item = i64>, device: Device) -> Tensor {
    let mut mask = vec![false; classes];
    for c in of {
        mask[c as usize] = true;
    }
    Tensor::from_slice(&mask).to_device(device)
}

impl Lucir {
    pub fn new(params: Params) -> Result<Self, TrainError> {
        if params.memory_per_class == 0 {
            return Err(invalid("`memory_per_class` must be at least 1".into()));
        }
        retain_train::method::check_param_memory(
            NAME,
            "memory_per_class",
            params.memory_per_class,
            8,
            "8 bytes per exemplar (its dataset index), per class",
        )?;
        let non_negative = [
            ("lambda_base", params.lambda_base),
            ("margin", params.margin),
            ("margin_weight", params.margin_weight),
        ];
        for (key, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return Err(invalid(format!(
                    "`{key}` must be finite and ≥ 0, got {value}"
                )));
            }
        }
        if params.k == 0 {
            return Err(invalid("`k` must be at least 1".into()));
        }
        if !(params.cbf_lr.is_finite() && params.cbf_lr > 0.0) {
            return Err(invalid(format!(
                "`cbf_lr` must be finite and > 0, got {}",
                params.cbf_lr
            )));
        }
        if params.cbf_batch_size == 0 {
            return Err(invalid("`cbf_batch_size` must be at least 1".into()));
        }
        Ok(Self {
            params,
            sigma: None,
            restored_sigma: None,
            memory: BTreeMap::new(),
            means: None,
            previous: None,
        })
    }

    /// Exemplars held.
    pub fn memory_len(&self) -> usize {
        self.memory.values().map(Vec::len).sum()
    }

    /// The exemplars by class, in herding order.
    pub fn memory(&self) -> &BTreeMap<i64, Vec<i64>> {
        &self.memory
    }

    /// The current `λ` of the less-forget constraint (`None` during the first task).
    pub fn lambda(&self) -> Option<f64> {
        self.previous.as_ref().map(|p| p.lambda)
    }

    /// `σ` of `network` (1, its initial value, before the method created it).
    fn sigma_of(network: &Network) -> Tensor {
        network
            .vars
            .variables()
            .remove(SIGMA)
            .unwrap_or_else(|| Tensor::ones([], (Kind::Float, network.vars.device())))
    }

    /// Creates `lucir.sigma` (or finds it) and freezes the head's bias.
    fn bind(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let existing = ctx.vars().variables().remove(SIGMA);
        let sigma = match existing {
            Some(sigma) => sigma,
            None => (ctx.vars().root() / NAME).var("sigma", &[], tch::nn::Init::Const(1.0)),
        };
        if let Some(value) = self.restored_sigma.take() {
            let _no_grad = tch::no_grad_guard();
            sigma.shallow_clone().f_copy_(&value)?;
        }
        let bias = format!("{}.bias", ctx.model().head_name());
        if let Some(bias) = ctx.vars().variables().remove(&bias) {
            let _ = bias.set_requires_grad(false);
        }
        self.sigma = Some(sigma);
        Ok(())
    }

    /// The class embeddings a step scores with: the head's weight, with the old classes' rows
    /// fixed at their values as the task began.
    fn embeddings(&self, weight: &Tensor) -> Tensor {
        match &self.previous {
            None => weight.shallow_clone(),
            Some(p) => p.embeddings.where_self(&p.old.unsqueeze(1), weight),
        }
    }

    /// Herding for each class of the task just trained.
    fn store_exemplars(&mut self, ctx: &TaskContext<'_>) {
        let labels = ctx.stream.train_index_labels();
        for &class in &ctx.task.classes {
            let indices: Vec<i64> = ctx
                .task
                .train_indices
                .iter()
                .copied()
                .filter(|&i| i64::from(labels[i as usize]) == class)
                .collect();
            if indices.is_empty() {
                continue;
            }
            let features = features_of(ctx, &indices);
            let picked = herding(&features, self.params.memory_per_class);
            self.memory
                .insert(class, picked.into_iter().map(|p| indices[p]).collect());
        }
    }

    /// Host indices and labels of the memory, class by class.
    fn memory_samples(&self) -> (Vec<i64>, Vec<i64>) {
        self.memory
            .iter()
            .flat_map(|(&c, v)| v.iter().map(move |&i| (i, c)))
            .unzip()
    }

    /// Class-balanced fine-tuning of the class embeddings on the memory (see the crate docs).
    fn balanced_fine_tuning(
        &self,
        ctx: &TaskContext<'_>,
        previous: &Previous,
    ) -> Result<(), TrainError> {
        let (indices, labels) = self.memory_samples();
        if self.params.cbf_epochs == 0 || indices.is_empty() {
            return Ok(());
        }
        let features = features_of(ctx, &indices);
        let labels = Tensor::from_slice(&labels).to_device(ctx.device);
        let head = head_weight(ctx.network)?;
        let sigma = self.sigma.as_ref().expect("before_task binds σ").detach();
        let weight = head.detach().copy().set_requires_grad(true);
        let mut momentum = weight.zeros_like();
        let mut order: Vec<i64> = (0..indices.len() as i64).collect();
        let mut rng = SplitMix64::new(derive(
            ctx.seed,
            &format!("{NAME}/cbf/task{}", ctx.task.index),
        ));
        let epochs = self.params.cbf_epochs;
        for epoch in 0..epochs {
            let lr = if epoch >= epochs / 2 && epochs > 1 {
                self.params.cbf_lr * 0.1
            } else {
                self.params.cbf_lr
            };
            rng.shuffle(&mut order);
            for chunk in order.chunks(self.params.cbf_batch_size) {
                let at = Tensor::from_slice(chunk).to_device(ctx.device);
                let (f, y) = (features.index_select(0, &at), labels.index_select(0, &at));
                let scores = f.matmul(&normalize(&weight).transpose(0, 1));
                let loss = ctx.training_loss(&(&scores * &sigma), &y)
                    + margin_ranking_loss(
                        &scores,
                        &y,
                        &previous.old,
                        &previous.new,
                        previous.k,
                        self.params.margin,
                    ) * self.params.margin_weight;
                let grad = retain_train::gradients(&loss, std::slice::from_ref(&weight))?.remove(0);
                let _no_grad = tch::no_grad_guard();
                let step = grad + &weight * CBF_WEIGHT_DECAY;
                let _ = momentum.g_mul_scalar_(CBF_MOMENTUM).g_add_(&step);
                let _ = weight.shallow_clone().g_add_(&(&momentum * -lr));
            }
        }
        let _no_grad = tch::no_grad_guard();
        head.shallow_clone().f_copy_(&weight)?;
        Ok(())
    }

    /// Normalised means of the exemplars' normalised features, for the `ncm` read-out.
    fn compute_means(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let classes = ctx.model().outputs();
        let mut rows = Vec::with_capacity(classes);
        let mut present = Vec::new();
        let mut width = None;
        for class in 0..classes as i64 {
            match self.memory.get(&class) {
                Some(indices) if !indices.is_empty() => {
                    let mean = features_of(ctx, indices).mean_dim(0, true, Kind::Float);
                    width = Some(mean.size()[1]);
                    rows.push(Some(normalize(&mean)));
                    present.push(class);
                }
                _ => rows.push(None),
            }
        }
        let Some(width) = width else {
            self.means = None;
            return Ok(());
        };
        let rows: Vec<Tensor> = rows
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Tensor::zeros([1, width], (Kind::Float, ctx.device))))
            .collect();
        self.means = Some((
            Tensor::cat(&rows, 0),
            class_mask(classes, present, ctx.device),
        ));
        Ok(())
    }
}

/// State names.
const STATE_SIGMA: &str = "sigma";
const STATE_INDICES: &str = "memory.indices";
const STATE_CLASSES: &str = "memory.classes";
const STATE_MEANS: &str = "means";
const STATE_MEAN_CLASSES: &str = "means.classes";

fn state_error(message: String) -> TrainError {
    error(format!("malformed state: {message}"))
}

fn host_i64(tensor: &Tensor, name: &str) -> Result<Vec<i64>, TrainError> {
    if tensor.kind() != Kind::Int64 || tensor.dim() != 1 {
        return Err(state_error(format!(
            "`{name}` must be Int64 with 1 dimension, found {:?} of shape {:?}",
            tensor.kind(),
            tensor.size()
        )));
    }
    Ok(Vec::<i64>::try_from(&tensor.to_device(Device::Cpu))?)
}

impl Method for Lucir {
    fn name(&self) -> &str {
        NAME
    }

    /// The head must be a linear layer `[outputs, features]` under `Backbone::head_name`.
    fn check_network(&self, network: &Network) -> Result<(), TrainError> {
        head_weight(network).map(|_| ())
    }

    fn supports_readout(&self, readout: Readout) -> bool {
        matches!(
            readout,
            Readout::ClassIl | Readout::TaskIl | Readout::DomainIl | Readout::Ncm
        )
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.bind(ctx)?;
        let index = ctx.task.index;
        self.previous = if index == 0 {
            None
        } else {
            let classes = ctx.model().outputs();
            let old: Vec<i64> = ctx.stream.tasks[..index]
                .iter()
                .flat_map(|t| t.classes.iter().copied())
                .collect();
            let new = &ctx.task.classes;
            if new.is_empty() {
                return Err(error(format!("task {index} has no classes")));
            }
            let embeddings = head_weight(ctx.network)?.detach().copy();
            Some(Previous {
                teacher: ctx.network.frozen_copy()?,
                lambda: adaptive_lambda(self.params.lambda_base, old.len(), new.len()),
                old: class_mask(classes, old, ctx.device),
                new: class_mask(classes, new.iter().copied(), ctx.device),
                embeddings,
                k: self.params.k.min(new.len()) as i64,
            })
        };
        Ok(())
    }

    /// The task's samples and every exemplar.
    fn training_indices(&mut self, ctx: &TaskContext<'_>) -> Vec<i64> {
        let mut indices = ctx.task.train_indices.clone();
        indices.extend(self.memory_samples().0);
        indices
    }

    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        let sigma = self.sigma.as_ref().expect("before_task binds σ");
        let weight = head_weight(ctx.network)?;
        let features = ctx.model().features(&batch.inputs, true);
        let scores = cosine_scores(&features, &self.embeddings(&weight));
        let ce = ctx.training_loss(&(&scores * sigma), &batch.labels);
        let Some(p) = &self.previous else {
            return Ok(ce);
        };
        let old_features = {
            let _no_grad = tch::no_grad_guard();
            p.teacher.model.features(&batch.inputs, false)
        };
        let lf = less_forget_loss(&features, &old_features) * p.lambda;
        let mr = margin_ranking_loss(
            &scores,
            &batch.labels,
            &p.old,
            &p.new,
            p.k,
            self.params.margin,
        ) * self.params.margin_weight;
        Ok(ce + lf + mr)
    }

    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if self.previous.is_some() {
            // The old embeddings as the task scored them.
            let head = head_weight(ctx.network)?;
            let _no_grad = tch::no_grad_guard();
            let fixed = self.embeddings(&head).detach().copy();
            head.shallow_clone().f_copy_(&fixed)?;
        }
        self.store_exemplars(ctx);
        if let Some(p) = self.previous.take() {
            self.balanced_fine_tuning(ctx, &p)?;
        }
        self.compute_means(ctx)
    }

    /// `σ · ⟨f̄(x), w̄_c⟩` from the network's features and head.
    fn eval_logits(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
        let weight = head_weight(network).ok()?;
        let features = network.model.features(inputs, false);
        Some(cosine_scores(&features, &weight) * Self::sigma_of(network))
    }

    /// `−‖f̄(x) − μ̄_c‖²`, `-inf` for classes without exemplars.
    fn ncm_scores(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
        let (means, present) = self.means.as_ref()?;
        let features = normalize(&network.model.features(inputs, false));
        let distances = (features.unsqueeze(1) - means.unsqueeze(0))
            .square()
            .sum_dim_intlist(2, false, Kind::Float);
        Some((-distances).masked_fill(&present.logical_not().unsqueeze(0), f64::NEG_INFINITY))
    }

    /// `σ`, the memory and the class means (see the crate docs); none before the first task.
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut state = Vec::new();
        let sigma = self.sigma.as_ref().or(self.restored_sigma.as_ref());
        if let Some(sigma) = sigma {
            state.push((STATE_SIGMA.to_owned(), sigma.detach().copy()));
        }
        if !self.memory.is_empty() {
            let (indices, classes) = self.memory_samples();
            state.push((STATE_INDICES.to_owned(), Tensor::from_slice(&indices)));
            state.push((STATE_CLASSES.to_owned(), Tensor::from_slice(&classes)));
        }
        if let Some((means, present)) = &self.means {
            let classes: Vec<i64> = Vec::<bool>::try_from(&present.to_device(Device::Cpu))
                .unwrap_or_default()
                .iter()
                .enumerate()
                .filter(|(_, p)| **p)
                .map(|(c, _)| c as i64)
                .collect();
            state.push((STATE_MEANS.to_owned(), means.shallow_clone()));
            state.push((STATE_MEAN_CLASSES.to_owned(), Tensor::from_slice(&classes)));
        }
        state
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        self.sigma = None;
        self.restored_sigma = None;
        self.memory.clear();
        self.means = None;
        self.previous = None;
        let mut state: BTreeMap<String, Tensor> = state.into_iter().collect();
        if let Some(sigma) = state.remove(STATE_SIGMA) {
            if sigma.numel() != 1 || !sigma.is_floating_point() {
                return Err(state_error(format!(
                    "`{STATE_SIGMA}` must be one float, found {:?} of shape {:?}",
                    sigma.kind(),
                    sigma.size()
                )));
            }
            self.restored_sigma = Some(sigma.reshape([]).to_kind(Kind::Float));
        }
        match (state.remove(STATE_INDICES), state.remove(STATE_CLASSES)) {
            (None, None) => {}
            (Some(indices), Some(classes)) => {
                let indices = host_i64(&indices, STATE_INDICES)?;
                let classes = host_i64(&classes, STATE_CLASSES)?;
                if indices.len() != classes.len() {
                    return Err(state_error(format!(
                        "{} exemplar indices but {} classes",
                        indices.len(),
                        classes.len()
                    )));
                }
                for (i, c) in indices.into_iter().zip(classes) {
                    self.memory.entry(c).or_default().push(i);
                }
            }
            _ => {
                return Err(state_error(format!(
                    "`{STATE_INDICES}` and `{STATE_CLASSES}` come together"
                )));
            }
        }
        match (state.remove(STATE_MEANS), state.remove(STATE_MEAN_CLASSES)) {
            (None, None) => {}
            (Some(means), Some(classes)) => {
                if means.dim() != 2 {
                    return Err(state_error(format!(
                        "`{STATE_MEANS}` must have 2 dimensions, found shape {:?}",
                        means.size()
                    )));
                }
                let rows = means.size()[0] as usize;
                let classes = host_i64(&classes, STATE_MEAN_CLASSES)?;
                if classes.iter().any(|&c| c < 0 || c as usize >= rows) {
                    return Err(state_error(format!(
                        "`{STATE_MEAN_CLASSES}` names a class outside the {rows} means"
                    )));
                }
                let mask = class_mask(rows, classes, means.device());
                self.means = Some((means, mask));
            }
            _ => {
                return Err(state_error(format!(
                    "`{STATE_MEANS}` and `{STATE_MEAN_CLASSES}` come together"
                )));
            }
        }
        if let Some(name) = state.keys().next() {
            return Err(state_error(format!("unexpected tensor `{name}`")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
