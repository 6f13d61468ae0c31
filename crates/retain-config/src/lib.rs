//! Experiment configuration: the TOML schema and its validation into a run plan.
//!
//! The flow is *raw → validated*: the file deserialises with `deny_unknown_fields` into
//! [`Experiment`] (every key optional where a default exists), then [`Experiment::validate`]
//! checks the values against each other. Every error names the offending key and, when it
//! came from the file, its line, so a typo in a 40-line grid file is found at once.
//!
//! Command-line overrides (`--set training.lr=0.05`) are applied to the parsed TOML tree
//! *after* the file itself has been checked, so an error in the file still points at its
//! line, and an error caused by an override names the override.
//!
//! This crate depends on neither tch nor polars.

mod locate;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use locate::{line_of_key, line_of_table};

/// A configuration error: what is wrong, with the key and, where known, where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: invalid value for `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
    #[error("invalid override `{raw}`: {message} (expected KEY=VALUE, e.g. training.lr=0.05)")]
    Override { raw: String, message: String },
}

/// The whole experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Name of the experiment; results go to `<output>/<name>/<run>/`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Master seed. Every other seed (class order, permutations, sampling, initialisation,
    /// shuffling) is derived from it, independently of the method.
    #[serde(default)]
    pub seed: u64,
    /// `"auto"` (first CUDA device if any, else CPU), `"cpu"`, `"cuda"` or `"cuda:N"`.
    #[serde(default = "default_device")]
    pub device: DeviceSpec,
    /// Folder that holds `datasets/<name>/`.
    #[serde(default = "default_data_root")]
    pub data_root: PathBuf,
    /// Folder results are written under.
    #[serde(default = "default_output")]
    pub output: PathBuf,
    pub stream: StreamConfig,
    pub model: ModelConfig,
    #[serde(default)]
    pub training: TrainingConfig,
    /// A stage that trains `[model]` before the stream starts; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrain: Option<PretrainConfig>,
    pub method: MethodConfig,
}

fn default_device() -> DeviceSpec {
    DeviceSpec::Auto
}
fn default_data_root() -> PathBuf {
    PathBuf::from("datasets")
}
fn default_output() -> PathBuf {
    PathBuf::from("results")
}

/// Where to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Auto,
    Cpu,
    Cuda(usize),
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    format!("unknown device `{s}`: use \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"")
                }),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which image dataset a stream draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    Mnist,
    FashionMnist,
    #[serde(rename = "cifar10")]
    Cifar10,
    #[serde(rename = "cifar100")]
    Cifar100,
    /// CIFAR-100 with its 20 coarse (superclass) labels.
    #[serde(rename = "cifar100-coarse")]
    Cifar100Coarse,
}

impl DatasetName {
    /// The name used on the command line and as the folder under the data root (the name
    /// `retain_data::load` takes).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::FashionMnist => "fashion-mnist",
            Self::Cifar10 => "cifar10",
            Self::Cifar100 => "cifar100",
            Self::Cifar100Coarse => "cifar100-coarse",
        }
    }
}

/// How the dataset is cut into tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamKind {
    /// Disjoint groups of classes, one group per task (Split-MNIST and kin): class- and
    /// task-incremental.
    Split,
    /// Every task is the whole dataset under its own seeded pixel permutation
    /// (Permuted-MNIST): domain-incremental, one label space.
    Permuted,
    /// Every task is the whole dataset rotated by its own angle (Rotated-MNIST):
    /// domain-incremental, one label space.
    Rotated,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Split => "split",
            Self::Permuted => "permuted",
            Self::Rotated => "rotated",
        }
    }

    /// Whether every task shares the dataset's whole label space.
    pub fn is_domain_incremental(self) -> bool {
        matches!(self, Self::Permuted | Self::Rotated)
    }

    /// The read-outs evaluated when none are listed, in their default order.
    pub fn readouts(self) -> &'static [Readout] {
        match self {
            Self::Split => &[Readout::ClassIl, Readout::TaskIl],
            Self::Permuted | Self::Rotated => &[Readout::DomainIl],
        }
    }

    /// Whether `readout` means something for this kind of stream: the kind's defaults and
    /// the opt-in read-outs ([`Readout::is_opt_in`]), which need a method's hooks rather than
    /// a kind of label space.
    pub fn accepts(self, readout: Readout) -> bool {
        self.readouts().contains(&readout) || readout.is_opt_in()
    }
}

/// How a trained model is read out at evaluation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readout {
    /// One head over every class seen; no task identity at test time.
    ClassIl,
    /// The task identity is given: logits outside the task's classes are masked.
    TaskIl,
    /// Every task has the same label space (permuted, rotated): one head over all classes,
    /// no task identity.
    DomainIl,
    /// The method infers each test sample's task from the sample itself, then reads it out
    /// as task-IL with the inferred task's weights and class mask: task-IL without the oracle.
    /// Opt-in; needs a method that infers task ids.
    TaskInferred,
    /// Not a classification accuracy: cell (i, j) of its matrix is the fraction of task j's
    /// test samples whose task the method infers correctly after training i tasks (the
    /// inference chooses among the tasks trained so far, so cells with j ≥ i, untrained
    /// tasks, and row 0 are 0). ACC is then the mean task-inference accuracy at the end,
    /// BWT how much adding tasks confuses inference. Opt-in; needs a method that infers task
    /// ids.
    TaskInference,
    /// Every task's weights merged into one network (e.g. the sum of all tasks' low-rank
    /// updates, and each class's head row from the task that learned it), read out with the
    /// arg-max over all classes, no task identity. Opt-in; needs a method with per-task
    /// weights that can merge them.
    Merged,
}

impl Readout {
    /// Every read-out, in the order of the enum (and of result files).
    pub const ALL: [Readout; 6] = [
        Self::ClassIl,
        Self::TaskIl,
        Self::DomainIl,
        Self::TaskInferred,
        Self::TaskInference,
        Self::Merged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClassIl => "class_il",
            Self::TaskIl => "task_il",
            Self::DomainIl => "domain_il",
            Self::TaskInferred => "task_inferred",
            Self::TaskInference => "task_inference",
            Self::Merged => "merged",
        }
    }

    /// Read-outs that no kind of stream evaluates by default: they need hooks only some
    /// methods implement, so a run lists them in `stream.readouts` to get them.
    pub fn is_opt_in(self) -> bool {
        matches!(
            self,
            Self::TaskInferred | Self::TaskInference | Self::Merged
        )
    }
}

/// Class order of a split stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClassOrder {
    /// `"natural"` (0, 1, 2, …) or `"seeded"` (a permutation derived from the seed).
    Named(ClassOrderName),
    /// An explicit order, e.g. `[3, 1, 4, 0, 2, 9, 8, 7, 6, 5]`.
    Explicit(Vec<u32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassOrderName {
    Natural,
    Seeded,
}

/// Angles of a rotated stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Angles {
    /// `"even"`: task `t` of `T` is rotated by `lo + t·(hi − lo)/T` degrees (the GEM paper's
    /// Rotated-MNIST); `"seeded"`: uniform in `[lo, hi)`, drawn from the seed.
    Named(AnglesName),
    /// One angle in degrees (counter-clockwise) per task, e.g. `[0, 45, 90, 135, 180]`.
    Explicit(Vec<f64>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnglesName {
    Even,
    Seeded,
}

/// Which samples the after-task evaluation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvaluateOn {
    /// The dataset's test split.
    #[default]
    Test,
    /// The validation samples carved from the training split (`validation_fraction`), so
    /// hyper-parameters can be tuned without touching the test set.
    Validation,
}

/// `[stream.augment]`: training-batch augmentation, applied on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Random crop of the original size after zero padding by this many pixels on every
    /// side (4 for CIFAR in the DER paper); 0 = no crop.
    #[serde(default)]
    pub crop_padding: usize,
    /// Horizontal flip with probability ½.
    #[serde(default)]
    pub flip: bool,
}

impl AugmentConfig {
    /// Whether the augmentation changes anything.
    pub fn is_active(&self) -> bool {
        self.crop_padding > 0 || self.flip
    }
}

/// `[stream]`: the task sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub kind: StreamKind,
    pub dataset: DatasetName,
    pub tasks: usize,
    /// Classes per task of a split stream (required there; not allowed for other kinds,
    /// whose tasks all use every class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes_per_task: Option<usize>,
    /// Class order of a split stream; `"natural"` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_order: Option<ClassOrder>,
    /// Permuted streams: leave the first task's pixels in place (as in van de Ven et al.'s
    /// and some Avalanche set-ups); every task is permuted when false (the GEM paper).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_task_unpermuted: bool,
    /// Rotated streams: the angle of each task; `"even"` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub angles: Option<Angles>,
    /// Rotated streams: `[lo, hi]` degrees for `"even"` and `"seeded"` angles; `[0, 180]`
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub angle_range: Option<[f64; 2]>,
    /// Keep at most this many training samples per task (seeded choice); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_samples_per_task: Option<usize>,
    /// Keep at most this many evaluation (test or validation) samples per task (seeded
    /// choice); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_samples_per_task: Option<usize>,
    /// Fraction of the training split held out as validation data (seeded, the same samples
    /// for every task and method); none when absent. Held-out samples are never trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_fraction: Option<f64>,
    /// Evaluate on the test split or on the validation samples.
    #[serde(default)]
    pub evaluate_on: EvaluateOn,
    /// Augmentation of training batches; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<AugmentConfig>,
    /// Read-outs evaluated after every task; when absent or empty, those of the stream's
    /// kind ([`StreamKind::readouts`]). The opt-in read-outs (`task_inferred`,
    /// `task_inference`, `merged`) apply to every kind, given a method that provides them.
    #[serde(default)]
    pub readouts: Vec<Readout>,
}

impl StreamConfig {
    /// A split stream (`tasks` × `classes_per_task`, natural class order, every sample) with
    /// the given read-outs and every other setting at its default: what tests and library
    /// users start from before adjusting fields.
    pub fn split(
        dataset: DatasetName,
        tasks: usize,
        classes_per_task: usize,
        readouts: Vec<Readout>,
    ) -> Self {
        Self {
            kind: StreamKind::Split,
            dataset,
            tasks,
            classes_per_task: Some(classes_per_task),
            class_order: None,
            first_task_unpermuted: false,
            angles: None,
            angle_range: None,
            train_samples_per_task: None,
            test_samples_per_task: None,
            validation_fraction: None,
            evaluate_on: EvaluateOn::default(),
            augment: None,
            readouts,
        }
    }

    /// The class order of a split stream, `"natural"` when not given.
    pub fn class_order(&self) -> ClassOrder {
        self.class_order
            .clone()
            .unwrap_or(ClassOrder::Named(ClassOrderName::Natural))
    }

    /// The angle specification of a rotated stream, `"even"` when not given.
    pub fn angles(&self) -> Angles {
        self.angles
            .clone()
            .unwrap_or(Angles::Named(AnglesName::Even))
    }

    /// `[lo, hi]` of generated angles, `[0, 180]` when not given.
    pub fn angle_range(&self) -> [f64; 2] {
        self.angle_range.unwrap_or([0.0, 180.0])
    }

    /// The augmentation, the inactive one when not given.
    pub fn augment(&self) -> AugmentConfig {
        self.augment.unwrap_or_default()
    }

    fn resolve_defaults(&mut self) {
        if self.readouts.is_empty() {
            self.readouts = self.kind.readouts().to_vec();
        }
    }
}

/// `[model]`: the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum ModelConfig {
    /// Fully connected network with ReLU between layers and one output head.
    Mlp {
        /// Widths of the hidden layers, e.g. `[100, 100]` for 784-100-100-10.
        hidden: Vec<usize>,
        /// A safetensors file of the model's weights to start from (see
        /// [`ModelConfig::checkpoint`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<PathBuf>,
        /// How the initial weights are drawn (see [`InitScheme`]).
        #[serde(default)]
        init: InitScheme,
    },
    /// ResNet-18 for small images: 3×3 stem, no max-pool, BasicBlocks `[2, 2, 2, 2]`, global
    /// average pool, one linear head. `nf = 64` is the DER paper's, `nf = 20` the GEM paper's
    /// reduced ResNet-18.
    #[serde(rename = "resnet18")]
    Resnet18 {
        /// Filters of the first stage; stages have `nf`, `2nf`, `4nf`, `8nf`.
        #[serde(default = "default_nf")]
        nf: usize,
        /// A safetensors file of the model's weights to start from (see
        /// [`ModelConfig::checkpoint`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<PathBuf>,
        /// How the initial weights are drawn (see [`InitScheme`]).
        #[serde(default)]
        init: InitScheme,
    },
    /// A small vision transformer (Dosovitskiy et al. 2021) with timm's parameter names:
    /// non-overlapping `patch`×`patch` patch embedding, a class token, learned position
    /// embeddings, `depth` pre-norm blocks of `heads`-head self-attention and a GELU MLP of
    /// width `mlp_dim`, a final layer norm and a linear head on the class token. The
    /// defaults (patch 4, width 64, 4 blocks of 4 heads, MLP 128) suit 28×28 and 32×32 images
    /// (49 or 64 patches).
    Vit {
        #[serde(default = "default_patch")]
        patch: usize,
        /// Token width; a multiple of `heads`.
        #[serde(default = "default_dim")]
        dim: usize,
        #[serde(default = "default_depth")]
        depth: usize,
        #[serde(default = "default_heads")]
        heads: usize,
        #[serde(default = "default_mlp_dim")]
        mlp_dim: usize,
        /// A safetensors file of the model's weights to start from (see
        /// [`ModelConfig::checkpoint`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<PathBuf>,
        /// How the initial weights are drawn (see [`InitScheme`]).
        #[serde(default)]
        init: InitScheme,
    },
}

/// `[model] init`: how a backbone's initial weights are drawn. Every scheme draws on the
/// host from a generator seeded by the experiment seed (per variable, by name) and copies the
/// values to the device, so one seed gives bit-identical initial weights on CPU and CUDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// As the backbone's reference implementation initialises it (the default): the MLP as
    /// PyTorch's `nn.Linear` (weights and biases `U(±1/√fan_in)`); the small-image ResNet-18
    /// as the DER paper's (Mammoth's `backbone/ResNet18.py`) and GEM's (`model/common.py`)
    /// code, which keep PyTorch's `nn.Conv2d`/`nn.Linear` defaults and batch norm at weight 1,
    /// bias 0; the vision transformer as timm's `VisionTransformer.init_weights` (linear
    /// weights truncated normal, std 0.02 within ±2, biases 0; position embedding the same;
    /// class token normal, std 10⁻⁶; patch embedding PyTorch's `nn.Conv2d` default; layer norm
    /// 1 and 0).
    #[default]
    Reference,
    /// PyTorch's module defaults for every layer, the transformer's linear layers included
    /// (its class token and position embedding stay as in `reference`).
    Pytorch,
    /// Kaiming-uniform with the ReLU gain for linear and convolution weights,
    /// `U(±√6/√fan_in)`, biases `U(±1/√fan_in)`: tch's default, 2.45× wider than PyTorch's.
    Kaiming,
}

impl InitScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            InitScheme::Reference => "reference",
            InitScheme::Pytorch => "pytorch",
            InitScheme::Kaiming => "kaiming",
        }
    }
}

fn default_patch() -> usize {
    4
}
fn default_dim() -> usize {
    64
}
fn default_depth() -> usize {
    4
}
fn default_heads() -> usize {
    4
}
fn default_mlp_dim() -> usize {
    128
}

impl ModelConfig {
    /// The `kind` key's value.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ModelConfig::Mlp { .. } => "mlp",
            ModelConfig::Resnet18 { .. } => "resnet18",
            ModelConfig::Vit { .. } => "vit",
        }
    }

    /// `checkpoint = "path.safetensors"`: the experiment starts from these weights instead of
    /// a random initialisation. The file must hold exactly the model's tensors, by name and
    /// shape (PyTorch `state_dict` names; see `retain-models`). A relative path is taken from
    /// the working directory, like `data_root`.
    pub fn checkpoint(&self) -> Option<&Path> {
        match self {
            ModelConfig::Mlp { checkpoint, .. }
            | ModelConfig::Resnet18 { checkpoint, .. }
            | ModelConfig::Vit { checkpoint, .. } => checkpoint.as_deref(),
        }
    }

    /// `init`: how the initial weights are drawn.
    pub fn init(&self) -> InitScheme {
        match self {
            ModelConfig::Mlp { init, .. }
            | ModelConfig::Resnet18 { init, .. }
            | ModelConfig::Vit { init, .. } => *init,
        }
    }
}

fn default_nf() -> usize {
    64
}

/// `[training]`: the optimisation loop shared by every method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_eval_batch_size")]
    pub eval_batch_size: usize,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// Keep parameters, gradients and optimiser state in flat buffers, so that an update is a
    /// few kernels rather than a few per parameter tensor (the default); `false` uses
    /// libtorch's per-tensor optimisers instead (same arithmetic; for comparison, and for a
    /// method that relies on libtorch skipping parameters that got no gradient).
    #[serde(default = "default_flat_optimizer")]
    pub flat_optimizer: bool,
    /// The training loss's label space (see [`TrainingLoss`]).
    #[serde(default)]
    pub loss: TrainingLoss,
    /// On CUDA, capture each task's training step in a CUDA graph and replay it (the default),
    /// for methods that declare their step capturable and with the flat optimiser; `false`
    /// runs every step eagerly. No effect on the CPU. The manifest records how the steps ran.
    #[serde(default = "default_cuda_graph")]
    pub cuda_graph: bool,
    /// The arithmetic of the training forward pass (see [`Precision`]).
    #[serde(default)]
    pub precision: Precision,
    /// The memory layout of the convolution weights (see [`MemoryFormat`]).
    #[serde(default)]
    pub memory_format: MemoryFormat,
}

/// `[training] precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// float32 throughout (the default).
    #[default]
    Fp32,
    /// bf16 autocast for the training forward pass and loss (PyTorch's
    /// `torch.autocast(dtype=torch.bfloat16)`): matrix products and convolutions in bfloat16,
    /// softmax, losses and normalisation in float32; weights, gradients and optimiser state
    /// stay float32. Evaluation stays float32.
    Bf16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// `[training] memory_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryFormat {
    /// Row-major `[N, C, H, W]` (the default).
    #[default]
    Contiguous,
    /// Convolution weights stored `[N, H, W, C]` (PyTorch's `torch.channels_last`): cuDNN then
    /// runs its NHWC kernels and produces channels-last activations, faster with bf16 on
    /// tensor cores. Only for convolutional backbones (`resnet18`).
    ChannelsLast,
}

impl MemoryFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryFormat::Contiguous => "contiguous",
            MemoryFormat::ChannelsLast => "channels_last",
        }
    }
}

fn default_cuda_graph() -> bool {
    true
}

/// `[training] loss`: which outputs the training cross-entropy covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainingLoss {
    /// Cross-entropy over every output (the default): the class-incremental loss of a
    /// single-head network, as Mammoth and Avalanche train.
    #[default]
    ClassIl,
    /// Cross-entropy over the classes of the sample's own task only (the other outputs are
    /// left out of the softmax): the task-incremental, multi-headed training of van de Ven &
    /// Tolias 2018 and FACIL, with one output layer whose rows per task act as the heads.
    TaskIl,
}

impl TrainingLoss {
    pub fn as_str(self) -> &'static str {
        match self {
            TrainingLoss::ClassIl => "class_il",
            TrainingLoss::TaskIl => "task_il",
        }
    }
}

fn default_flat_optimizer() -> bool {
    true
}

fn default_epochs() -> usize {
    1
}
fn default_batch_size() -> usize {
    10
}
fn default_eval_batch_size() -> usize {
    1000
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            epochs: default_epochs(),
            batch_size: default_batch_size(),
            eval_batch_size: default_eval_batch_size(),
            optimizer: OptimizerConfig::default(),
            flat_optimizer: default_flat_optimizer(),
            loss: TrainingLoss::default(),
            cuda_graph: default_cuda_graph(),
            precision: Precision::default(),
            memory_format: MemoryFormat::default(),
        }
    }
}

/// `[training.optimizer]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum OptimizerConfig {
    Sgd {
        lr: f64,
        #[serde(default)]
        momentum: f64,
        #[serde(default)]
        weight_decay: f64,
    },
    Adam {
        lr: f64,
        #[serde(default)]
        weight_decay: f64,
    },
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self::Sgd {
            lr: 0.01,
            momentum: 0.0,
            weight_decay: 0.0,
        }
    }
}

/// `[pretrain]`: train the experiment's `[model]` before the task stream starts, so the stream
/// begins from those weights instead of a random initialisation (or `[model] checkpoint`).
///
/// With a `[pretrain.teacher]` table the stage is knowledge distillation (Hinton et al. 2015):
/// the teacher, a frozen model loaded from its checkpoint, provides soft labels and the
/// student (`[model]`, usually smaller) minimises
/// `(1 − hard_weight) · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + hard_weight · CE`.
/// The `T²` keeps the soft term's gradients on the scale of the hard term's as `T` grows.
///
/// Every key is optional; [`Experiment::pretrain_plan`] resolves the defaults.
///
/// ```toml
/// [pretrain]
/// classes = [0, 1, 2, 3, 4]
/// epochs = 2
/// temperature = 4.0
///
/// [pretrain.teacher]
/// kind = "mlp"
/// hidden = [400, 400]
/// checkpoint = "teacher.safetensors"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// The stream's dataset when absent. Must have the stream dataset's image shape (the model
    /// is built for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetName>,
    /// Classes to train on; every class of the dataset when absent. Each must be below the
    /// stream dataset's class count, the size of the model's head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<u32>>,
    /// `[training] epochs` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// `[training] batch_size` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// `[training.optimizer]` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<OptimizerConfig>,
    /// Distillation temperature `T` (> 0); 2.0 when absent. Distillation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Weight in `[0, 1]` of the hard-label cross-entropy; 0 when absent. Distillation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_weight: Option<f64>,
    /// The teacher of a distillation stage: a model (same schema as `[model]`) with the
    /// stream's number of outputs, loaded from its `checkpoint` (required) and kept frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<ModelConfig>,
}

/// A `[pretrain]` stage with every default resolved: what the trainer runs and what its cache
/// key is computed from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PretrainPlan {
    pub dataset: DatasetName,
    /// Sorted, without duplicates.
    pub classes: Vec<u32>,
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub distillation: Option<Distillation>,
}

/// The teacher half of a distillation stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distillation {
    pub teacher: ModelConfig,
    pub temperature: f64,
    pub hard_weight: f64,
}

/// Default distillation temperature; Hinton et al. used 2–20, 2 being a common choice for
/// small student networks.
pub const DEFAULT_TEMPERATURE: f64 = 2.0;

/// `[method]`: `name` picks the plugin; every other key is the plugin's own hyper-parameter
/// and is checked by the plugin (unknown keys rejected there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodConfig {
    pub name: String,
    #[serde(flatten)]
    pub params: toml::Table,
}

impl Experiment {
    /// Reads, parses and validates an experiment file, then applies `overrides`
    /// (`KEY=VALUE`, the value in TOML syntax or a bare string).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_source(&source, &path.display().to_string(), overrides)
    }

    /// As [`Experiment::load`], from text; `origin` names the text in errors.
    pub fn from_source(
        source: &str,
        origin: &str,
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        let mut from_file: Self =
            toml::from_str(source).map_err(|e| parse_error(origin, source, &e))?;
        from_file.stream.resolve_defaults();
        from_file.validate(origin, source)?;
        if overrides.is_empty() {
            return Ok(from_file);
        }
        let mut tree: toml::Table =
            toml::from_str(source).map_err(|e| parse_error(origin, source, &e))?;
        for raw in overrides {
            apply_override(&mut tree, raw)?;
        }
        let origin = format!("{origin} with overrides [{}]", overrides.join(", "));
        let mut merged: Self = toml::Table::try_into(tree).map_err(|e| ConfigError::Parse {
            origin: origin.clone(),
            message: e.message().to_owned(),
        })?;
        merged.stream.resolve_defaults();
        merged.validate(&origin, "")?;
        Ok(merged)
    }

    /// Checks values against each other. `source` (may be empty) is used to point at lines.
    pub fn validate(&self, origin: &str, source: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            // A missing key (`pretrain.teacher.checkpoint`) points at its table's header.
            let line = line_of_key(source, key).or_else(|| {
                let (table, _) = key.rsplit_once('.')?;
                line_of_table(source, table)
            });
            let origin = match line {
                Some(line) => format!("{origin}:{line}"),
                None => origin.to_owned(),
            };
            ConfigError::Invalid {
                origin,
                key: key.to_owned(),
                message,
            }
        };
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            return Err(invalid(
                "name",
                format!(
                    "`{}` must be a non-empty folder name without slashes",
                    self.name
                ),
            ));
        }
        self.validate_stream(&invalid)?;
        let image = dataset_shape(self.stream.dataset);
        validate_model(&self.model, "model", image, &invalid)?;
        let t = &self.training;
        for (key, value) in [
            ("training.epochs", t.epochs),
            ("training.batch_size", t.batch_size),
            ("training.eval_batch_size", t.eval_batch_size),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        validate_optimizer(&t.optimizer, "training.optimizer", &invalid)?;
        if t.loss == TrainingLoss::TaskIl && self.stream.kind.is_domain_incremental() {
            return Err(invalid(
                "training.loss",
                format!(
                    "`task_il` needs tasks with classes of their own (a `split` stream); every task of a `{}` stream has all the classes, so the loss would be the class-IL one",
                    self.stream.kind.as_str()
                ),
            ));
        }
        if t.memory_format == MemoryFormat::ChannelsLast
            && !matches!(self.model, ModelConfig::Resnet18 { .. })
        {
            return Err(invalid(
                "training.memory_format",
                format!(
                    "`channels_last` lays out convolution weights; the `{}` model has none (use it with `kind = \"resnet18\"`)",
                    self.model.kind_name()
                ),
            ));
        }
        self.validate_pretrain(&invalid)?;
        Ok(())
    }

    fn validate_stream(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let s = &self.stream;
        let kind = s.kind.as_str();
        let dataset = s.dataset.as_str();
        let classes = dataset_classes(s.dataset);
        let only_for = |key: &str, wanted: &str| {
            invalid(
                key,
                format!("applies to {wanted} streams only, this stream is `{kind}`"),
            )
        };
        if s.tasks == 0 {
            return Err(invalid("stream.tasks", "must be at least 1".into()));
        }
        if s.kind == StreamKind::Split {
            let Some(per_task) = s.classes_per_task else {
                return Err(invalid(
                    "stream.classes_per_task",
                    "a split stream needs it (how many classes each task has)".into(),
                ));
            };
            if per_task == 0 {
                return Err(invalid(
                    "stream.classes_per_task",
                    "must be at least 1".into(),
                ));
            }
            let needed = s.tasks * per_task;
            if needed > classes {
                return Err(invalid(
                    "stream.tasks",
                    format!(
                        "{} tasks × {per_task} classes per task need {needed} classes, but {dataset} has {classes}",
                        s.tasks
                    ),
                ));
            }
            if let Some(ClassOrder::Explicit(order)) = &s.class_order {
                let mut seen = vec![false; classes];
                for &class in order {
                    let slot = seen.get_mut(class as usize).ok_or_else(|| {
                        invalid(
                            "stream.class_order",
                            format!("class {class} does not exist ({dataset} has {classes})"),
                        )
                    })?;
                    if std::mem::replace(slot, true) {
                        return Err(invalid(
                            "stream.class_order",
                            format!("class {class} is listed twice"),
                        ));
                    }
                }
                if order.len() < needed {
                    return Err(invalid(
                        "stream.class_order",
                        format!("lists {} classes, the stream needs {needed}", order.len()),
                    ));
                }
            }
        } else {
            if s.classes_per_task.is_some() {
                return Err(invalid(
                    "stream.classes_per_task",
                    format!("a `{kind}` stream uses every class in every task; remove the key"),
                ));
            }
            if s.class_order.is_some() {
                return Err(only_for("stream.class_order", "split"));
            }
        }
        if s.first_task_unpermuted && s.kind != StreamKind::Permuted {
            return Err(only_for("stream.first_task_unpermuted", "permuted"));
        }
        if s.kind == StreamKind::Rotated {
            if let Some(Angles::Explicit(angles)) = &s.angles {
                if angles.len() != s.tasks {
                    return Err(invalid(
                        "stream.angles",
                        format!("lists {} angles for {} tasks", angles.len(), s.tasks),
                    ));
                }
                if let Some(bad) = angles.iter().find(|a| !a.is_finite()) {
                    return Err(invalid(
                        "stream.angles",
                        format!("{bad} is not a finite angle"),
                    ));
                }
            }
            if let Some([lo, hi]) = s.angle_range
                && !(lo.is_finite() && hi.is_finite() && lo <= hi)
            {
                return Err(invalid(
                    "stream.angle_range",
                    format!("[{lo}, {hi}] must be finite with lo ≤ hi"),
                ));
            }
        } else {
            if s.angles.is_some() {
                return Err(only_for("stream.angles", "rotated"));
            }
            if s.angle_range.is_some() {
                return Err(only_for("stream.angle_range", "rotated"));
            }
        }
        for (key, limit) in [
            ("stream.train_samples_per_task", s.train_samples_per_task),
            ("stream.test_samples_per_task", s.test_samples_per_task),
        ] {
            if limit == Some(0) {
                return Err(invalid(key, "must be at least 1 when given".into()));
            }
        }
        if let Some(fraction) = s.validation_fraction
            && !(fraction > 0.0 && fraction < 1.0)
        {
            return Err(invalid(
                "stream.validation_fraction",
                format!("{fraction} is outside (0, 1)"),
            ));
        }
        if s.evaluate_on == EvaluateOn::Validation && s.validation_fraction.is_none() {
            return Err(invalid(
                "stream.evaluate_on",
                "\"validation\" needs `stream.validation_fraction` (the share of the training split to hold out)".into(),
            ));
        }
        if let Some(augment) = s.augment {
            let [_, height, width] = dataset_shape(s.dataset);
            if augment.crop_padding >= height.min(width) {
                return Err(invalid(
                    "stream.augment.crop_padding",
                    format!(
                        "{} pixels of padding is not smaller than the {height}×{width} images of {dataset}",
                        augment.crop_padding
                    ),
                ));
            }
        }
        if s.readouts.is_empty() {
            return Err(invalid(
                "stream.readouts",
                "list at least one read-out".into(),
            ));
        }
        if let Some(bad) = s.readouts.iter().find(|&&r| !s.kind.accepts(r)) {
            let names: Vec<&str> = s.kind.readouts().iter().map(|r| r.as_str()).collect();
            return Err(invalid(
                "stream.readouts",
                format!(
                    "`{}` does not apply to a `{kind}` stream (use {})",
                    bad.as_str(),
                    names.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The `[pretrain]` stage with its defaults resolved from `[training]` and `[stream]`;
    /// `None` without a `[pretrain]` table. Call on a validated experiment.
    pub fn pretrain_plan(&self) -> Option<PretrainPlan> {
        let p = self.pretrain.as_ref()?;
        let dataset = p.dataset.unwrap_or(self.stream.dataset);
        let mut classes = p
            .classes
            .clone()
            .unwrap_or_else(|| (0..dataset_classes(dataset) as u32).collect());
        classes.sort_unstable();
        classes.dedup();
        Some(PretrainPlan {
            dataset,
            classes,
            epochs: p.epochs.unwrap_or(self.training.epochs),
            batch_size: p.batch_size.unwrap_or(self.training.batch_size),
            eval_batch_size: self.training.eval_batch_size,
            optimizer: p
                .optimizer
                .clone()
                .unwrap_or_else(|| self.training.optimizer.clone()),
            distillation: p.teacher.clone().map(|teacher| Distillation {
                teacher,
                temperature: p.temperature.unwrap_or(DEFAULT_TEMPERATURE),
                hard_weight: p.hard_weight.unwrap_or(0.0),
            }),
        })
    }

    fn validate_pretrain(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let Some(p) = &self.pretrain else {
            return Ok(());
        };
        let stream_dataset = self.stream.dataset;
        let dataset = p.dataset.unwrap_or(stream_dataset);
        if dataset_shape(dataset) != dataset_shape(stream_dataset) {
            let [c, h, w] = dataset_shape(dataset);
            let [sc, sh, sw] = dataset_shape(stream_dataset);
            return Err(invalid(
                "pretrain.dataset",
                format!(
                    "{} has {c}×{h}×{w} images but the stream's {} has {sc}×{sh}×{sw}; the model is built for the stream's",
                    dataset.as_str(),
                    stream_dataset.as_str()
                ),
            ));
        }
        let head = dataset_classes(stream_dataset);
        let available = dataset_classes(dataset);
        if let Some(classes) = &p.classes {
            if classes.is_empty() {
                return Err(invalid(
                    "pretrain.classes",
                    "list at least one class".into(),
                ));
            }
            let mut seen = vec![false; available];
            for &class in classes {
                let Some(slot) = seen.get_mut(class as usize) else {
                    return Err(invalid(
                        "pretrain.classes",
                        format!(
                            "class {class} does not exist ({} has {available})",
                            dataset.as_str()
                        ),
                    ));
                };
                if std::mem::replace(slot, true) {
                    return Err(invalid(
                        "pretrain.classes",
                        format!("class {class} is listed twice"),
                    ));
                }
            }
        }
        let largest = p
            .classes
            .as_ref()
            .and_then(|c| c.iter().max().map(|&m| m as usize + 1))
            .unwrap_or(available);
        if largest > head {
            return Err(invalid(
                if p.classes.is_some() {
                    "pretrain.classes"
                } else {
                    "pretrain.dataset"
                },
                format!(
                    "labels up to {} do not fit the model's head of {head} outputs (the classes of the stream's {})",
                    largest - 1,
                    stream_dataset.as_str()
                ),
            ));
        }
        for (key, value) in [
            ("pretrain.epochs", p.epochs),
            ("pretrain.batch_size", p.batch_size),
        ] {
            if value == Some(0) {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if let Some(optimizer) = &p.optimizer {
            validate_optimizer(optimizer, "pretrain.optimizer", invalid)?;
        }
        match &p.teacher {
            None => {
                for (key, given) in [
                    ("pretrain.temperature", p.temperature.is_some()),
                    ("pretrain.hard_weight", p.hard_weight.is_some()),
                ] {
                    if given {
                        return Err(invalid(
                            key,
                            "applies to distillation only; add a `[pretrain.teacher]` table or remove the key".into(),
                        ));
                    }
                }
            }
            Some(teacher) => {
                validate_model(
                    teacher,
                    "pretrain.teacher",
                    dataset_shape(self.stream.dataset),
                    invalid,
                )?;
                if teacher.checkpoint().is_none() {
                    return Err(invalid(
                        "pretrain.teacher.checkpoint",
                        "a teacher needs its trained weights: `checkpoint = \"teacher.safetensors\"` (e.g. written by `retain pretrain`)".into(),
                    ));
                }
                if let Some(t) = p.temperature
                    && !(t.is_finite() && t > 0.0)
                {
                    return Err(invalid(
                        "pretrain.temperature",
                        format!("{t} must be a positive number"),
                    ));
                }
                if let Some(w) = p.hard_weight
                    && !(0.0..=1.0).contains(&w)
                {
                    return Err(invalid(
                        "pretrain.hard_weight",
                        format!("{w} is outside [0, 1]"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The experiment as TOML, defaults filled in: written next to results so a run can be
    /// repeated from its own folder.
    pub fn to_resolved_toml(&self) -> String {
        toml::to_string_pretty(self).expect("an Experiment always serialises")
    }
}

/// Checks a model table; `prefix` is its key (`model`, `pretrain.teacher`).
/// Checks a model table for images of shape `image` (`[C, H, W]`); `prefix` is its key
/// (`model`, `pretrain.teacher`).
fn validate_model(
    model: &ModelConfig,
    prefix: &str,
    image: [usize; 3],
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    match model {
        ModelConfig::Mlp { hidden, .. } => {
            if hidden.contains(&0) {
                return Err(invalid(
                    &format!("{prefix}.hidden"),
                    "layer widths must be positive".into(),
                ));
            }
        }
        ModelConfig::Resnet18 { nf, .. } => {
            if *nf == 0 {
                return Err(invalid(
                    &format!("{prefix}.nf"),
                    "must be at least 1".into(),
                ));
            }
        }
        ModelConfig::Vit {
            patch,
            dim,
            depth,
            heads,
            mlp_dim,
            ..
        } => {
            for (key, value) in [
                ("patch", patch),
                ("dim", dim),
                ("depth", depth),
                ("heads", heads),
                ("mlp_dim", mlp_dim),
            ] {
                if *value == 0 {
                    return Err(invalid(
                        &format!("{prefix}.{key}"),
                        "must be at least 1".into(),
                    ));
                }
            }
            if dim % heads != 0 {
                return Err(invalid(
                    &format!("{prefix}.dim"),
                    format!("{dim} is not a multiple of `heads` = {heads}"),
                ));
            }
            let [_, height, width] = image;
            if height % patch != 0 || width % patch != 0 {
                return Err(invalid(
                    &format!("{prefix}.patch"),
                    format!("{patch} does not divide the {height}×{width} images"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks an optimiser table; `prefix` is its key (`training.optimizer`, `pretrain.optimizer`).
fn validate_optimizer(
    optimizer: &OptimizerConfig,
    prefix: &str,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let (lr, weight_decay) = match *optimizer {
        OptimizerConfig::Sgd {
            lr,
            momentum,
            weight_decay,
        } => {
            if !(0.0..1.0).contains(&momentum) {
                return Err(invalid(
                    &format!("{prefix}.momentum"),
                    format!("{momentum} is outside [0, 1)"),
                ));
            }
            (lr, weight_decay)
        }
        OptimizerConfig::Adam { lr, weight_decay } => (lr, weight_decay),
    };
    if !(lr.is_finite() && lr > 0.0) {
        return Err(invalid(
            &format!("{prefix}.lr"),
            format!("{lr} must be a positive number"),
        ));
    }
    if !(weight_decay.is_finite() && weight_decay >= 0.0) {
        return Err(invalid(
            &format!("{prefix}.weight_decay"),
            format!("{weight_decay} must be zero or positive"),
        ));
    }
    Ok(())
}

/// Number of classes of a dataset, known without reading it.
pub fn dataset_classes(dataset: DatasetName) -> usize {
    match dataset {
        DatasetName::Mnist | DatasetName::FashionMnist | DatasetName::Cifar10 => 10,
        DatasetName::Cifar100 => 100,
        DatasetName::Cifar100Coarse => 20,
    }
}

/// `[C, H, W]` of a dataset's images, known without reading it.
pub fn dataset_shape(dataset: DatasetName) -> [usize; 3] {
    match dataset {
        DatasetName::Mnist | DatasetName::FashionMnist => [1, 28, 28],
        DatasetName::Cifar10 | DatasetName::Cifar100 | DatasetName::Cifar100Coarse => [3, 32, 32],
    }
}

fn parse_error(origin: &str, source: &str, error: &toml::de::Error) -> ConfigError {
    let origin = match error.span() {
        Some(span) => format!(
            "{origin}:{}",
            1 + source[..span.start].matches('\n').count()
        ),
        None => origin.to_owned(),
    };
    ConfigError::Parse {
        origin,
        message: error.message().to_owned(),
    }
}

/// Sets `a.b.c = value` in a TOML tree. The value is parsed as TOML (`0.05`, `true`,
/// `[100, 100]`, `"text"`); anything that does not parse is taken as a bare string.
fn apply_override(tree: &mut toml::Table, raw: &str) -> Result<(), ConfigError> {
    let fail = |message: &str| ConfigError::Override {
        raw: raw.to_owned(),
        message: message.to_owned(),
    };
    let (key, value) = raw.split_once('=').ok_or_else(|| fail("no `=`"))?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(fail("empty key segment"));
    }
    let value = parse_value(value.trim());
    let (last, parents) = parts.split_last().expect("split yields at least one part");
    let mut table = tree;
    for part in parents {
        let entry = table
            .entry((*part).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| fail(&format!("`{part}` is not a table")))?;
    }
    table.insert((*last).to_owned(), value);
    Ok(())
}

fn parse_value(text: &str) -> toml::Value {
    let wrapped = format!("v = {text}");
    match toml::from_str::<toml::Table>(&wrapped) {
        Ok(mut table) => table.remove("v").expect("the key was just written"),
        Err(_) => toml::Value::String(text.to_owned()),
    }
}

#[cfg(test)]
mod tests;
