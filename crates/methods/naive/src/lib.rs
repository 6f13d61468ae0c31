//! Naive fine-tuning (SFT): plain supervised training on each task in turn.
//!
//! The lower bound of every continual-learning comparison: nothing protects earlier tasks, so
//! in class-incremental read-out the model forgets them almost completely. It uses every
//! default hook of [`Method`].
//!
//! ```toml
//! [method]
//! name = "naive"   # no hyper-parameters
//! ```
//!
//! # Peer conventions
//!
//! Avalanche 0.6.0's `Naive` (`ContinualAI/avalanche`,
//! `avalanche/training/supervised/strategy_wrappers.py`) and Mammoth's `sgd`
//! (`aimagelab/mammoth` at `e75a491`, `models/sgd.py`) are the same method: the criterion
//! (cross-entropy over every output) on each batch, nothing else, and nothing to translate.
//! What can still change a number at a task boundary is the optimiser: Mammoth builds a new
//! one at every task (`meta_begin_task` in `models/utils/continual_model.py`), dropping
//! momentum and Adam moments; Avalanche keeps its optimiser and its state (`make_optimizer`
//! with `reset_optimizer_state = False` in
//! `avalanche/training/templates/observation_type/batch_observation.py`); here one optimiser
//! serves the whole run, as in Avalanche. With plain SGD without momentum all three agree.

use retain_train::method::{Capabilities, Family, MethodDescriptor};
use retain_train::{Method, TrainError};
use serde::Deserialize;

/// The registry entry of `naive`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "naive",
    family: Family::Baseline,
    summary: "Fine-tuning on each task in turn (SFT): the lower bound of every comparison",
    paper: "the fine-tuning baseline of every continual-learning comparison",
    params: &[],
    example: "",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: false,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// Naive fine-tuning. Takes no hyper-parameters.
#[derive(Debug, Default)]
pub struct Naive;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {}

/// Registry factory: rejects any hyper-parameter, since naive fine-tuning has none.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    let Params {} = DESCRIPTOR.parse(params)?;
    Ok(Box::new(Naive))
}

impl Method for Naive {
    /// The step reads only device tensors fixed for the task: captured in a CUDA graph on CUDA.
    fn capturable(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        "naive"
    }

    /// Nothing but the network and the optimiser carries within a task.
    fn resumes_within_task(&self) -> bool {
        true
    }
}
