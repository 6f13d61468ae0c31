//! Bottleneck adapters per task: small residual modules after chosen layers of a frozen
//! backbone, and a classifier head, per task.
//!
//! The output `y` of every target linear layer becomes `y + U relu(D y + d) + u` (Houlsby et
//! al. 2019), with `D: [width, outputs]` and `d: [width]` drawn uniformly from `±1/√outputs`
//! (a PyTorch linear layer's default initialisation, fan-in `outputs`), and `U: [outputs,
//! width]`, `u: [outputs]` zero: a fresh adapter is the identity and leaves the network's
//! outputs exactly unchanged. All of the backbone's variables are frozen (`requires_grad`
//! off); only the adapters (`adapter.<layer>.{down_weight,down_bias,up_weight,up_bias}`) and
//! the head train.
//!
//! In a vision transformer the default targets are Houlsby's two positions per block: after
//! the attention's output projection and after the MLP's second layer, each before the
//! residual addition (`blocks.*.attn.proj`, `blocks.*.mlp.fc2`). In an MLP they are the
//! hidden layers (before their ReLU). Houlsby et al. also train the layer norms; here they
//! stay frozen, so that the backbone is exactly shared between tasks.
//!
//! Each task gets its own adapters and head, kept by a [`retain_peft::TaskBank`]: the trained
//! values are copied aside on the training device after each task, and the next task starts
//! from fresh adapters (`D`, `d` redrawn, `U = 0`, `u = 0`) and the current head. In the
//! task-incremental read-out, task `j` is evaluated with task `j`'s adapters and head (the
//! true task id picks them, through [`Method::select`]); the read-outs without a task id
//! use the most recent ones. The backbone and the stored copies never change, so task-IL
//! accuracy on a finished task stays exactly what it was after that task, at the price of
//! needing the task id and of `2 · width · outputs + width + outputs` parameters per target
//! layer and task. Each task starts with a fresh optimiser
//! ([`Method::fresh_optimizer_each_task`]): no moment estimates carry over from one task's
//! adapters to the next's.
//!
//! Start from a pretrained backbone with `[model] checkpoint = "…"`: on a random backbone the
//! adapters can only reshape random features.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `width` | `16` | bottleneck width of every adapter (≥ 1) |
//! | `target` | by model | name patterns of the linear layers whose output gets an adapter (`*` matches any characters; see [`retain_models::Backbone::adaptable_layers`]); default `["blocks.*.attn.proj", "blocks.*.mlp.fc2"]` for a transformer, `["hidden.*"]` otherwise. The head is never a target: it trains fully per task |
//!
//! # Example
//!
//! ```toml
//! [model]
//! kind = "vit"
//! checkpoint = "results/pretrained/vit.safetensors"
//!
//! [method]
//! name = "adapter"
//! width = 16
//! target = ["blocks.*.attn.proj", "blocks.*.mlp.fc2"]
//! ```
//!
//! Houlsby et al., "Parameter-Efficient Transfer Learning for NLP", ICML 2019.

use retain_models::{Backbone, Bottleneck};
use retain_peft::{
    Banked, Fresh, TaskBank, error, freeze_backbone, invalid, nested_path, select_layers,
};
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Method, Network, Selection, TaskContext, TrainError};
use serde::Deserialize;
use tch::Tensor;

const NAME: &str = "adapter";

/// The registry entry of `adapter`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: NAME,
    family: Family::ParameterEfficient,
    summary: "Bottleneck adapters per task: residual modules and a head per task on a frozen backbone",
    paper: "Houlsby et al., \"Parameter-Efficient Transfer Learning for NLP\", ICML 2019",
    params: &[
        Param {
            name: "width",
            kind: ParamKind::Count,
            default: ParamDefault::Value("16"),
            doc: "bottleneck width of every adapter (≥ 1)",
        },
        Param {
            name: "target",
            kind: ParamKind::Strings,
            default: ParamDefault::Derived(
                "by the model: [\"blocks.*.attn.proj\", \"blocks.*.mlp.fc2\"] on a transformer, [\"hidden.*\"] otherwise",
            ),
            doc: "name patterns of the linear layers whose output gets an adapter (never the head, which trains per task)",
        },
    ],
    example: "width = 16\ntarget = [\"blocks.*.attn.proj\", \"blocks.*.mlp.fc2\"]",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: false,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// The adapters' hyper-parameters (see the crate docs; defaults in [`DESCRIPTOR`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterParams {
    pub width: usize,
    /// `None`: by model (see [`default_target`]).
    #[serde(default)]
    pub target: Option<Vec<String>>,
}

/// The target patterns when none are given: Houlsby's positions in a transformer, the hidden
/// layers otherwise.
pub fn default_target(model: &dyn Backbone) -> Vec<String> {
    let patterns: &[&str] = match model.transformer_shape() {
        Some(_) => &["blocks.*.attn.proj", "blocks.*.mlp.fc2"],
        None => &["hidden.*"],
    };
    patterns.iter().map(|p| p.to_string()).collect()
}

/// Bottleneck adapters per task (see the crate docs).
pub struct Adapter {
    width: i64,
    target: Option<Vec<String>>,
    /// The adapted layers, once bound.
    layers: Vec<String>,
    bank: TaskBank,
}

/// Registry factory for `adapter`.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Adapter::new(DESCRIPTOR.parse(params)?)?))
}

impl Adapter {
    pub fn new(params: AdapterParams) -> Result<Self, TrainError> {
        if params.width == 0 {
            return Err(invalid(NAME, "`width` must be at least 1".into()));
        }
        retain_train::method::check_param_memory(
            NAME,
            "width",
            params.width,
            8,
            "at least 8 bytes per unit: a row of the down and a column of the up projection, 4 bytes a weight",
        )?;
        if params.target.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid(
                NAME,
                "`target` must name at least one layer pattern".into(),
            ));
        }
        Ok(Self {
            width: params.width as i64,
            target: params.target,
            layers: Vec::new(),
            bank: TaskBank::new(NAME),
        })
    }

    /// The adapted layers, sorted by name (empty before the first task).
    pub fn layers(&self) -> &[String] {
        &self.layers
    }

    /// The layers of `model` that `target` (or the default target) selects; an error when a
    /// pattern matches none or the head.
    fn selected_layers(&self, model: &dyn Backbone) -> Result<Vec<(String, [i64; 2])>, TrainError> {
        let target = match &self.target {
            Some(target) => target.clone(),
            None => default_target(model),
        };
        select_layers(NAME, model, &target)
    }

    /// Freezes the backbone, creates the adapters and attaches them (first task only).
    fn bind(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let layers = self.selected_layers(ctx.model())?;
        freeze_backbone(ctx.vars(), ctx.model().head_name());
        let root = ctx.vars().root() / NAME;
        for (name, [outputs, _]) in &layers {
            let path = nested_path(&root, name);
            let bound = 1.0 / (*outputs as f64).sqrt();
            let down = Fresh::Uniform { bound };
            let width = self.width;
            let adapter = Bottleneck {
                down_weight: self
                    .bank
                    .variable(&path, "down_weight", &[width, *outputs], down),
                down_bias: self.bank.variable(&path, "down_bias", &[width], down),
                up_weight: self
                    .bank
                    .variable(&path, "up_weight", &[*outputs, width], Fresh::Zeros),
                up_bias: self
                    .bank
                    .variable(&path, "up_bias", &[*outputs], Fresh::Zeros),
            };
            if !ctx.model().set_bottleneck(name, Some(adapter)) {
                return Err(error(
                    NAME,
                    format!("the model refused an adapter on `{name}`"),
                ));
            }
        }
        self.layers = layers.into_iter().map(|(n, _)| n).collect();
        self.bank.bind(ctx.vars(), ctx.device, ctx.seed)
    }
}

impl Banked for Adapter {
    fn bank(&self) -> &TaskBank {
        &self.bank
    }
}

impl Method for Adapter {
    fn name(&self) -> &str {
        NAME
    }

    /// Every `target` pattern must match an adaptable layer other than the head.
    fn check_network(&self, network: &Network) -> Result<(), TrainError> {
        self.selected_layers(network.model.as_ref()).map(|_| ())
    }

    retain_peft::task_bank_hooks!(bank);
}

#[cfg(test)]
mod tests;
