//! L2P (Learning to Prompt): a pool of prompts with learned keys in a frozen pre-trained
//! vision transformer; each sample's prompts are the ones whose keys best match its query
//! feature, at training and at test time, so no task id is needed.
//!
//! # Method
//!
//! The pool holds `M = pool_size` prompts `P_j ∈ ℝ^{length×D}` and as many keys `k_j ∈ ℝ^D`
//! (`D` the transformer's width). For an input `x`:
//!
//! 1. its query `q(x) ∈ ℝ^D` is the frozen pre-trained model's feature *without prompts*:
//!    the final-normed class token, [`Backbone::features`]`(x, false)` with the prompt
//!    removed, under `no_grad` (the reference's `cls_features` from its `original_model`);
//! 2. the cosine similarities `γ(q, k_j) = ⟨q/‖q‖, k_j/‖k_j‖⟩` (each norm clamped as the
//!    reference's `l2_normalize`, `x · rsqrt(max(‖x‖², 10⁻¹²))`) rank the keys; the
//!    `N = top_n` best, `s_1, …, s_N` in decreasing similarity (equal similarities: the lower
//!    pool index first), select the prompts;
//! 3. `[P_{s_1}; …; P_{s_N}]`, `N·length` tokens, join the sample's input sequence after the
//!    class token ([`Backbone::set_prompt`] with `[B, N·length, D]`), and the head reads the
//!    prompted model's class token.
//!
//! With `batchwise = true` (the reference's `batchwise_prompt`, on in its CIFAR-100 configs),
//! training uses one selection for the whole batch: the `N` pool indices chosen most often by
//! the batch's per-sample selections (`c_j = #{(b, i) : s_{b,i} = j}`, the `N` largest counts,
//! equal counts: the lower index first), for every sample. Evaluation always selects per
//! sample (see the peer conventions for why).
//!
//! The loss of a batch `B` of task `t` is
//!
//! ```text
//! L = CE(mask_t(f(x; P_s)), y)  +  λ · (1/|B|) Σ_{x∈B} Σ_{i=1..N} (1 − γ(q(x), k_{s_i}))
//! ```
//!
//! where `mask_t` sets the logits of classes outside task `t` to −∞ (`train_mask`; the
//! reference's `train_mask`, on by default; without it the cross-entropy is over every
//! output) and `λ = pull_weight`. The second term is the key–query pull ("surrogate loss" of
//! the paper) summed over the selected keys and averaged over the batch: the reference
//! subtracts `λ · reduce_sim`, `reduce_sim = Σ_{b,i} γ / |B|`, which differs from this term by
//! the constant `λ·N` only (same gradients). Queries carry no gradient; the pull moves the
//! selected keys towards their queries. The cross-entropy is the run's training loss
//! ([`StepContext::training_loss`]).
//!
//! The classifier is a new head over all the stream's outputs (`fresh_head`, as the reference
//! builds its model with a classifier for the stream's classes, dropping the pre-trained
//! one): weights from `N(0, 0.02²)` (timm's `trunc_normal_(std=.02)`), biases zero, drawn
//! from the seed (`l2p/head`) when the pool is created (not when it is restored from a
//! state: the network's checkpoint holds the head then). A head pre-trained on other classes
//! (a `[pretrain]` stage's) would otherwise keep large logits for those classes, which the
//! train mask never lowers, and win every class-incremental prediction.
//!
//! Every backbone variable is frozen (`requires_grad` off); the prompts (`l2p.prompts`,
//! `[M, length, D]`), the keys (`l2p.keys`, `[M, D]`) and the one shared classifier head
//! (all classes) train. Prompts and keys are drawn once, from `U(−1, 1)` (the reference's
//! `prompt_init = prompt_key_init = 'uniform'`), from the experiment seed
//! (`l2p/prompts`, `l2p/keys` through [`retain_stream::seed::derive`]), and then carry over
//! from task to task. Each task starts with a fresh optimiser (the reference's
//! `reinit_optimizer = True`). Evaluation selects prompts the same way, per sample, through
//! [`Method::eval_logits`], without the mask: a class-incremental prediction over every
//! class, no task id.
//!
//! The model must be a transformer (`[model] kind = "vit"`; anything else is refused by
//! [`Method::check_network`], naming `model.kind`), and it should be pre-trained: the query
//! is only as good as the frozen features (`[model] checkpoint = "…"`, or a `[pretrain]`
//! stage).
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `pool_size` | `10` | prompts (and keys) in the pool, `M` (≥ 1) |
//! | `length` | `5` | tokens per prompt (≥ 1) |
//! | `top_n` | `5` | prompts selected per sample, `N` (1 ≤ `top_n` ≤ `pool_size`) |
//! | `pull_weight` | `0.1` | `λ`, weight of the key–query pull (finite, ≥ 0) |
//! | `train_mask` | `true` | mask the logits of classes outside the current task in training |
//! | `batchwise` | `true` | in training, one selection per batch: the most frequent `top_n` |
//! | `fresh_head` | `true` | draw a new classifier head when the pool is created |
//!
//! The defaults are the reference's for Split CIFAR-100 (the PyTorch port's
//! `cifar100_l2p` configuration: `size = 10`, `length = 5`, `top_k = 5`,
//! `pull_constraint_coeff = 0.1`, `train_mask = True`, `batchwise_prompt = True`; the
//! official code's CIFAR-100 configurations use the same pool, length and `top_k`, with Adam
//! at a constant learning rate of 0.03 for batches of 16 per device, 5 epochs per task).
//!
//! # Example
//!
//! ```toml
//! [model]
//! kind = "vit"
//! checkpoint = "results/pretrained/vit.safetensors"
//!
//! [method]
//! name = "l2p"
//! pool_size = 10
//! length = 5
//! top_n = 5
//! pull_weight = 0.1
//! ```
//!
//! or, pre-training the backbone in the run on other classes of the dataset:
//!
//! ```toml
//! [stream]
//! class_order = [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]
//!
//! [model]
//! kind = "vit"
//!
//! [pretrain]
//! classes = [0, 1, 2, 3, 4]
//! epochs = 1
//! ```
//!
//! # Peer conventions
//!
//! - **Official code** (`google-research/l2p`, JAX) and **PyTorch port**
//!   (`JH-LEE-KR/l2p-pytorch`, `prompt.py`, `models.py`, `engine.py`): the query from a
//!   separate frozen copy of the model (here: the same frozen backbone with the prompt
//!   removed, the same values since nothing of the backbone trains), cosine top-`k`,
//!   `prompt_key = True`, `embedding_key = 'cls'`, uniform initialisation, the pull term, the
//!   train mask, the frozen backbone with a training head, the optimiser reset per task: all
//!   followed. What differs:
//!   - **read-out**: the reference classifies the mean of the prompt positions' outputs after
//!     the final norm (`head_type = 'prompt'`, the JAX code's `vit_classifier = "prompt"`).
//!     Our transformer's [`Backbone::features`] gives only the class token, so the head reads
//!     the class token of the prompted model (the reference's `head_type = 'token'`). Reading
//!     the prompt positions would need a `Backbone` hook returning the final-normed token
//!     sequence `[B, 1 + P + T, D]` (or the mean of the prompt positions, `[B, D]`) of the
//!     prompted forward pass, for the head to be applied to it;
//!   - **position embeddings**: the reference inserts the prompts before the class token and
//!     extends the position embedding over the prompt positions (resized from the
//!     pre-trained one, frozen); ours inserts them after the class token without position
//!     embedding. Attention is permutation-equivariant, so only that missing embedding
//!     differs;
//!   - **batch-wise selection** is used in training only. The reference applies it at test
//!     time as well, which makes a sample's prediction depend on the other samples of its
//!     evaluation batch (and, with per-task test batches, tells the model the task). The
//!     reference breaks equal counts by `torch.topk` (unspecified order) and pads with the
//!     smallest selected index when fewer than `top_k` distinct prompts were selected; ours
//!     takes the lower index first, including among unselected prompts;
//!   - the reference clips gradients at norm 1.0; the run's optimiser configuration applies
//!     here.
//! - **Mammoth** (`models/l2p.py`): the PyTorch port's model and loss (pull coefficient 0.1),
//!   in training the logits of past classes at −∞ and those of future classes left out,
//!   which is the mask of the classes outside the current task; translates as above.
//! - **LAMDA-PILOT** (`models/l2p.py`): the same pool and loss (`pull_constraint_coeff = 0.1`
//!   in its configuration), cross-entropy with the earlier classes' logits at −∞
//!   (`logits[:, :known_classes]`), the head over all seen classes; same translation.
//!
//! Wang, Zhang, Lee, Zhang, Sun, Ren, Su, Perot, Dy & Pfister, "Learning to Prompt for
//! Continual Learning", CVPR 2022.
//!
//! [`Backbone::features`]: retain_models::Backbone::features
//! [`Backbone::set_prompt`]: retain_models::Backbone::set_prompt
//! [`StepContext::training_loss`]: retain_train::StepContext::training_loss

use retain_models::Backbone;
use retain_models::init::{Draw, fill};
use retain_peft::{error, freeze_backbone, invalid};
use retain_stream::seed::derive;
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Batch, Method, Network, StepContext, TaskContext, TrainError};
use serde::Deserialize;
use tch::{Kind, Tensor};

const NAME: &str = "l2p";

/// Bound of the uniform draw of the prompts and keys (the reference's `'uniform'` init).
pub const INIT_BOUND: f64 = 1.0;

/// Standard deviation of a fresh head's weights (timm's classifier initialisation).
pub const HEAD_INIT_STD: f64 = 0.02;

/// The registry entry of `l2p`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: NAME,
    family: Family::ParameterEfficient,
    summary: "L2P: a prompt pool with learned keys in a frozen transformer, prompts chosen per sample by its query feature",
    paper: "Wang et al., \"Learning to Prompt for Continual Learning\", CVPR 2022",
    params: &[
        Param {
            name: "pool_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("10"),
            doc: "prompts (and keys) in the pool (≥ 1)",
        },
        Param {
            name: "length",
            kind: ParamKind::Count,
            default: ParamDefault::Value("5"),
            doc: "tokens per prompt (≥ 1)",
        },
        Param {
            name: "top_n",
            kind: ParamKind::Count,
            default: ParamDefault::Value("5"),
            doc: "prompts selected per sample by key-query cosine (1 ≤ top_n ≤ pool_size)",
        },
        Param {
            name: "pull_weight",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.1"),
            doc: "weight of the key-query pull, summed over the selected keys (finite, ≥ 0)",
        },
        Param {
            name: "train_mask",
            kind: ParamKind::Bool,
            default: ParamDefault::Value("true"),
            doc: "mask the logits of classes outside the current task in training",
        },
        Param {
            name: "batchwise",
            kind: ParamKind::Bool,
            default: ParamDefault::Value("true"),
            doc: "in training, one selection per batch: its most frequently chosen top_n prompts",
        },
        Param {
            name: "fresh_head",
            kind: ParamKind::Bool,
            default: ParamDefault::Value("true"),
            doc: "start from a newly drawn classifier head (the pre-trained backbone's head dropped)",
        },
    ],
    example: "pool_size = 10\nlength = 5\ntop_n = 5\npull_weight = 0.1",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: false,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// L2P's hyper-parameters (see the crate docs; defaults in [`DESCRIPTOR`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L2pParams {
    pub pool_size: usize,
    pub length: usize,
    pub top_n: usize,
    pub pull_weight: f64,
    pub train_mask: bool,
    pub batchwise: bool,
    pub fresh_head: bool,
}

/// The pool's variables in the network's store.
#[derive(Debug)]
struct Pool {
    /// `[pool_size, length, width]`.
    prompts: Tensor,
    /// `[pool_size, width]`.
    keys: Tensor,
}

/// L2P (see the crate docs).
#[derive(Debug)]
pub struct L2p {
    params: L2pParams,
    pool: Option<Pool>,
    /// Prompts and keys from [`Method::load_state`], written into the pool when it binds.
    loaded: Option<(Tensor, Tensor)>,
    /// `[classes]` boolean: the classes outside the current task.
    not_current: Option<Tensor>,
}

/// Registry factory for `l2p`.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(L2p::new(DESCRIPTOR.parse(params)?)?))
}

/// `x / max(‖x‖, 10⁻⁶)` along the last dimension, as the reference's `l2_normalize`
/// (`x · rsqrt(max(Σx², 10⁻¹²))`).
pub fn l2_normalize(x: &Tensor) -> Tensor {
    x * x
        .square()
        .sum_dim_intlist(&[-1i64][..], true, Kind::Float)
        .clamp_min(1e-12)
        .rsqrt()
}

/// The cosine similarities `[B, M]` of the queries `[B, D]` to the keys `[M, D]`, and the
/// `top_n` most similar keys of each query, `[B, top_n]` int64 pool indices in decreasing
/// similarity, equal similarities in increasing index (a stable sort on the device).
pub fn select(queries: &Tensor, keys: &Tensor, top_n: i64) -> (Tensor, Tensor) {
    let cosine = l2_normalize(queries).matmul(&l2_normalize(keys).tr());
    let indices = cosine.argsort_stable(true, 1, true).narrow(1, 0, top_n);
    (indices, cosine)
}

/// Batch-wise selection: the `top_n` pool indices (of `pool_size`) chosen most often in
/// `indices` (`[B, top_n]`), in decreasing count, equal counts in increasing index, for every
/// sample: `[B, top_n]`. Counted on the device (no host read, static shapes).
pub fn batchwise(indices: &Tensor, pool_size: i64, top_n: i64) -> Tensor {
    let flat = indices.flatten(0, -1);
    let counts = Tensor::zeros([pool_size], (Kind::Float, indices.device())).scatter_add(
        0,
        &flat,
        &Tensor::ones_like(&flat).to_kind(Kind::Float),
    );
    let major = counts.argsort_stable(true, 0, true).narrow(0, 0, top_n);
    major.unsqueeze(0).expand([indices.size()[0], top_n], false)
}

/// The key–query pull `(1/B) Σ_b Σ_i (1 − cosine[b, indices[b, i]])` of the similarities
/// `cosine` (`[B, M]`) at the selected `indices` (`[B, N]`): a scalar.
pub fn pull_loss(cosine: &Tensor, indices: &Tensor) -> Tensor {
    let selected = cosine.gather(1, indices, false);
    (selected.ones_like() - selected)
        .sum_dim_intlist(&[1i64][..], false, Kind::Float)
        .mean(Kind::Float)
}

/// `logits` (`[B, C]`) with the classes `masked` (`[C]` boolean) at −∞: they get neither
/// probability nor gradient in a cross-entropy.
pub fn mask_classes(logits: &Tensor, masked: &Tensor) -> Tensor {
    logits.masked_fill(masked, f64::NEG_INFINITY)
}

/// The query of each input: the model's features without prompts, `[B, D]`, no gradient.
pub fn query(model: &dyn Backbone, inputs: &Tensor) -> Tensor {
    model.set_prompt(None);
    let _no_grad = tch::no_grad_guard();
    model.features(inputs, false)
}

impl L2p {
    pub fn new(params: L2pParams) -> Result<Self, TrainError> {
        if params.pool_size == 0 {
            return Err(invalid(NAME, "`pool_size` must be at least 1".into()));
        }
        if params.length == 0 {
            return Err(invalid(NAME, "`length` must be at least 1".into()));
        }
        if params.top_n == 0 || params.top_n > params.pool_size {
            return Err(invalid(
                NAME,
                format!(
                    "`top_n` must be between 1 and `pool_size` ({}), got {}",
                    params.pool_size, params.top_n
                ),
            ));
        }
        if !(params.pull_weight.is_finite() && params.pull_weight >= 0.0) {
            return Err(invalid(
                NAME,
                format!(
                    "`pull_weight` must be finite and ≥ 0, got {}",
                    params.pull_weight
                ),
            ));
        }
        Ok(Self {
            params,
            pool: None,
            loaded: None,
            not_current: None,
        })
    }

    /// The prompts `[pool_size, length, width]` and keys `[pool_size, width]`, once bound.
    pub fn pool(&self) -> Option<(&Tensor, &Tensor)> {
        self.pool.as_ref().map(|p| (&p.prompts, &p.keys))
    }

    /// The width of the transformer `model`; an error naming `model.kind` otherwise.
    fn width(model: &dyn Backbone) -> Result<i64, TrainError> {
        match model.transformer_shape() {
            Some((width, _)) => Ok(width),
            None => Err(error(
                NAME,
                "L2P needs a transformer, whose input sequence takes the selected prompts: \
                 set `model.kind = \"vit\"`"
                    .into(),
            )),
        }
    }

    /// Freezes the backbone and creates the pool (first task only), drawn from the seed or
    /// written from a loaded state.
    fn bind(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let width = Self::width(ctx.model())?;
        let (m, l) = (self.params.pool_size as i64, self.params.length as i64);
        let prompt_shape = [m, l, width];
        let key_shape = [m, width];
        if let Some((prompts, keys)) = &self.loaded
            && (prompts.size() != prompt_shape || keys.size() != key_shape)
        {
            return Err(error(
                NAME,
                format!(
                    "the state's prompts are {:?} and keys {:?}, but this pool's are {:?} and {:?}",
                    prompts.size(),
                    keys.size(),
                    prompt_shape,
                    key_shape
                ),
            ));
        }
        let fresh = self.loaded.is_none();
        if fresh && self.params.fresh_head {
            Self::draw_head(ctx);
        }
        freeze_backbone(ctx.vars(), ctx.model().head_name());
        let root = ctx.vars().root() / NAME;
        let prompts = root.var("prompts", &prompt_shape, tch::nn::Init::Const(0.0));
        let keys = root.var("keys", &key_shape, tch::nn::Init::Const(0.0));
        match self.loaded.take() {
            Some((p, k)) => {
                let _no_grad = tch::no_grad_guard();
                prompts.shallow_clone().copy_(&p);
                keys.shallow_clone().copy_(&k);
            }
            None => {
                let draw = Draw::Uniform { bound: INIT_BOUND };
                fill(&prompts, draw, derive(ctx.seed, "l2p/prompts"));
                fill(&keys, draw, derive(ctx.seed, "l2p/keys"));
            }
        }
        self.pool = Some(Pool { prompts, keys });
        Ok(())
    }

    /// A new classifier head: weights from `N(0, 0.02²)` truncated at ±2 (timm's
    /// `trunc_normal_(std=.02)`), biases zero, the weights drawn from the seed (`l2p/head`).
    fn draw_head(ctx: &TaskContext<'_>) {
        let head = ctx.model().head_name();
        let variables = ctx.vars().variables();
        if let Some(weight) = variables.get(&format!("{head}.weight")) {
            let draw = Draw::TruncatedNormal {
                std: HEAD_INIT_STD,
                lo: -2.0,
                hi: 2.0,
            };
            fill(weight, draw, derive(ctx.seed, "l2p/head"));
        }
        if let Some(bias) = variables.get(&format!("{head}.bias")) {
            fill(bias, Draw::Constant(0.0), 0);
        }
    }

    /// The prompted logits of `inputs` with the prompts of `indices` (`[B, N]`); the model's
    /// prompt is removed again afterwards.
    fn prompted_logits(
        &self,
        model: &dyn Backbone,
        pool: &Pool,
        inputs: &Tensor,
        indices: &Tensor,
        train: bool,
    ) -> Tensor {
        let size = pool.prompts.size();
        let batch = inputs.size()[0];
        let prompts = pool.prompts.index_select(0, &indices.flatten(0, -1)).view([
            batch,
            indices.size()[1] * size[1],
            size[2],
        ]);
        model.set_prompt(Some(prompts));
        let logits = model.forward_t(inputs, train);
        model.set_prompt(None);
        logits
    }
}

impl Method for L2p {
    fn name(&self) -> &str {
        NAME
    }

    /// The model must be a transformer.
    fn check_network(&self, network: &Network) -> Result<(), TrainError> {
        Self::width(network.model.as_ref()).map(|_| ())
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if self.pool.is_none() {
            self.bind(ctx)?;
        }
        self.not_current = Some(ctx.task.class_mask.to_device(ctx.device).logical_not());
        Ok(())
    }

    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        let Some(pool) = &self.pool else {
            return Err(error(NAME, "the pool is not bound: no task started".into()));
        };
        let model = ctx.model();
        let queries = query(model, &batch.inputs);
        let top_n = self.params.top_n as i64;
        let (mut indices, cosine) = select(&queries, &pool.keys, top_n);
        if self.params.batchwise {
            indices = batchwise(&indices, self.params.pool_size as i64, top_n);
        }
        let mut logits = self.prompted_logits(model, pool, &batch.inputs, &indices, true);
        if self.params.train_mask
            && let Some(not_current) = &self.not_current
        {
            logits = mask_classes(&logits, not_current);
        }
        let ce = ctx.training_loss(&logits, &batch.labels);
        Ok(ce + pull_loss(&cosine, &indices) * self.params.pull_weight)
    }

    fn fresh_optimizer_each_task(&self) -> bool {
        true
    }

    /// Shape-static and free of host reads: the query, the stable sort that selects, the
    /// batch-wise counts and the gathers all run on the device.
    fn capturable(&self) -> bool {
        true
    }

    /// Per-sample selection by the query, then the prompted model's logits; the network's
    /// own outputs before the pool exists.
    fn eval_logits(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
        let pool = self.pool.as_ref()?;
        let model = network.model.as_ref();
        let queries = query(model, inputs);
        let (indices, _) = select(&queries, &pool.keys, self.params.top_n as i64);
        Some(self.prompted_logits(model, pool, inputs, &indices, false))
    }

    /// The pool's prompts and keys (the head is one of the network's variables).
    fn state(&self) -> Vec<(String, Tensor)> {
        match (&self.pool, &self.loaded) {
            (Some(pool), _) => vec![
                ("prompts".into(), pool.prompts.detach().copy()),
                ("keys".into(), pool.keys.detach().copy()),
            ],
            (None, Some((p, k))) => vec![
                ("prompts".into(), p.shallow_clone()),
                ("keys".into(), k.shallow_clone()),
            ],
            (None, None) => Vec::new(),
        }
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        if self.pool.is_some() {
            return Err(error(
                NAME,
                "state must be loaded before the first task binds the pool".into(),
            ));
        }
        if state.is_empty() {
            return Ok(());
        }
        let (mut prompts, mut keys) = (None, None);
        for (name, tensor) in state {
            match name.as_str() {
                "prompts" => prompts = Some(tensor),
                "keys" => keys = Some(tensor),
                _ => return Err(error(NAME, format!("unexpected state tensor `{name}`"))),
            }
        }
        match (prompts, keys) {
            (Some(p), Some(k)) => {
                self.loaded = Some((p, k));
                Ok(())
            }
            _ => Err(error(
                NAME,
                "the state must hold both `prompts` and `keys`".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
