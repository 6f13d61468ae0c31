//! A built task stream: its index space, and the batches it gathers on the device.

use retain_config::{AugmentConfig, StreamKind};
use tch::{Device, Kind, Tensor};

use crate::normalise::Normalisation;
use crate::seed::{self, SplitMix64};
use crate::{Batch, DeviceSplit, SplitKind, Task, augment, hash};

/// Per-task gather maps of a domain-incremental stream.
#[derive(Debug)]
pub(crate) struct DomainMaps {
    /// `[T, C·H·W]`, `int64`: output element `i` of task `t` is input element `maps[t, i]`,
    /// where `C·H·W` reads the zero column of [`DeviceSplit`]'s padded images.
    pub(crate) maps: Tensor,
}

/// A sequence of tasks over one dataset, resident on one device.
#[derive(Debug)]
pub struct TaskStream {
    pub dataset: String,
    pub kind: StreamKind,
    pub train: DeviceSplit,
    pub test: DeviceSplit,
    pub tasks: Vec<Task>,
    /// Width of the output head, the size of the label space: every class of the dataset,
    /// or `classes_per_task` for a split stream labelled within its tasks
    /// (`stream.labels = "within_task"`), whose labels are then each class's position in its
    /// task.
    pub num_classes: usize,
    /// `[C, H, W]` of one image.
    pub image_shape: [usize; 3],
    pub device: Device,
    /// The split the after-task evaluation reads (`Train` for validation samples).
    pub eval_split: SplitKind,
    /// Training-batch augmentation.
    pub augment: AugmentConfig,
    pub(crate) augment_seed: u64,
    pub(crate) normalisation: Normalisation,
    pub(crate) domains: Option<DomainMaps>,
    /// `[num_classes]` `int64`: the task each class belongs to (0 for every class of a
    /// domain-incremental stream, whose tasks share all classes; −1 for a class in no task).
    pub(crate) class_tasks: Tensor,
}

impl TaskStream {
    /// Input width of a flattened image.
    pub fn input_features(&self) -> usize {
        self.image_shape.iter().product()
    }

    fn split(&self, split: SplitKind) -> &DeviceSplit {
        match split {
            SplitKind::Train => &self.train,
            SplitKind::Test => &self.test,
        }
    }

    /// Number of valid stream indices of a split: its size, times the number of tasks for a
    /// domain-incremental stream (see the crate docs).
    pub fn index_len(&self, split: SplitKind) -> usize {
        let n = self.split(split).len();
        if self.domains.is_some() {
            n * self.tasks.len()
        } else {
            n
        }
    }

    /// The task whose transform stream index `index` carries, and the stored sample it
    /// reads: `(task, sample)`. Split streams have one identity domain: `(0, index)`.
    pub fn locate(&self, split: SplitKind, index: i64) -> (usize, usize) {
        let n = self.split(split).len() as i64;
        if self.domains.is_some() {
            ((index / n) as usize, (index % n) as usize)
        } else {
            (0, index as usize)
        }
    }

    /// The label of stream index `index`, read on the host (for buffer bookkeeping; never
    /// needed in a training step).
    pub fn label(&self, split: SplitKind, index: i64) -> u8 {
        let (_, sample) = self.locate(split, index);
        self.split(split).host_labels[sample]
    }

    /// The label of every stream index of the training split, in index order. For split
    /// streams this is the split's labels; for permuted and rotated streams, where index
    /// `task·N + sample` is a sample under its task's transform, the labels repeat per task.
    /// Memories that classify stored indices by label take this.
    pub fn train_index_labels(&self) -> Vec<u8> {
        (0..self.index_len(SplitKind::Train) as i64)
            .map(|index| self.label(SplitKind::Train, index))
            .collect()
    }

    /// The samples the after-task evaluation of `task` reads: split, indices on the device,
    /// count (the test split, or the validation samples with `evaluate_on = "validation"`).
    pub fn evaluation_set<'a>(&self, task: &'a Task) -> (SplitKind, &'a Tensor, usize) {
        match self.eval_split {
            SplitKind::Test => (SplitKind::Test, &task.test_indices, task.test_len),
            SplitKind::Train => (
                SplitKind::Train,
                &task.validation_indices,
                task.validation_len,
            ),
        }
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

    /// The raw `uint8` images `[B, C, H, W]` and labels at stream indices `indices` (a device
    /// tensor), with each sample's task transform applied; no augmentation, no
    /// normalisation.
    pub fn raw_batch(&self, split: SplitKind, indices: &Tensor) -> (Tensor, Tensor) {
        let source = self.split(split);
        let [c, h, w] = self.image_shape.map(|d| d as i64);
        let (images, labels) = match &self.domains {
            None => (
                source.images.index_select(0, indices),
                source.labels.index_select(0, indices),
            ),
            Some(domains) => {
                let n = source.len() as i64;
                let task = indices.floor_divide_scalar(n);
                let sample = indices.remainder(n);
                let maps = domains.maps.index_select(0, &task);
                (
                    source.rows(&sample).gather(1, &maps, false),
                    source.labels.index_select(0, &sample),
                )
            }
        };
        (images.view([-1, c, h, w]), labels)
    }

    /// As [`TaskStream::raw_batch`] for indices that all belong to task `task` (as a task's
    /// test, validation and training indices do): the task's transform is then one map
    /// applied over the pixel dimension of the whole batch, with no per-sample map lookup.
    pub fn raw_task_batch(
        &self,
        split: SplitKind,
        task: usize,
        indices: &Tensor,
    ) -> (Tensor, Tensor) {
        let Some(domains) = &self.domains else {
            return self.raw_batch(split, indices);
        };
        let source = self.split(split);
        let [c, h, w] = self.image_shape.map(|d| d as i64);
        let sample = indices - (task * source.len()) as i64;
        let rows = source.rows(&sample);
        // A gather with the task's map broadcast over the batch: the same result as an
        // `index_select` over the pixel dimension, and ~4× faster on CPU (measured).
        let map = domains.maps.get(task as i64).unsqueeze(0);
        let images = rows.gather(
            1,
            &map.expand([rows.size()[0], map.size()[1]], false),
            false,
        );
        (
            images.view([-1, c, h, w]),
            source.labels.index_select(0, &sample),
        )
    }

    /// As [`TaskStream::batch`] for indices that all belong to task `task`; faster for
    /// permuted and rotated streams (see [`TaskStream::raw_task_batch`]).
    pub fn task_batch(&self, split: SplitKind, task: usize, indices: &Tensor) -> Batch {
        let (images, labels) = self.raw_task_batch(split, task, indices);
        Batch {
            inputs: self.normalise(&images),
            labels,
        }
    }

    /// Gathers, transforms and normalises the samples at `indices` (a device tensor) of a
    /// split, without augmentation: what evaluation and methods that need clean inputs use.
    pub fn batch(&self, split: SplitKind, indices: &Tensor) -> Batch {
        let (images, labels) = self.raw_batch(split, indices);
        Batch {
            inputs: self.normalise(&images),
            labels,
        }
    }

    /// A training batch: as [`TaskStream::batch`] on the training split, plus the configured
    /// augmentation drawn for `draw`. The same `draw` gives the same augmentation, on any
    /// device; give every batch its own (the trainer uses [`TaskStream::draw`]).
    pub fn training_batch(&self, indices: &Tensor, draw: u64) -> Batch {
        let (images, labels) = self.raw_batch(SplitKind::Train, indices);
        let images = if self.augment.is_active() {
            let params = self.augment_params(images.size()[0], draw);
            augment::apply(&images, &self.augment, &params)
        } else {
            images
        };
        Batch {
            inputs: self.normalise(&images),
            labels,
        }
    }

    /// [`TaskStream::training_batch`] with the augmentation key (what
    /// [`TaskStream::augment_key`] gives for the draw) in a `[]` `int64` device tensor: the
    /// same batch, built only from device tensors, as a captured step needs.
    pub fn training_batch_keyed(&self, indices: &Tensor, key: &Tensor) -> Batch {
        let (images, labels) = self.raw_batch(SplitKind::Train, indices);
        let images = if self.augment.is_active() {
            let params = augment::params_keyed(&self.augment, key, images.size()[0], self.device);
            augment::apply(&images, &self.augment, &params)
        } else {
            images
        };
        Batch {
            inputs: self.normalise(&images),
            labels,
        }
    }

    /// `[B, num_classes]` boolean: for each of `labels` (`[B]`, on the device), the classes of
    /// its own task. The task-incremental training loss keeps only these outputs in the
    /// softmax; it works for replayed samples of earlier tasks as for the current batch,
    /// since a sample's task follows from its label. Every class of a domain-incremental
    /// stream is in every task, so there the mask is all true.
    pub fn own_task_classes(&self, labels: &Tensor) -> Tensor {
        self.class_tasks
            .index_select(0, labels)
            .unsqueeze(1)
            .eq_tensor(&self.class_tasks.unsqueeze(0))
    }

    /// Whether training batches are augmented (a crop or a flip is configured).
    pub fn augments(&self) -> bool {
        self.augment.is_active()
    }

    /// The augmentation parameters [`TaskStream::training_batch`] uses for a batch of `len`
    /// samples and `draw`.
    pub fn augment_params(&self, len: i64, draw: u64) -> augment::AugmentParams {
        augment::params(&self.augment, self.augment_key(draw), len, self.device)
    }

    /// The 32-bit hash key of `draw` (see [`augment`]).
    pub fn augment_key(&self, draw: u64) -> u32 {
        seed::combine(self.augment_seed, draw) as u32
    }

    /// A draw number for batch `batch` of task `task`, unique per (task, batch).
    pub fn draw(task: usize, batch: usize) -> u64 {
        ((task as u64) << 40) | batch as u64
    }

    /// The augmentation key of replayed batch `replay` (0, 1, … within one step) of the step
    /// whose batch has augmentation key `key` (`[]` int64 on the device, from
    /// [`TaskStream::augment_key`]): a hash of the two, computed on the device, so a replayed
    /// sample gets an augmentation of its own, as the current batch does, and a step
    /// captured in a CUDA graph derives it from the step's static key.
    pub fn replay_key(key: &Tensor, replay: usize) -> Tensor {
        let salt = ((replay as i64 + 1) * 0x9e37_79b1) & 0xffff_ffff;
        hash::hash32_xor(key, salt)
    }

    /// `uint8` images `[B, C, H, W]` → normalised `float32`.
    pub fn normalise(&self, images: &Tensor) -> Tensor {
        // Conversion, then one fused multiply-add. (The conversion stays explicit: mixed-dtype
        // `addcmul` is not exercised on every backend here.)
        self.normalisation
            .shift
            .addcmul(&images.to_kind(Kind::Float), &self.normalisation.scale)
    }
}
