//! Shared fixtures for the tests and benches of method crates (feature `testkit`).
//!
//! Method crates test two things: exact behaviour of their hooks on tiny hand-made data, and
//! efficacy on a reduced real stream compared with naive fine-tuning. Both need the same
//! scaffolding (a dataset, a stream, an experiment, contexts), kept here once so that every
//! method is tested the same way.

use std::collections::BTreeMap;
use std::path::PathBuf;

use retain_config::{Experiment, Readout};
use retain_data::{ImageDataset, Split};
use retain_metrics::AccuracyMatrix;
use retain_stream::TaskStream;
use tch::Device;

use crate::{Method, Network, Silent, TaskContext, TrainError};

/// `datasets/` at the workspace root, where `just test` fetches MNIST.
pub fn data_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../datasets")
}

/// Real MNIST from [`data_root`]; panics with the fetch command when it is missing.
pub fn mnist() -> ImageDataset {
    retain_data::load("mnist", data_root()).unwrap_or_else(|e| {
        panic!("MNIST is needed by this test (run `just test`, which fetches it): {e}")
    })
}

/// A tiny dataset of `classes` classes with `per_class` training and test samples each, every
/// image `1×1×features`. Sample `i` has label `i % classes` and pixel `k` equal to
/// `(7·i + 3·k + 1) mod 256`, so inputs differ between samples and are known exactly.
pub fn synthetic_dataset(classes: usize, per_class: usize, features: usize) -> ImageDataset {
    let len = classes * per_class;
    let split = Split {
        images: (0..len)
            .flat_map(|i| (0..features).map(move |k| ((7 * i + 3 * k + 1) % 256) as u8))
            .collect(),
        labels: (0..len).map(|i| (i % classes) as u8).collect(),
        len,
    };
    ImageDataset {
        name: "mnist".into(),
        classes,
        shape: [1, 1, features],
        train: split.clone(),
        test: split,
    }
}

/// A reduced Split-MNIST experiment on the CPU: `tasks` tasks of two classes with `train`
/// training and `test` test samples each, MLP 784-100-100-10, one epoch at batch 10 with
/// Adam (learning rate 0.001), both read-outs, and `method_toml` as the `[method]` table's
/// body (`name = "…"` and hyper-parameters). `overrides` are `KEY=VALUE` overrides as on the
/// command line.
///
/// Adam rather than the SGD of `experiments/split-mnist.toml`: with SGD a quadratic penalty
/// of large weight (EWC's `λ`) or a distillation term overshoots unless the learning rate is
/// tuned per method, which would make comparisons with naive fine-tuning depend on that
/// tuning; Adam's per-parameter step sizes keep every method stable at one setting.
pub fn split_mnist(
    tasks: usize,
    train: usize,
    test: usize,
    seed: u64,
    method_toml: &str,
    overrides: &[&str],
) -> Experiment {
    split_mnist_with(
        "kind = \"mlp\"\nhidden = [100, 100]",
        tasks,
        train,
        test,
        seed,
        method_toml,
        overrides,
    )
}

/// The `[model]` table body of the small vision transformer used by the tests of the
/// transformer methods (prompt and prefix tuning, adapters): 7×7 patches of a 28×28 image
/// (16 tokens and the class token), width 16, 2 blocks of 2 heads, MLP width 32. Those tests
/// adapt a frozen *random* transformer, so it is initialised `"kaiming"`: under timm's
/// initialisation (linear weights of std 0.02) a random transformer's attention is nearly
/// uniform and its blocks nearly the identity, which no prompt can adapt (in practice these
/// methods start from a pretrained checkpoint).
pub const SMALL_VIT: &str =
    "kind = \"vit\"\npatch = 7\ndim = 16\ndepth = 2\nheads = 2\nmlp_dim = 32\ninit = \"kaiming\"";

/// [`split_mnist`] with the [`SMALL_VIT`] model instead of the MLP.
pub fn split_mnist_vit(
    tasks: usize,
    train: usize,
    test: usize,
    seed: u64,
    method_toml: &str,
    overrides: &[&str],
) -> Experiment {
    split_mnist_with(SMALL_VIT, tasks, train, test, seed, method_toml, overrides)
}

/// [`split_mnist`] with the `[model]` table body `model_toml`.
pub fn split_mnist_with(
    model_toml: &str,
    tasks: usize,
    train: usize,
    test: usize,
    seed: u64,
    method_toml: &str,
    overrides: &[&str],
) -> Experiment {
    let source = format!(
        r#"
name = "test"
seed = {seed}
device = "cpu"

[stream]
kind = "split"
dataset = "mnist"
tasks = {tasks}
classes_per_task = 2
train_samples_per_task = {train}
test_samples_per_task = {test}
readouts = ["class_il", "task_il"]

[model]
{model_toml}

[training]
epochs = 1
batch_size = 10
eval_batch_size = 1000

[training.optimizer]
kind = "adam"
lr = 0.001

[method]
{method_toml}
"#
    );
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    Experiment::from_source(&source, "testkit experiment", &overrides)
        .unwrap_or_else(|e| panic!("testkit experiment does not parse: {e}"))
}

/// The stream of `experiment` over `dataset` on the CPU and a fresh network of its `[model]`
/// (initialised from the experiment seed, as [`Network::new`]), libtorch on one thread (see
/// [`single_threaded`]): for tests that train with [`crate::run`] and then look at the
/// network's variables.
pub fn stream_and_network(
    experiment: &Experiment,
    dataset: &ImageDataset,
) -> (TaskStream, Network) {
    single_threaded();
    let stream = TaskStream::build(dataset, &experiment.stream, experiment.seed, Device::Cpu)
        .unwrap_or_else(|e| panic!("building the test stream: {e}"));
    let network = Network::new(experiment, &stream);
    (stream, network)
}

/// Runs libtorch on one thread. Test binaries run their tests in parallel and share the
/// machine with other builds; intra-op threads then only contend (measured on a loaded
/// 2-core machine: 1.0 ms per MLP step on one thread, 15 ms on two).
pub fn single_threaded() {
    tch::set_num_threads(1);
}

/// Builds the stream of `experiment` over `dataset` on the CPU, a fresh network, and trains
/// `method` on it with [`crate::run`] (libtorch on one thread, see [`single_threaded`]);
/// returns the accuracy matrix of each read-out.
pub fn run_on(
    experiment: &Experiment,
    dataset: &ImageDataset,
    method: &mut dyn Method,
) -> Result<BTreeMap<Readout, AccuracyMatrix>, TrainError> {
    single_threaded();
    let stream = TaskStream::build(dataset, &experiment.stream, experiment.seed, Device::Cpu)
        .map_err(|e| TrainError::Method {
            method: method.name().to_owned(),
            message: format!("building the test stream: {e}"),
        })?;
    let network = Network::new(experiment, &stream);
    let outcome = crate::run(experiment, &stream, &network, method, &mut Silent)?;
    outcome
        .counts
        .iter()
        .map(|(&readout, counts)| Ok((readout, counts.accuracy()?)))
        .collect()
}

/// [`run_on`] after the experiment's `[pretrain]` stage, trained in the test as `retain run`
/// trains it (without its cache): the network first learns the stage's classes of `dataset`
/// (its own dataset must be `dataset`), then `method` trains on the stream from those weights.
/// Also returns the stage's test accuracy. Panics when the experiment has no `[pretrain]`.
pub fn run_on_pretrained(
    experiment: &Experiment,
    dataset: &ImageDataset,
    method: &mut dyn Method,
) -> Result<(f64, BTreeMap<Readout, AccuracyMatrix>), TrainError> {
    single_threaded();
    let plan = experiment
        .pretrain_plan()
        .expect("the experiment has a [pretrain] stage");
    let stage_stream = TaskStream::build(
        dataset,
        &crate::stage::stream_config(&plan),
        crate::stage::seed(experiment.seed),
        Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("building the stage's stream: {e}"));
    let stream = TaskStream::build(dataset, &experiment.stream, experiment.seed, Device::Cpu)
        .unwrap_or_else(|e| panic!("building the test stream: {e}"));
    let network = Network::new(experiment, &stream);
    let stage = crate::stage::pretrain(
        &plan,
        experiment.seed,
        &stage_stream,
        &network,
        None,
        &mut Silent,
    )?;
    let outcome = crate::run(experiment, &stream, &network, method, &mut Silent)?;
    let matrices = outcome
        .counts
        .iter()
        .map(|(&readout, counts)| Ok((readout, counts.accuracy()?)))
        .collect::<Result<_, TrainError>>()?;
    Ok((stage.accuracy, matrices))
}

/// The context the trainer passes to task hooks for task `task` of `stream`, with seed 0.
pub fn task_context<'a>(
    network: &'a Network,
    stream: &'a TaskStream,
    task: usize,
) -> TaskContext<'a> {
    TaskContext {
        network,
        stream,
        task: &stream.tasks[task],
        device: stream.device,
        seed: 0,
        loss: Default::default(),
    }
}

/// The scaffolding of a method's hook-level unit tests: a 10-class synthetic dataset of 2×2
/// images (pixels `(37·i) mod 251`, labels `i mod 10`; 200 training and 50 test samples) split
/// into 5 tasks of 2 classes, a 4-6-10 MLP initialised from seed 0, and the contexts the trainer
/// would pass to the hooks.
pub struct MethodFixture {
    pub stream: TaskStream,
    pub network: Network,
    /// The augmentation key of every [`MethodFixture::step`] (zero).
    pub key: tch::Tensor,
}

impl Default for MethodFixture {
    fn default() -> Self {
        Self::new()
    }
}

impl MethodFixture {
    pub fn new() -> Self {
        let split = |len: usize| Split {
            images: (0..len * 4).map(|i| ((i * 37) % 251) as u8).collect(),
            labels: (0..len).map(|i| (i % 10) as u8).collect(),
            len,
        };
        let dataset = ImageDataset {
            name: "mnist".into(),
            classes: 10,
            shape: [1, 2, 2],
            train: split(200),
            test: split(50),
        };
        let config = retain_config::StreamConfig::split(
            retain_config::DatasetName::Mnist,
            5,
            2,
            vec![Readout::ClassIl],
        );
        let stream = TaskStream::build(&dataset, &config, 0, Device::Cpu).unwrap();
        let network = seeded_network(0, |path| {
            Box::new(retain_models::Mlp::new(path, 4, &[6], 10))
        });
        Self {
            stream,
            network,
            key: tch::Tensor::zeros([], (tch::Kind::Int64, Device::Cpu)),
        }
    }

    /// The context of the task hooks for task `task`.
    pub fn task(&self, task: usize) -> TaskContext<'_> {
        task_context(&self.network, &self.stream, task)
    }

    /// The context of a training step of task `task` on the samples at `indices`.
    pub fn step<'a>(&'a self, task: usize, indices: &'a tch::Tensor) -> crate::StepContext<'a> {
        crate::StepContext {
            network: &self.network,
            stream: &self.stream,
            task: &self.stream.tasks[task],
            device: Device::Cpu,
            step: 0,
            epoch: 0,
            key: &self.key,
            indices,
            loss: Default::default(),
        }
    }

    /// The first `n` training samples of a task: indices and batch.
    pub fn batch(&self, task: usize, n: usize) -> (tch::Tensor, crate::Batch) {
        let indices = tch::Tensor::from_slice(&self.stream.tasks[task].train_indices[..n]);
        let batch = self.stream.batch(retain_stream::SplitKind::Train, &indices);
        (indices, batch)
    }
}

/// A scalar tensor's value.
pub fn scalar(t: &tch::Tensor) -> f64 {
    t.double_value(&[])
}

/// Detached copies of every variable of `network` (trainable or not), by name: compare two
/// of them to see exactly which variables a run changed.
pub fn snapshot(network: &Network) -> BTreeMap<String, tch::Tensor> {
    network
        .vars
        .variables()
        .into_iter()
        .map(|(name, t)| (name, t.detach().copy()))
        .collect()
}

/// A method that delegates every hook to `method` and keeps a [`snapshot`] of the network
/// right after each `before_task`: the values each task starts training from (a per-task
/// method's fresh variables), to compare with what training made of them.
pub struct TaskStarts<M> {
    pub method: M,
    /// One snapshot per task begun, in order.
    pub starts: Vec<BTreeMap<String, tch::Tensor>>,
}

impl<M: Method> TaskStarts<M> {
    pub fn new(method: M) -> Self {
        Self {
            method,
            starts: Vec::new(),
        }
    }
}

impl<M: Method> Method for TaskStarts<M> {
    fn name(&self) -> &str {
        self.method.name()
    }
    fn before_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.method.before_task(ctx)?;
        self.starts.push(snapshot(ctx.network));
        Ok(())
    }
    fn training_indices(&mut self, ctx: &TaskContext<'_>) -> Vec<i64> {
        self.method.training_indices(ctx)
    }
    fn loss(
        &mut self,
        ctx: &crate::StepContext<'_>,
        batch: &crate::Batch,
    ) -> Result<tch::Tensor, TrainError> {
        self.method.loss(ctx, batch)
    }
    fn after_backward(&mut self, ctx: &crate::StepContext<'_>) -> Result<(), TrainError> {
        self.method.after_backward(ctx)
    }
    fn after_task(&mut self, ctx: &TaskContext<'_>) -> Result<(), TrainError> {
        self.method.after_task(ctx)
    }
    fn uses_task_id(&self) -> bool {
        self.method.uses_task_id()
    }
    fn fresh_optimizer_each_task(&self) -> bool {
        self.method.fresh_optimizer_each_task()
    }
    fn supports_readout(&self, readout: Readout) -> bool {
        self.method.supports_readout(readout)
    }
    fn select(&mut self, network: &Network, selection: crate::Selection) -> Result<(), TrainError> {
        self.method.select(network, selection)
    }
    fn infer_task(&mut self, network: &Network, inputs: &tch::Tensor) -> Option<tch::Tensor> {
        self.method.infer_task(network, inputs)
    }
    fn state(&self) -> Vec<(String, tch::Tensor)> {
        self.method.state()
    }
    fn load_state(&mut self, state: Vec<(String, tch::Tensor)>) -> Result<(), TrainError> {
        self.method.load_state(state)
    }
}

/// [`split_mnist_vit`] with Adam at learning rate 0.01 for `epochs` epochs per task, 200 test
/// samples per task, seed 0: the small-transformer set-up of the per-task method tests.
pub fn small_vit_split_mnist(
    tasks: usize,
    train: usize,
    epochs: usize,
    method_toml: &str,
) -> Experiment {
    let epochs = format!("training.epochs={epochs}");
    split_mnist_vit(
        tasks,
        train,
        200,
        0,
        method_toml,
        &["training.optimizer.lr=0.01", &epochs],
    )
}

/// Five random images of MNIST's shape (`[5, 1, 28, 28]`, seed 99), to compare outputs on.
pub fn mnist_shaped_inputs() -> tch::Tensor {
    seeded_normal(&[5, 1, 28, 28], 99)
}

/// A CPU network whose model `builder` creates, its variables drawn under `seed` with the
/// distributions of tch's layer defaults ([`InitScheme::Kaiming`]) but from the seed, not
/// from libtorch's global generator.
///
/// Tests run as parallel threads of one process: a `tch::manual_seed` followed by draws from
/// the shared generator gives whatever values the other threads left, so a property that
/// holds for most weights (a conflict between two gradients, say) would hold only on some
/// runs.
///
/// [`InitScheme::Kaiming`]: retain_config::InitScheme::Kaiming
pub fn seeded_network(
    seed: u64,
    builder: impl Fn(&tch::nn::Path) -> Box<dyn retain_models::Backbone> + 'static,
) -> Network {
    let network = Network::from_builder(Device::Cpu, builder);
    retain_models::init::initialize(
        &network.vars,
        network.model.init_reference(),
        retain_config::InitScheme::Kaiming,
        seed,
    );
    network
}

/// A CPU `float32` tensor of `shape` with standard-normal elements drawn from `seed` (not from
/// libtorch's global generator; see [`seeded_network`]).
pub fn seeded_normal(shape: &[i64], seed: u64) -> tch::Tensor {
    retain_models::init::sample(retain_models::init::Draw::Normal { std: 1.0 }, shape, seed)
}

/// Trains `method` on `experiment` over real MNIST; returns the task-IL accuracy matrix, the
/// variables before training (by name) and the trained network.
pub fn train_task_il(
    experiment: &Experiment,
    method: &mut dyn Method,
) -> (AccuracyMatrix, BTreeMap<String, tch::Tensor>, Network) {
    let (stream, net) = stream_and_network(experiment, &mnist());
    let before = snapshot(&net);
    let outcome = crate::run(experiment, &stream, &net, method, &mut Silent)
        .unwrap_or_else(|e| panic!("training failed: {e}"));
    let task_il = outcome.counts[&Readout::TaskIl]
        .accuracy()
        .expect("counts make a matrix");
    (task_il, before, net)
}
