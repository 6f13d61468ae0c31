//! Prefix tuning per task: learned keys and values in the attention of a frozen transformer's
//! blocks, and a classifier head, per task.
//!
//! In every chosen block, `length` learned keys and values (`[length, width]` each, split
//! over the heads like the block's own) are prepended to the keys and values the block
//! computes from its input (Li & Liang 2021). Queries stay the sequence's own, so every
//! token may attend to the prefix and the output keeps its length. All of the backbone's
//! variables are frozen (`requires_grad` off); only the prefixes (`prefix.<block>.key`,
//! `prefix.<block>.value`) and the head train.
//!
//! The keys and values are learned directly, drawn from a normal distribution with mean 0
//! and standard deviation 0.02 (the scale timm gives a vision transformer's class token and
//! position embeddings). Li & Liang instead reparameterise them as `P = MLP(P')` of a smaller
//! matrix during training, because optimising the prefix directly was unstable and lost
//! performance for their GPT-2 and BART models. The direct form trains stably on the small
//! vision transformers of the tests here (Split-MNIST, Adam); an option could add the
//! reparameterisation where it does not.
//! A fresh prefix is not neutral: its keys take part in every attention of the block, so it
//! changes the outputs from the first step on.
//!
//! Each task gets its own prefixes and head, kept by a [`retain_peft::TaskBank`]: the trained
//! values are copied aside on the training device after each task, and the next task starts
//! from freshly drawn prefixes and the current head. In the task-incremental read-out, task
//! `j` is evaluated with task `j`'s prefixes and head (the true task id picks them, through
//! [`Method::select`]); the read-outs without a task id use the most recent ones. The
//! backbone and the stored copies never change, so task-IL accuracy on a finished task stays
//! exactly what it was after that task, at the price of needing the task id and of
//! `2 · length · width` parameters per block (and the head) per task. Each task starts with a fresh optimiser
//! ([`Method::fresh_optimizer_each_task`]): no moment estimates carry over from one task's
//! prefixes to the next's.
//!
//! The model must be a transformer (`[model] kind = "vit"`); anything else is refused when
//! the first task starts. Start from a pretrained backbone with `[model] checkpoint = "…"`:
//! on a random backbone a prefix can only steer random features.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `length` | `5` | number of prefix keys and values per block (≥ 1) |
//! | `blocks` | all | indices of the blocks that get a prefix (0-based, each below the model's `depth`, no repeats) |
//!
//! # Example
//!
//! ```toml
//! [model]
//! kind = "vit"
//! checkpoint = "results/pretrained/vit.safetensors"
//!
//! [method]
//! name = "prefix"
//! length = 5
//! blocks = [0, 1, 2, 3]
//! ```
//!
//! Li & Liang, "Prefix-Tuning: Optimizing Continuous Prompts for Generation", ACL 2021.

use retain_peft::{Banked, Fresh, TaskBank, error, freeze_backbone, invalid};
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Method, Network, Selection, TaskContext, TrainError};
use serde::Deserialize;
use tch::Tensor;

const NAME: &str = "prefix";

/// Standard deviation of the keys' and values' initial draw.
pub const INIT_STD: f64 = 0.02;

/// The registry entry of `prefix`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: NAME,
    family: Family::ParameterEfficient,
    summary: "Prefix tuning per task: learned attention keys and values and a head per task in a frozen transformer",
    paper: "Li & Liang, \"Prefix-Tuning: Optimizing Continuous Prompts for Generation\", ACL 2021",
    params: &[
        Param {
            name: "length",
            kind: ParamKind::Count,
            default: ParamDefault::Value("5"),
            doc: "number of prefix keys and values per block (≥ 1)",
        },
        Param {
            name: "blocks",
            kind: ParamKind::Counts,
            default: ParamDefault::Derived("every block"),
            doc: "indices of the blocks that get a prefix (0-based, each below the model's depth, no repeats)",
        },
    ],
    example: "length = 5\nblocks = [0, 1, 2, 3]",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: false,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// Prefix tuning's hyper-parameters (see the crate docs; defaults in [`DESCRIPTOR`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixParams {
    pub length: usize,
    /// `None`: every block.
    #[serde(default)]
    pub blocks: Option<Vec<usize>>,
}

/// Prefix tuning per task (see the crate docs).
pub struct Prefix {
    length: i64,
    blocks: Option<Vec<usize>>,
    /// The blocks with a prefix, once bound.
    bound_blocks: Vec<usize>,
    bank: TaskBank,
}

/// Registry factory for `prefix`.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Prefix::new(DESCRIPTOR.parse(params)?)?))
}

impl Prefix {
    pub fn new(params: PrefixParams) -> Result<Self, TrainError> {
        if params.length == 0 {
            return Err(invalid(NAME, "`length` must be at least 1".into()));
        }
        if let Some(blocks) = &params.blocks {
            if blocks.is_empty() {
                return Err(invalid(
                    NAME,
                    "`blocks` must name at least one block (leave it out for all)".into(),
                ));
            }
            let mut sorted = blocks.clone();
            sorted.sort_unstable();
            if let Some(pair) = sorted.windows(2).find(|p| p[0] == p[1]) {
                return Err(invalid(
                    NAME,
                    format!("`blocks` names block {} twice", pair[0]),
                ));
            }
        }
        Ok(Self {
            length: params.length as i64,
            blocks: params.blocks.map(|mut b| {
                b.sort_unstable();
                b
            }),
            bound_blocks: Vec::new(),
            bank: TaskBank::new(NAME),
        })
    }

    /// The blocks with a prefix, ascending (empty before the first task).
    pub fn blocks(&self) -> &[usize] {
        &self.bound_blocks
    }

    /// The transformer `model`'s width and the blocks that take a prefix; an error when it is
    /// not a transformer or `blocks` names a block beyond its depth.
    fn layout(&self, model: &dyn retain_models::Backbone) -> Result<(i64, Vec<usize>), TrainError> {
        let Some((width, depth)) = model.transformer_shape() else {
            return Err(error(
                NAME,
                "prefix tuning needs a transformer, whose attention takes the prefix: \
                 set `model.kind = \"vit\"`"
                    .into(),
            ));
        };
        let blocks = match &self.blocks {
            Some(blocks) => blocks.clone(),
            None => (0..depth).collect(),
        };
        if let Some(&block) = blocks.iter().find(|&&b| b >= depth) {
            return Err(error(
                NAME,
                format!(
                    "`method.blocks` names block {block}, but the model has {depth} (0 to {})",
                    depth.saturating_sub(1)
                ),
            ));
        }
        Ok((width, blocks))
    }

    /// Freezes the backbone, creates the prefixes and attaches them (first task only).
    fn bind(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let (width, blocks) = self.layout(ctx.model())?;
        freeze_backbone(ctx.vars(), ctx.model().head_name());
        let root = ctx.vars().root() / NAME;
        let fresh = Fresh::Normal { std: INIT_STD };
        for &block in &blocks {
            let path = &root / block;
            let shape = [self.length, width];
            let key = self.bank.variable(&path, "key", &shape, fresh);
            let value = self.bank.variable(&path, "value", &shape, fresh);
            if !ctx.model().set_prefix(block, Some((key, value))) {
                return Err(error(
                    NAME,
                    format!("the model refused a prefix on block {block}"),
                ));
            }
        }
        self.bound_blocks = blocks;
        self.bank.bind(ctx.vars(), ctx.device, ctx.seed)
    }
}

impl Banked for Prefix {
    fn bank(&self) -> &TaskBank {
        &self.bank
    }
}

impl Method for Prefix {
    fn name(&self) -> &str {
        NAME
    }

    /// The model must be a transformer with every block `blocks` names.
    fn check_network(&self, network: &Network) -> Result<(), TrainError> {
        self.layout(network.model.as_ref()).map(|_| ())
    }

    retain_peft::task_bank_hooks!(bank);
}

#[cfg(test)]
mod tests;
