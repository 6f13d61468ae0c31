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
        /// The sha256 of `checkpoint`'s file, 64 hex digits: a run refuses a file whose
        /// contents hash otherwise, before any data loads.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint_sha256: Option<String>,
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
        /// The sha256 of `checkpoint`'s file, 64 hex digits: a run refuses a file whose
        /// contents hash otherwise, before any data loads.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint_sha256: Option<String>,
        /// How the initial weights are drawn (see [`InitScheme`]).
        #[serde(default)]
        init: InitScheme,
    },
    /// A vision transformer (Dosovitskiy et al. 2021) with timm's parameter names:
    /// non-overlapping `patch`×`patch` patch embedding, a class token, learned position
    /// embeddings, `depth` pre-norm blocks of `heads`-head self-attention and a GELU MLP of
    /// width `mlp_dim`, a final layer norm and a linear head on the class token. Without a
    /// `preset`, the defaults (patch 4, width 64, 4 blocks of 4 heads, MLP 128) suit 28×28 and
    /// 32×32 images (49 or 64 patches). [`ModelConfig::vit`] resolves the keys.
    Vit {
        /// One of timm's shapes ([`VitPreset`]): sets `patch`, `dim`, `depth`, `heads`,
        /// `mlp_dim`, `image_size` and `channels`; an explicit key that differs is refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preset: Option<VitPreset>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        patch: Option<usize>,
        /// Token width; a multiple of `heads`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dim: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        depth: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        heads: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mlp_dim: Option<usize>,
        /// The model's square input size: the stream's images are resized to
        /// `image_size`×`image_size` on the device (bilinear) before the patch embedding.
        /// Default: the stream's own size, no resizing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image_size: Option<usize>,
        /// The model's input channels: 3 for the stream's grey images repeats them to 3
        /// channels. Default: the stream's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channels: Option<usize>,
        /// The per-channel normalisation the model expects (see [`VitNormalize`]); the
        /// stream's own normalisation is undone first. Default: none, the stream's
        /// normalised images as they come.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        normalize: Option<VitNormalize>,
        /// Explicit per-channel mean of the model's normalisation (with `std`, instead of
        /// `normalize`), one value per model channel, of pixels in `[0, 1]`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mean: Option<Vec<f64>>,
        /// Explicit per-channel standard deviation, with `mean`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        std: Option<Vec<f64>>,
        /// A safetensors file of the model's weights to start from (see
        /// [`ModelConfig::checkpoint`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<PathBuf>,
        /// The sha256 of `checkpoint`'s file, 64 hex digits: a run refuses a file whose
        /// contents hash otherwise, before any data loads.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint_sha256: Option<String>,
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

/// `[model] preset`: one of timm's vision transformer shapes, for 3×224×224 images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VitPreset {
    /// Patch 16, width 192, 12 blocks of 3 heads, MLP 768 (5,717,416 parameters with a
    /// 1000-class head).
    #[serde(rename = "vit_tiny_patch16_224")]
    TinyPatch16_224,
    /// Patch 16, width 384, 12 blocks of 6 heads, MLP 1536 (22,050,664 parameters).
    #[serde(rename = "vit_small_patch16_224")]
    SmallPatch16_224,
    /// Patch 16, width 768, 12 blocks of 12 heads, MLP 3072 (86,567,656 parameters).
    #[serde(rename = "vit_base_patch16_224")]
    BasePatch16_224,
}

impl VitPreset {
    pub fn as_str(self) -> &'static str {
        match self {
            VitPreset::TinyPatch16_224 => "vit_tiny_patch16_224",
            VitPreset::SmallPatch16_224 => "vit_small_patch16_224",
            VitPreset::BasePatch16_224 => "vit_base_patch16_224",
        }
    }

    /// `(patch, dim, depth, heads, mlp_dim, image_size, channels)`.
    fn values(self) -> [(&'static str, usize); 7] {
        let (dim, heads) = match self {
            VitPreset::TinyPatch16_224 => (192, 3),
            VitPreset::SmallPatch16_224 => (384, 6),
            VitPreset::BasePatch16_224 => (768, 12),
        };
        [
            ("patch", 16),
            ("dim", dim),
            ("depth", 12),
            ("heads", heads),
            ("mlp_dim", 4 * dim),
            ("image_size", 224),
            ("channels", 3),
        ]
    }
}

/// `[model] normalize`: a named per-channel normalisation of pixels in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VitNormalize {
    /// Mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225): timm's ImageNet default.
    Imagenet,
    /// Mean 0.5, std 0.5 on every channel, as timm's augreg ViTs (Inception's).
    Inception,
}

impl VitNormalize {
    /// `(mean, std)` of three channels.
    pub fn constants(self) -> ([f64; 3], [f64; 3]) {
        match self {
            VitNormalize::Imagenet => ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            VitNormalize::Inception => ([0.5; 3], [0.5; 3]),
        }
    }
}

/// A `[model] kind = "vit"` table with its preset and defaults resolved
/// ([`ModelConfig::vit`]).
#[derive(Debug, Clone, PartialEq)]
pub struct VitSpec {
    pub patch: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_dim: usize,
    /// The model's square input size; `None`: the stream's images as they are.
    pub image_size: Option<usize>,
    /// The model's input channels; `None`: the stream's.
    pub channels: Option<usize>,
    /// `(mean, std)` per model channel; `None`: no normalisation of the model's own.
    pub normalize: Option<(Vec<f64>, Vec<f64>)>,
}

impl VitSpec {
    /// `[C, H, W]` of the model's input for a stream of `image` (`[C, H, W]`) images.
    pub fn input_shape(&self, image: [usize; 3]) -> [usize; 3] {
        let [c, h, w] = image;
        let (h, w) = self.image_size.map_or((h, w), |s| (s, s));
        [self.channels.unwrap_or(c), h, w]
    }
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

    /// `checkpoint_sha256`: the pinned sha256 of the checkpoint's file, if any.
    pub fn checkpoint_sha256(&self) -> Option<&str> {
        match self {
            ModelConfig::Mlp {
                checkpoint_sha256, ..
            }
            | ModelConfig::Resnet18 {
                checkpoint_sha256, ..
            }
            | ModelConfig::Vit {
                checkpoint_sha256, ..
            } => checkpoint_sha256.as_deref(),
        }
    }

    /// A vision transformer's keys resolved: the preset's values, then the defaults (patch
    /// 4, width 64, 4 blocks of 4 heads, MLP 128). `None` for other kinds; `Err((key,
    /// message))` for a key that contradicts the preset, or a normalisation given twice or
    /// half.
    pub fn vit(&self) -> Option<Result<VitSpec, (&'static str, String)>> {
        let ModelConfig::Vit {
            preset,
            patch,
            dim,
            depth,
            heads,
            mlp_dim,
            image_size,
            channels,
            normalize,
            mean,
            std,
            ..
        } = self
        else {
            return None;
        };
        Some((|| {
            let explicit = [
                *patch,
                *dim,
                *depth,
                *heads,
                *mlp_dim,
                *image_size,
                *channels,
            ];
            let mut resolved: [Option<usize>; 7] = explicit;
            if let Some(preset) = preset {
                for (i, (key, value)) in preset.values().into_iter().enumerate() {
                    match explicit[i] {
                        Some(given) if given != value => {
                            return Err((
                                key,
                                format!(
                                    "{given} contradicts `preset` = \"{}\", whose {key} is {value} (leave the key out)",
                                    preset.as_str()
                                ),
                            ));
                        }
                        _ => resolved[i] = Some(value),
                    }
                }
            }
            let normalize = match (normalize, mean, std) {
                (None, None, None) => None,
                (Some(n), None, None) => {
                    let (m, s) = n.constants();
                    Some((m.to_vec(), s.to_vec()))
                }
                (Some(_), _, _) => {
                    let key = if mean.is_some() { "mean" } else { "std" };
                    return Err((key, "give either `normalize` or `mean` and `std`".into()));
                }
                (None, Some(m), Some(s)) => Some((m.clone(), s.clone())),
                (None, Some(_), None) => {
                    return Err(("std", "`mean` needs `std` as well".into()));
                }
                (None, None, Some(_)) => {
                    return Err(("mean", "`std` needs `mean` as well".into()));
                }
            };
            let [patch, dim, depth, heads, mlp_dim, image_size, channels] = resolved;
            Ok(VitSpec {
                patch: patch.unwrap_or(4),
                dim: dim.unwrap_or(64),
                depth: depth.unwrap_or(4),
                heads: heads.unwrap_or(4),
                mlp_dim: mlp_dim.unwrap_or(128),
                image_size,
                channels,
                normalize,
            })
        })())
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
