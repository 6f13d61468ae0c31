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
//! [`Method::select`]); the read-outs without a task id use the most recent ones. The
//! frozen backbone and the stored copies never change, so task-IL accuracy on a finished task
//! is exactly what it was right after that task: no forgetting, at the price of needing the
//! task id and of `r · (inputs + outputs)` parameters per layer and task.
//!
//! The optimiser's own state (Adam's moment estimates) carries over from one task's adapters
//! to the next task's fresh ones, since the trainer builds one optimiser per run; with plain
//! SGD without momentum each task starts clean.
//!
//! Start from a pretrained backbone with `[model] checkpoint = "…"`: with a random backbone
//! the adapters can only reshape random features.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `rank` | `8` | rank `r` of every adapter (≥ 1) |
//! | `alpha` | `rank` | scale numerator: the update is `(α/r) · B A` |
//! | `target` | `["hidden.*"]` | name patterns of the linear layers to adapt (`*` matches any characters); see [`retain_models::Backbone::adaptable_layers`]. The head is never a target: it trains fully per task |
//!
//! # Example
//!
//! ```toml
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

use retain_models::LowRank;
use retain_train::{
    Method, Network, Selection, TaskContext, TrainError, named_parameters, parse_params,
};
use serde::Deserialize;
use tch::{Tensor, nn};

/// LoRA's hyper-parameters (see the crate docs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraParams {
    #[serde(default = "default_rank")]
    pub rank: usize,
    /// `None` means `rank` (scale 1).
    #[serde(default)]
    pub alpha: Option<f64>,
    #[serde(default = "default_target")]
    pub target: Vec<String>,
}

fn default_rank() -> usize {
    8
}
fn default_target() -> Vec<String> {
    vec!["hidden.*".to_owned()]
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (also empty).
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, rest)) => {
            let Some(tail) = name.strip_prefix(prefix) else {
                return false;
            };
            (0..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| matches(rest, &tail[i..]))
        }
    }
}

/// An adapted layer: its name, the live adapter variables and the bound of `A`'s draw.
struct Adapted {
    a: Tensor,
    b: Tensor,
    bound: f64,
}

/// LoRA per task (see the crate docs).
pub struct Lora {
    rank: i64,
    scale: f64,
    target: Vec<String>,
    layers: Vec<Adapted>,
    /// What the current task trains (adapters and head), sorted by name; empty until the
    /// first task binds the method to the network.
    live: Vec<(String, Tensor)>,
    /// Per finished task, copies of the `live` values, in the same order.
    tasks: Vec<Vec<(String, Tensor)>>,
    /// The live values, put aside while a finished task's copies are selected.
    saved: Option<Vec<Tensor>>,
}

/// Registry factory for `lora`.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Lora::new(parse_params("lora", params)?)?))
}

impl Lora {
    pub fn new(params: LoraParams) -> Result<Self, TrainError> {
        if params.rank == 0 {
            return Err(invalid("`rank` must be at least 1".into()));
        }
        let alpha = params.alpha.unwrap_or(params.rank as f64);
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(invalid(format!(
                "`alpha` must be finite and > 0, got {alpha}"
            )));
        }
        if params.target.is_empty() {
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

    /// Freezes the backbone, creates the adapters and attaches them (first task only).
    fn bind(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let head = ctx.model.head_name();
        let adaptable = ctx.model.adaptable_layers();
        let names = || {
            adaptable
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for pattern in &self.target {
            if matches(pattern, head) {
                return Err(error(format!(
                    "`target` pattern `{pattern}` selects the head `{head}`, which trains fully per task"
                )));
            }
            if !adaptable.iter().any(|(n, _)| matches(pattern, n)) {
                return Err(error(format!(
                    "`target` pattern `{pattern}` matches no adaptable layer (the model has: {})",
                    names()
                )));
            }
        }
        let head_prefix = format!("{head}.");
        for (name, variable) in ctx.vars.variables() {
            if !name.starts_with(&head_prefix) {
                let _ = variable.set_requires_grad(false);
            }
        }
        for (name, [outputs, inputs]) in &adaptable {
            if !self.target.iter().any(|p| matches(p, name)) {
                continue;
            }
            let mut path = ctx.vars.root() / "lora";
            for part in name.split('.') {
                path = &path / part;
            }
            let bound = 1.0 / (*inputs as f64).sqrt();
            let a = path.var(
                "a",
                &[self.rank, *inputs],
                nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            );
            let b = path.var("b", &[*outputs, self.rank], nn::Init::Const(0.0));
            let adapter = LowRank {
                a: a.shallow_clone(),
                b: b.shallow_clone(),
                scale: self.scale,
            };
            if !ctx.model.set_adapter(name, Some(adapter)) {
                return Err(error(format!("the model refused an adapter on `{name}`")));
            }
            self.layers.push(Adapted { a, b, bound });
        }
        self.live = named_parameters(ctx.vars);
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
        Ok(())
    }

    /// Fresh adapters for the next task: `A` redrawn, `B = 0`.
    fn reset_adapters(&self) {
        let _no_grad = tch::no_grad_guard();
        for layer in &self.layers {
            let _ = layer.a.shallow_clone().uniform_(-layer.bound, layer.bound);
            let _ = layer.b.shallow_clone().zero_();
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

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.restore();
        if self.live.is_empty() {
            self.bind(ctx)
        } else {
            self.reset_adapters();
            Ok(())
        }
    }

    fn after_task(&mut self, _ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.tasks.push(
            self.live
                .iter()
                .map(|(n, t)| (n.clone(), t.detach().copy()))
                .collect(),
        );
        Ok(())
    }

    fn uses_task_id(&self) -> bool {
        true
    }

    /// Task `j`'s stored adapters and head for `Task(j)` of a finished task; the live ones
    /// otherwise.
    fn select(&mut self, _network: &Network, selection: Selection) -> Result<(), TrainError> {
        let task = match selection {
            Selection::Task(j) => Some(j),
            Selection::Latest | Selection::Merged => None,
        };
        match task.and_then(|j| self.tasks.get(j)) {
            Some(stored) => {
                if self.saved.is_none() {
                    self.saved = Some(self.live.iter().map(|(_, t)| t.detach().copy()).collect());
                }
                let values: Vec<Tensor> = stored.iter().map(|(_, t)| t.shallow_clone()).collect();
                self.write_live(values);
            }
            None => self.restore(),
        }
        Ok(())
    }

    /// `task<t>.<name>` for every stored task `t` and trained variable (`lora.<layer>.a`,
    /// `lora.<layer>.b`, the head's).
    fn state(&self) -> Vec<(String, Tensor)> {
        self.tasks
            .iter()
            .enumerate()
            .flat_map(|(t, stored)| {
                stored
                    .iter()
                    .map(move |(n, v)| (format!("task{t}.{n}"), v.shallow_clone()))
            })
            .collect()
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        let mut groups: BTreeMap<usize, Vec<(String, Tensor)>> = BTreeMap::new();
        for (key, tensor) in state {
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
        if !self.live.is_empty() {
            return Err(error(
                "state must be loaded before the first task binds the method".into(),
            ));
        }
        self.tasks = tasks;
        self.saved = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
