//! Builds the backbone a `[model]` table describes ([`build`]).

use retain_config::ModelConfig;
use tch::nn;

use crate::{Backbone, Mlp, ResNet, VisionTransformer, VitShape};

/// Builds the network described by `config` under `path`, for images of `image_shape`
/// (`[C, H, W]`) and `outputs` classes.
pub fn build(
    config: &ModelConfig,
    path: &nn::Path,
    image_shape: [usize; 3],
    outputs: usize,
) -> Box<dyn Backbone> {
    match config {
        ModelConfig::Mlp { hidden, .. } => Box::new(Mlp::new(
            path,
            image_shape.iter().product(),
            hidden,
            outputs,
        )),
        ModelConfig::Resnet18 { nf, .. } => {
            Box::new(ResNet::resnet18(path, image_shape[0], *nf, outputs))
        }
        &ModelConfig::Vit {
            patch,
            dim,
            depth,
            heads,
            mlp_dim,
            ..
        } => Box::new(VisionTransformer::new(
            path,
            VitShape {
                image: image_shape,
                patch,
                dim,
                depth,
                heads,
                mlp_dim,
            },
            outputs,
        )),
    }
}
