//! `[model]`: the network, and how its initial weights are drawn.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `[model]`: the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum ModelConfig {
    /// Fully connected network with ReLU between layers and one output head.
    Mlp {
        /// Widths of the hidden layers, e.g. `[100, 100]` for 784-100-100-10.
        hidden: Vec<usize>,
        /// A safetensors file of the model's weights to start from (see
        /// [`ModelConfig::checkpoint`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<PathBuf>,
        /// How the initial weights are drawn (see [`InitScheme`]).
        #[serde(default)]
        init: InitScheme,
    },
    /// ResNet-18 for small images: 3×3 stem, no max-pool, BasicBlocks `[2, 2, 2, 2]`, global
    /// average pool, one linear head. `nf = 64` is the DER paper's, `nf = 20` the GEM paper's
    /// reduced ResNet-18.
    #[serde(rename = "resnet18")]
    Resnet18 {
        /// Filters of the first stage; stages have `nf`, `2nf`, `4nf`, `8nf`.
        #[serde(default = "default_nf")]
        nf: usize,
        /// A safetensors file of the model's weights to start from (see
        /// [`ModelConfig::checkpoint`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<PathBuf>,
        /// How the initial weights are drawn (see [`InitScheme`]).
        #[serde(default)]
        init: InitScheme,
    },
    /// A small vision transformer (Dosovitskiy et al. 2021) with timm's parameter names:
    /// non-overlapping `patch`×`patch` patch embedding, a class token, learned position
    /// embeddings, `depth` pre-norm blocks of `heads`-head self-attention and a GELU MLP of
    /// width `mlp_dim`, a final layer norm and a linear head on the class token. The
    /// defaults (patch 4, width 64, 4 blocks of 4 heads, MLP 128) suit 28×28 and 32×32 images
    /// (49 or 64 patches).
    Vit {
        #[serde(default = "default_patch")]
        patch: usize,
        /// Token width; a multiple of `heads`.
        #[serde(default = "default_dim")]
        dim: usize,
        #[serde(default = "default_depth")]
        depth: usize,
        #[serde(default = "default_heads")]
        heads: usize,
        #[serde(default = "default_mlp_dim")]
        mlp_dim: usize,
        /// A safetensors file of the model's weights to start from (see
        /// [`ModelConfig::checkpoint`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<PathBuf>,
        /// How the initial weights are drawn (see [`InitScheme`]).
        #[serde(default)]
        init: InitScheme,
    },
}

/// `[model] init`: how a backbone's initial weights are drawn. Every scheme draws on the
/// host from a generator seeded by the experiment seed (per variable, by name) and copies the
/// values to the device, so one seed gives bit-identical initial weights on CPU and CUDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// As the backbone's reference implementation initialises it (the default): the MLP as
    /// PyTorch's `nn.Linear` (weights and biases `U(±1/√fan_in)`); the small-image ResNet-18
    /// as the DER paper's (Mammoth's `backbone/ResNet18.py`) and GEM's (`model/common.py`)
    /// code, which keep PyTorch's `nn.Conv2d`/`nn.Linear` defaults and batch norm at weight 1,
    /// bias 0; the vision transformer as timm's `VisionTransformer.init_weights` (linear
    /// weights truncated normal, std 0.02 within ±2, biases 0; position embedding the same;
    /// class token normal, std 10⁻⁶; patch embedding PyTorch's `nn.Conv2d` default; layer norm
    /// 1 and 0).
    #[default]
    Reference,
    /// PyTorch's module defaults for every layer, the transformer's linear layers included
    /// (its class token and position embedding stay as in `reference`).
    Pytorch,
    /// Kaiming-uniform with the ReLU gain for linear and convolution weights,
    /// `U(±√6/√fan_in)`, biases `U(±1/√fan_in)`: tch's default, 2.45× wider than PyTorch's.
    Kaiming,
}

impl InitScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            InitScheme::Reference => "reference",
            InitScheme::Pytorch => "pytorch",
            InitScheme::Kaiming => "kaiming",
        }
    }
}

fn default_patch() -> usize {
    4
}
fn default_dim() -> usize {
    64
}
fn default_depth() -> usize {
    4
}
fn default_heads() -> usize {
    4
}
fn default_mlp_dim() -> usize {
    128
}

impl ModelConfig {
    /// The `kind` key's value.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ModelConfig::Mlp { .. } => "mlp",
            ModelConfig::Resnet18 { .. } => "resnet18",
            ModelConfig::Vit { .. } => "vit",
        }
    }

    /// `checkpoint = "path.safetensors"`: the experiment starts from these weights instead of
    /// a random initialisation. The file must hold exactly the model's tensors, by name and
    /// shape (PyTorch `state_dict` names; see `retain-models`). A relative path is taken from
    /// the working directory, like `data_root`.
    pub fn checkpoint(&self) -> Option<&Path> {
        match self {
            ModelConfig::Mlp { checkpoint, .. }
            | ModelConfig::Resnet18 { checkpoint, .. }
            | ModelConfig::Vit { checkpoint, .. } => checkpoint.as_deref(),
        }
    }

    /// `init`: how the initial weights are drawn.
    pub fn init(&self) -> InitScheme {
        match self {
            ModelConfig::Mlp { init, .. }
            | ModelConfig::Resnet18 { init, .. }
            | ModelConfig::Vit { init, .. } => *init,
        }
    }
}

fn default_nf() -> usize {
    64
}
