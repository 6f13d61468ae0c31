//! InfLoRA: interference-free low-rank adaptation of a frozen pre-trained vision transformer
//! for class-incremental learning (Liang & Li, CVPR 2024).
//!
//! # Construction
//!
//! For every adapted linear layer `W` (by default every block's `attn.qkv`, of which the
//! reference adapts the key and value rows) and task `t`, the layer computes
//! `W x + b + B_t A_t x` with a down-projection `A_t: [r, D]` designed before the task and
//! then frozen, and an up-projection `B_t: [outputs, r]` that starts at zero and is the only
//! thing of the layer that trains. (The paper writes the branch `A_t B_t` with the roles of
//! the letters swapped; here `A` is the down-projection, as in [`retain_models::LowRank`].)
//!
//! 1. **Inputs.** Before the task, the layer's inputs over the task's training samples give
//!    `C_t = (1/n) Σ_tokens x xᵀ` (`[D, D]`, the reference's `cur_matrix`: every token of
//!    every sample, with the network as the previous tasks left it).
//! 2. **Design of `A_t`.** With the memory `M` of the old tasks' input subspace (below),
//!    `Ĉ_t = C_t − U Uᵀ C_t` when `M` stores a basis `U` of the old subspace, `Ĉ_t = U Uᵀ C_t`
//!    when it stores a basis of its complement (no memory before the first task:
//!    `Ĉ_t = C_t`). `A_t` is the top `r` left singular vectors of `Ĉ_t` as rows, divided by
//!    `√3` (the reference's scale). Its rows are orthogonal to the old subspace, so for an old
//!    task's input `x` in it, `B_t A_t x = 0` whatever `B_t` learns: training cannot move the
//!    layer's output on the old inputs.
//! 3. **Training.** Only `B_t`'s rows of the adapted parts (the key and value rows of `qkv`)
//!    and the head's rows of the task's classes train; the cross-entropy is over the task's
//!    classes only (the other logits masked to −∞, as the reference's per-task classifier
//!    reads only the current task's outputs in training). All backbone weights are frozen.
//! 4. **Merge.** After the task, `W ← W + B_t A_t` (the reference keeps the sum of every
//!    task's frozen branch, which computes the same), and `B` is zeroed for the next task.
//! 5. **Memory update (DualGPM).** `C_t` is computed again with the trained network and
//!    the memory grows by the energy criterion at threshold
//!    `ε_t = (lame − lamb) · t / T + lamb` (`t` 0-based, `T` the stream's task count):
//!    after the first task, the `k` leading left singular vectors of `C_0` whose cumulative
//!    share of `Σ σ²` stays below `ε_0` (at least 1); later, with a basis of the old
//!    subspace, the leading singular vectors of `C_t − U Uᵀ C_t` join it until the old
//!    subspace holds `ε_t` of `C_t`'s energy; with a complement basis, the complement loses
//!    the leading directions of `U Uᵀ C_t` until what is left of its energy there is below
//!    `1 − ε_t`. A basis of the old subspace of more than `D/2` columns is replaced by one of
//!    its complement (the reference's dual form).
//!
//! Read-out: the adapted (merged) network's logits over the classes seen so far (the others
//! −∞), no task id, as the reference concatenates the trained tasks' classifiers.
//!
//! # Layer inputs
//!
//! The backbone has no forward hooks, so the inputs of the adapted layers are computed by
//! running the transformer's forward pass again from its public pieces (its variables by
//! their timm names and its layers through [`retain_models::Backbone::linear`]), exactly as
//! `VisionTransformer::features` does; the head count, which the backbone interface does not
//! tell, is found as the divisor of the width for which this pass reproduces the model's own
//! features on the task's first samples, and the method refuses a model for which none does.
//! The inputs are therefore exact, not approximated.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `rank` | `10` (the reference's) | rank `r` of each task's branch (1 ≤ r ≤ the layer's input width) |
//! | `lamb` | `0.95` (the reference's CIFAR-100 setting; 0.98 for ImageNet-R) | energy threshold after the first task (in (0, 1]) |
//! | `lame` | `1.0` (the reference's) | energy threshold the schedule reaches at `t = T` (in [`lamb`, 1]) |
//! | `layers` | `["blocks.*.attn.qkv"]` (the reference's) | name patterns of the blocks' linear layers to adapt (`attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`; never the head) |
//! | `qkv_parts` | `["k", "v"]` (the reference's) | which of the query, key and value rows of an adapted `attn.qkv` the branch changes |
//! | `samples` | every training sample of the task (the reference's) | training samples per task whose inputs give `C_t` (≥ 1; a seeded draw when fewer than the task has) |
//!
//! # Example
//!
//! ```toml
//! [model]
//! kind = "vit"
//! patch = 7
//! dim = 32
//! depth = 2
//! heads = 4
//! mlp_dim = 64
//!
//! [pretrain]
//! classes = [0, 1, 2, 3, 4]
//! epochs = 3
//! batch_size = 32
//! optimizer = { kind = "adam", lr = 0.001 }
//!
//! [method]
//! name = "inflora"
//! rank = 10
//! lamb = 0.95
//! lame = 1.0
//! ```
//!
//! (or `[model] checkpoint = "…"` of a pre-trained transformer in place of `[pretrain]`: the
//! method adapts a frozen backbone and needs its features to be good already.)
//!
//! # Peer conventions
//!
//! * **Translates.** The design of `A_t` (SVD of the projected input matrix, top `r`,
//!   `/√3`), the DualGPM update with its `remove`/`retain` forms and threshold schedule, the
//!   frozen backbone, the zero-initialised trained up-projection of the key and value rows
//!   only, the loss over the current task's classes, the merge (the sum of frozen branches),
//!   the class-IL read-out over the classes seen; a fresh optimiser per task (the reference
//!   builds one per task).
//! * **Differs.** One shared head whose rows of the task's classes train, the other rows
//!   restored after the task (the reference has one classifier per task, trained in its task
//!   only: the same logits). The reference's first-task branch keeps the old-subspace basis
//!   labelled "retain" when it has at least `D/2` columns (its own summary then fails an
//!   assertion); here it is turned into its complement as for later tasks. A row of `A_t`
//!   whose singular value is numerically zero is set to zero (an arbitrary direction that could
//!   lie in the old subspace; only when `r` exceeds the free dimensions, never at the
//!   reference's `r = 10` of width 768). `C_t` uses the un-augmented training samples (the
//!   reference's loader applies its training transform). The reference's k-means keys of
//!   each task's features (`clustering`) are never read by its class-IL evaluation and are
//!   not computed. Optimiser, learning rate and epochs are the experiment's (the reference:
//!   Adam at 5·10⁻⁴, 20 epochs, batch 128).
//!
//! Liang & Li, "InfLoRA: Interference-Free Low-Rank Adaptation for Continual Learning",
//! CVPR 2024 (reference code: liangyanshuo/InfLoRA, `methods/inflora.py`,
//! `models/vit_inflora.py`).

mod replica;
pub mod subspace;

use std::collections::BTreeMap;

use retain_models::{Backbone, LowRank};
use retain_peft::{freeze_backbone, matches, nested_path};
use retain_stream::seed::{SplitMix64, derive};
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Batch, Method, Network, StepContext, TaskContext, TrainError};
use serde::Deserialize;
use tch::{Device, Kind, Tensor, nn};

use replica::{Pieces, probe_heads};
pub use subspace::Memory;

/// The registry entry of `inflora`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "inflora",
    family: Family::ParameterEfficient,
    summary: "InfLoRA: per-task low-rank branches on a frozen transformer, their down-projection designed orthogonal to the old tasks' input subspace, merged after each task",
    paper: "Liang & Li, \"InfLoRA: Interference-Free Low-Rank Adaptation for Continual Learning\", CVPR 2024",
    params: &[
        Param {
            name: "rank",
            kind: ParamKind::Count,
            default: ParamDefault::Value("10"),
            doc: "rank r of each task's branch (1 ≤ r ≤ the layer's input width)",
        },
        Param {
            name: "lamb",
            kind: ParamKind::Float,
            default: ParamDefault::Value("0.95"),
            doc: "energy threshold of the subspace memory after the first task (in (0, 1])",
        },
        Param {
            name: "lame",
            kind: ParamKind::Float,
            default: ParamDefault::Value("1.0"),
            doc: "energy threshold the linear schedule reaches after the last task (in [lamb, 1])",
        },
        Param {
            name: "layers",
            kind: ParamKind::Strings,
            default: ParamDefault::Value("[\"blocks.*.attn.qkv\"]"),
            doc: "name patterns of the blocks' linear layers to adapt (attn.qkv, attn.proj, mlp.fc1, mlp.fc2)",
        },
        Param {
            name: "qkv_parts",
            kind: ParamKind::Strings,
            default: ParamDefault::Value("[\"k\", \"v\"]"),
            doc: "which of the q, k, v rows of an adapted attn.qkv the branch changes",
        },
        Param {
            name: "samples",
            kind: ParamKind::Count,
            default: ParamDefault::Derived("every training sample of the task"),
            doc: "training samples per task whose layer inputs give the input matrix (≥ 1)",
        },
    ],
    example: "rank = 10\nlamb = 0.95\nlame = 1.0",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: false,
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
    pub rank: usize,
    pub lamb: f64,
    pub lame: f64,
    pub layers: Vec<String>,
    pub qkv_parts: Vec<String>,
    #[serde(default)]
    pub samples: Option<usize>,
}

/// Samples per forward pass when collecting layer inputs.
const CHUNK: usize = 128;

/// An adapted layer and its live branch.
struct Layer {
    name: String,
    /// The designed down-projection `[r, inputs]` (no gradient), rewritten in place per task.
    a: Tensor,
    /// The trained up-projection `[outputs, r]`, a variable of the store.
    b: Tensor,
    /// Row ranges `(start, len)` of `b` kept at zero (the query rows of `qkv` by default).
    fixed_rows: Vec<(i64, i64)>,
}

/// InfLoRA (see the crate docs).
pub struct InfLora {
    rank: i64,
    lamb: f64,
    lame: f64,
    layers_patterns: Vec<String>,
    parts: [bool; 3],
    samples: Option<usize>,
    layers: Vec<Layer>,
    /// The subspace memory of each adapted layer, by layer name.
    memory: BTreeMap<String, Memory>,
    heads: Option<i64>,
    /// Classes trained so far.
    seen: Vec<i64>,
    /// `[1, classes]` bool: the classes not seen yet (−∞ in the read-out).
    unseen_mask: Option<Tensor>,
    /// `[1, classes]` bool: the classes outside the current task (−∞ in the loss).
    outside_mask: Option<Tensor>,
    /// The head's weight and bias at the task's start, to restore the rows of other classes.
    head_start: Vec<(Tensor, Tensor)>,
}

fn invalid(message: String) -> TrainError {
    TrainError::MethodParams {
        method: "inflora".into(),
        message,
    }
}

fn error(message: String) -> TrainError {
    TrainError::Method {
        method: "inflora".into(),
        message,
    }
}

/// Registry factory.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(InfLora::new(DESCRIPTOR.parse(params)?)?))
}

const BLOCK_LAYERS: [&str; 4] = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"];

impl InfLora {
    pub fn new(params: Params) -> Result<Self, TrainError> {
        if params.rank == 0 {
            return Err(invalid("`rank` must be at least 1".into()));
        }
        retain_train::method::check_param_memory(
            "inflora",
            "rank",
            params.rank,
            16,
            "at least 16 bytes per rank: a row of `a` and a column of `b` of one layer",
        )?;
        if !(params.lamb.is_finite() && params.lamb > 0.0 && params.lamb <= 1.0) {
            return Err(invalid(format!(
                "`lamb` must be in (0, 1], got {}",
                params.lamb
            )));
        }
        if !(params.lame.is_finite() && params.lame >= params.lamb && params.lame <= 1.0) {
            return Err(invalid(format!(
                "`lame` must be in [lamb, 1] = [{}, 1], got {}",
                params.lamb, params.lame
            )));
        }
        if params.layers.is_empty() {
            return Err(invalid(
                "`layers` must name at least one layer pattern".into(),
            ));
        }
        let mut parts = [false; 3];
        for part in &params.qkv_parts {
            match part.as_str() {
                "q" => parts[0] = true,
                "k" => parts[1] = true,
                "v" => parts[2] = true,
                other => {
                    return Err(invalid(format!(
                        "`qkv_parts` takes \"q\", \"k\" and \"v\", got \"{other}\""
                    )));
                }
            }
        }
        if !parts.iter().any(|&p| p) {
            return Err(invalid("`qkv_parts` must name at least one part".into()));
        }
        if params.samples == Some(0) {
            return Err(invalid("`samples` must be at least 1".into()));
        }
        Ok(Self {
            rank: params.rank as i64,
            lamb: params.lamb,
            lame: params.lame,
            layers_patterns: params.layers,
            parts,
            samples: params.samples,
            layers: Vec::new(),
            memory: BTreeMap::new(),
            heads: None,
            seen: Vec::new(),
            unseen_mask: None,
            outside_mask: None,
            head_start: Vec::new(),
        })
    }

    /// The subspace memory of each adapted layer.
    pub fn memory(&self) -> &BTreeMap<String, Memory> {
        &self.memory
    }

    /// The adapted layers `(name, [outputs, inputs])`; errors name `model.kind` or
    /// `method.layers`/`method.rank`.
    fn selected(&self, model: &dyn Backbone) -> Result<Vec<(String, [i64; 2])>, TrainError> {
        let Some((_, depth)) = model.transformer_shape() else {
            return Err(error(
                "InfLoRA adapts a vision transformer's layers: `model.kind` must be \"vit\"".into(),
            ));
        };
        let block_layers: Vec<(String, [i64; 2])> = model
            .adaptable_layers()
            .into_iter()
            .filter(|(n, _)| {
                (0..depth).any(|i| BLOCK_LAYERS.iter().any(|l| *n == format!("blocks.{i}.{l}")))
            })
            .collect();
        for pattern in &self.layers_patterns {
            if !block_layers.iter().any(|(n, _)| matches(pattern, n)) {
                return Err(error(format!(
                    "`method.layers` pattern `{pattern}` matches no linear layer of the transformer's blocks (`blocks.<i>.attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`)"
                )));
            }
        }
        let selected: Vec<_> = block_layers
            .into_iter()
            .filter(|(n, _)| self.layers_patterns.iter().any(|p| matches(p, n)))
            .collect();
        for (name, [_, inputs]) in &selected {
            if self.rank > *inputs {
                return Err(error(format!(
                    "`method.rank` {} exceeds the input width {inputs} of `{name}`",
                    self.rank
                )));
            }
        }
        Ok(selected)
    }

    /// Freezes the backbone and creates the branches (first task only).
    fn bind(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let model = ctx.model();
        let selected = self.selected(model)?;
        freeze_backbone(ctx.vars(), model.head_name());
        for (name, [outputs, inputs]) in selected {
            let path = nested_path(&ctx.vars().root(), &format!("inflora.{name}"));
            let b = path.var("b", &[outputs, self.rank], nn::Init::Const(0.0));
            let a = Tensor::zeros([self.rank, inputs], (Kind::Float, ctx.device));
            let fixed_rows = if name.ends_with("attn.qkv") {
                let width = outputs / 3;
                (0..3)
                    .filter(|&p| !self.parts[p])
                    .map(|p| (p as i64 * width, width))
                    .collect()
            } else {
                Vec::new()
            };
            self.layers.push(Layer {
                name,
                a,
                b,
                fixed_rows,
            });
        }
        for memory in self.memory.values_mut() {
            memory.basis = memory.basis.to_device(ctx.device);
        }
        Ok(())
    }

    /// `C = (1/n) Σ x xᵀ` over every token of the chosen training samples, per adapted layer
    /// (`float64`, in the order of `self.layers`), with the network as it is now.
    fn input_matrices(&mut self, ctx: &TaskContext<'_>) -> Result<Vec<Tensor>, TrainError> {
        let _no_grad = tch::no_grad_guard();
        let model = ctx.model();
        let pieces = Pieces::new(model, ctx.vars()).map_err(error)?;
        let indices = match self.samples {
            Some(n) if n < ctx.task.train_indices.len() => {
                let mut indices = ctx.task.train_indices.clone();
                let purpose = format!("inflora/inputs/task{}", ctx.task.index);
                SplitMix64::new(derive(ctx.seed, &purpose)).shuffle(&mut indices);
                indices.truncate(n);
                indices.sort_unstable();
                indices
            }
            _ => ctx.task.train_indices.clone(),
        };
        if indices.is_empty() {
            return Err(error(format!(
                "task {} has no training samples to take layer inputs from",
                ctx.task.index
            )));
        }
        let heads = match self.heads {
            Some(h) => h,
            None => {
                let probe = ctx.train_batch(&indices[..indices.len().min(8)]);
                let h = probe_heads(&pieces, model, &probe.inputs).ok_or_else(|| {
                    error(
                        "the transformer's forward pass could not be reproduced from its parameters to read its layers' inputs"
                            .into(),
                    )
                })?;
                self.heads = Some(h);
                h
            }
        };
        let names: Vec<&str> = self.layers.iter().map(|l| l.name.as_str()).collect();
        let mut sums: Vec<Option<Tensor>> = names.iter().map(|_| None).collect();
        let mut tokens = 0i64;
        for chunk in indices.chunks(CHUNK) {
            let batch = ctx.train_batch(chunk);
            let mut counted = false;
            let _ = pieces.run(model, heads, &batch.inputs, &mut |name, input| {
                if let Some(k) = names.iter().position(|n| *n == name) {
                    let x = input.flatten(0, -2).to_kind(Kind::Double);
                    if !counted {
                        tokens += x.size()[0];
                        counted = true;
                    }
                    let xtx = x.tr().matmul(&x);
                    sums[k] = Some(match sums[k].take() {
                        Some(s) => s + xtx,
                        None => xtx,
                    });
                }
            });
        }
        Ok(sums
            .into_iter()
            .map(|s| s.expect("every adapted layer is on the pass") / tokens as f64)
            .collect())
    }

    fn attach(&self, model: &dyn Backbone) -> Result<(), TrainError> {
        for layer in &self.layers {
            let adapter = LowRank {
                a: layer.a.shallow_clone(),
                b: layer.b.shallow_clone(),
                scale: 1.0,
            };
            if !model.set_adapter(&layer.name, Some(adapter)) {
                return Err(error(format!(
                    "the model refused a low-rank branch on `{}`",
                    layer.name
                )));
            }
        }
        Ok(())
    }

    fn class_mask(classes: &[i64], outputs: i64, device: Device) -> Tensor {
        let mask = Tensor::zeros([1, outputs], (Kind::Bool, device));
        if !classes.is_empty() {
            let index = Tensor::from_slice(classes).to_device(device);
            let _ = mask.shallow_clone().index_fill_(1, &index, 1);
        }
        mask
    }

    fn head_variables(ctx: &TaskContext<'_>) -> Vec<Tensor> {
        let head = ctx.model().head_name();
        let variables = ctx.vars().variables();
        ["weight", "bias"]
            .iter()
            .filter_map(|p| variables.get(&format!("{head}.{p}")))
            .map(Tensor::shallow_clone)
            .collect()
    }
}

impl Method for InfLora {
    fn name(&self) -> &str {
        "inflora"
    }

    /// A transformer whose `layers` patterns select linear layers of its blocks, each at
    /// least `rank` wide, and whose forward pass the method can reproduce.
    fn check_network(&self, network: &Network) -> Result<(), TrainError> {
        self.selected(network.model.as_ref())?;
        Pieces::new(network.model.as_ref(), &network.vars)
            .map(|_| ())
            .map_err(error)
    }

    /// The step is the masked cross-entropy through the task's fixed branches, and the
    /// gradient surgery zeroes fixed slices of `b`'s gradient on the device.
    fn capturable(&self) -> bool {
        true
    }

    fn fresh_optimizer_each_task(&self) -> bool {
        true
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if self.layers.is_empty() {
            self.bind(ctx)?;
        }
        let matrices = self.input_matrices(ctx)?;
        {
            let _no_grad = tch::no_grad_guard();
            for (layer, matrix) in self.layers.iter().zip(&matrices) {
                let a = subspace::down_projection(matrix, self.memory.get(&layer.name), self.rank);
                layer.a.shallow_clone().copy_(&a.to_kind(Kind::Float));
                let _ = layer.b.shallow_clone().zero_();
            }
        }
        self.attach(ctx.model())?;
        let outputs = ctx.model().outputs() as i64;
        self.outside_mask =
            Some(Self::class_mask(&ctx.task.classes, outputs, ctx.device).logical_not());
        let _no_grad = tch::no_grad_guard();
        self.head_start = Self::head_variables(ctx)
            .into_iter()
            .map(|v| (v.shallow_clone(), v.detach().copy()))
            .collect();
        Ok(())
    }

    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        let logits = ctx.model().forward_t(&batch.inputs, true);
        Ok(match &self.outside_mask {
            Some(outside) => logits
                .masked_fill(outside, f64::NEG_INFINITY)
                .cross_entropy_for_logits(&batch.labels),
            None => ctx.cross_entropy(batch),
        })
    }

    fn after_backward(&mut self, _ctx: &StepContext<'_>) -> Result<(), TrainError> {
        for layer in &self.layers {
            let grad = layer.b.grad();
            if !grad.defined() {
                continue;
            }
            for &(start, len) in &layer.fixed_rows {
                let _ = grad.narrow(0, start, len).zero_();
            }
        }
        Ok(())
    }

    /// Restores the head's rows of other classes, merges the branches, updates the memory.
    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        {
            let _no_grad = tch::no_grad_guard();
            let inside = self
                .outside_mask
                .as_ref()
                .map(Tensor::logical_not)
                .unwrap_or_else(|| {
                    Self::class_mask(&ctx.task.classes, ctx.model().outputs() as i64, ctx.device)
                })
                .squeeze_dim(0);
            for (variable, start) in self.head_start.drain(..) {
                let rows = if variable.dim() == 2 {
                    inside.unsqueeze(1)
                } else {
                    inside.shallow_clone()
                };
                let kept = variable.detach().where_self(&rows, &start);
                variable.shallow_clone().copy_(&kept);
            }
            for layer in &self.layers {
                let linear = ctx
                    .model()
                    .linear(&layer.name)
                    .ok_or_else(|| error(format!("the model has no layer `{}`", layer.name)))?;
                if !linear.merge_low_rank() {
                    return Err(error(format!(
                        "could not merge the branch into `{}` (a quantised weight?)",
                        layer.name
                    )));
                }
                let _ = layer.b.shallow_clone().zero_();
            }
        }
        let matrices = self.input_matrices(ctx)?;
        let threshold =
            subspace::threshold(self.lamb, self.lame, ctx.task.index, ctx.stream.tasks.len());
        let _no_grad = tch::no_grad_guard();
        for (layer, matrix) in self.layers.iter().zip(&matrices) {
            match self.memory.get_mut(&layer.name) {
                Some(memory) => subspace::update(memory, matrix, threshold),
                None => {
                    self.memory
                        .insert(layer.name.clone(), subspace::first(matrix, threshold));
                }
            }
        }
        for &class in &ctx.task.classes {
            if !self.seen.contains(&class) {
                self.seen.push(class);
            }
        }
        self.seen.sort_unstable();
        self.unseen_mask = Some(
            Self::class_mask(&self.seen, ctx.model().outputs() as i64, ctx.device).logical_not(),
        );
        self.outside_mask = None;
        Ok(())
    }

    /// The network's logits with the classes not trained yet at −∞; `None` before the first
    /// task.
    fn eval_logits(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
        if self.seen.is_empty() {
            return None;
        }
        if self.unseen_mask.is_none() {
            // After `load_state`: rebuilt where the logits are.
            let outputs = network.model.outputs() as i64;
            self.unseen_mask =
                Some(Self::class_mask(&self.seen, outputs, inputs.device()).logical_not());
        }
        let unseen = self.unseen_mask.as_ref()?;
        Some(
            network
                .model
                .forward_t(inputs, false)
                .masked_fill(unseen, f64::NEG_INFINITY),
        )
    }

    /// `memory.<layer>.basis` (`[D, k]`, `float64`) and `memory.<layer>.retain` (`[]`
    /// int64: 1 for a complement basis) per adapted layer, and `seen` (the trained classes,
    /// int64). The branches are merged into the network's weights at every task boundary.
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut state: Vec<(String, Tensor)> = self
            .memory
            .iter()
            .flat_map(|(name, m)| {
                [
                    (format!("memory.{name}.basis"), m.basis.shallow_clone()),
                    (
                        format!("memory.{name}.retain"),
                        Tensor::from(i64::from(m.retain)),
                    ),
                ]
            })
            .collect();
        state.push(("seen".into(), Tensor::from_slice(&self.seen)));
        state
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        let mut bases: BTreeMap<String, Tensor> = BTreeMap::new();
        let mut retains: BTreeMap<String, bool> = BTreeMap::new();
        let mut seen = None;
        for (key, tensor) in state {
            if key == "seen" {
                seen = Some(
                    Vec::<i64>::try_from(&tensor.to_kind(Kind::Int64).flatten(0, -1))
                        .map_err(|e| error(format!("state `seen`: {e}")))?,
                );
            } else if let Some(name) = key
                .strip_prefix("memory.")
                .and_then(|k| k.strip_suffix(".basis"))
            {
                bases.insert(name.to_owned(), tensor.to_kind(Kind::Double));
            } else if let Some(name) = key
                .strip_prefix("memory.")
                .and_then(|k| k.strip_suffix(".retain"))
            {
                retains.insert(name.to_owned(), tensor.int64_value(&[]) != 0);
            } else {
                return Err(error(format!("unexpected state key `{key}`")));
            }
        }
        let seen = seen.ok_or_else(|| error("state lacks `seen`".into()))?;
        let mut memory = BTreeMap::new();
        for (name, basis) in bases {
            let retain = retains
                .remove(&name)
                .ok_or_else(|| error(format!("state lacks `memory.{name}.retain`")))?;
            if basis.dim() != 2 {
                return Err(error(format!("state `memory.{name}.basis` is not [D, k]")));
            }
            memory.insert(name, Memory { basis, retain });
        }
        if let Some(name) = retains.keys().next() {
            return Err(error(format!("state lacks `memory.{name}.basis`")));
        }
        if !self.layers.is_empty() {
            return Err(error(
                "state must be loaded before the first task binds the method".into(),
            ));
        }
        self.memory = memory;
        self.seen = seen;
        self.unseen_mask = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
