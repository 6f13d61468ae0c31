//! Shared pieces of parameter-efficient methods that train a small set of variables per task
//! on a frozen backbone and pick them by the true task id (bottleneck adapters, prompt and
//! prefix tuning; the shape of LoRA per task):
//!
//! * [`matches()`]: layer name patterns where `*` matches any run of characters;
//! * [`select_layers`]: the adaptable layers a list of patterns selects, refusing a pattern
//!   that selects nothing or the head;
//! * [`freeze_backbone`]: `requires_grad` off for every variable but the head's;
//! * [`nested_path`]: the `VarStore` path of a dotted layer name under a prefix
//!   (`adapter` + `blocks.0.mlp.fc2` → `adapter.blocks.0.mlp.fc2.…`);
//! * [`TaskBank`]: the method's variables and the head, stored after each task, made fresh
//!   before the next, written back by the task id for evaluation, and carried through
//!   checkpoints.
//!
//! # The life cycle of a per-task method
//!
//! ```text
//! before_task, first task   freeze_backbone; bank.variable(…) for each method variable;
//!                           attach them through the Backbone hook; bank.bind(vars, device, seed)
//! before_task, later tasks  bank.next_task(): live values back, method variables fresh
//! after_task                bank.store(): copies of the method variables and head
//! select(selection)         bank.select(Some(j) for Selection::Task(j), else None)
//! state / load_state        bank.state() / bank.load_state(…) (`task<t>.<name>`)
//! ```
//!
//! LoRA per task (`retain-method-lora`) has this shape and keeps its own copy of it for now;
//! moving it here is mechanical: its `matches` and the checks of its `bind` are [`matches()`]
//! and [`select_layers`] (the same error messages), `A` and `B` become
//! `bank.variable(…, "a", …, Fresh::Uniform { bound })` and
//! `bank.variable(…, "b", …, Fresh::Zeros)`, `reset_adapters` is [`TaskBank::next_task`],
//! and `after_task`, `select`, `state` and `load_state` delegate to the bank (the state
//! keys stay `task<t>.<name>`).
//!
//! # Why variables made after the optimiser train
//!
//! The trainer builds its one optimiser before the first task, over the store's trainable
//! variables of that moment; the method's variables are created later, in the first task's
//! `before_task`. The trainer's `retain_train::optim::FlatOptimizer` looks at the store's
//! trainable variables with `requires_grad` on every `zero_grad` and `step`, and moves every
//! one created since into its flat buffers, so they train from the first step. The frozen
//! backbone is not among them: it gets no gradient and no update (momentum and weight decay
//! included), so it stays bit-identical.
//!
//! The variables are the same tensors from task to task, re-initialised in place, so a method
//! on the bank returns true from `Method::fresh_optimizer_each_task`: the trainer then starts
//! each task with a fresh optimiser, and no moment estimates carry over from one task's
//! variables to the next's.

#[cfg(feature = "testkit")]
pub mod conformance;

use std::collections::BTreeMap;

use retain_models::Backbone;
use retain_models::init::{Draw, fill};
use retain_seed::derive;
use retain_train::{TrainError, named_parameters};
use tch::{Device, Tensor, nn};

use retain_models::names::abbreviated;
/// Glob matching of parameter and layer names (`*` matches any run of characters).
pub use retain_models::names::matches;

/// The adaptable layers of `model` (see [`Backbone::adaptable_layers`]) that some pattern of
/// `patterns` (the hyper-parameter `target`) matches, as `(name, [outputs, inputs])` sorted by
/// name. Fails when a pattern matches the head (which trains fully per task) or no layer at
/// all, naming the layers the model has.
pub fn select_layers(
    method: &str,
    model: &dyn Backbone,
    patterns: &[String],
) -> Result<Vec<(String, [i64; 2])>, TrainError> {
    let head = model.head_name();
    let adaptable = model.adaptable_layers();
    for pattern in patterns {
        if matches(pattern, head) {
            return Err(error(
                method,
                format!(
                    "`method.target` pattern `{pattern}` selects the head `{head}`, which trains fully per task"
                ),
            ));
        }
        if !adaptable.iter().any(|(n, _)| matches(pattern, n)) {
            let names: Vec<&str> = adaptable.iter().map(|(n, _)| n.as_str()).collect();
            return Err(error(
                method,
                format!(
                    "`method.target` pattern `{pattern}` matches no adaptable layer (the model has: {})",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        abbreviated(&names, 20)
                    }
                ),
            ));
        }
    }
    Ok(adaptable
        .into_iter()
        .filter(|(n, _)| patterns.iter().any(|p| matches(p, n)))
        .collect())
}

/// Turns `requires_grad` off for every variable of `vars` except the head's (names under
/// `head.`), so that only the head and variables created afterwards train.
pub fn freeze_backbone(vars: &nn::VarStore, head: &str) {
    let head_prefix = format!("{head}.");
    for (name, variable) in vars.variables() {
        if !name.starts_with(&head_prefix) {
            let _ = variable.set_requires_grad(false);
        }
    }
}

/// The path `root/<part>/<part>/…` of the dotted name `dotted` under `root`, so that a
/// variable `v` made there is named `<root>.<dotted>.v`.
pub fn nested_path<'a>(root: &nn::Path<'a>, dotted: &str) -> nn::Path<'a> {
    let mut parts = dotted.split('.');
    let first = root / parts.next().unwrap_or_default();
    parts.fold(first, |path, part| &path / part)
}

/// How a method variable starts every task: drawn (or zeroed) in place when the bank binds
/// and before each later task, from the experiment seed (see [`TaskBank::bind`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fresh {
    Zeros,
    /// Uniform on `[-bound, bound]` (PyTorch's linear layers use `bound = 1/√fan_in`).
    Uniform {
        bound: f64,
    },
    /// Normal with mean 0 and standard deviation `std`.
    Normal {
        std: f64,
    },
}

impl Fresh {
    fn draw(self) -> Draw {
        match self {
            Fresh::Zeros => Draw::Constant(0.0),
            Fresh::Uniform { bound } => Draw::Uniform { bound },
            Fresh::Normal { std } => Draw::Normal { std },
        }
    }
}

/// The variables a per-task method trains (its own and the head), stored per finished task
/// and chosen by the task id (see the crate docs for the life cycle).
///
/// The *live* variables are the network's trainable variables once the backbone is frozen
/// and the method's variables exist, sorted by name; they are what the current task trains.
/// After each task [`TaskBank::store`] keeps a detached copy of them on the training device.
/// [`TaskBank::select`] writes a finished task's copies into the live variables (in place,
/// so attached model hooks see them) and puts the live values aside until `None` restores
/// them. Writes are `copy_`s of the stored values, so a finished task's outputs are
/// bit-identical every time it is selected.
#[derive(Debug)]
pub struct TaskBank {
    method: String,
    /// The method's variables and how each starts a task.
    fresh: Vec<(Tensor, Fresh)>,
    /// What the current task trains, sorted by name; empty until [`TaskBank::bind`].
    live: Vec<(String, Tensor)>,
    /// Per finished task, copies of the live values, in the same order.
    tasks: Vec<Vec<(String, Tensor)>>,
    /// The live values, put aside while a finished task's copies are selected.
    saved: Option<Vec<Tensor>>,
    /// The experiment seed, from [`TaskBank::bind`].
    seed: u64,
}

impl TaskBank {
    /// An empty bank for the method named `method` (used in error messages).
    pub fn new(method: &str) -> Self {
        Self {
            method: method.to_owned(),
            fresh: Vec::new(),
            live: Vec::new(),
            tasks: Vec::new(),
            saved: None,
            seed: 0,
        }
    }

    /// Creates the trainable variable `name` of `shape` under `path` of the model's store,
    /// initialised by `fresh` and re-initialised the same way before every later task.
    /// Call before [`TaskBank::bind`].
    pub fn variable(&mut self, path: &nn::Path, name: &str, shape: &[i64], fresh: Fresh) -> Tensor {
        debug_assert!(!self.is_bound(), "variables are created before `bind`");
        // Zeros for now: `bind` draws the first task's values.
        let variable = path.var(name, shape, nn::Init::Const(0.0));
        self.fresh.push((variable.shallow_clone(), fresh));
        variable
    }

    /// Takes the trainable variables of `vars` (after [`freeze_backbone`] and
    /// [`TaskBank::variable`]: the head and the method's variables) as the live set, and
    /// checks copies loaded by [`TaskBank::load_state`] against it (names and shapes),
    /// moving them to `device`. Then draws the method's variables for the task that comes
    /// next (task 0, or the first one after the loaded copies): every draw of task `t` comes
    /// from the experiment `seed`, the method's name, the variable's creation index and `t`,
    /// on the host ([`retain_models::init::fill`]), so it is the same on every device and
    /// whatever ran before.
    pub fn bind(
        &mut self,
        vars: &nn::VarStore,
        device: Device,
        seed: u64,
    ) -> Result<(), TrainError> {
        let live = named_parameters(vars);
        let live_names: Vec<&str> = live.iter().map(|(n, _)| n.as_str()).collect();
        for (t, stored) in self.tasks.iter().enumerate() {
            let stored_names: Vec<&str> = stored.iter().map(|(n, _)| n.as_str()).collect();
            if stored_names != live_names {
                return Err(error(
                    &self.method,
                    format!(
                        "stored task {t} holds [{}] but the network trains [{}]",
                        stored_names.join(", "),
                        live_names.join(", ")
                    ),
                ));
            }
            for ((name, value), (_, copy)) in live.iter().zip(stored) {
                if value.size() != copy.size() {
                    return Err(error(
                        &self.method,
                        format!(
                            "stored task {t}: `{name}` is {:?} but the network's is {:?}",
                            copy.size(),
                            value.size()
                        ),
                    ));
                }
            }
        }
        for stored in &mut self.tasks {
            for (_, copy) in stored.iter_mut() {
                *copy = copy.to_device(device);
            }
        }
        self.live = live;
        self.seed = seed;
        self.draw_fresh();
        Ok(())
    }

    /// The method's variables drawn for the next task, task `stored_tasks()`.
    fn draw_fresh(&self) {
        let task = self.tasks.len();
        for (i, (variable, fresh)) in self.fresh.iter().enumerate() {
            let purpose = format!("{}/init/{i}/task{task}", self.method);
            fill(variable, fresh.draw(), derive(self.seed, &purpose));
        }
    }

    /// Whether [`TaskBank::bind`] has run.
    pub fn is_bound(&self) -> bool {
        !self.live.is_empty()
    }

    /// The live variables with their names, sorted by name.
    pub fn live(&self) -> &[(String, Tensor)] {
        &self.live
    }

    /// Names of the method's own variables (the live set less the head).
    pub fn method_variables(&self) -> Vec<String> {
        self.live
            .iter()
            .filter(|(_, t)| self.fresh.iter().any(|(f, _)| same(f, t)))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Before a later task: the live values back (if a finished task's were selected), then
    /// the method's variables fresh; the head goes on from its current values.
    pub fn next_task(&mut self) {
        self.restore();
        self.draw_fresh();
    }

    /// After a task: keeps a copy of every live value as that task's.
    pub fn store(&mut self) {
        self.restore();
        self.tasks.push(
            self.live
                .iter()
                .map(|(n, t)| (n.clone(), t.detach().copy()))
                .collect(),
        );
    }

    /// Tasks whose copies are stored.
    pub fn stored_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Task `task`'s stored copies, sorted by name.
    pub fn stored(&self, task: usize) -> Option<&[(String, Tensor)]> {
        self.tasks.get(task).map(Vec::as_slice)
    }

    /// Writes task `j`'s stored copies into the live variables for `Some(j)` of a finished
    /// task; restores the live values otherwise (`None`, or a task not trained yet).
    pub fn select(&mut self, task: Option<usize>) {
        match task.and_then(|j| self.tasks.get(j)) {
            Some(stored) => {
                if self.saved.is_none() {
                    self.saved = Some(self.live.iter().map(|(_, t)| t.detach().copy()).collect());
                }
                let values: Vec<Tensor> = stored.iter().map(|(_, t)| t.shallow_clone()).collect();
                self.write_live(values);
            }
            None => self.restore(),
        }
    }

    fn write_live(&self, values: impl IntoIterator<Item = Tensor>) {
        let _no_grad = tch::no_grad_guard();
        for ((_, live), value) in self.live.iter().zip(values) {
            live.shallow_clone().copy_(&value);
        }
    }

    fn restore(&mut self) {
        if let Some(saved) = self.saved.take() {
            self.write_live(saved);
        }
    }

    /// `task<t>.<name>` for every stored task `t` and live variable `name`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.tasks
            .iter()
            .enumerate()
            .flat_map(|(t, stored)| {
                stored
                    .iter()
                    .map(move |(n, v)| (format!("task{t}.{n}"), v.shallow_clone()))
            })
            .collect()
    }

    /// Restores what [`TaskBank::state`] returned, before [`TaskBank::bind`] (which then
    /// checks the copies against the network). Every key must be `task<N>.<variable>`, the
    /// tasks numbered from 0 without gaps, each holding the same variables.
    pub fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        if self.is_bound() {
            return Err(error(
                &self.method,
                "state must be loaded before the first task binds the method".into(),
            ));
        }
        let mut groups: BTreeMap<usize, Vec<(String, Tensor)>> = BTreeMap::new();
        for (key, tensor) in state {
            let parsed = key
                .strip_prefix("task")
                .and_then(|r| r.split_once('.'))
                .and_then(|(t, name)| Some((t.parse::<usize>().ok()?, name.to_owned())));
            let Some((t, name)) = parsed else {
                return Err(error(
                    &self.method,
                    format!("state key `{key}` is not `task<N>.<variable>`"),
                ));
            };
            groups.entry(t).or_default().push((name, tensor));
        }
        let mut tasks: Vec<Vec<(String, Tensor)>> = Vec::with_capacity(groups.len());
        for (expected, (t, mut stored)) in groups.into_iter().enumerate() {
            if t != expected {
                return Err(error(
                    &self.method,
                    format!("state has no task {expected} (found task {t} after it)"),
                ));
            }
            stored.sort_by(|a, b| a.0.cmp(&b.0));
            if let Some(first) = tasks.first() {
                let names = |s: &[(String, Tensor)]| -> Vec<String> {
                    s.iter().map(|(n, _)| n.clone()).collect()
                };
                if names(first) != names(&stored) {
                    return Err(error(
                        &self.method,
                        format!("task {t} stores other variables than task 0"),
                    ));
                }
            }
            tasks.push(stored);
        }
        self.tasks = tasks;
        self.saved = None;
        Ok(())
    }
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.data_ptr() == b.data_ptr() && a.size() == b.size()
}

/// A [`TrainError::Method`] of `method`.
pub fn error(method: &str, message: String) -> TrainError {
    TrainError::Method {
        method: method.to_owned(),
        message,
    }
}

/// A [`TrainError::MethodParams`] of `method`.
pub fn invalid(method: &str, message: String) -> TrainError {
    TrainError::MethodParams {
        method: method.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests;

/// A method whose per-task variables live in a [`TaskBank`] (for inspection: stored tasks,
/// their values, the method's variable names).
pub trait Banked: retain_train::Method {
    fn bank(&self) -> &TaskBank;
}

/// The [`retain_train::Method`] hooks every method on a [`TaskBank`] shares, written once:
/// expands, inside `impl Method for T { … }`, to `before_task` (the method's own
/// `fn bind(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError>` on the first task,
/// [`TaskBank::next_task`] after), `after_task` ([`TaskBank::store`]), `uses_task_id`,
/// `fresh_optimizer_each_task` (both true), `select` (the stored task for
/// `Selection::Task(j)`, the live values otherwise), `state` and `load_state` (the bank's).
/// `$bank` names the method's `TaskBank` field. The invoking crate imports `Network`,
/// `Selection`, `TaskContext`, `TrainError` from `retain_train` and `Tensor` from `tch`.
///
/// ```text
/// impl Method for Prompt {
///     fn name(&self) -> &str { "prompt" }
///     retain_peft::task_bank_hooks!(bank);
/// }
/// ```
#[macro_export]
macro_rules! task_bank_hooks {
    ($bank:ident) => {
        fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
            if self.$bank.is_bound() {
                self.$bank.next_task();
                Ok(())
            } else {
                self.bind(ctx)
            }
        }

        fn after_task(&mut self, _ctx: &TaskContext<'_>) -> Result<(), TrainError> {
            self.$bank.store();
            Ok(())
        }

        fn uses_task_id(&self) -> bool {
            true
        }

        fn fresh_optimizer_each_task(&self) -> bool {
            true
        }

        /// The step is the default one over the live task's variables, fixed for the task.
        fn capturable(&self) -> bool {
            true
        }

        /// Task `j`'s stored variables and head for `Selection::Task(j)` of a finished task;
        /// the live ones otherwise.
        fn select(&mut self, _network: &Network, selection: Selection) -> Result<(), TrainError> {
            self.$bank.select(match selection {
                Selection::Task(j) => Some(j),
                Selection::Latest | Selection::Merged => None,
            });
            Ok(())
        }

        /// `task<t>.<name>` for every stored task `t` and trained variable.
        fn state(&self) -> Vec<(String, Tensor)> {
            self.$bank.state()
        }

        fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
            self.$bank.load_state(state)
        }
    };
}
