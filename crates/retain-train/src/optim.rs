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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tch::nn::{VarStore, Variables};
use tch::{COptimizer, Device, Kind, Tensor};

/// Whether `t` is a 4-D `[N, C, H, W]` tensor stored channels-last (`[N, H, W, C]` in memory,
/// PyTorch's `torch.channels_last`). As PyTorch's `is_contiguous(memory_format=...)`, the
/// strides of size-1 dimensions do not count: a 1×1 kernel, or one input channel, is stored
/// the same either way and is both.
pub fn is_channels_last(t: &Tensor) -> bool {
    let size = t.size();
    if size.len() != 4 {
        return false;
    }
    let stride = t.stride();
    let mut expected = 1;
    for dim in [1, 3, 2, 0] {
        if size[dim] != 1 && stride[dim] != expected {
            return false;
        }
        expected *= size[dim];
    }
    true
}

/// A channels-last copy of the 4-D tensor `t` (same sizes and values).
pub fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// `t`'s elements flattened in the memory order of `layout` (a tensor of the same sizes):
/// channels-last order for a channels-last `layout`, row-major otherwise.
fn in_memory_order(t: &Tensor, layout: &Tensor) -> Tensor {
    if is_channels_last(layout) && t.dim() == 4 {
        t.permute([0, 2, 3, 1]).reshape([-1])
    } else {
        t.reshape([-1])
    }
}

/// A view of `slice` (`like.numel()` elements in `like`'s memory order) with `like`'s sizes
/// and layout.
fn view_like(slice: &Tensor, like: &Tensor) -> Tensor {
    let size = like.size();
    if is_channels_last(like) {
        slice
            .view([size[0], size[2], size[3], size[1]])
            .permute([0, 3, 1, 2])
    } else {
        slice.view(size.as_slice())
    }
}

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

    /// Rebuilds the layout when the trainable set or a variable's storage changed.
    fn sync(&mut self) {
        if !self.layout_is_current() {
            self.rebuild();
        }
    }

    /// Whether the trainable variables are exactly the layout's views (host only).
    fn layout_is_current(&self) -> bool {
        let variables = self
            .variables
            .lock()
            .expect("the VarStore lock is not poisoned");
        let mut entries = self.layout.iter();
        for (index, var) in variables.trainable_variables.iter().enumerate() {
            let t = &var.tensor;
            if !t.requires_grad() || t.numel() == 0 {
                continue;
            }
            let Some(e) = entries.next() else {
                return false;
            };
            let grad = t.grad();
            if e.index != index
                || e.ptr != t.data_ptr() as usize
                || e.numel != t.numel() as i64
                || !grad.defined()
                || e.grad_ptr != grad.data_ptr() as usize
            {
                return false;
            }
        }
        entries.next().is_none()
    }

    fn rebuild(&mut self) {
        let current: Vec<(usize, Tensor)> = {
            let variables = self
                .variables
                .lock()
                .expect("the VarStore lock is not poisoned");
            variables
                .trainable_variables
                .iter()
                .enumerate()
                .filter(|(_, v)| v.tensor.requires_grad() && v.tensor.numel() > 0)
                .map(|(i, v)| (i, v.tensor.shallow_clone()))
                .collect()
        };
        // Variables without a gradient get a zero one, so that there is a gradient tensor to
        // re-point (tch cannot create one otherwise).
        tch::with_grad(|| {
            for (_, t) in &current {
                if !t.grad().defined() {
                    (t.sum(t.kind()) * 0.0).backward();
                }
            }
        });
        let _guard = tch::no_grad_guard();
        // Every old variable's state, by identity.
        let mut state = std::mem::take(&mut self.saved);
        for e in &self.layout {
            let group = &self.groups[e.group];
            state.insert(
                e.index,
                Saved {
                    steps: e.steps_before + group.steps,
                    moments: group
                        .moments
                        .iter()
                        .map(|m| m.narrow(0, e.offset, e.numel).copy())
                        .collect(),
                },
            );
        }
        // Variables that left the set: own storage, no gradient.
        let leaving: Vec<Tensor> = {
            let variables = self
                .variables
                .lock()
                .expect("the VarStore lock is not poisoned");
            self.layout
                .iter()
                .filter(|e| !current.iter().any(|(i, _)| *i == e.index))
                .filter_map(|e| variables.trainable_variables.get(e.index))
                .map(|v| v.tensor.shallow_clone())
                .collect()
        };
        for mut t in leaving {
            let own = t.detach().copy();
            t.set_data(&own);
            remove_grad(&t);
        }
        // New buffers, one per (device, dtype), in creation order within each.
        let mut keys: Vec<(Device, Kind)> = Vec::new();
        for (_, t) in &current {
            let key = (t.device(), t.kind());
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let mut layout = Vec::with_capacity(current.len());
        let mut groups = Vec::with_capacity(keys.len());
        for (g, key) in keys.iter().enumerate() {
            let members: Vec<&(usize, Tensor)> = current
                .iter()
                .filter(|(_, t)| (t.device(), t.kind()) == *key)
                .collect();
            // In each variable's memory order, so that its view below keeps its layout.
            let flat = |f: &dyn Fn(&(usize, Tensor)) -> Tensor| {
                Tensor::cat(
                    &members
                        .iter()
                        .map(|m| in_memory_order(&f(m), &m.1))
                        .collect::<Vec<_>>(),
                    0,
                )
            };
            let params = flat(&|(_, t)| t.detach());
            let grads = flat(&|(_, t)| t.grad().detach());
            let moments = (0..self.rule.moments())
                .map(|k| {
                    flat(&|(i, t)| match state.get(i) {
                        Some(s) => s.moments[k].shallow_clone(),
                        None => t.zeros_like(),
                    })
                })
                .collect();
            let steps: Vec<u64> = members
                .iter()
                .map(|(i, _)| state.get(i).map_or(0, |s| s.steps))
                .collect();
            let element_steps = (matches!(self.rule, Rule::Adam { .. })
                && steps.iter().any(|&s| s != steps[0]))
            .then(|| {
                Tensor::cat(
                    &members
                        .iter()
                        .zip(&steps)
                        .map(|((_, t), &s)| {
                            Tensor::full([t.numel() as i64], s as f64, (Kind::Double, key.0))
                        })
                        .collect::<Vec<_>>(),
                    0,
                )
            });
            let mut offset = 0;
            for ((index, t), &steps_before) in members.iter().zip(&steps) {
                let numel = t.numel() as i64;
                let mut param = t.shallow_clone();
                param.set_data(&view_like(&params.narrow(0, offset, numel), t));
                let mut grad = t.grad();
                grad.set_data(&view_like(&grads.narrow(0, offset, numel), t));
                layout.push(Entry {
                    index: *index,
                    group: g,
                    offset,
                    numel,
                    ptr: param.data_ptr() as usize,
                    grad_ptr: t.grad().data_ptr() as usize,
                    steps_before,
                });
                state.remove(index);
                offset += numel;
            }
            groups.push(Group {
                base: steps.first().copied().unwrap_or(0),
                params,
                grads,
                moments,
                steps: 0,
                element_steps,
            });
        }
        // Layout entries in creation order, as `layout_is_current` walks them.
        layout.sort_by_key(|e| e.index);
        self.layout = layout;
        self.groups = groups;
        self.saved = state;
    }
}

/// Leaves `t`'s gradient undefined, as libtorch's `zero_grad` does (tch has no direct call).
fn remove_grad(t: &Tensor) {
    let mut optimizer =
        COptimizer::sgd(0.0, 0.0, 0.0, 0.0, false).expect("libtorch builds an SGD optimiser");
    optimizer
        .add_parameters(t, 0)
        .expect("a variable can be added to an optimiser");
    optimizer
        .zero_grad()
        .expect("libtorch's zero_grad does not fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use retain_config::OptimizerConfig;
    use retain_models::Mlp;
    use tch::nn;
    use tch::nn::ModuleT as _;

    /// A model, its store and an extra variable created later, seeded.
    struct Net {
        vars: VarStore,
        mlp: Mlp,
        extra: Option<Tensor>,
    }

    /// Tests run in parallel threads that share torch's generator, so the values come from
    /// a seeded network built under a lock and copied.
    fn net(seed: i64) -> Net {
        static LOCK: Mutex<()> = Mutex::new(());
        let _lock = LOCK.lock().unwrap();
        tch::manual_seed(seed);
        let vars = VarStore::new(Device::Cpu);
        let mlp = Mlp::new(&vars.root(), 5, &[7, 6], 3);
        Net {
            vars,
            mlp,
            extra: None,
        }
    }

    fn inputs(step: i64) -> (Tensor, Tensor) {
        let x = (Tensor::arange(40, (Kind::Float, Device::Cpu)) * (0.7 + 0.1 * step as f64))
            .sin()
            .view([8, 5]);
        let y = (Tensor::arange(8, (Kind::Int64, Device::Cpu)) * (step + 1)).remainder(3);
        (x, y)
    }

    fn loss(net: &Net, step: i64) -> Tensor {
        let (x, y) = inputs(step);
        let logits = net.mlp.forward_t(&x, true);
        let logits = match &net.extra {
            Some(extra) => logits * extra,
            None => logits,
        };
        logits.cross_entropy_for_logits(&y)
    }

    enum Opt {
        Tch(nn::Optimizer),
        Flat(FlatOptimizer),
    }

    impl Opt {
        fn step(&mut self, net: &Net, step: i64) {
            let l = loss(net, step);
            match self {
                Opt::Tch(o) => o.zero_grad(),
                Opt::Flat(o) => o.zero_grad(),
            }
            l.backward();
            match self {
                Opt::Tch(o) => o.step(),
                Opt::Flat(o) => o.step(),
            }
        }
    }

    /// The rules compared, as the trainer's configuration spells them: both optimisers are
    /// built by the functions the trainer uses.
    fn rules() -> [OptimizerConfig; 4] {
        [
            OptimizerConfig::Sgd {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 0.01,
            },
            OptimizerConfig::Sgd {
                lr: 0.05,
                momentum: 0.0,
                weight_decay: 0.0,
            },
            OptimizerConfig::Adam {
                lr: 0.01,
                weight_decay: 0.0,
            },
            OptimizerConfig::Adam {
                lr: 0.01,
                weight_decay: 0.02,
            },
        ]
    }

    fn assert_close(a: &VarStore, b: &VarStore, what: &str) {
        let (a, b) = (a.variables(), b.variables());
        assert_eq!(a.len(), b.len());
        for (name, x) in &a {
            let diff = (x - &b[name]).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{what}: {name} differs by {diff}");
        }
    }

    /// Trains two copies of the MLP for 20 steps, one with tch's optimiser and one flat;
    /// `event(step, net)` may create or freeze variables between steps.
    fn compare(rule: OptimizerConfig, event: impl Fn(i64, &mut Net)) {
        let mut reference = net(3);
        let mut flat = net(3);
        let mut tch_opt =
            Opt::Tch(crate::build_per_tensor_optimizer(&rule, &reference.vars).unwrap());
        let mut flat_opt = Opt::Flat(crate::build_optimizer(&rule, &flat.vars).unwrap());
        for step in 0..20 {
            event(step, &mut reference);
            event(step, &mut flat);
            tch_opt.step(&reference, step);
            flat_opt.step(&flat, step);
            assert_close(
                &reference.vars,
                &flat.vars,
                &format!("{rule:?}, step {step}"),
            );
        }
    }

    #[test]
    fn flat_sgd_and_adam_match_libtorch() {
        for rule in rules() {
            compare(rule, |_, _| {});
        }
    }

    #[test]
    fn flat_optimizer_matches_libtorch_with_a_variable_created_later() {
        for rule in rules() {
            compare(rule, |step, net| {
                if step == 5 {
                    let extra = net.vars.root().var("extra", &[3], nn::Init::Const(1.5));
                    net.extra = Some(extra);
                }
            });
        }
    }

    #[test]
    fn flat_optimizer_matches_libtorch_when_a_group_is_frozen_and_unfrozen() {
        for rule in rules() {
            compare(rule, |step, net| {
                let first = |name: &str| name.starts_with("hidden.0.");
                let variables = crate::trainable_variables(&net.vars);
                match step {
                    4 | 14 => crate::set_trainable(&variables, |name| !first(name)),
                    9 => crate::set_trainable(&variables, |_| true),
                    // Everything but the first layer trains from step 16 on: a second
                    // layout with different step counts per variable.
                    16 => crate::set_trainable(&variables, first),
                    _ => {}
                }
            });
        }
    }

    #[test]
    fn backward_accumulates_into_the_flat_gradient_buffer() {
        let net = net(1);
        let mut opt = FlatOptimizer::new(Rule::adam(0.01, 0.0), &net.vars);
        opt.zero_grad();
        assert_eq!(opt.groups.len(), 1);
        let buffer = &opt.groups[0].grads;
        let start = buffer.data_ptr() as usize;
        let end = start + buffer.numel() * 4;
        loss(&net, 0).backward();
        loss(&net, 1).backward();
        let params: Vec<Tensor> = net.vars.trainable_variables();
        let total: usize = params.iter().map(Tensor::numel).sum();
        assert_eq!(buffer.numel(), total);
        let mut expected = Vec::new();
        for p in &params {
            let grad = p.grad();
            assert!((start..end).contains(&(grad.data_ptr() as usize)));
            expected.push(grad.reshape([-1]));
        }
        // The two backwards summed, computed separately on a fresh copy.
        let fresh = net_with_values(&net);
        let sum: Vec<Tensor> = {
            let g0 = crate::gradients(&loss(&fresh, 0), &fresh.vars.trainable_variables());
            let g1 = crate::gradients(&loss(&fresh, 1), &fresh.vars.trainable_variables());
            g0.unwrap()
                .iter()
                .zip(g1.unwrap())
                .map(|(a, b)| (a + b).reshape([-1]))
                .collect()
        };
        let diff = (Tensor::cat(&expected, 0) - Tensor::cat(&sum, 0))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-6, "{diff}");
        assert!(buffer.equal(&Tensor::cat(&expected, 0)));
        // zero_grad: every gradient is zero, still in the buffer.
        opt.zero_grad();
        for p in &params {
            assert_eq!(p.grad().abs().sum(Kind::Float).double_value(&[]), 0.0);
            assert!((start..end).contains(&(p.grad().data_ptr() as usize)));
        }
        // The parameters are views of one buffer, and the layers see them.
        let values = &opt.groups[0].params;
        let (pstart, pend) = (
            values.data_ptr() as usize,
            values.data_ptr() as usize + values.numel() * 4,
        );
        for p in &params {
            assert!((pstart..pend).contains(&(p.data_ptr() as usize)));
            assert!(p.requires_grad());
        }
        let before = net.mlp.forward_t(&inputs(0).0, false);
        let _ = tch::no_grad(|| values.shallow_clone().g_add_scalar_(1.0));
        assert!(!net.mlp.forward_t(&inputs(0).0, false).equal(&before));
    }

    /// A convolution weight laid out channels-last keeps that layout through the flat
    /// optimiser's views, and training moves it exactly as the contiguous weight under
    /// libtorch's own optimiser.
    #[test]
    fn channels_last_weights_keep_their_layout_and_train_as_contiguous_ones() {
        let build = || {
            let vars = VarStore::new(Device::Cpu);
            let root = vars.root();
            let conv = nn::conv2d(&root / "conv", 3, 4, 3, Default::default());
            let head = nn::linear(&root / "head", 4, 2, Default::default());
            (vars, conv, head)
        };
        let (reference_vars, reference_conv, reference_head) = build();
        let (mut vars, conv, head) = build();
        vars.copy(&reference_vars).unwrap();
        {
            let _no_grad = tch::no_grad_guard();
            let mut weight = conv.ws.shallow_clone();
            weight.set_data(&channels_last(&conv.ws));
        }
        assert!(is_channels_last(&conv.ws));
        let x = (Tensor::arange(2 * 3 * 6 * 6, (Kind::Float, Device::Cpu)) * 0.37)
            .sin()
            .view([2, 3, 6, 6]);
        let y = Tensor::from_slice(&[0i64, 1]);
        let forward = |conv: &nn::Conv2D, head: &nn::Linear| {
            x.apply(conv)
                .relu()
                .mean_dim(&[2i64, 3][..], false, Kind::Float)
                .apply(head)
                .cross_entropy_for_logits(&y)
        };
        let rule = OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
        };
        let mut reference_opt = crate::build_per_tensor_optimizer(&rule, &reference_vars).unwrap();
        let mut flat = crate::build_optimizer(&rule, &vars).unwrap();
        for step in 0..10 {
            reference_opt.zero_grad();
            forward(&reference_conv, &reference_head).backward();
            reference_opt.step();
            flat.zero_grad();
            forward(&conv, &head).backward();
            flat.step();
            assert!(
                is_channels_last(&conv.ws),
                "step {step}: the weight lost its layout ({:?})",
                conv.ws.stride()
            );
            assert!(
                is_channels_last(&conv.ws.grad()),
                "step {step}: gradient layout"
            );
            assert_close(
                &reference_vars,
                &vars,
                &format!("channels-last, step {step}"),
            );
        }
    }

    fn net_with_values(source: &Net) -> Net {
        let mut copy = net(1);
        copy.vars.copy(&source.vars).unwrap();
        copy
    }
}
