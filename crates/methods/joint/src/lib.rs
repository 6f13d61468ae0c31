//! Joint training, the upper bounds of a comparison: models trained on the union of tasks.
//!
//! Not continual-learning methods (they store all data), but the rows every table needs, in
//! three variants:
//!
//! * **`joint`** (from scratch): after task `k`, the model is the one a fresh run trains from
//!   the *initial weights* on the training samples of tasks `1..=k` together (shuffled as one
//!   set, `epochs` passes, a fresh optimiser). Row `k` of its matrix is "the joint model on
//!   tasks `1..=k`", the `a*_k` of intransigence (Chaudhry et al. 2018) and the per-task upper
//!   bound of the GEM and RWalk papers. Task `k` costs `k` times the steps of naive
//!   fine-tuning. Its state is the initial weights it restarts from.
//! * **`joint-offline`**: one model trained from the initial weights on the whole stream at
//!   once, `epochs` passes over the union of every task, during the last task; the single-row
//!   upper bound of Avalanche's `JointTraining` and Mammoth's `--joint`. Nothing trains before
//!   the last task, so rows `1..T−1` of its matrix are the untrained model's and only the
//!   last row (ACC) means anything: its BWT and forgetting are not defined and should not be
//!   read.
//! * **`joint-cumulative`**: warm-started cumulative training: at task `k` the model after task
//!   `k − 1` continues on tasks `1..=k` (Avalanche's `Cumulative`). Earlier tasks get more
//!   passes than later ones (task 1 gets `T × epochs`), so it is not the joint model of any
//!   prefix; kept for comparison with frameworks that report it.
//!
//! # Hyper-parameters
//!
//! None.
//!
//! # Peer conventions
//!
//! The three variants here: `joint` (after task `k`, a model trained from the initial weights
//! on tasks `1..=k`), `joint-offline` (one model trained on the whole stream) and
//! `joint-cumulative` (warm-started: the model after task `k − 1` continues on tasks `1..=k`;
//! the old behaviour of `joint`). Sources: Avalanche 0.6.0 (`ContinualAI/avalanche`,
//! `avalanche/training/supervised/joint_training.py`,
//! `avalanche/training/supervised/cumulative.py`); Mammoth (`aimagelab/mammoth` at `e75a491`,
//! `models/joint.py`, the `--joint` flag in `utils/args.py` and
//! `datasets/utils/continual_dataset.py`).
//!
//! * **Avalanche `JointTraining`** trains once, `train_epochs` epochs over the concatenation
//!   of every experience passed to `train`, with the training transforms, and refuses a second
//!   call (`AlreadyTrainedError`): that is `joint-offline`. **Avalanche `Cumulative`** trains
//!   at each experience, `train_epochs` epochs, on the concatenation of all experiences so
//!   far, continuing from the current weights: that is `joint-cumulative`. Avalanche has no
//!   strategy for `joint`; it is a fresh model and a fresh `JointTraining` on the first `k`
//!   experiences, for every `k`.
//! * **Mammoth `--joint=1`** turns a class- or task-incremental dataset into one task holding
//!   every class (`N_TASKS = 1`) and trains it with the chosen model, usually `sgd`, for
//!   `n_epochs` with the usual augmentation: that is `joint-offline`, evaluated once.
//!   **Mammoth `--model joint`** (needed for domain-incremental datasets) does not train
//!   during the tasks (`observe` returns 0) and, at the last task's end, trains `n_epochs`
//!   from the initial weights on the union of all tasks' training sets, collected once through
//!   the training loaders into a `TensorDataset`: every sample keeps for all epochs the one
//!   augmented view drawn then. That is `joint-offline` with frozen augmentation, and the
//!   accuracies it logs after the earlier tasks are those of the untrained network. Mammoth
//!   has no per-task `joint` and no `joint-cumulative`.
//!
//! # Example
//!
//! ```toml
//! [method]
//! name = "joint"
//! ```

use retain_train::method::{Capabilities, Family, MethodDescriptor};
use retain_train::{Method, TaskContext, TrainError};
use serde::Deserialize;
use tch::Tensor;

/// The registry entry of `joint`.
pub const JOINT: MethodDescriptor = MethodDescriptor {
    name: "joint",
    family: Family::Baseline,
    summary: "Joint training from the initial weights on tasks 1..=k after task k: the upper bound",
    paper: "the joint-training upper bound (intransigence: Chaudhry et al., \"Riemannian Walk for Incremental Learning\", ECCV 2018)",
    params: &[],
    example: "",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: true,
        joint_reference: true,
    },
    factory: from_params,
};

/// The registry entry of `joint-offline`.
pub const JOINT_OFFLINE: MethodDescriptor = MethodDescriptor {
    name: "joint-offline",
    family: Family::Baseline,
    summary: "One model trained on the whole stream during the last task",
    paper: "the offline joint-training upper bound",
    params: &[],
    example: "",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: true,
        joint_reference: false,
    },
    factory: from_params_offline,
};

/// The registry entry of `joint-cumulative`.
pub const JOINT_CUMULATIVE: MethodDescriptor = MethodDescriptor {
    name: "joint-cumulative",
    family: Family::Baseline,
    summary: "Warm-started joint training: continues on tasks 1..=k from the model after task k-1",
    paper: "cumulative joint training, warm-started",
    params: &[],
    example: "",
    capabilities: Capabilities {
        capturable: true,
        keeps_samples: true,
        joint_reference: false,
    },
    factory: from_params_cumulative,
};

/// Every method this crate registers.
pub const METHODS: &[MethodDescriptor] = &[JOINT, JOINT_OFFLINE, JOINT_CUMULATIVE];

/// Which joint model (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// After task `k`, trained from the initial weights on tasks `1..=k`.
    FromScratch,
    /// One model on the whole stream, trained during the last task.
    Offline,
    /// Warm-started: continues on tasks `1..=k` from the model after task `k − 1`.
    Cumulative,
}

impl Variant {
    /// The registry name.
    pub fn name(self) -> &'static str {
        match self {
            Variant::FromScratch => "joint",
            Variant::Offline => "joint-offline",
            Variant::Cumulative => "joint-cumulative",
        }
    }

    /// The registry entry.
    pub fn descriptor(self) -> &'static MethodDescriptor {
        match self {
            Variant::FromScratch => &JOINT,
            Variant::Offline => &JOINT_OFFLINE,
            Variant::Cumulative => &JOINT_CUMULATIVE,
        }
    }
}

/// Joint training on the union of tasks. Takes no hyper-parameters.
#[derive(Debug)]
pub struct Joint {
    variant: Variant,
    /// `joint`: every variable's value before the first task, restored before each later
    /// task, by name.
    initial: Vec<(String, Tensor)>,
}

impl Joint {
    pub fn new(variant: Variant) -> Self {
        Self {
            variant,
            initial: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {}

fn factory(variant: Variant, params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    let Params {} = variant.descriptor().parse(params)?;
    Ok(Box::new(Joint::new(variant)))
}

/// Registry factory of `joint` (from scratch): rejects any hyper-parameter.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    factory(Variant::FromScratch, params)
}

/// Registry factory of `joint-offline`.
pub fn from_params_offline(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    factory(Variant::Offline, params)
}

/// Registry factory of `joint-cumulative`.
pub fn from_params_cumulative(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    factory(Variant::Cumulative, params)
}

impl Method for Joint {
    /// The step reads only device tensors fixed for the task: captured in a CUDA graph on CUDA.
    fn capturable(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        self.variant.name()
    }

    /// `joint` starts every task from the initial weights with fresh optimiser state.
    fn fresh_optimizer_each_task(&self) -> bool {
        self.variant == Variant::FromScratch
    }

    /// `joint`: keeps the initial weights before the first task and writes them back before
    /// every later one.
    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        if self.variant != Variant::FromScratch {
            return Ok(());
        }
        let mut variables: Vec<(String, Tensor)> = ctx.vars().variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        if self.initial.is_empty() {
            self.initial = variables
                .into_iter()
                .map(|(name, value)| (name, value.detach().copy()))
                .collect();
            return Ok(());
        }
        let _no_grad = tch::no_grad_guard();
        for ((name, live), (stored_name, initial)) in variables.iter().zip(&self.initial) {
            if name != stored_name || live.size() != initial.size() {
                return Err(TrainError::Method {
                    method: self.name().to_owned(),
                    message: format!(
                        "the network's variables changed since the first task (`{name}` vs the stored `{stored_name}`)"
                    ),
                });
            }
            live.shallow_clone().copy_(initial);
        }
        Ok(())
    }

    /// The training indices of tasks `0..=t`, task by task (the trainer shuffles them);
    /// `joint-offline`: none before the last task.
    fn training_indices(&mut self, ctx: &TaskContext<'_>) -> Vec<i64> {
        if self.variant == Variant::Offline && ctx.task.index + 1 < ctx.stream.tasks.len() {
            return Vec::new();
        }
        ctx.stream.tasks[..=ctx.task.index]
            .iter()
            .flat_map(|task| task.train_indices.iter().copied())
            .collect()
    }

    /// `joint`: the initial weights, as `initial.<name>`.
    fn state(&self) -> Vec<(String, Tensor)> {
        self.initial
            .iter()
            .map(|(name, t)| (format!("initial.{name}"), t.shallow_clone()))
            .collect()
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        let mut initial = Vec::with_capacity(state.len());
        for (name, tensor) in state {
            match name.strip_prefix("initial.") {
                Some(variable) if self.variant == Variant::FromScratch => {
                    initial.push((variable.to_owned(), tensor));
                }
                _ => {
                    return Err(TrainError::Method {
                        method: self.name().to_owned(),
                        message: format!("unexpected state tensor `{name}`"),
                    });
                }
            }
        }
        initial.sort_by(|a, b| a.0.cmp(&b.0));
        self.initial = initial;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retain_config::{DatasetName, Readout, StreamConfig};
    use retain_stream::TaskStream;
    use retain_train::testkit::{seeded_network, synthetic_dataset, task_context};
    use tch::Device;

    #[test]
    fn training_indices_are_the_union_of_all_tasks_so_far() {
        let config = StreamConfig {
            train_samples_per_task: Some(3),
            ..StreamConfig::split(DatasetName::Mnist, 3, 2, vec![Readout::ClassIl])
        };
        let stream =
            TaskStream::build(&synthetic_dataset(6, 5, 2), &config, 4, Device::Cpu).unwrap();
        let net = seeded_network(0, |path| Box::new(retain_models::Mlp::new(path, 2, &[], 6)));
        let mut joint = Joint::new(Variant::Cumulative);
        let mut union = |t: usize| {
            let mut indices = joint.training_indices(&task_context(&net, &stream, t));
            indices.sort_unstable();
            indices
        };
        // Sample i has label i % 6; each task keeps a seeded 3 of its 10 samples.
        let by_task: Vec<Vec<i64>> = stream
            .tasks
            .iter()
            .map(|t| t.train_indices.clone())
            .collect();
        assert_eq!(by_task.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3]);
        assert_eq!(union(0), by_task[0]);
        let mut first_two = [by_task[0].clone(), by_task[1].clone()].concat();
        first_two.sort_unstable();
        assert_eq!(union(1), first_two);
        let mut all = by_task.concat();
        all.sort_unstable();
        assert_eq!(union(2), all);
        let labels: Vec<u8> = all
            .iter()
            .map(|&i| stream.train.host_labels[i as usize])
            .collect();
        let mut classes = labels.clone();
        classes.sort_unstable();
        classes.dedup();
        assert_eq!(classes, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn joint_restarts_from_the_initial_weights_and_offline_trains_only_at_the_end() {
        let config = StreamConfig {
            train_samples_per_task: Some(3),
            ..StreamConfig::split(DatasetName::Mnist, 3, 2, vec![Readout::ClassIl])
        };
        let stream =
            TaskStream::build(&synthetic_dataset(6, 5, 2), &config, 4, Device::Cpu).unwrap();
        let net = seeded_network(0, |path| Box::new(retain_models::Mlp::new(path, 2, &[], 6)));
        let weight = || net.vars.variables()["head.weight"].detach().copy();
        let initial = weight();
        let mut joint = Joint::new(Variant::FromScratch);
        assert!(joint.fresh_optimizer_each_task());
        joint.before_task(&task_context(&net, &stream, 0)).unwrap();
        // Stands in for training task 0.
        {
            let _no_grad = tch::no_grad_guard();
            let _ = net.vars.variables()["head.weight"]
                .shallow_clone()
                .g_add_scalar_(1.0);
        }
        assert!(!weight().equal(&initial));
        joint.before_task(&task_context(&net, &stream, 1)).unwrap();
        assert!(
            weight().equal(&initial),
            "task 1 starts from the initial weights"
        );
        // The initial weights are its state and load back.
        let state = joint.state();
        assert_eq!(state.len(), 2);
        let mut restored = Joint::new(Variant::FromScratch);
        restored.load_state(state).unwrap();
        assert_eq!(restored.initial.len(), 2);
        assert!(
            Joint::new(Variant::Offline)
                .load_state(joint.state())
                .is_err()
        );

        let mut offline = Joint::new(Variant::Offline);
        assert!(!offline.fresh_optimizer_each_task());
        for t in 0..2 {
            assert!(
                offline
                    .training_indices(&task_context(&net, &stream, t))
                    .is_empty()
            );
        }
        let mut all = offline.training_indices(&task_context(&net, &stream, 2));
        all.sort_unstable();
        let mut expected: Vec<i64> = stream
            .tasks
            .iter()
            .flat_map(|t| t.train_indices.clone())
            .collect();
        expected.sort_unstable();
        assert_eq!(all, expected);
        assert_eq!(Joint::new(Variant::Cumulative).name(), "joint-cumulative");
    }

    #[test]
    fn hyper_parameters_are_rejected() {
        let table: toml::Table = toml::from_str("epochs = 2").unwrap();
        let error = from_params(&table).err().unwrap().to_string();
        assert!(
            error
                .starts_with("invalid hyper-parameters for method `joint`: unknown key `epochs`: `joint` takes no hyper-parameters"),
            "{error}"
        );
    }
}
