//! Prompt tuning per task: learned prompt tokens in a frozen transformer's input, and a
//! classifier head, per task.
//!
//! `length` learned tokens `[length, width]` join the input sequence of a vision transformer
//! right after the class token, before the patch tokens (Lester et al. 2021 for language
//! models; VPT-shallow, Jia et al. 2022, for vision transformers). They take no position
//! embedding. Every block attends to them, so they steer the class token the head reads. All
//! of the backbone's variables are frozen (`requires_grad` off); only the prompt
//! (`prompt.tokens`) and the head train.
//!
//! The tokens start from a normal distribution with mean 0 and standard deviation 0.02, the
//! initialisation of the class token and position embeddings of timm's vision transformers,
//! so that a prompt starts at the scale of the tokens it joins. (VPT draws from a Xavier
//! uniform, Lester et al. from sampled vocabulary embeddings, which an image model does not
//! have.) Unlike a fresh adapter, a fresh prompt is not neutral: it adds tokens to every
//! attention, so it changes the outputs from the first step on.
//!
//! Each task gets its own prompt and head, kept by a [`retain_peft::TaskBank`]: the trained
//! values are copied aside on the training device after each task, and the next task starts
//! from a freshly drawn prompt and the current head. In the task-incremental read-out, task
//! `j` is evaluated with task `j`'s prompt and head (the true task id picks them, through
//! [`Method::select`]); the read-outs without a task id use the most recent ones. The
//! backbone and the stored copies never change, so task-IL accuracy on a finished task stays
//! exactly what it was after that task, at the price of needing the task id and of
//! `length · width` parameters (and the head) per task. Each task starts with a fresh optimiser
//! ([`Method::fresh_optimizer_each_task`]): no moment estimates carry over from one task's
//! prompt to the next's.
//!
//! The model must be a transformer (`[model] kind = "vit"`); anything else is refused when
//! the first task starts. Start from a pretrained backbone with `[model] checkpoint = "…"`:
//! on a random backbone a prompt can only steer random features.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `length` | `8` | number of prompt tokens (≥ 1) |
//!
//! # Example
//!
//! ```toml
//! [model]
//! kind = "vit"
//! checkpoint = "results/pretrained/vit.safetensors"
//!
//! [method]
//! name = "prompt"
//! length = 8
//! ```
//!
//! Lester, Al-Rfou & Constant, "The Power of Scale for Parameter-Efficient Prompt Tuning",
//! EMNLP 2021. Jia et al., "Visual Prompt Tuning", ECCV 2022.

use retain_peft::{Banked, Fresh, TaskBank, error, freeze_backbone, invalid};
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Method, Network, Selection, TaskContext, TrainError};
use serde::Deserialize;
use tch::Tensor;

const NAME: &str = "prompt";

/// Standard deviation of the prompt's initial draw.
pub const INIT_STD: f64 = 0.02;

/// The registry entry of `prompt`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: NAME,
    family: Family::ParameterEfficient,
    summary: "Prompt tuning per task: learned input tokens and a head per task in a frozen transformer",
    paper: "Lester, Al-Rfou & Constant, \"The Power of Scale for Parameter-Efficient Prompt Tuning\", EMNLP 2021; Jia et al., \"Visual Prompt Tuning\", ECCV 2022",
    params: &[Param {
        name: "length",
        kind: ParamKind::Count,
        default: ParamDefault::Value("8"),
        doc: "number of prompt tokens (≥ 1)",
    }],
    example: "length = 8",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: false,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// Prompt tuning's hyper-parameters (see the crate docs; defaults in [`DESCRIPTOR`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptParams {
    pub length: usize,
}

/// Prompt tuning per task (see the crate docs).
pub struct Prompt {
    length: i64,
    bank: TaskBank,
}

/// Registry factory for `prompt`.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Prompt::new(DESCRIPTOR.parse(params)?)?))
}

impl Prompt {
    pub fn new(params: PromptParams) -> Result<Self, TrainError> {
        if params.length == 0 {
            return Err(invalid(NAME, "`length` must be at least 1".into()));
        }
        Ok(Self {
            length: params.length as i64,
            bank: TaskBank::new(NAME),
        })
    }

    /// The width of the transformer `model`; an error when it is not one.
    fn width(model: &dyn retain_models::Backbone) -> Result<i64, TrainError> {
        let Some((width, _)) = model.transformer_shape() else {
            return Err(error(
                NAME,
                "prompt tuning needs a transformer, whose input sequence takes the prompt: \
                 set `model.kind = \"vit\"`"
                    .into(),
            ));
        };
        Ok(width)
    }

    /// Freezes the backbone, creates the prompt and attaches it (first task only).
    fn bind(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let width = Self::width(ctx.model())?;
        freeze_backbone(ctx.vars(), ctx.model().head_name());
        let tokens = self.bank.variable(
            &(ctx.vars().root() / NAME),
            "tokens",
            &[self.length, width],
            Fresh::Normal { std: INIT_STD },
        );
        if !ctx.model().set_prompt(Some(tokens)) {
            return Err(error(NAME, "the model refused a prompt".into()));
        }
        self.bank.bind(ctx.vars(), ctx.device, ctx.seed)
    }
}

impl Banked for Prompt {
    fn bank(&self) -> &TaskBank {
        &self.bank
    }
}

impl Method for Prompt {
    fn name(&self) -> &str {
        NAME
    }

    /// The model must be a transformer.
    fn check_network(&self, network: &Network) -> Result<(), TrainError> {
        Self::width(network.model.as_ref()).map(|_| ())
    }

    retain_peft::task_bank_hooks!(bank);
}

#[cfg(test)]
mod tests;
