//! Gradual unfreezing: the model's layers unfreeze one group at a time, from the head down.
//!
//! The trainable variables are split into groups ordered from the top of the network (the
//! head) down. At the start only the top group trains; every `every` steps, epochs or tasks
//! (`unit`) one more group unfreezes, until the whole model trains (Howard & Ruder 2018,
//! "gradual unfreezing"). The loss is naive fine-tuning's cross-entropy.
//!
//! # Groups
//!
//! With `groups`, each entry is a name pattern (see [`retain_models::names::matches()`]) and
//! the group is every trainable variable it matches that no earlier entry took; the first
//! entry is the top. Variables that no entry matches never train. Without `groups`, they are
//! derived from the names (see [`default_groups`]): a variable belongs to its layer,
//! [`layer_prefix`] of its name — the name up to and including its first all-digit
//! component (`hidden.1.weight` → `hidden.1`, `layer2.0.shortcut.1.bias` → `layer2.0`,
//! `blocks.3.attn.qkv.weight` → `blocks.3`), or its first component when it has none
//! (`conv1.weight` → `conv1`, `head.bias` → `head`). The group of the model's head
//! (`Backbone::head_name`) comes first, the others follow in descending natural order of
//! their layer names (numbers compared as numbers, so `layer10` comes before `layer9`):
//!
//! * MLP: `head`, `hidden.<n-1>`, …, `hidden.0`;
//! * ResNet-18: `linear`, `layer4.1`, `layer4.0`, …, `layer1.0`, `conv1`, `bn1` (a block
//!   with its batch norms and shortcut is one group; natural order puts the stem's batch
//!   norm last, so it unfreezes one interval after the stem's convolution);
//! * vision transformer: `head`, the final `norm`, `blocks.<n-1>`, …, `blocks.0`, then one
//!   `embeddings` group (`patch_embed`, `pos_embed`, `cls_token`).
//!
//! For other models whose names do not sort in layer order, list the groups explicitly.
//! Natural order rather than creation order,
//! because creation order is not the forward order in general (ResNet-18 builds its stages
//! before its stem).
//!
//! # Schedule
//!
//! After `p` completed units, the top `min(1 + ⌊p / every⌋, groups)` groups train. With
//! `restart_each_task = false` (the default) `p` counts over the whole stream: steps of all
//! tasks so far, epochs of all tasks so far (epochs in which the method trained at least one
//! batch), or tasks. With `restart_each_task = true` it counts within the current task, so
//! every task starts again from the top group alone and the groups unfrozen during the
//! previous task are frozen again (`unit = "task"` is refused then: nothing would ever
//! unfreeze).
//!
//! Unfreezing at a step or epoch boundary happens in [`Method::loss`] at the right
//! `StepContext::step` / `StepContext::epoch`, before the forward pass, by toggling
//! `requires_grad`: a flag on the host, no synchronisation. Freezing again is safe with the
//! one optimiser of the run, momentum and Adam included: at its next `zero_grad` the optimiser
//! takes a frozen variable out of its flat buffers, leaves its gradient undefined and puts its
//! state aside (see `retain_train::optim`), so a re-frozen group stays bit-identical until it
//! unfreezes again. A group that unfreezes
//! for the first time starts Adam's moment estimates from zero, as in a fresh optimiser;
//! one that unfreezes again continues its previous estimates and SGD momentum.
//!
//! The manifest's trainable parameter count is read after the run: the groups unfrozen at
//! the end.
//!
//! # Hyper-parameters
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `groups` | derived from the names | name patterns, top group first (each must select a variable no earlier pattern took) |
//! | `unit` | `"epoch"` | what the schedule counts: `"step"`, `"epoch"` or `"task"` |
//! | `every` | `1` | units between two unfreezings (≥ 1) |
//! | `restart_each_task` | `false` | start every task again from the top group alone |
//!
//! # Example
//!
//! ```toml
//! [model]
//! kind = "mlp"
//! hidden = [100, 100]
//! checkpoint = "results/pretrained/model.safetensors"
//!
//! [method]
//! name = "unfreeze"
//! groups = ["head.*", "hidden.1.*", "hidden.0.*"]
//! unit = "step"
//! every = 200
//! restart_each_task = false
//! ```
//!
//! Howard & Ruder, "Universal Language Model Fine-tuning for Text Classification", ACL 2018.

use std::cmp::Ordering;

use retain_models::names::{abbreviated, matches};
use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};
use retain_train::{
    Batch, Method, Network, StepContext, TaskContext, TrainError, set_trainable,
    trainable_variables,
};
use serde::Deserialize;
use tch::Tensor;

/// How many variable names an error lists before cutting the list short.
const LISTED_NAMES: usize = 24;

/// The registry entry of `unfreeze`.
pub const DESCRIPTOR: MethodDescriptor = MethodDescriptor {
    name: "unfreeze",
    family: Family::Architectural,
    summary: "Gradual unfreezing: layer groups start training one at a time, from the head down",
    paper: "Howard & Ruder, \"Universal Language Model Fine-tuning for Text Classification\", ACL 2018",
    params: &[
        Param {
            name: "groups",
            kind: ParamKind::Strings,
            default: ParamDefault::Derived(
                "one group per layer, from the variable names: the head first, then down the network",
            ),
            doc: "name patterns, top group first (each must select a variable no earlier pattern took)",
        },
        Param {
            name: "unit",
            kind: ParamKind::Choice(&["step", "epoch", "task"]),
            default: ParamDefault::Value("\"epoch\""),
            doc: "what the schedule counts",
        },
        Param {
            name: "every",
            kind: ParamKind::Count,
            default: ParamDefault::Value("1"),
            doc: "units between two unfreezings (≥ 1)",
        },
        Param {
            name: "restart_each_task",
            kind: ParamKind::Bool,
            default: ParamDefault::Value("false"),
            doc: "start every task again from the top group alone",
        },
    ],
    example: "groups = [\"head.*\", \"hidden.1.*\", \"hidden.0.*\"]\nunit = \"step\"\nevery = 200\nrestart_each_task = false",
    capabilities: Capabilities {
        // `Method::capturable`'s default: the step toggles `requires_grad` at step and epoch
        // boundaries within a task, so no one captured step could be replayed for the task.
        capturable: false,
        keeps_samples: false,
        joint_reference: false,
    },
    factory: from_params,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[DESCRIPTOR];

/// What the schedule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Step,
    Epoch,
    Task,
}

/// The hyper-parameters: the `[method]` table without `name` (defaults in [`DESCRIPTOR`]).
/// Unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnfreezeParams {
    /// `None`: the default grouping ([`default_groups`]).
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    pub unit: Unit,
    pub every: usize,
    pub restart_each_task: bool,
}

/// A group of variables that unfreeze together.
struct Group {
    name: String,
    variables: Vec<(String, Tensor)>,
}

/// Gradual unfreezing (see the crate docs).
pub struct Unfreeze {
    patterns: Option<Vec<String>>,
    unit: Unit,
    every: usize,
    restart: bool,
    /// Top first; empty until the first task binds the method to the network.
    groups: Vec<Group>,
    /// Units completed before the current task (steps, epochs or tasks).
    elapsed: usize,
    /// Units of the current task seen so far (steps taken, or epochs started).
    in_task: usize,
    /// How many groups train now.
    unfrozen: usize,
}

/// Registry factory for `unfreeze`.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    Ok(Box::new(Unfreeze::new(DESCRIPTOR.parse(params)?)?))
}

fn invalid(message: impl Into<String>) -> TrainError {
    TrainError::MethodParams {
        method: "unfreeze".into(),
        message: message.into(),
    }
}

fn error(message: String) -> TrainError {
    TrainError::Method {
        method: "unfreeze".into(),
        message,
    }
}

impl Unfreeze {
    pub fn new(params: UnfreezeParams) -> Result<Self, TrainError> {
        if params.every == 0 {
            return Err(invalid("`every` must be at least 1"));
        }
        if params.groups.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid(
                "`groups` must list at least one name pattern (or be left out for the default)",
            ));
        }
        if params.restart_each_task && params.unit == Unit::Task {
            return Err(invalid(
                "`restart_each_task = true` with `unit = \"task\"` would never unfreeze more than the top group",
            ));
        }
        Ok(Self {
            patterns: params.groups,
            unit: params.unit,
            every: params.every,
            restart: params.restart_each_task,
            groups: Vec::new(),
            elapsed: 0,
            in_task: 0,
            unfrozen: 0,
        })
    }

    /// The groups, top first: each group's name (its pattern, or its layer prefix) and its
    /// variables' names, sorted. Empty before the first task.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        self.groups
            .iter()
            .map(|g| {
                let mut names: Vec<String> = g.variables.iter().map(|(n, _)| n.clone()).collect();
                names.sort();
                (g.name.clone(), names)
            })
            .collect()
    }

    /// How many groups (from the top) train now.
    pub fn unfrozen(&self) -> usize {
        self.unfrozen
    }

    /// Groups the first task binds: explicit patterns or the default grouping.
    fn bind(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        let variables = trainable_variables(ctx.vars());
        if variables.is_empty() {
            return Err(error("the model has no trainable variables".into()));
        }
        let groups: Vec<(String, Vec<String>)> = match &self.patterns {
            None => default_groups(
                variables.iter().map(|(n, _)| n.as_str()),
                ctx.model().head_name(),
            ),
            Some(patterns) => explicit_groups(
                patterns,
                &variables.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            )
            .map_err(error)?,
        };
        self.groups = groups
            .into_iter()
            .map(|(name, members)| Group {
                name,
                variables: variables
                    .iter()
                    .filter(|(n, _)| members.contains(n))
                    .map(|(n, t)| (n.clone(), t.shallow_clone()))
                    .collect(),
            })
            .collect();
        // Everything outside the groups stays frozen for good; the groups follow `apply`.
        set_trainable(&variables, |_| false);
        self.unfrozen = 0;
        Ok(())
    }

    /// Trains the top `count` groups (at least one, at most all) and freezes the rest.
    fn apply(&mut self, count: usize) {
        let count = count.clamp(1, self.groups.len());
        if count == self.unfrozen {
            return;
        }
        for (i, group) in self.groups.iter().enumerate() {
            set_trainable(&group.variables, |_| i < count);
        }
        self.unfrozen = count;
    }

    /// Groups that train after `position` units of the schedule.
    fn scheduled(&self, position: usize) -> usize {
        1 + position / self.every
    }

    /// The schedule position at unit `in_task` of the current task.
    fn position(&self, in_task: usize) -> usize {
        if self.restart {
            in_task
        } else {
            self.elapsed + in_task
        }
    }
}

impl Method for Unfreeze {
    fn name(&self) -> &str {
        "unfreeze"
    }

    /// The model must have trainable variables, and every `groups` pattern must match one
    /// that no earlier pattern took.
    fn check_network(&self, network: &Network) -> Result<(), TrainError> {
        let names: Vec<String> = trainable_variables(&network.vars)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if names.is_empty() {
            return Err(error("the model has no trainable variables".into()));
        }
        if let Some(patterns) = &self.patterns {
            explicit_groups(patterns, &names).map_err(error)?;
        }
        Ok(())
    }

    /// Binds the groups (first task), then sets the groups of the task's start: the task
    /// count for `unit = "task"`, the position carried over (or the top group alone, with
    /// `restart_each_task`) otherwise.
    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if self.groups.is_empty() {
            self.bind(ctx)?;
        }
        self.in_task = 0;
        let position = self.position(0);
        self.apply(self.scheduled(position));
        Ok(())
    }

    /// Unfreezes on schedule before the forward pass, then cross-entropy.
    fn loss(&mut self, ctx: &StepContext<'_>, batch: &Batch) -> Result<Tensor, TrainError> {
        let in_task = match self.unit {
            Unit::Step => Some(ctx.step),
            Unit::Epoch => Some(ctx.epoch),
            Unit::Task => None,
        };
        if let Some(in_task) = in_task {
            self.apply(self.scheduled(self.position(in_task)));
            self.in_task = self.in_task.max(in_task + 1);
        }
        Ok(ctx.cross_entropy(batch))
    }

    fn after_task(&mut self, _ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.elapsed += match self.unit {
            Unit::Task => 1,
            Unit::Step | Unit::Epoch => self.in_task,
        };
        self.in_task = 0;
        Ok(())
    }

    /// `elapsed`: the schedule's units completed so far (int64, one element), so that a run
    /// continued from a checkpoint continues the schedule.
    fn state(&self) -> Vec<(String, Tensor)> {
        vec![(
            "elapsed".to_owned(),
            Tensor::from_slice(&[self.elapsed as i64]),
        )]
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        let keys: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
        let [(name, tensor)] = state.as_slice() else {
            return Err(error(format!(
                "state must hold exactly `elapsed`, found [{}]",
                keys.join(", ")
            )));
        };
        if name != "elapsed" || tensor.numel() != 1 {
            return Err(error(format!(
                "state must hold exactly `elapsed` (one element), found `{name}` of shape {:?}",
                tensor.size()
            )));
        }
        self.elapsed = tensor.int64_value(&[0]).max(0) as usize;
        Ok(())
    }
}

/// The layer a variable belongs to: its name up to and including the first component that
/// is all digits (`hidden.1.weight` → `hidden.1`, `layer2.0.shortcut.1.bias` → `layer2.0`),
/// or its first component when no component but the last is (`conv1.weight` → `conv1`).
pub fn layer_prefix(name: &str) -> &str {
    let components: Vec<&str> = name.split('.').collect();
    let mut end = 0;
    for (i, component) in components[..components.len() - 1].iter().enumerate() {
        end += component.len() + usize::from(i > 0);
        if i > 0 && !component.is_empty() && component.bytes().all(|b| b.is_ascii_digit()) {
            return &name[..end];
        }
    }
    components[0]
}

/// Natural order: runs of digits compare as numbers, everything else as text.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, xa), (db, xb)) in ca.iter().zip(&cb) {
        let order = if *da && *db {
            let (ta, tb) = (xa.trim_start_matches('0'), xb.trim_start_matches('0'));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
        } else {
            xa.cmp(xb)
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    ca.len().cmp(&cb.len()).then_with(|| a.cmp(b))
}

/// The default grouping of the variables `names` (see the crate docs): by [`layer_prefix`],
/// the head's group first, then a final `norm` (a transformer's, read by the head), then the
/// others in descending [`natural_cmp`] order, and last one `embeddings` group of a
/// transformer's input embeddings ([`EMBEDDINGS`]). Each group is its prefix and its
/// members' names, sorted.
pub fn default_groups<'a>(
    names: impl IntoIterator<Item = &'a str>,
    head: &str,
) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for name in names {
        let prefix = if matches(&format!("{head}.*"), name) {
            head
        } else if EMBEDDINGS.contains(&layer_prefix(name)) {
            "embeddings"
        } else {
            layer_prefix(name)
        };
        match groups.iter_mut().find(|(p, _)| p == prefix) {
            Some((_, members)) => members.push(name.to_owned()),
            None => groups.push((prefix.to_owned(), vec![name.to_owned()])),
        }
    }
    for (_, members) in &mut groups {
        members.sort();
    }
    // Place in the network, top first: the head, the final norm, the layers, the inputs.
    let rank = |group: &str| match group {
        g if g == head => 0,
        "norm" => 1,
        "embeddings" => 3,
        _ => 2,
    };
    groups.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| natural_cmp(b, a)));
    groups
}

/// Layer prefixes of a transformer's input embeddings (timm's names), grouped as one
/// `embeddings` group that unfreezes last.
pub const EMBEDDINGS: [&str; 3] = ["patch_embed", "pos_embed", "cls_token"];

/// Groups from explicit `patterns` over the variables `names`: each pattern takes the names
/// it matches that no earlier pattern took. An error message when a pattern matches no name
/// or only names taken already.
pub fn explicit_groups(
    patterns: &[String],
    names: &[String],
) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut sorted = names.to_vec();
    sorted.sort();
    let mut taken: Vec<String> = Vec::new();
    let mut groups = Vec::with_capacity(patterns.len());
    for pattern in patterns {
        let matched: Vec<&String> = sorted.iter().filter(|n| matches(pattern, n)).collect();
        if matched.is_empty() {
            return Err(format!(
                "`method.groups` pattern `{pattern}` matches no trainable variable (the model has: {})",
                abbreviated(&sorted, LISTED_NAMES)
            ));
        }
        let members: Vec<String> = matched
            .into_iter()
            .filter(|n| !taken.contains(n))
            .cloned()
            .collect();
        if members.is_empty() {
            return Err(format!(
                "`groups` pattern `{pattern}` matches only variables of earlier groups"
            ));
        }
        taken.extend(members.iter().cloned());
        groups.push((pattern.clone(), members));
    }
    Ok(groups)
}

#[cfg(test)]
mod tests;
