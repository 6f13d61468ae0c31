//! The fully connected network ([`Mlp`]).

use tch::Tensor;
use tch::nn::{self, ModuleT};

use crate::{AdaptableLinear, Backbone, per_sample};

/// Fully connected network: `inputs → hidden[0] → … → outputs`, ReLU between layers.
#[derive(Debug)]
pub struct Mlp {
    pub(crate) hidden: Vec<AdaptableLinear>,
    pub(crate) head: AdaptableLinear,
}

impl Mlp {
    pub fn new(path: &nn::Path, inputs: usize, hidden: &[usize], outputs: usize) -> Self {
        let mut width = inputs as i64;
        let hidden = hidden
            .iter()
            .enumerate()
            .map(|(i, &next)| {
                let layer = AdaptableLinear::new(path / "hidden" / i, width, next as i64);
                width = next as i64;
                layer
            })
            .collect();
        let head = AdaptableLinear::new(path / "head", width, outputs as i64);
        Self { hidden, head }
    }
}

impl ModuleT for Mlp {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head.forward(&self.features(xs, train))
    }
}

impl Backbone for Mlp {
    fn outputs(&self) -> usize {
        self.head.shape()[0] as usize
    }

    /// Linear layers and ReLUs only.
    fn samples_independent(&self) -> bool {
        true
    }

    /// The last hidden layer's activations (the flattened input when there is none).
    fn features(&self, xs: &Tensor, _train: bool) -> Tensor {
        self.hidden
            .iter()
            .fold(xs.flatten(1, -1), |x, layer| layer.forward(&x).relu())
    }

    /// Every layer: `hidden.<i>` and `head`.
    fn adaptable_layers(&self) -> Vec<(String, [i64; 2])> {
        let mut layers: Vec<(String, [i64; 2])> = self
            .hidden
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("hidden.{i}"), l.shape()))
            .chain([("head".to_owned(), self.head.shape())])
            .collect();
        layers.sort();
        layers
    }

    fn linear(&self, name: &str) -> Option<&AdaptableLinear> {
        match name.strip_prefix("hidden.") {
            Some(i) => i.parse::<usize>().ok().and_then(|i| self.hidden.get(i)),
            None => (name == "head").then_some(&self.head),
        }
    }

    /// One batched pass ([`per_sample::SampleDeltas`]); `None` while an adapter or a
    /// quantised weight is attached.
    fn per_group_gradients(
        &self,
        inputs: &Tensor,
        labels: &Tensor,
        group_sizes: &[i64],
        params: &[Tensor],
        allowed: Option<&Tensor>,
    ) -> Option<Tensor> {
        per_sample::SampleDeltas::of_mlp(self, inputs, labels, params, allowed)?
            .group_gradients(group_sizes)
    }

    /// One batched pass ([`per_sample::SampleDeltas`]); `None` while an adapter or a
    /// quantised weight is attached.
    fn squared_group_gradients(
        &self,
        inputs: &Tensor,
        labels: &Tensor,
        group_size: i64,
        params: &[Tensor],
        allowed: Option<&Tensor>,
    ) -> Option<Vec<Tensor>> {
        per_sample::SampleDeltas::of_mlp(self, inputs, labels, params, allowed)?
            .squared_group_gradients(group_size)
    }
}
