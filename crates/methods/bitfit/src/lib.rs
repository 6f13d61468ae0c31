//! BitFit: fine-tune only the bias terms (and the classifier head).
//!
//! Before the first task, every variable of the model is frozen (`requires_grad` off) except
//! the bias terms (names ending in `.bias`: linear layers' and batch norms' shifts) and, with
//! `head = true`, the head's weight (its bias is a bias anyway). The trainer's optimiser then
//! only ever moves those, so every other weight stays bit-identical through the whole run
//! and the trainable parameter count in the manifest drops accordingly. Batch norm running
//! statistics are buffers, not parameters, and still follow the data in training mode.
//!
//! The loss is naive fine-tuning's cross-entropy: BitFit limits what can change, not how.
//! It is `peft` with `trainable = ["*.bias", "<head>.*"]`, kept under its own name as the
//! method of the literature.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `head` | `true` | also train the head's weight (the new classes need it on a class-split stream) |
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
//! name = "bitfit"
//! head = true
//! ```
//!
//! Ben Zaken, Ravfogel & Goldberg, "BitFit: Simple Parameter-efficient Fine-tuning for
//! Transformer-based Masked Language-models", ACL 2022.

use retain_models::names::matches;
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Method, TaskContext, TrainError, set_trainable, trainable_variables};
use serde::Deserialize;

/// The registry entry of `bitfit`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "bitfit",
    family: Family::ParameterEfficient,
    summary: "BitFit: only the bias terms (and the head) train",
    paper: "Ben Zaken, Ravfogel & Goldberg, \"BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked Language-models\", ACL 2022",
    params: &[Param {
        name: "head",
        kind: ParamKind::Bool,
        default: ParamDefault::Value("true"),
        doc: "also train the head's weight (the new classes need it on a class-split stream)",
    }],
    example: "head = true",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: false,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// BitFit's hyper-parameters (see the crate docs; defaults in [`DESCRIPTOR`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitFitParams {
    pub head: bool,
}

/// BitFit (see the crate docs).
pub struct BitFit {
    head: bool,
    frozen: bool,
}

/// Registry factory for `bitfit`.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(BitFit::new(DESCRIPTOR.parse(params)?)))
}

impl BitFit {
    pub fn new(params: BitFitParams) -> Self {
        Self {
            head: params.head,
            frozen: false,
        }
    }

    /// Whether the variable `name` trains, given the model's head prefix (`"head"`): the
    /// name patterns `*.bias` and, with `head`, `<head>.*`.
    pub fn trains(&self, name: &str, head: &str) -> bool {
        matches("*.bias", name) || (self.head && matches(&format!("{head}.*"), name))
    }
}

impl Method for BitFit {
    fn name(&self) -> &str {
        "bitfit"
    }

    /// The step is the default one over the biases and head, fixed for the run.
    fn capturable(&self) -> bool {
        true
    }

    /// Only which variables train is decided at the first `before_task`, again the same.
    fn resumes_within_task(&self) -> bool {
        true
    }

    /// Freezes everything but the biases (and the head) once, before the first task.
    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if self.frozen {
            return Ok(());
        }
        let head = ctx.model().head_name();
        set_trainable(&trainable_variables(ctx.vars()), |name| {
            self.trains(name, head)
        });
        self.frozen = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
