//! Backbones with stable parameter names.
//!
//! Parameter names are part of the public interface: checkpoints, name-pattern selection of
//! trainable parameters and PyTorch interchange all key on them. The MLP names its layers
//! `hidden.<i>` and `head`, so `hidden.0.weight` is the first layer's weight matrix.

use retain_config::ModelConfig;
use tch::Tensor;
use tch::nn::{self, Module, ModuleT};

/// A network mapping flattened inputs to class logits.
pub trait Backbone: ModuleT {
    /// Number of output logits.
    fn outputs(&self) -> usize;
}

/// Builds the network described by `config` under `path`.
pub fn build(
    config: &ModelConfig,
    path: &nn::Path,
    inputs: usize,
    outputs: usize,
) -> Box<dyn Backbone> {
    match config {
        ModelConfig::Mlp { hidden } => Box::new(Mlp::new(path, inputs, hidden, outputs)),
    }
}

/// Fully connected network: `inputs → hidden[0] → … → outputs`, ReLU between layers.
#[derive(Debug)]
pub struct Mlp {
    hidden: Vec<nn::Linear>,
    head: nn::Linear,
}

impl Mlp {
    pub fn new(path: &nn::Path, inputs: usize, hidden: &[usize], outputs: usize) -> Self {
        let mut width = inputs as i64;
        let hidden = hidden
            .iter()
            .enumerate()
            .map(|(i, &next)| {
                let layer = nn::linear(path / "hidden" / i, width, next as i64, Default::default());
                width = next as i64;
                layer
            })
            .collect();
        let head = nn::linear(path / "head", width, outputs as i64, Default::default());
        Self { hidden, head }
    }
}

impl ModuleT for Mlp {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let features = self
            .hidden
            .iter()
            .fold(xs.flatten(1, -1), |x, layer| layer.forward(&x).relu());
        self.head.forward(&features)
    }
}

impl Backbone for Mlp {
    fn outputs(&self) -> usize {
        self.head.ws.size()[0] as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn mlp_has_stable_names_and_shapes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = build(
            &ModelConfig::Mlp {
                hidden: vec![100, 100],
            },
            &vs.root(),
            784,
            10,
        );
        let mut names: Vec<(String, Vec<i64>)> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.size()))
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                ("head.bias".to_owned(), vec![10]),
                ("head.weight".to_owned(), vec![10, 100]),
                ("hidden.0.bias".to_owned(), vec![100]),
                ("hidden.0.weight".to_owned(), vec![100, 784]),
                ("hidden.1.bias".to_owned(), vec![100]),
                ("hidden.1.weight".to_owned(), vec![100, 100]),
            ]
        );
        let out = model.forward_t(
            &Tensor::zeros([3, 1, 28, 28], (Kind::Float, Device::Cpu)),
            false,
        );
        assert_eq!(out.size(), vec![3, 10]);
        assert_eq!(model.outputs(), 10);
    }
}
