//! Flat gradient vectors for gradient-projection methods (GEM, A-GEM).
//!
//! A projection method treats the gradient of every trainable parameter as one vector. The
//! parameters must be taken from [`tch::nn::VarStore::trainable_variables`], whose order is
//! the creation order and therefore stable from step to step (`variables()` is a hash map
//! and must never be used for this). A parameter that received no gradient has an undefined
//! `grad()`; it counts as zeros.

use tch::Tensor;

/// The gradients of `params` as one vector *viewing* them, without a copy, when they lie
/// one after another in one buffer, each contiguous and in `params`' order — as the trainer's
/// flat optimiser keeps them; `None` otherwise (an undefined gradient, another layout). Read
/// it before the gradients change (it changes with them).
pub fn flat_grad_view(params: &[Tensor]) -> Option<Tensor> {
    let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
    let first = grads.first()?;
    let mut total = 0i64;
    let mut next = first.data_ptr() as usize;
    for g in &grads {
        if !g.defined()
            || g.kind() != first.kind()
            || g.device() != first.device()
            || !g.is_contiguous()
            || g.data_ptr() as usize != next
        {
            return None;
        }
        let numel = g.numel() as i64;
        total += numel;
        next += numel as usize * g.kind().elt_size_in_bytes();
    }
    // Keeps the first gradient's storage offset; adjacent addresses in two storages fail
    // the storage's bounds check here.
    first.detach().f_as_strided([total], [1], None).ok()
}

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
    if let Some(mut view) = flat_grad_view(params) {
        // One copy instead of one per parameter.
        view.copy_(flat);
        return;
    }
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
