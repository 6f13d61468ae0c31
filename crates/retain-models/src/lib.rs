//! The models retain trains: backbones (MLP, ResNet-18, vision transformer) with stable
//! parameter names, their initialisation, checkpoints, adapters and quantisation.
//!
//! Parameter names are part of the public interface: checkpoints, name-pattern selection of
//! trainable parameters ([`names::matches()`]) and PyTorch interchange all key on them.
//!
//! * The MLP names its layers `hidden.<i>` and `head`, so `hidden.0.weight` is the first
//!   layer's weight matrix.
//! * ResNet-18 uses the names of the PyTorch code of the DER paper (Mammoth) and of the GEM
//!   paper, whose `state_dict`s therefore map one to one: `conv1.weight`, `bn1.{weight,bias,
//!   running_mean,running_var}`, `layer<s>.<b>.{conv1,bn1,conv2,bn2}.*`,
//!   `layer<s>.<b>.shortcut.{0,1}.*` (1×1 convolution and batch norm, where a block changes
//!   shape) and the head `linear.{weight,bias}`. (PyTorch's `num_batches_tracked` has no
//!   counterpart: tch uses a fixed momentum.)
//!
//! Every model takes images `[B, C, H, W]`; the MLP flattens them itself. A vision
//! transformer may resize, repeat and renormalise them first, on the device (`vit`'s docs).
//!
//! # Modules
//!
//! * `backbone`: the [`Backbone`] trait every model implements; `factory`: [`build`], the
//!   model a `[model]` table describes.
//! * `mlp`, `resnet`, `vit`: the models ([`Mlp`], [`ResNet`], [`VisionTransformer`]).
//! * `linear`: [`AdaptableLinear`], the linear layer that takes adapters and quantisation;
//!   [`quant`]: the quantised weight formats.
//! * `per_sample`: batched per-sample gradients of the MLP.
//! * [`init`]: seeded initialisation; [`checkpoint`]: safetensors files; [`names`]: name
//!   patterns.
//!
//! The modules without a link are private: their items are re-exported here.

mod backbone;
pub mod checkpoint;
mod factory;
pub mod init;
mod linear;
mod mlp;
pub mod names;
mod per_sample;
pub mod quant;
mod resnet;
mod vit;

pub use backbone::Backbone;
pub use factory::{build, build_for_stream};
pub use linear::{AdaptableLinear, Bottleneck, LowRank};
pub use mlp::Mlp;
pub use quant::{QuantFormat, QuantizedWeight};
pub use resnet::ResNet;
pub use vit::{VisionTransformer, VitInput, VitShape};

#[cfg(test)]
mod tests;
