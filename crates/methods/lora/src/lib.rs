//! LoRA per task: low-rank adapters and a classifier head per task on a frozen backbone.
//!
//! Every target linear layer computes `W x + b + (α/r) · B A x` (Hu et al. 2021), with
//! `A: [r, inputs]` drawn uniformly from `±1/√inputs` (the default initialisation of a
//! PyTorch linear layer, as in the PEFT library) and `B: [outputs, r]` zero, so a fresh
//! adapter leaves the network's outputs exactly unchanged. All of the backbone's variables
//! are frozen (`requires_grad` off); only the adapters (`lora.<layer>.{a,b}`) and the head
//! train.
//!
//! Each task gets its own adapter set and head: the trained values are copied aside on the
//! training device after each task, and the next task starts from fresh adapters (`A` redrawn,
//! `B = 0`) and the current head. In the task-incremental read-out, evaluation of task `j`
//! uses task `j`'s adapters and head (the true task id picks them, through
//! [`Method::select`]); the read-outs without a task id use the most recent ones (two opt-in
//! read-outs do better without the true id, see [Read-outs](#read-outs)). The
//! frozen backbone and the stored copies never change, so task-IL accuracy on a finished task
//! is exactly what it was right after that task: no forgetting, at the price of needing the
//! task id and of `r · (inputs + outputs)` parameters per layer and task.
//!
//! Each task also starts with a fresh optimiser ([`Method::fresh_optimizer_each_task`]), so
//! Adam's moment estimates of one task's adapters do not carry into the next task's.
//!
//! Start from a pretrained backbone with `[model] checkpoint = "…"`: with a random backbone
//! the adapters can only reshape random features.
//!
//! # Read-outs
//!
//! | read-out | weights | classes |
//! |---|---|---|
//! | `class_il`, `domain_il` | the latest task's adapters and head | all |
//! | `task_il` | task `j`'s, by the true task id | task `j`'s |
//! | `task_inferred` (opt-in) | task `k`'s, `k` inferred per sample (below) | task `k`'s |
//! | `task_inference` (opt-in) | — | fraction of samples whose `k` is their task |
//! | `merged` (opt-in) | `W + Σ_t (α/r) B_t A_t` in every adapted layer, one head | all |
//!
//! **Task inference: nearest class prototype.** After each task, the mean feature
//! ([`retain_models::Backbone::features`]) of each of its classes over its training samples
//! is stored, L2-normalised, as that class's prototype; a test sample's task is the one owning
//! the class whose prototype has the highest cosine similarity to the sample's normalised
//! features, among the tasks trained so far. Features come from the frozen backbone with every
//! adapter detached: each task's adapters move its own features, so only the base puts all
//! tasks' prototypes, and a sample of unknown task, in one space. Prototypes cost `F` numbers
//! per class and need no extra training, but inference is only as good as the frozen
//! features' separation of the tasks' classes. Over 5 Split-MNIST tasks (300 samples each,
//! the efficacy test) it infers 88% of the tasks after two epochs of pretraining on them and
//! 68% with the random backbone (chance: 20%); it fails wherever the base maps different
//! tasks' classes to similar features. A wrongly inferred sample is read out with another
//! task's classes, so `task_inferred` is at most `task_il`, cell by cell. The prototypes are
//! part of the method's state (`prototypes.task<t>`, with the classes as `classes.task<t>`).
//!
//! **Merged.** Every task's low-rank update is added to the adapted layers' weights (the
//! adapters detached meanwhile) and the head takes, for each task's classes, that task's rows
//! (a class no task owns keeps the latest head's row; on domain streams every task owns
//! every class, so the last task's head wins). The weights, adapters and head are written
//! back exactly after the read-out. Summed updates interfere: the merged network is what a
//! single deployed model without task ids would compute, and in the efficacy test it reaches
//! 46% against task-IL's 98% (class-IL with the latest weights: 45%).
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `rank` | `8` | rank `r` of every adapter (≥ 1) |
//! | `alpha` | `rank` | scale numerator: the update is `(α/r) · B A` (> 0) |
//! | `target` | by the model: `["blocks.*"]` on a transformer, `["hidden.*"]` otherwise | name patterns of the linear layers to adapt (`*` matches any characters, see [`retain_models::names::matches()`]); see [`retain_models::Backbone::adaptable_layers`]. The head is never a target: it trains fully per task |
//!
//! # Example
//!
//! ```toml
//! [stream]
//! # …
//! readouts = ["class_il", "task_il", "task_inferred", "task_inference", "merged"]
//!
//! [model]
//! kind = "mlp"
//! hidden = [100, 100]
//! checkpoint = "results/pretrained/model.safetensors"
//!
//! [method]
//! name = "lora"
//! rank = 8
//! alpha = 16.0
//! target = ["hidden.*"]
//! ```
//!
//! Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022 (arXiv 2021).

use std::collections::BTreeMap;

use retain_models::init::{Draw, fill};
use retain_models::{Backbone, LowRank};
use retain_peft::{freeze_backbone, nested_path, select_layers};
use retain_seed::derive;
mod descriptor;
mod prototypes;

pub use descriptor::{DESCRIPTOR, METHODS, PARAMS};

use prototypes::{TaskClasses, normalise};
use retain_train::{
    Method, Network, Readout, Selection, TaskContext, TrainError, named_parameters,
};
use serde::Deserialize;
use tch::{Tensor, nn};

/// LoRA's hyper-parameters (see the crate docs; defaults in [`PARAMS`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraParams {
    pub rank: usize,
    /// `None` means `rank` (scale 1).
    #[serde(default)]
    pub alpha: Option<f64>,
    /// `None`: by the model, see [`default_target`].
    #[serde(default)]
    pub target: Option<Vec<String>>,
}

/// The layers adapted when `target` is not given: every linear layer of a transformer's
/// blocks (`blocks.*`: attention `qkv` and `proj`, MLP `fc1` and `fc2`), an MLP's hidden
/// layers (`hidden.*`) otherwise.
pub fn default_target(model: &dyn Backbone) -> Vec<String> {
    let pattern = if model.transformer_shape().is_some() {
        "blocks.*"
    } else {
        "hidden.*"
    };
    vec![pattern.to_owned()]
}

/// An adapted layer: its name, the live adapter variables and the bound of `A`'s draw.
struct Adapted {
    name: String,
    a: Tensor,
    b: Tensor,
    bound: f64,
    /// Positions of `a` and `b` in [`Lora::live`] (and in every stored task).
    a_index: usize,
    b_index: usize,
    /// The layer's weight variable `<name>.weight`, which the merged read-out adds every
    /// task's update to; `None` when the model names it otherwise.
    weight: Option<Tensor>,
}

impl Adapted {
    /// The adapter that attaches the live variables to the layer.
    fn adapter(&self, scale: f64) -> LowRank {
        LowRank {
            a: self.a.shallow_clone(),
            b: self.b.shallow_clone(),
            scale,
        }
    }
}

/// LoRA per task (see the crate docs).
pub struct Lora {
    rank: i64,
    scale: f64,
    target: Option<Vec<String>>,
    layers: Vec<Adapted>,
    /// What the current task trains (adapters and head), sorted by name; empty until the
    /// first task binds the method to the network.
    live: Vec<(String, Tensor)>,
    /// Per finished task, copies of the `live` values, in the same order.
    tasks: Vec<Vec<(String, Tensor)>>,
    /// The live values, put aside while a finished task's copies (or the merged head) are
    /// selected.
    saved: Option<Vec<Tensor>>,
    /// Per finished task, its classes and their prototypes.
    classes: Vec<TaskClasses>,
    /// Every finished task's prototypes stacked, `[K, F]`, and the task owning each, `[K]`;
    /// built from `classes` when first needed.
    bank: Option<(Tensor, Tensor)>,
    /// Positions of the head's weight and bias in `live`.
    head: [Option<usize>; 2],
    /// While the merged read-out is selected: the adapted layers' own weights, to restore.
    merged: Option<Vec<Tensor>>,
}

/// Registry factory for `lora`.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Lora::new(DESCRIPTOR.parse(params)?)?))
}

impl Lora {
    pub fn new(params: LoraParams) -> Result<Self, TrainError> {
        if params.rank == 0 {
            return Err(invalid("`rank` must be at least 1".into()));
        }
        retain_train::method::check_param_memory(
            "lora",
            "rank",
            params.rank,
            8,
            "at least 8 bytes per rank: a row of `a` and a column of `b` of one layer, 4 bytes a weight",
        )?;
        let alpha = params.alpha.unwrap_or(params.rank as f64);
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(invalid(format!(
                "`alpha` must be finite and > 0, got {alpha}"
            )));
        }
        if params.target.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid(
                "`target` must name at least one layer pattern".into(),
            ));
        }
        Ok(Self {
            rank: params.rank as i64,
            scale: alpha / params.rank as f64,
            target: params.target,
            layers: Vec::new(),
            live: Vec::new(),
            tasks: Vec::new(),
            saved: None,
            classes: Vec::new(),
            bank: None,
            head: [None, None],
            merged: None,
        })
    }

    /// `α / r`.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Tasks whose adapters and head are stored.
    pub fn stored_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// The layers of `model` that `target` (or the default target) selects; an error when a
    /// pattern matches none or the head.
    fn selected_layers(&self, model: &dyn Backbone) -> Result<Vec<(String, [i64; 2])>, TrainError> {
        let target = self.target.clone().unwrap_or_else(|| default_target(model));
        select_layers("lora", model, &target)
    }

    /// Freezes the backbone, creates the adapters and attaches them (first task only).
    fn bind(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let head = ctx.model().head_name();
        let selected = self.selected_layers(ctx.model())?;
        freeze_backbone(ctx.vars(), head);
        let variables = ctx.vars().variables();
        for (name, [outputs, inputs]) in &selected {
            let path = nested_path(&ctx.vars().root(), &format!("lora.{name}"));
            let bound = 1.0 / (*inputs as f64).sqrt();
            // Drawn by `reset_adapters` below, from the experiment seed.
            let a = path.var("a", &[self.rank, *inputs], nn::Init::Const(0.0));
            let b = path.var("b", &[*outputs, self.rank], nn::Init::Const(0.0));
            let layer = Adapted {
                name: name.clone(),
                a,
                b,
                bound,
                a_index: 0,
                b_index: 0,
                weight: variables
                    .get(&format!("{name}.weight"))
                    .map(Tensor::shallow_clone),
            };
            if !ctx
                .model()
                .set_adapter(name, Some(layer.adapter(self.scale)))
            {
                return Err(error(format!("the model refused an adapter on `{name}`")));
            }
            self.layers.push(layer);
        }
        self.live = named_parameters(ctx.vars());
        let position = |name: &str| self.live.iter().position(|(n, _)| n == name);
        for layer in &mut self.layers {
            let index = |part: &str| {
                position(&format!("lora.{}.{part}", layer.name))
                    .expect("every adapter variable trains")
            };
            (layer.a_index, layer.b_index) = (index("a"), index("b"));
        }
        self.head = [
            position(&format!("{head}.weight")),
            position(&format!("{head}.bias")),
        ];
        let live_names: Vec<&str> = self.live.iter().map(|(n, _)| n.as_str()).collect();
        for (t, stored) in self.tasks.iter().enumerate() {
            let stored_names: Vec<&str> = stored.iter().map(|(n, _)| n.as_str()).collect();
            if stored_names != live_names {
                return Err(error(format!(
                    "stored task {t} holds [{}] but the network trains [{}]",
                    stored_names.join(", "),
                    live_names.join(", ")
                )));
            }
            for ((_, live), (_, copy)) in self.live.iter().zip(stored) {
                if live.size() != copy.size() {
                    return Err(error(format!(
                        "stored task {t}: shapes differ from the network's"
                    )));
                }
            }
        }
        for stored in &mut self.tasks {
            for (_, copy) in stored.iter_mut() {
                *copy = copy.to_device(ctx.device);
            }
        }
        for known in &mut self.classes {
            known.classes = known.classes.to_device(ctx.device);
            known.prototypes = known.prototypes.to_device(ctx.device);
        }
        self.bank = None;
        Ok(())
    }

    fn save_live(&mut self) {
        if self.saved.is_none() {
            self.saved = Some(self.live.iter().map(|(_, t)| t.detach().copy()).collect());
        }
    }

    /// Writes `W + Σ_t (α/r) B_t A_t` into every adapted layer's weight and detaches its
    /// adapter; assembles the head from each task's rows of its own classes, over the latest
    /// head. The layers' own weights are kept to be written back by [`Lora::unmerge`].
    fn merge(&mut self, model: &dyn Backbone) -> Result<(), TrainError> {
        let _no_grad = tch::no_grad_guard();
        let mut weights = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let weight = layer.weight.as_ref().ok_or_else(|| {
                error(format!(
                    "the merged read-out adds the updates to the variable `{}.weight`, which the model does not have",
                    layer.name
                ))
            })?;
            weights.push(weight.shallow_clone());
        }
        if self.classes.len() != self.tasks.len() {
            return Err(error(format!(
                "the merged read-out needs the classes of each of the {} stored tasks, but {} are known",
                self.tasks.len(),
                self.classes.len()
            )));
        }
        self.restore();
        self.save_live();
        let originals = weights.iter().map(|w| w.detach().copy()).collect();
        for (layer, weight) in self.layers.iter().zip(&weights) {
            let update = self
                .tasks
                .iter()
                .map(|stored| stored[layer.b_index].1.matmul(&stored[layer.a_index].1))
                .reduce(|sum, term| sum + term)
                .expect("merging needs a stored task");
            let _ = weight.shallow_clone().g_add_(&(update * self.scale));
            model.set_adapter(&layer.name, None);
        }
        for index in self.head.into_iter().flatten() {
            let mut live = self.live[index].1.shallow_clone();
            for (stored, known) in self.tasks.iter().zip(&self.classes) {
                let rows = stored[index].1.index_select(0, &known.classes);
                let _ = live.index_copy_(0, &known.classes, &rows);
            }
        }
        self.merged = Some(originals);
        Ok(())
    }

    /// Undoes [`Lora::merge`]: the layers' own weights back, bit for bit, and their adapters
    /// attached again. (The head is restored with the other live values.)
    fn unmerge(&mut self, model: &dyn Backbone) {
        let Some(originals) = self.merged.take() else {
            return;
        };
        let _no_grad = tch::no_grad_guard();
        for (layer, original) in self.layers.iter().zip(originals) {
            if let Some(weight) = &layer.weight {
                weight.shallow_clone().copy_(&original);
            }
            model.set_adapter(&layer.name, Some(layer.adapter(self.scale)));
        }
    }

    /// Fresh adapters for the next task `t` (the number of stored tasks): `A` drawn from
    /// `U(±1/√in)` (PyTorch's `nn.Linear` default, as the reference `loralib` initialises
    /// `lora_A` with `kaiming_uniform_(a=√5)`), seeded by the experiment `seed`, the layer and
    /// `t` on the host; `B = 0`.
    fn reset_adapters(&self, seed: u64) {
        let task = self.tasks.len();
        for layer in &self.layers {
            let purpose = format!("lora/{}/a/task{task}", layer.name);
            fill(
                &layer.a,
                Draw::Uniform { bound: layer.bound },
                derive(seed, &purpose),
            );
            fill(&layer.b, Draw::Constant(0.0), 0);
        }
    }

    fn write_live(&self, values: impl IntoIterator<Item = Tensor>) {
        let _no_grad = tch::no_grad_guard();
        for ((_, live), value) in self.live.iter().zip(values) {
            live.shallow_clone().copy_(&value);
        }
    }

    fn restore(&mut self) {
        if let Some(saved) = self.saved.take() {
            self.write_live(saved);
        }
    }
}

fn invalid(message: String) -> TrainError {
    TrainError::MethodParams {
        method: "lora".into(),
        message,
    }
}

fn error(message: String) -> TrainError {
    TrainError::Method {
        method: "lora".into(),
        message,
    }
}

impl Method for Lora {
    fn name(&self) -> &str {
        "lora"
    }

    /// Every `target` pattern must match an adaptable layer other than the head.
    fn check_network(&self, network: &Network) -> Result<(), TrainError> {
        self.selected_layers(network.model.as_ref()).map(|_| ())
    }

    /// The step is the default one through the live task's adapters, fixed for the task.
    fn capturable(&self) -> bool {
        true
    }

    /// The finished tasks' adapters and heads are the state; `before_task` draws the live
    /// adapters afresh, and a run continued inside a task then gives them (and the head) their
    /// checkpointed values.
    fn resumes_within_task(&self) -> bool {
        true
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.unmerge(ctx.model());
        self.restore();
        if self.live.is_empty() {
            self.bind(ctx)?;
        }
        self.reset_adapters(ctx.seed);
        Ok(())
    }

    /// Stores the task's adapters and head, and its classes' prototypes.
    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.tasks.push(
            self.live
                .iter()
                .map(|(n, t)| (n.clone(), t.detach().copy()))
                .collect(),
        );
        let known = self.task_classes(ctx);
        self.classes.push(known);
        self.bank = None;
        Ok(())
    }

    fn uses_task_id(&self) -> bool {
        true
    }

    fn fresh_optimizer_each_task(&self) -> bool {
        true
    }

    /// Every read-out: the task-inferred ones through prototypes, the merged one by summing
    /// the adapters' updates.
    fn supports_readout(&self, _readout: Readout) -> bool {
        true
    }

    /// Task `j`'s stored adapters and head for `Task(j)` of a finished task; every task's
    /// updates merged into the weights, with the merged head, for `Merged` (once a task is
    /// finished); the live ones otherwise.
    fn select(&mut self, network: &Network, selection: Selection) -> Result<(), TrainError> {
        self.unmerge(network.model.as_ref());
        match selection {
            Selection::Task(j) if j < self.tasks.len() => {
                self.save_live();
                let values: Vec<Tensor> = self.tasks[j]
                    .iter()
                    .map(|(_, t)| t.shallow_clone())
                    .collect();
                self.write_live(values);
            }
            Selection::Merged if !self.tasks.is_empty() => self.merge(network.model.as_ref())?,
            _ => self.restore(),
        }
        Ok(())
    }

    /// The task owning the class whose prototype is nearest (cosine similarity) to each
    /// sample's base features; `None` before the first task, or while the merged weights are
    /// selected (the base features are not available then).
    fn infer_task(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
        if self.classes.is_empty() || self.merged.is_some() {
            return None;
        }
        let features = normalise(&self.base_features(network.model.as_ref(), inputs));
        let (prototypes, owners) = self.bank();
        let nearest = features.matmul(&prototypes.tr()).argmax(-1, false);
        Some(owners.index_select(0, &nearest))
    }

    /// `task<t>.<name>` for every stored task `t` and trained variable (`lora.<layer>.a`,
    /// `lora.<layer>.b`, the head's); `classes.task<t>` and `prototypes.task<t>` for its
    /// classes and their prototypes.
    fn state(&self) -> Vec<(String, Tensor)> {
        let weights = self.tasks.iter().enumerate().flat_map(|(t, stored)| {
            stored
                .iter()
                .map(move |(n, v)| (format!("task{t}.{n}"), v.shallow_clone()))
        });
        let classes = self.classes.iter().enumerate().flat_map(|(t, known)| {
            [
                (format!("classes.task{t}"), known.classes.shallow_clone()),
                (
                    format!("prototypes.task{t}"),
                    known.prototypes.shallow_clone(),
                ),
            ]
        });
        weights.chain(classes).collect()
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        let mut groups: BTreeMap<usize, Vec<(String, Tensor)>> = BTreeMap::new();
        let mut known: BTreeMap<usize, [Option<Tensor>; 2]> = BTreeMap::new();
        for (key, tensor) in state {
            let per_task = [("classes.task", 0), ("prototypes.task", 1)]
                .into_iter()
                .find_map(|(prefix, slot)| Some((key.strip_prefix(prefix)?, slot)));
            if let Some((t, slot)) = per_task {
                let t = t
                    .parse::<usize>()
                    .map_err(|_| error(format!("state key `{key}` has no task number")))?;
                known.entry(t).or_default()[slot] = Some(tensor);
                continue;
            }
            let parsed = key
                .strip_prefix("task")
                .and_then(|r| r.split_once('.'))
                .and_then(|(t, name)| Some((t.parse::<usize>().ok()?, name.to_owned())));
            let Some((t, name)) = parsed else {
                return Err(error(format!(
                    "state key `{key}` is not `task<N>.<variable>`"
                )));
            };
            groups.entry(t).or_default().push((name, tensor));
        }
        let mut tasks = Vec::with_capacity(groups.len());
        for (expected, (t, mut stored)) in groups.into_iter().enumerate() {
            if t != expected {
                return Err(error(format!(
                    "state has no task {expected} (found task {t} after it)"
                )));
            }
            stored.sort_by(|a, b| a.0.cmp(&b.0));
            if let Some(first) = tasks.first() {
                let names = |s: &Vec<(String, Tensor)>| -> Vec<String> {
                    s.iter().map(|(n, _)| n.clone()).collect()
                };
                if names(first) != names(&stored) {
                    return Err(error(format!(
                        "task {t} stores other variables than task 0"
                    )));
                }
            }
            tasks.push(stored);
        }
        let mut classes = Vec::with_capacity(tasks.len());
        for t in 0..tasks.len() {
            match known.remove(&t) {
                Some([Some(task_classes), Some(prototypes)]) => classes.push(TaskClasses {
                    classes: task_classes,
                    prototypes,
                }),
                _ => {
                    return Err(error(format!(
                        "state lacks `classes.task{t}` or `prototypes.task{t}`"
                    )));
                }
            }
        }
        if let Some(t) = known.keys().next() {
            return Err(error(format!(
                "state holds classes of task {t} but no stored weights for it"
            )));
        }
        if !self.live.is_empty() {
            return Err(error(
                "state must be loaded before the first task binds the method".into(),
            ));
        }
        self.tasks = tasks;
        self.classes = classes;
        self.bank = None;
        self.saved = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
