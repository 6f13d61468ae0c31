//! The trainer: the training loop ([`run`]), the method plugin API ([`Method`]), the network
//! it trains ([`Network`]), its optimiser ([`TrainOptimizer`]) and on-device evaluation.
//!
//! [`run`] owns the loop over tasks, epochs and batches and calls the method's hooks in the
//! order documented in [`method`]. Two rules keep it fast on a GPU:
//!
//! * **No host synchronisation inside a step.** Losses are summed into a device tensor and read
//!   once per epoch (which is also where a diverging run is caught, [`divergence`]); progress is counted on
//!   the host without touching tensors.
//! * **Evaluation is batched on the device.** Correct-prediction counts for every task and
//!   read-out accumulate in device tensors and cross to the host in one copy per evaluation.
//!
//! One optimiser is built per run, over every trainable variable of the network's
//! `VarStore` ([`optim::FlatOptimizer`]: parameters, gradients and optimiser state live in
//! flat buffers, one kernel per update instead of several per tensor). A method trains only
//! part of the model by turning `requires_grad` off on the rest ([`set_trainable`] over
//! [`trainable_variables`]), in any hook and also for a variable that has trained before:
//! the optimiser notices the change on the host at its next `zero_grad` or `step`, gives a
//! variable that left the trainable set its own storage back and an undefined gradient,
//! keeps its momentum or Adam moments aside and never updates it while it is frozen
//! (`a_refrozen_variable_stays_put_under_momentum_and_adam` in the tests).
//!
//! # Modules
//!
//! * [`method`]: the [`Method`] trait, its call order and the contexts its hooks see.
//! * `trainer`: [`run`] and [`train_step`], the loop that calls the hooks.
//! * [`graph_step`]: the step captured in a CUDA graph and replayed.
//! * [`optim`]: [`FlatOptimizer`], and [`TrainOptimizer`], the choice `[training]` makes.
//! * `network`: [`Network`] and the helpers that name and freeze its variables.
//! * `evaluate`: [`evaluate()`] and [`evaluate_with`], every task in every read-out.
//! * `report`: what a run reports ([`Observer`], [`RunOutcome`], [`CountMatrix`]).
//! * `costs`: [`Costs`], what a method costs beside what it retains.
//! * `method_state`: a method's state as a checkpoint file.
//! * `error`: [`TrainError`].
//! * [`divergence`]: when an epoch's mean loss fails the run.
//! * [`flat_params`]: a network's parameters as one flat tensor, sorted by name, for the state
//!   and closed-form penalties of the regularisation methods.
//! * [`resume`]: the checkpoint a run writes at every task boundary, to continue from.
//! * [`stage`]: the `[pretrain]` stage before the stream.
//! * [`schedule`](mod@schedule): what a run will do, step counts included, before it runs.
//!
//! The modules without a link are private: their items are re-exported here.

mod costs;
pub mod divergence;
mod error;
mod evaluate;
pub mod flat_params;
pub mod graph_step;
pub mod method;
mod method_state;
mod network;
pub mod optim;
mod report;
pub mod resume;
pub mod schedule;
pub mod stage;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
mod trainer;

pub use costs::{Costs, tensor_bytes};
pub use divergence::Divergence;
pub use error::TrainError;
pub use evaluate::{check_readouts, evaluate, evaluate_with};
pub use method::{
    Method, Selection, StepContext, TaskContext, gradients, parse_params, training_loss,
};
pub use method_state::{load_method_state, save_method_state};
pub use network::{ModelBuilder, Network, named_parameters, set_trainable, trainable_variables};
pub use optim::configured::{TrainOptimizer, build_optimizer, build_per_tensor_optimizer};
pub use optim::{FlatOptimizer, Rule};
pub use report::{
    AnytimeEvaluation, CountMatrix, EpochReport, Observer, RunOutcome, Silent, TaskReport,
};
/// Re-exported so that method crates need no direct dependency on `retain-config` or
/// `retain-stream`.
pub use retain_config::{Readout, TrainingLoss};
pub use retain_models::checkpoint::CheckpointError;
pub use retain_stream::Batch;
pub use schedule::{TaskSchedule, schedule};
pub use trainer::{BoundaryHook, Resumable, check_training, run, run_resumable, train_step};

#[cfg(test)]
mod tests;
