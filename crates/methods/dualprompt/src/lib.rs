//! DualPrompt: a general prompt shared by every task and an expert prompt per task, both
//! prefix-tuned into the attention of a frozen transformer; at test time each sample's expert
//! prompt is the one whose key is nearest its query.
//!
//! # Prompts
//!
//! * The **G-prompt** (general): in every block of `g_layers`, `g_length` learned keys and
//!   `g_length` learned values (`[g_length, width]` each) prepended to the keys and values the
//!   block's attention computes from its input (prefix tuning, as the reference's
//!   `use_prefix_tune_for_g_prompt`). One G-prompt for all tasks; it trains on every task.
//! * The **E-prompts** (expert): one per task of the stream (the pool size is the number of
//!   tasks), each `e_length` keys and values in every block of `e_layers`, and a **key**
//!   `k_t ∈ R^width` per task to pick it by.
//!
//! Queries of the attention stay the sequence's own, so the output keeps its length and the
//! head reads the final-normed class token as without prompts. All of the backbone's
//! variables are frozen (`requires_grad` off); the G-prompt, the current task's E-prompt and
//! key, and the one shared head (over every class of the stream) train.
//!
//! # Losses and selection
//!
//! The query of an input `x` is the frozen model's feature without any prompt,
//! `q(x) = f(x)` (the final-normed class token; the reference's `cls_features` of its
//! `original_model`). With `cos(a, b) = a·b / (max(‖a‖, ε)·max(‖b‖, ε))`, `ε = 1e-6`:
//!
//! * **Training on task `t`** (its id is known): every sample gets the G-prompt and `E_t`.
//!   The loss of a batch `B` is
//!
//!   `L = CE(mask_t(h(x; G, E_t)), y) + λ · (1/|B|) Σ_{x∈B} (1 − cos(q(x), k_t))`
//!
//!   where `mask_t` sets the logits of classes outside task `t` to `−∞` (`train_mask`, the
//!   reference's `--train_mask`) and `λ = pull_weight`. The second term (the key–query
//!   matching, "pull" loss) pulls task `t`'s key towards its queries; only `k_t` receives its
//!   gradient, since the query comes from the frozen model.
//! * **Test** (no task id): sample `x`'s E-prompt is `E_{j(x)}` with
//!   `j(x) = argmax_{j ≤ t} cos(q(x), k_j)` over the tasks trained so far, each sample its
//!   own (`[B, e_length, width]` prefixes), and the G-prompt. The logits of classes of no
//!   trained task are set to `−∞` (Mammoth's DualPrompt reads only the outputs of the
//!   classes seen so far). This runs in [`Method::eval_logits`], since the prompts depend on
//!   the input.
//!
//! `E_t` starts, for `t > 0`, as a copy of the trained `E_{t−1}` (the reference's
//! `shared_prompt_pool = True`); `E_0`, the keys (not shared: `shared_prompt_key = False`)
//! and the G-prompt start from `U(−1, 1)` (the reference's `prompt_init` and
//! `prompt_key_init = "uniform"`), drawn on the host from the experiment seed
//! (`retain_stream::seed::derive(seed, "dualprompt/init/<variable>")`). Each task starts with
//! a fresh optimiser (the reference's `reinit_optimizer`), and only the current task's
//! E-prompt and key are trainable, so an earlier task's E-prompt and key stay exactly as
//! that task left them, whatever the optimiser (weight decay included).
//!
//! The model must be a transformer (`[model] kind = "vit"`); anything else is refused before
//! data loads. Start from a pretrained backbone (`[model] checkpoint`, or a `[pretrain]`
//! stage): the queries and the frozen features are the pretrained model's.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `g_layers` | `[0, 1]` within the model | blocks that get the G-prompt (0-based, each below the model's depth, no repeats, none shared with `e_layers`; `[]` for none) |
//! | `e_layers` | `[2, 3, 4]` within the model | blocks that get the E-prompts (at least one; same rules) |
//! | `g_length` | `5` | keys (and as many values) of the G-prompt per block (≥ 1) |
//! | `e_length` | `5` | keys (and as many values) of each E-prompt per block (≥ 1) |
//! | `pull_weight` | `1.0` | `λ`, the weight of the key–query matching loss (finite, ≥ 0) |
//! | `train_mask` | `true` | mask the logits of classes outside the current task in the training loss |
//!
//! Left out, `g_layers` and `e_layers` are the published blocks limited to the model's
//! depth (on a 4-block model: G at 0–1, E at 2–3); a model too shallow for any published
//! E-prompt block is refused, asking for `e_layers`. Given explicitly, a block beyond the
//! model is refused naming the key.
//!
//! # Example
//!
//! ```toml
//! [model]
//! kind = "vit"           # 4 blocks: G-prompt at blocks 0-1, E-prompts at 2-3
//!
//! [pretrain]             # or `[model] checkpoint = "…"`
//! classes = [0, 1, 2, 3, 4]
//! epochs = 1
//!
//! [method]
//! name = "dualprompt"
//! g_layers = [0, 1]
//! e_layers = [2, 3]
//! g_length = 5
//! e_length = 5
//! pull_weight = 1.0
//! train_mask = true
//! ```
//!
//! # Peer conventions
//!
//! Translated from the reference implementation (JH-LEE-KR/dualprompt-pytorch, the
//! PyTorch port of google-research/l2p's DualPrompt, with its CIFAR-100 configuration):
//! prefix tuning for both prompts, G at blocks 0–1 with length 5, E at blocks 2–4 with
//! length 5 (the paper's ImageNet-R setting uses E-prompts of length 20: set `e_length`),
//! one E-prompt and key per task, top-1 selection by cosine similarity of the frozen model's
//! `[CLS]` query, the task id choosing `E_t` in training (`use_prompt_mask`), the pull
//! constraint with coefficient 1.0, the training logits masked to the current task's
//! classes, uniform initialisation in `[−1, 1]`, `E_t` copied from `E_{t−1}` at a task's
//! start, a fresh optimiser per task, one linear head over every class on the class token.
//!
//! Differences:
//!
//! * `g_length` / `e_length` count the prefix's keys, and as many values; the reference's
//!   `length` means the same (`[2, length, heads, head_dim]` per block). The paper writes a
//!   prompt of length `L` as `L/2` keys and `L/2` values.
//! * The pull term is `λ·(1 − cos)` where the reference subtracts `λ·cos`: the same gradient,
//!   a loss that stays non-negative.
//! * Test-time selection chooses among the keys of the tasks trained so far; the reference
//!   compares against the whole pool, untrained keys (random draws) included.
//! * At test time the logits of classes of no trained task are masked (as Mammoth's
//!   DualPrompt); the reference reads every output, which its freshly made head keeps low for
//!   unseen classes. Here the head may come from a pretraining stage that trained those
//!   classes.
//! * The head is the network's own, not re-created; the reference replaces the pretrained
//!   head with a new one for the stream's classes.
//! * The optimiser, learning rate and schedule are the run's `[training]` ones (the
//!   reference: Adam, lr 0.005 for batch 24 scaled by batch/256, constant).
//!
//! Wang, Zhang, Ebrahimi, Sun, Zhang, Lee, Ren, Su, Perot, Dy & Pfister, "DualPrompt:
//! Complementary Prompting for Rehearsal-free Continual Learning", ECCV 2022.

use retain_models::Backbone;
use retain_models::init::{Draw, fill};
use retain_stream::seed::derive;
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Batch, Method, Network, StepContext, TaskContext, TrainError};
use serde::Deserialize;
use tch::{Kind, Tensor, nn};

const NAME: &str = "dualprompt";

/// The published blocks of the G-prompt.
pub const PUBLISHED_G_LAYERS: [usize; 2] = [0, 1];
/// The published blocks of the E-prompts.
pub const PUBLISHED_E_LAYERS: [usize; 3] = [2, 3, 4];
/// Bound of the uniform initial draw of the prompts and keys, `U(−1, 1)`.
pub const INIT_BOUND: f64 = 1.0;
/// `ε` of the cosine similarity's norms.
pub const COS_EPS: f64 = 1e-6;

/// The registry entry of `dualprompt`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: NAME,
    family: Family::ParameterEfficient,
    summary: "DualPrompt: a shared G-prompt and per-task E-prompts prefix-tuned into a frozen transformer, each test sample's E-prompt chosen by its query's nearest key",
    paper: "Wang et al., \"DualPrompt: Complementary Prompting for Rehearsal-free Continual Learning\", ECCV 2022",
    params: &[
        Param {
            name: "g_layers",
            kind: ParamKind::Counts,
            default: ParamDefault::Derived("[0, 1], limited to the model's blocks"),
            doc: "blocks that get the G-prompt (0-based, below the model's depth, no repeats, none in e_layers; [] for none)",
        },
        Param {
            name: "e_layers",
            kind: ParamKind::Counts,
            default: ParamDefault::Derived("[2, 3, 4], limited to the model's blocks"),
            doc: "blocks that get the E-prompts (at least one; 0-based, below the model's depth, no repeats)",
        },
        Param {
            name: "g_length",
            kind: ParamKind::Count,
            default: ParamDefault::Value("5"),
            doc: "prefix keys (and as many values) of the G-prompt per block (≥ 1)",
        },
        Param {
            name: "e_length",
            kind: ParamKind::Count,
            default: ParamDefault::Value("5"),
            doc: "prefix keys (and as many values) of each E-prompt per block (≥ 1; the paper's ImageNet-R setting: 20)",
        },
        Param {
            name: "pull_weight",
            kind: ParamKind::Float,
            default: ParamDefault::Value("1.0"),
            doc: "weight λ of the key-query matching loss λ·(1 − cos(q, k_t)) (finite, ≥ 0)",
        },
        Param {
            name: "train_mask",
            kind: ParamKind::Bool,
            default: ParamDefault::Value("true"),
            doc: "mask the logits of classes outside the current task in the training loss",
        },
    ],
    example: "g_layers = [0, 1]\ne_layers = [2, 3]\ng_length = 5\ne_length = 5\npull_weight = 1.0",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: false,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// DualPrompt's hyper-parameters (see the crate docs; defaults in [`DESCRIPTOR`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DualPromptParams {
    /// `None`: the published blocks within the model.
    #[serde(default)]
    pub g_layers: Option<Vec<usize>>,
    /// `None`: the published blocks within the model.
    #[serde(default)]
    pub e_layers: Option<Vec<usize>>,
    pub g_length: usize,
    pub e_length: usize,
    pub pull_weight: f64,
    pub train_mask: bool,
}

/// The blocks of each prompt on a given model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub width: i64,
    pub g_layers: Vec<usize>,
    pub e_layers: Vec<usize>,
}

/// One block's prefix: keys and values.
struct Prefix {
    block: usize,
    key: Tensor,
    value: Tensor,
}

/// The method's variables, once made.
struct Bound {
    layout: Layout,
    /// The G-prompt, one prefix per block of `g_layers`.
    g: Vec<Prefix>,
    /// Per task, the E-prompt: one prefix per block of `e_layers`.
    e: Vec<Vec<Prefix>>,
    /// Per task, the key `[width]`.
    keys: Vec<Tensor>,
    /// Every variable of the method with its store name, in creation order.
    named: Vec<(String, Tensor)>,
}

/// DualPrompt (see the crate docs).
pub struct DualPrompt {
    params: DualPromptParams,
    bound: Option<Bound>,
    /// The task being trained, or the last one trained.
    current: usize,
    /// `[classes]` bool: the classes of tasks `0..=current`.
    seen: Option<Tensor>,
    /// Values from [`Method::load_state`], written into the variables when they are made.
    loaded: Option<Vec<(String, Tensor)>>,
}

/// Registry factory for `dualprompt`.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(DualPrompt::new(DESCRIPTOR.parse(params)?)?))
}

fn invalid(message: String) -> TrainError {
    TrainError::MethodParams {
        method: NAME.to_owned(),
        message,
    }
}

fn error(message: String) -> TrainError {
    TrainError::Method {
        method: NAME.to_owned(),
        message,
    }
}

fn check_list(key: &str, blocks: &[usize]) -> Result<(), TrainError> {
    let mut sorted = blocks.to_vec();
    sorted.sort_unstable();
    if let Some(pair) = sorted.windows(2).find(|p| p[0] == p[1]) {
        return Err(invalid(format!("`{key}` names block {} twice", pair[0])));
    }
    Ok(())
}

/// Rows of `x` (`[…, D]`) divided by their norms, each norm at least [`COS_EPS`].
fn unit(x: &Tensor) -> Tensor {
    x / x
        .norm_scalaropt_dim(2, [-1i64].as_slice(), true)
        .clamp_min(COS_EPS)
}

/// The cosine similarity of every query (`[B, D]`) with every key (`[T, D]`): `[B, T]`.
pub fn cosine_similarities(queries: &Tensor, keys: &Tensor) -> Tensor {
    unit(queries).matmul(&unit(keys).tr())
}

/// For each query (`[B, D]`), the index of the key (`[T, D]`) nearest it by cosine
/// similarity: `[B]` int64.
pub fn nearest_keys(queries: &Tensor, keys: &Tensor) -> Tensor {
    cosine_similarities(queries, keys).argmax(1, false)
}

/// The key–query matching loss `(1/B) Σ_b (1 − cos(q_b, key))` of queries `[B, D]` and one
/// key `[D]` (a scalar, not yet weighted).
pub fn pull_loss(queries: &Tensor, key: &Tensor) -> Tensor {
    let cos = cosine_similarities(queries, &key.unsqueeze(0)).squeeze_dim(1);
    (cos.ones_like() - cos).mean(Kind::Float)
}

/// `logits` (`[B, C]`) with every class outside `classes` (`[C]` bool) at `−∞`.
pub fn mask_logits(logits: &Tensor, classes: &Tensor) -> Tensor {
    logits.masked_fill(&classes.logical_not(), f64::NEG_INFINITY)
}

impl DualPrompt {
    pub fn new(params: DualPromptParams) -> Result<Self, TrainError> {
        if params.g_length == 0 {
            return Err(invalid("`g_length` must be at least 1".into()));
        }
        if params.e_length == 0 {
            return Err(invalid("`e_length` must be at least 1".into()));
        }
        if !(params.pull_weight.is_finite() && params.pull_weight >= 0.0) {
            return Err(invalid(format!(
                "`pull_weight` must be finite and ≥ 0, got {}",
                params.pull_weight
            )));
        }
        if let Some(g) = &params.g_layers {
            check_list("g_layers", g)?;
        }
        if let Some(e) = &params.e_layers {
            if e.is_empty() {
                return Err(invalid(
                    "`e_layers` must name at least one block (leave it out for the published ones)"
                        .into(),
                ));
            }
            check_list("e_layers", e)?;
        }
        if let (Some(g), Some(e)) = (&params.g_layers, &params.e_layers)
            && let Some(block) = g.iter().find(|b| e.contains(b))
        {
            return Err(invalid(format!(
                "`g_layers` and `e_layers` both name block {block}"
            )));
        }
        Ok(Self {
            params,
            bound: None,
            current: 0,
            seen: None,
            loaded: None,
        })
    }

    /// The prompts' blocks on `model`; an error when it is not a transformer or a block is
    /// beyond it.
    pub fn layout(&self, model: &dyn Backbone) -> Result<Layout, TrainError> {
        let Some((width, depth)) = model.transformer_shape() else {
            return Err(error(
                "DualPrompt needs a transformer, whose attention takes the prompts' prefixes: \
                 set `model.kind = \"vit\"`"
                    .into(),
            ));
        };
        let resolve = |key: &str,
                       given: &Option<Vec<usize>>,
                       published: &[usize]|
         -> Result<Vec<usize>, TrainError> {
            let mut blocks = match given {
                Some(blocks) => {
                    if let Some(&block) = blocks.iter().find(|&&b| b >= depth) {
                        return Err(error(format!(
                            "`method.{key}` names block {block}, but the model has {depth} (0 to {})",
                            depth.saturating_sub(1)
                        )));
                    }
                    blocks.clone()
                }
                None => published.iter().copied().filter(|&b| b < depth).collect(),
            };
            blocks.sort_unstable();
            Ok(blocks)
        };
        let g_layers = resolve("g_layers", &self.params.g_layers, &PUBLISHED_G_LAYERS)?;
        let e_layers = resolve("e_layers", &self.params.e_layers, &PUBLISHED_E_LAYERS)?;
        if e_layers.is_empty() {
            return Err(error(format!(
                "the published E-prompt blocks {PUBLISHED_E_LAYERS:?} are beyond the model's {depth}: \
                 set `method.e_layers`"
            )));
        }
        if let Some(block) = g_layers.iter().find(|b| e_layers.contains(b)) {
            return Err(error(format!(
                "`method.g_layers` and `method.e_layers` both name block {block}"
            )));
        }
        Ok(Layout {
            width,
            g_layers,
            e_layers,
        })
    }

    /// The prompts' blocks, once the first task has started.
    pub fn bound_layout(&self) -> Option<&Layout> {
        self.bound.as_ref().map(|b| &b.layout)
    }

    /// Freezes the backbone, makes the prompts and keys (drawn, or loaded), for a stream of
    /// `tasks` tasks.
    fn bind(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let model = ctx.model();
        let layout = self.layout(model)?;
        let tasks = ctx.stream.tasks.len();
        let vars = ctx.vars();
        let head = format!("{}.", model.head_name());
        for (name, variable) in vars.variables() {
            if !name.starts_with(&head) {
                let _ = variable.set_requires_grad(false);
            }
        }
        let root = vars.root() / NAME;
        let mut named: Vec<(String, Tensor)> = Vec::new();
        let mut make = |path: &nn::Path, dotted: String, leaf: &str, shape: &[i64]| {
            let variable = path.var(leaf, shape, nn::Init::Const(0.0));
            let name = format!("{NAME}.{dotted}.{leaf}");
            fill(
                &variable,
                Draw::Uniform { bound: INIT_BOUND },
                derive(ctx.seed, &format!("{NAME}/init/{name}")),
            );
            named.push((name, variable.shallow_clone()));
            variable
        };
        let g_shape = [self.params.g_length as i64, layout.width];
        let e_shape = [self.params.e_length as i64, layout.width];
        let g: Vec<Prefix> = layout
            .g_layers
            .iter()
            .map(|&block| {
                let path = &root / "g" / block;
                Prefix {
                    block,
                    key: make(&path, format!("g.{block}"), "key", &g_shape),
                    value: make(&path, format!("g.{block}"), "value", &g_shape),
                }
            })
            .collect();
        let mut e = Vec::with_capacity(tasks);
        let mut keys = Vec::with_capacity(tasks);
        for t in 0..tasks {
            e.push(
                layout
                    .e_layers
                    .iter()
                    .map(|&block| {
                        let path = &root / "e" / t / block;
                        Prefix {
                            block,
                            key: make(&path, format!("e.{t}.{block}"), "key", &e_shape),
                            value: make(&path, format!("e.{t}.{block}"), "value", &e_shape),
                        }
                    })
                    .collect(),
            );
            keys.push(make(
                &(&root / "key"),
                "key".to_owned(),
                &t.to_string(),
                &[layout.width],
            ));
        }
        if let Some(loaded) = self.loaded.take() {
            let mut expected: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
            let mut found: Vec<&str> = loaded.iter().map(|(n, _)| n.as_str()).collect();
            expected.sort_unstable();
            found.sort_unstable();
            if expected != found {
                return Err(error(format!(
                    "the state holds [{}] but the network's prompts are [{}]",
                    found.join(", "),
                    expected.join(", ")
                )));
            }
            let _no_grad = tch::no_grad_guard();
            for (name, value) in &loaded {
                let (_, variable) = named.iter().find(|(n, _)| n == name).expect("checked");
                if variable.size() != value.size() {
                    return Err(error(format!(
                        "the state's `{name}` is {:?} but the network's is {:?}",
                        value.size(),
                        variable.size()
                    )));
                }
                variable.shallow_clone().copy_(value);
            }
        }
        self.bound = Some(Bound {
            layout,
            g,
            e,
            keys,
            named,
        });
        Ok(())
    }

    /// Attaches the G-prompt and, for every sample, E-prompt `e` (`Some(([P, D] keys, values))`
    /// per E block in order), or removes every prefix (`None`).
    fn attach(model: &dyn Backbone, bound: &Bound, e: Option<Vec<(Tensor, Tensor)>>) {
        match e {
            Some(e) => {
                for p in &bound.g {
                    model.set_prefix(
                        p.block,
                        Some((p.key.shallow_clone(), p.value.shallow_clone())),
                    );
                }
                for (&block, prefix) in bound.layout.e_layers.iter().zip(e) {
                    model.set_prefix(block, Some(prefix));
                }
            }
            None => {
                for block in bound.layout.g_layers.iter().chain(&bound.layout.e_layers) {
                    model.set_prefix(*block, None);
                }
            }
        }
    }

    /// The training prompts: the G-prompt and task `task`'s E-prompt for every sample.
    fn attach_training(&self, model: &dyn Backbone) {
        if let Some(bound) = &self.bound {
            let e = bound.e[self.current]
                .iter()
                .map(|p| (p.key.shallow_clone(), p.value.shallow_clone()))
                .collect();
            Self::attach(model, bound, Some(e));
        }
    }

    /// Queries of `inputs`: the model's features without any prompt, `[B, D]`, no gradient.
    /// The training prompts are attached again afterwards.
    fn queries(&self, model: &dyn Backbone, inputs: &Tensor) -> Tensor {
        let bound = self.bound.as_ref().expect("bound");
        let _no_grad = tch::no_grad_guard();
        Self::attach(model, bound, None);
        let queries = model.features(inputs, false).detach();
        self.attach_training(model);
        queries
    }

    /// For each sample of `inputs`, the index of the trained task whose key is nearest its
    /// query: `[B]` int64 (`None` before the first task).
    pub fn select_tasks(&self, model: &dyn Backbone, inputs: &Tensor) -> Option<Tensor> {
        let bound = self.bound.as_ref()?;
        let keys = Tensor::stack(&bound.keys[..=self.current], 0);
        Some(nearest_keys(&self.queries(model, inputs), &keys))
    }

    /// The keys of every task, `[tasks, D]` (`None` before the first task).
    pub fn keys(&self) -> Option<Tensor> {
        self.bound.as_ref().map(|b| Tensor::stack(&b.keys, 0))
    }
}

impl Method for DualPrompt {
    fn name(&self) -> &str {
        NAME
    }

    /// The model must be a transformer with every block the prompts name.
    fn check_network(&self, network: &Network) -> Result<(), TrainError> {
        self.layout(network.model.as_ref()).map(|_| ())
    }

    fn fresh_optimizer_each_task(&self) -> bool {
        true
    }

    /// The step runs the same kernels on the same tensors every time (two forward passes,
    /// no host reads); the prefixes it sets are fixed for the task.
    fn capturable(&self) -> bool {
        true
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if self.bound.is_none() {
            self.bind(ctx)?;
        }
        let bound = self.bound.as_ref().expect("bound");
        let t = ctx.task.index;
        if t >= bound.e.len() {
            return Err(error(format!(
                "task {t} has no E-prompt: the pool holds {} (the stream's tasks when the first task started)",
                bound.e.len()
            )));
        }
        if t > 0 {
            // The reference's shared prompt pool: E_t starts from the trained E_{t-1}.
            let _no_grad = tch::no_grad_guard();
            for (to, from) in bound.e[t].iter().zip(&bound.e[t - 1]) {
                to.key.shallow_clone().copy_(&from.key);
                to.value.shallow_clone().copy_(&from.value);
            }
        }
        for (j, (prompt, key)) in bound.e.iter().zip(&bound.keys).enumerate() {
            let trains = j == t;
            for p in prompt {
                let _ = p.key.set_requires_grad(trains);
                let _ = p.value.set_requires_grad(trains);
            }
            let _ = key.set_requires_grad(trains);
        }
        self.current = t;
        let seen = ctx.stream.tasks[..=t]
            .iter()
            .map(|task| task.class_mask.shallow_clone())
            .reduce(|a, b| a.logical_or(&b))
            .expect("at least task t");
        self.seen = Some(seen);
        self.attach_training(ctx.model());
        Ok(())
    }

    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        let bound = self
            .bound
            .as_ref()
            .ok_or_else(|| error("a training step before the first task started".into()))?;
        let model = ctx.model();
        let queries = self.queries(model, &batch.inputs);
        let mut logits = model.forward_t(&batch.inputs, true);
        if self.params.train_mask {
            logits = mask_logits(&logits, &ctx.task.class_mask);
        }
        let mut loss = ctx.training_loss(&logits, &batch.labels);
        if self.params.pull_weight > 0.0 {
            loss += pull_loss(&queries, &bound.keys[self.current]) * self.params.pull_weight;
        }
        Ok(loss)
    }

    /// Each sample with the G-prompt and the E-prompt of the trained task whose key is nearest
    /// its query; classes of no trained task masked.
    fn eval_logits(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
        let bound = self.bound.as_ref()?;
        let model = network.model.as_ref();
        let chosen = self.select_tasks(model, inputs)?;
        let e = (0..bound.layout.e_layers.len())
            .map(|i| {
                let gather = |pick: fn(&Prefix) -> &Tensor| {
                    let pool: Vec<&Tensor> = bound.e[..=self.current]
                        .iter()
                        .map(|e| pick(&e[i]))
                        .collect();
                    Tensor::stack(&pool, 0).index_select(0, &chosen)
                };
                (gather(|p| &p.key), gather(|p| &p.value))
            })
            .collect();
        Self::attach(model, bound, Some(e));
        let logits = model.forward_t(inputs, false);
        self.attach_training(model);
        Some(match &self.seen {
            Some(seen) => mask_logits(&logits, seen),
            None => logits,
        })
    }

    /// Every prompt and key (`dualprompt.g.<block>.{key,value}`,
    /// `dualprompt.e.<task>.<block>.{key,value}`, `dualprompt.key.<task>`): the method makes
    /// them in its first task, so a network restored from a checkpoint does not have them.
    fn state(&self) -> Vec<(String, Tensor)> {
        match &self.bound {
            Some(bound) => bound
                .named
                .iter()
                .map(|(n, t)| (n.clone(), t.detach().copy()))
                .collect(),
            None => self
                .loaded
                .iter()
                .flatten()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
        }
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        if self.bound.is_some() {
            return Err(error(
                "state must be loaded before the first task makes the prompts".into(),
            ));
        }
        if let Some((name, _)) = state
            .iter()
            .find(|(n, _)| !n.starts_with(&format!("{NAME}.")))
        {
            return Err(error(format!(
                "state key `{name}` is not one of the prompts"
            )));
        }
        self.loaded = if state.is_empty() { None } else { Some(state) };
        Ok(())
    }
}

#[cfg(test)]
mod tests;
