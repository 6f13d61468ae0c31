//! How [`FlatOptimizer`]'s buffers follow the trainable set (see the parent module's docs):
//! the host-side check that the layout is current, and the rebuild when it is not.

use tch::{COptimizer, Device, Kind, Tensor};

use super::memory_format::{in_memory_order, view_like};
use super::{Entry, FlatOptimizer, Group, Rule, Saved};

impl FlatOptimizer {
    /// Rebuilds the layout when the trainable set or a variable's storage changed.
    pub(super) fn sync(&mut self) {
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
