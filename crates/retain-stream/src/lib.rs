//! Task streams whose data lives on the training device.
//!
//! A [`TaskStream`] uploads each split of a dataset **once**, as `uint8`, to the training
//! device, and describes every task as a tensor of sample indices into it. A batch is then an
//! `index_select` on the device followed by a fused normalisation: there is no per-batch
//! host→device copy and no host synchronisation in the data path. The only host→device
//! traffic during training is one index tensor per epoch (the shuffled order).
//!
//! Everything random about the tasks (class order, subsampling, shuffles) comes from
//! [`seed`], derived from the experiment seed alone, so every method and every device sees
//! the same tasks in the same order.

pub mod seed;

use retain_config::{ClassOrder, ClassOrderName, StreamConfig, StreamKind};
use retain_data::ImageDataset;
use tch::{Device, Kind, Tensor};

use seed::SplitMix64;

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
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Which split of the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    Train,
    Test,
}

/// One split of a dataset, resident on the device.
#[derive(Debug)]
pub struct DeviceSplit {
    /// `[N, C·H·W]`, `uint8`, exactly as stored on disk.
    pub images: Tensor,
    /// `[N]`, `int64`.
    pub labels: Tensor,
    /// Labels kept on the host too: scenario construction reads them, training never does.
    pub host_labels: Vec<u8>,
}

impl DeviceSplit {
    fn upload(split: &retain_data::Split, features: usize, device: Device) -> Self {
        let images = Tensor::from_slice(&split.images)
            .view([split.len as i64, features as i64])
            .to_device(device);
        let labels = Tensor::from_slice(&split.labels)
            .to_kind(Kind::Int64)
            .to_device(device);
        Self {
            images,
            labels,
            host_labels: split.labels.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.host_labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.host_labels.is_empty()
    }
}

/// One task of the stream.
#[derive(Debug)]
pub struct Task {
    /// 0-based position in the stream.
    pub index: usize,
    /// Classes of the task, in the stream's class order.
    pub classes: Vec<i64>,
    /// Indices into the training split, ascending, on the host (shuffled per epoch).
    pub train_indices: Vec<i64>,
    /// Indices into the test split, on the device.
    pub test_indices: Tensor,
    /// Number of test samples.
    pub test_len: usize,
    /// `[num_classes]` boolean mask of the task's classes (task-incremental read-out).
    pub class_mask: Tensor,
}

/// A batch ready for the model.
#[derive(Debug)]
pub struct Batch {
    /// `[B, C·H·W]`, `float32`, normalised.
    pub inputs: Tensor,
    /// `[B]`, `int64`.
    pub labels: Tensor,
}

/// A sequence of tasks over one dataset, resident on one device.
#[derive(Debug)]
pub struct TaskStream {
    pub dataset: String,
    pub train: DeviceSplit,
    pub test: DeviceSplit,
    pub tasks: Vec<Task>,
    /// Width of the output head: every class of the dataset.
    pub num_classes: usize,
    /// `[C, H, W]` of one image.
    pub image_shape: [usize; 3],
    pub device: Device,
    /// `x_normalised = x_uint8 · scale + shift`, folded from the dataset's mean and std.
    scale: f64,
    shift: f64,
}

impl TaskStream {
    /// Builds the stream described by `config` over `dataset`, on `device`.
    pub fn build(
        dataset: &ImageDataset,
        config: &StreamConfig,
        master_seed: u64,
        device: Device,
    ) -> Result<Self, StreamError> {
        let StreamKind::Split = config.kind;
        let needed = config.tasks * config.classes_per_task;
        if needed > dataset.classes {
            return Err(StreamError::NotEnoughClasses {
                dataset: dataset.name.clone(),
                needed,
                available: dataset.classes,
            });
        }
        let order = class_order(&config.class_order, dataset.classes, master_seed);
        let features = dataset.shape.iter().product();
        let train = DeviceSplit::upload(&dataset.train, features, device);
        let test = DeviceSplit::upload(&dataset.test, features, device);

        let mut tasks = Vec::with_capacity(config.tasks);
        for (index, classes) in order
            .chunks(config.classes_per_task)
            .take(config.tasks)
            .enumerate()
        {
            let classes: Vec<i64> = classes.iter().map(|&c| i64::from(c)).collect();
            let pick = |labels: &[u8], limit: Option<usize>, split: &'static str| {
                let mut indices = indices_of_classes(labels, &classes);
                if let Some(limit) = limit.filter(|&l| l < indices.len()) {
                    let purpose = format!("subsample/{split}/task{index}");
                    SplitMix64::new(seed::derive(master_seed, &purpose)).shuffle(&mut indices);
                    indices.truncate(limit);
                    indices.sort_unstable();
                }
                if indices.is_empty() {
                    return Err(StreamError::EmptyTask {
                        task: index,
                        split,
                        classes: classes.clone(),
                    });
                }
                Ok(indices)
            };
            let train_indices = pick(&train.host_labels, config.train_samples_per_task, "train")?;
            let test_host = pick(&test.host_labels, config.test_samples_per_task, "test")?;
            let mut mask = vec![false; dataset.classes];
            for &c in &classes {
                mask[c as usize] = true;
            }
            tasks.push(Task {
                index,
                classes,
                train_indices,
                test_len: test_host.len(),
                test_indices: Tensor::from_slice(&test_host).to_device(device),
                class_mask: Tensor::from_slice(&mask).to_device(device),
            });
        }

        let (mean, std) = normalisation(&dataset.name);
        Ok(Self {
            dataset: dataset.name.clone(),
            train,
            test,
            tasks,
            num_classes: dataset.classes,
            image_shape: dataset.shape,
            device,
            scale: 1.0 / (255.0 * std),
            shift: -mean / std,
        })
    }

    /// Input width of a flattened image.
    pub fn input_features(&self) -> usize {
        self.image_shape.iter().product()
    }

    /// The training order of one epoch: `indices` (usually a task's `train_indices`) shuffled
    /// by a seed derived from the experiment seed, task and epoch, uploaded in one copy.
    pub fn epoch_order(
        &self,
        indices: &[i64],
        master_seed: u64,
        task: usize,
        epoch: usize,
    ) -> Tensor {
        let mut order = indices.to_vec();
        let purpose = format!("shuffle/task{task}/epoch{epoch}");
        SplitMix64::new(seed::derive(master_seed, &purpose)).shuffle(&mut order);
        Tensor::from_slice(&order).to_device(self.device)
    }

    /// Gathers and normalises the samples at `indices` (a device tensor) of a split.
    pub fn batch(&self, split: SplitKind, indices: &Tensor) -> Batch {
        let source = match split {
            SplitKind::Train => &self.train,
            SplitKind::Test => &self.test,
        };
        let raw = source.images.index_select(0, indices);
        Batch {
            inputs: (raw.to_kind(Kind::Float) * self.scale) + self.shift,
            labels: source.labels.index_select(0, indices),
        }
    }
}

/// Mean and standard deviation of the training pixels in `[0, 1]`, the values used across
/// the literature.
fn normalisation(dataset: &str) -> (f64, f64) {
    match dataset {
        "fashion-mnist" => (0.2860, 0.3530),
        _ => (0.1307, 0.3081),
    }
}

/// The class order of a split stream.
pub fn class_order(order: &ClassOrder, classes: usize, master_seed: u64) -> Vec<u32> {
    let natural: Vec<u32> = (0..classes as u32).collect();
    match order {
        ClassOrder::Named(ClassOrderName::Natural) => natural,
        ClassOrder::Named(ClassOrderName::Seeded) => {
            let mut order = natural;
            SplitMix64::new(seed::derive(master_seed, "class-order")).shuffle(&mut order);
            order
        }
        ClassOrder::Explicit(order) => order.clone(),
    }
}

fn indices_of_classes(labels: &[u8], classes: &[i64]) -> Vec<i64> {
    labels
        .iter()
        .enumerate()
        .filter(|(_, label)| classes.contains(&i64::from(**label)))
        .map(|(i, _)| i as i64)
        .collect()
}

#[cfg(test)]
mod tests;
