//! A small vision transformer (Dosovitskiy et al. 2021) with timm's parameter names, so a
//! `state_dict` of timm's `VisionTransformer` of the same shape (`class_token=True`,
//! `global_pool="token"`, `qkv_bias=True`, no `pre_logits`) loads by name:
//!
//! | name | shape |
//! |---|---|
//! | `patch_embed.proj.{weight,bias}` | `[D, C, p, p]`, `[D]` (a stride-`p` convolution) |
//! | `cls_token` | `[1, 1, D]` |
//! | `pos_embed` | `[1, 1 + N, D]` (class token first, `N` patches) |
//! | `blocks.<i>.norm1.{weight,bias}` | `[D]` |
//! | `blocks.<i>.attn.qkv.{weight,bias}` | `[3D, D]`, `[3D]` (queries, keys, values stacked) |
//! | `blocks.<i>.attn.proj.{weight,bias}` | `[D, D]`, `[D]` |
//! | `blocks.<i>.norm2.{weight,bias}` | `[D]` |
//! | `blocks.<i>.mlp.fc1.{weight,bias}`, `blocks.<i>.mlp.fc2.{weight,bias}` | `[M, D]`, `[D, M]` |
//! | `norm.{weight,bias}` | `[D]` |
//! | `head.{weight,bias}` | `[K, D]` |
//!
//! Each block is pre-norm: `x ← x + proj(attn(norm1(x)))`, `x ← x + fc2(gelu(fc1(norm2(x))))`
//! (exact GELU, layer-norm ε = 10⁻⁶ as timm). The head reads the final-normed class token.
//!
//! # Input preparation
//!
//! A model may take images of another size, channel count or normalisation than the stream
//! gives ([`VitInput`]); the first step of its forward pass, on the device and with no host
//! read, is then (each step only where needed):
//!
//! 1. resize to the model's `H`×`W`: `upsample_bilinear2d` with `align_corners = false` and no
//!    antialiasing, i.e. PyTorch's `F.interpolate(x, size=(H, W), mode="bilinear",
//!    align_corners=False, antialias=False)`;
//! 2. repeat a grey channel to the model's channels;
//! 3. per channel `y = (x_raw − mean) / std` with the model's constants, where `x_raw` undoes
//!    the normalisation the images came with (`x_raw = x · std_given + mean_given`; the
//!    stream normalises every dataset with its own constants). Both affine maps are folded
//!    into one multiply-add after the resize, which commutes with them (bilinear weights sum
//!    to one), so the result is timm's `Normalize` of the resized raw pixels.
//!
//! Two parameter-efficient hooks exist only here: prompt tokens inserted after the class
//! token (they take no position embedding, as in VPT) and per-block key/value prefixes
//! prepended to the attention's keys and values (queries stay the sequence's own, so the
//! output keeps its length).

use std::sync::Mutex;

use tch::Tensor;
use tch::nn::{self, ModuleT};

use crate::{AdaptableLinear, Backbone};

/// The sizes of a [`VisionTransformer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VitShape {
    /// `[C, H, W]` of the input images; `patch` divides `H` and `W`.
    pub image: [usize; 3],
    pub patch: usize,
    /// Token width `D`, a multiple of `heads`.
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    /// Hidden width `M` of each block's MLP.
    pub mlp_dim: usize,
}

/// What a [`VisionTransformer`] is given, when it differs from its [`VitShape::image`] input
/// (see the module docs).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VitInput {
    /// `[C, H, W]` of the images the model is given; `C` is the model's or 1.
    pub source: [usize; 3],
    /// Per-channel `(mean, std)` (one value per source channel) that the given images are
    /// already normalised with; `None`: raw pixels in `[0, 1]`.
    pub given: Option<(Vec<f64>, Vec<f64>)>,
    /// Per-channel `(mean, std)` (one value per model channel) the model expects; `None`:
    /// the images keep the normalisation they came with.
    pub normalize: Option<(Vec<f64>, Vec<f64>)>,
}

/// The preparation steps of a [`VitInput`], their constants on the model's device.
#[derive(Debug)]
struct Preparation {
    /// `[H, W]` to resize to, if the source differs.
    resize: Option<[i64; 2]>,
    /// Channels to repeat a grey image to, if the source has one and the model more.
    repeat: Option<i64>,
    /// `[1, C, 1, 1]` multiply-add of the normalisation.
    affine: Option<(Tensor, Tensor)>,
}

impl Preparation {
    fn new(input: &VitInput, image: [usize; 3], device: tch::Device) -> Option<Self> {
        let [c, h, w] = image;
        let [sc, sh, sw] = input.source;
        assert!(
            sc == c || sc == 1,
            "a {sc}-channel image cannot be prepared for a {c}-channel model"
        );
        let resize = ((sh, sw) != (h, w)).then_some([h as i64, w as i64]);
        let repeat = (sc != c).then_some(c as i64);
        let affine = input.normalize.as_ref().map(|(mean, std)| {
            assert!(
                mean.len() == c && std.len() == c,
                "one mean and std per channel"
            );
            let given = |i: usize| match &input.given {
                Some((m, s)) => (m[i.min(m.len() - 1)], s[i.min(s.len() - 1)]),
                None => (0.0, 1.0),
            };
            // x_raw = x·s_g + m_g; y = (x_raw − m)/s = x·(s_g/s) + (m_g − m)/s.
            let (scale, shift): (Vec<f32>, Vec<f32>) = (0..c)
                .map(|i| {
                    let (mg, sg) = given(if sc == 1 { 0 } else { i });
                    ((sg / std[i]) as f32, ((mg - mean[i]) / std[i]) as f32)
                })
                .unzip();
            let upload = |v: &[f32]| {
                Tensor::from_slice(v)
                    .view([1, c as i64, 1, 1])
                    .to_device(device)
            };
            (upload(&scale), upload(&shift))
        });
        (resize.is_some() || repeat.is_some() || affine.is_some()).then_some(Self {
            resize,
            repeat,
            affine,
        })
    }

    fn apply(&self, xs: &Tensor) -> Tensor {
        let mut xs = xs.shallow_clone();
        if let Some(size) = self.resize {
            xs = xs.upsample_bilinear2d(size, false, None, None);
        }
        if let Some(channels) = self.repeat {
            xs = xs.repeat([1, channels, 1, 1]);
        }
        if let Some((scale, shift)) = &self.affine {
            xs = xs * scale + shift;
        }
        xs
    }
}

#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    qkv: AdaptableLinear,
    proj: AdaptableLinear,
    norm2: nn::LayerNorm,
    fc1: AdaptableLinear,
    fc2: AdaptableLinear,
    /// Learned keys and values prepended in the attention (prefix tuning).
    prefix: Mutex<Option<(Tensor, Tensor)>>,
}

const LINEARS: [&str; 4] = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"];

fn layer_norm(path: nn::Path, dim: i64) -> nn::LayerNorm {
    let config = nn::LayerNormConfig {
        eps: 1e-6,
        ..Default::default()
    };
    nn::layer_norm(path, vec![dim], config)
}

impl Block {
    fn new(path: nn::Path, dim: i64, mlp_dim: i64) -> Self {
        Self {
            norm1: layer_norm(&path / "norm1", dim),
            qkv: AdaptableLinear::new(&path / "attn" / "qkv", dim, 3 * dim),
            proj: AdaptableLinear::new(&path / "attn" / "proj", dim, dim),
            norm2: layer_norm(&path / "norm2", dim),
            fc1: AdaptableLinear::new(&path / "mlp" / "fc1", dim, mlp_dim),
            fc2: AdaptableLinear::new(&path / "mlp" / "fc2", mlp_dim, dim),
            prefix: Mutex::new(None),
        }
    }

    fn linear(&self, name: &str) -> Option<&AdaptableLinear> {
        match name {
            "attn.qkv" => Some(&self.qkv),
            "attn.proj" => Some(&self.proj),
            "mlp.fc1" => Some(&self.fc1),
            "mlp.fc2" => Some(&self.fc2),
            _ => None,
        }
    }

    /// Multi-head self-attention of `xs: [B, L, D]`, with this block's prefix keys and
    /// values (if any) prepended to every sample's.
    fn attention(&self, xs: &Tensor, heads: i64) -> Tensor {
        let (batch, length, dim) = xs.size3().expect("tokens are [B, L, D]");
        let head_dim = dim / heads;
        // [B, L, 3, H, Dh] → [3, B, H, L, Dh]
        let qkv = self
            .qkv
            .forward(xs)
            .view([batch, length, 3, heads, head_dim])
            .permute([2, 0, 3, 1, 4]);
        let (q, mut k, mut v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        if let Some((key, value)) = &*self.prefix.lock().expect("prefix lock") {
            // `[P, D]`: one prefix for every sample; `[B, P, D]`: each sample its own.
            let split = |t: &Tensor| {
                let shared = t.dim() == 2;
                let p = t.size()[t.dim() - 2];
                let per_sample = if shared { 1 } else { batch };
                t.view([per_sample, p, heads, head_dim])
                    .permute([0, 2, 1, 3])
                    .expand([batch, heads, p, head_dim], false)
            };
            k = Tensor::cat(&[split(key), k], 2);
            v = Tensor::cat(&[split(value), v], 2);
        }
        let attended = Tensor::scaled_dot_product_attention::<Tensor>(
            &q, &k, &v, None, 0.0, false, None, false,
        );
        self.proj
            .forward(&attended.transpose(1, 2).reshape([batch, length, dim]))
    }

    fn forward(&self, xs: &Tensor, heads: i64) -> Tensor {
        let xs = xs + self.attention(&xs.apply(&self.norm1), heads);
        let hidden = self.fc1.forward(&xs.apply(&self.norm2)).gelu("none");
        &xs + self.fc2.forward(&hidden)
    }
}

/// A vision transformer (see the module docs).
#[derive(Debug)]
pub struct VisionTransformer {
    shape: VitShape,
    patch_embed: nn::Conv2D,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    head: AdaptableLinear,
    /// Prompt tokens `[P, D]` inserted after the class token (prompt tuning).
    prompt: Mutex<Option<Tensor>>,
    /// Resizing, channel repetition and normalisation of the given images, if any.
    preparation: Option<Preparation>,
}

impl VisionTransformer {
    /// # Panics
    /// If `patch` does not divide the image or `dim` is not a multiple of `heads` (the
    /// configuration's validation rejects both first).
    pub fn new(path: &nn::Path, shape: VitShape, outputs: usize) -> Self {
        Self::with_input(path, shape, outputs, None)
    }

    /// [`VisionTransformer::new`] for images given as `input` describes (see the module
    /// docs); `None` or an `input` equal to the model's own takes them as they are.
    ///
    /// # Panics
    /// As [`VisionTransformer::new`], and if the source has neither the model's channels
    /// nor one, or a normalisation has not one value per channel.
    pub fn with_input(
        path: &nn::Path,
        shape: VitShape,
        outputs: usize,
        input: Option<&VitInput>,
    ) -> Self {
        let [channels, height, width] = shape.image;
        assert!(
            shape.patch > 0
                && height.is_multiple_of(shape.patch)
                && width.is_multiple_of(shape.patch),
            "patch {} must divide {height}×{width}",
            shape.patch
        );
        assert!(
            shape.heads > 0 && shape.dim.is_multiple_of(shape.heads),
            "dim {} must be a multiple of heads {}",
            shape.dim,
            shape.heads
        );
        let dim = shape.dim as i64;
        let patches = (height / shape.patch * (width / shape.patch)) as i64;
        let patch = shape.patch as i64;
        let conv = nn::ConvConfig {
            stride: patch,
            ..Default::default()
        };
        let small = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        Self {
            shape,
            patch_embed: nn::conv2d(
                path / "patch_embed" / "proj",
                channels as i64,
                dim,
                patch,
                conv,
            ),
            cls_token: path.var("cls_token", &[1, 1, dim], small),
            pos_embed: path.var("pos_embed", &[1, 1 + patches, dim], small),
            blocks: (0..shape.depth)
                .map(|i| Block::new(path / "blocks" / i, dim, shape.mlp_dim as i64))
                .collect(),
            norm: layer_norm(path / "norm", dim),
            head: AdaptableLinear::new(path / "head", dim, outputs as i64),
            prompt: Mutex::new(None),
            preparation: input.and_then(|i| Preparation::new(i, shape.image, path.device())),
        }
    }

    /// The given images as the patch embedding takes them (see the module docs).
    pub fn prepare(&self, xs: &Tensor) -> Tensor {
        match &self.preparation {
            Some(p) => p.apply(xs),
            None => xs.shallow_clone(),
        }
    }

    pub fn shape(&self) -> VitShape {
        self.shape
    }

    /// The token sequence entering the first block: class token, prompts, patches.
    fn tokens(&self, xs: &Tensor) -> Tensor {
        let batch = xs.size()[0];
        let dim = self.shape.dim as i64;
        let patches = xs.apply(&self.patch_embed).flatten(2, -1).transpose(1, 2);
        let cls = self.cls_token.expand([batch, 1, dim], false);
        let tokens = Tensor::cat(&[cls, patches], 1) + &self.pos_embed;
        match &*self.prompt.lock().expect("prompt lock") {
            Some(prompt) => {
                // `[P, D]`: the same prompts for every sample; `[B, P, D]`: each its own.
                let prompts = match prompt.dim() {
                    2 => prompt
                        .unsqueeze(0)
                        .expand([batch, prompt.size()[0], dim], false),
                    _ => prompt.shallow_clone(),
                };
                let cls = tokens.narrow(1, 0, 1);
                let rest = tokens.narrow(1, 1, tokens.size()[1] - 1);
                Tensor::cat(&[cls, prompts, rest], 1)
            }
            None => tokens,
        }
    }
}

impl ModuleT for VisionTransformer {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head.forward(&self.features(xs, train))
    }
}

impl Backbone for VisionTransformer {
    /// timm's `VisionTransformer.init_weights`.
    fn init_reference(&self) -> crate::init::Reference {
        crate::init::Reference::Timm
    }

    fn outputs(&self) -> usize {
        self.head.shape()[0] as usize
    }

    /// Layer norm normalises each token alone, and there is no dropout.
    fn samples_independent(&self) -> bool {
        true
    }

    /// The final-normed class token, `[B, D]`.
    fn features(&self, xs: &Tensor, _train: bool) -> Tensor {
        let heads = self.shape.heads as i64;
        let tokens = self
            .blocks
            .iter()
            .fold(self.tokens(&self.prepare(xs)), |x, block| {
                block.forward(&x, heads)
            });
        tokens.select(1, 0).apply(&self.norm)
    }

    /// Every block's `attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`, and `head`.
    fn adaptable_layers(&self) -> Vec<(String, [i64; 2])> {
        let mut layers: Vec<(String, [i64; 2])> = self
            .blocks
            .iter()
            .enumerate()
            .flat_map(|(i, block)| {
                LINEARS.iter().map(move |name| {
                    let layer = block.linear(name).expect("listed layers exist");
                    (format!("blocks.{i}.{name}"), layer.shape())
                })
            })
            .chain([("head".to_owned(), self.head.shape())])
            .collect();
        layers.sort();
        layers
    }

    fn linear(&self, name: &str) -> Option<&AdaptableLinear> {
        if name == "head" {
            return Some(&self.head);
        }
        let (index, layer) = name.strip_prefix("blocks.")?.split_once('.')?;
        self.blocks.get(index.parse::<usize>().ok()?)?.linear(layer)
    }

    fn transformer_shape(&self) -> Option<(i64, usize)> {
        Some((self.shape.dim as i64, self.shape.depth))
    }

    fn set_prompt(&self, prompt: Option<Tensor>) -> bool {
        *self.prompt.lock().expect("prompt lock") = prompt;
        true
    }

    fn set_prefix(&self, block: usize, prefix: Option<(Tensor, Tensor)>) -> bool {
        match self.blocks.get(block) {
            Some(b) => {
                *b.prefix.lock().expect("prefix lock") = prefix;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests;
