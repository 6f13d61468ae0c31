//! Builds the backbone a `[model]` table describes ([`build`]).

use retain_config::ModelConfig;
use tch::nn;

use crate::{Backbone, Mlp, ResNet, VisionTransformer, VitInput, VitShape};

/// Builds the network described by `config` under `path`, for images of `image_shape`
/// (`[C, H, W]`) and `outputs` classes; images a vision transformer normalises itself
/// (`[model] normalize`) are taken as raw pixels in `[0, 1]` ([`build_for_stream`] says
/// otherwise).
pub fn build(
    config: &ModelConfig,
    path: &nn::Path,
    image_shape: [usize; 3],
    outputs: usize,
) -> Box<dyn Backbone> {
    build_for_stream(config, path, image_shape, None, outputs)
}

/// [`build`] for images already normalised per channel with `stream_normalisation`
/// (`(mean, std)`, as the task stream normalises every dataset): a vision transformer with
/// its own `[model] normalize` undoes it before applying its own, so the two never stack.
/// Other models, and a transformer without `normalize`, take the images as they come.
///
/// # Panics
/// For a vision transformer table that its validation refuses.
pub fn build_for_stream(
    config: &ModelConfig,
    path: &nn::Path,
    image_shape: [usize; 3],
    stream_normalisation: Option<(&[f64], &[f64])>,
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
        ModelConfig::Vit { .. } => {
            let spec = config
                .vit()
                .expect("a vit table")
                .unwrap_or_else(|(key, message)| panic!("model.{key}: {message}"));
            let shape = VitShape {
                image: spec.input_shape(image_shape),
                patch: spec.patch,
                dim: spec.dim,
                depth: spec.depth,
                heads: spec.heads,
                mlp_dim: spec.mlp_dim,
            };
            let input = VitInput {
                source: image_shape,
                given: stream_normalisation.map(|(m, s)| (m.to_vec(), s.to_vec())),
                normalize: spec.normalize,
            };
            Box::new(VisionTransformer::with_input(
                path,
                shape,
                outputs,
                Some(&input),
            ))
        }
    }
}
