//! Joint training: each task trains on the union of every task seen so far.
//!
//! When task `t` arrives, the model continues training on the training samples of tasks
//! `1..=t` together, shuffled as one set; nothing is forgotten because nothing old is ever
//! left out. It is the upper bound of a comparison, not a continual-learning method: it stores
//! all data, and task `t` costs `t` times the steps of naive fine-tuning. Evaluation after
//! task `t` is therefore the accuracy of a model trained on all data so far (the "joint
//! training" rows of e.g. the GEM and DER papers, which also report a single model trained
//! on the whole stream at once: the last row here, with `epochs × T` passes over task 1).
//!
//! Every hook but [`Method::training_indices`] keeps its default, and it keeps no state.
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

use retain_train::{Method, TaskContext, TrainError, parse_params};
use serde::Deserialize;

/// Joint training on all tasks so far. Takes no hyper-parameters.
#[derive(Debug, Default)]
pub struct Joint;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {}

/// Registry factory: rejects any hyper-parameter, since joint training has none.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    let Params {} = parse_params("joint", params)?;
    Ok(Box::new(Joint))
}

impl Method for Joint {
    fn name(&self) -> &str {
        "joint"
    }

    /// The training indices of tasks `0..=t`, task by task (the trainer shuffles them).
    fn training_indices(&mut self, ctx: &TaskContext<'_>) -> Vec<i64> {
        ctx.stream.tasks[..=ctx.task.index]
            .iter()
            .flat_map(|task| task.train_indices.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retain_config::{DatasetName, Readout, StreamConfig};
    use retain_stream::TaskStream;
    use retain_train::Network;
    use retain_train::testkit::{synthetic_dataset, task_context};
    use tch::Device;

    #[test]
    fn training_indices_are_the_union_of_all_tasks_so_far() {
        let config = StreamConfig {
            train_samples_per_task: Some(3),
            ..StreamConfig::split(DatasetName::Mnist, 3, 2, vec![Readout::ClassIl])
        };
        let stream =
            TaskStream::build(&synthetic_dataset(6, 5, 2), &config, 4, Device::Cpu).unwrap();
        let net = Network::from_builder(Device::Cpu, |path| {
            Box::new(retain_models::Mlp::new(path, 2, &[], 6))
        });
        let mut joint = Joint;
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
    fn hyper_parameters_are_rejected() {
        let table: toml::Table = toml::from_str("epochs = 2").unwrap();
        let error = from_params(&table).err().unwrap().to_string();
        assert!(
            error
                .starts_with("invalid hyper-parameters for method `joint`: unknown field `epochs`"),
            "{error}"
        );
    }
}
