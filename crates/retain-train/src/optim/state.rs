//! [`FlatOptimizer`]'s state as named tensors, for a run's resume checkpoint: every
//! variable's moments and Adam step count, by its identity (its position among the
//! `VarStore`'s trainable variables).

use std::collections::HashMap;

use tch::{Kind, Tensor};

use super::{FlatOptimizer, Saved};
use crate::TrainError;

impl FlatOptimizer {
    /// Every variable's optimiser state, in the layout or put aside: `var<I>.steps` (int64,
    /// one element) and `var<I>.moment<K>` (flat, in the variable's memory order).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        let mut push = |index: usize, steps: u64, moments: Vec<Tensor>| {
            out.push((
                format!("var{index}.steps"),
                Tensor::from_slice(&[steps as i64]),
            ));
            for (k, m) in moments.into_iter().enumerate() {
                out.push((format!("var{index}.moment{k}"), m));
            }
        };
        for e in &self.layout {
            let group = &self.groups[e.group];
            let steps = match &group.element_steps {
                // The device count is the truth once steps were captured.
                Some(t) => t.double_value(&[e.offset]) as u64,
                None => e.steps_before + group.steps,
            };
            let moments = group
                .moments
                .iter()
                .map(|m| m.narrow(0, e.offset, e.numel).copy())
                .collect();
            push(e.index, steps, moments);
        }
        for (&index, saved) in &self.saved {
            push(
                index,
                saved.steps,
                saved.moments.iter().map(Tensor::copy).collect(),
            );
        }
        out
    }

    /// Restores what [`FlatOptimizer::state`] returned, into an optimiser that has not
    /// stepped yet: the state is put aside and taken up by each variable at the next
    /// `zero_grad` or `step`, as a variable's state is when it rejoins the trainable set.
    pub fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        let refuse = |message: String| TrainError::Resume { message };
        let moments = self.rule.moments();
        let mut saved: HashMap<usize, (Option<u64>, Vec<Option<Tensor>>)> = HashMap::new();
        for (name, tensor) in state {
            let parsed = name
                .strip_prefix("var")
                .and_then(|r| r.split_once('.'))
                .and_then(|(i, field)| Some((i.parse::<usize>().ok()?, field)));
            let Some((index, field)) = parsed else {
                return Err(refuse(format!(
                    "optimiser state `{name}` is not var<I>.<field>"
                )));
            };
            let entry = saved
                .entry(index)
                .or_insert_with(|| (None, (0..moments).map(|_| None).collect()));
            if field == "steps" {
                entry.0 = Some(tensor.to_kind(Kind::Int64).int64_value(&[0]) as u64);
            } else if let Some(k) = field
                .strip_prefix("moment")
                .and_then(|k| k.parse::<usize>().ok())
                .filter(|&k| k < moments)
            {
                entry.1[k] = Some(tensor);
            } else {
                return Err(refuse(format!(
                    "optimiser state `{name}` does not belong to this optimiser's rule"
                )));
            }
        }
        self.layout.clear();
        self.groups.clear();
        self.saved = saved
            .into_iter()
            .map(|(index, (steps, moments))| {
                let steps = steps.ok_or_else(|| refuse(format!("var{index}.steps is missing")))?;
                let moments = moments
                    .into_iter()
                    .enumerate()
                    .map(|(k, m)| {
                        m.ok_or_else(|| refuse(format!("var{index}.moment{k} is missing")))
                    })
                    .collect::<Result<_, _>>()?;
                Ok((index, Saved { steps, moments }))
            })
            .collect::<Result<_, TrainError>>()?;
        Ok(())
    }
}
