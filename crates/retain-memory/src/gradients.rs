//! Flat gradient vectors for gradient-projection methods (GEM, A-GEM).
//!
//! A projection method treats the gradient of every trainable parameter as one vector. The
//! parameters must be taken from [`tch::nn::VarStore::trainable_variables`], whose order is
//! the creation order and therefore stable from step to step (`variables()` is a hash map
//! and must never be used for this). A parameter that received no gradient has an undefined
//! `grad()`; it counts as zeros.

use tch::Tensor;

/// The current gradients (`p.grad()`, undefined = zeros) concatenated into one vector.
pub fn flat_grad(params: &[Tensor]) -> Tensor {
    let parts: Vec<Tensor> = params
        .iter()
        .map(|p| {
            let g = p.grad();
            if g.defined() {
                g.detach().flatten(0, -1)
            } else {
                p.zeros_like().flatten(0, -1)
            }
        })
        .collect();
    Tensor::cat(&parts, 0)
}

/// The gradient of `loss` with respect to `params`, as one vector, computed without touching
/// `p.grad()` (so it may run inside a step, before or after the trainer's backward).
pub fn flat_grad_of(loss: &Tensor, params: &[Tensor]) -> Tensor {
    let grads = Tensor::run_backward(&[loss], params, false, false);
    let parts: Vec<Tensor> = grads
        .iter()
        .zip(params)
        .map(|(g, p)| {
            if g.defined() {
                g.flatten(0, -1)
            } else {
                p.zeros_like().flatten(0, -1)
            }
        })
        .collect();
    Tensor::cat(&parts, 0)
}

/// Writes a flat vector (as produced by [`flat_grad`]) back into `p.grad()`, in place and
/// without recording it for autograd. A parameter whose gradient is undefined is skipped:
/// the optimiser does not update it in this step either way.
pub fn write_grad(params: &[Tensor], flat: &Tensor) {
    let _no_grad = tch::no_grad_guard();
    let mut offset = 0;
    for p in params {
        let numel = p.numel() as i64;
        let mut g = p.grad();
        if g.defined() {
            g.copy_(&flat.narrow(0, offset, numel).view_as(&g));
        }
        offset += numel;
    }
}
