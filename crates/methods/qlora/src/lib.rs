//! QLoRA: LoRA per task on a frozen base kept in 4-bit NormalFloat (or int8) form.
//!
//! Before the first task every adaptable linear layer of the backbone except the head is
//! quantised ([`retain_models::quant`]): NF4 codes with one absmax scale per `block` weights
//! (QLoRA's storage, Dettmers et al. 2023) or int8 codes with one scale per output channel.
//! The float weight variables are released; each forward pass dequantises the weights on the
//! fly, in float, and the low-rank adapters (`lora.<layer>.{a,b}`, float) train on top,
//! exactly as in [`retain_method_lora`], with one adapter set and head per task. What is
//! bought is memory: the frozen base of an MLP's weight matrices shrinks about 7× with NF4
//! at block 64 (4 bits per weight plus a 32-bit scale per 64) and about 4× with int8, which
//! the run's `frozen_base_bytes` cost shows. What it may cost is accuracy, from the
//! quantisation error of the frozen features. Biases, normalisation parameters and
//! convolutions stay in float.
//!
//! QLoRA's double quantisation of the scales and its paged optimisers are not implemented
//! (the first saves ~0.4 bit per weight, the second matters for 65B-parameter models).
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `rank` | `8` | rank `r` of every adapter (≥ 1), as in [`retain_method_lora`] |
//! | `alpha` | `rank` | scale numerator: the update is `(α/r) · B A` (> 0), as in `lora` |
//! | `target` | by the model, as in `lora` | name patterns of the linear layers to adapt, as in `lora` |
//! | `quant` | `"nf4"` | `"nf4"` (block-wise 4-bit NormalFloat) or `"int8"` (per output channel) |
//! | `block` | `64` | NF4 block size (weights per scale, ≥ 1); unused with `"int8"` |
//!
//! # Example
//!
//! ```toml
//! [model]
//! kind = "mlp"
//! hidden = [400, 400]
//! checkpoint = "results/pretrained/model.safetensors"
//!
//! [method]
//! name = "qlora"
//! rank = 8
//! alpha = 16.0
//! quant = "nf4"
//! block = 64
//! ```
//!
//! Dettmers, Pagnoni, Holtzman & Zettlemoyer, "QLoRA: Efficient Finetuning of Quantized
//! LLMs", NeurIPS 2023.

use retain_method_lora::{Lora, LoraParams};
use retain_models::QuantFormat;
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{Method, Network, Readout, Selection, StepContext, TaskContext, TrainError};
use serde::Deserialize;
use tch::Tensor;

/// The registry entry of `qlora`: LoRA's keys and defaults ([`retain_method_lora::PARAMS`]),
/// then the quantisation's.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "qlora",
    family: Family::ParameterEfficient,
    summary: "QLoRA: LoRA per task on a frozen base kept in 4-bit NormalFloat or int8 form",
    paper: "Dettmers, Pagnoni, Holtzman & Zettlemoyer, \"QLoRA: Efficient Finetuning of Quantized LLMs\", NeurIPS 2023",
    params: &[
        retain_method_lora::PARAMS[0],
        retain_method_lora::PARAMS[1],
        retain_method_lora::PARAMS[2],
        Param {
            name: "quant",
            kind: ParamKind::Choice(&["nf4", "int8"]),
            default: ParamDefault::Value("\"nf4\""),
            doc: "how the frozen base is stored: block-wise 4-bit NormalFloat, or int8 per output channel",
        },
        Param {
            name: "block",
            kind: ParamKind::Count,
            default: ParamDefault::Value("64"),
            doc: "NF4 block size: weights per scale (≥ 1; unused with int8)",
        },
    ],
    example: "rank = 8\nalpha = 16.0\nquant = \"nf4\"\nblock = 64",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: false,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// How the frozen base is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quant {
    Nf4,
    Int8,
}

/// QLoRA's hyper-parameters (see the crate docs; defaults in [`DESCRIPTOR`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QLoraParams {
    pub rank: usize,
    /// `None` means `rank` (scale 1).
    #[serde(default)]
    pub alpha: Option<f64>,
    /// `None`: LoRA's default for the model.
    #[serde(default)]
    pub target: Option<Vec<String>>,
    pub quant: Quant,
    pub block: usize,
}

/// QLoRA (see the crate docs).
pub struct QLora {
    lora: Lora,
    format: QuantFormat,
    /// Bytes of the quantised base, once quantised.
    quantized_bytes: Option<u64>,
}

/// Registry factory for `qlora`.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(QLora::new(DESCRIPTOR.parse(params)?)?))
}

impl QLora {
    pub fn new(params: QLoraParams) -> Result<Self, TrainError> {
        let format = match params.quant {
            Quant::Int8 => QuantFormat::Int8,
            Quant::Nf4 if params.block == 0 => {
                return Err(TrainError::MethodParams {
                    method: "qlora".into(),
                    message: "`block` must be at least 1".into(),
                });
            }
            Quant::Nf4 => QuantFormat::Nf4 {
                block: params.block,
            },
        };
        let lora = Lora::new(LoraParams {
            rank: params.rank,
            alpha: params.alpha,
            target: params.target,
        })
        .map_err(|e| match e {
            TrainError::MethodParams { message, .. } => TrainError::MethodParams {
                method: "qlora".into(),
                message,
            },
            other => other,
        })?;
        Ok(Self {
            lora,
            format,
            quantized_bytes: None,
        })
    }

    /// Bytes of the quantised frozen base (codes and scales), once the first task started.
    pub fn quantized_bytes(&self) -> Option<u64> {
        self.quantized_bytes
    }

    /// The LoRA part (stored tasks, scale).
    pub fn lora(&self) -> &Lora {
        &self.lora
    }

    /// Quantises every adaptable layer but the head.
    fn quantize_base(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let head = ctx.model().head_name();
        let mut bytes = 0;
        for (name, _) in ctx.model().adaptable_layers() {
            if name == head {
                continue;
            }
            bytes += ctx
                .model()
                .quantize(&name, Some(self.format))
                .ok_or_else(|| TrainError::Method {
                    method: "qlora".into(),
                    message: format!("the model refused to quantise `{name}`"),
                })?;
        }
        if bytes == 0 {
            return Err(TrainError::Method {
                method: "qlora".into(),
                message: "the model has no linear layer besides the head to quantise".into(),
            });
        }
        self.quantized_bytes = Some(bytes);
        Ok(())
    }
}

impl Method for QLora {
    fn name(&self) -> &str {
        "qlora"
    }

    /// LoRA's check, under this method's name.
    fn check_network(&self, network: &Network) -> Result<(), TrainError> {
        self.lora.check_network(network).map_err(|e| match e {
            TrainError::Method { message, .. } => TrainError::Method {
                method: "qlora".into(),
                message,
            },
            other => other,
        })
    }

    /// The step is LoRA's, over dequantised weights computed on the device.
    fn capturable(&self) -> bool {
        true
    }

    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if self.quantized_bytes.is_none() {
            self.quantize_base(ctx)?;
        }
        self.lora.before_task(ctx)
    }

    fn training_indices(&mut self, ctx: &TaskContext<'_>) -> Vec<i64> {
        self.lora.training_indices(ctx)
    }

    fn loss(
        &mut self,
        ctx: &StepContext<'_>,
        batch: &retain_train::Batch,
    ) -> Result<Tensor, TrainError> {
        self.lora.loss(ctx, batch)
    }

    fn after_backward(&mut self, ctx: &StepContext<'_>) -> Result<(), TrainError> {
        self.lora.after_backward(ctx)
    }

    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.lora.after_task(ctx)
    }

    fn uses_task_id(&self) -> bool {
        self.lora.uses_task_id()
    }

    fn fresh_optimizer_each_task(&self) -> bool {
        self.lora.fresh_optimizer_each_task()
    }

    /// As LoRA's, except the merged read-out: the low-rank updates cannot be added into
    /// quantised weights without dequantising the base.
    fn supports_readout(&self, readout: Readout) -> bool {
        readout != Readout::Merged && self.lora.supports_readout(readout)
    }

    fn select(&mut self, network: &Network, selection: Selection) -> Result<(), TrainError> {
        self.lora.select(network, selection)
    }

    fn infer_task(&mut self, network: &Network, inputs: &Tensor) -> Option<Tensor> {
        self.lora.infer_task(network, inputs)
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        self.lora.state()
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        self.lora.load_state(state)
    }
}

#[cfg(test)]
mod tests;
