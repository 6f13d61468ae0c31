//! The optimiser `[training]` asks for: flat buffers ([`FlatOptimizer`], the default) or
//! libtorch's per-tensor one, built from its `[training.optimizer]` rule.

use retain_config::{OptimizerConfig, TrainingConfig};
use tch::nn;

use super::{FlatOptimizer, Rule};
use crate::TrainError;

/// The optimiser `config` describes, over the trainable variables of `vars` (those that
/// exist now and those created later): a [`FlatOptimizer`], whose parameters, gradients and
/// state live in flat buffers so that an update is a few kernels, not a few per tensor.
pub fn build_optimizer(
    config: &OptimizerConfig,
    vars: &nn::VarStore,
) -> Result<FlatOptimizer, TrainError> {
    let rule = match *config {
        OptimizerConfig::Sgd {
            lr,
            momentum,
            weight_decay,
        } => Rule::Sgd {
            lr,
            momentum,
            weight_decay,
        },
        OptimizerConfig::Adam { lr, weight_decay } => Rule::adam(lr, weight_decay),
    };
    Ok(FlatOptimizer::new(rule, vars))
}

/// The trainer's optimiser: flat buffers ([`FlatOptimizer`], the default) or libtorch's
/// per-tensor one (`[training] flat_optimizer = false`), behind the two calls a step makes.
pub enum TrainOptimizer {
    Flat(FlatOptimizer),
    PerTensor(nn::Optimizer),
}

impl TrainOptimizer {
    /// The optimiser of `training` (its `optimizer` rule and `flat_optimizer` choice) over
    /// the trainable variables of `vars`.
    pub fn new(training: &TrainingConfig, vars: &nn::VarStore) -> Result<Self, TrainError> {
        Ok(if training.flat_optimizer {
            Self::Flat(build_optimizer(&training.optimizer, vars)?)
        } else {
            Self::PerTensor(build_per_tensor_optimizer(&training.optimizer, vars)?)
        })
    }

    pub fn zero_grad(&mut self) {
        match self {
            Self::Flat(o) => o.zero_grad(),
            Self::PerTensor(o) => o.zero_grad(),
        }
    }

    pub fn step(&mut self) {
        match self {
            Self::Flat(o) => o.step(),
            Self::PerTensor(o) => o.step(),
        }
    }
}

/// libtorch's SGD or Adam for `config` over the trainable variables of `vars` (a few kernels
/// per parameter tensor and update; it skips parameters that got no gradient).
pub fn build_per_tensor_optimizer(
    config: &OptimizerConfig,
    vars: &nn::VarStore,
) -> Result<nn::Optimizer, TrainError> {
    use tch::nn::OptimizerConfig as _;
    Ok(match *config {
        OptimizerConfig::Sgd {
            lr,
            momentum,
            weight_decay,
        } => nn::Sgd {
            momentum,
            wd: weight_decay,
            ..Default::default()
        }
        .build(vars, lr)?,
        OptimizerConfig::Adam { lr, weight_decay } => nn::Adam {
            wd: weight_decay,
            ..Default::default()
        }
        .build(vars, lr)?,
    })
}
