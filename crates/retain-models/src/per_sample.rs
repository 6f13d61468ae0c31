//! Per-sample gradients of the fully connected network, from one forward/backward pass.
//!
//! For a linear layer `z = W a + b` and a loss summed over independent samples, row `i` of
//! `δ = ∂L/∂z` is sample `i`'s own gradient with respect to its pre-activation, so sample
//! `i`'s parameter gradient is `∂W_i = δ_i a_iᵀ`, `∂b_i = δ_i`. Everything a group of samples
//! needs follows without a backward pass per group:
//!
//! * the mean gradient of a group (GEM's memories): `(1/m) Σ_{i∈k} δ_i a_iᵀ`, one batched
//!   matrix product for groups of equal size;
//! * the sum of squared per-sample gradients (EWC's empirical Fisher), elementwise
//!   `Σ_i (δ_i a_iᵀ)² = (δ ⊙ δ)ᵀ (a ⊙ a)`: one matrix product, no `[samples, P]` tensor.

use tch::nn::Module;
use tch::{Kind, Tensor};

use crate::{AdaptableLinear, Mlp};

/// Each layer's inputs and each sample's pre-activation gradients, for the parameters asked
/// for.
pub(crate) struct SampleDeltas {
    /// Per requested parameter: its layer and whether it is that layer's bias.
    slots: Vec<(usize, bool)>,
    /// Per layer: its input `a_l`, `[B, in]`.
    acts: Vec<Tensor>,
    /// Per layer: `δ_l = ∂L/∂z_l`, `[B, out]`, `L` the summed loss.
    deltas: Vec<Tensor>,
}

impl SampleDeltas {
    /// The pass through `mlp` over `inputs` at `labels` (cross-entropy over the outputs
    /// `allowed` marks, every output when `None`). `None` when some tensor of `params` is not
    /// one of its weights or biases, a layer is frozen or carries an adapter or a quantised
    /// weight, or `params` is empty.
    pub(crate) fn of_mlp(
        mlp: &Mlp,
        inputs: &Tensor,
        labels: &Tensor,
        params: &[Tensor],
        allowed: Option<&Tensor>,
    ) -> Option<Self> {
        let layers: Vec<&AdaptableLinear> = mlp.hidden.iter().chain([&mlp.head]).collect();
        if params.is_empty() || layers.iter().any(|l| l.has_extras()) {
            return None;
        }
        let same = |a: &Tensor, b: &Tensor| a.data_ptr() == b.data_ptr() && a.size() == b.size();
        let slots: Vec<(usize, bool)> = params
            .iter()
            .map(|p| {
                layers.iter().enumerate().find_map(|(l, layer)| {
                    if same(p, &layer.inner.ws) {
                        Some((l, false))
                    } else {
                        match &layer.inner.bs {
                            Some(bs) if same(p, bs) => Some((l, true)),
                            _ => None,
                        }
                    }
                })
            })
            .collect::<Option<_>>()?;
        let mut x = inputs.flatten(1, -1);
        let mut acts = Vec::with_capacity(layers.len());
        let mut pre = Vec::with_capacity(layers.len());
        for (l, layer) in layers.iter().enumerate() {
            let z = layer.inner.forward(&x);
            acts.push(x.detach());
            x = if l + 1 < layers.len() {
                z.relu()
            } else {
                z.shallow_clone()
            };
            pre.push(z);
        }
        // A frozen layer leaves its pre-activation out of the graph: no gradient reaches it.
        if pre.iter().any(|z| !z.requires_grad()) {
            return None;
        }
        let logits = match allowed {
            Some(allowed) => x.masked_fill(&allowed.logical_not(), f64::NEG_INFINITY),
            None => x,
        };
        let loss =
            logits.cross_entropy_loss::<Tensor>(labels, None, tch::Reduction::Sum, -100, 0.0);
        let deltas = Tensor::run_backward(&[loss], &pre, false, false);
        Some(Self {
            slots,
            acts,
            deltas,
        })
    }

    fn samples(&self) -> i64 {
        self.acts[0].size()[0]
    }

    /// `[groups, P]`: each group's mean gradient, flattened in the order of the parameters
    /// (see `Backbone::per_group_gradients`). `None` when the sizes are not positive or do not
    /// add up to the batch.
    pub(crate) fn group_gradients(&self, group_sizes: &[i64]) -> Option<Tensor> {
        if group_sizes.is_empty()
            || group_sizes.iter().any(|&m| m < 1)
            || group_sizes.iter().sum::<i64>() != self.samples()
        {
            return None;
        }
        let groups = group_sizes.len() as i64;
        if group_sizes.iter().all(|&m| m == group_sizes[0]) {
            let m = group_sizes[0];
            let parts: Vec<Tensor> = self
                .slots
                .iter()
                .map(|&(l, bias)| {
                    let delta = self.deltas[l].reshape([groups, m, -1]);
                    if bias {
                        delta.sum_dim_intlist(1, false, None)
                    } else {
                        let a = self.acts[l].reshape([groups, m, -1]);
                        delta.transpose(1, 2).bmm(&a).flatten(1, -1)
                    }
                })
                .collect();
            return Some(Tensor::cat(&parts, 1) / m as f64);
        }
        let mut start = 0;
        let rows: Vec<Tensor> = group_sizes
            .iter()
            .map(|&m| {
                let parts: Vec<Tensor> = self
                    .slots
                    .iter()
                    .map(|&(l, bias)| {
                        let delta = self.deltas[l].narrow(0, start, m);
                        if bias {
                            delta.sum_dim_intlist(0, false, None)
                        } else {
                            delta
                                .tr()
                                .matmul(&self.acts[l].narrow(0, start, m))
                                .flatten(0, -1)
                        }
                    })
                    .collect();
                start += m;
                Tensor::cat(&parts, 0) / m as f64
            })
            .collect();
        Some(Tensor::stack(&rows, 0))
    }

    /// `Σ_k |k| · g_k ⊙ g_k` over the runs of `group_size` consecutive samples (the last may
    /// be shorter), one tensor per parameter, shaped like it (see
    /// `Backbone::squared_group_gradients`). `None` when `group_size < 1`.
    pub(crate) fn squared_group_gradients(&self, group_size: i64) -> Option<Vec<Tensor>> {
        if group_size < 1 {
            return None;
        }
        let n = self.samples();
        let full = n / group_size * group_size;
        let runs = [(0, full, group_size), (full, n - full, n - full)];
        let squares = self
            .slots
            .iter()
            .map(|&(l, bias)| {
                runs.iter()
                    .filter(|&&(_, len, _)| len > 0)
                    .map(|&(start, len, m)| {
                        let delta = self.deltas[l].narrow(0, start, len);
                        let a = self.acts[l].narrow(0, start, len);
                        squared_sum(&delta, &a, m, bias)
                    })
                    .reduce(|x, y| x + y)
                    .expect("a batch has at least one sample")
            })
            .collect();
        Some(squares)
    }
}

/// `Σ_k m · g_k ⊙ g_k` over the groups of `m` consecutive rows of `delta` (`[len, out]`,
/// `len` a multiple of `m`) and `a` (`[len, in]`), `g_k` the group's mean gradient: of the
/// bias (`[out]`) when `bias`, else of the weight (`[out, in]`).
fn squared_sum(delta: &Tensor, a: &Tensor, m: i64, bias: bool) -> Tensor {
    if m == 1 {
        // Per sample: Σ_i (δ_i a_iᵀ)² = (δ ⊙ δ)ᵀ (a ⊙ a), without a per-sample tensor.
        let d2 = delta.square();
        return if bias {
            d2.sum_dim_intlist(0, false, Kind::Float)
        } else {
            d2.tr().matmul(&a.square())
        };
    }
    let groups = delta.size()[0] / m;
    let delta = delta.reshape([groups, m, -1]);
    let g = if bias {
        delta.sum_dim_intlist(1, false, Kind::Float) / m as f64
    } else {
        delta.transpose(1, 2).bmm(&a.reshape([groups, m, -1])) / m as f64
    };
    g.square().sum_dim_intlist(0, false, Kind::Float) * m as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{self, Draw, Reference};
    use crate::{Backbone, LowRank, ResNet};
    use retain_config::InitScheme;
    use tch::nn;
    use tch::{Device, Kind};

    const OPTS: (Kind, Device) = (Kind::Float, Device::Cpu);

    // Weights, inputs, labels and masks come from fixed seeds, not from libtorch's global
    // generator, which the other tests of this process draw from concurrently.

    fn mlp(vs: &nn::VarStore, inputs: usize, hidden: &[usize], outputs: usize, seed: u64) -> Mlp {
        let model = Mlp::new(&vs.root(), inputs, hidden, outputs);
        init::initialize(vs, Reference::TorchModules, InitScheme::Kaiming, seed);
        model
    }

    fn normal(shape: &[i64], seed: u64) -> Tensor {
        init::sample(Draw::Normal { std: 1.0 }, shape, seed)
    }

    /// `n` labels in `0..classes`, drawn from `seed`.
    fn labels(n: i64, classes: i64, seed: u64) -> Tensor {
        let u = init::sample(Draw::Uniform { bound: 0.5 }, &[n], seed) + 0.5;
        (u * classes as f64)
            .floor()
            .clamp(0, classes - 1)
            .to_kind(Kind::Int64)
    }

    /// Each group's gradient by its own forward/backward pass, flattened in `params` order.
    fn per_group_reference(
        model: &dyn Backbone,
        xs: &Tensor,
        labels: &Tensor,
        sizes: &[i64],
        params: &[Tensor],
        allowed: Option<&Tensor>,
    ) -> Tensor {
        let mut start = 0;
        let rows: Vec<Tensor> = sizes
            .iter()
            .map(|&m| {
                let logits = model.forward_t(&xs.narrow(0, start, m), true);
                let logits = match allowed {
                    Some(a) => {
                        logits.masked_fill(&a.narrow(0, start, m).logical_not(), f64::NEG_INFINITY)
                    }
                    None => logits,
                };
                let loss = logits.cross_entropy_for_logits(&labels.narrow(0, start, m));
                start += m;
                let grads = Tensor::run_backward(&[loss], params, false, false);
                Tensor::cat(
                    &grads.iter().map(|g| g.flatten(0, -1)).collect::<Vec<_>>(),
                    0,
                )
            })
            .collect();
        Tensor::stack(&rows, 0)
    }

    fn max_error(a: &Tensor, b: &Tensor) -> f64 {
        f64::try_from((a - b).abs().max()).unwrap()
    }

    /// A random `[n, classes]` mask with at least the label's own output allowed.
    fn random_mask(labels: &Tensor, classes: i64, seed: u64) -> Tensor {
        let n = labels.size()[0];
        normal(&[n, classes], seed)
            .gt(0.0)
            .logical_or(&labels.one_hot(classes).to_kind(Kind::Bool))
    }

    #[test]
    fn mlp_per_group_gradients_match_one_pass_per_group() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = mlp(&vs, 12, &[7, 6], 4, 5);
        let params = vs.trainable_variables();
        // The flat layout is creation order (tch's `linear` makes the bias first), head last.
        let names: Vec<String> = params
            .iter()
            .map(|p| {
                let vars = vs.variables();
                let (name, _) = vars
                    .iter()
                    .find(|(_, t)| t.data_ptr() == p.data_ptr())
                    .unwrap();
                name.clone()
            })
            .collect();
        assert_eq!(
            names,
            [
                "hidden.0.bias",
                "hidden.0.weight",
                "hidden.1.bias",
                "hidden.1.weight",
                "head.bias",
                "head.weight"
            ]
        );
        for sizes in [vec![3i64, 5, 4], vec![4, 4, 4]] {
            let n: i64 = sizes.iter().sum();
            let xs = normal(&[n, 1, 3, 4], 1);
            let labels = labels(n, 4, 2);
            let mask = random_mask(&labels, 4, 3);
            for allowed in [None, Some(&mask)] {
                let want = per_group_reference(&model, &xs, &labels, &sizes, &params, allowed);
                let got = model
                    .per_group_gradients(&xs, &labels, &sizes, &params, allowed)
                    .expect("a plain MLP batches its per-group gradients");
                assert_eq!(got.size(), want.size());
                assert_eq!(got.size(), vec![3, 7 * 12 + 7 + 6 * 7 + 6 + 4 * 6 + 4]);
                let err = max_error(&got, &want);
                assert!(err <= 1e-5, "{sizes:?}: max error {err}");
                // The groups really differ (every parameter, bias and head included, is
                // covered).
                assert!(!got.get(0).allclose(&got.get(1), 1e-3, 1e-3, false));
                assert!(f64::try_from(want.abs().min_dim(0, false).0.max()).unwrap() > 0.0);
            }
            // The mask changes the gradients (it is not ignored).
            let plain = model
                .per_group_gradients(&xs, &labels, &sizes, &params, None)
                .unwrap();
            let masked = model
                .per_group_gradients(&xs, &labels, &sizes, &params, Some(&mask))
                .unwrap();
            assert!(max_error(&plain, &masked) > 1e-4);
            // Any subset of the parameters, in any order, is laid out as asked.
            let some = [params[4].shallow_clone(), params[1].shallow_clone()];
            let got = model
                .per_group_gradients(&xs, &labels, &sizes, &some, None)
                .unwrap();
            let want = per_group_reference(&model, &xs, &labels, &sizes, &some, None);
            let err = max_error(&got, &want);
            assert!(err <= 1e-5, "{sizes:?} (subset): max error {err}");
        }
    }

    /// `Σ_k |k| g_k²` from one pass equals the squares of the per-group gradients, each from
    /// its own pass: per sample, in equal groups and with a shorter last group, with and
    /// without a task mask.
    #[test]
    fn squared_group_gradients_match_the_squares_of_separate_passes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = mlp(&vs, 6, &[5], 4, 7);
        let params = vs.trainable_variables();
        let n = 11;
        let xs = normal(&[n, 6], 8);
        let labels = labels(n, 4, 9);
        let mask = random_mask(&labels, 4, 10);
        for group_size in [1i64, 3, 4, 11, 20] {
            let mut sizes = vec![group_size.min(n); (n / group_size.min(n)) as usize];
            if n % group_size.min(n) != 0 {
                sizes.push(n % group_size);
            }
            for allowed in [None, Some(&mask)] {
                let rows = per_group_reference(&model, &xs, &labels, &sizes, &params, allowed);
                let weights = Tensor::from_slice(&sizes).to_kind(Kind::Float).unsqueeze(1);
                let want = (rows.square() * weights).sum_dim_intlist(0, false, Kind::Float);
                let got = model
                    .squared_group_gradients(&xs, &labels, group_size, &params, allowed)
                    .expect("a plain MLP batches its squared gradients");
                assert_eq!(got.len(), params.len());
                for (g, p) in got.iter().zip(&params) {
                    assert_eq!(g.size(), p.size());
                }
                let flat =
                    Tensor::cat(&got.iter().map(|g| g.flatten(0, -1)).collect::<Vec<_>>(), 0);
                let err = max_error(&flat, &want);
                assert!(err <= 1e-5, "group size {group_size}: max error {err}");
                assert!(f64::try_from(want.max()).unwrap() > 1e-3);
            }
        }
        assert!(
            model
                .squared_group_gradients(&xs, &labels, 0, &params, None)
                .is_none()
        );
    }

    #[test]
    fn per_group_gradients_decline_what_they_cannot_batch() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = mlp(&vs, 6, &[5], 3, 6);
        let params = vs.trainable_variables();
        let xs = normal(&[4, 6], 11);
        let labels = Tensor::from_slice(&[0i64, 2, 1, 1]);
        assert!(
            model
                .per_group_gradients(&xs, &labels, &[2, 2], &params, None)
                .is_some()
        );
        // Sizes that do not add up to the batch.
        assert!(
            model
                .per_group_gradients(&xs, &labels, &[2, 1], &params, None)
                .is_none()
        );
        // A tensor that is not one of the model's parameters.
        let stranger = [Tensor::zeros([5, 6], OPTS)];
        assert!(
            model
                .per_group_gradients(&xs, &labels, &[4], &stranger, None)
                .is_none()
        );
        assert!(
            model
                .squared_group_gradients(&xs, &labels, 1, &stranger, None)
                .is_none()
        );
        // An attached adapter.
        let adapter = LowRank {
            a: Tensor::zeros([1, 6], OPTS),
            b: Tensor::zeros([5, 1], OPTS),
            scale: 1.0,
        };
        assert!(model.set_adapter("hidden.0", Some(adapter)));
        assert!(
            model
                .per_group_gradients(&xs, &labels, &[2, 2], &params, None)
                .is_none()
        );
        assert!(
            model
                .squared_group_gradients(&xs, &labels, 1, &params, None)
                .is_none()
        );
        // Batch norm: the default.
        let vs = nn::VarStore::new(Device::Cpu);
        let resnet = ResNet::resnet18(&vs.root(), 3, 2, 3);
        let images = normal(&[2, 3, 8, 8], 12);
        let labels = Tensor::from_slice(&[0i64, 1]);
        let params = vs.trainable_variables();
        assert!(
            resnet
                .per_group_gradients(&images, &labels, &[1, 1], &params, None)
                .is_none()
        );
        assert!(
            resnet
                .squared_group_gradients(&images, &labels, 1, &params, None)
                .is_none()
        );
    }
}
