//! Task streams whose data lives on the training device.
//!
//! A [`TaskStream`] uploads each split of a dataset **once**, as `uint8`, to the training
//! device, and describes every task as sample indices into it. A batch is then an
//! `index_select` on the device, the task's pixel transform (a `gather`), the training
//! augmentation (two `gather`s) and a fused normalisation: there is no per-batch host→device
//! copy and no host synchronisation in the data path. The only host→device traffic during
//! training is one index tensor per epoch (the shuffled order).
//!
//! # Scenarios
//!
//! * `split` — disjoint groups of classes, one group per task (class- and task-incremental);
//!   with `labels = "within_task"` each sample is labelled with its class's position in its
//!   task, so every task shares `classes_per_task` labels (domain-incremental Split-MNIST);
//!   with `blurry = M`, M % of each class's training samples train in the other tasks
//!   ([`blurry`]).
//! * `permuted` — every task is the dataset under its own seeded pixel permutation
//!   (domain-incremental Permuted-MNIST).
//! * `rotated` — every task is the dataset rotated by its own angle (Rotated-MNIST).
//!
//! # Index space
//!
//! Indices address a split *as the stream sees it*. For a split stream that is the dataset
//! split itself. For permuted and rotated streams every task is a transformed copy of the
//! whole split, so index `v` means sample `v mod N` under task `v / N`'s transform (`N` the
//! split's size). A replay buffer that stores indices therefore replays each sample under
//! the transform it was learned with, and a batch may mix tasks freely.
//!
//! Everything random about the tasks (class order, permutations, angles, subsampling,
//! validation hold-out, shuffles, augmentation) comes from [`seed`], derived from the
//! experiment seed alone, so every method and every device sees the same tasks in the same
//! order.
//!
//! A stream is built from a validated [`retain_config::StreamPlan`]
//! ([`TaskStream::from_plan`]), whose defaults are resolved already; [`TaskStream::build`]
//! validates a raw [`retain_config::StreamConfig`] into one first.
//!
//! # Modules
//!
//! | module | job |
//! |---|---|
//! | `tasks` | building a stream from its plan: each task's classes, samples, transform |
//! | `stream` | the built stream: index space, batches gathered on the device |
//! | `device_split` | one split of a dataset uploaded once |
//! | `normalise` | per-dataset normalisation constants |
//! | [`transform`] | per-task pixel transforms as gather maps |
//! | [`augment`] | training-batch augmentation on the device |
//! | [`blurry`] | blurry boundaries: a share of each class's training samples in other tasks |
//! | [`hash`], [`seed`] | the counter-based hash and the derived seeds |

pub mod augment;
pub mod blurry;
mod device_split;
pub mod hash;
mod normalise;
pub mod seed;
mod stream;
mod tasks;
pub mod transform;

use tch::Tensor;

pub use device_split::DeviceSplit;
pub use normalise::normalisation_constants;
pub use stream::TaskStream;
pub use tasks::{class_order, rotation_angles, task_angles};
pub use transform::TaskTransform;

/// Errors while building a stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("task {task} has no {split} samples (classes {classes:?})")]
    EmptyTask {
        task: usize,
        split: &'static str,
        classes: Vec<i64>,
    },
    #[error("stream needs {needed} classes but dataset `{dataset}` has {available}")]
    NotEnoughClasses {
        dataset: String,
        needed: usize,
        available: usize,
    },
    #[error(
        "no normalisation constants for dataset `{dataset}` (known: mnist, fashion-mnist, cifar10, cifar100, cifar100-coarse)"
    )]
    UnknownNormalisation { dataset: String },
    #[error("dataset `{found}` given for a stream configured on `{expected}`")]
    WrongDataset { expected: String, found: String },
    /// The stream's configuration did not validate ([`retain_config::StreamConfig::plan`]).
    #[error(transparent)]
    Config(#[from] retain_config::ConfigError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Which split of the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    Train,
    Test,
}

/// One task of the stream.
#[derive(Debug)]
pub struct Task {
    /// 0-based position in the stream.
    pub index: usize,
    /// Classes of the task as labels, in the stream's class order (every class for domain
    /// streams; `0..classes_per_task` for a split stream labelled within its tasks).
    pub classes: Vec<i64>,
    /// What the task does to the images.
    pub transform: TaskTransform,
    /// Stream indices into the training split, ascending, on the host (shuffled per epoch):
    /// samples of the task's classes, and with `blurry` some of the other tasks' too.
    pub train_indices: Vec<i64>,
    /// Stream indices into the test split, on the device.
    pub test_indices: Tensor,
    /// Number of test samples.
    pub test_len: usize,
    /// Stream indices into the *training* split of the held-out validation samples, on the
    /// device (empty without `validation_fraction`).
    pub validation_indices: Tensor,
    /// Number of validation samples.
    pub validation_len: usize,
    /// `[num_classes]` boolean mask of the task's classes (task-incremental read-out).
    pub class_mask: Tensor,
}

/// A batch ready for the model.
#[derive(Debug)]
pub struct Batch {
    /// `[B, C, H, W]`, `float32`, transformed, augmented (training batches) and normalised.
    pub inputs: Tensor,
    /// `[B]`, `int64`.
    pub labels: Tensor,
}

#[cfg(test)]
mod tests;
