//! The inputs of a vision transformer's linear layers, computed by running its forward pass
//! again from its public pieces: the variables of its `VarStore` by their timm names
//! (`patch_embed.proj.*`, `cls_token`, `pos_embed`, `blocks.<i>.norm{1,2}.*`, `norm.*`) and
//! its adaptable layers through [`Backbone::linear`] (so attached low-rank updates count).
//! This is `retain_models::VisionTransformer::features` step by step (pre-norm blocks, exact
//! GELU, layer-norm ε = 10⁻⁶), recording what enters each linear layer on the way.
//!
//! The head count is not part of the [`Backbone`] interface; [`probe_heads`] finds it as the
//! divisor of the token width for which this pass reproduces the model's own features.

use std::collections::HashMap;

use retain_models::Backbone;
use tch::{Kind, Tensor, nn};

/// The parameters the pass reads by name, shallow copies of the store's variables.
pub struct Pieces {
    vars: HashMap<String, Tensor>,
    depth: usize,
    dim: i64,
}

impl Pieces {
    /// `None` when the store lacks a variable of the pass or the model is no transformer.
    pub fn new(model: &dyn Backbone, vars: &nn::VarStore) -> Result<Self, String> {
        let (dim, depth) = model
            .transformer_shape()
            .ok_or_else(|| "the model is not a transformer".to_owned())?;
        let vars = vars.variables();
        let mut names = vec![
            "patch_embed.proj.weight".to_owned(),
            "patch_embed.proj.bias".to_owned(),
            "cls_token".to_owned(),
            "pos_embed".to_owned(),
            "norm.weight".to_owned(),
            "norm.bias".to_owned(),
        ];
        for i in 0..depth {
            for n in ["norm1", "norm2"] {
                names.push(format!("blocks.{i}.{n}.weight"));
                names.push(format!("blocks.{i}.{n}.bias"));
            }
        }
        if let Some(missing) = names.iter().find(|n| !vars.contains_key(*n)) {
            return Err(format!(
                "the transformer has no variable `{missing}` (timm's names are needed)"
            ));
        }
        for i in 0..depth {
            for layer in ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"] {
                if model.linear(&format!("blocks.{i}.{layer}")).is_none() {
                    return Err(format!("the transformer has no layer `blocks.{i}.{layer}`"));
                }
            }
        }
        Ok(Self { vars, depth, dim })
    }

    fn var(&self, name: &str) -> &Tensor {
        &self.vars[name]
    }

    fn norm(&self, xs: &Tensor, prefix: &str) -> Tensor {
        xs.layer_norm(
            [self.dim],
            Some(self.var(&format!("{prefix}.weight"))),
            Some(self.var(&format!("{prefix}.bias"))),
            1e-6,
            true,
        )
    }

    /// The model's features `[B, D]` of images `xs`, calling `record(layer, input)` with the
    /// input `[B, L, inputs]` of every linear layer of the blocks on the way
    /// (`blocks.<i>.attn.qkv` …).
    pub fn run(
        &self,
        model: &dyn Backbone,
        heads: i64,
        xs: &Tensor,
        record: &mut dyn FnMut(&str, &Tensor),
    ) -> Tensor {
        let weight = self.var("patch_embed.proj.weight");
        let patch = weight.size()[2];
        let batch = xs.size()[0];
        let patches = xs
            .conv2d(
                weight,
                Some(self.var("patch_embed.proj.bias")),
                [patch, patch],
                [0, 0],
                [1, 1],
                1,
            )
            .flatten(2, -1)
            .transpose(1, 2);
        let cls = self.var("cls_token").expand([batch, 1, self.dim], false);
        let mut x = Tensor::cat(&[cls, patches], 1) + self.var("pos_embed");
        let head_dim = self.dim / heads;
        for i in 0..self.depth {
            let linear = |name: &str| {
                model
                    .linear(&format!("blocks.{i}.{name}"))
                    .expect("checked in Pieces::new")
            };
            let mut layer = |name: &str, input: &Tensor| {
                record(&format!("blocks.{i}.{name}"), input);
                linear(name).forward(input)
            };
            let (_, length, _) = x.size3().expect("tokens are [B, L, D]");
            let h = self.norm(&x, &format!("blocks.{i}.norm1"));
            let qkv = layer("attn.qkv", &h)
                .view([batch, length, 3, heads, head_dim])
                .permute([2, 0, 3, 1, 4]);
            let attended = Tensor::scaled_dot_product_attention::<Tensor>(
                &qkv.get(0),
                &qkv.get(1),
                &qkv.get(2),
                None,
                0.0,
                false,
                None,
                false,
            )
            .transpose(1, 2)
            .reshape([batch, length, self.dim]);
            x = &x + layer("attn.proj", &attended);
            let h = self.norm(&x, &format!("blocks.{i}.norm2"));
            let hidden = layer("mlp.fc1", &h).gelu("none");
            x = &x + layer("mlp.fc2", &hidden);
        }
        self.norm(&x.select(1, 0), "norm")
    }
}

/// The head count: the smallest divisor of the token width for which [`Pieces::run`]
/// reproduces `model.features(xs)` (to 10⁻⁴ relative); `None` when none does (the pass is
/// not this model's: prompts or prefixes attached, another architecture).
pub fn probe_heads(pieces: &Pieces, model: &dyn Backbone, xs: &Tensor) -> Option<i64> {
    let _no_grad = tch::no_grad_guard();
    let expected = model.features(xs, false).to_kind(Kind::Double);
    let scale = 1.0 + expected.abs().max().double_value(&[]);
    (1..=pieces.dim).filter(|h| pieces.dim % h == 0).find(|&h| {
        let got = pieces
            .run(model, h, xs, &mut |_, _| {})
            .to_kind(Kind::Double);
        got.size() == expected.size()
            && (got - &expected).abs().max().double_value(&[]) <= 1e-4 * scale
    })
}
