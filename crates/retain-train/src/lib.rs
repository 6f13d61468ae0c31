//! The training loop, the method plugin API ([`Method`]) and on-device evaluation.
//!
//! [`run`] owns the loop over tasks, epochs and batches and calls the method's hooks in the
//! order documented in [`method`]. Two rules keep it fast on a GPU:
//!
//! * **No host synchronisation inside a step.** Losses are summed into a device tensor and read
//!   once per epoch (which is also where a diverging run is caught); progress is counted on
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

pub mod graph_step;
pub mod method;
pub mod optim;
pub mod schedule;
pub mod stage;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use retain_config::{Experiment, MemoryFormat, OptimizerConfig, Precision, TrainingConfig};
use retain_metrics::{AccuracyMatrix, MetricsError};
use retain_models::Backbone;
pub use retain_models::checkpoint::CheckpointError;
use retain_stream::TaskStream;
use tch::nn;
use tch::{Device, Kind, Tensor};

pub use method::{
    Method, Selection, StepContext, TaskContext, gradients, parse_params, training_loss,
};
pub use optim::{FlatOptimizer, Rule};
/// Re-exported so that method crates need no direct dependency on `retain-config` or
/// `retain-stream`.
pub use retain_config::{Readout, TrainingLoss};
pub use retain_stream::Batch;
pub use schedule::{TaskSchedule, schedule};

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(
        "training diverged: mean loss {loss} in task {task}, epoch {epoch} (lower the learning rate?)"
    )]
    Diverged {
        task: usize,
        epoch: usize,
        loss: f64,
    },
    #[error(
        "pretrain stage diverged: mean loss {loss} in epoch {epoch} (lower pretrain.optimizer.lr?)"
    )]
    StageDiverged { epoch: usize, loss: f64 },
    #[error("pretrain stage: {message}")]
    Stage { message: String },
    #[error("invalid hyper-parameters for method `{method}`: {message}")]
    MethodParams { method: String, message: String },
    #[error("method `{method}` failed: {message}")]
    Method { method: String, message: String },
    #[error("training.{key} = \"{value}\" is not available in this build: {reason}")]
    Unavailable {
        key: &'static str,
        value: &'static str,
        reason: String,
    },
    #[error(
        "read-out `{}` is not available with method `{method}`: {}",
        readout.as_str(),
        needs(*readout)
    )]
    UnsupportedReadout { readout: Readout, method: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Receives progress from [`run`]. Every method is called on the training thread and must
/// be cheap: `step` is called once per batch.
pub trait Observer {
    fn task_started(&mut self, _task: usize, _steps: usize) {}
    fn step(&mut self) {}
    fn task_finished(&mut self, _task: usize, _report: &TaskReport) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Silent;
impl Observer for Silent {}

/// Correct and total counts of one read-out: rows `0..=T` (0 = untrained), columns = tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountMatrix {
    pub tasks: usize,
    pub correct: Vec<u64>,
    pub samples: Vec<u64>,
}

impl CountMatrix {
    fn new(tasks: usize) -> Self {
        Self {
            tasks,
            correct: vec![0; (tasks + 1) * tasks],
            samples: vec![0; (tasks + 1) * tasks],
        }
    }

    /// Counts after `trained` tasks (0 = untrained) on task `task` (0-based).
    pub fn cell(&self, trained: usize, task: usize) -> (u64, u64) {
        let i = trained * self.tasks + task;
        (self.correct[i], self.samples[i])
    }

    /// The accuracy matrix these counts define.
    pub fn accuracy(&self) -> Result<AccuracyMatrix, MetricsError> {
        let rows: Vec<Vec<f64>> = (0..=self.tasks)
            .map(|row| {
                (0..self.tasks)
                    .map(|task| {
                        let (correct, samples) = self.cell(row, task);
                        correct as f64 / samples.max(1) as f64
                    })
                    .collect()
            })
            .collect();
        AccuracyMatrix::from_rows(&rows)
    }
}

/// What happened while training one task.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskReport {
    pub task: usize,
    pub steps: usize,
    pub samples: usize,
    /// Mean training loss of each epoch.
    pub epoch_losses: Vec<f64>,
    pub train_seconds: f64,
    pub eval_seconds: f64,
}

/// The outcome of a run: counts per read-out and timings.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub counts: BTreeMap<Readout, CountMatrix>,
    pub tasks: Vec<TaskReport>,
    /// How the training steps ran: replayed from CUDA graphs or eagerly, and why.
    pub execution: graph_step::StepExecution,
    /// Evaluation of the untrained model (row 0), in seconds.
    pub initial_eval_seconds: f64,
    pub total_seconds: f64,
}

impl RunOutcome {
    /// Total optimiser steps over the run.
    pub fn steps(&self) -> usize {
        self.tasks.iter().map(|t| t.steps).sum()
    }

    /// Mean wall time of one training step (data, forward, backward, update), in seconds.
    pub fn seconds_per_step(&self) -> f64 {
        let train: f64 = self.tasks.iter().map(|t| t.train_seconds).sum();
        train / self.steps().max(1) as f64
    }
}

/// Builds a backbone under a path; [`Network`] keeps it so that it can build copies.
pub type ModelBuilder = dyn Fn(&nn::Path) -> Box<dyn Backbone>;

/// The model and its parameters, initialised from the experiment seed.
pub struct Network {
    pub vars: nn::VarStore,
    pub model: Box<dyn Backbone>,
    /// How `model` was built, kept so that [`Network::frozen_copy`] can build the same
    /// architecture with the same parameter names.
    builder: Rc<ModelBuilder>,
}

impl Network {
    /// Lays the 4-D floating-point variables (convolution weights) out in `format`, keeping
    /// their values, autograd identity and every handle to them (`Tensor::set_data`). The
    /// flat optimiser keeps a variable's layout when it views it into its buffers.
    pub fn set_memory_format(&self, format: MemoryFormat) {
        let _no_grad = tch::no_grad_guard();
        for (_, mut variable) in self.vars.variables() {
            if variable.dim() != 4 || !variable.is_floating_point() {
                continue;
            }
            let laid_out = match format {
                MemoryFormat::ChannelsLast => optim::channels_last(&variable),
                MemoryFormat::Contiguous => variable.contiguous(),
            };
            variable.set_data(&laid_out);
        }
    }

    pub fn new(experiment: &Experiment, stream: &TaskStream) -> Self {
        Self::for_shape(
            experiment,
            stream.image_shape,
            stream.num_classes,
            stream.device,
        )
    }

    /// [`Network::new`] for images of `image_shape` (`[C, H, W]`) and `outputs` classes, without
    /// a stream: what `retain pretrain` builds before any stream data is loaded. The same
    /// experiment gives the same initial weights either way.
    pub fn for_shape(
        experiment: &Experiment,
        image_shape: [usize; 3],
        outputs: usize,
        device: Device,
    ) -> Self {
        let config = experiment.model.clone();
        let scheme = config.init();
        let network = Self::from_builder(device, move |path| {
            retain_models::build(&config, path, image_shape, outputs)
        });
        retain_models::init::initialize(
            &network.vars,
            network.model.init_reference(),
            scheme,
            experiment.seed,
        );
        network
    }

    /// A network whose model `builder` creates on `device`, with the layers' own initial
    /// values (tch's defaults, from torch's global generator). [`Network::new`] is this with
    /// the experiment's `[model]` followed by [`retain_models::init::initialize`]; tests use
    /// it for tiny hand-made models.
    pub fn from_builder(
        device: Device,
        builder: impl Fn(&nn::Path) -> Box<dyn Backbone> + 'static,
    ) -> Self {
        let vars = nn::VarStore::new(device);
        let model = builder(&vars.root());
        Self {
            vars,
            model,
            builder: Rc::new(builder),
        }
    }

    /// An independent, frozen copy of the network as it is now: same architecture and
    /// parameter names, values copied into fresh storage (so later training of `self` leaves
    /// the copy untouched), `requires_grad` off (so no gradient or optimiser ever reaches it),
    /// on the same device. Methods keep one as "the model after the previous task" (LwF's
    /// teacher, a reference for regularisers).
    ///
    /// Building the copy initialises its parameters before overwriting them, which draws from
    /// torch's global generator; nothing in a run reads that generator (every draw has its own
    /// seeded one), so the draw changes no result.
    pub fn frozen_copy(&self) -> Result<Network, TrainError> {
        let mut vars = nn::VarStore::new(self.vars.device());
        let model = (self.builder)(&vars.root());
        vars.copy(&self.vars)?;
        vars.freeze();
        Ok(Network {
            vars,
            model,
            builder: Rc::clone(&self.builder),
        })
    }

    /// The trainable parameters with their names, sorted by name. Sorting makes the order a
    /// function of the architecture alone, so per-parameter method state (Fisher matrices,
    /// anchors) lines up across copies of the network and across checkpoints.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        named_parameters(&self.vars)
    }

    /// Writes every variable of the model (trainable or not) to the safetensors file `path`,
    /// under its stable name.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        retain_models::checkpoint::save(&self.vars, path)
    }

    /// Replaces the model's variables with those of the safetensors file `path`, which must
    /// hold exactly this architecture's tensors by name and shape; otherwise nothing changes
    /// and the error lists the missing and unexpected names and the shape mismatches.
    pub fn load(&self, path: &Path) -> Result<(), CheckpointError> {
        retain_models::checkpoint::load(&self.vars, path)
    }
}

/// What a method costs next to what it retains, measured at the end of a run (the manifest's
/// `costs`, columns of `metrics.parquet` and of a grid's `runs.parquet`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Costs {
    /// Σ numel of the variables that require gradients.
    pub trainable_parameters: u64,
    /// Σ bytes (numel × element size) of the tensors of [`Method::state`]: what the method
    /// keeps beside the model (stored adapters, Fisher matrices, anchors, replay indices).
    pub method_state_bytes: u64,
    /// `method_state_bytes` / number of tasks: how the state grows with the stream.
    pub state_bytes_per_task: f64,
    /// Bytes of the model's variables that do not require gradients (a frozen backbone),
    /// plus [`Backbone::quantized_bytes`].
    pub frozen_base_bytes: u64,
    /// Mean wall time of one training step, in seconds.
    pub seconds_per_step: f64,
}

impl Costs {
    /// The costs of `network` and `method` after a run of `tasks` tasks whose steps took
    /// `seconds_per_step` on average.
    pub fn measure(
        network: &Network,
        method: &dyn Method,
        tasks: usize,
        seconds_per_step: f64,
    ) -> Self {
        let variables = network.vars.variables();
        let trainable_parameters = variables
            .values()
            .filter(|t| t.requires_grad())
            .map(|t| t.numel() as u64)
            .sum();
        let frozen: u64 = variables
            .values()
            .filter(|t| !t.requires_grad())
            .map(tensor_bytes)
            .sum();
        let method_state_bytes: u64 = method.state().iter().map(|(_, t)| tensor_bytes(t)).sum();
        Self {
            trainable_parameters,
            method_state_bytes,
            state_bytes_per_task: method_state_bytes as f64 / tasks.max(1) as f64,
            frozen_base_bytes: frozen + network.model.quantized_bytes(),
            seconds_per_step,
        }
    }
}

/// Bytes a tensor's elements occupy: numel × element size.
pub fn tensor_bytes(tensor: &Tensor) -> u64 {
    tensor.numel() as u64 * tensor.kind().elt_size_in_bytes() as u64
}

/// Writes `method`'s [`Method::state`] to the safetensors file `path` (an empty file of
/// tensors when the method keeps none).
pub fn save_method_state(method: &dyn Method, path: &Path) -> Result<(), CheckpointError> {
    retain_models::checkpoint::write(&method.state(), path)
}

/// Reads the safetensors file `path` and hands its tensors, sorted by name and moved to
/// `device`, to [`Method::load_state`].
pub fn load_method_state(
    method: &mut dyn Method,
    path: &Path,
    device: Device,
) -> Result<(), TrainError> {
    let state = retain_models::checkpoint::read(path)?
        .into_iter()
        .map(|(name, tensor)| (name, tensor.to_device(device)))
        .collect();
    method.load_state(state)
}

/// The trainable (`requires_grad`) variables of `vars` with their names, sorted by name.
pub fn named_parameters(vars: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vars
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Every variable the optimiser of `vars` trains, with its name, in creation order (the order
/// of `VarStore::trainable_variables`: input to output for a feed-forward model), whatever its
/// `requires_grad` is now. Buffers such as batch-norm running statistics are not among them,
/// so a method that freezes and unfreezes by name selects from these and never hands
/// `requires_grad` to a buffer. Names are found by storage (every variable has its own);
/// variables without elements, which share no storage to tell them apart, come in name order.
pub fn trainable_variables(vars: &nn::VarStore) -> Vec<(String, Tensor)> {
    let key = |t: &Tensor| (t.data_ptr() as usize, t.size());
    let mut by_storage: BTreeMap<(usize, Vec<i64>), Vec<String>> = BTreeMap::new();
    let mut named: Vec<(String, Tensor)> = vars.variables().into_iter().collect();
    named.sort_by(|a, b| b.0.cmp(&a.0));
    for (name, tensor) in &named {
        by_storage
            .entry(key(tensor))
            .or_default()
            .push(name.clone());
    }
    vars.trainable_variables()
        .into_iter()
        .map(|tensor| {
            let name = by_storage
                .get_mut(&key(&tensor))
                .and_then(Vec::pop)
                .expect("every trainable variable of a VarStore has a name");
            (name, tensor)
        })
        .collect()
}

/// Sets `requires_grad` of each of `variables` (from [`trainable_variables`]) to
/// `trains(name)`. Freezing a variable that trained before is safe (see the crate docs).
pub fn set_trainable(variables: &[(String, Tensor)], trains: impl Fn(&str) -> bool) {
    for (name, variable) in variables {
        let _ = variable.set_requires_grad(trains(name));
    }
}

/// Trains `method` on every task of `stream` in turn, evaluating every task in every read-out
/// before training and after each task.
pub fn run(
    experiment: &Experiment,
    stream: &TaskStream,
    network: &Network,
    method: &mut dyn Method,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, TrainError> {
    let started = Instant::now();
    let training = &experiment.training;
    let readouts = &experiment.stream.readouts;
    let tasks = stream.tasks.len();
    check_readouts(readouts, Some(&*method))?;
    check_training(training)?;
    network.set_memory_format(training.memory_format);
    let mut optimizer = TrainOptimizer::new(training, &network.vars)?;
    let mut counts: BTreeMap<Readout, CountMatrix> = readouts
        .iter()
        .map(|&r| (r, CountMatrix::new(tasks)))
        .collect();

    let clock = Instant::now();
    record_evaluation(
        &mut counts,
        0,
        evaluate_with(
            network,
            stream,
            readouts,
            training.eval_batch_size,
            0,
            method,
        )?,
    );
    let initial_eval_seconds = clock.elapsed().as_secs_f64();

    let mut reports = Vec::with_capacity(tasks);
    let mut execution = graph_step::StepExecution {
        eager_reason: graph_step::eager_reason(training, stream.device, &*method),
        ..Default::default()
    };
    for task in &stream.tasks {
        let task_ctx = TaskContext {
            network,
            model: network.model.as_ref(),
            vars: &network.vars,
            stream,
            task,
            device: stream.device,
            seed: experiment.seed,
            loss: training.loss,
        };
        if task.index > 0 && method.fresh_optimizer_each_task() {
            // Per-task parameters start afresh: no moment estimates from the previous task's.
            optimizer = TrainOptimizer::new(training, &network.vars)?;
        }
        method.before_task(&task_ctx)?;
        let indices = method.training_indices(&task_ctx);
        let batch_size = training.batch_size;
        let steps_per_epoch = schedule::steps_per_epoch(indices.len(), batch_size);
        observer.task_started(task.index, steps_per_epoch * training.epochs);

        let clock = Instant::now();
        let mut epoch_losses = Vec::with_capacity(training.epochs);
        let mut step = 0;
        // A new graph per task: what the step reads (anchors, teachers, the trainable set) may
        // have changed at the boundary.
        let mut graphed = match (&execution.eager_reason, &mut optimizer) {
            (None, TrainOptimizer::Flat(flat)) if !indices.is_empty() => {
                match graph_step::GraphedStep::new(stream.device, batch_size) {
                    Ok(g) => {
                        flat.prepare_capture();
                        Some(g)
                    }
                    Err(e) => {
                        execution.eager_reason = Some(e.to_string());
                        None
                    }
                }
            }
            _ => None,
        };
        // A method may train nothing on a task (`joint-offline` before the last one).
        let epochs = if indices.is_empty() {
            0
        } else {
            training.epochs
        };
        // The augmentation key of an eager step's batch, on the device (`StepContext::key`).
        let mut eager_key = Tensor::zeros([], (Kind::Int64, stream.device));
        for epoch in 0..epochs {
            let order = stream.epoch_order(&indices, experiment.seed, task.index, epoch);
            let mut own_loss_sum = Tensor::zeros([], (Kind::Float, stream.device));
            if let Some(g) = graphed.as_mut() {
                let _ = g.loss_sum.zero_();
            }
            for start in (0..indices.len()).step_by(batch_size) {
                let len = batch_size.min(indices.len() - start);
                let batch_indices = order.narrow(0, start as i64, len as i64);
                let draw = TaskStream::draw(task.index, step);
                let key = stream.augment_key(draw);
                if let Some(g) = graphed.as_mut().filter(|g| g.batch() == len) {
                    let outcome = g.step(
                        &batch_indices,
                        key,
                        method.capture_ready(),
                        |indices, key, loss_sum| {
                            let batch = stream.training_batch_keyed(indices, key);
                            let ctx = StepContext {
                                network,
                                model: network.model.as_ref(),
                                vars: &network.vars,
                                stream,
                                task,
                                device: stream.device,
                                step,
                                epoch,
                                key,
                                indices,
                                loss: training.loss,
                            };
                            let loss = train_step(
                                method,
                                &ctx,
                                &batch,
                                &mut optimizer,
                                training.precision,
                            );
                            let _ = loss_sum.shallow_clone().g_add_(&loss.detach());
                        },
                    );
                    match outcome {
                        Ok(ran) => {
                            if ran == graph_step::Ran::Replayed
                                && let TrainOptimizer::Flat(flat) = &mut optimizer
                            {
                                flat.count_replayed_step();
                            }
                            if ran == graph_step::Ran::WarmUp {
                                execution.eager_steps += 1;
                            } else {
                                execution.graphed_steps += 1;
                            }
                            step += 1;
                            observer.step();
                            continue;
                        }
                        Err(e) => {
                            // The step did not run: it runs eagerly below, and so does the
                            // rest of the run.
                            execution.eager_reason =
                                Some(format!("capture failed on task {}: {e}", task.index + 1));
                            own_loss_sum.copy_(&g.loss_sum);
                            graphed = None;
                        }
                    }
                }
                let batch = stream.training_batch(&batch_indices, draw);
                let _ = eager_key.fill_(i64::from(key));
                let ctx = StepContext {
                    network,
                    model: network.model.as_ref(),
                    vars: &network.vars,
                    stream,
                    task,
                    device: stream.device,
                    step,
                    epoch,
                    key: &eager_key,
                    indices: &batch_indices,
                    loss: training.loss,
                };
                let loss = train_step(method, &ctx, &batch, &mut optimizer, training.precision);
                // In place, on the device: no host synchronisation per step.
                let loss_sum = graphed.as_ref().map_or(&own_loss_sum, |g| &g.loss_sum);
                let _ = loss_sum.shallow_clone().g_add_(&loss.detach());
                execution.eager_steps += 1;
                step += 1;
                observer.step();
            }
            // The one host read of the epoch.
            let loss_sum = graphed.as_ref().map_or(&own_loss_sum, |g| &g.loss_sum);
            let mean_loss = loss_sum.double_value(&[]) / steps_per_epoch as f64;
            if !mean_loss.is_finite() {
                return Err(TrainError::Diverged {
                    task: task.index,
                    epoch,
                    loss: mean_loss,
                });
            }
            epoch_losses.push(mean_loss);
        }
        let train_seconds = clock.elapsed().as_secs_f64();

        method.after_task(&task_ctx)?;
        let clock = Instant::now();
        record_evaluation(
            &mut counts,
            task.index + 1,
            evaluate_with(
                network,
                stream,
                readouts,
                training.eval_batch_size,
                task.index + 1,
                method,
            )?,
        );
        let report = TaskReport {
            task: task.index,
            steps: step,
            samples: indices.len(),
            epoch_losses,
            train_seconds,
            eval_seconds: clock.elapsed().as_secs_f64(),
        };
        observer.task_finished(task.index, &report);
        reports.push(report);
    }
    Ok(RunOutcome {
        counts,
        tasks: reports,
        execution,
        initial_eval_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

/// One optimisation step of `method` on `batch`: its loss, `zero_grad`, `backward`, its
/// `after_backward`, the optimiser's `step` (the order documented in [`method`]). Returns
/// the loss, still on the device: nothing here reads a tensor back to the host. Under
/// `precision = bf16` the loss (the method's forward passes) runs in a bf16 autocast region;
/// `backward`, `after_backward` (gradient surgery wants float32) and the update do not.
pub fn train_step(
    method: &mut dyn Method,
    ctx: &StepContext<'_>,
    batch: &retain_stream::Batch,
    optimizer: &mut TrainOptimizer,
    precision: Precision,
) -> Tensor {
    let loss = match precision {
        Precision::Fp32 => method.loss(ctx, batch),
        Precision::Bf16 => retain_graph::with_bf16_autocast(ctx.device, || method.loss(ctx, batch))
            .expect("bf16 autocast is available (check_training runs before training)"),
    };
    optimizer.zero_grad();
    loss.backward();
    method.after_backward(ctx);
    optimizer.step();
    loss
}

/// The optimiser `config` describes, over the trainable variables of `vars` (those that
/// exist now and those created later): a [`FlatOptimizer`], whose parameters, gradients and
/// state live in flat buffers so that an update is a few kernels, not a few per tensor.
pub fn build_optimizer(
    config: &OptimizerConfig,
    vars: &nn::VarStore,
) -> Result<FlatOptimizer, TrainError> {
    let rule = match *config {
        OptimizerConfig::Sgd {
            lr,
            momentum,
            weight_decay,
        } => Rule::Sgd {
            lr,
            momentum,
            weight_decay,
        },
        OptimizerConfig::Adam { lr, weight_decay } => Rule::adam(lr, weight_decay),
    };
    Ok(FlatOptimizer::new(rule, vars))
}

/// The trainer's optimiser: flat buffers ([`FlatOptimizer`], the default) or libtorch's
/// per-tensor one (`[training] flat_optimizer = false`), behind the two calls a step makes.
pub enum TrainOptimizer {
    Flat(FlatOptimizer),
    PerTensor(nn::Optimizer),
}

impl TrainOptimizer {
    /// The optimiser of `training` (its `optimizer` rule and `flat_optimizer` choice) over
    /// the trainable variables of `vars`.
    pub fn new(training: &TrainingConfig, vars: &nn::VarStore) -> Result<Self, TrainError> {
        Ok(if training.flat_optimizer {
            Self::Flat(build_optimizer(&training.optimizer, vars)?)
        } else {
            Self::PerTensor(build_per_tensor_optimizer(&training.optimizer, vars)?)
        })
    }

    pub fn zero_grad(&mut self) {
        match self {
            Self::Flat(o) => o.zero_grad(),
            Self::PerTensor(o) => o.zero_grad(),
        }
    }

    pub fn step(&mut self) {
        match self {
            Self::Flat(o) => o.step(),
            Self::PerTensor(o) => o.step(),
        }
    }
}

/// libtorch's SGD or Adam for `config` over the trainable variables of `vars` (a few kernels
/// per parameter tensor and update; it skips parameters that got no gradient).
pub fn build_per_tensor_optimizer(
    config: &OptimizerConfig,
    vars: &nn::VarStore,
) -> Result<nn::Optimizer, TrainError> {
    use tch::nn::OptimizerConfig as _;
    Ok(match *config {
        OptimizerConfig::Sgd {
            lr,
            momentum,
            weight_decay,
        } => nn::Sgd {
            momentum,
            wd: weight_decay,
            ..Default::default()
        }
        .build(vars, lr)?,
        OptimizerConfig::Adam { lr, weight_decay } => nn::Adam {
            wd: weight_decay,
            ..Default::default()
        }
        .build(vars, lr)?,
    })
}

/// Per read-out, per task: (correct, samples) of one evaluation.
type Evaluation = BTreeMap<Readout, Vec<(u64, u64)>>;

fn record_evaluation(
    counts: &mut BTreeMap<Readout, CountMatrix>,
    row: usize,
    evaluation: Evaluation,
) {
    for (readout, per_task) in evaluation {
        let matrix = counts
            .get_mut(&readout)
            .expect("every read-out has a matrix");
        for (task, (correct, samples)) in per_task.into_iter().enumerate() {
            let i = row * matrix.tasks + task;
            matrix.correct[i] = correct;
            matrix.samples[i] = samples;
        }
    }
}

/// Evaluates every task of the stream in every read-out, batched on the device, without a
/// method's hooks. Correct counts accumulate in one device tensor that is copied to the host
/// once. Panics when asked for an opt-in read-out ([`Readout::is_opt_in`]), which needs a
/// method: use [`evaluate_with`].
pub fn evaluate(
    network: &Network,
    stream: &TaskStream,
    readouts: &[Readout],
    batch_size: usize,
) -> Evaluation {
    evaluate_inner(network, stream, readouts, batch_size, 0, None).unwrap_or_else(|e| panic!("{e}"))
}

/// [`evaluate`] for a method, after `trained` tasks (0 before training). When
/// [`Method::uses_task_id`], [`Method::select`] sets the weights of each read-out up in the
/// order documented in [`method`], and `select(Latest)` ends the evaluation.
///
/// * `class_il`, `domain_il`: arg-max over every class, under [`Selection::Latest`].
/// * `task_il`: arg-max over the true task's classes, under [`Selection::Task`] of the true
///   task.
/// * `merged`: arg-max over every class, under [`Selection::Merged`].
/// * `task_inference`: hits are samples whose [`Method::infer_task`] id (computed under
///   `Latest`) is their own task; 0 before any task is trained.
/// * `task_inferred`: each sample's prediction is the arg-max over the classes of its
///   inferred task `k`, under [`Selection::Task`]`(k)`: every trained task's outputs are
///   computed for the whole batch, and `where(id == k)` keeps each sample's own. An id
///   outside the trained tasks predicts nothing (a miss). Before any task is trained there is
///   nothing to infer, and the prediction is the latest weights' arg-max over every class.
///
/// Fails before evaluating anything when the method does not support one of `readouts`, or
/// when it infers no ids although it claims the task-inference read-outs.
pub fn evaluate_with(
    network: &Network,
    stream: &TaskStream,
    readouts: &[Readout],
    batch_size: usize,
    trained: usize,
    method: &mut dyn Method,
) -> Result<Evaluation, TrainError> {
    evaluate_inner(network, stream, readouts, batch_size, trained, Some(method))
}

/// What `readout` needs from a method: the reason in [`TrainError::UnsupportedReadout`].
fn needs(readout: Readout) -> &'static str {
    match readout {
        Readout::TaskInferred | Readout::TaskInference => {
            "it needs a method that infers each test sample's task from its inputs"
        }
        Readout::Merged => "it needs a method with per-task weights that it can merge",
        Readout::ClassIl | Readout::TaskIl | Readout::DomainIl => "every method provides it",
    }
}

/// Fails when `[training]` asks for what this build cannot do (bf16 autocast without its
/// shim). The CLI calls it before any data loads, the trainer again before training.
pub fn check_training(training: &TrainingConfig) -> Result<(), TrainError> {
    if training.precision == Precision::Bf16 {
        retain_graph::autocast_availability().map_err(|e| TrainError::Unavailable {
            key: "precision",
            value: training.precision.as_str(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// Fails, naming the read-out and the method, when `method` cannot provide one of
/// `readouts` ([`Method::supports_readout`]); without a method, when one is opt-in. The
/// trainer calls it before training, so that a run asking for the impossible stops at once.
pub fn check_readouts(readouts: &[Readout], method: Option<&dyn Method>) -> Result<(), TrainError> {
    let supported = |r: Readout| method.map_or(!r.is_opt_in(), |m| m.supports_readout(r));
    match readouts.iter().find(|&&r| !supported(r)) {
        Some(&readout) => Err(TrainError::UnsupportedReadout {
            readout,
            method: method.map_or("(none)", |m| m.name()).to_owned(),
        }),
        None => Ok(()),
    }
}

/// `method.select(selection)` when there is a method whose weights depend on the task.
fn select(
    method: &mut Option<&mut dyn Method>,
    selects: bool,
    network: &Network,
    selection: Selection,
) -> Result<(), TrainError> {
    match method {
        Some(m) if selects => m.select(network, selection),
        _ => Ok(()),
    }
}

fn evaluate_inner(
    network: &Network,
    stream: &TaskStream,
    readouts: &[Readout],
    batch_size: usize,
    trained: usize,
    mut method: Option<&mut dyn Method>,
) -> Result<Evaluation, TrainError> {
    check_readouts(readouts, method.as_deref())?;
    let _no_grad = tch::no_grad_guard();
    let tasks = stream.tasks.len();
    let trained = trained.min(tasks);
    let correct = Tensor::zeros(
        [readouts.len() as i64, tasks as i64],
        (Kind::Int64, stream.device),
    );
    // Adds `hits` to every row that holds `readout` (none when it is not requested).
    let add = |readout: Readout, task: usize, hits: Tensor| {
        for (r, _) in readouts.iter().enumerate().filter(|&(_, &x)| x == readout) {
            let _ = correct.get(r as i64).get(task as i64).g_add_(&hits);
        }
    };
    let wants = |readout: Readout| readouts.contains(&readout);
    let selects = method.as_ref().is_some_and(|m| m.uses_task_id());
    let infers = trained > 0 && (wants(Readout::TaskInferred) || wants(Readout::TaskInference));
    // Read-outs computed from the latest weights' outputs: those without a task id, and
    // those whose own selection would change nothing.
    let latest: Vec<Readout> = readouts
        .iter()
        .copied()
        .filter(|&r| match r {
            Readout::ClassIl | Readout::DomainIl => true,
            Readout::TaskIl | Readout::Merged => !selects,
            Readout::TaskInferred => trained == 0,
            Readout::TaskInference => false,
        })
        .collect();
    let method_name = method
        .as_ref()
        .map_or(String::new(), |m| m.name().to_owned());
    let forward = |inputs: &Tensor| network.model.forward_t(inputs, false);
    let masked_argmax = |logits: &Tensor, mask: &Tensor| {
        logits
            .masked_fill(&mask.logical_not(), f64::NEG_INFINITY)
            .argmax(-1, false)
    };
    let hits =
        |predictions: &Tensor, labels: &Tensor| predictions.eq_tensor(labels).sum(Kind::Int64);
    for task in &stream.tasks {
        let (split, eval_indices, eval_len) = stream.evaluation_set(task);
        let batches = || {
            (0..eval_len).step_by(batch_size).map(move |start| {
                let len = batch_size.min(eval_len - start);
                let indices = eval_indices.narrow(0, start as i64, len as i64);
                stream.task_batch(split, task.index, &indices)
            })
        };
        // Per batch: the inferred task ids and the labels.
        let mut inferred: Vec<(Tensor, Tensor)> = Vec::new();
        if !latest.is_empty() || infers {
            select(&mut method, selects, network, Selection::Latest)?;
            for batch in batches() {
                if !latest.is_empty() {
                    let logits = forward(&batch.inputs);
                    for &readout in &latest {
                        let predictions = match readout {
                            Readout::TaskIl => masked_argmax(&logits, &task.class_mask),
                            // Domain-IL: one label space shared by every task, so the single
                            // head's arg-max over all classes, as class-IL (and as merged or
                            // task-inferred where those reduce to it, see above).
                            _ => logits.argmax(-1, false),
                        };
                        add(readout, task.index, hits(&predictions, &batch.labels));
                    }
                }
                if infers {
                    let ids = method
                        .as_deref_mut()
                        .and_then(|m| m.infer_task(network, &batch.inputs))
                        .ok_or_else(|| TrainError::Method {
                            method: method_name.clone(),
                            message: "inferred no task ids, though it supports the task-inference read-outs"
                                .into(),
                        })?
                        .to_kind(Kind::Int64);
                    let own = ids.eq(task.index as i64).sum(Kind::Int64);
                    add(Readout::TaskInference, task.index, own);
                    inferred.push((ids, batch.labels));
                }
            }
        }
        if selects && wants(Readout::TaskIl) {
            select(&mut method, selects, network, Selection::Task(task.index))?;
            for batch in batches() {
                let predictions = masked_argmax(&forward(&batch.inputs), &task.class_mask);
                add(
                    Readout::TaskIl,
                    task.index,
                    hits(&predictions, &batch.labels),
                );
            }
        }
        if selects && wants(Readout::Merged) {
            select(&mut method, selects, network, Selection::Merged)?;
            for batch in batches() {
                let predictions = forward(&batch.inputs).argmax(-1, false);
                add(
                    Readout::Merged,
                    task.index,
                    hits(&predictions, &batch.labels),
                );
            }
        }
        if infers && wants(Readout::TaskInferred) {
            // -1 matches no label: a sample whose id names no trained task is a miss.
            let mut predictions: Vec<Tensor> =
                inferred.iter().map(|(ids, _)| ids.full_like(-1)).collect();
            // One pass per trained task when the weights depend on it, else one for all.
            let passes: Vec<Vec<usize>> = if selects {
                (0..trained).map(|k| vec![k]).collect()
            } else {
                vec![(0..trained).collect()]
            };
            for pass in passes {
                if let [k] = pass[..] {
                    select(&mut method, selects, network, Selection::Task(k))?;
                }
                for (b, batch) in batches().enumerate() {
                    let logits = forward(&batch.inputs);
                    for &k in &pass {
                        let own = masked_argmax(&logits, &stream.tasks[k].class_mask);
                        let mine = inferred[b].0.eq(k as i64);
                        predictions[b] = own.where_self(&mine, &predictions[b]);
                    }
                }
            }
            for ((_, labels), predictions) in inferred.iter().zip(&predictions) {
                add(Readout::TaskInferred, task.index, hits(predictions, labels));
            }
        }
    }
    select(&mut method, selects, network, Selection::Latest)?;
    let host = Vec::<i64>::try_from(correct.to_device(Device::Cpu).flatten(0, -1))
        .expect("int64 counts convert to Vec<i64>");
    Ok(readouts
        .iter()
        .enumerate()
        .map(|(r, &readout)| {
            let per_task = stream
                .tasks
                .iter()
                .map(|task| {
                    let (_, _, samples) = stream.evaluation_set(task);
                    (host[r * tasks + task.index] as u64, samples as u64)
                })
                .collect();
            (readout, per_task)
        })
        .collect())
}

#[cfg(test)]
mod tests;
