//! The trainer's optimiser: SGD and Adam over flat buffers.
//!
//! libtorch's optimisers (behind tch's `nn::Optimizer`) loop over the parameters and launch
//! several kernels per tensor, so on a GPU a step of a model with many small tensors is bound
//! by kernel launches, not arithmetic. [`FlatOptimizer`] keeps every trainable variable as a
//! view into one contiguous buffer per (device, dtype), its gradient as a view into a second
//! one and the optimiser state (momentum, Adam's moments) as two more, so that `zero_grad` is
//! one `zero_` and a step is a dozen kernels over the whole buffer whatever the number of
//! tensors.
//!
//! How the views are made:
//!
//! * `Tensor::set_data` re-points a variable (and every shallow clone of it: the layers'
//!   fields, the `VarStore`'s entries, a method's handles) at a view of the flat buffer,
//!   keeping its autograd identity and `requires_grad`.
//! * A variable's gradient, once defined, is re-pointed the same way. `backward` (grad mode
//!   off inside `AccumulateGrad`, no `create_graph`) adds into a defined gradient in place,
//!   so every later backward writes into the flat gradient buffer. A variable without a
//!   gradient yet gets a zero one from a throwaway backward when the layout is built.
//!
//! The layout follows the trainable set. On every `zero_grad` and `step` the optimiser checks
//! on the host, without reading a tensor, that the `VarStore`'s trainable variables with
//! `requires_grad` (creation order, non-empty) are still the views of its layout (same data
//! and gradient pointers); if not (a variable was created or frozen or unfrozen, or its data
//! was replaced) it rebuilds: the current values and gradients are copied into new buffers,
//! each variable keeps its optimiser state (and Adam's step count) at its new place, and a
//! variable that left the set gets its own storage back, its gradient removed (undefined, as
//! libtorch's `zero_grad` leaves it) and its state put aside until it trains again, so it is
//! never updated while frozen.
//!
//! Semantics, as libtorch's `SGD` and `Adam` (defaults of tch's `nn::Sgd` and `nn::Adam`):
//!
//! * SGD: `d = g + wd·p`; with momentum `buf = μ·buf + d` (the first step's buffer is `d`,
//!   which a zero buffer gives exactly, dampening being 0); `p -= lr·buf` (or `lr·d`).
//! * Adam: `g += wd·p` (L2, not decoupled); `m = β1·m + (1−β1)·g`, `v = β2·v + (1−β2)·g²`;
//!   `p -= lr/(1−β1^t) · m / (√v/√(1−β2^t) + ε)` with `t` the variable's own step count,
//!   as libtorch keeps one per parameter. While every variable of a buffer has the same
//!   count (the usual case) the bias corrections are host scalars; otherwise a per-element
//!   count tensor gives per-element corrections.
//!
//! One difference: libtorch skips a parameter whose gradient is undefined. Here every
//! trainable variable has a gradient (the flat view, zeroed by `zero_grad`), so a trainable
//! variable that took no part in the loss sees a zero gradient: weight decay and momentum
//! still move it and its Adam moments decay. Methods freeze what they do not train
//! (`requires_grad(false)` leaves the layout and is skipped exactly as before).

pub(crate) mod configured;
mod layout;
mod memory_format;
mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tch::nn::{VarStore, Variables};
use tch::{Kind, Tensor};

pub use memory_format::{channels_last, is_channels_last};

/// The update rule and its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// SGD with momentum (0: none) and L2 weight decay; no dampening, no Nesterov.
    Sgd {
        lr: f64,
        momentum: f64,
        weight_decay: f64,
    },
    /// Adam with L2 weight decay (libtorch's `Adam`, not `AdamW`), no AMSGrad.
    Adam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
}

impl Rule {
    /// Adam with tch's defaults: β = (0.9, 0.999), ε = 1e-8.
    pub fn adam(lr: f64, weight_decay: f64) -> Self {
        Rule::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }

    /// Number of state tensors per parameter: momentum buffer, or Adam's two moments.
    fn moments(&self) -> usize {
        match *self {
            Rule::Sgd { momentum, .. } => usize::from(momentum != 0.0),
            Rule::Adam { .. } => 2,
        }
    }
}

/// One variable's place in the layout.
#[derive(Debug)]
struct Entry {
    /// Position among the `VarStore`'s trainable variables (creation order): its identity.
    index: usize,
    group: usize,
    offset: i64,
    numel: i64,
    ptr: usize,
    grad_ptr: usize,
    /// Adam steps taken before the group's current buffers were built.
    steps_before: u64,
}

/// The buffers of one (device, dtype).
#[derive(Debug)]
struct Group {
    params: Tensor,
    grads: Tensor,
    moments: Vec<Tensor>,
    /// Adam steps of every variable when the buffers were built (when they agree).
    base: u64,
    /// Steps taken since the buffers were built.
    steps: u64,
    /// Per-element step counts (double) when the variables' counts differ (Adam only).
    element_steps: Option<Tensor>,
}

/// A variable's optimiser state while it is out of the layout.
#[derive(Debug)]
struct Saved {
    steps: u64,
    moments: Vec<Tensor>,
}

/// SGD or Adam over flat parameter, gradient and state buffers (see the module docs).
#[derive(Debug)]
pub struct FlatOptimizer {
    rule: Rule,
    variables: Arc<Mutex<Variables>>,
    layout: Vec<Entry>,
    groups: Vec<Group>,
    saved: HashMap<usize, Saved>,
}

impl FlatOptimizer {
    /// An optimiser over the trainable variables of `vars`, now and later.
    pub fn new(rule: Rule, vars: &VarStore) -> Self {
        Self {
            rule,
            variables: Arc::clone(&vars.variables_),
            layout: Vec::new(),
            groups: Vec::new(),
            saved: HashMap::new(),
        }
    }

    /// Zeroes every trainable variable's gradient: one `zero_` per buffer.
    pub fn zero_grad(&mut self) {
        self.sync();
        let _guard = tch::no_grad_guard();
        for group in &mut self.groups {
            let _ = group.grads.zero_();
        }
    }

    /// One update of every trainable variable from its gradient.
    pub fn step(&mut self) {
        self.sync();
        let _guard = tch::no_grad_guard();
        for group in &mut self.groups {
            group.steps += 1;
            match self.rule {
                Rule::Sgd {
                    lr,
                    momentum,
                    weight_decay,
                } => {
                    let mut d = if weight_decay != 0.0 {
                        &group.grads + &group.params * weight_decay
                    } else {
                        group.grads.shallow_clone()
                    };
                    if momentum != 0.0 {
                        let buf = &mut group.moments[0];
                        let _ = buf.g_mul_scalar_(momentum).g_add_(&d);
                        d = buf.shallow_clone();
                    }
                    let _ = group.params.g_add_(&(d * -lr));
                }
                Rule::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let grad = if weight_decay != 0.0 {
                        &group.grads + &group.params * weight_decay
                    } else {
                        group.grads.shallow_clone()
                    };
                    let [m, v] = &mut group.moments[..] else {
                        unreachable!("Adam keeps two moments")
                    };
                    let _ = m.g_mul_scalar_(beta1).g_add_(&(&grad * (1.0 - beta1)));
                    let _ = v
                        .g_mul_scalar_(beta2)
                        .addcmul_(&(&grad * (1.0 - beta2)), &grad);
                    match &mut group.element_steps {
                        None => {
                            let t = group.base + group.steps;
                            let correction1 = 1.0 - beta1.powf(t as f64);
                            let correction2 = 1.0 - beta2.powf(t as f64);
                            let mut denom = v.sqrt();
                            let _ = denom.g_div_scalar_(correction2.sqrt()).g_add_scalar_(eps);
                            let _ = group.params.addcdiv_(&(&*m * (-lr / correction1)), &denom);
                        }
                        Some(t) => {
                            // In double precision: 1 − 0.999^t from a float 0.999 would be
                            // off by 1e-4 relatively for small t.
                            let _ = t.g_add_scalar_(1.0);
                            let kind = group.params.kind();
                            let correction1: Tensor = 1.0 - Tensor::pow_scalar(beta1, t);
                            let correction2: Tensor = 1.0 - Tensor::pow_scalar(beta2, t);
                            let step_size = (correction1.reciprocal() * -lr).to_kind(kind);
                            let denom = v.sqrt() / correction2.sqrt().to_kind(kind) + eps;
                            let _ = group.params.addcdiv_(&(&*m * step_size), &denom);
                        }
                    }
                }
            }
        }
    }

    /// Makes every Adam step count a device tensor (the per-element path), so that a step
    /// captured in a CUDA graph advances it on the device at every replay; a host count would
    /// be frozen into the graph. The layout is brought up to date first. Numerically the bias
    /// corrections are then computed in double precision on the device instead of the host.
    pub fn prepare_capture(&mut self) {
        self.sync();
        if !matches!(self.rule, Rule::Adam { .. }) {
            return;
        }
        for group in &mut self.groups {
            if group.element_steps.is_none() {
                let t = (group.base + group.steps) as f64;
                group.element_steps =
                    Some(Tensor::full([], t, (Kind::Double, group.params.device())));
            }
        }
    }

    /// Counts on the host a step that a graph replay made on the device (no host code ran).
    pub fn count_replayed_step(&mut self) {
        for group in &mut self.groups {
            group.steps += 1;
        }
    }
}

#[cfg(test)]
mod tests;
