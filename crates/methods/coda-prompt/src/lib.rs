//! CODA-Prompt: an input-conditioned prompt assembled from a pool of learned components by
//! attention, prefix-tuned into a frozen transformer, with components added per task and
//! kept orthogonal.
//!
//! Smith, Karlinsky, Gutta, Cascante-Bonilla, Kim, Arbelle, Panda, Feris & Kira,
//! "CODA-Prompt: COntinual Decomposed Attention-based Prompting for Rehearsal-Free Continual
//! Learning", CVPR 2023.
//!
//! # The prompt
//!
//! Every chosen block `l` of the transformer has a pool of `M = pool_size` components: a
//! prompt component `P_m` (`length × D`, `D` the model's width), a key `K_m` (`D`) and an
//! attention vector `A_m` (`D`). The query `q(x)` is the frozen model's own class-token
//! feature ([`retain_models::Backbone::features`], the final-normed class token) computed
//! without any prompt, under `no_grad`. Each component's weight is the cosine similarity of
//! the attended query with its key, and the prompt is the weighted sum of the components:
//!
//! ```text
//! α_m(x) = cos(q(x) ⊙ A_m, K_m) = ⟨q ⊙ A_m, K_m⟩ / (‖q ⊙ A_m‖ ‖K_m‖)
//! p(x)   = Σ_m α_m(x) P_m                                   (length × D)
//! ```
//!
//! `p(x)` is split into its first `length / 2` rows, prepended to the block's attention keys,
//! and its last `length / 2` rows, prepended to its values (prefix tuning, through
//! [`retain_models::Backbone::set_prefix`] with a prefix per sample, `[B, length/2, D]`).
//! The sum runs over the components of the tasks seen so far: task `t` (0-based) of a
//! `T`-task stream owns components `s = t·⌊M/T⌋ … f = (t+1)·⌊M/T⌋`; while it trains, the sum
//! is over `0 … f` with the components `0 … s` of earlier tasks frozen (they take part in the
//! prompt but get no gradient); at evaluation it is over every trained task's components.
//!
//! # The loss
//!
//! ```text
//! L = CE(z_cur(x), y) + β · Σ_l [ ‖K Kᵀ − I‖²_mean + ‖A Aᵀ − I‖²_mean + ‖P Pᵀ − I‖²_mean ]
//! ```
//!
//! `z_cur` are the network's logits (head of the prompted class token) with every class
//! outside the current task set to −∞ (earlier tasks' classes and classes not seen yet:
//! the reference truncates the logits to the classes seen so far and then sets the earlier
//! ones to −∞). `K`, `A` are the `f × D` matrices of the keys and attention vectors of block
//! `l` used in the prompt (frozen rows included), `P` the `f × (length·D)` flattened
//! components, `I` the identity, and `‖X‖²_mean` the mean of the squared entries (the
//! reference's `ortho_penalty`: `((t @ t.T - I)**2).mean()`). `β = ortho_weight`. There is
//! no key–query matching loss: keys and attention vectors learn end to end through `α`.
//!
//! The backbone is frozen (`requires_grad` off); the current task's components, keys and
//! attention vectors (the variables `coda-prompt.<block>.prompt`, `.key`, `.attention`,
//! `⌊M/T⌋` rows each) and the head train. When a task ends its trained rows are appended to
//! the method's frozen components (its [`Method::state`]); when the next task starts the
//! variables are drawn afresh, orthogonal to every earlier component (Gram–Schmidt, below).
//! Each task starts with a fresh optimiser, as the reference builds one per task.
//!
//! # Initialisation
//!
//! A task's new rows of each of `K`, `A` and the flattened `P` are drawn from `N(0, 1)`
//! (seeded from the experiment seed, `coda-prompt/init/block<l>/task<t>/<part>`), made
//! orthogonal to the span of the earlier tasks' rows and to each other by Gram–Schmidt
//! (twice, for rounding) and normalised to unit length, as the reference's `gram_schmidt`
//! re-initialises the new components of each task.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `pool_size` | `100` | components `M` per block, shared out as `⌊M/T⌋` per task (≥ the number of tasks, ≤ the model's width) |
//! | `length` | `8` | rows of a prompt component (even, ≥ 2): `length/2` prefix keys and `length/2` prefix values |
//! | `layers` | blocks 0–4 | blocks that get a prompt (0-based); by default the first five, or every block of a shallower model; an explicit block beyond the model's depth is refused |
//! | `ortho_weight` | `0.0` | `β`, weight of the orthogonality penalty (≥ 0) |
//!
//! The defaults are the reference's for ImageNet-R and CIFAR-100 (`--prompt_param 100 8 0.0`
//! in its `experiments/*.sh`; the orthogonality weight is 0 there, "with updated code, now
//! can be 0", since the Gram–Schmidt initialisation of each task's components already makes
//! them orthogonal to the earlier ones). Its optimiser is Adam, learning rate 0.001, betas
//! (0.9, 0.999), batch 128, cosine schedule, 20 epochs (CIFAR-100, 10 tasks) or 50
//! (ImageNet-R, 10 tasks); set those in `[training]`.
//!
//! # Example
//!
//! ```toml
//! [model]
//! kind = "vit"
//! preset = "vit_base_patch16_224"
//! checkpoint = "results/pretrained/vit_base_patch16_224.safetensors"
//!
//! [pretrain]            # or a pretrained checkpoint, as above
//! classes = [0, 1, 2, 3, 4]
//! epochs = 1
//!
//! [method]
//! name = "coda-prompt"
//! pool_size = 100
//! length = 8
//! layers = [0, 1, 2, 3, 4]
//! ortho_weight = 0.0
//! ```
//!
//! The model must be a transformer (`[model] kind = "vit"`), refused otherwise before data
//! loads. A pretrained backbone (a checkpoint, or a `[pretrain]` stage) is what the method is
//! for: the query and every prompted feature come from it.
//!
//! # Peer conventions
//!
//! Translated from GT-RIPL/CODA-Prompt (`models/zoo.py` `CodaPrompt`, `learners/prompt.py`
//! `Prompt.update_model`), with Mammoth's and LAMDA-PILOT's `coda_prompt` as cross-checks:
//!
//! - the prompt rule, the key/value split of the prompt (first half keys, second half
//!   values), the layers 0–4, the per-task slices `s … f` with earlier slices detached, the
//!   orthogonality penalty (mean of squares, per block, over the rows in use), the default
//!   weights, the masked cross-entropy and the trained set (prompt parameters and head) are
//!   the reference's;
//! - the query is the frozen model's class-token feature in evaluation mode (the reference
//!   runs the same frozen ViT under `no_grad`; its ViT has no dropout, so this is the same);
//! - the reference projects each new vector onto every earlier row separately
//!   (`projection(u_j, v)`), which makes it orthogonal to them only while those rows are
//!   mutually orthogonal; after training they are not, and here the new rows are made
//!   orthogonal to the span of the earlier ones (an orthonormal basis of them first);
//! - the reference allocates all `M` components at the start and re-draws each task's slice;
//!   here only the current task's slice is a variable and earlier slices are kept by the
//!   method, so that no optimiser setting (weight decay included) can move them;
//! - evaluation reads out the classes of the trained tasks only (the others at −∞ in
//!   [`Method::eval_logits`]), as the reference's validation truncates the outputs to
//!   `[:, :valid_out_dim]`; without it, head rows the model had before the stream (a
//!   `[pretrain]` stage's classes), never trained against the current task's, would win;
//! - the reference's classifier is one linear layer over all classes, as here, trained with
//!   the current task's classes only; its `dw_k` class weights are all 1 by default;
//! - `pool_size` above the model's width is refused (keys and attention vectors are
//!   `D`-dimensional, so no more than `D` of them can be orthogonal; the reference would loop
//!   in its Gram–Schmidt);
//! - when `⌊M/T⌋ · T < M` the last `M mod T` components are never used, as in the reference.

use retain_models::Backbone;
use retain_peft::{error, freeze_backbone, invalid};
use retain_stream::seed;
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Batch, Method, Network, StepContext, TaskContext, TrainError};
use serde::Deserialize;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor, nn};

const NAME: &str = "coda-prompt";

/// The blocks prompted by default: the reference's layers 0–4.
pub const DEFAULT_LAYERS: usize = 5;

/// The registry entry of `coda-prompt`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: NAME,
    family: Family::ParameterEfficient,
    summary: "CODA-Prompt: an attention-weighted sum of per-task orthogonal prompt components, prefix-tuned into a frozen transformer",
    paper: "Smith et al., \"CODA-Prompt: COntinual Decomposed Attention-based Prompting for Rehearsal-Free Continual Learning\", CVPR 2023",
    params: &[
        Param {
            name: "pool_size",
            kind: ParamKind::Count,
            default: ParamDefault::Value("100"),
            doc: "prompt components per block, ⌊pool_size / tasks⌋ per task (≥ the number of tasks, ≤ the model's width)",
        },
        Param {
            name: "length",
            kind: ParamKind::Count,
            default: ParamDefault::Value("8"),
            doc: "rows of a prompt component (even, ≥ 2): half prefix keys, half prefix values",
        },
        Param {
            name: "layers",
            kind: ParamKind::Counts,
            default: ParamDefault::Derived("blocks 0 to 4, those the model has"),
            doc: "blocks that get a prompt (0-based, each below the model's depth, no repeats)",
        },
        Param {
            name: "ortho_weight",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.0"),
            doc: "weight of the orthogonality penalty on keys, attention vectors and components (≥ 0)",
        },
    ],
    example: "pool_size = 20\nlength = 8\nlayers = [0, 1, 2, 3]\northo_weight = 0.0",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: false,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// CODA-Prompt's hyper-parameters (see the crate docs; defaults in [`DESCRIPTOR`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodaParams {
    pub pool_size: usize,
    pub length: usize,
    /// `None`: blocks 0–4, those the model has.
    #[serde(default)]
    pub layers: Option<Vec<usize>>,
    pub ortho_weight: f64,
}

/// One block's components: `prompt` `[n, length, D]`, `key` and `attention` `[n, D]`.
pub struct Components {
    pub prompt: Tensor,
    pub key: Tensor,
    pub attention: Tensor,
}

impl Components {
    fn detached(&self) -> Self {
        Self {
            prompt: self.prompt.detach(),
            key: self.key.detach(),
            attention: self.attention.detach(),
        }
    }

    fn cat(&self, other: &Components) -> Self {
        Self {
            prompt: Tensor::cat(&[&self.prompt, &other.prompt], 0),
            key: Tensor::cat(&[&self.key, &other.key], 0),
            attention: Tensor::cat(&[&self.attention, &other.attention], 0),
        }
    }

    fn rows(&self) -> i64 {
        self.key.size()[0]
    }
}

/// What the first task fixes: the prompted blocks, the width and the components per task.
struct Bound {
    layers: Vec<usize>,
    per_task: i64,
    /// Per prompted block, the variables of the current task's components.
    current: Vec<Components>,
}

/// CODA-Prompt (see the crate docs).
pub struct CodaPrompt {
    pool_size: i64,
    length: i64,
    layers: Option<Vec<usize>>,
    ortho_weight: f64,
    bound: Option<Bound>,
    /// Per prompted block, the trained components of the finished tasks (`0` rows at first).
    frozen: Vec<Components>,
    /// The state a checkpoint gave before the first task, checked and adopted when it binds.
    loaded: Option<BTreeMap<String, Tensor>>,
    /// `[num_classes]` boolean: the classes of the trained tasks, the only ones evaluation
    /// reads out (the reference's `[:, :valid_out_dim]`).
    seen: Option<Tensor>,
}

/// The union of the class masks of `tasks`; `None` when there are none.
fn classes_of(tasks: &[retain_stream::Task]) -> Option<Tensor> {
    tasks
        .iter()
        .map(|t| t.class_mask.shallow_clone())
        .reduce(|a, b| a.logical_or(&b))
}

/// Registry factory for `coda-prompt`.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(CodaPrompt::new(DESCRIPTOR.parse(params)?)?))
}

/// `x / max(‖x‖, 1e-12)` along `dim` (PyTorch's `F.normalize`).
fn normalize(x: &Tensor, dim: i64) -> Tensor {
    x / x
        .norm_scalaropt_dim(2.0, [dim].as_slice(), true)
        .clamp_min(1e-12)
}

/// The weights `α[b, m] = cos(q_b ⊙ A_m, K_m)` of queries `q` (`[B, D]`) under attention
/// vectors `attention` and keys `key` (`[M, D]` each): `[B, M]`.
pub fn component_weights(q: &Tensor, attention: &Tensor, key: &Tensor) -> Tensor {
    let attended = normalize(&(q.unsqueeze(1) * attention.unsqueeze(0)), 2);
    (attended * normalize(key, 1).unsqueeze(0)).sum_dim_intlist([2].as_slice(), false, None)
}

/// The prompts `p_b = Σ_m α[b, m] P_m` of weights `alpha` (`[B, M]`) over components
/// `prompt` (`[M, L, D]`): `[B, L, D]`.
pub fn weighted_prompt(alpha: &Tensor, prompt: &Tensor) -> Tensor {
    let size = prompt.size();
    alpha
        .matmul(&prompt.reshape([size[0], size[1] * size[2]]))
        .reshape([-1, size[1], size[2]])
}

/// The orthogonality penalty of the rows of `t` (`[n, d]`): the mean of the squared entries
/// of `t tᵀ − I`.
pub fn ortho_penalty(t: &Tensor) -> Tensor {
    let n = t.size()[0];
    let eye = Tensor::eye(n, (t.kind(), t.device()));
    (t.matmul(&t.tr()) - eye).square().mean(t.kind())
}

/// `new` unit rows of width `d`, orthogonal to each other and to the span of the rows of
/// `old` (`[s, d]`, any device): standard normal draws seeded by `seed`, by Gram–Schmidt
/// (each projection done twice, for rounding). `float64` on the host; `None` when the rows
/// cannot be orthogonal (`d` too small for them).
pub fn orthogonal_rows(old: &Tensor, new: i64, seed: u64) -> Option<Tensor> {
    let old = old.detach().to_device(Device::Cpu).to_kind(Kind::Double);
    let d = old.size()[1];
    let mut basis = Tensor::zeros([0, d], (Kind::Double, Device::Cpu));
    let project_out = |v: Tensor, basis: &Tensor| -> Tensor {
        let mut v = v;
        for _ in 0..2 {
            v = &v - basis.tr().matmul(&basis.matmul(&v));
        }
        v
    };
    for r in 0..old.size()[0] {
        let v = project_out(old.get(r), &basis);
        let norm = v.norm().double_value(&[]);
        if norm > 1e-8 {
            basis = Tensor::cat(&[basis, (v / norm).unsqueeze(0)], 0);
        }
    }
    let draws = retain_models::init::sample(
        retain_models::init::Draw::Normal { std: 1.0 },
        &[new, d],
        seed,
    )
    .to_kind(Kind::Double);
    let mut rows = Vec::with_capacity(new as usize);
    for r in 0..new {
        let v = project_out(draws.get(r), &basis);
        let norm = v.norm().double_value(&[]);
        if norm < 1e-8 {
            return None;
        }
        let unit = (v / norm).unsqueeze(0);
        basis = Tensor::cat(&[&basis, &unit], 0);
        rows.push(unit);
    }
    Some(Tensor::cat(&rows, 0))
}

impl CodaPrompt {
    pub fn new(params: CodaParams) -> Result<Self, TrainError> {
        if params.pool_size == 0 {
            return Err(invalid(NAME, "`pool_size` must be at least 1".into()));
        }
        if params.length < 2 || !params.length.is_multiple_of(2) {
            return Err(invalid(
                NAME,
                format!(
                    "`length` must be even and at least 2 (half keys, half values), got {}",
                    params.length
                ),
            ));
        }
        if !(params.ortho_weight.is_finite() && params.ortho_weight >= 0.0) {
            return Err(invalid(
                NAME,
                format!(
                    "`ortho_weight` must be finite and ≥ 0, got {}",
                    params.ortho_weight
                ),
            ));
        }
        if let Some(layers) = &params.layers {
            if layers.is_empty() {
                return Err(invalid(
                    NAME,
                    "`layers` must name at least one block (leave it out for blocks 0 to 4)".into(),
                ));
            }
            let mut sorted = layers.clone();
            sorted.sort_unstable();
            if let Some(pair) = sorted.windows(2).find(|p| p[0] == p[1]) {
                return Err(invalid(
                    NAME,
                    format!("`layers` names block {} twice", pair[0]),
                ));
            }
        }
        Ok(Self {
            pool_size: params.pool_size as i64,
            length: params.length as i64,
            layers: params.layers.map(|mut l| {
                l.sort_unstable();
                l
            }),
            ortho_weight: params.ortho_weight,
            bound: None,
            frozen: Vec::new(),
            loaded: None,
            seen: None,
        })
    }

    /// The prompted blocks, ascending (empty before the first task).
    pub fn layers(&self) -> Vec<usize> {
        self.bound
            .as_ref()
            .map(|b| b.layers.clone())
            .unwrap_or_default()
    }

    /// The trained components of the finished tasks, per prompted block.
    pub fn frozen(&self) -> &[Components] {
        &self.frozen
    }

    /// The tasks whose components are trained and frozen.
    pub fn tasks_done(&self) -> i64 {
        match (&self.bound, self.frozen.first()) {
            (Some(bound), Some(frozen)) => frozen.rows() / bound.per_task,
            _ => 0,
        }
    }

    /// The transformer's width and the prompted blocks; an error when the model is not a
    /// transformer, `layers` names a block beyond its depth or `pool_size` exceeds its width.
    fn layout(&self, model: &dyn Backbone) -> Result<(i64, Vec<usize>), TrainError> {
        let Some((width, depth)) = model.transformer_shape() else {
            return Err(error(
                NAME,
                "CODA-Prompt needs a transformer, whose attention takes the prompt: \
                 set `model.kind = \"vit\"`"
                    .into(),
            ));
        };
        let layers = match &self.layers {
            Some(layers) => layers.clone(),
            None => (0..depth.min(DEFAULT_LAYERS)).collect(),
        };
        if let Some(&block) = layers.iter().find(|&&b| b >= depth) {
            return Err(error(
                NAME,
                format!(
                    "`method.layers` names block {block}, but the model has {depth} (0 to {})",
                    depth.saturating_sub(1)
                ),
            ));
        }
        if self.pool_size > width {
            return Err(error(
                NAME,
                format!(
                    "`method.pool_size` is {}, but at most the model's width ({width}) keys \
                     can be orthogonal",
                    self.pool_size
                ),
            ));
        }
        Ok((width, layers))
    }

    /// Freezes the backbone and creates the current task's variables (first task only).
    fn bind(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let (width, layers) = self.layout(ctx.model())?;
        let tasks = ctx.stream.tasks.len() as i64;
        let per_task = self.pool_size / tasks.max(1);
        if per_task == 0 {
            return Err(error(
                NAME,
                format!(
                    "`method.pool_size` is {}, fewer than the stream's {tasks} tasks: every \
                     task needs a component",
                    self.pool_size
                ),
            ));
        }
        let device = ctx.device;
        let frozen = match self.loaded.take() {
            Some(mut state) => {
                let mut frozen = Vec::with_capacity(layers.len());
                for &l in &layers {
                    let mut take = |part: &str, shape: &[i64]| -> Result<Tensor, TrainError> {
                        let name = format!("block{l}.{part}");
                        let t = state.remove(&name).ok_or_else(|| {
                            error(NAME, format!("the checkpoint has no `{name}`"))
                        })?;
                        let size = t.size();
                        if size[1..] != shape[1..] || size[0] % per_task != 0 {
                            return Err(error(
                                NAME,
                                format!("the checkpoint's `{name}` has shape {size:?}"),
                            ));
                        }
                        Ok(t.to_device(device).to_kind(Kind::Float))
                    };
                    frozen.push(Components {
                        prompt: take("prompt", &[0, self.length, width])?,
                        key: take("key", &[0, width])?,
                        attention: take("attention", &[0, width])?,
                    });
                }
                if let Some(name) = state.keys().next() {
                    return Err(error(
                        NAME,
                        format!("the checkpoint holds `{name}`, which no prompted block has"),
                    ));
                }
                frozen
            }
            None => layers
                .iter()
                .map(|_| Components {
                    prompt: Tensor::zeros([0, self.length, width], (Kind::Float, device)),
                    key: Tensor::zeros([0, width], (Kind::Float, device)),
                    attention: Tensor::zeros([0, width], (Kind::Float, device)),
                })
                .collect(),
        };
        freeze_backbone(ctx.vars(), ctx.model().head_name());
        let root = ctx.vars().root() / NAME;
        let zero = nn::Init::Const(0.0);
        let current = layers
            .iter()
            .map(|&l| {
                let path = &root / l;
                Components {
                    prompt: path.var("prompt", &[per_task, self.length, width], zero),
                    key: path.var("key", &[per_task, width], zero),
                    attention: path.var("attention", &[per_task, width], zero),
                }
            })
            .collect();
        self.frozen = frozen;
        self.bound = Some(Bound {
            layers,
            per_task,
            current,
        });
        Ok(())
    }

    /// Draws the current task's components orthogonal to the frozen ones.
    fn draw_current(&self, task: usize, master: u64) -> Result<(), TrainError> {
        let bound = self.bound.as_ref().expect("bound");
        let _no_grad = tch::no_grad_guard();
        for ((&l, current), frozen) in bound.layers.iter().zip(&bound.current).zip(&self.frozen) {
            let parts = [
                ("prompt", &current.prompt, &frozen.prompt),
                ("key", &current.key, &frozen.key),
                ("attention", &current.attention, &frozen.attention),
            ];
            for (part, variable, old) in parts {
                let purpose = format!("{NAME}/init/block{l}/task{task}/{part}");
                let old = old.flatten(1, -1);
                let rows = orthogonal_rows(&old, bound.per_task, seed::derive(master, &purpose))
                    .ok_or_else(|| {
                        error(
                            NAME,
                            format!(
                                "no room for {} more orthogonal `{part}` rows in block {l}",
                                bound.per_task
                            ),
                        )
                    })?;
                let mut variable = variable.shallow_clone();
                variable.copy_(
                    &rows
                        .reshape(variable.size())
                        .to_kind(variable.kind())
                        .to_device(variable.device()),
                );
            }
        }
        Ok(())
    }

    /// Removes every prompt from the model.
    fn clear(&self, model: &dyn Backbone) {
        if let Some(bound) = &self.bound {
            for &l in &bound.layers {
                model.set_prefix(l, None);
            }
        }
    }

    /// Prompts the model for `inputs`: the frozen model's query, then in every prompted block
    /// the weighted sum of the components in use (the frozen ones and, in training, the
    /// current task's). Returns the orthogonality penalty (training with `ortho_weight > 0`).
    fn attach(
        &self,
        model: &dyn Backbone,
        inputs: &Tensor,
        train: bool,
    ) -> Result<Option<Tensor>, TrainError> {
        let bound = self.bound.as_ref().expect("bound");
        self.clear(model);
        let q = tch::no_grad(|| model.features(inputs, false));
        let half = self.length / 2;
        let mut penalty: Option<Tensor> = None;
        for ((&l, current), frozen) in bound.layers.iter().zip(&bound.current).zip(&self.frozen) {
            let used = if train {
                frozen.detached().cat(current)
            } else {
                frozen.detached()
            };
            let alpha = component_weights(&q, &used.attention, &used.key);
            let prompt = weighted_prompt(&alpha, &used.prompt);
            let keys = prompt.narrow(1, 0, half);
            let values = prompt.narrow(1, half, half);
            if !model.set_prefix(l, Some((keys, values))) {
                return Err(error(
                    NAME,
                    format!("the model refused a prefix on block {l}"),
                ));
            }
            if train && self.ortho_weight > 0.0 {
                let term = ortho_penalty(&used.key)
                    + ortho_penalty(&used.attention)
                    + ortho_penalty(&used.prompt.flatten(1, -1));
                penalty = Some(match penalty {
                    Some(p) => p + term,
                    None => term,
                });
            }
        }
        Ok(penalty.map(|p| p * self.ortho_weight))
    }

    /// The logits of the prompted model for `inputs` (prompts removed afterwards).
    fn prompted_logits(
        &self,
        model: &dyn Backbone,
        inputs: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>), TrainError> {
        let penalty = self.attach(model, inputs, train);
        let penalty = match penalty {
            Ok(p) => p,
            Err(e) => {
                self.clear(model);
                return Err(e);
            }
        };
        let logits = model.forward_t(inputs, train);
        self.clear(model);
        Ok((logits, penalty))
    }
}

impl Method for CodaPrompt {
    fn name(&self) -> &str {
        NAME
    }

    /// The model must be a transformer with every block `layers` names and a width of at
    /// least `pool_size`.
    fn check_network(&self, network: &Network) -> Result<(), TrainError> {
        self.layout(network.model.as_ref()).map(|_| ())
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if self.bound.is_none() {
            self.bind(ctx)?;
        }
        let done = self.tasks_done();
        if ctx.task.index as i64 != done {
            return Err(error(
                NAME,
                format!(
                    "task {} starts, but the components of {done} tasks are trained",
                    ctx.task.index
                ),
            ));
        }
        self.seen = classes_of(&ctx.stream.tasks[..ctx.task.index]);
        self.draw_current(ctx.task.index, ctx.seed)
    }

    /// Cross-entropy over the current task's classes of the prompted model, plus the
    /// orthogonality penalty.
    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        if self.bound.is_none() {
            return Err(error(NAME, "a step before the first task started".into()));
        }
        let (logits, penalty) = self.prompted_logits(ctx.model(), &batch.inputs, true)?;
        let outside = ctx.stream.own_task_classes(&batch.labels).logical_not();
        let ce = logits
            .masked_fill(&outside, f64::NEG_INFINITY)
            .cross_entropy_for_logits(&batch.labels);
        Ok(match penalty {
            Some(p) => ce + p,
            None => ce,
        })
    }

    /// Appends the current task's trained components to the frozen ones.
    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.seen = classes_of(&ctx.stream.tasks[..=ctx.task.index]);
        let bound = self.bound.as_ref().expect("bound");
        let _no_grad = tch::no_grad_guard();
        self.frozen = self
            .frozen
            .iter()
            .zip(&bound.current)
            .map(|(frozen, current)| {
                let copy = Components {
                    prompt: current.prompt.detach().copy(),
                    key: current.key.detach().copy(),
                    attention: current.attention.detach().copy(),
                };
                frozen.cat(&copy)
            })
            .collect();
        Ok(())
    }

    fn fresh_optimizer_each_task(&self) -> bool {
        true
    }

    fn capturable(&self) -> bool {
        true
    }

    /// The prompted model's logits, prompts from every trained task's components, with the
    /// classes of tasks not trained yet at −∞; the network's own outputs before any task is
    /// trained.
    fn eval_logits(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
        if self.bound.is_none() || self.tasks_done() == 0 {
            return None;
        }
        let (logits, _) = self
            .prompted_logits(network.model.as_ref(), inputs, false)
            .ok()?;
        Some(match &self.seen {
            Some(seen) => logits.masked_fill(&seen.logical_not(), f64::NEG_INFINITY),
            None => logits,
        })
    }

    /// The frozen components: `block<l>.prompt`, `block<l>.key`, `block<l>.attention`.
    fn state(&self) -> Vec<(String, Tensor)> {
        let Some(bound) = &self.bound else {
            return Vec::new();
        };
        let mut state = Vec::new();
        for (&l, frozen) in bound.layers.iter().zip(&self.frozen) {
            state.push((format!("block{l}.prompt"), frozen.prompt.copy()));
            state.push((format!("block{l}.key"), frozen.key.copy()));
            state.push((format!("block{l}.attention"), frozen.attention.copy()));
        }
        state
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        if self.bound.is_some() {
            return Err(error(
                NAME,
                "a state is loaded before the first task only".into(),
            ));
        }
        self.loaded = if state.is_empty() {
            None
        } else {
            Some(state.into_iter().collect())
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests;
