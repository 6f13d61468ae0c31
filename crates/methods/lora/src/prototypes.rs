//! What LoRA keeps of each finished task for the read-outs without a task id: its classes and
//! their prototypes in the frozen backbone's feature space, which task inference matches
//! samples against and the merged head is built from.

use retain_models::Backbone;
use retain_train::TaskContext;
use tch::{Kind, Tensor};

use crate::Lora;

/// What task inference and the merged head know about a finished task.
pub(crate) struct TaskClasses {
    /// The task's classes, `[C_t]` `int64`, on the device.
    pub(crate) classes: Tensor,
    /// Their prototypes: the L2-normalised mean base features of each class over the task's
    /// training samples, `[C_t, F]`, in the order of `classes`.
    pub(crate) prototypes: Tensor,
}

/// Training samples per forward pass when computing prototypes.
const PROTOTYPE_BATCH: usize = 1024;

impl Lora {
    /// The features the head reads, computed by the frozen backbone alone (every adapter
    /// detached for the pass, then attached again): one space for every task's prototypes.
    pub(crate) fn base_features(&self, model: &dyn Backbone, inputs: &Tensor) -> Tensor {
        for layer in &self.layers {
            model.set_adapter(&layer.name, None);
        }
        let features = model.features(inputs, false);
        for layer in &self.layers {
            model.set_adapter(&layer.name, Some(layer.adapter(self.scale)));
        }
        features
    }

    /// The classes of the task just trained and their prototypes, from its training samples
    /// (without augmentation), in batches on the device.
    pub(crate) fn task_classes(&self, ctx: &TaskContext<'_>) -> TaskClasses {
        let _no_grad = tch::no_grad_guard();
        let num_classes = ctx.stream.num_classes as i64;
        let indices = &ctx.task.train_indices;
        let mut sums: Option<(Tensor, Tensor)> = None;
        for chunk in indices.chunks(PROTOTYPE_BATCH) {
            let batch = ctx.train_batch(chunk);
            let features = self.base_features(ctx.model(), &batch.inputs);
            let one_hot = batch.labels.one_hot(num_classes).to_kind(features.kind());
            let (sum, count) = (
                one_hot.tr().matmul(&features),
                one_hot.sum_dim_intlist(0, false, features.kind()),
            );
            sums = Some(match sums {
                Some((s, c)) => (s + sum, c + count),
                None => (sum, count),
            });
        }
        let classes = Tensor::from_slice(&ctx.task.classes).to_device(ctx.device);
        let prototypes = match sums {
            Some((sum, count)) => {
                let count = count.index_select(0, &classes).clamp_min(1.0).unsqueeze(1);
                normalise(&(sum.index_select(0, &classes) / count))
            }
            // A task without training samples: prototypes of zero similarity to anything.
            None => {
                let probe = ctx.train_batch(&ctx.task.train_indices[..0]);
                let width = self.base_features(ctx.model(), &probe.inputs).size()[1];
                Tensor::zeros(
                    [ctx.task.classes.len() as i64, width],
                    (Kind::Float, ctx.device),
                )
            }
        };
        TaskClasses {
            classes,
            prototypes,
        }
    }

    /// Every finished task's prototypes stacked, and the owning task of each row.
    pub(crate) fn bank(&mut self) -> &(Tensor, Tensor) {
        let classes = &self.classes;
        self.bank.get_or_insert_with(|| {
            let prototypes: Vec<&Tensor> = classes.iter().map(|k| &k.prototypes).collect();
            let owners: Vec<Tensor> = classes
                .iter()
                .enumerate()
                .map(|(t, k)| k.classes.full_like(t as i64))
                .collect();
            (Tensor::cat(&prototypes, 0), Tensor::cat(&owners, 0))
        })
    }
}

/// Rows scaled to unit L2 norm (a zero row stays zero).
pub(crate) fn normalise(rows: &Tensor) -> Tensor {
    rows / rows
        .square()
        .sum_dim_intlist(-1, true, Kind::Float)
        .sqrt()
        .clamp_min(1e-12)
}
