//! `[training]`: the optimisation loop every method shares, and its optimiser.

use serde::{Deserialize, Serialize};

/// `[training]`: the optimisation loop shared by every method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_eval_batch_size")]
    pub eval_batch_size: usize,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// Keep parameters, gradients and optimiser state in flat buffers, so that an update is a
    /// few kernels rather than a few per parameter tensor (the default); `false` uses
    /// libtorch's per-tensor optimisers instead (same arithmetic; for comparison, and for a
    /// method that relies on libtorch skipping parameters that got no gradient).
    #[serde(default = "default_flat_optimizer")]
    pub flat_optimizer: bool,
    /// The training loss's label space (see [`TrainingLoss`]).
    #[serde(default)]
    pub loss: TrainingLoss,
    /// On CUDA, capture each task's training step in a CUDA graph and replay it (the default),
    /// for methods that declare their step capturable and with the flat optimiser; `false`
    /// runs every step eagerly. No effect on the CPU. The manifest records how the steps ran.
    #[serde(default = "default_cuda_graph")]
    pub cuda_graph: bool,
    /// The arithmetic of the training forward pass (see [`Precision`]).
    #[serde(default)]
    pub precision: Precision,
    /// The memory layout of the convolution weights (see [`MemoryFormat`]).
    #[serde(default)]
    pub memory_format: MemoryFormat,
    /// An epoch whose mean training loss exceeds this multiple of the loss of the run's first
    /// step counts as divergence and fails the run, as a non-finite mean loss does (a
    /// `[pretrain]` stage: of its own first step). Finite and above 1; the default, 10⁶, is
    /// far beyond what a healthy run reaches.
    #[serde(default = "default_divergence_factor")]
    pub divergence_factor: f64,
    /// Besides the resume checkpoint at every task boundary, one after every this many epochs
    /// within a task (not after a task's last epoch: the boundary's follows), for long tasks;
    /// 0 (the default) writes boundary checkpoints only. Only for methods that can continue a
    /// task from its middle (`Method::resumes_within_task`); the others checkpoint at task
    /// boundaries alone. It changes when checkpoints are written, never what is computed, so
    /// a run may be resumed with another value.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub checkpoint_every_epochs: usize,
    /// The online protocol (GEM, A-GEM, Avalanche's online streams): one pass over the
    /// stream (`epochs = 1`, so every training sample is seen exactly once) and, besides the
    /// evaluations before training and after each task, an evaluation of every task in every
    /// read-out after every `eval_every` optimiser steps, counted over the whole run (the
    /// anytime evaluations). `false` (the default): the offline protocol.
    #[serde(default, skip_serializing_if = "is_false")]
    pub online: bool,
    /// With `online`: the anytime evaluations' period, in optimiser steps (required, at least
    /// 1). Refused without `online`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<usize>,
    /// With `online`: β of the learning curve area LCA_β (Chaudhry et al. 2019), in
    /// optimiser steps into each task; 10 (the paper's) when not given. Refused without
    /// `online`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lca_beta: Option<usize>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// β of LCA_β when `[training] lca_beta` is not given: A-GEM's 10 mini-batches.
pub const DEFAULT_LCA_BETA: usize = 10;

impl TrainingConfig {
    /// The anytime evaluations' period in steps: `Some` only for an online run.
    pub fn anytime_every(&self) -> Option<usize> {
        self.eval_every.filter(|_| self.online)
    }

    /// β of LCA_β, in steps: `lca_beta`, else [`DEFAULT_LCA_BETA`].
    pub fn lca_beta(&self) -> usize {
        self.lca_beta.unwrap_or(DEFAULT_LCA_BETA)
    }
}

fn is_zero(value: &usize) -> bool {
    *value == 0
}

/// `[training] precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// float32 throughout (the default).
    #[default]
    Fp32,
    /// bf16 autocast for the training forward pass and loss (PyTorch's
    /// `torch.autocast(dtype=torch.bfloat16)`): matrix products and convolutions in bfloat16,
    /// softmax, losses and normalisation in float32; weights, gradients and optimiser state
    /// stay float32. Evaluation stays float32.
    Bf16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// `[training] memory_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryFormat {
    /// Row-major `[N, C, H, W]` (the default).
    #[default]
    Contiguous,
    /// Convolution weights stored `[N, H, W, C]` (PyTorch's `torch.channels_last`): cuDNN then
    /// runs its NHWC kernels and produces channels-last activations, faster with bf16 on
    /// tensor cores. Only for convolutional backbones (`resnet18`).
    ChannelsLast,
}

impl MemoryFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryFormat::Contiguous => "contiguous",
            MemoryFormat::ChannelsLast => "channels_last",
        }
    }
}

fn default_cuda_graph() -> bool {
    true
}

/// `[training] loss`: which outputs the training cross-entropy covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainingLoss {
    /// Cross-entropy over every output (the default): the class-incremental loss of a
    /// single-head network, as Mammoth and Avalanche train.
    #[default]
    ClassIl,
    /// Cross-entropy over the classes of the sample's own task only (the other outputs are
    /// left out of the softmax): the task-incremental, multi-headed training of van de Ven &
    /// Tolias 2018 and FACIL, with one output layer whose rows per task act as the heads.
    TaskIl,
}

impl TrainingLoss {
    pub fn as_str(self) -> &'static str {
        match self {
            TrainingLoss::ClassIl => "class_il",
            TrainingLoss::TaskIl => "task_il",
        }
    }
}

fn default_divergence_factor() -> f64 {
    1e6
}

fn default_flat_optimizer() -> bool {
    true
}

fn default_epochs() -> usize {
    1
}
fn default_batch_size() -> usize {
    10
}
fn default_eval_batch_size() -> usize {
    1000
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            epochs: default_epochs(),
            batch_size: default_batch_size(),
            eval_batch_size: default_eval_batch_size(),
            optimizer: OptimizerConfig::default(),
            flat_optimizer: default_flat_optimizer(),
            loss: TrainingLoss::default(),
            cuda_graph: default_cuda_graph(),
            precision: Precision::default(),
            memory_format: MemoryFormat::default(),
            divergence_factor: default_divergence_factor(),
            checkpoint_every_epochs: 0,
            online: false,
            eval_every: None,
            lca_beta: None,
        }
    }
}

/// `[training.optimizer]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum OptimizerConfig {
    Sgd {
        lr: f64,
        #[serde(default)]
        momentum: f64,
        #[serde(default)]
        weight_decay: f64,
    },
    Adam {
        lr: f64,
        #[serde(default)]
        weight_decay: f64,
    },
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self::Sgd {
            lr: 0.01,
            momentum: 0.0,
            weight_decay: 0.0,
        }
    }
}
