//! ResNet-18 for small images ([`ResNet`]), named as the PyTorch code of the DER and GEM
//! papers names it.

use tch::Tensor;
use tch::nn::{self, ModuleT};

use crate::{AdaptableLinear, Backbone};

fn conv(path: nn::Path, inputs: i64, outputs: i64, kernel: i64, stride: i64) -> nn::Conv2D {
    let config = nn::ConvConfig {
        stride,
        padding: kernel / 2,
        bias: false,
        ..Default::default()
    };
    nn::conv2d(path, inputs, outputs, kernel, config)
}

/// Batch norm initialised as PyTorch's (weight 1, bias 0; tch's default weight is uniform).
fn batch_norm(path: nn::Path, channels: i64) -> nn::BatchNorm {
    let config = nn::BatchNormConfig {
        ws_init: nn::Init::Const(1.0),
        ..Default::default()
    };
    nn::batch_norm2d(path, channels, config)
}

/// The two-convolution residual block of ResNet-18/34 (He et al. 2016).
#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    /// 1×1 convolution + batch norm where the block changes stride or width.
    shortcut: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl BasicBlock {
    fn new(path: nn::Path, inputs: i64, outputs: i64, stride: i64) -> Self {
        let shortcut = (stride != 1 || inputs != outputs).then(|| {
            let p = &path / "shortcut";
            (
                conv(&p / 0, inputs, outputs, 1, stride),
                batch_norm(&p / 1, outputs),
            )
        });
        Self {
            conv1: conv(&path / "conv1", inputs, outputs, 3, stride),
            bn1: batch_norm(&path / "bn1", outputs),
            conv2: conv(&path / "conv2", outputs, outputs, 3, 1),
            bn2: batch_norm(&path / "bn2", outputs),
            shortcut,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = xs
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu()
            .apply(&self.conv2)
            .apply_t(&self.bn2, train);
        let residual = match &self.shortcut {
            Some((conv, bn)) => xs.apply(conv).apply_t(bn, train),
            None => xs.shallow_clone(),
        };
        (out + residual).relu()
    }
}

/// ResNet for small (e.g. 32×32) images: a 3×3 stride-1 stem without max-pool, four stages
/// of BasicBlocks with `nf`, `2nf`, `4nf`, `8nf` filters (stride 2 from the second stage on),
/// global average pooling and a linear head: the ResNet-18 of the DER paper (`nf = 64`) and
/// the reduced ResNet-18 of the GEM paper (`nf = 20`), both after Lopez-Paz & Ranzato's
/// `ResNet18` in GEM's `model/common.py`.
#[derive(Debug)]
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    layers: Vec<Vec<BasicBlock>>,
    linear: AdaptableLinear,
}

impl ResNet {
    /// ResNet-18: BasicBlocks `[2, 2, 2, 2]`.
    pub fn resnet18(path: &nn::Path, channels: usize, nf: usize, outputs: usize) -> Self {
        Self::new(path, channels, nf, &[2, 2, 2, 2], outputs)
    }

    pub fn new(
        path: &nn::Path,
        channels: usize,
        nf: usize,
        blocks: &[usize],
        outputs: usize,
    ) -> Self {
        let nf = nf as i64;
        let mut width = nf;
        let layers = blocks
            .iter()
            .enumerate()
            .map(|(stage, &count)| {
                let planes = nf << stage;
                let stage_path = path / format!("layer{}", stage + 1);
                (0..count)
                    .map(|b| {
                        let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                        let block = BasicBlock::new(&stage_path / b, width, planes, stride);
                        width = planes;
                        block
                    })
                    .collect()
            })
            .collect();
        Self {
            conv1: conv(path / "conv1", channels as i64, nf, 3, 1),
            bn1: batch_norm(path / "bn1", nf),
            layers,
            linear: AdaptableLinear::new(path / "linear", width, outputs as i64),
        }
    }

    /// The pooled features before the head, `[B, 8·nf]`.
    fn pooled_features(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut out = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        for stage in &self.layers {
            for block in stage {
                out = block.forward_t(&out, train);
            }
        }
        out.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.linear.forward(&self.pooled_features(xs, train))
    }
}

impl Backbone for ResNet {
    fn outputs(&self) -> usize {
        self.linear.shape()[0] as usize
    }

    /// The globally average-pooled output of the last stage, `[B, 8·nf]`.
    fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        self.pooled_features(xs, train)
    }

    fn head_name(&self) -> &'static str {
        "linear"
    }

    /// The head `linear` (convolutions take no adapter).
    fn adaptable_layers(&self) -> Vec<(String, [i64; 2])> {
        vec![("linear".to_owned(), self.linear.shape())]
    }

    fn linear(&self, name: &str) -> Option<&AdaptableLinear> {
        (name == "linear").then_some(&self.linear)
    }
}
